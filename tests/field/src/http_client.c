/* http_client: a closed-loop HTTP/1.1 client with keep-alive connections. Each of --conns
 * connections (one thread each) sleeps --think-us, sends `GET --path`, reads the response
 * head and its Content-Length body; the time from send to the end of the body is the
 * request's latency.
 *
 *   http_client --seconds S --port P [--conns N] [--think-us US] [--path /x]
 */
#include "field.h"

static int port, think_us;
static const char *path;

/* Reads one response; 0 on a 200 with its whole body. */
__attribute__((noinline)) int read_response(int fd)
{
    char head[4096];
    size_t n = 0;
    char *end = NULL;
    while (!end) {
        if (n == sizeof head - 1)
            return -1;
        ssize_t r = read(fd, head + n, sizeof head - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        n += (size_t)r;
        head[n] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    if (strncmp(head, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "http_client: %.40s\n", head);
        return -1;
    }
    long len = 0;
    char *cl = strcasestr(head, "\r\nContent-Length:");
    if (cl)
        len = atol(cl + 17);
    long have = (long)(head + n - (end + 4));
    char body[8192];
    while (have < len) {
        size_t want = (size_t)(len - have) < sizeof body ? (size_t)(len - have) : sizeof body;
        ssize_t r = read(fd, body, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        have += r;
    }
    return 0;
}

__attribute__((noinline)) void *client_loop(void *arg)
{
    long c = (long)arg;
    int fd = tcp_connect(port, 10.0);
    char req[512];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    while (field_running()) {
        sleep_us(think_us);
        double t = now_us();
        if (write_all(fd, req, (size_t)rl) != 0 || read_response(fd) != 0) {
            if (!field_running())
                break;
            /* the server may close an idle keep-alive connection: reconnect once */
            close(fd);
            fd = tcp_connect(port, 2.0);
            if (write_all(fd, req, (size_t)rl) != 0 || read_response(fd) != 0) {
                fprintf(stderr, "http_client: connection %ld failed\n", c);
                exit(3);
            }
        }
        field_record(t, now_us());
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("http_client", argc, argv);
    signal(SIGPIPE, SIG_IGN);
    port = (int)arg_double(argc, argv, "--port", 80);
    think_us = (int)arg_double(argc, argv, "--think-us", 1000);
    path = arg_string(argc, argv, "--path", "/");
    int conns = (int)arg_double(argc, argv, "--conns", 2);
    for (long i = 0; i < conns; i++)
        field_thread(client_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
