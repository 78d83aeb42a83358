/* Fuzz target for the MIME parser and its writers (src/mime).
 *
 * Input: byte 0 picks the limits (< 0x80: the defaults; else small ones derived from it, so
 * that every limit is reached), bytes 1..4 are the sizes of the pieces the rest is fed in
 * (cycled, empty pieces included), the rest is the message. It aborts when:
 * - parsing in pieces (each copied to a buffer of its exact size) and at once disagree in any
 *   field of the tree, in the warnings, or in BODYSTRUCTURE;
 * - the tree breaks an invariant (offsets in order and inside the parent, sizes and line
 *   counts consistent, kinds and children agree, envelopes on message headers only);
 * - BODYSTRUCTURE, BODY or ENVELOPE output is not well-formed (parentheses, quotes, literals);
 * - serialize / deserialize / serialize changes a byte or the BODYSTRUCTURE.
 * It also runs the RFC 2047 decoder, the address parser and mime_param_get() on the header
 * values the parser kept, and the decoders and the deserialiser on the raw input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mime/mime.h"
#include "mime/mime_header.h"

#define FUZZ_HEADER 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
limits_for(uint8_t b, struct mime_limits *lim)
{
	mime_limits_default(lim);
	if (b < 0x80)
		return;
	lim->max_header_bytes = 32 + (size_t)(b & 0x0f) * 16;
	lim->max_header_fields = 1 + ((b >> 2) & 7);
	lim->max_depth = 1 + (b & 3);
	lim->max_parts = 2 + ((b >> 3) & 7);
	lim->max_boundary = 1 + (b & 0x1f);
	lim->max_kept_bytes = 16 + (size_t)(b & 0x3f) * 8;
}

static struct mime_part *
parse_pieces(const uint8_t *msg, size_t len, const uint8_t *sizes,
             const struct mime_limits *lim, unsigned int *warn_r)
{
	struct mime_parser *p = mime_parser_new(lim);
	struct mime_part *root;
	size_t pos = 0, k = 0;

	while (pos < len) {
		size_t n = sizes[k++ % 4];
		uint8_t *copy;

		if (n > len - pos)
			n = len - pos;
		copy = malloc(n > 0 ? n : 1);
		if (copy == NULL)
			abort();
		if (n > 0)
			memcpy(copy, msg + pos, n);
		mime_parser_feed(p, copy, n);
		free(copy);
		pos += n;
		if (k % 4 == 0 && (sizes[0] | sizes[1] | sizes[2] | sizes[3]) == 0) {
			/* all pieces empty: feed the rest at once */
			mime_parser_feed(p, msg + pos, len - pos);
			pos = len;
		}
	}
	if (mime_parser_finish(p, &root) != 0)
		abort();
	*warn_r = mime_parser_warnings(p);
	mime_parser_free(&p);
	return root;
}

/* Well-formed IMAP output: parentheses balance outside quoted strings and literals, quoted
 * strings hold no CR, LF, NUL or 8-bit octet, literals have their announced length. */
static void
check_imap(const struct buf *b)
{
	const uint8_t *s = b->data;
	size_t n = b->len;
	long depth = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (c == '"') {
			for (i++; i < n && s[i] != '"'; i++) {
				if (s[i] == '\\')
					i++;
				if (i >= n || s[i] == '\r' || s[i] == '\n' || s[i] == 0 ||
				    s[i] >= 0x80)
					abort();
			}
			if (i >= n)
				abort();
		} else if (c == '{') {
			size_t len = 0;

			for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
				len = len * 10 + (size_t)(s[i] - '0');
			if (i + 2 >= n || s[i] != '}' || s[i + 1] != '\r' || s[i + 2] != '\n' ||
			    len > n - i - 3 || memchr(s + i + 3, 0, len) != NULL)
				abort();
			i += 2 + len;
		} else if (c == '(') {
			depth++;
		} else if (c == ')') {
			if (--depth < 0)
				abort();
		} else if (c == '\r' || c == '\n' || c >= 0x80 || c == 0) {
			abort(); /* only inside strings */
		}
	}
	if (depth != 0)
		abort();
}

static void
write_bs(const struct mime_part *root, bool extended, struct buf *out)
{
	buf_init(out, 1 << 26);
	if (mime_write_bodystructure(out, root, extended) != 0)
		abort();
	check_imap(out);
}

static void
same_buf(const struct buf *a, const struct buf *b)
{
	if (a->len != b->len || (a->len > 0 && memcmp(a->data, b->data, a->len) != 0))
		abort();
}

static void
check_tree(const struct mime_part *p, uint64_t lo, uint64_t hi, bool msg_root)
{
	uint64_t pos;
	unsigned int n = 0;

	if (p->hdr_offset < lo || p->hdr_offset > p->body_offset ||
	    p->body_offset > p->end_offset || p->end_offset > hi)
		abort();
	if (p->hdr_vsize < p->body_offset - p->hdr_offset ||
	    p->body_vsize < p->end_offset - p->body_offset ||
	    p->hdr_lines > p->body_offset - p->hdr_offset ||
	    p->body_lines > p->end_offset - p->body_offset ||
	    p->hdr_vsize - (p->body_offset - p->hdr_offset) > p->hdr_lines ||
	    p->body_vsize - (p->end_offset - p->body_offset) > p->body_lines)
		abort();
	if ((p->envelope != NULL) != msg_root || p->type.s == NULL || p->subtype.s == NULL)
		abort();
	pos = p->body_offset;
	for (const struct mime_part *c = p->children; c != NULL; c = c->next) {
		if (c->parent != p || c->hdr_offset < pos)
			abort();
		check_tree(c, p->body_offset, p->end_offset, p->kind == MIME_KIND_MESSAGE);
		pos = c->end_offset;
		n++;
	}
	if ((p->kind == MIME_KIND_LEAF && n != 0) || (p->kind == MIME_KIND_MULTIPART && n == 0) ||
	    (p->kind == MIME_KIND_MESSAGE && n != 1))
		abort();
	if (p->kind == MIME_KIND_MESSAGE &&
	    (p->children->hdr_offset != p->body_offset || p->children->end_offset != p->end_offset))
		abort();
}

/* The helpers on every value the parser kept. */
static void
run_helpers(const struct mime_part *p)
{
	struct buf b;

	buf_init(&b, 1 << 22);
	if (p->envelope != NULL) {
		struct buf e;

		buf_init(&e, 1 << 24);
		if (mime_write_envelope(&e, p->envelope) != 0)
			abort();
		check_imap(&e);
		buf_deinit(&e);
		for (unsigned int i = 0; i < MIME_ENV_COUNT; i++) {
			const struct mime_str *f = &p->envelope->field[i];
			struct mime_pool *pool = mime_pool_new();
			struct mime_address *list;
			unsigned int n, count = 0;

			if (f->s == NULL) {
				mime_pool_free(&pool);
				continue;
			}
			buf_reset(&b);
			if (mime_header_decode(&b, (const uint8_t *)f->s, f->len) != 0)
				abort();
			n = mime_address_parse(pool, (const uint8_t *)f->s, f->len, &list);
			for (const struct mime_address *a = list; a != NULL; a = a->next) {
				count++;
				if ((a->type == MIME_ADDR_MAILBOX &&
				     (a->mailbox.s == NULL || a->host.s == NULL)) ||
				    (a->type != MIME_ADDR_MAILBOX && a->host.s != NULL))
					abort();
			}
			if (count != n)
				abort();
			mime_pool_free(&pool);
		}
	}
	if (p->description.s != NULL) {
		buf_reset(&b);
		if (mime_header_decode(&b, (const uint8_t *)p->description.s, p->description.len))
			abort();
	}
	buf_reset(&b);
	(void)mime_param_get(&b, p->params, p->nparams, "name");
	buf_reset(&b);
	(void)mime_param_get(&b, p->params, p->nparams, "charset");
	buf_reset(&b);
	(void)mime_param_get(&b, p->disp_params, p->ndisp_params, "filename");
	buf_deinit(&b);
	for (const struct mime_part *c = p->children; c != NULL; c = c->next)
		run_helpers(c);
}

static void
round_trip(const struct mime_part *root, const struct buf *image, const struct buf *bs)
{
	struct mime_part *copy;
	const char *error;
	struct buf again, bs2;

	if (mime_part_deserialize(image->data, image->len, &copy, &error) != 0)
		abort();
	buf_init(&again, 1 << 26);
	if (mime_part_serialize(&again, copy) != 0)
		abort();
	same_buf(image, &again);
	write_bs(copy, true, &bs2);
	same_buf(bs, &bs2);
	(void)root;
	buf_deinit(&bs2);
	buf_deinit(&again);
	mime_part_free(&copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mime_limits lim;
	struct mime_part *one, *pieces, *copy;
	unsigned int w1, w2;
	struct buf img1, img2, bs1, bs2, body;
	const uint8_t *msg;
	size_t len;
	const char *error;

	if (size < FUZZ_HEADER)
		return 0;
	limits_for(data[0], &lim);
	msg = data + FUZZ_HEADER;
	len = size - FUZZ_HEADER;

	pieces = parse_pieces(msg, len, data + 1, &lim, &w2);
	{
		struct mime_parser *p = mime_parser_new(&lim);

		mime_parser_feed(p, msg, len);
		if (mime_parser_finish(p, &one) != 0)
			abort();
		w1 = mime_parser_warnings(p);
		mime_parser_free(&p);
	}
	if (w1 != w2 || one->end_offset != len)
		abort();
	check_tree(one, 0, len, true);

	buf_init(&img1, 1 << 26);
	buf_init(&img2, 1 << 26);
	if (mime_part_serialize(&img1, one) != 0 || mime_part_serialize(&img2, pieces) != 0)
		abort();
	same_buf(&img1, &img2);
	write_bs(one, true, &bs1);
	write_bs(pieces, true, &bs2);
	same_buf(&bs1, &bs2);
	write_bs(one, false, &body);

	run_helpers(one);
	round_trip(one, &img1, &bs1);

	/* the raw input through the decoders and the deserialiser */
	{
		struct mime_pool *pool = mime_pool_new();
		struct mime_address *list;
		struct mime_param *params;
		unsigned int n;
		struct buf b;

		buf_init(&b, 1 << 22);
		if (mime_header_decode(&b, msg, len) != 0)
			abort();
		(void)mime_address_parse(pool, msg, len, &list);
		mime_parse_params(pool, msg, len, &params, &n);
		buf_reset(&b);
		(void)mime_param_get(&b, params, n, "filename");
		buf_deinit(&b);
		mime_pool_free(&pool);
	}
	if (mime_part_deserialize(msg, len, &copy, &error) == 0) {
		struct buf img3, bs3;

		check_tree(copy, 0, UINT64_MAX, true);
		buf_init(&img3, 1 << 26);
		if (mime_part_serialize(&img3, copy) != 0)
			abort();
		if (img3.len != len || memcmp(img3.data, msg, len) != 0)
			abort();
		write_bs(copy, true, &bs3);
		buf_deinit(&bs3);
		buf_deinit(&img3);
		mime_part_free(&copy);
	}

	buf_deinit(&body);
	buf_deinit(&bs1);
	buf_deinit(&bs2);
	buf_deinit(&img1);
	buf_deinit(&img2);
	mime_part_free(&one);
	mime_part_free(&pieces);
	return 0;
}
