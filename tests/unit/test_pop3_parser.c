/* POP3 parser (pop3/pop3_parser.c): the line reader with overlong lines, NUL, bare CR and LF and
 * input split at every offset and fed one byte at a time; a table of command lines with the
 * expected verb, arguments and reply; and the dot-stuffer for RETR and TOP, fed whole and at
 * every split point, which must give the same bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3/pop3_parser.h"

/* ---- lines ------------------------------------------------------------------------------------ */

/* Feeds input in pieces of `step` bytes (0: whole) and records every result as text:
 * "L:<line>" for a line, "E:<error>" for a refused one. Stops at a too-long line. */
static void
feed_all(const uint8_t *in, size_t len, size_t step, size_t max, struct buf *out)
{
	struct pop3_line *l = malloc(sizeof(*l));
	size_t off = 0;

	assert_non_null(l);
	pop3_line_init(l);
	while (off < len) {
		size_t n = step == 0 ? len - off : MIN(step, len - off), pos = 0;

		while (pos < n) {
			size_t used, left = n - pos;
			int ret = pop3_line_feed(l, in + off + pos, left, max, &used);

			assert_true(used <= left);
			pos += used;
			if (ret == 1) {
				struct span s = pop3_line_get(l);
				buf_append_str(out, "L:");
				buf_append(out, s.p, s.len);
				buf_append_str(out, "|");
			} else if (ret < 0) {
				buf_printf(out, "E:%s|", l->error);
				if (l->too_long) {
					/* Spent: the caller closes; every later feed fails too. */
					assert_int_equal(pop3_line_feed(l, (const uint8_t *)"x\n", 2, max,
					                                &used), -1);
					free(l);
					return;
				}
			} else {
				assert_int_equal(used, left); /* need more: all consumed */
			}
		}
		off += n;
	}
	free(l);
}

static const struct line_vec {
	const char *in;
	size_t len; /* 0: strlen */
	size_t max;
	const char *want;
} line_vecs[] = {
	{"STAT\r\n", 0, 1024, "L:STAT|"},
	{"STAT\n", 0, 1024, "L:STAT|"},
	{"STAT\r\nLIST 1\r\nQUIT\r\n", 0, 1024, "L:STAT|L:LIST 1|L:QUIT|"},
	{"\r\n\n", 0, 1024, "L:|L:|"},
	{"NO\0OP\r\nSTAT\r\n", 13, 1024, "E:NUL character in command|L:STAT|"},
	{"NO\rOP\r\nSTAT\r\n", 0, 1024, "E:CR without LF in command|L:STAT|"},
	{"NOOP\r\r\n", 0, 1024, "E:CR without LF in command|"},
	{"NOOP\r", 0, 1024, ""},                 /* incomplete: nothing yet */
	{"STAT", 0, 1024, ""},
	/* max counts the line end: 6 = "ABCD" CRLF */
	{"ABCD\r\n", 0, 6, "L:ABCD|"},
	{"ABCD\n", 0, 6, "L:ABCD|"},
	{"ABCDE\n", 0, 6, "L:ABCDE|"},
	{"ABCDE\r\n", 0, 6, "E:Line too long|"},
	{"ABCDEF\n", 0, 6, "E:Line too long|"},
	{"ABCDEFGHIJ", 0, 6, "E:Line too long|"}, /* refused before its end arrives */
	{"OK\r\nABCDEFGHIJ\r\nNOOP\r\n", 0, 6, "L:OK|E:Line too long|"},
};

static void
test_line_vectors(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(line_vecs); i++) {
		const struct line_vec *v = &line_vecs[i];
		size_t len = v->len ? v->len : strlen(v->in);
		struct buf want, got;

		buf_init(&want, 65536);
		buf_append_str(&want, v->want);
		/* Whole, one byte at a time, and in every step size: the same result. */
		for (size_t step = 0; step <= len; step++) {
			buf_init(&got, 65536);
			feed_all((const uint8_t *)v->in, len, step, v->max, &got);
			if (strcmp(buf_cstr(&got), buf_cstr(&want)) != 0)
				fail_msg("vector %zu step %zu: got \"%s\", want \"%s\"", i, step,
				         buf_cstr(&got), v->want);
			buf_deinit(&got);
		}
		buf_deinit(&want);
	}
}

/* Every split of a two-part input gives the same lines. */
static void
test_line_every_split(void **state)
{
	static const char in[] = "USER alice@example.test\r\nPASS a b c\r\nAUTH PLAIN\r\n=\r\n"
	                         "\r\nSTAT\nRETR 1\r\nNO\0OP\r\nQUIT\r\n";
	size_t len = sizeof(in) - 1;
	struct buf whole, part;

	buf_init(&whole, 65536);
	feed_all((const uint8_t *)in, len, 0, POP3_MAX_LINE, &whole);
	assert_string_equal(buf_cstr(&whole), "L:USER alice@example.test|L:PASS a b c|"
	                                      "L:AUTH PLAIN|L:=|L:|L:STAT|L:RETR 1|"
	                                      "E:NUL character in command|L:QUIT|");
	for (size_t split = 1; split < len; split++) {
		struct pop3_line *l = malloc(sizeof(*l));
		size_t off = 0;

		assert_non_null(l);
		pop3_line_init(l);
		buf_init(&part, 65536);
		/* Two feeds: [0, split) then the rest, each consumed line by line. */
		for (int round = 0; round < 2; round++) {
			size_t end = round == 0 ? split : len;
			while (off < end) {
				size_t used;
				int ret = pop3_line_feed(l, (const uint8_t *)in + off, end - off,
				                         POP3_MAX_LINE, &used);
				off += used;
				if (ret == 1) {
					struct span s = pop3_line_get(l);
					buf_append_str(&part, "L:");
					buf_append(&part, s.p, s.len);
					buf_append_str(&part, "|");
				} else if (ret < 0) {
					buf_printf(&part, "E:%s|", l->error);
				}
			}
		}
		assert_string_equal(buf_cstr(&part), buf_cstr(&whole));
		buf_deinit(&part);
		free(l);
	}
	buf_deinit(&whole);
}

static void
test_line_limits_and_wipe(void **state)
{
	struct pop3_line *l = malloc(sizeof(*l));
	uint8_t *big = malloc(POP3_MAX_SASL_LINE + 10);
	size_t used;

	assert_non_null(l);
	assert_non_null(big);
	/* The longest SASL line fits, one more byte does not. */
	memset(big, 'A', POP3_MAX_SASL_LINE + 10);
	big[POP3_MAX_SASL_LINE - 2] = '\r';
	big[POP3_MAX_SASL_LINE - 1] = '\n';
	pop3_line_init(l);
	assert_int_equal(pop3_line_feed(l, big, POP3_MAX_SASL_LINE, POP3_MAX_SASL_LINE, &used), 1);
	assert_int_equal(used, POP3_MAX_SASL_LINE);
	assert_int_equal(pop3_line_get(l).len, POP3_MAX_SASL_LINE - 2);
	/* A max beyond the buffer is clamped to it. */
	memset(big, 'A', POP3_MAX_SASL_LINE + 10);
	pop3_line_init(l);
	assert_int_equal(pop3_line_feed(l, big, POP3_MAX_SASL_LINE + 10, SIZE_MAX, &used), -1);
	assert_true(l->too_long);
	assert_int_equal(used, POP3_MAX_SASL_LINE - 1);
	/* The command limit: 1024 with CRLF. */
	memset(big, 'x', POP3_MAX_LINE);
	big[POP3_MAX_LINE - 2] = '\r';
	big[POP3_MAX_LINE - 1] = '\n';
	pop3_line_init(l);
	assert_int_equal(pop3_line_feed(l, big, POP3_MAX_LINE, POP3_MAX_LINE, &used), 1);
	big[POP3_MAX_LINE - 2] = 'x';
	big[POP3_MAX_LINE - 1] = 'x';
	big[POP3_MAX_LINE] = '\n';
	pop3_line_init(l);
	assert_int_equal(pop3_line_feed(l, big, POP3_MAX_LINE + 1, POP3_MAX_LINE, &used), -1);
	/* Wiping clears the bytes (passwords) and a spent reader stays spent. */
	pop3_line_init(l);
	assert_int_equal(pop3_line_feed(l, (const uint8_t *)"PASS secret\r\n", 13, 1024, &used), 1);
	pop3_line_wipe(l);
	assert_int_equal(l->len, 0);
	for (size_t i = 0; i < 13; i++)
		assert_int_equal(l->data[i], 0);
	free(big);
	free(l);
}

/* ---- commands --------------------------------------------------------------------------------- */

static const struct cmd_vec {
	const char *line;
	size_t len;          /* 0: strlen(line) */
	int ret;
	enum pop3_verb verb; /* ret == 0 */
	size_t nargs;
	uint32_t num0, num1;
	const char *rest;    /* USER/PASS: the rest; NULL: not checked */
	const char *error;   /* ret == -1 */
} cmd_vecs[] = {
	{"STAT", 0, 0, POP3_VERB_STAT, 0, 0, 0, NULL, NULL},
	{"stat", 0, 0, POP3_VERB_STAT, 0, 0, 0, NULL, NULL},
	{"StAt ", 0, 0, POP3_VERB_STAT, 0, 0, 0, NULL, NULL},
	{"STAT 1", 0, -1, 0, 0, 0, 0, NULL, "Syntax: STAT"},
	{"STATS", 0, -1, 0, 0, 0, 0, NULL, "Unknown command"},
	{"", 0, -1, 0, 0, 0, 0, NULL, "Empty command"},
	{" STAT", 0, -1, 0, 0, 0, 0, NULL, "Unknown command"},
	{"LIST", 0, 0, POP3_VERB_LIST, 0, 0, 0, NULL, NULL},
	{"LIST 1", 0, 0, POP3_VERB_LIST, 1, 1, 0, NULL, NULL},
	{"LIST 0", 0, 0, POP3_VERB_LIST, 1, 0, 0, NULL, NULL},
	{"LIST 007", 0, 0, POP3_VERB_LIST, 1, 7, 0, NULL, NULL},
	{"LIST 4294967295", 0, 0, POP3_VERB_LIST, 1, 4294967295u, 0, NULL, NULL},
	{"LIST 4294967296", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"LIST 99999999999", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"LIST -1", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"LIST +1", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"LIST 1 2", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"LIST  1", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"LIST 1x", 0, -1, 0, 0, 0, 0, NULL, "Syntax: LIST [message]"},
	{"RETR 12", 0, 0, POP3_VERB_RETR, 1, 12, 0, NULL, NULL},
	{"RETR", 0, -1, 0, 0, 0, 0, NULL, "Syntax: RETR message"},
	{"RETR ", 0, -1, 0, 0, 0, 0, NULL, "Syntax: RETR message"},
	{"DELE 3", 0, 0, POP3_VERB_DELE, 1, 3, 0, NULL, NULL},
	{"TOP 3 10", 0, 0, POP3_VERB_TOP, 2, 3, 10, NULL, NULL},
	{"top 3 0", 0, 0, POP3_VERB_TOP, 2, 3, 0, NULL, NULL},
	{"TOP 3", 0, -1, 0, 0, 0, 0, NULL, "Syntax: TOP message lines"},
	{"TOP 3 1 1", 0, -1, 0, 0, 0, 0, NULL, "Syntax: TOP message lines"},
	{"UIDL", 0, 0, POP3_VERB_UIDL, 0, 0, 0, NULL, NULL},
	{"UIDL 2", 0, 0, POP3_VERB_UIDL, 1, 2, 0, NULL, NULL},
	{"NOOP", 0, 0, POP3_VERB_NOOP, 0, 0, 0, NULL, NULL},
	{"RSET", 0, 0, POP3_VERB_RSET, 0, 0, 0, NULL, NULL},
	{"QUIT", 0, 0, POP3_VERB_QUIT, 0, 0, 0, NULL, NULL},
	{"CAPA", 0, 0, POP3_VERB_CAPA, 0, 0, 0, NULL, NULL},
	{"STLS", 0, 0, POP3_VERB_STLS, 0, 0, 0, NULL, NULL},
	{"USER alice@example.test", 0, 0, POP3_VERB_USER, 1, 0, 0, "alice@example.test", NULL},
	{"USER", 0, -1, 0, 0, 0, 0, NULL, "Syntax: USER name"},
	{"USER ", 0, -1, 0, 0, 0, 0, NULL, "Syntax: USER name"},
	{"USER j\xc3\xbcrgen@example.test", 0, 0, POP3_VERB_USER, 1, 0, 0,
	 "j\xc3\xbcrgen@example.test", NULL},
	{"PASS a b  c ", 0, 0, POP3_VERB_PASS, 1, 0, 0, "a b  c ", NULL},
	{"PASS  leading", 0, 0, POP3_VERB_PASS, 1, 0, 0, " leading", NULL},
	{"PASS \xe2\x82\xac", 0, 0, POP3_VERB_PASS, 1, 0, 0, "\xe2\x82\xac", NULL},
	{"PASS", 0, -1, 0, 0, 0, 0, NULL, "Syntax: PASS password"},
	{"PASS a\tb", 0, -1, 0, 0, 0, 0, NULL, "Control characters in command"},
	{"AUTH", 0, 0, POP3_VERB_AUTH, 0, 0, 0, NULL, NULL},
	{"AUTH PLAIN", 0, 0, POP3_VERB_AUTH, 1, 0, 0, NULL, NULL},
	{"AUTH PLAIN AGFAYgBj", 0, 0, POP3_VERB_AUTH, 2, 0, 0, NULL, NULL},
	{"AUTH PLAIN =", 0, 0, POP3_VERB_AUTH, 2, 0, 0, NULL, NULL},
	{"AUTH PLAIN a b", 0, -1, 0, 0, 0, 0, NULL, "Syntax: AUTH mechanism [initial-response]"},
	{"APOP alice 0123456789abcdef", 0, -1, 0, 0, 0, 0, NULL, "Unknown command"},
	{"NOOP\x7f", 0, -1, 0, 0, 0, 0, NULL, "Control characters in command"},
	{"NO\0OP", 5, -1, 0, 0, 0, 0, NULL, "Control characters in command"},
	{"LIST \xc3\xa9", 0, -1, 0, 0, 0, 0, NULL, "8-bit characters in command"},
	{"GET / HTTP/1.1", 0, -1, 0, 0, 0, 0, NULL, "Unknown command"},
};

static void
test_command_vectors(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(cmd_vecs); i++) {
		const struct cmd_vec *v = &cmd_vecs[i];
		size_t len = v->len ? v->len : strlen(v->line);
		uint8_t *line = malloc(len + 1); /* exact size: ASan sees reads past the end */
		struct pop3_cmd cmd;
		const char *error = NULL;
		int ret;

		assert_non_null(line);
		memcpy(line, v->line, len);
		ret = pop3_parse_command(line, len, &cmd, &error);
		if (ret != v->ret)
			fail_msg("vector %zu (%s): ret %d, want %d (%s)", i, v->line, ret, v->ret,
			         error ? error : "");
		if (ret == 0) {
			assert_int_equal(cmd.verb, v->verb);
			assert_int_equal(cmd.nargs, v->nargs);
			if (v->nargs >= 1 && v->verb != POP3_VERB_USER && v->verb != POP3_VERB_PASS &&
			    v->verb != POP3_VERB_AUTH)
				assert_int_equal(cmd.num[0], v->num0);
			if (v->nargs == 2 && v->verb == POP3_VERB_TOP)
				assert_int_equal(cmd.num[1], v->num1);
			if (v->rest != NULL) {
				assert_int_equal(cmd.rest.len, strlen(v->rest));
				assert_memory_equal(cmd.rest.p, v->rest, cmd.rest.len);
			}
			for (size_t a = 0; a < cmd.nargs; a++)
				assert_true(cmd.args[a].p >= line && cmd.args[a].p + cmd.args[a].len <=
				                                     line + len);
		} else {
			assert_non_null(error);
			assert_string_equal(error, v->error);
		}
		free(line);
	}
	assert_string_equal(pop3_verb_name(POP3_VERB_TOP), "TOP");
	assert_string_equal(pop3_verb_name(POP3_VERB_AUTH), "AUTH");
}

static void
test_command_auth_args(void **state)
{
	static const char line[] = "auth login YWxpY2U=";
	struct pop3_cmd cmd;
	const char *error;

	assert_int_equal(pop3_parse_command((const uint8_t *)line, strlen(line), &cmd, &error), 0);
	assert_int_equal(cmd.verb, POP3_VERB_AUTH);
	assert_int_equal(cmd.nargs, 2);
	assert_true(span_eq(cmd.args[0], "login"));
	assert_true(span_eq(cmd.args[1], "YWxpY2U="));
}

/* ---- dot-stuffing ----------------------------------------------------------------------------- */

static const struct stuff_vec {
	const char *in;
	bool top;
	uint64_t lines;
	const char *want;
} stuff_vecs[] = {
	{"A: b\r\n\r\nbody\r\n", false, 0, "A: b\r\n\r\nbody\r\n.\r\n"},
	{".\r\n", false, 0, "..\r\n.\r\n"},
	{"A: b\r\n\r\n.x\r\n..y\r\nz.\r\n.\r\n", false, 0,
	 "A: b\r\n\r\n..x\r\n...y\r\nz.\r\n..\r\n.\r\n"},
	{"A: b\r\n\r\nno end", false, 0, "A: b\r\n\r\nno end\r\n.\r\n"},
	{"", false, 0, ".\r\n"},
	{"A: b\r\nC: d\r\n\r\n1\r\n2\r\n3\r\n", true, 0, "A: b\r\nC: d\r\n\r\n.\r\n"},
	{"A: b\r\nC: d\r\n\r\n1\r\n2\r\n3\r\n", true, 2, "A: b\r\nC: d\r\n\r\n1\r\n2\r\n.\r\n"},
	{"A: b\r\n\r\n.1\r\n2\r\n", true, 1, "A: b\r\n\r\n..1\r\n.\r\n"},
	{"A: b\r\n\r\n1\r\n2\r\n", true, 10, "A: b\r\n\r\n1\r\n2\r\n.\r\n"},
	{"A: b\r\n\r\n1\r\n2", true, 10, "A: b\r\n\r\n1\r\n2\r\n.\r\n"},
	{"A: b\r\nC: only a header\r\n", true, 0, "A: b\r\nC: only a header\r\n.\r\n"},
	{"A: b\r\n \r\n\r\nx\r\n", true, 0, "A: b\r\n \r\n\r\n.\r\n"}, /* " " is no blank line */
	{"\r\nbody\r\n", true, 0, "\r\n.\r\n"},
};

static void
stuff_run(const struct stuff_vec *v, size_t split, struct buf *out)
{
	struct pop3_stuff st;
	size_t len = strlen(v->in), used;

	pop3_stuff_init(&st, v->top, v->lines);
	if (split == 0) {
		/* one byte at a time */
		for (size_t i = 0; i < len && !st.done; i++)
			assert_int_equal(pop3_stuff_feed(&st, (const uint8_t *)v->in + i, 1, out), 1);
	} else {
		used = pop3_stuff_feed(&st, (const uint8_t *)v->in, MIN(split, len), out);
		if (!st.done)
			assert_int_equal(used, MIN(split, len));
		if (!st.done && split < len)
			(void)pop3_stuff_feed(&st, (const uint8_t *)v->in + split, len - split, out);
	}
	pop3_stuff_finish(&st, out);
	assert_true(st.done);
}

static void
test_stuff_vectors(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(stuff_vecs); i++) {
		const struct stuff_vec *v = &stuff_vecs[i];
		size_t len = strlen(v->in);

		for (size_t split = 0; split <= len + 1; split++) {
			struct buf out;

			buf_init(&out, 65536);
			stuff_run(v, split, &out);
			if (strcmp(buf_cstr(&out), v->want) != 0)
				fail_msg("vector %zu split %zu: got \"%s\"", i, split, buf_cstr(&out));
			buf_deinit(&out);
		}
	}
}

/* The worst case stays within len * 4 / 3 + 2 + the terminator, as pop3_server sizes its buffer. */
static void
test_stuff_growth(void **state)
{
	static const char unit[] = ".\r\n";
	uint8_t in[3000];
	struct pop3_stuff st;
	struct buf out;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)unit[i % 3];
	buf_init(&out, 65536);
	pop3_stuff_init(&st, false, 0);
	assert_int_equal(pop3_stuff_feed(&st, in, sizeof(in), &out), sizeof(in));
	assert_true(out.len <= sizeof(in) * 4 / 3 + 2);
	assert_int_equal(out.err, 0);
	buf_deinit(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_vectors),
		cmocka_unit_test(test_line_every_split),
		cmocka_unit_test(test_line_limits_and_wipe),
		cmocka_unit_test(test_command_vectors),
		cmocka_unit_test(test_command_auth_args),
		cmocka_unit_test(test_stuff_vectors),
		cmocka_unit_test(test_stuff_growth),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
