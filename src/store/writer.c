/* Jobs, the writer thread and group commit.
 *
 * One batch = the jobs waiting when the writer wakes (at most batch_max). Per batch, in this
 * order: fsync every blob file (in parallel on the sync pool), rename them into their buckets,
 * fsync each distinct bucket folder once, then BEGIN IMMEDIATE, one SAVEPOINT per job, COMMIT,
 * and only then the done callbacks. A job that fails is rolled back to its savepoint and its
 * files are unlinked; a failed COMMIT fails every job of the batch, so nothing is half-stored
 * (its files are left to the orphan sweep, which removes them only if no row names them).
 * Jobs submitted once store_close has begun are answered STORE_ERR_SHUTDOWN and never run.
 * The writer thread is the only user of the write connection in serve mode; in inline mode
 * (CLI) the caller's thread runs the same batch code for one job. */
#include "store/store_internal.h"

#include "core/log.h"
#include "core/tpool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* True on a thread while it runs a transaction: a nested store_exec (or an inline submit)
 * would wait for that thread itself. */
static _Thread_local bool store__in_txn;

/* ---- Jobs ------------------------------------------------------------------------------- */

static uint64_t
store__mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits on cond for at most ms (store->wake runs on CLOCK_MONOTONIC, see store_open). */
static void
store__cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	(void)pthread_cond_timedwait(cond, lock, &ts);
}

struct store_job *
store_job_new(store_job_fn *run, store_done_fn *done, void *ctx)
{
	struct store_job *job = xcalloc(1, sizeof(*job));

	job->run = run;
	job->done = done;
	job->ctx = ctx;
	return job;
}

void
store_job_add_blob(struct store_job *job, struct store_blob **blob)
{
	ASSERT(!(*blob)->in_job);
	ASSERT(!job->queued);
	if (job->nblobs == job->blobs_cap) {
		job->blobs_cap = job->blobs_cap == 0 ? 2 : job->blobs_cap * 2;
		job->blobs = xrealloc(job->blobs, job->blobs_cap * sizeof(*job->blobs));
	}
	(*blob)->in_job = true;
	job->blobs[job->nblobs++] = *blob;
	*blob = NULL;
}

int
store_job_result(const struct store_job *job, const char **error_r)
{
	if (error_r != NULL) {
		if (job->error != NULL)
			*error_r = job->error;
		else
			*error_r = job->result == STORE_OK ? "" : store_err_str(job->result);
	}
	return job->result;
}

void
store_job_free(struct store_job **jobp)
{
	struct store_job *job = *jobp;

	if (job == NULL)
		return;
	for (size_t i = 0; i < job->nblobs; i++)
		store__blob_destroy(job->blobs[i]);
	free(job->blobs);
	free(job->touched);
	free(job->error);
	free(job);
	*jobp = NULL;
}

void
store__job_fail(struct store_job *job, int err, const char *fmt, ...)
{
	va_list ap;

	/* The first cause wins: the job's own message (store_txn_error) or the first failure
	 * reported here; later failures are its consequences. */
	if (job->result == STORE_OK)
		job->result = err;
	if (job->error != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&job->error, fmt, ap) < 0)
		job->error = NULL;
	va_end(ap);
}

/* ---- One batch -------------------------------------------------------------------------- */

struct store__sync_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t pending;
};

struct store__sync_task {
	struct store__sync_wait *wait;
	struct store_blob *blob;
};

static void
store__sync_task_run(void *arg)
{
	struct store__sync_task *task = arg;
	struct store__sync_wait *wait = task->wait;

	(void)store__blob_sync(task->blob);
	free(task);
	pthread_mutex_lock(&wait->lock);
	if (--wait->pending == 0)
		pthread_cond_signal(&wait->cond);
	pthread_mutex_unlock(&wait->lock);
}

/* The blobs of a live job that are files (a blob kept in memory is written with the commit). */
static size_t
store__count_files(struct store_job **jobs, size_t n)
{
	size_t count = 0;

	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < jobs[i]->nblobs && jobs[i]->result == STORE_OK; j++)
			count += !jobs[i]->blobs[j]->in_memory;
	}
	return count;
}

/* fsyncs the files of every job still alive, in parallel when there is a sync pool. */
static void
store__sync_blobs(struct store *store, struct store_job **jobs, size_t n)
{
	struct store__sync_wait wait;
	size_t count = store__count_files(jobs, n);

	if (count <= 1 || store->sync_pool == NULL || store->sync_filesystem) {
		/* Also marks the blobs kept in memory as synced; a pool task each would cost a
		 * thread wake-up per message for nothing. */
		for (size_t i = 0; i < n; i++) {
			for (size_t j = 0; j < jobs[i]->nblobs && jobs[i]->result == STORE_OK; j++)
				(void)store__blob_sync(jobs[i]->blobs[j]);
		}
	} else {
		pthread_mutex_init(&wait.lock, NULL);
		pthread_cond_init(&wait.cond, NULL);
		wait.pending = count;
		for (size_t i = 0; i < n; i++) {
			if (jobs[i]->result != STORE_OK)
				continue;
			for (size_t j = 0; j < jobs[i]->nblobs; j++) {
				struct store__sync_task *task;

				if (jobs[i]->blobs[j]->in_memory) {
					(void)store__blob_sync(jobs[i]->blobs[j]);
					continue;
				}
				task = xmalloc(sizeof(*task));
				task->wait = &wait;
				task->blob = jobs[i]->blobs[j];
				tpool_submit(store->sync_pool, store__sync_task_run, task);
			}
		}
		/* Every task must be finished before anything is renamed or committed. */
		pthread_mutex_lock(&wait.lock);
		while (wait.pending > 0)
			pthread_cond_wait(&wait.cond, &wait.lock);
		pthread_mutex_unlock(&wait.lock);
		pthread_mutex_destroy(&wait.lock);
		pthread_cond_destroy(&wait.cond);
	}
	pthread_mutex_lock(&store->lock);
	store->stats.blobs_synced += count;
	pthread_mutex_unlock(&store->lock);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < jobs[i]->nblobs && jobs[i]->result == STORE_OK; j++) {
			struct store_blob *blob = jobs[i]->blobs[j];

			if (blob->sync_err != STORE_OK)
				store__job_fail(jobs[i], blob->sync_err,
				                "cannot sync message file %s", blob->id);
		}
	}
}

/* Renames the synced files into place and fsyncs their folders, once per folder. */
static void
store__place_blobs(struct store *store, struct store_job **jobs, size_t n)
{
	struct store__dirset dirs = {NULL, 0, 0, false};
	const char *error;
	size_t placed = 0;
	int ret;

	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < jobs[i]->nblobs && jobs[i]->result == STORE_OK; j++) {
			ret = store__blob_place(jobs[i]->blobs[j], &dirs, &error);
			if (ret != STORE_OK)
				store__job_fail(jobs[i], ret, "%s", error);
			else
				placed += !jobs[i]->blobs[j]->in_memory;
		}
	}
	if (placed == 0) {
		store__dirset_deinit(&dirs);
		return;
	}
	if (store->sync_filesystem)
		/* The files are in place but referenced by nothing until the commit: one syncfs
		 * makes their data and their folder entries durable before it. */
		ret = store__syncfs(store, &error);
	else
		ret = store__dirset_sync(store, &dirs, &error);
	if (ret != STORE_OK) {
		/* Which folder failed hardly matters: a folder that cannot be synced means a
		 * failing disk. Every job that placed a file fails. */
		for (size_t i = 0; i < n; i++) {
			if (store__count_files(&jobs[i], 1) > 0)
				store__job_fail(jobs[i], ret, "%s", error);
		}
	}
	pthread_mutex_lock(&store->lock);
	store->stats.dirs_synced += dirs.n + (dirs.parent ? 1 : 0);
	pthread_mutex_unlock(&store->lock);
	store__dirset_deinit(&dirs);
}

static int
store__txn_err(int ret)
{
	return ret == STORE_ERR_FULL ? STORE_ERR_FULL : STORE_ERR_IO;
}

/* Runs one job inside its savepoint. Returns false when the whole transaction is lost. */
static bool
store__run_job(struct store *store, struct store_txn *txn, struct store_job *job)
{
	const struct store_ops *ops = store->ops;
	int ret;

	txn->job = job;
	ret = ops->savepoint(store);
	if (ret != STORE_OK) {
		store__job_fail(job, store__txn_err(ret), "cannot start job: %s",
		                ops->last_error(store));
		return ops->in_txn(store);
	}
	for (size_t i = 0; i < job->nblobs && ret == STORE_OK; i++)
		ret = ops->blob_insert(txn, job->blobs[i]->id, job->blobs[i]->size,
		                       !job->blobs[i]->in_memory ? NULL :
		                       job->blobs[i]->mem != NULL ? job->blobs[i]->mem :
		                                                     (const uint8_t *)"");
	if (ret == STORE_OK)
		ret = job->run(txn, job->ctx);
	if (ret > 0 || ret < STORE_ERR_SHUTDOWN) {
		log_error("event=store_job result=bug ret=%d", ret);
		ret = STORE_ERR_INVALID;
	}
	if (ret == STORE_OK) {
		/* A job that succeeded has no error, whatever it reported on its way. */
		free(job->error);
		job->error = NULL;
		if (ops->in_txn(store))
			ret = ops->release(store);
	}
	if (!ops->in_txn(store)) {
		/* The engine rolled everything back (e.g. SQLITE_FULL): the jobs before this one
		 * in the batch are lost too. */
		store__job_fail(job, store__txn_err(ret), "transaction aborted");
		return false;
	}
	if (ret == STORE_OK)
		return true;
	store__job_fail(job, ret, "%s", store_err_str(ret));
	if (ops->rollback_to(store) != STORE_OK || !ops->in_txn(store)) {
		log_error("event=store_rollback result=failed error=\"%s\"",
		          ops->last_error(store));
		return false;
	}
	return true;
}

/* Fails every job with the error of a lost transaction. */
static void
store__fail_all(struct store_job **jobs, size_t n, int err, const char *what, const char *why)
{
	for (size_t i = 0; i < n; i++) {
		/* Jobs that had already failed keep their own reason; the others lost work that
		 * had succeeded. */
		if (jobs[i]->result == STORE_OK)
			store__job_fail(jobs[i], err, "%s: %s", what, why);
	}
}

/* Runs the jobs still alive in one transaction. Returns true if it committed; sets *unsure
 * when COMMIT failed, since then the outcome on disk is unknown (e.g. the WAL was written but
 * its fsync failed: recovery after a crash may still replay it). */
static bool
store__transact(struct store *store, struct store_job **jobs, size_t n, bool *unsure)
{
	const struct store_ops *ops = store->ops;
	struct store_job *lost = NULL;
	struct store_txn txn;
	char why[256];
	int ret;

	memset(&txn, 0, sizeof(txn));
	txn.store = store;
	txn.now = (int64_t)time(NULL);
	ret = ops->begin(store);
	if (ret != STORE_OK) {
		store__fail_all(jobs, n, store__txn_err(ret), "cannot begin transaction",
		                ops->last_error(store));
		return false;
	}
	for (size_t i = 0; i < n && lost == NULL; i++) {
		if (jobs[i]->result == STORE_OK && !store__run_job(store, &txn, jobs[i]))
			lost = jobs[i];
	}
	if (lost != NULL) {
		(void)snprintf(why, sizeof(why), "%s", lost->error != NULL ? lost->error : "");
		ops->rollback(store);
		store__fail_all(jobs, n, store__txn_err(lost->result),
		                "transaction aborted by another job", why);
		log_error("event=store_txn result=aborted jobs=%zu error=\"%s\"", n, why);
		return false;
	}
	if (store__fault_at(STORE__FAULT_COMMIT) != 0)
		ret = STORE_ERR_IO; /* the rollback below undoes the transaction */
	else
		ret = ops->commit(store);
	if (ret == STORE_OK)
		return true;
	(void)snprintf(why, sizeof(why), "%s", ops->last_error(store)); /* before rollback */
	ops->rollback(store);
	store__fail_all(jobs, n, store__txn_err(ret), "commit failed", why);
	log_error("event=store_commit result=failed jobs=%zu error=\"%s\"", n, why);
	*unsure = true;
	return false;
}

static bool store__log_sync(struct store *store, struct store_job **jobs, size_t n, bool *unsure);
static void store__finish_batch(struct store *store, struct store_job **jobs, size_t n,
                                size_t alive, bool committed, bool unsure);
static void store__syncer_add(struct store *store, struct store_job **jobs, size_t n,
                              size_t alive);

void
store__run_batch(struct store *store, struct store_job **jobs, size_t n)
{
	size_t alive = 0;
	bool committed = false, unsure = false;

	/* A file whose writing failed is never synced, placed or committed. */
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < jobs[i]->nblobs && jobs[i]->result == STORE_OK; j++) {
			struct store_blob *blob = jobs[i]->blobs[j];

			if (blob->err != STORE_OK)
				store__job_fail(jobs[i], blob->err,
				                "writing message file %s failed", blob->id);
		}
	}
	/* With sync_filesystem this only closes the files; the sync follows the renames. */
	store__sync_blobs(store, jobs, n);
	store__place_blobs(store, jobs, n);
	for (size_t i = 0; i < n; i++) {
		if (jobs[i]->result == STORE_OK)
			alive++;
	}
	if (alive > 0) {
		/* A batch of relaxed jobs only (flags, expunges: no mail) commits without waiting
		 * for the disk; the writer syncs it within STORE__RELAXED_MS, and any durable commit
		 * before that syncs it too (the log is written in order). */
		bool relaxed = store->have_writer;

		bool late_sync;

		for (size_t i = 0; i < n && relaxed; i++)
			relaxed = jobs[i]->result != STORE_OK || (jobs[i]->relaxed && jobs[i]->nblobs == 0);
		pthread_mutex_lock(&store->write_lock);
		store__in_txn = true;
		/* The log is synced after the write lock is released (late_sync), so that the other
		 * lane's commits (flags, expunges) need not wait for this batch's flush. The commit
		 * is visible to readers a moment before it is durable; done, and with it every
		 * positive answer, comes only after the sync. */
		late_sync = store->ops->set_durable(store, false) == STORE_OK;
		committed = store__transact(store, jobs, n, &unsure);
		if (late_sync)
			(void)store->ops->set_durable(store, true);
		store__in_txn = false;
		pthread_mutex_unlock(&store->write_lock);
		if (committed) {
			pthread_mutex_lock(&store->lock);
			if (relaxed)
				store->stats.relaxed_commits++;
			if (relaxed && !store->relaxed_pending) {
				store->relaxed_pending = true;
				store->relaxed_since = store__mono_ms();
				/* The relaxed lane syncs it within STORE__RELAXED_MS: it may be asleep
				 * (relaxed commits also run on the threads that ask for them). */
				if (store->have_relaxed_writer)
					pthread_cond_signal(&store->rwake);
			} else if (!relaxed) {
				/* The sync below covers every relaxed commit before this one; one that
				 * comes later sets this again. */
				store->relaxed_pending = false;
			}
			pthread_mutex_unlock(&store->lock);
		}
		if (committed && !relaxed && late_sync) {
			if (store->have_syncer) {
				/* The syncer flushes the log and answers; meanwhile this thread
				 * commits the next batch, whose flush may then cover both. */
				store__syncer_add(store, jobs, n, alive);
				return;
			}
			committed = store__log_sync(store, jobs, n, &unsure);
		}
	}
	store__finish_batch(store, jobs, n, alive, committed, unsure);
}

/* The log flush after a late-synced commit; false when it failed (the jobs are failed, the
 * outcome on disk unknown). */
static bool
store__log_sync(struct store *store, struct store_job **jobs, size_t n, bool *unsure)
{
	int ret = store->ops->sync(store);

	if (ret == STORE_OK)
		return true;
	/* As for a failed COMMIT: the outcome on disk is unknown, the client gets a temporary
	 * error, the blobs stay for the sweep to decide. */
	log_error("event=store_sync result=failed jobs=%zu error=\"%s\"", n, store_err_str(ret));
	store__fail_all(jobs, n, ret, "sync failed", store_err_str(ret));
	*unsure = true;
	return false;
}

/* The end of a batch once its outcome is known: files, statistics, change notices, done. */
static void
store__finish_batch(struct store *store, struct store_job **jobs, size_t n, size_t alive,
                    bool committed, bool unsure)
{
	size_t failed = 0;

	/* Files of failed jobs go now, before done: a client told "failed" must not find its
	 * message later. A crash right here leaves orphans for the sweep. After a failed COMMIT
	 * the placed files stay: only the sweep, which looks for their rows, may decide. */
	for (size_t i = 0; i < n; i++) {
		bool ok = jobs[i]->result == STORE_OK;

		if (!ok)
			failed++;
		for (size_t j = 0; j < jobs[i]->nblobs; j++) {
			struct store_blob *blob = jobs[i]->blobs[j];

			if (ok || (unsure && blob->state == STORE__BLOB_PLACED))
				blob->state = STORE__BLOB_COMMITTED;
			else
				store__blob_discard(blob);
		}
	}
	pthread_mutex_lock(&store->lock);
	store->stats.jobs += n;
	store->stats.jobs_failed += failed;
	if (alive > 0)
		store->stats.batches++;
	if (committed) {
		store->stats.commits++;
		/* A job may have dropped the last reference of a blob. */
		if (!store->gc_stuck)
			store->gc_check = true;
	}
	pthread_mutex_unlock(&store->lock);
	/* Before done: a session answered from done must find the others told already. */
	if (committed && store->change_hook != NULL) {
		for (size_t i = 0; i < n; i++) {
			if (jobs[i]->result != STORE_OK)
				continue;
			for (size_t j = 0; j < jobs[i]->ntouched; j++)
				store->change_hook(jobs[i]->touched[j].mailbox_id,
				                   jobs[i]->touched[j].modseq, store->change_ctx);
		}
	}
	for (size_t i = 0; i < n; i++)
		jobs[i]->done(jobs[i], jobs[i]->ctx);
}

void
store__txn_touch(struct store_txn *txn, int64_t mailbox_id, uint64_t modseq)
{
	struct store_job *job = txn->job;

	if (job == NULL)
		return;
	for (size_t i = 0; i < job->ntouched; i++) {
		if (job->touched[i].mailbox_id == mailbox_id) {
			job->touched[i].modseq = MAX(job->touched[i].modseq, modseq);
			return;
		}
	}
	if (job->ntouched == job->touched_cap) {
		job->touched_cap = job->touched_cap == 0 ? 4 : job->touched_cap * 2;
		job->touched = xrealloc(job->touched, job->touched_cap * sizeof(*job->touched));
	}
	job->touched[job->ntouched++] = (struct store__touched){mailbox_id, modseq};
}

void
store_set_change_hook(struct store *store, store_change_fn *fn, void *ctx)
{
	store->change_hook = fn;
	store->change_ctx = ctx;
}

/* ---- Submission ------------------------------------------------------------------------- */

static void
store__job_shutdown(struct store_job *job)
{
	store__job_fail(job, STORE_ERR_SHUTDOWN, "%s", store_err_str(STORE_ERR_SHUTDOWN));
	for (size_t i = 0; i < job->nblobs; i++)
		store__blob_discard(job->blobs[i]);
	job->done(job, job->ctx);
}

void
store_submit(struct store *store, struct store_job *job)
{
	ASSERT(!job->queued);
	job->queued = true;
	/* A thread that submits usually waits for the result next, and must then read it. */
	store->ops->read_refresh(store);
	pthread_mutex_lock(&store->lock);
	if (store->closing) {
		pthread_mutex_unlock(&store->lock);
		store__job_shutdown(job);
		return;
	}
	if (!store->opts.background) {
		/* Inline (CLI) mode: the caller's thread is the writer. */
		pthread_mutex_unlock(&store->lock);
		if (store__in_txn)
			PANIC("store_submit from inside a job in inline mode");
		store__run_batch(store, &job, 1);
		return;
	}
	job->next = NULL;
	if (job->relaxed && job->nblobs == 0 && store->have_relaxed_writer) {
		if (store->rtail != NULL)
			store->rtail->next = job;
		else
			store->rhead = job;
		store->rtail = job;
		pthread_cond_signal(&store->rwake);
		pthread_mutex_unlock(&store->lock);
		return;
	}
	if (store->tail != NULL)
		store->tail->next = job;
	else
		store->head = job;
	store->tail = job;
	pthread_cond_signal(&store->wake);
	pthread_mutex_unlock(&store->lock);
}

/* store_exec: the job's ctx carries the caller's function and ctx and the waiter. */
struct store__exec {
	store_job_fn *fn;
	void *ctx;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static int
store__exec_run(struct store_txn *txn, void *ctx)
{
	struct store__exec *ex = ctx;

	return ex->fn(txn, ex->ctx);
}

static void
store__exec_done(struct store_job *job, void *ctx)
{
	struct store__exec *ex = ctx;

	(void)job;
	pthread_mutex_lock(&ex->lock);
	ex->done = true;
	pthread_cond_signal(&ex->cond);
	pthread_mutex_unlock(&ex->lock);
}

static int store__exec(struct store *store, store_job_fn *fn, void *ctx, bool relaxed,
                       const char **error_r);

int
store_exec(struct store *store, store_job_fn *fn, void *ctx, const char **error_r)
{
	return store__exec(store, fn, ctx, false, error_r);
}

int
store_exec_relaxed(struct store *store, store_job_fn *fn, void *ctx, const char **error_r)
{
	return store__exec(store, fn, ctx, store->opts.relaxed_sync, error_r);
}

void
store_read_pin(struct store *store)
{
	store->ops->read_pin(store);
}

void
store_read_unpin(struct store *store)
{
	store->ops->read_unpin(store);
}

void
store_read_refresh(struct store *store)
{
	store->ops->read_refresh(store);
}

void
store_job_set_relaxed(struct store_job *job)
{
	job->relaxed = true;
}

static int
store__exec(struct store *store, store_job_fn *fn, void *ctx, bool relaxed, const char **error_r)
{
	static _Thread_local char msg[512];
	struct store__exec ex;
	struct store_job *job;
	const char *error;
	bool inline_ok;
	int ret;

	/* From a job or (serve mode) a done callback this would wait for itself. */
	if (store__in_txn || (store->have_writer && pthread_equal(pthread_self(), store->writer)) ||
	    (store->have_relaxed_writer && pthread_equal(pthread_self(), store->relaxed_writer)) ||
	    (store->have_syncer && pthread_equal(pthread_self(), store->syncer)))
		PANIC("store_exec called from the writer");
	ex.fn = fn;
	ex.ctx = ctx;
	ex.done = false;
	pthread_mutex_init(&ex.lock, NULL);
	pthread_cond_init(&ex.cond, NULL);
	job = store_job_new(store__exec_run, store__exec_done, &ex);
	job->relaxed = relaxed;
	pthread_mutex_lock(&store->lock);
	inline_ok = relaxed && store->have_relaxed_writer && !store->closing;
	pthread_mutex_unlock(&store->lock);
	if (inline_ok) {
		/* A relaxed commit does not wait for the disk, so the caller may as well run it
		 * itself (the write lock orders it with both lanes): two thread hand-offs fewer
		 * than queueing it for the relaxed lane and waiting to be woken. */
		store->ops->read_refresh(store);
		job->queued = true;
		store__run_batch(store, &job, 1);
		pthread_mutex_lock(&store->lock);
		if (store->gc_check)
			pthread_cond_signal(&store->wake);
		pthread_mutex_unlock(&store->lock);
	} else {
		store_submit(store, job);
	}
	pthread_mutex_lock(&ex.lock);
	while (!ex.done)
		pthread_cond_wait(&ex.cond, &ex.lock);
	pthread_mutex_unlock(&ex.lock);
	pthread_mutex_destroy(&ex.lock);
	pthread_cond_destroy(&ex.cond);
	ret = store_job_result(job, &error);
	(void)snprintf(msg, sizeof(msg), "%s", error); /* truncation only shortens a message */
	store_job_free(&job);
	if (error_r != NULL)
		*error_r = msg;
	return ret;
}

/* ---- The writer thread ------------------------------------------------------------------ */


/* One bounded step of unreferenced-blob removal, when a commit may have left some. */
static void
store__writer_gc_step(struct store *store)
{
	unsigned int rows = 0;
	int any, ret;

	pthread_mutex_lock(&store->write_lock);
	any = store->ops->blob_any_unreferenced(store);
	ret = any > 0 ? store__gc_unreferenced(store, STORE__GC_LIMIT, &rows) : any;
	pthread_mutex_unlock(&store->write_lock);
	if (ret < 0)
		log_warn("event=store_gc result=failed error=\"%s\"", store_err_str(ret));
	pthread_mutex_lock(&store->lock);
	if (rows == STORE__GC_LIMIT) {
		/* More are left: continue after the next batch, so jobs are not starved. */
		store->gc_check = true;
	} else if (any != 0 && rows == 0) {
		/* Nothing could be removed (unlink or database failing): retrying after every
		 * commit would only add a transaction to each batch. Wait for the sweeper. */
		store->gc_stuck = true;
	}
	pthread_mutex_unlock(&store->lock);
}

static void *
store__writer_main(void *arg)
{
	struct store *store = arg;
	struct store_job **batch = xcalloc(store->opts.batch_max, sizeof(*batch));

	pthread_mutex_lock(&store->lock);
	for (;;) {
		size_t n = 0;

		while (store->head == NULL && store->gc_reqs == NULL && !store->gc_check &&
		       !store->closing)
			pthread_cond_wait(&store->wake, &store->lock);
		while (store->head != NULL && n < store->opts.batch_max) {
			batch[n++] = store->head;
			store->head = store->head->next;
		}
		if (store->head == NULL)
			store->tail = NULL;
		if (n > 0) {
			pthread_mutex_unlock(&store->lock);
			store__run_batch(store, batch, n);
			pthread_mutex_lock(&store->lock);
		}
		if (store->gc_reqs != NULL) {
			pthread_mutex_unlock(&store->lock);
			store__gc_serve_requests(store);
			pthread_mutex_lock(&store->lock);
		} else if (store->gc_check && !store->closing) {
			store->gc_check = false;
			pthread_mutex_unlock(&store->lock);
			store__writer_gc_step(store);
			pthread_mutex_lock(&store->lock);
		}
		if (store->closing && store->head == NULL && store->gc_reqs == NULL)
			break;
	}
	pthread_mutex_unlock(&store->lock);
	free(batch);
	return NULL;
}

/* The syncer: the writer commits a durable batch without waiting for the disk and hands it
 * over; the syncer flushes the log and answers the batch's jobs. Meanwhile the writer commits
 * the next batch, and one flush then answers every batch committed before it began: the
 * writer's commits and the disk's flushes overlap instead of taking turns. A positive answer
 * still comes only after the flush that covers its commit. */
struct store__synced {
	struct store__synced *next;
	size_t n, alive;
	struct store_job *jobs[];
};

static void
store__syncer_add(struct store *store, struct store_job **jobs, size_t n, size_t alive)
{
	struct store__synced *b = xmalloc(sizeof(*b) + n * sizeof(b->jobs[0]));

	b->next = NULL;
	b->n = n;
	b->alive = alive;
	memcpy(b->jobs, jobs, n * sizeof(jobs[0]));
	pthread_mutex_lock(&store->lock);
	if (store->stail != NULL)
		store->stail->next = b;
	else
		store->shead = b;
	store->stail = b;
	pthread_cond_signal(&store->swake);
	pthread_mutex_unlock(&store->lock);
}

static void *
store__syncer_main(void *arg)
{
	struct store *store = arg;

	pthread_mutex_lock(&store->lock);
	for (;;) {
		struct store__synced *list, *next;
		int ret;

		while (store->shead == NULL && !store->syncer_stop)
			pthread_cond_wait(&store->swake, &store->lock);
		if (store->shead == NULL)
			break; /* stopping, and nothing is left */
		/* Every batch here was committed before this flush begins: it covers them all. */
		list = store->shead;
		store->shead = store->stail = NULL;
		pthread_mutex_unlock(&store->lock);
		ret = store->ops->sync(store);
		for (; list != NULL; list = next) {
			bool unsure = false, committed = true;

			next = list->next;
			if (ret != STORE_OK) {
				log_error("event=store_sync result=failed jobs=%zu error=\"%s\"",
				          list->n, store_err_str(ret));
				store__fail_all(list->jobs, list->n, ret, "sync failed",
				                store_err_str(ret));
				committed = false;
				unsure = true;
			}
			store__finish_batch(store, list->jobs, list->n, list->alive, committed, unsure);
			free(list);
		}
		pthread_mutex_lock(&store->lock);
	}
	pthread_mutex_unlock(&store->lock);
	return NULL;
}

/* The relaxed lane: jobs that carry no mail and may commit without waiting for the disk
 * (store_job_set_relaxed) are committed by a thread of their own, so that they do not wait
 * while the writer syncs the message files of a mail batch (which it does without the write
 * lock). It also puts its commits on disk within STORE__RELAXED_MS. Order between the lanes
 * does not matter: a job is only submitted once everything it depends on was answered. */
static void *
store__relaxed_main(void *arg)
{
	struct store *store = arg;
	struct store_job **batch = xcalloc(store->opts.batch_max, sizeof(*batch));

	pthread_mutex_lock(&store->lock);
	for (;;) {
		size_t n = 0;

		while (store->rhead == NULL && !store->closing) {
			uint64_t now = store__mono_ms();
			int ret;

			if (!store->relaxed_pending) {
				pthread_cond_wait(&store->rwake, &store->lock);
				continue;
			}
			if (now < store->relaxed_since + STORE__RELAXED_MS) {
				store__cond_wait_ms(&store->rwake, &store->lock,
				                    store->relaxed_since + STORE__RELAXED_MS - now);
				continue;
			}
			/* Relaxed commits waited long enough: put them on disk now. */
			store->relaxed_pending = false;
			pthread_mutex_unlock(&store->lock);
			pthread_mutex_lock(&store->write_lock);
			ret = store->ops->sync(store);
			pthread_mutex_unlock(&store->write_lock);
			if (ret != STORE_OK)
				log_error("event=store_sync result=failed error=\"%s\"",
				          store_err_str(ret));
			pthread_mutex_lock(&store->lock);
			store->stats.relaxed_syncs++;
		}
		while (store->rhead != NULL && n < store->opts.batch_max) {
			batch[n++] = store->rhead;
			store->rhead = store->rhead->next;
		}
		if (store->rhead == NULL)
			store->rtail = NULL;
		if (n > 0) {
			pthread_mutex_unlock(&store->lock);
			store__run_batch(store, batch, n);
			pthread_mutex_lock(&store->lock);
			/* An expunge may have dropped a blob's last reference: the writer collects. */
			if (store->gc_check)
				pthread_cond_signal(&store->wake);
		}
		if (store->closing && store->rhead == NULL)
			break;
	}
	/* What is still relaxed goes to disk with the store's close. */
	pthread_mutex_unlock(&store->lock);
	free(batch);
	return NULL;
}

static void
store__syncer_stop(struct store *store)
{
	if (!store->have_syncer)
		return;
	pthread_mutex_lock(&store->lock);
	store->syncer_stop = true;
	pthread_cond_signal(&store->swake);
	pthread_mutex_unlock(&store->lock);
	pthread_join(store->syncer, NULL);
	store->have_syncer = false;
}

int
store__writer_start(struct store *store, const char **error_r)
{
	/* The syncer first: the writer reads have_syncer from its first batch on. */
	int err = pthread_create(&store->syncer, NULL, store__syncer_main, store);

	if (err != 0) {
		/* The writer then flushes the log itself, as it did before there was a syncer. */
		log_warn("event=store_start syncer=off error=\"%s\"", strerror(err));
	} else {
		pthread_setname_np(store->syncer, "store-syncer");
		store->have_syncer = true;
	}
	err = pthread_create(&store->writer, NULL, store__writer_main, store);
	if (err != 0) {
		*error_r = store__tls_error("cannot start the writer thread: %s", strerror(err));
		store__syncer_stop(store);
		return STORE_ERR_IO;
	}
	pthread_setname_np(store->writer, "store-writer");
	store->have_writer = true;
	if (store->opts.relaxed_sync) {
		err = pthread_create(&store->relaxed_writer, NULL, store__relaxed_main, store);
		if (err != 0) {
			/* Relaxed jobs then go through the writer, durably: nothing is lost. */
			log_warn("event=store_start relaxed_lane=off error=\"%s\"", strerror(err));
		} else {
			pthread_setname_np(store->relaxed_writer, "store-relaxed");
			store->have_relaxed_writer = true;
		}
	}
	return STORE_OK;
}

void
store__writer_stop(struct store *store)
{
	pthread_mutex_lock(&store->lock);
	store->closing = true;
	pthread_cond_signal(&store->wake);
	pthread_cond_signal(&store->rwake);
	pthread_mutex_unlock(&store->lock);
	if (store->have_relaxed_writer) {
		pthread_join(store->relaxed_writer, NULL);
		store->have_relaxed_writer = false;
	}
	if (store->have_writer) {
		pthread_join(store->writer, NULL);
		store->have_writer = false;
	}
	/* After the writer: it may have handed over its last batches. */
	store__syncer_stop(store);
}
