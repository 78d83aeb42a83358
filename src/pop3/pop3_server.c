/* POP3 sessions: RFC 1939 (USER/PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP, UIDL),
 * CAPA, RESP-CODES, PIPELINING (RFC 2449), AUTH PLAIN/LOGIN (RFC 5034), AUTH-RESP-CODE
 * (RFC 3206) and STLS (RFC 2595).
 *
 * Invariants
 * - The I/O thread never blocks: password checks run on the auth workers, the INBOX listing and
 *   every read of a message file on the lookup pool, QUIT's expunge on the store writer. While
 *   one of them is pending the session is "busy": reading is paused, pipelined input waits.
 * - Multi-line answers are written in pieces while the client reads them: never more than
 *   about half of limits.max_output_buffer is queued, and no message is ever held whole.
 * - DELE only marks. Marked messages are expunged by QUIT, in one store job, and "+OK" is sent
 *   after its commit; a failure answers "-ERR [SYS/TEMP]" and nothing is deleted. A connection
 *   that ends without QUIT deletes nothing (RFC 1939 6).
 * - One POP3 session per mailbox at a time (RFC 1939 4, "exclusive-access lock"): a second
 *   login gets "-ERR [IN-USE]" (RFC 2449 8.1.2).
 * - A unique id is "<UIDVALIDITY>.<UID>" of the INBOX message: stable across sessions and
 *   untouched by flag changes (RFC 1939 7).
 * - Input sent before a STLS handshake is discarded by the network layer (RFC 2595 3.1). */
#include "pop3/pop3_server.h"
#include "core/hmap.h"
#include "core/log.h"
#include "proto/login.h"
#include "pop3/pop3_parser.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define POP3_MAX_CHUNK 65536 /* bytes of a message file read per step */
#define POP3_POLL_MS 10      /* how often to look whether a slow client has read its output */

enum pop3_state {
	POP3_S_AUTHORIZATION,
	POP3_S_SASL,        /* AUTH: waiting for a response line */
	POP3_S_TRANSACTION,
	POP3_S_UPDATE,      /* QUIT: the expunge job is running */
};

struct pop3_limits {
	_Atomic uint64_t max_bad, failure_delay, idle_timeout, max_output;
	atomic_bool plaintext_loopback;
};

static struct pop3_server_env env;
static struct pop3_limits limits;

/* One message of the INBOX as it was at login. */
struct pop3_msg {
	uint32_t uid;
	bool deleted;   /* marked by DELE */
	uint64_t size;  /* bytes, CRLF line ends as stored and sent */
	char blob_id[33];
};

struct pop3_session {
	struct net_conn *conn;
	enum pop3_state state;
	bool busy, shutdown_pending;
	unsigned int bad;                 /* count of refused commands */
	char user[AUTH_MAX_ADDRESS + 1];  /* given by USER, "" before */
	struct auth_sasl *sasl;           /* POP3_S_SASL */
	/* TRANSACTION */
	int64_t account_id;
	char account[AUTH_MAX_ADDRESS + 1];
	bool locked;                      /* holds the maildrop lock of account_id */
	int64_t mailbox_id;
	uint32_t uidvalidity;
	struct pop3_msg *msgs;
	size_t nmsgs;
	size_t ndeleted;                  /* count of marked messages */
	uint64_t size_total, size_deleted; /* bytes */
	unsigned int retrieved;           /* count of RETR/TOP answered, for the log */
	struct pop3_line line;
};

static const char *
service_label(struct net_conn *conn)
{
	return net_service_name(net_conn_service(conn));
}

void
pop3_server_reload(const struct cfg *cfg)
{
	limits.max_bad = cfg->pop3_max_bad_commands;
	limits.idle_timeout = cfg->pop3_idle_timeout;
	limits.failure_delay = cfg->auth_failure_delay;
	limits.max_output = cfg->max_output_buffer;
	limits.plaintext_loopback = cfg->smtp_plaintext_auth_loopback != 0;
}

/* ---- The maildrop lock ----------------------------------------------------------------------- */

static pthread_mutex_t lock_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct hmap *lock_table; /* account id -> non-NULL, while a session holds it */

void
pop3_server_setup(const struct pop3_server_env *e, const struct cfg *cfg)
{
	env = *e;
	pthread_mutex_lock(&lock_mutex);
	if (lock_table == NULL)
		lock_table = hmap_new();
	pthread_mutex_unlock(&lock_mutex);
	pop3_server_reload(cfg);
}

static bool
maildrop_lock(int64_t account_id)
{
	bool ok;

	pthread_mutex_lock(&lock_mutex);
	ok = hmap_get(lock_table, &account_id, sizeof(account_id)) == NULL;
	if (ok)
		(void)hmap_put(lock_table, &account_id, sizeof(account_id), lock_table);
	pthread_mutex_unlock(&lock_mutex);
	return ok;
}

static void
maildrop_unlock(int64_t account_id)
{
	pthread_mutex_lock(&lock_mutex);
	(void)hmap_remove(lock_table, &account_id, sizeof(account_id));
	pthread_mutex_unlock(&lock_mutex);
}

/* ---- Replies ---------------------------------------------------------------------------------- */

static void
reply(struct pop3_session *s, const char *line)
{
	net_conn_printf(s->conn, "%s\r\n", line);
}

/* Counts a refused command; closes at the limit. Returns true when it closed. */
static bool
too_many_errors(struct pop3_session *s)
{
	if (++s->bad < limits.max_bad)
		return false;
	reply(s, "-ERR Too many bad commands, closing connection");
	net_conn_close_because(s->conn, "too-many-errors");
	return true;
}

static void
reply_error(struct pop3_session *s, const char *line)
{
	reply(s, line);
	(void)too_many_errors(s);
}

/* Bytes queued for the client below which the next piece of an answer is written. */
static size_t
output_low_mark(void)
{
	return (size_t)(limits.max_output / 2);
}

/* Bytes of a message file read per step: with stuffing (at most 4/3) one step stays below a
 * sixth of the output cap. */
static size_t
read_chunk_size(void)
{
	return (size_t)MIN((uint64_t)POP3_MAX_CHUNK, limits.max_output / 8);
}

/* ---- Async plumbing --------------------------------------------------------------------------- */

static void pop3_input(void *session, struct net_conn *conn);

/* Marks the session busy: reading pauses until pop3_unbusy(). Holds a connection reference,
 * which the task that ends the busy period hands back (pop3_unbusy, or net_conn_unref when
 * it finds the connection closing). */
static void
pop3_busy(struct pop3_session *s)
{
	s->busy = true;
	net_conn_pause(s->conn);
	net_conn_ref(s->conn);
}

static void
pop3_unbusy(struct pop3_session *s)
{
	struct net_conn *conn = s->conn;

	s->busy = false;
	if (s->shutdown_pending) {
		reply(s, "-ERR [SYS/TEMP] Server shutting down");
		net_conn_close_because(conn, "shutdown");
	} else {
		net_conn_resume(conn);
		/* Pipelined commands may already be buffered: go on with them now. */
		pop3_input(s, conn);
	}
	net_conn_unref(&conn);
}

static bool
auth_allowed(const struct pop3_session *s)
{
	return net_conn_is_tls(s->conn) ||
	       (limits.plaintext_loopback && net_conn_is_loopback(s->conn));
}

/* ---- Login: password check, then the INBOX -------------------------------------------------- */

struct load_op {
	struct net_conn *conn;
	struct pop3_session *s;
	int64_t account_id;
	char user[AUTH_MAX_ADDRESS + 1];
	/* the result */
	int err;           /* STORE_OK, a store_err, or STORE_ERR_NOTFOUND: no INBOX */
	int64_t mailbox_id;
	uint32_t uidvalidity;
	struct pop3_msg *msgs;
	size_t nmsgs, cap;
	uint64_t size_total;
};

static int
load_message_cb(const struct store_message *m, void *ctx)
{
	struct load_op *op = ctx;
	struct pop3_msg *pm;

	if (op->nmsgs == op->cap) {
		op->cap = op->cap ? op->cap * 2 : 64;
		op->msgs = xrealloc(op->msgs, op->cap * sizeof(*op->msgs));
	}
	pm = &op->msgs[op->nmsgs++];
	memset(pm, 0, sizeof(*pm));
	pm->uid = m->uid;
	pm->size = m->size;
	memcpy(pm->blob_id, m->blob_id, sizeof(pm->blob_id));
	op->size_total += m->size;
	return 0;
}

static void load_finish(void *arg);

/* On a lookup worker: the INBOX and its messages, in UID order. */
static void
load_run(void *arg)
{
	struct load_op *op = arg;
	struct store_mailbox mb;
	int ret = store_mailbox_get(env.store, op->account_id, "INBOX", &mb);

	if (ret == 1) {
		op->mailbox_id = mb.id;
		op->uidvalidity = mb.uidvalidity;
		ret = store_message_list(env.store, mb.id, load_message_cb, op);
		op->err = ret < 0 ? ret : STORE_OK;
	} else {
		op->err = ret == 0 ? STORE_ERR_NOTFOUND : ret;
	}
	net_thread_post(net_conn_thread(op->conn), load_finish, op);
}

static void
load_finish(void *arg)
{
	struct load_op *op = arg;
	struct net_conn *conn = op->conn;
	struct pop3_session *s = op->s;
	char user[LOG_SANITIZE_SIZE];

	if (net_conn_is_closing(conn)) {
		maildrop_unlock(op->account_id);
		free(op->msgs);
		free(op);
		net_conn_unref(&conn);
		return;
	}
	log_sanitize_str(user, op->user);
	if (op->err != STORE_OK) {
		maildrop_unlock(op->account_id);
		log_error("sid=%s event=auth-failed service=%s rip=%s user=%s reason=mailbox error=\"%s\"",
		          net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user,
		          store_err_str(op->err));
		reply(s, op->err == STORE_ERR_NOTFOUND ? "-ERR [SYS/PERM] The account has no INBOX"
		                                       : "-ERR [SYS/TEMP] Cannot open the mailbox, "
		                                         "try again later");
		free(op->msgs);
		free(op);
		pop3_unbusy(s);
		return;
	}
	s->state = POP3_S_TRANSACTION;
	s->locked = true;
	s->account_id = op->account_id;
	(void)!str_copy(s->account, sizeof(s->account), op->user);
	s->mailbox_id = op->mailbox_id;
	s->uidvalidity = op->uidvalidity;
	s->msgs = op->msgs;
	s->nmsgs = op->nmsgs;
	s->size_total = op->size_total;
	/* RFC 1939 3: the autologout timer of an authenticated session is at least 10 minutes. */
	net_conn_set_timeout(conn, limits.idle_timeout);
	net_conn_printf(conn, "+OK Logged in, %zu messages (%llu octets)\r\n", s->nmsgs,
	                (unsigned long long)s->size_total);
	log_info("sid=%s event=auth service=%s rip=%s user=%s result=ok messages=%zu",
	         net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user, s->nmsgs);
	free(op);
	pop3_unbusy(s);
}

/* The end of a login, on the I/O thread (after the guard's delay for a failure). */
static void
login_done(struct net_conn *conn, const struct login_result *r, void *ctx)
{
	struct pop3_session *s = ctx;
	char user[LOG_SANITIZE_SIZE];
	struct load_op *load;

	if (net_conn_is_closing(conn)) {
		net_conn_unref(&conn);
		return;
	}
	log_sanitize_str(user, r->user);
	switch (r->result) {
	case AUTH_OK:
		if (!maildrop_lock(r->account_id)) {
			reply(s, "-ERR [IN-USE] The mailbox is in use by another POP3 session");
			log_info("sid=%s event=auth-failed service=%s rip=%s user=%s reason=in-use",
			         net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user);
			break;
		}
		load = xcalloc(1, sizeof(*load));
		load->conn = conn;
		load->s = s;
		load->account_id = r->account_id;
		(void)!str_copy(load->user, sizeof(load->user), r->user);
		/* Still busy: the reference passes to the load. */
		tpool_submit(env.lookups, load_run, load);
		return;
	case AUTH_FAILED:
		reply(s, "-ERR [AUTH] Authentication failed");
		log_info("sid=%s event=auth-failed service=%s rip=%s user=%s reason=credentials",
		         net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user);
		if (too_many_errors(s)) {
			net_conn_unref(&conn);
			return;
		}
		break;
	case AUTH_TEMPFAIL:
		reply(s, "-ERR [SYS/TEMP] Temporary authentication failure, try again later");
		log_warn("sid=%s event=auth-failed service=%s rip=%s user=%s reason=tempfail",
		         net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user);
		break;
	}
	pop3_unbusy(s);
}

/* Starts the password check (USER/PASS or a completed AUTH). user and password are borrowed
 * for the call. */
static void
pop3_login(struct pop3_session *s, const char *user, const char *password)
{
	struct login_env lenv = {env.auth, env.guard, limits.failure_delay};

	if (env.guard != NULL && guard_banned_until(env.guard, GUARD_POP3,
	                                            net_conn_rip(s->conn)) > 0) {
		/* Banned during this session: no more guesses on it. */
		reply(s, "-ERR [SYS/TEMP] Too many failed logins from your address");
		net_conn_close_because(s->conn, "banned");
		return;
	}
	pop3_busy(s);
	login_start(&lenv, GUARD_POP3, s->conn, user, password, login_done, s);
	s->user[0] = '\0'; /* may be user itself: only now */
}

/* ---- AUTHORIZATION commands ------------------------------------------------------------------ */

static void
cmd_capa(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	bool preauth = s->state == POP3_S_AUTHORIZATION;

	net_conn_printf(s->conn, "+OK Capability list follows\r\n"
	                         "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
	if (preauth && !net_conn_is_tls(s->conn))
		net_conn_printf(s->conn, "STLS\r\n");
	if (preauth && auth_allowed(s))
		net_conn_printf(s->conn, "USER\r\nSASL PLAIN LOGIN\r\n");
	net_conn_printf(s->conn, ".\r\n");
}

static void
cmd_stls(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	if (net_conn_is_tls(s->conn)) {
		reply_error(s, "-ERR TLS already active");
		return;
	}
	reply(s, "+OK Begin TLS negotiation");
	if (net_conn_starttls(s->conn) < 0) {
		/* The client now speaks TLS: anything more in clear would be read as commands. */
		net_conn_close_because(s->conn, "tls-unavailable");
		return;
	}
	/* RFC 2595 4: what was said before TLS is forgotten. */
	s->user[0] = '\0';
}

static const char plaintext_refused[] =
	"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS";

static void
cmd_user(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	if (!auth_allowed(s)) {
		reply_error(s, plaintext_refused);
		return;
	}
	if (cmd->rest.len > AUTH_MAX_ADDRESS || memchr(cmd->rest.p, ' ', cmd->rest.len) != NULL) {
		reply_error(s, "-ERR Invalid user name");
		return;
	}
	memcpy(s->user, cmd->rest.p, cmd->rest.len);
	s->user[cmd->rest.len] = '\0';
	/* The same answer for every name: nothing is learnt before PASS. */
	reply(s, "+OK Send PASS");
}

static void
cmd_pass(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	char password[POP3_MAX_LINE];

	if (s->user[0] == '\0') {
		reply_error(s, "-ERR Send USER first");
		return;
	}
	/* USER was accepted, so plaintext logins are allowed here. The line is shorter than the
	 * buffer. */
	memcpy(password, cmd->rest.p, cmd->rest.len);
	password[cmd->rest.len] = '\0';
	pop3_login(s, s->user, password);
	explicit_bzero(password, sizeof(password));
}

/* Handles a SASL step's status. */
static void
auth_status(struct pop3_session *s, int status, const char *challenge)
{
	switch (status) {
	case AUTH_SASL_CONTINUE:
		s->state = POP3_S_SASL;
		/* RFC 5034 4: "+" SP base64 challenge (empty for PLAIN). */
		net_conn_printf(s->conn, "+ %s\r\n", challenge);
		return;
	case AUTH_SASL_CANCEL:
		s->state = POP3_S_AUTHORIZATION;
		auth_sasl_free(&s->sasl);
		reply_error(s, "-ERR Authentication cancelled");
		return;
	case AUTH_SASL_DONE:
		break;
	default:
		s->state = POP3_S_AUTHORIZATION;
		auth_sasl_free(&s->sasl);
		reply_error(s, "-ERR Malformed authentication response");
		return;
	}
	s->state = POP3_S_AUTHORIZATION;
	if (auth_sasl_authzid(s->sasl)[0] != '\0' &&
	    strcasecmp(auth_sasl_authzid(s->sasl), auth_sasl_user(s->sasl)) != 0) {
		auth_sasl_free(&s->sasl);
		reply_error(s, "-ERR [AUTH] Authorization identity refused");
		return;
	}
	pop3_login(s, auth_sasl_user(s->sasl), auth_sasl_password(s->sasl));
	auth_sasl_free(&s->sasl);
}

static void
cmd_auth(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	char mech[32], *initial = NULL;
	enum auth_sasl_mech m;
	const char *challenge = NULL, *error = NULL;
	int status;

	if (!auth_allowed(s)) {
		reply_error(s, plaintext_refused);
		return;
	}
	if (cmd->nargs == 0) {
		/* The mechanism list of the POP3 AUTH draft, which some clients still ask for. */
		net_conn_printf(s->conn, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
		return;
	}
	if (cmd->args[0].len >= sizeof(mech)) {
		reply_error(s, "-ERR Unsupported authentication mechanism");
		return;
	}
	memcpy(mech, cmd->args[0].p, cmd->args[0].len);
	mech[cmd->args[0].len] = '\0';
	if (auth_sasl_mech_parse(mech, &m) < 0) {
		reply_error(s, "-ERR Unsupported authentication mechanism");
		return;
	}
	if (cmd->nargs == 2)
		initial = xmemdup0(cmd->args[1].p, cmd->args[1].len);
	s->sasl = auth_sasl_new(m);
	status = auth_sasl_start(s->sasl, initial, &challenge, &error);
	if (initial != NULL) {
		explicit_bzero(initial, cmd->args[1].len);
		free(initial);
	}
	auth_status(s, status, challenge);
}

/* One SASL response line while in POP3_S_SASL. */
static void
input_sasl(struct pop3_session *s, struct span line)
{
	const char *challenge = NULL, *error = NULL;
	int status = auth_sasl_step(s->sasl, (const char *)line.p, line.len, &challenge, &error);

	auth_status(s, status, challenge);
}

/* ---- TRANSACTION commands -------------------------------------------------------------------- */

/* The message numbered n (1-based), or NULL after an error reply. */
static struct pop3_msg *
msg_arg(struct pop3_session *s, uint32_t n)
{
	if (n == 0 || n > s->nmsgs) {
		reply(s, "-ERR No such message");
		return NULL;
	}
	if (s->msgs[n - 1].deleted) {
		net_conn_printf(s->conn, "-ERR Message %u is deleted\r\n", n);
		return NULL;
	}
	return &s->msgs[n - 1];
}

static void
cmd_stat(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	net_conn_printf(s->conn, "+OK %zu %llu\r\n", s->nmsgs - s->ndeleted,
	                (unsigned long long)(s->size_total - s->size_deleted));
}

/* A LIST or UIDL answer for every message, written while the client keeps up. Owned by the
 * pending task while the session is busy. */
struct list_op {
	struct net_conn *conn;
	struct pop3_session *s;
	bool uidl;
	size_t next; /* index of the next message */
};

/* Writes what fits; returns true when the answer is complete. */
static bool
list_write(struct pop3_session *s, struct list_op *op)
{
	size_t low = output_low_mark();

	while (op->next < s->nmsgs && net_conn_output_len(s->conn) < low) {
		/* A batch between looks at the output, so that the check costs little. */
		for (size_t end = MIN(s->nmsgs, op->next + 256); op->next < end; op->next++) {
			const struct pop3_msg *m = &s->msgs[op->next];
			if (m->deleted)
				continue;
			if (op->uidl)
				net_conn_printf(s->conn, "%zu %u.%u\r\n", op->next + 1, s->uidvalidity,
				                m->uid);
			else
				net_conn_printf(s->conn, "%zu %llu\r\n", op->next + 1,
				                (unsigned long long)m->size);
		}
	}
	if (op->next < s->nmsgs)
		return false;
	net_conn_printf(s->conn, ".\r\n");
	return true;
}

static void
list_poll(void *arg)
{
	struct list_op *op = arg;
	struct net_conn *conn = op->conn;
	struct pop3_session *s = op->s;

	if (net_conn_is_closing(conn)) {
		free(op);
		net_conn_unref(&conn);
		return;
	}
	if (!list_write(s, op)) {
		net_thread_post_delayed(net_conn_thread(conn), POP3_POLL_MS, list_poll, op);
		return;
	}
	free(op);
	pop3_unbusy(s);
}

static void
cmd_list_uidl(struct pop3_session *s, const struct pop3_cmd *cmd, bool uidl)
{
	struct list_op *op;

	if (cmd->nargs == 1) {
		const struct pop3_msg *m = msg_arg(s, cmd->num[0]);
		if (m == NULL)
			return;
		if (uidl)
			net_conn_printf(s->conn, "+OK %u %u.%u\r\n", cmd->num[0], s->uidvalidity, m->uid);
		else
			net_conn_printf(s->conn, "+OK %u %llu\r\n", cmd->num[0],
			                (unsigned long long)m->size);
		return;
	}
	if (uidl)
		reply(s, "+OK Unique-ID listing follows");
	else
		net_conn_printf(s->conn, "+OK %zu messages (%llu octets)\r\n", s->nmsgs - s->ndeleted,
		                (unsigned long long)(s->size_total - s->size_deleted));
	op = xcalloc(1, sizeof(*op));
	op->conn = s->conn;
	op->s = s;
	op->uidl = uidl;
	if (list_write(s, op)) {
		free(op);
		return;
	}
	pop3_busy(s);
	net_thread_post_delayed(net_conn_thread(s->conn), POP3_POLL_MS, list_poll, op);
}

static void
cmd_list(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	cmd_list_uidl(s, cmd, false);
}

static void
cmd_uidl(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	cmd_list_uidl(s, cmd, true);
}

/* RETR or TOP in progress: a lookup worker reads and stuffs the next piece of the message file,
 * the I/O thread writes it once the client has read enough of the previous ones. The op belongs
 * to whichever task is pending (worker, post or timer), never to two at once. */
struct send_op {
	struct net_conn *conn;
	struct pop3_session *s;
	char *blob_id;        /* of the message */
	int fd;               /* -1 until opened */
	uint64_t size;        /* bytes, for the "+OK" */
	bool top;
	bool started;         /* the "+OK" is out */
	bool eof;             /* the final piece (with ".\r\n") is in out */
	int err;              /* errno of a failed open or read */
	struct pop3_stuff stuff;
	uint8_t *chunk;       /* read buffer, chunk_size bytes */
	size_t chunk_size;
	struct buf out;       /* stuffed bytes to write */
};

static void
send_free(struct send_op *op)
{
	if (op->fd >= 0)
		close(op->fd);
	free(op->blob_id);
	free(op->chunk);
	buf_deinit(&op->out);
	free(op);
}

static void send_step(void *arg);

/* On a lookup worker: the next piece. */
static void
send_run(void *arg)
{
	struct send_op *op = arg;
	ssize_t n;

	if (op->fd < 0) {
		op->fd = store_blob_open(env.store, op->blob_id);
		if (op->fd < 0) {
			op->err = errno;
			net_thread_post(net_conn_thread(op->conn), send_step, op);
			return;
		}
	}
	do
		n = read(op->fd, op->chunk, op->chunk_size);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		op->err = errno;
	} else {
		if (n > 0)
			(void)pop3_stuff_feed(&op->stuff, op->chunk, (size_t)n, &op->out);
		if (n == 0 || op->stuff.done) {
			pop3_stuff_finish(&op->stuff, &op->out);
			op->eof = true;
		}
	}
	net_thread_post(net_conn_thread(op->conn), send_step, op);
}

static void
send_wait(void *arg)
{
	struct send_op *op = arg;
	struct net_conn *conn = op->conn;

	if (net_conn_is_closing(conn)) {
		send_free(op);
		net_conn_unref(&conn);
		return;
	}
	if (net_conn_output_len(conn) < output_low_mark())
		tpool_submit(env.lookups, send_run, op);
	else
		net_thread_post_delayed(net_conn_thread(conn), POP3_POLL_MS, send_wait, op);
}

static void
send_step(void *arg)
{
	struct send_op *op = arg;
	struct net_conn *conn = op->conn;
	struct pop3_session *s = op->s;

	if (net_conn_is_closing(conn)) {
		send_free(op);
		net_conn_unref(&conn);
		return;
	}
	if (op->err != 0) {
		if (!op->started) {
			reply(s, op->err == ENOENT ? "-ERR Message was removed meanwhile"
			                           : "-ERR [SYS/TEMP] Cannot read the message, try again");
		}
		log_error("sid=%s event=error service=%s rip=%s reason=\"cannot read %s: %s\"",
		          net_conn_sid(conn), service_label(conn), net_conn_rip(conn), op->blob_id,
		          strerror(op->err));
		if (op->started) {
			/* Part of the answer is out: the client must not take it for the message. */
			net_conn_close_because(conn, "read-error");
			send_free(op);
			net_conn_unref(&conn);
			return;
		}
		send_free(op);
		pop3_unbusy(s);
		return;
	}
	if (!op->started) {
		if (op->top)
			reply(s, "+OK Top of message follows");
		else
			net_conn_printf(conn, "+OK %llu octets\r\n", (unsigned long long)op->size);
		op->started = true;
	}
	net_conn_write(conn, op->out.data, op->out.len);
	buf_reset(&op->out);
	if (op->eof) {
		s->retrieved++;
		send_free(op);
		pop3_unbusy(s);
		return;
	}
	send_wait(op);
}

static void
send_message(struct pop3_session *s, const struct pop3_msg *m, bool top, uint32_t lines)
{
	struct send_op *op;

	op = xcalloc(1, sizeof(*op));
	op->conn = s->conn;
	op->s = s;
	op->blob_id = xstrdup(m->blob_id);
	op->fd = -1;
	op->size = m->size;
	op->top = top;
	op->chunk_size = read_chunk_size();
	op->chunk = xmalloc(op->chunk_size);
	buf_init(&op->out, op->chunk_size * 2 + 16);
	pop3_stuff_init(&op->stuff, top, lines);
	pop3_busy(s);
	tpool_submit(env.lookups, send_run, op);
}

static void
cmd_retr(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	const struct pop3_msg *m = msg_arg(s, cmd->num[0]);

	if (m != NULL)
		send_message(s, m, false, 0);
}

static void
cmd_top(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	const struct pop3_msg *m = msg_arg(s, cmd->num[0]);

	if (m != NULL)
		send_message(s, m, true, cmd->num[1]);
}

static void
cmd_dele(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	struct pop3_msg *m = msg_arg(s, cmd->num[0]);

	if (m == NULL)
		return;
	m->deleted = true;
	s->ndeleted++;
	s->size_deleted += m->size;
	net_conn_printf(s->conn, "+OK Message %u deleted\r\n", cmd->num[0]);
}

static void
cmd_rset(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	for (size_t i = 0; i < s->nmsgs; i++)
		s->msgs[i].deleted = false;
	s->ndeleted = 0;
	s->size_deleted = 0;
	net_conn_printf(s->conn, "+OK %zu messages (%llu octets)\r\n", s->nmsgs,
	                (unsigned long long)s->size_total);
}

static void
cmd_noop(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	reply(s, "+OK");
}

/* ---- QUIT and the UPDATE state ---------------------------------------------------------------- */

struct expunge_op {
	struct net_conn *conn;
	struct pop3_session *s;
	int64_t account_id; /* its maildrop lock passes to the op */
	int64_t mailbox_id;
	uint32_t *uids;
	size_t nuids;
	unsigned int retrieved;
	char user[AUTH_MAX_ADDRESS + 1];
	/* the result */
	int err;
	char error[256];
};

/* On the writer thread, inside the transaction: all or nothing. */
static int
expunge_run(struct store_txn *txn, void *ctx)
{
	struct expunge_op *op = ctx;

	for (size_t i = 0; i < op->nuids; i++) {
		int ret = store_txn_expunge(txn, op->mailbox_id, op->uids[i]);
		/* Expunged meanwhile (by IMAP): it is gone, which is what was asked. */
		if (ret != STORE_OK && ret != STORE_ERR_NOTFOUND)
			return ret;
	}
	return STORE_OK;
}

static void expunge_finish(void *arg);

static void
expunge_done(struct store_job *job, void *ctx)
{
	struct expunge_op *op = ctx;
	const char *error = NULL;

	op->err = store_job_result(job, &error);
	if (error != NULL && op->err != STORE_OK)
		(void)!str_copy(op->error, sizeof(op->error), error);
	store_job_free(&job);
	net_thread_post(net_conn_thread(op->conn), expunge_finish, op);
}

static void
expunge_finish(void *arg)
{
	struct expunge_op *op = arg;
	struct net_conn *conn = op->conn;
	char user[LOG_SANITIZE_SIZE];

	maildrop_unlock(op->account_id);
	log_sanitize_str(user, op->user);
	if (op->err == STORE_OK) {
		log_info("sid=%s event=update service=%s rip=%s user=%s retrieved=%u deleted=%zu",
		         net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user,
		         op->retrieved, op->nuids);
	} else {
		log_error("sid=%s event=update service=%s rip=%s user=%s result=failed error=\"%s\"",
		          net_conn_sid(conn), service_label(conn), net_conn_rip(conn), user,
		          op->error[0] ? op->error : store_err_str(op->err));
	}
	if (!net_conn_is_closing(conn)) {
		if (op->err == STORE_OK)
			net_conn_printf(conn, "+OK Bye, %zu messages deleted\r\n", op->nuids);
		else
			net_conn_printf(conn, "-ERR [SYS/TEMP] Messages could not be deleted, "
			                      "none were; try again\r\n");
		net_conn_close_because(conn, "quit");
	}
	free(op->uids);
	free(op);
	net_conn_unref(&conn);
}

static void
cmd_quit(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	struct expunge_op *op;
	struct store_job *job;
	size_t n = 0;

	if (s->state != POP3_S_TRANSACTION || s->ndeleted == 0) {
		if (s->state == POP3_S_TRANSACTION) {
			char user[LOG_SANITIZE_SIZE];
			log_info("sid=%s event=update service=%s rip=%s user=%s retrieved=%u deleted=0",
			         net_conn_sid(s->conn), service_label(s->conn), net_conn_rip(s->conn),
			         log_sanitize_str(user, s->account), s->retrieved);
		}
		reply(s, "+OK Bye");
		net_conn_close_because(s->conn, "quit");
		return;
	}
	op = xcalloc(1, sizeof(*op));
	op->conn = s->conn;
	op->s = s;
	op->account_id = s->account_id;
	op->mailbox_id = s->mailbox_id;
	op->retrieved = s->retrieved;
	(void)!str_copy(op->user, sizeof(op->user), s->account);
	op->uids = xmalloc(s->ndeleted * sizeof(*op->uids));
	for (size_t i = 0; i < s->nmsgs; i++) {
		if (s->msgs[i].deleted)
			op->uids[n++] = s->msgs[i].uid;
	}
	op->nuids = n;
	s->locked = false; /* the op releases it after the commit */
	s->state = POP3_S_UPDATE;
	pop3_busy(s);
	job = store_job_new(expunge_run, expunge_done, op);
	store_submit(env.store, job);
}

/* ---- The command loop ------------------------------------------------------------------------- */

#define IN_AUTH (1u << POP3_S_AUTHORIZATION)
#define IN_TRANS (1u << POP3_S_TRANSACTION)

static const struct pop3_command {
	enum pop3_verb verb;
	void (*run)(struct pop3_session *s, const struct pop3_cmd *cmd);
	unsigned int states; /* IN_* */
} commands[] = {
	{POP3_VERB_CAPA, cmd_capa, IN_AUTH | IN_TRANS},
	{POP3_VERB_NOOP, cmd_noop, IN_AUTH | IN_TRANS},
	{POP3_VERB_QUIT, cmd_quit, IN_AUTH | IN_TRANS},
	{POP3_VERB_STLS, cmd_stls, IN_AUTH},
	{POP3_VERB_USER, cmd_user, IN_AUTH},
	{POP3_VERB_PASS, cmd_pass, IN_AUTH},
	{POP3_VERB_AUTH, cmd_auth, IN_AUTH},
	{POP3_VERB_STAT, cmd_stat, IN_TRANS},
	{POP3_VERB_LIST, cmd_list, IN_TRANS},
	{POP3_VERB_UIDL, cmd_uidl, IN_TRANS},
	{POP3_VERB_RETR, cmd_retr, IN_TRANS},
	{POP3_VERB_TOP, cmd_top, IN_TRANS},
	{POP3_VERB_DELE, cmd_dele, IN_TRANS},
	{POP3_VERB_RSET, cmd_rset, IN_TRANS},
};

static void
dispatch(struct pop3_session *s, struct span line)
{
	struct pop3_cmd cmd;
	const char *err;

	if (pop3_parse_command(line.p, line.len, &cmd, &err) < 0) {
		net_conn_printf(s->conn, "-ERR %s\r\n", err);
		(void)too_many_errors(s);
		return;
	}
	/* USER then anything but PASS starts over (RFC 1939 7). */
	if (cmd.verb != POP3_VERB_PASS)
		s->user[0] = '\0';
	for (size_t i = 0; i < N_ELEMENTS(commands); i++) {
		if (commands[i].verb != cmd.verb)
			continue;
		if (!(commands[i].states & (1u << s->state))) {
			reply_error(s, s->state == POP3_S_AUTHORIZATION ? "-ERR Log in first"
			                                                : "-ERR Already logged in");
			return;
		}
		commands[i].run(s, &cmd);
		return;
	}
	reply_error(s, "-ERR Unknown command");
}

static void
pop3_input(void *session, struct net_conn *conn)
{
	struct pop3_session *s = session;

	while (!s->busy && !net_conn_is_closing(conn)) {
		size_t max = s->state == POP3_S_SASL ? POP3_MAX_SASL_LINE : POP3_MAX_LINE;
		size_t avail, used;
		const uint8_t *p;
		int ret;

		if (s->shutdown_pending) {
			reply(s, "-ERR [SYS/TEMP] Server shutting down");
			net_conn_close_because(conn, "shutdown");
			return;
		}
		p = net_conn_peek(conn, max, &avail);
		if (avail == 0)
			return;
		ret = pop3_line_feed(&s->line, p, avail, max, &used);
		net_conn_drain(conn, used);
		if (ret == 0)
			continue;
		if (ret < 0) {
			if (s->state == POP3_S_SASL) {
				auth_sasl_free(&s->sasl);
				s->state = POP3_S_AUTHORIZATION;
			}
			if (s->line.too_long) {
				reply(s, "-ERR Line too long");
				net_conn_close_because(conn, "line-too-long");
				return;
			}
			net_conn_printf(conn, "-ERR %s\r\n", s->line.error);
			pop3_line_wipe(&s->line);
			(void)too_many_errors(s);
			continue;
		}
		if (s->state == POP3_S_SASL)
			input_sasl(s, pop3_line_get(&s->line));
		else
			dispatch(s, pop3_line_get(&s->line));
		/* Passwords and AUTH responses pass through the line: wipe it at once. */
		pop3_line_wipe(&s->line);
	}
}

static void *
pop3_open(struct net_conn *conn)
{
	struct pop3_session *s = xcalloc(1, sizeof(*s));

	s->conn = conn;
	s->state = POP3_S_AUTHORIZATION;
	pop3_line_init(&s->line);
	if (!login_refuse_banned(env.guard, GUARD_POP3, conn, "-ERR [SYS/TEMP] "))
		net_conn_printf(conn, "+OK %s Postamt POP3 ready\r\n", env.hostname);
	return s;
}

static void
pop3_tls_done(void *session, struct net_conn *conn)
{
	/* RFC 2595 4: the client asks for CAPA again; nothing to send. */
}

static void
pop3_shutdown(void *session, struct net_conn *conn)
{
	struct pop3_session *s = session;

	/* A running step (login, answer, QUIT's commit) finishes first. No UPDATE without QUIT:
	 * marked messages stay. */
	if (s->busy) {
		s->shutdown_pending = true;
		return;
	}
	reply(s, "-ERR [SYS/TEMP] Server shutting down");
	net_conn_close_because(conn, "shutdown");
}

static void
pop3_close(void *session, struct net_conn *conn)
{
	struct pop3_session *s = session;

	if (s->locked)
		maildrop_unlock(s->account_id);
	auth_sasl_free(&s->sasl);
	free(s->msgs);
	explicit_bzero(s, sizeof(*s));
	free(s);
}

static const struct net_proto pop3_proto = {
	pop3_open, pop3_input, pop3_tls_done, pop3_shutdown, pop3_close,
	"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
};

const struct net_proto *
pop3_server_proto(void)
{
	return &pop3_proto;
}
