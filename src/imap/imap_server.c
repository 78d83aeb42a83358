/* The IMAP server: connections, command parsing, login, dispatch to workers, IDLE and change
 * notices (see imap_session.h for the threading rules). */
#include "imap/imap_session.h"

#include "core/log.h"
#include "proto/login.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct imap_server_env imap_env;
struct imap_limits imap_limits;

static void imap_input(void *session, struct net_conn *conn);
static void imap_session_free(struct imap_session *s);

void
imap_server_reload(const struct cfg *cfg)
{
	imap_limits.timeout = cfg->imap_timeout;
	imap_limits.idle_timeout = cfg->imap_idle_timeout;
	imap_limits.max_bad = cfg->imap_max_bad_commands;
	imap_limits.append_limit = cfg->imap_append_limit;
	imap_limits.failure_delay = cfg->auth_failure_delay;
	imap_limits.plaintext_loopback = cfg->imap_plaintext_auth_loopback != 0;
	imap_limits.default_quota = cfg->storage_quota;
	imap_limits.search_index_budget = cfg->imap_search_index_budget;
}

/* ---- change notices -------------------------------------------------------------------------
 * The store's change hook runs on its writer thread; watches are found by mailbox id under one
 * lock and each gets a task posted to its session's I/O thread. A watch outlives its session
 * while such tasks are in flight (refs). */

#define WATCH_BUCKETS 1024

struct imap_watch {
	struct imap_watch *next;
	int64_t mailbox_id;
	struct net_thread *thread;
	struct imap_session *s; /* NULL once the session dropped the watch (I/O thread only) */
	atomic_uint refs;
	atomic_bool posted;     /* a notice task is pending: coalesce */
	_Atomic uint64_t modseq; /* the highest MODSEQ of the notices it coalesces */
};

static void
atomic_max_u64(_Atomic uint64_t *a, uint64_t v)
{
	uint64_t cur = atomic_load(a);

	while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
		;
}

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct imap_watch *watch_buckets[WATCH_BUCKETS];

static size_t
watch_bucket(int64_t mailbox_id)
{
	return (size_t)((uint64_t)mailbox_id * 0x9E3779B97F4A7C15ull >> 54) % WATCH_BUCKETS;
}

static void
watch_unref(struct imap_watch *w)
{
	if (atomic_fetch_sub(&w->refs, 1) == 1)
		free(w);
}

static void run_idle_sync(struct imap_session *s);

static void
watch_task(void *arg)
{
	struct imap_watch *w = arg;
	struct imap_session *s = w->s;

	atomic_store(&w->posted, false);
	if (s != NULL && !s->dead) {
		atomic_max_u64(&s->notice_modseq, atomic_exchange(&w->modseq, 0));
		atomic_store(&s->changed, true);
		if (s->idling && !s->busy)
			run_idle_sync(s);
	}
	watch_unref(w);
}

static void
imap_change_hook(int64_t mailbox_id, uint64_t modseq, void *ctx)
{
	(void)ctx;
	pthread_mutex_lock(&watch_lock);
	for (struct imap_watch *w = watch_buckets[watch_bucket(mailbox_id)]; w != NULL;
	     w = w->next) {
		if (w->mailbox_id != mailbox_id)
			continue;
		/* before the coalescing: a pending task then hands this MODSEQ on too */
		atomic_max_u64(&w->modseq, modseq);
		if (atomic_exchange(&w->posted, true))
			continue;
		atomic_fetch_add(&w->refs, 1);
		net_thread_post(w->thread, watch_task, w);
	}
	pthread_mutex_unlock(&watch_lock);
}

void
imap_watch_set(struct imap_session *s, int64_t mailbox_id)
{
	struct imap_watch *w = s->watch;

	if (w != NULL) {
		pthread_mutex_lock(&watch_lock);
		for (struct imap_watch **pp = &watch_buckets[watch_bucket(w->mailbox_id)];
		     *pp != NULL; pp = &(*pp)->next) {
			if (*pp == w) {
				*pp = w->next;
				break;
			}
		}
		pthread_mutex_unlock(&watch_lock);
		w->s = NULL;
		s->watch = NULL;
		watch_unref(w);
	}
	if (mailbox_id == 0)
		return;
	w = xcalloc(1, sizeof(*w));
	w->mailbox_id = mailbox_id;
	w->thread = net_conn_thread(s->conn);
	w->s = s;
	atomic_init(&w->refs, 1);
	atomic_init(&w->posted, false);
	pthread_mutex_lock(&watch_lock);
	w->next = watch_buckets[watch_bucket(mailbox_id)];
	watch_buckets[watch_bucket(mailbox_id)] = w;
	pthread_mutex_unlock(&watch_lock);
	s->watch = w;
	/* A change between the SELECT's snapshot and now sent no notice to this session. The
	 * notices of the mailbox before count no more. */
	atomic_store(&s->notice_modseq, 0);
	atomic_store(&s->must_look, true);
	atomic_store(&s->changed, true);
}

void
imap_watch_request(struct imap_session *s, int64_t mailbox_id)
{
	s->watch_request = mailbox_id;
	s->watch_pending = true;
}

void
imap_server_setup(const struct imap_server_env *env, const struct cfg *cfg)
{
	imap_env = *env;
	imap_server_reload(cfg);
	store_set_change_hook(env->store, imap_change_hook, NULL);
}

void
imap_server_cleanup(void)
{
	if (imap_env.store != NULL)
		store_set_change_hook(imap_env.store, NULL, NULL);
}

/* ---- output ------------------------------------------------------------------------------ */

void
imap_out(struct imap_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)buf_vprintf(&s->out, fmt, ap);
	va_end(ap);
}

void
imap_tagged(struct imap_session *s, const char *status, const char *fmt, ...)
{
	va_list ap;

	(void)buf_printf(&s->out, "%s %s ", s->cmd != NULL ? s->cmd->tag : "*", status);
	va_start(ap, fmt);
	(void)buf_vprintf(&s->out, fmt, ap);
	va_end(ap);
	(void)buf_append_str(&s->out, "\r\n");
}

void
imap_out_astring(struct imap_session *s, const char *str)
{
	bool atom = str[0] != '\0';
	bool quotable = true;

	for (const unsigned char *p = (const unsigned char *)str; *p != '\0'; p++) {
		if (*p <= 0x20 || *p >= 0x7f || strchr("(){%*\"\\]", *p) != NULL)
			atom = false;
		/* 8-bit octets only quoted for a client that accepts UTF-8 there (RFC 6855 3). */
		if (*p == '\r' || *p == '\n' || (*p >= 0x80 && !s->utf8 && !s->rev2))
			quotable = false;
	}
	if (atom && strcasecmp(str, "NIL") != 0) {
		(void)buf_append_str(&s->out, str);
	} else if (quotable) {
		(void)buf_append_byte(&s->out, '"');
		for (const char *p = str; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				(void)buf_append_byte(&s->out, '\\');
			(void)buf_append_byte(&s->out, (uint8_t)*p);
		}
		(void)buf_append_byte(&s->out, '"');
	} else {
		(void)buf_printf(&s->out, "{%zu}\r\n%s", strlen(str), str);
	}
}

void
imap_tagged_store_error(struct imap_session *s, int err, const char *what)
{
	switch (err) {
	case STORE_ERR_NOTFOUND:
		imap_tagged(s, "NO", "[NONEXISTENT] %s: no such mailbox or message", what);
		break;
	case STORE_ERR_EXISTS:
		imap_tagged(s, "NO", "[ALREADYEXISTS] %s: already exists", what);
		break;
	case STORE_ERR_INVALID:
		imap_tagged(s, "NO", "[CANNOT] %s: not possible", what);
		break;
	case STORE_ERR_FULL:
		imap_tagged(s, "NO", "[OVERQUOTA] %s: the server is out of space, try again later",
		            what);
		break;
	default:
		imap_tagged(s, "NO", "[UNAVAILABLE] %s: temporary failure, try again later", what);
		break;
	}
}

static const char *const imap_flag_names[] = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                              "\\Draft"};

void
imap_out_flags(struct imap_session *s, uint32_t flags, const char *keywords)
{
	bool first = true;

	(void)buf_append_byte(&s->out, '(');
	for (size_t i = 0; i < N_ELEMENTS(imap_flag_names); i++) {
		if ((flags & (1u << i)) == 0)
			continue;
		if (!first)
			(void)buf_append_byte(&s->out, ' ');
		(void)buf_append_str(&s->out, imap_flag_names[i]);
		first = false;
	}
	if (keywords != NULL && keywords[0] != '\0') {
		if (!first)
			(void)buf_append_byte(&s->out, ' ');
		(void)buf_append_str(&s->out, keywords);
	}
	(void)buf_append_byte(&s->out, ')');
}

int
imap_parse_flags(const struct imap_arg *args, size_t n, uint32_t *flags_r, char *kw)
{
	size_t len = 0;

	*flags_r = 0;
	kw[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const char *f;
		bool known = false;

		if (imap_arg_get_atom(&args[i], &f) < 0)
			return -1;
		if (f[0] == '\\') {
			for (size_t j = 0; j < N_ELEMENTS(imap_flag_names); j++) {
				if (strcasecmp(f, imap_flag_names[j]) == 0) {
					*flags_r |= 1u << j;
					known = true;
				}
			}
			if (!known && strcasecmp(f, "\\Recent") != 0)
				return -1;
			continue;
		}
		if (strchr(f, '*') != NULL || strchr(f, '%') != NULL || strchr(f, ']') != NULL)
			return -1;
		if (len + strlen(f) + 2 > STORE_KEYWORDS_MAX)
			return -1;
		if (len > 0)
			kw[len++] = ' ';
		memcpy(kw + len, f, strlen(f) + 1);
		len += strlen(f);
	}
	return 0;
}

/* ---- capabilities ------------------------------------------------------------------------- */

static bool
login_allowed(const struct imap_session *s)
{
	return net_conn_is_tls(s->conn) ||
	       (imap_limits.plaintext_loopback && net_conn_is_loopback(s->conn));
}

static void
out_capabilities(struct imap_session *s)
{
	imap_out(s, "IMAP4rev1 IMAP4rev2 SASL-IR ID ENABLE");
	if (s->state == IMAP_NOTAUTH) {
		imap_out(s, " LITERAL-");
		if (!net_conn_is_tls(s->conn))
			imap_out(s, " STARTTLS");
		if (login_allowed(s))
			imap_out(s, " AUTH=PLAIN AUTH=LOGIN");
		else
			imap_out(s, " LOGINDISABLED");
		return;
	}
	imap_out(s, " LITERAL+ UTF8=ACCEPT IDLE UIDPLUS MOVE NAMESPACE UNSELECT CHILDREN SPECIAL-USE "
	            "CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS STATUS=SIZE CONDSTORE QRESYNC "
	            "ESEARCH SEARCHRES SORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES MULTIAPPEND "
	            "BINARY APPENDLIMIT=%llu QUOTA QUOTA=RES-STORAGE%s",
	         (unsigned long long)imap_limits.append_limit,
	         net_conn_is_compressed(s->conn) ? "" : " COMPRESS=DEFLATE");
}

/* ---- session life -------------------------------------------------------------------------- */

static void
flush_out(struct imap_session *s)
{
	if (s->out.len > 0) {
		net_conn_write(s->conn, s->out.data, s->out.len);
		buf_reset(&s->out);
	}
	/* A worker may have grown it for a big FETCH: give the memory back. */
	if (s->out.cap > 8 * 1024) {
		buf_deinit(&s->out);
		buf_init(&s->out, SIZE_MAX / 2);
	}
}

static void
too_many_errors(struct imap_session *s)
{
	if (++s->bad < imap_limits.max_bad)
		return;
	net_conn_printf(s->conn, "* BYE Too many invalid commands\r\n");
	net_conn_close_because(s->conn, "too-many-errors");
}

static void
appends_discard(struct imap_session *s)
{
	for (size_t i = 0; i < s->nappends; i++)
		store_blob_free(&s->appends[i].blob);
	s->nappends = 0;
	s->append_failed = false;
}

static void
set_limits(struct imap_session *s)
{
	imap_parser_limits_default(&s->limits, s->state != IMAP_NOTAUTH);
	if (s->state != IMAP_NOTAUTH) {
		s->limits.max_nonsync_literal = UINT64_MAX; /* LITERAL+ */
		s->limits.max_append_literal = imap_limits.append_limit;
		s->limits.stream_literal_min = 4096;
	}
	s->limits.utf8 = s->utf8 || s->rev2;
	imap_parser_set_limits(s->parser, &s->limits);
}

static void *
imap_open(struct net_conn *conn)
{
	struct imap_session *s = xcalloc(1, sizeof(*s));

	s->conn = conn;
	s->state = IMAP_NOTAUTH;
	buf_init(&s->out, SIZE_MAX / 2);
	s->parser = imap_parser_new(NULL);
	set_limits(s);
	net_conn_set_timeout(conn, imap_limits.timeout);
	if (login_refuse_banned(imap_env.guard, GUARD_IMAP, conn, "* BYE [UNAVAILABLE] "))
		return s;
	imap_out(s, "* OK [CAPABILITY ");
	out_capabilities(s);
	imap_out(s, "] %s Postamt IMAP ready\r\n", imap_env.hostname);
	flush_out(s);
	return s;
}

static void
imap_session_free(struct imap_session *s)
{
	imap_watch_set(s, 0);
	imap_view_free(&s->view);
	appends_discard(s);
	auth_sasl_free(&s->sasl);
	imap_parser_free(&s->parser);
	buf_deinit(&s->out);
	free(s);
}

static void
imap_close(void *session, struct net_conn *conn)
{
	struct imap_session *s = session;

	(void)conn;
	if (s->busy) {
		s->dead = true; /* the work in flight frees it when it returns */
		return;
	}
	imap_session_free(s);
}

static void
imap_shutdown(void *session, struct net_conn *conn)
{
	struct imap_session *s = session;

	if (s->busy) {
		s->shutdown_pending = true;
		return;
	}
	net_conn_printf(conn, "* BYE [UNAVAILABLE] Server shutting down, reconnect later\r\n");
	net_conn_close_because(conn, "shutdown");
}

static void
imap_tls_done(void *session, struct net_conn *conn)
{
	struct imap_session *s = session;

	(void)conn;
	s->tls_starting = false;
}

/* ---- busy / workers ----------------------------------------------------------------------- */

static void
session_busy(struct imap_session *s)
{
	s->busy = true;
	net_conn_pause(s->conn);
	net_conn_ref(s->conn);
}

/* Back on the I/O thread after work: sends the output and goes on reading. Returns false when
 * the session is gone (freed). */
static bool
session_unbusy(struct imap_session *s)
{
	struct net_conn *conn = s->conn;

	s->busy = false;
	if (s->dead) {
		imap_session_free(s);
		net_conn_unref(&conn);
		return false;
	}
	if (s->watch_pending) {
		s->watch_pending = false;
		imap_watch_set(s, s->watch_request);
	}
	flush_out(s);
	if (s->state == IMAP_LOGOUT) {
		net_conn_close_because(conn, "logout");
	} else if (s->shutdown_pending && !s->idling) {
		net_conn_printf(conn, "* BYE [UNAVAILABLE] Server shutting down, reconnect later\r\n");
		net_conn_close_because(conn, "shutdown");
	} else {
		net_conn_resume(conn);
	}
	net_conn_unref(&conn);
	return true;
}

static void worker_run(void *arg);

/* A command that was to continue will not (the connection went). */
static void
resume_abandon(struct imap_session *s)
{
	if (s->resume_free != NULL && s->resume_ctx != NULL)
		s->resume_free(s->resume_ctx);
	s->resume = NULL;
	s->resume_ctx = NULL;
	s->resume_free = NULL;
}

static void
command_done(struct imap_session *s)
{
	s->cmd = NULL;
	appends_discard(s);
	imap_parser_reset(s->parser);
}

static void
worker_finish(void *arg)
{
	struct imap_session *s = arg;

	if (s->resume != NULL && !s->dead && !net_conn_is_closing(s->conn)) {
		/* A long response: send what is ready and go on once most of it left. */
		flush_out(s);
		if (net_conn_output_len(s->conn) > IMAP_OUT_CHUNK) {
			net_thread_post_delayed(net_conn_thread(s->conn), 5, worker_finish, s);
			return;
		}
		tpool_submit(imap_env.workers, worker_run, s);
		return;
	}
	if (s->resume != NULL)
		resume_abandon(s);
	if (s->idle_sync_running) {
		s->idle_sync_running = false;
		if (!session_unbusy(s))
			return;
		/* More changes may have come while the sync ran. */
		if (atomic_load(&s->changed) && s->idling)
			run_idle_sync(s);
		else
			imap_input(s, s->conn); /* "DONE" may have arrived meanwhile */
		return;
	}
	if (!s->dead)
		command_done(s);
	if (!session_unbusy(s))
		return;
	imap_input(s, s->conn);
}

static void dispatch_worker(struct imap_session *s);

static void
worker_run(void *arg)
{
	struct imap_session *s = arg;

	/* One snapshot for the command's reads (a write it waits for starts a new one). */
	store_read_pin(imap_env.store);
	if (s->dead) {
		resume_abandon(s);
	} else if (s->resume != NULL) {
		int (*fn)(struct imap_session *) = s->resume;

		s->resume = NULL;
		(void)fn(s);
	} else if (s->idle_sync_running) {
		(void)imap_view_sync(s, true);
	} else {
		dispatch_worker(s);
	}
	store_read_unpin(imap_env.store);
	net_thread_post(net_conn_thread(s->conn), worker_finish, s);
}

static void
to_worker(struct imap_session *s)
{
	session_busy(s);
	tpool_submit(imap_env.workers, worker_run, s);
}

static void
run_idle_sync(struct imap_session *s)
{
	if (s->view == NULL)
		return;
	s->idle_sync_running = true;
	session_busy(s);
	tpool_submit(imap_env.workers, worker_run, s);
}

/* ---- login ------------------------------------------------------------------------------- */

/* The end of a login, on the I/O thread (after the guard's delay for a failure). */
static void
login_done(struct net_conn *conn, const struct login_result *r, void *ctx)
{
	struct imap_session *s = ctx;
	char user[LOG_SANITIZE_SIZE];

	(void)conn;
	if (s->dead) {
		(void)session_unbusy(s);
		return;
	}
	log_sanitize_str(user, r->user);
	switch (r->result) {
	case AUTH_OK:
		s->state = IMAP_AUTH;
		s->account_id = r->account_id;
		(void)!str_copy(s->user, sizeof(s->user), r->user);
		set_limits(s);
		imap_out(s, "%s OK [CAPABILITY ", s->auth_tag);
		out_capabilities(s);
		imap_out(s, "] Logged in\r\n");
		log_info("sid=%s event=login service=imap rip=%s user=%s result=ok",
		         net_conn_sid(s->conn), net_conn_rip(s->conn), user);
		break;
	case AUTH_FAILED:
		imap_out(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed\r\n", s->auth_tag);
		log_info("sid=%s event=auth-failed service=imap rip=%s user=%s reason=credentials",
		         net_conn_sid(s->conn), net_conn_rip(s->conn), user);
		s->bad++;
		break;
	case AUTH_TEMPFAIL:
		imap_out(s, "%s NO [UNAVAILABLE] Temporary authentication failure\r\n", s->auth_tag);
		log_warn("sid=%s event=auth-failed service=imap rip=%s user=%s reason=tempfail",
		         net_conn_sid(s->conn), net_conn_rip(s->conn), user);
		break;
	}
	command_done(s);
	if (!session_unbusy(s))
		return;
	if (s->bad >= imap_limits.max_bad) {
		net_conn_printf(s->conn, "* BYE Too many failed commands\r\n");
		net_conn_close_because(s->conn, "too-many-errors");
		return;
	}
	imap_input(s, s->conn);
}

static void
start_verify(struct imap_session *s, const char *user, const char *password)
{
	struct login_env env = {imap_env.auth, imap_env.guard, imap_limits.failure_delay};

	session_busy(s);
	login_start(&env, GUARD_IMAP, s->conn, user, password, login_done, s);
}

static void
auth_status(struct imap_session *s, int status, const char *challenge)
{
	switch (status) {
	case AUTH_SASL_CONTINUE:
		s->authenticating = true;
		net_conn_printf(s->conn, "+ %s\r\n", challenge);
		return;
	case AUTH_SASL_DONE:
		break;
	case AUTH_SASL_CANCEL:
		s->authenticating = false;
		auth_sasl_free(&s->sasl);
		net_conn_printf(s->conn, "%s BAD Authentication cancelled\r\n", s->auth_tag);
		command_done(s);
		return;
	default:
		s->authenticating = false;
		auth_sasl_free(&s->sasl);
		net_conn_printf(s->conn, "%s BAD Malformed authentication response\r\n",
		                s->auth_tag);
		command_done(s);
		too_many_errors(s);
		return;
	}
	s->authenticating = false;
	if (auth_sasl_authzid(s->sasl)[0] != '\0' &&
	    strcasecmp(auth_sasl_authzid(s->sasl), auth_sasl_user(s->sasl)) != 0) {
		auth_sasl_free(&s->sasl);
		net_conn_printf(s->conn, "%s NO [AUTHORIZATIONFAILED] Authorization identity "
		                         "refused\r\n", s->auth_tag);
		command_done(s);
		return;
	}
	start_verify(s, auth_sasl_user(s->sasl), auth_sasl_password(s->sasl));
	auth_sasl_free(&s->sasl);
}

static void
cmd_authenticate(struct imap_session *s, const struct imap_command *cmd)
{
	const char *mech, *initial = NULL, *challenge = NULL, *error = NULL;
	enum auth_sasl_mech m;
	size_t len;

	(void)!str_copy(s->auth_tag, sizeof(s->auth_tag), cmd->tag);
	if (cmd->nargs < 1 || cmd->nargs > 2 || imap_arg_get_atom(&cmd->args[0], &mech) < 0 ||
	    (cmd->nargs == 2 && imap_arg_get_astring(&cmd->args[1], &initial, &len) < 0)) {
		net_conn_printf(s->conn, "%s BAD Usage: AUTHENTICATE mechanism [initial]\r\n",
		                cmd->tag);
		command_done(s);
		too_many_errors(s);
		return;
	}
	if (!login_allowed(s)) {
		net_conn_printf(s->conn, "%s NO [PRIVACYREQUIRED] Use STARTTLS first\r\n", cmd->tag);
		command_done(s);
		return;
	}
	if (auth_sasl_mech_parse(mech, &m) < 0) {
		net_conn_printf(s->conn, "%s NO Unsupported authentication mechanism\r\n", cmd->tag);
		command_done(s);
		return;
	}
	s->sasl = auth_sasl_new(m);
	auth_status(s, auth_sasl_start(s->sasl, initial, &challenge, &error), challenge);
}

static void
cmd_login(struct imap_session *s, const struct imap_command *cmd)
{
	const char *user, *password;
	size_t ulen, plen;

	(void)!str_copy(s->auth_tag, sizeof(s->auth_tag), cmd->tag);
	if (cmd->nargs != 2 || imap_arg_get_astring(&cmd->args[0], &user, &ulen) < 0 ||
	    imap_arg_get_astring(&cmd->args[1], &password, &plen) < 0) {
		net_conn_printf(s->conn, "%s BAD Usage: LOGIN user password\r\n", cmd->tag);
		command_done(s);
		too_many_errors(s);
		return;
	}
	if (!login_allowed(s)) {
		net_conn_printf(s->conn, "%s NO [PRIVACYREQUIRED] Use STARTTLS first\r\n", cmd->tag);
		command_done(s);
		return;
	}
	start_verify(s, user, password);
}

/* An AUTHENTICATE continuation line. */
static bool
input_auth_line(struct imap_session *s)
{
	ssize_t lf = net_conn_find_lf(s->conn, 16384);
	const uint8_t *p;
	const char *challenge = NULL, *error = NULL;
	size_t len;
	int status;

	if (lf < 0) {
		if (net_conn_input_len(s->conn) >= 16384) {
			net_conn_printf(s->conn, "* BYE Line too long\r\n");
			net_conn_close_because(s->conn, "line-too-long");
		}
		return false;
	}
	p = net_conn_peek(s->conn, (size_t)lf + 1, &len);
	len = (size_t)lf;
	if (len > 0 && p[len - 1] == '\r')
		len--;
	status = auth_sasl_step(s->sasl, (const char *)p, len, &challenge, &error);
	net_conn_drain(s->conn, (size_t)lf + 1);
	auth_status(s, status, challenge);
	return true;
}

/* ---- IDLE --------------------------------------------------------------------------------- */

static bool
input_idle_line(struct imap_session *s)
{
	ssize_t lf = net_conn_find_lf(s->conn, 1024);
	const uint8_t *p;
	size_t len;

	if (lf < 0) {
		if (net_conn_input_len(s->conn) >= 1024) {
			net_conn_printf(s->conn, "* BYE Line too long\r\n");
			net_conn_close_because(s->conn, "line-too-long");
		}
		return false;
	}
	p = net_conn_peek(s->conn, (size_t)lf + 1, &len);
	len = (size_t)lf;
	if (len > 0 && p[len - 1] == '\r')
		len--;
	s->idling = false;
	net_conn_set_timeout(s->conn, imap_limits.timeout);
	if (len == 4 && strncasecmp((const char *)p, "DONE", 4) == 0)
		net_conn_printf(s->conn, "%s OK IDLE terminated\r\n", s->idle_tag);
	else
		net_conn_printf(s->conn, "%s BAD Expected DONE\r\n", s->idle_tag);
	net_conn_drain(s->conn, (size_t)lf + 1);
	return true;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

enum cmd_where { ANY, NOTAUTH, AUTHED, SELECTED };

struct cmd_def {
	const char *name;
	enum cmd_where where;
	bool worker;    /* runs on a worker */
	bool uid;       /* may follow UID */
};

static const struct cmd_def cmd_defs[] = {
	{"CAPABILITY", ANY, false, false},
	{"NOOP", ANY, false, false},
	{"LOGOUT", ANY, false, false},
	{"ID", ANY, false, false},
	{"STARTTLS", NOTAUTH, false, false},
	{"LOGIN", NOTAUTH, false, false},
	{"AUTHENTICATE", NOTAUTH, false, false},
	{"ENABLE", AUTHED, false, false},
	{"NAMESPACE", AUTHED, false, false},
	{"IDLE", AUTHED, false, false},
	{"COMPRESS", AUTHED, false, false},
	{"GETQUOTA", AUTHED, true, false},
	{"GETQUOTAROOT", AUTHED, true, false},
	{"SETQUOTA", AUTHED, true, false},
	{"SELECT", AUTHED, true, false},
	{"EXAMINE", AUTHED, true, false},
	{"CREATE", AUTHED, true, false},
	{"DELETE", AUTHED, true, false},
	{"RENAME", AUTHED, true, false},
	{"SUBSCRIBE", AUTHED, true, false},
	{"UNSUBSCRIBE", AUTHED, true, false},
	{"LIST", AUTHED, true, false},
	{"LSUB", AUTHED, true, false},
	{"STATUS", AUTHED, true, false},
	{"APPEND", AUTHED, true, false},
	{"CHECK", SELECTED, true, false},
	{"CLOSE", SELECTED, true, false},
	{"UNSELECT", SELECTED, false, false},
	{"EXPUNGE", SELECTED, true, true},
	{"SEARCH", SELECTED, true, true},
	{"SORT", SELECTED, true, true},
	{"THREAD", SELECTED, true, true},
	{"FETCH", SELECTED, true, true},
	{"STORE", SELECTED, true, true},
	{"COPY", SELECTED, true, true},
	{"MOVE", SELECTED, true, true},
};

/* On a worker: runs the command that s->cmd holds. */
static void
dispatch_worker(struct imap_session *s)
{
	const char *n = s->cmd->name;

	if (strcmp(n, "SELECT") == 0 || strcmp(n, "EXAMINE") == 0)
		imap_cmd_select(s, n[0] == 'E');
	else if (strcmp(n, "CREATE") == 0)
		imap_cmd_create(s);
	else if (strcmp(n, "DELETE") == 0)
		imap_cmd_delete(s);
	else if (strcmp(n, "RENAME") == 0)
		imap_cmd_rename(s);
	else if (strcmp(n, "SUBSCRIBE") == 0 || strcmp(n, "UNSUBSCRIBE") == 0)
		imap_cmd_subscribe(s, n[0] == 'S');
	else if (strcmp(n, "LIST") == 0 || strcmp(n, "LSUB") == 0)
		imap_cmd_list(s, n[1] == 'S');
	else if (strcmp(n, "STATUS") == 0)
		imap_cmd_status(s);
	else if (strcmp(n, "APPEND") == 0)
		imap_cmd_append(s);
	else if (strncmp(n, "GETQUOTA", 8) == 0 || strcmp(n, "SETQUOTA") == 0)
		imap_cmd_quota(s);
	else if (strcmp(n, "CHECK") == 0 || strcmp(n, "NOOP") == 0) {
		imap_cmd_noop(s);
		imap_tagged(s, "OK", "%s completed", n);
	} else if (strcmp(n, "IDLE") == 0) {
		(void)imap_view_sync(s, true);
	} else if (strcmp(n, "CLOSE") == 0)
		imap_cmd_close(s, true);
	else if (strcmp(n, "EXPUNGE") == 0)
		imap_cmd_expunge(s);
	else if (strcmp(n, "SEARCH") == 0)
		imap_cmd_search(s);
	else if (strcmp(n, "SORT") == 0 || strcmp(n, "THREAD") == 0)
		imap_cmd_sort(s, n[0] == 'T');
	else if (strcmp(n, "FETCH") == 0)
		imap_cmd_fetch(s);
	else if (strcmp(n, "STORE") == 0)
		imap_cmd_store(s);
	else if (strcmp(n, "COPY") == 0 || strcmp(n, "MOVE") == 0)
		imap_cmd_copy(s, n[0] == 'M');
	else
		imap_tagged(s, "BAD", "Unknown command");
}

static void
cmd_enable(struct imap_session *s, const struct imap_command *cmd)
{
	struct buf *o = &s->out;

	if (cmd->nargs == 0) {
		imap_tagged(s, "BAD", "Usage: ENABLE capability...");
		return;
	}
	(void)buf_append_str(o, "* ENABLED");
	for (size_t i = 0; i < cmd->nargs; i++) {
		const char *c;

		if (imap_arg_get_atom(&cmd->args[i], &c) < 0)
			continue;
		if (strcasecmp(c, "CONDSTORE") == 0 && !s->condstore) {
			s->condstore = true;
			(void)buf_append_str(o, " CONDSTORE");
		} else if (strcasecmp(c, "QRESYNC") == 0 && !s->qresync) {
			s->qresync = s->condstore = true;
			(void)buf_append_str(o, " QRESYNC");
		} else if (strcasecmp(c, "UTF8=ACCEPT") == 0 && !s->utf8) {
			s->utf8 = true;
			(void)buf_append_str(o, " UTF8=ACCEPT");
		} else if (strcasecmp(c, "IMAP4rev2") == 0 && !s->rev2) {
			s->rev2 = true;
			(void)buf_append_str(o, " IMAP4rev2");
		}
	}
	(void)buf_append_str(o, "\r\n");
	set_limits(s);
	imap_tagged(s, "OK", "ENABLE completed");
}

static void
cmd_id(struct imap_session *s)
{
	imap_out(s, "* ID (\"name\" \"Postamt\" \"vendor\" \"Postamt\" \"support-url\" NIL)\r\n");
	imap_tagged(s, "OK", "ID completed");
}

static void
cmd_unselect(struct imap_session *s)
{
	imap_watch_set(s, 0);
	imap_view_free(&s->view);
	s->state = IMAP_AUTH;
	imap_tagged(s, "OK", "Returned to authenticated state");
}

/* Runs one parsed command on the I/O thread (or hands it to a worker). */
static void
dispatch(struct imap_session *s, const struct imap_command *cmd)
{
	const struct cmd_def *def = NULL;
	const char *n = cmd->name;

	s->cmd = cmd;
	for (size_t i = 0; i < N_ELEMENTS(cmd_defs); i++) {
		if (strcmp(cmd_defs[i].name, n) == 0) {
			def = &cmd_defs[i];
			break;
		}
	}
	if (def == NULL || (cmd->uid && !def->uid)) {
		imap_tagged(s, "BAD", "Unknown command");
		goto bad;
	}
	if ((def->where == NOTAUTH && s->state != IMAP_NOTAUTH) ||
	    (def->where == AUTHED && s->state == IMAP_NOTAUTH) ||
	    (def->where == SELECTED && s->state != IMAP_SELECTED)) {
		imap_tagged(s, "BAD", "%s not allowed now", n);
		goto bad;
	}
	if (strcmp(n, "LOGIN") == 0) {
		cmd_login(s, cmd);
		return;
	}
	if (strcmp(n, "AUTHENTICATE") == 0) {
		cmd_authenticate(s, cmd);
		return;
	}
	/* A NOOP in a mailbox with no news is answered here, without a worker's round trip
	 * (clients poll with it). */
	if (def->worker || (strcmp(n, "NOOP") == 0 && s->state == IMAP_SELECTED &&
	                    imap_view_has_news(s))) {
		to_worker(s);
		return;
	}
	if (strcmp(n, "CAPABILITY") == 0) {
		imap_out(s, "* CAPABILITY ");
		out_capabilities(s);
		imap_out(s, "\r\n");
		imap_tagged(s, "OK", "CAPABILITY completed");
	} else if (strcmp(n, "NOOP") == 0) {
		imap_tagged(s, "OK", "NOOP completed");
	} else if (strcmp(n, "LOGOUT") == 0) {
		imap_out(s, "* BYE Logging out\r\n");
		imap_tagged(s, "OK", "LOGOUT completed");
		s->state = IMAP_LOGOUT;
		flush_out(s);
		command_done(s);
		net_conn_close_because(s->conn, "logout");
		return;
	} else if (strcmp(n, "ID") == 0) {
		cmd_id(s);
	} else if (strcmp(n, "STARTTLS") == 0) {
		if (net_conn_is_tls(s->conn)) {
			imap_tagged(s, "BAD", "TLS is already active");
			goto bad;
		}
		imap_tagged(s, "OK", "Begin TLS negotiation now");
		flush_out(s);
		command_done(s);
		if (net_conn_starttls(s->conn) < 0)
			net_conn_close_because(s->conn, "tls-failed");
		s->tls_starting = true;
		return;
	} else if (strcmp(n, "ENABLE") == 0) {
		cmd_enable(s, cmd);
	} else if (strcmp(n, "NAMESPACE") == 0) {
		imap_out(s, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
		imap_tagged(s, "OK", "NAMESPACE completed");
	} else if (strcmp(n, "COMPRESS") == 0) {
		if (cmd->nargs != 1 || !imap_arg_atom_equals(&cmd->args[0], "DEFLATE")) {
			imap_tagged(s, "BAD", "Usage: COMPRESS DEFLATE");
			goto bad;
		}
		if (net_conn_is_compressed(s->conn)) {
			imap_tagged(s, "NO", "[COMPRESSIONACTIVE] DEFLATE is already active");
		} else {
			/* RFC 4978 3: the OK goes out uncompressed, everything after it compressed. */
			imap_tagged(s, "OK", "DEFLATE active");
			flush_out(s);
			if (net_conn_compress(s->conn) < 0) {
				net_conn_close_because(s->conn, "compress-failed");
				command_done(s);
				return;
			}
		}
	} else if (strcmp(n, "UNSELECT") == 0) {
		cmd_unselect(s);
	} else if (strcmp(n, "IDLE") == 0) {
		(void)!str_copy(s->idle_tag, sizeof(s->idle_tag), cmd->tag);
		s->idling = true;
		imap_out(s, "+ idling\r\n");
		flush_out(s);
		command_done(s);
		net_conn_set_timeout(s->conn, imap_limits.idle_timeout);
		/* Changes that came since the last command are reported at once. */
		if (s->view != NULL)
			run_idle_sync(s);
		return;
	}
	flush_out(s);
	command_done(s);
	return;
bad:
	flush_out(s);
	command_done(s);
	too_many_errors(s);
}

static void
parse_error(struct imap_session *s)
{
	enum imap_parse_error code;
	bool fatal;
	const char *msg = imap_parser_error(s->parser, &code, &fatal);
	const char *tag = imap_parser_tag(s->parser);

	if (code == IMAP_PARSE_ERR_LINE_TOO_LONG) {
		net_conn_printf(s->conn, "* BYE Line too long\r\n");
		net_conn_close_because(s->conn, "line-too-long");
		return;
	}
	appends_discard(s);
	net_conn_printf(s->conn, "%s %s%s\r\n", tag != NULL ? tag : "*",
	                code == IMAP_PARSE_ERR_TOO_BIG ? "NO [TOOBIG] " : "BAD ", msg);
	if (fatal) {
		net_conn_printf(s->conn, "* BYE Cannot go on after this error\r\n");
		net_conn_close_because(s->conn, "protocol-error");
		return;
	}
	imap_parser_reset(s->parser);
	too_many_errors(s);
}

/* A chunk of an APPEND literal: written to a blob as it arrives. */
static void
literal_chunk(struct imap_session *s)
{
	const struct imap_literal_chunk *c = imap_parser_literal_chunk(s->parser);
	struct imap_append *a;
	const char *error;

	if (c->index >= IMAP_MAX_APPEND) {
		s->append_failed = true;
		return;
	}
	while (s->nappends <= c->index)
		s->appends[s->nappends++] = (struct imap_append){0};
	a = &s->appends[c->index];
	if (a->blob == NULL && !s->append_failed) {
		if (store_blob_new(imap_env.store, &a->blob, &error) < 0)
			s->append_failed = true;
	}
	if (a->blob != NULL && store_blob_write(a->blob, c->data, c->len) < 0)
		s->append_failed = true;
	if (c->last)
		a->done = true;
}

static void
imap_input(void *session, struct net_conn *conn)
{
	struct imap_session *s = session;

	while (!s->busy && !net_conn_is_closing(conn)) {
		const uint8_t *p;
		size_t len, used = 0;
		int status;

		if (s->authenticating) {
			if (!input_auth_line(s))
				return;
			continue;
		}
		if (s->idling) {
			if (!input_idle_line(s))
				return;
			continue;
		}
		p = net_conn_peek(conn, 65536, &len);
		if (len == 0)
			return;
		status = imap_parser_feed(s->parser, p, len, &used);
		/* A literal chunk points into the input: keep it until it is written. */
		if (status == IMAP_PARSE_LITERAL_DATA)
			literal_chunk(s);
		net_conn_drain(conn, used);
		switch (status) {
		case IMAP_PARSE_MORE:
			if (used == 0)
				return;
			break;
		case IMAP_PARSE_CONTINUATION:
			net_conn_printf(conn, "+ OK\r\n");
			break;
		case IMAP_PARSE_LITERAL_DATA:
			break;
		case IMAP_PARSE_COMMAND:
			dispatch(s, imap_parser_command(s->parser));
			break;
		case IMAP_PARSE_ERROR:
		default:
			parse_error(s);
			break;
		}
	}
}

static const struct net_proto imap_proto = {
	imap_open, imap_input, imap_tls_done, imap_shutdown, imap_close,
	"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
};

const struct net_proto *
imap_server_proto(void)
{
	return &imap_proto;
}
