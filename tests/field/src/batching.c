/* batching: four submitter threads (think time ~1.5 ms, exponentially distributed) encode an
 * entry (encode_entry, ~50 us) and submit it to a batch; a batcher thread waits for the first
 * entry (wait_first_entry, idle), then keeps the batch open until it has 16 entries or its
 * 2 ms window has passed (collect_batch: a timed wait on a condition variable), then writes
 * the batch (write_batch, CPU ~100 us + 10 us per entry) and wakes the submitters. With four
 * submitters a batch never fills: requests wait for the window to close.
 *
 *   batching --seconds S
 * Knobs: FIELD_SCALE_{encode_entry,collect_batch,write_batch}; collect_batch's scale is the
 * window length. */
#include "field.h"

#define BATCH_MAX 16
static double s_encode, s_collect, s_write;
static pthread_mutex_t batch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t batch_grew; /* on CLOCK_MONOTONIC: immune to wall-clock steps */
static pthread_cond_t batch_written = PTHREAD_COND_INITIALIZER;
static int batch_len;
static uint64_t batch_seq; /* number of batches written */
static uint64_t batch_data[BATCH_MAX];

__attribute__((noinline)) uint64_t encode_entry(long k)
{
    FIELD_BURN(50.0 * s_encode);
    return field_sink + (uint64_t)k;
}

/* Adds an entry to the open batch and waits until that batch is written. */
__attribute__((noinline)) void submit_entry(uint64_t e)
{
    pthread_mutex_lock(&batch_lock);
    while (batch_len == BATCH_MAX)
        pthread_cond_wait(&batch_written, &batch_lock);
    batch_data[batch_len++] = e;
    uint64_t mine = batch_seq;
    pthread_cond_signal(&batch_grew);
    while (batch_seq == mine)
        pthread_cond_wait(&batch_written, &batch_lock);
    pthread_mutex_unlock(&batch_lock);
}

__attribute__((noinline)) void *submitter_loop(void *arg)
{
    long k = (long)arg;
    uint64_t seed = 0x2545F4914F6CDD1DULL + (uint64_t)k * 7919;
    while (field_running()) {
        sleep_us(field_exp(&seed, 1500)); /* think time */
        double t = now_us();
        submit_entry(encode_entry(k));
        field_record(t, now_us());
    }
    return NULL;
}

/* batch_lock held; returns when the batch has an entry */
__attribute__((noinline)) void wait_first_entry(void)
{
    while (batch_len == 0)
        pthread_cond_wait(&batch_grew, &batch_lock);
}

/* batch_lock held; keeps the batch open for its window unless it fills */
__attribute__((noinline)) void collect_batch(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = ts.tv_nsec + (long)(2000.0 * s_collect * 1000);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    while (batch_len < BATCH_MAX)
        if (pthread_cond_timedwait(&batch_grew, &batch_lock, &ts) == ETIMEDOUT)
            break;
}

__attribute__((noinline)) void write_batch(int n)
{
    FIELD_BURN((100.0 + 10.0 * n) * s_write);
    for (int i = 0; i < n; i++)
        batch_data[i] ^= field_sink;
}

__attribute__((noinline)) void *batcher_loop(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&batch_lock);
    for (;;) {
        wait_first_entry();
        collect_batch();
        int n = batch_len;
        write_batch(n); /* under the lock: submitters cannot add to a batch being written */
        batch_len = 0;
        batch_seq++;
        pthread_cond_broadcast(&batch_written);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("batching", argc, argv);
    s_encode = field_scale("encode_entry");
    s_collect = field_scale("collect_batch");
    s_write = field_scale("write_batch");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&batch_grew, &ca);
    field_thread(batcher_loop, NULL);
    for (long i = 0; i < 4; i++)
        field_thread(submitter_loop, (void *)i);
    field_wait_and_report();
    return 0;
}
