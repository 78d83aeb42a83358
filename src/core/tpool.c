/* Worker pool: one mutex-protected FIFO, condition variable wake-ups. */
#include "core/tpool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct tpool_task {
	struct tpool_task *next;
	tpool_fn *fn;
	void *arg;
};

struct tpool {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct tpool_task *head[TPOOL_PRIORITIES], *tail[TPOOL_PRIORITIES]; /* FIFO per priority */
	size_t pending; /* queued + running */
	unsigned int idle; /* threads waiting for a task */
	bool stopping;
	unsigned int nthreads;
	const char *name;
	pthread_t threads[];
};

static void *
tpool_main(void *arg)
{
	struct tpool *pool = arg;

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		struct tpool_task *t;
		int prio;

		for (;;) {
			for (prio = 0; prio < TPOOL_PRIORITIES && pool->head[prio] == NULL; prio++)
				;
			if (prio < TPOOL_PRIORITIES || pool->stopping)
				break;
			pool->idle++;
			pthread_cond_wait(&pool->wake, &pool->lock);
			pool->idle--;
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
	pool = xcalloc(1, sizeof(*pool) + nthreads * sizeof(pthread_t));
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pool->nthreads = nthreads;
	pool->name = name;
	for (unsigned int i = 0; i < nthreads; i++) {
		char tname[16];

		if (pthread_create(&pool->threads[i], NULL, tpool_main, pool) != 0)
			PANIC("cannot start %s thread", name);
		snprintf(tname, sizeof(tname), "%.10s/%u", name, i % 100);
		pthread_setname_np(pool->threads[i], tname);
	}
	return pool;
}

void
tpool_submit_prio(struct tpool *pool, enum tpool_priority prio, tpool_fn *fn, void *arg)
{
	struct tpool_task *t = xmalloc(sizeof(*t));
	bool wake;

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
	/* Only a waiting thread needs waking (a busy one takes the task when it is done), and it
	 * is woken after the unlock, so that it does not wake only to wait for the mutex. */
	wake = pool->idle > 0;
	pthread_mutex_unlock(&pool->lock);
	if (wake)
		pthread_cond_signal(&pool->wake);
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
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned int i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->wake);
	free(pool);
	*poolp = NULL;
}
