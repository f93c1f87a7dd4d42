/* deepchain: a C program built with -O2 -fomit-frame-pointer whose samples all share one known
 * chain of 11 frames through a shared library:
 *   main -> app_level_1 -> app_level_2 -> app_level_3 -> app_level_4 -> lib_enter (libdeepchain)
 *   -> lib_level_1 -> lib_level_2 -> lib_level_3 -> app_leaf (back in the program)
 * Usage: deepchain SECONDS [DEPTH [wait]]. app_leaf spins; every other function only calls. With
 * DEPTH, main first recurses DEPTH times through app_recurse (half a KiB of stack each), so the
 * stack is deeper than any copy the profiler takes: its samples must end in a [truncated] frame.
 * With "wait", app_leaf does not spin: every 2 ms it sleeps, then writes a byte to a pipe that a
 * second thread ("dc-reader": reader_loop -> reader_wait -> read) blocks on, so the main thread's
 * waits (sleeps) and the wakeups of the reader both carry the 11-frame chain. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deepchain.h"

static double seconds;
static int wait_mode;
static int pipefd[2];
static volatile long sink;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline, noclone)) long app_leaf(long n)
{
    double end = now() + seconds;
    long x = n;
    if (wait_mode) {
        struct timespec pause = {0, 2000000};
        while (now() < end) {
            nanosleep(&pause, NULL);
            x += write(pipefd[1], "x", 1);
        }
        sink = x;
        return x & 1;
    }
    while (now() < end)
        for (int i = 0; i < 100000; i++)
            x = x * 6364136223846793005L + 1442695040888963407L;
    sink = x;
    return x & 1;
}

#define FRAME(name, next_call)                          \
    __attribute__((noinline, noclone)) long name(long n) \
    {                                                   \
        volatile char pad[64];                          \
        pad[n & 63] = (char)n;                          \
        long r = next_call;                             \
        return r + pad[n & 63];                         \
    }

FRAME(app_level_4, lib_enter(n + 4, app_leaf))
FRAME(app_level_3, app_level_4(n + 3))
FRAME(app_level_2, app_level_3(n + 2))
FRAME(app_level_1, app_level_2(n + 1))

__attribute__((noinline, noclone)) long app_recurse(long depth)
{
    volatile char pad[512];
    pad[depth & 511] = (char)depth;
    long r = depth > 0 ? app_recurse(depth - 1) : app_level_1(1);
    return r + pad[depth & 511];
}

__attribute__((noinline, noclone)) static long reader_wait(long n)
{
    volatile char pad[64];
    char buf[64];
    pad[n & 63] = (char)n;
    long r = read(pipefd[0], buf, sizeof buf);
    return r + pad[n & 63];
}

__attribute__((noinline, noclone)) static void *reader_loop(void *arg)
{
    long reads = 0;
    /* Named by itself, before it first blocks: every one of its waits carries the name. */
    pthread_setname_np(pthread_self(), "dc-reader");
    while (reader_wait(reads) > 0)
        reads++;
    sink = reads + (long)arg;
    return NULL;
}

int main(int argc, char **argv)
{
    seconds = argc > 1 ? atof(argv[1]) : 3.0;
    long depth = argc > 2 ? atol(argv[2]) : 0;
    wait_mode = argc > 3 && strcmp(argv[3], "wait") == 0;
    pthread_t reader;
    if (wait_mode) {
        if (pipe(pipefd) != 0 || pthread_create(&reader, NULL, reader_loop, NULL) != 0)
            return 1;
    }
    sink = depth > 0 ? app_recurse(depth) : app_level_1(1);
    if (wait_mode) {
        close(pipefd[1]);
        pthread_join(reader, NULL);
    }
    return 0;
}
