/* 8-bit to 7-bit conversion for peers without 8BITMIME (contract in mime_7bit.h): RFC 6152 3,
 * quoted-printable and base64 as RFC 2045 6.7 and 6.8 write them, multipart and message/rfc822
 * as RFC 2046 5.1 and 5.2.1 nest them.
 * The message is parsed once by the streaming parser (same tree the store sees), then walked:
 * a subtree whose octets are all clean is copied as it is, so only what must change changes.
 * Invariants of what is written: octets 1..127 only, lines of at most 998 octets (CRLF not
 * counted), no new line that starts with "--" (so no new boundary delimiter: RFC 2046 5.1.1),
 * and header sections changed only by the Content-Transfer-Encoding and MIME-Version fields. */
#include "mime/mime_7bit.h"

#include "core/base64.h"
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <string.h>

/* RFC 2045 6.7 rule (5): encoded lines of at most 76 characters, the soft break's "=" included;
 * base64 lines the same (RFC 2045 6.8), 57 octets each. */
#define QP_LINE 76
#define B64_LINE 76
#define B64_CHUNK 57

/* Boundary octets that still leave room on a line for "--" before and "--" after. */
#define MAX_BOUNDARY_7BIT (MIME_7BIT_MAX_LINE - 4)

struct conv {
	const uint8_t *msg; /* the whole message, borrowed */
	struct buf *out;
};

static bool
is_8bit_or_nul(uint8_t c)
{
	return c == 0 || c >= 0x80;
}

/* An octet, NUL or a line that a 7-bit peer must not see in p[0..n): an octet >= 0x80, a NUL,
 * or more than 998 octets between two LFs (a CR just before the LF not counted). */
static bool
region_dirty(const uint8_t *p, size_t n)
{
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		if (c == '\n') {
			col = 0;
			continue;
		}
		if (is_8bit_or_nul(c))
			return true;
		if (++col > MIME_7BIT_MAX_LINE && !(c == '\r' && i + 1 < n && p[i + 1] == '\n'))
			return true;
	}
	return false;
}

/* The next line of p[*pos..n): *content_r is its length without its line end, *eol_r the line
 * end's length (LF, CRLF, or 0 for a last line without one). With crlf_only, only CRLF ends a
 * line (a bare LF is then content). Moves *pos past the line. */
static void
next_line(const uint8_t *p, size_t n, size_t *pos, bool crlf_only, size_t *content_r,
          size_t *eol_r)
{
	size_t i = *pos, at = i;

	for (;;) {
		const uint8_t *lf = at < n ? memchr(p + at, '\n', n - at) : NULL;
		size_t e;

		if (lf == NULL) {
			*content_r = n - i;
			*eol_r = 0;
			*pos = n;
			return;
		}
		e = (size_t)(lf - p); /* UNSAFE: lf points into p[at..n) */
		if (e > i && p[e - 1] == '\r') {
			*content_r = e - 1 - i;
			*eol_r = 2;
			*pos = e + 1;
			return;
		}
		if (!crlf_only) {
			*content_r = e - i;
			*eol_r = 1;
			*pos = e + 1;
			return;
		}
		at = e + 1; /* a bare LF inside the line */
	}
}

/* ---- encoders -------------------------------------------------------------------------------- */

/* One line of text (no line end in it) as quoted-printable, soft breaks keeping each output
 * line within 76 characters. Encoded: "=", controls but TAB, octets >= 0x80, a blank at the
 * end (RFC 2045 6.7 rules (1)-(5)), and the first "-" of an output line that would start with
 * "--", so that no line can be taken for a boundary delimiter. */
static void
qp_line(struct buf *out, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		bool last = i + 1 == n;
		bool lit = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last);
		size_t t = lit ? 1 : 3;

		if (col + t > (last ? QP_LINE : QP_LINE - 1)) {
			(void)buf_append(out, "=\r\n", 3);
			col = 0;
		}
		if (col == 0 && c == '-' && !last && s[i + 1] == '-') {
			lit = false;
			t = 3;
		}
		if (lit) {
			(void)buf_append_byte(out, c);
		} else {
			uint8_t e[3] = {'=', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15]};

			(void)buf_append(out, e, 3);
		}
		col += t;
	}
}

/* p[0..n) as quoted-printable. Line ends become hard line breaks (CRLF): every LF when
 * lf_is_break (text as stored, where a bare LF is a line end too), else CRLF only (decoded
 * content, where a lone CR or LF is data and is encoded). */
static void
qp_encode(struct buf *out, const uint8_t *p, size_t n, bool lf_is_break)
{
	size_t pos = 0;

	while (pos < n && !out->err) {
		size_t start = pos, content, eol;

		next_line(p, n, &pos, !lf_is_break, &content, &eol);
		qp_line(out, p + start, content);
		if (eol > 0)
			(void)buf_append(out, "\r\n", 2);
	}
}

/* p[0..n) as base64 in lines of 76 characters; a CRLF after the last one when p ends in LF
 * (the body had a final line end, which a message needs). */
static void
b64_encode(struct buf *out, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n && !out->err; i += B64_CHUNK) {
		if (i > 0)
			(void)buf_append(out, "\r\n", 2);
		if (base64_encode(out, p + i, MIN(B64_CHUNK, n - i)) != 0)
			return;
	}
	if (n > 0 && p[n - 1] == '\n')
		(void)buf_append(out, "\r\n", 2);
}

static bool
is_b64_char(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/' || c == '=';
}

/* A body that is base64 already, with 8-bit octets or long lines: only the alphabet and "="
 * are kept (decoders skip the rest, RFC 2045 6.8, mime_decode_base64() too), lines are cut at
 * 76 characters. What a decoder makes of it is unchanged, and no line starts with "--". */
static void
b64_filter(struct buf *out, const uint8_t *p, size_t n)
{
	size_t pos = 0;

	while (pos < n && !out->err) {
		size_t start = pos, content, eol, col = 0;

		next_line(p, n, &pos, false, &content, &eol);
		for (size_t i = start; i < start + content; i++) {
			if (!is_b64_char(p[i]))
				continue;
			if (col == B64_LINE) {
				(void)buf_append(out, "\r\n", 2);
				col = 0;
			}
			(void)buf_append_byte(out, p[i]);
			col++;
		}
		if (eol > 0)
			(void)buf_append(out, "\r\n", 2);
	}
}

/* ---- header sections ------------------------------------------------------------------------- */

/* The line at p[0..n) starts a field called name (RFC 5322 3.6.8, blanks before the colon
 * allowed as RFC 5322 4.5 and the parser do). */
static bool
field_is(const uint8_t *p, size_t n, const char *name)
{
	size_t i = 0;

	while (i < n && p[i] != ':' && !mime__is_wsp(p[i]) && p[i] != '\r' && p[i] != '\n')
		i++;
	if (!mime__span_is(p, i, name))
		return false;
	while (i < n && mime__is_wsp(p[i]))
		i++;
	return i < n && p[i] == ':';
}

/* Appends the header section p[0..n) with every Content-Transfer-Encoding field (continuation
 * lines included) left out and "Content-Transfer-Encoding: cte" written where the first one was,
 * or before the blank line when there was none; with want_version, "MIME-Version: 1.0" before
 * the blank line when the section has no MIME-Version field. Other lines are copied as they
 * are, in order. */
static void
write_header(struct buf *out, const uint8_t *p, size_t n, const char *cte, bool want_version)
{
	size_t pos = 0;
	bool dropping = false, cte_done = false, has_version = false;

	while (pos < n) {
		size_t start = pos, content, eol;

		next_line(p, n, &pos, false, &content, &eol);
		if (content == 0 && eol > 0) {
			pos = start; /* the blank line: the header ends here */
			break;
		}
		if (!mime__is_wsp(p[start])) {
			dropping = field_is(p + start, content, "content-transfer-encoding");
			if (field_is(p + start, content, "mime-version"))
				has_version = true;
			if (dropping && !cte_done) {
				(void)buf_printf(out, "Content-Transfer-Encoding: %s\r\n", cte);
				cte_done = true;
			}
		}
		if (!dropping)
			(void)buf_append(out, p + start, pos - start);
	}
	/* Only a header with a blank line has a body to convert, so pos is at a line start. */
	if (!cte_done)
		(void)buf_printf(out, "Content-Transfer-Encoding: %s\r\n", cte);
	if (want_version && !has_version)
		(void)buf_append_str(out, "MIME-Version: 1.0\r\n");
	(void)buf_append(out, p + pos, n - pos);
}

/* ---- the walk -------------------------------------------------------------------------------- */

static bool
encoding_is(const struct mime_part *part, const char *name)
{
	return part->encoding.s != NULL && mime__span_is(part->encoding.s, part->encoding.len, name);
}

/* Appends to tmp the boundary as the parser takes it (mime_parser.c take_boundary): the
 * RFC 2231 form decoded, a plain value literally. Returns 0; 1 when there is none (the parser
 * saw no structure); -1 when it could not be written on a delimiter line of a 7-bit message. */
static int
get_boundary(const struct mime_part *part, struct buf *tmp)
{
	const struct mime_param *bp = mime_param_find(part->params, part->nparams, "boundary");

	if (bp == NULL)
		return 1;
	if (bp->name.s[bp->name.len - 1] == '*')
		(void)mime_param_get(tmp, part->params, part->nparams, "boundary");
	else
		(void)buf_append(tmp, bp->value.s, bp->value.len);
	if (tmp->len == 0 && !tmp->err)
		return 1;
	if (tmp->err || tmp->len > MAX_BOUNDARY_7BIT)
		return -1;
	for (size_t i = 0; i < tmp->len; i++) {
		if (is_8bit_or_nul(tmp->data[i]) || tmp->data[i] == '\r' || tmp->data[i] == '\n')
			return -1;
	}
	return 0;
}

/* Preamble, delimiter lines and epilogue of a multipart, msg[a..b). A line that is not fit
 * for 7 bits is emptied (its line end stays) unless it starts with the delimiter (bnd, or
 * NULL), which is then written again as "--bnd" or "--bnd--", the same line to every parser
 * (RFC 2046 5.1.1: what follows the boundary is only transport padding). Emptying never makes
 * a delimiter; a preamble or epilogue is for non-MIME readers only. */
static void
write_gap(struct conv *c, size_t a, size_t b, const struct buf *bnd)
{
	const uint8_t *p = c->msg + a;
	size_t n = b - a, pos = 0;

	if (!region_dirty(p, n)) {
		(void)buf_append(c->out, p, n);
		return;
	}
	while (pos < n) {
		size_t start = pos, content, eol;
		const uint8_t *s = p + start;

		next_line(p, n, &pos, false, &content, &eol);
		if (!region_dirty(s, content)) {
			(void)buf_append(c->out, s, content);
		} else if (bnd != NULL && content >= 2 + bnd->len && s[0] == '-' && s[1] == '-' &&
		           memcmp(s + 2, bnd->data, bnd->len) == 0) {
			bool close = content >= 4 + bnd->len && s[2 + bnd->len] == '-' &&
			             s[3 + bnd->len] == '-';

			(void)buf_append(c->out, "--", 2);
			(void)buf_append(c->out, bnd->data, bnd->len);
			if (close)
				(void)buf_append(c->out, "--", 2);
		}
		(void)buf_append(c->out, s + content, eol);
	}
}

static bool
is_global(const struct mime_part *part)
{
	/* RFC 6532 3.7 message/global, RFC 6533 message/global-headers and
	 * message/global-delivery-status: 8-bit header fields inside, for SMTPUTF8 only. */
	return mime_part_is_type(part, "message", NULL) && part->subtype.len >= 6 &&
	       mime__eq_ci(part->subtype.s, "global", 6);
}

static enum mime_7bit_result
conv_leaf(struct conv *c, const struct mime_part *part)
{
	const uint8_t *hdr = c->msg + part->hdr_offset, *body = c->msg + part->body_offset;
	size_t hlen = (size_t)(part->body_offset - part->hdr_offset);
	size_t blen = (size_t)(part->end_offset - part->body_offset);
	bool want_version = part->envelope != NULL; /* a message header (RFC 2045 4) */

	if (is_global(part))
		return MIME_7BIT_HEADERS;
	if (encoding_is(part, "base64")) {
		(void)buf_append(c->out, hdr, hlen);
		b64_filter(c->out, body, blen);
	} else if (encoding_is(part, "quoted-printable")) {
		struct buf dec;

		/* Decoded again and encoded afresh: what a decoder makes of it stays the same. */
		mime__scratch_init(&dec, blen);
		mime_decode_qp(&dec, body, blen);
		(void)buf_append(c->out, hdr, hlen);
		qp_encode(c->out, dec.data != NULL ? dec.data : (const uint8_t *)"", dec.len, false);
		buf_deinit(&dec);
	} else if (mime_part_is_type(part, "text", NULL) ||
	           mime_part_is_type(part, "message", NULL)) {
		write_header(c->out, hdr, hlen, "quoted-printable", want_version);
		qp_encode(c->out, body, blen, true);
	} else {
		/* Anything else may be binary: base64 keeps every octet (lone CR and LF too) at 4/3
		 * of the size, where quoted-printable could triple it. */
		write_header(c->out, hdr, hlen, "base64", want_version);
		b64_encode(c->out, body, blen);
	}
	return MIME_7BIT_CONVERTED;
}

static enum mime_7bit_result
conv_part(struct conv *c, const struct mime_part *part, unsigned int depth)
{
	const uint8_t *hdr = c->msg + part->hdr_offset;
	size_t hlen = (size_t)(part->body_offset - part->hdr_offset);
	size_t len = (size_t)(part->end_offset - part->hdr_offset);
	enum mime_7bit_result r = MIME_7BIT_CONVERTED;
	struct buf bnd;
	size_t pos;

	if (!region_dirty(hdr, len)) {
		(void)buf_append(c->out, hdr, len);
		return MIME_7BIT_CONVERTED;
	}
	if (region_dirty(hdr, hlen))
		return MIME_7BIT_HEADERS;
	if (part->kind == MIME_KIND_LEAF &&
	    (!mime_part_is_type(part, "multipart", NULL) ||
	     (part->flags & MIME_PART_NO_FINAL_BOUNDARY) != 0))
		return conv_leaf(c, part);
	if (depth >= MIME_7BIT_MAX_DEPTH)
		return MIME_7BIT_ERROR; /* the parser's max_depth stops it first */

	buf_init(&bnd, MAX_BOUNDARY_7BIT + 64);
	if (part->kind != MIME_KIND_MESSAGE) {
		/* A leaf here is a multipart whose close delimiter came before any part (RFC 2046
		 * 5.1.1 wants one at least): no structure of its own, but its delimiter lines took
		 * lines its parents would have taken, so it is written as a preamble, not encoded. */
		int g = get_boundary(part, &bnd);

		if (g != 0) {
			r = g < 0 ? MIME_7BIT_HEADERS : conv_leaf(c, part);
			goto out;
		}
	}
	/* Content that is 7-bit now: "8bit" or "binary" would be a false label (Postfix does the
	 * same); 7bit is the one RFC 2045 6.4 and RFC 2046 5.2.1 allow besides them. */
	if (encoding_is(part, "8bit") || encoding_is(part, "binary"))
		write_header(c->out, hdr, hlen, "7bit", false);
	else
		(void)buf_append(c->out, hdr, hlen);
	pos = (size_t)part->body_offset;
	for (const struct mime_part *child = part->children; child != NULL; child = child->next) {
		write_gap(c, pos, (size_t)child->hdr_offset,
		          part->kind != MIME_KIND_MESSAGE ? &bnd : NULL);
		r = conv_part(c, child, depth + 1);
		if (r != MIME_7BIT_CONVERTED)
			goto out;
		pos = (size_t)child->end_offset;
	}
	write_gap(c, pos, (size_t)part->end_offset, part->kind != MIME_KIND_MESSAGE ? &bnd : NULL);
out:
	buf_deinit(&bnd);
	return r;
}

enum mime_7bit_result
mime_to_7bit(const uint8_t *msg, size_t len, struct buf *out)
{
	const unsigned int fatal = MIME_WARN_HEADER_BYTES | MIME_WARN_HEADER_FIELDS |
	                           MIME_WARN_DEPTH | MIME_WARN_PARTS | MIME_WARN_KEPT_BYTES;
	struct mime_limits lim = {
		.max_header_bytes = MIME_MAX_HEADER_BYTES,
		.max_header_fields = MIME_MAX_HEADER_FIELDS,
		.max_depth = MIME_7BIT_MAX_DEPTH,
		.max_parts = MIME_7BIT_MAX_PARTS,
		/* uncut, so the boundary compared is the boundary written (MAX_BOUNDARY_7BIT) */
		.max_boundary = MIME_MAX_BOUNDARY,
		.max_kept_bytes = MIME_MAX_KEPT_BYTES,
	};
	struct mime_parser *p;
	struct mime_part *root = NULL;
	struct conv c = {msg, out};
	enum mime_7bit_result r;
	size_t start = out->len;
	unsigned int warnings;

	if (!region_dirty(msg, len))
		return MIME_7BIT_CLEAN;
	p = mime_parser_new(&lim);
	mime_parser_feed(p, msg, len);
	if (mime_parser_finish(p, &root) != 0)
		PANIC("mime_parser_finish failed on a new parser");
	warnings = mime_parser_warnings(p);
	mime_parser_free(&p);

	if ((warnings & fatal) != 0)
		r = MIME_7BIT_ERROR;
	else
		r = conv_part(&c, root, 0);
	if (r == MIME_7BIT_CONVERTED && out->err)
		r = MIME_7BIT_ERROR;
	if (r != MIME_7BIT_CONVERTED) {
		out->len = start;
		if (out->data != NULL)
			out->data[start] = '\0';
	}
	mime_part_free(&root);
	return r;
}
