/* SMTP sessions: the state machine of RFC 5321 with PIPELINING (RFC 2920), SIZE (1870),
 * 8BITMIME (6152), SMTPUTF8 (6531), ENHANCEDSTATUSCODES (2034/3463), STARTTLS (3207),
 * AUTH PLAIN/LOGIN (4954), CHUNKING (3030) and DSN parameters (3461).
 *
 * Invariants
 * - The session never blocks its I/O thread: recipient lookups run on the lookup pool, password
 *   checks on the auth workers, the final commit on the store writer. While one of them is
 *   pending the session is "busy": reading is paused and the pipelined input waits.
 * - "250" after the data is sent only from the commit's completion. Any failure before that
 *   discards the blob and answers with a temporary error; the sender keeps the message.
 * - Only CRLF.CRLF ends DATA; bare CR or LF in a message refuses it (SMTP smuggling).
 * - Input sent before a STARTTLS handshake is discarded by the network layer (RFC 3207 6). */
#include "smtp/smtp_server.h"
#include "core/log.h"
#include "proto/login.h"
#include "smtp/smtp_parser.h"
#include "smtp/smtp_rcache.h"
#include "smtp/smtp_resolve.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SMTP_MAX_LINE 2048            /* command line incl. CRLF (Postfix line_length_limit) */
#define SMTP_MAX_HEADER_BUFFER 65536  /* header octets held back to add our own fields first */
#define SMTP_CHUNK 65536              /* octets decoded per step */
#define SMTP_SLOW_GRACE_MS 30000      /* the minimum data rate applies after this */

enum smtp_state {
	SMTP_S_INIT,  /* before HELO/EHLO */
	SMTP_S_READY, /* after HELO/EHLO, no transaction */
	SMTP_S_MAIL,  /* MAIL accepted */
	SMTP_S_DATA,  /* receiving DATA */
	SMTP_S_BDAT,  /* receiving a BDAT chunk */
	SMTP_S_AUTH,  /* waiting for a SASL response line */
};

struct smtp_limits {
	_Atomic uint64_t max_size, max_rcpts, max_bad, max_received, data_timeout, min_rate;
	_Atomic uint64_t failure_delay;
	atomic_bool plaintext_loopback;
};

static struct smtp_server_env env;
static struct smtp_limits limits;
static struct smtp_rcache *rcache;

#define SMTP_RCACHE_SLOTS 4096

struct smtp_rcpt {
	char *address;
	char *notify, *orcpt; /* DSN parameters as given (RFC 3461), or NULL */
	struct smtp_route route;
};

struct smtp_session {
	struct net_conn *conn;
	enum smtp_state state;
	bool submission; /* a submission port: AUTH offered and required for MAIL */
	bool esmtp, busy, shutdown_pending, skip_line, bdat_discard, bdat_last;
	enum smtp_state bdat_prev_state; /* to go back to after a refused chunk */
	const char *bdat_reply;          /* the refusal, sent once the chunk is read */
	char helo[256];
	unsigned int bad;
	unsigned int transactions;
	/* authentication */
	struct auth_sasl *sasl;
	bool authenticated;
	int64_t account_id;
	char user[256];
	/* transaction */
	char *mail_from;
	bool smtputf8, body_8bit;
	char *ret, *envid; /* DSN parameters, kept for the outbound queue */
	struct smtp_rcpt *rcpts;
	size_t nrcpts;
	struct store_blob *blob;
	int blob_err;
	struct smtp_data data;
	struct buf out;     /* decoded octets not yet written to the blob */
	bool header_done;   /* our own header fields were written */
	uint64_t data_start_ms;
	uint64_t bdat_remaining; /* octets of the current chunk */
};

static const char *
service_label(const struct smtp_session *s)
{
	return net_service_name(net_conn_service(s->conn));
}

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
smtp_server_reload(const struct cfg *cfg)
{
	limits.max_size = cfg->smtp_max_message_size;
	limits.max_rcpts = cfg->smtp_max_recipients;
	limits.max_bad = cfg->smtp_max_bad_commands;
	limits.max_received = cfg->smtp_max_received;
	limits.data_timeout = cfg->smtp_data_timeout;
	limits.min_rate = cfg->smtp_min_data_rate;
	limits.failure_delay = cfg->auth_failure_delay;
	limits.plaintext_loopback = cfg->smtp_plaintext_auth_loopback != 0;
	smtp_resolve_set_default_quota(cfg->storage_quota);
	/* Also empties it: a reload makes account changes count at once. */
	if (rcache != NULL)
		smtp_rcache_set_ttl(rcache, cfg->smtp_recipient_cache_ttl);
}

void
smtp_server_setup(const struct smtp_server_env *e, const struct cfg *cfg)
{
	env = *e;
	if (rcache == NULL)
		rcache = smtp_rcache_new(SMTP_RCACHE_SLOTS);
	smtp_server_reload(cfg);
}

void
smtp_server_cleanup(void)
{
	smtp_rcache_free(&rcache);
}

static void
reply(struct smtp_session *s, const char *line)
{
	net_conn_printf(s->conn, "%s\r\n", line);
}

/* ---- transaction state ---------------------------------------------------------------------- */

static void
transaction_reset(struct smtp_session *s)
{
	free(s->mail_from);
	s->mail_from = NULL;
	free(s->ret);
	s->ret = NULL;
	free(s->envid);
	s->envid = NULL;
	for (size_t i = 0; i < s->nrcpts; i++) {
		free(s->rcpts[i].address);
		free(s->rcpts[i].notify);
		free(s->rcpts[i].orcpt);
		smtp_route_deinit(&s->rcpts[i].route);
	}
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
	store_blob_free(&s->blob);
	s->blob_err = 0;
	buf_reset(&s->out);
	s->header_done = false;
	s->smtputf8 = s->body_8bit = false;
	s->bdat_discard = s->bdat_last = false;
	s->bdat_remaining = 0;
	if (s->state != SMTP_S_INIT)
		s->state = SMTP_S_READY;
}

static bool
too_many_errors(struct smtp_session *s)
{
	if (++s->bad < limits.max_bad)
		return false;
	reply(s, "421 4.7.0 Too many errors, closing connection");
	net_conn_close_because(s->conn, "too-many-errors");
	return true;
}

/* Replies with an error and counts it; closes at the limit. */
static void
reply_error(struct smtp_session *s, const char *line)
{
	reply(s, line);
	(void)too_many_errors(s);
}

/* ---- async plumbing ------------------------------------------------------------------------- */

static void smtp_input(void *session, struct net_conn *conn);

/* Marks the session busy: reading pauses until smtp_unbusy(). */
static void
smtp_busy(struct smtp_session *s)
{
	s->busy = true;
	net_conn_pause(s->conn);
	net_conn_ref(s->conn);
}

static void
smtp_unbusy(struct smtp_session *s)
{
	struct net_conn *conn = s->conn;

	s->busy = false;
	if (s->shutdown_pending && s->state != SMTP_S_DATA && s->state != SMTP_S_BDAT) {
		reply(s, "421 4.3.2 Service shutting down");
		net_conn_close_because(conn, "shutdown");
	} else {
		net_conn_resume(conn);
		/* Pipelined commands may already be buffered: go on with them now. */
		smtp_input(s, conn);
	}
	net_conn_unref(&conn);
}

/* ---- EHLO, HELO, STARTTLS, AUTH -------------------------------------------------------------- */

static bool
auth_allowed(const struct smtp_session *s)
{
	return s->submission && (net_conn_is_tls(s->conn) ||
	                         (limits.plaintext_loopback && net_conn_is_loopback(s->conn)));
}

static void
cmd_ehlo(struct smtp_session *s, const struct smtp_cmd *cmd, bool esmtp)
{
	struct span d = cmd->arg;

	if (d.len >= sizeof(s->helo))
		d.len = sizeof(s->helo) - 1;
	memcpy(s->helo, d.p, d.len);
	s->helo[d.len] = '\0';
	s->helo[strcspn(s->helo, " ")] = '\0';
	transaction_reset(s);
	s->state = SMTP_S_READY;
	s->esmtp = esmtp;
	if (!esmtp) {
		net_conn_printf(s->conn, "250 %s\r\n", env.hostname);
		return;
	}
	net_conn_printf(s->conn,
	                "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
	                "250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n",
	                env.hostname, (unsigned long long)limits.max_size);
	if (!net_conn_is_tls(s->conn))
		net_conn_printf(s->conn, "250-STARTTLS\r\n");
	if (auth_allowed(s) && !s->authenticated)
		net_conn_printf(s->conn, "250-AUTH PLAIN LOGIN\r\n");
	net_conn_printf(s->conn, "250 HELP\r\n");
}

static void
cmd_starttls(struct smtp_session *s)
{
	if (net_conn_is_tls(s->conn)) {
		reply_error(s, "503 5.5.1 TLS already active");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	if (net_conn_starttls(s->conn) < 0) {
		/* The client now speaks TLS: anything more in clear would be read as commands. */
		net_conn_close_because(s->conn, "tls-unavailable");
		return;
	}
	/* RFC 3207 4.2: everything learnt before TLS is forgotten, authentication included. */
	transaction_reset(s);
	s->state = SMTP_S_INIT;
	s->helo[0] = '\0';
	s->authenticated = false;
	s->account_id = 0;
	s->user[0] = '\0';
}

/* The end of a login, on the I/O thread (after the guard's delay for a failure). */
static void
login_done(struct net_conn *conn, const struct login_result *r, void *ctx)
{
	struct smtp_session *s = ctx;
	char user[LOG_SANITIZE_SIZE];

	if (net_conn_is_closing(conn)) {
		net_conn_unref(&conn);
		return;
	}
	log_sanitize_str(user, r->user);
	switch (r->result) {
	case AUTH_OK:
		s->authenticated = true;
		s->account_id = r->account_id;
		(void)!str_copy(s->user, sizeof(s->user), r->user);
		reply(s, "235 2.7.0 Authentication successful");
		log_info("sid=%s event=auth service=%s rip=%s user=%s result=ok", net_conn_sid(conn),
		         service_label(s), net_conn_rip(conn), user);
		break;
	case AUTH_FAILED:
		reply(s, "535 5.7.8 Authentication credentials invalid");
		log_info("sid=%s event=auth-failed service=%s rip=%s user=%s reason=credentials",
		         net_conn_sid(conn), service_label(s), net_conn_rip(conn), user);
		if (too_many_errors(s)) {
			smtp_unbusy(s);
			return;
		}
		break;
	case AUTH_TEMPFAIL:
		reply(s, "454 4.7.0 Temporary authentication failure");
		log_warn("sid=%s event=auth-failed service=%s rip=%s user=%s reason=tempfail",
		         net_conn_sid(conn), service_label(s), net_conn_rip(conn), user);
		break;
	}
	smtp_unbusy(s);
}

/* Handles a SASL step's status. */
static void
auth_status(struct smtp_session *s, int status, const char *challenge, const char *error)
{
	struct login_env lenv = {env.auth, env.guard, limits.failure_delay};

	switch (status) {
	case AUTH_SASL_CONTINUE:
		s->state = SMTP_S_AUTH;
		net_conn_printf(s->conn, "334 %s\r\n", challenge);
		return;
	case AUTH_SASL_CANCEL:
		s->state = SMTP_S_READY;
		auth_sasl_free(&s->sasl);
		reply_error(s, "501 5.0.0 Authentication cancelled");
		return;
	case AUTH_SASL_DONE:
		break;
	default:
		s->state = SMTP_S_READY;
		auth_sasl_free(&s->sasl);
		reply_error(s, "501 5.5.2 Malformed authentication response");
		return;
	}
	s->state = SMTP_S_READY;
	if (auth_sasl_authzid(s->sasl)[0] != '\0' &&
	    strcasecmp(auth_sasl_authzid(s->sasl), auth_sasl_user(s->sasl)) != 0) {
		auth_sasl_free(&s->sasl);
		reply_error(s, "535 5.7.8 Authorization identity refused");
		return;
	}
	smtp_busy(s);
	login_start(&lenv, GUARD_SMTP, s->conn, auth_sasl_user(s->sasl),
	            auth_sasl_password(s->sasl), login_done, s);
	auth_sasl_free(&s->sasl);
}

static void
cmd_auth(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	char mech[32], *initial = NULL;
	enum auth_sasl_mech m;
	const char *challenge = NULL, *error = NULL;
	const uint8_t *sp = cmd->arg.len ? memchr(cmd->arg.p, ' ', cmd->arg.len) : NULL;
	size_t n = sp != NULL ? (size_t)(sp - cmd->arg.p) : cmd->arg.len;
	int status;

	if (!s->submission) {
		reply_error(s, "503 5.5.1 AUTH not available on this port");
		return;
	}
	if (s->authenticated) {
		reply_error(s, "503 5.5.1 Already authenticated");
		return;
	}
	if (s->state != SMTP_S_READY) {
		reply_error(s, s->state == SMTP_S_INIT ? "503 5.5.1 Send EHLO first"
		                                       : "503 5.5.1 AUTH not allowed during a transaction");
		return;
	}
	if (!auth_allowed(s)) {
		reply_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	if (n == 0 || n >= sizeof(mech)) {
		reply_error(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	memcpy(mech, cmd->arg.p, n);
	mech[n] = '\0';
	if (auth_sasl_mech_parse(mech, &m) < 0) {
		reply_error(s, "504 5.5.4 Unrecognized authentication type");
		return;
	}
	if (n < cmd->arg.len)
		initial = xmemdup0(cmd->arg.p + n + 1, cmd->arg.len - n - 1);
	s->sasl = auth_sasl_new(m);
	status = auth_sasl_start(s->sasl, initial, &challenge, &error);
	if (initial != NULL) {
		explicit_bzero(initial, strlen(initial));
		free(initial);
	}
	auth_status(s, status, challenge, error);
}

/* ---- MAIL, RCPT ---------------------------------------------------------------------------- */

static char *
span_dup(struct span sp)
{
	return xmemdup0(sp.p, sp.len);
}

struct lookup_op {
	struct net_conn *conn;
	struct smtp_session *s;
	char *address;
	char *notify, *orcpt; /* RCPT's DSN parameters */
	char user[256];       /* MAIL check: the authenticated account */
	int owns;             /* MAIL check: 1 = the sender address is the account's */
	bool is_sender; /* MAIL FROM check on submission, else RCPT */
	enum smtp_resolve_result result;
	struct smtp_route route;
};

static void rcpt_finish(struct smtp_session *s, struct lookup_op *op);
static void mail_finish(struct smtp_session *s, struct lookup_op *op);

static void
lookup_op_free(struct lookup_op *op)
{
	smtp_route_deinit(&op->route);
	free(op->address);
	free(op->notify);
	free(op->orcpt);
	free(op);
}

static void
lookup_finish(void *arg)
{
	struct lookup_op *op = arg;
	struct net_conn *conn = op->conn;
	struct smtp_session *s = op->s;

	if (!net_conn_is_closing(conn)) {
		if (op->is_sender)
			mail_finish(s, op);
		else
			rcpt_finish(s, op);
	}
	lookup_op_free(op);
	if (net_conn_is_closing(conn)) {
		net_conn_unref(&conn);
		return;
	}
	smtp_unbusy(s);
}

/* On a lookup worker. */
static void
lookup_run(void *arg)
{
	struct lookup_op *op = arg;

	op->result = smtp_resolve(env.store, op->address, &op->route);
	if (op->is_sender && op->result == SMTP_RESOLVE_LOCAL)
		op->owns = smtp_route_reaches(env.store, &op->route, op->user);
	else if (!op->is_sender)
		smtp_rcache_put(rcache, op->address, op->result, &op->route, mono_ms());
	net_thread_post(net_conn_thread(op->conn), lookup_finish, op);
}

static struct lookup_op *
start_lookup(struct smtp_session *s, const char *address, bool is_sender)
{
	struct lookup_op *op = xcalloc(1, sizeof(*op));

	op->conn = s->conn;
	op->s = s;
	op->address = xstrdup(address);
	op->is_sender = is_sender;
	return op;
}

static void
run_lookup(struct smtp_session *s, struct lookup_op *op)
{
	if (!op->is_sender && smtp_rcache_get(rcache, op->address, mono_ms(), &op->route)) {
		op->result = SMTP_RESOLVE_LOCAL;
		rcpt_finish(s, op);
		lookup_op_free(op);
		return;
	}
	smtp_busy(s);
	tpool_submit(env.lookups, lookup_run, op);
}

/* xtext (RFC 3461 4) is kept as sent; only its syntax matters here. */
static bool
is_xtext(struct span v)
{
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < 0x21 || v.p[i] > 0x7e || v.p[i] == '=')
			return false;
	}
	return v.len > 0 && v.len <= 100;
}

static void
cmd_mail(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	char from[LOG_SANITIZE_SIZE];

	if (s->state == SMTP_S_INIT) {
		reply_error(s, "503 5.5.1 Send HELO or EHLO first");
		return;
	}
	if (s->state != SMTP_S_READY) {
		reply_error(s, "503 5.5.1 Nested MAIL command");
		return;
	}
	if (s->submission && !s->authenticated) {
		reply_error(s, "530 5.7.0 Authentication required");
		return;
	}
	s->smtputf8 = s->body_8bit = false;
	free(s->ret);
	free(s->envid);
	s->ret = s->envid = NULL;
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];
		char num[24];

		if (span_eq_ci(p->key, "SIZE")) {
			uint64_t size;
			if (p->value.len == 0 || p->value.len >= sizeof(num)) {
				reply_error(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			memcpy(num, p->value.p, p->value.len);
			num[p->value.len] = '\0';
			if (str_to_u64(num, &size) < 0) {
				reply_error(s, "501 5.5.4 Bad SIZE parameter");
				return;
			}
			if (size > limits.max_size) {
				reply_error(s, "552 5.3.4 Message size exceeds fixed maximum message size");
				return;
			}
		} else if (span_eq_ci(p->key, "BODY")) {
			if (span_eq_ci(p->value, "8BITMIME"))
				s->body_8bit = true;
			else if (!span_eq_ci(p->value, "7BIT")) {
				reply_error(s, "555 5.5.4 Unsupported BODY type");
				return;
			}
		} else if (span_eq_ci(p->key, "SMTPUTF8") && p->value.len == 0) {
			s->smtputf8 = true;
		} else if (span_eq_ci(p->key, "RET") && (span_eq_ci(p->value, "FULL") ||
		                                         span_eq_ci(p->value, "HDRS"))) {
			free(s->ret);
			s->ret = span_dup(p->value);
		} else if (span_eq_ci(p->key, "ENVID") && is_xtext(p->value)) {
			free(s->envid);
			s->envid = span_dup(p->value);
		} else if (span_eq_ci(p->key, "AUTH")) {
			/* RFC 4954 5: accepted and not trusted. */
		} else {
			reply_error(s, "555 5.5.4 Unsupported MAIL parameter");
			return;
		}
	}
	if (cmd->path.len > 0 && !smtp_mailbox_is_valid(cmd->path, s->smtputf8)) {
		reply_error(s, "553 5.1.7 Bad sender address syntax");
		return;
	}
	s->mail_from = span_dup(cmd->path);
	log_sanitize_str(from, s->mail_from);
	if (s->submission && s->mail_from[0] != '\0' && strcasecmp(s->mail_from, s->user) != 0) {
		/* Is the sender one of the account's aliases? Resolve it and look for the account. */
		struct lookup_op *op = start_lookup(s, s->mail_from, true);
		(void)!str_copy(op->user, sizeof(op->user), s->user);
		run_lookup(s, op);
		return;
	}
	s->state = SMTP_S_MAIL;
	reply(s, "250 2.1.0 Sender OK");
}

static void
mail_finish(struct smtp_session *s, struct lookup_op *op)
{
	bool owns = op->owns == 1;

	if (op->result == SMTP_RESOLVE_TEMPFAIL || op->owns < 0) {
		transaction_reset(s);
		reply(s, "451 4.3.0 Temporary lookup failure, try again");
		return;
	}
	if (!owns) {
		char from[LOG_SANITIZE_SIZE], user[LOG_SANITIZE_SIZE];
		log_info("sid=%s event=reject service=%s rip=%s user=%s from=%s reason=sender-not-owned",
		         net_conn_sid(s->conn), service_label(s), net_conn_rip(s->conn),
		         log_sanitize_str(user, s->user), log_sanitize_str(from, s->mail_from));
		transaction_reset(s);
		reply_error(s, "553 5.7.1 Sender address not owned by the authenticated user");
		return;
	}
	s->state = SMTP_S_MAIL;
	reply(s, "250 2.1.0 Sender OK");
}

static void
cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	struct lookup_op *op;
	char *address;

	if (s->state != SMTP_S_MAIL) {
		reply_error(s, "503 5.5.1 Need MAIL before RCPT");
		return;
	}
	if (s->blob != NULL) {
		reply_error(s, "503 5.5.1 RCPT not allowed after BDAT"); /* RFC 3030 2 */
		return;
	}
	if (s->nrcpts >= limits.max_rcpts) {
		reply(s, "452 4.5.3 Too many recipients");
		return;
	}
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];
		if (!span_eq_ci(p->key, "NOTIFY") && !span_eq_ci(p->key, "ORCPT")) {
			reply_error(s, "555 5.5.4 Unsupported RCPT parameter");
			return;
		}
		if (!is_xtext(p->value)) {
			reply_error(s, "501 5.5.4 Bad DSN parameter");
			return;
		}
	}
	if (memchr(cmd->path.p, '@', cmd->path.len) == NULL) {
		/* Only <postmaster> may come without a domain (RFC 5321 4.1.1.3). */
		if (!span_eq_ci(cmd->path, "postmaster")) {
			reply_error(s, "553 5.1.3 Bad recipient address syntax");
			return;
		}
	} else if (!smtp_mailbox_is_valid(cmd->path, s->smtputf8)) {
		reply_error(s, "553 5.1.3 Bad recipient address syntax");
		return;
	}
	address = span_dup(cmd->path);
	op = start_lookup(s, address, false);
	free(address);
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];
		char **slot = span_eq_ci(p->key, "NOTIFY") ? &op->notify : &op->orcpt;
		free(*slot);
		*slot = span_dup(p->value);
	}
	run_lookup(s, op);
}

static void
rcpt_finish(struct smtp_session *s, struct lookup_op *op)
{
	char rcpt[LOG_SANITIZE_SIZE];
	struct smtp_rcpt *r;

	log_sanitize_str(rcpt, op->address);
	switch (op->result) {
	case SMTP_RESOLVE_TEMPFAIL:
		reply(s, "451 4.3.0 Temporary lookup failure, try again");
		return;
	case SMTP_RESOLVE_UNKNOWN:
		log_info("sid=%s event=reject service=%s rip=%s rcpt=%s reason=unknown-user",
		         net_conn_sid(s->conn), service_label(s), net_conn_rip(s->conn), rcpt);
		reply_error(s, "550 5.1.1 Recipient address rejected: user unknown");
		return;
	case SMTP_RESOLVE_REMOTE:
		if (!s->authenticated) {
			log_info("sid=%s event=reject service=%s rip=%s rcpt=%s reason=relay-denied",
			         net_conn_sid(s->conn), service_label(s), net_conn_rip(s->conn), rcpt);
			reply_error(s, "554 5.7.1 Relay access denied");
			return;
		}
		break;
	case SMTP_RESOLVE_LOCAL:
		/* RFC 3463 4.2.2: a full mailbox is temporary; the sender retries while the
		 * owner makes room (RFC 5321 4.5.3.1.10: 452 for a storage limit). */
		if (op->route.over_quota) {
			log_info("sid=%s event=reject service=%s rip=%s rcpt=%s reason=over-quota",
			         net_conn_sid(s->conn), service_label(s), net_conn_rip(s->conn), rcpt);
			reply(s, "452 4.2.2 Mailbox full, try again later");
			return;
		}
		break;
	}
	s->rcpts = xrealloc(s->rcpts, (s->nrcpts + 1) * sizeof(*s->rcpts));
	r = &s->rcpts[s->nrcpts++];
	r->address = op->address;
	op->address = NULL;
	r->notify = op->notify;
	op->notify = NULL;
	r->orcpt = op->orcpt;
	op->orcpt = NULL;
	r->route = op->route;
	memset(&op->route, 0, sizeof(op->route));
	if (op->result == SMTP_RESOLVE_REMOTE) {
		/* The remote recipient itself is the one target. */
		r->route.remote = xmalloc(sizeof(char *));
		r->route.remote[0] = xstrdup(r->address);
		r->route.nremote = 1;
	}
	reply(s, "250 2.1.5 Recipient OK");
}

/* ---- DATA and BDAT ------------------------------------------------------------------------- */

static void
write_blob(struct smtp_session *s, const void *p, size_t len)
{
	if (s->blob_err == 0 && len > 0)
		s->blob_err = store_blob_write(s->blob, p, len);
}

/* Writes our header fields, then the held-back header octets. */
static void
write_prefix(struct smtp_session *s)
{
	struct buf h;
	char date[RFC5322_DATE_SIZE], helo[LOG_SANITIZE_SIZE];
	const char *with;
	const char *ver = net_conn_tls_version(s->conn), *cipher = net_conn_tls_cipher(s->conn);
	time_t now = time(NULL);

	buf_init(&h, 8192);
	rfc5322_date(date, now, false);
	/* RFC 3848 protocol types. */
	if (s->authenticated)
		with = net_conn_is_tls(s->conn) ? "ESMTPSA" : "ESMTPA";
	else if (!s->esmtp)
		with = "SMTP";
	else
		with = net_conn_is_tls(s->conn) ? "ESMTPS" : "ESMTP";
	if (s->smtputf8)
		with = s->authenticated ? (net_conn_is_tls(s->conn) ? "UTF8SMTPSA" : "UTF8SMTPA")
		                        : (net_conn_is_tls(s->conn) ? "UTF8SMTPS" : "UTF8SMTP");
	buf_printf(&h, "Return-Path: <%s>\r\n", s->mail_from);
	buf_printf(&h, "Received: from %s ([%s])\r\n\tby %s (Postamt) with %s id %s.%u",
	           log_sanitize_str(helo, s->helo[0] ? s->helo : "unknown"), net_conn_rip(s->conn),
	           env.hostname, with, net_conn_sid(s->conn), s->transactions);
	if (ver != NULL)
		buf_printf(&h, "\r\n\t(version=%s cipher=%s)", ver, cipher ? cipher : "?");
	if (s->nrcpts == 1)
		buf_printf(&h, "\r\n\tfor <%s>", s->rcpts[0].address);
	buf_printf(&h, ";\r\n\t%s\r\n", date);
	if (s->submission && !s->data.has_date)
		buf_printf(&h, "Date: %s\r\n", date);
	if (s->submission && !s->data.has_message_id)
		buf_printf(&h, "Message-ID: <%s.%u.%lld@%s>\r\n", net_conn_sid(s->conn),
		           s->transactions, (long long)now, env.hostname);
	write_blob(s, h.data, h.len);
	buf_deinit(&h);
	write_blob(s, s->out.data, s->out.len);
	buf_reset(&s->out);
	s->header_done = true;
}

/* Moves decoded octets to the blob, holding the header section back until it is complete. */
static void
flush_out(struct smtp_session *s, bool final)
{
	if (!s->header_done) {
		if (!final && s->data.in_header && s->out.len < SMTP_MAX_HEADER_BUFFER)
			return;
		write_prefix(s);
		return;
	}
	write_blob(s, s->out.data, s->out.len);
	buf_reset(&s->out);
}

static bool
begin_message(struct smtp_session *s)
{
	const char *error;

	if (store_blob_new(env.store, &s->blob, &error) < 0) {
		log_error("sid=%s event=error reason=\"cannot create message file: %s\"",
		          net_conn_sid(s->conn), error);
		return false;
	}
	smtp_data_init(&s->data, limits.max_size);
	s->data_start_ms = mono_ms();
	s->transactions++;
	s->header_done = false;
	buf_reset(&s->out);
	return true;
}

static void
cmd_data(struct smtp_session *s)
{
	if (s->state != SMTP_S_MAIL) {
		reply_error(s, "503 5.5.1 Need MAIL and RCPT before DATA");
		return;
	}
	if (s->nrcpts == 0) {
		reply_error(s, "554 5.5.1 No valid recipients");
		return;
	}
	if (s->blob != NULL) {
		reply_error(s, "503 5.5.1 DATA not allowed after BDAT");
		return;
	}
	if (!begin_message(s)) {
		reply(s, "451 4.3.0 Temporary failure storing the message");
		return;
	}
	s->state = SMTP_S_DATA;
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void
cmd_bdat(struct smtp_session *s, const struct smtp_cmd *cmd)
{
	/* RFC 3030 2: a refused BDAT's chunk must still be read off the connection; the reply
	 * comes after it. */
	s->bdat_remaining = cmd->chunk_size;
	s->bdat_last = cmd->last;
	s->bdat_reply = NULL;
	if (s->state != SMTP_S_MAIL)
		s->bdat_reply = "503 5.5.1 Need MAIL and RCPT before BDAT";
	else if (s->nrcpts == 0)
		s->bdat_reply = "554 5.5.1 No valid recipients";
	else if (s->blob == NULL && !begin_message(s))
		s->bdat_reply = "451 4.3.0 Temporary failure storing the message";
	s->bdat_discard = s->bdat_reply != NULL;
	if (s->bdat_discard && cmd->chunk_size > limits.max_size) {
		/* Reading a refused chunk larger than any message we take is not worth it. */
		reply(s, s->bdat_reply);
		reply(s, "421 4.7.0 Refused chunk too large, closing connection");
		net_conn_close_because(s->conn, "bdat-refused");
		return;
	}
	s->bdat_prev_state = s->state;
	s->state = SMTP_S_BDAT;
}

struct commit_op {
	struct net_conn *conn;
	struct smtp_session *s;
	/* the job's input, owned by the op */
	char *blob_id;
	char *sender;
	int64_t *mailboxes;
	size_t nmailboxes;
	char **remote;
	char **notify, **orcpt; /* per remote recipient, NULL entries = absent */
	size_t nremote;
	char *envid, *ret;
	int64_t internaldate;
	int priority;
	/* the result */
	int err;
	char error[256];
};

static void
commit_op_free(struct commit_op *op)
{
	for (size_t i = 0; i < op->nremote; i++) {
		free(op->remote[i]);
		free(op->notify[i]);
		free(op->orcpt[i]);
	}
	free(op->remote);
	free(op->notify);
	free(op->orcpt);
	free(op->envid);
	free(op->ret);
	free(op->mailboxes);
	free(op->blob_id);
	free(op->sender);
	free(op);
}

/* On the writer thread, inside the transaction. */
static int
commit_run(struct store_txn *txn, void *ctx)
{
	struct commit_op *op = ctx;
	int64_t qid;
	uint32_t uid;
	int ret;

	for (size_t i = 0; i < op->nmailboxes; i++) {
		ret = store_txn_deliver(txn, op->mailboxes[i], op->blob_id, 0, op->internaldate, &uid);
		if (ret != STORE_OK)
			return ret;
	}
	if (op->nremote > 0) {
		ret = store_txn_queue_add(txn, op->blob_id, op->sender, (const char *const *)op->remote,
		                          op->nremote, op->priority, &qid);
		if (ret == STORE_OK)
			ret = store_txn_queue_set_dsn(txn, qid, op->envid, op->ret,
			                              (const char *const *)op->notify,
			                              (const char *const *)op->orcpt, op->nremote);
		if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

static void commit_finish(void *arg);

/* On the writer thread, after the commit (or its failure). */
static void
commit_done(struct store_job *job, void *ctx)
{
	struct commit_op *op = ctx;
	const char *error = NULL;

	op->err = store_job_result(job, &error);
	if (error != NULL)
		(void)!str_copy(op->error, sizeof(op->error), error);
	store_job_free(&job);
	net_thread_post(net_conn_thread(op->conn), commit_finish, op);
}

static void
commit_finish(void *arg)
{
	struct commit_op *op = arg;
	struct net_conn *conn = op->conn;
	struct smtp_session *s = op->s;
	char from[LOG_SANITIZE_SIZE];

	if (net_conn_is_closing(conn)) {
		/* The client is gone before it saw the reply: it will send again (a duplicate is
		 * allowed, a loss is not: RFC 5321 6.1). */
		commit_op_free(op);
		net_conn_unref(&conn);
		return;
	}
	log_sanitize_str(from, op->sender);
	if (op->err == STORE_OK) {
		net_conn_printf(conn, "250 2.0.0 Ok: queued as %s.%u\r\n", net_conn_sid(conn),
		                s->transactions);
		if (op->nremote > 0 && env.queued != NULL)
			env.queued(env.queued_ctx);
		log_info("sid=%s event=accept service=%s rip=%s from=%s rcpts=%zu local=%zu remote=%zu "
		         "size=%llu id=%s", net_conn_sid(conn), service_label(s), net_conn_rip(conn),
		         from, s->nrcpts, op->nmailboxes, op->nremote,
		         (unsigned long long)s->data.size, op->blob_id);
	} else {
		net_conn_printf(conn, "%s\r\n", op->err == STORE_ERR_FULL
		                                    ? "452 4.3.1 Insufficient system storage"
		                                    : "451 4.3.0 Local error in processing, try again");
		log_error("sid=%s event=reject service=%s rip=%s from=%s reason=store-failed error=\"%s\"",
		          net_conn_sid(conn), service_label(s), net_conn_rip(conn), from, op->error);
	}
	commit_op_free(op);
	transaction_reset(s);
	smtp_unbusy(s);
}

/* The message is complete: check it, then commit it. */
static void
finish_message(struct smtp_session *s)
{
	struct commit_op *op;
	struct store_job *job;
	const char *msg = NULL;
	unsigned int f = s->data.flags;

	flush_out(s, true);
	if (f & SMTP_DATA_TOO_BIG)
		msg = "552 5.3.4 Message size exceeds fixed maximum message size";
	else if (f & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR))
		msg = "554 5.6.0 Message contains bare CR or LF (RFC 5321 2.3.8)";
	else if (f & SMTP_DATA_NUL)
		msg = "554 5.6.0 Message contains NUL characters";
	else if (f & SMTP_DATA_LONG_LINE)
		msg = "554 5.6.0 Message contains lines longer than 998 characters";
	else if (s->data.received > limits.max_received)
		msg = "554 5.4.6 Too many hops: mail loop detected";
	else if (s->blob_err == STORE_ERR_FULL)
		msg = "452 4.3.1 Insufficient system storage";
	else if (s->blob_err != 0)
		msg = "451 4.3.0 Local error in processing, try again";
	if (msg != NULL) {
		log_info("sid=%s event=reject service=%s rip=%s reason=\"%s\"", net_conn_sid(s->conn),
		         service_label(s), net_conn_rip(s->conn), msg + 10);
		reply(s, msg);
		transaction_reset(s);
		return;
	}

	op = xcalloc(1, sizeof(*op));
	op->conn = s->conn;
	op->s = s;
	op->blob_id = xstrdup(store_blob_id(s->blob));
	op->sender = xstrdup(s->mail_from);
	op->internaldate = (int64_t)time(NULL);
	op->envid = s->envid ? xstrdup(s->envid) : NULL;
	op->ret = s->ret ? xstrdup(s->ret) : NULL;
	op->priority = s->submission ? 0 : 1; /* interactive submissions first */
	for (size_t i = 0; i < s->nrcpts; i++) {
		const struct smtp_route *rt = &s->rcpts[i].route;
		for (size_t j = 0; j < rt->nmailboxes; j++) {
			bool dup = false;
			for (size_t k = 0; k < op->nmailboxes; k++)
				dup = dup || op->mailboxes[k] == rt->mailboxes[j];
			if (dup)
				continue; /* one copy per mailbox, however many aliases lead there */
			op->mailboxes = xrealloc(op->mailboxes, (op->nmailboxes + 1) * sizeof(int64_t));
			op->mailboxes[op->nmailboxes++] = rt->mailboxes[j];
		}
		for (size_t j = 0; j < rt->nremote; j++) {
			bool dup = false;
			for (size_t k = 0; k < op->nremote; k++)
				dup = dup || strcasecmp(op->remote[k], rt->remote[j]) == 0;
			if (dup)
				continue;
			op->remote = xrealloc(op->remote, (op->nremote + 1) * sizeof(char *));
			op->notify = xrealloc(op->notify, (op->nremote + 1) * sizeof(char *));
			op->orcpt = xrealloc(op->orcpt, (op->nremote + 1) * sizeof(char *));
			op->remote[op->nremote] = xstrdup(rt->remote[j]);
			op->notify[op->nremote] = s->rcpts[i].notify ? xstrdup(s->rcpts[i].notify) : NULL;
			/* Reached through an alias: the original recipient is what the sender knows. */
			if (s->rcpts[i].orcpt != NULL)
				op->orcpt[op->nremote] = xstrdup(s->rcpts[i].orcpt);
			else if (strcasecmp(rt->remote[j], s->rcpts[i].address) != 0)
				op->orcpt[op->nremote] = xasprintf("rfc822;%s", s->rcpts[i].address);
			else
				op->orcpt[op->nremote] = NULL;
			op->nremote++;
		}
	}
	job = store_job_new(commit_run, commit_done, op);
	store_job_add_blob(job, &s->blob);
	s->state = SMTP_S_READY;
	smtp_busy(s);
	store_submit(env.store, job);
}

/* Too slow or too long: RFC 5321 4.5.3.2 gives 10 minutes per data block at most. */
static bool
data_too_slow(struct smtp_session *s)
{
	uint64_t elapsed = mono_ms() - s->data_start_ms;
	uint64_t size = s->data.size;

	if (elapsed > limits.data_timeout ||
	    (limits.min_rate > 0 && elapsed > SMTP_SLOW_GRACE_MS &&
	     size * 1000 / elapsed < limits.min_rate)) {
		reply(s, "451 4.4.2 Timeout: data transfer too slow");
		log_info("sid=%s event=reject service=%s rip=%s reason=data-too-slow bytes=%llu ms=%llu",
		         net_conn_sid(s->conn), service_label(s), net_conn_rip(s->conn),
		         (unsigned long long)size, (unsigned long long)elapsed);
		transaction_reset(s);
		net_conn_close_because(s->conn, "data-too-slow");
		return true;
	}
	return false;
}

/* Returns true when more input is needed. */
static bool
input_data(struct smtp_session *s)
{
	size_t len, used;
	const uint8_t *p = net_conn_peek(s->conn, SMTP_CHUNK, &len);
	bool done = false;

	if (len == 0)
		return true;
	used = smtp_data_feed(&s->data, p, len, &s->out, &done);
	net_conn_drain(s->conn, used);
	if (!s->header_done || s->out.len >= SMTP_CHUNK)
		flush_out(s, false);
	if (done) {
		finish_message(s);
		return false;
	}
	if (data_too_slow(s))
		return false;
	return net_conn_input_len(s->conn) == 0;
}

static bool
input_bdat(struct smtp_session *s)
{
	size_t len;
	const uint8_t *p;

	if (s->bdat_remaining > 0) {
		p = net_conn_peek(s->conn, (size_t)MIN(s->bdat_remaining, (uint64_t)SMTP_CHUNK), &len);
		if (len == 0)
			return true;
		if (!s->bdat_discard) {
			smtp_data_feed_raw(&s->data, p, len, &s->out);
			if (!s->header_done || s->out.len >= SMTP_CHUNK)
				flush_out(s, false);
		}
		net_conn_drain(s->conn, len);
		s->bdat_remaining -= len;
		if (s->bdat_remaining > 0) {
			if (!s->bdat_discard && data_too_slow(s))
				return false;
			return net_conn_input_len(s->conn) == 0;
		}
	}
	if (s->bdat_discard) {
		s->state = s->bdat_prev_state;
		if (s->state != SMTP_S_INIT)
			transaction_reset(s);
		reply_error(s, s->bdat_reply);
		return false;
	}
	if (s->bdat_last) {
		finish_message(s);
		return false;
	}
	s->state = SMTP_S_MAIL;
	net_conn_printf(s->conn, "250 2.0.0 %llu octets received\r\n",
	                (unsigned long long)s->data.size);
	return false;
}

/* ---- the command loop ---------------------------------------------------------------------- */

static void
dispatch(struct smtp_session *s, const uint8_t *line, size_t len)
{
	struct smtp_cmd cmd;
	const char *err;

	if (smtp_parse_command(line, len, &cmd, &err) < 0) {
		reply_error(s, err);
		return;
	}
	switch (cmd.verb) {
	case SMTP_VERB_EHLO: cmd_ehlo(s, &cmd, true); break;
	case SMTP_VERB_HELO: cmd_ehlo(s, &cmd, false); break;
	case SMTP_VERB_MAIL: cmd_mail(s, &cmd); break;
	case SMTP_VERB_RCPT: cmd_rcpt(s, &cmd); break;
	case SMTP_VERB_DATA: cmd_data(s); break;
	case SMTP_VERB_BDAT: cmd_bdat(s, &cmd); break;
	case SMTP_VERB_RSET:
		transaction_reset(s);
		reply(s, "250 2.0.0 OK");
		break;
	case SMTP_VERB_NOOP: reply(s, "250 2.0.0 OK"); break;
	case SMTP_VERB_QUIT:
		reply(s, "221 2.0.0 Bye");
		net_conn_close_because(s->conn, "quit");
		break;
	case SMTP_VERB_HELP:
		reply(s, "214 2.0.0 See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY");
		break;
	case SMTP_VERB_VRFY:
		reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
		break;
	case SMTP_VERB_EXPN: reply_error(s, "502 5.5.1 EXPN not available"); break;
	case SMTP_VERB_STARTTLS: cmd_starttls(s); break;
	case SMTP_VERB_AUTH: cmd_auth(s, &cmd); break;
	case SMTP_VERB_UNKNOWN:
	default:
		reply_error(s, "500 5.5.1 Command unrecognized");
		break;
	}
}

/* One SASL response line while in SMTP_S_AUTH. */
static void
input_auth_line(struct smtp_session *s, const uint8_t *line, size_t len)
{
	const char *challenge = NULL, *error = NULL;
	int status = auth_sasl_step(s->sasl, (const char *)line, len, &challenge, &error);

	auth_status(s, status, challenge, error);
}

static void
smtp_input(void *session, struct net_conn *conn)
{
	struct smtp_session *s = session;

	while (!s->busy && !net_conn_is_closing(conn)) {
		size_t max = s->state == SMTP_S_AUTH ? AUTH_MAX_SASL_RESPONSE + 2 : SMTP_MAX_LINE;

		if (s->shutdown_pending && s->state != SMTP_S_DATA && s->state != SMTP_S_BDAT) {
			/* The transaction we waited for is over (accepted or refused). */
			reply(s, "421 4.3.2 Service shutting down");
			net_conn_close_because(conn, "shutdown");
			return;
		}
		const uint8_t *p;
		ssize_t lf;
		size_t len;

		if (s->state == SMTP_S_DATA) {
			if (input_data(s))
				return;
			continue;
		}
		if (s->state == SMTP_S_BDAT) {
			if (input_bdat(s))
				return;
			continue;
		}
		lf = net_conn_find_lf(conn, max);
		if (lf < 0) {
			size_t have = net_conn_input_len(conn);
			bool was_skipping = s->skip_line;
			if (have < max)
				return;
			/* Too long: drop it up to its end, which may be here already or still to come. */
			lf = net_conn_find_lf(conn, have);
			net_conn_drain(conn, lf >= 0 ? (size_t)lf + 1 : have);
			s->skip_line = lf < 0;
			if (!was_skipping) {
				if (s->state == SMTP_S_AUTH) {
					auth_sasl_free(&s->sasl);
					s->state = SMTP_S_READY;
				}
				reply_error(s, "500 5.5.2 Line too long");
			}
			if (lf < 0)
				return;
			continue;
		}
		p = net_conn_peek(conn, (size_t)lf + 1, &len);
		len = (size_t)lf;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (s->skip_line) {
			s->skip_line = false;
		} else if (s->state == SMTP_S_AUTH) {
			input_auth_line(s, p, len);
		} else {
			dispatch(s, p, len);
		}
		/* STARTTLS already discarded the rest of the input; nothing to drain then. */
		if (net_conn_input_len(conn) > (size_t)lf)
			net_conn_drain(conn, (size_t)lf + 1);
		else
			net_conn_drain(conn, net_conn_input_len(conn));
	}
}

static void *
smtp_open(struct net_conn *conn)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	enum net_service svc = net_conn_service(conn);

	s->conn = conn;
	s->submission = svc == NET_SVC_SUBMISSION || svc == NET_SVC_SUBMISSIONS;
	s->state = SMTP_S_INIT;
	/* Room for one decoded chunk plus the held-back header. */
	buf_init(&s->out, SMTP_CHUNK + SMTP_MAX_HEADER_BUFFER + SMTP_CHUNK);
	if (!login_refuse_banned(env.guard, GUARD_SMTP, conn, "421 4.7.0 "))
		net_conn_printf(conn, "220 %s ESMTP Postamt\r\n", env.hostname);
	return s;
}

static void
smtp_tls_done(void *session, struct net_conn *conn)
{
	/* RFC 3207 4.2: the client starts again with EHLO. */
}

static void
smtp_shutdown(void *session, struct net_conn *conn)
{
	struct smtp_session *s = session;

	/* A transaction in progress may finish; everyone else is told to come back. */
	if (s->busy || s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT) {
		s->shutdown_pending = true;
		return;
	}
	reply(s, "421 4.3.2 Service shutting down");
	net_conn_close_because(conn, "shutdown");
}

static void
smtp_close(void *session, struct net_conn *conn)
{
	struct smtp_session *s = session;

	transaction_reset(s);
	auth_sasl_free(&s->sasl);
	buf_deinit(&s->out);
	free(s);
}

static const struct net_proto smtp_proto = {
	smtp_open, smtp_input, smtp_tls_done, smtp_shutdown, smtp_close,
	"421 4.7.0 Too many connections, try again later\r\n",
};

const struct net_proto *
smtp_server_proto(void)
{
	return &smtp_proto;
}
