/* The SMTP client of outbound delivery: one connection, several messages (RFC 5321).
 *
 * Invariants: a recipient's result is final only after the peer's reply to the end of the data
 * (or its RCPT rejection); a connection that breaks before that leaves the accepted recipients
 * with code 0 (temporary), so the queue tries them again: a message may be delivered twice,
 * never lost. Bytes the peer sent before STARTTLS completes are discarded (RFC 3207 6). Timeouts
 * follow RFC 5321 4.5.3.2 (one command timeout, the longer one for the final dot).
 * The client is freed as a fresh event after closed(), never inside its own callbacks. */
#include "smtp/smtp_client.h"

#include "core/base64.h"
#include "core/log.h"
#include "mime/mime_7bit.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Output queued while streaming a message before reading more of its file, bytes. */
#define SMTP_CLIENT_OUT_HIGH (256 * 1024)
/* The write callback asks for more when the output drops to this, bytes. */
#define SMTP_CLIENT_OUT_LOW (64 * 1024)

/* ---- Reply parser ----------------------------------------------------------------------- */

int
smtp_reply_parse(const uint8_t *data, size_t len, struct smtp_reply *r)
{
	size_t pos = 0;
	unsigned int code = 0;

	r->code = 0;
	r->nlines = 0;
	for (;;) {
		const uint8_t *nl, *line = data + pos;
		size_t avail = len - pos, linelen, textlen;
		unsigned int c;
		bool last;

		nl = avail > 0 ? memchr(line, '\n', avail) : NULL;
		if (nl == NULL)
			return len >= SMTP_REPLY_MAX_BYTES ? -1 : 0;
		linelen = (size_t)(nl - line); /* without LF */
		if (pos + linelen + 1 > SMTP_REPLY_MAX_BYTES)
			return -1;
		textlen = linelen > 0 && line[linelen - 1] == '\r' ? linelen - 1 : linelen;
		if (textlen < 3)
			return -1;
		for (int i = 0; i < 3; i++) {
			if (line[i] < '0' || line[i] > '9')
				return -1;
		}
		c = (unsigned int)(line[0] - '0') * 100 + (unsigned int)(line[1] - '0') * 10 +
		    (unsigned int)(line[2] - '0');
		if (c < 200 || c > 599)
			return -1;
		if (code != 0 && c != code)
			return -1; /* RFC 5321 4.2.1: every line of a reply has the same code */
		code = c;
		if (textlen == 3 || line[3] == ' ')
			last = true;
		else if (line[3] == '-')
			last = false;
		else
			return -1;
		for (size_t i = 3; i < textlen; i++) {
			if (line[i] == '\0' || line[i] == '\r')
				return -1;
		}
		if (r->nlines < SMTP_REPLY_MAX_LINES) {
			r->lines[r->nlines].p = textlen > 4 ? line + 4 : line + textlen;
			r->lines[r->nlines].len = textlen > 4 ? textlen - 4 : 0;
			r->nlines++;
		}
		pos += linelen + 1;
		if (last) {
			r->code = code;
			return (int)pos;
		}
	}
}

/* ---- Client ----------------------------------------------------------------------------- */

enum sc_state {
	SC_CONNECT,
	SC_GREETING,
	SC_EHLO,
	SC_HELO,
	SC_STARTTLS,
	SC_HANDSHAKE,
	SC_AUTH,
	SC_MAIL,
	SC_RCPT,
	SC_DATA,
	SC_BODY,
	SC_DOT,
	SC_SKIP, /* pipelined replies to discard after a refused MAIL or an empty DATA */
	SC_RSET,
	SC_QUIT,
	SC_CLOSED,
};

struct smtp_client {
	struct event_base *base;
	struct bufferevent *bev;
	struct smtp_client_options opts;
	struct smtp_client_callbacks cb;
	void *ctx;
	enum sc_state state;
	bool esmtp, ext_size, ext_8bitmime, ext_smtputf8, ext_dsn, ext_starttls, ext_auth_plain;
	bool ext_pipelining, ext_chunking;
	bool bdat;           /* this transaction sends BDAT (RFC 3030) instead of DATA */
	uint64_t body_left;  /* BDAT: bytes of the chunk still to send from the file */
	bool body_add_crlf;  /* the file does not end with CRLF: one is sent after it */
	char **names;        /* copy of opts.verify_names */
	int conv_fd;         /* the message converted to 7 bits (a memfd), or -1 */
	uint64_t conv_size;
	bool pipelined;      /* this transaction's MAIL, RCPTs and DATA went out together */
	size_t skip;         /* SC_SKIP: replies still to discard, count */
	bool tls_active;
	bool delivered_any;
	/* The message in progress. */
	struct smtp_client_msg *msg;
	bool *accepted;      /* per recipient: 250 to RCPT, waiting for the data's reply */
	size_t rcpt_i;       /* next RCPT to answer */
	size_t naccepted;    /* count */
	int fd;              /* the blob being sent, or -1 */
	bool at_line_start;  /* dot-stuffing state across reads */
	bool last_was_lf;
	char reason[256];    /* why the connection failed */
	char peer[300];      /* copy of opts.peer_name */
};

static void sc_read_cb(struct bufferevent *bev, void *arg);
static void sc_write_cb(struct bufferevent *bev, void *arg);
static void sc_event_cb(struct bufferevent *bev, short what, void *arg);

static void
sc_timeouts(struct smtp_client *c, uint64_t read_ms)
{
	struct timeval rtv = {(time_t)(read_ms / 1000), (suseconds_t)(read_ms % 1000) * 1000};
	struct timeval wtv = {(time_t)(c->opts.command_timeout / 1000),
	                      (suseconds_t)(c->opts.command_timeout % 1000) * 1000};

	bufferevent_set_timeouts(c->bev, read_ms != 0 ? &rtv : NULL, &wtv);
}

/* The reply's first line as printable text, for results and logs. */
static void
sc_reply_text(const struct smtp_reply *r, char *dst, size_t size)
{
	size_t n = 0;

	n = (size_t)snprintf(dst, size, "%u ", r->code);
	if (n >= size)
		return;
	if (r->nlines > 0) {
		const struct span *l = &r->lines[0];

		for (size_t i = 0; i < l->len && n + 1 < size; i++) {
			uint8_t ch = l->p[i];

			dst[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
		}
	}
	dst[n] = '\0';
}

static void
sc_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;

	(void)fd;
	(void)what;
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->fd >= 0)
		close(c->fd);
	if (c->conv_fd >= 0)
		close(c->conv_fd);
	free(c->accepted);
	for (size_t i = 0; c->names != NULL && c->names[i] != NULL; i++)
		free(c->names[i]);
	free(c->names);
	free(c);
}

/* Ends the message in progress: every recipient without a final answer gets code, text. */
static void
sc_msg_finish(struct smtp_client *c, unsigned int code, const char *text)
{
	struct smtp_client_msg *msg = c->msg;

	if (msg == NULL)
		return;
	for (size_t i = 0; i < msg->nrcpts; i++) {
		struct smtp_client_rcpt *rc = &msg->rcpts[i];

		if (i >= c->rcpt_i || c->accepted[i]) {
			rc->code = code;
			(void)snprintf(rc->reply, sizeof(rc->reply), "%s", text);
		}
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	free(c->accepted);
	c->accepted = NULL;
	c->msg = NULL;
	c->cb.msg_done(msg, c->ctx);
}

/* Closes the connection: the message in progress gets a temporary result, closed() is called
 * and the client is freed on a fresh event. reason NULL: normal end. */
static void
sc_close(struct smtp_client *c, const char *reason)
{
	if (c->state == SC_CLOSED)
		return;
	if (reason != NULL) {
		char safe[LOG_SANITIZE_SIZE];

		(void)!str_copy(c->reason, sizeof(c->reason), reason); /* truncated if long */
		log_info("event=smtp_client_fail peer=%s reason=\"%s\"", c->opts.peer_name,
		         log_sanitize_str(safe, c->reason));
		sc_msg_finish(c, 0, c->reason);
	}
	c->state = SC_CLOSED;
	if (c->bev != NULL)
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	c->cb.closed(reason != NULL ? c->reason : NULL, c->delivered_any, c->ctx);
	if (event_base_once(c->base, -1, EV_TIMEOUT, sc_free_cb, c, NULL) < 0)
		PANIC("event_base_once failed");
}

ATTR_FORMAT(3, 4) static void
sc_send(struct smtp_client *c, enum sc_state next, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	va_list ap;

	va_start(ap, fmt);
	(void)evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	(void)evbuffer_add(out, "\r\n", 2);
	c->state = next;
	sc_timeouts(c, c->opts.command_timeout);
}

static bool
sc_has_8bit(const char *s)
{
	for (; s != NULL && *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return true;
	}
	return false;
}

/* The RCPT command of recipient i, without CRLF. */
static void
sc_rcpt_cmd(const struct smtp_client *c, size_t i, struct buf *cmd)
{
	const struct smtp_client_rcpt *rc = &c->msg->rcpts[i];

	(void)buf_printf(cmd, "RCPT TO:<%s>", rc->address);
	if (c->ext_dsn && rc->notify != NULL && rc->notify[0] != '\0')
		(void)buf_printf(cmd, " NOTIFY=%s", rc->notify);
	if (c->ext_dsn && rc->orcpt != NULL && rc->orcpt[0] != '\0')
		(void)buf_printf(cmd, " ORCPT=%s", rc->orcpt);
}

static void
sc_send_rcpt(struct smtp_client *c)
{
	struct buf cmd;

	buf_init(&cmd, 2048);
	sc_rcpt_cmd(c, c->rcpt_i, &cmd);
	sc_send(c, SC_RCPT, "%s", cmd.err == 0 ? buf_cstr(&cmd) : "RCPT TO:<>");
	buf_deinit(&cmd);
}

/* RFC 2920: MAIL, every RCPT and DATA in one write; the replies come back in order. */
static void
sc_send_pipelined(struct smtp_client *c, const char *mail)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);

	c->pipelined = true;
	(void)evbuffer_add_printf(out, "%s\r\n", mail);
	for (size_t i = 0; i < c->msg->nrcpts; i++) {
		struct buf cmd;

		buf_init(&cmd, 2048);
		sc_rcpt_cmd(c, i, &cmd);
		(void)evbuffer_add_printf(out, "%s\r\n", cmd.err == 0 ? buf_cstr(&cmd) :
		                                                          "RCPT TO:<>");
		buf_deinit(&cmd);
	}
	if (c->bdat) {
		/* BDAT goes out after the RCPT replies: its data cannot be taken back. */
		c->state = SC_MAIL;
		sc_timeouts(c, c->opts.command_timeout);
		return;
	}
	sc_send(c, SC_MAIL, "DATA");
}

/* The length of a leading Return-Path field (added at acceptance; the receiving MTA adds its
 * own at final delivery, RFC 5321 4.4) with its continuation lines (RFC 5322 2.2.3), or 0. */
static size_t
sc_return_path_len(const uint8_t *head, size_t n)
{
	const uint8_t *q = head, *end = head + n;

	if (n < 12 || strncasecmp((const char *)head, "Return-Path:", 12) != 0)
		return 0;
	for (;;) {
		const uint8_t *nl = memchr(q, '\n', (size_t)(end - q));

		if (nl == NULL)
			return n;
		q = nl + 1;
		if (q >= end || (*q != ' ' && *q != '\t'))
			return (size_t)(q - head);
	}
}

/* The peer has no 8BITMIME (RFC 6152 3): an 8-bit message goes as its 7-bit equivalent
 * (c->conv_fd), a clean one as it is. -1 with why (a permanent reply) when it cannot go. */
static int
sc_prepare_7bit(struct smtp_client *c, const struct smtp_client_msg *msg, char *why,
                size_t whylen)
{
	struct buf in, out;
	enum mime_7bit_result res;
	uint8_t chunk[65536];
	size_t skip;
	int fd = msg->open(msg->open_arg), ret = 0;

	if (fd < 0) {
		(void)snprintf(why, whylen, "cannot open the message file");
		return -2;
	}
	buf_init(&in, SIZE_MAX / 2);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -2 : 0;
			break;
		}
		(void)buf_append(&in, chunk, (size_t)n);
	}
	close(fd);
	if (ret < 0 || in.err != 0) {
		buf_deinit(&in);
		(void)snprintf(why, whylen, "cannot read the message file");
		return -2;
	}
	skip = sc_return_path_len(in.data, in.len);
	buf_init(&out, (in.len - skip) * 4 + 65536);
	res = mime_to_7bit(in.data + skip, in.len - skip, &out);
	buf_deinit(&in);
	switch (res) {
	case MIME_7BIT_CLEAN:
		break;
	case MIME_7BIT_CONVERTED:
		c->conv_fd = memfd_create("postamt-7bit", MFD_CLOEXEC);
		if (c->conv_fd < 0 || write(c->conv_fd, out.data, out.len) != (ssize_t)out.len) {
			(void)snprintf(why, whylen, "cannot keep the converted message");
			ret = -2;
			break;
		}
		c->conv_size = out.len;
		break;
	case MIME_7BIT_HEADERS:
		(void)snprintf(why, whylen, "554 5.6.7 the message has 8-bit header fields and "
		               "the destination supports neither SMTPUTF8 nor 8BITMIME");
		ret = -1;
		break;
	case MIME_7BIT_ERROR:
	default:
		(void)snprintf(why, whylen, "554 5.6.3 the destination does not support 8BITMIME "
		               "and the message cannot be converted to 7 bits");
		ret = -1;
		break;
	}
	buf_deinit(&out);
	return ret;
}

/* Starts the next message, or QUIT when there is none. A message that cannot go to this peer
 * at all gets its permanent answer without a transaction, and the next one is taken. */
static void
sc_next(struct smtp_client *c)
{
	struct smtp_client_msg *msg;
	struct buf cmd;
	bool utf8;

	for (;;) {
		char why[256];
		int ret = 0;

		msg = c->cb.next_msg(c->ctx);
		if (msg == NULL) {
			sc_send(c, SC_QUIT, "QUIT");
			return;
		}
		c->msg = msg;
		c->rcpt_i = 0;
		c->naccepted = 0;
		c->accepted = xcalloc(msg->nrcpts > 0 ? msg->nrcpts : 1, sizeof(bool));
		if (c->conv_fd >= 0)
			close(c->conv_fd);
		c->conv_fd = -1;
		utf8 = sc_has_8bit(msg->sender);
		for (size_t i = 0; i < msg->nrcpts; i++)
			utf8 = utf8 || sc_has_8bit(msg->rcpts[i].address);
		if (utf8 && !c->ext_smtputf8) {
			/* RFC 6531 3.2: no downgrade of addresses; the sender learns why. */
			(void)snprintf(why, sizeof(why), "553 5.6.7 the destination does not "
			               "support SMTPUTF8, which this message's addresses need");
			ret = -1;
		} else if (!c->ext_8bitmime) {
			ret = sc_prepare_7bit(c, msg, why, sizeof(why));
		}
		if (ret == 0)
			break;
		/* -1: permanent for this peer; -2: local trouble, try again later. */
		sc_msg_finish(c, ret == -1 ? (unsigned int)((why[0] - '0') * 100 +
		                                            (why[1] - '0') * 10 + (why[2] - '0')) :
		                             0,
		              why);
	}
	buf_init(&cmd, 2048);
	(void)buf_printf(&cmd, "MAIL FROM:<%s>", msg->sender);
	if (c->ext_size)
		(void)buf_printf(&cmd, " SIZE=%llu",
		                 (unsigned long long)(c->conv_fd >= 0 ? c->conv_size : msg->size));
	if (c->ext_8bitmime)
		(void)buf_append_str(&cmd, " BODY=8BITMIME");
	if (utf8 && c->ext_smtputf8)
		(void)buf_append_str(&cmd, " SMTPUTF8");
	if (c->ext_dsn && msg->ret != NULL && msg->ret[0] != '\0')
		(void)buf_printf(&cmd, " RET=%s", msg->ret);
	if (c->ext_dsn && msg->envid != NULL && msg->envid[0] != '\0')
		(void)buf_printf(&cmd, " ENVID=%s", msg->envid);
	if (cmd.err != 0) {
		buf_deinit(&cmd);
		sc_msg_finish(c, 0, "MAIL command too long");
		sc_send(c, SC_QUIT, "QUIT");
		return;
	}
	c->pipelined = false;
	c->bdat = c->opts.chunking && c->ext_chunking;
	if (c->ext_pipelining)
		sc_send_pipelined(c, buf_cstr(&cmd));
	else
		sc_send(c, SC_MAIL, "%s", buf_cstr(&cmd));
	buf_deinit(&cmd);
}

/* Opens the message file for sending, positioned after the leading Return-Path field (added
 * at acceptance; the receiving MTA adds its own at final delivery, RFC 5321 4.4) and its
 * continuation lines (RFC 5322 2.2.3). Sets body_left to the bytes that follow and whether a
 * CRLF must be added at the end. -1 with errno on failure. */
static int
sc_open_body(struct smtp_client *c)
{
	uint8_t head[8192], tail[2];
	struct stat st;
	ssize_t n;
	size_t skip = 0;

	if (c->conv_fd >= 0) {
		/* The 7-bit form, made without the Return-Path field. */
		c->fd = c->conv_fd;
		c->conv_fd = -1;
	} else {
		c->fd = c->msg->open(c->msg->open_arg);
	}
	if (c->fd < 0 || fstat(c->fd, &st) < 0)
		return -1;
	do
		n = pread(c->fd, head, sizeof(head), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	skip = sc_return_path_len(head, (size_t)n);
	if (lseek(c->fd, (off_t)skip, SEEK_SET) < 0)
		return -1;
	c->body_left = (uint64_t)st.st_size - skip;
	c->body_add_crlf = c->body_left > 0;
	if (c->body_left >= 2) {
		do
			n = pread(c->fd, tail, 2, st.st_size - 2);
		while (n < 0 && errno == EINTR);
		c->body_add_crlf = !(n == 2 && tail[0] == '\r' && tail[1] == '\n');
	}
	return 0;
}

/* The end of the body is out: wait for the final reply. */
static void
sc_body_end(struct smtp_client *c)
{
	close(c->fd);
	c->fd = -1;
	c->state = SC_DOT;
	sc_timeouts(c, c->opts.data_timeout);
}

/* Sends the message file until the output holds SMTP_CLIENT_OUT_HIGH bytes; the write
 * callback calls again. DATA: dot-stuffed (RFC 5321 4.5.2), ended by CRLF.CRLF. BDAT: one
 * chunk of exactly the announced size, as it is (RFC 3030). */
static void
sc_body_pump(struct smtp_client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	uint8_t chunk[65536];

	while (c->state == SC_BODY && evbuffer_get_length(out) < SMTP_CLIENT_OUT_HIGH) {
		const uint8_t *p = chunk, *end;
		ssize_t n = read(c->fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sc_close(c, "cannot read the message file");
			return;
		}
		if (c->bdat) {
			if ((uint64_t)n > c->body_left || (n == 0 && c->body_left > 0)) {
				/* The chunk's size is announced: a file that changed cannot be
				 * sent. */
				sc_close(c, "the message file changed while it was sent");
				return;
			}
			if (n == 0) {
				if (c->body_add_crlf)
					(void)evbuffer_add(out, "\r\n", 2);
				sc_body_end(c);
				return;
			}
			(void)evbuffer_add(out, chunk, (size_t)n);
			c->body_left -= (uint64_t)n;
			continue;
		}
		if (n == 0) {
			if (!c->last_was_lf)
				(void)evbuffer_add(out, "\r\n", 2);
			(void)evbuffer_add(out, ".\r\n", 3);
			sc_body_end(c);
			return;
		}
		end = chunk + n;
		while (p < end) {
			const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
			const uint8_t *stop = nl != NULL ? nl + 1 : end;

			if (c->at_line_start && *p == '.')
				(void)evbuffer_add(out, ".", 1);
			(void)evbuffer_add(out, p, (size_t)(stop - p));
			c->at_line_start = nl != NULL;
			p = stop;
		}
		c->last_was_lf = end[-1] == '\n';
	}
}

/* DATA was answered 354, or BDAT is next: stream the message. */
static void
sc_start_body(struct smtp_client *c)
{
	if (sc_open_body(c) < 0) {
		char why[300];

		(void)snprintf(why, sizeof(why), "cannot open the message file: %s",
		               strerror(errno));
		sc_close(c, why);
		return;
	}
	if (c->bdat)
		(void)evbuffer_add_printf(bufferevent_get_output(c->bev), "BDAT %llu LAST\r\n",
		                          (unsigned long long)(c->body_left +
		                                               (c->body_add_crlf ? 2 : 0)));
	c->state = SC_BODY;
	c->at_line_start = true;
	c->last_was_lf = true;
	sc_timeouts(c, 0);
	sc_body_pump(c);
}

/* True when the EHLO line "AUTH LOGIN PLAIN" lists word (case-insensitively). */
static bool
sc_has_word(struct span line, const char *word)
{
	size_t i = 0;

	while (i < line.len) {
		size_t start;

		while (i < line.len && line.p[i] == ' ')
			i++;
		start = i;
		while (i < line.len && line.p[i] != ' ')
			i++;
		if (span_eq_ci((struct span){line.p + start, i - start}, word))
			return true;
	}
	return false;
}

/* AUTH PLAIN with the initial response (RFC 4954 4, RFC 4616), or the first message. */
static void
sc_after_ehlo(struct smtp_client *c)
{
	struct buf plain, cmd;

	if (!c->tls_active && c->opts.tls_level >= SMTP_TLS_REQUIRED) {
		/* The mail waits for the destination to offer TLS again (RFC 3207 4.1). */
		sc_close(c, "TLS is required for this destination, which does not offer STARTTLS");
		return;
	}
	if (c->opts.auth_user == NULL) {
		sc_next(c);
		return;
	}
	if (!c->tls_active) {
		sc_close(c, "the relay offers no STARTTLS: credentials not sent");
		return;
	}
	if (!c->ext_auth_plain) {
		sc_close(c, "the relay does not offer AUTH PLAIN");
		return;
	}
	buf_init(&plain, 2048);
	buf_init(&cmd, 4096);
	(void)buf_append_byte(&plain, 0);
	(void)buf_append_str(&plain, c->opts.auth_user);
	(void)buf_append_byte(&plain, 0);
	(void)buf_append_str(&plain, c->opts.auth_password);
	(void)buf_append_str(&cmd, "AUTH PLAIN ");
	if (plain.err != 0 || base64_encode(&cmd, plain.data, plain.len) < 0 || cmd.err != 0) {
		buf_deinit_secure(&plain);
		buf_deinit_secure(&cmd);
		sc_close(c, "relay credentials too long");
		return;
	}
	sc_send(c, SC_AUTH, "%s", buf_cstr(&cmd));
	buf_deinit_secure(&plain);
	buf_deinit_secure(&cmd);
}

static void
sc_ehlo_keywords(struct smtp_client *c, const struct smtp_reply *r)
{
	c->ext_size = c->ext_8bitmime = c->ext_smtputf8 = c->ext_dsn = c->ext_starttls = false;
	c->ext_auth_plain = false;
	c->ext_pipelining = c->ext_chunking = false;
	for (unsigned int i = 1; i < r->nlines; i++) {
		struct span w = r->lines[i];

		for (size_t k = 0; k < w.len; k++) {
			if (w.p[k] == ' ' || w.p[k] == '=') {
				w.len = k;
				break;
			}
		}
		if (span_eq_ci(w, "SIZE"))
			c->ext_size = true;
		else if (span_eq_ci(w, "8BITMIME"))
			c->ext_8bitmime = true;
		else if (span_eq_ci(w, "SMTPUTF8"))
			c->ext_smtputf8 = true;
		else if (span_eq_ci(w, "DSN"))
			c->ext_dsn = true;
		else if (span_eq_ci(w, "STARTTLS"))
			c->ext_starttls = true;
		else if (span_eq_ci(w, "PIPELINING"))
			c->ext_pipelining = true;
		else if (span_eq_ci(w, "CHUNKING"))
			c->ext_chunking = true;
		else if (span_eq_ci(w, "AUTH"))
			c->ext_auth_plain = sc_has_word(r->lines[i], "PLAIN");
	}
}

static void
sc_start_tls(struct smtp_client *c)
{
	struct bufferevent *tls;
	SSL *ssl = SSL_new(c->opts.tls);

	if (ssl == NULL) {
		sc_close(c, "cannot create a TLS session");
		return;
	}
	if (c->names != NULL && c->names[0] != NULL)
		(void)SSL_set_tlsext_host_name(ssl, c->names[0]);
	if (c->opts.tls_level == SMTP_TLS_VERIFY) {
		/* The handshake fails unless the chain is trusted and a name matches. */
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		for (size_t i = 0; c->names != NULL && c->names[i] != NULL; i++) {
			if ((i == 0 ? SSL_set1_host(ssl, c->names[i]) :
			              SSL_add1_host(ssl, c->names[i])) != 1) {
				SSL_free(ssl);
				sc_close(c, "cannot set the name to verify");
				return;
			}
		}
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	}
	/* Nothing the peer sent before the handshake may be taken as a reply after it. */
	(void)evbuffer_drain(bufferevent_get_input(c->bev),
	                     evbuffer_get_length(bufferevent_get_input(c->bev)));
	tls = bufferevent_openssl_filter_new(c->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING,
	                                     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls == NULL) {
		SSL_free(ssl);
		sc_close(c, "cannot start TLS");
		return;
	}
	c->bev = tls;
	c->state = SC_HANDSHAKE;
	bufferevent_setcb(tls, sc_read_cb, sc_write_cb, sc_event_cb, c);
	bufferevent_setwatermark(tls, EV_WRITE, SMTP_CLIENT_OUT_LOW, 0);
	sc_timeouts(c, c->opts.command_timeout);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void
sc_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	char text[256];
	bool ok = r->code >= 200 && r->code < 300;

	sc_reply_text(r, text, sizeof(text));
	switch (c->state) {
	case SC_GREETING:
		if (!ok) {
			sc_close(c, text);
			return;
		}
		sc_send(c, SC_EHLO, "EHLO %s", c->opts.helo);
		return;
	case SC_EHLO:
		if (!ok) {
			/* RFC 5321 3.2: a server that does not know EHLO still knows HELO. */
			sc_send(c, SC_HELO, "HELO %s", c->opts.helo);
			return;
		}
		c->esmtp = true;
		sc_ehlo_keywords(c, r);
		if (c->ext_starttls && !c->tls_active && c->opts.tls_level != SMTP_TLS_NEVER &&
		    c->opts.tls != NULL) {
			sc_send(c, SC_STARTTLS, "STARTTLS");
			return;
		}
		sc_after_ehlo(c);
		return;
	case SC_HELO:
		if (!ok) {
			sc_close(c, text);
			return;
		}
		sc_after_ehlo(c);
		return;
	case SC_STARTTLS:
		if (r->code != 220) {
			if (c->opts.tls_level >= SMTP_TLS_REQUIRED) {
				char why[320];

				(void)snprintf(why, sizeof(why),
				               "TLS is required for this destination: "
				               "STARTTLS refused: %s", text);
				sc_close(c, why);
				return;
			}
			/* Opportunistic: go on in plain text. */
			sc_after_ehlo(c);
			return;
		}
		sc_start_tls(c);
		return;
	case SC_AUTH:
		if (r->code != 235) {
			char why[300];

			(void)snprintf(why, sizeof(why), "authentication refused: %s", text);
			sc_close(c, why);
			return;
		}
		sc_next(c);
		return;
	case SC_MAIL:
		if (!ok) {
			/* The sender is refused: the answer holds for every recipient. */
			size_t nrcpts = c->msg->nrcpts;

			c->rcpt_i = 0;
			sc_msg_finish(c, r->code, text);
			if (c->pipelined && nrcpts + !c->bdat > 0) {
				/* The RCPT and DATA replies still to come. */
				c->skip = nrcpts + !c->bdat;
				c->state = SC_SKIP;
				return;
			}
			sc_send(c, SC_RSET, "RSET");
			return;
		}
		if (c->pipelined)
			c->state = SC_RCPT;
		else
			sc_send_rcpt(c);
		return;
	case SC_SKIP:
		if (--c->skip == 0)
			sc_send(c, SC_RSET, "RSET");
		return;
	case SC_RCPT: {
		struct smtp_client_rcpt *rc = &c->msg->rcpts[c->rcpt_i];

		if (ok) {
			c->accepted[c->rcpt_i] = true;
			c->naccepted++;
		} else {
			rc->code = r->code;
			(void)snprintf(rc->reply, sizeof(rc->reply), "%s", text);
		}
		c->rcpt_i++;
		if (c->pipelined && !c->bdat) {
			/* DATA is on its way already: its reply is next after the last RCPT's. */
			if (c->rcpt_i == c->msg->nrcpts)
				c->state = SC_DATA;
		} else if (c->rcpt_i < c->msg->nrcpts) {
			if (!c->pipelined)
				sc_send_rcpt(c);
		} else if (c->naccepted == 0) {
			sc_msg_finish(c, 0, "no recipient accepted");
			sc_send(c, SC_RSET, "RSET");
		} else if (c->bdat) {
			sc_start_body(c);
		} else {
			sc_send(c, SC_DATA, "DATA");
		}
		return;
	}
	case SC_DATA:
		if (c->naccepted == 0) {
			/* Pipelined with no recipient accepted (RFC 2920 3.1): a 354 still needs
			 * an end of data, whose reply is discarded; then RSET. */
			sc_msg_finish(c, 0, "no recipient accepted");
			if (r->code == 354) {
				(void)evbuffer_add(bufferevent_get_output(c->bev), ".\r\n", 3);
				c->skip = 1;
				c->state = SC_SKIP;
				return;
			}
			sc_send(c, SC_RSET, "RSET");
			return;
		}
		if (r->code != 354) {
			sc_msg_finish(c, r->code >= 400 ? r->code : 451, text);
			sc_send(c, SC_RSET, "RSET");
			return;
		}
		sc_start_body(c);
		return;
	case SC_DOT:
		/* RFC 5321 4.1.1.4: the reply to the end of data holds for every accepted
		 * recipient (LMTP would answer per recipient). */
		if (ok)
			c->delivered_any = true;
		sc_msg_finish(c, r->code, text);
		if (!ok && c->bdat) {
			/* RFC 3030 2: a failed BDAT leaves the transaction to be reset. */
			sc_send(c, SC_RSET, "RSET");
			return;
		}
		sc_next(c);
		return;
	case SC_RSET:
		if (!ok) {
			sc_close(c, text);
			return;
		}
		sc_next(c);
		return;
	case SC_QUIT:
		sc_close(c, NULL);
		return;
	default:
		sc_close(c, "unexpected reply");
		return;
	}
}

static void
sc_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;
	uint8_t copy[SMTP_REPLY_MAX_BYTES];

	while (c->state != SC_CLOSED && c->state != SC_HANDSHAKE && c->bev == bev) {
		struct evbuffer *in = bufferevent_get_input(bev);
		size_t avail = evbuffer_get_length(in), take = MIN(avail, sizeof(copy));
		struct smtp_reply r;
		int n;

		if (avail == 0)
			return;
		if (evbuffer_copyout(in, copy, take) != (ev_ssize_t)take) {
			sc_close(c, "cannot read the input");
			return;
		}
		n = smtp_reply_parse(copy, take, &r);
		if (n == 0)
			return;
		if (n < 0) {
			sc_close(c, "malformed reply");
			return;
		}
		(void)evbuffer_drain(in, (size_t)n);
		if (c->state == SC_BODY) {
			/* A reply while we send the data: the peer gave up on the message. */
			char text[256];

			sc_reply_text(&r, text, sizeof(text));
			sc_close(c, text);
			return;
		}
		sc_reply(c, &r); /* spans point into `copy`, still valid */
	}
}

static void
sc_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;

	(void)bev;
	if (c->state == SC_BODY)
		sc_body_pump(c);
}

static void
sc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	char why[200];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == SC_HANDSHAKE) {
			SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

			c->tls_active = true;
			log_info("event=smtp_client_tls peer=%s version=%s cipher=%s verified=%s",
			         c->opts.peer_name, SSL_get_version(ssl), SSL_get_cipher_name(ssl),
			         c->opts.tls_level == SMTP_TLS_VERIFY ? "yes" : "no");
			sc_send(c, SC_EHLO, "EHLO %s", c->opts.helo);
		} else {
			c->state = SC_GREETING;
			sc_timeouts(c, c->opts.command_timeout);
		}
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		(void)snprintf(why, sizeof(why), "timeout %s",
		               c->state == SC_CONNECT ? "connecting" :
		               c->state == SC_DOT ? "after end of data" : "waiting for a reply");
	} else if (what & BEV_EVENT_EOF) {
		if (c->state == SC_QUIT) {
			sc_close(c, NULL);
			return;
		}
		(void)snprintf(why, sizeof(why), "connection closed by the peer");
	} else if (c->state == SC_HANDSHAKE) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
		unsigned long e = bufferevent_get_openssl_error(c->bev);
		char detail[160] = "";

		if (c->opts.tls_level == SMTP_TLS_VERIFY && vr != X509_V_OK)
			(void)snprintf(detail, sizeof(detail), "certificate not accepted: %s",
			               X509_verify_cert_error_string(vr));
		else if (e != 0)
			ERR_error_string_n(e, detail, sizeof(detail));
		else
			(void)snprintf(detail, sizeof(detail), "connection closed");
		(void)snprintf(why, sizeof(why), "TLS handshake failed: %s", detail);
	} else {
		int err = EVUTIL_SOCKET_ERROR();

		(void)snprintf(why, sizeof(why), "%s%s%s",
		               c->state == SC_CONNECT ? "cannot connect: " : "connection error: ",
		               err != 0 ? evutil_socket_error_to_string(err) : "",
		               c->state == SC_HANDSHAKE ? " (TLS handshake)" : "");
	}
	sc_close(c, why);
}

int
smtp_client_start(struct event_base *base, const struct sockaddr *addr, socklen_t addrlen,
                  const struct smtp_client_options *opts, const struct smtp_client_callbacks *cb,
                  void *ctx, struct smtp_client **client_r)
{
	struct smtp_client *c = xcalloc(1, sizeof(*c));
	struct timeval tv = {(time_t)(opts->connect_timeout / 1000),
	                     (suseconds_t)(opts->connect_timeout % 1000) * 1000};

	c->base = base;
	c->opts = *opts;
	(void)snprintf(c->peer, sizeof(c->peer), "%s", opts->peer_name);
	c->opts.peer_name = c->peer;
	c->cb = *cb;
	c->ctx = ctx;
	if (opts->verify_names != NULL) {
		size_t n = 0;

		while (opts->verify_names[n] != NULL)
			n++;
		c->names = xcalloc(n + 1, sizeof(*c->names));
		for (size_t i = 0; i < n; i++)
			c->names[i] = xstrdup(opts->verify_names[i]);
	}
	c->opts.verify_names = NULL; /* c->names holds the copy */
	c->fd = -1;
	c->conv_fd = -1;
	c->state = SC_CONNECT;
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->bev == NULL) {
		sc_free_cb(-1, 0, c);
		return -1;
	}
	bufferevent_setcb(c->bev, sc_read_cb, sc_write_cb, sc_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, SMTP_CLIENT_OUT_LOW, 0);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(c->bev, addr, (int)addrlen) < 0) {
		sc_free_cb(-1, 0, c);
		return -1;
	}
	*client_r = c;
	return 0;
}

void
smtp_client_abort(struct smtp_client *client, const char *reason)
{
	sc_close(client, reason);
}

SSL_CTX *
smtp_client_tls_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return NULL;
	(void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* Opportunistic TLS (RFC 7435): encrypt when possible, do not authenticate. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	return ctx;
}

SSL_CTX *
smtp_client_tls_verify_ctx(const char *ca_file, const char **error_r)
{
	SSL_CTX *ctx = smtp_client_tls_ctx();
	int ok;

	if (ctx == NULL) {
		*error_r = "cannot create a TLS context";
		return NULL;
	}
	if (ca_file != NULL && ca_file[0] != '\0')
		ok = SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		SSL_CTX_free(ctx);
		*error_r = "cannot load the trusted certificates (queue.tls_ca_file)";
		return NULL;
	}
	/* Verification itself is asked per connection (SSL_set_verify), with the names. */
	return ctx;
}
