/* field_client: a closed-loop load generator shared by the client/server scenarios. Each of
 * --conns connections (one thread each) sleeps --think-us, sends one 64-byte request, and
 * waits for the 64-byte reply; the time from send to reply is the request's latency.
 *
 *   field_client --seconds S (--unix PATH | --tcp PORT) [--conns N] [--think-us US]
 *                [--think-exp 1] [--label NAME]
 * With --think-exp 1 the think time is random (exponential with mean --think-us), so that the
 * connections do not lock into step with each other or with the server's periodic work. */
#include "field.h"
#include "field_msg.h"


static const char *unix_path;
static int tcp_port;
static int think_us, think_exp;

__attribute__((noinline)) int issue_request(int fd, uint64_t id)
{
    struct msg m;
    memset(&m, 0, sizeof m);
    m.id = id;
    m.issued_us = now_us();
    if (write_all(fd, &m, sizeof m) != 0)
        return -1;
    struct msg r;
    if (read_all(fd, &r, sizeof r) != 0)
        return -1;
    if (r.id != id) {
        fprintf(stderr, "field_client: reply %llu for request %llu\n", (unsigned long long)r.id,
                (unsigned long long)id);
        return -1;
    }
    return 0;
}

__attribute__((noinline)) void *client_loop(void *arg)
{
    long k = (long)arg;
    int fd = unix_path ? unix_connect(unix_path, 5.0) : tcp_connect(tcp_port, 5.0);
    uint64_t id = (uint64_t)k << 40;
    uint64_t seed = 0x9fb21c651e98df25ULL ^ ((uint64_t)k * 0x9e3779b97f4a7c15ULL);
    while (field_running()) {
        sleep_us(think_exp ? field_exp(&seed, think_us) : think_us);
        double t = now_us();
        if (issue_request(fd, ++id) != 0) {
            if (!field_running())
                break;
            fprintf(stderr, "field_client: connection %ld: %s\n", k, strerror(errno));
            exit(3);
        }
        field_record(t, now_us());
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *label = arg_string(argc, argv, "--label", "field_client");
    field_start(label, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    unix_path = arg_string(argc, argv, "--unix", NULL);
    tcp_port = (int)arg_double(argc, argv, "--tcp", 0);
    int conns = (int)arg_double(argc, argv, "--conns", 2);
    think_us = (int)arg_double(argc, argv, "--think-us", 2000);
    think_exp = (int)arg_double(argc, argv, "--think-exp", 0);
    if (!unix_path && !tcp_port) {
        fprintf(stderr, "usage: field_client --seconds S (--unix PATH | --tcp PORT) "
                        "[--conns N] [--think-us US] [--think-exp 1] [--label NAME]\n");
        return 2;
    }
    for (long i = 0; i < conns; i++)
        field_thread(client_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
