/* deploy_srv: a small TCP (loopback) server, one thread per connection: each request looks
 * the user up (lookup_user, CPU ~100 us) and renders the response (render_response, ~60 us).
 * Version 2 (FIELD_VERSION=2, "the deploy") also writes an audit trail on every request
 * (audit_log, almost no CPU: append the audit line to a file and fdatasync it, then append
 * its index entry and fdatasync again), and starts a SCHED_IDLE thread that warms caches
 * (warm_caches, a CPU burner that does not matter).
 *
 *   deploy_srv --seconds S [--port P] [--dir DIR]
 * Knobs: FIELD_SCALE_{lookup_user,render_response,audit_log,warm_caches}; audit_log's scale is
 * the number of append+fdatasync rounds per request (2 by default; the fractional part is
 * carried over from request to request). */
#include "field.h"
#include "field_msg.h"

static double s_lookup, s_render, s_audit, s_warm;
static int audit_fd = -1;
static int version = 1;

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

__attribute__((noinline)) void *handle_conn(void *arg)
{
    int fd = (int)(long)arg;
    struct msg m;
    while (read_all(fd, &m, sizeof m) == 0) {
        lookup_user(&m);
        render_response(&m);
        if (version >= 2)
            audit_log(&m);
        if (write_all(fd, &m, sizeof m) != 0)
            break;
    }
    close(fd);
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
        field_thread(handle_conn, (void *)(long)fd);
    }
}
