/* pipe_chain_srv: a Unix-socket server that forwards every request through a pipe to a helper
 * process (forked at start) which transforms the block (CPU, ~500 us) and writes it back on a
 * second pipe; the server then seals the reply and answers. One thread per connection; the
 * helper serves one block at a time (a mutex guards the pipe pair).
 *
 *   pipe_chain_srv --seconds S [--sock PATH]
 * Knobs: FIELD_SCALE_{parse_frame,transform_block,seal_reply}. */
#include "field.h"
#include "field_msg.h"
#include <sys/prctl.h>
#include <sys/wait.h>

static double s_parse, s_transform, s_seal;
static int to_helper[2], from_helper[2];
static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) void transform_block(struct msg *m)
{
    FIELD_BURN(500.0 * s_transform);
    for (int i = 0; i < 48; i++)
        m->pad[i] ^= (char)(field_sink >> (i & 7));
}

__attribute__((noinline)) void helper_main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    close(to_helper[1]);
    close(from_helper[0]);
    struct msg m;
    while (read_all(to_helper[0], &m, sizeof m) == 0) {
        transform_block(&m);
        if (write_all(from_helper[1], &m, sizeof m) != 0)
            break;
    }
    _exit(0);
}

__attribute__((noinline)) void parse_frame(struct msg *m)
{
    FIELD_BURN(60.0 * s_parse);
    m->pad[0] = (char)field_sink;
}

__attribute__((noinline)) int forward_block(struct msg *m)
{
    pthread_mutex_lock(&helper_lock);
    int rc = write_all(to_helper[1], m, sizeof *m);
    if (rc == 0)
        rc = read_all(from_helper[0], m, sizeof *m);
    pthread_mutex_unlock(&helper_lock);
    return rc;
}

__attribute__((noinline)) void seal_reply(struct msg *m)
{
    FIELD_BURN(40.0 * s_seal);
    m->pad[47] = (char)field_sink;
}

__attribute__((noinline)) void *handle_conn(void *arg)
{
    int fd = (int)(long)arg;
    struct msg m;
    while (read_all(fd, &m, sizeof m) == 0) {
        parse_frame(&m);
        if (forward_block(&m) != 0) {
            fprintf(stderr, "pipe_chain_srv: helper gone\n");
            exit(3);
        }
        seal_reply(&m);
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
    field_start("pipe_chain_srv", argc, argv);
    s_parse = field_scale("parse_frame");
    s_transform = field_scale("transform_block");
    s_seal = field_scale("seal_reply");
    if (pipe(to_helper) != 0 || pipe(from_helper) != 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0)
        helper_main();
    close(to_helper[0]);
    close(from_helper[1]);
    field_exit_on_term();
    const char *path = arg_string(argc, argv, "--sock", "/tmp/critpath-field-pipe_chain/sock");
    field_mkdir("/tmp/critpath-field-pipe_chain");
    field_remove_later("/tmp/critpath-field-pipe_chain");
    int lfd = unix_listen(path);
    field_thread(deadline_thread, NULL);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            die("accept");
        }
        field_thread(handle_conn, (void *)(long)fd);
    }
}
