/* submilli_waits: latency made of many sub-millisecond waits. Two requester threads, each
 * paired with its own stage thread; a request (after 1 ms of think time) does 10 hand-offs:
 * the requester prepares a stage (prepare_stage, ~10 us), passes it to its stage thread
 * through a mutex + condition variable and waits; the stage thread runs stage_work (~80 us
 * of CPU) and signals back. Each wait is ~0.1-0.2 ms; a request is ~1-2 ms.
 *
 *   submilli_waits --seconds S
 * Knobs: FIELD_SCALE_{prepare_stage,stage_work}. */
#include "field.h"

static double s_prepare, s_stage;

struct pair {
    pthread_mutex_t lock;
    pthread_cond_t to_stage, to_requester;
    int pending; /* a stage waits for the stage thread */
    int done;
    uint64_t data;
};

__attribute__((noinline)) void stage_work(struct pair *p)
{
    FIELD_BURN(80.0 * s_stage);
    p->data ^= field_sink;
}

__attribute__((noinline)) void *stage_loop(void *arg)
{
    struct pair *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->pending)
            pthread_cond_wait(&p->to_stage, &p->lock);
        pthread_mutex_unlock(&p->lock);
        stage_work(p);
        pthread_mutex_lock(&p->lock);
        p->pending = 0;
        p->done = 1;
        pthread_cond_signal(&p->to_requester);
    }
    return NULL;
}

__attribute__((noinline)) void prepare_stage(struct pair *p, int i)
{
    FIELD_BURN(10.0 * s_prepare);
    p->data += (uint64_t)i + field_sink;
}

__attribute__((noinline)) void hand_off(struct pair *p)
{
    pthread_mutex_lock(&p->lock);
    p->pending = 1;
    p->done = 0;
    pthread_cond_signal(&p->to_stage);
    while (!p->done)
        pthread_cond_wait(&p->to_requester, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

__attribute__((noinline)) void handle_request(struct pair *p)
{
    for (int i = 0; i < 10; i++) {
        prepare_stage(p, i);
        hand_off(p);
    }
}

__attribute__((noinline)) void *requester_loop(void *arg)
{
    struct pair *p = arg;
    while (field_running()) {
        sleep_us(1000); /* think time */
        double t = now_us();
        handle_request(p);
        field_record(t, now_us());
    }
    return NULL;
}

int main(int argc, char **argv)
{
    field_start("submilli_waits", argc, argv);
    s_prepare = field_scale("prepare_stage");
    s_stage = field_scale("stage_work");
    static struct pair pairs[2];
    for (int i = 0; i < 2; i++) {
        pthread_mutex_init(&pairs[i].lock, NULL);
        pthread_cond_init(&pairs[i].to_stage, NULL);
        pthread_cond_init(&pairs[i].to_requester, NULL);
        field_thread(stage_loop, &pairs[i]);
        field_thread(requester_loop, &pairs[i]);
    }
    field_wait_and_report();
    return 0;
}
