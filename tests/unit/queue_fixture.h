/* The fixture of the queue's store tests (test_queue.c, test_store_queue.c): a store on a real
 * SQLite file in a temporary folder, jobs run at once (background = false), and a helper that
 * queues a message. Header-only: each test program includes it once. */
#ifndef TESTS_UNIT_QUEUE_FIXTURE_H
#define TESTS_UNIT_QUEUE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store.h"

struct fixture {
	char dir[PATH_MAX];
	char db[PATH_MAX];
	char blobs[PATH_MAX];
	struct store *store;
};

/* snprintf that fails the test instead of truncating. */
ATTR_FORMAT(3, 4) static inline int
fmt(char *dst, size_t size, const char *format, ...)
{
	va_list ap;
	int n;

	va_start(ap, format);
	n = vsnprintf(dst, size, format, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= size ? -1 : 0;
}

static inline int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline int
queue_fixture_setup(void **state, const char *prefix)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *base = getenv("POSTAMT_TEST_TMP"), *error = NULL;
	struct store_options opts;

	if (f == NULL)
		return -1;
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	(void)mkdir(base, 0700);
	if (fmt(f->dir, sizeof(f->dir), "%s/%s-XXXXXX", base, prefix) < 0 || mkdtemp(f->dir) == NULL ||
	    fmt(f->db, sizeof(f->db), "%s/postamt.db", f->dir) < 0 ||
	    fmt(f->blobs, sizeof(f->blobs), "%s/blobs", f->dir) < 0) {
		free(f);
		return -1;
	}
	memset(&opts, 0, sizeof(opts));
	opts.database = f->db;
	opts.blob_dir = f->blobs;
	opts.batch_max = 64;
	opts.blob_orphan_age = 3600 * 1000;
	opts.background = false;
	if (store_open(&opts, &f->store, &error) != STORE_OK) {
		fprintf(stderr, "store_open: %s\n", error);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static inline int
queue_fixture_teardown(void **state)
{
	struct fixture *f = *state;

	store_close(&f->store);
	(void)nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static inline int64_t
db_int(struct fixture *f, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* ---- Queueing a message ----------------------------------------------------------------- */

struct enqueue {
	const char *blob_id;
	const char *sender;
	const char *const *rcpts;
	size_t nrcpts;
	int priority;
	int64_t id;
	int result;
};

static inline int
job_enqueue(struct store_txn *txn, void *ctx)
{
	struct enqueue *e = ctx;

	return store_txn_queue_add(txn, e->blob_id, e->sender, e->rcpts, e->nrcpts, e->priority,
	                           &e->id);
}

static inline void
enqueue_done(struct store_job *job, void *ctx)
{
	struct enqueue *e = ctx;
	const char *error;

	e->result = store_job_result(job, &error);
	store_job_free(&job);
}

/* One entry from sender to rcpts in a priority class, through a store job; its queue id. */
static inline int64_t
queue_fixture_enqueue(struct fixture *f, const char *sender, int priority,
                      const char *const *rcpts, size_t n)
{
	struct store_blob *blob;
	struct store_job *job;
	const char *error, *text = "Subject: x\r\n\r\nbody\r\n";
	struct enqueue e = {NULL, sender, rcpts, n, priority, 0, -99};

	assert_int_equal(store_blob_new(f->store, &blob, &error), STORE_OK);
	assert_int_equal(store_blob_write(blob, text, strlen(text)), STORE_OK);
	e.blob_id = store_blob_id(blob);
	job = store_job_new(job_enqueue, enqueue_done, &e);
	store_job_add_blob(job, &blob);
	store_submit(f->store, job); /* background = false: runs now */
	assert_int_equal(e.result, STORE_OK);
	return e.id;
}

#endif
