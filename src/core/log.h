/* Logging: one line per event, key=value, to stderr or syslog.
 *
 *   2026-11-23T11:49:18.123Z info postamt[812] sid=3f9a1c event=connect rip=203.0.113.5
 *
 * The message text is written by the caller as key=value pairs. Anything a client sent goes
 * through log_sanitize() first; passwords and AUTH payloads are never logged. Thread-safe: every
 * line is written with one write(2). */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include "core/compat.h"
#include "core/limits.h"
#include <stdarg.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
	LOG_LEVEL_FATAL,
};

extern enum log_level log_min_level;

/* ident is borrowed and must live as long as logging is used. */
void log_init(const char *ident);
/* target: "stderr" or "syslog". */
ATTR_WUR int log_set_target(const char *target, const char **error_r);
ATTR_WUR int log_level_parse(const char *s, enum log_level *r);
void log_set_level(enum log_level level);

ATTR_FORMAT(2, 3) void log_msg(enum log_level level, const char *fmt, ...);
ATTR_FORMAT(2, 0) void log_vmsg(enum log_level level, const char *fmt, va_list ap);
ATTR_NORETURN ATTR_FORMAT(1, 2) void log_fatal(const char *fmt, ...);

/* The level is checked before any argument is formatted. */
#define log_debug(...) do { if (log_min_level <= LOG_LEVEL_DEBUG) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) do { if (log_min_level <= LOG_LEVEL_INFO) log_msg(LOG_LEVEL_INFO, __VA_ARGS__); } while (0)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Size of a buffer that holds any sanitised field. */
#define LOG_SANITIZE_SIZE (LOG_MAX_FIELD + 8)

/* Copies untrusted bytes into dst so that they are safe inside one key=value field: control
 * characters, space, quote, backslash, '=' and bytes >= 0x7f become \xNN, and the result is
 * truncated to LOG_MAX_FIELD bytes with a trailing "..." marker. Returns dst. */
char *log_sanitize(char dst[LOG_SANITIZE_SIZE], const void *src, size_t len);
char *log_sanitize_str(char dst[LOG_SANITIZE_SIZE], const char *src);

#endif
