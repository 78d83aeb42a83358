/* IMAP command parser (imap/imap_parser.c): tables of valid and invalid commands with the
 * expected transcript of events (continuations, commands as a canonical dump, streamed literal
 * data, errors), each replayed whole, split at every offset, in three pieces and one octet at a
 * time, which must give the same events at the same input offsets (the server reads whatever TCP
 * delivers). Then limits (line, literal sizes, LITERAL-, nesting, arguments, memory held),
 * continuation and pipelining details, the argument helpers and sequence sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_parser.h"

/* ---- limits used by the vectors ------------------------------------------------------------ */

enum lim {
	L_PRE,     /* imap_parser_limits_default(false) */
	L_POST,    /* imap_parser_limits_default(true) */
	L_UTF8,    /* post-auth with UTF8=ACCEPT */
	L_STREAM,  /* post-auth, literals of 8 octets or more streamed */
	L_SMALL,   /* tight: 64-octet lines, depth 3, 8 arguments, 16-octet literals */
	L_PLUS,    /* post-auth with LITERAL+ */
	L_NONSYNC, /* post-auth without LITERAL+ or LITERAL- */
};

static void
limits_for(enum lim which, struct imap_parser_limits *l)
{
	imap_parser_limits_default(l, which != L_PRE);
	switch (which) {
	case L_UTF8:
		l->utf8 = true;
		break;
	case L_STREAM:
		l->stream_literal_min = 8;
		break;
	case L_SMALL:
		l->max_line = 64;
		l->max_command = 256;
		l->max_depth = 3;
		l->max_args = 8;
		l->max_literal = 16;
		l->max_append_literal = 32;
		break;
	case L_PLUS:
		l->max_nonsync_literal = UINT64_MAX;
		break;
	case L_NONSYNC:
		l->max_nonsync_literal = 0;
		break;
	default:
		break;
	}
}

/* ---- canonical dump ------------------------------------------------------------------------ */

static void
dump_bytes(struct buf *b, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)s[i];

		if (c < 0x20 || c >= 0x7F || c == '\\' || c == '"')
			buf_printf(b, "\\x%02x", c);
		else
			buf_append_byte(b, c);
	}
}

static void
dump_arg(struct buf *b, const struct imap_arg *a)
{
	switch (a->type) {
	case IMAP_ARG_ATOM:
	case IMAP_ARG_NIL:
		buf_append(b, a->str, a->len);
		break;
	case IMAP_ARG_NUMBER:
		buf_printf(b, "#%s", a->str);
		break;
	case IMAP_ARG_QUOTED:
		buf_append_byte(b, '"');
		dump_bytes(b, a->str, a->len);
		buf_append_byte(b, '"');
		break;
	case IMAP_ARG_LITERAL:
	case IMAP_ARG_LITERAL8:
		buf_printf(b, "%s{%zu%s", a->type == IMAP_ARG_LITERAL8 ? "~" : "", a->len,
		           (a->flags & IMAP_ARG_FLAG_NONSYNC) ? "+" : "");
		if (a->flags & IMAP_ARG_FLAG_STREAMED) {
			buf_printf(b, " S%llu}", (unsigned long long)a->num);
		} else {
			buf_append_byte(b, '}');
			dump_bytes(b, a->str, a->len);
		}
		break;
	case IMAP_ARG_LIST:
		buf_append_byte(b, '(');
		for (size_t i = 0; i < a->count; i++) {
			if (i > 0)
				buf_append_byte(b, ' ');
			dump_arg(b, &a->list[i]);
		}
		buf_append_byte(b, ')');
		break;
	}
}

static void
dump_command(struct buf *b, const struct imap_command *cmd)
{
	buf_printf(b, "%s %s%s", cmd->tag, cmd->uid ? "UID " : "", cmd->name);
	for (size_t i = 0; i < cmd->nargs; i++) {
		buf_append_byte(b, ' ');
		dump_arg(b, &cmd->args[i]);
	}
}

static const char *
code_name(enum imap_parse_error e)
{
	switch (e) {
	case IMAP_PARSE_ERR_NONE:
		return "NONE";
	case IMAP_PARSE_ERR_SYNTAX:
		return "SYNTAX";
	case IMAP_PARSE_ERR_CHAR:
		return "CHAR";
	case IMAP_PARSE_ERR_LINE_TOO_LONG:
		return "LINE";
	case IMAP_PARSE_ERR_TOO_BIG:
		return "TOOBIG";
	case IMAP_PARSE_ERR_LIMIT:
		return "LIMIT";
	}
	return "?";
}

/* ---- the driver ---------------------------------------------------------------------------- */

#define MAX_STREAMED 4

struct transcript {
	struct buf plain;  /* events, one a line */
	struct buf detail; /* the same with the input offset of each */
	struct buf streamed[MAX_STREAMED];
};

static void
transcript_init(struct transcript *t)
{
	buf_init(&t->plain, 1 << 20);
	buf_init(&t->detail, 1 << 20);
	for (size_t i = 0; i < MAX_STREAMED; i++)
		buf_init(&t->streamed[i], 1 << 20);
}

static void
transcript_deinit(struct transcript *t)
{
	buf_deinit(&t->plain);
	buf_deinit(&t->detail);
	for (size_t i = 0; i < MAX_STREAMED; i++)
		buf_deinit(&t->streamed[i]);
}

static void
event(struct transcript *t, const char *ev, size_t pos)
{
	if (t->plain.len > 0)
		buf_append_byte(&t->plain, '\n');
	buf_append_str(&t->plain, ev);
	buf_printf(&t->detail, "%s @%zu\n", ev, pos);
}

/* Streamed literal data is compared whole: chunk boundaries follow the input's. */
static void
flush_streamed(struct transcript *t, size_t pos)
{
	for (size_t i = 0; i < MAX_STREAMED; i++) {
		struct buf ev;

		if (t->streamed[i].len == 0)
			continue;
		buf_init(&ev, 1 << 20);
		buf_printf(&ev, "S%zu=", i);
		dump_bytes(&ev, (const char *)t->streamed[i].data, t->streamed[i].len);
		event(t, buf_cstr(&ev), pos);
		buf_deinit(&ev);
		buf_reset(&t->streamed[i]);
	}
}

/* Feeds in[0..len) in pieces ending at cuts[] (ascending, the last is len), as a server does:
 * each piece is fed until consumed, events recorded, the parser reset after each command and
 * each recoverable error. Stops at a fatal error. */
static void
run_pieces(enum lim which, const uint8_t *in, size_t len, const size_t *cuts, size_t ncuts,
           struct transcript *t)
{
	struct imap_parser_limits lim;
	struct imap_parser *p;
	size_t pos = 0;
	bool stop = false;

	limits_for(which, &lim);
	p = imap_parser_new(&lim);
	for (size_t k = 0; k < ncuts && !stop; k++) {
		size_t end = cuts[k];

		while (pos < end && !stop) {
			size_t n = SIZE_MAX;
			int r = imap_parser_feed(p, in + pos, end - pos, &n);
			const struct imap_literal_chunk *ch;
			const struct imap_command *cmd;
			struct buf ev;

			assert_true(n <= end - pos);
			pos += n;
			buf_init(&ev, 1 << 20);
			switch (r) {
			case IMAP_PARSE_MORE:
				assert_int_equal(pos, end);
				assert_null(imap_parser_command(p));
				break;
			case IMAP_PARSE_CONTINUATION:
				assert_int_equal(in[pos - 1], '\n');
				cmd = imap_parser_command(p);
				assert_non_null(cmd);
				event(t, "+", pos);
				break;
			case IMAP_PARSE_LITERAL_DATA:
				ch = imap_parser_literal_chunk(p);
				assert_non_null(ch);
				assert_true(ch->len > 0 && ch->len <= n);
				assert_ptr_equal(ch->data + ch->len, in + pos);
				assert_true(ch->index < MAX_STREAMED);
				assert_int_equal(ch->offset, t->streamed[ch->index].len);
				assert_true(ch->offset + ch->len <= ch->size);
				assert_int_equal(ch->last, ch->offset + ch->len == ch->size);
				buf_append(&t->streamed[ch->index], ch->data, ch->len);
				assert_non_null(imap_parser_command(p));
				break;
			case IMAP_PARSE_COMMAND:
				assert_int_equal(in[pos - 1], '\n');
				cmd = imap_parser_command(p);
				assert_non_null(cmd);
				buf_append_str(&ev, "C ");
				dump_command(&ev, cmd);
				event(t, buf_cstr(&ev), pos);
				flush_streamed(t, pos);
				/* Feeding again without a reset consumes nothing. */
				assert_int_equal(imap_parser_feed(p, in + pos, len - pos, &n),
				                 IMAP_PARSE_COMMAND);
				assert_int_equal(n, 0);
				imap_parser_reset(p);
				break;
			case IMAP_PARSE_ERROR: {
				enum imap_parse_error code;
				bool fatal;
				const char *msg = imap_parser_error(p, &code, &fatal);
				const char *tag = imap_parser_tag(p);

				assert_null(imap_parser_command(p));
				buf_printf(&ev, "E %s %s %s %s", tag != NULL ? tag : "*",
				           code_name(code), fatal ? "fatal" : "-", msg);
				event(t, buf_cstr(&ev), pos);
				for (size_t i = 0; i < MAX_STREAMED; i++)
					buf_reset(&t->streamed[i]); /* the caller drops them */
				if (fatal)
					stop = true;
				else
					imap_parser_reset(p);
				break;
			}
			default:
				fail_msg("unexpected status %d", r);
			}
			buf_deinit(&ev);
		}
	}
	imap_parser_free(&p);
	assert_null(p);
}

static void
run_whole(enum lim which, const uint8_t *in, size_t len, struct transcript *t)
{
	run_pieces(which, in, len, &len, 1, t);
}

/* Checks that every way of splitting in gives the transcript of the whole feed. */
static void
check_splits(enum lim which, const uint8_t *in, size_t len, struct transcript *want)
{
	size_t cuts[3];
	size_t *bytes;

	for (size_t k = 1; k < len; k++) {
		struct transcript t;

		transcript_init(&t);
		cuts[0] = k;
		cuts[1] = len;
		run_pieces(which, in, len, cuts, 2, &t);
		if (strcmp(buf_cstr(&t.detail), buf_cstr(&want->detail)) != 0)
			fail_msg("split at %zu:\n%s\nwhole:\n%s", k, buf_cstr(&t.detail),
			         buf_cstr(&want->detail));
		transcript_deinit(&t);
	}
	/* Three pieces: every pair of cuts for short inputs, a sample for long ones. */
	for (size_t a = 1; a < len; a += len <= 96 ? 1 : 7) {
		for (size_t b = a + 1; b < len; b += len <= 96 ? 1 : 5) {
			struct transcript t;

			transcript_init(&t);
			cuts[0] = a;
			cuts[1] = b;
			cuts[2] = len;
			run_pieces(which, in, len, cuts, 3, &t);
			if (strcmp(buf_cstr(&t.detail), buf_cstr(&want->detail)) != 0)
				fail_msg("split at %zu,%zu:\n%s", a, b, buf_cstr(&t.detail));
			transcript_deinit(&t);
		}
	}
	/* One octet at a time. */
	bytes = malloc((len > 0 ? len : 1) * sizeof(*bytes));
	assert_non_null(bytes);
	for (size_t k = 0; k < len; k++)
		bytes[k] = k + 1;
	{
		struct transcript t;

		transcript_init(&t);
		run_pieces(which, in, len, bytes, len, &t);
		if (strcmp(buf_cstr(&t.detail), buf_cstr(&want->detail)) != 0)
			fail_msg("byte at a time:\n%s", buf_cstr(&t.detail));
		transcript_deinit(&t);
	}
	free(bytes);
}

/* ---- vectors ------------------------------------------------------------------------------- */

/* A vector holding NULs: its length from sizeof. */
#define BIN(s) s, sizeof(s) - 1

struct vec {
	enum lim lim;
	const char *in;
	size_t len; /* 0: strlen(in) */
	const char *want;
};

static const struct vec valid_vecs[] = {
	/* LOGIN: quoted, synchronising literals (one continuation each), LITERAL- */
	{L_PRE, BIN("a1 LOGIN \"user\" \"pass word\"\r\n"), "C a1 LOGIN \"user\" \"pass word\""},
	{L_PRE, BIN("a2 LOGIN {4}\r\nuser {4}\r\npass\r\n"), "+\n+\nC a2 LOGIN {4}user {4}pass"},
	{L_PRE, BIN("a3 login {4+}\r\nuser {9+}\r\np\"ss\r\n{x}\r\n"),
	 "C a3 LOGIN {4+}user {9+}p\\x22ss\\x0d\\x0a{x}"},
	{L_PRE, BIN("a4 LOGIN alice \"p\\\\a\\\"ss\"\r\n"), "C a4 LOGIN alice \"p\\x5ca\\x22ss\""},
	{L_PRE, BIN("a5 LOGIN \"\" {0}\r\n\r\n"), "+\nC a5 LOGIN \"\" {0}"},
	{L_PRE, BIN("a6 LOGIN {0+}\r\n {0}\r\n\r\n"), "+\nC a6 LOGIN {0+} {0}"},
	/* simple commands, case, tags */
	{L_PRE, BIN("a NOOP\r\n"), "C a NOOP"},
	{L_PRE, BIN("tag.1 capability\r\n"), "C tag.1 CAPABILITY"},
	{L_PRE, BIN("a] NOOP\r\n"), "C a] NOOP"},
	{L_PRE, BIN("~!#$&'-./:;<=>?@[]^_`|} NOOP\r\n"), "C ~!#$&'-./:;<=>?@[]^_`|} NOOP"},
	{L_POST, BIN("a SELECT INBOX\r\n"), "C a SELECT INBOX"},
	{L_POST, BIN("a SELECT [Gmail]/Sent\r\n"), "C a SELECT [Gmail]/Sent"},
	{L_POST, BIN("a select \"Sent Items\" (CONDSTORE)\r\n"),
	 "C a SELECT \"Sent Items\" (CONDSTORE)"},
	/* FETCH with sections, header lists and partials */
	{L_POST,
	 BIN("a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100> BODY[] UID)\r\n"),
	 "C a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100> BODY[] UID)"},
	{L_POST, BIN("a FETCH 2 body[header.fields.not (\"X-A\" \"B\\\"C\")]\r\n"),
	 "C a FETCH #2 body[header.fields.not (\"X-A\" \"B\\\"C\")]"},
	{L_POST, BIN("a FETCH 1 (BODY[1.2.MIME] BODY[TEXT]<0.10> BINARY.SIZE[1] RFC822.SIZE)\r\n"),
	 "C a FETCH #1 (BODY[1.2.MIME] BODY[TEXT]<0.10> BINARY.SIZE[1] RFC822.SIZE)"},
	{L_POST, BIN("a FETCH 1 BODY[HEADER.FIELDS (A])]\r\n"),
	 "C a FETCH #1 BODY[HEADER.FIELDS (A])]"},
	{L_POST, BIN("a FETCH 1 (BODY[] BODY[HEADER.FIELDS ( A  B )])\r\n"),
	 "C a FETCH #1 (BODY[] BODY[HEADER.FIELDS ( A  B )])"},
	{L_POST, BIN("a UID FETCH 1,3:5 (UID BINARY.PEEK[1.2]<0.10>) (CHANGEDSINCE 12345)\r\n"),
	 "C a UID FETCH 1,3:5 (UID BINARY.PEEK[1.2]<0.10>) (CHANGEDSINCE #12345)"},
	{L_POST, BIN("a uid fetch 1 flags\r\n"), "C a UID FETCH #1 flags"},
	{L_POST, BIN("a FETCH 1 x[y z]\r\n"), "C a FETCH #1 x[y z]"},
	/* STORE, SEARCH */
	{L_POST, BIN("a STORE 2:4 +FLAGS.SILENT (\\Seen \\Deleted $Junk)\r\n"),
	 "C a STORE 2:4 +FLAGS.SILENT (\\Seen \\Deleted $Junk)"},
	{L_POST, BIN("a UID STORE * FLAGS ()\r\n"), "C a UID STORE * FLAGS ()"},
	{L_POST,
	 "a SEARCH CHARSET UTF-8 OR (FROM \"bob\" NOT SEEN) (OR DELETED ANSWERED) UID 1:* "
	 "SINCE 1-Feb-1994 NOT (LARGER 1000)\r\n",
	 0,
	 "C a SEARCH CHARSET UTF-8 OR (FROM \"bob\" NOT SEEN) (OR DELETED ANSWERED) UID 1:* "
	 "SINCE 1-Feb-1994 NOT (LARGER #1000)"},
	{L_POST, BIN("a SEARCH SUBJECT {6}\r\nh\xc3\xa9llo\r\n"),
	 "+\nC a SEARCH SUBJECT {6}h\\xc3\\xa9llo"},
	/* APPEND: flags, date-time, literal; literal8; MULTIAPPEND */
	{L_POST,
	 BIN("a APPEND INBOX (\\Seen) \"05-Jan-2024 10:00:00 +0100\" {12}\r\n"
	     "Hi\r\n\r\n{3}\r\nx\r\n"),
	 "+\nC a APPEND INBOX (\\Seen) \"05-Jan-2024 10:00:00 +0100\" "
	    "{12}Hi\\x0d\\x0a\\x0d\\x0a{3}\\x0d\\x0ax"},
	{L_POST, BIN("a APPEND INBOX ~{5}\r\nab\0cd\r\n"), "+\nC a APPEND INBOX ~{5}ab\\x00cd"},
	{L_POST, BIN("a APPEND INBOX ~{3+}\r\n\0\0\0\r\n"),
	 "C a APPEND INBOX ~{3+}\\x00\\x00\\x00"},
	{L_POST, BIN("a APPEND INBOX (\\Seen) {1}\r\nx (\\Draft) {1+}\r\ny\r\n"),
	 "+\nC a APPEND INBOX (\\Seen) {1}x (\\Draft) {1+}y"},
	/* LIST patterns */
	{L_POST, BIN("a LIST \"\" \"%\"\r\n"), "C a LIST \"\" \"%\""},
	{L_POST, BIN("a LIST \"\" %\r\n"), "C a LIST \"\" %"},
	{L_POST, BIN("a LIST \"\" INBOX.*\r\n"), "C a LIST \"\" INBOX.*"},
	{L_POST, BIN("a lsub \"\" *\r\n"), "C a LSUB \"\" *"},
	{L_POST, BIN("a LIST (SUBSCRIBED) \"\" (a* %b) RETURN (CHILDREN)\r\n"),
	 "C a LIST (SUBSCRIBED) \"\" (a* %b) RETURN (CHILDREN)"},
	/* nested lists, NIL, numbers */
	{L_POST, BIN("a X (a (b (c)) () NIL nil) ((()))\r\n"),
	 "C a X (a (b (c)) () NIL nil) ((()))"},
	{L_POST, BIN("a ID (\"name\" \"x\" \"version\" NIL)\r\n"),
	 "C a ID (\"name\" \"x\" \"version\" NIL)"},
	{L_POST,
	 BIN("a X 0 4294967295 4294967296 9223372036854775807 9223372036854775808 007 -1\r\n"),
	 "C a X #0 #4294967295 #4294967296 #9223372036854775807 9223372036854775808 #007 -1"},
	{L_POST, BIN("a X 18446744073709551616 NILS NI\r\n"),
	 "C a X 18446744073709551616 NILS NI"},
	/* spaces, "~" atoms */
	{L_POST, BIN("a NOOP \r\n"), "C a NOOP"},
	{L_POST, BIN("a X  a   b \r\n"), "C a X a b"},
	{L_POST, BIN("a X ( a b ) ( )\r\n"), "C a X (a b) ()"},
	{L_POST, BIN("a X ~foo ~ (~)\r\n"), "C a X ~foo ~ (~)"},
	{L_POST, BIN("a X \"a\\\\\" {1}\r\n\\\r\n"), "+\nC a X \"a\\x5c\" {1}\\x5c"},
	/* UTF-8 in quoted strings with UTF8=ACCEPT */
	{L_UTF8, BIN("a SELECT \"Entw\xc3\xbcrfe \xe2\x82\xac \xf0\x9f\x98\x80\"\r\n"),
	 "C a SELECT \"Entw\\xc3\\xbcrfe \\xe2\\x82\\xac \\xf0\\x9f\\x98\\x80\""},
	{L_UTF8, BIN("a SELECT \"\xed\x9f\xbf\xef\xbf\xbf\xf4\x8f\xbf\xbf\"\r\n"),
	 "C a SELECT \"\\xed\\x9f\\xbf\\xef\\xbf\\xbf\\xf4\\x8f\\xbf\\xbf\""},
	/* pipelining */
	{L_PRE, BIN("a NOOP\r\nb LOGIN x y\r\nc LOGOUT\r\n"),
	 "C a NOOP\nC b LOGIN x y\nC c LOGOUT"},
	{L_PRE, BIN("a LOGIN {1}\r\nx y\r\nb NOOP\r\n"), "+\nC a LOGIN {1}x y\nC b NOOP"},
	/* streamed literals: chunks, continuation, in-memory ones beside them */
	{L_STREAM, BIN("a APPEND INBOX {10}\r\n0123456789 {2}\r\nab\r\n"),
	 "+\n+\nC a APPEND INBOX {10 S0} {2}ab\nS0=0123456789"},
	{L_STREAM, BIN("a APPEND INBOX ~{8+}\r\n\0\r\n\0\r\n\0\r (x) {8}\r\n\r\n\r\n\r\n\r\n\r\n"),
	 "+\nC a APPEND INBOX ~{8+ S0} (x) {8 S1}\n"
	 "S0=\\x00\\x0d\\x0a\\x00\\x0d\\x0a\\x00\\x0d\n"
	 "S1=\\x0d\\x0a\\x0d\\x0a\\x0d\\x0a\\x0d\\x0a"},
	/* LITERAL+ and LITERAL- at the 4096 boundary are in test_literal_minus */
};

static const struct vec invalid_vecs[] = {
	/* empty lines, tags, command names */
	{L_PRE, BIN("\r\n"), "E * SYNTAX - Empty command"},
	{L_PRE, BIN(" a NOOP\r\n"), "E * SYNTAX - Missing tag"},
	{L_PRE, BIN("a\r\n"), "E a SYNTAX - Missing command"},
	{L_PRE, BIN("a  NOOP\r\n"), "E a SYNTAX - Missing command"},
	{L_PRE, BIN("+a NOOP\r\n"), "E * SYNTAX - Invalid character in tag"},
	{L_PRE, BIN("a+ NOOP\r\n"), "E * SYNTAX - Invalid character in tag"},
	{L_PRE, BIN("* NOOP\r\n"), "E * SYNTAX - Invalid character in tag"},
	{L_PRE, BIN("a(b NOOP\r\n"), "E * SYNTAX - Invalid character in tag"},
	{L_PRE, BIN("a\"b NOOP\r\n"), "E * SYNTAX - Invalid character in tag"},
	{L_PRE, BIN("a\tNOOP\r\n"), "E * SYNTAX - Invalid character in tag"},
	{L_PRE, BIN("\xc3\xa9 NOOP\r\n"), "E * CHAR - 8-bit octet in command text"},
	{L_PRE, BIN("a NO]OP\r\n"), "E a SYNTAX - Invalid character in command name"},
	{L_PRE, BIN("a NO*OP\r\n"), "E a SYNTAX - Invalid character in command name"},
	{L_PRE, BIN("a X[Y]\r\n"), "E a SYNTAX - Invalid character in command name"},
	{L_PRE, BIN("a NOOP(\r\n"), "E a SYNTAX - Invalid character in command name"},
	{L_PRE, BIN("a UID\r\n"), "E a SYNTAX - Missing command after UID"},
	{L_PRE, BIN("a UID \r\n"), "E a SYNTAX - Missing command"},
	/* line ends, NUL */
	{L_PRE, BIN("a NOOP\n"), "E a CHAR - Line must end with CRLF"},
	{L_PRE, BIN("\n"), "E * CHAR - Line must end with CRLF"},
	{L_PRE, BIN("a NOOP\rx\r\n"), "E a CHAR - CR not followed by LF"},
	{L_PRE, BIN("a NOOP\r\r\n"), "E a CHAR - CR not followed by LF"},
	{L_PRE, BIN("a LOGIN a\rb c\r\nb NOOP\r\n"),
	 "E a CHAR - CR not followed by LF\nC b NOOP"},
	{L_PRE, BIN("a LOGIN a\nb NOOP\r\n"), "E a CHAR - Line must end with CRLF\nC b NOOP"},
	{L_PRE, BIN("a NO\0OP\r\n"), "E a CHAR - NUL octet in command"},
	{L_PRE, BIN("a\0 NOOP\r\n"), "E * CHAR - NUL octet in command"},
	{L_PRE, BIN("a LOGIN x\0 y\r\n"), "E a CHAR - NUL octet in command"},
	{L_PRE, BIN("a LOGIN \"us\0er\" x\r\n"), "E a CHAR - NUL octet in command"},
	{L_PRE, BIN("a LOGIN \"user\r\n"), "E a SYNTAX - Missing '\"'"},
	{L_PRE, BIN("a LOGIN \"user\nb NOOP\r\n"), "E a CHAR - Line must end with CRLF\nC b NOOP"},
	{L_PRE, BIN("a LOGIN \"a\\x\" b\r\n"), "E a SYNTAX - Invalid escape in quoted string"},
	{L_PRE, BIN("a LOGIN \"caf\xc3\xa9\" x\r\n"), "E a CHAR - 8-bit octet in quoted string"},
	/* UTF-8: overlong, surrogate, above U+10FFFF, truncated, stray continuation */
	{L_UTF8, BIN("a SELECT \"\xc0\xaf\"\r\n"), "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT \"\xe0\x80\xaf\"\r\n"), "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT \"\xed\xa0\x80\"\r\n"), "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT \"\xf4\x90\x80\x80\"\r\n"),
	 "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT \"\xc3\"\r\n"), "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT \"\x80\"\r\n"), "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT \"\xf8\x88\x80\x80\x80\"\r\n"),
	 "E a CHAR - Invalid UTF-8 in quoted string"},
	{L_UTF8, BIN("a SELECT caf\xc3\xa9\r\n"), "E a CHAR - 8-bit octet in command text"},
	/* atoms */
	{L_POST, BIN("a SELECT a*b\r\n"), "E a SYNTAX - Wildcards not allowed in this atom"},
	{L_POST, BIN("a SELECT a%\r\n"), "E a SYNTAX - Wildcards not allowed in this atom"},
	{L_POST, BIN("a FETCH 1:% FLAGS\r\n"), "E a SYNTAX - Wildcards not allowed in this atom"},
	{L_POST, BIN("a STORE 1 FLAGS (\\*)\r\n"),
	 "E a SYNTAX - Wildcards not allowed in this atom"},
	{L_POST, BIN("a X a\\b\r\n"), "E a SYNTAX - Invalid '\\' in atom"},
	{L_POST, BIN("a X \\\r\n"), "E a SYNTAX - Empty flag name"},
	{L_POST, BIN("a X (\\)\r\n"), "E a SYNTAX - Empty flag name"},
	{L_POST, BIN("a X a\"b\"\r\n"), "E a SYNTAX - Invalid character in atom"},
	{L_POST, BIN("a X a{5}\r\n"), "E a SYNTAX - Invalid character in atom"},
	{L_POST, BIN("a X a(b)\r\n"), "E a SYNTAX - Invalid character in atom"},
	{L_POST, BIN("a X a\tb\r\n"), "E a SYNTAX - Invalid character in atom"},
	{L_POST, BIN("a X a\x7f\r\n"), "E a SYNTAX - Invalid character in atom"},
	{L_POST, BIN("a X \x01\r\n"), "E a SYNTAX - Invalid character in argument"},
	/* sections */
	{L_POST, BIN("a FETCH 1 BODY[HEADER\r\n"), "E a SYNTAX - Missing ']'"},
	{L_POST, BIN("a FETCH 1 BODY[HEADER.FIELDS (A (B))]\r\n"),
	 "E a SYNTAX - Nested list in section"},
	{L_POST, BIN("a FETCH 1 BODY[HEADER.FIELDS A)]\r\n"),
	 "E a SYNTAX - Unexpected ')' in section"},
	{L_POST, BIN("a FETCH 1 BODY[1[2]]\r\n"), "E a SYNTAX - Invalid character in section"},
	{L_POST, BIN("a FETCH 1 BODY[*]\r\n"), "E a SYNTAX - Invalid character in section"},
	{L_POST, BIN("a FETCH 1 BODY[\"x\r\n"), "E a SYNTAX - Missing '\"'"},
	/* a literal in a section is refused; the client waits for a continuation it never gets */
	{L_POST, BIN("a FETCH 1 BODY[HEADER.FIELDS {3}\r\nb NOOP\r\n"),
	 "E a SYNTAX - Literal not allowed in section\nC b NOOP"},
	/* lists */
	{L_POST, BIN("a X (a\r\n"), "E a SYNTAX - Missing ')'"},
	{L_POST, BIN("a X (a \r\n"), "E a SYNTAX - Missing ')'"},
	{L_POST, BIN("a X (\"a\"\r\n"), "E a SYNTAX - Missing ')'"},
	{L_POST, BIN("a X a)\r\n"), "E a SYNTAX - Unexpected ')'"},
	{L_POST, BIN("a X )\r\n"), "E a SYNTAX - Unexpected ')'"},
	{L_POST, BIN("a X (a)b\r\n"), "E a SYNTAX - Missing space after argument"},
	{L_POST, BIN("a X (a)(b)\r\n"), "E a SYNTAX - Missing space after argument"},
	{L_POST, BIN("a X \"a\"b\r\n"), "E a SYNTAX - Missing space after argument"},
	{L_POST, BIN("a X {1}\r\nab\r\n"), "+\nE a SYNTAX - Missing space after argument"},
	/* literal headers */
	{L_POST, BIN("a X {5}x\r\n"), "E a SYNTAX - Missing CRLF after literal size"},
	{L_POST, BIN("a X {5} \r\n"), "E a SYNTAX - Missing CRLF after literal size"},
	{L_POST, BIN("a X {}\r\n"), "E a SYNTAX - Invalid literal size"},
	{L_POST, BIN("a X {+}\r\n"), "E a SYNTAX - Invalid literal size"},
	{L_POST, BIN("a X {5a}\r\n"), "E a SYNTAX - Invalid literal size"},
	{L_POST, BIN("a X {-1}\r\n"), "E a SYNTAX - Invalid literal size"},
	{L_POST, BIN("a X {5++}\r\n"), "E a SYNTAX - Invalid literal size"},
	{L_POST, BIN("a X {5}\rx\r\nb NOOP\r\n"), "E a CHAR - CR not followed by LF\nC b NOOP"},
	{L_POST, BIN("a X ~x{1}\r\n"), "E a SYNTAX - Invalid character in atom"},
	{L_POST, BIN("a X ~{1\r\n"), "E a SYNTAX - Invalid literal size"},
	/* NUL in a literal (use literal8): the data is consumed, the command refused */
	{L_POST, BIN("a X {3+}\r\na\0b\r\nb NOOP\r\n"),
	 "E a CHAR - NUL octet in literal (use literal8)\nC b NOOP"},
	{L_POST, BIN("a X {3}\r\na\0b (x {2+}\r\nyz)\r\nb NOOP\r\n"),
	 "+\nE a CHAR - NUL octet in literal (use literal8)\nC b NOOP"},
	{L_STREAM, BIN("a APPEND INBOX {10}\r\n0123\0" "56789\r\nb NOOP\r\n"),
	 "+\nE a CHAR - NUL octet in literal (use literal8)\nC b NOOP"},
	/* after an error, the non-synchronising literal the line announces is skipped: its data is
	 * never taken for a command (command injection) */
	{L_POST, BIN("a X ) {16+}\r\nb DELETE INBOX\r\n\r\nc NOOP\r\n"),
	 "E a SYNTAX - Unexpected ')'\nC c NOOP"},
	{L_POST, BIN("a X ) {2+}\r\nab {3+}\r\n\r\n\r x\r\nc NOOP\r\n"),
	 "E a SYNTAX - Unexpected ')'\nC c NOOP"},
	{L_POST, BIN("a X ) {0+}\r\n\r\nc NOOP\r\n"), "E a SYNTAX - Unexpected ')'\nC c NOOP"},
	/* a synchronising one is not sent: the client waits for a continuation */
	{L_POST, BIN("a X ) {5}\r\nb NOOP\r\n"), "E a SYNTAX - Unexpected ')'\nC b NOOP"},
	/* and one we would never read loses the connection */
	{L_POST, BIN("a X ) {4097+}\r\nb NOOP\r\n"), "E a SYNTAX fatal Unexpected ')'"},
	{L_POST, BIN("a X ) {99999999999999999999999+}\r\nb NOOP\r\n"),
	 "E a SYNTAX fatal Unexpected ')'"},
};

static void
check_vector(const struct vec *v, size_t idx)
{
	size_t len = v->len > 0 ? v->len : strlen(v->in);
	struct transcript t;

	transcript_init(&t);
	run_whole(v->lim, (const uint8_t *)v->in, len, &t);
	if (strcmp(buf_cstr(&t.plain), v->want) != 0)
		fail_msg("vector %zu %s\n got: %s\nwant: %s", idx, v->in, buf_cstr(&t.plain),
		         v->want);
	check_splits(v->lim, (const uint8_t *)v->in, len, &t);
	transcript_deinit(&t);
}

static void
test_valid_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(valid_vecs); i++)
		check_vector(&valid_vecs[i], i);
}

static void
test_invalid_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(invalid_vecs); i++)
		check_vector(&invalid_vecs[i], i);
}

/* ---- one command at a time ----------------------------------------------------------------- */

/* Feeds s whole; returns the status and leaves the parser as it is. */
static int
feed_str(struct imap_parser *p, const char *s, size_t *consumed_r)
{
	size_t n;
	int r = imap_parser_feed(p, (const uint8_t *)s, strlen(s), &n);

	if (consumed_r != NULL)
		*consumed_r = n;
	return r;
}

static void
expect_error(struct imap_parser *p, enum imap_parse_error code, bool fatal)
{
	enum imap_parse_error got;
	bool got_fatal;

	(void)imap_parser_error(p, &got, &got_fatal);
	assert_int_equal(got, code);
	assert_int_equal(got_fatal, fatal);
}

static struct imap_parser *
parser_for(enum lim which)
{
	struct imap_parser_limits l;

	limits_for(which, &l);
	return imap_parser_new(&l);
}

static void
test_command_fields(void **state)
{
	struct imap_parser *p = parser_for(L_POST);
	const struct imap_command *cmd;
	const struct imap_arg *list;
	const char *s;
	size_t n, count;
	uint32_t u32;
	uint64_t u64;

	(void)state;
	assert_int_equal(feed_str(p, "A7 uid Fetch 1:*,3 (FLAGS BODY[TEXT]) NIL 4294967296 \"q\" "
	                             "{2+}\r\nab ~{1+}\r\nz 9223372036854775808\r\n", NULL),
	                 IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	assert_non_null(cmd);
	assert_string_equal(cmd->tag, "A7");
	assert_string_equal(cmd->name, "FETCH");
	assert_true(cmd->uid);
	assert_int_equal(cmd->nargs, 8);
	/* sequence set: an atom with a wildcard */
	assert_int_equal(cmd->args[0].type, IMAP_ARG_ATOM);
	assert_true(cmd->args[0].flags & IMAP_ARG_FLAG_WILDCARD);
	assert_int_equal(imap_arg_get_atom(&cmd->args[0], &s), 0);
	assert_string_equal(s, "1:*,3");
	/* list with a section atom */
	assert_int_equal(imap_arg_get_list(&cmd->args[1], &list, &count), 0);
	assert_int_equal(count, 2);
	assert_true(imap_arg_atom_equals(&list[0], "flags"));
	assert_true(list[1].flags & IMAP_ARG_FLAG_SECTION);
	assert_string_equal(list[1].str, "BODY[TEXT]");
	assert_int_equal(imap_arg_get_list(&cmd->args[0], &list, &count), -1);
	/* NIL: an nstring NULL, an astring "NIL" */
	assert_int_equal(cmd->args[2].type, IMAP_ARG_NIL);
	assert_int_equal(imap_arg_get_nstring(&cmd->args[2], &s, &n), 0);
	assert_null(s);
	assert_int_equal(imap_arg_get_astring(&cmd->args[2], &s, &n), 0);
	assert_string_equal(s, "NIL");
	assert_int_equal(imap_arg_get_string(&cmd->args[2], &s, &n), -1);
	/* numbers: 2^32 is a number64 but not a number; 2^63 is neither */
	assert_int_equal(imap_arg_get_number(&cmd->args[3], &u32), -1);
	assert_int_equal(imap_arg_get_number64(&cmd->args[3], &u64), 0);
	assert_true(u64 == 4294967296ULL);
	assert_int_equal(cmd->args[7].type, IMAP_ARG_ATOM);
	assert_int_equal(imap_arg_get_number64(&cmd->args[7], &u64), -1);
	assert_int_equal(imap_arg_get_astring(&cmd->args[7], &s, &n), 0);
	assert_int_equal(n, 19);
	/* strings */
	assert_int_equal(imap_arg_get_string(&cmd->args[4], &s, &n), 0);
	assert_string_equal(s, "q");
	assert_int_equal(imap_arg_get_nstring(&cmd->args[5], &s, &n), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(s, "ab", 2);
	assert_true(cmd->args[5].flags & IMAP_ARG_FLAG_NONSYNC);
	assert_int_equal(cmd->args[6].type, IMAP_ARG_LITERAL8);
	assert_int_equal(imap_arg_get_nstring(&cmd->args[6], &s, &n), -1);
	/* literal8 is no string */
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "b X ~{1+}\r\nz 4294967295 0\r\n", NULL), IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	assert_int_equal(cmd->args[0].type, IMAP_ARG_LITERAL8);
	assert_int_equal(imap_arg_get_string(&cmd->args[0], &s, &n), -1);
	assert_int_equal(imap_arg_get_astring(&cmd->args[0], &s, &n), -1);
	assert_int_equal(imap_arg_get_atom(&cmd->args[0], &s), -1);
	assert_int_equal(imap_arg_get_number(&cmd->args[1], &u32), 0);
	assert_int_equal(u32, UINT32_MAX);
	assert_int_equal(imap_arg_get_number(&cmd->args[2], &u32), 0);
	assert_int_equal(u32, 0);
	assert_false(imap_arg_atom_equals(&cmd->args[0], "z"));
	/* no arguments */
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "c NOOP\r\n", NULL), IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	assert_int_equal(cmd->nargs, 0);
	assert_null(cmd->args);
	assert_false(cmd->uid);
	/* nothing before a status that has one */
	imap_parser_reset(p);
	assert_null(imap_parser_command(p));
	assert_null(imap_parser_tag(p));
	assert_int_equal(feed_str(p, "d NO", NULL), IMAP_PARSE_MORE);
	assert_null(imap_parser_command(p));
	assert_string_equal(imap_parser_tag(p), "d");
	imap_parser_free(&p);
}

/* Tags and names of every length up to a few buffer growths: the name's end (where the APPEND
 * limit is chosen) may move the text buffer. */
static void
test_lengths(void **state)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	char in[400];

	(void)state;
	/* APPEND literals of 32, others of 16 */
	limits_for(L_SMALL, &l);
	l.max_line = 1000;
	l.max_command = 1000;
	p = imap_parser_new(&l);
	for (int taglen = 1; taglen < 300; taglen++) {
		for (int uid = 0; uid < 2; uid++) {
			const struct imap_command *cmd;
			size_t n;
			int len;

			memset(in, 't', (size_t)taglen);
			len = snprintf(in + taglen, sizeof(in) - (size_t)taglen,
			               " %sappend {20}\r\n", uid ? "uid " : "");
			assert_true(len > 0);
			assert_int_equal(imap_parser_feed(p, (const uint8_t *)in,
			                                  (size_t)taglen + (size_t)len, &n),
			                 IMAP_PARSE_CONTINUATION);
			cmd = imap_parser_command(p);
			assert_int_equal(strlen(cmd->tag), taglen);
			assert_string_equal(cmd->name, "APPEND");
			assert_int_equal(cmd->uid, uid);
			imap_parser_reset(p);
		}
	}
	imap_parser_free(&p);
}

/* ---- continuations ------------------------------------------------------------------------- */

static void
test_continuation_once(void **state)
{
	static const char in[] = "a LOGIN {5}\r\nalice {6}\r\nsecret\r\n";
	struct imap_parser *p = parser_for(L_PRE);
	const struct imap_command *cmd;
	size_t n, pos = 0;

	(void)state;
	/* stops right after the header, before any literal octet */
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1, &n),
	                 IMAP_PARSE_CONTINUATION);
	assert_int_equal(n, 13);
	pos += n;
	cmd = imap_parser_command(p);
	assert_non_null(cmd);
	assert_string_equal(cmd->name, "LOGIN");
	assert_int_equal(cmd->nargs, 0); /* the literal is still to come */
	/* an empty feed does not repeat it */
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, 0, &n), IMAP_PARSE_MORE);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, sizeof(in) - 1 - pos, &n),
	                 IMAP_PARSE_CONTINUATION);
	pos += n;
	assert_int_equal(pos, 24);
	cmd = imap_parser_command(p);
	assert_int_equal(cmd->nargs, 1);
	assert_string_equal(cmd->args[0].str, "alice");
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, sizeof(in) - 1 - pos, &n),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(pos + n, sizeof(in) - 1);
	imap_parser_free(&p);
}

/* The server refuses the literal (NO [TRYCREATE], APPEND to a missing mailbox): it resets, the
 * client does not send the literal and goes on with its next command. */
static void
test_continuation_refused(void **state)
{
	struct imap_parser *p = parser_for(L_POST);
	const struct imap_command *cmd;
	size_t n;

	(void)state;
	assert_int_equal(feed_str(p, "a APPEND Missing (\\Seen) {500}\r\n", &n),
	                 IMAP_PARSE_CONTINUATION);
	cmd = imap_parser_command(p);
	assert_string_equal(cmd->tag, "a");
	assert_string_equal(cmd->name, "APPEND");
	assert_int_equal(cmd->nargs, 2);
	assert_string_equal(cmd->args[0].str, "Missing");
	assert_int_equal(cmd->args[1].count, 1);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "b NOOP\r\n", &n), IMAP_PARSE_COMMAND);
	assert_string_equal(imap_parser_command(p)->tag, "b");
	imap_parser_free(&p);
}

/* ---- limits -------------------------------------------------------------------------------- */

static void
test_literal_minus(void **state)
{
	struct imap_parser *p = parser_for(L_POST);
	char *in = malloc(8192);
	size_t n;
	int len;

	(void)state;
	assert_non_null(in);
	/* 4096 octets: fine without a continuation */
	len = snprintf(in, 8192, "a X {4096+}\r\n");
	memset(in + len, 'x', 4096);
	memcpy(in + len + 4096, "\r\n", 2);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, (size_t)len + 4098, &n),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(imap_parser_command(p)->args[0].len, 4096);
	imap_parser_reset(p);
	/* 4097: refused at the header, and fatal: the client is sending the data already */
	assert_int_equal(feed_str(p, "b X {4097+}\r\n", &n), IMAP_PARSE_ERROR);
	assert_int_equal(n, 13);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, true);
	assert_string_equal(imap_parser_error(p, NULL, NULL),
	                    "Non-synchronizing literal too large");
	assert_string_equal(imap_parser_tag(p), "b");
	/* as a synchronising literal it is fine */
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "c X {4097}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_free(&p);

	/* LITERAL+: any size up to the literal limit */
	p = parser_for(L_PLUS);
	assert_int_equal(feed_str(p, "d X {65536+}\r\n", &n), IMAP_PARSE_MORE);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "d X {65537+}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, true);
	assert_string_equal(imap_parser_error(p, NULL, NULL), "Literal too large");
	imap_parser_free(&p);

	/* neither advertised: any {n+} is refused */
	p = parser_for(L_NONSYNC);
	assert_int_equal(feed_str(p, "e X {1+}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, true);
	assert_string_equal(imap_parser_error(p, NULL, NULL),
	                    "Non-synchronizing literals not supported");
	imap_parser_free(&p);
	free(in);
}

static void
test_literal_too_big(void **state)
{
	static const char *const sizes[] = {
		"18446744073709551615", "18446744073709551616", "99999999999999999999999999999",
		"9223372036854775808", "4294967296", "4097",
	};
	size_t n, base;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(sizes); i++) {
		struct imap_parser *p = parser_for(L_PRE);
		char in[128];

		base = imap_parser_mem_used(p);
		snprintf(in, sizeof(in), "a LOGIN {%s}\r\nb NOOP\r\n", sizes[i]);
		/* refused at the header without a continuation, and without allocating for it */
		assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_ERROR);
		assert_int_equal(n, strlen(in) - 8);
		expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
		assert_true(imap_parser_mem_used(p) < base + 1024);
		imap_parser_reset(p);
		/* the client sent no data: the next command follows */
		assert_int_equal(feed_str(p, in + n, &n), IMAP_PARSE_COMMAND);
		assert_string_equal(imap_parser_command(p)->name, "NOOP");
		imap_parser_free(&p);

		/* non-synchronising: fatal */
		p = parser_for(L_PLUS);
		snprintf(in, sizeof(in), "a LOGIN {%s+}\r\n", sizes[i]);
		if (i < 5) {
			assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_ERROR);
			expect_error(p, IMAP_PARSE_ERR_TOO_BIG, true);
			assert_true(imap_parser_mem_used(p) < base + 1024);
		}
		imap_parser_free(&p);
	}
}

/* Memory follows the octets received, not the size announced. */
static void
test_literal_memory(void **state)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	uint8_t chunk[1000];
	size_t n, base;

	(void)state;
	imap_parser_limits_default(&l, true);
	l.max_literal = 8 * 1024 * 1024;
	l.max_command = 16 * 1024 * 1024;
	l.stream_literal_min = 0;
	p = imap_parser_new(&l);
	base = imap_parser_mem_used(p);
	assert_int_equal(feed_str(p, "a SETMETADATA INBOX (/private/comment {8000000}\r\n", &n),
	                 IMAP_PARSE_CONTINUATION);
	assert_true(imap_parser_mem_used(p) < base + 4096);
	memset(chunk, 'x', sizeof(chunk));
	assert_int_equal(imap_parser_feed(p, chunk, sizeof(chunk), &n), IMAP_PARSE_MORE);
	assert_true(imap_parser_mem_used(p) < base + 4096);
	imap_parser_free(&p);

	/* a literal that does not fit what is left of max_command is refused up front */
	l.max_command = 1000;
	p = imap_parser_new(&l);
	assert_int_equal(feed_str(p, "a X {996}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
	imap_parser_reset(p);
	/* "a\0X\0", 995 octets and a NUL: 1000 */
	assert_int_equal(feed_str(p, "a X {995}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_free(&p);
}

/* APPENDLIMIT: the literal limit follows the command name, known before any literal. */
static void
test_append_limit(void **state)
{
	struct imap_parser *p = parser_for(L_SMALL);
	size_t n;

	(void)state;
	assert_int_equal(feed_str(p, "a APPEND INBOX {32}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a APPEND INBOX {33}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a UID APPEND INBOX {32}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a LOGIN {17}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a LOGIN {16}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_free(&p);

	/* before login APPEND takes no literal at all */
	p = parser_for(L_PRE);
	assert_int_equal(feed_str(p, "a APPEND INBOX {1}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
	imap_parser_free(&p);
}

static void
test_line_too_long(void **state)
{
	struct imap_parser *p = parser_for(L_PRE);
	char *in = malloc(20000);
	size_t n;

	(void)state;
	assert_non_null(in);
	/* exactly 8192 octets with the CRLF */
	memcpy(in, "a X ", 4);
	memset(in + 4, 'y', 8192 - 6);
	memcpy(in + 8190, "\r\n", 3);
	assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_COMMAND);
	imap_parser_reset(p);
	/* one more is fatal, found before it is stored */
	memset(in + 4, 'y', 8192 - 5);
	memcpy(in + 8191, "\r\n", 3);
	assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_ERROR);
	assert_int_equal(n, 8192);
	expect_error(p, IMAP_PARSE_ERR_LINE_TOO_LONG, true);
	assert_string_equal(imap_parser_tag(p), "a");
	/* further feeds consume nothing */
	assert_int_equal(feed_str(p, "b NOOP\r\n", &n), IMAP_PARSE_ERROR);
	assert_int_equal(n, 0);
	imap_parser_reset(p);
	/* a long quoted string, and a line that is long while skipped after an error */
	in[0] = '"';
	memset(in + 1, 'q', 9000);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"a X \"", 5, &n), IMAP_PARSE_MORE);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + 1, 9000, &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_LINE_TOO_LONG, true);
	imap_parser_reset(p);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)"a X ) ", 6, &n), IMAP_PARSE_MORE);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + 1, 9000, &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_LINE_TOO_LONG, true);
	assert_string_equal(imap_parser_error(p, NULL, NULL), "Line too long");
	imap_parser_reset(p);
	/* the text after a literal starts a new line */
	assert_int_equal(feed_str(p, "a X {1+}\r\n", &n), IMAP_PARSE_MORE);
	memset(in, 'z', 8190);
	in[0] = 'x';
	in[1] = ' ';
	memcpy(in + 8188, "\r\n", 3);
	assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_COMMAND);
	imap_parser_free(&p);
	free(in);
}

static void
test_nesting_and_args(void **state)
{
	struct imap_parser *p = parser_for(L_SMALL);
	struct imap_parser_limits l;
	size_t n;
	char *in;

	(void)state;
	assert_int_equal(feed_str(p, "a X (((x)))\r\n", &n), IMAP_PARSE_COMMAND);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a X ((((x))))\r\nb NOOP\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_LIMIT, false);
	assert_string_equal(imap_parser_error(p, NULL, NULL), "Lists nested too deeply");
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "b NOOP\r\n", &n), IMAP_PARSE_COMMAND);
	imap_parser_reset(p);
	/* 8 arguments, lists and nested ones included */
	assert_int_equal(feed_str(p, "a X 1 (2 3) 4 (5 6)\r\n", &n), IMAP_PARSE_COMMAND);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a X 1 (2 3) 4 (5 6 7)\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_LIMIT, false);
	assert_string_equal(imap_parser_error(p, NULL, NULL), "Too many arguments");
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a X 1 2 3 4 5 6 7 {1}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a X 1 2 3 4 5 6 7 8 {1}\r\n", &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_LIMIT, false);
	imap_parser_free(&p);

	/* deep nesting at the default limit, and far beyond it: no recursion anywhere */
	imap_parser_limits_default(&l, true);
	l.max_depth = IMAP_MAX_DEPTH;
	l.max_args = IMAP_MAX_ARGS;
	p = imap_parser_new(&l);
	in = malloc(2 * IMAP_MAX_DEPTH + 16);
	assert_non_null(in);
	n = 0;
	memcpy(in, "a X ", 4);
	n = 4;
	for (int i = 0; i < IMAP_MAX_DEPTH; i++)
		in[n++] = '(';
	for (int i = 0; i < IMAP_MAX_DEPTH; i++)
		in[n++] = ')';
	memcpy(in + n, "\r\n", 3);
	assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_COMMAND);
	{
		const struct imap_command *cmd = imap_parser_command(p);
		const struct imap_arg *a = &cmd->args[0];
		int depth = 1;

		while (a->count == 1) {
			a = &a->list[0];
			depth++;
		}
		assert_int_equal(depth, IMAP_MAX_DEPTH);
		assert_int_equal(a->type, IMAP_ARG_LIST);
		assert_int_equal(a->count, 0);
	}
	imap_parser_reset(p);
	in[4] = '(';
	memmove(in + 5, in + 4, 2 * IMAP_MAX_DEPTH + 3);
	assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_ERROR);
	expect_error(p, IMAP_PARSE_ERR_LIMIT, false);
	free(in);
	imap_parser_free(&p);
	/* the default is about 100 */
	imap_parser_limits_default(&l, true);
	assert_int_equal(l.max_depth, 100);
}

static void
test_command_too_big(void **state)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	size_t n;

	(void)state;
	limits_for(L_SMALL, &l);
	l.max_args = 100;
	p = imap_parser_new(&l);
	/* 256 octets in all: literal lines add up */
	assert_int_equal(feed_str(p, "a X {16+}\r\n0123456789abcdef {16+}\r\n0123456789abcdef"
	                             " {16+}\r\n0123456789abcdef {16+}\r\n0123456789abcdef"
	                             " {16+}\r\n0123456789abcdef {16+}\r\n0123456789abcdef"
	                             " {16+}\r\n0123456789abcdef\r\n", &n),
	                 IMAP_PARSE_COMMAND);
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a X {16}\r\n", &n), IMAP_PARSE_CONTINUATION);
	for (int i = 0; i < 20; i++) {
		int r = feed_str(p, "0123456789abcdef {16}\r\n", &n);

		if (r == IMAP_PARSE_ERROR)
			break;
		assert_int_equal(r, IMAP_PARSE_CONTINUATION);
	}
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
	imap_parser_reset(p);
	/* text lines add up too (each within max_line, joined by empty literals) */
	assert_int_equal(feed_str(p, "a X", &n), IMAP_PARSE_MORE);
	for (int i = 0; i < 20; i++) {
		int r = feed_str(p, " 0123456789abcdef0123456789abcdef0123456789 {0+}\r\n", &n);

		if (r == IMAP_PARSE_ERROR)
			break;
		assert_int_equal(r, IMAP_PARSE_MORE);
	}
	expect_error(p, IMAP_PARSE_ERR_TOO_BIG, false);
	assert_string_equal(imap_parser_error(p, NULL, NULL), "Command too large");
	imap_parser_free(&p);
}

/* The parser gives back memory after a big command. */
static void
test_reset_releases(void **state)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	char *in = malloc(70000);
	size_t n, base;

	(void)state;
	imap_parser_limits_default(&l, true);
	l.max_line = 100000;
	p = imap_parser_new(&l);
	base = imap_parser_mem_used(p);
	memcpy(in, "a X ", 4);
	for (size_t i = 4; i < 60000; i += 2)
		memcpy(in + i, "x ", 2);
	memcpy(in + 60000, "\r\n", 3);
	l.max_args = 40000;
	imap_parser_set_limits(p, &l);
	assert_int_equal(feed_str(p, in, &n), IMAP_PARSE_COMMAND);
	assert_int_equal(imap_parser_command(p)->nargs, 29998);
	assert_true(imap_parser_mem_used(p) > base + 60000);
	imap_parser_reset(p);
	assert_true(imap_parser_mem_used(p) <= base);
	free(in);
	imap_parser_free(&p);
}

/* ---- pipelining ---------------------------------------------------------------------------- */

static void
test_pipelined(void **state)
{
	static const char in[] = "a1 NOOP\r\na2 LOGIN {3+}\r\nx\r\n \"y\"\r\na3 LOGOUT\r\n";
	struct imap_parser *p = parser_for(L_PRE);
	const struct imap_command *cmd;
	size_t n, pos = 0;

	(void)state;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1, &n),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(n, 9);
	assert_string_equal(imap_parser_command(p)->tag, "a1");
	pos += n;
	imap_parser_reset(p);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, sizeof(in) - 1 - pos, &n),
	                 IMAP_PARSE_COMMAND);
	pos += n;
	assert_int_equal(pos, 33);
	cmd = imap_parser_command(p);
	assert_string_equal(cmd->tag, "a2");
	assert_int_equal(cmd->nargs, 2);
	assert_memory_equal(cmd->args[0].str, "x\r\n", 3);
	imap_parser_reset(p);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)in + pos, sizeof(in) - 1 - pos, &n),
	                 IMAP_PARSE_COMMAND);
	assert_int_equal(pos + n, sizeof(in) - 1);
	assert_string_equal(imap_parser_command(p)->name, "LOGOUT");
	imap_parser_free(&p);
}

/* ---- random inputs: split invariance of whatever comes out ---------------------------------- */

static void
test_random_splits(void **state)
{
	static const char *const pieces[] = {
		"a ", "b1 ", "FETCH ", "APPEND ", "LIST ", "UID ", "1:*", "BODY[",
		"HEADER.FIELDS (", "]", "<0.5>", "(", ")", " ", "\"", "\\", "{3}\r\n",
		"{2+}\r\n", "~{1}\r\n", "{0}\r\n", "\r\n", "\r", "\n", "x", "\0",
		"\xc3\xa9", "NIL", "%", "*", "~", "{", "}", "+", "12",
	};
	uint32_t seed = 4242;
	uint8_t in[160];

	(void)state;
	for (int round = 0; round < 300; round++) {
		size_t len = 0;
		struct transcript t;

		while (len < sizeof(in) - 16) {
			const char *s;
			size_t sl;

			seed = seed * 1103515245u + 12345u;
			s = pieces[(seed >> 16) % N_ELEMENTS(pieces)];
			sl = s[0] == '\0' ? 1 : strlen(s);
			memcpy(in + len, s, sl);
			len += sl;
		}
		transcript_init(&t);
		run_whole((enum lim)(round % 7), in, len, &t);
		check_splits((enum lim)(round % 7), in, len, &t);
		transcript_deinit(&t);
	}
}

/* ---- sequence sets ------------------------------------------------------------------------- */

static const struct seq_vec {
	const char *s;
	uint32_t star;
	const char *want; /* "lo-hi,lo-hi" or NULL for an error */
} seq_vecs[] = {
	{"1", 10, "1-1"},
	{"1:3,5,7:*", 10, "1-3,5-5,7-10"},
	{"*", 10, "10-10"},
	{"*:5", 3, "3-5"},
	{"5:2", 10, "2-5"},
	{"*:*", 7, "7-7"},
	{"4294967295", 1, "4294967295-4294967295"},
	{"1:4294967295", 1, "1-4294967295"},
	{"3,3,1:2", 1, "3-3,3-3,1-2"},
	{"1:*", 0, "0-1"},
	{"4294967296", 1, NULL},
	{"99999999999", 1, NULL},
	{"0", 1, NULL},
	{"0:5", 1, NULL},
	{"01", 1, NULL},
	{"", 1, NULL},
	{",", 1, NULL},
	{"1,", 1, NULL},
	{",1", 1, NULL},
	{"1,,2", 1, NULL},
	{"1:", 1, NULL},
	{":1", 1, NULL},
	{"1::2", 1, NULL},
	{"1:2:3", 1, NULL},
	{"a", 1, NULL},
	{"1 2", 1, NULL},
	{"-1", 1, NULL},
	{"+1", 1, NULL},
	{"**", 1, NULL},
	{"1*", 1, NULL},
	{"$", 1, NULL},
	{"1,2,3,4,5,6,7,8", 1, "1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8"},
	{"1,2,3,4,5,6,7,8,9", 1, NULL}, /* over max_ranges */
};

static void
test_seqset(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(seq_vecs); i++) {
		const struct seq_vec *v = &seq_vecs[i];
		struct imap_seq_range r[8];
		const char *error = NULL;
		size_t count = 99, count2 = 99;
		int ret = imap_seqset_parse(v->s, strlen(v->s), v->star, r, N_ELEMENTS(r), &count,
		                            &error);
		int ret2 = imap_seqset_parse(v->s, strlen(v->s), v->star, NULL, N_ELEMENTS(r),
		                             &count2, &error);
		struct buf got;

		assert_int_equal(ret, ret2);
		assert_int_equal(count, count2);
		if (v->want == NULL) {
			if (ret != -1)
				fail_msg("seqset %s: accepted", v->s);
			assert_non_null(error);
			assert_int_equal(count, 0);
			continue;
		}
		if (ret != 0)
			fail_msg("seqset %s: %s", v->s, error);
		buf_init(&got, 4096);
		for (size_t k = 0; k < count; k++) {
			assert_true(r[k].lo <= r[k].hi);
			buf_printf(&got, "%s%u-%u", k > 0 ? "," : "", r[k].lo, r[k].hi);
		}
		if (strcmp(buf_cstr(&got), v->want) != 0)
			fail_msg("seqset %s: got %s want %s", v->s, buf_cstr(&got), v->want);
		buf_deinit(&got);
	}
}

/* A sequence set from a parsed command, as the command layer uses it. */
static void
test_seqset_from_command(void **state)
{
	struct imap_parser *p = parser_for(L_POST);
	const struct imap_command *cmd;
	struct imap_seq_range r[4];
	const char *error;
	size_t count;

	(void)state;
	assert_int_equal(feed_str(p, "a UID FETCH 4:2,9:* FLAGS\r\n", NULL), IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	assert_int_equal(imap_seqset_parse(cmd->args[0].str, cmd->args[0].len, 20, r, 4, &count,
	                                   &error),
	                 0);
	assert_int_equal(count, 2);
	assert_int_equal(r[0].lo, 2);
	assert_int_equal(r[0].hi, 4);
	assert_int_equal(r[1].lo, 9);
	assert_int_equal(r[1].hi, 20);
	/* a NUMBER argument is a sequence set too */
	imap_parser_reset(p);
	assert_int_equal(feed_str(p, "a FETCH 7 FLAGS\r\n", NULL), IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	assert_int_equal(cmd->args[0].type, IMAP_ARG_NUMBER);
	assert_int_equal(imap_seqset_parse(cmd->args[0].str, cmd->args[0].len, 20, r, 4, &count,
	                                   &error),
	                 0);
	assert_int_equal(r[0].lo, 7);
	imap_parser_free(&p);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void
test_lifecycle(void **state)
{
	struct imap_parser_limits l;
	struct imap_parser *p = imap_parser_new(NULL);
	size_t n;

	(void)state;
	/* NULL: the pre-auth defaults */
	imap_parser_limits_default(&l, false);
	assert_int_equal(l.max_line, 8192);
	assert_int_equal(l.max_nonsync_literal, 4096);
	assert_int_equal(feed_str(p, "a LOGIN {4097}\r\n", &n), IMAP_PARSE_ERROR);
	imap_parser_reset(p);
	/* after login */
	imap_parser_limits_default(&l, true);
	assert_int_equal(l.max_line, 65536);
	imap_parser_set_limits(p, &l);
	assert_int_equal(feed_str(p, "a LOGIN {4097}\r\n", &n), IMAP_PARSE_CONTINUATION);
	imap_parser_reset(p);
	/* limits beyond the ceilings are clamped */
	l.max_line = SIZE_MAX;
	l.max_command = SIZE_MAX;
	l.max_depth = UINT32_MAX;
	l.max_args = UINT32_MAX;
	imap_parser_set_limits(p, &l);
	assert_int_equal(feed_str(p, "a NOOP\r\n", &n), IMAP_PARSE_COMMAND);
	imap_parser_free(&p);
	assert_null(p);
	imap_parser_free(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_vectors),
		cmocka_unit_test(test_invalid_vectors),
		cmocka_unit_test(test_command_fields),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_continuation_once),
		cmocka_unit_test(test_continuation_refused),
		cmocka_unit_test(test_literal_minus),
		cmocka_unit_test(test_literal_too_big),
		cmocka_unit_test(test_literal_memory),
		cmocka_unit_test(test_append_limit),
		cmocka_unit_test(test_line_too_long),
		cmocka_unit_test(test_nesting_and_args),
		cmocka_unit_test(test_command_too_big),
		cmocka_unit_test(test_reset_releases),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_random_splits),
		cmocka_unit_test(test_seqset),
		cmocka_unit_test(test_seqset_from_command),
		cmocka_unit_test(test_lifecycle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
