/* fsync_log: a logging service whose requests wait on real kernel I/O. Two request threads,
 * each with ~2 ms of think time between requests; a request encodes a record (encode_record,
 * CPU ~50 us) and commits it (commit_record: append the record to the thread's log file in a
 * temporary directory and fdatasync it, then append a commit marker and fdatasync again).
 * The I/O completes in the kernel (block layer, journal thread, interrupts), not in any
 * thread of this program. The think time is random (exponential, mean 2 ms): with a fixed
 * one the two threads' syncs lock into step for whole runs (one waiting for the other's
 * journal commit, or not), and the latency jumps between runs.
 *
 *   fsync_log --seconds S [--dir DIR]
 * Knobs: FIELD_SCALE_{encode_record,commit_record}; commit_record's scale is the number of
 * append+fdatasync rounds per request (2 by default; the fractional part is carried over from
 * request to request, so 1.3 makes 2.6 rounds per request on average). */
#include "field.h"

static double s_encode, s_commit;
static const char *dir;

struct logger {
    int fd;
    double credit;
    char rec[256];
};

__attribute__((noinline)) void encode_record(struct logger *lg, uint64_t seq)
{
    FIELD_BURN(50.0 * s_encode);
    snprintf(lg->rec, sizeof lg->rec, "seq=%llu hash=%016llx\n", (unsigned long long)seq,
             (unsigned long long)field_sink);
}

__attribute__((noinline)) void commit_record(struct logger *lg)
{
    lg->credit += 2.0 * s_commit;
    for (int round = 0; lg->credit >= 1.0; round++) {
        lg->credit -= 1.0;
        const char *what = round % 2 ? "commit\n" : lg->rec;
        if (write_all(lg->fd, what, strlen(what)) != 0)
            die("write");
        if (fdatasync(lg->fd) != 0)
            die("fdatasync");
    }
}

__attribute__((noinline)) void *request_loop(void *arg)
{
    long k = (long)arg;
    struct logger lg = {.credit = 0};
    char path[512];
    snprintf(path, sizeof path, "%s/log-%d-%ld", dir, (int)getpid(), k);
    lg.fd = open(path, O_CREAT | O_WRONLY | O_APPEND | O_TRUNC, 0644);
    if (lg.fd < 0)
        die(path);
    field_remove_later(path);
    uint64_t seq = 0;
    uint64_t seed = 0x853c49e6748fea9bULL + (uint64_t)k * 0x9e3779b97f4a7c15ULL;
    while (field_running()) {
        sleep_us(field_exp(&seed, 2000)); /* think time */
        double t = now_us();
        encode_record(&lg, ++seq);
        commit_record(&lg);
        field_record(t, now_us());
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("fsync_log", argc, argv);
    field_exit_on_term();
    s_encode = field_scale("encode_record");
    s_commit = field_scale("commit_record");
    dir = arg_string(argc, argv, "--dir", "/tmp/critpath-field-fsync_log");
    field_mkdir(dir);
    field_remove_later(dir);
    for (long i = 0; i < 2; i++)
        field_thread(request_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
