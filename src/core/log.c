/* key=value logging to stderr or syslog; see log.h. */
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_level log_min_level = LOG_LEVEL_INFO;
static const char *log_ident = "postamt";
static bool log_to_syslog;

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};

void
log_init(const char *ident)
{
	log_ident = ident;
}

int
log_set_target(const char *target, const char **error_r)
{
	if (strcmp(target, "stderr") == 0) {
		if (log_to_syslog)
			closelog();
		log_to_syslog = false;
		return 0;
	}
	if (strcmp(target, "syslog") == 0) {
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
		log_to_syslog = true;
		return 0;
	}
	*error_r = "log target must be stderr or syslog";
	return -1;
}

int
log_level_parse(const char *s, enum log_level *r)
{
	for (size_t i = 0; i < N_ELEMENTS(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void
log_set_level(enum log_level level)
{
	log_min_level = level;
}

void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const int syslog_prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT};
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t off = 0;
	int n, saved_errno = errno;

	if (level < log_min_level)
		return;
	if (log_to_syslog) {
		n = snprintf(line, sizeof(line), "%s ", level_names[level]);
		if (n > 0)
			vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		syslog(syslog_prio[level], "%s", line);
		errno = saved_errno;
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s[%ld] ",
	             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	             ts.tv_nsec / 1000000, level_names[level], log_ident, (long)getpid());
	if (n > 0)
		off = (size_t)n;
	n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
	if (n > 0)
		off += MIN((size_t)n, sizeof(line) - off - 2);
	line[off++] = '\n';
	/* One write per line so that lines from several threads never interleave. */
	if (write(STDERR_FILENO, line, off) < 0) {
		/* nowhere left to report it */
	}
	errno = saved_errno;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void
log_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_FATAL, fmt, ap);
	va_end(ap);
	exit(1);
}

char *
log_sanitize(char dst[LOG_SANITIZE_SIZE], const void *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *s = src;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = s[i];
		bool plain = c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=';

		if (o + (plain ? 1 : 4) > LOG_MAX_FIELD) {
			memcpy(dst + o, "...", 3);
			o += 3;
			break;
		}
		if (plain) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}

char *
log_sanitize_str(char dst[LOG_SANITIZE_SIZE], const char *src)
{
	return log_sanitize(dst, src, strlen(src));
}
