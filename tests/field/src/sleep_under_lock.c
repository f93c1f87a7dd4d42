/* sleep_under_lock: every wait in this program goes through one wrapper, wait_event(kind,
 * timeout), that wraps poll() (waiting for a client), pthread_cond_timedwait() (waiting for
 * the table lock) and nanosleep() (a timed pause). A generator thread issues requests at a
 * fixed average rate (Poisson arrivals, --rate per second) into a pipe; two handler threads
 * wait for requests (wait_event(WAIT_CLIENT)), take the table lock (waiting with
 * wait_event(WAIT_LOCK) while it is held), look the row up (lookup_row, CPU ~100 us) and
 * release it. A maintenance thread, every ~5 ms, takes the table lock and pauses ~3 ms while
 * holding it (maintenance -> wait_event(WAIT_SLEEP)): that sleep is what requests wait for.
 * Latency: from the request's issue (the generator's write to the pipe) to its completion.
 *
 *   sleep_under_lock --seconds S [--rate R]
 * Knobs: FIELD_SCALE_{lookup_row,maintenance}; maintenance's scale is the length of the pause
 * under the lock. */
#include "field.h"
#include <poll.h>

enum wait_kind { WAIT_CLIENT, WAIT_LOCK, WAIT_SLEEP };

static double s_lookup, s_maint;
static int req_pipe[2];
static pthread_mutex_t table_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t table_free; /* on CLOCK_MONOTONIC */
static int table_held;
static uint64_t rows[256];

struct request {
    double issued_us;
    uint64_t key;
};

/* The one place where this program waits. For WAIT_CLIENT the object is a file descriptor,
 * for WAIT_LOCK the table's condition variable (table_mutex held), for WAIT_SLEEP nothing.
 * Returns 1 when the event came, 0 on timeout. */
__attribute__((noinline)) int wait_event(enum wait_kind kind, double timeout_us, int fd)
{
    switch (kind) {
    case WAIT_CLIENT: {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(timeout_us / 1000));
        if (r < 0 && errno != EINTR)
            die("poll");
        return r > 0;
    }
    case WAIT_LOCK: {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long ns = ts.tv_nsec + (long)(timeout_us * 1000);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        return pthread_cond_timedwait(&table_free, &table_mutex, &ts) == 0;
    }
    case WAIT_SLEEP:
        sleep_us(timeout_us);
        return 1;
    }
    return 0;
}

__attribute__((noinline)) void lock_table(void)
{
    pthread_mutex_lock(&table_mutex);
    while (table_held)
        wait_event(WAIT_LOCK, 100000, -1);
    table_held = 1;
    pthread_mutex_unlock(&table_mutex);
}

__attribute__((noinline)) void unlock_table(void)
{
    pthread_mutex_lock(&table_mutex);
    table_held = 0;
    pthread_cond_broadcast(&table_free);
    pthread_mutex_unlock(&table_mutex);
}

__attribute__((noinline)) void lookup_row(const struct request *r)
{
    FIELD_BURN(100.0 * s_lookup);
    rows[r->key & 255] += field_sink;
}

__attribute__((noinline)) void handle_request(const struct request *r)
{
    lock_table();
    lookup_row(r);
    unlock_table();
}

__attribute__((noinline)) void *handler_loop(void *arg)
{
    (void)arg;
    for (;;) {
        if (!wait_event(WAIT_CLIENT, 100000, req_pipe[0]))
            continue;
        struct request r;
        ssize_t n = read(req_pipe[0], &r, sizeof r);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue; /* the other handler took it */
        if (n != (ssize_t)sizeof r)
            die("read request");
        handle_request(&r);
        field_record(r.issued_us, now_us());
    }
    return NULL;
}

__attribute__((noinline)) void maintenance(void)
{
    lock_table();
    wait_event(WAIT_SLEEP, 3000.0 * s_maint, -1); /* let in-flight writes drain */
    unlock_table();
}

__attribute__((noinline)) void *maintenance_loop(void *arg)
{
    (void)arg;
    for (;;) {
        wait_event(WAIT_SLEEP, 5000, -1);
        maintenance();
    }
    return NULL;
}

__attribute__((noinline)) void *generator_loop(void *arg)
{
    double rate = *(double *)arg;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    double next = now_us();
    uint64_t key = 0;
    while (field_running()) {
        next += field_exp(&seed, 1e6 / rate);
        double wait = next - now_us();
        if (wait > 0)
            wait_event(WAIT_SLEEP, wait, -1);
        struct request r = {.issued_us = now_us(), .key = ++key};
        if (write_all(req_pipe[1], &r, sizeof r) != 0)
            die("write request");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("sleep_under_lock", argc, argv);
    s_lookup = field_scale("lookup_row");
    s_maint = field_scale("maintenance");
    static double rate;
    rate = arg_double(argc, argv, "--rate", 1000);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&table_free, &ca);
    if (pipe(req_pipe) != 0)
        die("pipe");
    if (fcntl(req_pipe[0], F_SETFL, O_NONBLOCK) != 0)
        die("fcntl");
    field_thread(maintenance_loop, NULL);
    field_thread(handler_loop, NULL);
    field_thread(handler_loop, NULL);
    field_thread(generator_loop, &rate);
    field_wait_and_report();
    return 0;
}
