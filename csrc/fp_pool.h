/* A small pool of worker threads for the engine's batch-split calls (_core/_engine.pyx).
 *
 * fp_pool_run(pool, fn, ctx, k) runs fn(ctx, i, k) once for each part i of a job, on the
 * calling thread and the pool's workers, and returns when all k parts are done (a fork-join).
 * Parts are claimed, not assigned: the caller takes part 0 at once and whatever is left after
 * it; a worker that wakes late (on a loaded machine the OS may not run it for milliseconds)
 * finds nothing to do, and the call costs about one thread's time instead of waiting for it.
 * The part, not the thread, decides what is computed, so results never depend on scheduling.
 *
 * Between jobs the workers park: they spin on the job counter for FP_POOL_SPIN_NS (so the
 * steps of a fit, microseconds apart, find them awake; environment FASTPROP_POOL_SPIN_US
 * overrides it), yielding the core every few rounds, then sleep on a condition variable (a
 * parked pool costs no CPU). The caller waits for the last part the same way.
 *
 * Why pthreads and not OpenMP: the pool must survive fork (fit in a multiprocessing / Dask
 * child after the parent used it), which libgomp does not promise (its threads are gone in the
 * child while its bookkeeping says they exist); here a pool remembers the pid that created it,
 * fp_pool_usable says no in a forked child, and the engine builds a new one (the old one's
 * memory is released without touching its mutex, which may have been held at the fork). No
 * OpenMP runtime in the wheels either (another libgomp beside PyTorch's), and the claiming
 * above is not what an OpenMP static schedule does. Workers block every signal, so Ctrl-C
 * reaches the main thread.
 *
 * One job at a time per pool: fp_pool_try_acquire / fp_pool_release guard it (a second
 * concurrent caller, e.g. predict from another Python thread, runs its call on one thread).
 */
#ifndef FP_POOL_H
#define FP_POOL_H

#ifdef _WIN32
/* no pool on Windows yet: every call runs on one thread (with BLAS threads where they pay) */
typedef void (*fp_pool_task)(void *ctx, int part, int n_parts);
typedef struct fp_pool { int n; } fp_pool;
static fp_pool *fp_pool_create(int n) { (void)n; return NULL; }
static int fp_pool_usable(const fp_pool *pool) { (void)pool; return 0; }
static void fp_pool_destroy(fp_pool *pool) { (void)pool; }
static int fp_pool_try_acquire(fp_pool *pool) { (void)pool; return 0; }
static void fp_pool_release(fp_pool *pool) { (void)pool; }
static void fp_pool_run(fp_pool *pool, fp_pool_task fn, void *ctx, int k)
{ (void)pool; (void)k; fn(ctx, 0, 1); }
#else

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#ifndef FP_POOL_SPIN_NS
#define FP_POOL_SPIN_NS 100000L   /* 100 us of spinning before a parked thread sleeps */
#endif

typedef void (*fp_pool_task)(void *ctx, int part, int n_parts);

typedef struct fp_pool {
    int n;                      /* worker threads (besides the caller) */
    int started;                /* threads actually created */
    pid_t pid;                  /* the process that created them */
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t wake;        /* workers sleep on it between jobs */
    pthread_cond_t done;        /* the caller sleeps on it waiting for the last part */
    unsigned long gen;          /* job counter (atomic) */
    unsigned long long ticket;  /* the job's parts: gen (32 bits) | parts (16) | next (16) */
    int completed;              /* parts of the current job done (atomic) */
    int stop;
    int busy;                   /* a job is being run (fp_pool_try_acquire) */
    long spin_ns;
    fp_pool_task fn;
    void *ctx;
} fp_pool;

typedef struct { fp_pool *pool; int id; } fp_pool_arg;

static inline void fp_pool_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline long fp_pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Spin until *word != old (returns 1) or spin_ns passed (returns 0). Every 64 rounds it yields
 * the core (on a loaded machine a spinning thread must not keep the thread it waits for, or
 * anything else, off the CPU). */
static inline int fp_pool_spin_ne(const unsigned long *word, unsigned long old, long spin_ns)
{
    long t0 = 0;
    int i;
    for (i = 0;; i++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != old) return 1;
        fp_pool_pause();
        if ((i & 63) == 63) {
            long t = fp_pool_now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 > spin_ns) return 0;
            sched_yield();
        }
    }
}

static inline int fp_pool_spin_reach(const int *word, int target, long spin_ns)
{
    long t0 = 0;
    int i;
    for (i = 0;; i++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) >= target) return 1;
        fp_pool_pause();
        if ((i & 63) == 63) {
            long t = fp_pool_now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 > spin_ns) return 0;
            sched_yield();
        }
    }
}

/* Claim and run the parts of job g until none is left (or the job is not g any more). A part
 * is claimed by a compare-and-swap on the ticket, which carries the job's generation: a thread
 * that arrives late never claims a part of a later job, and the job's fn / ctx, read after a
 * claim, stay valid until its part is counted done (the caller waits for every part). */
static void fp_pool_claim(fp_pool *pool, unsigned long g)
{
    for (;;) {
        unsigned long long t = __atomic_load_n(&pool->ticket, __ATOMIC_ACQUIRE);
        int parts = (int)((t >> 16) & 0xFFFF), next = (int)(t & 0xFFFF);
        if ((unsigned long)(t >> 32) != (g & 0xFFFFFFFFUL) || next >= parts) return;
        if (!__atomic_compare_exchange_n(&pool->ticket, &t, t + 1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            continue;
        pool->fn(pool->ctx, next, parts);
        if (__atomic_add_fetch(&pool->completed, 1, __ATOMIC_ACQ_REL) == parts) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
}

static void *fp_pool_main(void *arg)
{
    fp_pool *pool = ((fp_pool_arg *)arg)->pool;
    unsigned long seen = 0;
    free(arg);
    for (;;) {
        if (!fp_pool_spin_ne(&pool->gen, seen, pool->spin_ns)) {
            pthread_mutex_lock(&pool->mu);
            while (__atomic_load_n(&pool->gen, __ATOMIC_ACQUIRE) == seen &&
                   !__atomic_load_n(&pool->stop, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&pool->wake, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (__atomic_load_n(&pool->stop, __ATOMIC_ACQUIRE)) break;
        seen = __atomic_load_n(&pool->gen, __ATOMIC_ACQUIRE);
        fp_pool_claim(pool, seen);
    }
    return NULL;
}

static void fp_pool_destroy(fp_pool *pool);

/* A pool of n worker threads (n >= 1), or NULL (no memory, or no thread could be made). */
static fp_pool *fp_pool_create(int n)
{
    fp_pool *pool;
    sigset_t all, old;
    int i;
    const char *spin = getenv("FASTPROP_POOL_SPIN_US");
    if (n < 1) return NULL;
    pool = (fp_pool *)calloc(1, sizeof(fp_pool));
    if (pool == NULL) return NULL;
    pool->tid = (pthread_t *)calloc((size_t)n, sizeof(pthread_t));
    if (pool->tid == NULL) { free(pool); return NULL; }
    pool->n = n;
    pool->pid = getpid();
    pool->spin_ns = spin != NULL ? atol(spin) * 1000L : FP_POOL_SPIN_NS;
    if (pool->spin_ns < 0) pool->spin_ns = 0;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pthread_cond_init(&pool->done, NULL);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);      /* inherited by the workers */
    for (i = 0; i < n; i++) {
        fp_pool_arg *arg = (fp_pool_arg *)malloc(sizeof(fp_pool_arg));
        if (arg == NULL) break;
        arg->pool = pool;
        arg->id = i + 1;
        if (pthread_create(&pool->tid[i], NULL, fp_pool_main, arg) != 0) { free(arg); break; }
        pool->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pool->started < n) { fp_pool_destroy(pool); return NULL; }
    return pool;
}

/* 1 when the pool may run jobs in this process (0 in a forked child: its threads are gone). */
static inline int fp_pool_usable(const fp_pool *pool)
{
    return pool != NULL && pool->pid == getpid();
}

/* Stop and join the workers, free the pool. In a forked child only the memory is released
 * (the threads do not exist there and the mutex may be in any state). */
static void fp_pool_destroy(fp_pool *pool)
{
    int i;
    if (pool == NULL) return;
    if (pool->pid != getpid()) {
        free(pool->tid);
        free(pool);
        return;
    }
    pthread_mutex_lock(&pool->mu);
    __atomic_store_n(&pool->stop, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pool->gen, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (i = 0; i < pool->started; i++) pthread_join(pool->tid[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_cond_destroy(&pool->done);
    pthread_mutex_destroy(&pool->mu);
    free(pool->tid);
    free(pool);
}

/* 1 if this caller may run a job now (release it with fp_pool_release), 0 if another is. */
static inline int fp_pool_try_acquire(fp_pool *pool)
{
    int expected = 0;
    return __atomic_compare_exchange_n(&pool->busy, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED);
}

static inline void fp_pool_release(fp_pool *pool)
{
    __atomic_store_n(&pool->busy, 0, __ATOMIC_RELEASE);
}

/* fn(ctx, i, k) once for each part i = 0 .. k - 1 (1 <= k < 65536), on whichever thread
 * claims it first, the caller included; returns when all k are done. Parts must not depend on
 * the thread that runs them: then the result does not depend on the scheduling, and a worker
 * that the OS does not run in time (a loaded machine) only means the caller runs more parts.
 * Call between fp_pool_try_acquire and fp_pool_release. */
static void fp_pool_run(fp_pool *pool, fp_pool_task fn, void *ctx, int k)
{
    unsigned long g;
    if (k <= 1) { fn(ctx, 0, 1); return; }
    pool->fn = fn;
    pool->ctx = ctx;
    __atomic_store_n(&pool->completed, 0, __ATOMIC_RELAXED);
    g = __atomic_load_n(&pool->gen, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&pool->ticket, ((unsigned long long)(g & 0xFFFFFFFFUL) << 32) |
                     ((unsigned long long)k << 16), __ATOMIC_RELEASE);
    /* the lock makes the broadcast reach a worker that checked the counter just before */
    pthread_mutex_lock(&pool->mu);
    __atomic_store_n(&pool->gen, g, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    fp_pool_claim(pool, g);
    if (!fp_pool_spin_reach(&pool->completed, k, pool->spin_ns)) {
        pthread_mutex_lock(&pool->mu);
        while (__atomic_load_n(&pool->completed, __ATOMIC_ACQUIRE) < k)
            pthread_cond_wait(&pool->done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
    }
}

#endif  /* _WIN32 */
#endif
