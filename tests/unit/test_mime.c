/* MIME parsing (src/mime): BODYSTRUCTURE, BODY and ENVELOPE for a table of messages, with the
 * expected strings written by hand from RFC 3501 7.4.2 (sizes cut out of the messages by hand,
 * and one message with Dovecot's own published output); every split of every message, and one
 * octet at a time, must give the same tree; limits must degrade, never crash; vectors for
 * RFC 2047, RFC 2231, addresses, charsets, unfolding, IMAP strings; serialisation round trips
 * and rejects damaged images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime/mime.h"
#include "mime/mime_header.h"

/* ---- helpers --------------------------------------------------------------------------------- */

#define TXT "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" "
#define EXT0 " NIL NIL NIL NIL)"

static void
check_str(const char *what, const char *got, const char *want)
{
	if (strcmp(got, want) != 0) {
		print_error("%s:\n  got:  %s\n  want: %s\n", what, got, want);
		fail();
	}
}

static struct mime_part *
parse_with(const char *msg, size_t len, const struct mime_limits *lim, unsigned int *warn_r)
{
	struct mime_parser *p = mime_parser_new(lim);
	struct mime_part *root;

	mime_parser_feed(p, (const uint8_t *)msg, len);
	assert_int_equal(mime_parser_finish(p, &root), 0);
	if (warn_r != NULL)
		*warn_r = mime_parser_warnings(p);
	mime_parser_free(&p);
	assert_non_null(root);
	return root;
}

static struct mime_part *
parse(const char *msg)
{
	return parse_with(msg, strlen(msg), NULL, NULL);
}

/* The BODYSTRUCTURE (or BODY) of a tree as a C string; caller frees. */
static char *
bodystructure(const struct mime_part *root, bool extended)
{
	struct buf b;
	char *s;

	buf_init(&b, 1 << 24);
	assert_int_equal(mime_write_bodystructure(&b, root, extended), 0);
	s = xstrdup(buf_cstr(&b));
	buf_deinit(&b);
	return s;
}

static char *
envelope(const struct mime_envelope *env)
{
	struct buf b;
	char *s;

	buf_init(&b, 1 << 24);
	assert_int_equal(mime_write_envelope(&b, env), 0);
	s = xstrdup(buf_cstr(&b));
	buf_deinit(&b);
	return s;
}

/* The whole tree as bytes (every field), for comparing trees. */
static void
serialize(const struct mime_part *root, struct buf *out)
{
	buf_init(out, 1 << 26);
	assert_int_equal(mime_part_serialize(out, root), 0);
}

/* ---- BODYSTRUCTURE / BODY -------------------------------------------------------------------- */

/* RFC 2046 5.1.1 boundaries, multipart/alternative in multipart/mixed, attachments with an
 * RFC 2231 continued file name and with an encoded-word file name. */
static const char msg_mixed[] =
	"From: Alice <alice@example.org>\r\n"
	"To: Bob <bob@example.net>\r\n"
	"Subject: report\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
	"\r\n"
	"This is a multi-part message in MIME format.\r\n"
	"--outer\r\n"
	"Content-Type: multipart/alternative; boundary=inner\r\n"
	"\r\n"
	"--inner\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"Gr=C3=BC=C3=9Fe\r\n"
	"--inner\r\n"
	"Content-Type: text/html; charset=utf-8\r\n"
	"\r\n"
	"<p>Hi</p>\r\n"
	"\r\n"
	"--inner--\r\n"
	"--outer\r\n"
	"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
	"Content-Transfer-Encoding: base64\r\n"
	"Content-Disposition: attachment;\r\n"
	" filename*0*=utf-8''%E2%82%AC%20;\r\n"
	" filename*1=\"report.pdf\"\r\n"
	"\r\n"
	"JVBERi0xLjQK\r\n"
	"JVBERi0xLjQK\r\n"
	"--outer\r\n"
	"Content-Type: text/plain; name=\"=?utf-8?B?w6TDtsO8LnR4dA==?=\"\r\n"
	"Content-Disposition: attachment; filename=\"=?utf-8?B?w6TDtsO8LnR4dA==?=\"\r\n"
	"Content-ID: <att2@example.org>\r\n"
	"Content-Description: notes\r\n"
	"Content-Language: de, en-GB\r\n"
	"\r\n"
	"line one\r\n"
	"line two\r\n"
	"--outer--\r\n"
	"epilogue\r\n";

/* message/rfc822 holding its own multipart. */
static const char msg_rfc822[] =
	"From: a@example.org\r\n"
	"To: b@example.org\r\n"
	"Subject: fwd\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=XX\r\n"
	"\r\n"
	"--XX\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"see attached\r\n"
	"--XX\r\n"
	"Content-Type: message/rfc822\r\n"
	"Content-Disposition: attachment\r\n"
	"\r\n"
	"From: \"Carol C.\" <carol@example.com>\r\n"
	"To: dave@example.com, (nobody) eve@example.com (Eve E.)\r\n"
	"Subject: =?iso-8859-1?Q?caf=E9?=\r\n"
	"Date: Tue, 2 Jan 2024 08:00:00 +0100\r\n"
	"Message-ID: <inner@example.com>\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/alternative; boundary=\"YY\"\r\n"
	"\r\n"
	"--YY\r\n"
	"Content-Type: text/plain; charset=us-ascii\r\n"
	"\r\n"
	"plain\r\n"
	"--YY\r\n"
	"Content-Type: text/html\r\n"
	"\r\n"
	"<b>html</b>\r\n"
	"--YY--\r\n"
	"--XX--\r\n";

/* RFC 2046 5.1.5: parts of a digest default to message/rfc822. */
static const char msg_digest[] =
	"MIME-Version: 1.0\r\n"
	"Subject: digest\r\n"
	"Content-Type: multipart/digest; boundary=\"D\"\r\n"
	"\r\n"
	"--D\r\n"
	"\r\n"
	"From: x@example.org\r\n"
	"Subject: one\r\n"
	"\r\n"
	"first\r\n"
	"--D\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"not a message\r\n"
	"--D--\r\n";

static const char msg_no_final[] =
	"Content-Type: multipart/mixed; boundary=b\r\n"
	"\r\n"
	"--b\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"one\r\n"
	"--b\r\n"
	"\r\n"
	"two\r\n";

/* Lines that look like boundaries but are not; boundaries with trailing blanks. */
static const char msg_not_boundaries[] =
	"Content-Type: multipart/mixed; boundary=\"abc\"\r\n"
	"\r\n"
	"--abc\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"--ab\r\n"
	" --abc\r\n"
	"-- abc\r\n"
	"--abd\r\n"
	"---abc\r\n"
	"x--abc\r\n"
	"--ABC\r\n"
	"--abc \t \r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"last\r\n"
	"--abc--  \r\n"
	"epilogue\r\n";

static const char msg_bare_lf[] =
	"Content-Type: multipart/alternative; boundary=z\n"
	"\n"
	"--z\n"
	"\n"
	"a\n"
	"b\n"
	"--z--\n";

/* Dovecot's src/lib-imap/test-imap-bodystructure.c message (LF line ends). */
static const char msg_dovecot[] =
	"From: user@domain.org\n"
	"Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
	"Mime-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"foo\n"
	" bar\"\n"
	"\n"
	"Root MIME prologue\n"
	"\n"
	"--foo bar\n"
	"Content-Type: text/x-myown; charset=us-ascii; foo=\"quoted\\\"string\"\n"
	"Content-ID: <foo@example.com>\n"
	"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
	"Content-Disposition: inline; foo=bar\n"
	"Content-Description: hellodescription\n"
	"Content-Language: en, fi, se\n"
	"Content-Location: http://example.com/test.txt\n"
	"\n"
	"hello\n"
	"\n"
	"--foo bar\n"
	"Content-Type: message/rfc822\n"
	"\n"
	"From: sub@domain.org\n"
	"To: sub-to1@domain.org, sub-to2@domain.org\n"
	"Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
	"Subject: submsg\n"
	"Content-Type: multipart/alternative; boundary=\"sub1\"\n"
	"\n"
	"Sub MIME prologue\n"
	"--sub1\n"
	"Content-Type: text/html\n"
	"Content-Transfer-Encoding: 8bit\n"
	"\n"
	"<p>Hello world</p>\n"
	"\n"
	"--sub1\n"
	"Content-Type: text/plain\n"
	"Content-Transfer-Encoding: ?invalid\n"
	"\n"
	"Hello another world\n"
	"\n"
	"--sub1--\n"
	"Sub MIME epilogue\n"
	"\n"
	"--foo bar--\n"
	"Root MIME epilogue\n";

static const struct bs_vec {
	const char *name;
	const char *msg;
	const char *bodystructure;
	const char *body;       /* NULL: not checked */
	unsigned int warnings;  /* these must be set */
	unsigned int no_warnings; /* these must not */
} bs_vecs[] = {
	{"simple text",
	 "From: Alice <alice@example.org>\r\n"
	 "To: bob@example.net\r\n"
	 "Subject: hi\r\n"
	 "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
	 "Message-ID: <1@example.org>\r\n"
	 "\r\n"
	 "Hello Bob.\r\n"
	 "Bye.\r\n",
	 TXT "18 2" EXT0, TXT "18 2)", 0, MIME_WARN_BARE_LF | MIME_WARN_NO_HEADER_END},
	{"multipart/mixed with alternative and attachments", msg_mixed,
	 "((" "(\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 15 0"
	 EXT0 "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 11 1" EXT0
	 " \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)"
	 "(\"application\" \"pdf\" (\"name\" \"report.pdf\") NIL NIL \"base64\" 26 NIL"
	 " (\"attachment\" (\"filename*\" \"utf-8''%E2%82%AC%20report.pdf\")) NIL NIL)"
	 "(\"text\" \"plain\" (\"name\" \"=?utf-8?B?w6TDtsO8LnR4dA==?=\" \"charset\" \"us-ascii\")"
	 " \"<att2@example.org>\" \"notes\" \"7bit\" 18 1 NIL"
	 " (\"attachment\" (\"filename\" \"=?utf-8?B?w6TDtsO8LnR4dA==?=\")) (\"de\" \"en-GB\") NIL)"
	 " \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)",
	 "(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 15 0)"
	 "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 11 1) \"alternative\")"
	 "(\"application\" \"pdf\" (\"name\" \"report.pdf\") NIL NIL \"base64\" 26)"
	 "(\"text\" \"plain\" (\"name\" \"=?utf-8?B?w6TDtsO8LnR4dA==?=\" \"charset\" \"us-ascii\")"
	 " \"<att2@example.org>\" \"notes\" \"7bit\" 18 1) \"mixed\")",
	 0, ~0u},
	{"message/rfc822 with its own multipart", msg_rfc822,
	 "(" TXT "12 0" EXT0
	 "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 384"
	 " (\"Tue, 2 Jan 2024 08:00:00 +0100\" \"=?iso-8859-1?Q?caf=E9?=\""
	 " ((\"Carol C.\" NIL \"carol\" \"example.com\"))"
	 " ((\"Carol C.\" NIL \"carol\" \"example.com\"))"
	 " ((\"Carol C.\" NIL \"carol\" \"example.com\"))"
	 " ((NIL NIL \"dave\" \"example.com\")(\"Eve E.\" NIL \"eve\" \"example.com\"))"
	 " NIL NIL NIL \"<inner@example.com>\")"
	 " (" TXT "5 0" EXT0 "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 0"
	 EXT0 " \"alternative\" (\"boundary\" \"YY\") NIL NIL NIL)"
	 " 16 NIL (\"attachment\" NIL) NIL NIL)"
	 " \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)",
	 "(" TXT "12 0)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 384"
	 " (\"Tue, 2 Jan 2024 08:00:00 +0100\" \"=?iso-8859-1?Q?caf=E9?=\""
	 " ((\"Carol C.\" NIL \"carol\" \"example.com\"))"
	 " ((\"Carol C.\" NIL \"carol\" \"example.com\"))"
	 " ((\"Carol C.\" NIL \"carol\" \"example.com\"))"
	 " ((NIL NIL \"dave\" \"example.com\")(\"Eve E.\" NIL \"eve\" \"example.com\"))"
	 " NIL NIL NIL \"<inner@example.com>\")"
	 " (" TXT "5 0)(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 0)"
	 " \"alternative\") 16) \"mixed\")",
	 0, ~0u},
	{"multipart/digest defaults", msg_digest,
	 "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 42"
	 " (NIL \"one\" ((NIL NIL \"x\" \"example.org\")) ((NIL NIL \"x\" \"example.org\"))"
	 " ((NIL NIL \"x\" \"example.org\")) NIL NIL NIL NIL NIL)"
	 " " TXT "5 0" EXT0 " 3 NIL NIL NIL NIL)"
	 TXT "13 0" EXT0 " \"digest\" (\"boundary\" \"D\") NIL NIL NIL)",
	 NULL, 0, ~0u},
	{"missing final boundary", msg_no_final,
	 "(" TXT "3 0" EXT0 TXT "5 1" EXT0 " \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)", NULL,
	 MIME_WARN_NO_FINAL_BOUNDARY, MIME_WARN_BOUNDARY},
	{"boundary-like lines, blanks after boundaries", msg_not_boundaries,
	 "(" TXT "50 6" EXT0 TXT "4 0" EXT0 " \"mixed\" (\"boundary\" \"abc\") NIL NIL NIL)", NULL,
	 0, MIME_WARN_NO_FINAL_BOUNDARY},
	{"empty body", "Subject: x\r\n\r\n", TXT "0 0" EXT0, TXT "0 0)", 0,
	 MIME_WARN_NO_HEADER_END},
	{"header without body separator", "Subject: x\r\nFrom: a@b\r\n", TXT "0 0" EXT0, NULL,
	 MIME_WARN_NO_HEADER_END, 0},
	{"empty message", "", TXT "0 0" EXT0, NULL, 0, 0},
	{"body without header", "\r\nhello\r\n", TXT "7 1" EXT0, NULL, 0, 0},
	{"bare LF", msg_bare_lf,
	 "(" TXT "4 1" EXT0 " \"alternative\" (\"boundary\" \"z\") NIL NIL NIL)", NULL,
	 MIME_WARN_BARE_LF, 0},
	{"Dovecot test-imap-bodystructure", msg_dovecot,
	 "((\"text\" \"x-myown\" (\"charset\" \"us-ascii\" \"foo\" \"quoted\\\"string\") "
	 "\"<foo@example.com>\" \"hellodescription\" \"7bit\" 7 1 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" "
	 "(\"inline\" (\"foo\" \"bar\")) (\"en\" \"fi\" \"se\") \"http://example.com/test.txt\")"
	 "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 412 (\"Sun, 12 Aug 2012 12:34:56 +0300\" "
	 "\"submsg\" ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL "
	 "NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub-to1\" \"domain.org\")(NIL NIL \"sub-to2\" "
	 "\"domain.org\")) NIL NIL NIL NIL) ((\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL "
	 "\"8bit\" 20 1 NIL NIL NIL NIL)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	 "\"7bit\" 21 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"sub1\") NIL NIL NIL) 21 "
	 "NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"foo bar\") NIL NIL NIL)",
	 "((\"text\" \"x-myown\" (\"charset\" \"us-ascii\" \"foo\" \"quoted\\\"string\") "
	 "\"<foo@example.com>\" \"hellodescription\" \"7bit\" 7 1)(\"message\" \"rfc822\" NIL NIL "
	 "NIL \"7bit\" 412 (\"Sun, 12 Aug 2012 12:34:56 +0300\" \"submsg\" ((NIL NIL \"sub\" "
	 "\"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) "
	 "((NIL NIL \"sub-to1\" \"domain.org\")(NIL NIL \"sub-to2\" \"domain.org\")) NIL NIL NIL "
	 "NIL) ((\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"8bit\" 20 1)(\"text\" "
	 "\"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 21 1) \"alternative\") 21) "
	 "\"mixed\")",
	 0, 0},
	{"multipart without boundary",
	 "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nhello\r\n",
	 "(\"application\" \"octet-stream\" NIL NIL NIL \"7bit\" 7" EXT0, NULL, MIME_WARN_BOUNDARY,
	 0},
	{"multipart without any delimiter",
	 "Content-Type: multipart/mixed; boundary=nope\r\n\r\n--other\r\n",
	 "(\"application\" \"octet-stream\" (\"boundary\" \"nope\") NIL NIL \"7bit\" 9" EXT0, NULL,
	 MIME_WARN_BOUNDARY, 0},
	{"encoded message/rfc822",
	 "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	 "RnJvbTogYQ==\r\n",
	 "(\"application\" \"octet-stream\" NIL NIL NIL \"base64\" 14" EXT0, NULL,
	 MIME_WARN_ENCODED_MESSAGE, 0},
	{"empty message/rfc822",
	 "Content-Type: message/rfc822\r\n\r\n",
	 "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
	 TXT "0 0" EXT0 " 0" EXT0,
	 NULL, MIME_WARN_NO_HEADER_END, 0},
	{"header cut short by a boundary",
	 "Content-Type: multipart/mixed; boundary=q\r\n\r\n"
	 "--q\r\nContent-Type: text/html\r\n--q\r\n\r\nx\r\n--q--\r\n",
	 "((\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0" EXT0 TXT "1 0" EXT0
	 " \"mixed\" (\"boundary\" \"q\") NIL NIL NIL)",
	 NULL, MIME_WARN_NO_HEADER_END, 0},
	{"boundary matched as a prefix (RFC 2046 5.1.1 note)",
	 "Content-Type: multipart/mixed; boundary=abc\r\n\r\n"
	 "--abc\r\n\r\none\r\n--abcdef\r\n\r\ntwo\r\n--abc--\r\n",
	 "(" TXT "3 0" EXT0 TXT "3 0" EXT0 " \"mixed\" (\"boundary\" \"abc\") NIL NIL NIL)", NULL,
	 0, 0},
	{"nested boundary with the outer one as prefix",
	 "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
	 "--b\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
	 "--b2\r\n\r\nin1\r\n--b2\r\n\r\nin2\r\n--b2--\r\n"
	 "--b\r\n\r\nout2\r\n--b--\r\n",
	 "((" TXT "3 0" EXT0 TXT "3 0" EXT0 " \"alternative\" (\"boundary\" \"b2\") NIL NIL NIL)"
	 TXT "4 0" EXT0 " \"mixed\" (\"boundary\" \"b\") NIL NIL NIL)",
	 NULL, 0, MIME_WARN_NO_FINAL_BOUNDARY},
	{"outer boundary ends an inner multipart",
	 "Content-Type: multipart/mixed; boundary=o\r\n\r\n"
	 "--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
	 "--i\r\n\r\na\r\n--o\r\n\r\nb\r\n--o--\r\n",
	 "((" TXT "1 0" EXT0 " \"alternative\" (\"boundary\" \"i\") NIL NIL NIL)" TXT "1 0" EXT0
	 " \"mixed\" (\"boundary\" \"o\") NIL NIL NIL)",
	 NULL, MIME_WARN_NO_FINAL_BOUNDARY, 0},
	{"Content-* without MIME is ignored",
	 "Content-Transfer-Encoding: base64\r\nContent-Disposition: inline\r\n\r\nabc",
	 TXT "3 0" EXT0, NULL, 0, 0},
	{"8-bit and specials in strings",
	 "MIME-Version: 1.0\r\nContent-Description: Gr\xc3\xbc\xc3\x9f" "e\r\n"
	 "Content-ID: say \"hi\" \\ bye\r\n\r\nx",
	 "(\"text\" \"plain\" (\"charset\" \"us-ascii\") \"say \\\"hi\\\" \\\\ bye\" "
	 "{7}\r\nGr\xc3\xbc\xc3\x9f" "e \"7bit\" 1 0" EXT0,
	 NULL, 0, 0},
	{"type case kept, parameter names lowercased",
	 "MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=ISO-8859-1; Format=Flowed\r\n"
	 "Content-Transfer-Encoding: QUOTED-PRINTABLE\r\n\r\n=E9\r\n",
	 "(\"TEXT\" \"PLAIN\" (\"charset\" \"ISO-8859-1\" \"format\" \"Flowed\") NIL NIL "
	 "\"QUOTED-PRINTABLE\" 5 1" EXT0,
	 NULL, 0, 0},
	{"invalid Content-Type is text/plain (RFC 2045 5.2)",
	 "MIME-Version: 1.0\r\nContent-Type: text\r\n\r\nabc", TXT "3 0" EXT0, NULL, 0, 0},
	{"folded header fields",
	 "MIME-Version: 1.0\r\nContent-Type: text/plain;\r\n\tcharset=\"utf-8\";\r\n"
	 " format=flowed\r\nContent-Description: a\r\n  b\r\n\r\n",
	 "(\"text\" \"plain\" (\"charset\" \"utf-8\" \"format\" \"flowed\") NIL \"a  b\" \"7bit\" "
	 "0 0" EXT0,
	 NULL, 0, 0},
};

static void
test_bodystructure(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(bs_vecs); i++) {
		const struct bs_vec *v = &bs_vecs[i];
		unsigned int warn;
		struct mime_part *root = parse_with(v->msg, strlen(v->msg), NULL, &warn);
		char *s = bodystructure(root, true);

		check_str(v->name, s, v->bodystructure);
		free(s);
		if (v->body != NULL) {
			s = bodystructure(root, false);
			check_str(v->name, s, v->body);
			free(s);
		}
		if ((warn & v->warnings) != v->warnings || (warn & v->no_warnings) != 0) {
			print_error("%s: warnings 0x%x\n", v->name, warn);
			fail();
		}
		mime_part_free(&root);
		assert_null(root);
	}
}

/* Offsets, sizes and lines of the tree, for the IMAP server's BODY[section]. */
static void
test_offsets(void **state)
{
	struct mime_part *root = parse(msg_rfc822), *p1, *p2, *msg, *alt, *html;
	const char *m = msg_rfc822;
	size_t len = strlen(m);

	(void)state;
	assert_int_equal(root->kind, MIME_KIND_MULTIPART);
	assert_int_equal(root->hdr_offset, 0);
	assert_int_equal(root->body_offset, strstr(m, "\r\n\r\n") - m + 4);
	assert_int_equal(root->end_offset, len);
	assert_int_equal(root->body_vsize, len - root->body_offset);
	assert_non_null(root->envelope);
	p1 = root->children;
	p2 = p1->next;
	assert_null(p2->next);
	assert_int_equal(p1->hdr_offset, strstr(m, "--XX\r\n") - m + 6);
	assert_int_equal(p1->body_offset, strstr(m, "see attached") - m);
	assert_int_equal(p1->end_offset, strstr(m, "see attached") - m + 12);
	assert_null(p1->envelope);
	assert_int_equal(p2->kind, MIME_KIND_MESSAGE);
	msg = p2->children;
	assert_non_null(msg);
	assert_null(msg->next);
	assert_non_null(msg->envelope);
	assert_ptr_equal(msg->parent, p2);
	assert_int_equal(msg->hdr_offset, p2->body_offset);
	assert_int_equal(msg->end_offset, p2->end_offset);
	assert_int_equal(p2->end_offset, strstr(m, "\r\n--XX--") - m);
	assert_int_equal(msg->kind, MIME_KIND_MULTIPART);
	alt = msg->children;
	html = alt->next;
	assert_int_equal(html->body_offset, strstr(m, "<b>html</b>") - m);
	assert_int_equal(html->end_offset, strstr(m, "<b>html</b>") - m + 11);
	assert_true(mime_part_is_type(html, "TEXT", "Html"));
	assert_false(mime_part_is_type(html, "text", "plain"));
	assert_int_equal(html->hdr_lines, 2);
	assert_int_equal(html->hdr_vsize, strlen("Content-Type: text/html\r\n\r\n"));
	mime_part_free(&root);

	/* bare LF: physical offsets, virtual sizes */
	root = parse(msg_bare_lf);
	assert_int_equal(root->end_offset, strlen(msg_bare_lf));
	assert_int_equal(root->hdr_vsize, root->body_offset + 2);
	assert_int_equal(root->children->body_offset, strstr(msg_bare_lf, "a\nb") - msg_bare_lf);
	assert_int_equal(root->children->end_offset, root->children->body_offset + 3);
	assert_int_equal(root->children->body_vsize, 4);
	mime_part_free(&root);
}

/* ---- ENVELOPE -------------------------------------------------------------------------------- */

static const struct env_vec {
	const char *name;
	const char *header;
	const char *envelope;
} env_vecs[] = {
	{"groups and an encoded Subject",
	 "From: Alice <alice@example.org>\r\n"
	 "To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;\r\n"
	 "Cc: Undisclosed recipients:;\r\n"
	 "Subject: =?utf-8?B?w6TDtsO8?=\r\n",
	 "(NIL \"=?utf-8?B?w6TDtsO8?=\" ((\"Alice\" NIL \"alice\" \"example.org\")) "
	 "((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) "
	 "((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" \"a.test\")(NIL NIL \"joe\" "
	 "\"where.test\")(\"John\" NIL \"jdoe\" \"one.test\")(NIL NIL NIL NIL)) "
	 "((NIL NIL \"Undisclosed recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL)"},
	{"multiple From, Sender, empty Reply-To",
	 "From: Alice <a@example.org>, \"Bob \\\"B\\\" Smith\" <b@example.org>\r\n"
	 "Sender: Secretary <s@example.org>\r\n"
	 "Reply-To: \r\n"
	 "Date: Thu, 13 Feb 1969 23:32:54 -0330\r\n"
	 "Message-ID: <5678.21-Nov-1997@example.com>\r\n"
	 "In-Reply-To: <1234@local.machine.example>\r\n",
	 "(\"Thu, 13 Feb 1969 23:32:54 -0330\" NIL ((\"Alice\" NIL \"a\" \"example.org\")"
	 "(\"Bob \\\"B\\\" Smith\" NIL \"b\" \"example.org\")) ((\"Secretary\" NIL \"s\" "
	 "\"example.org\")) ((\"Alice\" NIL \"a\" \"example.org\")(\"Bob \\\"B\\\" Smith\" NIL "
	 "\"b\" \"example.org\")) NIL NIL NIL \"<1234@local.machine.example>\" "
	 "\"<5678.21-Nov-1997@example.com>\")"},
	{"no fields", "X-Other: 1\r\n", "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"},
	{"obsolete forms (RFC 5322 4.4)",
	 "To: <@route1,@route2:user@host>, Pete(A nice \\) chap) <pete(his account)@silly.test"
	 "(his host)>, \"Joe Q. Public\" <john.q.public@example.com>,,\r\n"
	 " user.name @ example . com, Mary Smith <mary@x.test>, jdoe@example.org (John Doe),"
	 " John Q. Public <jqp@[192.0.2.1]>\r\n",
	 "(NIL NIL NIL NIL NIL ((NIL \"@route1,@route2\" \"user\" \"host\")(\"Pete\" NIL \"pete\" "
	 "\"silly.test\")(\"Joe Q. Public\" NIL \"john.q.public\" \"example.com\")(NIL NIL "
	 "\"user.name\" \"example.com\")(\"Mary Smith\" NIL \"mary\" \"x.test\")(\"John Doe\" NIL "
	 "\"jdoe\" \"example.org\")(\"John Q. Public\" NIL \"jqp\" \"[192.0.2.1]\")) NIL NIL NIL "
	 "NIL)"},
	{"8-bit Subject and name",
	 "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\nFrom: J\xc3\xb6rg <j@example.de>\r\n",
	 "(NIL {7}\r\nGr\xc3\xbc\xc3\x9f" "e (({5}\r\nJ\xc3\xb6rg NIL \"j\" \"example.de\")) "
	 "(({5}\r\nJ\xc3\xb6rg NIL \"j\" \"example.de\")) (({5}\r\nJ\xc3\xb6rg NIL \"j\" "
	 "\"example.de\")) NIL NIL NIL NIL NIL)"},
	{"missing parts of addresses",
	 "To: undisclosed-recipients\r\nFrom: <>\r\nCc: <@host.example>\r\n",
	 "(NIL NIL ((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) ((NIL NIL \"MISSING_MAILBOX\""
	 " \"MISSING_DOMAIN\")) ((NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\")) ((NIL NIL "
	 "\"undisclosed-recipients\" \"MISSING_DOMAIN\")) ((NIL NIL \"MISSING_MAILBOX\" "
	 "\"host.example\")) NIL NIL NIL)"},
	{"present but empty, folded, first wins",
	 "Subject:\r\nDate: Fri,\r\n 21 Nov 1997\r\n  09:55:06 -0600\r\nDate: later\r\n"
	 "Bcc:\r\nMessage-ID:   <x@y>  \r\n",
	 "(\"Fri, 21 Nov 1997  09:55:06 -0600\" \"\" NIL NIL NIL NIL NIL NIL NIL \"<x@y>\")"},
	{"group in From (RFC 6854), empty group",
	 "From: Team:;\r\nTo: \"\" <a@b.c>, \"quoted@local\"@example.com\r\n",
	 "(NIL NIL ((NIL NIL \"Team\" NIL)(NIL NIL NIL NIL)) ((NIL NIL \"Team\" NIL)(NIL NIL NIL "
	 "NIL)) ((NIL NIL \"Team\" NIL)(NIL NIL NIL NIL)) ((NIL NIL \"a\" \"b.c\")(NIL NIL "
	 "\"quoted@local\" \"example.com\")) NIL NIL NIL NIL)"},
};

static void
test_envelope(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(env_vecs); i++) {
		const struct env_vec *v = &env_vecs[i];
		char *msg = xasprintf("%s\r\nbody\r\n", v->header);
		struct mime_part *root = parse(msg);
		char *s = envelope(root->envelope);

		check_str(v->name, s, v->envelope);
		free(s);
		mime_part_free(&root);
		free(msg);
	}
	/* NULL: an envelope of NILs (a part that is no message) */
	{
		char *s = envelope(NULL);

		check_str("NULL envelope", s, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
		free(s);
	}
}

/* ---- split feeding --------------------------------------------------------------------------- */

static const char *const split_msgs[] = {
	msg_mixed, msg_rfc822, msg_digest, msg_no_final, msg_not_boundaries, msg_bare_lf,
	msg_dovecot,
	"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/html\r\n--q",
	"Subject: a\r\n b\r\r\n\r",
	"Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x  \r\r\n\r\n--x--\r",
};

static void
check_split(const char *name, const char *msg, size_t len, const size_t *cuts, size_t ncuts,
            const struct buf *want, unsigned int want_warn)
{
	struct mime_parser *p = mime_parser_new(NULL);
	struct mime_part *root;
	struct buf got;
	size_t pos = 0;

	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : len;
		/* a copy of exactly the piece, so ASan sees any read past it */
		uint8_t *piece = xmalloc(end - pos + 1);

		memcpy(piece, msg + pos, end - pos);
		mime_parser_feed(p, piece, end - pos);
		free(piece);
		pos = end;
	}
	assert_int_equal(mime_parser_finish(p, &root), 0);
	assert_int_equal(mime_parser_warnings(p), want_warn);
	mime_parser_free(&p);
	serialize(root, &got);
	if (got.len != want->len || memcmp(got.data, want->data, got.len) != 0) {
		print_error("%s: split at %zu (%zu cuts) gives another tree\n", name,
		            ncuts > 0 ? cuts[0] : 0, ncuts);
		fail();
	}
	buf_deinit(&got);
	mime_part_free(&root);
}

static void
test_split(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(split_msgs) + N_ELEMENTS(bs_vecs); i++) {
		const char *msg = i < N_ELEMENTS(split_msgs) ? split_msgs[i] :
		                  bs_vecs[i - N_ELEMENTS(split_msgs)].msg;
		size_t len = strlen(msg), *cuts;
		unsigned int warn;
		struct mime_part *root = parse_with(msg, len, NULL, &warn);
		struct buf want;
		uint32_t seed = 12345;

		serialize(root, &want);
		mime_part_free(&root);
		/* every split point */
		for (size_t c = 0; c <= len; c++)
			check_split("two pieces", msg, len, &c, 1, &want, warn);
		/* one octet at a time */
		cuts = xmalloc((len + 1) * sizeof(*cuts));
		for (size_t c = 0; c < len; c++)
			cuts[c] = c;
		check_split("octet by octet", msg, len, cuts, len, &want, warn);
		/* random pieces, empty ones included */
		for (int round = 0; round < 30; round++) {
			size_t n = 0, pos = 0;

			while (pos < len) {
				seed = seed * 1103515245u + 12345u;
				pos += (seed >> 16) % 7;
				if (pos > len)
					pos = len;
				cuts[n++] = pos;
				if (n == len)
					break;
			}
			check_split("random pieces", msg, len, cuts, n, &want, warn);
		}
		free(cuts);
		buf_deinit(&want);
	}
}

/* ---- limits ---------------------------------------------------------------------------------- */

/* Balanced parentheses outside strings and literals: the writers' output stays well-formed. */
static void
check_balanced(const char *s)
{
	int depth = 0;
	bool quoted = false;

	for (; *s != '\0'; s++) {
		if (!quoted && *s == '{') {
			char *end;
			unsigned long n = strtoul(s + 1, &end, 10);

			assert_true(end[0] == '}' && end[1] == '\r' && end[2] == '\n');
			assert_true(strlen(end + 3) >= n);
			s = end + 2 + n;
			continue;
		}
		if (quoted) {
			if (*s == '\\')
				s++;
			else if (*s == '"')
				quoted = false;
			continue;
		}
		if (*s == '"')
			quoted = true;
		else if (*s == '(')
			depth++;
		else if (*s == ')')
			assert_true(--depth >= 0);
	}
	assert_false(quoted);
	assert_int_equal(depth, 0);
}

static unsigned int
tree_depth(const struct mime_part *p)
{
	unsigned int d = 0;

	for (const struct mime_part *c = p->children; c != NULL; c = c->next) {
		unsigned int cd = tree_depth(c) + 1; /* MAX() would evaluate it twice */

		d = MAX(d, cd);
	}
	return d;
}

static unsigned int
tree_count(const struct mime_part *p)
{
	unsigned int n = 1;

	for (const struct mime_part *c = p->children; c != NULL; c = c->next)
		n += tree_count(c);
	return n;
}

static void
test_limit_depth(void **state)
{
	struct buf m;
	struct mime_part *root;
	struct mime_limits lim;
	unsigned int warn;
	char *s;

	(void)state;
	/* 80 nested multiparts, each one the only part of the one before; no boundary is a
	 * prefix of another (x1y, x10y), or lines would match several (RFC 2046 5.1.1) */
	buf_init(&m, 1 << 20);
	for (int i = 0; i < 80; i++)
		(void)buf_printf(&m, "Content-Type: multipart/mixed; boundary=x%dy\r\n\r\n"
		                 "--x%dy\r\n", i, i);
	(void)buf_append_str(&m, "Content-Type: text/plain\r\n\r\ndeep\r\n");
	for (int i = 79; i >= 0; i--)
		(void)buf_printf(&m, "--x%dy--\r\n", i);
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_true(warn & MIME_WARN_DEPTH);
	assert_int_equal(tree_depth(root), MIME_DEFAULT_DEPTH);
	assert_int_equal(root->end_offset, m.len);
	s = bodystructure(root, true);
	check_balanced(s);
	assert_non_null(strstr(s, "(\"application\" \"octet-stream\" (\"boundary\" \"x50y\")"));
	free(s);
	mime_part_free(&root);

	/* a small limit, checked in full: the third level is body up to the second's boundary */
	mime_limits_default(&lim);
	lim.max_depth = 2;
	root = parse_with((const char *)m.data, m.len, &lim, &warn);
	assert_true(warn & MIME_WARN_DEPTH);
	s = bodystructure(root, false);
	{
		const char *t = buf_cstr(&m), *start = strstr(t, "boundary=x2y\r\n\r\n") + 16;
		char *want = xasprintf("(((\"application\" \"octet-stream\" (\"boundary\" \"x2y\") "
		                       "NIL NIL \"7bit\" %zu) \"mixed\") \"mixed\")",
		                       (size_t)(strstr(t, "\r\n--x1y--") - start));

		check_str("max_depth 2", s, want);
		free(want);
	}
	free(s);
	mime_part_free(&root);
	buf_deinit(&m);
}

static void
test_limit_parts(void **state)
{
	struct buf m;
	struct mime_part *root;
	struct mime_limits lim;
	unsigned int warn;
	char *s;

	(void)state;
	buf_init(&m, 1 << 22);
	(void)buf_append_str(&m, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
	for (int i = 0; i < 10050; i++)
		(void)buf_printf(&m, "--p\r\n\r\n%d\r\n", i);
	(void)buf_append_str(&m, "--p--\r\nepilogue\r\n");
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_true(warn & MIME_WARN_PARTS);
	assert_int_equal(tree_count(root), MIME_DEFAULT_PARTS);
	assert_int_equal(root->end_offset, m.len);
	s = bodystructure(root, true);
	check_balanced(s);
	free(s);
	mime_part_free(&root);

	/* max_parts 3: the root and two parts, the rest stays in the multipart's body; the last
	 * part still ends at its boundary */
	mime_limits_default(&lim);
	lim.max_parts = 3;
	root = parse_with((const char *)m.data, m.len, &lim, &warn);
	assert_true(warn & MIME_WARN_PARTS);
	assert_int_equal(tree_count(root), 3);
	s = bodystructure(root, false);
	check_str("max_parts 3", s, "(" TXT "1 0)" TXT "1 0) \"mixed\")");
	free(s);
	mime_part_free(&root);

	/* a message/rfc822 needs a part for its message: without one it is a leaf */
	lim.max_parts = 3;
	root = parse_with(msg_rfc822, strlen(msg_rfc822), &lim, &warn);
	assert_true(warn & MIME_WARN_PARTS);
	s = bodystructure(root, false);
	check_str("max_parts 3, message", s, "(" TXT "12 0)(\"application\" \"octet-stream\" NIL "
	          "NIL NIL \"7bit\" 384) \"mixed\")");
	free(s);
	mime_part_free(&root);
	buf_deinit(&m);
}

static void
test_limit_header(void **state)
{
	struct buf m;
	struct mime_part *root;
	struct mime_limits lim;
	unsigned int warn;
	char *s;

	(void)state;
	/* a 100 KiB field before Content-Type: the header is skipped, not read */
	buf_init(&m, 1 << 22);
	(void)buf_append_str(&m, "MIME-Version: 1.0\r\nX-Big: ");
	for (int i = 0; i < 100 * 1024; i++)
		(void)buf_append_byte(&m, 'a' + i % 26);
	(void)buf_append_str(&m, "\r\nContent-Type: image/png\r\n\r\nbody\r\n");
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_true(warn & MIME_WARN_HEADER_BYTES);
	assert_true(root->flags & MIME_PART_HEADER_CUT);
	assert_int_equal(root->body_offset, m.len - 6);
	s = bodystructure(root, false);
	check_str("huge header", s, TXT "6 1)");
	free(s);
	mime_part_free(&root);

	/* the same after Content-Type: what was read counts */
	buf_reset(&m);
	(void)buf_append_str(&m, "MIME-Version: 1.0\r\nContent-Type: image/png\r\nX-Big: ");
	for (int i = 0; i < 200 * 1024; i++)
		(void)buf_append_str(&m, i % 70 == 69 ? "\r\n " : "x");
	(void)buf_append_str(&m, "\r\nContent-ID: <late>\r\n\r\nbody\r\n");
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_true(warn & MIME_WARN_HEADER_BYTES);
	s = bodystructure(root, false);
	check_str("huge folded header", s, "(\"image\" \"png\" NIL NIL NIL \"7bit\" 6)");
	free(s);
	mime_part_free(&root);

	/* too many fields */
	buf_reset(&m);
	(void)buf_append_str(&m, "MIME-Version: 1.0\r\n");
	for (int i = 0; i < 1500; i++)
		(void)buf_printf(&m, "X-F%d: v\r\n", i);
	(void)buf_append_str(&m, "Content-Type: image/png\r\n\r\nbody");
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_true(warn & MIME_WARN_HEADER_FIELDS);
	s = bodystructure(root, false);
	check_str("many fields", s, TXT "4 0)");
	free(s);
	mime_part_free(&root);

	/* kept bytes: values past the budget are dropped */
	mime_limits_default(&lim);
	lim.max_kept_bytes = 40;
	root = parse_with(msg_mixed, strlen(msg_mixed), &lim, &warn);
	assert_true(warn & MIME_WARN_KEPT_BYTES);
	s = bodystructure(root, true);
	check_balanced(s);
	free(s);
	mime_part_free(&root);

	/* a boundary longer than max_boundary still works: lines start with all of it */
	buf_reset(&m);
	(void)buf_append_str(&m, "Content-Type: multipart/mixed; boundary=\"");
	for (int i = 0; i < 300; i++)
		(void)buf_append_byte(&m, 'a' + i % 26);
	(void)buf_append_str(&m, "\"\r\n\r\n--");
	for (int i = 0; i < 300; i++)
		(void)buf_append_byte(&m, 'a' + i % 26);
	(void)buf_append_str(&m, "\r\n\r\nx\r\n--");
	for (int i = 0; i < 300; i++)
		(void)buf_append_byte(&m, 'a' + i % 26);
	(void)buf_append_str(&m, "--\r\n");
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_int_equal(root->kind, MIME_KIND_MULTIPART);
	assert_int_equal(tree_count(root), 2);
	assert_int_equal(root->children->body_vsize, 1);
	assert_false(warn & MIME_WARN_NO_FINAL_BOUNDARY);
	mime_part_free(&root);

	/* a boundary line with 1 MB of blanks after it */
	buf_reset(&m);
	(void)buf_append_str(&m, "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
	                         "--b\r\n\r\nx\r\n--b");
	for (int i = 0; i < 1024 * 1024; i++)
		(void)buf_append_byte(&m, i % 2 ? ' ' : '\t');
	(void)buf_append_str(&m, "\r\n\r\ny\r\n--b--\r\n");
	root = parse_with((const char *)m.data, m.len, NULL, &warn);
	assert_int_equal(tree_count(root), 3);
	mime_part_free(&root);
	buf_deinit(&m);
}

static void
test_parser_misc(void **state)
{
	struct mime_parser *p = mime_parser_new(NULL);
	struct mime_part *root, *again;

	(void)state;
	mime_parser_feed(p, (const uint8_t *)"Subject: x\r\n\r\n", 14);
	assert_int_equal(mime_parser_finish(p, &root), 0);
	assert_int_equal(mime_parser_finish(p, &again), -1);
	assert_null(again);
	mime_parser_free(&p);
	mime_part_free(&root);
	assert_null(p);
	mime_parser_free(&p);

	/* a parser freed before finish frees its tree */
	p = mime_parser_new(NULL);
	mime_parser_feed(p, (const uint8_t *)msg_mixed, 100);
	mime_parser_free(&p);

	assert_int_equal(mime_parse((const uint8_t *)msg_digest, strlen(msg_digest), NULL, &root),
	                 0);
	assert_int_equal(root->children->kind, MIME_KIND_MESSAGE);
	mime_part_free(&root);
	mime_part_free(&root);
}

/* ---- RFC 2047 -------------------------------------------------------------------------------- */

static const struct str_vec {
	const char *in;
	const char *want;
} rfc2047_vecs[] = {
	/* RFC 2047 8 */
	{"(=?ISO-8859-1?Q?a?=)", "(a)"},
	{"(=?ISO-8859-1?Q?a?= b)", "(a b)"},
	{"(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)"},
	{"(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)", "(ab)"},
	{"(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)", "(ab)"},
	{"(=?ISO-8859-1?Q?a_b?=)", "(a b)"},
	{"(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", "(a b)"},
	{"=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>", "Keith Moore <moore@cs.utk.edu>"},
	{"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=", "Keld J\xc3\xb8rn Simonsen"},
	{"=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>",
	 "Andr\xc3\xa9 Pirard <PIRARD@vm1.ulg.ac.be>"},
	{"=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
	 " =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
	 "If you can read this you understand the example."},
	/* a character split across two words of one charset */
	{"=?utf-8?Q?=C3?= =?UTF-8?Q?=A4?=", "\xc3\xa4"},
	{"=?utf-8?B?w6Q=?= =?utf-8?B?w7Y=?= x", "\xc3\xa4\xc3\xb6 x"},
	{"Re: =?utf-8?Q?caf=C3=A9?= ok", "Re: caf\xc3\xa9 ok"},
	{"a=?utf-8?Q?b?=c", "abc"},
	{"=?utf-8?B?w6Q?=", "\xc3\xa4"}, /* padding left out */
	{"=?utf-8*en?Q?hi?=", "hi"},     /* RFC 2231 5 language */
	{"=?utf-8?q?" "?=", ""}, /* split: no trigraph */
	{"=?windows-1252?Q?=80?=", "\xe2\x82\xac"},
	{"=?iso-8859-1?q?=E9=80?=", "\xc3\xa9\xe2\x82\xac"},
	{"=?iso-8859-15?Q?=A4?=", "\xe2\x82\xac"}, /* iconv */
	{"=?koi8-r?B?8NLJ18XU?=", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"},
	{"=?utf-8?Q?=FF?=", "\xef\xbf\xbd"},
	{"=?us-ascii?Q?=E9?=", "\xef\xbf\xbd"},
	/* invalid words stay as they are */
	{"=?utf-8?X?abc?=", "=?utf-8?X?abc?="},
	{"=?utf-8?Q?a b?=", "=?utf-8?Q?a b?="},
	{"=?utf-8?B?####?=", "=?utf-8?B?####?="},
	{"=?utf-8?B?w?=", "=?utf-8?B?w?="},
	{"=?utf-8?Q?=ZZ?=", "=?utf-8?Q?=ZZ?="},
	{"=?utf-8?Q?=4?=", "=?utf-8?Q?=4?="},
	{"=?utf-8?Q?abc", "=?utf-8?Q?abc"},
	{"=?" "?Q?a?=", "=?" "?Q?a?="},
	{"=?x-unknown?Q?a?= =?x-unknown?Q?b?= c", "=?x-unknown?Q?a?= =?x-unknown?Q?b?= c"},
	{"=?x-unknown?Q?a?= =?utf-8?Q?b?=", "=?x-unknown?Q?a?= b"},
	{"=?utf-8?Q?a?= =?bad charset?Q?b?=", "a =?bad charset?Q?b?="},
	{"no words at all", "no words at all"},
	{"=?", "=?"},
	{"trailing =?utf-8?Q?x?=  ", "trailing x  "},
};

static void
test_rfc2047(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rfc2047_vecs); i++) {
		struct buf b;

		buf_init(&b, 4096);
		assert_int_equal(mime_header_decode(&b, (const uint8_t *)rfc2047_vecs[i].in,
		                                    strlen(rfc2047_vecs[i].in)), 0);
		check_str(rfc2047_vecs[i].in, buf_cstr(&b), rfc2047_vecs[i].want);
		buf_deinit(&b);
	}
	/* a full buffer is reported */
	{
		struct buf b;

		buf_init(&b, 3);
		assert_int_equal(mime_header_decode(&b, (const uint8_t *)"=?utf-8?Q?abcdef?=", 18),
		                 -1);
		buf_deinit(&b);
	}
}

static const struct str_vec unfold_vecs[] = {
	{"a\r\n b", "a b"},
	{"a\n\tb", "a\tb"},
	{"a\r\nb", "a\r\nb"}, /* not a fold */
	{"a\r\n", "a"},
	{"\r\n x\r\n", " x"},
	{"", ""},
};

static void
test_unfold(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(unfold_vecs); i++) {
		struct buf b;

		buf_init(&b, 100);
		assert_int_equal(mime_header_unfold(&b, (const uint8_t *)unfold_vecs[i].in,
		                                    strlen(unfold_vecs[i].in)), 0);
		check_str(unfold_vecs[i].in, buf_cstr(&b), unfold_vecs[i].want);
		buf_deinit(&b);
	}
}

static void
test_charset(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 100);
	assert_int_equal(mime_charset_to_utf8(&b, "Latin1", 6, (const uint8_t *)"\xe9\x9f", 2), 0);
	check_str("latin1", buf_cstr(&b), "\xc3\xa9\xc5\xb8");
	buf_reset(&b);
	assert_int_equal(mime_charset_to_utf8(&b, "UTF-8", 5,
	                                      (const uint8_t *)"a\xc3\xa9\xed\xa0\x80\xc3", 7), 0);
	check_str("utf-8 repair", buf_cstr(&b), "a\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd"
	          "\xef\xbf\xbd\xef\xbf\xbd");
	buf_reset(&b);
	assert_int_equal(mime_charset_to_utf8(&b, "x-no-such-charset", 17,
	                                      (const uint8_t *)"a", 1), -1);
	assert_int_equal(mime_charset_to_utf8(&b, "utf-8//TRANSLIT", 15,
	                                      (const uint8_t *)"a", 1), -1);
	assert_int_equal(b.len, 0);
	/* an invalid octet in an iconv charset: U+FFFD, and the rest goes on */
	assert_int_equal(mime_charset_to_utf8(&b, "shift_jis", 9, (const uint8_t *)"\x82\xa0x\x80",
	                                      4), 0);
	assert_non_null(strstr(buf_cstr(&b), "x"));
	buf_deinit(&b);
}

/* ---- RFC 2231 and parameters ----------------------------------------------------------------- */

static const struct param_vec {
	const char *value;  /* after "text/plain" */
	const char *params; /* name=value|... as parsed */
	const char *get;    /* param to decode, or NULL */
	const char *decoded;
} param_vecs[] = {
	{"; title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A",
	 "title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A", "title", "This is ***fun***"},
	{"; title*0*=us-ascii'en'This%20is%20even%20more%20;\r\n"
	 " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\r\n title*2=\"isn't it!\"",
	 "title*=us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn't it!", "title",
	 "This is even more ***fun*** isn't it!"},
	{"; url*0=\"ftp://\"; url*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\"",
	 "url=ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar", "url",
	 "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"},
	{"; name*1=\"b\"; x=y; name*0=\"a\"", "name=ab|x=y", "name", "ab"},
	{"; name*0=\"a\"; name*2=\"c\"", "name*0=a|name*2=c", "name", NULL},
	{"; name*0=\"a\"; name*0=\"b\"", "name*0=a|name*0=b", NULL, NULL},
	{"; n*0=\"50%\"; n*1*=%E2%82%AC", "n*=''50%25%E2%82%AC", "n", "50%\xe2\x82\xac"},
	{"; filename*=utf-8''%E2%82%AC.txt", "filename*=utf-8''%E2%82%AC.txt", "filename",
	 "\xe2\x82\xac.txt"},
	{"; filename*=iso-8859-1''caf%E9", "filename*=iso-8859-1''caf%E9", "filename",
	 "caf\xc3\xa9"},
	{"; filename=\"plain.txt\"; filename*=utf-8''%C3%A4.txt",
	 "filename=plain.txt|filename*=utf-8''%C3%A4.txt", "filename", "\xc3\xa4.txt"},
	{"; filename=\"=?utf-8?B?w6TDtsO8LnR4dA==?=\"", "filename==?utf-8?B?w6TDtsO8LnR4dA==?=",
	 "filename", "\xc3\xa4\xc3\xb6\xc3\xbc.txt"},
	{"; x*=x-foo''abc", "x*=x-foo''abc", "x", "abc"},
	{"; x*=''%41%4", "x*=''%41%4", "x", "A%4"},
	{"; x*=noquotes", "x*=noquotes", "x", "noquotes"},
	{"; CHARSET=\"UTF-8\"", "charset=UTF-8", "charset", "UTF-8"},
	{"; a=\"x\\\"y\\\\z\"", "a=x\"y\\z", NULL, NULL},
	{" charset=utf-8 format=flowed", "charset=utf-8|format=flowed", NULL, NULL},
	{" (comment) ; charset = us-ascii (c2) ;; ; ", "charset=us-ascii", NULL, NULL},
	{"; name=foo bar; b=c", "name=foo|b=c", NULL, NULL},
	{"; name=f\xc3\xbc.txt", "name=f\xc3\xbc.txt", NULL, NULL},
	{"; novalue; =x; a=\"unterminated", "a=unterminated", NULL, NULL},
	{"", "", "charset", NULL},
};

static void
test_params(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(param_vecs); i++) {
		const struct param_vec *v = &param_vecs[i];
		struct mime_pool *pool = mime_pool_new();
		struct mime_content_type ct;
		char *value = xasprintf("text/plain%s", v->value);
		struct buf b;

		assert_int_equal(mime_parse_content_type(pool, (const uint8_t *)value,
		                                         strlen(value), &ct), 0);
		assert_string_equal(ct.type.s, "text");
		assert_string_equal(ct.subtype.s, "plain");
		buf_init(&b, 4096);
		for (unsigned int k = 0; k < ct.nparams; k++)
			(void)buf_printf(&b, "%s%s=%s", k > 0 ? "|" : "", ct.params[k].name.s,
			                 ct.params[k].value.s);
		check_str(v->value, buf_cstr(&b), v->params);
		if (v->get != NULL) {
			buf_reset(&b);
			assert_int_equal(mime_param_get(&b, ct.params, ct.nparams, v->get),
			                 v->decoded != NULL ? 1 : 0);
			if (v->decoded != NULL)
				check_str(v->value, buf_cstr(&b), v->decoded);
		}
		buf_deinit(&b);
		free(value);
		mime_pool_free(&pool);
		assert_null(pool);
	}
}

static void
test_content_fields(void **state)
{
	struct mime_pool *pool = mime_pool_new();
	struct mime_content_type ct;
	struct mime_str s, *langs;
	struct mime_param *params;
	unsigned int n;

	(void)state;
	assert_int_equal(mime_parse_content_type(pool, (const uint8_t *)"text", 4, &ct), -1);
	assert_int_equal(mime_parse_content_type(pool, (const uint8_t *)"text/", 5, &ct), -1);
	assert_int_equal(mime_parse_content_type(pool, (const uint8_t *)"/plain", 6, &ct), -1);
	assert_int_equal(mime_parse_content_type(pool, (const uint8_t *)"", 0, &ct), -1);
	assert_int_equal(mime_parse_content_type(pool, (const uint8_t *)" (c) text / html ", 17,
	                                         &ct), 0);
	assert_string_equal(ct.subtype.s, "html");

	assert_int_equal(mime_parse_token_value(pool, (const uint8_t *)" base64 (x) ", 12, &s), 0);
	assert_string_equal(s.s, "base64");
	assert_int_equal(mime_parse_token_value(pool, (const uint8_t *)"?invalid", 8, &s), -1);
	assert_null(s.s);
	assert_int_equal(mime_parse_token_value(pool, (const uint8_t *)"7bit 8bit", 9, &s), -1);

	assert_int_equal(mime_parse_disposition(pool, (const uint8_t *)"attachment; filename=a.txt;"
	                                        " size=3", 34, &s, &params, &n), 0);
	assert_string_equal(s.s, "attachment");
	assert_int_equal(n, 2);
	assert_string_equal(params[1].name.s, "size");
	assert_int_equal(mime_parse_disposition(pool, (const uint8_t *)"; filename=a", 12, &s,
	                                        &params, &n), -1);

	n = mime_parse_languages(pool, (const uint8_t *)"en, (c) fi ,se", 14, &langs);
	assert_int_equal(n, 3);
	assert_string_equal(langs[2].s, "se");
	n = mime_parse_languages(pool, (const uint8_t *)"de,,,,,,,,,,,,,,,,,,,,,",
	                         strlen("de,,,,,,,,,,,,,,,,,,,,,"), &langs);
	assert_int_equal(n, 1);
	assert_int_equal(mime_parse_languages(pool, (const uint8_t *)" ", 1, &langs), 0);
	assert_null(langs);
	mime_pool_free(&pool);
}

/* ---- addresses ------------------------------------------------------------------------------- */

static const struct str_vec addr_vecs[] = {
	{"Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
	 "Mary Smith||mary|x.test ; ||jdoe|example.org ; Who?||one|y.test"},
	{"\"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
	 "Giant; \"Big\" Box||sysservices|example.net"},
	{"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
	 "<group A Group> ; Ed Jones||c|a.test ; ||joe|where.test ; John||jdoe|one.test ; "
	 "<end>"},
	{"Undisclosed recipients:;", "<group Undisclosed recipients> ; <end>"},
	{"g: a@b, (c) ; x@y", "<group g> ; ||a|b ; <end> ; ||x|y"},
	{"g: a@b", "<group g> ; ||a|b ; <end>"},
	{"g: h: a@b;", "<group g> ; ||h|MISSING_DOMAIN ; <end>"},
	{"<@a.example,@b.example:joe@c.example>", "|@a.example,@b.example|joe|c.example"},
	{"<@a.example,,@b.example: joe@c.example>", "|@a.example,@b.example|joe|c.example"},
	{"Joe <joe@example.org> trailing junk, next@example.org",
	 "Joe||joe|example.org ; ||next|example.org"},
	{"a@b@c, d@e", "||a|b ; ||d|e"},
	{"a(x)@(y)b(z)", "z||a|b"},
	{"  ,  , ", ""},
	{"", ""},
	{"<", "||MISSING_MAILBOX|MISSING_DOMAIN"},
	{">;:@, x", "||x|MISSING_DOMAIN"},
	{"\"unterminated <a@b>", "||unterminated <a@b>|MISSING_DOMAIN"},
	{"(unterminated comment a@b", ""},
	{"=?utf-8?Q?J=C3=B6rg?= <j@x.de>", "=?utf-8?Q?J=C3=B6rg?=||j|x.de"},
	{"J\xc3\xb6rg <j@\xc3\xbc.de>", "J\xc3\xb6rg||j|\xc3\xbc.de"},
	{"\"a.b\"@c, a . b @ c . d", "||a.b|c ; ||a.b|c.d"},
};

static void
test_address(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(addr_vecs); i++) {
		struct mime_pool *pool = mime_pool_new();
		struct mime_address *list;
		unsigned int n = mime_address_parse(pool, (const uint8_t *)addr_vecs[i].in,
		                                    strlen(addr_vecs[i].in), &list);
		unsigned int count = 0;
		struct buf b;

		buf_init(&b, 4096);
		for (const struct mime_address *a = list; a != NULL; a = a->next) {
			if (count++ > 0)
				(void)buf_append_str(&b, " ; ");
			if (a->type == MIME_ADDR_GROUP_START) {
				assert_null(a->host.s);
				(void)buf_printf(&b, "<group %s>", a->mailbox.s);
			} else if (a->type == MIME_ADDR_GROUP_END) {
				assert_null(a->mailbox.s);
				(void)buf_append_str(&b, "<end>");
			} else {
				assert_non_null(a->mailbox.s);
				assert_non_null(a->host.s);
				const char *name = a->name.s != NULL ? a->name.s : "";
				const char *adl = a->adl.s != NULL ? a->adl.s : "";

				(void)buf_printf(&b, "%s|%s|%s|%s", name, adl, a->mailbox.s,
				                 a->host.s);
			}
		}
		assert_int_equal(count, n);
		check_str(addr_vecs[i].in, buf_cstr(&b), addr_vecs[i].want);
		buf_deinit(&b);
		mime_pool_free(&pool);
	}
}

/* ---- IMAP strings ---------------------------------------------------------------------------- */

static void
test_imap_string(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		const char *want;
	} vecs[] = {
		{"", 0, "\"\""},
		{"plain text", 10, "\"plain text\""},
		{"a\"b\\c", 5, "\"a\\\"b\\\\c\""},
		{"tab\tand \x7f", 9, "\"tab\tand \x7f\""},
		{"cr\rlf", 5, "{5}\r\ncr\rlf"},
		{"line\n", 5, "{5}\r\nline\n"},
		{"\xc3\xa9", 2, "{2}\r\n\xc3\xa9"},
		{"a\0b", 3, "{5}\r\na\xef\xbf\xbd" "b"},
	};
	struct mime_str nil = {NULL, 0};
	struct buf b;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(vecs); i++) {
		buf_init(&b, 100);
		assert_int_equal(mime_write_imap_string(&b, vecs[i].in, vecs[i].len), 0);
		assert_int_equal(b.len, strlen(vecs[i].want));
		assert_memory_equal(b.data, vecs[i].want, b.len);
		buf_deinit(&b);
	}
	buf_init(&b, 100);
	assert_int_equal(mime_write_imap_nstring(&b, &nil), 0);
	check_str("nstring", buf_cstr(&b), "NIL");
	buf_deinit(&b);
	/* a full buffer: -1 with err set */
	buf_init(&b, 10);
	assert_int_equal(mime_write_imap_string(&b, "0123456789abc", 13), -1);
	assert_true(b.err);
	buf_deinit(&b);
	{
		struct mime_part *root = parse(msg_mixed);

		buf_init(&b, 64);
		assert_int_equal(mime_write_bodystructure(&b, root, true), -1);
		buf_deinit(&b);
		buf_init(&b, 16);
		assert_int_equal(mime_write_envelope(&b, root->envelope), -1);
		buf_deinit(&b);
		mime_part_free(&root);
	}
}

/* ---- serialisation --------------------------------------------------------------------------- */

static void
test_serialize(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(bs_vecs) + N_ELEMENTS(split_msgs); i++) {
		const char *msg = i < N_ELEMENTS(bs_vecs) ? bs_vecs[i].msg :
		                  split_msgs[i - N_ELEMENTS(bs_vecs)];
		struct mime_part *root = parse(msg), *copy;
		struct buf a, b;
		const char *error = NULL;
		char *s1, *s2;

		serialize(root, &a);
		assert_int_equal(mime_part_deserialize(a.data, a.len, &copy, &error), 0);
		serialize(copy, &b);
		assert_int_equal(a.len, b.len);
		assert_memory_equal(a.data, b.data, a.len);
		s1 = bodystructure(root, true);
		s2 = bodystructure(copy, true);
		check_str("round trip", s2, s1);
		free(s1);
		free(s2);
		s1 = envelope(root->envelope);
		s2 = envelope(copy->envelope);
		check_str("round trip envelope", s2, s1);
		free(s1);
		free(s2);
		mime_part_free(&copy);

		/* every truncation is refused */
		for (size_t n = 0; n < a.len; n++) {
			assert_int_equal(mime_part_deserialize(a.data, n, &copy, &error), -1);
			assert_null(copy);
			assert_non_null(error);
		}
		/* any damaged octet: refused, or a valid tree that round-trips */
		for (size_t n = 0; n < a.len; n++) {
			for (unsigned int bit = 0; bit < 8; bit += 3) {
				a.data[n] ^= (uint8_t)(1u << bit);
				if (mime_part_deserialize(a.data, a.len, &copy, &error) == 0) {
					struct buf c;

					serialize(copy, &c);
					assert_int_equal(c.len, a.len);
					assert_memory_equal(c.data, a.data, a.len);
					s1 = bodystructure(copy, true);
					check_balanced(s1);
					free(s1);
					buf_deinit(&c);
					mime_part_free(&copy);
				}
				a.data[n] ^= (uint8_t)(1u << bit);
			}
		}
		/* trailing data */
		(void)buf_append_byte(&a, 0);
		assert_int_equal(mime_part_deserialize(a.data, a.len, &copy, &error), -1);
		check_str("trailing", error, "trailing data");
		buf_deinit(&a);
		buf_deinit(&b);
		mime_part_free(&root);
	}
	{
		const uint8_t v2[] = {'P', 'M', 'T', 2};
		struct mime_part *copy;
		const char *error;

		assert_int_equal(mime_part_deserialize(v2, sizeof(v2), &copy, &error), -1);
		assert_int_equal(mime_part_deserialize((const uint8_t *)"", 0, &copy, &error), -1);
	}
}

/* Hand-made images for what the parser never writes: they must be refused with a reason. */
static void
put_varint(struct buf *b, uint64_t v)
{
	do {
		(void)buf_append_byte(b, (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
		v >>= 7;
	} while (v != 0);
}

/* A part up to (not including) its child count: text/plain, no fields. */
static void
put_part_head(struct buf *b, enum mime_kind kind, uint64_t hdr_offset, uint64_t hdr_size,
              uint64_t body_size, bool envelope)
{
	(void)buf_append_byte(b, (uint8_t)kind);
	put_varint(b, 0);
	put_varint(b, hdr_offset);
	put_varint(b, hdr_size);
	put_varint(b, body_size);
	for (int i = 0; i < 4; i++)
		put_varint(b, 0); /* v-extras and line counts */
	(void)buf_append_str(b, "\x05text\x06plain");
	put_varint(b, 0); /* params */
	for (int i = 0; i < 6; i++)
		put_varint(b, 0);
	put_varint(b, 0); /* disposition params */
	put_varint(b, 0); /* languages */
	(void)buf_append_byte(b, envelope);
	for (int i = 0; envelope && i < MIME_ENV_COUNT; i++)
		put_varint(b, 0);
}

static void
expect_refused(struct buf *b, const char *error_want)
{
	struct mime_part *root;
	const char *error = NULL;

	assert_int_equal(mime_part_deserialize(b->data, b->len, &root, &error), -1);
	assert_null(root);
	check_str("refused image", error, error_want);
	buf_reset(b);
	(void)buf_append(b, "PMT\x01", 4);
}

static void
test_deserialize_crafted(void **state)
{
	struct buf b;
	struct mime_part *root;
	const char *error = NULL;

	(void)state;
	buf_init(&b, 1 << 24);
	(void)buf_append(&b, "PMT\x01", 4);

	/* the helper makes valid images */
	put_part_head(&b, MIME_KIND_LEAF, 0, 10, 5, true);
	put_varint(&b, 0);
	assert_int_equal(mime_part_deserialize(b.data, b.len, &root, &error), 0);
	assert_int_equal(root->end_offset, 15);
	mime_part_free(&root);
	buf_reset(&b);
	(void)buf_append(&b, "PMT\x01", 4);

	for (int i = 0; i <= MIME_MAX_DEPTH; i++) {
		put_part_head(&b, MIME_KIND_MULTIPART, 0, 0, 0, i == 0);
		put_varint(&b, 1);
	}
	put_part_head(&b, MIME_KIND_LEAF, 0, 0, 0, false);
	put_varint(&b, 0);
	expect_refused(&b, "too deep");

	put_part_head(&b, MIME_KIND_MULTIPART, 0, 0, 0, true);
	put_varint(&b, MIME_MAX_PARTS);
	for (int i = 0; i < MIME_MAX_PARTS; i++) {
		put_part_head(&b, MIME_KIND_LEAF, 0, 0, 0, false);
		put_varint(&b, 0);
	}
	expect_refused(&b, "too many parts");

	(void)buf_append_byte(&b, MIME_KIND_LEAF);
	(void)buf_append(&b, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10);
	expect_refused(&b, "number too large");

	(void)buf_append_byte(&b, MIME_KIND_LEAF);
	(void)buf_append(&b, "\x80\x00", 2);
	expect_refused(&b, "number not in shortest form");

	put_part_head(&b, MIME_KIND_LEAF, UINT64_MAX - 3, 2, 5, true);
	put_varint(&b, 0);
	expect_refused(&b, "offsets overflow");

	put_part_head(&b, MIME_KIND_MESSAGE, 0, 5, 10, true);
	put_varint(&b, 1);
	put_part_head(&b, MIME_KIND_LEAF, 5, 2, 2, true);
	put_varint(&b, 0);
	expect_refused(&b, "message body is not its message");

	put_part_head(&b, MIME_KIND_MULTIPART, 0, 5, 10, true);
	put_varint(&b, 2);
	put_part_head(&b, MIME_KIND_LEAF, 5, 2, 2, false);
	put_varint(&b, 0);
	put_part_head(&b, MIME_KIND_LEAF, 8, 2, 2, false); /* starts inside the first */
	put_varint(&b, 0);
	expect_refused(&b, "child outside its parent");

	put_part_head(&b, MIME_KIND_MULTIPART, 0, 5, 10, true);
	put_varint(&b, 1);
	put_part_head(&b, MIME_KIND_LEAF, 5, 2, 2, true);
	put_varint(&b, 0);
	expect_refused(&b, "envelope on the wrong part");

	put_part_head(&b, MIME_KIND_LEAF, 0, 5, 10, true);
	put_varint(&b, 1);
	expect_refused(&b, "children do not match the kind");
	buf_deinit(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bodystructure),
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_envelope),
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_limit_depth),
		cmocka_unit_test(test_limit_parts),
		cmocka_unit_test(test_limit_header),
		cmocka_unit_test(test_parser_misc),
		cmocka_unit_test(test_rfc2047),
		cmocka_unit_test(test_unfold),
		cmocka_unit_test(test_charset),
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_content_fields),
		cmocka_unit_test(test_address),
		cmocka_unit_test(test_imap_string),
		cmocka_unit_test(test_serialize),
		cmocka_unit_test(test_deserialize_crafted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
