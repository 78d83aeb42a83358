/* The SMTP client of outbound delivery (RFC 5321), and its reply parser.
 *
 * A client is one connection to one destination. It runs on the event base it is given (the
 * queue runner's thread) and never blocks: connect, greeting, EHLO (HELO when EHLO is refused),
 * STARTTLS as the destination's TLS level says (opportunistic: when offered, certificate not
 * checked; required: the connection fails without it; verify: the certificate must be trusted
 * and carry one of the given names), then one transaction per message it pulls with
 * next_msg(): MAIL FROM with SIZE, BODY=8BITMIME, SMTPUTF8 and the DSN parameters when the peer
 * offers them, RCPT per recipient, then the blob streamed from its file without the
 * Return-Path field the server added at acceptance: as one BDAT chunk when the peer offers
 * CHUNKING, else DATA, dot-stuffed. When next_msg() has nothing left it sends QUIT and
 * closes.
 *
 * Threads: every function and callback runs on the client's event base thread. */
#ifndef SMTP_SMTP_CLIENT_H
#define SMTP_SMTP_CLIENT_H

#include "core/buf.h"

#include <sys/socket.h>

struct event_base;
struct smtp_client;
typedef struct ssl_ctx_st SSL_CTX;

/* ---- Reply parser (RFC 5321 4.2) -------------------------------------------------------- */

#define SMTP_REPLY_MAX_LINES 64    /* lines of one reply kept; EHLO answers have ~15 */
#define SMTP_REPLY_MAX_BYTES 16384 /* a reply longer than this is a protocol error */

struct smtp_reply {
	unsigned int code;   /* 200..599 */
	unsigned int nlines; /* count of lines, <= SMTP_REPLY_MAX_LINES */
	/* The text of each line after "NNN-"/"NNN ", without CRLF: spans into the input, valid
	 * until the caller consumes or changes it. */
	struct span lines[SMTP_REPLY_MAX_LINES];
};

/* Parses one reply at the start of data[0..len). Returns the number of bytes the complete
 * reply takes (> 0), 0 when more input is needed, -1 on a malformed or oversized reply. Lines
 * end with CRLF (a bare LF is accepted). Stateless: call again with the grown buffer. */
ATTR_WUR int smtp_reply_parse(const uint8_t *data, size_t len, struct smtp_reply *r);

/* ---- Client ----------------------------------------------------------------------------- */

struct smtp_client_rcpt {
	const char *address; /* borrowed */
	const char *notify;  /* RFC 3461 NOTIFY value or NULL (borrowed) */
	const char *orcpt;   /* RFC 3461 ORCPT value or NULL (borrowed) */
	/* Results, filled by the client: 250 delivered, 4xx/5xx the peer's answer, 0 = no answer
	 * (connection failed or timed out: temporary). */
	unsigned int code;
	char reply[256]; /* the reply text (one line, sanitized) or the local reason */
};

struct smtp_client_msg {
	const char *sender;    /* "" = null reverse-path (borrowed) */
	/* Opens the message for reading: a descriptor at offset 0 that the client closes, or -1. */
	int (*open)(void *open_arg);
	void *open_arg;
	const char *envid;     /* RFC 3461 or NULL */
	const char *ret;       /* "FULL"/"HDRS" or NULL */
	uint64_t size;         /* bytes, for SIZE= */
	struct smtp_client_rcpt *rcpts; /* borrowed */
	size_t nrcpts;
	void *ctx;             /* the caller's */
};

/* How much TLS a destination needs (RFC 3207, RFC 7435). */
enum smtp_client_tls {
	SMTP_TLS_NEVER,         /* no STARTTLS even when offered */
	SMTP_TLS_OPPORTUNISTIC, /* STARTTLS when offered, certificate not checked */
	SMTP_TLS_REQUIRED,      /* STARTTLS must succeed, certificate not checked */
	SMTP_TLS_VERIFY,        /* STARTTLS with a certificate valid for one of verify_names */
};

struct smtp_client_options {
	const char *helo;          /* our hostname (borrowed, must outlive the client) */
	const char *peer_name;     /* for logs, e.g. "127.0.0.1:2525" (copied) */
	enum smtp_client_tls tls_level;
	/* The context for STARTTLS: smtp_client_tls_ctx(); for SMTP_TLS_VERIFY one made by
	 * smtp_client_tls_verify_ctx(). NULL only with SMTP_TLS_NEVER. */
	SSL_CTX *tls;
	/* SMTP_TLS_VERIFY: the names the certificate may carry (RFC 6125 DNS-ID, wildcards in
	 * the leftmost label), NULL-terminated, copied. Also sent as SNI (the first one). */
	const char *const *verify_names;
	/* CHUNKING (RFC 3030) when the peer offers it: BDAT instead of DATA. */
	bool chunking;
	/* AUTH PLAIN (RFC 4954) after STARTTLS, for a relay host; NULL: none. Credentials are
	 * never sent without TLS: the connection fails (temporarily) instead. Borrowed. */
	const char *auth_user;
	const char *auth_password;
	uint64_t connect_timeout;  /* ms */
	uint64_t command_timeout;  /* ms */
	uint64_t data_timeout;     /* ms, for the reply to the final dot */
};

struct smtp_client_callbacks {
	/* The next message to send on this connection, or NULL (then QUIT). The message stays
	 * borrowed until msg_done() for it. */
	struct smtp_client_msg *(*next_msg)(void *ctx);
	/* Every recipient of msg has its result. */
	void (*msg_done)(struct smtp_client_msg *msg, void *ctx);
	/* The connection is gone; no callback follows. reason: NULL after a normal QUIT, or why
	 * it failed. delivered_any: some message got its final reply on this connection. */
	void (*closed)(const char *reason, bool delivered_any, void *ctx);
};

/* Starts connecting. On error returns -1 and calls nothing. The client frees itself (as a
 * fresh event on base) after closed(); *client_r stays valid until closed() is called. */
ATTR_WUR int smtp_client_start(struct event_base *base, const struct sockaddr *addr,
                               socklen_t addrlen, const struct smtp_client_options *opts,
                               const struct smtp_client_callbacks *cb, void *ctx,
                               struct smtp_client **client_r);
/* Drops the connection now (shutdown): the message in progress gets code 0, then closed(). */
void smtp_client_abort(struct smtp_client *client, const char *reason);

/* A client SSL_CTX for opportunistic STARTTLS: TLS 1.2 minimum, no certificate verification
 * (RFC 7435). Caller frees with SSL_CTX_free. NULL on error. */
SSL_CTX *smtp_client_tls_ctx(void);
/* A client SSL_CTX that verifies the peer's chain against ca_file (PEM), or the system's
 * trust store when ca_file is NULL or "". NULL with *error_r on error. */
SSL_CTX *smtp_client_tls_verify_ctx(const char *ca_file, const char **error_r);

#endif
