/* The queue as `postamt queue list` and the actions by filter see it (src/store, migration 6),
 * against a real SQLite file in a temporary folder: every filter term alone and combined,
 * case-insensitive addresses and domains, the null sender, paging by (queue id, recipient id),
 * the query plan of every combination (an index range in list order: no scan, no sort), and
 * hold/release/retry/delete by filter in chunks, with their counts and what they leave. */
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
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_sqlite.h"

#include "queue_fixture.h"

static int
setup(void **state)
{
	return queue_fixture_setup(state, "squeue");
}

static int
teardown(void **state)
{
	return queue_fixture_teardown(state);
}

/* One entry from sender to rcpts (normal class); its queue id. */
static int64_t
enqueue(struct fixture *f, const char *sender, const char *const *rcpts, size_t n)
{
	return queue_fixture_enqueue(f, sender, 1, rcpts, n);
}

struct collected {
	struct store_queue_rcpt r[64];
	size_t n;
};

static int
collect(const struct store_queue_rcpt *r, void *ctx)
{
	struct collected *c = ctx;

	if (c->n < 64)
		c->r[c->n++] = *r;
	return 0;
}

static size_t
find(struct fixture *f, const struct store_queue_filter *filter, unsigned int limit,
     struct collected *c)
{
	memset(c, 0, sizeof(*c));
	assert_int_equal(store_queue_find(f->store, filter, limit, collect, c), 0);
	return c->n;
}

struct act {
	struct store_queue_filter filter;
	enum store_queue_action action;
	unsigned int limit;
	struct store_queue_act_result result;
};

static int
job_act(struct store_txn *txn, void *ctx)
{
	struct act *a = ctx;

	return store_txn_queue_act(txn, &a->filter, a->action, a->limit, &a->result);
}

/* The whole action, chunk after chunk as the CLI does it; the number of chunks. */
static unsigned int
act(struct fixture *f, const struct store_queue_filter *filter, enum store_queue_action action,
    unsigned int limit, struct store_queue_act_result *res)
{
	struct act a;
	const char *error;
	unsigned int chunks = 0;

	memset(&a, 0, sizeof(a));
	a.filter = *filter;
	a.action = action;
	a.limit = limit;
	do {
		a.result.more = false;
		assert_int_equal(store_exec(f->store, job_act, &a, &error), STORE_OK);
		chunks++;
	} while (a.result.more);
	*res = a.result;
	return chunks;
}

struct defer {
	int64_t rcpt_id;
	int64_t next;
};

static int
job_defer(struct store_txn *txn, void *ctx)
{
	struct defer *d = ctx;

	return store_txn_queue_rcpt_defer(txn, d->rcpt_id, d->next, "451 4.4.1 no answer", false);
}

static void
defer(struct fixture *f, int64_t rcpt_id, int64_t next)
{
	struct defer d = {rcpt_id, next};
	const char *error;

	assert_int_equal(store_exec(f->store, job_defer, &d, &error), STORE_OK);
}

/* q1 alice -> bob@Remote (lowered domain), carol@other; q2 Alice -> BOB@remote; q3 the null
 * sender -> dave@remote; q4 zed -> erin@third, frank@remote, gina@third. */
struct sample {
	int64_t q[4];
};

static void
fill(struct fixture *f, struct sample *s)
{
	const char *r1[] = {"bob@Remote.example", "carol@other.example"};
	const char *r2[] = {"BOB@remote.example"};
	const char *r3[] = {"dave@remote.example"};
	const char *r4[] = {"erin@third.example", "frank@remote.example", "gina@third.example"};

	s->q[0] = enqueue(f, "alice@example.test", r1, 2);
	s->q[1] = enqueue(f, "Alice@Example.test", r2, 1);
	s->q[2] = enqueue(f, "", r3, 1);
	s->q[3] = enqueue(f, "zed@else.test", r4, 3);
}

/* ---- Tests ------------------------------------------------------------------------------ */

static void
test_find_filters(void **state)
{
	struct fixture *f = *state;
	struct store_queue_filter q;
	struct collected c;
	struct sample s;
	char big[400];

	fill(f, &s);
	memset(&q, 0, sizeof(q));
	assert_int_equal(find(f, &q, 100, &c), 7);
	assert_int_equal(c.r[0].queue_id, s.q[0]);
	assert_string_equal(c.r[0].rcpt, "bob@remote.example");
	assert_int_equal(c.r[6].queue_id, s.q[3]);

	/* Sender: exact, any case; "" is the null sender. */
	q.sender = "ALICE@example.TEST";
	assert_int_equal(find(f, &q, 100, &c), 3);
	assert_int_equal(c.r[0].queue_id, s.q[0]);
	assert_int_equal(c.r[2].queue_id, s.q[1]);
	q.sender = "";
	assert_int_equal(find(f, &q, 100, &c), 1);
	assert_int_equal(c.r[0].queue_id, s.q[2]);
	q.sender = "alice@example";
	assert_int_equal(find(f, &q, 100, &c), 0);

	/* Recipient and domain: exact, any case. */
	memset(&q, 0, sizeof(q));
	q.rcpt = "Bob@REMOTE.example";
	assert_int_equal(find(f, &q, 100, &c), 2);
	assert_int_equal(c.r[0].queue_id, s.q[0]);
	assert_int_equal(c.r[1].queue_id, s.q[1]);
	q.rcpt = NULL;
	q.domain = "REMOTE.Example";
	assert_int_equal(find(f, &q, 100, &c), 4);
	assert_string_equal(c.r[3].rcpt, "frank@remote.example");
	q.domain = "third.example";
	assert_int_equal(find(f, &q, 100, &c), 2);
	q.domain = "example";
	assert_int_equal(find(f, &q, 100, &c), 0);

	/* Held (the entry's flag, on each of its rows) and deferred (per recipient). */
	{
		struct store_queue_filter h;
		struct store_queue_act_result r;

		memset(&h, 0, sizeof(h));
		h.sender = "zed@else.test";
		act(f, &h, STORE_QUEUE_HOLD, 100, &r);
	}
	memset(&q, 0, sizeof(q));
	q.held = true;
	assert_int_equal(find(f, &q, 100, &c), 3);
	assert_true(c.r[0].held && c.r[0].queue_id == s.q[3]);
	q.held = false;
	q.deferred = true;
	assert_int_equal(find(f, &q, 100, &c), 0);
	find(f, &(struct store_queue_filter){.rcpt = "carol@other.example"}, 1, &c);
	defer(f, c.r[0].id, time(NULL) + 3600);
	assert_int_equal(find(f, &q, 100, &c), 1);
	assert_string_equal(c.r[0].rcpt, "carol@other.example");
	assert_int_equal(c.r[0].state, STORE_QUEUE_DEFERRED);

	/* Terms combine with AND. */
	memset(&q, 0, sizeof(q));
	q.domain = "remote.example";
	q.sender = "alice@example.test";
	assert_int_equal(find(f, &q, 100, &c), 2);
	q.sender = NULL;
	q.held = true;
	assert_int_equal(find(f, &q, 100, &c), 1);
	assert_string_equal(c.r[0].rcpt, "frank@remote.example");
	memset(&q, 0, sizeof(q));
	q.rcpt = "bob@remote.example";
	q.sender = "";
	assert_int_equal(find(f, &q, 100, &c), 0);
	q.sender = "alice@example.test";
	q.deferred = true;
	assert_int_equal(find(f, &q, 100, &c), 0);

	/* Paging: after a row, after a whole entry, up to an entry. */
	memset(&q, 0, sizeof(q));
	assert_int_equal(find(f, &q, 1, &c), 1);
	q.after = c.r[0].queue_id;
	q.after_rcpt = c.r[0].id;
	assert_int_equal(find(f, &q, 100, &c), 6);
	assert_string_equal(c.r[0].rcpt, "carol@other.example");
	q.after_rcpt = 0;
	assert_int_equal(find(f, &q, 100, &c), 5);
	assert_int_equal(c.r[0].queue_id, s.q[1]);
	q.until = s.q[2];
	assert_int_equal(find(f, &q, 100, &c), 2);
	q.domain = "remote.example";
	q.after = 0;
	q.until = 0;
	assert_int_equal(find(f, &q, 2, &c), 2);
	q.after = c.r[1].queue_id;
	q.after_rcpt = c.r[1].id;
	assert_int_equal(find(f, &q, 2, &c), 2);
	assert_int_equal(c.r[0].queue_id, s.q[2]);
	assert_int_equal(c.r[1].queue_id, s.q[3]);

	/* A string longer than any address is refused. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memset(&q, 0, sizeof(q));
	q.rcpt = big;
	assert_int_equal(store_queue_find(f->store, &q, 10, collect, &c), STORE_ERR_INVALID);
	/* store_queue_list (queue show) is the empty filter after an entry. */
	memset(&c, 0, sizeof(c));
	assert_int_equal(store_queue_list(f->store, s.q[2], 100, collect, &c), 0);
	assert_int_equal(c.n, 3);
}

/* Every combination of terms reads an index range in list order: no scan of either table, no
 * sort (EXPLAIN QUERY PLAN of the statement the engine runs), and the driving index is the
 * one of the first term given. */
static void
test_find_query_plans(void **state)
{
	static const char *const driving[] = {"queue_rcpts_rcpt", "queue_sender",
	                                      "queue_rcpts_domain", "queue_rcpts_held",
	                                      "queue_rcpts_deferred"};
	struct fixture *f = *state;
	sqlite3 *db;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	for (unsigned int m = 0; m < 32; m++) {
		struct store_queue_filter q;
		const char *want = "queue_rcpts_queue";
		char sql[4096];
		sqlite3_stmt *st;
		bool uses = false;

		memset(&q, 0, sizeof(q));
		q.rcpt = (m & 1) ? "a@b.example" : NULL;
		q.sender = (m & 2) ? "c@d.example" : NULL;
		q.domain = (m & 4) ? "b.example" : NULL;
		q.held = (m & 8) != 0;
		q.deferred = (m & 16) != 0;
		for (unsigned int b = 0; b < 5; b++) {
			if (m & (1u << b)) {
				want = driving[b];
				break;
			}
		}
		assert_int_equal(fmt(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s",
		                     store__sqlite_queue_find_sql(&q)), 0);
		assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *detail = (const char *)sqlite3_column_text(st, 3);

			if (strstr(detail, want) != NULL)
				uses = true;
			if (strncmp(detail, "SCAN", 4) == 0)
				fail_msg("filter %u: full scan: %s", m, detail);
			if (strstr(detail, "TEMP B-TREE") != NULL)
				fail_msg("filter %u: sorts: %s", m, detail);
		}
		sqlite3_finalize(st);
		if (!uses)
			fail_msg("filter %u does not read %s", m, want);
	}
	sqlite3_close(db);
}

static void
test_act_hold_release(void **state)
{
	struct fixture *f = *state;
	struct store_queue_act_result r;
	struct store_queue_filter q;
	struct collected c;
	struct sample s;

	fill(f, &s);
	/* Hold by a recipient's domain holds the whole entry. */
	memset(&q, 0, sizeof(q));
	q.domain = "third.example";
	act(f, &q, STORE_QUEUE_HOLD, 100, &r);
	assert_int_equal(r.entries, 1);
	assert_int_equal(r.matched, 2);
	assert_int_equal(r.rcpts, 0);
	assert_int_equal(find(f, &(struct store_queue_filter){.held = true}, 100, &c), 3);
	assert_string_equal(c.r[1].rcpt, "frank@remote.example");
	/* Nothing is due of it. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue_rcpts WHERE held = 0"), 4);
	act(f, &q, STORE_QUEUE_HOLD, 100, &r);
	assert_int_equal(r.entries, 0); /* already held */
	memset(&q, 0, sizeof(q));
	q.rcpt = "bob@remote.example";
	act(f, &q, STORE_QUEUE_HOLD, 1, &r);
	assert_int_equal(r.entries, 2);
	assert_int_equal(find(f, &(struct store_queue_filter){.held = true}, 100, &c), 6);
	/* Release of what is held, by sender. */
	memset(&q, 0, sizeof(q));
	q.held = true;
	q.sender = "alice@example.test";
	act(f, &q, STORE_QUEUE_RELEASE, 100, &r);
	assert_int_equal(r.entries, 2);
	assert_int_equal(r.matched, 3);
	memset(&q, 0, sizeof(q));
	act(f, &q, STORE_QUEUE_RELEASE, 100, &r); /* --all */
	assert_int_equal(r.entries, 1);
	assert_int_equal(r.matched, 7);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue WHERE held = 1"), 0);
}

static void
test_act_retry(void **state)
{
	struct fixture *f = *state;
	int64_t later = (int64_t)time(NULL) + 3600;
	struct store_queue_act_result r;
	struct store_queue_filter q;
	struct collected c;
	struct sample s;

	fill(f, &s);
	memset(&q, 0, sizeof(q));
	q.sender = "zed@else.test";
	find(f, &q, 100, &c);
	for (size_t i = 0; i < c.n; i++)
		defer(f, c.r[i].id, later);
	act(f, &q, STORE_QUEUE_HOLD, 100, &r);
	/* Only the matching recipients are due now; the entry stays held. */
	memset(&q, 0, sizeof(q));
	q.domain = "third.example";
	act(f, &q, STORE_QUEUE_RETRY, 100, &r);
	assert_int_equal(r.rcpts, 2);
	assert_int_equal(r.entries, 1);
	find(f, &(struct store_queue_filter){.sender = "zed@else.test"}, 100, &c);
	assert_int_equal(c.n, 3);
	assert_true(c.r[0].next_attempt < later && c.r[2].next_attempt < later);
	assert_int_equal(c.r[1].next_attempt, later);
	assert_true(c.r[0].held && c.r[1].held);
	assert_int_equal(c.r[0].attempts, 1); /* the history stays */
	/* Retry of the deferred ones. */
	memset(&q, 0, sizeof(q));
	q.deferred = true;
	act(f, &q, STORE_QUEUE_RETRY, 2, &r);
	assert_int_equal(r.rcpts, 3);
	assert_int_equal(r.entries, 1);
	assert_int_equal(db_int(f, "SELECT max(next_attempt) FROM queue_rcpts") < later, 1);
}

static void
test_act_delete(void **state)
{
	struct fixture *f = *state;
	struct store_queue_act_result r;
	struct store_queue_filter q;
	struct collected c;
	struct sample s;

	fill(f, &s);
	/* By recipient: the rows; an entry goes with its last one. */
	memset(&q, 0, sizeof(q));
	q.rcpt = "bob@remote.example";
	act(f, &q, STORE_QUEUE_DELETE, 100, &r);
	assert_int_equal(r.rcpts, 2);
	assert_int_equal(r.entries, 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue"), 3);
	assert_int_equal(find(f, &(struct store_queue_filter){.sender = "alice@example.test"}, 100,
	                      &c), 1);
	assert_string_equal(c.r[0].rcpt, "carol@other.example");
	/* By domain: the entry keeps its other recipient. */
	memset(&q, 0, sizeof(q));
	q.domain = "third.example";
	act(f, &q, STORE_QUEUE_DELETE, 1, &r);
	assert_int_equal(r.rcpts, 2);
	assert_int_equal(r.entries, 0);
	assert_int_equal(find(f, &(struct store_queue_filter){.sender = "zed@else.test"}, 100, &c),
	                 1);
	/* By sender: whole entries. */
	memset(&q, 0, sizeof(q));
	q.sender = "";
	act(f, &q, STORE_QUEUE_DELETE, 100, &r);
	assert_int_equal(r.rcpts, 1);
	assert_int_equal(r.entries, 1);
	/* Deferred recipients only. */
	find(f, &(struct store_queue_filter){.sender = "zed@else.test"}, 100, &c);
	defer(f, c.r[0].id, (int64_t)time(NULL) + 60);
	memset(&q, 0, sizeof(q));
	q.deferred = true;
	act(f, &q, STORE_QUEUE_DELETE, 100, &r);
	assert_int_equal(r.rcpts, 1);
	assert_int_equal(r.entries, 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue"), 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue_rcpts"), 1);
	/* The removed entries' files lost their references. */
	assert_int_equal(db_int(f, "SELECT count(*) FROM blobs WHERE refs > 0"), 1);
	/* --all */
	memset(&q, 0, sizeof(q));
	act(f, &q, STORE_QUEUE_DELETE, 100, &r);
	assert_int_equal(r.entries, 1);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue"), 0);
	/* An empty queue: nothing to do, one chunk. */
	assert_int_equal(act(f, &q, STORE_QUEUE_DELETE, 100, &r), 1);
	assert_int_equal(r.matched, 0);
}

/* Big actions go in chunks; mail queued between two chunks is left alone. */
static void
test_act_chunks(void **state)
{
	struct fixture *f = *state;
	const char *rc[] = {"a@d1.example", "b@d2.example"};
	const char *late[] = {"late@d2.example"};
	struct store_queue_act_result r;
	struct store_queue_filter q;
	struct collected c;
	struct act a;
	const char *error;
	unsigned int chunks;

	for (int i = 0; i < 25; i++)
		enqueue(f, "bulk@x.test", rc, 2);
	memset(&q, 0, sizeof(q));
	q.sender = "bulk@x.test";
	chunks = act(f, &q, STORE_QUEUE_HOLD, 10, &r);
	assert_int_equal(chunks, 6); /* 5 full chunks, then an empty one */
	assert_int_equal(r.entries, 25);
	assert_int_equal(r.matched, 50);

	memset(&a, 0, sizeof(a));
	a.filter.domain = "d2.example";
	a.action = STORE_QUEUE_RELEASE;
	a.limit = 10;
	assert_int_equal(store_exec(f->store, job_act, &a, &error), STORE_OK);
	assert_true(a.result.more);
	assert_true(a.filter.until > 0);
	enqueue(f, "bulk@x.test", late, 1);
	memset(&q, 0, sizeof(q));
	q.rcpt = "late@d2.example";
	act(f, &q, STORE_QUEUE_HOLD, 10, &r);
	do {
		a.result.more = false;
		assert_int_equal(store_exec(f->store, job_act, &a, &error), STORE_OK);
	} while (a.result.more);
	assert_int_equal(a.result.entries, 25);
	assert_int_equal(find(f, &q, 10, &c), 1);
	assert_true(c.r[0].held);

	/* Deleting recipients in chunks of 7. */
	memset(&q, 0, sizeof(q));
	q.domain = "d1.example";
	act(f, &q, STORE_QUEUE_DELETE, 7, &r);
	assert_int_equal(r.rcpts, 25);
	assert_int_equal(r.entries, 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue_rcpts"), 26);

	/* A chunk size outside 1..STORE_MAX_QUEUE_CHUNK is refused. */
	memset(&a, 0, sizeof(a));
	a.action = STORE_QUEUE_RETRY;
	assert_int_equal(store_exec(f->store, job_act, &a, &error), STORE_ERR_INVALID);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_find_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_query_plans, setup, teardown),
		cmocka_unit_test_setup_teardown(test_act_hold_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_act_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_act_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_act_chunks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
