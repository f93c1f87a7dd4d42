/* deploy_srv: a small TCP (loopback) server, one thread per connection: each request looks
 * the user up (lookup_user, CPU ~100 us) and renders the response (render_response, ~60 us).
 * Version 2 (FIELD_VERSION=2, "the deploy") also writes an audit trail on every request
 * (audit_log, almost no CPU: append the audit line to a file and fdatasync it, then append
 * its index entry and fdatasync again), and starts a SCHED_IDLE thread that warms caches
 * (warm_caches, a CPU burner that does not matter).
 *
 * With --fork, each connection is served by a process of its own (forked at accept, as
 * PostgreSQL and other pre-fork servers do), and with --poll a connection waits for its next
 * request in wait_for_request (epoll_wait on the socket, then the read), as servers
 * built on an event set do: the wait for new work is then a poll, not a socket read.
 *
 *   deploy_srv --seconds S [--port P] [--dir DIR] [--fork] [--poll]
 * Knobs: FIELD_SCALE_{lookup_user,render_response,audit_log,warm_caches}; audit_log's scale is
 * the number of append+fdatasync rounds per request (2 by default; the fractional part is
 * carried over from request to request). */
#include "field.h"
#include "field_msg.h"

#include <sys/epoll.h>
#include <sys/wait.h>

static double s_lookup, s_render, s_audit, s_warm;
static int audit_fd = -1;
static int version = 1;
static int use_poll;

__attribute__((noinline)) void lookup_user(struct msg *m)
{
    FIELD_BURN(100.0 * s_lookup);
    m->pad[0] = (char)field_sink;
}

__attribute__((noinline)) void render_response(struct msg *m)
{
    FIELD_BURN(60.0 * s_render);
    m->pad[1] = (char)field_sink;
}

static __thread double audit_credit;

__attribute__((noinline)) void audit_log(const struct msg *m)
{
    char line[128];
    int n = snprintf(line, sizeof line, "audit id=%llu t=%.0f\n", (unsigned long long)m->id,
                     m->issued_us);
    char index[64];
    int m2 = snprintf(index, sizeof index, "index %llu\n", (unsigned long long)m->id);
    audit_credit += 2.0 * s_audit;
    for (int round = 0; audit_credit >= 1.0; round++) {
        audit_credit -= 1.0;
        int rc = round % 2 ? write_all(audit_fd, index, (size_t)m2)
                           : write_all(audit_fd, line, (size_t)n);
        if (rc != 0)
            die("audit write");
        if (fdatasync(audit_fd) != 0)
            die("fdatasync");
    }
}

/* Waits until the connection has a request to read (--poll); 0 when it has one. */
__attribute__((noinline)) int wait_for_request(int ep)
{
    struct epoll_event ev;
    for (;;) {
        int n = epoll_wait(ep, &ev, 1, -1);
        if (n == 1)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

__attribute__((noinline)) void *handle_conn(void *arg)
{
    int fd = (int)(long)arg;
    int ep = -1;
    if (use_poll) {
        ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN};
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll");
    }
    struct msg m;
    while ((ep < 0 || wait_for_request(ep) == 0) && read_all(fd, &m, sizeof m) == 0) {
        lookup_user(&m);
        render_response(&m);
        if (version >= 2)
            audit_log(&m);
        if (write_all(fd, &m, sizeof m) != 0)
            break;
    }
    close(fd);
    if (ep >= 0)
        close(ep);
    return NULL;
}

__attribute__((noinline)) void warm_caches(void)
{
    FIELD_BURN(4000.0 * s_warm);
}

__attribute__((noinline)) void *warmer_loop(void *arg)
{
    (void)arg;
    field_sched_idle();
    for (;;) {
        warm_caches();
        sleep_us(6000);
    }
    return NULL;
}

static void reap_children(int sig)
{
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
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
    field_start("deploy_srv", argc, argv);
    field_exit_on_term();
    version = field_env_int("FIELD_VERSION", 1);
    s_lookup = field_scale("lookup_user");
    s_render = field_scale("render_response");
    s_audit = field_scale("audit_log");
    s_warm = field_scale("warm_caches");
    int port = (int)arg_double(argc, argv, "--port", 47007);
    int use_fork = 0;
    for (int i = 1; i < argc; i++) {
        use_fork |= strcmp(argv[i], "--fork") == 0;
        use_poll |= strcmp(argv[i], "--poll") == 0;
    }
    if (use_fork) {
        /* Reap the children as they exit, so that their CPU time counts as the server's. */
        struct sigaction sa = {.sa_handler = reap_children, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGCHLD, &sa, NULL);
    }
    const char *dir = arg_string(argc, argv, "--dir", "/tmp/critpath-field-deploy_fsync");
    int lfd = tcp_listen(port);
    if (version >= 2) {
        field_mkdir(dir);
        field_remove_later(dir);
        char path[512];
        snprintf(path, sizeof path, "%s/audit-%d.log", dir, (int)getpid());
        audit_fd = open(path, O_CREAT | O_WRONLY | O_APPEND | O_TRUNC, 0644);
        if (audit_fd < 0)
            die(path);
        field_remove_later(path);
        field_thread(warmer_loop, NULL);
    }
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
        if (!use_fork) {
            field_thread(handle_conn, (void *)(long)fd);
            continue;
        }
        pid_t child = fork();
        if (child < 0)
            die("fork");
        if (child == 0) {
            close(lfd);
            handle_conn((void *)(long)fd);
            _exit(0);
        }
        close(fd);
    }
}
