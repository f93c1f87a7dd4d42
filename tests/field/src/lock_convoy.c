/* lock_convoy: six threads repeatedly prepare an update outside a global mutex
 * (prepare_update, ~100 us) and apply it under the mutex (apply_update, ~150 us), with 1 ms
 * of think time between updates; the mutex convoys. A request is one update: prepare, wait
 * for the mutex, apply.
 *
 *   lock_convoy --seconds S
 * Knobs: FIELD_SCALE_{prepare_update,apply_update}. */
#include "field.h"

static double s_prepare, s_apply;
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t table[64];

__attribute__((noinline)) uint64_t prepare_update(long k)
{
    FIELD_BURN(100.0 * s_prepare);
    return field_sink + (uint64_t)k;
}

__attribute__((noinline)) void apply_update(uint64_t u)
{
    FIELD_BURN(150.0 * s_apply);
    table[u & 63] += field_sink;
}

__attribute__((noinline)) void *updater_loop(void *arg)
{
    long k = (long)arg;
    while (field_running()) {
        sleep_us(1000); /* think time */
        double t = now_us();
        uint64_t u = prepare_update(k);
        pthread_mutex_lock(&big_lock);
        apply_update(u);
        pthread_mutex_unlock(&big_lock);
        field_record(t, now_us());
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("lock_convoy", argc, argv);
    s_prepare = field_scale("prepare_update");
    s_apply = field_scale("apply_update");
    for (long i = 0; i < 6; i++)
        field_thread(updater_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
