/* epoll_pool_srv: one event-loop thread (epoll) accepts Unix-socket connections and reads
 * 64-byte requests; it queues them (mutex + condition variable) to a pool of 3 workers. A
 * worker renders the page (CPU, ~300 us) and looks the result up in a shared cache under a
 * read lock (lookup_cache); a refresher thread takes the write lock every ~10 ms and spins
 * ~4 ms under it (refresh_cache), so lookups wait behind it. Replies go back on the socket.
 *
 *   epoll_pool_srv --seconds S [--sock PATH]
 * Knobs: FIELD_SCALE_{render_page,lookup_cache,refresh_cache}. */
#include "field.h"
#include "field_msg.h"
#include <sys/epoll.h>


struct job {
    int fd;
    struct msg m;
};

#define QCAP 1024
static struct job queue[QCAP];
static int qhead, qlen;
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static pthread_rwlock_t cache_lock;
static double s_render, s_lookup, s_refresh;
static long cache_generation;

__attribute__((noinline)) void enqueue_job(int fd, const struct msg *m)
{
    pthread_mutex_lock(&qlock);
    if (qlen == QCAP) {
        fprintf(stderr, "epoll_pool_srv: queue full\n");
        exit(3);
    }
    queue[(qhead + qlen) % QCAP].fd = fd;
    queue[(qhead + qlen) % QCAP].m = *m;
    qlen++;
    pthread_cond_signal(&qcond);
    pthread_mutex_unlock(&qlock);
}

__attribute__((noinline)) struct job wait_for_job(void)
{
    pthread_mutex_lock(&qlock);
    while (qlen == 0)
        pthread_cond_wait(&qcond, &qlock);
    struct job j = queue[qhead];
    qhead = (qhead + 1) % QCAP;
    qlen--;
    pthread_mutex_unlock(&qlock);
    return j;
}

__attribute__((noinline)) void render_page(struct msg *m)
{
    FIELD_BURN(300.0 * s_render);
    m->pad[0] = (char)field_sink;
}

__attribute__((noinline)) void lookup_cache(struct msg *m)
{
    pthread_rwlock_rdlock(&cache_lock);
    FIELD_BURN(20.0 * s_lookup);
    m->pad[1] = (char)cache_generation;
    pthread_rwlock_unlock(&cache_lock);
}

__attribute__((noinline)) void *worker_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct job j = wait_for_job();
        render_page(&j.m);
        lookup_cache(&j.m);
        if (write_all(j.fd, &j.m, sizeof j.m) != 0 && errno != EPIPE && errno != EBADF)
            fprintf(stderr, "epoll_pool_srv: reply: %s\n", strerror(errno));
    }
    return NULL;
}

__attribute__((noinline)) void refresh_cache(void)
{
    pthread_rwlock_wrlock(&cache_lock);
    FIELD_BURN(4000.0 * s_refresh);
    cache_generation++;
    pthread_rwlock_unlock(&cache_lock);
}

__attribute__((noinline)) void *refresh_loop(void *arg)
{
    (void)arg;
    for (;;) {
        sleep_us(6000);
        refresh_cache();
    }
    return NULL;
}

struct conn {
    int fd;
    size_t have;
    struct msg m;
};

__attribute__((noinline)) void event_loop(int lfd)
{
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
        die("epoll_ctl");
    struct epoll_event evs[32];
    while (field_running()) {
        int n = epoll_wait(ep, evs, 32, 100);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0)
                    continue;
                c = calloc(1, sizeof *c);
                if (!c)
                    die("calloc");
                c->fd = fd;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) != 0)
                    die("epoll_ctl");
                continue;
            }
            ssize_t r = read(c->fd, (char *)&c->m + c->have, sizeof c->m - c->have);
            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c);
                continue;
            }
            c->have += (size_t)r;
            if (c->have == sizeof c->m) {
                enqueue_job(c->fd, &c->m);
                c->have = 0;
            }
        }
    }
}

int main(int argc, char **argv)
{
    field_start("epoll_pool_srv", argc, argv);
    field_exit_on_term();
    s_render = field_scale("render_page");
    s_lookup = field_scale("lookup_cache");
    s_refresh = field_scale("refresh_cache");
    const char *path = arg_string(argc, argv, "--sock", "/tmp/critpath-field-epoll_pool/sock");
    char dir[256];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        field_mkdir(dir);
        field_remove_later(dir);
    }
    pthread_rwlock_init(&cache_lock, NULL);
    int lfd = unix_listen(path);
    for (long i = 0; i < 3; i++)
        field_thread(worker_main, (void *)i);
    field_thread(refresh_loop, NULL);
    event_loop(lfd);
    return 0;
}
