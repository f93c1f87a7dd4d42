/* An I/O error shim for the fault tests, loaded with LD_PRELOAD: while the file named by
 * CRITPATH_EIO_CONTROL exists, every write and sync of a file under CRITPATH_EIO_DIR fails with
 * EIO, as a failing disk's would. Each failure is counted on stderr ("eio-shim: write fd 7").
 *
 *   gcc -shared -fPIC -O2 -o eio_shim.so eio_shim.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* Whether writes to fd fail now: the control file exists and fd is a file under the dir. */
static int failing(int fd, const char *what)
{
    const char *dir = getenv("CRITPATH_EIO_DIR");
    const char *control = getenv("CRITPATH_EIO_CONTROL");
    if (!dir || !control || access(control, F_OK) != 0)
        return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return 0;
    path[n] = 0;
    size_t len = strlen(dir);
    if (strncmp(path, dir, len) != 0 || (path[len] != '/' && path[len] != 0))
        return 0;
    /* dprintf writes through glibc's own entry points, not the ones below. */
    dprintf(2, "eio-shim: %s fd %d\n", what, fd);
    errno = EIO;
    return 1;
}

#define REAL(name)                                                                         \
    static __typeof__(name) *real;                                                         \
    if (!real)                                                                             \
        real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t count)
{
    REAL(write);
    return failing(fd, "write") ? -1 : real(fd, buf, count);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    REAL(writev);
    return failing(fd, "writev") ? -1 : real(fd, iov, iovcnt);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    REAL(pwrite);
    return failing(fd, "pwrite") ? -1 : real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
    REAL(pwrite64);
    return failing(fd, "pwrite64") ? -1 : real(fd, buf, count, offset);
}

int fsync(int fd)
{
    REAL(fsync);
    return failing(fd, "fsync") ? -1 : real(fd);
}

int fdatasync(int fd)
{
    REAL(fdatasync);
    return failing(fd, "fdatasync") ? -1 : real(fd);
}
