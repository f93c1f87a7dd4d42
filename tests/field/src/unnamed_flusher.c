/* unnamed_flusher: a small in-process service. Two worker threads take requests back to back
 * with 2 ms of think time between them; each request parses (own CPU, ~200 us) and then
 * updates a shared index under a mutex (~20 us). A flusher thread takes the same mutex every
 * ~11 ms and spins ~6 ms under it (flush_journal): the workers' requests wait for it. Two
 * SCHED_IDLE threads burn the most CPU (compact_cache) but only on otherwise idle CPUs.
 *
 * Built twice: as unnamed_flusher (no thread names, as many programs) and with
 * -DNAMED_THREADS as unnamed_pool_named (each thread named with pthread_setname_np).
 *
 * Knobs: FIELD_SCALE_{parse_request,update_index,flush_journal,compact_cache}. */
#include "field.h"

static pthread_mutex_t index_lock = PTHREAD_MUTEX_INITIALIZER;
static double s_parse, s_update, s_flush, s_compact;
static long index_entries;

static void name_thread(const char *name)
{
#ifdef NAMED_THREADS
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}

__attribute__((noinline)) void parse_request(void)
{
    FIELD_BURN(200.0 * s_parse);
}

__attribute__((noinline)) void update_index(void)
{
    pthread_mutex_lock(&index_lock);
    FIELD_BURN(20.0 * s_update);
    index_entries++;
    pthread_mutex_unlock(&index_lock);
}

__attribute__((noinline)) void handle_request(void)
{
    parse_request();
    update_index();
}

__attribute__((noinline)) void *worker_loop(void *arg)
{
    char name[16];
    snprintf(name, sizeof name, "svc-worker-%ld", (long)arg);
    name_thread(name);
    while (field_running()) {
        usleep(2000); /* think time */
        double t = now_us();
        handle_request();
        field_record(t, now_us());
    }
    return NULL;
}

__attribute__((noinline)) void flush_journal(void)
{
    pthread_mutex_lock(&index_lock);
    FIELD_BURN(6000.0 * s_flush);
    pthread_mutex_unlock(&index_lock);
}

__attribute__((noinline)) void *flusher_loop(void *arg)
{
    (void)arg;
    name_thread("journal-flush");
    while (field_running()) {
        usleep(11000);
        flush_journal();
    }
    return NULL;
}

__attribute__((noinline)) void compact_cache(void)
{
    FIELD_BURN(3000.0 * s_compact);
}

__attribute__((noinline)) void *compact_loop(void *arg)
{
    char name[16];
    snprintf(name, sizeof name, "compactor-%ld", (long)arg);
    name_thread(name);
    field_sched_idle();
    while (field_running()) {
        compact_cache();
        usleep(7000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
#ifdef NAMED_THREADS
    field_start("unnamed_pool_named", argc, argv);
#else
    field_start("unnamed_flusher", argc, argv);
#endif
    s_parse = field_scale("parse_request");
    s_update = field_scale("update_index");
    s_flush = field_scale("flush_journal");
    s_compact = field_scale("compact_cache");
    for (long i = 0; i < 2; i++)
        field_thread(compact_loop, (void *)i);
    field_thread(flusher_loop, NULL);
    for (long i = 0; i < 2; i++)
        field_thread(worker_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
