/* IMAP SEARCH, SORT and THREAD (imap/imap_search.c, imap/imap_sort.c): commands are parsed with
 * the real IMAP parser and their arguments compiled, so the tests see what the server will.
 * Covered: every search key on a table of messages, NOT/OR/lists, sequence sets with "*" and
 * "$", MODSEQ, CHARSET and BADCHARSET, RETURN options, syntax errors and limits, dates in a
 * time zone, RFC 2047 headers, base64 / quoted-printable / non-UTF-8 bodies, nested messages,
 * case folding beyond ASCII, read errors; the base subject of RFC 5256 §2.1, SORT criteria and
 * ties, and THREAD=ORDEREDSUBJECT / REFERENCES on small mailboxes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_search.h"
#include "imap/imap_sort.h"

/* ---- helpers ---------------------------------------------------------------------------------- */

struct tmsg {
	const char *text; /* raw message, NULL: no text */
	bool fail;        /* read_message fails */
	int reads;        /* read_message calls */
};

static int
read_cb(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	struct tmsg *t = ctx;

	t->reads++;
	if (t->fail)
		return -1;
	*data_r = (const uint8_t *)t->text;
	*len_r = t->text != NULL ? strlen(t->text) : 0;
	return 0;
}

/* Parses "a SEARCH <keys>" (or the given command line) with the IMAP parser and compiles the
 * arguments from arg index skip on. */
static struct imap_search *
compile_ex(const char *line, size_t skip, const struct imap_search_context *ctx,
           const char **error_r, bool *badcharset_r)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	const struct imap_command *cmd;
	struct imap_search *s;
	size_t off = 0, len = strlen(line);
	int ret;

	imap_parser_limits_default(&l, true);
	l.utf8 = true;
	l.max_args = IMAP_MAX_ARGS;
	l.max_depth = IMAP_MAX_DEPTH;
	p = imap_parser_new(&l);
	for (;;) {
		size_t n;

		ret = imap_parser_feed(p, (const uint8_t *)line + off, len - off, &n);
		off += n;
		if (ret != IMAP_PARSE_CONTINUATION)
			break;
	}
	if (ret != IMAP_PARSE_COMMAND) {
		fprintf(stderr, "parser: %s\n", imap_parser_error(p, NULL, NULL));
		fail();
	}
	cmd = imap_parser_command(p);
	assert_true(cmd->nargs >= skip);
	s = imap_search_parse(skip > 0 ? &cmd->args[skip] : cmd->args, cmd->nargs - skip, ctx, error_r,
	                      badcharset_r);
	imap_parser_free(&p);
	return s;
}

static const struct imap_search_context default_ctx = {
	.max_seq = 10, .max_uid = 1000, .saved = NULL, .nsaved = 0, .have_saved = false,
	.require_charset = false, .tz_offset_minutes = 0,
};

static struct imap_search *
compile(const char *keys)
{
	char line[8192];
	const char *error = NULL;
	bool badcs = false;
	struct imap_search *s;

	assert_true(snprintf(line, sizeof(line), "a SEARCH %s\r\n", keys) < (int)sizeof(line));
	s = compile_ex(line, 0, &default_ctx, &error, &badcs);
	if (s == NULL)
		fprintf(stderr, "'%s': %s\n", keys, error);
	assert_non_null(s);
	return s;
}

/* Whether keys is refused (BAD); the error text is returned. */
static const char *
compile_bad(const char *keys)
{
	char line[8192];
	const char *error = NULL;
	bool badcs = true;
	struct imap_search *s;

	assert_true(snprintf(line, sizeof(line), "a SEARCH %s\r\n", keys) < (int)sizeof(line));
	s = compile_ex(line, 0, &default_ctx, &error, &badcs);
	if (s != NULL)
		fprintf(stderr, "'%s' was accepted\n", keys);
	assert_null(s);
	assert_false(badcs);
	assert_non_null(error);
	return error;
}

static const char *const msg_plain =
	"Date: Tue, 14 Jan 2020 23:30:00 -0800\r\n"
	"From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.org>\r\n"
	"To: Alice <alice@example.com>, bob@example.net\r\n"
	"Cc: carol@example.com\r\n"
	"Bcc: dave@example.com\r\n"
	"Subject: =?UTF-8?B?R3LDvMOfZQ==?= aus\r\n"
	" Berlin\r\n"
	"X-Empty:\r\n"
	"X-Custom: Hello World\r\n"
	"Message-ID: <1@example.org>\r\n"
	"\r\n"
	"This is the BODY text.\r\n"
	"Second line with Straße.\r\n";

static const char *const msg_mime =
	"From: sender@example.org\r\n"
	"Subject: attachments\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
	"\r\n"
	"preamble not searched\r\n"
	"--b1\r\n"
	"Content-Type: text/plain; charset=iso-8859-1\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"Gr=FC=DFe aus K=F6ln, soft=\r\n"
	"break\r\n"
	"--b1\r\n"
	"Content-Type: text/html; charset=utf-8\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"PGI+SGVsbG8gQmFzZTY0IMOEw5bDnDwvYj4=\r\n"
	"--b1\r\n"
	"Content-Type: application/octet-stream\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"\r\n"
	"c2VjcmV0IGJpbmFyeQ==\r\n"
	"--b1\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"Subject: inner subject\r\n"
	"Content-Type: text/plain; charset=koi8-r\r\n"
	"\r\n"
	"\xf0\xd2\xc9\xd7\xc5\xd4 inner body\r\n"
	"--b1--\r\n"
	"epilogue\r\n";

static struct imap_search_msg
mk(struct tmsg *t, uint32_t seq, uint32_t uid, uint32_t flags, const char *keywords)
{
	struct imap_search_msg m = {0};

	m.seq = seq;
	m.uid = uid;
	m.flags = flags;
	m.keywords = keywords;
	m.size = 1000;
	m.internaldate = 1579068000; /* 2020-01-15 06:00:00 UTC */
	m.modseq = 50;
	m.read_message = read_cb;
	m.ctx = t;
	return m;
}

/* 1 / 0 for the keys on message m. */
static int
match(const char *keys, const struct imap_search_msg *m)
{
	struct imap_search *s = compile(keys);
	int r = imap_search_match(s, m);

	imap_search_free(&s);
	assert_null(s);
	return r;
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void
test_flag_keys(void **state)
{
	struct tmsg t = {msg_plain, false, 0};
	struct imap_search_msg m = mk(&t, 3, 30, IMAP_SF_SEEN | IMAP_SF_FLAGGED | IMAP_SF_RECENT,
	                              "$Forwarded Work");
	static const struct {
		const char *keys;
		int want;
	} v[] = {
		{"ALL", 1},          {"SEEN", 1},           {"UNSEEN", 0},          {"FLAGGED", 1},
		{"UNFLAGGED", 0},    {"ANSWERED", 0},       {"UNANSWERED", 1},      {"DELETED", 0},
		{"UNDELETED", 1},    {"DRAFT", 0},          {"UNDRAFT", 1},         {"RECENT", 1},
		{"NEW", 0},          {"OLD", 0},            {"KEYWORD work", 1},    {"KEYWORD $Forwarded", 1},
		{"KEYWORD Wor", 0},  {"UNKEYWORD Work", 0}, {"UNKEYWORD $Junk", 1}, {"seen unanswered", 1},
		{"LARGER 999", 1},   {"LARGER 1000", 0},    {"SMALLER 1001", 1},    {"SMALLER 1000", 0},
		{"MODSEQ 50", 1},    {"MODSEQ 51", 0},
		{"MODSEQ \"/flags/\\\\seen\" all 40", 1},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		int got = match(v[i].keys, &m);

		if (got != v[i].want)
			fprintf(stderr, "%s: got %d\n", v[i].keys, got);
		assert_int_equal(got, v[i].want);
	}
	assert_int_equal(t.reads, 0); /* none of these needs the text */
	m.flags = IMAP_SF_RECENT;
	assert_int_equal(match("NEW", &m), 1);
	m.flags = 0;
	m.keywords = "";
	assert_int_equal(match("OLD", &m), 1);
	assert_int_equal(match("KEYWORD work", &m), 0);
	m.keywords = NULL;
	assert_int_equal(match("UNKEYWORD work", &m), 1);
}

static void
test_sequence_sets(void **state)
{
	struct tmsg t = {msg_plain, false, 0};
	struct imap_search_msg m = mk(&t, 10, 1000, 0, "");
	const struct imap_seq_range saved[] = {{5, 7}, {1000, 1000}};
	struct imap_search_context ctx = default_ctx;
	const char *error;
	bool badcs;
	struct imap_search *s;

	(void)state;
	assert_int_equal(match("10", &m), 1);
	assert_int_equal(match("*", &m), 1);
	assert_int_equal(match("1:9", &m), 0);
	assert_int_equal(match("1,3,5:*", &m), 1);
	assert_int_equal(match("20:11", &m), 0);
	assert_int_equal(match("UID 1000", &m), 1);
	assert_int_equal(match("UID *", &m), 1);
	assert_int_equal(match("UID 999:*", &m), 1);
	assert_int_equal(match("UID 1:999", &m), 0);
	assert_int_equal(match("UID 2000:5000", &m), 0);
	assert_int_equal(match("NOT 1:5,7", &m), 1);

	/* "$" needs SEARCHRES; with it, the saved UIDs */
	compile_bad("$");
	compile_bad("UID $");
	compile_bad("1,$");
	ctx.saved = saved;
	ctx.nsaved = N_ELEMENTS(saved);
	ctx.have_saved = true;
	s = compile_ex("a SEARCH $\r\n", 0, &ctx, &error, &badcs);
	assert_non_null(s);
	assert_int_equal(imap_search_match(s, &m), 1);
	m.uid = 6;
	assert_int_equal(imap_search_match(s, &m), 1);
	m.uid = 8;
	assert_int_equal(imap_search_match(s, &m), 0);
	imap_search_free(&s);
	s = compile_ex("a SEARCH UID $ SEEN\r\n", 0, &ctx, &error, &badcs);
	assert_non_null(s);
	m.uid = 5;
	assert_int_equal(imap_search_match(s, &m), 0);
	m.flags = IMAP_SF_SEEN;
	assert_int_equal(imap_search_match(s, &m), 1);
	imap_search_free(&s);
	/* empty saved result: "$" matches nothing but is valid */
	ctx.nsaved = 0;
	s = compile_ex("a SEARCH NOT $\r\n", 0, &ctx, &error, &badcs);
	assert_non_null(s);
	assert_int_equal(imap_search_match(s, &m), 1);
	imap_search_free(&s);
	/* an empty mailbox: "*" is 0 and matches nothing */
	ctx.max_seq = 0;
	s = compile_ex("a SEARCH 1:*\r\n", 0, &ctx, &error, &badcs);
	assert_non_null(s);
	imap_search_free(&s);
}

static void
test_dates(void **state)
{
	struct tmsg t = {msg_plain, false, 0};
	struct imap_search_msg m = mk(&t, 1, 1, 0, "");
	struct imap_search_context ctx = default_ctx;
	const char *error;
	bool badcs;
	struct imap_search *s;

	(void)state;
	/* internal date 2020-01-15 06:00 UTC */
	assert_int_equal(match("ON 15-Jan-2020", &m), 1);
	assert_int_equal(match("ON \"15-jan-2020\"", &m), 1);
	assert_int_equal(match("SINCE 15-Jan-2020", &m), 1);
	assert_int_equal(match("SINCE 16-Jan-2020", &m), 0);
	assert_int_equal(match("BEFORE 15-Jan-2020", &m), 0);
	assert_int_equal(match("BEFORE 16-Jan-2020", &m), 1);
	assert_int_equal(match("SINCE 1-Jan-2020 BEFORE 1-Feb-2020", &m), 1);
	assert_int_equal(t.reads, 0);
	/* Date: Tue, 14 Jan 2020 23:30 -0800 is the 14th as written (15th in UTC) */
	assert_int_equal(match("SENTON 14-Jan-2020", &m), 1);
	assert_int_equal(match("SENTON 15-Jan-2020", &m), 0);
	assert_int_equal(match("SENTBEFORE 15-Jan-2020", &m), 1);
	assert_int_equal(match("SENTSINCE 15-Jan-2020", &m), 0);
	assert_int_equal(match("SENTSINCE 14-Jan-2020", &m), 1);
	/* no Date: the internal date */
	t.text = "Subject: x\r\n\r\nbody\r\n";
	assert_int_equal(match("SENTON 15-Jan-2020", &m), 1);
	t.text = "Date: garbage\r\n\r\nbody\r\n";
	assert_int_equal(match("SENTON 15-Jan-2020", &m), 1);
	/* the server's time zone: 06:00 UTC is still the 14th at -08:00 */
	ctx.tz_offset_minutes = -8 * 60;
	s = compile_ex("a SEARCH ON 14-Jan-2020\r\n", 0, &ctx, &error, &badcs);
	assert_non_null(s);
	assert_int_equal(imap_search_match(s, &m), 1);
	imap_search_free(&s);
	/* before 1970 */
	m.internaldate = -86400 * 365 - 1;
	assert_int_equal(match("ON 31-Dec-1968", &m), 1);
	/* bad dates */
	compile_bad("ON 32-Jan-2020");
	compile_bad("ON 29-Feb-2019");
	compile_bad("ON 1-Foo-2020");
	compile_bad("ON 1-Jan-20");
	compile_bad("ON 2020-01-01");
	compile_bad("SINCE");
	m.internaldate = 1582934400; /* 2020-02-29 */
	assert_int_equal(match("ON 29-Feb-2020", &m), 1);
}

static void
test_date_header_parser(void **state)
{
	static const struct {
		const char *in;
		int ret;
		int64_t utc;
		int64_t day;
	} v[] = {
		{"Thu, 1 Jan 1970 00:00:00 +0000", 0, 0, 0},
		{"1 Jan 1970 00:00 GMT", 0, 0, 0},
		{"Fri, 2 Jan 1970 01:00:00 +0100", 0, 86400, 1},
		{"Wed, 31 Dec 1969 23:00:00 -0100", 0, 0, -1},
		{"Mon, 06 Jan 2020 10:11:12 EST", 0, 1578323472, 18267},
		{" (comment) Mon (x), 6 Jan 20 10:11:12 -0500 (EST)", 0, 1578323472, 18267},
		{"6 Jan 99 00:00:00 +0000", 0, 915580800, 10597},
		{"6-Jan-2020", 0, 1578268800, 18267},
		{"6 January 2020 00:00 +0000", 0, 1578268800, 18267},
		{"garbage", -1, 0, 0},
		{"31 Feb 2020 00:00 +0000", -1, 0, 0},
		{"1 Jan 2020 25:00 +0000", -1, 0, 0},
		{"1 Jan 2020 10", -1, 0, 0},
		{"", -1, 0, 0},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		int64_t utc = 42, day = 42;
		int r = imap_search_parse_date(v[i].in, strlen(v[i].in), &utc, &day);

		if (r != v[i].ret || (r == 0 && (utc != v[i].utc || day != v[i].day)))
			fprintf(stderr, "%s: %d %lld %lld\n", v[i].in, r, (long long)utc,
			        (long long)day);
		assert_int_equal(r, v[i].ret);
		if (r == 0) {
			assert_true(utc == v[i].utc);
			assert_true(day == v[i].day);
		}
	}
	assert_true(imap_search_days_from_civil(2000, 3, 1) == 11017);
}

/* A reader that hands out the header section alone (a copy, freed by the next read, as the
 * server's reader does), and the whole message in a fresh copy: the engine must not keep
 * pointers into the first after asking for the second. */
struct hmsg {
	const char *text;
	char *copy;
	int head_reads, reads;
};

static int
hmsg_read(struct hmsg *h, bool head, const uint8_t **data_r, size_t *len_r)
{
	size_t len = strlen(h->text);
	const char *end = strstr(h->text, "\r\n\r\n");

	if (head && end != NULL)
		len = (size_t)(end - h->text) + 4;
	free(h->copy);
	h->copy = malloc(len + 1);
	assert_non_null(h->copy);
	memcpy(h->copy, h->text, len);
	h->copy[len] = '\0';
	*data_r = (const uint8_t *)h->copy;
	*len_r = len;
	return 0;
}

static int
hmsg_head_cb(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	((struct hmsg *)ctx)->head_reads++;
	return hmsg_read(ctx, true, data_r, len_r);
}

static int
hmsg_whole_cb(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	((struct hmsg *)ctx)->reads++;
	return hmsg_read(ctx, false, data_r, len_r);
}

/* Keys on the header read the header section only; a body key later in the same program reads
 * the whole message once, and the header keys after it still see the right fields. */
static void
test_header_only_reads(void **state)
{
	static const struct {
		const char *keys;
		int want, head_reads, reads;
	} v[] = {
		{"FROM joerg", 1, 1, 0},
		{"SUBJECT berlin HEADER X-Custom hello SENTON 14-Jan-2020", 1, 1, 0},
		{"FROM nobody", 0, 1, 0},
		{"BODY \"straße\"", 1, 0, 1},
		{"FROM joerg BODY \"straße\"", 1, 1, 1},
		{"BODY \"straße\" FROM joerg", 1, 0, 1},
		{"FROM joerg BODY \"straße\" TO alice HEADER Message-ID 1@example", 1, 1, 1},
		{"FROM joerg BODY nothing", 0, 1, 1},
		{"TEXT berlin", 1, 1, 0},
		{"TEXT \"straße\"", 1, 1, 1},
		{"OR BODY \"straße\" CC nobody", 1, 0, 1},
		{"SUBJECT aus TEXT \"straße\" CC carol", 1, 1, 1},
	};
	(void)state;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct hmsg h = {msg_plain, NULL, 0, 0};
		struct tmsg unused = {NULL, false, 0};
		struct imap_search_msg m = mk(&unused, 1, 1, 0, "");

		m.read_message = hmsg_whole_cb;
		m.read_header = hmsg_head_cb;
		m.ctx = &h;
		if (match(v[i].keys, &m) != v[i].want || h.head_reads != v[i].head_reads ||
		    h.reads != v[i].reads)
			fail_msg("%s: %d (head %d, whole %d), want %d (%d, %d)", v[i].keys,
			         match(v[i].keys, &m), h.head_reads, h.reads, v[i].want,
			         v[i].head_reads, v[i].reads);
		free(h.copy);
	}
}

static void
test_header_keys(void **state)
{
	struct tmsg t = {msg_plain, false, 0};
	struct imap_search_msg m = mk(&t, 1, 1, 0, "");
	static const struct {
		const char *keys;
		int want;
	} v[] = {
		{"SUBJECT \"grüße\"", 1},            /* RFC 2047 B, UTF-8, case-folded */
		{"SUBJECT \"GRÜSSE\"", 0},       /* no multi-character folds */
		{"SUBJECT \"GRÜßE AUS BERLIN\"", 1}, /* unfolded */
		{"SUBJECT \"aus  Berlin\"", 0},
		{"FROM \"jörg müller\"", 1},     /* RFC 2047 Q, ISO-8859-1 */
		{"FROM JOERG@EXAMPLE", 1},
		{"FROM alice", 0},
		{"TO alice", 1},
		{"TO bob@example.net", 1},
		{"CC carol", 1},
		{"BCC dave", 1},
		{"CC dave", 0},
		{"HEADER X-Custom \"hello world\"", 1},
		{"HEADER x-custom world", 1},
		{"HEADER X-Custom planet", 0},
		{"HEADER X-Empty \"\"", 1},
		{"HEADER X-Missing \"\"", 0},
		{"HEADER Message-ID 1@example", 1},
		{"HEADER Subject aus", 1},
		{"SUBJECT \"\"", 1},
		{"BODY subject", 0},
		{"BODY \"straße\"", 1},
		{"BODY STRASSE", 0},
		{"BODY \"body TEXT\"", 1},
		{"TEXT carol", 1},
		{"TEXT \"x-custom: hello\"", 1},
		{"TEXT \"second line\"", 1},
		{"TEXT nowhere", 0},
		{"TEXT {5}\r\nBERLI", 1},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		int got;

		t.reads = 0;
		got = match(v[i].keys, &m);
		if (got != v[i].want)
			fprintf(stderr, "%s: got %d\n", v[i].keys, got);
		assert_int_equal(got, v[i].want);
		assert_true(t.reads <= 1); /* one read per message, whatever the keys */
	}
	t.reads = 0;
	assert_int_equal(match("SUBJECT x FROM y TO z BODY a TEXT b HEADER c d", &m), 0);
	assert_int_equal(t.reads, 1);
}

static void
test_mime_bodies(void **state)
{
	struct tmsg t = {msg_mime, false, 0};
	struct imap_search_msg m = mk(&t, 1, 1, 0, "");
	static const struct {
		const char *keys;
		int want;
	} v[] = {
		{"BODY \"grüße aus köln\"", 1}, /* QP + ISO-8859-1 */
		{"BODY softbreak", 1},         /* soft line break removed */
		{"BODY \"hello base64 äöü\"", 1}, /* base64 + UTF-8, folded */
		{"BODY <b>", 1},               /* HTML is searched as text */
		{"BODY secret", 0},            /* not a text part */
		{"BODY c2VjcmV0", 0},
		{"BODY preamble", 0},
		{"BODY epilogue", 0},
		{"BODY \"привет\"", 1},            /* KOI8-R via iconv, nested message */
		{"BODY \"inner subject\"", 1}, /* the enclosed message's header */
		{"SUBJECT inner", 0},          /* only the top-level header */
		{"SUBJECT attachments", 1},
		{"TEXT \"привет\"", 1},
		{"TEXT \"multipart/mixed\"", 1},
		{"HEADER Content-Type b1", 1},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		int got = match(v[i].keys, &m);

		if (got != v[i].want)
			fprintf(stderr, "%s: got %d\n", v[i].keys, got);
		assert_int_equal(got, v[i].want);
	}
	/* a message that is not MIME: the body as it is; base64-ish text is not decoded */
	t.text = "Subject: plain\r\n\r\nR3LDvMOfZQ== and =41\r\n";
	assert_int_equal(match("BODY =41", &m), 1);
	assert_int_equal(match("BODY R3LDvMOfZQ", &m), 1);
	/* a single-part base64 message with a charset */
	t.text = "Content-Type: text/plain; charset=windows-1252\r\n"
	         "Content-Transfer-Encoding: base64\r\n\r\ngIGCIGV1cm8=\r\n";
	assert_int_equal(match("BODY {7}\r\n\x80\x81\x82 eur", &m), 0); /* not UTF-8 */
	assert_int_equal(match("BODY \" EURO\"", &m), 1);
	assert_int_equal(match("BODY \"€\"", &m), 1);
	/* an unknown charset: the octets as they are */
	t.text = "Content-Type: text/plain; charset=x-unknown\r\n\r\nplain ascii words\r\n";
	assert_int_equal(match("BODY ascii", &m), 1);
	/* no text at all */
	t.text = NULL;
	assert_int_equal(match("BODY x", &m), 0);
	assert_int_equal(match("BODY \"\"", &m), 1);
	assert_int_equal(match("HEADER Subject \"\"", &m), 0);
	assert_int_equal(match("NOT SUBJECT x", &m), 1);
}

static void
test_case_folding(void **state)
{
	static const struct {
		const char *in, *want;
	} v[] = {
		{"ABC xyz", "abc xyz"},
		{"ÀÉÎÕÜÝÞ×", "àéîõüýþ×"},
		{"ĀĂĄĆŁŃŒŠŸŹŽ", "āăąćłńœšÿźž"},
		{"ſ", "s"},
		{"ΑΒΓ ΣΊΌ ς", "αβγ σίό σ"},
		{"ПРИВЕТ ЁЖ", "привет ёж"},
		{"\xff\xc3 bad UTF-8 A", "\xff\xc3 bad utf-8 a"},
		{"\xed\xa0\x80", "\xed\xa0\x80"}, /* a surrogate stays as octets */
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		struct buf b;

		buf_init(&b, 1024);
		assert_int_equal(imap_search_fold(&b, v[i].in, strlen(v[i].in)), 0);
		assert_string_equal(buf_cstr(&b), v[i].want);
		buf_deinit(&b);
	}
}

static void
test_not_or_nesting(void **state)
{
	struct tmsg t = {msg_plain, false, 0};
	struct imap_search_msg m = mk(&t, 2, 20, IMAP_SF_SEEN, "");
	static const struct {
		const char *keys;
		int want;
	} v[] = {
		{"NOT SEEN", 0},
		{"NOT NOT SEEN", 1},
		{"OR SEEN DELETED", 1},
		{"OR DELETED SEEN", 1},
		{"OR DELETED DRAFT", 0},
		{"OR FROM nobody (SINCE 1-Jan-2020 SEEN)", 1},
		{"OR FROM nobody (SINCE 1-Jan-2020 UNSEEN)", 0},
		{"(SEEN) (UNDELETED (2))", 1},
		{"((((SEEN))))", 1},
		{"NOT (SEEN DELETED)", 1},
		{"OR (DELETED) (OR DRAFT (FROM \"jörg\"))", 1},
		{"OR NOT SEEN NOT 2", 0},
		{"not or seen deleted", 0},
		{"SEEN NOT BODY nothing", 1},
		{"OR SEEN BODY nothing", 1},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		int got = match(v[i].keys, &m);

		if (got != v[i].want)
			fprintf(stderr, "%s: got %d\n", v[i].keys, got);
		assert_int_equal(got, v[i].want);
	}
	/* cheap keys first: a flag miss in AND and a flag hit in OR spare the read */
	t.reads = 0;
	assert_int_equal(match("BODY x DELETED", &m), 0);
	assert_int_equal(match("OR BODY x SEEN", &m), 1);
	assert_int_equal(t.reads, 0);
}

static void
test_bad_syntax(void **state)
{
	static const char *const bad[] = {
		"FOO",
		"SUBJECT",
		"HEADER X-Custom",
		"HEADER \"\" x",
		"OR SEEN",
		"NOT",
		"()",
		"LARGER x",
		"LARGER -1",
		"SMALLER 99999999999999999999",
		"UID",
		"UID x",
		"UID 0",
		"1:0",
		"0",
		"KEYWORD",
		"KEYWORD \"\"",
		"MODSEQ",
		"MODSEQ x",
		"MODSEQ \"/flags/x\" foo 3",
		"MODSEQ \"/flags/x\" all",
		"ON (1-Jan-2020)",
		"SUBJECT (x)",
		"CHARSET",
		"BODY ~{4}\r\nbody", /* literal8 is not an astring */
	};
	char deep[1024];
	size_t n = 0;
	struct buf many;
	struct imap_search *s;
	const char *error;
	bool badcs;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(bad); i++)
		(void)compile_bad(bad[i]);
	/* an empty SEARCH */
	s = compile_ex("a SEARCH\r\n", 0, &default_ctx, &error, &badcs);
	assert_null(s);
	/* nesting: IMAP_SEARCH_MAX_DEPTH levels of NOT are refused, fewer are fine */
	for (size_t i = 0; i < IMAP_SEARCH_MAX_DEPTH; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "NOT ");
	snprintf(deep + n, sizeof(deep) - n, "SEEN");
	assert_string_equal(compile_bad(deep), "Search keys nested too deep");
	s = compile(deep + 4);
	imap_search_free(&s);
	n = 0;
	for (size_t i = 0; i < IMAP_SEARCH_MAX_DEPTH; i++)
		deep[n++] = '(';
	deep[n++] = 'A';
	deep[n++] = 'L';
	deep[n++] = 'L';
	for (size_t i = 0; i < IMAP_SEARCH_MAX_DEPTH; i++)
		deep[n++] = ')';
	deep[n] = '\0';
	(void)compile_bad(deep);
	/* too many keys */
	buf_init(&many, 1024 * 1024);
	buf_append_str(&many, "a SEARCH");
	for (size_t i = 0; i <= IMAP_SEARCH_MAX_KEYS; i++)
		buf_append_str(&many, " SEEN");
	buf_append_str(&many, "\r\n");
	s = compile_ex(buf_cstr(&many), 0, &default_ctx, &error, &badcs);
	assert_null(s);
	assert_string_equal(error, "Too many search keys");
	buf_deinit(&many);
}

static void
test_charset(void **state)
{
	struct imap_search_context ctx = default_ctx;
	struct tmsg t = {msg_plain, false, 0};
	struct imap_search_msg m = mk(&t, 1, 1, 0, "");
	struct imap_search *s;
	const char *error;
	bool badcs;

	(void)state;
	assert_int_equal(match("CHARSET UTF-8 SUBJECT \"grüße\"", &m), 1);
	assert_int_equal(match("CHARSET us-ascii SUBJECT berlin", &m), 1);
	assert_int_equal(match("charset \"utf-8\" ALL", &m), 1);
	s = compile_ex("a SEARCH CHARSET ISO-8859-1 SUBJECT x\r\n", 0, &ctx, &error, &badcs);
	assert_null(s);
	assert_true(badcs);
	s = compile_ex("a SEARCH CHARSET\r\n", 0, &ctx, &error, &badcs);
	assert_null(s);
	assert_false(badcs);
	/* SORT / THREAD: the charset is mandatory */
	ctx.require_charset = true;
	s = compile_ex("a SORT (DATE) UTF-8 SEEN\r\n", 1, &ctx, &error, &badcs);
	assert_non_null(s);
	imap_search_free(&s);
	s = compile_ex("a THREAD REFERENCES KOI8-R SEEN\r\n", 1, &ctx, &error, &badcs);
	assert_null(s);
	assert_true(badcs);
	s = compile_ex("a SORT (DATE) UTF-8\r\n", 1, &ctx, &error, &badcs);
	assert_null(s);
	assert_false(badcs);
}

static void
test_return_options(void **state)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	static const struct {
		const char *line;
		int ret;
		unsigned int opts;
		size_t consumed;
	} v[] = {
		{"a SEARCH RETURN (MIN MAX) SEEN\r\n", 0, IMAP_SEARCH_RETURN_MIN | IMAP_SEARCH_RETURN_MAX, 2},
		{"a SEARCH RETURN () SEEN\r\n", 0, IMAP_SEARCH_RETURN_ALL, 2},
		{"a SEARCH return (count all save) SEEN\r\n", 0,
		 IMAP_SEARCH_RETURN_COUNT | IMAP_SEARCH_RETURN_ALL | IMAP_SEARCH_RETURN_SAVE, 2},
		{"a SEARCH SEEN\r\n", 0, 0, 0},
		{"a SEARCH RETURN (FOO) SEEN\r\n", -1, 0, 0},
		{"a SEARCH RETURN SEEN\r\n", -1, 0, 0},
		{"a SEARCH RETURN\r\n", -1, 0, 0},
	};

	(void)state;
	imap_parser_limits_default(&l, true);
	p = imap_parser_new(&l);
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		const struct imap_command *cmd;
		const char *error = NULL;
		unsigned int opts = 99;
		size_t n, consumed = 99;

		assert_int_equal(imap_parser_feed(p, (const uint8_t *)v[i].line, strlen(v[i].line),
		                                  &n),
		                 IMAP_PARSE_COMMAND);
		cmd = imap_parser_command(p);
		assert_int_equal(imap_search_parse_return(cmd->args, cmd->nargs, &opts, &consumed,
		                                          &error),
		                 v[i].ret);
		if (v[i].ret == 0) {
			assert_int_equal(opts, v[i].opts);
			assert_int_equal(consumed, v[i].consumed);
		} else {
			assert_non_null(error);
		}
		imap_parser_reset(p);
	}
	imap_parser_free(&p);
}

static void
test_predicates_and_errors(void **state)
{
	struct tmsg t = {msg_plain, true, 0};
	struct imap_search_msg m = mk(&t, 1, 1, IMAP_SF_SEEN, "");
	struct imap_search *s;

	(void)state;
	s = compile("SEEN UID 1:* LARGER 3 SINCE 1-Jan-2000 MODSEQ 3");
	assert_false(imap_search_needs_message(s));
	assert_true(imap_search_uses_modseq(s));
	imap_search_free(&s);
	s = compile("OR SEEN NOT SENTON 1-Jan-2000");
	assert_true(imap_search_needs_message(s));
	assert_false(imap_search_uses_modseq(s));
	imap_search_free(&s);
	/* a read error fails the match, unless cheap keys decide first */
	assert_int_equal(match("BODY x", &m), -1);
	assert_int_equal(match("NOT SUBJECT x", &m), -1);
	assert_int_equal(match("SENTON 1-Jan-2000", &m), -1);
	assert_int_equal(match("UNSEEN BODY x", &m), 0);
	assert_int_equal(match("OR SEEN BODY x", &m), 1);
	assert_int_equal(match("OR UNSEEN BODY x", &m), -1);
	/* no callback: an empty message */
	m.read_message = NULL;
	assert_int_equal(match("BODY \"\"", &m), 1);
	assert_int_equal(match("TEXT x", &m), 0);
	imap_search_free(&s); /* NULL is fine */
}

/* ---- base subject ------------------------------------------------------------------------------ */

static void
test_base_subject(void **state)
{
	static const struct {
		const char *in, *want;
		bool reply;
	} v[] = {
		{"Hello", "hello", false},
		{"Re: Hello", "hello", true},
		{"RE: re: Re:Hello", "hello", true},
		{"Fwd: Hello", "hello", true},
		{"FW: Hello", "hello", true},
		{"Fw : Hello", "hello", true},
		{"Re[2]: Hello", "hello", true},
		{"Re [2] : Hello", "hello", true},
		{"[list] Re: Hello", "hello", true},
		{"[list] Hello", "hello", false},
		{"[list]", "[list]", false},
		{"[a][b] Re: [c] Re: Hello", "hello", true},
		{"Hello (fwd)", "hello", true},
		{"Hello (fwd) (FWD)  ", "hello", true},
		{"[Fwd: Hello]", "hello", true},
		{"[fwd: Re: Hello (fwd)]", "hello", true},
		{"Re: [fwd: [list] Hello]", "hello", true},
		{"  \t Hello   \t World  ", "hello world", false},
		{"Re:", "", true},
		{"", "", false},
		{"Reply: Hello", "reply: hello", false},
		{"Refwd: x", "refwd: x", false},
		{"[no close Hello", "[no close hello", false},
		{"=?utf-8?q?Re=3A_Gr=C3=BC=C3=9Fe?=", "grüße", true},
		{"=?iso-8859-1?q?=C4rger?= (fwd)", "ärger", true},
		{"[Ärger] Re: x", "x", true},
		{"Re: Hello\r\n World", "hello world", true},
		{"Hello [fwd: x]", "hello [fwd: x]", false},
		{"[fwd: x", "[fwd: x", false},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(v); i++) {
		struct buf b;
		bool reply = !v[i].reply;

		buf_init(&b, 1024);
		assert_int_equal(imap_base_subject(&b, v[i].in, strlen(v[i].in), &reply), 0);
		if (strcmp(buf_cstr(&b), v[i].want) != 0 || reply != v[i].reply)
			fprintf(stderr, "'%s' -> '%s' %d\n", v[i].in, buf_cstr(&b), reply);
		assert_string_equal(buf_cstr(&b), v[i].want);
		assert_int_equal(reply, v[i].reply);
		buf_deinit(&b);
	}
}

/* ---- SORT -------------------------------------------------------------------------------------- */

struct mbox {
	struct tmsg t[16];
	struct imap_search_msg m[16];
	size_t n;
};

static void
mbox_add(struct mbox *mb, const char *text, uint64_t size, int64_t internaldate)
{
	size_t i = mb->n++;

	mb->t[i].text = text;
	mb->m[i] = mk(&mb->t[i], (uint32_t)i + 1, (uint32_t)(i + 1) * 10, 0, "");
	mb->m[i].size = size;
	mb->m[i].internaldate = internaldate;
}

static const char *
sort_str(struct mbox *mb, const char *criteria, bool uid)
{
	static char result[512];
	struct imap_sort_program prog;
	struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_command *cmd;
	const char *error = NULL;
	char line[256];
	size_t n, order[16];
	struct buf out;

	snprintf(line, sizeof(line), "a SORT %s UTF-8 ALL\r\n", criteria);
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)line, strlen(line), &n),
	                 IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	if (imap_sort_parse(&cmd->args[0], &prog, &error) < 0) {
		imap_parser_free(&p);
		return error;
	}
	imap_parser_free(&p);
	assert_int_equal(imap_sort(&prog, mb->m, mb->n, order), 0);
	buf_init(&out, 4096);
	assert_int_equal(imap_sort_write(&out, mb->m, order, mb->n, uid), 0);
	assert_true(str_copy(result, sizeof(result), buf_cstr(&out)) == 0);
	buf_deinit(&out);
	return result;
}

static void
test_sort(void **state)
{
	struct mbox mb = {0};
	struct imap_sort_program prog;

	(void)state;
	mbox_add(&mb,
	         "Date: Mon, 6 Jan 2020 10:00:00 +0000\r\nSubject: Re: banana\r\n"
	         "From: \"Zed\" <zed@example.org>\r\nTo: b@x\r\nCc: C <c@x>\r\n\r\n",
	         300, 500);
	mbox_add(&mb,
	         "Date: Mon, 6 Jan 2020 11:00:00 +0200\r\nSubject: apple\r\n"
	         "From: Alice <alice@example.org>\r\nTo: =?utf-8?q?=C3=84rger?= <a@x>\r\n\r\n",
	         100, 300);
	mbox_add(&mb,
	         "Subject: [list] Cherry\r\nFrom: bob@example.org\r\nTo: undisclosed:;\r\n\r\n",
	         200, 400);
	mbox_add(&mb,
	         "Date: bogus\r\nSubject: Fwd: APPLE\r\nFrom: alice@Example.org\r\n\r\n", 100,
	         100);
	assert_string_equal(sort_str(&mb, "(ARRIVAL)", false), " 4 2 3 1");
	assert_string_equal(sort_str(&mb, "(REVERSE ARRIVAL)", false), " 1 3 2 4");
	assert_string_equal(sort_str(&mb, "(SIZE)", false), " 2 4 3 1");     /* tie by seq */
	assert_string_equal(sort_str(&mb, "(SIZE)", true), " 20 40 30 10");
	assert_string_equal(sort_str(&mb, "(REVERSE SIZE)", false), " 1 3 2 4"); /* ties by seq */
	/* DATE: 2 is 09:00 UTC, 1 10:00 UTC, 3 and 4 use the internal date */
	assert_string_equal(sort_str(&mb, "(DATE)", false), " 4 3 2 1");
	assert_string_equal(sort_str(&mb, "(SUBJECT)", false), " 2 4 1 3");
	assert_string_equal(sort_str(&mb, "(SUBJECT REVERSE SIZE)", false), " 2 4 1 3");
	assert_string_equal(sort_str(&mb, "(SUBJECT REVERSE ARRIVAL)", false), " 2 4 1 3");
	assert_string_equal(sort_str(&mb, "(SUBJECT ARRIVAL)", false), " 4 2 1 3");
	/* FROM compares the local part: alice, alice, bob, zed */
	assert_string_equal(sort_str(&mb, "(FROM)", false), " 2 4 3 1");
	assert_string_equal(sort_str(&mb, "(FROM REVERSE DATE)", false), " 2 4 3 1");
	/* TO: a, b, "" (group only), "" (none) */
	assert_string_equal(sort_str(&mb, "(TO)", false), " 3 4 2 1");
	assert_string_equal(sort_str(&mb, "(CC)", false), " 2 3 4 1");
	/* DISPLAYFROM: "alice", "alice@example.org", "bob@example.org", "zed" */
	assert_string_equal(sort_str(&mb, "(DISPLAYFROM)", false), " 2 4 3 1");
	/* DISPLAYTO: "", "", "b@x", "ärger" (folded UTF-8 sorts after ASCII) */
	assert_string_equal(sort_str(&mb, "(DISPLAYTO)", false), " 3 4 1 2");
	/* bad criteria */
	assert_string_equal(sort_str(&mb, "(FOO)", false), "Unknown sort criterion");
	assert_string_equal(sort_str(&mb, "()", false), "Sort criteria must be a non-empty list");
	assert_string_equal(sort_str(&mb, "(DATE REVERSE)", false),
	                    "REVERSE without a sort criterion");
	assert_string_equal(sort_str(&mb, "(REVERSE REVERSE DATE)", false), "REVERSE twice");
	assert_string_equal(sort_str(&mb, "DATE", false), "Sort criteria must be a non-empty list");
	/* needs_message */
	prog.count = 2;
	prog.crit[0] = (struct imap_sort_criterion){IMAP_SORT_ARRIVAL, false};
	prog.crit[1] = (struct imap_sort_criterion){IMAP_SORT_SIZE, true};
	assert_false(imap_sort_needs_message(&prog));
	for (size_t i = 0; i < mb.n; i++)
		mb.t[i].reads = 0;
	{
		size_t order[16];

		assert_int_equal(imap_sort(&prog, mb.m, mb.n, order), 0);
		assert_int_equal(mb.t[0].reads, 0);
		prog.crit[1].key = IMAP_SORT_CC;
		assert_true(imap_sort_needs_message(&prog));
		mb.t[2].fail = true;
		assert_int_equal(imap_sort(&prog, mb.m, mb.n, order), -1);
		assert_int_equal(imap_sort(&prog, mb.m, 0, order), 0);
	}
}

/* ---- THREAD ------------------------------------------------------------------------------------ */

static const char *
thread_str(struct mbox *mb, enum imap_thread_algorithm alg, bool uid)
{
	static char result[1024];
	struct buf out;

	buf_init(&out, 4096);
	assert_int_equal(imap_thread(alg, mb->m, mb->n, uid, &out), 0);
	assert_true(str_copy(result, sizeof(result), buf_cstr(&out)) == 0);
	buf_deinit(&out);
	return result;
}

static void
test_thread_algorithm_names(void **state)
{
	struct imap_parser *p = imap_parser_new(NULL);
	const struct imap_command *cmd;
	enum imap_thread_algorithm alg;
	const char *error;
	const char *line = "a THREAD references UTF-8 ALL\r\n";
	size_t n;

	(void)state;
	assert_int_equal(imap_parser_feed(p, (const uint8_t *)line, strlen(line), &n),
	                 IMAP_PARSE_COMMAND);
	cmd = imap_parser_command(p);
	assert_int_equal(imap_thread_parse_algorithm(&cmd->args[0], &alg, &error), 0);
	assert_int_equal(alg, IMAP_THREAD_REFERENCES);
	assert_int_equal(imap_thread_parse_algorithm(&cmd->args[1], &alg, &error), -1);
	imap_parser_free(&p);
}

static void
test_thread_orderedsubject(void **state)
{
	struct mbox mb = {0};

	(void)state;
	mbox_add(&mb, "Subject: beta\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb, "Subject: Re: alpha\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb, "Subject: alpha\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb, "Subject: Re: beta\r\nDate: 4 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb, "Subject: gamma\r\nDate: 5 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb, "Subject: Fwd: alpha\r\nDate: 6 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	assert_string_equal(thread_str(&mb, IMAP_THREAD_ORDEREDSUBJECT, false),
	                    "(3 (2)(6))(1 4)(5)");
	assert_string_equal(thread_str(&mb, IMAP_THREAD_ORDEREDSUBJECT, true),
	                    "(30 (20)(60))(10 40)(50)");
	mb.n = 1;
	assert_string_equal(thread_str(&mb, IMAP_THREAD_ORDEREDSUBJECT, false), "(1)");
	mb.n = 0;
	assert_string_equal(thread_str(&mb, IMAP_THREAD_ORDEREDSUBJECT, false), "");
}

static void
test_thread_references(void **state)
{
	struct mbox mb = {0};

	(void)state;
	/* 1 <a>; 2 replies to a; 3 replies to 2 (References a b); 4 replies to a missing <x>
	 * that replied to a; 5 unrelated; 6 has References to two missing ids only (a dummy
	 * root with one child: pruned); 7 and 8 reply to the same missing <m> (a dummy root
	 * with two children: kept) */
	mbox_add(&mb, "Message-ID: <a@x>\r\nSubject: topic\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\nSubject: Re: topic\r\n"
	         "Date: 2 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <c@x>\r\nReferences: <a@x>\r\n <b@x>\r\nSubject: Re: topic\r\n"
	         "Date: 3 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <d@x>\r\nReferences: <a@x> <x@x>\r\nSubject: Re: topic\r\n"
	         "Date: 4 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb, "Message-ID: <e@x>\r\nSubject: other\r\nDate: 5 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <f@x>\r\nReferences: <y@x> <z@x>\r\nSubject: Re: lonely\r\n"
	         "Date: 6 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <g@x>\r\nIn-Reply-To: <m@x>\r\nSubject: Re: meeting\r\n"
	         "Date: 7 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <h@x>\r\nIn-Reply-To: <m@x> (sent earlier)\r\nSubject: Re: meeting\r\n"
	         "Date: 8 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	assert_string_equal(thread_str(&mb, IMAP_THREAD_REFERENCES, false),
	                    "(1 (2 3)(4))(5)(6)((7)(8))");
	assert_string_equal(thread_str(&mb, IMAP_THREAD_REFERENCES, true),
	                    "(10 (20 30)(40))(50)(60)((70)(80))");
}

static void
test_thread_references_subjects(void **state)
{
	struct mbox mb = {0};

	(void)state;
	/* Step (5): roots with one base subject are gathered. 1 "hello" and 3 "Re: hello"
	 * (no references): 3 becomes a child of 1. 2 "news" and 4 "news": siblings under a
	 * dummy. 5 has no Message-ID, 6 repeats 1's Message-ID: both stand alone, but 6's
	 * subject "Re: hello" joins 1's thread. */
	mbox_add(&mb, "Message-ID: <1@x>\r\nSubject: hello\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb, "Message-ID: <2@x>\r\nSubject: news\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <3@x>\r\nSubject: Re: hello\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb, "Message-ID: <4@x>\r\nSubject: NEWS\r\nDate: 4 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb, "Subject: unrelated\r\nDate: 5 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb,
	         "Message-ID: <1@x>\r\nSubject: Re: hello\r\nDate: 6 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb, "Message-ID: <7@x>\r\nDate: 7 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	mbox_add(&mb, "Message-ID: <8@x>\r\nDate: 8 Jan 2020 00:00 +0000\r\n\r\n", 1, 0);
	assert_string_equal(thread_str(&mb, IMAP_THREAD_REFERENCES, false),
	                    "(1 (3)(6))((2)(4))(5)(7)(8)");
}

static void
test_thread_loops_and_order(void **state)
{
	struct mbox mb = {0};

	(void)state;
	/* References that loop (a -> b -> a), a message referencing itself, a parent that
	 * arrives after its child, and children sorted by date not by arrival. */
	mbox_add(&mb,
	         "Message-ID: <b@x>\r\nReferences: <a@x>\r\nSubject: s\r\n"
	         "Date: 3 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <a@x>\r\nReferences: <b@x>\r\nSubject: t\r\n"
	         "Date: 1 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <c@x>\r\nReferences: <c@x>\r\nSubject: u\r\n"
	         "Date: 2 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	mbox_add(&mb,
	         "Message-ID: <d@x>\r\nReferences: <a@x>\r\nSubject: v\r\n"
	         "Date: 2 Jan 2020 00:00 +0000\r\n\r\n",
	         1, 0);
	/* 2 <a> comes last in arrival but links first: b's reference made a its parent; then a
	 * referencing b would be a loop and is not linked */
	assert_string_equal(thread_str(&mb, IMAP_THREAD_REFERENCES, false), "(2 (4)(1))(3)");
	/* a read error */
	mb.t[1].fail = true;
	{
		struct buf out;

		buf_init(&out, 4096);
		assert_int_equal(imap_thread(IMAP_THREAD_REFERENCES, mb.m, mb.n, false, &out), -1);
		buf_deinit(&out);
	}
}

static void
test_thread_long_chain(void **state)
{
	enum { N = 3000 };
	struct tmsg *t = calloc(N, sizeof(*t));
	struct imap_search_msg *m = calloc(N, sizeof(*m));
	char **texts = calloc(N, sizeof(*texts));
	struct buf out;

	(void)state;
	/* a reply chain as long as the mailbox: no recursion may follow it */
	for (size_t i = 0; i < N; i++) {
		if (i == 0)
			texts[i] = xasprintf("Message-ID: <m0@x>\r\nSubject: chain\r\n\r\n");
		else
			texts[i] = xasprintf("Message-ID: <m%zu@x>\r\nIn-Reply-To: <m%zu@x>\r\n"
			                     "Subject: Re: chain\r\n\r\n",
			                     i, i - 1);
		t[i].text = texts[i];
		m[i] = mk(&t[i], (uint32_t)i + 1, (uint32_t)i + 1, 0, "");
		m[i].internaldate = (int64_t)i;
	}
	buf_init(&out, 1024 * 1024);
	assert_int_equal(imap_thread(IMAP_THREAD_REFERENCES, m, N, false, &out), 0);
	assert_true(strncmp(buf_cstr(&out), "(1 2 3 4 ", 9) == 0);
	assert_true(out.data[out.len - 1] == ')');
	buf_deinit(&out);
	for (size_t i = 0; i < N; i++)
		free(texts[i]);
	free(texts);
	free(t);
	free(m);
}

static void
test_thread_flat(void **state)
{
	enum { N = 20000 };
	struct tmsg *t = calloc(N, sizeof(*t));
	struct imap_search_msg *m = calloc(N, sizeof(*m));
	char **texts = calloc(N, sizeof(*texts));
	struct buf out;

	(void)state;
	/* one root with N-1 replies, none with a subject: appending children must stay linear
	 * (ORDEREDSUBJECT puts all of them in one thread too) */
	for (size_t i = 0; i < N; i++) {
		if (i == 0)
			texts[i] = xasprintf("Message-ID: <r@x>\r\n\r\n");
		else
			texts[i] = xasprintf("Message-ID: <m%zu@x>\r\nIn-Reply-To: <r@x>\r\n\r\n", i);
		t[i].text = texts[i];
		m[i] = mk(&t[i], (uint32_t)i + 1, (uint32_t)i + 1, 0, "");
		m[i].internaldate = (int64_t)i;
	}
	for (int alg = 0; alg < 2; alg++) {
		buf_init(&out, 1024 * 1024);
		assert_int_equal(imap_thread(alg ? IMAP_THREAD_REFERENCES : IMAP_THREAD_ORDEREDSUBJECT,
		                             m, N, false, &out),
		                 0);
		assert_true(strncmp(buf_cstr(&out), "(1 (2)(3)(4)", 12) == 0);
		assert_true(strcmp(buf_cstr(&out) + out.len - 8, "(20000))") == 0);
		buf_deinit(&out);
	}
	for (size_t i = 0; i < N; i++)
		free(texts[i]);
	free(texts);
	free(t);
	free(m);
}

/* ---- full-text index support ------------------------------------------------------------------ */

/* The required terms of keys as "(H:a|B:b)(HB:c)": one parenthesis per group. */
static void
check_required(const char *keys, const char *want)
{
	struct imap_search *s = compile(keys);
	struct imap_search_term t[8];
	char got[512] = "";
	size_t n = imap_search_required(s, 3, 64, t, N_ELEMENTS(t)), len = 0;

	for (size_t i = 0; i < n; i++) {
		bool first = i == 0 || t[i].group != t[i - 1].group;
		int w;

		if (i > 0)
			assert_true(t[i].group >= t[i - 1].group);
		w = snprintf(got + len, sizeof(got) - len, "%s%s%s%s:%.*s", first && i > 0 ? ")" : "",
		             first ? "(" : "|", (t[i].where & IMAP_SEARCH_IN_HEADER) ? "H" : "",
		             (t[i].where & IMAP_SEARCH_IN_BODY) ? "B" : "", (int)t[i].len, t[i].text);
		assert_true(w > 0 && (size_t)w < sizeof(got) - len);
		len += (size_t)w;
	}
	if (n > 0)
		got[len++] = ')';
	got[len] = '\0';
	if (strcmp(got, want) != 0)
		fprintf(stderr, "'%s': got '%s', want '%s'\n", keys, got, want);
	assert_string_equal(got, want);
	imap_search_free(&s);
}

static void
test_required_terms(void **state)
{
	(void)state;
	check_required("SUBJECT foo BODY barbaz", "(H:foo)(B:barbaz)");
	check_required("TEXT Hello", "(HB:hello)");
	check_required("FROM Alice TO bob CC carol BCC dave", "(H:alice)(H:bob)(H:carol)(H:dave)");
	check_required("HEADER X-Spam-Flag YES", "(H:yes)");
	check_required("HEADER X-Spam-Flag \"\"", "");
	check_required("BODY ab", "");
	check_required("SEEN UID 1:5 LARGER 10", "");
	check_required("NOT BODY foobar", "");
	check_required("SUBJECT foo NOT OR BODY bar BODY baz", "(H:foo)");
	check_required("OR SUBJECT foo BODY bar", "(H:foo|B:bar)");
	check_required("OR SUBJECT foo SEEN", "");
	check_required("OR SUBJECT foo BODY ba", "");
	check_required("OR SUBJECT foo (BODY bar SEEN)", "(H:foo|B:bar)");
	check_required("OR SUBJECT foo (SEEN BODY ab)", "");
	check_required("OR (SUBJECT foo BODY barr) OR FROM bob TO carol", "(H:foo|H:bob|H:carol)");
	check_required("SEEN (FROM alice (BODY \"x y z\"))", "(H:alice)(B:x y z)");
	check_required("CHARSET UTF-8 BODY \"Gr\xc3\x9c\xc3\x9f" "e\"", "(B:gr\xc3\xbc\xc3\x9f" "e)");
	/* three octets or more, but two characters */
	check_required("CHARSET UTF-8 BODY \"\xc3\x9f\xc3\xbc\"", "");
	/* longer than max_len (64) */
	check_required("BODY xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "");
	/* more terms than room: the OR that does not fit is left out whole */
	check_required("BODY aaa BODY bbb BODY ccc BODY ddd BODY eee BODY fff BODY ggg "
	               "OR BODY hhh BODY iii",
	               "(B:aaa)(B:bbb)(B:ccc)(B:ddd)(B:eee)(B:fff)(B:ggg)");
}

/* imap_search_extract gives the text the keys search: a needle is found by BODY / TEXT exactly
 * when it is in the extracted text. */
static void
test_extract(void **state)
{
	static const char *const needles[] = {
		"body text", "straße", "grüße aus berlin", "hello world", "joerg", "jörg müller",
		"grüße aus köln, softbreak", "hello base64 äöü", "secret binary", "inner subject",
		"привет", "preamble", "epilogue", "subject: attachments", "x-custom: hello",
	};
	const char *msgs[] = {msg_plain, msg_mime};
	struct buf h, b;

	(void)state;
	for (size_t m = 0; m < N_ELEMENTS(msgs); m++) {
		struct tmsg t = {msgs[m], false, 0};
		struct imap_search_msg msg = mk(&t, 1, 1, 0, "");

		imap_search_extract((const uint8_t *)msgs[m], strlen(msgs[m]), &h, &b);
		for (size_t i = 0; i < N_ELEMENTS(needles); i++) {
			char keys[256];
			bool in_h = memmem(h.data, h.len, needles[i], strlen(needles[i])) != NULL;
			bool in_b = memmem(b.data, b.len, needles[i], strlen(needles[i])) != NULL;

			assert_true(snprintf(keys, sizeof(keys), "CHARSET UTF-8 BODY \"%s\"",
			                     needles[i]) < (int)sizeof(keys));
			assert_int_equal(match(keys, &msg), in_b);
			assert_true(snprintf(keys, sizeof(keys), "CHARSET UTF-8 TEXT \"%s\"",
			                     needles[i]) < (int)sizeof(keys));
			assert_int_equal(match(keys, &msg), in_h || in_b);
		}
		buf_deinit(&h);
		buf_deinit(&b);
	}
	imap_search_extract((const uint8_t *)msg_mime, strlen(msg_mime), &h, &b);
	assert_non_null(memmem(h.data, h.len, "subject: attachments\n", 21));
	assert_non_null(memmem(b.data, b.len, "hello base64 äöü", strlen("hello base64 äöü")));
	assert_null(memmem(b.data, b.len, "secret", 6));
	buf_deinit(&h);
	buf_deinit(&b);
	imap_search_extract(NULL, 0, &h, &b);
	assert_int_equal(h.len, 0);
	assert_int_equal(b.len, 0);
	buf_deinit(&h);
	buf_deinit(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flag_keys),
		cmocka_unit_test(test_sequence_sets),
		cmocka_unit_test(test_dates),
		cmocka_unit_test(test_date_header_parser),
		cmocka_unit_test(test_header_keys),
		cmocka_unit_test(test_header_only_reads),
		cmocka_unit_test(test_mime_bodies),
		cmocka_unit_test(test_case_folding),
		cmocka_unit_test(test_not_or_nesting),
		cmocka_unit_test(test_bad_syntax),
		cmocka_unit_test(test_charset),
		cmocka_unit_test(test_return_options),
		cmocka_unit_test(test_predicates_and_errors),
		cmocka_unit_test(test_base_subject),
		cmocka_unit_test(test_sort),
		cmocka_unit_test(test_thread_algorithm_names),
		cmocka_unit_test(test_thread_orderedsubject),
		cmocka_unit_test(test_thread_references),
		cmocka_unit_test(test_thread_references_subjects),
		cmocka_unit_test(test_thread_loops_and_order),
		cmocka_unit_test(test_thread_long_chain),
		cmocka_unit_test(test_thread_flat),
		cmocka_unit_test(test_required_terms),
		cmocka_unit_test(test_extract),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
