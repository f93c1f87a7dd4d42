/* tcp_rpc_server: a TCP (loopback) RPC server, one thread per connection. Each request is
 * decoded (decode_args, ~50 us), answered by a query to a backend process over a Unix socket
 * (query_backend: the backend's scan_table takes ~1 ms), and encoded (encode_result, ~50 us).
 *
 *   tcp_rpc_server --seconds S [--port P] [--backend PATH]
 * Knobs: FIELD_SCALE_{decode_args,encode_result}. */
#include "field.h"
#include "field_msg.h"

static double s_decode, s_encode;
static const char *backend_path;

__attribute__((noinline)) void decode_args(struct msg *m)
{
    FIELD_BURN(50.0 * s_decode);
    m->pad[0] = (char)field_sink;
}

__attribute__((noinline)) int query_backend(int bfd, struct msg *m)
{
    if (write_all(bfd, m, sizeof *m) != 0)
        return -1;
    return read_all(bfd, m, sizeof *m);
}

__attribute__((noinline)) void encode_result(struct msg *m)
{
    FIELD_BURN(50.0 * s_encode);
    m->pad[47] = (char)field_sink;
}

__attribute__((noinline)) void *handle_client(void *arg)
{
    int fd = (int)(long)arg;
    int bfd = unix_connect(backend_path, 5.0);
    struct msg m;
    while (read_all(fd, &m, sizeof m) == 0) {
        decode_args(&m);
        if (query_backend(bfd, &m) != 0) {
            fprintf(stderr, "tcp_rpc_server: backend: %s\n", strerror(errno));
            break;
        }
        encode_result(&m);
        if (write_all(fd, &m, sizeof m) != 0)
            break;
    }
    close(bfd);
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
    field_start("tcp_rpc_server", argc, argv);
    field_exit_on_term();
    s_decode = field_scale("decode_args");
    s_encode = field_scale("encode_result");
    int port = (int)arg_double(argc, argv, "--port", 47009);
    backend_path = arg_string(argc, argv, "--backend", "/tmp/critpath-field-tcp_rpc/backend.sock");
    int lfd = tcp_listen(port);
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
        field_thread(handle_client, (void *)(long)fd);
    }
}
