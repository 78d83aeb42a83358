/* The queue runner (see queue.h for the contract).
 *
 * Invariants: a recipient id is in `inflight` from the read that found it until the commit of
 * its outcome job, so no read returns it twice; an outcome is submitted only after the peer's
 * final answer (or a failure), so a crash in between leaves it due: delivered at least once.
 * The runner thread owns every structure here except `inbox`, which job done callbacks (the
 * store writer thread) fill under `lock`. */
#include "queue/queue.h"

#include "core/hmap.h"
#include "core/log.h"
#include "dns/dns.h"
#include "smtp/smtp_client.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/util.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Header bytes of the original message quoted in a bounce. */
#define QUEUE_DSN_MAX_HEADERS (64 * 1024)
/* Fair share: a destination has at most this many messages waiting in memory per connection
 * it may open; a read passes the rest over and goes on to other destinations' mail. */
#define QUEUE_DEST_BACKLOG_PER_CONN 64
/* Rows one read may look at, per recipient it may take; a read that found only mail over its
 * share looks at twice as many next time, up to QUEUE_EXAMINE_MAX. */
#define QUEUE_EXAMINE_FACTOR 8
#define QUEUE_EXAMINE_MAX 65536
/* MX lookups are remembered this long (c-ares here keeps no cache; the answers' TTLs are not
 * reported, so a short fixed time), for at most this many domains. */
#define QUEUE_MX_CACHE_SECS 60
#define QUEUE_MX_CACHE_MAX 10000
/* The main read starts over this often, to find what became due behind its position (mail
 * released by an operator, outcomes that could not be recorded). */
#define QUEUE_LAP_MS 5000

struct queue_route {
	char *domain;
	char *name; /* "host:port" as configured */
	struct sockaddr_storage addr;
	int addrlen;
};

/* A TLS policy for one recipient domain; ".example.org" covers its subdomains. */
struct queue_tls_policy {
	char *domain;
	enum smtp_client_tls level;
};

struct queue_dest;

struct queue_msg {
	struct queue_msg *next; /* destination's pending list */
	struct queue_dest *dest;
	int64_t queue_id;
	char blob_id[33];
	char *sender, *envid, *ret;
	struct store *store;
	uint64_t size;
	int64_t created; /* seconds */
	size_t nrcpts;
	int64_t *rcpt_ids;
	uint32_t *attempts;
	bool *delay_notified;
	struct smtp_client_rcpt *crcpts; /* their strings are the ones in strs */
	char **strs; /* 3 per recipient: address, notify, orcpt (owned; NULL when absent) */
	struct smtp_client_msg cmsg;
};

enum queue_dest_state {
	QUEUE_DEST_READY,     /* targets known */
	QUEUE_DEST_LOOKUP,    /* MX lookup needed */
	QUEUE_DEST_RESOLVING, /* MX lookup in progress */
};

struct queue_dest {
	char *key; /* "host:port" of a route, or "mx:domain" */
	char *domain; /* for MX destinations */
	enum queue_dest_state state;
	struct dns_target *targets; /* in the order to try them */
	size_t ntargets;
	size_t next_target; /* the one connections go to; advances when it fails */
	struct queue_runner *qr;
	bool relay; /* the relay host: authenticate when configured */
	enum smtp_client_tls tls_level;
	char *tls_name; /* routes and relay: the name the certificate must carry */
	/* Connections allowed now, 1..connections_per_destination: halved when a connection
	 * fails (421, timeout, refused), back up by 1/window per delivered message (AIMD). */
	double window;
	size_t nread;         /* messages the read in progress added */
	bool passed;          /* a read passed its mail over: it had its share */
	int64_t dead_until;   /* seconds: every host failed; its mail is deferred until then */
	char dead_reason[256];
	double tokens;        /* queue.destination_rate: messages that may start now */
	uint64_t refilled;    /* ms, monotonic */
	struct event *rate_ev;
	struct queue_msg *head, *tail;
	size_t npending;
	unsigned int nconns;
	unsigned int nfresh; /* connections that have not taken a message yet */
};

struct queue_session {
	struct queue_runner *qr;
	struct queue_dest *dest;
	struct smtp_client *client;
	struct queue_session *prev, *next;
	bool fresh;
};

enum queue_action { QUEUE_DONE, QUEUE_DEFER };

struct queue_item {
	int64_t id;
	enum queue_action action;
	int64_t next_attempt;
	bool delay_notified;
	char error[256];
};

/* One message's outcome: a store job; then back to the runner through the inbox. */
struct queue_outcome {
	struct queue_outcome *next;
	struct queue_runner *qr;
	size_t n;
	struct queue_item *items;
	char *bounce_to; /* non-NULL: the job's blob is a bounce for this sender */
	char bounce_blob[33];
	char *sender;    /* whose share the recipients leave */
};

/* The hosts of a domain's MX, as a lookup found them. */
struct queue_mx_cached {
	int64_t expires; /* seconds */
	size_t n;
	struct dns_target targets[];
};

/* A sending account's recipients in memory, for its fair share. */
struct queue_sender {
	size_t n;
	bool passed; /* a read passed its mail over */
};

struct queue_runner {
	struct store *store;
	struct queue_options opts;
	char *hostname, *relay_user, *relay_password;
	uint64_t *schedule;
	size_t nschedule;
	struct queue_route *routes;
	size_t nroutes;
	bool have_relay;
	struct queue_route relay;
	struct queue_tls_policy *policies;
	size_t npolicies;
	char *relay_name;
	SSL_CTX *tls, *tls_verify;
	struct dns_resolver *dns;

	struct event_base *base;
	/* tick: the interval timer; kick: a read now. Two events, because activating a
	 * persistent timer by hand moves its next expiry one interval later each time. */
	struct event *tick, *kick, *wake, *stop;
	pthread_t thread;
	bool have_thread;

	struct hmap *inflight; /* rcpt id (8 bytes) -> (void *)1 */
	struct hmap *dests;    /* key -> struct queue_dest */
	struct hmap *senders;  /* sender -> struct queue_sender */
	struct hmap *mx_cache; /* lower-case domain -> struct queue_mx_cached */
	int64_t mx_swept;      /* seconds: last removal of expired entries */
	int64_t generation;    /* the store's queue_generation, bumped by `postamt queue` */
	/* Reads: the main read goes through the due mail in delivery order from where it
	 * stopped; a front read starts from the beginning, for mail passed over earlier. */
	struct store_queue_cursor cursor;
	uint64_t lap_started;  /* ms, monotonic: the main read's last start over */
	unsigned int examine;  /* rows the next main read may look at */
	bool front_wanted;
	bool passed_behind;    /* the main read passed mail over since it last started over */
	bool starved;          /* the last read stopped at max_in_flight */
	size_t sender_share;   /* recipients of one sender in memory at most */
	struct queue_session *sessions;

	pthread_mutex_t lock;
	struct queue_outcome *inbox; /* under lock */
	bool stopping;               /* under lock */
};

static void queue_dispatch(struct queue_runner *qr, struct queue_dest *dest);

static int64_t
queue_now(void)
{
	return (int64_t)time(NULL);
}

static uint64_t
queue_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Messages of one destination waiting in memory at most (its fair share). */
static size_t
queue_dest_share(const struct queue_runner *qr)
{
	size_t share = (size_t)qr->opts.connections_per_destination * QUEUE_DEST_BACKLOG_PER_CONN;

	return MIN(share, MAX((size_t)qr->opts.max_in_flight / 4, 1));
}

/* Mail was passed over for having had its share, and that share has room again: the next
 * read is a front read (from the start of each class, where that mail is; the main read's
 * position is kept). */
static void
queue_restart_lap(struct queue_runner *qr)
{
	qr->front_wanted = true;
	event_active(qr->kick, EV_READ, 0);
}

static void
queue_dest_drained(struct queue_runner *qr, struct queue_dest *dest)
{
	if (dest->passed && dest->npending < queue_dest_share(qr) / 2) {
		dest->passed = false;
		queue_restart_lap(qr);
	}
}

/* ---- Outcomes --------------------------------------------------------------------------- */

static void
queue_outcome_free(struct queue_outcome *o)
{
	free(o->items);
	free(o->bounce_to);
	free(o->sender);
	free(o);
}

static int
queue_outcome_run(struct store_txn *txn, void *ctx)
{
	struct queue_outcome *o = ctx;
	int ret;

	for (size_t i = 0; i < o->n; i++) {
		const struct queue_item *it = &o->items[i];

		if (it->action == QUEUE_DONE)
			ret = store_txn_queue_rcpt_done(txn, it->id);
		else
			ret = store_txn_queue_rcpt_defer(txn, it->id, it->next_attempt, it->error,
			                                 it->delay_notified);
		/* Deleted by an operator meanwhile: nothing left to record. */
		if (ret != STORE_OK && ret != STORE_ERR_NOTFOUND)
			return ret;
	}
	if (o->bounce_to != NULL) {
		int64_t mailbox = 0, qid = 0;
		const char *to = o->bounce_to;
		uint32_t uid;

		ret = store_txn_inbox_of(txn, to, &mailbox);
		if (ret < 0)
			return ret;
		if (ret == 1)
			ret = store_txn_deliver(txn, mailbox, o->bounce_blob, 0, store_txn_now(txn),
			                        &uid);
		else
			ret = store_txn_queue_add(txn, o->bounce_blob, "", &to, 1, 1, &qid);
		if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

/* On the store writer thread: hand the outcome back to the runner. */
static void
queue_outcome_done(struct store_job *job, void *ctx)
{
	struct queue_outcome *o = ctx;
	struct queue_runner *qr = o->qr;
	const char *error;
	int ret = store_job_result(job, &error);
	bool wake;

	if (ret != STORE_OK)
		log_error("event=queue_record result=failed error=\"%s\"", error);
	store_job_free(&job);
	pthread_mutex_lock(&qr->lock);
	o->next = qr->inbox;
	qr->inbox = o;
	wake = !qr->stopping;
	if (wake)
		event_active(qr->wake, EV_READ, 0);
	pthread_mutex_unlock(&qr->lock);
}

/* smtp_client_msg.open: the message's bytes, from the database or its file. */
static int
queue_msg_open(void *arg)
{
	struct queue_msg *msg = arg;

	return store_blob_open(msg->store, msg->blob_id);
}

/* Reads the header section of the original message for a bounce. */
static void
queue_read_headers(struct store *store, const char *blob_id, struct buf *out)
{
	uint8_t chunk[8192];
	int fd = store_blob_open(store, blob_id);

	if (fd < 0)
		return;
	while (out->len < QUEUE_DSN_MAX_HEADERS) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		(void)buf_append(out, chunk, (size_t)n);
	}
	close(fd);
	for (size_t i = 0; i + 1 < out->len; i++) {
		if (out->data[i] == '\n' && (out->data[i + 1] == '\n' ||
		                             (out->data[i + 1] == '\r' && i + 2 < out->len &&
		                              out->data[i + 2] == '\n'))) {
			out->len = i + 1;
			return;
		}
	}
	if (out->len > QUEUE_DSN_MAX_HEADERS)
		out->len = QUEUE_DSN_MAX_HEADERS;
}

/* RFC 3461 4.1: without NOTIFY, whether to report delays is ours to choose: we do. */
static bool
queue_wants_delay_dsn(const char *notify)
{
	return notify == NULL || notify[0] == '\0' || strcasestr(notify, "DELAY") != NULL;
}

static bool
queue_wants_failure_dsn(const char *notify)
{
	/* RFC 3461 4.1: without NOTIFY the default is FAILURE (and DELAY); NEVER or a list
	 * without FAILURE asks for no failure report. */
	if (notify == NULL || notify[0] == '\0')
		return true;
	return strcasestr(notify, "FAILURE") != NULL;
}

/* Records the results of one message's attempt; frees msg. */
static void
queue_record(struct queue_runner *qr, struct queue_msg *msg)
{
	struct queue_outcome *o = xcalloc(1, sizeof(*o));
	struct queue_dsn_rcpt *failed = xcalloc(msg->nrcpts, sizeof(*failed));
	char (*status)[16] = xcalloc(msg->nrcpts, sizeof(*status));
	struct store_blob *blob = NULL;
	struct store_job *job;
	int64_t now = queue_now();
	size_t nfailed = 0;

	o->qr = qr;
	o->n = msg->nrcpts;
	o->sender = xstrdup(msg->sender);
	o->items = xcalloc(msg->nrcpts, sizeof(*o->items));
	for (size_t i = 0; i < msg->nrcpts; i++) {
		struct smtp_client_rcpt *rc = &msg->crcpts[i];
		struct queue_item *it = &o->items[i];
		bool expired = now - msg->created >= (int64_t)(qr->opts.bounce_after / 1000);
		char safe[LOG_SANITIZE_SIZE];

		it->id = msg->rcpt_ids[i];
		(void)snprintf(it->error, sizeof(it->error), "%s", rc->reply);
		if (rc->code >= 200 && rc->code < 300) {
			it->action = QUEUE_DONE;
			log_info("event=delivered qid=%lld rcpt=%s relay=%s reply=\"%s\"",
			         (long long)msg->queue_id, rc->address, msg->dest->key,
			         log_sanitize_str(safe, rc->reply));
		} else if (rc->code >= 500 || expired) {
			it->action = QUEUE_DONE;
			log_info("event=bounced qid=%lld rcpt=%s relay=%s reply=\"%s\"",
			         (long long)msg->queue_id, rc->address, msg->dest->key,
			         log_sanitize_str(safe, rc->reply));
			if (rc->code >= 500)
				queue_status_code(rc->reply, status[i]);
			else
				(void)snprintf(status[i], sizeof(status[i]), "4.4.7");
			if (queue_wants_failure_dsn(rc->notify)) {
				failed[nfailed].address = rc->address;
				failed[nfailed].orcpt = rc->orcpt;
				failed[nfailed].status = status[i];
				failed[nfailed].diagnostic = rc->reply;
				nfailed++;
			}
		} else {
			uint64_t delay = queue_retry_delay(qr->schedule, qr->nschedule,
			                                   msg->attempts[i]);

			it->action = QUEUE_DEFER;
			/* Rounded up to whole seconds, the unit of the store. */
			it->next_attempt = now + (int64_t)((delay + 999) / 1000);
			it->delay_notified = msg->delay_notified[i];
			/* Once, after delay_warning: the sender learns the mail is still trying. */
			if (qr->opts.delay_warning != 0 && !msg->delay_notified[i] &&
			    now - msg->created >= (int64_t)(qr->opts.delay_warning / 1000) &&
			    queue_wants_delay_dsn(rc->notify)) {
				it->delay_notified = true;
				queue_status_code(rc->reply[0] == '4' ? rc->reply : "4", status[i]);
				failed[nfailed].address = rc->address;
				failed[nfailed].orcpt = rc->orcpt;
				failed[nfailed].status = status[i];
				failed[nfailed].diagnostic = rc->reply;
				failed[nfailed].retry_until =
					msg->created + (int64_t)(qr->opts.bounce_after / 1000);
				nfailed++;
			}
			log_info("event=deferred qid=%lld rcpt=%s relay=%s delay_s=%llu "
			         "reply=\"%s\"",
			         (long long)msg->queue_id, rc->address, msg->dest->key,
			         (unsigned long long)((delay + 999) / 1000),
			         log_sanitize_str(safe, rc->reply));
		}
	}
	/* Never a bounce for a bounce (RFC 5321 6.1, 4.5.5). */
	if (nfailed > 0 && msg->sender[0] != '\0') {
		struct buf headers, dsn;
		const char *error;

		buf_init(&headers, QUEUE_DSN_MAX_HEADERS + 8192);
		buf_init(&dsn, QUEUE_DSN_MAX_HEADERS + 1024 * 1024);
		queue_read_headers(qr->store, msg->blob_id, &headers);
		queue_dsn_build(&dsn, qr->hostname, msg->sender, msg->envid, msg->created, now,
		                failed, nfailed, headers.data, headers.len);
		if (store_blob_new(qr->store, &blob, &error) < 0) {
			log_error("event=bounce result=failed error=\"%s\"", error);
			blob = NULL;
		} else if (store_blob_write(blob, dsn.data, dsn.len) != STORE_OK) {
			log_error("event=bounce result=failed error=\"cannot write the report\"");
			store_blob_free(&blob);
		}
		if (blob != NULL) {
			o->bounce_to = xstrdup(msg->sender);
			(void)!str_copy(o->bounce_blob, sizeof(o->bounce_blob),
			                store_blob_id(blob));
		}
		buf_deinit(&headers);
		buf_deinit(&dsn);
	}
	free(failed);
	free(status);
	job = store_job_new(queue_outcome_run, queue_outcome_done, o);
	if (blob != NULL)
		store_job_add_blob(job, &blob);
	store_submit(qr->store, job);
}

static void
queue_msg_free(struct queue_msg *msg)
{
	for (size_t i = 0; i < 3 * msg->nrcpts; i++)
		free(msg->strs[i]);
	free(msg->strs);
	free(msg->crcpts);
	free(msg->rcpt_ids);
	free(msg->attempts);
	free(msg->delay_notified);
	free(msg->sender);
	free(msg->envid);
	free(msg->ret);
	free(msg);
}

/* Every recipient of msg gets the same result: code 0 (temporary) or a 5xx reply. */
static void
queue_fail_msg(struct queue_runner *qr, struct queue_msg *msg, unsigned int code,
               const char *reason)
{
	for (size_t i = 0; i < msg->nrcpts; i++) {
		msg->crcpts[i].code = code;
		/* A reason longer than the field is cut: it is only for the log and the DSN. */
		if (str_copy(msg->crcpts[i].reply, sizeof(msg->crcpts[i].reply), reason) < 0) {
		}
	}
	queue_record(qr, msg);
	queue_msg_free(msg);
}

/* ---- Destinations and sessions ---------------------------------------------------------- */

static void
queue_dest_free(struct queue_dest *dest)
{
	if (dest->rate_ev != NULL)
		event_free(dest->rate_ev);
	free(dest->key);
	free(dest->domain);
	free(dest->tls_name);
	free(dest->targets);
	free(dest);
}

/* An idle destination is forgotten (a new one starts with every connection allowed), unless
 * it is known dead: its mail is deferred without a try until then; the tick's sweep forgets
 * it later. */
static bool
queue_dest_idle(const struct queue_runner *qr, const struct queue_dest *dest)
{
	(void)qr;
	/* nread: messages of the read in progress point at it, not queued on it yet. */
	return dest->nconns == 0 && dest->head == NULL && dest->nread == 0 &&
	       dest->state != QUEUE_DEST_RESOLVING && dest->dead_until <= queue_now() &&
	       (dest->rate_ev == NULL || !evtimer_pending(dest->rate_ev, NULL));
}

static void
queue_dest_maybe_free(struct queue_runner *qr, struct queue_dest *dest)
{
	if (!queue_dest_idle(qr, dest))
		return;
	if (dest->passed)
		queue_restart_lap(qr);
	(void)hmap_remove(qr->dests, dest->key, strlen(dest->key));
	queue_dest_free(dest);
}

/* Every message waiting for dest gets the same result: code 0 (temporary) or a 5xx. */
static void
queue_dest_fail_pending(struct queue_runner *qr, struct queue_dest *dest, unsigned int code,
                        const char *reason)
{
	while (dest->head != NULL) {
		struct queue_msg *msg = dest->head;

		dest->head = msg->next;
		dest->npending--;
		queue_fail_msg(qr, msg, code, reason);
	}
	dest->tail = NULL;
	queue_dest_drained(qr, dest);
}

/* Every host of dest failed: its mail is deferred, and so is mail for it read until the first
 * retry delay has passed, without a try (a dead destination costs no connection timeouts). */
static void
queue_dest_dead(struct queue_runner *qr, struct queue_dest *dest, const char *reason)
{
	int64_t secs = (int64_t)(qr->schedule[0] / 1000);
	char safe[LOG_SANITIZE_SIZE];

	secs = secs < 1 ? 1 : secs > 300 ? 300 : secs;
	dest->dead_until = queue_now() + secs;
	(void)snprintf(dest->dead_reason, sizeof(dest->dead_reason), "%s", reason);
	log_info("event=destination_dead dest=%s for_s=%lld reason=\"%s\"", dest->key,
	         (long long)secs, log_sanitize_str(safe, reason));
	queue_dest_fail_pending(qr, dest, 0, reason);
}

/* dest is dead: mail never tried yet is deferred without a try. Mail tried before is due by
 * its schedule or because an operator asked for a retry: that goes on, and a delivery brings
 * the destination back to life. */
static void
queue_dest_defer_new(struct queue_runner *qr, struct queue_dest *dest)
{
	struct queue_msg **pp = &dest->head, *keep_tail = NULL;
	char why[320];

	(void)snprintf(why, sizeof(why), "%s (at the last try)", dest->dead_reason);
	while (*pp != NULL) {
		struct queue_msg *msg = *pp;
		bool tried = false;

		for (size_t i = 0; i < msg->nrcpts; i++)
			tried = tried || msg->attempts[i] > 0;
		if (tried) {
			keep_tail = msg;
			pp = &msg->next;
			continue;
		}
		*pp = msg->next;
		dest->npending--;
		queue_fail_msg(qr, msg, 0, why);
	}
	dest->tail = keep_tail;
	queue_dest_drained(qr, dest);
}

/* queue.destination_rate: refills the bucket; true when a message may start now. */
static bool
queue_dest_has_token(struct queue_runner *qr, struct queue_dest *dest)
{
	double rate = (double)qr->opts.destination_rate;
	uint64_t now = queue_mono_ms();

	if (qr->opts.destination_rate == 0)
		return true;
	dest->tokens += (double)(now - dest->refilled) * rate / 1000.0;
	dest->refilled = now;
	if (dest->tokens > (rate > 1 ? rate : 1))
		dest->tokens = rate > 1 ? rate : 1;
	return dest->tokens >= 1;
}

static void
queue_rate_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_dest *dest = arg;

	(void)fd;
	(void)what;
	queue_dispatch(dest->qr, dest);
	queue_dest_maybe_free(dest->qr, dest);
}

/* Dispatches dest again when its next token is there. */
static void
queue_dest_wait_token(struct queue_runner *qr, struct queue_dest *dest)
{
	double wait = (1.0 - dest->tokens) * 1000.0 / (double)qr->opts.destination_rate;
	struct timeval tv;

	if (dest->rate_ev == NULL)
		dest->rate_ev = evtimer_new(qr->base, queue_rate_cb, dest);
	if (dest->rate_ev == NULL || evtimer_pending(dest->rate_ev, NULL))
		return;
	wait = wait < 1 ? 1 : wait;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)((uint64_t)wait % 1000) * 1000;
	(void)evtimer_add(dest->rate_ev, &tv);
}

static struct smtp_client_msg *
queue_session_next(void *ctx)
{
	struct queue_session *s = ctx;
	struct queue_dest *dest = s->dest;
	struct queue_msg *msg;
	bool stopping;

	pthread_mutex_lock(&s->qr->lock);
	stopping = s->qr->stopping;
	pthread_mutex_unlock(&s->qr->lock);
	if (s->fresh) {
		s->fresh = false;
		dest->nfresh--;
	}
	msg = dest->head;
	if (msg == NULL || stopping)
		return NULL;
	if (!queue_dest_has_token(s->qr, dest)) {
		/* Over the rate: this connection ends, the timer opens the next one. */
		queue_dest_wait_token(s->qr, dest);
		return NULL;
	}
	if (s->qr->opts.destination_rate != 0)
		dest->tokens -= 1;
	dest->head = msg->next;
	if (dest->head == NULL)
		dest->tail = NULL;
	dest->npending--;
	msg->next = NULL;
	queue_dest_drained(s->qr, dest);
	return &msg->cmsg;
}

static void
queue_session_msg_done(struct smtp_client_msg *cmsg, void *ctx)
{
	struct queue_session *s = ctx;
	struct queue_msg *msg = cmsg->ctx;
	bool stopping;

	pthread_mutex_lock(&s->qr->lock);
	stopping = s->qr->stopping;
	pthread_mutex_unlock(&s->qr->lock);
	/* At shutdown nothing is recorded: the recipients stay due in the store. */
	if (!stopping) {
		struct queue_dest *dest = s->dest;

		for (size_t i = 0; i < msg->nrcpts; i++) {
			if (msg->crcpts[i].code >= 200 && msg->crcpts[i].code < 300) {
				dest->dead_until = 0;
				/* Additive increase: one more connection per window delivered. */
				dest->window += 1.0 / dest->window;
				if (dest->window > (double)s->qr->opts.connections_per_destination)
					dest->window =
						(double)s->qr->opts.connections_per_destination;
				break;
			}
		}
		queue_record(s->qr, msg);
	}
	queue_msg_free(msg);
}

static void
queue_session_closed(const char *reason, bool delivered_any, void *ctx)
{
	struct queue_session *s = ctx;
	struct queue_runner *qr = s->qr;
	struct queue_dest *dest = s->dest;
	bool stopping;

	pthread_mutex_lock(&qr->lock);
	stopping = qr->stopping;
	pthread_mutex_unlock(&qr->lock);
	if (s->fresh)
		dest->nfresh--;
	dest->nconns--;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		qr->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	free(s);
	if (stopping)
		return;
	if (reason != NULL) {
		/* Multiplicative decrease: a destination that drops us (421), times out or
		 * refuses gets fewer connections, until deliveries bring them back. */
		double before = dest->window;

		dest->window = dest->window / 2 < 1 ? 1 : dest->window / 2;
		if ((unsigned int)dest->window != (unsigned int)before)
			log_info("event=destination_throttle dest=%s connections=%u",
			         dest->key, (unsigned int)dest->window);
	}
	/* The destination is unreachable: everything waiting for it is deferred, unless another
	 * connection to it is still working. */
	if (reason != NULL && !delivered_any && dest->nconns == 0 &&
	    dest->next_target + 1 < dest->ntargets) {
		/* RFC 5321 5.1: every host of the list is tried before the mail is deferred. */
		dest->next_target++;
	} else if (reason != NULL && !delivered_any && dest->nconns == 0) {
		dest->next_target = 0;
		queue_dest_dead(qr, dest, reason);
	}
	queue_dispatch(qr, dest);
	queue_dest_maybe_free(qr, dest);
}

static const struct smtp_client_callbacks queue_client_cb = {
	.next_msg = queue_session_next,
	.msg_done = queue_session_msg_done,
	.closed = queue_session_closed,
};

static void queue_dns_done(enum dns_status status, const struct dns_target *targets, size_t n,
                           const char *error, void *ctx);

/* Opens connections while messages wait and the destination's limit allows; looks the
 * destination up first when it is a domain's MX. */
static void
queue_dispatch(struct queue_runner *qr, struct queue_dest *dest)
{
	if (dest->dead_until != 0 && dest->head != NULL) {
		if (dest->dead_until > queue_now())
			queue_dest_defer_new(qr, dest);
		else
			dest->dead_until = 0;
		if (dest->head == NULL)
			return;
	}
	if (dest->state == QUEUE_DEST_LOOKUP && dest->head != NULL) {
		struct queue_mx_cached *mc = hmap_get(qr->mx_cache, dest->domain,
		                                      strlen(dest->domain));

		if (mc != NULL && mc->expires > queue_now()) {
			dest->targets = xrealloc(dest->targets, mc->n * sizeof(*dest->targets));
			memcpy(dest->targets, mc->targets, mc->n * sizeof(*dest->targets));
			dest->ntargets = mc->n;
			dest->next_target = 0;
			dest->state = QUEUE_DEST_READY;
		}
	}
	if (dest->state == QUEUE_DEST_LOOKUP && dest->head != NULL) {
		dest->state = QUEUE_DEST_RESOLVING;
		dns_resolve_mx(qr->dns, dest->domain, (uint16_t)qr->opts.mx_port, queue_dns_done,
		               dest);
		return;
	}
	if (dest->state != QUEUE_DEST_READY)
		return;
	if (dest->npending > dest->nfresh && !queue_dest_has_token(qr, dest)) {
		queue_dest_wait_token(qr, dest);
		return;
	}
	while (dest->npending > dest->nfresh && dest->nconns < (unsigned int)dest->window) {
		struct queue_session *s = xcalloc(1, sizeof(*s));
		const char *names[3] = {NULL, NULL, NULL};
		struct smtp_client_options o = {
			.helo = qr->hostname,
			.peer_name = dest->key,
			.tls_level = dest->tls_level,
			.tls = dest->tls_level == SMTP_TLS_VERIFY ? qr->tls_verify : qr->tls,
			.verify_names = names,
			.chunking = qr->opts.chunking,
			.connect_timeout = qr->opts.connect_timeout,
			.command_timeout = qr->opts.command_timeout,
			.data_timeout = qr->opts.data_timeout,
		};

		if (dest->relay && qr->relay_user != NULL) {
			o.auth_user = qr->relay_user;
			o.auth_password = qr->relay_password;
		}

		const struct dns_target *t = &dest->targets[dest->next_target];
		char peer[320];

		if (dest->domain != NULL) {
			char ip[INET6_ADDRSTRLEN] = "";
			const struct sockaddr *sa = (const struct sockaddr *)&t->addr;

			if (sa->sa_family == AF_INET)
				(void)inet_ntop(AF_INET,
				                &((const struct sockaddr_in *)sa)->sin_addr, ip,
				                sizeof(ip));
			else
				(void)inet_ntop(AF_INET6,
				                &((const struct sockaddr_in6 *)sa)->sin6_addr, ip,
				                sizeof(ip));
			(void)snprintf(peer, sizeof(peer), "%s[%s]", t->host, ip);
			o.peer_name = peer;
			/* The MX host's name (RFC 7672 would want DNSSEC for it; without, the
			 * domain's own name is accepted too, like Postfix's "secure"). */
			names[0] = t->host;
			if (strcasecmp(t->host, dest->domain) != 0)
				names[1] = dest->domain;
		} else {
			names[0] = dest->tls_name;
		}
		s->qr = qr;
		s->dest = dest;
		s->fresh = true;
		if (smtp_client_start(qr->base, (const struct sockaddr *)&t->addr, t->addrlen, &o,
		                      &queue_client_cb, s, &s->client) < 0) {
			free(s);
			if (dest->nconns == 0)
				queue_dest_dead(qr, dest, "cannot start a connection");
			return;
		}
		dest->nconns++;
		dest->nfresh++;
		s->next = qr->sessions;
		if (s->next != NULL)
			s->next->prev = s;
		qr->sessions = s;
	}
}

static void
queue_dns_done(enum dns_status status, const struct dns_target *targets, size_t n,
               const char *error, void *ctx)
{
	struct queue_dest *dest = ctx;
	struct queue_runner *qr;
	unsigned int code = 0;
	char reason[512];
	bool stopping;

	/* The runner is reached through any session-independent path: the dest's messages. */
	qr = dest->qr;
	pthread_mutex_lock(&qr->lock);
	stopping = qr->stopping;
	pthread_mutex_unlock(&qr->lock);
	dest->state = QUEUE_DEST_LOOKUP;
	if (stopping)
		return;
	if (status == DNS_OK) {
		struct queue_mx_cached *mc = hmap_get(qr->mx_cache, dest->domain,
		                                      strlen(dest->domain));

		if (mc != NULL || hmap_count(qr->mx_cache) < QUEUE_MX_CACHE_MAX) {
			free(mc);
			mc = xmalloc(sizeof(*mc) + n * sizeof(*targets));
			mc->expires = queue_now() + QUEUE_MX_CACHE_SECS;
			mc->n = n;
			memcpy(mc->targets, targets, n * sizeof(*targets));
			(void)hmap_put(qr->mx_cache, dest->domain, strlen(dest->domain), mc);
		}
		dest->targets = xrealloc(dest->targets, n * sizeof(*targets));
		memcpy(dest->targets, targets, n * sizeof(*targets));
		dest->ntargets = n;
		dest->next_target = 0;
		dest->state = QUEUE_DEST_READY;
		queue_dispatch(qr, dest);
		return;
	}
	/* RFC 7505 3: a null MX fails at once (556 5.1.10); so does a domain that does not
	 * exist; anything else is temporary. */
	if (status == DNS_NULL_MX)
		code = 556;
	else if (status == DNS_NOTFOUND)
		code = 550;
	(void)snprintf(reason, sizeof(reason), "%s%s", code == 556 ? "556 5.1.10 " :
	               code == 550 ? "550 5.1.2 " : "", error);
	if (code == 0)
		queue_dest_dead(qr, dest, reason);
	else
		queue_dest_fail_pending(qr, dest, code, reason);
	queue_dest_maybe_free(qr, dest);
}

static const struct queue_route *
queue_route_for(const struct queue_runner *qr, const char *domain)
{
	for (size_t i = 0; i < qr->nroutes; i++) {
		if (strcasecmp(qr->routes[i].domain, domain) == 0)
			return &qr->routes[i];
	}
	return qr->have_relay ? &qr->relay : NULL;
}

static const char *const queue_tls_names[] = {"never", "opportunistic", "required", "verify"};

/* The TLS level for mail to domain: its policy, the nearest parent's ".domain" policy, or
 * the default. */
static enum smtp_client_tls
queue_tls_for(const struct queue_runner *qr, const char *domain)
{
	const struct queue_tls_policy *best = NULL;
	size_t dlen = strlen(domain);

	for (size_t i = 0; i < qr->npolicies; i++) {
		const struct queue_tls_policy *p = &qr->policies[i];
		size_t plen = strlen(p->domain);

		if (p->domain[0] != '.') {
			if (strcasecmp(p->domain, domain) == 0)
				return p->level;
		} else if (dlen > plen && strcasecmp(domain + dlen - plen, p->domain) == 0 &&
		           (best == NULL || plen > strlen(best->domain))) {
			best = p;
		}
	}
	return best != NULL ? best->level : qr->opts.tls;
}

/* The destination of a route, or of a domain's MX hosts (looked up when first dispatched).
 * Domains sharing a route share its connections unless their TLS needs differ. */
static struct queue_dest *
queue_dest_get(struct queue_runner *qr, const struct queue_route *route, const char *domain)
{
	bool relay = route != NULL && route == &qr->relay;
	enum smtp_client_tls level = relay ? qr->opts.relay_tls : queue_tls_for(qr, domain);
	const char *tls_name = relay ? qr->relay_name : domain;
	struct queue_dest *dest;
	char key[600];

	if (route != NULL && level == SMTP_TLS_VERIFY)
		(void)snprintf(key, sizeof(key), "%s#verify:%s", route->name, tls_name);
	else if (route != NULL && level != qr->opts.tls)
		(void)snprintf(key, sizeof(key), "%s#%s", route->name, queue_tls_names[level]);
	else if (route != NULL)
		(void)snprintf(key, sizeof(key), "%s", route->name);
	else
		(void)snprintf(key, sizeof(key), "mx:%s", domain);
	str_lower(key);
	dest = hmap_get(qr->dests, key, strlen(key));
	if (dest != NULL)
		return dest;
	dest = xcalloc(1, sizeof(*dest));
	dest->qr = qr;
	dest->key = xstrdup(key);
	dest->tls_level = level;
	dest->window = (double)qr->opts.connections_per_destination;
	dest->tokens = qr->opts.destination_rate > 1 ? (double)qr->opts.destination_rate : 1;
	dest->refilled = queue_mono_ms();
	if (route != NULL && tls_name[0] != '\0')
		dest->tls_name = xstrdup(tls_name);
	if (route != NULL) {
		dest->targets = xcalloc(1, sizeof(*dest->targets));
		memcpy(&dest->targets[0].addr, &route->addr, sizeof(route->addr));
		dest->targets[0].addrlen = (socklen_t)route->addrlen;
		(void)!str_copy(dest->targets[0].host, sizeof(dest->targets[0].host), route->name);
		dest->ntargets = 1;
		dest->state = QUEUE_DEST_READY;
		dest->relay = relay;
	} else {
		dest->domain = xstrdup(domain);
		str_lower(dest->domain);
		dest->state = QUEUE_DEST_LOOKUP;
	}
	(void)hmap_put(qr->dests, dest->key, strlen(dest->key), dest);
	return dest;
}

/* ---- Reading due recipients ------------------------------------------------------------- */

struct queue_read {
	struct queue_runner *qr;
	struct hmap *msgs; /* "queue_id/dest" -> struct queue_msg, this read's */
	struct queue_msg **order;
	size_t norder;
	unsigned int found;
	unsigned int passed; /* over the share of their destination or sender */
};

static char *
queue_dup_or_null(const char *s)
{
	return s[0] != '\0' ? xstrdup(s) : NULL;
}

static int
queue_due_cb(const struct store_queue_rcpt *r, void *ctx)
{
	struct queue_read *rd = ctx;
	struct queue_runner *qr = rd->qr;
	const struct queue_route *route = queue_route_for(qr, r->domain);
	struct queue_dest *dest = queue_dest_get(qr, route, r->domain);
	struct queue_sender *snd = hmap_get(qr->senders, r->sender, strlen(r->sender));
	char key[700];
	struct queue_msg *msg;
	size_t i;

	/* Recipients of one message to one destination travel in one transaction. */
	(void)snprintf(key, sizeof(key), "%lld/%s", (long long)r->queue_id, dest->key);
	msg = hmap_get(rd->msgs, key, strlen(key));
	if (msg == NULL) {
		/* Fair share: a destination or a sender with a huge backlog gets its share of
		 * memory and connections, and the read goes on to everybody else's mail. */
		if (dest->npending + dest->nread >= queue_dest_share(qr)) {
			dest->passed = true;
			rd->passed++;
			return STORE_QUEUE_PASS;
		}
		if (snd != NULL && snd->n >= qr->sender_share) {
			snd->passed = true;
			rd->passed++;
			queue_dest_maybe_free(qr, dest);
			return STORE_QUEUE_PASS;
		}
		dest->nread++;
	}
	rd->found++;
	(void)hmap_put(qr->inflight, &r->id, sizeof(r->id), (void *)1);
	if (snd == NULL) {
		snd = xcalloc(1, sizeof(*snd));
		(void)hmap_put(qr->senders, r->sender, strlen(r->sender), snd);
	}
	snd->n++;
	if (msg == NULL) {
		msg = xcalloc(1, sizeof(*msg));
		msg->queue_id = r->queue_id;
		(void)!str_copy(msg->blob_id, sizeof(msg->blob_id), r->blob_id);
		msg->sender = xstrdup(r->sender);
		msg->envid = queue_dup_or_null(r->envid);
		msg->ret = queue_dup_or_null(r->ret);
		msg->store = qr->store;
		msg->size = r->size;
		msg->created = r->created;
		msg->dest = dest;
		(void)hmap_put(rd->msgs, key, strlen(key), msg);
		rd->order = xrealloc(rd->order, (rd->norder + 1) * sizeof(*rd->order));
		rd->order[rd->norder++] = msg;
	}
	i = msg->nrcpts++;
	msg->rcpt_ids = xrealloc(msg->rcpt_ids, msg->nrcpts * sizeof(*msg->rcpt_ids));
	msg->attempts = xrealloc(msg->attempts, msg->nrcpts * sizeof(*msg->attempts));
	msg->delay_notified = xrealloc(msg->delay_notified,
	                               msg->nrcpts * sizeof(*msg->delay_notified));
	msg->crcpts = xrealloc(msg->crcpts, msg->nrcpts * sizeof(*msg->crcpts));
	msg->strs = xrealloc(msg->strs, 3 * msg->nrcpts * sizeof(*msg->strs));
	msg->rcpt_ids[i] = r->id;
	msg->attempts[i] = r->attempts;
	msg->delay_notified[i] = r->delay_notified;
	memset(&msg->crcpts[i], 0, sizeof(msg->crcpts[i]));
	msg->strs[3 * i] = xstrdup(r->rcpt);
	msg->strs[3 * i + 1] = queue_dup_or_null(r->notify);
	msg->strs[3 * i + 2] = queue_dup_or_null(r->orcpt);
	msg->crcpts[i].address = msg->strs[3 * i];
	msg->crcpts[i].notify = msg->strs[3 * i + 1];
	msg->crcpts[i].orcpt = msg->strs[3 * i + 2];
	return 0;
}

static bool
queue_collect_id(const void *key, size_t keylen, void *value, void *ctx)
{
	int64_t **p = ctx;

	(void)keylen;
	(void)value;
	memcpy(*p, key, sizeof(int64_t));
	(*p)++;
	return false;
}

static int
queue_cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static bool
queue_drop_entry(const void *key, size_t keylen, void *value, void *ctx)
{
	(void)key;
	(void)keylen;
	(void)value;
	(void)ctx;
	return true;
}

/* Forgets the idle destinations kept while they were dead. */
static bool
queue_sweep_dest(const void *key, size_t keylen, void *value, void *ctx)
{
	struct queue_dest *dest = value;
	struct queue_runner *qr = ctx;

	(void)key;
	(void)keylen;
	if (!queue_dest_idle(qr, dest))
		return false;
	if (dest->passed)
		qr->front_wanted = true;
	queue_dest_free(dest);
	return true;
}

static bool
queue_sweep_mx(const void *key, size_t keylen, void *value, void *ctx)
{
	struct queue_mx_cached *mc = value;
	const int64_t *now = ctx;

	(void)key;
	(void)keylen;
	if (mc->expires > *now)
		return false;
	free(mc);
	return true;
}

static void
queue_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_runner *qr = arg;
	size_t ninflight = hmap_count(qr->inflight);
	struct queue_read rd;
	int64_t *skip, *w;
	unsigned int limit;
	int ret;

	struct store_queue_cursor front_cursor;
	struct store_queue_cursor *cursor = &qr->cursor;
	bool front = qr->front_wanted;
	unsigned int examine = qr->examine;
	uint64_t mono = queue_mono_ms();

	(void)fd;
	qr->starved = ninflight >= qr->opts.max_in_flight;
	if (qr->starved)
		return;
	hmap_foreach(qr->dests, queue_sweep_dest, qr);
	if (queue_now() - qr->mx_swept >= QUEUE_MX_CACHE_SECS) {
		qr->mx_swept = queue_now();
		hmap_foreach(qr->mx_cache, queue_sweep_mx, &qr->mx_swept);
	}
	limit = (unsigned int)MIN(qr->opts.batch, qr->opts.max_in_flight - ninflight);
	if (front) {
		store_queue_cursor_reset(&front_cursor);
		cursor = &front_cursor;
		examine = (unsigned int)MIN(ninflight + (size_t)limit * QUEUE_EXAMINE_FACTOR,
		                            (size_t)UINT_MAX);
		qr->front_wanted = false;
	} else {
		int64_t gen = qr->generation;

		/* An operator released or retried mail (`postamt queue`): it may be behind the
		 * position, so the read starts over (checked by the interval timer, not by every
		 * kick); and so it does every QUEUE_LAP_MS anyway. */
		if ((what & EV_TIMEOUT) &&
		    store_meta_get_int(qr->store, "queue_generation", &gen) < 0)
			gen = qr->generation;
		if (gen != qr->generation || mono - qr->lap_started >= QUEUE_LAP_MS) {
			store_queue_cursor_reset(&qr->cursor);
			qr->lap_started = mono;
			qr->passed_behind = false;
			qr->generation = gen;
		}
	}
	skip = xcalloc(ninflight > 0 ? ninflight : 1, sizeof(*skip));
	w = skip;
	hmap_foreach(qr->inflight, queue_collect_id, &w);
	qsort(skip, ninflight, sizeof(*skip), queue_cmp_id);
	memset(&rd, 0, sizeof(rd));
	rd.qr = qr;
	rd.msgs = hmap_new();
	/* A read on the pool: this thread is not an I/O thread, and the query is one index range
	 * per priority class, so it holds the loop for well under a millisecond. */
	ret = store_queue_scan(qr->store, queue_now(), limit, examine, skip, ninflight, cursor,
	                       queue_due_cb, &rd);
	free(skip);
	if (!front) {
		if (rd.passed > 0)
			qr->passed_behind = true;
		if (cursor->end && qr->passed_behind) {
			/* Read to the end: what was passed over is behind the position. */
			store_queue_cursor_reset(&qr->cursor);
			qr->lap_started = mono;
			qr->passed_behind = false;
		}
		/* Only mail over its share: look further next time (a destination with a huge
		 * backlog in one block does not hide the mail behind it for long). */
		if (rd.found == 0 && rd.passed > 0)
			qr->examine = MIN(qr->examine * 2, QUEUE_EXAMINE_MAX);
		else
			qr->examine = MAX(qr->opts.batch * QUEUE_EXAMINE_FACTOR, 1024);
	}
	if (ret < 0)
		log_warn("event=queue_read result=failed error=\"%s\"", store_err_str(ret));
	for (size_t i = 0; i < rd.norder; i++) {
		struct queue_msg *msg = rd.order[i];

		msg->cmsg.sender = msg->sender;
		msg->cmsg.open = queue_msg_open;
		msg->cmsg.open_arg = msg;
		msg->cmsg.envid = msg->envid;
		msg->cmsg.ret = msg->ret;
		msg->cmsg.size = msg->size;
		msg->cmsg.rcpts = msg->crcpts;
		msg->cmsg.nrcpts = msg->nrcpts;
		msg->cmsg.ctx = msg;
		if (msg->dest->tail != NULL)
			msg->dest->tail->next = msg;
		else
			msg->dest->head = msg;
		msg->dest->tail = msg;
		msg->dest->npending++;
		msg->dest->nread = 0;
	}
	hmap_foreach(rd.msgs, queue_drop_entry, NULL);
	hmap_free(&rd.msgs);
	/* Messages are queued on their destinations before any connection starts, so that one
	 * connection carries all of a destination's messages of this read. */
	{
		struct queue_dest **dests = xcalloc(rd.norder + 1, sizeof(*dests));
		size_t n = 0;

		for (size_t i = 0; i < rd.norder; i++) {
			if (rd.order[i] != NULL)
				dests[n++] = rd.order[i]->dest;
		}
		for (size_t i = 0; i < n; i++)
			queue_dispatch(qr, dests[i]);
		free(dests);
	}
	free(rd.order);
	qr->starved = rd.found == limit && limit < qr->opts.batch;
	/* A full read, or one that stopped after passing over only mail in delivery: more may
	 * be due right now. One that found only mail over its share waits for the next tick. */
	if (ret >= 0 && limit > 0 &&
	    (rd.found == limit || (!cursor->end && (rd.found > 0 || rd.passed == 0))))
		event_active(qr->kick, EV_READ, 0);
}

/* n recipients of sender left memory. */
static void
queue_sender_release(struct queue_runner *qr, const char *sender, size_t n)
{
	struct queue_sender *snd = hmap_get(qr->senders, sender, strlen(sender));

	if (snd == NULL)
		return;
	snd->n = snd->n > n ? snd->n - n : 0;
	if (snd->passed && snd->n < qr->sender_share / 2) {
		snd->passed = false;
		queue_restart_lap(qr);
	}
	if (snd->n == 0) {
		(void)hmap_remove(qr->senders, sender, strlen(sender));
		free(snd);
	}
}

/* Outcomes committed: their recipients leave the in-flight set. */
static void
queue_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_runner *qr = arg;
	struct queue_outcome *list;
	bool freed = false;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&qr->lock);
	list = qr->inbox;
	qr->inbox = NULL;
	pthread_mutex_unlock(&qr->lock);
	while (list != NULL) {
		struct queue_outcome *o = list;

		list = o->next;
		for (size_t i = 0; i < o->n; i++)
			(void)hmap_remove(qr->inflight, &o->items[i].id, sizeof(o->items[i].id));
		queue_sender_release(qr, o->sender, o->n);
		queue_outcome_free(o);
		freed = true;
	}
	/* Reads that stopped at max_in_flight go on once there is room again. */
	if (freed && qr->starved &&
	    hmap_count(qr->inflight) + qr->opts.batch / 2 < qr->opts.max_in_flight)
		event_active(qr->kick, EV_READ, 0);
}

void
queue_runner_kick(struct queue_runner *qr)
{
	pthread_mutex_lock(&qr->lock);
	if (!qr->stopping)
		event_active(qr->kick, EV_READ, 0);
	pthread_mutex_unlock(&qr->lock);
}

/* An event rather than a direct loopbreak: it also works before the loop has started. */
static void
queue_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue_runner *qr = arg;

	(void)fd;
	(void)what;
	(void)event_base_loopbreak(qr->base);
}

static void *
queue_thread(void *arg)
{
	struct queue_runner *qr = arg;

	(void)event_base_loop(qr->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* ---- Set-up ----------------------------------------------------------------------------- */

static int
queue_parse_addr(const char *text, struct queue_route *r)
{
	int len = (int)sizeof(r->addr);

	memset(&r->addr, 0, sizeof(r->addr));
	if (evutil_parse_sockaddr_port(text, (struct sockaddr *)&r->addr, &len) < 0)
		return -1;
	if (((struct sockaddr *)&r->addr)->sa_family == AF_INET &&
	    ((struct sockaddr_in *)&r->addr)->sin_port == 0)
		return -1;
	if (((struct sockaddr *)&r->addr)->sa_family == AF_INET6 &&
	    ((struct sockaddr_in6 *)&r->addr)->sin6_port == 0)
		return -1;
	r->addrlen = len;
	r->name = xstrdup(text);
	return 0;
}

static int
queue_parse_routes(struct queue_runner *qr, const char *text)
{
	char *copy = xstrdup(text), *p = copy;

	for (;;) {
		char *word, *eq;
		struct queue_route r;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		word = p;
		p += strcspn(p, " \t");
		if (*p != '\0')
			*p++ = '\0';
		eq = strchr(word, '=');
		if (eq == NULL || eq == word) {
			free(copy);
			return -1;
		}
		*eq = '\0';
		memset(&r, 0, sizeof(r));
		if (queue_parse_addr(eq + 1, &r) < 0) {
			free(copy);
			return -1;
		}
		r.domain = xstrdup(word);
		qr->routes = xrealloc(qr->routes, (qr->nroutes + 1) * sizeof(*qr->routes));
		qr->routes[qr->nroutes++] = r;
	}
	free(copy);
	return 0;
}

static int
queue_parse_tls_level(const char *text, enum smtp_client_tls *level_r)
{
	for (size_t i = 0; i < N_ELEMENTS(queue_tls_names); i++) {
		if (strcasecmp(text, queue_tls_names[i]) == 0) {
			*level_r = (enum smtp_client_tls)i;
			return 0;
		}
	}
	return -1;
}

enum smtp_client_tls
queue_tls_level(const char *name)
{
	enum smtp_client_tls level = SMTP_TLS_OPPORTUNISTIC;

	(void)queue_parse_tls_level(name, &level);
	return level;
}

static int
queue_parse_policies(struct queue_runner *qr, const char *text)
{
	char *copy = xstrdup(text), *save = NULL;
	int ret = 0;

	for (char *word = strtok_r(copy, " \t,", &save); word != NULL;
	     word = strtok_r(NULL, " \t,", &save)) {
		char *eq = strchr(word, '=');
		struct queue_tls_policy p;

		if (eq == NULL || eq == word) {
			ret = -1;
			break;
		}
		*eq = '\0';
		if (queue_parse_tls_level(eq + 1, &p.level) < 0) {
			ret = -1;
			break;
		}
		p.domain = xstrdup(word);
		qr->policies = xrealloc(qr->policies, (qr->npolicies + 1) * sizeof(*qr->policies));
		qr->policies[qr->npolicies++] = p;
	}
	free(copy);
	return ret;
}

static void
queue_free_config(struct queue_runner *qr)
{
	for (size_t i = 0; i < qr->npolicies; i++)
		free(qr->policies[i].domain);
	free(qr->policies);
	free(qr->relay_name);
	if (qr->tls_verify != NULL)
		SSL_CTX_free(qr->tls_verify);
	for (size_t i = 0; i < qr->nroutes; i++) {
		free(qr->routes[i].domain);
		free(qr->routes[i].name);
	}
	free(qr->routes);
	free(qr->relay.name);
	free(qr->schedule);
	free(qr->hostname);
	free(qr->relay_user);
	if (qr->relay_password != NULL) {
		explicit_bzero(qr->relay_password, strlen(qr->relay_password));
		free(qr->relay_password);
	}
	if (qr->tls != NULL)
		SSL_CTX_free(qr->tls);
}

int
queue_runner_new(struct store *store, const struct queue_options *opts,
                 struct queue_runner **runner_r, const char **error_r)
{
	struct queue_runner *qr = xcalloc(1, sizeof(*qr));
	struct timeval tv = {(time_t)(opts->interval / 1000),
	                     (suseconds_t)(opts->interval % 1000) * 1000};

	qr->store = store;
	qr->opts = *opts;
	qr->hostname = xstrdup(opts->hostname);
	if (opts->relay_user != NULL && opts->relay_user[0] != '\0') {
		qr->relay_user = xstrdup(opts->relay_user);
		qr->relay_password = xstrdup(opts->relay_password != NULL ? opts->relay_password :
		                                                             "");
	}
	pthread_mutex_init(&qr->lock, NULL);
	if (queue_parse_schedule(opts->retry_schedule, &qr->schedule, &qr->nschedule) < 0) {
		*error_r = "queue.retry_schedule: expected durations like \"5m 10m 1h\"";
		goto fail;
	}
	if (queue_parse_routes(qr, opts->routes) < 0) {
		*error_r = "queue.routes: expected \"domain=host:port ...\" with numeric addresses";
		goto fail;
	}
	if (opts->relay_host[0] != '\0') {
		if (queue_parse_addr(opts->relay_host, &qr->relay) < 0) {
			*error_r = "queue.relay_host: expected a numeric host:port";
			goto fail;
		}
		qr->have_relay = true;
	}
	if (queue_parse_policies(qr, opts->tls_policies != NULL ? opts->tls_policies : "") < 0) {
		*error_r = "queue.tls_policies: expected \"domain=never|opportunistic|required|"
		           "verify ...\"";
		goto fail;
	}
	qr->relay_name = xstrdup(opts->relay_name != NULL ? opts->relay_name : "");
	if (opts->relay_tls == SMTP_TLS_VERIFY && qr->have_relay && qr->relay_name[0] == '\0') {
		*error_r = "queue.relay_tls = verify needs queue.relay_name (the name in the "
		           "relay's certificate)";
		goto fail;
	}
	/* Both contexts always: a policy may ask for TLS whatever the default. */
	qr->tls = smtp_client_tls_ctx();
	if (qr->tls == NULL) {
		*error_r = "cannot create the TLS client context";
		goto fail;
	}
	qr->tls_verify = smtp_client_tls_verify_ctx(opts->tls_ca_file, error_r);
	if (qr->tls_verify == NULL)
		goto fail;
	qr->inflight = hmap_new();
	qr->dests = hmap_new();
	qr->senders = hmap_new();
	qr->mx_cache = hmap_new();
	store_queue_cursor_reset(&qr->cursor);
	qr->lap_started = queue_mono_ms();
	if (store_meta_get_int(store, "queue_generation", &qr->generation) < 0)
		qr->generation = 0;
	qr->examine = (unsigned int)MAX(opts->batch * QUEUE_EXAMINE_FACTOR, 1024);
	qr->sender_share = (size_t)MAX(opts->max_in_flight / 2, 1);
	qr->base = event_base_new();
	if (qr->base == NULL) {
		*error_r = "cannot create an event base";
		goto fail;
	}
	if (dns_resolver_new(qr->base, opts->resolvers, opts->dns_timeout, &qr->dns, error_r) < 0)
		goto fail;
	qr->tick = event_new(qr->base, -1, EV_PERSIST, queue_tick_cb, qr);
	qr->kick = event_new(qr->base, -1, 0, queue_tick_cb, qr);
	qr->wake = event_new(qr->base, -1, 0, queue_wake_cb, qr);
	qr->stop = event_new(qr->base, -1, 0, queue_stop_cb, qr);
	if (qr->tick == NULL || qr->kick == NULL || qr->wake == NULL || qr->stop == NULL ||
	    event_add(qr->tick, &tv) < 0) {
		*error_r = "cannot create the queue timers";
		goto fail;
	}
	/* The first look right away: mail queued before a restart goes out at once. */
	event_active(qr->kick, EV_READ, 0);
	if (pthread_create(&qr->thread, NULL, queue_thread, qr) != 0) {
		*error_r = "cannot start the queue thread";
		goto fail;
	}
	qr->have_thread = true;
	pthread_setname_np(qr->thread, "queue");
	log_info("event=queue_start routes=%zu relay=%s schedule_steps=%zu", qr->nroutes,
	         qr->have_relay ? qr->relay.name : "none", qr->nschedule);
	*runner_r = qr;
	return 0;
fail:
	queue_runner_stop(qr);
	queue_runner_free(&qr);
	return -1;
}

static bool
queue_free_dest(const void *key, size_t keylen, void *value, void *ctx)
{
	struct queue_dest *dest = value;

	(void)key;
	(void)keylen;
	(void)ctx;
	while (dest->head != NULL) {
		struct queue_msg *msg = dest->head;

		dest->head = msg->next;
		queue_msg_free(msg);
	}
	queue_dest_free(dest);
	return true;
}

void
queue_runner_stop(struct queue_runner *qr)
{
	pthread_mutex_lock(&qr->lock);
	qr->stopping = true;
	pthread_mutex_unlock(&qr->lock);
	if (qr->have_thread) {
		event_active(qr->stop, EV_TIMEOUT, 0);
		pthread_join(qr->thread, NULL);
		qr->have_thread = false;
	}
	if (qr->base == NULL)
		return;
	/* The thread is gone: its structures are ours now. Connections are dropped; their
	 * callbacks see `stopping` and record nothing. The frees run as events. */
	dns_resolver_free(&qr->dns); /* lookups in progress end now and record nothing */
	while (qr->sessions != NULL)
		smtp_client_abort(qr->sessions->client, "shutting down");
	(void)event_base_loop(qr->base, EVLOOP_NONBLOCK);
	if (qr->dests != NULL)
		hmap_foreach(qr->dests, queue_free_dest, NULL);
}

/* Frees a value of a map that owns plain allocations (senders, the MX cache). */
static bool
queue_free_value(const void *key, size_t keylen, void *value, void *ctx)
{
	(void)key;
	(void)keylen;
	(void)ctx;
	free(value);
	return true;
}

void
queue_runner_free(struct queue_runner **runner)
{
	struct queue_runner *qr = *runner;

	if (qr == NULL)
		return;
	*runner = NULL;
	while (qr->inbox != NULL) {
		struct queue_outcome *o = qr->inbox;

		qr->inbox = o->next;
		queue_outcome_free(o);
	}
	if (qr->tick != NULL)
		event_free(qr->tick);
	if (qr->kick != NULL)
		event_free(qr->kick);
	if (qr->wake != NULL)
		event_free(qr->wake);
	if (qr->stop != NULL)
		event_free(qr->stop);
	if (qr->base != NULL)
		event_base_free(qr->base);
	if (qr->dests != NULL)
		hmap_free(&qr->dests);
	if (qr->inflight != NULL) {
		hmap_foreach(qr->inflight, queue_drop_entry, NULL);
		hmap_free(&qr->inflight);
	}
	if (qr->senders != NULL) {
		hmap_foreach(qr->senders, queue_free_value, NULL);
		hmap_free(&qr->senders);
	}
	if (qr->mx_cache != NULL) {
		hmap_foreach(qr->mx_cache, queue_free_value, NULL);
		hmap_free(&qr->mx_cache);
	}
	queue_free_config(qr);
	pthread_mutex_destroy(&qr->lock);
	free(qr);
}
