/* Removal of message files nothing needs any more.
 *
 * Unreferenced blobs (refs = 0): in one write transaction that starts from committed state, the
 * files are unlinked, then the rows deleted; a crash in between leaves rows whose files are
 * already gone, and the next pass unlinks again (ENOENT is fine). Starting from committed state
 * matters: a rolled-back transaction can never resurrect a reference to an unlinked file.
 * Orphans (files without a row, left by a crash between rename and commit, or temporary files
 * of dead processes) are removed when older than blob_orphan_age and not alive in this process.
 * Nothing here runs at open: the sweeper thread waits one blob_sweep_interval first. */
#include "store/store_internal.h"

#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct store__idlist {
	char (*ids)[STORE__BLOB_ID_LEN + 1];
	size_t n, cap;
};

static void
store__idlist_add(struct store__idlist *l, const char *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap == 0 ? 64 : l->cap * 2;
		l->ids = xrealloc(l->ids, l->cap * sizeof(*l->ids));
	}
	memcpy(l->ids[l->n], id, STORE__BLOB_ID_LEN);
	l->ids[l->n][STORE__BLOB_ID_LEN] = '\0';
	l->n++;
}

static int
store__collect_id(const char *id, void *ctx)
{
	if (store__valid_blob_id(id))
		store__idlist_add(ctx, id);
	return 0;
}

static void
store__count_removed(struct store *store, int removed)
{
	pthread_mutex_lock(&store->lock);
	store->stats.gc_removed += (uint64_t)removed;
	pthread_mutex_unlock(&store->lock);
}

int
store__gc_unreferenced(struct store *store, unsigned int limit, unsigned int *rows_r)
{
	const struct store_ops *ops = store->ops;
	struct store__idlist list = {NULL, 0, 0};
	unsigned int forgotten = 0;
	int ret, removed = 0;
	bool relaxed;

	*rows_r = 0;
	/* Forgetting blobs need not wait for the disk: a crash that takes the commit back brings
	 * back rows of blobs nobody references, whose files are gone already, and the next pass
	 * forgets them again (a missing file is what it expects). The next durable commit puts
	 * this one on disk with it. Before, every EXPUNGE cost a second log flush this way. */
	relaxed = ops->set_durable(store, false) == STORE_OK;
	ret = ops->begin(store);
	if (ret != STORE_OK) {
		if (relaxed)
			(void)ops->set_durable(store, true);
		return ret;
	}
	ret = ops->blob_unreferenced(store, limit, store__collect_id, &list);
	for (size_t i = 0; i < list.n && ret == STORE_OK; i++) {
		int r = store__blob_unlink(store, list.ids[i]);

		if (r < 0)
			continue; /* keep the row: the file is still there */
		removed += r;
		ret = ops->blob_forget(store, list.ids[i]);
		if (ret == STORE_OK)
			forgotten++;
	}
	if (ret == STORE_OK)
		ret = ops->commit(store);
	if (ret != STORE_OK) {
		/* Files already unlinked stay unlinked; their rows are retried next time. */
		log_warn("event=store_gc result=failed error=\"%s\"", ops->last_error(store));
		ops->rollback(store);
	}
	if (relaxed)
		(void)ops->set_durable(store, true);
	/* Rows gone, not rows seen: files that cannot be unlinked must not make callers loop. */
	*rows_r = ret == STORE_OK ? forgotten : 0;
	free(list.ids);
	store__count_removed(store, removed);
	return ret != STORE_OK ? ret : removed;
}

int
store__gc_unreferenced_all(struct store *store)
{
	unsigned int rows;
	int total = 0, n;

	do {
		n = store__gc_unreferenced(store, STORE__GC_LIMIT, &rows);
		if (n < 0)
			return n;
		total += n;
	} while (rows == STORE__GC_LIMIT && total < INT32_MAX - STORE__GC_LIMIT);
	return total;
}

void
store__gc_serve_requests(struct store *store)
{
	struct store__gc_req *req, *next;
	int removed;

	pthread_mutex_lock(&store->lock);
	req = store->gc_reqs;
	store->gc_reqs = NULL;
	pthread_mutex_unlock(&store->lock);
	if (req == NULL)
		return;
	pthread_mutex_lock(&store->write_lock);
	removed = store__gc_unreferenced_all(store);
	pthread_mutex_unlock(&store->write_lock);
	pthread_mutex_lock(&store->lock);
	for (; req != NULL; req = next) {
		next = req->next; /* req lives on its caller's stack: gone once done is seen */
		req->removed = removed;
		req->done = true;
		/* One pass served every request: the count goes to the first only. */
		if (removed > 0)
			removed = 0;
	}
	pthread_cond_broadcast(&store->gc_done);
	pthread_mutex_unlock(&store->lock);
}

/* ---- Orphans ---------------------------------------------------------------------------- */

struct store__sweep {
	struct store *store;
	char (*live)[STORE__BLOB_ID_LEN + 1];
	size_t nlive;
	int64_t now_ms;   /* wall clock, like file times */
	uint64_t age_ms;
	bool interruptible;
	int removed;
};

static bool
store__sweep_stopped(struct store__sweep *sw)
{
	bool stop;

	if (!sw->interruptible)
		return false;
	pthread_mutex_lock(&sw->store->lock);
	stop = sw->store->stopping;
	pthread_mutex_unlock(&sw->store->lock);
	return stop;
}

static int
store__idcmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static bool
store__is_live(const struct store__sweep *sw, const char *id)
{
	return bsearch(id, sw->live, sw->nlive, sizeof(*sw->live), store__idcmp) != NULL;
}

/* True if the file is a regular file old enough to be garbage. */
static bool
store__old_file(const struct store__sweep *sw, int dirfd, const char *name)
{
	struct stat st;
	int64_t mtime_ms;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return false;
	mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	return sw->now_ms - mtime_ms >= (int64_t)sw->age_ms;
}

static void
store__sweep_unlink(struct store__sweep *sw, int dirfd, const char *where, const char *name)
{
	if (unlinkat(dirfd, name, 0) == 0) {
		sw->removed++;
		log_info("event=blob_orphan_removed folder=%s id=%s", where, name);
	} else if (errno != ENOENT) {
		log_warn("event=blob_orphan_removed folder=%s id=%s result=failed error=\"%s\"",
		         where, name, strerror(errno));
	}
}

static void
store__sweep_tmp(struct store__sweep *sw)
{
	DIR *dir = opendir(sw->store->tmp_dir);
	struct dirent *de;

	if (dir == NULL) {
		log_warn("event=blob_sweep folder=tmp result=failed error=\"%s\"", strerror(errno));
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		/* Only names we create: anything else in tmp/ is not ours to remove. */
		if (!store__valid_blob_id(de->d_name) || store__is_live(sw, de->d_name))
			continue;
		if (store__old_file(sw, dirfd(dir), de->d_name))
			store__sweep_unlink(sw, dirfd(dir), "tmp", de->d_name);
	}
	closedir(dir);
}

/* Merges the database's ids of one bucket (ascending) with the sorted candidates. */
struct store__merge {
	struct store__idlist *cand;
	bool *has_row;
	size_t pos;
};

static int
store__merge_row(const char *id, void *ctx)
{
	struct store__merge *m = ctx;

	while (m->pos < m->cand->n && strcmp(m->cand->ids[m->pos], id) < 0)
		m->pos++;
	if (m->pos < m->cand->n && strcmp(m->cand->ids[m->pos], id) == 0)
		m->has_row[m->pos++] = true;
	return 0;
}

static int
store__bucket_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static bool
store__is_settled(const struct store *store, const char *bucket)
{
	return store->nsettled > 0 && bsearch(bucket, store->settled, store->nsettled,
	                                      sizeof(*store->settled), store__bucket_cmp) != NULL;
}

static void
store__settle(struct store *store, const char *bucket)
{
	if (store->nsettled == store->settled_cap) {
		store->settled_cap = store->settled_cap == 0 ? 64 : store->settled_cap * 2;
		store->settled = xrealloc(store->settled,
		                          store->settled_cap * sizeof(*store->settled));
	}
	memcpy(store->settled[store->nsettled++], bucket, sizeof(*store->settled));
	qsort(store->settled, store->nsettled, sizeof(*store->settled), store__bucket_cmp);
}

static bool
store__live_in_bucket(const struct store__sweep *sw, const char *bucket)
{
	for (size_t i = 0; i < sw->nlive; i++) {
		if (memcmp(sw->live[i], bucket, STORE__BUCKET_LEN) == 0)
			return true;
	}
	return false;
}

static bool
store__is_bucket_name(const char *name)
{
	size_t i;

	for (i = 0; name[i] != '\0'; i++) {
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	}
	return i == STORE__BUCKET_LEN;
}

/* Sweeps one bucket. Returns true when it is settled: its hour is over by more than
 * blob_orphan_age, no live blob belongs to it and every file in it was checked. */
static bool
store__sweep_bucket(struct store__sweep *sw, int parentfd, const char *bucket)
{
	struct store__idlist cand = {NULL, 0, 0};
	struct store__merge merge;
	char lo[STORE__BUCKET_LEN + 1], hi[STORE__BUCKET_LEN + 2];
	size_t entries = 0, removed_here;
	struct dirent *de;
	unsigned long hour = strtoul(bucket, NULL, 16);
	bool old = ((int64_t)hour + 1) * 3600 * 1000 + (int64_t)sw->age_ms < sw->now_ms;
	bool complete = true;
	int fd, before;
	DIR *dir;

	fd = openat(parentfd, bucket, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			(void)close(fd);
		return false;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		entries++;
		/* Names we never create are not ours to judge or remove. */
		if (!store__valid_blob_id(de->d_name) ||
		    memcmp(de->d_name, bucket, STORE__BUCKET_LEN) != 0)
			continue;
		if (store__is_live(sw, de->d_name) ||
		    !store__old_file(sw, dirfd(dir), de->d_name)) {
			complete = false;
			continue;
		}
		store__idlist_add(&cand, de->d_name);
	}
	before = sw->removed;
	if (cand.n > 0) {
		qsort(cand.ids, cand.n, sizeof(*cand.ids), store__idcmp);
		merge.cand = &cand;
		merge.has_row = xcalloc(cand.n, sizeof(*merge.has_row));
		merge.pos = 0;
		/* Every id of the bucket starts with its name: [bucket, bucket + "g") is the
		 * bucket's whole range, since ids are lower-case hex. */
		memcpy(lo, bucket, sizeof(lo));
		(void)snprintf(hi, sizeof(hi), "%sg", bucket);
		if (sw->store->ops->blob_list_range(sw->store, lo, hi, store__merge_row, &merge) ==
		    STORE_OK) {
			for (size_t i = 0; i < cand.n; i++) {
				if (!merge.has_row[i])
					store__sweep_unlink(sw, dirfd(dir), bucket, cand.ids[i]);
			}
		} else {
			complete = false;
		}
		free(merge.has_row);
	}
	free(cand.ids);
	closedir(dir);

	/* An empty bucket of an hour long past goes too. A writer that still places a file of
	 * that hour recreates it (store__blob_place retries on ENOENT). */
	removed_here = (size_t)(sw->removed - before);
	if (old && entries == removed_here &&
	    unlinkat(parentfd, bucket, AT_REMOVEDIR) == 0) {
		log_debug("event=blob_bucket_removed bucket=%s", bucket);
		return false;
	}
	return old && complete && !store__live_in_bucket(sw, bucket);
}

static int
store__gc_orphans_run(struct store *store, bool interruptible)
{
	struct store__sweep sw;
	struct timespec ts;
	struct dirent *de;
	char (*buckets)[STORE__BUCKET_LEN + 1] = NULL;
	size_t nbuckets = 0, cap = 0;
	DIR *dir;

	pthread_mutex_lock(&store->sweep_lock);
	memset(&sw, 0, sizeof(sw));
	sw.store = store;
	sw.age_ms = store->opts.blob_orphan_age;
	sw.interruptible = interruptible;
	/* The clock first, then the live set, then the folders and the database. A blob committed
	 * after the snapshot was live at it (skipped), or was created after it: then its file's
	 * time is not before now_ms, since file times come from the same coarse clock, and it is
	 * too young whatever blob_orphan_age is. A blob not live at the snapshot and not failed
	 * was committed before it, so its row is visible to the reads that follow. */
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	sw.now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	sw.live = store__live_snapshot(store, &sw.nlive);

	store__sweep_tmp(&sw);
	dir = opendir(store->blob_dir);
	if (dir == NULL) {
		log_warn("event=blob_sweep result=failed error=\"%s\"", strerror(errno));
	} else {
		while ((de = readdir(dir)) != NULL) {
			if (!store__is_bucket_name(de->d_name))
				continue;
			if (nbuckets == cap) {
				cap = cap == 0 ? 64 : cap * 2;
				buckets = xrealloc(buckets, cap * sizeof(*buckets));
			}
			memcpy(buckets[nbuckets++], de->d_name, sizeof(*buckets));
		}
		for (size_t i = 0; i < nbuckets && !store__sweep_stopped(&sw); i++) {
			if (store__is_settled(store, buckets[i])) {
				/* Only unreferenced-blob removal can change it now: one rmdir tells
				 * whether it became empty. */
				(void)unlinkat(dirfd(dir), buckets[i], AT_REMOVEDIR);
				continue;
			}
			if (store__sweep_bucket(&sw, dirfd(dir), buckets[i]))
				store__settle(store, buckets[i]);
		}
		closedir(dir);
	}
	free(buckets);
	free(sw.live);
	pthread_mutex_unlock(&store->sweep_lock);
	store__count_removed(store, sw.removed);
	return sw.removed;
}

int
store__gc_orphans(struct store *store)
{
	return store__gc_orphans_run(store, false);
}

/* ---- The expunge history ---------------------------------------------------------------- */

static bool
store__sweeper_stopping(struct store *store)
{
	bool stopping;

	pthread_mutex_lock(&store->lock);
	stopping = store->stopping;
	pthread_mutex_unlock(&store->lock);
	return stopping;
}

#define STORE__PRUNE_ROWS 5000 /* per transaction: the write lock is never held for long */

struct store__prune {
	int64_t before;
	uint32_t rows;
};

static int
store__prune_run(struct store_txn *txn, void *ctx)
{
	struct store__prune *p = ctx;

	return store_txn_expunged_prune(txn, p->before, STORE__PRUNE_ROWS, &p->rows);
}

int64_t
store_expunged_prune(struct store *store)
{
	struct store__prune p;
	const char *error;
	int64_t total = 0;
	int ret;

	if (store->opts.expunge_history == 0)
		return 0;
	p.before = (int64_t)time(NULL) - (int64_t)(store->opts.expunge_history / 1000);
	do {
		p.rows = 0;
		ret = store_exec_relaxed(store, store__prune_run, &p, &error);
		if (ret < 0) {
			log_warn("event=expunged_prune result=failed error=\"%s\"", error);
			return ret;
		}
		total += p.rows;
	} while (p.rows >= STORE__PRUNE_ROWS && !store__sweeper_stopping(store));
	if (total > 0)
		log_info("event=expunged_prune rows=%lld", (long long)total);
	return total;
}

/* ---- The sweeper thread ----------------------------------------------------------------- */

static void *
store__sweeper_main(void *arg)
{
	struct store *store = arg;
	struct timespec deadline;
	uint64_t ms = store->opts.blob_sweep_interval;

	pthread_mutex_lock(&store->lock);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += (time_t)(ms / 1000);
		deadline.tv_nsec += (long)(ms % 1000) * 1000000;
		if (deadline.tv_nsec >= 1000000000) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
		while (!store->stopping &&
		       pthread_cond_timedwait(&store->sweep_wake, &store->lock, &deadline) == 0)
			;
		if (store->stopping)
			break;
		/* Unreferenced rows may come from other processes (the CLI) too: have the writer
		 * look, then sweep for orphans here, off the writer's path. */
		store->gc_check = true;
		store->gc_stuck = false;
		pthread_cond_signal(&store->wake);
		pthread_mutex_unlock(&store->lock);
		(void)store__gc_orphans_run(store, true);
		(void)store_expunged_prune(store);
		pthread_mutex_lock(&store->lock);
	}
	pthread_mutex_unlock(&store->lock);
	return NULL;
}

int
store__sweeper_start(struct store *store, const char **error_r)
{
	int err;

	if (store->opts.blob_sweep_interval == 0)
		return STORE_OK;
	err = pthread_create(&store->sweeper, NULL, store__sweeper_main, store);
	if (err != 0) {
		*error_r = store__tls_error("cannot start the sweeper thread: %s", strerror(err));
		return STORE_ERR_IO;
	}
	pthread_setname_np(store->sweeper, "store-sweep");
	store->have_sweeper = true;
	return STORE_OK;
}

void
store__sweeper_stop(struct store *store)
{
	pthread_mutex_lock(&store->lock);
	store->stopping = true;
	pthread_cond_broadcast(&store->sweep_wake);
	pthread_mutex_unlock(&store->lock);
	if (store->have_sweeper) {
		pthread_join(store->sweeper, NULL);
		store->have_sweeper = false;
	}
}
