/* Worker pool: one mutex-protected FIFO of tasks; idle threads wait on a stack, each on its own
 * condition variable, and a new task wakes the thread that went idle last. That thread's
 * stack and caches are still warm, and with more threads than work the same few threads do
 * it all, instead of every task waking the thread that has slept longest. */
#include "core/tpool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct tpool_task {
	struct tpool_task *next;
	tpool_fn *fn;
	void *arg;
};

struct tpool_worker {
	struct tpool *pool;
	pthread_t thread;
	pthread_cond_t wake;
	struct tpool_worker *next_idle;
	bool woken; /* taken off the idle stack by a submit */
};

struct tpool {
	pthread_mutex_t lock;
	struct tpool_task *head[TPOOL_PRIORITIES], *tail[TPOOL_PRIORITIES]; /* FIFO per priority */
	size_t pending; /* queued + running */
	struct tpool_worker *idle; /* threads waiting for a task, the last to wait on top */
	bool stopping;
	unsigned int nthreads;
	const char *name;
	struct tpool_worker workers[];
};

static void *
tpool_main(void *arg)
{
	struct tpool_worker *w = arg;
	struct tpool *pool = w->pool;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct tpool_task *t;
		int prio;

		for (;;) {
			for (prio = 0; prio < TPOOL_PRIORITIES && pool->head[prio] == NULL; prio++)
				;
			if (prio < TPOOL_PRIORITIES || pool->stopping)
				break;
			w->woken = false;
			w->next_idle = pool->idle;
			pool->idle = w;
			while (!w->woken && !pool->stopping)
				pthread_cond_wait(&w->wake, &pool->lock);
			/* Stopping: tpool_free wakes every waiter without taking it off the stack. */
		}
		if (prio == TPOOL_PRIORITIES)
			break; /* stopping and drained */
		t = pool->head[prio];
		pool->head[prio] = t->next;
		if (pool->head[prio] == NULL)
			pool->tail[prio] = NULL;
		pthread_mutex_unlock(&pool->lock);
		t->fn(t->arg);
		free(t);
		pthread_mutex_lock(&pool->lock);
		pool->pending--;
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

struct tpool *
tpool_new(unsigned int nthreads, const char *name)
{
	struct tpool *pool;

	ASSERT(nthreads > 0);
	pool = xcalloc(1, sizeof(*pool) + nthreads * sizeof(pool->workers[0]));
	pthread_mutex_init(&pool->lock, NULL);
	pool->nthreads = nthreads;
	pool->name = name;
	for (unsigned int i = 0; i < nthreads; i++) {
		struct tpool_worker *w = &pool->workers[i];
		char tname[16];

		w->pool = pool;
		pthread_cond_init(&w->wake, NULL);
		if (pthread_create(&w->thread, NULL, tpool_main, w) != 0)
			PANIC("cannot start %s thread", name);
		snprintf(tname, sizeof(tname), "%.10s/%u", name, i % 100);
		pthread_setname_np(w->thread, tname);
	}
	return pool;
}

void
tpool_submit_prio(struct tpool *pool, enum tpool_priority prio, tpool_fn *fn, void *arg)
{
	struct tpool_task *t = xmalloc(sizeof(*t));
	struct tpool_worker *w;

	ASSERT(prio < TPOOL_PRIORITIES);
	t->next = NULL;
	t->fn = fn;
	t->arg = arg;
	pthread_mutex_lock(&pool->lock);
	if (pool->tail[prio] != NULL)
		pool->tail[prio]->next = t;
	else
		pool->head[prio] = t;
	pool->tail[prio] = t;
	pool->pending++;
	/* Only a waiting thread needs waking (a busy one takes the task when it is done): the
	 * one that went idle last. */
	w = pool->idle;
	if (w != NULL) {
		pool->idle = w->next_idle;
		w->woken = true;
	}
	pthread_mutex_unlock(&pool->lock);
	/* After the unlock, so that the woken thread does not go straight to sleep on the mutex;
	 * w lives as long as the pool, which outlives every submit. */
	if (w != NULL)
		pthread_cond_signal(&w->wake);
}

void
tpool_submit(struct tpool *pool, tpool_fn *fn, void *arg)
{
	tpool_submit_prio(pool, TPOOL_NORMAL, fn, arg);
}

size_t
tpool_pending(struct tpool *pool)
{
	size_t n;

	pthread_mutex_lock(&pool->lock);
	n = pool->pending;
	pthread_mutex_unlock(&pool->lock);
	return n;
}

void
tpool_free(struct tpool **poolp)
{
	struct tpool *pool = *poolp;

	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	for (unsigned int i = 0; i < pool->nthreads; i++)
		pthread_cond_signal(&pool->workers[i].wake);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned int i = 0; i < pool->nthreads; i++)
		pthread_join(pool->workers[i].thread, NULL);
	for (unsigned int i = 0; i < pool->nthreads; i++)
		pthread_cond_destroy(&pool->workers[i].wake);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
	*poolp = NULL;
}
