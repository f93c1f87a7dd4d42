/* evloop_client: an event-loop load generator, like pgbench, redis-benchmark or an async HTTP
 * client: one thread keeps --conns connections busy through epoll, sending a connection's next
 * 64-byte request as soon as its reply is in (no think time), so it waits for every answer at
 * its loop level (epoll_wait), not inside the function that made the request. The time from
 * send to reply is the request's latency.
 *
 *   evloop_client --seconds S --tcp PORT [--conns N] [--label NAME] */
#include "field.h"
#include "field_msg.h"
#include <fcntl.h>
#include <sys/epoll.h>

#define MAX_CONNS 64

struct conn {
    int fd;
    uint64_t id;
    double issued;
    size_t have;
    struct msg reply;
};

__attribute__((noinline)) int send_request(struct conn *c)
{
    struct msg m;
    memset(&m, 0, sizeof m);
    m.id = ++c->id;
    c->issued = now_us();
    m.issued_us = c->issued;
    c->have = 0;
    return write_all(c->fd, &m, sizeof m);
}

/* Reads what arrived; returns 1 when a whole reply is in, 0 when more is to come. */
__attribute__((noinline)) int read_reply(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, (char *)&c->reply + c->have, sizeof c->reply - c->have);
        if (n > 0) {
            c->have += (size_t)n;
            if (c->have == sizeof c->reply)
                return 1;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (!field_running())
            return 0;
        fprintf(stderr, "evloop_client: connection closed: %s\n", n ? strerror(errno) : "EOF");
        exit(3);
    }
}

__attribute__((noinline)) void event_loop(struct conn *conns, int nconns)
{
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < nconns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0)
            die("epoll_ctl");
        if (send_request(&conns[i]) != 0)
            die("send");
    }
    struct epoll_event events[MAX_CONNS];
    while (field_running()) {
        int n = epoll_wait(ep, events, MAX_CONNS, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!read_reply(c))
                continue;
            if (c->reply.id != c->id) {
                fprintf(stderr, "evloop_client: reply %llu for request %llu\n",
                        (unsigned long long)c->reply.id, (unsigned long long)c->id);
                exit(3);
            }
            field_record(c->issued, now_us());
            if (field_running() && send_request(c) != 0) {
                fprintf(stderr, "evloop_client: send: %s\n", strerror(errno));
                exit(3);
            }
        }
    }
    close(ep);
}

int main(int argc, char **argv)
{
    const char *label = arg_string(argc, argv, "--label", "evloop_client");
    field_start(label, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int port = (int)arg_double(argc, argv, "--tcp", 0);
    int nconns = (int)arg_double(argc, argv, "--conns", 4);
    if (!port || nconns < 1 || nconns > MAX_CONNS) {
        fprintf(stderr, "usage: evloop_client --seconds S --tcp PORT [--conns N<=64] "
                        "[--label NAME]\n");
        return 2;
    }
    static struct conn conns[MAX_CONNS];
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = tcp_connect(port, 5.0);
        conns[i].id = (uint64_t)i << 40;
        int flags = fcntl(conns[i].fd, F_GETFL);
        if (flags < 0 || fcntl(conns[i].fd, F_SETFL, flags | O_NONBLOCK) != 0)
            die("fcntl");
    }
    event_loop(conns, nconns);
    field_report();
    return 0;
}
