/* The outbound queue: the store operations behind it (src/store, migration 3) against a real
 * SQLite file in a temporary folder: due recipients in priority then age order with a limit,
 * skipping those in delivery, deferral, hold/release/retry, removal of the last recipient taking
 * the entry and the blob reference with it, the query plan (an index range, never a scan); and
 * the runner's pure parts (src/queue): retry schedule, enhanced status codes, the RFC 3464
 * report. */
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

#include "queue/queue.h"
#include "store/store.h"

#include "queue_fixture.h"

static int
setup(void **state)
{
	return queue_fixture_setup(state, "queue");
}

static int
teardown(void **state)
{
	return queue_fixture_teardown(state);
}

static int64_t
enqueue(struct fixture *f, int priority, const char *const *rcpts, size_t n)
{
	return queue_fixture_enqueue(f, "alice@example.test", priority, rcpts, n);
}

struct collected {
	struct store_queue_rcpt r[16];
	size_t n;
};

static int
collect(const struct store_queue_rcpt *r, void *ctx)
{
	struct collected *c = ctx;

	if (c->n < 16)
		c->r[c->n++] = *r;
	return 0;
}

static void
due(struct fixture *f, int64_t now, unsigned int limit, const int64_t *skip, size_t nskip,
    struct collected *c)
{
	memset(c, 0, sizeof(*c));
	assert_int_equal(store_queue_due(f->store, now, limit, skip, nskip, collect, c), 0);
}

struct rcpt_op {
	int64_t id;
	int64_t next;
	int kind; /* 0 done, 1 defer, 2 hold, 3 release, 4 retry */
};

static int
job_rcpt_op(struct store_txn *txn, void *ctx)
{
	struct rcpt_op *op = ctx;

	switch (op->kind) {
	case 0:
		return store_txn_queue_rcpt_done(txn, op->id);
	case 1:
		return store_txn_queue_rcpt_defer(txn, op->id, op->next, "451 4.3.0 later",
		                                  op->next % 2 == 0);
	case 2:
		return store_txn_queue_hold(txn, op->id, true);
	case 3:
		return store_txn_queue_hold(txn, op->id, false);
	default:
		return store_txn_queue_retry(txn, op->id);
	}
}

static int
rcpt_op(struct fixture *f, int kind, int64_t id, int64_t next)
{
	struct rcpt_op op = {id, next, kind};
	const char *error;

	return store_exec(f->store, job_rcpt_op, &op, &error);
}

/* ---- Tests ------------------------------------------------------------------------------ */

static void
test_due_order_and_limit(void **state)
{
	struct fixture *f = *state;
	const char *a[] = {"a@remote.example"}, *b[] = {"b@remote.example", "c@other.example"};
	const char *c3[] = {"d@remote.example"};
	int64_t now = (int64_t)time(NULL) + 10;
	struct collected c;
	int64_t q1, q2, q3;

	q1 = enqueue(f, 1, a, 1);
	q2 = enqueue(f, 1, b, 2);
	q3 = enqueue(f, 0, c3, 1); /* interactive: first although newest */
	due(f, now, 100, NULL, 0, &c);
	assert_int_equal(c.n, 4);
	assert_int_equal(c.r[0].queue_id, q3);
	assert_int_equal(c.r[1].queue_id, q1);
	assert_int_equal(c.r[2].queue_id, q2);
	assert_int_equal(c.r[3].queue_id, q2);
	assert_string_equal(c.r[0].rcpt, "d@remote.example");
	assert_string_equal(c.r[0].sender, "alice@example.test");
	assert_string_equal(c.r[3].domain, "other.example");
	assert_int_equal(c.r[0].priority, 0);
	assert_int_equal(c.r[1].state, STORE_QUEUE_QUEUED);
	/* The limit, and skipping recipients in delivery (sorted ids). */
	due(f, now, 2, NULL, 0, &c);
	assert_int_equal(c.n, 2);
	{
		int64_t skip[2] = {MIN(c.r[0].id, c.r[1].id), MAX(c.r[0].id, c.r[1].id)};
		struct collected d;

		due(f, now, 2, skip, 2, &d);
		assert_int_equal(d.n, 2);
		assert_int_equal(d.r[0].queue_id, q2);
		assert_true(d.r[0].id != skip[0] && d.r[0].id != skip[1]);
	}
	/* Nothing is due in the past. */
	due(f, 0, 100, NULL, 0, &c);
	assert_int_equal(c.n, 0);
	/* A priority outside the classes is refused. */
	{
		struct store_blob *blob;
		struct store_job *job;
		const char *error;
		struct enqueue e = {NULL, "", a, 1, STORE_QUEUE_PRIORITIES, 0, -99};

		assert_int_equal(store_blob_new(f->store, &blob, &error), STORE_OK);
		e.blob_id = store_blob_id(blob);
		job = store_job_new(job_enqueue, enqueue_done, &e);
		store_job_add_blob(job, &blob);
		store_submit(f->store, job);
		assert_int_equal(e.result, STORE_ERR_INVALID);
	}
}

static void
test_defer_done_hold(void **state)
{
	struct fixture *f = *state;
	const char *b[] = {"b@remote.example", "c@remote.example"};
	int64_t now = (int64_t)time(NULL) + 10;
	struct collected c;
	int64_t q = enqueue(f, 1, b, 2);

	due(f, now, 100, NULL, 0, &c);
	assert_int_equal(c.n, 2);
	/* Deferred: not due before its next attempt, attempts and reason kept. */
	assert_int_equal(rcpt_op(f, 1, c.r[0].id, now + 600), STORE_OK);
	{
		struct collected d;

		due(f, now, 100, NULL, 0, &d);
		assert_int_equal(d.n, 1);
		assert_int_equal(d.r[0].id, c.r[1].id);
		due(f, now + 600, 100, NULL, 0, &d);
		assert_int_equal(d.n, 2);
		assert_int_equal(d.r[1].attempts, 1);
		assert_int_equal(d.r[1].state, STORE_QUEUE_DEFERRED);
		assert_string_equal(d.r[1].last_error, "451 4.3.0 later");
		assert_int_equal(d.r[1].delay_notified, (now + 600) % 2 == 0);
	}
	/* Held: nothing of the entry is due; released: due again; retry: due now. */
	assert_int_equal(rcpt_op(f, 2, q, 0), STORE_OK);
	due(f, now + 600, 100, NULL, 0, &c);
	assert_int_equal(c.n, 0);
	assert_int_equal(rcpt_op(f, 3, q, 0), STORE_OK);
	assert_int_equal(rcpt_op(f, 4, q, 0), STORE_OK);
	due(f, now, 100, NULL, 0, &c);
	assert_int_equal(c.n, 2);
	assert_int_equal(rcpt_op(f, 2, 999999, 0), STORE_ERR_NOTFOUND);
	/* Done with one recipient: the entry stays; with the last: entry and reference go. */
	assert_int_equal(rcpt_op(f, 0, c.r[0].id, 0), STORE_OK);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue"), 1);
	assert_int_equal(rcpt_op(f, 0, c.r[1].id, 0), STORE_OK);
	assert_int_equal(db_int(f, "SELECT count(*) FROM queue"), 0);
	assert_int_equal(db_int(f, "SELECT count(*) FROM blobs WHERE refs > 0"), 0);
	assert_int_equal(rcpt_op(f, 0, c.r[1].id, 0), STORE_ERR_NOTFOUND);
	{
		struct collected l;

		memset(&l, 0, sizeof(l));
		assert_int_equal(store_queue_list(f->store, 0, 100, collect, &l), 0);
		assert_int_equal(l.n, 0);
	}
}

/* The due query reads an index range per class: no full scan of queue_rcpts, whatever its
 * size (EXPLAIN QUERY PLAN, as the engine would run it). */
static void
test_due_query_plan(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db;
	sqlite3_stmt *st;
	bool uses_index = false;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
	    "EXPLAIN QUERY PLAN SELECT r.id FROM queue_rcpts r JOIN queue q ON q.id = r.queue_id "
	    "WHERE r.priority = ?1 AND r.state < 2 AND r.held = 0 AND r.next_attempt <= ?2 "
	    "ORDER BY r.next_attempt, r.id LIMIT ?3", -1, &st, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *detail = (const char *)sqlite3_column_text(st, 3);

		if (strstr(detail, "queue_rcpts_ready") != NULL)
			uses_index = true;
		if (strncmp(detail, "SCAN", 4) == 0)
			fail_msg("full scan: %s", detail);
		if (strstr(detail, "TEMP B-TREE") != NULL)
			fail_msg("sorts instead of reading in index order: %s", detail);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	assert_true(uses_index);
}

static void
test_schedule_and_status(void **state)
{
	uint64_t *ms;
	size_t n;
	char code[16];

	(void)state;
	assert_int_equal(queue_parse_schedule("5m 10m,1h", &ms, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(ms[0], 300000);
	assert_int_equal(ms[2], 3600000);
	assert_int_equal(queue_retry_delay(ms, n, 0), 300000);
	assert_int_equal(queue_retry_delay(ms, n, 1), 600000);
	assert_int_equal(queue_retry_delay(ms, n, 99), 3600000);
	free(ms);
	assert_int_equal(queue_parse_schedule("", &ms, &n), -1);
	assert_int_equal(queue_parse_schedule("5x", &ms, &n), -1);
	assert_int_equal(queue_parse_schedule("0s", &ms, &n), -1);

	queue_status_code("550 5.1.1 no such user", code);
	assert_string_equal(code, "5.1.1");
	queue_status_code("552 5.3.4 too big", code);
	assert_string_equal(code, "5.3.4");
	queue_status_code("550 no such user", code);
	assert_string_equal(code, "5.0.0");
	queue_status_code("550 4.1.1 class mismatch", code);
	assert_string_equal(code, "5.0.0");
	queue_status_code("timeout", code);
	assert_string_equal(code, "4.0.0");
}

static void
test_dsn(void **state)
{
	struct queue_dsn_rcpt r[2] = {
		{"a@remote.example", "rfc822;A@remote.example", "5.1.1", "550 5.1.1 unknown", 0},
		{"b@remote.example", NULL, "4.4.7", "timeout", 0},
	};
	const char *hdr = "From: alice@example.test\r\nSubject: hi\r\n";
	struct buf out;
	const char *s;

	(void)state;
	buf_init(&out, 1 << 20);
	queue_dsn_build(&out, "mail.example.test", "alice@example.test", "ENV1", 1000, 2000, r, 2,
	                (const uint8_t *)hdr, strlen(hdr));
	assert_int_equal(out.err, 0);
	s = buf_cstr(&out);
	assert_non_null(strstr(s, "Content-Type: multipart/report; report-type=delivery-status;"));
	assert_non_null(strstr(s, "Reporting-MTA: dns; mail.example.test\r\n"));
	assert_non_null(strstr(s, "Original-Envelope-Id: ENV1\r\n"));
	assert_non_null(strstr(s, "Final-Recipient: rfc822; a@remote.example\r\n"
	                          "Original-Recipient: rfc822;A@remote.example\r\n"
	                          "Action: failed\r\nStatus: 5.1.1\r\n"));
	assert_non_null(strstr(s, "Final-Recipient: rfc822; b@remote.example\r\n"
	                          "Action: failed\r\nStatus: 4.4.7\r\n"));
	assert_non_null(strstr(s, "Content-Type: text/rfc822-headers\r\n\r\nFrom: alice@example"));
	assert_non_null(strstr(s, "To: <alice@example.test>\r\n"));
	assert_true(strncmp(s, "Return-Path: <>\r\n", 17) == 0);
	/* Every line ends in CRLF. */
	for (size_t i = 0; i < out.len; i++) {
		if (out.data[i] == '\n')
			assert_true(i > 0 && out.data[i - 1] == '\r');
	}
	/* A delay warning alone: Action delayed, Will-Retry-Until, its own subject. */
	buf_reset(&out);
	r[1].retry_until = 3000;
	queue_dsn_build(&out, "mail.example.test", "alice@example.test", NULL, 1000, 2000, r + 1,
	                1, (const uint8_t *)hdr, strlen(hdr));
	s = buf_cstr(&out);
	assert_non_null(strstr(s, "Subject: Delayed Mail (still being retried)\r\n"));
	assert_non_null(strstr(s, "Action: delayed\r\nStatus: 4.4.7\r\n"));
	assert_non_null(strstr(s, "Will-Retry-Until: Thu, 01 Jan 1970 00:50:00 +0000\r\n"));
	assert_null(strstr(s, "Original-Envelope-Id"));
	buf_deinit(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_due_order_and_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_defer_done_hold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_due_query_plan, setup, teardown),
		cmocka_unit_test(test_schedule_and_status),
		cmocka_unit_test(test_dsn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
