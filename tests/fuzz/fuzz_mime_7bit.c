/* Fuzz target for the 8-bit to 7-bit conversion (src/mime/mime_7bit.c).
 *
 * Input: the message. It aborts when:
 * - CLEAN is answered for a message with an octet >= 0x80, a NUL or a line over 998 octets,
 *   or anything but CONVERTED leaves something in the output buffer;
 * - the output of CONVERTED has such an octet or line, or is not CLEAN when converted again;
 * - the output does not parse (with the converter's limits) into the same tree: kinds, types,
 *   subtypes, children, the missing close delimiters of multiparts;
 * - a leaf body, decoded from the output, differs from the input's, decoded the same way (bare
 *   LFs of a text body that was not encoded before count as CRLF, as the conversion writes
 *   them). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mime/mime.h"
#include "mime/mime_7bit.h"
#include "mime/mime_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
is_7bit(const uint8_t *p, size_t n)
{
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			col = 0;
			continue;
		}
		if (p[i] == 0 || p[i] >= 0x80)
			return false;
		if (++col > MIME_7BIT_MAX_LINE && !(p[i] == '\r' && i + 1 < n && p[i + 1] == '\n'))
			return false;
	}
	return true;
}

static bool
str_eq_ci(const struct mime_str *a, const struct mime_str *b)
{
	if (a->len != b->len)
		return false;
	for (size_t i = 0; i < a->len; i++) {
		uint8_t x = (uint8_t)a->s[i], y = (uint8_t)b->s[i];

		x = (uint8_t)(x >= 'A' && x <= 'Z' ? x + 32 : x);
		y = (uint8_t)(y >= 'A' && y <= 'Z' ? y + 32 : y);
		if (x != y)
			return false;
	}
	return true;
}

static bool
encoding_is(const struct mime_part *p, const char *name)
{
	const struct mime_str s = {name, strlen(name)};

	return p->encoding.s != NULL && str_eq_ci(&p->encoding, &s);
}

static void
decode_body(const uint8_t *msg, const struct mime_part *p, struct buf *out)
{
	const uint8_t *b = msg + p->body_offset;
	size_t n = (size_t)(p->end_offset - p->body_offset);

	if (encoding_is(p, "base64"))
		mime_decode_base64(out, b, n);
	else if (encoding_is(p, "quoted-printable"))
		mime_decode_qp(out, b, n);
	else
		(void)buf_append(out, b, n);
}

static void
to_crlf(const struct buf *in, struct buf *out)
{
	for (size_t i = 0; i < in->len; i++) {
		if (in->data[i] == '\n' && (i == 0 || in->data[i - 1] != '\r'))
			(void)buf_append_byte(out, '\r');
		(void)buf_append_byte(out, in->data[i]);
	}
}

static void
same_tree(const uint8_t *in, const struct mime_part *a, const uint8_t *out,
          const struct mime_part *b)
{
	const struct mime_part *x, *y;

	if (a->kind != b->kind || !str_eq_ci(&a->type, &b->type) ||
	    !str_eq_ci(&a->subtype, &b->subtype) ||
	    (a->kind == MIME_KIND_MULTIPART && (a->flags & MIME_PART_NO_FINAL_BOUNDARY) !=
	                                           (b->flags & MIME_PART_NO_FINAL_BOUNDARY)))
		abort();
	/* A multipart closed before any part is written like a preamble: no body to compare. */
	if (a->kind == MIME_KIND_LEAF &&
	    !(mime_part_is_type(a, "multipart", NULL) &&
	      (a->flags & MIME_PART_NO_FINAL_BOUNDARY) == 0)) {
		struct buf da, db, norm;
		bool text = mime_part_is_type(a, "text", NULL) || mime_part_is_type(a, "message", NULL);
		bool was_encoded = encoding_is(a, "base64") || encoding_is(a, "quoted-printable");

		buf_init(&da, 1 << 26);
		buf_init(&db, 1 << 26);
		buf_init(&norm, 1 << 27);
		decode_body(in, a, &da);
		decode_body(out, b, &db);
		if (text && !was_encoded && encoding_is(b, "quoted-printable")) {
			to_crlf(&da, &norm);
			buf_deinit(&da);
			da = norm;
		} else {
			buf_deinit(&norm);
		}
		if (da.err || db.err || da.len != db.len ||
		    (da.len > 0 && memcmp(da.data, db.data, da.len) != 0))
			abort();
		buf_deinit(&da);
		buf_deinit(&db);
	}
	for (x = a->children, y = b->children; x != NULL && y != NULL; x = x->next, y = y->next)
		same_tree(in, x, out, y);
	if (x != NULL || y != NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the converter's own limits (mime_7bit.c), so that both parses see the same structure */
	struct mime_limits lim = {
		.max_header_bytes = MIME_MAX_HEADER_BYTES,
		.max_header_fields = MIME_MAX_HEADER_FIELDS,
		.max_depth = MIME_7BIT_MAX_DEPTH,
		.max_parts = MIME_7BIT_MAX_PARTS,
		.max_boundary = MIME_MAX_BOUNDARY,
		.max_kept_bytes = MIME_MAX_KEPT_BYTES,
	};
	struct mime_part *a, *b;
	struct buf out, again;
	enum mime_7bit_result r;

	buf_init(&out, 1 << 26);
	r = mime_to_7bit(data, size, &out);
	switch (r) {
	case MIME_7BIT_CLEAN:
		if (!is_7bit(data, size) || out.len != 0)
			abort();
		break;
	case MIME_7BIT_HEADERS:
	case MIME_7BIT_ERROR:
		if (out.len != 0 || is_7bit(data, size))
			abort();
		break;
	case MIME_7BIT_CONVERTED:
		if (!is_7bit(out.data, out.len) || is_7bit(data, size))
			abort();
		buf_init(&again, 1 << 26);
		if (mime_to_7bit(out.data, out.len, &again) != MIME_7BIT_CLEAN || again.len != 0)
			abort();
		buf_deinit(&again);
		if (mime_parse(data, size, &lim, &a) != 0 || mime_parse(out.data, out.len, &lim, &b))
			abort();
		same_tree(data, a, out.data, b);
		mime_part_free(&a);
		mime_part_free(&b);
		break;
	default:
		abort();
	}
	buf_deinit(&out);
	return 0;
}
