/* SMTP client reply parser (smtp/smtp_client.c): a table of single- and multi-line replies,
 * valid and invalid, then every valid input cut at every offset: a prefix must ask for more
 * input (0) and never yield a different reply, and the whole must give the same result, as it
 * does when TCP delivers a reply in pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_client.h"

static const struct reply_vec {
	const char *in;
	int ret;            /* bytes of the first reply, 0 need more, -1 error; < -1: strlen */
	unsigned int code;
	unsigned int nlines;
	const char *first;  /* text of the first line */
	const char *last;   /* text of the last line */
} vecs[] = {
	{"250 ok\r\n", -2, 250, 1, "ok", "ok"},
	{"220 mx.example ESMTP ready\r\n", -2, 220, 1, "mx.example ESMTP ready",
	 "mx.example ESMTP ready"},
	{"250-mx.example\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 DSN\r\n", -2, 250, 4,
	 "mx.example", "DSN"},
	{"250\r\n", -2, 250, 1, "", ""},
	{"354 go\n", -2, 354, 1, "go", "go"},                   /* bare LF accepted */
	{"250-a\r\n250 b\r\n221 bye\r\n", 14, 250, 2, "a", "b"}, /* pipelined: first only */
	{"550-5.1.1 first\r\n550 5.1.1 second\r\n", -2, 550, 2, "5.1.1 first", "5.1.1 second"},
	{"250-a\r\n251 b\r\n", -1, 0, 0, NULL, NULL}, /* codes differ */
	{"25 ok\r\n", -1, 0, 0, NULL, NULL},
	{"abc ok\r\n", -1, 0, 0, NULL, NULL},
	{"250xok\r\n", -1, 0, 0, NULL, NULL},
	{"199 low\r\n", -1, 0, 0, NULL, NULL},
	{"600 high\r\n", -1, 0, 0, NULL, NULL},
	{"250 a\rb\r\n", -1, 0, 0, NULL, NULL},
	{"250 ok", 0, 0, 0, NULL, NULL},
	{"250-more\r\n", 0, 0, 0, NULL, NULL},
	{"", 0, 0, 0, NULL, NULL},
};

static bool
span_is(struct span s, const char *want)
{
	return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static void
test_reply_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		const struct reply_vec *v = &vecs[i];
		size_t len = strlen(v->in);
		int want = v->ret < -1 ? (int)len : v->ret;
		struct smtp_reply r;
		int got = smtp_reply_parse((const uint8_t *)v->in, len, &r);

		if (got != want)
			fail_msg("vector %zu \"%s\": got %d, want %d", i, v->in, got, want);
		if (got > 0) {
			assert_int_equal(r.code, v->code);
			assert_int_equal(r.nlines, v->nlines);
			assert_true(span_is(r.lines[0], v->first));
			assert_true(span_is(r.lines[r.nlines - 1], v->last));
		}
	}
}

static void
test_reply_every_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		const struct reply_vec *v = &vecs[i];
		size_t len = strlen(v->in);
		int want = v->ret < -1 ? (int)len : v->ret;

		if (want <= 0)
			continue;
		/* Every strict prefix of the reply needs more input; one byte at a time. */
		for (size_t cut = 0; cut < (size_t)want; cut++) {
			uint8_t *copy = malloc(cut + 1);
			struct smtp_reply r;
			int got;

			assert_non_null(copy);
			memcpy(copy, v->in, cut);
			got = smtp_reply_parse(copy, cut, &r);
			if (got != 0)
				fail_msg("vector %zu cut at %zu: got %d, want 0", i, cut, got);
			free(copy);
		}
	}
}

static void
test_reply_too_long(void **state)
{
	size_t len = SMTP_REPLY_MAX_BYTES + 100;
	uint8_t *big = malloc(len);
	struct smtp_reply r;

	(void)state;
	assert_non_null(big);
	/* Many continuation lines without an end: refused once past the limit. */
	for (size_t i = 0; i + 10 <= len; i += 10)
		memcpy(big + i, "250-xxxx\r\n", 10);
	assert_int_equal(smtp_reply_parse(big, len - len % 10, &r), -1);
	/* One endless line. */
	memset(big, 'x', len);
	memcpy(big, "250 ", 4);
	assert_int_equal(smtp_reply_parse(big, len, &r), -1);
	/* Many lines kept to SMTP_REPLY_MAX_LINES, the reply still parses. */
	{
		struct buf b;

		buf_init(&b, SMTP_REPLY_MAX_BYTES);
		for (int i = 0; i < 100; i++)
			assert_int_equal(buf_append_str(&b, "250-k\r\n"), 0);
		assert_int_equal(buf_append_str(&b, "250 end\r\n"), 0);
		assert_int_equal(smtp_reply_parse(b.data, b.len, &r), (int)b.len);
		assert_int_equal(r.nlines, SMTP_REPLY_MAX_LINES);
		buf_deinit(&b);
	}
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_table),
		cmocka_unit_test(test_reply_every_split),
		cmocka_unit_test(test_reply_too_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
