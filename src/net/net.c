/* Listeners, I/O threads and connections (see net.h for the threading contract).
 *
 * Every I/O thread accepts on its own copy of each listening socket (SO_REUSEPORT, see
 * listen.c), applies the global and per-address connection limits and owns the connection from
 * then on: no hand-off between threads per connection. The main thread runs signals and the
 * shutdown timer. Teardown is always deferred to a fresh loop iteration (never inside a
 * callback that still uses the connection), and the memory outlives the socket while async
 * work holds references. */
#include "net/net_internal.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <zlib.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/random.h>
#include <unistd.h>

struct delayed_task;

struct net_task {
	struct net_task *next;
	net_thread_fn *fn;
	void *arg;
};

struct net_thread {
	struct net_server *server;
	unsigned int index;
	pthread_t tid;
	struct event_base *base;
	struct event *wake;
	pthread_mutex_t lock;
	struct net_task *head, *tail; /* inbox */
	struct net_conn *conns;       /* open connections of this thread (doubly linked) */
	struct delayed_task *delayed; /* pending net_thread_post_delayed tasks */
	struct event *flush_ev;       /* runs thread_flush_cb after this iteration's callbacks */
	struct net_conn *flush_head;  /* connections listed for it (each holds a reference) */
};

struct net_listener {
	struct net_server *server;
	struct net_thread *thread; /* the I/O thread that accepts on it */
	unsigned int thread_index;
	enum net_service service;
	struct evconnlistener *evl;
};

struct net_server {
	struct event_base *base; /* main thread: signals, shutdown */
	struct net_thread *threads;
	unsigned int nthreads;
	struct net_listener *listeners;
	size_t nlisteners;
	const struct net_proto *protos[NET_SVC_COUNT];
	pthread_mutex_t tls_lock;
	SSL_CTX *tls;
	struct net_iplimit *iplimit;
	atomic_uint_fast64_t nconns;
	/* limits, reloadable (read by other threads without locks: torn reads are harmless) */
	_Atomic uint64_t max_connections, max_per_ip, max_rate_per_ip, idle_ms, handshake_ms, max_output;
	uint64_t sid_base;
	atomic_uint_fast64_t sid_next;
	struct event *stop_timer;
	uint64_t stop_deadline_ms;
	atomic_bool stopping;
};

struct net_conn {
	struct net_conn *prev, *next; /* in thread->conns */
	struct net_thread *thread;
	enum net_service service;
	const struct net_proto *proto;
	void *session;
	struct bufferevent *bev;
	struct bufferevent *raw; /* the socket under a STARTTLS filter, else NULL */
	struct event *flush_ev;  /* re-checks the socket's output while closing */
	struct net_conn *flush_next; /* in thread->flush_head while flush_listed */
	bool flush_listed;       /* output to write or input to hand over in thread_flush_cb */
	bool want_input;         /* resumed with input buffered: run proto->input from there */
	bool paused;             /* net_conn_pause: proto->input is not called */
	bool peer_eof;           /* plain: the client half-closed while paused */
	bool lingering;          /* half-closed, discarding input until EOF or timeout */
	bool logged;             /* the disconnect line was written */
	const char *close_reason; /* static text for the disconnect line, or NULL */
	int fd;
	struct sockaddr_storage addr;
	char sid[13];
	char rip[INET6_ADDRSTRLEN];
	bool tls, loopback, closing, torn_down, handshaking, counted;
	atomic_int refs;
	uint64_t idle_ms;
	struct net_zlib *z;      /* COMPRESS=DEFLATE (RFC 4978) once started, else NULL */
};

/* Raw DEFLATE both ways: input is inflated into `in` as the protocol asks for it (bounded, so
 * a small compressed input cannot make a huge buffer), output deflated with a sync flush per
 * write, so every reply leaves at once. */
struct net_zlib {
	z_stream inflate, deflate;
	struct evbuffer *in;
	bool failed;
};

/* Inflated input held at most; more is inflated once the protocol consumed it. */
#define NET_ZLIB_IN_MAX (256 * 1024)

/* Input buffered at most on a plain connection (its read high watermark): reading stops at
 * this much until the protocol drains some. The protocols drain as they parse, so this only
 * bites on a paused connection or a flooding client; it must exceed the largest unit a
 * protocol waits for whole (64 KiB). */
#define NET_READ_MAX (256 * 1024)

static const char *const service_names[NET_SVC_COUNT] = {
	"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
};

const char *
net_service_name(enum net_service svc)
{
	return svc < NET_SVC_COUNT ? service_names[svc] : "?";
}

bool
net_service_implicit_tls(enum net_service svc)
{
	return svc == NET_SVC_SUBMISSIONS || svc == NET_SVC_IMAPS || svc == NET_SVC_POP3S;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval
ms_to_tv(uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

/* ---- Thread inbox ------------------------------------------------------------------------- */

static void
thread_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_thread *t = arg;
	struct net_task *task;

	pthread_mutex_lock(&t->lock);
	task = t->head;
	t->head = t->tail = NULL;
	pthread_mutex_unlock(&t->lock);
	while (task != NULL) {
		struct net_task *next = task->next;
		task->fn(task->arg);
		free(task);
		task = next;
	}
}

void
net_thread_post(struct net_thread *t, net_thread_fn *fn, void *arg)
{
	struct net_task *task = xmalloc(sizeof(*task));

	task->next = NULL;
	task->fn = fn;
	task->arg = arg;
	pthread_mutex_lock(&t->lock);
	if (t->tail != NULL)
		t->tail->next = task;
	else
		t->head = task;
	t->tail = task;
	pthread_mutex_unlock(&t->lock);
	event_active(t->wake, EV_READ, 0);
}

/* Delayed tasks are kept in a per-thread list so that the ones still pending at shutdown are
 * run (and release what they hold) instead of leaking with the event base. */
struct delayed_task {
	struct delayed_task *prev, *next;
	struct net_thread *thread;
	struct event *ev;
	uint64_t ms;
	net_thread_fn *fn;
	void *arg;
};

static void
delayed_run(struct delayed_task *d)
{
	net_thread_fn *fn = d->fn;
	void *arg = d->arg;
	struct net_thread *t = d->thread;

	if (d->prev != NULL)
		d->prev->next = d->next;
	else
		t->delayed = d->next;
	if (d->next != NULL)
		d->next->prev = d->prev;
	event_free(d->ev);
	free(d);
	fn(arg);
}

static void
delayed_cb(evutil_socket_t fd, short what, void *p)
{
	delayed_run(p);
}

/* On the thread itself: arm the timer. */
static void
delayed_arm(void *p)
{
	struct delayed_task *d = p;
	struct net_thread *t = d->thread;
	struct timeval tv = ms_to_tv(d->ms);

	d->ev = evtimer_new(t->base, delayed_cb, d);
	d->prev = NULL;
	d->next = t->delayed;
	if (t->delayed != NULL)
		t->delayed->prev = d;
	t->delayed = d;
	evtimer_add(d->ev, &tv);
}

void
net_thread_post_delayed(struct net_thread *t, uint64_t ms, net_thread_fn *fn, void *arg)
{
	struct delayed_task *d = xcalloc(1, sizeof(*d));

	d->thread = t;
	d->fn = fn;
	d->arg = arg;
	d->ms = ms;
	net_thread_post(t, delayed_arm, d);
}

static void *
thread_main(void *arg)
{
	struct net_thread *t = arg;

	event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* ---- Connections ------------------------------------------------------------------------ */

struct net_thread *
net_conn_thread(struct net_conn *c)
{
	return c->thread;
}

enum net_service
net_conn_service(const struct net_conn *c)
{
	return c->service;
}

const char *
net_conn_sid(const struct net_conn *c)
{
	return c->sid;
}

const char *
net_conn_rip(const struct net_conn *c)
{
	return c->rip;
}

bool
net_conn_is_loopback(const struct net_conn *c)
{
	return c->loopback;
}

bool
net_conn_is_tls(const struct net_conn *c)
{
	return c->tls && !c->handshaking;
}

static SSL *
conn_ssl(const struct net_conn *c)
{
	if (!c->tls || c->bev == NULL)
		return NULL;
	return bufferevent_openssl_get_ssl(c->bev);
}

const char *
net_conn_tls_version(const struct net_conn *c)
{
	SSL *ssl = conn_ssl(c);
	return ssl ? SSL_get_version(ssl) : NULL;
}

const char *
net_conn_tls_cipher(const struct net_conn *c)
{
	SSL *ssl = conn_ssl(c);
	return ssl ? SSL_get_cipher_name(ssl) : NULL;
}

static void
conn_zlib_free(struct net_conn *c)
{
	if (c->z == NULL)
		return;
	inflateEnd(&c->z->inflate);
	deflateEnd(&c->z->deflate);
	evbuffer_free(c->z->in);
	free(c->z);
	c->z = NULL;
}

void
net_conn_ref(struct net_conn *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void
net_conn_unref(struct net_conn **cp)
{
	struct net_conn *c = *cp;

	*cp = NULL;
	if (c == NULL)
		return;
	if (atomic_fetch_sub(&c->refs, 1) == 1) {
		conn_zlib_free(c);
		free(c);
	}
}

static void conn_schedule_teardown(struct net_conn *c, const char *reason);

/* The input the protocol reads: the socket's, or the inflated one under COMPRESS. */
static struct evbuffer *
conn_input(struct net_conn *c)
{
	struct evbuffer *raw = bufferevent_get_input(c->bev);
	struct net_zlib *z = c->z;

	if (z == NULL)
		return raw;
	while (!z->failed && evbuffer_get_length(raw) > 0 &&
	       evbuffer_get_length(z->in) < NET_ZLIB_IN_MAX) {
		size_t avail = evbuffer_get_length(raw);
		unsigned char *src = evbuffer_pullup(raw, (ev_ssize_t)MIN(avail, 65536));
		unsigned char dst[16384];
		int rc;

		z->inflate.next_in = src;
		z->inflate.avail_in = (uInt)MIN(avail, 65536);
		z->inflate.next_out = dst;
		z->inflate.avail_out = sizeof(dst);
		rc = inflate(&z->inflate, Z_SYNC_FLUSH);
		if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
			z->failed = true;
			log_info("sid=%s event=compress-error service=%s rip=%s", c->sid,
			         service_names[c->service], c->rip);
			conn_schedule_teardown(c, "compress-error");
			break;
		}
		evbuffer_drain(raw, MIN(avail, 65536) - z->inflate.avail_in);
		evbuffer_add(z->in, dst, sizeof(dst) - z->inflate.avail_out);
		if (rc == Z_BUF_ERROR || (z->inflate.avail_out != 0 && z->inflate.avail_in != 0))
			break;
	}
	return z->in;
}

const uint8_t *
net_conn_peek(struct net_conn *c, size_t max, size_t *len_r)
{
	struct evbuffer *in;
	size_t len;

	if (c->bev == NULL) {
		*len_r = 0;
		return NULL;
	}
	in = conn_input(c);
	len = MIN(evbuffer_get_length(in), max);
	*len_r = len;
	return len ? evbuffer_pullup(in, (ev_ssize_t)len) : NULL;
}

ssize_t
net_conn_find_lf(struct net_conn *c, size_t max)
{
	struct evbuffer *in;
	struct evbuffer_ptr end, pos;

	if (c->bev == NULL)
		return -1;
	in = conn_input(c);
	if (evbuffer_get_length(in) == 0)
		return -1;
	evbuffer_ptr_set(in, &end, MIN(max, evbuffer_get_length(in)), EVBUFFER_PTR_SET);
	pos = evbuffer_search_range(in, "\n", 1, NULL, &end);
	return pos.pos;
}

size_t
net_conn_input_len(struct net_conn *c)
{
	return c->bev ? evbuffer_get_length(conn_input(c)) : 0;
}

void
net_conn_drain(struct net_conn *c, size_t n)
{
	if (c->bev != NULL)
		evbuffer_drain(c->z != NULL ? c->z->in : bufferevent_get_input(c->bev), n);
}

/* Deflates data into the socket's output with a sync flush. */
static void
conn_deflate(struct net_conn *c, const void *data, size_t len)
{
	struct net_zlib *z = c->z;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	unsigned char dst[16384];

	z->deflate.next_in = (unsigned char *)(uintptr_t)data;
	z->deflate.avail_in = (uInt)len;
	do {
		z->deflate.next_out = dst;
		z->deflate.avail_out = sizeof(dst);
		if (deflate(&z->deflate, Z_SYNC_FLUSH) == Z_STREAM_ERROR)
			return;
		evbuffer_add(out, dst, sizeof(dst) - z->deflate.avail_out);
	} while (z->deflate.avail_out == 0);
}

int
net_conn_compress(struct net_conn *c)
{
	struct net_zlib *z;

	if (c->z != NULL || c->bev == NULL)
		return -1;
	z = xcalloc(1, sizeof(*z));
	/* Raw DEFLATE (RFC 4978 3); our side uses a 8 KiB window to keep the memory of a
	 * compressing connection small, the client's may be the full 32 KiB. */
	if (inflateInit2(&z->inflate, -15) != Z_OK) {
		free(z);
		return -1;
	}
	if (deflateInit2(&z->deflate, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -13, 5,
	                 Z_DEFAULT_STRATEGY) != Z_OK) {
		inflateEnd(&z->inflate);
		free(z);
		return -1;
	}
	z->in = evbuffer_new();
	c->z = z;
	return 0;
}

bool
net_conn_is_compressed(const struct net_conn *c)
{
	return c->z != NULL;
}

/* Plain (no TLS, not even a STARTTLS filter): its replies are written by thread_flush_cb with
 * one writev each, and pausing it costs no system call. */
static bool
conn_plain(const struct net_conn *c)
{
	return c->bev != NULL && !c->tls;
}

/* Lists the connection for this iteration's thread_flush_cb. Activating the thread's own
 * event from the thread costs no system call. */
static void
conn_list_flush(struct net_conn *c)
{
	struct net_thread *t = c->thread;

	if (c->flush_listed || c->torn_down)
		return;
	c->flush_listed = true;
	net_conn_ref(c);
	c->flush_next = t->flush_head;
	t->flush_head = c;
	event_active(t->flush_ev, EV_TIMEOUT, 0);
}

/* Output was added: a plain connection is flushed at the end of the iteration, unless its
 * write event is on (a backlog libevent is sending). Others are written by libevent. */
static void
conn_want_write(struct net_conn *c)
{
	if (conn_plain(c) && !(bufferevent_get_enabled(c->bev) & EV_WRITE))
		conn_list_flush(c);
}

static size_t
conn_buffered_input(struct net_conn *c)
{
	size_t n = evbuffer_get_length(bufferevent_get_input(c->bev));

	if (c->z != NULL)
		n += evbuffer_get_length(c->z->in);
	return n;
}

/* A plain connection keeps reading while paused (its read high watermark bounds what is
 * buffered); only proto->input waits. A TLS connection stops reading as before: the filter
 * has watermarks of its own. */
void
net_conn_pause(struct net_conn *c)
{
	if (c->bev == NULL)
		return;
	c->paused = true;
	if (!conn_plain(c))
		bufferevent_disable(c->bev, EV_READ);
}

void
net_conn_resume(struct net_conn *c)
{
	if (c->bev == NULL || c->closing)
		return;
	c->paused = false;
	if (!conn_plain(c)) {
		bufferevent_enable(c->bev, EV_READ);
		return;
	}
	/* Input that arrived while paused would otherwise wait for the next read. */
	if (c->peer_eof || conn_buffered_input(c) > 0) {
		c->want_input = true;
		conn_list_flush(c);
	}
}

static void conn_schedule_teardown(struct net_conn *c, const char *reason);

static size_t conn_pending_output(struct net_conn *c);

static void
check_output_cap(struct net_conn *c)
{
	/* Under a STARTTLS filter the data waits in the socket's buffer: count both. */
	size_t out = conn_pending_output(c);

	if (out > c->thread->server->max_output && !c->closing) {
		log_info("sid=%s event=disconnect service=%s rip=%s reason=output-overflow bytes=%zu",
		         c->sid, service_names[c->service], c->rip, out);
		c->logged = true;
		/* A client that does not read its replies is dropped at once, not flushed. */
		evbuffer_drain(bufferevent_get_output(c->bev),
		               evbuffer_get_length(bufferevent_get_output(c->bev)));
		if (c->raw != NULL)
			evbuffer_drain(bufferevent_get_output(c->raw),
			               evbuffer_get_length(bufferevent_get_output(c->raw)));
		conn_schedule_teardown(c, NULL);
	}
}

void
net_conn_write(struct net_conn *c, const void *data, size_t len)
{
	if (c->bev == NULL || c->torn_down)
		return;
	if (c->z != NULL)
		conn_deflate(c, data, len);
	else
		evbuffer_add(bufferevent_get_output(c->bev), data, len);
	conn_want_write(c);
	check_output_cap(c);
}

void
net_conn_printf(struct net_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->bev == NULL || c->torn_down)
		return;
	va_start(ap, fmt);
	if (c->z != NULL) {
		char line[4096];
		int n = vsnprintf(line, sizeof(line), fmt, ap);

		/* Protocol lines are short; a longer one is cut rather than lost. */
		if (n > 0)
			conn_deflate(c, line, MIN((size_t)n, sizeof(line) - 1));
	} else {
		evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	}
	va_end(ap);
	conn_want_write(c);
	check_output_cap(c);
}

size_t
net_conn_output_len(struct net_conn *c)
{
	/* Under a STARTTLS filter the encrypted bytes wait below it: they count too, or a
	 * protocol pacing its output by this would overrun the output cap. */
	return conn_pending_output(c);
}

void
net_conn_set_timeout(struct net_conn *c, uint64_t ms)
{
	struct timeval tv = ms_to_tv(ms);

	c->idle_ms = ms;
	if (c->bev != NULL && !c->handshaking)
		bufferevent_set_timeouts(c->bev, &tv, &tv);
}

bool
net_conn_is_closing(const struct net_conn *c)
{
	return c->closing;
}

static void
conn_teardown_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_conn *c = arg;
	struct net_server *s = c->thread->server;

	if (c->proto->close != NULL && c->session != NULL)
		c->proto->close(c->session, c);
	c->session = NULL;
	if (c->flush_ev != NULL)
		event_free(c->flush_ev);
	c->flush_ev = NULL;
	if (c->bev != NULL)
		bufferevent_free(c->bev); /* closes the socket (BEV_OPT_CLOSE_ON_FREE) */
	c->bev = NULL;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->thread->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->counted) {
		net__iplimit_release(s->iplimit, &c->addr, c->service);
		atomic_fetch_sub(&s->nconns, 1);
	}
	net_conn_unref(&c);
}

/* Tears the connection down in a fresh loop iteration; reason NULL = already logged. */
static void
conn_schedule_teardown(struct net_conn *c, const char *reason)
{
	if (c->torn_down)
		return;
	c->torn_down = true;
	c->closing = true;
	if (reason == NULL && !c->logged)
		reason = c->close_reason ? c->close_reason : "closed";
	if (reason != NULL)
		log_info("sid=%s event=disconnect service=%s rip=%s reason=%s", c->sid,
		         service_names[c->service], c->rip, reason);
	c->logged = true;
	if (c->bev != NULL)
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	event_base_once(c->thread->base, -1, EV_TIMEOUT, conn_teardown_cb, c, NULL);
}

static size_t
conn_pending_output(struct net_conn *c)
{
	size_t n = c->bev ? evbuffer_get_length(bufferevent_get_output(c->bev)) : 0;

	if (c->raw != NULL)
		n += evbuffer_get_length(bufferevent_get_output(c->raw));
	return n;
}

static void conn_finish_close(struct net_conn *c);

static void
conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_finish_close(arg);
}

/* The last replies must reach the client before the socket goes: wait until the TLS filter's
 * and the socket's output are empty. Then a plain connection is half-closed and its input
 * discarded for a moment (a lingering close): closing with unread input would make the kernel
 * send a reset, and the client could lose our last reply. */
static void
conn_finish_close(struct net_conn *c)
{
	struct timeval linger = {2, 0}, tick = {0, 10000};

	if (c->torn_down || c->lingering)
		return;
	if (c->bev != NULL && conn_pending_output(c) > 0) {
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
			conn_want_write(c);
			return; /* conn_flush_now or conn_write_cb calls again */
		}
		/* Only the socket under the TLS filter still has data: poll it shortly. */
		if (c->flush_ev == NULL)
			c->flush_ev = evtimer_new(c->thread->base, conn_flush_cb, c);
		evtimer_add(c->flush_ev, &tick);
		return;
	}
	if (c->bev != NULL && !c->tls && shutdown(bufferevent_getfd(c->bev), SHUT_WR) == 0) {
		struct evbuffer *in = bufferevent_get_input(c->bev);

		c->lingering = true;
		/* Input held while closing may have reached the read watermark and stopped reading;
		 * dropping it starts reading again. */
		evbuffer_drain(in, evbuffer_get_length(in));
		bufferevent_set_timeouts(c->bev, &linger, &linger);
		bufferevent_enable(c->bev, EV_READ);
		return;
	}
	conn_schedule_teardown(c, NULL);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct net_conn *c = arg;

	/* Called when the output buffer drained: a closing connection may go now. */
	if (c->closing) {
		conn_finish_close(c);
		return;
	}
	/* A plain connection's backlog went out: back to writing replies directly. */
	if (conn_plain(c) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
}

static void conn_run_input(struct net_conn *c);

/* One listed connection: input held back by a pause first (it may add replies), then the
 * output in one writev. What the socket does not take now is left to libevent's write
 * event, which conn_write_cb turns off again once the backlog is gone. */
static void
conn_flush_now(struct net_conn *c)
{
	struct evbuffer *out;

	if (c->torn_down || c->bev == NULL)
		return;
	if (c->want_input) {
		c->want_input = false;
		conn_run_input(c);
		if (c->torn_down)
			return;
		/* The replies to what the client sent before it half-closed still go out. */
		if (c->peer_eof && !c->paused && !c->closing)
			net_conn_close_because(c, "peer-closed");
	}
	if (!conn_plain(c) || (bufferevent_get_enabled(c->bev) & EV_WRITE))
		return;
	out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) > 0) {
		int n, err;

		/* libevent freezes the front of a socket bufferevent's output so that only its write
		 * callback drains it; it thaws it the same way around its own write. */
		evbuffer_unfreeze(out, 1);
		n = evbuffer_write(out, bufferevent_getfd(c->bev));
		err = errno;
		evbuffer_freeze(out, 1);
		if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
			/* EPIPE, ECONNRESET: as conn_event_cb does for an error */
			conn_schedule_teardown(c, c->closing ? NULL : "error");
			return;
		}
		if (evbuffer_get_length(out) > 0) {
			bufferevent_enable(c->bev, EV_WRITE);
			return;
		}
	}
	if (c->closing)
		conn_finish_close(c);
}

/* The thread's flush event: runs once after the callbacks of a loop iteration that listed
 * connections (conn_list_flush), so that all replies an iteration produced for a connection
 * leave in one system call and the write event is never touched while the socket takes
 * them. */
static void
thread_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_thread *t = arg;
	struct net_conn *c;

	while ((c = t->flush_head) != NULL) {
		t->flush_head = c->flush_next;
		c->flush_next = NULL;
		c->flush_listed = false;
		conn_flush_now(c);
		net_conn_unref(&c);
	}
}

void
net_conn_close_because(struct net_conn *c, const char *reason)
{
	if (!c->closing)
		c->close_reason = reason;
	net_conn_close(c);
}

void
net_conn_close(struct net_conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	/* A plain connection goes on reading (bounded by its watermark, and conn_read_cb
	 * hands nothing to the protocol): the lingering close reads on anyway. */
	if (c->bev != NULL && !conn_plain(c))
		bufferevent_disable(c->bev, EV_READ);
	conn_finish_close(c);
}

/* libevent 2.1 reads at most 4096 octets per readable event (EVBUFFER_MAX_READ): a 4 KiB
 * message took two trips through epoll, a 35 MiB one 9,000. After such a read a plain
 * connection reads on by itself while the socket has data, up to NET_READ_TOPUP per event and
 * never past the read high watermark. EOF and errors are left to libevent's next read. */
#define NET_READ_CAP 4096
#define NET_READ_TOPUP (128 * 1024)

static void
conn_read_more(struct net_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	size_t have = evbuffer_get_length(in), got = 0;
	int fd = bufferevent_getfd(c->bev);

	/* libevent freezes the end of a socket bufferevent's input so that only its read
	 * callback fills it. */
	evbuffer_unfreeze(in, 0);
	while (have < NET_READ_MAX && got < NET_READ_TOPUP) {
		struct evbuffer_iovec v[2];
		struct iovec iov[2];
		size_t want = MIN(NET_READ_MAX - have, NET_READ_TOPUP - got);
		int nv = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
		ssize_t r;

		if (nv <= 0)
			break;
		for (int i = 0; i < nv; i++) {
			if (v[i].iov_len > want)
				v[i].iov_len = want;
			want -= v[i].iov_len;
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
		}
		r = readv(fd, iov, nv);
		if (r <= 0) {
			(void)evbuffer_commit_space(in, v, 0);
			break;
		}
		want = (size_t)r;
		for (int i = 0; i < nv; i++) {
			v[i].iov_len = MIN(v[i].iov_len, want);
			want -= v[i].iov_len;
		}
		(void)evbuffer_commit_space(in, v, nv);
		have += (size_t)r;
		got += (size_t)r;
		if ((size_t)r < iov[0].iov_len + (nv > 1 ? iov[1].iov_len : 0))
			break; /* the socket is empty */
	}
	evbuffer_freeze(in, 0);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct net_conn *c = arg;

	if (conn_plain(c) && c->raw == NULL && evbuffer_get_length(bufferevent_get_input(bev)) >=
	                                          NET_READ_CAP)
		conn_read_more(c);
	if (c->lingering) {
		evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
		return;
	}
	if (c->closing || c->paused || c->session == NULL)
		return;
	c->proto->input(c->session, c);
}

/* Input that waited for net_conn_resume. */
static void
conn_run_input(struct net_conn *c)
{
	if (c->closing || c->paused || c->lingering || c->handshaking || c->session == NULL ||
	    c->bev == NULL || conn_buffered_input(c) == 0)
		return;
	c->proto->input(c->session, c);
}

static void
conn_tls_established(struct net_conn *c)
{
	struct timeval tv = ms_to_tv(c->idle_ms);

	c->handshaking = false;
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	log_info("sid=%s event=tls service=%s rip=%s version=%s cipher=%s", c->sid,
	         service_names[c->service], c->rip, net_conn_tls_version(c),
	         net_conn_tls_cipher(c));
}

static void
conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct net_conn *c = arg;

	if (what & BEV_EVENT_CONNECTED) {
		/* TLS handshake done (implicit TLS or after STARTTLS). */
		bool upgraded = c->session != NULL;
		conn_tls_established(c);
		if (!upgraded)
			c->session = c->proto->open(c);
		else if (c->proto->tls_done != NULL)
			c->proto->tls_done(c->session, c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		/* A paused plain connection still reads; while the server works, the client waits
		 * for us, not the other way round: its idle time starts again. */
		if ((what & BEV_EVENT_READING) && c->paused && !c->closing && conn_plain(c)) {
			bufferevent_enable(bev, EV_READ);
			return;
		}
		conn_schedule_teardown(c, c->closing ? NULL : c->handshaking ? "tls-timeout" : "timeout");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		const char *reason = "error";
		if (c->handshaking)
			reason = "tls-failed";
		conn_schedule_teardown(c, c->closing ? NULL : reason);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		if (conn_plain(c) && !c->lingering) {
			/* The client may have pipelined its last commands and half-closed: they are
			 * run after the resume (conn_flush_now), then the connection goes. */
			if (c->paused && !c->closing) {
				c->peer_eof = true;
				return;
			}
			/* Closing: the last replies go out first (conn_finish_close). */
			if (c->closing && conn_pending_output(c) > 0)
				return;
		}
		conn_schedule_teardown(c, c->closing ? NULL : "peer-closed");
	}
}

static SSL *
server_new_ssl(struct net_server *s)
{
	SSL *ssl;

	pthread_mutex_lock(&s->tls_lock);
	ssl = s->tls ? SSL_new(s->tls) : NULL;
	pthread_mutex_unlock(&s->tls_lock);
	return ssl;
}

int
net_conn_starttls(struct net_conn *c)
{
	struct timeval tv = ms_to_tv(c->thread->server->handshake_ms);
	struct bufferevent *tlsbev;
	SSL *ssl;

	if (c->tls || c->bev == NULL)
		return -1;
	ssl = server_new_ssl(c->thread->server);
	if (ssl == NULL)
		return -1;
	/* RFC 3207 6: whatever the client pipelined before the handshake must not be executed
	 * as if it had come over TLS. */
	evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
	/* The filter writes through c->bev, whose pending output (our "ready to start TLS" reply)
	 * goes out in clear before the first TLS record. */
	tlsbev = bufferevent_openssl_filter_new(c->thread->base, c->bev, ssl,
	                                        BUFFEREVENT_SSL_ACCEPTING,
	                                        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tlsbev == NULL) {
		SSL_free(ssl);
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tlsbev, 1);
	c->raw = c->bev;
	c->bev = tlsbev;
	c->tls = true;
	c->handshaking = true;
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return 0;
}

/* Sets the connection up and starts the protocol (or the TLS handshake). */
static void
conn_start(struct net_conn *c)
{
	struct net_thread *t = c->thread;
	struct net_server *s = t->server;
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;

	c->next = t->conns;
	if (t->conns != NULL)
		t->conns->prev = c;
	t->conns = c;
	c->idle_ms = s->idle_ms;
	if (net_service_implicit_tls(c->service)) {
		SSL *ssl = server_new_ssl(s);
		struct timeval tv = ms_to_tv(s->handshake_ms);

		c->bev = ssl ? bufferevent_openssl_socket_new(t->base, c->fd, ssl,
		                                              BUFFEREVENT_SSL_ACCEPTING, opts)
		             : NULL;
		if (c->bev == NULL) {
			if (ssl != NULL)
				SSL_free(ssl);
			close(c->fd);
			conn_schedule_teardown(c, "tls-setup-failed");
			return;
		}
		bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
		c->tls = true;
		c->handshaking = true;
		bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
		bufferevent_set_timeouts(c->bev, &tv, &tv);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		return;
	}
	c->bev = bufferevent_socket_new(t->base, c->fd, opts);
	if (c->bev == NULL) {
		close(c->fd);
		conn_schedule_teardown(c, "setup-failed");
		return;
	}
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	net_conn_set_timeout(c, c->idle_ms);
	/* Plain: replies are written by thread_flush_cb; the write event is on only while a
	 * backlog waits for the socket. A new bufferevent has it on: off, the greeting leaves
	 * at the end of this iteration instead of after a round through epoll. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, NET_READ_MAX);
	bufferevent_disable(c->bev, EV_WRITE);
	bufferevent_enable(c->bev, EV_READ);
	c->session = c->proto->open(c);
}

static void
format_addr(const struct sockaddr_storage *ss, char *out, size_t outsize, bool *loopback_r)
{
	*loopback_r = false;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)outsize);
		*loopback_r = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			inet_ntop(AF_INET, sin6->sin6_addr.s6_addr + 12, out, (socklen_t)outsize);
			*loopback_r = sin6->sin6_addr.s6_addr[12] == 127;
		} else {
			inet_ntop(AF_INET6, &sin6->sin6_addr, out, (socklen_t)outsize);
			*loopback_r = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
		}
	} else {
		(void)!str_copy(out, outsize, "unknown");
	}
}

static void
refuse(struct net_server *s, enum net_service svc, int fd, const char *rip, const char *reason)
{
	const struct net_proto *p = s->protos[svc];

	log_info("event=reject service=%s rip=%s reason=%s", service_names[svc], rip, reason);
	/* Best effort, never blocking: on implicit-TLS ports nothing is sent in clear. */
	if (!net_service_implicit_tls(svc) && p->refuse_text != NULL) {
		if (send(fd, p->refuse_text, strlen(p->refuse_text), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			/* the client is gone or its buffer full: closing is all that is left */
		}
	}
	close(fd);
}

static void
accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
	struct net_listener *l = arg;
	struct net_server *s = l->server;
	struct net_conn *c;
	char rip[INET6_ADDRSTRLEN];
	bool loopback;
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, sa, MIN((size_t)salen, sizeof(ss)));
	format_addr(&ss, rip, sizeof(rip), &loopback);
	if (atomic_load(&s->stopping)) {
		close(fd);
		return;
	}
	/* Counted first, so that threads accepting at once cannot overshoot the limit. */
	if (atomic_fetch_add(&s->nconns, 1) >= s->max_connections) {
		atomic_fetch_sub(&s->nconns, 1);
		refuse(s, l->service, fd, rip, "max-connections");
		return;
	}
	switch (net__iplimit_take(s->iplimit, &ss, l->service, s->max_per_ip, s->max_rate_per_ip,
	                          now_ms())) {
	case NET_IPLIMIT_OK:
		break;
	case NET_IPLIMIT_CONCURRENT:
		atomic_fetch_sub(&s->nconns, 1);
		refuse(s, l->service, fd, rip, "max-connections-per-ip");
		return;
	case NET_IPLIMIT_RATE:
		atomic_fetch_sub(&s->nconns, 1);
		refuse(s, l->service, fd, rip, "connection-rate");
		return;
	}
	{
		int one = 1;

		/* Replies are written whole; waiting for the peer's delayed ACK before sending the
		 * tail of one (Nagle) would add 40 ms to every multi-segment response. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	c = xcalloc(1, sizeof(*c));
	atomic_init(&c->refs, 1);
	c->fd = fd;
	c->addr = ss;
	c->counted = true;
	c->loopback = loopback;
	c->service = l->service;
	c->proto = s->protos[l->service];
	memcpy(c->rip, rip, sizeof(rip));
	snprintf(c->sid, sizeof(c->sid), "%012llx",
	         (unsigned long long)((s->sid_base + atomic_fetch_add(&s->sid_next, 1)) &
	                              0xffffffffffffULL));
	c->thread = l->thread;
	log_info("sid=%s event=connect service=%s rip=%s", c->sid, service_names[c->service], rip);
	conn_start(c);
}

/* ---- Server ----------------------------------------------------------------------------- */

static void
apply_limits(struct net_server *s, const struct cfg *cfg)
{
	s->max_connections = cfg->max_connections;
	s->max_per_ip = cfg->max_connections_per_ip;
	s->max_rate_per_ip = cfg->max_connection_rate_per_ip;
	s->idle_ms = cfg->idle_timeout;
	s->handshake_ms = cfg->handshake_timeout;
	s->max_output = cfg->max_output_buffer;
}

static const char *
listen_setting(const struct cfg *cfg, enum net_service svc)
{
	switch (svc) {
	case NET_SVC_SMTP: return cfg->listen_smtp;
	case NET_SVC_SUBMISSION: return cfg->listen_submission;
	case NET_SVC_SUBMISSIONS: return cfg->listen_submissions;
	case NET_SVC_IMAP: return cfg->listen_imap;
	case NET_SVC_IMAPS: return cfg->listen_imaps;
	case NET_SVC_POP3: return cfg->listen_pop3;
	case NET_SVC_POP3S: return cfg->listen_pop3s;
	case NET_SVC_COUNT: break;
	}
	return "";
}

int
net_server_new(const struct cfg *cfg, const struct net_proto *const *protos,
               struct net_server **server_r, const char **error_r)
{
	static bool evthread_ready;
	struct net_server *s;
	uint64_t rnd;

	if (!evthread_ready) {
		if (evthread_use_pthreads() < 0) {
			*error_r = "libevent has no thread support";
			return -1;
		}
		evthread_ready = true;
	}
	s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->tls_lock, NULL);
	s->iplimit = net__iplimit_new();
	apply_limits(s, cfg);
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint64_t)time(NULL) << 20;
	s->sid_base = rnd;
	s->nthreads = cfg_io_threads(cfg);
	s->base = event_base_new();
	if (s->base == NULL) {
		*error_r = "cannot create event base";
		goto fail;
	}
	for (int i = 0; i < NET_SVC_COUNT; i++)
		s->protos[i] = protos[i];
	s->tls = net_tls_context_new(cfg, error_r);
	if (s->tls == NULL)
		goto fail;

	for (int svc = 0; svc < NET_SVC_COUNT; svc++) {
		size_t max = (size_t)NET_MAX_LISTEN_ADDRS * s->nthreads;
		int *fds, n;

		if (protos[svc] == NULL || listen_setting(cfg, svc)[0] == '\0')
			continue;
		fds = xcalloc(max, sizeof(*fds));
		n = net__bind_addrs(listen_setting(cfg, svc), s->nthreads, fds, max, error_r);
		if (n < 0) {
			free(fds);
			goto fail;
		}
		s->listeners = xrealloc(s->listeners, (s->nlisteners + (size_t)n) * sizeof(*s->listeners));
		for (int i = 0; i < n; i++) {
			struct net_listener *l = &s->listeners[s->nlisteners++];
			l->server = s;
			l->thread = NULL;
			l->thread_index = (unsigned int)i % s->nthreads; /* copies are adjacent */
			l->service = svc;
			/* Stash the fd until run(): the listener objects are created there, once the
			 * array no longer moves. */
			l->evl = (struct evconnlistener *)(intptr_t)fds[i];
		}
		free(fds);
	}
	*server_r = s;
	return 0;
fail:
	net_server_free(&s);
	return -1;
}

void *
net_server_base(struct net_server *s)
{
	return s->base;
}

uint64_t
net_server_connections(struct net_server *s)
{
	return atomic_load(&s->nconns);
}

void
net_server_run(struct net_server *s)
{
	sigset_t block, old;

	s->threads = xcalloc(s->nthreads, sizeof(*s->threads));
	for (unsigned int i = 0; i < s->nthreads; i++) {
		struct net_thread *t = &s->threads[i];
		struct event_config *evcfg;

		t->server = s;
		t->index = i;
		pthread_mutex_init(&t->lock, NULL);
		/* The change list folds the adds and deletes an fd gets within one iteration into
		 * at most one epoll_ctl (safe: no socket here is dup()ed). */
		evcfg = event_config_new();
		if (evcfg == NULL ||
		    event_config_set_flag(evcfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) < 0 ||
		    (t->base = event_base_new_with_config(evcfg)) == NULL)
			t->base = event_base_new();
		if (evcfg != NULL)
			event_config_free(evcfg);
		if (t->base == NULL)
			log_fatal("event=error reason=\"cannot create event base\"");
		t->wake = event_new(t->base, -1, EV_READ | EV_PERSIST, thread_wake_cb, t);
		event_add(t->wake, NULL);
		t->flush_ev = event_new(t->base, -1, 0, thread_flush_cb, t);
	}
	/* Listener objects now that the array is final (see net_server_new), each on the base of
	 * the thread that accepts on it. */
	for (size_t i = 0; i < s->nlisteners; i++) {
		struct net_listener *l = &s->listeners[i];
		int fd = (int)(intptr_t)l->evl;

		l->thread = &s->threads[l->thread_index];
		l->evl = evconnlistener_new(l->thread->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE, -1,
		                            fd);
		if (l->evl == NULL)
			log_fatal("event=error reason=\"cannot create listener\"");
	}
	/* Signals are handled by the main loop only. */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (unsigned int i = 0; i < s->nthreads; i++) {
		struct net_thread *t = &s->threads[i];
		char name[16];

		if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
			log_fatal("event=error reason=\"cannot start I/O thread\"");
		snprintf(name, sizeof(name), "io/%u", i % 1000);
		pthread_setname_np(t->tid, name);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);

	for (unsigned int i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i].tid, NULL);
}

static void
thread_shutdown_sessions(void *arg)
{
	struct net_thread *t = arg;
	struct net_server *s = t->server;

	for (size_t i = 0; i < s->nlisteners; i++) {
		if (s->listeners[i].thread == t)
			evconnlistener_disable(s->listeners[i].evl);
	}
	for (struct net_conn *c = t->conns, *next; c != NULL; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		if (c->session != NULL && c->proto->shutdown != NULL)
			c->proto->shutdown(c->session, c);
		else
			net_conn_close(c);
	}
}

static void
thread_close_all_and_exit(void *arg)
{
	struct net_thread *t = arg;

	for (struct net_conn *c = t->conns; c != NULL; c = c->next)
		conn_schedule_teardown(c, "shutdown");
	/* The teardowns run first: they were scheduled as zero timeouts before this exit. */
	event_base_loopexit(t->base, NULL);
}

static void
stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct net_server *s = arg;

	if (atomic_load(&s->nconns) > 0 && now_ms() < s->stop_deadline_ms)
		return;
	event_free(s->stop_timer);
	s->stop_timer = NULL;
	for (unsigned int i = 0; i < s->nthreads; i++)
		net_thread_post(&s->threads[i], thread_close_all_and_exit, &s->threads[i]);
	event_base_loopexit(s->base, NULL);
}

void
net_server_stop(struct net_server *s, uint64_t grace_ms)
{
	struct timeval tick = {0, 50000};

	if (atomic_load(&s->stopping))
		return;
	/* Each thread stops its own listeners; until then it closes what it accepts. */
	atomic_store(&s->stopping, true);
	for (unsigned int i = 0; i < s->nthreads; i++)
		net_thread_post(&s->threads[i], thread_shutdown_sessions, &s->threads[i]);
	s->stop_deadline_ms = now_ms() + grace_ms;
	s->stop_timer = event_new(s->base, -1, EV_PERSIST, stop_check_cb, s);
	event_add(s->stop_timer, &tick);
}

int
net_server_reload(struct net_server *s, const struct cfg *cfg, const char **error_r)
{
	SSL_CTX *ctx = net_tls_context_new(cfg, error_r), *old;

	apply_limits(s, cfg);
	if (ctx == NULL)
		return -1;
	pthread_mutex_lock(&s->tls_lock);
	old = s->tls;
	s->tls = ctx;
	pthread_mutex_unlock(&s->tls_lock);
	SSL_CTX_free(old); /* connections hold their own reference through their SSL */
	return 0;
}

void
net_server_free(struct net_server **sp)
{
	struct net_server *s = *sp;

	if (s == NULL)
		return;
	for (size_t i = 0; i < s->nlisteners; i++) {
		if (s->listeners[i].thread == NULL)
			close((int)(intptr_t)s->listeners[i].evl); /* never started */
		else if (s->listeners[i].evl != NULL)
			evconnlistener_free(s->listeners[i].evl);
	}
	free(s->listeners);
	for (unsigned int i = 0; s->threads != NULL && i < s->nthreads; i++) {
		struct net_thread *t = &s->threads[i];
		/* Tasks posted after the loop ended (late completions) and timers still pending are
		 * run so that they can release what they hold. */
		thread_wake_cb(-1, 0, t);
		while (t->delayed != NULL)
			delayed_run(t->delayed);
		thread_wake_cb(-1, 0, t);
		/* Connections still listed are all torn down by now: only their references go. */
		while (t->flush_head != NULL) {
			struct net_conn *c = t->flush_head;

			t->flush_head = c->flush_next;
			c->flush_listed = false;
			net_conn_unref(&c);
		}
		event_free(t->flush_ev);
		event_free(t->wake);
		event_base_free(t->base);
		pthread_mutex_destroy(&t->lock);
	}
	free(s->threads);
	if (s->stop_timer != NULL)
		event_free(s->stop_timer);
	if (s->base != NULL)
		event_base_free(s->base);
	SSL_CTX_free(s->tls);
	net__iplimit_free(&s->iplimit);
	pthread_mutex_destroy(&s->tls_lock);
	free(s);
	*sp = NULL;
}
