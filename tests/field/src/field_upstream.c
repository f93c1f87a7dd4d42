/* field_upstream: a minimal HTTP/1.1 upstream (keep-alive, one thread per connection) for
 * nginx. Every request is answered by slow_backend, which spends --delay-us microseconds
 * (a third of it CPU, the rest a sleep, like a call to a slower system), then a 512-byte body.
 *
 *   field_upstream --seconds S --port P [--delay-us US]
 * Knobs: FIELD_SCALE_slow_backend. */
#include "field.h"

static double s_slow, delay_us;

__attribute__((noinline)) void slow_backend(void)
{
    double us = delay_us * s_slow;
    FIELD_BURN(us / 3);
    sleep_us(us * 2 / 3);
    /* Keeps the sleep a call, not a tail jump: gcc -O2 otherwise leaves slow_backend's frame
     * before the sleep, so that no stack names it for two thirds of its time and the declared
     * culprit is unobservable to any profiler. */
    __asm__ volatile("" ::: "memory");
}

/* Reads one request head; 0 when complete, -1 at EOF or error. */
__attribute__((noinline)) int read_request(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        char *end = memmem(buf, *have, "\r\n\r\n", 4);
        if (end) {
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, end + 4, *have - used);
            *have -= used;
            return 0;
        }
        if (*have == cap)
            return -1;
        ssize_t r = read(fd, buf + *have, cap - *have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        *have += (size_t)r;
    }
}

__attribute__((noinline)) void *serve_conn(void *arg)
{
    int fd = (int)(long)arg;
    char buf[8192];
    size_t have = 0;
    char body[512];
    memset(body, 'x', sizeof body);
    char head[128];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                      "Connection: keep-alive\r\n\r\n",
                      sizeof body);
    while (read_request(fd, buf, sizeof buf, &have) == 0) {
        slow_backend();
        if (write_all(fd, head, (size_t)hl) != 0 || write_all(fd, body, sizeof body) != 0)
            break;
    }
    close(fd);
    return NULL;
}

__attribute__((noinline)) void *deadline_thread(void *arg)
{
    (void)arg;
    while (field_running())
        sleep_us(50000);
    exit(0);
}

int main(int argc, char **argv)
{
    field_start("field_upstream", argc, argv);
    field_exit_on_term();
    s_slow = field_scale("slow_backend");
    delay_us = arg_double(argc, argv, "--delay-us", 3000);
    int lfd = tcp_listen((int)arg_double(argc, argv, "--port", 47013));
    field_thread(deadline_thread, NULL);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            die("accept");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        field_thread(serve_conn, (void *)(long)fd);
    }
}
