/* idle_hog: a red-herring test. One request thread (1 ms think time between requests) whose
 * requests are bound by their own CPU work (checksum_payload ~400 us, format_reply ~50 us),
 * while two SCHED_IDLE threads (rebuild_bloom) and one nice-19 thread (scan_garbage) burn far
 * more CPU in total; they only use otherwise idle CPU time.
 *
 *   idle_hog --seconds S
 * Knobs: FIELD_SCALE_{checksum_payload,format_reply,rebuild_bloom,scan_garbage}. */
#include "field.h"

static double s_checksum, s_format, s_bloom, s_garbage;

__attribute__((noinline)) void checksum_payload(void)
{
    FIELD_BURN(400.0 * s_checksum);
}

__attribute__((noinline)) void format_reply(void)
{
    FIELD_BURN(50.0 * s_format);
}

__attribute__((noinline)) void *request_loop(void *arg)
{
    (void)arg;
    while (field_running()) {
        sleep_us(1000); /* think time */
        double t = now_us();
        checksum_payload();
        format_reply();
        field_record(t, now_us());
    }
    return NULL;
}

__attribute__((noinline)) void rebuild_bloom(void)
{
    FIELD_BURN(3000.0 * s_bloom);
}

__attribute__((noinline)) void *bloom_loop(void *arg)
{
    (void)arg;
    field_sched_idle();
    for (;;) {
        rebuild_bloom();
        sleep_us(7000);
    }
    return NULL;
}

__attribute__((noinline)) void scan_garbage(void)
{
    FIELD_BURN(2500.0 * s_garbage);
}

__attribute__((noinline)) void *garbage_loop(void *arg)
{
    (void)arg;
    field_nice(19);
    for (;;) {
        scan_garbage();
        sleep_us(7500);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("idle_hog", argc, argv);
    s_checksum = field_scale("checksum_payload");
    s_format = field_scale("format_reply");
    s_bloom = field_scale("rebuild_bloom");
    s_garbage = field_scale("scan_garbage");
    field_thread(bloom_loop, NULL);
    field_thread(bloom_loop, NULL);
    field_thread(garbage_loop, NULL);
    field_thread(request_loop, NULL);
    field_wait_and_report();
    return 0;
}
