/* Owning byte buffers with a hard maximum, non-owning spans, and safe string helpers.
 *
 * struct buf never grows past `max`: an append that would is refused, returns -1 and sets the
 * sticky `err`, so a sequence of appends can be checked once at the end. Memory is malloc'ed
 * and freed with buf_deinit(). */
#ifndef CORE_BUF_H
#define CORE_BUF_H

#include "core/compat.h"
#include <stdarg.h>

struct buf {
	uint8_t *data; /* NUL-terminated for convenience when len < cap */
	size_t len;    /* bytes used */
	size_t cap;    /* bytes allocated */
	size_t max;    /* hard ceiling on len, bytes */
	int err;       /* sticky: set when an append was refused */
};

struct span {
	const uint8_t *p;
	size_t len;
};

#define SPAN_LIT(s) ((struct span){(const uint8_t *)(s), sizeof(s) - 1})
#define SPAN_STR(s) ((struct span){(const uint8_t *)(s), strlen(s)})

void buf_init(struct buf *b, size_t max);
void buf_deinit(struct buf *b);
/* Wipes the contents (secrets) before freeing. */
void buf_deinit_secure(struct buf *b);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_append_str(struct buf *b, const char *s);
int buf_append_byte(struct buf *b, uint8_t c);
ATTR_FORMAT(2, 3) int buf_printf(struct buf *b, const char *fmt, ...);
ATTR_FORMAT(2, 0) int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* The contents as a C string; valid until the next change of b. */
const char *buf_cstr(struct buf *b);

bool span_eq_ci(struct span a, const char *s);
bool span_eq(struct span a, const char *s);

/* Copies src into dst of size dstsize; returns -1 (and a truncated, terminated dst) when it
 * does not fit. */
ATTR_WUR int str_copy(char *dst, size_t dstsize, const char *src);
/* Parses a whole decimal string into *r; -1 on empty input, junk, sign or overflow. */
ATTR_WUR int str_to_u64(const char *s, uint64_t *r);
ATTR_WUR int str_to_uint(const char *s, unsigned int *r);
void str_lower(char *s);
bool str_has_prefix(const char *s, const char *prefix);
/* Trims ASCII whitespace in place; returns s advanced past leading whitespace. */
char *str_trim(char *s);
/* Constant-time comparison of two byte strings of the same length. */
bool mem_equal_ct(const void *a, const void *b, size_t len);

#endif
