/* 8-bit to 7-bit conversion (src/mime/mime_7bit.c): exact output for small messages written by
 * hand from RFC 2045 6.7; for every converted message the invariants (octets 1..127, lines of
 * at most 998 octets, the same MIME tree when parsed again) and the round trip (each leaf body
 * decoded from the output equals the body of the input, decoded the same way). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime/mime.h"
#include "mime/mime_7bit.h"
#include "mime/mime_header.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static struct mime_part *
parse(const uint8_t *msg, size_t len)
{
	struct mime_part *root;

	assert_int_equal(mime_parse(msg, len, NULL, &root), 0);
	return root;
}

/* Octets 1..127 only, no line over 998 octets. */
static void
check_7bit(const struct buf *b)
{
	size_t col = 0;

	for (size_t i = 0; i < b->len; i++) {
		uint8_t c = b->data[i];

		if (c == 0 || c >= 0x80) {
			print_error("octet 0x%02x at %zu\n", c, i);
			fail();
		}
		if (c == '\n') {
			col = 0;
		} else if (++col > 998 && !(c == '\r' && i + 1 < b->len && b->data[i + 1] == '\n')) {
			print_error("line over 998 octets at %zu\n", i);
			fail();
		}
	}
}

/* The body of a leaf as a decoder sees it. */
static void
decoded_body(const uint8_t *msg, const struct mime_part *p, struct buf *out)
{
	const uint8_t *b = msg + p->body_offset;
	size_t n = (size_t)(p->end_offset - p->body_offset);

	if (p->encoding.s != NULL && strcasecmp(p->encoding.s, "base64") == 0)
		mime_decode_base64(out, b, n);
	else if (p->encoding.s != NULL && strcasecmp(p->encoding.s, "quoted-printable") == 0)
		mime_decode_qp(out, b, n);
	else
		assert_int_equal(buf_append(out, b, n), 0);
}

/* Bare LFs of a text body become CRLF in the output: compare with that. */
static void
crlf(struct buf *b)
{
	struct buf t;

	buf_init(&t, SIZE_MAX);
	for (size_t i = 0; i < b->len; i++) {
		if (b->data[i] == '\n' && (i == 0 || b->data[i - 1] != '\r'))
			(void)buf_append_byte(&t, '\r');
		(void)buf_append_byte(&t, b->data[i]);
	}
	buf_deinit(b);
	*b = t;
}

/* Same shape of tree; each leaf decodes to the same octets. */
static void
same_tree(const uint8_t *in, const struct mime_part *a, const uint8_t *out,
          const struct mime_part *b)
{
	const struct mime_part *x, *y;

	assert_int_equal(a->kind, b->kind);
	assert_true(a->type.len == b->type.len && strcasecmp(a->type.s, b->type.s) == 0);
	assert_true(a->subtype.len == b->subtype.len && strcasecmp(a->subtype.s, b->subtype.s) == 0);
	if (a->kind == MIME_KIND_MULTIPART)
		assert_int_equal(a->flags & MIME_PART_NO_FINAL_BOUNDARY,
		                 b->flags & MIME_PART_NO_FINAL_BOUNDARY);
	/* A multipart closed before any part is written like a preamble: no body to compare. */
	if (a->kind == MIME_KIND_LEAF &&
	    !(mime_part_is_type(a, "multipart", NULL) &&
	      (a->flags & MIME_PART_NO_FINAL_BOUNDARY) == 0)) {
		struct buf da, db;
		bool text = mime_part_is_type(a, "text", NULL) || mime_part_is_type(a, "message", NULL);
		bool was_encoded = a->encoding.s != NULL &&
		                   (strcasecmp(a->encoding.s, "base64") == 0 ||
		                    strcasecmp(a->encoding.s, "quoted-printable") == 0);

		buf_init(&da, SIZE_MAX);
		buf_init(&db, SIZE_MAX);
		decoded_body(in, a, &da);
		decoded_body(out, b, &db);
		if (text && !was_encoded && b->encoding.s != NULL &&
		    strcasecmp(b->encoding.s, "quoted-printable") == 0)
			crlf(&da);
		if (da.len != db.len || (da.len > 0 && memcmp(da.data, db.data, da.len) != 0)) {
			print_error("body differs: %zu octets in, %zu out\n", da.len, db.len);
			fail();
		}
		buf_deinit(&da);
		buf_deinit(&db);
	}
	for (x = a->children, y = b->children; x != NULL && y != NULL; x = x->next, y = y->next)
		same_tree(in, x, out, y);
	assert_true(x == NULL && y == NULL);
}

/* Converts msg; when converted, checks the invariants and the round trip. Caller frees out. */
static enum mime_7bit_result
convert(const char *msg, size_t len, struct buf *out)
{
	enum mime_7bit_result r;

	buf_init(out, 1 << 26);
	r = mime_to_7bit((const uint8_t *)msg, len, out);
	if (r == MIME_7BIT_CONVERTED) {
		struct mime_part *a = parse((const uint8_t *)msg, len);
		struct mime_part *b = parse(out->data, out->len);

		check_7bit(out);
		same_tree((const uint8_t *)msg, a, out->data, b);
		mime_part_free(&a);
		mime_part_free(&b);
	} else {
		assert_int_equal(out->len, 0);
	}
	return r;
}

static void
expect(const char *msg, enum mime_7bit_result want, const char *want_out)
{
	struct buf out;

	assert_int_equal(convert(msg, strlen(msg), &out), want);
	if (want_out != NULL) {
		if (out.len != strlen(want_out) || memcmp(out.data, want_out, out.len) != 0) {
			print_error("got:\n%.*s\nwant:\n%s\n", (int)out.len, (const char *)out.data,
			            want_out);
			fail();
		}
	}
	buf_deinit(&out);
}

#define A10 "aaaaaaaaaa"
#define X10 "xxxxxxxxxx"

/* ---- tests ----------------------------------------------------------------------------------- */

static void
test_clean(void **state)
{
	(void)state;
	expect("", MIME_7BIT_CLEAN, NULL);
	expect("Subject: hi\r\n\r\nhello\r\n", MIME_7BIT_CLEAN, NULL);
	expect("Subject: headers only\r\n", MIME_7BIT_CLEAN, NULL);
	expect("Subject: hi\r\n\r\n", MIME_7BIT_CLEAN, NULL);
	/* already encoded, 7-bit: left alone */
	expect("MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	       "caf=C3=A9\r\n",
	       MIME_7BIT_CLEAN, NULL);
	expect("MIME-Version: 1.0\r\nContent-Type: image/png\r\n"
	       "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
	       MIME_7BIT_CLEAN, NULL);
	/* labelled 8bit but 7-bit: nothing to do */
	expect("MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain\r\n",
	       MIME_7BIT_CLEAN, NULL);
}

static void
test_text_plain(void **state)
{
	(void)state;
	/* UTF-8 */
	expect("From: a@example.org\r\nMIME-Version: 1.0\r\n"
	       "Content-Type: text/plain; charset=utf-8\r\n"
	       "Content-Transfer-Encoding: 8bit\r\nSubject: x\r\n\r\n"
	       "Gr\xc3\xbc\xc3\x9f""e\r\nzwei\r\n",
	       MIME_7BIT_CONVERTED,
	       "From: a@example.org\r\nMIME-Version: 1.0\r\n"
	       "Content-Type: text/plain; charset=utf-8\r\n"
	       "Content-Transfer-Encoding: quoted-printable\r\nSubject: x\r\n\r\n"
	       "Gr=C3=BC=C3=9Fe\r\nzwei\r\n");
	/* Latin-1, field name in another case, blank before the colon, a second CTE field */
	expect("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
	       "content-transfer-encoding : 8bit\r\n (comment)\r\nX: y\r\n"
	       "Content-Transfer-Encoding: binary\r\n\r\n"
	       "Stra\xdf""e\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
	       "Content-Transfer-Encoding: quoted-printable\r\nX: y\r\n\r\n"
	       "Stra=DFe\r\n");
}

static void
test_not_mime(void **state)
{
	(void)state;
	/* RFC 2045 4: a transfer encoding needs MIME-Version; Content-Type stays absent */
	expect("Subject: hi\r\n\r\n\xe4\r\n", MIME_7BIT_CONVERTED,
	       "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n"
	       "MIME-Version: 1.0\r\n\r\n=E4\r\n");
	/* mislabelled 7bit: the label is replaced */
	expect("MIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\xe4\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E4\r\n");
	/* a message without header fields */
	expect("\r\n\xe4", MIME_7BIT_CONVERTED,
	       "Content-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\n\r\n=E4");
}

static void
test_qp_rules(void **state)
{
	(void)state;
	/* "=" always, blanks at a line end, controls but TAB, lone CR; "--" at a line start
	 * (also after a soft break) so that no line can be a boundary */
	expect("MIME-Version: 1.0\r\n\r\n"
	       "a=b \r\nc\t\r\n\xe9 x\ty\x01\rz\r\n-- \r\n- x\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	       "a=3Db=20\r\nc=09\r\n=E9 x\ty=01=0Dz\r\n=2D-=20\r\n- x\r\n");
	/* soft breaks: 76 characters at most, "=XX" never split */
	expect("MIME-Version: 1.0\r\n\r\n" A10 A10 A10 A10 A10 A10 A10 "aaaa\xe9--bbb\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	       A10 A10 A10 A10 A10 A10 A10 "aaaa=\r\n=E9--bbb\r\n");
	/* a continuation line that would start with "--" */
	expect("MIME-Version: 1.0\r\n\r\n"
	       "\xe9" X10 X10 X10 X10 X10 X10 X10 "xx--b\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	       "=E9" X10 X10 X10 X10 X10 X10 X10 "xx=\r\n"
	       "=2D-b\r\n");
	/* a final blank without line end is encoded too */
	expect("MIME-Version: 1.0\r\n\r\n\xe9 ", MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E9=20");
}

static void
test_long_line(void **state)
{
	struct buf out;
	char *msg = malloc(6000);
	size_t n;

	(void)state;
	assert_non_null(msg);
	n = (size_t)snprintf(msg, 6000, "Subject: long\r\n\r\nfirst\r\n");
	for (size_t i = 0; i < 5000; i++)
		msg[n++] = (char)('a' + i % 26);
	memcpy(msg + n, "\r\nlast\r\n", 8);
	n += 8;
	/* 7-bit, but a line no SMTP server has to take: encoded too */
	assert_int_equal(convert(msg, n, &out), MIME_7BIT_CONVERTED);
	buf_deinit(&out);
	/* 998 octets are fine */
	n = (size_t)snprintf(msg, 6000, "Subject: long\r\n\r\n");
	memset(msg + n, 'x', 998);
	memcpy(msg + n + 998, "\r\n", 2);
	assert_int_equal(convert(msg, n + 1000, &out), MIME_7BIT_CLEAN);
	msg[n + 5] = '\xff';
	assert_int_equal(convert(msg, n + 1000, &out), MIME_7BIT_CONVERTED);
	buf_deinit(&out);
	free(msg);
}

static void
test_multipart(void **state)
{
	(void)state;
	/* multipart/alternative: the 7-bit part and the structure are copied as they are */
	expect("MIME-Version: 1.0\r\n"
	       "Content-Type: multipart/alternative; boundary=\"=_b\"\r\n"
	       "Content-Transfer-Encoding: 8bit\r\n\r\n"
	       "preamble\r\n"
	       "--=_b\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
	       "--=_b\r\nContent-Type: text/html; charset=utf-8\r\n"
	       "Content-Transfer-Encoding: 8bit\r\n\r\n<p>\xc3\xa9</p>\r\n"
	       "--=_b--\r\nepilogue\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\n"
	       "Content-Type: multipart/alternative; boundary=\"=_b\"\r\n"
	       "Content-Transfer-Encoding: 7bit\r\n\r\n"
	       "preamble\r\n"
	       "--=_b\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
	       "--=_b\r\nContent-Type: text/html; charset=utf-8\r\n"
	       "Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>=C3=A9</p>\r\n"
	       "--=_b--\r\nepilogue\r\n");
	/* nested, with a binary attachment (base64) and 8-bit in the preamble, the epilogue and
	 * a delimiter's padding */
	expect("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
	       "pre \xff\r\nok\r\n"
	       "--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
	       "--inner \xff\r\n\r\n\xe4\r\n"
	       "--inner\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n"
	       "--inner--\r\n"
	       "--outer\r\nContent-Type: application/octet-stream\r\n\r\n\x02\x01\xfe\xff\r\n"
	       "--outer--  \xff\r\nepi\xff\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
	       "\r\nok\r\n"
	       "--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
	       "--inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E4\r\n"
	       "--inner\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n"
	       "--inner--\r\n"
	       "--outer\r\nContent-Type: application/octet-stream\r\n"
	       "Content-Transfer-Encoding: base64\r\n\r\nAgH+/w==\r\n"
	       "--outer--\r\n\r\n");
	/* a multipart closed before any part is no structure, but its close delimiter took the
	 * line the parent would have: it is not encoded, its 8-bit lines are emptied */
	expect("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "pre\xff\r\n--b--\r\nepi\r\n--b--\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "\r\n--b--\r\nepi\r\n--b--\r\n");
}

static void
test_binary_part(void **state)
{
	static const char msg[] = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
	                          "\r\n--b\r\nContent-Type: image/png\r\n"
	                          "Content-Transfer-Encoding: binary\r\n\r\n"
	                          "\x89PNG\r\n\x1a\n\x00\x00\r\n--b--\r\n";
	struct buf out;

	(void)state;
	/* NUL octets, a lone LF and CR: all kept by base64 */
	assert_int_equal(convert(msg, sizeof(msg) - 1, &out), MIME_7BIT_CONVERTED);
	assert_non_null(strstr((const char *)out.data, "Content-Transfer-Encoding: base64\r\n"));
	buf_deinit(&out);
}

static void
test_nul(void **state)
{
	static const char text[] = "Subject: x\r\n\r\na\0b\r\n";
	static const char hdr[] = "Subject: a\0b\r\n\r\nx\r\n";
	struct buf out;

	(void)state;
	assert_int_equal(convert(text, sizeof(text) - 1, &out), MIME_7BIT_CONVERTED);
	assert_non_null(memmem(out.data, out.len, "\r\n\r\na=00b\r\n", 11));
	buf_deinit(&out);
	assert_int_equal(convert(hdr, sizeof(hdr) - 1, &out), MIME_7BIT_HEADERS);
	buf_deinit(&out);
}

static void
test_message_rfc822(void **state)
{
	(void)state;
	/* RFC 2046 5.2.1: the enclosed message is converted, never encoded as a whole */
	expect("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "--b\r\n\r\nsee below\r\n"
	       "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
	       "Subject: inner\r\n\r\nna\xefve\r\n"
	       "--b--\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "--b\r\n\r\nsee below\r\n"
	       "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
	       "Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n"
	       "MIME-Version: 1.0\r\n\r\nna=EFve\r\n"
	       "--b--\r\n");
	/* 8-bit in the enclosed header */
	expect("MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
	       "Subject: \xc3\xa9\r\n\r\nx\r\n",
	       MIME_7BIT_HEADERS, NULL);
	/* message/global is for SMTPUTF8 only */
	expect("MIME-Version: 1.0\r\nContent-Type: message/global\r\n\r\n"
	       "Subject: x\r\n\r\n\xc3\xa9\r\n",
	       MIME_7BIT_HEADERS, NULL);
}

static void
test_headers(void **state)
{
	(void)state;
	expect("Subject: Gr\xc3\xbc\xc3\x9f""e\r\n\r\nhi\r\n", MIME_7BIT_HEADERS, NULL);
	expect("Subject: Gr\xc3\xbc\xc3\x9f""e\r\n", MIME_7BIT_HEADERS, NULL);
	/* in a part header: the body being 8-bit too does not help */
	expect("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	       "--b\r\nContent-Disposition: attachment; filename=\"\xc3\xa9.txt\"\r\n\r\n"
	       "x\xe9\r\n--b--\r\n",
	       MIME_7BIT_HEADERS, NULL);
	/* a boundary that is 8-bit itself (RFC 2231 form) */
	expect("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary*=utf-8''%C3%A9\r\n"
	       "\r\n--\xc3\xa9\r\n\r\nx\r\n--\xc3\xa9--\r\n",
	       MIME_7BIT_HEADERS, NULL);
	/* a multipart without structure is a leaf like application/octet-stream */
	expect("MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n\xe9\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n"
	       "Content-Transfer-Encoding: base64\r\n\r\n6Q0K\r\n");
}

static void
test_encoded(void **state)
{
	struct buf out;
	static const char b64[] = "MIME-Version: 1.0\r\nContent-Type: application/pdf\r\n"
	                          "Content-Transfer-Encoding: base64\r\n\r\n"
	                          "JVBE\xff Ri0x\r\n--LjQK\r\n";

	(void)state;
	/* quoted-printable with raw 8-bit octets: decoded, encoded again */
	expect("MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	       "caf\xc3\xa9 =3D=\r\nx\r\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	       "caf=C3=A9 =3Dx\r\n");
	/* base64 with junk: what a decoder skips is dropped */
	assert_int_equal(convert(b64, sizeof(b64) - 1, &out), MIME_7BIT_CONVERTED);
	assert_non_null(memmem(out.data, out.len, "\r\n\r\nJVBERi0x\r\nLjQK\r\n", 20));
	buf_deinit(&out);
}

static void
test_bare_lf(void **state)
{
	(void)state;
	expect("Subject: x\nMIME-Version: 1.0\n\n\xe4\nb \n", MIME_7BIT_CONVERTED,
	       "Subject: x\nMIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\r\n"
	       "\n=E4\r\nb=20\r\n");
	expect("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
	       "--b\n\n\xe4\n--b--\n",
	       MIME_7BIT_CONVERTED,
	       "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
	       "--b\nContent-Transfer-Encoding: quoted-printable\r\n\n=E4\n--b--\n");
}

/* depth levels of multipart around one 8-bit text part */
static char *
nested(unsigned int depth)
{
	struct buf b;

	buf_init(&b, SIZE_MAX);
	(void)buf_append_str(&b, "MIME-Version: 1.0\r\n");
	for (unsigned int i = 0; i < depth; i++)
		(void)buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%u\r\n\r\n--b%u\r\n",
		                 i, i);
	(void)buf_append_str(&b, "\r\n\xe4\r\n");
	for (unsigned int i = depth; i-- > 0;)
		(void)buf_printf(&b, "--b%u--\r\n", i);
	return (char *)b.data;
}

static void
test_depth(void **state)
{
	struct buf out;
	char *msg;

	(void)state;
	msg = nested(MIME_7BIT_MAX_DEPTH);
	assert_int_equal(convert(msg, strlen(msg), &out), MIME_7BIT_CONVERTED);
	buf_deinit(&out);
	free(msg);
	msg = nested(MIME_7BIT_MAX_DEPTH + 1);
	assert_int_equal(convert(msg, strlen(msg), &out), MIME_7BIT_ERROR);
	buf_deinit(&out);
	free(msg);
	/* deep but 7-bit: nothing to parse */
	msg = nested(500);
	*strstr(msg, "\xe4") = 'a';
	assert_int_equal(convert(msg, strlen(msg), &out), MIME_7BIT_CLEAN);
	buf_deinit(&out);
	free(msg);
}

static void
test_out_full(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\n\xe4\xe4\xe4\xe4\r\n";
	struct buf out;

	(void)state;
	buf_init(&out, 30);
	assert_int_equal(buf_append_str(&out, "keep"), 0);
	assert_int_equal(mime_to_7bit((const uint8_t *)msg, sizeof(msg) - 1, &out),
	                 MIME_7BIT_ERROR);
	assert_int_equal(out.len, 4);
	assert_string_equal((const char *)out.data, "keep");
	buf_deinit(&out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean),
		cmocka_unit_test(test_text_plain),
		cmocka_unit_test(test_not_mime),
		cmocka_unit_test(test_qp_rules),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_binary_part),
		cmocka_unit_test(test_nul),
		cmocka_unit_test(test_message_rfc822),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_encoded),
		cmocka_unit_test(test_bare_lf),
		cmocka_unit_test(test_depth),
		cmocka_unit_test(test_out_full),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
