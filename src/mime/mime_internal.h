/* Shared inside src/mime only (mime__ prefix): the tree container, pool string helpers, ASCII
 * helpers and the RFC 5322 lexical primitives (CFWS, quoted strings, atoms) that the header
 * and address parsers share. Not an API: other modules use mime.h and mime_header.h. */
#ifndef MIME_MIME_INTERNAL_H
#define MIME_MIME_INTERNAL_H

#include "mime/mime.h"

/* A root part lives inside this, allocated from its own pool, so that mime_part_free() can find
 * the pool from the root alone. */
struct mime__tree {
	uint32_t magic; /* MIME__TREE_MAGIC: catches mime_part_free() on a non-root */
	struct mime_pool *pool;
	struct mime_part root;
};

#define MIME__TREE_MAGIC 0x6d696d65u

/* A new empty tree (root zeroed, in a fresh pool). */
struct mime__tree *mime__tree_new(void);
/* Octets allocated from the pool so far (to account kept bytes). */
size_t mime__pool_used(const struct mime_pool *pool);

/* A copy of p[0..len) in the pool, NUL-terminated. */
struct mime_str mime__str_dup(struct mime_pool *pool, const void *p, size_t len);
/* The same, lowercased (ASCII only). */
struct mime_str mime__str_dup_lower(struct mime_pool *pool, const void *p, size_t len);

uint8_t mime__lower(uint8_t c);
/* The value of a hex digit, or -1. */
int mime__hex_val(uint8_t c);
/* n octets of p equal the ASCII string s (length n), ignoring ASCII case only: header names and
 * tokens must not be compared through a locale. */
bool mime__eq_ci(const void *p, const char *s, size_t n);
/* p[0..len) is the whole of s, ignoring ASCII case. */
bool mime__span_is(const void *p, size_t len, const char *s);

/* ---- RFC 5322 3.2 lexical primitives over [p, end) ----------------------------------------- */

struct mime__lex {
	const uint8_t *p;
	const uint8_t *end;
};

static inline bool
mime__is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* Blanks, line breaks and (nested) comments: RFC 5322 3.2.2 CFWS. When comment_r is not NULL it
 * gets the inside of the last comment skipped, as written (untouched if there was none). An
 * unterminated comment runs to the end. Returns true when anything was skipped. */
bool mime__skip_cfws(struct mime__lex *lx, struct span *comment_r);
/* The text of a comment from mime__skip_cfws(): quoted-pairs unescaped, line breaks dropped. */
struct mime_str mime__comment_text(struct mime_pool *pool, struct span raw);
/* At a '"': appends the unescaped content of the quoted string to out and moves past the
 * closing quote (or to the end when unterminated; line breaks inside are dropped, RFC 5322
 * 3.2.4 FWS). */
void mime__quoted_string(struct mime__lex *lx, struct buf *out);
/* RFC 5322 3.2.3 atext, with octets >= 0x80 admitted (RFC 6532 3.2). */
bool mime__is_atext(uint8_t c);
/* RFC 2045 5.1 token octet: US-ASCII printable except SPACE and tspecials. */
bool mime__is_token(uint8_t c);

/* A scratch buffer for one header value: never larger than the input it is built from, so its
 * max is the input length plus a little. */
void mime__scratch_init(struct buf *b, size_t input_len);

#endif
