/* rwlock_readers: three reader threads serve requests (1 ms think time between them) by
 * reading a snapshot under a pthread read-write lock (read_snapshot, ~100 us) and formatting
 * the answer outside it (format_answer, ~60 us). A writer thread rewrites the table under
 * the write lock (rewrite_table, CPU ~3 ms) every ~9 ms; the lock prefers writers, so readers
 * queue behind a waiting writer too.
 *
 *   rwlock_readers --seconds S
 * Knobs: FIELD_SCALE_{read_snapshot,format_answer,rewrite_table}. */
#include "field.h"

static double s_read, s_format, s_rewrite;
static pthread_rwlock_t table_lock;
static uint64_t table[1024];

__attribute__((noinline)) uint64_t read_snapshot(long k)
{
    pthread_rwlock_rdlock(&table_lock);
    FIELD_BURN(100.0 * s_read);
    uint64_t v = table[(uint64_t)k & 1023] ^ field_sink;
    pthread_rwlock_unlock(&table_lock);
    return v;
}

__attribute__((noinline)) void format_answer(uint64_t v)
{
    FIELD_BURN(60.0 * s_format);
    field_sink ^= v;
}

__attribute__((noinline)) void *reader_loop(void *arg)
{
    long k = (long)arg;
    while (field_running()) {
        sleep_us(1000); /* think time */
        double t = now_us();
        format_answer(read_snapshot(k++));
        field_record(t, now_us());
    }
    return NULL;
}

__attribute__((noinline)) void rewrite_table(void)
{
    pthread_rwlock_wrlock(&table_lock);
    FIELD_BURN(3000.0 * s_rewrite);
    for (int i = 0; i < 1024; i++)
        table[i] += field_sink + (uint64_t)i;
    pthread_rwlock_unlock(&table_lock);
}

__attribute__((noinline)) void *writer_loop(void *arg)
{
    (void)arg;
    for (;;) {
        sleep_us(6000);
        rewrite_table();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("rwlock_readers", argc, argv);
    s_read = field_scale("read_snapshot");
    s_format = field_scale("format_answer");
    s_rewrite = field_scale("rewrite_table");
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&table_lock, &a);
    field_thread(writer_loop, NULL);
    for (long i = 0; i < 3; i++)
        field_thread(reader_loop, (void *)(i * 1000));
    field_wait_and_report();
    return 0;
}
