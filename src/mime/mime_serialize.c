/* A compact binary image of a part tree, stored in the database beside the message so that
 * FETCH BODY[section], BODYSTRUCTURE and ENVELOPE need neither the file nor a re-parse.
 * Format (version 1): "PMT" 0x01, then the root, each part in pre-order as
 *   kind(1) flags hdr_offset hdr_size body_size hdr_vextra body_vextra hdr_lines body_lines
 *   type subtype nparams{name value} id description encoding md5 location disposition
 *   ndisp{name value} nlang{tag} has_envelope(1)[10 strings] nchildren{part}
 * numbers as LEB128 varints, strings as varint(len + 1) then the octets (0: absent).
 * Invariant: mime_part_deserialize() accepts exactly the trees the parser can build (kinds and
 * child counts agree, children lie inside their parent in order, an envelope exactly on message
 * headers, sizes add up, depth and counts within the ceilings), so the writers and the IMAP
 * server can trust a tree whatever the bytes were. */
#include "mime/mime_internal.h"

#include <string.h>

static const uint8_t magic[4] = {'P', 'M', 'T', 1};

/* ---- writing -------------------------------------------------------------------------------- */

static void
put_varint(struct buf *out, uint64_t v)
{
	uint8_t b[10];
	size_t n = 0;

	do {
		b[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v != 0)
			b[n] |= 0x80;
		n++;
	} while (v != 0);
	(void)buf_append(out, b, n);
}

static void
put_str(struct buf *out, const struct mime_str *s)
{
	if (s->s == NULL) {
		put_varint(out, 0);
		return;
	}
	put_varint(out, (uint64_t)s->len + 1);
	(void)buf_append(out, s->s, s->len);
}

static void
put_params(struct buf *out, const struct mime_param *params, unsigned int n)
{
	put_varint(out, n);
	for (unsigned int i = 0; i < n; i++) {
		put_str(out, &params[i].name);
		put_str(out, &params[i].value);
	}
}

static void
put_part(struct buf *out, const struct mime_part *part)
{
	const struct mime_str *strs[] = {&part->id, &part->description, &part->encoding,
	                                 &part->md5, &part->location, &part->disposition};
	unsigned int nchildren = 0;

	(void)buf_append_byte(out, (uint8_t)part->kind);
	put_varint(out, part->flags);
	put_varint(out, part->hdr_offset);
	put_varint(out, part->body_offset - part->hdr_offset);
	put_varint(out, part->end_offset - part->body_offset);
	put_varint(out, part->hdr_vsize - (part->body_offset - part->hdr_offset));
	put_varint(out, part->body_vsize - (part->end_offset - part->body_offset));
	put_varint(out, part->hdr_lines);
	put_varint(out, part->body_lines);
	put_str(out, &part->type);
	put_str(out, &part->subtype);
	put_params(out, part->params, part->nparams);
	for (size_t i = 0; i < N_ELEMENTS(strs); i++)
		put_str(out, strs[i]);
	put_params(out, part->disp_params, part->ndisp_params);
	put_varint(out, part->nlanguages);
	for (unsigned int i = 0; i < part->nlanguages; i++)
		put_str(out, &part->languages[i]);
	(void)buf_append_byte(out, part->envelope != NULL);
	if (part->envelope != NULL) {
		for (unsigned int i = 0; i < MIME_ENV_COUNT; i++)
			put_str(out, &part->envelope->field[i]);
	}
	for (const struct mime_part *c = part->children; c != NULL; c = c->next)
		nchildren++;
	put_varint(out, nchildren);
	for (const struct mime_part *c = part->children; c != NULL; c = c->next)
		put_part(out, c);
}

int
mime_part_serialize(struct buf *out, const struct mime_part *root)
{
	(void)buf_append(out, magic, sizeof(magic));
	put_part(out, root);
	return out->err ? -1 : 0;
}

/* ---- reading -------------------------------------------------------------------------------- */

struct reader {
	const uint8_t *p;
	const uint8_t *end;
	struct mime_pool *pool;
	unsigned int nparts;
	const char *error;
};

static bool
fail(struct reader *r, const char *error)
{
	if (r->error == NULL)
		r->error = error;
	return false;
}

static bool
get_varint(struct reader *r, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned int shift = 0; shift < 64; shift += 7) {
		uint8_t b;

		if (r->p >= r->end)
			return fail(r, "truncated");
		b = *r->p++;
		if (shift == 63 && b > 1)
			return fail(r, "number too large");
		x |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0) {
			/* one encoding per number, so that an image that reads back is exactly
			 * what mime_part_serialize() writes for the tree */
			if (b == 0 && shift > 0)
				return fail(r, "number not in shortest form");
			*v = x;
			return true;
		}
	}
	return fail(r, "number too large");
}

static bool
get_count(struct reader *r, unsigned int *n, unsigned int max)
{
	uint64_t v;

	if (!get_varint(r, &v))
		return false;
	if (v > max)
		return fail(r, "count too large");
	*n = (unsigned int)v;
	return true;
}

static bool
get_str(struct reader *r, struct mime_str *s)
{
	uint64_t v;

	if (!get_varint(r, &v))
		return false;
	if (v == 0) {
		s->s = NULL;
		s->len = 0;
		return true;
	}
	if (v - 1 > (uint64_t)(r->end - r->p))
		return fail(r, "truncated string");
	*s = mime__str_dup(r->pool, r->p, (size_t)(v - 1));
	r->p += v - 1;
	return true;
}

static bool
get_params(struct reader *r, struct mime_param **params, unsigned int *n)
{
	if (!get_count(r, n, MIME_MAX_PARAMS))
		return false;
	*params = NULL;
	if (*n == 0)
		return true;
	*params = mime_pool_alloc(r->pool, *n * sizeof(**params));
	for (unsigned int i = 0; i < *n; i++) {
		if (!get_str(r, &(*params)[i].name) || !get_str(r, &(*params)[i].value))
			return false;
		if ((*params)[i].name.s == NULL || (*params)[i].value.s == NULL)
			return fail(r, "absent parameter");
	}
	return true;
}

/* hdr/body sizes, their v-extras (bare LFs) and line counts must agree: every bare LF is a
 * line, every line an octet. */
static bool
check_sizes(struct reader *r, uint64_t size, uint64_t vextra, uint64_t lines)
{
	if (lines > size || vextra > lines)
		return fail(r, "inconsistent sizes");
	return true;
}

static bool
get_part(struct reader *r, struct mime_part *part, unsigned int depth, bool msg_root)
{
	struct mime_str *strs[] = {&part->id, &part->description, &part->encoding,
	                           &part->md5, &part->location, &part->disposition};
	uint64_t hdr_size, body_size, hdr_vextra, body_vextra, flags;
	struct mime_part **tail = &part->children;
	unsigned int nchildren;
	uint8_t kind, has_env;

	if (depth > MIME_MAX_DEPTH)
		return fail(r, "too deep");
	if (++r->nparts > MIME_MAX_PARTS)
		return fail(r, "too many parts");
	if (r->p >= r->end)
		return fail(r, "truncated");
	kind = *r->p++;
	if (kind > MIME_KIND_MESSAGE)
		return fail(r, "bad kind");
	part->kind = (enum mime_kind)kind;
	if (!get_varint(r, &flags) || !get_varint(r, &part->hdr_offset) ||
	    !get_varint(r, &hdr_size) || !get_varint(r, &body_size) ||
	    !get_varint(r, &hdr_vextra) || !get_varint(r, &body_vextra) ||
	    !get_varint(r, &part->hdr_lines) || !get_varint(r, &part->body_lines))
		return false;
	if ((flags & ~(uint64_t)MIME_PART_FLAGS_ALL) != 0)
		return fail(r, "bad flags");
	part->flags = (unsigned int)flags;
	if (hdr_size > UINT64_MAX - part->hdr_offset ||
	    body_size > UINT64_MAX - part->hdr_offset - hdr_size)
		return fail(r, "offsets overflow");
	if (!check_sizes(r, hdr_size, hdr_vextra, part->hdr_lines) ||
	    !check_sizes(r, body_size, body_vextra, part->body_lines))
		return false;
	part->body_offset = part->hdr_offset + hdr_size;
	part->end_offset = part->body_offset + body_size;
	part->hdr_vsize = hdr_size + hdr_vextra;
	part->body_vsize = body_size + body_vextra;
	if (!get_str(r, &part->type) || !get_str(r, &part->subtype) ||
	    !get_params(r, &part->params, &part->nparams))
		return false;
	if (part->type.s == NULL || part->subtype.s == NULL)
		return fail(r, "no content type");
	for (size_t i = 0; i < N_ELEMENTS(strs); i++) {
		if (!get_str(r, strs[i]))
			return false;
	}
	if (!get_params(r, &part->disp_params, &part->ndisp_params) ||
	    !get_count(r, &part->nlanguages, (unsigned int)MIN((uint64_t)(r->end - r->p),
	                                                       (uint64_t)UINT32_MAX)))
		return false;
	if (part->nlanguages > 0) {
		part->languages = mime_pool_alloc(r->pool,
		                                  part->nlanguages * sizeof(*part->languages));
		for (unsigned int i = 0; i < part->nlanguages; i++) {
			if (!get_str(r, &part->languages[i]))
				return false;
			if (part->languages[i].s == NULL)
				return fail(r, "absent language");
		}
	}
	if (r->p >= r->end)
		return fail(r, "truncated");
	has_env = *r->p++;
	if (has_env > 1 || (has_env == 1) != msg_root)
		return fail(r, "envelope on the wrong part");
	if (has_env) {
		part->envelope = mime_pool_alloc(r->pool, sizeof(*part->envelope));
		for (unsigned int i = 0; i < MIME_ENV_COUNT; i++) {
			if (!get_str(r, &part->envelope->field[i]))
				return false;
		}
	}
	if (!get_count(r, &nchildren, MIME_MAX_PARTS))
		return false;
	if ((part->kind == MIME_KIND_LEAF && nchildren != 0) ||
	    (part->kind == MIME_KIND_MULTIPART && nchildren == 0) ||
	    (part->kind == MIME_KIND_MESSAGE && nchildren != 1))
		return fail(r, "children do not match the kind");
	for (unsigned int i = 0; i < nchildren; i++) {
		struct mime_part *c = mime_pool_alloc(r->pool, sizeof(*c));

		c->parent = part;
		if (!get_part(r, c, depth + 1, part->kind == MIME_KIND_MESSAGE))
			return false;
		*tail = c;
		tail = &c->next;
	}
	/* Children lie in the parent's body, in order, without overlap; a message's one child is
	 * its whole body. */
	uint64_t pos = part->body_offset;

	if (part->kind == MIME_KIND_MESSAGE &&
	    (part->children->hdr_offset != part->body_offset ||
	     part->children->end_offset != part->end_offset))
		return fail(r, "message body is not its message");

	for (const struct mime_part *c = part->children; c != NULL; c = c->next) {
		if (c->hdr_offset < pos || c->end_offset > part->end_offset)
			return fail(r, "child outside its parent");
		pos = c->end_offset;
	}
	return true;
}

int
mime_part_deserialize(const uint8_t *data, size_t len, struct mime_part **root_r,
                      const char **error_r)
{
	struct mime__tree *tree;
	struct reader r;
	struct mime_part *root;

	*root_r = NULL;
	if (len < sizeof(magic) || memcmp(data, magic, sizeof(magic)) != 0) {
		*error_r = "not a serialized part tree (or another version)";
		return -1;
	}
	tree = mime__tree_new();
	root = &tree->root;
	memset(&r, 0, sizeof(r));
	r.p = data + sizeof(magic);
	r.end = data + len;
	r.pool = tree->pool;
	if (get_part(&r, root, 0, true) && r.p != r.end)
		(void)fail(&r, "trailing data");
	if (r.error != NULL) {
		*error_r = r.error;
		mime_part_free(&root);
		return -1;
	}
	*root_r = root;
	return 0;
}
