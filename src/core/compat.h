/* Attributes and tiny helpers shared by every module. Included first by every header. */
#ifndef CORE_COMPAT_H
#define CORE_COMPAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ATTR_FORMAT(f, a) __attribute__((format(printf, f, a)))
#define ATTR_NORETURN __attribute__((noreturn))
#define ATTR_WUR __attribute__((warn_unused_result))
#define ATTR_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#define ATTR_UNUSED __attribute__((unused))

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* A bug, not an error: abort with a core. Never compiled out. */
#define PANIC(...) core_panic(__FILE__, __LINE__, __VA_ARGS__)
#define ASSERT(x) ((x) ? (void)0 : core_panic(__FILE__, __LINE__, "assertion failed: %s", #x))
ATTR_NORETURN ATTR_FORMAT(3, 4) void core_panic(const char *file, int line, const char *fmt, ...);

/* Allocation that dies on OOM; per-connection memory is bounded by limits instead. */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Copies exactly n bytes (which need not be NUL-terminated, e.g. a span) and adds a NUL. */
char *xmemdup0(const void *p, size_t n);
ATTR_FORMAT(1, 2) char *xasprintf(const char *fmt, ...);

/* An RFC 5322 3.3 date-time ("Mon, 07 Dec 2026 06:41:02 +0100"), in local time or in UTC
 * ("+0000"), always with English names. Not strftime: glibc's rereads the time zone file
 * (open, stat, close) at every call, which was five system calls per received message. */
#define RFC5322_DATE_SIZE 40
void rfc5322_date(char out[RFC5322_DATE_SIZE], int64_t t, bool utc);

#endif
