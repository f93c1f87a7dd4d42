/* field.h: the little that every field program shares (timing, knobs, CPU work, latency
 * summary). Header-only on purpose: each program is one or two plain C files built with
 * `gcc -O2 -g -pthread`, like code written elsewhere. Nothing here knows about critpath.
 *
 * Knobs: FIELD_SCALE_<function>=<float> scales the amount of work of one named function
 * (spin iterations, sleep length, bytes, number of syncs); FIELD_ITERS_PER_US sets how many
 * hash steps make one microsecond of CPU work (default 1000, about right for a 3 GHz core).
 *
 * Every program runs for --seconds S. Requests that start in the first 0.5 s (warm-up) or end
 * after S are not counted; the summary is one JSON line on stdout. */
#ifndef FIELD_H
#define FIELD_H
#pragma GCC diagnostic ignored "-Wunused-function"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define FIELD_WARMUP_US 500000.0

static inline double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(2);
}

static void sleep_us(double us)
{
    if (us <= 0)
        return;
    struct timespec ts = {(time_t)(us / 1e6), (long)(fmod(us, 1e6) * 1e3)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- knobs ---- */
#define FIELD_MAX_KNOBS 16
static struct {
    const char *name;
    double value;
} field_knobs[FIELD_MAX_KNOBS];
static int field_nknobs;

static double field_scale(const char *function)
{
    char var[128];
    snprintf(var, sizeof var, "FIELD_SCALE_%s", function);
    const char *s = getenv(var);
    double v = 1.0;
    if (s && *s) {
        char *end;
        v = strtod(s, &end);
        if (end == s || v < 0) {
            fprintf(stderr, "bad %s=%s\n", var, s);
            exit(2);
        }
    }
    if (field_nknobs < FIELD_MAX_KNOBS) {
        field_knobs[field_nknobs].name = function;
        field_knobs[field_nknobs].value = v;
        field_nknobs++;
    }
    return v;
}

static int field_env_int(const char *var, int dflt)
{
    const char *s = getenv(var);
    return s && *s ? atoi(s) : dflt;
}

/* ---- CPU work: a hash over a 4 KiB buffer, written as a macro so that no helper frame or
 * inlined function appears under the named function that burns. ---- */
static double field_ipus = 1000.0; /* hash steps per microsecond */
static unsigned char field_buf[4096];
static volatile uint64_t field_sink;

#define FIELD_BURN(us)                                                                 \
    do {                                                                               \
        long n_ = (long)((us) * field_ipus);                                           \
        uint64_t x_ = 1469598103934665603ULL;                                          \
        for (long i_ = 0; i_ < n_; i_++)                                               \
            x_ = (x_ ^ field_buf[i_ & 4095]) * 1099511628211ULL;                       \
        field_sink = x_;                                                               \
    } while (0)

/* ---- arguments ---- */
static double arg_double(int argc, char **argv, const char *flag, double dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return atof(argv[i + 1]);
    return dflt;
}

static const char *arg_string(int argc, char **argv, const char *flag, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return argv[i + 1];
    return dflt;
}

/* ---- run clock and latency summary ---- */
static double field_t0, field_warm_end, field_t_end;
static volatile sig_atomic_t field_stop;
static float *field_lat;
static long field_nlat, field_cap;
static int field_closed;
static const char *field_prog = "field";

static void field_start(const char *prog, int argc, char **argv)
{
    field_prog = prog;
    double seconds = arg_double(argc, argv, "--seconds", 3.0);
    if (seconds < 1.0)
        seconds = 1.0;
    const char *ipus = getenv("FIELD_ITERS_PER_US");
    if (ipus && *ipus)
        field_ipus = atof(ipus);
    for (int i = 0; i < 4096; i++)
        field_buf[i] = (unsigned char)(i * 131 + 7);
    field_cap = 1L << 23;
    field_lat = malloc(sizeof(float) * field_cap);
    if (!field_lat)
        die("malloc");
    field_t0 = now_us();
    field_warm_end = field_t0 + FIELD_WARMUP_US;
    field_t_end = field_t0 + seconds * 1e6;
}

static inline int field_running(void)
{
    return !field_stop && now_us() < field_t_end;
}

/* One request issued at `issued` (µs, now_us clock) and completed at `done`. */
static void field_record(double issued, double done)
{
    if (issued < field_warm_end || done > field_t_end)
        return;
    /* Lock-free: a shared lock here would be one more lock every request takes, and the
     * profiler would rightly see it. */
    if (__atomic_load_n(&field_closed, __ATOMIC_ACQUIRE))
        return;
    long i = __atomic_fetch_add(&field_nlat, 1, __ATOMIC_ACQ_REL);
    if (i < field_cap)
        field_lat[i] = (float)(done - issued);
}

static int field_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double field_pct(const float *v, long n, double p)
{
    if (n == 0)
        return 0;
    double r = p * (n - 1);
    long i = (long)r;
    double f = r - i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

/* Prints the one-line JSON summary. */
static void field_report(void)
{
    __atomic_store_n(&field_closed, 1, __ATOMIC_RELEASE);
    sleep_us(1000); /* a request recorded just before the close finishes its store */
    long n = __atomic_load_n(&field_nlat, __ATOMIC_ACQUIRE);
    if (n > field_cap)
        n = field_cap;
    qsort(field_lat, n, sizeof(float), field_cmp);
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += field_lat[i];
    double secs = (field_t_end - field_warm_end) / 1e6;
    printf("{\"program\": \"%s\", \"requests\": %ld, \"seconds\": %.3f, \"throughput\": %.2f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, "
           "\"max_us\": %.1f, \"scales\": {",
           field_prog, n, secs, n / secs, field_pct(field_lat, n, 0.5),
           field_pct(field_lat, n, 0.9), field_pct(field_lat, n, 0.99), n ? sum / n : 0.0,
           n ? field_lat[n - 1] : 0.0);
    for (int i = 0; i < field_nknobs; i++)
        printf("%s\"%s\": %g", i ? ", " : "", field_knobs[i].name, field_knobs[i].value);
    printf("}}\n");
    fflush(stdout);
}

/* Main thread of a self-contained program: sleep to the end, a little grace for requests in
 * flight, then report. The caller exits without joining its threads. */
static void field_wait_and_report(void)
{
    double left;
    while ((left = field_t_end - now_us()) > 0 && !field_stop)
        sleep_us(left > 100000 ? 100000 : left);
    field_stop = 1;
    sleep_us(20000);
    field_report();
}

/* ---- threads ---- */
static pthread_t field_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    if (rc) {
        errno = rc;
        die("pthread_create");
    }
    return t;
}

/* Put the calling thread in SCHED_IDLE (runs only when a CPU has nothing else). */
static void field_sched_idle(void)
{
    struct sched_param sp = {0};
    if (sched_setscheduler((pid_t)syscall(SYS_gettid), SCHED_IDLE, &sp) != 0)
        die("sched_setscheduler(SCHED_IDLE)");
}

static void field_nice(int inc)
{
    /* setpriority on a thread id changes that thread only on Linux */
    errno = 0;
    if (nice(inc) == -1 && errno)
        die("nice");
}

/* ---- I/O helpers ---- */
static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 0 on success, -1 on error or EOF */
static int read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void field_mkdir(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        die(dir);
}

/* xorshift64*: deterministic pseudo-random numbers for arrivals */
static inline double field_rand01(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return ((x * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}

static inline double field_exp(uint64_t *s, double mean)
{
    double u = field_rand01(s);
    return -mean * log(1.0 - u);
}

/* ---- files to remove at exit or on SIGTERM ---- */
#define FIELD_MAX_PATHS 16
static char field_paths[FIELD_MAX_PATHS][512];
static volatile int field_npaths;
static pthread_mutex_t field_paths_lock = PTHREAD_MUTEX_INITIALIZER;

static void field_remove_later(const char *path)
{
    pthread_mutex_lock(&field_paths_lock);
    if (field_npaths < FIELD_MAX_PATHS) {
        snprintf(field_paths[field_npaths], 512, "%s", path);
        field_npaths++;
    }
    pthread_mutex_unlock(&field_paths_lock);
}

static void field_cleanup(void)
{
    for (int i = field_npaths - 1; i >= 0; i--)
        if (unlink(field_paths[i]) != 0 && errno == EISDIR)
            rmdir(field_paths[i]);
}

static void field_on_term(int sig)
{
    (void)sig;
    for (int i = field_npaths - 1; i >= 0; i--)
        if (unlink(field_paths[i]) != 0)
            rmdir(field_paths[i]);
    _exit(0);
}

/* SIGTERM/SIGINT: remove the registered files and exit at once (servers print nothing). */
static void field_exit_on_term(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = field_on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    atexit(field_cleanup);
}

/* ---- sockets ---- */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>

static void field_timeouts(int fd, double seconds)
{
    struct timeval tv = {(time_t)seconds, (long)(fmod(seconds, 1.0) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int unix_listen(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die(path);
    if (listen(fd, 64) != 0)
        die("listen");
    field_remove_later(path);
    return fd;
}

/* Connects, retrying for up to `wait_s` seconds while the server starts. */
static int unix_connect(const char *path, double wait_s)
{
    double give_up = now_us() + wait_s * 1e6;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            field_timeouts(fd, 3.0);
            return fd;
        }
        close(fd);
        if (now_us() > give_up)
            die(path);
        sleep_us(10000);
    }
}

static int tcp_listen(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    if (listen(fd, 64) != 0)
        die("listen");
    return fd;
}

static int tcp_connect(int port, double wait_s)
{
    double give_up = now_us() + wait_s * 1e6;
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            field_timeouts(fd, 3.0);
            return fd;
        }
        close(fd);
        if (now_us() > give_up)
            die("connect");
        sleep_us(10000);
    }
}

#endif
