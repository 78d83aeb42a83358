/* bench/imap-load.c: IMAP load generator for bench/imap (plain IMAP, loopback only).
 *
 * One thread, one epoll loop, many non-blocking connections, so that on a small machine the
 * client costs far less than the server it measures. Modes:
 *   sessions  C clients, each doing complete sessions in a loop (connect, LOGIN, SELECT, FETCH
 *             flags, headers and one body, UID SEARCH, STORE, APPEND, STORE \Deleted, EXPUNGE,
 *             LOGOUT); reports complete sessions per second.
 *   commands  C clients log in once, then loop over the command mix; reports commands per
 *             second and latency p50/p99 per command type.
 *   idle      N connections log in, SELECT INBOX and IDLE; prints "ready" on stdout once all
 *             are idling and holds them until SIGTERM/SIGINT or --hold seconds.
 *   fill      APPENDs M generated messages (the same ones on every run) to each user's INBOX.
 * Every run first probes the server's capabilities with one session (LITERAL+, LITERAL-,
 * UIDPLUS, IDLE). Responses are parsed far enough to be sure of them: tagged completions,
 * literals {n} skipped by count (never by line), untagged EXISTS/EXPUNGE/SEARCH/CAPABILITY,
 * continuation requests for APPEND literals (RFC 3501 §7.5) and IDLE (RFC 2177). Tagged NO and
 * BAD are counted per command type and the first ones are printed with a transcript.
 * Everything is bounded: time, counts, line length, command timeout. Results are key=value
 * lines on stdout; progress and errors go to stderr. Exit 0 = clean run, 2 = run finished but
 * with NO/BAD/errors, 1 = usage or the probe failed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE          (1024 * 1024) /* bytes of one response line (UID SEARCH of a big box) */
#define MAX_OUT           (1024 * 1024) /* bytes queued for one connection */
#define MAX_SAMPLES       (4u << 20)    /* latency samples kept per command type */
#define TRACE_RING        4096          /* bytes of recent transcript kept per connection */
#define MAX_REPORTED      5             /* failures printed in full, with transcript */
#define TRACE_UNTAGGED    8             /* untagged responses per command in the transcript */
#define DRAIN_SECONDS     30            /* after the end, time to finish sessions and LOG OUT */
#define FETCH_HEADERS     5             /* messages per FETCH (BODY.PEEK[HEADER]) */
#define LITERAL_MINUS_MAX 4096          /* RFC 7888: LITERAL- allows {n+} up to this size */

enum mode { MODE_SESSIONS, MODE_COMMANDS, MODE_IDLE, MODE_FILL, MODE_PROBE };

enum cmd {
	CMD_LOGIN, CMD_CAPABILITY, CMD_SELECT, CMD_FETCH_FLAGS, CMD_FETCH_HEADERS, CMD_FETCH_BODY,
	CMD_SEARCH, CMD_STORE, CMD_APPEND, CMD_SEARCH_ID, CMD_STORE_DELETED, CMD_EXPUNGE, CMD_NOOP,
	CMD_IDLE, CMD_LOGOUT, CMD_COUNT,
	CMD_END /* end of a program: close, or loop */
};

static const char *const cmd_names[CMD_COUNT] = {
	"LOGIN", "CAPABILITY", "SELECT", "FETCH-FLAGS", "FETCH-HEADERS", "FETCH-BODY", "SEARCH",
	"STORE", "APPEND", "SEARCH-ID", "STORE-DELETED", "EXPUNGE", "NOOP", "IDLE", "LOGOUT",
};

/* Programs: the commands of one connection, in order. Commands mode loops from index 1. */
static const enum cmd prog_sessions[] = {
	CMD_LOGIN, CMD_SELECT, CMD_FETCH_FLAGS, CMD_FETCH_HEADERS, CMD_FETCH_BODY, CMD_SEARCH,
	CMD_STORE, CMD_APPEND, CMD_SEARCH_ID, CMD_STORE_DELETED, CMD_EXPUNGE, CMD_LOGOUT, CMD_END,
};
static const enum cmd prog_commands[] = {
	CMD_LOGIN, CMD_SELECT, CMD_FETCH_HEADERS, CMD_FETCH_BODY, CMD_SEARCH, CMD_STORE, CMD_APPEND,
	CMD_SEARCH_ID, CMD_STORE_DELETED, CMD_EXPUNGE, CMD_NOOP, CMD_END,
};
static const enum cmd prog_idle[] = {CMD_LOGIN, CMD_SELECT, CMD_IDLE, CMD_LOGOUT, CMD_END};
static const enum cmd prog_fill[] = {CMD_LOGIN, CMD_APPEND, CMD_LOGOUT, CMD_END};
static const enum cmd prog_probe[] = {CMD_LOGIN, CMD_CAPABILITY, CMD_LOGOUT, CMD_END};
static const enum cmd prog_logout[] = {CMD_LOGOUT, CMD_END};

enum conn_state {
	CS_FREE,       /* slot unused */
	CS_CONNECTING, /* connect() in progress */
	CS_GREETING,   /* waiting for "* OK" */
	CS_COMMAND,    /* a command is outstanding */
	CS_APPEND_WAIT,/* APPEND sent with a synchronising literal: waiting for "+" */
	CS_IDLE_WAIT,  /* IDLE sent: waiting for "+" */
	CS_IDLING,     /* holding in IDLE */
	CS_DONE_WAIT,  /* DONE sent: waiting for IDLE's tagged OK */
	CS_BARRIER,    /* commands mode: logged in, waiting for the others */
};

struct conn {
	int fd;
	unsigned id;              /* slot number */
	enum conn_state state;
	const enum cmd *prog;
	size_t step;              /* index into prog */
	unsigned user;            /* 0-based user number */
	unsigned tagno;           /* last tag number sent */
	char tag[16];             /* tag of the outstanding command */
	uint64_t sent_us;         /* when the outstanding command was sent (monotonic, us) */
	uint64_t deadline_us;     /* command timeout; 0 = none */
	uint64_t rng;             /* xorshift state */

	uint8_t *in;              /* received bytes not yet parsed */
	size_t in_len, in_cap;    /* bytes */
	uint64_t literal_left;    /* bytes of a server literal still to skip */
	bool continued;           /* the current response continues after a literal */
	unsigned untagged;        /* untagged responses since the command was sent */

	uint8_t *out;             /* bytes queued for the server */
	size_t out_len, out_off, out_cap;
	bool want_write;          /* EPOLLOUT registered */

	uint8_t *lit;             /* APPEND message waiting for "+" (synchronising literal) */
	size_t lit_len, lit_cap;

	/* per-command observations */
	long exists;              /* messages in the selected mailbox; -1 = unknown */
	unsigned fetch_responses; /* untagged FETCH responses since the command was sent */
	uint64_t literal_bytes;   /* literal bytes since the command was sent */
	bool saw_exists;
	bool saw_bye;
	unsigned long append_uid; /* from [APPENDUID] or the SEARCH-ID result; 0 = unknown */
	unsigned long search_uid;
	unsigned append_count;    /* fill mode: messages appended by this connection */
	unsigned msg_counter;     /* unique Message-IDs */
	unsigned cmd_errors;      /* NO/BAD/invalid answers since the connection was opened */
	bool append_failed;       /* the last APPEND was refused: nothing to delete */

	char trace[TRACE_RING];   /* ring of recent transcript lines */
	size_t trace_pos;
	bool trace_wrapped;
	bool trace_live;          /* print the transcript as it happens (--trace) */
};

struct cmd_stats {
	uint64_t n;          /* completed in the window */
	uint64_t ok, no, bad;
	uint64_t invalid;    /* OK but the response lacked what the command asks for */
	uint32_t *lat;       /* latency samples in microseconds */
	size_t lat_len, lat_cap;
};

static struct {
	enum mode mode;
	const char *host;
	unsigned port;
	const char *user_fmt;    /* "bench%u@bench.test": %u = 1..users */
	const char *password;
	unsigned users;
	unsigned clients;
	double seconds;
	unsigned long max_sessions; /* 0 = no limit */
	unsigned idle_conns;
	unsigned ramp;           /* idle: connections logging in at once */
	unsigned sources;        /* loopback source addresses 127.0.0.1 + i */
	unsigned messages;       /* fill: messages per user */
	double hold;             /* idle: seconds to hold at most */
	double cmd_timeout;      /* seconds */
	unsigned trace;          /* connections whose transcript is printed live */
	bool no_literal_plus;    /* -X literal+: act as if the server had no LITERAL+/LITERAL- */
	bool no_uidplus;         /* -X uidplus: act as if it had no UIDPLUS (ignore APPENDUID) */
	unsigned long seed;
} opt = {
	.host = "127.0.0.1", .user_fmt = "bench%u@bench.test", .password = "bench-password-1",
	.users = 1, .clients = 10, .seconds = 10, .idle_conns = 10000, .ramp = 50, .sources = 1,
	.messages = 200, .hold = 120, .cmd_timeout = 30, .seed = 1,
};

static struct {
	bool literal_plus, literal_minus, uidplus, idle;
	char text[2048];
} caps;

static struct {
	struct conn *conns;
	unsigned nconns;        /* slots */
	int ep;
	struct sockaddr_in dst;
	uint64_t t0_us;         /* window start */
	uint64_t t_end_us;      /* window end (sessions/commands) */
	uint64_t drain_end_us;
	bool window_open;
	bool ending;            /* no new sessions or cycles */
	unsigned long sessions_started;
	unsigned long sessions_done;   /* complete, every command answered OK */
	unsigned long sessions_errors; /* complete, but some command answered NO or BAD */
	unsigned long sessions_failed; /* cut short: connection, protocol or login failure */
	unsigned opened, active, idling, logged_in;
	unsigned long conn_errors, proto_errors, timeouts, closed_by_server;
	unsigned reported;
	unsigned fill_next_user;
	unsigned long appended;
	struct cmd_stats st[CMD_COUNT];
	bool ready_printed;
	uint64_t ready_us;
} g;

static volatile sig_atomic_t got_signal;

static void conn_close(struct conn *c, bool failed);
static void conn_next(struct conn *c);

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static uint64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void __attribute__((format(printf, 1, 2), noreturn))
die(const char *fmt, ...)
{
	va_list ap;

	fputs("imap-load: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);

	if (q == NULL)
		die("out of memory (%zu bytes)", n);
	return q;
}

static uint64_t
rnd(struct conn *c)
{
	uint64_t x = c->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	c->rng = x;
	return x;
}

static int
parse_ulong(const char *s, unsigned long min, unsigned long max, unsigned long *v_r)
{
	char *end;
	unsigned long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*v_r = v;
	return 0;
}

static int
parse_seconds(const char *s, double min, double max, double *v_r)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
		return -1;
	*v_r = v;
	return 0;
}

/* The user name of user u (0-based): opt.user_fmt with "%u" replaced by u + 1. */
static void
user_name(unsigned u, char *dst, size_t size)
{
	const char *p = strstr(opt.user_fmt, "%u");
	int n;

	if (p == NULL)
		n = snprintf(dst, size, "%s", opt.user_fmt);
	else
		n = snprintf(dst, size, "%.*s%u%s", (int)(p - opt.user_fmt), opt.user_fmt, u + 1,
		    p + 2);
	if (n < 0 || (size_t)n >= size)
		die("user name too long");
}

/* ------------------------------------------------------------------------------------------ */
/* transcript */

/* At most 160 bytes of p, control and 8-bit bytes as '?'; valid until the next call. */
static const char *
printable(const uint8_t *p, size_t len)
{
	static char buf[161];
	size_t i;

	if (len > sizeof(buf) - 1)
		len = sizeof(buf) - 1;
	for (i = 0; i < len; i++)
		buf[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
	buf[len] = '\0';
	return buf;
}

static void
trace_add(struct conn *c, const char *who, const uint8_t *p, size_t len)
{
	char line[240];
	size_t n, i;
	int k;

	if (len > 160)
		len = 160;
	k = snprintf(line, sizeof(line), "%s: ", who);
	n = (size_t)k;
	for (i = 0; i < len && n < sizeof(line) - 6; i++) {
		uint8_t ch = p[i];

		if (ch >= 0x20 && ch < 0x7f) {
			line[n++] = (char)ch;
		} else {
			k = snprintf(line + n, sizeof(line) - n, "\\x%02x", ch);
			n += (size_t)k;
		}
	}
	line[n++] = '\n';
	if (c->trace_live)
		fprintf(stderr, "[conn %u] %.*s", c->id, (int)n, line);
	for (i = 0; i < n; i++) {
		c->trace[c->trace_pos++] = line[i];
		if (c->trace_pos == TRACE_RING) {
			c->trace_pos = 0;
			c->trace_wrapped = true;
		}
	}
}

static void
trace_print(const struct conn *c)
{
	fprintf(stderr, "  transcript of connection %u (latest last):\n", c->id);
	if (c->trace_wrapped)
		fprintf(stderr, "    ...%.*s", (int)(TRACE_RING - c->trace_pos),
		    c->trace + c->trace_pos);
	fprintf(stderr, "%.*s", (int)c->trace_pos, c->trace);
}

static void __attribute__((format(printf, 2, 3)))
report(struct conn *c, const char *fmt, ...)
{
	va_list ap;

	if (g.reported >= MAX_REPORTED) {
		if (g.reported++ == MAX_REPORTED)
			fprintf(stderr, "imap-load: further failures are counted, not printed\n");
		return;
	}
	g.reported++;
	fprintf(stderr, "imap-load: connection %u (%s): ", c->id,
	    c->prog[c->step] < CMD_COUNT ? cmd_names[c->prog[c->step]] : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	trace_print(c);
}

/* ------------------------------------------------------------------------------------------ */
/* output */

static void
out_add(struct conn *c, const void *p, size_t len)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + len > MAX_OUT)
		die("connection %u: more than %d bytes queued", c->id, MAX_OUT);
	if (c->out_len + len > c->out_cap) {
		c->out_cap = c->out_len + len + 4096;
		c->out = xrealloc(c->out, c->out_cap);
	}
	memcpy(c->out + c->out_len, p, len);
	c->out_len += len;
}

static void
conn_watch(struct conn *c, bool write)
{
	struct epoll_event ev = {.events = EPOLLIN | (write ? EPOLLOUT : 0), .data.ptr = c};

	if (c->want_write == write)
		return;
	if (epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	c->want_write = write;
}

/* Writes what is queued; returns -1 if the connection failed (and was closed). */
static int
conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				conn_watch(c, true);
				return 0;
			}
			if (errno == EINTR)
				continue;
			g.conn_errors++;
			report(c, "send: %s", strerror(errno));
			conn_close(c, true);
			return -1;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	conn_watch(c, false);
	return 0;
}

/* Queues one command line (without CRLF) with a new tag, and starts its clock. */
static void __attribute__((format(printf, 2, 3)))
send_cmd(struct conn *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n, k;

	snprintf(c->tag, sizeof(c->tag), "a%u", ++c->tagno);
	n = snprintf(line, sizeof(line), "%s ", c->tag);
	va_start(ap, fmt);
	k = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)(n + k) >= sizeof(line) - 2)
		die("command too long");
	n += k;
	trace_add(c, "C", (const uint8_t *)line, (size_t)n);
	line[n++] = '\r';
	line[n++] = '\n';
	out_add(c, line, (size_t)n);
	c->state = CS_COMMAND;
	c->untagged = 0;
	c->fetch_responses = 0;
	c->literal_bytes = 0;
	c->saw_exists = false;
	c->sent_us = now_us();
	c->deadline_us = c->sent_us + (uint64_t)(opt.cmd_timeout * 1e6);
}

/* ------------------------------------------------------------------------------------------ */
/* messages */

static const char *const words[] = {
	"mail", "server", "queue", "message", "delivery", "report", "meeting", "tomorrow",
	"please", "review", "attached", "budget", "release", "notes", "thanks", "the", "and",
	"of", "to", "for", "with", "about", "update", "project", "question", "answer", "status",
	"weekly", "draft", "final", "invoice", "order", "ticket", "backup", "restore", "network",
};
static const char *const senders[] = {
	"Alice Example <alice@example.org>", "Bob Builder <bob@example.net>",
	"Carol <carol@example.com>", "Dave Ops <dave@ops.example>", "Eve <eve@example.org>",
	"Mallory <mallory@example.com>", "Trent Trust <trent@example.net>",
};

struct gen {
	uint8_t *p;
	size_t len, cap;
};

static void
gen_add(struct gen *b, const char *s, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2 + 1024;
		b->p = xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, s, len);
	b->len += len;
}

static void __attribute__((format(printf, 2, 3)))
gen_printf(struct gen *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		die("generated line too long");
	gen_add(b, tmp, (size_t)n);
}

/* Text of about `bytes` bytes in lines of at most 76 characters. */
static void
gen_text(struct gen *b, uint64_t *rng, size_t bytes)
{
	size_t start = b->len, col = 0;

	while (b->len - start < bytes) {
		uint64_t x = *rng;
		const char *w;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		*rng = x;
		w = words[x % (sizeof(words) / sizeof(words[0]))];
		if (col + strlen(w) + 1 > 76) {
			gen_add(b, "\r\n", 2);
			col = 0;
		} else if (col > 0) {
			gen_add(b, " ", 1);
			col++;
		}
		gen_add(b, w, strlen(w));
		col += strlen(w);
	}
	gen_add(b, "\r\n", 2);
}

static void
gen_base64(struct gen *b, uint64_t *rng, size_t bytes)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char line[78];
	size_t done = 0;

	while (done < bytes) {
		size_t i;

		for (i = 0; i < 76; i++) {
			uint64_t x = *rng;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			*rng = x;
			line[i] = tab[x & 63];
		}
		line[76] = '\r';
		line[77] = '\n';
		gen_add(b, line, 78);
		done += 57;
	}
}

/* Pre-fill message number i (0-based): the same bytes for every user, server and run. Sizes
 * are mixed: 7 in 10 small text messages (0.5-4 KB), 2 in 10 multipart/alternative (8-40 KB),
 * 1 in 10 multipart/mixed with a base64 attachment (60-120 KB). */
static void
gen_fill_message(struct gen *b, unsigned i)
{
	uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(i + 1) * 0x100000001b3ull);
	unsigned kind = i % 10;

	b->len = 0;
	gen_printf(b, "Return-Path: <list@example.org>\r\n");
	gen_printf(b, "Received: from mx.example.org (mx.example.org [192.0.2.%u])\r\n"
	    "\tby mail.bench.test with ESMTP id B%05u; Mon, 2 Mar 2026 %02u:%02u:00 +0000\r\n",
	    i % 250 + 1, i, i / 60 % 24, i % 60);
	gen_printf(b, "From: %s\r\n", senders[i % (sizeof(senders) / sizeof(senders[0]))]);
	gen_printf(b, "To: Bench User <bench@bench.test>\r\n");
	gen_printf(b, "Subject: %s %s number %u\r\n", words[i % 36], words[(i * 7) % 36], i);
	gen_printf(b, "Date: Mon, 2 Mar 2026 %02u:%02u:00 +0000\r\n", i / 60 % 24, i % 60);
	gen_printf(b, "Message-ID: <fill.%u@bench.test>\r\n", i);
	gen_printf(b, "MIME-Version: 1.0\r\n");
	if (kind < 7) {
		gen_printf(b, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
		gen_text(b, &rng, 500 + (size_t)(rng % 3500));
	} else if (kind < 9) {
		size_t part = 4000 + (size_t)(rng % 16000);

		gen_printf(b, "Content-Type: multipart/alternative; boundary=\"alt-%u\"\r\n\r\n", i);
		gen_printf(b, "This is a multi-part message in MIME format.\r\n");
		gen_printf(b, "--alt-%u\r\nContent-Type: text/plain; charset=utf-8\r\n"
		    "Content-Transfer-Encoding: 7bit\r\n\r\n", i);
		gen_text(b, &rng, part);
		gen_printf(b, "--alt-%u\r\nContent-Type: text/html; charset=utf-8\r\n\r\n", i);
		gen_printf(b, "<html><body><p>\r\n");
		gen_text(b, &rng, part);
		gen_printf(b, "</p></body></html>\r\n--alt-%u--\r\n", i);
	} else {
		gen_printf(b, "Content-Type: multipart/mixed; boundary=\"mix-%u\"\r\n\r\n", i);
		gen_printf(b, "--mix-%u\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", i);
		gen_text(b, &rng, 1500);
		gen_printf(b, "--mix-%u\r\nContent-Type: application/pdf; name=\"report-%u.pdf\"\r\n"
		    "Content-Disposition: attachment; filename=\"report-%u.pdf\"\r\n"
		    "Content-Transfer-Encoding: base64\r\n\r\n", i, i, i);
		gen_base64(b, &rng, 45000 + (size_t)(rng % 45000));
		gen_printf(b, "--mix-%u--\r\n", i);
	}
}

/* The small message APPENDed in sessions and commands mode, with a unique Message-ID. */
static void
gen_append_message(struct gen *b, struct conn *c)
{
	uint64_t rng = c->rng;

	b->len = 0;
	gen_printf(b, "From: Bench Client <client@bench.test>\r\n");
	gen_printf(b, "To: Bench User <bench@bench.test>\r\n");
	gen_printf(b, "Subject: appended by imap-load\r\n");
	gen_printf(b, "Date: Mon, 2 Mar 2026 12:00:00 +0000\r\n");
	gen_printf(b, "Message-ID: <load.%ld.%u.%u@bench.test>\r\n", (long)getpid(), c->id,
	    ++c->msg_counter);
	gen_printf(b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
	gen_text(b, &rng, 1000);
}

/* ------------------------------------------------------------------------------------------ */
/* connections */

static void
conn_open(struct conn *c)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s (raise the open-files limit?)", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (opt.sources > 1) {
		struct sockaddr_in src = {.sin_family = AF_INET};

		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->id % opt.sources));
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
			die("bind 127.0.0.%u: %s", 1 + c->id % opt.sources, strerror(errno));
	}
	c->fd = fd;
	c->state = CS_CONNECTING;
	c->step = 0;
	c->in_len = 0;
	c->literal_left = 0;
	c->continued = false;
	c->out_len = c->out_off = 0;
	c->exists = -1;
	c->saw_bye = false;
	c->append_uid = 0;
	c->cmd_errors = 0;
	c->want_write = true;
	c->sent_us = now_us();
	c->deadline_us = c->sent_us + (uint64_t)(opt.cmd_timeout * 1e6);
	g.opened++;
	g.active++;
	if (connect(fd, (struct sockaddr *)&g.dst, sizeof(g.dst)) < 0 && errno != EINPROGRESS) {
		int e = errno;

		if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			die("epoll_ctl: %s", strerror(errno));
		g.conn_errors++;
		report(c, "connect: %s", strerror(e));
		conn_close(c, true);
		return;
	}
	if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	trace_add(c, "*", (const uint8_t *)"connect", 7);
}

/* Closes the connection. `failed`: a session or idle connection that did not complete. */
static void
conn_close(struct conn *c, bool failed)
{
	if (c->fd < 0)
		return;
	epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (c->state == CS_IDLING && g.idling > 0)
		g.idling--;
	c->state = CS_FREE;
	g.active--;
	if (failed && opt.mode == MODE_SESSIONS)
		g.sessions_failed++;
	trace_add(c, "*", (const uint8_t *)(failed ? "closed (failed)" : "closed"),
	    failed ? 15 : 6);
}

static void
stats_add(enum cmd k, uint64_t lat_us)
{
	struct cmd_stats *s = &g.st[k];

	s->n++;
	if (s->lat_len < MAX_SAMPLES) {
		if (s->lat_len == s->lat_cap) {
			s->lat_cap = s->lat_cap ? s->lat_cap * 2 : 4096;
			s->lat = xrealloc(s->lat, s->lat_cap * sizeof(*s->lat));
		}
		s->lat[s->lat_len++] = lat_us > UINT32_MAX ? UINT32_MAX : (uint32_t)lat_us;
	}
}

/* Messages that FETCH and STORE pick from: the first -m of the mailbox, the pre-filled ones.
 * Only appended messages are ever expunged, and they come after those, so these sequence
 * numbers stay valid even while another client of the same user expunges. */
static unsigned long
pick_range(const struct conn *c)
{
	unsigned long n = c->exists > 0 ? (unsigned long)c->exists : 1;

	return n < opt.messages ? n : opt.messages;
}

/* A random message number among pick_range() (1-based). */
static unsigned long
pick_msg(struct conn *c)
{
	return 1 + rnd(c) % pick_range(c);
}

static void
send_append(struct conn *c, const struct gen *msg)
{
	char line[128];
	bool plus = caps.literal_plus || (caps.literal_minus && msg->len <= LITERAL_MINUS_MAX);
	int n;

	snprintf(c->tag, sizeof(c->tag), "a%u", ++c->tagno);
	n = snprintf(line, sizeof(line), "%s APPEND INBOX {%zu%s}", c->tag, msg->len,
	    plus ? "+" : "");
	trace_add(c, "C", (const uint8_t *)line, (size_t)n);
	line[n++] = '\r';
	line[n++] = '\n';
	out_add(c, line, (size_t)n);
	if (plus) {
		out_add(c, msg->p, msg->len);
		out_add(c, "\r\n", 2);
		trace_add(c, "C", (const uint8_t *)"<literal sent at once (LITERAL+)>", 33);
		c->state = CS_COMMAND;
	} else {
		if (msg->len > c->lit_cap) {
			c->lit_cap = msg->len;
			c->lit = xrealloc(c->lit, c->lit_cap);
		}
		memcpy(c->lit, msg->p, msg->len);
		c->lit_len = msg->len;
		c->state = CS_APPEND_WAIT;
	}
	c->append_uid = 0;
	c->append_failed = false;
	c->untagged = 0;
	c->fetch_responses = 0;
	c->literal_bytes = 0;
	c->sent_us = now_us();
	c->deadline_us = c->sent_us + (uint64_t)(opt.cmd_timeout * 1e6);
}

/* Sends the command of the current step (or skips it). */
static void
conn_send_step(struct conn *c)
{
	static struct gen msg;
	char user[256];
	unsigned long m;

	for (;;) {
		enum cmd k = c->prog[c->step];

		switch (k) {
		case CMD_LOGIN:
			user_name(c->user, user, sizeof(user));
			/* quoted strings; the names and password of the bench need no escapes */
			send_cmd(c, "LOGIN \"%s\" \"%s\"", user, opt.password);
			return;
		case CMD_CAPABILITY:
			send_cmd(c, "CAPABILITY");
			return;
		case CMD_SELECT:
			send_cmd(c, "SELECT INBOX");
			return;
		case CMD_FETCH_FLAGS:
			send_cmd(c, "FETCH 1:* (FLAGS)");
			return;
		case CMD_FETCH_HEADERS:
			m = pick_msg(c);
			if (pick_range(c) >= FETCH_HEADERS && m > pick_range(c) - FETCH_HEADERS + 1)
				m = pick_range(c) - FETCH_HEADERS + 1;
			send_cmd(c, "FETCH %lu:%lu (BODY.PEEK[HEADER])", m,
			    pick_range(c) >= FETCH_HEADERS ? m + FETCH_HEADERS - 1 : m);
			return;
		case CMD_FETCH_BODY:
			send_cmd(c, "FETCH %lu (BODY.PEEK[])", pick_msg(c));
			return;
		case CMD_SEARCH:
			if (rnd(c) & 1)
				send_cmd(c, "UID SEARCH UNSEEN");
			else
				send_cmd(c, "UID SEARCH FROM \"alice\"");
			return;
		case CMD_STORE:
			/* commands mode alternates, so that UNSEEN keeps finding messages */
			send_cmd(c, "STORE %lu %sFLAGS (\\Seen)", pick_msg(c),
			    opt.mode == MODE_COMMANDS && (rnd(c) & 1) ? "-" : "+");
			return;
		case CMD_APPEND:
			if (opt.mode == MODE_FILL)
				gen_fill_message(&msg, c->append_count);
			else
				gen_append_message(&msg, c);
			send_append(c, &msg);
			return;
		case CMD_SEARCH_ID:
			if (c->append_uid != 0 || c->append_failed) {
				c->step++;
				continue;
			}
			/* no APPENDUID (no UIDPLUS): find the message we appended */
			send_cmd(c, "UID SEARCH HEADER Message-ID \"<load.%ld.%u.%u@bench.test>\"",
			    (long)getpid(), c->id, c->msg_counter);
			return;
		case CMD_STORE_DELETED:
			if (c->append_failed) {
				/* reported already: skip STORE and EXPUNGE */
				c->step += 2;
				continue;
			}
			if (c->append_uid == 0) {
				report(c, "no UID for the appended message: skipping STORE and EXPUNGE");
				g.proto_errors++;
				c->step += 2;
				continue;
			}
			send_cmd(c, "UID STORE %lu +FLAGS (\\Deleted)", c->append_uid);
			return;
		case CMD_EXPUNGE:
			send_cmd(c, "EXPUNGE");
			return;
		case CMD_NOOP:
			send_cmd(c, "NOOP");
			return;
		case CMD_IDLE:
			send_cmd(c, "IDLE");
			c->state = CS_IDLE_WAIT;
			return;
		case CMD_LOGOUT:
			send_cmd(c, "LOGOUT");
			return;
		case CMD_COUNT:
		case CMD_END:
			conn_next(c);
			return;
		}
	}
}

/* The end of a program: count, then loop, reconnect or close. */
static void
conn_next(struct conn *c)
{
	switch (opt.mode) {
	case MODE_SESSIONS:
		if (g.window_open && !g.ending) {
			if (c->cmd_errors == 0)
				g.sessions_done++;
			else
				g.sessions_errors++;
		}
		conn_close(c, false);
		return;
	case MODE_COMMANDS:
		if (c->prog == prog_logout) {
			conn_close(c, false);
			return;
		}
		if (g.ending) {
			/* the cycle is complete: log out */
			c->prog = prog_logout;
			c->step = 0;
			conn_send_step(c);
			return;
		}
		c->step = 1;
		conn_send_step(c);
		return;
	case MODE_FILL:
	case MODE_IDLE:
	case MODE_PROBE:
		conn_close(c, false);
		return;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* responses */

static bool
starts_with_ci(const uint8_t *p, size_t len, const char *s)
{
	size_t n = strlen(s);

	return len >= n && strncasecmp((const char *)p, s, n) == 0;
}

static void
parse_caps(const uint8_t *p, size_t len)
{
	size_t i = 0, n;

	n = len < sizeof(caps.text) - 1 ? len : sizeof(caps.text) - 1;
	memcpy(caps.text, p, n);
	caps.text[n] = '\0';
	caps.literal_plus = caps.literal_minus = caps.uidplus = caps.idle = false;
	while (i < len) {
		size_t j = i;

		while (j < len && p[j] != ' ' && p[j] != ']')
			j++;
		if (j - i == 8 && strncasecmp((const char *)p + i, "LITERAL+", 8) == 0)
			caps.literal_plus = true;
		if (j - i == 8 && strncasecmp((const char *)p + i, "LITERAL-", 8) == 0)
			caps.literal_minus = true;
		if (j - i == 7 && strncasecmp((const char *)p + i, "UIDPLUS", 7) == 0)
			caps.uidplus = true;
		if (j - i == 4 && strncasecmp((const char *)p + i, "IDLE", 4) == 0)
			caps.idle = true;
		if (j < len && p[j] == ']')
			break;
		i = j + 1;
	}
}

/* "[CAPABILITY ...]" inside a status response text */
static void
maybe_caps_code(const uint8_t *p, size_t len)
{
	const uint8_t *q = memmem(p, len, "[CAPABILITY ", 12);

	if (q != NULL && opt.mode == MODE_PROBE)
		parse_caps(q + 12, len - (size_t)(q + 12 - p));
}

static unsigned long
parse_num(const uint8_t *p, size_t len, size_t *used_r)
{
	unsigned long v = 0;
	size_t i = 0;

	while (i < len && p[i] >= '0' && p[i] <= '9' && v < 1000000000ul)
		v = v * 10 + (unsigned long)(p[i++] - '0');
	*used_r = i;
	return v;
}

/* First segment of an untagged response ("* ..."), without "* ". */
static void
on_untagged(struct conn *c, const uint8_t *p, size_t len)
{
	size_t used;
	unsigned long n;

	if (c->state == CS_GREETING) {
		if (starts_with_ci(p, len, "OK")) {
			maybe_caps_code(p, len);
			conn_send_step(c);
			return;
		}
		g.proto_errors++;
		report(c, "greeting is not \"* OK\"");
		conn_close(c, true);
		return;
	}
	if (starts_with_ci(p, len, "BYE")) {
		c->saw_bye = true;
		return;
	}
	if (starts_with_ci(p, len, "CAPABILITY ")) {
		if (opt.mode == MODE_PROBE)
			parse_caps(p + 11, len - 11);
		return;
	}
	if (starts_with_ci(p, len, "SEARCH")) {
		if (c->prog[c->step] == CMD_SEARCH_ID && len > 7) {
			n = parse_num(p + 7, len - 7, &used);
			if (used > 0)
				c->search_uid = n;
		}
		return;
	}
	n = parse_num(p, len, &used);
	if (used == 0 || used >= len || p[used] != ' ')
		return;
	p += used + 1;
	len -= used + 1;
	if (starts_with_ci(p, len, "EXISTS")) {
		c->exists = (long)n;
		c->saw_exists = true;
	} else if (starts_with_ci(p, len, "EXPUNGE")) {
		if (c->exists > 0)
			c->exists--;
	} else if (starts_with_ci(p, len, "FETCH")) {
		c->fetch_responses++;
	}
}

/* Checks that an OK response carried what the command asks for. */
static const char *
check_ok(struct conn *c, enum cmd k)
{
	switch (k) {
	case CMD_SELECT:
		if (!c->saw_exists)
			return "no * n EXISTS";
		if (c->exists == 0 && opt.mode != MODE_IDLE)
			return "the mailbox is empty (was it pre-filled?)";
		return NULL;
	case CMD_FETCH_FLAGS:
		return c->fetch_responses == 0 ? "no * n FETCH" : NULL;
	case CMD_FETCH_HEADERS:
	case CMD_FETCH_BODY:
		if (c->fetch_responses == 0)
			return "no * n FETCH";
		return c->literal_bytes == 0 ? "no literal with the message data" : NULL;
	case CMD_SEARCH_ID:
		c->append_uid = c->search_uid;
		return c->search_uid == 0 ? "the appended message was not found" : NULL;
	default:
		return NULL;
	}
}

/* The tagged completion of the outstanding command: `p` starts after the tag and space. */
static void
on_tagged(struct conn *c, const uint8_t *p, size_t len)
{
	enum cmd k = c->prog[c->step];
	uint64_t lat = now_us() - c->sent_us;
	bool counted = g.window_open && !g.ending;
	struct cmd_stats *s = &g.st[k];
	const char *why;

	if (k >= CMD_COUNT)
		die("internal: tagged response without a command");
	if (starts_with_ci(p, len, "OK")) {
		if (k == CMD_APPEND) {
			const uint8_t *q = memmem(p, len, "[APPENDUID ", 11);

			if (q != NULL && caps.uidplus) {
				size_t used, off = (size_t)(q + 11 - p);

				parse_num(p + off, len - off, &used); /* UIDVALIDITY */
				off += used + 1;
				if (used > 0 && off < len)
					c->append_uid = parse_num(p + off, len - off, &used);
			}
			g.appended++;
			c->append_count++;
		}
		if (k == CMD_LOGIN)
			maybe_caps_code(p, len);
		why = check_ok(c, k);
		if (why != NULL) {
			s->invalid++;
			c->cmd_errors++;
			report(c, "OK, but %s", why);
		}
		s->ok++;
		if (counted && k != CMD_IDLE) /* IDLE's latency is that of its "+" */
			stats_add(k, lat);
	} else if (starts_with_ci(p, len, "NO") || starts_with_ci(p, len, "BAD")) {
		bool bad = p[0] == 'B' || p[0] == 'b';

		if (bad)
			s->bad++;
		else
			s->no++;
		c->cmd_errors++;
		report(c, "tagged %s: %s", bad ? "BAD" : "NO", printable(p, len));
		if (k == CMD_APPEND)
			c->append_failed = true;
		if (k == CMD_LOGIN || k == CMD_SELECT || k == CMD_IDLE || opt.mode == MODE_FILL) {
			/* nothing sensible can follow */
			conn_close(c, true);
			return;
		}
	} else {
		g.proto_errors++;
		report(c, "tagged response is neither OK, NO nor BAD");
		conn_close(c, true);
		return;
	}
	c->deadline_us = 0;
	if (k == CMD_LOGOUT) {
		conn_next(c);
		return;
	}
	if (k == CMD_LOGIN && opt.mode == MODE_COMMANDS && !g.window_open) {
		c->state = CS_BARRIER;
		g.logged_in++;
		c->step++;
		return;
	}
	if (opt.mode == MODE_FILL && k == CMD_APPEND && c->append_count < opt.messages)
		; /* stay on APPEND */
	else
		c->step++;
	if (c->prog[c->step] == CMD_SEARCH_ID)
		c->search_uid = 0;
	conn_send_step(c);
}

static void
on_continuation(struct conn *c)
{
	switch (c->state) {
	case CS_APPEND_WAIT:
		out_add(c, c->lit, c->lit_len);
		out_add(c, "\r\n", 2);
		trace_add(c, "C", (const uint8_t *)"<literal>", 9);
		c->state = CS_COMMAND;
		return;
	case CS_IDLE_WAIT:
		c->state = CS_IDLING;
		c->deadline_us = 0;
		g.idling++;
		stats_add(CMD_IDLE, now_us() - c->sent_us);
		return;
	default:
		g.proto_errors++;
		report(c, "unexpected continuation request");
		conn_close(c, true);
	}
}

/* One line segment (without CRLF). `first`: it starts a response. */
static void
on_segment(struct conn *c, const uint8_t *p, size_t len, bool first)
{
	size_t taglen = strlen(c->tag);

	if (!first)
		return;
	if (len >= 2 && p[0] == '*' && p[1] == ' ') {
		on_untagged(c, p + 2, len - 2);
		return;
	}
	if (len >= 1 && p[0] == '+') {
		on_continuation(c);
		return;
	}
	if (c->state != CS_GREETING && c->tag[0] != '\0' && len > taglen + 1 &&
	    memcmp(p, c->tag, taglen) == 0 && p[taglen] == ' ' &&
	    (c->state == CS_COMMAND || c->state == CS_DONE_WAIT || c->state == CS_APPEND_WAIT ||
	    c->state == CS_IDLE_WAIT)) {
		c->tag[0] = '\0';
		on_tagged(c, p + taglen + 1, len - taglen - 1);
		return;
	}
	g.proto_errors++;
	report(c, "unexpected response line");
	conn_close(c, true);
}

/* If the line ends in a literal announcement "{n}" (or "~{n}"), returns n, else -1. */
static int64_t
literal_size(const uint8_t *p, size_t len)
{
	size_t i;
	int64_t n = 0, mult = 1;

	if (len < 3 || p[len - 1] != '}')
		return -1;
	i = len - 1;
	while (i > 0 && p[i - 1] >= '0' && p[i - 1] <= '9') {
		i--;
		if (len - 1 - i > 12)
			return -1;
		n += (p[i] - '0') * mult;
		mult *= 10;
	}
	if (i == len - 1 || i == 0 || p[i - 1] != '{')
		return -1;
	return n;
}

/* Parses what is in c->in. Returns -1 if the connection was closed. */
static int
conn_parse(struct conn *c)
{
	size_t pos = 0;

	while (pos < c->in_len && c->fd >= 0) {
		uint8_t *nl;
		size_t len;
		int64_t lit;
		bool first;

		if (c->literal_left > 0) {
			size_t n = c->in_len - pos;

			if (n > c->literal_left)
				n = (size_t)c->literal_left;
			c->literal_left -= n;
			pos += n;
			continue;
		}
		nl = memchr(c->in + pos, '\n', c->in_len - pos);
		if (nl == NULL)
			break;
		len = (size_t)(nl - (c->in + pos));
		if (len > 0 && c->in[pos + len - 1] == '\r')
			len--;
		first = !c->continued;
		lit = literal_size(c->in + pos, len);
		/* The transcript keeps the first untagged responses of a command, and every
		 * other line, so that 200 lines of FETCH FLAGS do not push out the rest. */
		if (first && len >= 2 && c->in[pos] == '*' && c->in[pos + 1] == ' ')
			c->untagged++;
		if (c->trace_live || (first && c->untagged <= TRACE_UNTAGGED))
			trace_add(c, "S", c->in + pos, len);
		else if (first && c->untagged == TRACE_UNTAGGED + 1)
			trace_add(c, "S", (const uint8_t *)"... (more untagged responses)", 29);
		c->continued = lit >= 0;
		if (lit >= 0) {
			c->literal_left = (uint64_t)lit;
			c->literal_bytes += (uint64_t)lit;
		}
		on_segment(c, c->in + pos, len, first);
		pos = (size_t)(nl - c->in) + 1;
	}
	if (c->fd < 0)
		return -1;
	if (pos > 0) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
	if (c->in_len >= MAX_LINE) {
		g.proto_errors++;
		report(c, "response line longer than %d bytes", MAX_LINE);
		conn_close(c, true);
		return -1;
	}
	return 0;
}

static void
conn_readable(struct conn *c)
{
	size_t budget = 256 * 1024;

	while (budget > 0 && c->fd >= 0) {
		ssize_t n;

		if (c->in_cap - c->in_len < 4096) {
			c->in_cap = c->in_cap ? c->in_cap * 2 : 8192;
			if (c->in_cap > MAX_LINE + 65536)
				c->in_cap = MAX_LINE + 65536;
			c->in = xrealloc(c->in, c->in_cap);
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			g.conn_errors++;
			report(c, "recv: %s", strerror(errno));
			conn_close(c, true);
			return;
		}
		if (n == 0) {
			enum cmd k = c->prog[c->step];

			if (k == CMD_LOGOUT && c->saw_bye) {
				/* closed before the tagged OK: accepted, RFC 3501 §6.1.3 */
				conn_next(c);
				return;
			}
			g.closed_by_server++;
			report(c, "the server closed the connection%s",
			    c->saw_bye ? " (after * BYE)" : "");
			conn_close(c, true);
			return;
		}
		c->in_len += (size_t)n;
		budget -= (size_t)n > budget ? budget : (size_t)n;
		if (conn_parse(c) < 0)
			return;
	}
}

static void
conn_event(struct conn *c, uint32_t events)
{
	if (c->state == CS_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
			err = errno;
		if (err != 0) {
			g.conn_errors++;
			report(c, "connect: %s", strerror(err));
			conn_close(c, true);
			return;
		}
		c->state = CS_GREETING;
		conn_watch(c, false);
		c->want_write = false;
		if (!(events & EPOLLIN))
			return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_readable(c);
	if (c->fd >= 0 && c->out_off < c->out_len)
		conn_flush(c);
}

/* ------------------------------------------------------------------------------------------ */
/* the loop */

static void
on_signal(int sig)
{
	got_signal = sig;
}

static void
start_conn(unsigned i)
{
	struct conn *c = &g.conns[i];

	c->id = i;
	c->user = i % opt.users;
	c->trace_live = i < opt.trace;
	switch (opt.mode) {
	case MODE_SESSIONS:
		c->prog = prog_sessions;
		g.sessions_started++;
		break;
	case MODE_COMMANDS:
		c->prog = prog_commands;
		break;
	case MODE_IDLE:
		c->prog = prog_idle;
		break;
	case MODE_FILL:
		c->prog = prog_fill;
		c->user = g.fill_next_user++;
		c->append_count = 0;
		break;
	case MODE_PROBE:
		c->prog = prog_probe;
		break;
	}
	conn_open(c);
}

static void
check_timeouts(uint64_t t)
{
	unsigned i;

	for (i = 0; i < g.nconns; i++) {
		struct conn *c = &g.conns[i];

		if (c->fd >= 0 && c->deadline_us != 0 && t > c->deadline_us) {
			g.timeouts++;
			report(c, "no answer within %.0f s", opt.cmd_timeout);
			conn_close(c, true);
		}
	}
}

static void
release_idle(void)
{
	unsigned i;

	for (i = 0; i < g.nconns; i++) {
		struct conn *c = &g.conns[i];

		if (c->fd >= 0 && c->state == CS_IDLING) {
			out_add(c, "DONE\r\n", 6);
			trace_add(c, "C", (const uint8_t *)"DONE", 4);
			c->state = CS_DONE_WAIT;
			g.idling--;
			c->sent_us = now_us();
			c->deadline_us = c->sent_us + (uint64_t)(opt.cmd_timeout * 1e6);
			conn_flush(c);
		}
	}
}

/* Opens connections the mode asks for. Returns false when nothing remains to be done. */
static bool
schedule(uint64_t t)
{
	unsigned i;

	switch (opt.mode) {
	case MODE_SESSIONS:
		if (!g.ending && opt.max_sessions != 0 && g.sessions_started >= opt.max_sessions)
			g.ending = g.active == 0;
		for (i = 0; i < g.nconns && !g.ending; i++)
			if (g.conns[i].fd < 0 &&
			    (opt.max_sessions == 0 || g.sessions_started < opt.max_sessions))
				start_conn(i);
		return g.active > 0 || !g.ending;
	case MODE_COMMANDS:
		if (g.opened == 0)
			for (i = 0; i < g.nconns; i++)
				start_conn(i);
		if (!g.window_open && g.active > 0 && g.logged_in == g.active) {
			/* everyone is logged in: the window starts */
			g.window_open = true;
			g.t0_us = t;
			g.t_end_us = t + (uint64_t)(opt.seconds * 1e6);
			g.drain_end_us = g.t_end_us + DRAIN_SECONDS * 1000000ull;
			for (i = 0; i < g.nconns; i++)
				if (g.conns[i].fd >= 0 && g.conns[i].state == CS_BARRIER) {
					conn_send_step(&g.conns[i]);
					conn_flush(&g.conns[i]);
				}
		}
		return g.active > 0;
	case MODE_IDLE:
		while (!g.ending && g.opened < opt.idle_conns &&
		    g.active - g.idling < opt.ramp)
			start_conn(g.opened);
		if (!g.ready_printed && g.opened == opt.idle_conns && g.active == g.idling) {
			g.ready_printed = true;
			g.ready_us = t;
			printf("ready idling=%u failed=%u ramp_s=%.2f logins_per_s=%.1f\n", g.idling,
			    opt.idle_conns - g.idling, (double)(t - g.t0_us) / 1e6,
			    g.idling / ((double)(t - g.t0_us) / 1e6));
			fflush(stdout);
			fprintf(stderr, "imap-load: %u connections idling, %u failed; holding\n",
			    g.idling, opt.idle_conns - g.idling);
		}
		return g.active > 0 || (!g.ending && g.opened < opt.idle_conns);
	case MODE_FILL:
		for (i = 0; i < g.nconns && g.fill_next_user < opt.users; i++)
			if (g.conns[i].fd < 0)
				start_conn(i);
		return g.active > 0;
	case MODE_PROBE:
		return g.active > 0;
	}
	return false;
}

static void
run_loop(void)
{
	struct epoll_event evs[512];
	uint64_t t, last_check = 0;

	for (;;) {
		int n, i;

		t = now_us();
		if (got_signal && !g.ending) {
			fprintf(stderr, "imap-load: signal %d: ending\n", (int)got_signal);
			g.ending = true;
			if (g.t_end_us == 0 || t < g.t_end_us)
				g.t_end_us = t;
			g.drain_end_us = t + DRAIN_SECONDS * 1000000ull;
			if (opt.mode == MODE_IDLE)
				release_idle();
		}
		if ((opt.mode == MODE_SESSIONS || opt.mode == MODE_COMMANDS) && g.window_open &&
		    !g.ending && t >= g.t_end_us) {
			g.ending = true;
			g.drain_end_us = t + DRAIN_SECONDS * 1000000ull;
		}
		if (opt.mode == MODE_IDLE && g.ready_printed && !g.ending &&
		    t >= g.ready_us + (uint64_t)(opt.hold * 1e6)) {
			fprintf(stderr, "imap-load: held for %.0f s: releasing\n", opt.hold);
			g.ending = true;
			g.drain_end_us = t + DRAIN_SECONDS * 1000000ull;
			release_idle();
		}
		if (g.ending && g.drain_end_us != 0 && t >= g.drain_end_us) {
			unsigned k, left = 0;

			for (k = 0; k < g.nconns; k++)
				if (g.conns[k].fd >= 0) {
					left++;
					conn_close(&g.conns[k], opt.mode != MODE_SESSIONS);
				}
			fprintf(stderr, "imap-load: %u connections still busy %d s after the end: closed\n",
			    left, DRAIN_SECONDS);
			break;
		}
		if (!schedule(t))
			break;
		n = epoll_wait(g.ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), 100);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c->fd >= 0)
				conn_event(c, evs[i].events);
		}
		t = now_us();
		if (t >= last_check + 100000) {
			last_check = t;
			check_timeouts(t);
		}
	}
}

static void
setup(unsigned nconns)
{
	unsigned i;

	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (g.ep < 0)
		die("epoll_create1: %s", strerror(errno));
	g.nconns = nconns;
	g.conns = xrealloc(NULL, nconns * sizeof(*g.conns));
	memset(g.conns, 0, nconns * sizeof(*g.conns));
	for (i = 0; i < nconns; i++) {
		g.conns[i].fd = -1;
		g.conns[i].id = i;
		g.conns[i].rng = opt.seed * 0x9e3779b97f4a7c15ull + i + 1;
		g.conns[i].prog = prog_probe;
	}
}

static void
teardown(void)
{
	unsigned i;

	for (i = 0; i < g.nconns; i++) {
		free(g.conns[i].in);
		free(g.conns[i].out);
		free(g.conns[i].lit);
	}
	free(g.conns);
	close(g.ep);
	g.conns = NULL;
	g.nconns = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* results */

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct_ms(struct cmd_stats *s, double q)
{
	size_t i;

	if (s->lat_len == 0)
		return 0;
	i = (size_t)(q * (double)(s->lat_len - 1) + 0.5);
	return s->lat[i] / 1000.0;
}

static int
print_results(double window_s)
{
	uint64_t total = 0, no = 0, bad = 0, invalid = 0;
	int k;

	for (k = 0; k < CMD_COUNT; k++) {
		struct cmd_stats *s = &g.st[k];

		no += s->no;
		bad += s->bad;
		invalid += s->invalid;
		if (s->n == 0 && s->no == 0 && s->bad == 0 && s->invalid == 0)
			continue;
		qsort(s->lat, s->lat_len, sizeof(*s->lat), cmp_u32);
		if (k != CMD_IDLE && k != CMD_LOGOUT && k != CMD_LOGIN && k != CMD_CAPABILITY)
			total += s->n;
		printf("cmd type=%s n=%" PRIu64 " per_s=%.1f p50_ms=%.2f p99_ms=%.2f no=%" PRIu64
		    " bad=%" PRIu64 " invalid=%" PRIu64 "\n", cmd_names[k], s->n,
		    window_s > 0 ? s->n / window_s : 0, pct_ms(s, 0.50), pct_ms(s, 0.99), s->no,
		    s->bad, s->invalid);
	}
	if (opt.mode == MODE_SESSIONS)
		printf("sessions done=%lu per_s=%.2f with_errors=%lu with_errors_per_s=%.2f failed=%lu "
		    "seconds=%.2f clients=%u\n", g.sessions_done,
		    window_s > 0 ? g.sessions_done / window_s : 0, g.sessions_errors,
		    window_s > 0 ? g.sessions_errors / window_s : 0, g.sessions_failed, window_s,
		    opt.clients);
	if (opt.mode == MODE_COMMANDS)
		printf("commands total=%" PRIu64 " per_s=%.1f seconds=%.2f clients=%u\n", total,
		    window_s > 0 ? total / window_s : 0, window_s, opt.clients);
	if (opt.mode == MODE_FILL)
		printf("fill appended=%lu users=%u messages=%u\n", g.appended, opt.users,
		    opt.messages);
	printf("errors no=%" PRIu64 " bad=%" PRIu64 " invalid=%" PRIu64 " connect=%lu protocol=%lu"
	    " timeout=%lu closed_by_server=%lu\n", no, bad, invalid, g.conn_errors, g.proto_errors,
	    g.timeouts, g.closed_by_server);
	fflush(stdout);
	return (no || bad || invalid || g.conn_errors || g.proto_errors || g.timeouts ||
	    g.closed_by_server) ? 2 : 0;
}

/* ------------------------------------------------------------------------------------------ */

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
	    "usage: imap-load MODE -p PORT [options]\n"
	    "MODE: sessions | commands | idle | fill\n"
	    "  -p PORT       IMAP port on -H (default host 127.0.0.1; loopback only)\n"
	    "  -u FORMAT     user name, %%u = 1..users (default bench%%u@bench.test)\n"
	    "  -w PASSWORD   (default bench-password-1)\n"
	    "  -U USERS      users; connection i logs in as user i %% USERS (default 1)\n"
	    "  -c CLIENTS    concurrent clients, sessions/commands/fill (default 10)\n"
	    "  -t SECONDS    measuring window, sessions/commands (default 10, at most 600)\n"
	    "  -n SESSIONS   sessions: stop after this many sessions (default no limit)\n"
	    "  -N CONNS      idle: connections to hold (default 10000)\n"
	    "  -r RAMP       idle: connections logging in at once (default 50)\n"
	    "  -s SOURCES    source addresses 127.0.0.1 .. 127.0.0.SOURCES (default 1)\n"
	    "  -m MESSAGES   fill: messages per user; sessions/commands: FETCH and STORE pick\n"
	    "                among the first MESSAGES (default 200)\n"
	    "  -h SECONDS    idle: hold at most this long after \"ready\" (default 120)\n"
	    "  -T SECONDS    command timeout (default 30)\n"
	    "  -v N          print the transcript of the first N connections (default 0)\n"
	    "  -X LIST       ignore capabilities, to test the fallbacks: literal+,uidplus\n");
	exit(1);
}

static void
raise_nofile(unsigned need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur >= need)
		return;
	rl.rlim_cur = need;
	if (rl.rlim_max < need)
		rl.rlim_max = need; /* works as root */
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("cannot raise the open-files limit to %u: %s (run as root or ulimit -n)", need,
		    strerror(errno));
}

int
main(int argc, char **argv)
{
	unsigned long v;
	double d;
	int ch, rc;
	unsigned nconns;
	struct in_addr a;
	struct sockaddr_in dst = {0};

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "sessions") == 0)
		opt.mode = MODE_SESSIONS;
	else if (strcmp(argv[1], "commands") == 0)
		opt.mode = MODE_COMMANDS;
	else if (strcmp(argv[1], "idle") == 0)
		opt.mode = MODE_IDLE;
	else if (strcmp(argv[1], "fill") == 0)
		opt.mode = MODE_FILL;
	else
		usage();
	optind = 2;
	while ((ch = getopt(argc, argv, "H:p:u:w:U:c:t:n:N:r:s:m:h:T:v:X:")) != -1) {
		switch (ch) {
		case 'H': opt.host = optarg; break;
		case 'p':
			if (parse_ulong(optarg, 1, 65535, &v) < 0)
				die("-p: a port number");
			opt.port = (unsigned)v;
			break;
		case 'u': opt.user_fmt = optarg; break;
		case 'w': opt.password = optarg; break;
		case 'U':
			if (parse_ulong(optarg, 1, 100000, &v) < 0)
				die("-U: 1 to 100000");
			opt.users = (unsigned)v;
			break;
		case 'c':
			if (parse_ulong(optarg, 1, 10000, &v) < 0)
				die("-c: 1 to 10000");
			opt.clients = (unsigned)v;
			break;
		case 't':
			if (parse_seconds(optarg, 0.1, 600, &d) < 0)
				die("-t: 0.1 to 600 seconds");
			opt.seconds = d;
			break;
		case 'n':
			if (parse_ulong(optarg, 1, 100000000, &v) < 0)
				die("-n: a count");
			opt.max_sessions = v;
			break;
		case 'N':
			if (parse_ulong(optarg, 1, 200000, &v) < 0)
				die("-N: 1 to 200000");
			opt.idle_conns = (unsigned)v;
			break;
		case 'r':
			if (parse_ulong(optarg, 1, 10000, &v) < 0)
				die("-r: 1 to 10000");
			opt.ramp = (unsigned)v;
			break;
		case 's':
			if (parse_ulong(optarg, 1, 250, &v) < 0)
				die("-s: 1 to 250");
			opt.sources = (unsigned)v;
			break;
		case 'm':
			if (parse_ulong(optarg, 1, 1000000, &v) < 0)
				die("-m: a count");
			opt.messages = (unsigned)v;
			break;
		case 'h':
			if (parse_seconds(optarg, 0, 3600, &d) < 0)
				die("-h: 0 to 3600 seconds");
			opt.hold = d;
			break;
		case 'T':
			if (parse_seconds(optarg, 1, 600, &d) < 0)
				die("-T: 1 to 600 seconds");
			opt.cmd_timeout = d;
			break;
		case 'v':
			if (parse_ulong(optarg, 0, 1000000, &v) < 0)
				die("-v: a count");
			opt.trace = (unsigned)v;
			break;
		case 'X':
			if (strstr(optarg, "literal+") != NULL)
				opt.no_literal_plus = true;
			if (strstr(optarg, "uidplus") != NULL)
				opt.no_uidplus = true;
			if (!opt.no_literal_plus && !opt.no_uidplus)
				die("-X: literal+ and/or uidplus");
			break;
		default:
			usage();
		}
	}
	if (optind != argc || opt.port == 0)
		usage();
	if (inet_pton(AF_INET, opt.host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127)
		die("-H: an address in 127.0.0.0/8 (this tool only talks to loopback)");
	dst.sin_family = AF_INET;
	dst.sin_port = htons((uint16_t)opt.port);
	dst.sin_addr = a;
	g.dst = dst;
	signal(SIGPIPE, SIG_IGN);

	/* the probe: one session, to learn the capabilities after login */
	{
		enum mode m = opt.mode;
		unsigned trace = opt.trace;

		opt.mode = MODE_PROBE;
		setup(1);
		g.conns[0].trace_live = trace > 0;
		g.conns[0].prog = prog_probe;
		g.conns[0].user = 0;
		conn_open(&g.conns[0]);
		run_loop();
		if (g.st[CMD_CAPABILITY].ok == 0 || g.st[CMD_LOGOUT].ok == 0) {
			fprintf(stderr, "imap-load: the probe session (LOGIN, CAPABILITY, LOGOUT) on "
			    "127.0.0.1:%u failed\n", opt.port);
			if (g.reported == 0)
				trace_print(&g.conns[0]);
			return 1;
		}
		teardown();
		memset(&g, 0, sizeof(g));
		g.dst = dst;
		opt.mode = m;
		opt.trace = trace;
	}
	if (opt.no_literal_plus)
		caps.literal_plus = caps.literal_minus = false;
	if (opt.no_uidplus)
		caps.uidplus = false;
	printf("caps literal_plus=%d literal_minus=%d uidplus=%d idle=%d\n", caps.literal_plus,
	    caps.literal_minus, caps.uidplus, caps.idle);
	fprintf(stderr, "imap-load: capabilities after login: %s\n", caps.text);
	if (opt.mode == MODE_IDLE && !caps.idle)
		die("the server does not advertise IDLE");

	nconns = opt.mode == MODE_IDLE ? opt.idle_conns : opt.clients;
	raise_nofile(nconns + 64);
	setup(nconns);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	g.t0_us = now_us();
	if (opt.mode == MODE_SESSIONS) {
		g.window_open = true;
		g.t_end_us = g.t0_us + (uint64_t)(opt.seconds * 1e6);
	}
	if (opt.mode == MODE_FILL || opt.mode == MODE_IDLE) {
		g.window_open = true;
		g.t_end_us = UINT64_MAX;
	}
	run_loop();
	{
		uint64_t end = g.t_end_us != 0 && g.t_end_us != UINT64_MAX ? g.t_end_us : now_us();
		uint64_t start = g.t0_us;

		if (opt.mode == MODE_IDLE) {
			printf("released seconds_held=%.1f\n",
			    g.ready_us ? (double)(now_us() - g.ready_us) / 1e6 : 0.0);
			start = g.t0_us;
		}
		if (opt.mode == MODE_SESSIONS && opt.max_sessions != 0 && g.sessions_done > 0 &&
		    end > now_us())
			end = now_us();
		rc = print_results(end > start ? (double)(end - start) / 1e6 : 0);
	}
	if (opt.mode == MODE_IDLE && !g.ready_printed) {
		fprintf(stderr, "imap-load: not all %u connections reached IDLE\n", opt.idle_conns);
		rc = 2;
	}
	teardown();
	return rc;
}
