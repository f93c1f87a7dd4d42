/* tcp_rpc_backend: the third process of tcp_rpc. Serves the RPC server's queries on a Unix
 * socket, one thread per connection; each query scans a table (scan_table, CPU ~1 ms).
 *
 *   tcp_rpc_backend --seconds S [--sock PATH]
 * Knobs: FIELD_SCALE_scan_table. */
#include "field.h"
#include "field_msg.h"

static double s_scan;

__attribute__((noinline)) void scan_table(struct msg *m)
{
    FIELD_BURN(1000.0 * s_scan);
    m->pad[1] = (char)field_sink;
}

__attribute__((noinline)) void *serve_queries(void *arg)
{
    int fd = (int)(long)arg;
    struct msg m;
    while (read_all(fd, &m, sizeof m) == 0) {
        scan_table(&m);
        if (write_all(fd, &m, sizeof m) != 0)
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
    field_start("tcp_rpc_backend", argc, argv);
    field_exit_on_term();
    s_scan = field_scale("scan_table");
    const char *path = arg_string(argc, argv, "--sock", "/tmp/critpath-field-tcp_rpc/backend.sock");
    field_mkdir("/tmp/critpath-field-tcp_rpc");
    field_remove_later("/tmp/critpath-field-tcp_rpc");
    int lfd = unix_listen(path);
    field_thread(deadline_thread, NULL);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            die("accept");
        }
        field_thread(serve_queries, (void *)(long)fd);
    }
}
