/* The store (src/store/) against a real SQLite file and blob folder in a temporary directory:
 * schema and migrations, names and their case-insensitivity, default mailboxes, UIDs and
 * MODSEQs, shared blobs and reference counts, garbage collection of unreferenced and orphaned
 * files, isolation of a failing job inside a batch, shutdown, and group commit under
 * concurrency (counted, not timed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_internal.h"
#include "store/store_sqlite.h"

struct fixture {
	char dir[PATH_MAX];
	char db[PATH_MAX];
	char blobs[PATH_MAX];
	struct store_options opts;
	struct store *store;
};

/* snprintf that fails the test instead of truncating. */
ATTR_FORMAT(3, 4) static void
fmt(char *dst, size_t size, const char *format, ...)
{
	va_list ap;
	int n;

	va_start(ap, format);
	n = vsnprintf(dst, size, format, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		fail_msg("path too long");
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *base = getenv("POSTAMT_TEST_TMP");

	if (f == NULL)
		return -1;
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	(void)mkdir(base, 0700);
	fmt(f->dir, sizeof(f->dir), "%s/store-XXXXXX", base);
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	fmt(f->db, sizeof(f->db), "%s/postamt.db", f->dir);
	fmt(f->blobs, sizeof(f->blobs), "%s/blobs", f->dir);
	f->opts.database = f->db;
	f->opts.blob_dir = f->blobs;
	f->opts.sync_threads = 0;
	f->opts.batch_max = 64;
	f->opts.blob_orphan_age = 3600 * 1000;
	f->opts.blob_sweep_interval = 0;
	f->opts.background = false;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	if (f->store != NULL)
		store_close(&f->store);
	(void)nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void
open_store(struct fixture *f)
{
	const char *error = NULL;
	int ret = store_open(&f->opts, &f->store, &error);

	if (ret != STORE_OK)
		fail_msg("store_open: %s", error);
}

/* One integer from the database, read with a connection of our own. */
static int64_t
db_int(struct fixture *f, const char *sql, const char *arg)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (arg != NULL)
		sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void
db_exec(struct fixture *f, const char *sql, const char *arg)
{
	sqlite3 *db;
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (arg != NULL)
		sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static bool
file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static bool
blob_file_exists(struct fixture *f, const char *id)
{
	char *path = store_blob_path(f->store, id);
	bool ret;

	assert_non_null(path);
	ret = file_exists(path);
	free(path);
	return ret;
}

static bool
tmp_file_exists(struct fixture *f, const char *id)
{
	char path[PATH_MAX];

	fmt(path, sizeof(path), "%s/tmp/%s", f->blobs, id);
	return file_exists(path);
}

/* ---- Jobs used by the tests ------------------------------------------------------------- */

struct names {
	const char *a, *b;
	int64_t id;
};

static int
job_domain_add(struct store_txn *txn, void *ctx)
{
	return store_txn_domain_add(txn, ((struct names *)ctx)->a);
}

static int
job_domain_remove(struct store_txn *txn, void *ctx)
{
	return store_txn_domain_remove(txn, ((struct names *)ctx)->a);
}

static int
job_account_add(struct store_txn *txn, void *ctx)
{
	struct names *n = ctx;

	return store_txn_account_add(txn, n->a, n->b, &n->id);
}

static int
job_account_remove(struct store_txn *txn, void *ctx)
{
	return store_txn_account_remove(txn, ((struct names *)ctx)->a);
}

static int
job_set_password(struct store_txn *txn, void *ctx)
{
	struct names *n = ctx;

	return store_txn_account_set_password(txn, n->a, n->b);
}

static int
job_alias_add(struct store_txn *txn, void *ctx)
{
	struct names *n = ctx;

	return store_txn_alias_add(txn, n->a, n->b);
}

static int
job_alias_remove(struct store_txn *txn, void *ctx)
{
	struct names *n = ctx;

	return store_txn_alias_remove(txn, n->a, n->b);
}

static int
exec2(struct fixture *f, store_job_fn *fn, const char *a, const char *b, const char **error_r)
{
	struct names n = {a, b, 0};
	const char *error;
	int ret = store_exec(f->store, fn, &n, &error);

	assert_non_null(error);
	if (error_r != NULL)
		*error_r = error;
	return ret;
}

static int64_t
add_account(struct fixture *f, const char *address)
{
	struct names n = {address, "$test$hash", 0};
	const char *error;

	assert_int_equal(store_exec(f->store, job_account_add, &n, &error), STORE_OK);
	assert_true(n.id > 0);
	return n.id;
}

static int64_t
inbox_of(struct fixture *f, int64_t account_id)
{
	struct store_mailbox m;

	assert_int_equal(store_mailbox_get(f->store, account_id, "INBOX", &m), 1);
	return m.id;
}

/* Delivers `copies` times one blob (made here) to each of mailboxes[], and optionally queues
 * it too. */
struct deliver_ctx {
	const int64_t *mailboxes;
	size_t nmailboxes;
	const char *blob_id;
	bool queue;
	int fail_with; /* after delivering, return this (0 = succeed) */
	uint32_t uids[64];
	int64_t queue_id;
};

static int
job_deliver(struct store_txn *txn, void *ctx)
{
	struct deliver_ctx *d = ctx;
	int ret;

	for (size_t i = 0; i < d->nmailboxes; i++) {
		ret = store_txn_deliver(txn, d->mailboxes[i], d->blob_id, STORE_FLAG_SEEN,
		                        store_txn_now(txn), &d->uids[i]);
		if (ret != STORE_OK)
			return ret;
	}
	if (d->queue) {
		const char *rcpts[] = {"Someone@Remote.Example", "other@remote.example"};

		ret = store_txn_queue_add(txn, d->blob_id, "sender@example.org", rcpts, 2, 0,
		                          &d->queue_id);
		if (ret != STORE_OK)
			return ret;
	}
	if (d->fail_with != 0) {
		store_txn_error(txn, "failing on purpose");
		return d->fail_with;
	}
	return STORE_OK;
}

static struct store_blob *
new_blob(struct fixture *f, const char *content)
{
	struct store_blob *blob;
	const char *error;

	assert_int_equal(store_blob_new(f->store, &blob, &error), STORE_OK);
	assert_int_equal(store_blob_write(blob, content, strlen(content)), STORE_OK);
	assert_int_equal(store_blob_size(blob), strlen(content));
	return blob;
}

/* A delivery job with its blob, submitted and waited for. */
struct sync_job {
	struct deliver_ctx d;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int result;
	char error[256];
	char blob_id[33];
};

static void
sync_job_done(struct store_job *job, void *ctx)
{
	struct sync_job *s = ctx;
	const char *error;

	pthread_mutex_lock(&s->lock);
	s->result = store_job_result(job, &error);
	fmt(s->error, sizeof(s->error), "%s", error);
	store_job_free(&job);
	s->done = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void
sync_job_init(struct sync_job *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
}

static void
sync_job_submit(struct fixture *f, struct sync_job *s, const char *content)
{
	struct store_blob *blob = new_blob(f, content);
	struct store_job *job;

	fmt(s->blob_id, sizeof(s->blob_id), "%s", store_blob_id(blob));
	s->d.blob_id = s->blob_id;
	job = store_job_new(job_deliver, sync_job_done, s);
	/* deliver_ctx is the first member: job_deliver sees the right struct. */
	store_job_add_blob(job, &blob);
	assert_null(blob);
	store_submit(f->store, job);
}

static void
sync_job_wait(struct sync_job *s)
{
	pthread_mutex_lock(&s->lock);
	while (!s->done)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static void
sync_job_deinit(struct sync_job *s)
{
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
}

/* Delivers content to one mailbox and waits; the caller checks s->result and deinits s. */
static void
sync_deliver(struct fixture *f, struct sync_job *s, const int64_t *mailbox, const char *content)
{
	sync_job_init(s);
	s->d.mailboxes = mailbox;
	s->d.nmailboxes = 1;
	sync_job_submit(f, s, content);
	sync_job_wait(s);
}

/* ---- Schema ----------------------------------------------------------------------------- */

static int
count_name(const char *name, void *ctx)
{
	(void)name;
	(*(int *)ctx)++;
	return 0;
}

static void
read_secret(struct fixture *f, char *dst, size_t size)
{
	sqlite3 *db;
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = "
	                                    "'server_secret'", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	fmt(dst, size, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void
test_open_and_reopen(void **state)
{
	struct fixture *f = *state;
	char secret1[80], secret2[80];
	int n = 0;

	open_store(f);
	assert_int_equal(store_domain_list(f->store, count_name, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	store_close(&f->store);
	assert_null(f->store);

	assert_int_equal(db_int(f, "PRAGMA user_version", NULL), store__sqlite_schema_version());
	assert_int_equal(db_int(f, "SELECT count(*) FROM meta WHERE key = 'server_secret'",
	                        NULL), 1);
	read_secret(f, secret1, sizeof(secret1));
	assert_int_equal(strlen(secret1), 64);
	assert_int_equal(strspn(secret1, "0123456789abcdef"), 64);
	assert_true(file_exists(f->blobs));

	/* Reopening applies nothing again: same secret, same data, same version. */
	open_store(f);
	assert_int_equal(store_domain_exists(f->store, "example.org"), 1);
	store_close(&f->store);
	read_secret(f, secret2, sizeof(secret2));
	assert_string_equal(secret1, secret2);
	assert_int_equal(db_int(f, "PRAGMA user_version", NULL), store__sqlite_schema_version());
	assert_int_equal(db_int(f, "SELECT count(*) FROM domains", NULL), 1);
	{
		sqlite3 *db;
		sqlite3_stmt *st;

		assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL),
		                 SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
		                 SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
		sqlite3_finalize(st);
		sqlite3_close(db);
	}

	/* A database from a newer program is refused. */
	db_exec(f, "PRAGMA user_version = 999", NULL);
	{
		const char *error = NULL;

		assert_int_equal(store_open(&f->opts, &f->store, &error), STORE_ERR_INVALID);
		assert_null(f->store);
		assert_non_null(strstr(error, "newer"));
	}
}

struct msg_list {
	struct store_message m[64];
	int n;
};

static int
collect_message(const struct store_message *m, void *ctx)
{
	struct msg_list *l = ctx;

	if (l->n < 64)
		l->m[l->n++] = *m;
	return 0;
}

/* A database of schema v7 (messages in a rowid table) with messages, flags and shared blobs
 * keeps them all through v8 (one table clustered by mailbox and uid) and later steps, and the
 * triggers made again for the new table keep counting references and quota. */
static void
test_migrations_keep_messages(void **state)
{
	struct fixture *f = *state;
	const char *error = NULL;
	struct msg_list *l = calloc(1, sizeof(*l));
	struct store_message *m = l->m;
	struct buf report;
	sqlite3 *db;

	assert_non_null(l);
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(store__sqlite_migrate_to(db, 7, &error), STORE_OK);
	assert_int_equal(sqlite3_exec(db,
	    "INSERT INTO domains (id, name, created) VALUES (1, 'example.org', 0);"
	    "INSERT INTO accounts (id, domain_id, address, pwhash, created, quota)"
	    "  VALUES (1, 1, 'alice@example.org', '', 0, -1);"
	    "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext, highestmodseq)"
	    "  VALUES (1, 1, 'INBOX', 7, 5, 9), (2, 1, 'Archive', 8, 2, 3);"
	    "INSERT INTO blobs (id, size, created) VALUES"
	    "  ('00000000000000000000000000000001', 10, 0),"
	    "  ('00000000000000000000000000000002', 20, 0);"
	    "INSERT INTO blob_data (id, data) VALUES"
	    "  ('00000000000000000000000000000001', x'30313233343536373839'),"
	    "  ('00000000000000000000000000000002', zeroblob(20));"
	    /* rows out of order, interleaved between mailboxes, as deliveries make them */
	    "INSERT INTO messages (mailbox_id, uid, blob_id, size, internaldate, flags, keywords,"
	    "  modseq) VALUES"
	    "  (1, 4, '00000000000000000000000000000002', 20, 40, 0, '', 9),"
	    "  (2, 1, '00000000000000000000000000000001', 10, 50, 8, 'Work', 3),"
	    "  (1, 1, '00000000000000000000000000000001', 10, 10, 1, '$Todo', 2);"
	    "INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (1, 2, 5), (1, 3, 6);",
	    NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(db_int(f, "SELECT refs FROM blobs WHERE id = ?1",
	                        "00000000000000000000000000000001"), 2);
	sqlite3_close(db);

	open_store(f);
	assert_int_equal(db_int(f, "PRAGMA user_version", NULL), store__sqlite_schema_version());
	assert_int_equal(db_int(f, "SELECT wr FROM pragma_table_list WHERE name = 'messages'",
	                        NULL), 1);
	assert_int_equal(store_message_list(f->store, 1, collect_message, l), 0);
	assert_int_equal(l->n, 2);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[0].flags, 1);
	assert_int_equal(m[0].modseq, 2);
	assert_int_equal(m[1].uid, 4);
	assert_int_equal(m[1].size, 20);
	assert_int_equal(m[1].internaldate, 40);
	assert_int_equal(db_int(f, "SELECT count(*) FROM messages WHERE mailbox_id = 1 AND uid = 1 "
	                           "AND keywords = '$Todo'", NULL), 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM messages WHERE mailbox_id = 2 AND "
	                           "keywords = 'Work' AND flags = 8", NULL), 1);
	/* v11: the full-text index merges its segments early. */
	assert_int_equal(db_int(f, "SELECT v FROM fts_text_config WHERE k = 'automerge'", NULL), 2);
	/* v12: the expunge history counts from the upgrade; nothing was let go of yet. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM expunged WHERE at > 1700000000", NULL), 2);
	assert_int_equal(db_int(f, "SELECT max(expunged_floor) FROM mailboxes", NULL), 0);
	/* v10: \Deleted messages are listed through their own index. */
	l->n = 0;
	assert_int_equal(store_message_deleted(f->store, 1, 1, 100, collect_message, l), 0);
	assert_int_equal(l->n, 0);
	assert_int_equal(store_message_deleted(f->store, 2, 1, 100, collect_message, l), 0);
	assert_int_equal(l->n, 1);
	assert_int_equal(m[0].uid, 1);
	assert_int_equal(m[0].flags, 8);
	assert_int_equal(store_message_deleted(f->store, 2, 2, 100, collect_message, l), 0);
	assert_int_equal(l->n, 1);
	buf_init(&report, 1 << 20);
	assert_int_equal(store_check(f->store, &report), 0);
	buf_deinit(&report);

	/* The triggers are back: references and the account's bytes follow the rows. */
	assert_int_equal(db_int(f, "SELECT used FROM accounts", NULL), 40);
	db_exec(f, "DELETE FROM messages WHERE mailbox_id = 2 AND uid = 1", NULL);
	assert_int_equal(db_int(f, "SELECT refs FROM blobs WHERE id = ?1",
	                        "00000000000000000000000000000001"), 1);
	assert_int_equal(db_int(f, "SELECT used FROM accounts", NULL), 30);
	db_exec(f, "INSERT INTO messages (mailbox_id, uid, blob_id, size, internaldate, modseq) "
	           "VALUES (2, 1, '00000000000000000000000000000002', 20, 0, 4)", NULL);
	assert_int_equal(db_int(f, "SELECT refs FROM blobs WHERE id = ?1",
	                        "00000000000000000000000000000002"), 2);
	assert_int_equal(db_int(f, "SELECT used FROM accounts", NULL), 50);
	free(l);
}

static void
test_open_bad_options(void **state)
{
	struct fixture *f = *state;
	struct store_options o = f->opts;
	const char *error;

	o.database = NULL;
	assert_int_equal(store_open(&o, &f->store, &error), STORE_ERR_INVALID);
	o = f->opts;
	o.batch_max = 1000000;
	assert_int_equal(store_open(&o, &f->store, &error), STORE_ERR_INVALID);
	assert_null(f->store);
}

/* ---- Names ------------------------------------------------------------------------------ */

struct alias_list {
	char lines[16][600];
	int n;
};

static int
collect_alias(const char *source, const char *target, void *ctx)
{
	struct alias_list *l = ctx;

	if (l->n < 16)
		fmt(l->lines[l->n++], sizeof(l->lines[0]), "%s>%s", source, target);
	return 0;
}

static int
collect_account(const struct store_account *a, void *ctx)
{
	struct alias_list *l = ctx;

	if (l->n < 16)
		fmt(l->lines[l->n++], sizeof(l->lines[0]), "%s", a->address);
	return 0;
}

static int
stop_at_first(const char *name, void *ctx)
{
	(void)name;
	(*(int *)ctx)++;
	return 42;
}

static void
test_domains_accounts_aliases(void **state)
{
	struct fixture *f = *state;
	struct store_account acc;
	struct alias_list l;
	const char *error;
	int n;

	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "Example.ORG", NULL, NULL), STORE_OK);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, &error), STORE_ERR_EXISTS);
	assert_non_null(strstr(error, "already exists"));
	assert_int_equal(exec2(f, job_domain_add, "EXAMPLE.org", NULL, NULL), STORE_ERR_EXISTS);
	assert_int_equal(exec2(f, job_domain_add, "other.test", NULL, NULL), STORE_OK);
	assert_int_equal(exec2(f, job_domain_add, "bad domain", NULL, NULL), STORE_ERR_INVALID);
	assert_int_equal(exec2(f, job_domain_add, "", NULL, NULL), STORE_ERR_INVALID);
	assert_int_equal(exec2(f, job_domain_add, "a..b", NULL, NULL), STORE_ERR_INVALID);
	assert_int_equal(store_domain_exists(f->store, "EXAMPLE.ORG"), 1);
	assert_int_equal(store_domain_exists(f->store, "nowhere.test"), 0);
	n = 0;
	assert_int_equal(store_domain_list(f->store, count_name, &n), 0);
	assert_int_equal(n, 2);
	n = 0;
	assert_int_equal(store_domain_list(f->store, stop_at_first, &n), 42);
	assert_int_equal(n, 1);

	/* Accounts: the domain must exist; addresses are unique whatever their case. */
	assert_int_equal(exec2(f, job_account_add, "bob@unknown.test", "$h$", &error),
	                 STORE_ERR_NOTFOUND);
	assert_non_null(strstr(error, "unknown.test"));
	assert_int_equal(exec2(f, job_account_add, "Bob@Example.org", "$h$1", NULL), STORE_OK);
	assert_int_equal(exec2(f, job_account_add, "BOB@example.ORG", "$h$2", &error),
	                 STORE_ERR_EXISTS);
	assert_int_equal(exec2(f, job_account_add, "nobody", "$h$", NULL), STORE_ERR_INVALID);
	assert_int_equal(exec2(f, job_account_add, "@example.org", "$h$", NULL),
	                 STORE_ERR_INVALID);
	assert_int_equal(exec2(f, job_account_add, "x@example.org", "", NULL), STORE_ERR_INVALID);
	assert_int_equal(exec2(f, job_account_add, "a b@example.org", "$h$", NULL),
	                 STORE_ERR_INVALID);
	assert_int_equal(store_account_get(f->store, "bob@EXAMPLE.org", &acc), 1);
	assert_string_equal(acc.address, "Bob@example.org"); /* domain stored in lower case */
	assert_string_equal(acc.pwhash, "$h$1");
	assert_false(acc.disabled);
	assert_true(acc.created > 0);
	assert_int_equal(store_account_get(f->store, "carol@example.org", &acc), 0);
	assert_int_equal(store_account_get(f->store, "garbage", &acc), 0);
	assert_int_equal(exec2(f, job_set_password, "BOB@example.org", "$h$3", NULL), STORE_OK);
	assert_int_equal(store_account_get(f->store, "bob@example.org", &acc), 1);
	assert_string_equal(acc.pwhash, "$h$3");
	assert_int_equal(exec2(f, job_set_password, "carol@example.org", "$h$", NULL),
	                 STORE_ERR_NOTFOUND);
	assert_int_equal(exec2(f, job_account_add, "carol@other.test", "$h$", NULL), STORE_OK);
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_account_list(f->store, "EXAMPLE.org", collect_account, &l), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.lines[0], "Bob@example.org");
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_account_list(f->store, NULL, collect_account, &l), 0);
	assert_int_equal(l.n, 2);

	/* Aliases: the source domain must exist; pairs are unique whatever their case. */
	assert_int_equal(exec2(f, job_alias_add, "info@unknown.test", "bob@example.org", NULL),
	                 STORE_ERR_NOTFOUND);
	assert_int_equal(exec2(f, job_alias_add, "info@example.org", "bob@example.org", NULL),
	                 STORE_OK);
	assert_int_equal(exec2(f, job_alias_add, "INFO@Example.org", "BOB@example.org", NULL),
	                 STORE_ERR_EXISTS);
	assert_int_equal(exec2(f, job_alias_add, "info@example.org", "ext@far.away", NULL),
	                 STORE_OK);
	assert_int_equal(exec2(f, job_alias_add, "@example.org", "bob@example.org", NULL),
	                 STORE_OK);
	assert_int_equal(exec2(f, job_alias_add, "info@example.org", "@x.test", NULL),
	                 STORE_ERR_INVALID);
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_alias_list(f->store, collect_alias, &l), 0);
	assert_int_equal(l.n, 3);
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_alias_targets(f->store, "Info@EXAMPLE.org", collect_alias, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.lines[0], "info@example.org>bob@example.org");
	assert_string_equal(l.lines[1], "info@example.org>ext@far.away");
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_alias_targets(f->store, "@example.org", collect_alias, &l), 0);
	assert_int_equal(l.n, 1);

	/* A domain with accounts or aliases cannot go. */
	assert_int_equal(exec2(f, job_domain_remove, "example.org", NULL, &error),
	                 STORE_ERR_INVALID);
	assert_non_null(strstr(error, "account"));
	assert_int_equal(exec2(f, job_account_remove, "bob@EXAMPLE.org", NULL, NULL), STORE_OK);
	assert_int_equal(exec2(f, job_account_remove, "bob@example.org", NULL, NULL),
	                 STORE_ERR_NOTFOUND);
	assert_int_equal(exec2(f, job_domain_remove, "example.org", NULL, &error),
	                 STORE_ERR_INVALID);
	assert_non_null(strstr(error, "alias"));
	assert_int_equal(exec2(f, job_alias_remove, "info@example.org", "nobody@x.test", NULL),
	                 STORE_ERR_NOTFOUND);
	assert_int_equal(exec2(f, job_alias_remove, "INFO@example.org", "ext@FAR.away", NULL),
	                 STORE_OK);
	assert_int_equal(exec2(f, job_alias_remove, "info@example.org", NULL, NULL), STORE_OK);
	assert_int_equal(exec2(f, job_alias_remove, "@example.org", NULL, NULL), STORE_OK);
	assert_int_equal(exec2(f, job_domain_remove, "EXAMPLE.org", NULL, NULL), STORE_OK);
	assert_int_equal(exec2(f, job_domain_remove, "example.org", NULL, NULL),
	                 STORE_ERR_NOTFOUND);
	assert_int_equal(store_domain_exists(f->store, "example.org"), 0);
	/* Mailboxes of the removed account went with it. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM mailboxes", NULL), 6);
}

/* ---- Mailboxes and messages ------------------------------------------------------------- */

struct mbox_list {
	struct store_mailbox m[8];
	int n;
};

static int
collect_mailbox(const struct store_mailbox *m, void *ctx)
{
	struct mbox_list *l = ctx;

	if (l->n < 8)
		l->m[l->n++] = *m;
	return 0;
}

static void
test_default_mailboxes(void **state)
{
	static const char *const names[] = {"INBOX", "Drafts", "Sent", "Junk", "Trash", "Archive"};
	static const char *const uses[] = {"", "\\Drafts", "\\Sent", "\\Junk", "\\Trash",
	                                   "\\Archive"};
	struct fixture *f = *state;
	struct mbox_list l;
	struct store_mailbox m;
	int64_t id;
	int64_t now = (int64_t)time(NULL);

	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	id = add_account(f, "alice@example.org");
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_mailbox_list(f->store, id, collect_mailbox, &l), 0);
	assert_int_equal(l.n, 6);
	for (int i = 0; i < 6; i++) {
		assert_string_equal(l.m[i].name, names[i]);
		assert_string_equal(l.m[i].special_use, uses[i]);
		assert_int_equal(l.m[i].account_id, id);
		assert_int_equal(l.m[i].uidnext, 1);
		assert_int_equal(l.m[i].highestmodseq, 1);
		assert_int_equal(l.m[i].messages, 0);
		assert_true(l.m[i].uidvalidity != 0);
		assert_true((int64_t)l.m[i].uidvalidity >= (uint32_t)now - 5 &&
		            (int64_t)l.m[i].uidvalidity <= (uint32_t)now + 5);
	}
	/* INBOX is case-insensitive (RFC 3501 5.1), other names are not. */
	assert_int_equal(store_mailbox_get(f->store, id, "inbox", &m), 1);
	assert_string_equal(m.name, "INBOX");
	assert_int_equal(store_mailbox_get(f->store, id, "Sent", &m), 1);
	assert_string_equal(m.special_use, "\\Sent");
	assert_int_equal(store_mailbox_get(f->store, id, "sent", &m), 0);
	assert_int_equal(store_mailbox_get(f->store, id + 1000, "INBOX", &m), 0);
}

static void
read_file(const char *path, char *dst, size_t size)
{
	FILE *fp = fopen(path, "r");
	size_t n;

	assert_non_null(fp);
	n = fread(dst, 1, size - 1, fp);
	dst[n] = '\0';
	fclose(fp);
}

static void
run_deliveries(struct fixture *f)
{
	struct sync_job s;
	struct store_mailbox m;
	struct msg_list l;
	int64_t acc, inbox;
	char content[64], path_content[64];

	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	acc = add_account(f, "alice@example.org");
	inbox = inbox_of(f, acc);
	for (int i = 0; i < 5; i++) {
		fmt(content, sizeof(content), "Subject: %d\r\n\r\nbody %d\r\n", i, i);
		sync_deliver(f, &s, &inbox, content);
		assert_int_equal(s.result, STORE_OK);
		assert_string_equal(s.error, "");
		assert_int_equal(s.d.uids[0], (uint32_t)i + 1);
		assert_true(blob_file_exists(f, s.blob_id));
		assert_false(tmp_file_exists(f, s.blob_id));
		{
			char *path = store_blob_path(f->store, s.blob_id);

			read_file(path, path_content, sizeof(path_content));
			free(path);
			assert_string_equal(path_content, content);
		}
		sync_job_deinit(&s);
	}
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 6);
	assert_int_equal(m.highestmodseq, 6);
	assert_int_equal(m.messages, 5);
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_message_list(f->store, inbox, collect_message, &l), 0);
	assert_int_equal(l.n, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(l.m[i].uid, (uint32_t)i + 1);
		assert_int_equal(l.m[i].modseq, (uint64_t)i + 2);
		assert_int_equal(l.m[i].flags, STORE_FLAG_SEEN);
		assert_int_equal(l.m[i].mailbox_id, inbox);
		assert_true(l.m[i].size > 0);
		assert_int_equal(strlen(l.m[i].blob_id), 32);
	}
	{
		struct buf report;

		buf_init(&report, 1 << 20);
		assert_int_equal(store_check(f->store, &report), 0);
		buf_deinit(&report);
	}
}

static void
test_deliver_inline(void **state)
{
	struct fixture *f = *state;

	open_store(f);
	run_deliveries(f);
}

static void
test_deliver_background(void **state)
{
	struct fixture *f = *state;

	f->opts.background = true;
	f->opts.sync_threads = 2;
	open_store(f);
	run_deliveries(f);
}

struct expunge_ctx {
	int64_t mailbox;
	uint32_t uid;
};

static int
job_expunge(struct store_txn *txn, void *ctx)
{
	struct expunge_ctx *e = ctx;

	return store_txn_expunge(txn, e->mailbox, e->uid);
}

static int
job_queue_remove(struct store_txn *txn, void *ctx)
{
	return store_txn_queue_remove(txn, *(int64_t *)ctx);
}

/* Reads a committed blob back through store_blob_open, whatever holds it. */
static size_t
read_blob(struct fixture *f, const char *id, char *dst, size_t size)
{
	int fd = store_blob_open(f->store, id);
	size_t got = 0;
	ssize_t n;

	assert_true(fd >= 0);
	while (got < size && (n = read(fd, dst + got, size - got)) > 0)
		got += (size_t)n;
	close(fd);
	return got;
}

/* Small messages are kept in the database (storage.inline_max): no file, one row; a message
 * that outgrows the limit while it is written moves to a file; empty ones work too; both kinds
 * read back the same way, and gc and check know both. */
static void
test_small_blobs_in_database(void **state)
{
	struct fixture *f = *state;
	static char big[9000], back[9100];
	const char *contents[3];
	char ids[3][33];
	struct sync_job s;
	struct buf report;
	int64_t acc, inbox;

	memset(big, 'x', sizeof(big) - 1);
	contents[0] = "Subject: small\r\n\r\nhello\r\n";
	contents[1] = big; /* over inline_max: a file */
	contents[2] = "";
	f->opts.background = true;
	f->opts.inline_max = 4096;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	acc = add_account(f, "alice@example.org");
	inbox = inbox_of(f, acc);
	for (int i = 0; i < 3; i++) {
		sync_deliver(f, &s, &inbox, contents[i]);
		assert_int_equal(s.result, STORE_OK);
		fmt(ids[i], sizeof(ids[i]), "%s", s.blob_id);
		assert_false(tmp_file_exists(f, s.blob_id));
		sync_job_deinit(&s);
	}
	assert_false(blob_file_exists(f, ids[0]));
	assert_true(blob_file_exists(f, ids[1]));
	assert_false(blob_file_exists(f, ids[2]));
	for (int i = 0; i < 3; i++) {
		size_t n = read_blob(f, ids[i], back, sizeof(back));

		assert_int_equal(n, strlen(contents[i]));
		assert_memory_equal(back, contents[i], n);
	}
	for (int i = 0; i < 3; i++) {
		struct buf b;

		buf_init(&b, 1 << 20);
		assert_int_equal(store_blob_read(f->store, ids[i], &b), 1);
		assert_int_equal(b.len, strlen(contents[i]));
		assert_memory_equal(b.data, contents[i], b.len);
		buf_deinit(&b);
	}
	{
		struct buf b;

		/* Too small a buffer is an error, never a short read taken for the message. */
		buf_init(&b, 100);
		assert_int_equal(store_blob_read(f->store, ids[1], &b), STORE_ERR_IO);
		buf_deinit(&b);
		buf_init(&b, 100);
		assert_int_equal(store_blob_read(f->store, "0123456789abcdef0123456789abcdef", &b),
		                 0);
		buf_deinit(&b);
	}
	errno = 0;
	assert_int_equal(store_blob_open(f->store, "0123456789abcdef0123456789abcdef"), -1);
	assert_int_equal(errno, ENOENT);
	buf_init(&report, 1 << 20);
	assert_int_equal(store_check(f->store, &report), 0);

	/* A row whose bytes disagree with its size is reported. */
	db_exec(f, "UPDATE blob_data SET data = x'00' WHERE id = ?1", ids[0]);
	assert_int_equal(store_check(f->store, &report), 1);
	assert_non_null(strstr((const char *)report.data, "database holds 1 bytes"));
	buf_deinit(&report);

	/* Expunged and collected: the rows go, inline or not. */
	for (uint32_t uid = 1; uid <= 3; uid++) {
		struct expunge_ctx e = {inbox, uid};
		const char *error;

		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
	}
	assert_true(store_blob_gc(f->store) >= 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM blob_data", NULL), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM blobs", NULL), 0);
	assert_false(blob_file_exists(f, ids[1]));
}

struct ranges {
	uint32_t lo[16], hi[16];
	size_t n;
};

static int
collect_range(uint32_t lo, uint32_t hi, void *ctx)
{
	struct ranges *r = ctx;

	assert_true(r->n < 16);
	r->lo[r->n] = lo;
	r->hi[r->n++] = hi;
	return 0;
}

struct prune_ctx {
	int64_t before;
	uint32_t limit, rows;
};

static int
job_prune(struct store_txn *txn, void *ctx)
{
	struct prune_ctx *p = ctx;

	return store_txn_expunged_prune(txn, p->before, p->limit, &p->rows);
}

/* The expunge history is let go of after expunge_history: the mailbox's floor rises to the
 * last forgotten expunge, and a resynchronisation from before it gets every missing UID. */
static void
test_expunge_history_pruned(void **state)
{
	struct fixture *f = *state;
	struct store_mailbox mb;
	struct ranges r = {{0}, {0}, 0};
	struct sync_job s;
	struct prune_ctx p;
	const char *error;
	uint64_t start;
	int64_t acc, inbox;

	f->opts.background = true;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	acc = add_account(f, "alice@example.org");
	inbox = inbox_of(f, acc);
	for (int i = 0; i < 10; i++) {
		sync_deliver(f, &s, &inbox, "Subject: x\r\n\r\nx\r\n");
		assert_int_equal(s.result, STORE_OK);
		sync_job_deinit(&s);
	}
	assert_int_equal(store_mailbox_changes(f->store, inbox, 0, NULL, NULL, NULL, &mb), STORE_OK);
	start = mb.highestmodseq;
	assert_int_equal(mb.expunged_floor, 0);
	for (uint32_t uid = 2; uid <= 10; uid++) {
		struct expunge_ctx e = {inbox, uid};

		if (uid == 2 || uid == 3 || uid == 5 || uid == 10)
			assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
	}
	/* The whole history: each UID. */
	assert_int_equal(store_mailbox_changes(f->store, inbox, start, NULL, collect_range, &r, &mb),
	                 STORE_OK);
	assert_int_equal(r.n, 4);
	assert_int_equal(r.lo[0], 2);
	assert_int_equal(r.hi[0], 2);
	assert_int_equal(r.lo[3], 10);
	assert_int_equal(r.hi[3], 10);

	/* Nothing is old enough yet. */
	p = (struct prune_ctx){time(NULL) - 3600, 100, 0};
	assert_int_equal(store_exec(f->store, job_prune, &p, &error), STORE_OK);
	assert_int_equal(p.rows, 0);
	/* All of it is; with a limit of 1 the rows of that one second go together. */
	p = (struct prune_ctx){time(NULL) + 10, 1, 0};
	assert_int_equal(store_exec(f->store, job_prune, &p, &error), STORE_OK);
	assert_int_equal(p.rows, 4);
	assert_int_equal(db_int(f, "SELECT count(*) FROM expunged", NULL), 0);

	/* From before the floor: the gaps below UIDNEXT, a superset of what went. */
	r.n = 0;
	assert_int_equal(store_mailbox_changes(f->store, inbox, start, NULL, collect_range, &r, &mb),
	                 STORE_OK);
	assert_int_equal(mb.expunged_floor, mb.highestmodseq);
	assert_int_equal(r.n, 3);
	assert_int_equal(r.lo[0], 2);
	assert_int_equal(r.hi[0], 3);
	assert_int_equal(r.lo[1], 5);
	assert_int_equal(r.hi[1], 5);
	assert_int_equal(r.lo[2], 10);
	assert_int_equal(r.hi[2], 10);
	/* From the floor on, the (empty) history is complete again. */
	r.n = 0;
	assert_int_equal(store_mailbox_changes(f->store, inbox, mb.expunged_floor, NULL,
	                                       collect_range, &r, &mb),
	                 STORE_OK);
	assert_int_equal(r.n, 0);
	/* A later expunge is remembered one by one. */
	{
		struct expunge_ctx e = {inbox, 4};
		uint64_t floor = mb.expunged_floor;

		r.n = 0;
		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
		assert_int_equal(store_mailbox_changes(f->store, inbox, floor, NULL, collect_range, &r,
		                                       &mb),
		                 STORE_OK);
		assert_int_equal(r.n, 1);
		assert_int_equal(r.lo[0], 4);
		assert_int_equal(r.hi[0], 4);
	}
	/* store_expunged_prune follows expunge_history; 0 keeps everything. */
	assert_int_equal(store_expunged_prune(f->store), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM expunged", NULL), 1);
}

/* The end of a header section, for the nasty cases. */
static void
test_header_end(void **state)
{
	static const struct {
		const char *msg;
		size_t want;
	} v[] = {
		{"A: 1\r\n\r\nbody", 8},
		{"A: 1\n\nbody", 6},
		{"A: 1\r\nB: 2\r\n\r\n", 14},
		{"\r\nbody", 2},               /* no header at all */
		{"\nbody", 1},
		{"A: 1\r\n", 0},               /* no empty line yet */
		{"A: 1\r\n\r", 0},
		{"A: 1\r\r\nbody\r\n", 0},    /* a bare CR is not an empty line */
		{"A: 1\r\n \r\nB\r\n\r\nx", 14}, /* a blank continuation is not either */
		{"", 0},
	};
	(void)state;

	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		size_t got = store_header_end((const uint8_t *)v[i].msg, strlen(v[i].msg));

		if (got != v[i].want)
			fail_msg("case %zu: %zu, want %zu", i, got, v[i].want);
	}
}

/* store_blob_read_head reads at least the header section, from the database or a file, and
 * little more when the header is short; without an empty line, all of the message. */
static void
test_blob_read_head(void **state)
{
	struct fixture *f = *state;
	static char long_hdr[30000], big[100000], nohdr[5000];
	const char *contents[4];
	char ids[4][33];
	struct sync_job s;
	int64_t inbox;
	size_t hlen;

	/* a header of about 20 KB (spanning several reads), then a long body */
	for (size_t i = 0; i + 40 < 20000; i += 40)
		memcpy(long_hdr + i, "Received: from somewhere by elsewhere\r\n", 40);
	hlen = strlen(long_hdr);
	memcpy(long_hdr + hlen, "\r\n", 2);
	memset(long_hdr + hlen + 2, 'b', sizeof(long_hdr) - hlen - 3);
	memcpy(big, long_hdr, sizeof(long_hdr) - 1);
	memset(big + sizeof(long_hdr) - 1, 'c', sizeof(big) - sizeof(long_hdr));
	memset(nohdr, 'h', sizeof(nohdr) - 1);
	contents[0] = "Subject: short\r\n\r\nbody\r\n";
	contents[1] = long_hdr; /* in the database */
	contents[2] = big;      /* a file */
	contents[3] = nohdr;    /* no empty line: read whole */
	f->opts.inline_max = 64 * 1024;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "alice@example.org"));
	for (int i = 0; i < 4; i++) {
		sync_deliver(f, &s, &inbox, contents[i]);
		assert_int_equal(s.result, STORE_OK);
		fmt(ids[i], sizeof(ids[i]), "%s", s.blob_id);
		sync_job_deinit(&s);
	}
	assert_false(blob_file_exists(f, ids[1]));
	assert_true(blob_file_exists(f, ids[2]));
	for (int i = 0; i < 4; i++) {
		size_t len = strlen(contents[i]);
		size_t end = store_header_end((const uint8_t *)contents[i], len);
		struct buf b;

		buf_init(&b, 1 << 20);
		(void)buf_append_str(&b, "kept"); /* appended to, like store_blob_read */
		assert_int_equal(store_blob_read_head(f->store, ids[i], &b), 1);
		assert_memory_equal(b.data, "kept", 4);
		assert_true(b.len - 4 <= len);
		assert_memory_equal(b.data + 4, contents[i], b.len - 4);
		if (end == 0) {
			assert_int_equal(b.len - 4, len);
		} else {
			assert_true(b.len - 4 >= end);
			/* no more than one read beyond the header */
			assert_true(b.len - 4 <= end + 65536);
			if (i == 2)
				assert_true(b.len - 4 < len);
		}
		buf_deinit(&b);
	}
	{
		struct buf b;

		buf_init(&b, 100);
		assert_int_equal(store_blob_read_head(f->store, "0123456789abcdef0123456789abcdef",
		                                      &b), 0);
		buf_deinit(&b);
	}
}

/* A pinned thread reads one snapshot until it submits a job or refreshes; unpinned reads see
 * every commit at once. */
static void
test_read_pin(void **state)
{
	struct fixture *f = *state;
	struct store_mailbox m;
	int64_t acc;
	char id[32];

	f->opts.background = true;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	acc = add_account(f, "alice@example.org");
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	fmt(id, sizeof(id), "%lld", (long long)m.id);

	store_read_pin(f->store);
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 1);
	/* Another connection commits: the pinned snapshot does not see it... */
	db_exec(f, "UPDATE mailboxes SET uidnext = 50 WHERE id = ?1", id);
	assert_int_equal(store_mailbox_get(f->store, acc, "Sent", &m), 1);
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 1);
	/* ... until it is refreshed. */
	store_read_refresh(f->store);
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 50);
	/* A job this thread waits for ends the snapshot too: its write is seen. */
	db_exec(f, "UPDATE mailboxes SET uidnext = 60 WHERE id = ?1", id);
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 50);
	assert_int_equal(exec2(f, job_domain_add, "example.net", NULL, NULL), STORE_OK);
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 60);
	store_read_unpin(f->store);

	db_exec(f, "UPDATE mailboxes SET uidnext = 70 WHERE id = ?1", id);
	assert_int_equal(store_mailbox_get(f->store, acc, "INBOX", &m), 1);
	assert_int_equal(m.uidnext, 70);
}

static int
count_files(const char *dir)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	int n = -1;

	fmt(cmd, sizeof(cmd), "find '%s' -type f | wc -l", dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static void
test_shared_blob_refs_and_gc(void **state)
{
	struct fixture *f = *state;
	int64_t mailboxes[50];
	struct sync_job s;
	struct store_mailbox m;
	struct buf report;
	int64_t first_account = 0;
	char name[64];
	size_t n = 0;

	f->opts.background = true;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	for (int a = 0; n < 50; a++) {
		struct mbox_list l;
		int64_t acc;

		fmt(name, sizeof(name), "user%d@example.org", a);
		acc = add_account(f, name);
		if (a == 0)
			first_account = acc;
		memset(&l, 0, sizeof(l));
		assert_int_equal(store_mailbox_list(f->store, acc, collect_mailbox, &l), 0);
		for (int i = 0; i < l.n && n < 50; i++)
			mailboxes[n++] = l.m[i].id;
	}
	sync_job_init(&s);
	s.d.mailboxes = mailboxes;
	s.d.nmailboxes = 50;
	s.d.queue = true;
	sync_job_submit(f, &s, "one message for fifty mailboxes and the queue\r\n");
	sync_job_wait(&s);
	assert_int_equal(s.result, STORE_OK);
	assert_true(s.d.queue_id > 0);
	for (int i = 0; i < 50; i++)
		assert_int_equal(s.d.uids[i], 1);

	/* One file, 51 references. */
	assert_int_equal(count_files(f->blobs), 1);
	assert_int_equal(db_int(f, "SELECT refs FROM blobs WHERE id = ?1", s.blob_id), 51);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue_rcpts WHERE domain = "
	                        "'remote.example'", NULL), 2);
	{
		uint64_t q = 0;

		assert_int_equal(store_queue_count(f->store, &q), STORE_OK);
		assert_int_equal(q, 1);
	}
	buf_init(&report, 1 << 20);
	assert_int_equal(store_check(f->store, &report), 0);

	/* Nothing to collect while referenced. */
	assert_int_equal(store_blob_gc(f->store), 0);
	assert_true(blob_file_exists(f, s.blob_id));

	for (size_t i = 0; i < 50; i++) {
		struct expunge_ctx e = {mailboxes[i], 1};
		const char *error;

		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_ERR_NOTFOUND);
	}
	assert_int_equal(store_mailbox_get(f->store, first_account, "INBOX", &m), 1);
	assert_int_equal(m.id, mailboxes[0]);
	assert_int_equal(m.highestmodseq, 3); /* deliver + expunge */
	assert_int_equal(m.uidnext, 2);
	assert_int_equal(db_int(f, "SELECT refs FROM blobs WHERE id = ?1", s.blob_id), 1);
	assert_int_equal(store_blob_gc(f->store), 0);
	assert_true(blob_file_exists(f, s.blob_id));
	{
		const char *error;

		assert_int_equal(store_exec(f->store, job_queue_remove, &s.d.queue_id, &error),
		                 STORE_OK);
		assert_int_equal(store_exec(f->store, job_queue_remove, &s.d.queue_id, &error),
		                 STORE_ERR_NOTFOUND);
	}
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue_rcpts", NULL), 0);

	/* Now unreferenced: one gc pass removes the file and the row (unless the writer's own
	 * background pass after the commit got there first). */
	{
		int removed = store_blob_gc(f->store);
		struct store__stats st;

		assert_true(removed == 0 || removed == 1);
		store__stats(f->store, &st);
		assert_int_equal(st.gc_removed, 1);
	}
	assert_false(blob_file_exists(f, s.blob_id));
	assert_int_equal(db_int(f, "SELECT count(*) FROM blobs", NULL), 0);
	assert_int_equal(count_files(f->blobs), 0);
	buf_reset(&report);
	assert_int_equal(store_check(f->store, &report), 0);
	buf_deinit(&report);
	sync_job_deinit(&s);
}

/* Referencing a blob that does not exist, or one at refs = 0, fails. */
static void
test_deliver_unknown_blob(void **state)
{
	struct fixture *f = *state;
	struct deliver_ctx d;
	const char *error;
	int64_t inbox;

	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "a@example.org"));
	memset(&d, 0, sizeof(d));
	d.mailboxes = &inbox;
	d.nmailboxes = 1;
	d.blob_id = "0123456789abcdef0123456789abcdef";
	assert_int_equal(store_exec(f->store, job_deliver, &d, &error), STORE_ERR_NOTFOUND);
	assert_non_null(strstr(error, "0123456789abcdef0123456789abcdef"));
	d.blob_id = "not-a-blob";
	assert_int_equal(store_exec(f->store, job_deliver, &d, &error), STORE_ERR_INVALID);
	/* A mailbox that does not exist. */
	{
		struct sync_job s;
		int64_t nobox = inbox + 1000;

		sync_deliver(f, &s, &nobox, "x");
		assert_int_equal(s.result, STORE_ERR_NOTFOUND);
		assert_false(blob_file_exists(f, s.blob_id));
		assert_false(tmp_file_exists(f, s.blob_id));
		sync_job_deinit(&s);
	}
	/* An unreferenced committed blob is not usable by another job. */
	db_exec(f, "INSERT INTO blobs (id, size, refs, created) VALUES (?1, 1, 0, 0)",
	        "fedcba9876543210fedcba9876543210");
	d.blob_id = "fedcba9876543210fedcba9876543210";
	assert_int_equal(store_exec(f->store, job_deliver, &d, &error), STORE_ERR_NOTFOUND);
}

/* ---- Orphans ---------------------------------------------------------------------------- */

static void
make_file(const char *path, int64_t age_s)
{
	struct timespec ts[2];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "orphan", 6), 6);
	close(fd);
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= age_s;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void
test_orphans(void **state)
{
	struct fixture *f = *state;
	char bucket[16], path[PATH_MAX], old_id[40], young_id[40], old_tmp[40], young_tmp[40];
	char empty_bucket[PATH_MAX], other[PATH_MAX];
	struct store_blob *live;
	struct sync_job s;
	int64_t inbox;

	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "a@example.org"));
	/* A committed, referenced blob whose file is old: never touched. */
	sync_deliver(f, &s, &inbox, "kept");
	assert_int_equal(s.result, STORE_OK);
	{
		char *p = store_blob_path(f->store, s.blob_id);

		make_file(p, 3 * 3600);
		free(p);
	}
	/* make_file rewrote it: fix the size the check expects. */
	db_exec(f, "UPDATE blobs SET size = 6 WHERE id = ?1", s.blob_id);
	db_exec(f, "UPDATE messages SET size = 6 WHERE blob_id = ?1", s.blob_id);

	fmt(bucket, sizeof(bucket), "%.8s", s.blob_id);
	fmt(old_id, sizeof(old_id), "%s%s", bucket, "000000000000000000000001");
	fmt(young_id, sizeof(young_id), "%s%s", bucket, "000000000000000000000002");
	fmt(old_tmp, sizeof(old_tmp), "%s%s", bucket, "000000000000000000000003");
	fmt(young_tmp, sizeof(young_tmp), "%s%s", bucket, "000000000000000000000004");
	fmt(path, sizeof(path), "%s/%s/%s", f->blobs, bucket, old_id);
	make_file(path, 2 * 3600);
	fmt(path, sizeof(path), "%s/%s/%s", f->blobs, bucket, young_id);
	make_file(path, 60);
	fmt(path, sizeof(path), "%s/tmp/%s", f->blobs, old_tmp);
	make_file(path, 2 * 3600);
	fmt(path, sizeof(path), "%s/tmp/%s", f->blobs, young_tmp);
	make_file(path, 60);
	/* A file that is not a blob name is not ours: left alone. */
	fmt(other, sizeof(other), "%s/tmp/README", f->blobs);
	make_file(other, 5 * 3600);
	/* An empty bucket of an hour long past goes; the current one stays. */
	fmt(empty_bucket, sizeof(empty_bucket), "%s/00000001", f->blobs);
	assert_int_equal(mkdir(empty_bucket, 0750), 0);
	/* A live blob (being written) is never removed, however old its file looks. */
	live = new_blob(f, "in flight");
	fmt(path, sizeof(path), "%s/tmp/%s", f->blobs, store_blob_id(live));
	{
		struct timespec ts[2];

		clock_gettime(CLOCK_REALTIME, &ts[0]);
		ts[0].tv_sec -= 5 * 3600;
		ts[1] = ts[0];
		assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
	}

	assert_int_equal(store_blob_gc(f->store), 2);
	fmt(path, sizeof(path), "%s/%s/%s", f->blobs, bucket, old_id);
	assert_false(file_exists(path));
	fmt(path, sizeof(path), "%s/%s/%s", f->blobs, bucket, young_id);
	assert_true(file_exists(path));
	assert_false(tmp_file_exists(f, old_tmp));
	assert_true(tmp_file_exists(f, young_tmp));
	assert_true(tmp_file_exists(f, store_blob_id(live)));
	assert_true(file_exists(other));
	assert_true(blob_file_exists(f, s.blob_id));
	assert_false(file_exists(empty_bucket));
	fmt(path, sizeof(path), "%s/%s", f->blobs, bucket);
	assert_true(file_exists(path));
	{
		struct buf report;

		buf_init(&report, 1 << 20);
		assert_int_equal(store_check(f->store, &report), 0);
		buf_deinit(&report);
	}
	/* Freed without a job: its file goes at once. */
	{
		char id[40];

		fmt(id, sizeof(id), "%s", store_blob_id(live));
		store_blob_free(&live);
		assert_null(live);
		assert_false(tmp_file_exists(f, id));
	}
	/* A bucket of an hour long past, once swept clean, is never listed again: a bucket only
	 * receives blobs created in its hour. (A file appearing there anyway proves the skip.) */
	{
		char old_bucket[PATH_MAX], foreign[PATH_MAX], orphan[PATH_MAX];

		fmt(old_bucket, sizeof(old_bucket), "%s/00000002", f->blobs);
		assert_int_equal(mkdir(old_bucket, 0750), 0);
		fmt(foreign, sizeof(foreign), "%s/notes.txt", old_bucket);
		make_file(foreign, 10);
		fmt(orphan, sizeof(orphan), "%s/00000002aaaaaaaaaaaaaaaaaaaaaaaa", old_bucket);
		make_file(orphan, 3 * 3600);
		assert_int_equal(store_blob_gc(f->store), 1);
		assert_false(file_exists(orphan));
		assert_true(file_exists(foreign)); /* not ours: kept, and so is the bucket */
		make_file(orphan, 3 * 3600);
		assert_int_equal(store_blob_gc(f->store), 0);
		assert_true(file_exists(orphan));
		/* A fresh process sweeps everything once. */
		store_close(&f->store);
		open_store(f);
		assert_int_equal(store_blob_gc(f->store), 1);
		assert_false(file_exists(orphan));
	}
	sync_job_deinit(&s);
}

static bool
wait_gone(const char *path, int seconds)
{
	for (int i = 0; i < seconds * 50; i++) {
		if (!file_exists(path))
			return true;
		usleep(20000);
	}
	return false;
}

/* In serve mode nothing is swept at open; the sweeper finds orphans one interval later, and the
 * writer removes unreferenced files by itself after the commit that dropped the reference. */
static void
test_background_sweeps(void **state)
{
	struct fixture *f = *state;
	char orphan[PATH_MAX], bucket[PATH_MAX];
	struct expunge_ctx e;
	struct sync_job s;
	const char *error;
	char *path;

	fmt(bucket, sizeof(bucket), "%s/%08x", f->blobs, (unsigned int)(time(NULL) / 3600));
	fmt(orphan, sizeof(orphan), "%s/%08xaaaaaaaaaaaaaaaaaaaaaaaa", bucket,
	    (unsigned int)(time(NULL) / 3600));
	assert_int_equal(mkdir(f->blobs, 0750), 0);
	assert_int_equal(mkdir(bucket, 0750), 0);
	make_file(orphan, 2 * 3600);
	f->opts.background = true;
	f->opts.blob_sweep_interval = 1000;
	open_store(f);
	assert_true(file_exists(orphan)); /* start-up does not sweep */
	assert_true(wait_gone(orphan, 20));

	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	e.mailbox = inbox_of(f, add_account(f, "a@example.org"));
	sync_job_init(&s);
	s.d.mailboxes = &e.mailbox;
	s.d.nmailboxes = 1;
	sync_job_submit(f, &s, "short-lived");
	sync_job_wait(&s);
	assert_int_equal(s.result, STORE_OK);
	e.uid = s.d.uids[0];
	path = store_blob_path(f->store, s.blob_id);
	assert_true(file_exists(path));
	assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
	assert_true(wait_gone(path, 20));
	free(path);
	/* The row goes right after the file (unlink first, then the row): wait for it too. */
	for (int i = 0; i < 1000 && db_int(f, "SELECT count(*) FROM blobs", NULL) != 0; i++)
		usleep(20000);
	assert_int_equal(db_int(f, "SELECT count(*) FROM blobs", NULL), 0);
	sync_job_deinit(&s);
}

/* ---- Check ------------------------------------------------------------------------------ */

static void
test_check_finds_problems(void **state)
{
	struct fixture *f = *state;
	struct sync_job s;
	struct buf report;
	int64_t inbox;
	char *path;

	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "a@example.org"));
	sync_job_init(&s);
	s.d.mailboxes = &inbox;
	s.d.nmailboxes = 1;
	sync_job_submit(f, &s, "checked");
	sync_job_wait(&s);
	assert_int_equal(s.result, STORE_OK);
	buf_init(&report, 1 << 20);
	assert_int_equal(store_check(f->store, &report), 0);
	assert_int_equal(report.len, 0);

	/* A missing file, a wrong reference count, and a UID at UIDNEXT. */
	path = store_blob_path(f->store, s.blob_id);
	assert_int_equal(unlink(path), 0);
	free(path);
	db_exec(f, "UPDATE blobs SET refs = 7 WHERE id = ?1", s.blob_id);
	db_exec(f, "UPDATE mailboxes SET uidnext = 1 WHERE id = (SELECT mailbox_id FROM messages "
	        "WHERE blob_id = ?1)", s.blob_id);
	assert_int_equal(store_check(f->store, &report), 3);
	assert_non_null(strstr(buf_cstr(&report), "real count 1"));
	assert_non_null(strstr(buf_cstr(&report), "uidnext"));
	assert_non_null(strstr(buf_cstr(&report), s.blob_id));
	buf_deinit(&report);
	sync_job_deinit(&s);
}

/* ---- Full-text index ------------------------------------------------------------------- */

struct fts_doc {
	int64_t account;
	const char *blob_id;
	const char *header, *body;
	size_t header_len, body_len;
};

static int
job_fts_add(struct store_txn *txn, void *ctx)
{
	const struct fts_doc *d = ctx;

	return store_txn_fts_add(txn, d->account, d->blob_id, d->header, d->header_len, d->body,
	                         d->body_len);
}

struct fts_seen {
	char ids[8][33];
	int n;
	int states[8]; /* by uid - 1 */
	uint32_t uids[8];
	int nuids;
};

/* Records the states by uid, and the files of the pending messages in uid order. */
static int
fts_match_cb(const struct store_fts_row *row, void *ctx)
{
	struct fts_seen *s = ctx;

	assert_true(row->uid >= 1 && row->uid <= 8);
	if (s->nuids > 0)
		assert_true(row->uid > s->uids[s->nuids - 1]); /* by uid */
	assert_int_equal(strlen(row->blob_id), 32);
	assert_true(row->size > 0);
	s->uids[s->nuids++] = row->uid;
	s->states[row->uid - 1] = (int)row->state;
	if (row->state == STORE_FTS_PENDING && s->n < 8)
		fmt(s->ids[s->n++], sizeof(s->ids[0]), "%s", row->blob_id);
	return 0;
}

/* The states of the mailbox's messages (uids 1..count) for terms in the account's index, as
 * a string of P(ending), M(atch), N(o match). */
static const char *
fts_states_of(struct fixture *f, int64_t account, int64_t mailbox, int count,
              const struct store_fts_term *t, size_t n, struct fts_seen *s)
{
	static char out[9];

	memset(s, 0, sizeof(*s));
	assert_int_equal(store_fts_match(f->store, account, mailbox, t, n, fts_match_cb, s), 0);
	assert_int_equal(s->nuids, count);
	for (int i = 0; i < count; i++)
		out[i] = "PMN"[s->states[i]];
	out[count] = '\0';
	return out;
}

/* The same for uids 1..3 of the first account's mailbox. */
static int64_t fts_account;

static const char *
fts_states(struct fixture *f, int64_t mailbox, const struct store_fts_term *t, size_t n)
{
	struct fts_seen s;

	return fts_states_of(f, fts_account, mailbox, 3, t, n, &s);
}

static void
test_fts_index(void **state)
{
	struct fixture *f = *state;
	struct sync_job jobs[3];
	int64_t mailboxes[3], acc2;
	struct mbox_list l;
	struct fts_seen seen;
	struct buf report;
	const char *error;
	static const char body2[] = "ab\0cdef \xff\xfe tail";
	int64_t acc;

	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	acc = add_account(f, "a@example.org");
	acc2 = add_account(f, "b@example.org");
	fts_account = acc;
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_mailbox_list(f->store, acc, collect_mailbox, &l), 0);
	mailboxes[0] = inbox_of(f, acc);
	mailboxes[1] = l.m[0].id != mailboxes[0] ? l.m[0].id : l.m[1].id;
	mailboxes[2] = inbox_of(f, acc2);
	for (int i = 0; i < 3; i++) {
		sync_job_init(&jobs[i]);
		jobs[i].d.mailboxes = mailboxes;
		/* the first one has a copy in another mailbox and one in another account */
		jobs[i].d.nmailboxes = i == 0 ? 3 : 1;
		sync_job_submit(f, &jobs[i], i == 0 ? "one" : i == 1 ? "two" : "three");
		sync_job_wait(&jobs[i]);
		assert_int_equal(jobs[i].result, STORE_OK);
	}

	/* Nothing indexed: every message is pending, with its file. */
	{
		struct store_fts_term t = {0, STORE_FTS_BODY, "text", 4};

		assert_string_equal(fts_states_of(f, acc, mailboxes[0], 3, &t, 1, &seen), "PPP");
		assert_int_equal(seen.n, 3);
		assert_string_equal(seen.ids[0], jobs[0].blob_id);
		assert_string_equal(seen.ids[2], jobs[2].blob_id);
	}

	/* Index two files; the second has NUL and octets that are not UTF-8. */
	{
		struct fts_doc d1 = {acc, jobs[0].blob_id, "subject: hello world\n",
		                     "body text caf\xc3\xa9 one\n", 21, 21};
		struct fts_doc d2 = {acc, jobs[1].blob_id, "subject: other\n", body2, 15,
		                     sizeof(body2) - 1};

		assert_int_equal(store_exec(f->store, job_fts_add, &d1, &error), STORE_OK);
		assert_int_equal(store_exec(f->store, job_fts_add, &d2, &error), STORE_OK);
		/* again: nothing happens */
		assert_int_equal(store_exec(f->store, job_fts_add, &d1, &error), STORE_OK);
	}
	assert_int_equal(db_int(f, "SELECT count(*) FROM fts_docs", NULL), 2);
	assert_int_equal(db_int(f, "SELECT count(*) FROM fts_text", NULL), 2);
	{
		struct store_fts_term t = {0, STORE_FTS_BODY, "text", 4};

		assert_string_equal(fts_states_of(f, acc, mailboxes[0], 3, &t, 1, &seen), "MNP");
		assert_int_equal(seen.n, 1);
		assert_string_equal(seen.ids[0], jobs[2].blob_id);
		/* The other account's index does not have the shared file: its own lookup reads
		 * only its own documents. */
		assert_string_equal(fts_states_of(f, acc2, mailboxes[2], 1, &t, 1, &seen), "P");
		assert_string_equal(seen.ids[0], jobs[0].blob_id);
	}
	{
		struct store_fts_term body_text = {0, STORE_FTS_BODY, "text", 4};
		struct store_fts_term hdr_text = {0, STORE_FTS_HEADER, "text", 4};
		struct store_fts_term both[] = {{0, STORE_FTS_HEADER, "hello", 5},
		                                {1, STORE_FTS_BODY, "caf\xc3\xa9", 5}};
		struct store_fts_term both_miss[] = {{0, STORE_FTS_HEADER, "hello", 5},
		                                     {1, STORE_FTS_BODY, "other", 5}};
		struct store_fts_term either[] = {{0, STORE_FTS_HEADER | STORE_FTS_BODY, "other", 5}};
		struct store_fts_term alts[] = {{0, STORE_FTS_HEADER, "zzz", 3},
		                                {0, STORE_FTS_BODY, "cdef", 4}};
		struct store_fts_term tail[] = {{0, STORE_FTS_BODY, "\xef\xbf\xbd tail", 8}};
		struct store_fts_term quote[] = {{0, STORE_FTS_BODY, "\"x\" OR y", 8}};
		struct store_fts_term upper[] = {{0, STORE_FTS_BODY, "TEXT", 4}};

		assert_string_equal(fts_states(f, mailboxes[0], &body_text, 1), "MNP");
		assert_string_equal(fts_states(f, mailboxes[0], &hdr_text, 1), "NNP");
		assert_string_equal(fts_states(f, mailboxes[0], both, 2), "MNP");
		assert_string_equal(fts_states(f, mailboxes[0], both_miss, 2), "NNP");
		assert_string_equal(fts_states(f, mailboxes[0], either, 1), "NMP");
		/* after the NUL, and after octets that are not UTF-8 */
		assert_string_equal(fts_states(f, mailboxes[0], alts, 2), "NMP");
		assert_string_equal(fts_states(f, mailboxes[0], tail, 1), "NMP");
		/* quotes and operators are text */
		assert_string_equal(fts_states(f, mailboxes[0], quote, 1), "NNP");
		/* no folding of its own: the caller folds */
		assert_string_equal(fts_states(f, mailboxes[0], upper, 1), "NNP");
	}
	/* Terms the index cannot look up. */
	{
		struct store_fts_term shrt = {0, STORE_FTS_BODY, "ab", 2};
		struct store_fts_term shrt2 = {0, STORE_FTS_BODY, "\xc3\xa9\xc3\xa9", 4};
		struct store_fts_term bad = {0, STORE_FTS_BODY, "ab\xff", 3};
		struct store_fts_term nul = {0, STORE_FTS_BODY, "a\0bc", 4};
		struct store_fts_term nowhere = {0, 0, "abc", 3};
		struct store_fts_term order[] = {{1, STORE_FTS_BODY, "abc", 3},
		                                 {0, STORE_FTS_BODY, "abc", 3}};
		struct fts_seen s;

		memset(&s, 0, sizeof(s));
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], &shrt, 1, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], &shrt2, 1, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], &bad, 1, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], &nul, 1, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], &nowhere, 1, fts_match_cb,
		                                 &s), STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], order, 2, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, acc, mailboxes[0], order, 0, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(store_fts_match(f->store, 0, mailboxes[0], &shrt, 1, fts_match_cb, &s),
		                 STORE_ERR_INVALID);
		assert_int_equal(s.nuids, 0);
	}
	/* The second account indexes the shared file for itself: a document of its own, in its
	 * own stretch of rowids. */
	{
		struct fts_doc d = {acc2, jobs[0].blob_id, "subject: hello world\n", "text", 21, 4};
		struct store_fts_term t = {0, STORE_FTS_BODY, "text", 4};

		assert_int_equal(store_exec(f->store, job_fts_add, &d, &error), STORE_OK);
		assert_string_equal(fts_states_of(f, acc2, mailboxes[2], 1, &t, 1, &seen), "M");
		assert_int_equal(db_int(f, "SELECT count(*) FROM fts_docs WHERE blob_id = ?1",
		                        jobs[0].blob_id), 2);
		assert_int_equal(db_int(f, "SELECT count(*) FROM fts_docs WHERE id >> 32 = account_id",
		                        NULL), 3);
	}
	buf_init(&report, 1 << 20);
	assert_int_equal(store_check(f->store, &report), 0);

	/* The first file is shared: its entries stay while a copy is there, in either account,
	 * and go with the file. */
	{
		struct expunge_ctx e = {mailboxes[0], 1};

		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
		e.mailbox = mailboxes[1];
		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
		assert_int_equal(store_blob_gc(f->store), 0);
		assert_int_equal(db_int(f, "SELECT count(*) FROM fts_docs", NULL), 3);
		e.mailbox = mailboxes[2];
		assert_int_equal(store_exec(f->store, job_expunge, &e, &error), STORE_OK);
		assert_int_equal(store_blob_gc(f->store), 1);
	}
	assert_int_equal(db_int(f, "SELECT count(*) FROM fts_docs WHERE blob_id = ?1",
	                        jobs[0].blob_id), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM fts_text", NULL), 1);
	assert_int_equal(store_check(f->store, &report), 0);
	/* A file that lost its references is not indexed. */
	{
		struct fts_doc d1 = {acc, jobs[0].blob_id, "x", "y", 1, 1};

		assert_int_equal(store_exec(f->store, job_fts_add, &d1, &error), STORE_OK);
		assert_int_equal(db_int(f, "SELECT count(*) FROM fts_docs", NULL), 1);
	}
	/* The check sees text without its file entry. */
	db_exec(f, "DELETE FROM fts_docs", NULL);
	assert_int_equal(store_check(f->store, &report), 1);
	assert_non_null(strstr(buf_cstr(&report), "full-text row"));
	buf_deinit(&report);
	for (int i = 0; i < 3; i++)
		sync_job_deinit(&jobs[i]);
}

/* ---- Faults ---------------------------------------------------------------------------- */

static int fault_point = -1; /* enum store__fault_point, or -1 */
static int fault_errno;

static int
fault_hook(enum store__fault_point point)
{
	return (int)point == fault_point ? fault_errno : 0;
}

/* Each durability step failing: the job fails with the right code and leaves no file, except
 * after a failed COMMIT, whose files stay for the sweep (the outcome on disk is unknown). The
 * store stays consistent and usable. */
static void
test_faults(void **state)
{
	static const struct {
		enum store__fault_point point;
		int err;
		int want;
		bool file_stays;
	} cases[] = {
		{STORE__FAULT_WRITE, ENOSPC, STORE_ERR_FULL, false},
		{STORE__FAULT_WRITE, EIO, STORE_ERR_IO, false},
		{STORE__FAULT_SYNC, EIO, STORE_ERR_IO, false},
		{STORE__FAULT_SYNC, EDQUOT, STORE_ERR_FULL, false},
		{STORE__FAULT_RENAME, EIO, STORE_ERR_IO, false},
		{STORE__FAULT_DIRSYNC, EIO, STORE_ERR_IO, false},
		{STORE__FAULT_COMMIT, EIO, STORE_ERR_IO, true},
	};
	struct fixture *f = *state;
	struct buf report;
	int64_t inbox;

	f->opts.blob_orphan_age = 0; /* inline, one thread: any file without a row is garbage */
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "a@example.org"));
	buf_init(&report, 1 << 20);
	store__fault = fault_hook;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct sync_job s;
		struct store_blob *blob;
		struct store_job *job;
		const char *error;
		char *path;

		sync_job_init(&s);
		s.d.mailboxes = &inbox;
		s.d.nmailboxes = 1;
		fault_point = (int)cases[i].point;
		fault_errno = cases[i].err;
		assert_int_equal(store_blob_new(f->store, &blob, &error), STORE_OK);
		if (cases[i].point == STORE__FAULT_WRITE) {
			assert_int_equal(store_blob_write(blob, "abc", 3), cases[i].want);
			fault_point = -1;
			/* Sticky: later writes fail the same way without writing. */
			assert_int_equal(store_blob_write(blob, "abc", 3), cases[i].want);
		} else {
			assert_int_equal(store_blob_write(blob, "abc", 3), STORE_OK);
		}
		fmt(s.blob_id, sizeof(s.blob_id), "%s", store_blob_id(blob));
		s.d.blob_id = s.blob_id;
		job = store_job_new(job_deliver, sync_job_done, &s);
		store_job_add_blob(job, &blob);
		store_submit(f->store, job);
		sync_job_wait(&s);
		fault_point = -1;
		if (s.result != cases[i].want)
			fail_msg("case %zu: result %d, want %d (%s)", i, s.result, cases[i].want,
			         s.error);
		assert_false(tmp_file_exists(f, s.blob_id));
		assert_int_equal(blob_file_exists(f, s.blob_id), cases[i].file_stays);
		assert_int_equal(db_int(f, "SELECT count(*) FROM blobs WHERE id = ?1", s.blob_id),
		                 0);
		buf_reset(&report);
		if (store_check(f->store, &report) != 0)
			fail_msg("case %zu: %s", i, buf_cstr(&report));
		/* The sweep compares file times with the coarse clock; a kernel that stamps files
		 * with a finer one can make a file a few ms "younger" than now: let a tick pass. */
		usleep(25 * 1000);
		assert_int_equal(store_blob_gc(f->store), cases[i].file_stays ? 1 : 0);
		path = store_blob_path(f->store, s.blob_id);
		assert_false(file_exists(path));
		free(path);
		sync_job_deinit(&s);

		/* And the next delivery works. */
		sync_job_init(&s);
		s.d.mailboxes = &inbox;
		s.d.nmailboxes = 1;
		sync_job_submit(f, &s, "after the fault");
		sync_job_wait(&s);
		assert_int_equal(s.result, STORE_OK);
		sync_job_deinit(&s);
	}
	store__fault = NULL;
	assert_int_equal(db_int(f, "SELECT count(*) FROM messages", NULL), N_ELEMENTS(cases));
	buf_deinit(&report);
}

/* ---- Batches ---------------------------------------------------------------------------- */

struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool entered, open;
};

static int
job_gate(struct store_txn *txn, void *ctx)
{
	struct gate *g = ctx;

	(void)txn;
	pthread_mutex_lock(&g->lock);
	g->entered = true;
	pthread_cond_broadcast(&g->cond);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	return STORE_OK;
}

static void
gate_done(struct store_job *job, void *ctx)
{
	(void)ctx;
	assert_int_equal(store_job_result(job, NULL), STORE_OK);
	store_job_free(&job);
}

/* Jobs submitted while the writer is busy form one batch; one of them fails and only it is
 * rolled back, and its file is gone. */
static void
test_failing_job_in_batch(void **state)
{
	struct fixture *f = *state;
	struct gate g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};
	struct store__stats before, after;
	struct sync_job s[5];
	struct msg_list l;
	int64_t inbox;
	char content[32];

	f->opts.background = true;
	f->opts.sync_threads = 2;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "a@example.org"));

	/* Hold the writer inside a job so the next ones queue up. */
	store_submit(f->store, store_job_new(job_gate, gate_done, &g));
	pthread_mutex_lock(&g.lock);
	while (!g.entered)
		pthread_cond_wait(&g.cond, &g.lock);
	pthread_mutex_unlock(&g.lock);
	store__stats(f->store, &before);
	for (int i = 0; i < 5; i++) {
		sync_job_init(&s[i]);
		s[i].d.mailboxes = &inbox;
		s[i].d.nmailboxes = 1;
		if (i == 2)
			s[i].d.fail_with = STORE_ERR_INVALID;
		fmt(content, sizeof(content), "message %d", i);
		sync_job_submit(f, &s[i], content);
	}
	pthread_mutex_lock(&g.lock);
	g.open = true;
	pthread_cond_broadcast(&g.cond);
	pthread_mutex_unlock(&g.lock);
	for (int i = 0; i < 5; i++)
		sync_job_wait(&s[i]);
	store__stats(f->store, &after);
	/* The gate's batch and exactly one more. */
	assert_int_equal(after.commits - before.commits, 2);
	assert_int_equal(after.jobs - before.jobs, 6);
	assert_int_equal(after.jobs_failed - before.jobs_failed, 1);

	for (int i = 0; i < 5; i++) {
		if (i == 2) {
			assert_int_equal(s[i].result, STORE_ERR_INVALID);
			assert_string_equal(s[i].error, "failing on purpose");
			assert_false(blob_file_exists(f, s[i].blob_id));
			assert_false(tmp_file_exists(f, s[i].blob_id));
		} else {
			assert_int_equal(s[i].result, STORE_OK);
			assert_true(blob_file_exists(f, s[i].blob_id));
		}
	}
	memset(&l, 0, sizeof(l));
	assert_int_equal(store_message_list(f->store, inbox, collect_message, &l), 0);
	assert_int_equal(l.n, 4);
	for (int i = 0; i < 4; i++) {
		/* UIDs stay dense: the failed job's UID was rolled back with it. */
		assert_int_equal(l.m[i].uid, (uint32_t)i + 1);
		assert_string_not_equal(l.m[i].blob_id, s[2].blob_id);
	}
	assert_int_equal(db_int(f, "SELECT count(*) FROM blobs WHERE id = ?1", s[2].blob_id), 0);
	for (int i = 0; i < 5; i++)
		sync_job_deinit(&s[i]);
}

/* A job submitted once close has begun (here: from a done callback while close drains the
 * queue) is answered STORE_ERR_SHUTDOWN and its file is removed. */
struct chain {
	struct fixture *f;
	int64_t inbox;
	struct sync_job second;
	int first_result;
};

static void
chain_first_done(struct store_job *job, void *ctx)
{
	struct chain *c = ctx;
	struct store_blob *blob;
	const char *error;
	struct store_job *next;

	c->first_result = store_job_result(job, NULL);
	store_job_free(&job);
	assert_int_equal(store_blob_new(c->f->store, &blob, &error), STORE_OK);
	assert_int_equal(store_blob_write(blob, "late", 4), STORE_OK);
	fmt(c->second.blob_id, sizeof(c->second.blob_id), "%s", store_blob_id(blob));
	c->second.d.mailboxes = &c->inbox;
	c->second.d.nmailboxes = 1;
	c->second.d.blob_id = c->second.blob_id;
	next = store_job_new(job_deliver, sync_job_done, &c->second);
	store_job_add_blob(next, &blob);
	store_submit(c->f->store, next);
}

static int
job_nothing(struct store_txn *txn, void *ctx)
{
	(void)txn;
	(void)ctx;
	return STORE_OK;
}

/* Holds the writer until store_close has begun, so the done callback runs during close. */
static int
job_wait_closing(struct store_txn *txn, void *ctx)
{
	struct chain *c = ctx;
	struct store *store = c->f->store;
	bool closing = false;

	(void)txn;
	while (!closing) {
		pthread_mutex_lock(&store->lock);
		closing = store->closing;
		pthread_mutex_unlock(&store->lock);
		if (!closing)
			usleep(1000);
	}
	return STORE_OK;
}

static void
test_shutdown(void **state)
{
	struct fixture *f = *state;
	struct chain c;
	const char *error;

	f->opts.background = true;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	memset(&c, 0, sizeof(c));
	c.f = f;
	c.inbox = inbox_of(f, add_account(f, "a@example.org"));
	sync_job_init(&c.second);
	store_submit(f->store, store_job_new(job_wait_closing, chain_first_done, &c));
	store_close(&f->store);
	assert_null(f->store);
	assert_int_equal(c.first_result, STORE_OK);
	assert_true(c.second.done);
	assert_int_equal(c.second.result, STORE_ERR_SHUTDOWN);
	assert_true(store_err_is_temporary(c.second.result));
	assert_false(tmp_file_exists(f, c.second.blob_id));
	sync_job_deinit(&c.second);
	/* Reopened: the late job left nothing behind. */
	open_store(f);
	assert_int_equal(db_int(f, "SELECT count(*) FROM messages", NULL), 0);
	assert_int_equal(store_exec(f->store, job_nothing, NULL, &error), STORE_OK);
	assert_string_equal(error, "");
}

/* ---- Group commit under concurrency ----------------------------------------------------- */

#define CONC_THREADS 8
#define CONC_JOBS 500
#define CONC_WINDOW 32

struct conc_job {
	struct deliver_ctx d;
	struct conc_thread *t;
	char blob_id[33];
	int result;
};

struct conc_thread {
	struct fixture *f;
	int64_t inbox;
	int index;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int outstanding;
	int failures;
	struct conc_job jobs[CONC_JOBS];
};

static void
conc_done(struct store_job *job, void *ctx)
{
	struct conc_job *j = ctx;
	struct conc_thread *t = j->t;

	j->result = store_job_result(job, NULL);
	store_job_free(&job);
	pthread_mutex_lock(&t->lock);
	if (j->result != STORE_OK)
		t->failures++;
	t->outstanding--;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

static void *
conc_main(void *arg)
{
	struct conc_thread *t = arg;

	for (int i = 0; i < CONC_JOBS; i++) {
		struct conc_job *j = &t->jobs[i];
		struct store_blob *blob;
		struct store_job *job;
		const char *error;
		char content[128];
		int n;

		pthread_mutex_lock(&t->lock);
		while (t->outstanding >= CONC_WINDOW)
			pthread_cond_wait(&t->cond, &t->lock);
		t->outstanding++;
		pthread_mutex_unlock(&t->lock);

		if (store_blob_new(t->f->store, &blob, &error) != STORE_OK)
			abort();
		n = snprintf(content, sizeof(content), "thread %d job %d\r\n", t->index, i);
		if (store_blob_write(blob, content, (size_t)n) != STORE_OK)
			abort();
		memcpy(j->blob_id, store_blob_id(blob), sizeof(j->blob_id));
		j->t = t;
		j->d.mailboxes = &t->inbox;
		j->d.nmailboxes = 1;
		j->d.blob_id = j->blob_id;
		job = store_job_new(job_deliver, conc_done, j);
		store_job_add_blob(job, &blob);
		store_submit(t->f->store, job);
	}
	pthread_mutex_lock(&t->lock);
	while (t->outstanding > 0)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

struct conc_seen {
	char (*ids)[33];
	uint32_t *uids;
	size_t n, cap;
};

static int
conc_collect(const struct store_message *m, void *ctx)
{
	struct conc_seen *s = ctx;

	if (s->n < s->cap) {
		memcpy(s->ids[s->n], m->blob_id, 33);
		s->uids[s->n] = m->uid;
	}
	s->n++;
	return 0;
}

static int
cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_group_commit_concurrency(void **state)
{
	struct fixture *f = *state;
	struct conc_thread *threads = calloc(CONC_THREADS, sizeof(*threads));
	const size_t total = CONC_THREADS * CONC_JOBS;
	struct store__stats before, after;
	struct conc_seen seen;
	char (*want)[33];
	struct buf report;
	int64_t inbox;

	assert_non_null(threads);
	f->opts.background = true;
	f->opts.sync_threads = 4;
	f->opts.batch_max = 256;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	inbox = inbox_of(f, add_account(f, "load@example.org"));
	store__stats(f->store, &before);
	for (int i = 0; i < CONC_THREADS; i++) {
		threads[i].f = f;
		threads[i].inbox = inbox;
		threads[i].index = i;
		pthread_mutex_init(&threads[i].lock, NULL);
		pthread_cond_init(&threads[i].cond, NULL);
		assert_int_equal(pthread_create(&threads[i].thread, NULL, conc_main, &threads[i]),
		                 0);
	}
	for (int i = 0; i < CONC_THREADS; i++) {
		pthread_join(threads[i].thread, NULL);
		assert_int_equal(threads[i].failures, 0);
	}
	store__stats(f->store, &after);

	/* Every job's message is there exactly once, with UIDs 1..total. */
	seen.cap = total + 16;
	seen.n = 0;
	seen.ids = calloc(seen.cap, sizeof(*seen.ids));
	seen.uids = calloc(seen.cap, sizeof(*seen.uids));
	want = calloc(total, sizeof(*want));
	assert_non_null(seen.ids);
	assert_non_null(seen.uids);
	assert_non_null(want);
	assert_int_equal(store_message_list(f->store, inbox, conc_collect, &seen), 0);
	assert_int_equal(seen.n, total);
	for (size_t i = 0; i < total; i++)
		assert_int_equal(seen.uids[i], (uint32_t)i + 1);
	for (int i = 0; i < CONC_THREADS; i++) {
		for (int j = 0; j < CONC_JOBS; j++)
			memcpy(want[i * CONC_JOBS + j], threads[i].jobs[j].blob_id, 33);
	}
	qsort(want, total, sizeof(*want), cmp_id);
	qsort(seen.ids, total, sizeof(*seen.ids), cmp_id);
	for (size_t i = 0; i < total; i++) {
		assert_string_equal(want[i], seen.ids[i]);
		if (i > 0)
			assert_string_not_equal(want[i], want[i - 1]);
	}
	assert_int_equal(count_files(f->blobs), (int)total);

	buf_init(&report, 1 << 20);
	if (store_check(f->store, &report) != 0)
		fail_msg("store_check: %s", buf_cstr(&report));
	buf_deinit(&report);

	/* Batching: far fewer commits than jobs. A count, not a timing. */
	assert_int_equal(after.jobs - before.jobs, total);
	assert_int_equal(after.jobs_failed - before.jobs_failed, 0);
	print_message("%llu jobs in %llu commits, %llu folder syncs\n",
	              (unsigned long long)(after.jobs - before.jobs),
	              (unsigned long long)(after.commits - before.commits),
	              (unsigned long long)(after.dirs_synced - before.dirs_synced));
	assert_true(after.commits - before.commits < total / 4);
	assert_true(after.dirs_synced - before.dirs_synced <= after.commits - before.commits + 2);
	assert_int_equal(after.blobs_synced - before.blobs_synced, total);

	for (int i = 0; i < CONC_THREADS; i++) {
		pthread_mutex_destroy(&threads[i].lock);
		pthread_cond_destroy(&threads[i].cond);
	}
	free(seen.ids);
	free(seen.uids);
	free(want);
	free(threads);
}

/* Reads run on their own connections while the writer holds its transaction open. */
struct read_during {
	struct fixture *f;
	int64_t account;
	int found;
};

static int
job_read_inside(struct store_txn *txn, void *ctx)
{
	struct read_during *r = ctx;
	struct store_account a;
	struct store_mailbox m;

	/* Uncommitted: a reader must not see the domain added in this transaction. */
	if (store_txn_domain_add(txn, "later.test") != STORE_OK)
		return STORE_ERR_IO;
	r->found = store_domain_exists(r->f->store, "later.test");
	if (store_account_get(r->f->store, "a@example.org", &a) != 1 ||
	    store_mailbox_get(r->f->store, a.id, "INBOX", &m) != 1)
		return STORE_ERR_IO;
	return STORE_OK;
}

static void
test_reads_during_write(void **state)
{
	struct fixture *f = *state;
	struct read_during r;
	const char *error;

	f->opts.background = true;
	open_store(f);
	assert_int_equal(exec2(f, job_domain_add, "example.org", NULL, NULL), STORE_OK);
	memset(&r, 0, sizeof(r));
	r.f = f;
	r.account = add_account(f, "a@example.org");
	assert_int_equal(store_exec(f->store, job_read_inside, &r, &error), STORE_OK);
	assert_int_equal(r.found, 0);
	assert_int_equal(store_domain_exists(f->store, "later.test"), 1);
}

/* Relaxed jobs (flags, expunges) are committed and visible at once, and synced by the writer
 * within a second; a durable commit counts as their sync. */
static void
test_relaxed_commit(void **state)
{
	struct fixture *f = *state;
	struct store__stats st;
	struct names org = {"example.org", NULL, 0}, net = {"example.net", NULL, 0};
	struct names com = {"example.com", NULL, 0}, edu = {"example.edu", NULL, 0};
	const char *error;
	uint64_t before;

	f->opts.background = true;
	f->opts.relaxed_sync = true;
	open_store(f);
	assert_int_equal(store_exec(f->store, job_domain_add, &org, &error), STORE_OK);
	assert_int_equal(store_exec_relaxed(f->store, job_domain_add, &net, &error),
	                 STORE_OK);
	assert_int_equal(store_domain_exists(f->store, "example.net"), 1);
	store__stats(f->store, &st);
	assert_int_equal(st.relaxed_commits, 1);
	before = st.relaxed_syncs;
	for (int i = 0; i < 300 && st.relaxed_syncs == before; i++) {
		usleep(10 * 1000);
		store__stats(f->store, &st);
	}
	assert_int_equal(st.relaxed_syncs, before + 1);
	/* A relaxed job mixed with a durable one in a batch is durable: nothing left to sync. */
	assert_int_equal(store_exec(f->store, job_domain_add, &com, &error), STORE_OK);
	store__stats(f->store, &st);
	assert_int_equal(st.relaxed_commits, 1);
	store_close(&f->store);
	/* Without the option, relaxed is durable. */
	f->opts.relaxed_sync = false;
	open_store(f);
	assert_int_equal(store_exec_relaxed(f->store, job_domain_add, &edu, &error),
	                 STORE_OK);
	store__stats(f->store, &st);
	assert_int_equal(st.relaxed_commits, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrations_keep_messages, setup, teardown),
		cmocka_unit_test(test_header_end),
		cmocka_unit_test_setup_teardown(test_blob_read_head, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_bad_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_domains_accounts_aliases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_default_mailboxes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_inline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_background, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_blob_refs_and_gc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_small_blobs_in_database, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expunge_history_pruned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_pin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_unknown_blob, setup, teardown),
		cmocka_unit_test_setup_teardown(test_orphans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_background_sweeps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check_finds_problems, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fts_index, setup, teardown),
		cmocka_unit_test_setup_teardown(test_faults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failing_job_in_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_concurrency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reads_during_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relaxed_commit, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
