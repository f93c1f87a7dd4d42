/* resp_client: a closed-loop Redis client (RESP protocol by hand). Each of --conns
 * connections (one thread each) sleeps --think-us, sends `SET key:<n> <64-byte value>` and
 * waits for +OK; the time from send to reply is the request's latency.
 *
 *   resp_client --seconds S --port P [--conns N] [--think-us US] [--keys K]
 */
#include "field.h"

static int port, think_us, nkeys;

/* Reads one reply line (up to \r\n); 0 when it is "+OK". */
__attribute__((noinline)) int read_reply(int fd)
{
    char line[256];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, line + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        n++;
        if (n >= 2 && line[n - 2] == '\r' && line[n - 1] == '\n')
            break;
        if (n == sizeof line)
            return -1;
    }
    if (n >= 3 && memcmp(line, "+OK", 3) == 0)
        return 0;
    fprintf(stderr, "resp_client: unexpected reply %.*s\n", (int)n, line);
    return -1;
}

__attribute__((noinline)) int send_set(int fd, long key)
{
    char k[32], cmd[256];
    int kl = snprintf(k, sizeof k, "key:%ld", key);
    char value[65];
    memset(value, 'v', 64);
    value[64] = 0;
    int n = snprintf(cmd, sizeof cmd, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$64\r\n%s\r\n", kl, k, value);
    return write_all(fd, cmd, (size_t)n);
}

__attribute__((noinline)) void *client_loop(void *arg)
{
    long c = (long)arg;
    int fd = tcp_connect(port, 10.0);
    uint64_t seed = 88172645463325252ULL + (uint64_t)c;
    while (field_running()) {
        sleep_us(think_us);
        long key = (long)(field_rand01(&seed) * nkeys);
        double t = now_us();
        if (send_set(fd, key) != 0 || read_reply(fd) != 0) {
            if (!field_running())
                break;
            fprintf(stderr, "resp_client: connection %ld failed: %s\n", c, strerror(errno));
            exit(3);
        }
        field_record(t, now_us());
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("resp_client", argc, argv);
    signal(SIGPIPE, SIG_IGN);
    port = (int)arg_double(argc, argv, "--port", 6379);
    think_us = (int)arg_double(argc, argv, "--think-us", 1000);
    nkeys = (int)arg_double(argc, argv, "--keys", 10000);
    int conns = (int)arg_double(argc, argv, "--conns", 2);
    for (long i = 0; i < conns; i++)
        field_thread(client_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
