/* The part tree's memory: an allocate-only pool (chunks of at least 4 KiB, freed together, as
 * Dovecot's alloconly pools), the tree container that lets a root find its pool, and small
 * helpers shared by the mime files (string copies, ASCII case, RFC 5322 3.2 lexical items).
 * Invariant: everything reachable from a root, the root itself included, lives in the root's
 * pool, so mime_part_free() is one pool free. */
#include "mime/mime_internal.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define POOL_CHUNK 4096

struct pool_chunk {
	struct pool_chunk *next;
	size_t size; /* usable octets in data */
	size_t used; /* octets handed out */
	max_align_t data[];
};

struct mime_pool {
	struct pool_chunk *chunks; /* the current chunk first */
	size_t used;               /* octets handed out, all chunks */
};

void
mime_limits_default(struct mime_limits *limits)
{
	limits->max_header_bytes = MIME_DEFAULT_HEADER_BYTES;
	limits->max_header_fields = MIME_DEFAULT_HEADER_FIELDS;
	limits->max_depth = MIME_DEFAULT_DEPTH;
	limits->max_parts = MIME_DEFAULT_PARTS;
	limits->max_boundary = MIME_DEFAULT_BOUNDARY;
	limits->max_kept_bytes = MIME_DEFAULT_KEPT_BYTES;
}

struct mime_pool *
mime_pool_new(void)
{
	return xcalloc(1, sizeof(struct mime_pool));
}

void
mime_pool_free(struct mime_pool **poolp)
{
	struct mime_pool *pool = *poolp;
	struct pool_chunk *c, *next;

	if (pool == NULL)
		return;
	for (c = pool->chunks; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	free(pool);
	*poolp = NULL;
}

void *
mime_pool_alloc(struct mime_pool *pool, size_t size)
{
	const size_t align = alignof(max_align_t);
	struct pool_chunk *c = pool->chunks;
	void *ret;

	if (size > SIZE_MAX - align - sizeof(struct pool_chunk) - POOL_CHUNK)
		PANIC("mime pool: allocation of %zu bytes", size);
	size = (size + align - 1) & ~(align - 1);
	if (size == 0)
		size = align;
	if (c == NULL || c->size - c->used < size) {
		size_t csize = size > POOL_CHUNK ? size : POOL_CHUNK;

		c = xmalloc(sizeof(*c) + csize);
		c->size = csize;
		c->used = 0;
		/* A big allocation gets a chunk of its own behind the current one, so that the room
		 * left in the current chunk is not wasted. */
		if (size > POOL_CHUNK / 2 && pool->chunks != NULL) {
			c->next = pool->chunks->next;
			pool->chunks->next = c;
		} else {
			c->next = pool->chunks;
			pool->chunks = c;
		}
	}
	/* UNSAFE: pointer arithmetic inside the chunk; size was checked against the room left. */
	ret = (uint8_t *)c->data + c->used;
	c->used += size;
	pool->used += size;
	memset(ret, 0, size);
	return ret;
}

size_t
mime__pool_used(const struct mime_pool *pool)
{
	return pool->used;
}

struct mime__tree *
mime__tree_new(void)
{
	struct mime_pool *pool = mime_pool_new();
	struct mime__tree *tree = mime_pool_alloc(pool, sizeof(*tree));

	tree->magic = MIME__TREE_MAGIC;
	tree->pool = pool;
	return tree;
}

void
mime_part_free(struct mime_part **rootp)
{
	struct mime_part *root = *rootp;
	struct mime__tree *tree;
	struct mime_pool *pool;

	if (root == NULL)
		return;
	ASSERT(root->parent == NULL);
	/* UNSAFE: container_of; the root of every tree is embedded in a struct mime__tree. */
	tree = (struct mime__tree *)(void *)((uint8_t *)root - offsetof(struct mime__tree, root));
	ASSERT(tree->magic == MIME__TREE_MAGIC);
	tree->magic = 0;
	pool = tree->pool;
	mime_pool_free(&pool);
	*rootp = NULL;
}

/* ---- strings ------------------------------------------------------------------------------- */

uint8_t
mime__lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c - 'A' + 'a') : c;
}

int
mime__hex_val(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = mime__lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

bool
mime__eq_ci(const void *p, const char *s, size_t n)
{
	const uint8_t *a = p;

	for (size_t i = 0; i < n; i++) {
		if (mime__lower(a[i]) != mime__lower((uint8_t)s[i]))
			return false;
	}
	return true;
}

bool
mime__span_is(const void *p, size_t len, const char *s)
{
	return strlen(s) == len && mime__eq_ci(p, s, len);
}

struct mime_str
mime__str_dup(struct mime_pool *pool, const void *p, size_t len)
{
	char *s = mime_pool_alloc(pool, len + 1);

	if (len > 0)
		memcpy(s, p, len);
	return (struct mime_str){s, len};
}

struct mime_str
mime__str_dup_lower(struct mime_pool *pool, const void *p, size_t len)
{
	char *s = mime_pool_alloc(pool, len + 1);
	const uint8_t *src = p;

	for (size_t i = 0; i < len; i++)
		s[i] = (char)mime__lower(src[i]);
	return (struct mime_str){s, len};
}

bool
mime_part_is_type(const struct mime_part *part, const char *type, const char *subtype)
{
	if (part->type.s == NULL || !mime__span_is(part->type.s, part->type.len, type))
		return false;
	return subtype == NULL ||
	       (part->subtype.s != NULL &&
	        mime__span_is(part->subtype.s, part->subtype.len, subtype));
}

void
mime__scratch_init(struct buf *b, size_t input_len)
{
	buf_init(b, input_len > SIZE_MAX - 64 ? SIZE_MAX : input_len + 64);
}

/* ---- RFC 5322 3.2 lexical primitives ------------------------------------------------------- */

bool
mime__is_atext(uint8_t c)
{
	static const char specials[] = "!#$%&'*+-/=?^_`{|}~";

	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && memchr(specials, c, sizeof(specials) - 1) != NULL;
}

bool
mime__is_token(uint8_t c)
{
	static const char tspecials[] = "()<>@,;:\\\"/[]?=";

	if (c <= ' ' || c >= 0x7f)
		return false;
	return memchr(tspecials, c, sizeof(tspecials) - 1) == NULL;
}

bool
mime__skip_cfws(struct mime__lex *lx, struct span *comment_r)
{
	const uint8_t *start = lx->p;

	while (lx->p < lx->end) {
		uint8_t c = *lx->p;
		const uint8_t *cstart;
		size_t depth = 1;

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			lx->p++;
			continue;
		}
		if (c != '(')
			break;
		/* RFC 5322 3.2.2: comments nest and hold quoted-pairs. The depth is a counter,
		 * never recursion, so hostile nesting costs nothing. */
		cstart = ++lx->p;
		while (lx->p < lx->end && depth > 0) {
			c = *lx->p++;
			if (c == '\\' && lx->p < lx->end)
				lx->p++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
		}
		if (comment_r != NULL) {
			comment_r->p = cstart;
			comment_r->len = (size_t)(lx->p - cstart) - (depth == 0 ? 1 : 0);
		}
	}
	return lx->p != start;
}

struct mime_str
mime__comment_text(struct mime_pool *pool, struct span raw)
{
	struct buf tmp;
	struct mime_str s;

	mime__scratch_init(&tmp, raw.len);
	for (size_t i = 0; i < raw.len; i++) {
		uint8_t o = raw.p[i];

		if (o == '\\' && i + 1 < raw.len)
			o = raw.p[++i];
		else if (o == '\r' || o == '\n')
			continue;
		(void)buf_append_byte(&tmp, o);
	}
	s = mime__str_dup(pool, tmp.data != NULL ? tmp.data : (const uint8_t *)"", tmp.len);
	buf_deinit(&tmp);
	return s;
}

void
mime__quoted_string(struct mime__lex *lx, struct buf *out)
{
	ASSERT(lx->p < lx->end && *lx->p == '"');
	lx->p++;
	while (lx->p < lx->end) {
		uint8_t c = *lx->p++;

		if (c == '"')
			return;
		if (c == '\\' && lx->p < lx->end)
			c = *lx->p++;
		else if (c == '\r' || c == '\n')
			continue; /* folding inside the quotes: the blank after it stays */
		(void)buf_append_byte(out, c);
	}
}
