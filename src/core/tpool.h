/* A fixed pool of worker threads running queued tasks in FIFO order. Used for the work that
 * must never run on an I/O thread: password hashing, synchronous database reads, fsync.
 * tpool_submit may be called from any thread; a task must not call tpool_free on its own pool. */
#ifndef CORE_TPOOL_H
#define CORE_TPOOL_H

#include "core/compat.h"

struct tpool;
typedef void tpool_fn(void *arg);

/* name (borrowed, static) is used for the threads' names. */
struct tpool *tpool_new(unsigned int nthreads, const char *name);
/* Tasks run in submission order across the pool; arg is passed through untouched. */
void tpool_submit(struct tpool *pool, tpool_fn *fn, void *arg);
/* Priorities: a task runs only when no task of a higher priority waits (e.g. password checks:
 * clients known to be good first, strangers next, addresses that already failed last, so a
 * flood of guesses never delays the logins of everybody else). */
enum tpool_priority {
	TPOOL_HIGH = 0,
	TPOOL_NORMAL = 1, /* tpool_submit */
	TPOOL_LOW = 2,
	TPOOL_PRIORITIES
};
void tpool_submit_prio(struct tpool *pool, enum tpool_priority prio, tpool_fn *fn, void *arg);
/* Tasks queued and not yet finished. */
size_t tpool_pending(struct tpool *pool);
/* Runs every task already queued, joins the threads, frees the pool; sets *pool to NULL. */
void tpool_free(struct tpool **pool);

#endif
