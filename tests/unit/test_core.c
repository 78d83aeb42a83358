/* core: bounded buffers (max, sticky error, printf growth, consume), string helpers, number
 * parsing edge cases, log_sanitize and the worker pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/tpool.h"

/* ---- buf ---------------------------------------------------------------------------------- */

static void
test_buf_max_enforced(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 10);
	assert_string_equal(buf_cstr(&b), ""); /* usable before the first append */
	assert_int_equal(buf_append(&b, "0123456789", 10), 0);
	assert_int_equal(b.len, 10);
	assert_int_equal(b.err, 0);
	assert_int_equal(buf_append_byte(&b, 'x'), -1);
	assert_int_equal(b.len, 10);
	assert_string_equal(buf_cstr(&b), "0123456789");
	/* A refused append changes nothing, even one that would wrap size_t. */
	assert_int_equal(buf_append(&b, "", SIZE_MAX), -1);
	assert_int_equal(b.len, 10);
	buf_deinit(&b);

	buf_init(&b, 0);
	assert_int_equal(buf_append_str(&b, ""), 0);
	assert_int_equal(buf_append_str(&b, "a"), -1);
	buf_deinit(&b);
}

static void
test_buf_sticky_err(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8);
	assert_int_equal(buf_append_str(&b, "abcdef"), 0);
	assert_int_equal(buf_append_str(&b, "ghi"), -1);
	assert_int_equal(b.err, 1);
	/* Later appends that fit still work, but err stays set so that one check at the end of
	 * a sequence catches the refused one. */
	assert_int_equal(buf_append_str(&b, "gh"), 0);
	assert_string_equal(buf_cstr(&b), "abcdefgh");
	assert_int_equal(b.err, 1);
	buf_reset(&b);
	assert_int_equal(b.err, 0);
	assert_int_equal(b.len, 0);
	assert_string_equal(buf_cstr(&b), "");
	buf_deinit(&b);
}

static void
test_buf_printf_growth(void **state)
{
	char big[3000];
	struct buf b;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_init(&b, 4096);
	assert_int_equal(buf_printf(&b, "%d-%s", 42, "a"), 0);
	assert_string_equal(buf_cstr(&b), "42-a");
	/* Grows from the first small allocation in one call. */
	assert_int_equal(buf_printf(&b, "[%s]", big), 0);
	assert_int_equal(b.len, 4 + 2 + strlen(big));
	assert_true(b.cap > b.len);
	assert_int_equal(b.data[b.len], '\0');
	assert_memory_equal(b.data, "42-a[xxx", 8);
	assert_int_equal(b.data[b.len - 1], ']');
	/* Past max: refused whole, nothing half-written. */
	assert_int_equal(buf_printf(&b, "%s", big), -1);
	assert_int_equal(b.len, 4 + 2 + strlen(big));
	assert_int_equal(b.err, 1);
	assert_int_equal(b.data[b.len], '\0');
	buf_deinit(&b);

	/* Exactly up to max. */
	buf_init(&b, 5);
	assert_int_equal(buf_printf(&b, "%05d", 7), 0);
	assert_string_equal(buf_cstr(&b), "00007");
	assert_int_equal(buf_printf(&b, "%s", ""), 0);
	assert_int_equal(buf_printf(&b, "%c", 'x'), -1);
	buf_deinit(&b);
}

static void
test_buf_consume(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(buf_append_str(&b, "hello world"), 0);
	buf_consume(&b, 0);
	assert_string_equal(buf_cstr(&b), "hello world");
	buf_consume(&b, 6);
	assert_string_equal(buf_cstr(&b), "world");
	assert_int_equal(b.len, 5);
	buf_consume(&b, 5);
	assert_int_equal(b.len, 0);
	assert_string_equal(buf_cstr(&b), "");
	assert_int_equal(buf_append_str(&b, "abc"), 0);
	buf_consume(&b, 100);
	assert_int_equal(b.len, 0);
	assert_string_equal(buf_cstr(&b), "");
	/* Consuming frees room under max again. */
	buf_deinit(&b);
	buf_init(&b, 4);
	assert_int_equal(buf_append_str(&b, "abcd"), 0);
	buf_consume(&b, 2);
	assert_int_equal(buf_append_str(&b, "ef"), 0);
	assert_string_equal(buf_cstr(&b), "cdef");
	buf_deinit_secure(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

/* ---- strings ------------------------------------------------------------------------------ */

static void
test_str_copy(void **state)
{
	char d[5];

	(void)state;
	assert_int_equal(str_copy(d, sizeof(d), "abcd"), 0);
	assert_string_equal(d, "abcd");
	assert_int_equal(str_copy(d, sizeof(d), ""), 0);
	assert_string_equal(d, "");
	/* Truncated, but always terminated, and reported. */
	assert_int_equal(str_copy(d, sizeof(d), "abcde"), -1);
	assert_string_equal(d, "abcd");
	assert_int_equal(str_copy(d, sizeof(d), "a much longer string"), -1);
	assert_string_equal(d, "a mu");
	assert_int_equal(str_copy(d, 1, "x"), -1);
	assert_string_equal(d, "");
	assert_int_equal(str_copy(d, 0, "x"), -1);
}

static void
test_str_to_u64(void **state)
{
	static const struct {
		const char *s;
		int ret;
		uint64_t v;
	} cases[] = {
		{"0", 0, 0},
		{"1", 0, 1},
		{"007", 0, 7},
		{"18446744073709551615", 0, UINT64_MAX},
		{"", -1, 0},
		{"18446744073709551616", -1, 0}, /* overflow */
		{"99999999999999999999999", -1, 0},
		{"-1", -1, 0},                   /* strtoull would wrap it */
		{"-0", -1, 0},
		{"+1", -1, 0},
		{" 1", -1, 0},
		{"1 ", -1, 0},
		{"12a", -1, 0},
		{"0x10", -1, 0},
		{"1e3", -1, 0},
		{"1.5", -1, 0},
		{"\t5", -1, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;
		int ret = str_to_u64(cases[i].s, &v);

		if (ret != cases[i].ret)
			fail_msg("str_to_u64(\"%s\") returned %d, want %d", cases[i].s, ret,
			         cases[i].ret);
		if (ret == 0)
			assert_true(v == cases[i].v);
		else
			assert_true(v == 12345); /* untouched on error */
	}
}

static void
test_str_to_uint(void **state)
{
	unsigned int v;

	(void)state;
	assert_int_equal(str_to_uint("4294967295", &v), 0);
	assert_true(v == 4294967295u);
	assert_int_equal(str_to_uint("4294967296", &v), -1);
	assert_int_equal(str_to_uint("", &v), -1);
	assert_int_equal(str_to_uint("-5", &v), -1);
}

static void
test_str_helpers(void **state)
{
	char s[32] = "  \tMixed Case \r\n";
	char *t;

	(void)state;
	t = str_trim(s);
	assert_string_equal(t, "Mixed Case");
	str_lower(t);
	assert_string_equal(t, "mixed case");
	assert_true(str_has_prefix("{SHA512-CRYPT}x", "{SHA512-CRYPT}"));
	assert_false(str_has_prefix("{SHA", "{SHA512-CRYPT}"));
	assert_true(str_has_prefix("abc", ""));
	assert_true(span_eq_ci(SPAN_LIT("EhLo"), "ehlo"));
	assert_false(span_eq_ci(SPAN_LIT("EHLO"), "ehlo "));
	assert_true(span_eq(SPAN_LIT("EHLO"), "EHLO"));
	assert_false(span_eq(SPAN_LIT("EHLO"), "ehlo"));
	assert_true(mem_equal_ct("abc", "abc", 3));
	assert_false(mem_equal_ct("abc", "abd", 3));
	assert_true(mem_equal_ct("x", "y", 0));
}

/* ---- log_sanitize ------------------------------------------------------------------------- */

static void
check_sanitize(const char *in, size_t len, const char *want)
{
	char dst[LOG_SANITIZE_SIZE];

	assert_string_equal(log_sanitize(dst, in, len), want);
	assert_true(strlen(dst) < LOG_SANITIZE_SIZE);
}

static void
test_log_sanitize(void **state)
{
	char in[400], want[LOG_SANITIZE_SIZE];

	(void)state;
	check_sanitize("plain@example.org", 17, "plain@example.org");
	check_sanitize("a\r\nb", 4, "a\\x0d\\x0ab");
	check_sanitize("a\0b", 3, "a\\x00b");
	check_sanitize("two words", 9, "two\\x20words");
	check_sanitize("k=v", 3, "k\\x3dv");
	check_sanitize("\"q\"\\", 4, "\\x22q\\x22\\x5c");
	check_sanitize("caf\xc3\xa9", 5, "caf\\xc3\\xa9");
	check_sanitize("\x7f\x1b[31m", 6, "\\x7f\\x1b[31m");
	check_sanitize("", 0, "");
	{
		char dst[LOG_SANITIZE_SIZE];

		assert_string_equal(log_sanitize_str(dst, "x y"), "x\\x20y");
	}

	/* Exactly LOG_MAX_FIELD plain bytes: no marker. One more: cut with "...". */
	memset(in, 'a', sizeof(in));
	memset(want, 'a', LOG_MAX_FIELD);
	want[LOG_MAX_FIELD] = '\0';
	check_sanitize(in, LOG_MAX_FIELD, want);
	memcpy(want + LOG_MAX_FIELD, "...", 4);
	check_sanitize(in, LOG_MAX_FIELD + 1, want);
	check_sanitize(in, sizeof(in), want);

	/* An escape that would cross the limit is not split. */
	in[LOG_MAX_FIELD - 2] = '\n';
	memcpy(want + LOG_MAX_FIELD - 2, "...", 4);
	check_sanitize(in, sizeof(in), want);

	/* All escapes: 40 of them fill 160 bytes exactly. */
	memset(in, '\n', sizeof(in));
	want[0] = '\0';
	for (int i = 0; i < LOG_MAX_FIELD / 4; i++)
		memcpy(want + 4 * i, "\\x0a", 5);
	check_sanitize(in, LOG_MAX_FIELD / 4, want);
	memcpy(want + LOG_MAX_FIELD, "...", 4);
	check_sanitize(in, sizeof(in), want);
}

/* ---- tpool -------------------------------------------------------------------------------- */

struct counter {
	pthread_mutex_t lock;
	unsigned int done;
	unsigned int order[64];
	unsigned int norder;
};

struct job {
	struct counter *c;
	unsigned int id;
};

static void
count_task(void *arg)
{
	struct job *j = arg;
	struct timespec ts = {0, 200 * 1000}; /* 0.2 ms: keeps the queue non-empty at free */

	nanosleep(&ts, NULL);
	pthread_mutex_lock(&j->c->lock);
	j->c->done++;
	if (j->c->norder < 64)
		j->c->order[j->c->norder++] = j->id;
	pthread_mutex_unlock(&j->c->lock);
}

static void
test_tpool_runs_all(void **state)
{
	static struct job jobs[500];
	struct counter c = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct tpool *pool = tpool_new(4, "test");

	(void)state;
	for (unsigned int i = 0; i < 500; i++) {
		jobs[i].c = &c;
		jobs[i].id = i;
		tpool_submit(pool, count_task, &jobs[i]);
	}
	assert_true(tpool_pending(pool) <= 500);
	/* tpool_free drains the queue before it joins. */
	tpool_free(&pool);
	assert_null(pool);
	assert_int_equal(c.done, 500);
	tpool_free(&pool); /* NULL is fine */
}

static void
test_tpool_fifo_single_thread(void **state)
{
	static struct job jobs[64];
	struct counter c = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct tpool *pool = tpool_new(1, "fifo");

	(void)state;
	for (unsigned int i = 0; i < 64; i++) {
		jobs[i].c = &c;
		jobs[i].id = i;
		tpool_submit(pool, count_task, &jobs[i]);
	}
	tpool_free(&pool);
	assert_int_equal(c.norder, 64);
	for (unsigned int i = 0; i < 64; i++)
		assert_int_equal(c.order[i], i);
}

static void
test_tpool_pending(void **state)
{
	struct tpool *pool = tpool_new(2, "idle");

	(void)state;
	assert_int_equal(tpool_pending(pool), 0);
	tpool_free(&pool);
}

/* RFC 5322 dates: English names, two-digit day, numeric zone; local time follows TZ. */
static void
test_rfc5322_date(void **state)
{
	char d[RFC5322_DATE_SIZE];
	const char *old = getenv("TZ");
	char *saved = old != NULL ? strdup(old) : NULL;

	(void)state;
	rfc5322_date(d, 0, true);
	assert_string_equal(d, "Thu, 01 Jan 1970 00:00:00 +0000");
	rfc5322_date(d, 1796624013, true);
	assert_string_equal(d, "Mon, 07 Dec 2026 06:13:33 +0000");
	rfc5322_date(d, 951782400, true); /* a leap day */
	assert_string_equal(d, "Tue, 29 Feb 2000 00:00:00 +0000");

	setenv("TZ", "<+0530>-5:30", 1);
	tzset();
	rfc5322_date(d, 1796624013, false);
	assert_string_equal(d, "Mon, 07 Dec 2026 11:43:33 +0530");
	setenv("TZ", "<-0930>9:30", 1);
	tzset();
	rfc5322_date(d, 1796624013, false);
	assert_string_equal(d, "Sun, 06 Dec 2026 20:43:33 -0930");
	rfc5322_date(d, 1796624013, true); /* UTC whatever the zone */
	assert_string_equal(d, "Mon, 07 Dec 2026 06:13:33 +0000");

	if (saved != NULL)
		setenv("TZ", saved, 1);
	else
		unsetenv("TZ");
	tzset();
	free(saved);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_max_enforced),
		cmocka_unit_test(test_buf_sticky_err),
		cmocka_unit_test(test_buf_printf_growth),
		cmocka_unit_test(test_buf_consume),
		cmocka_unit_test(test_str_copy),
		cmocka_unit_test(test_str_to_u64),
		cmocka_unit_test(test_str_to_uint),
		cmocka_unit_test(test_str_helpers),
		cmocka_unit_test(test_log_sanitize),
		cmocka_unit_test(test_tpool_runs_all),
		cmocka_unit_test(test_tpool_fifo_single_thread),
		cmocka_unit_test(test_tpool_pending),
		cmocka_unit_test(test_rfc5322_date),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
