/* Network layer: listeners, I/O threads (one libevent base each), connections with optional
 * TLS (implicit or upgraded by STARTTLS), timeouts and connection limits.
 *
 * Threads
 *   The main thread runs the accept loop and signal handling. Each accepted connection is handed
 *   to one I/O thread and lives there until it is freed: every net_conn_* function must be called
 *   on the connection's own I/O thread, except net_conn_ref/unref and net_thread_post, which any
 *   thread may call. Work that blocks (database, hashing, fsync) runs elsewhere; its result
 *   comes back with net_thread_post().
 *
 * Protocols
 *   A protocol is a struct net_proto: open() makes a session for a new connection, input() is
 *   called whenever new bytes arrived, close() frees the session. A session never frees its
 *   connection itself: it calls net_conn_close(), and the connection is torn down at the end of
 *   the loop iteration (after pending output is flushed), calling close() exactly once. */
#ifndef NET_NET_H
#define NET_NET_H

#include "core/config.h"

struct net_server;
struct net_thread;
struct net_conn;
struct ssl_ctx_st;

enum net_service {
	NET_SVC_SMTP,
	NET_SVC_SUBMISSION,
	NET_SVC_SUBMISSIONS,
	NET_SVC_IMAP,
	NET_SVC_IMAPS,
	NET_SVC_POP3,
	NET_SVC_POP3S,
	NET_SVC_COUNT
};

const char *net_service_name(enum net_service svc);
/* True for the services that start with a TLS handshake. */
bool net_service_implicit_tls(enum net_service svc);

struct net_proto {
	/* Returns the session; may already write a greeting. */
	void *(*open)(struct net_conn *conn);
	/* New input is available: read with net_conn_peek/net_conn_drain. */
	void (*input)(void *session, struct net_conn *conn);
	/* A STARTTLS handshake completed (input buffered before it was discarded). */
	void (*tls_done)(void *session, struct net_conn *conn);
	/* The server is shutting down: finish or say goodbye and net_conn_close(). */
	void (*shutdown)(void *session, struct net_conn *conn);
	/* The connection goes away (peer closed, timeout, error or net_conn_close): free session. */
	void (*close)(void *session, struct net_conn *conn);
	/* Line written (in clear) to a client refused at connect: too many connections. */
	const char *refuse_text;
};

/* ---- Server lifecycle (main thread) ------------------------------------------------------- */

/* Binds every listener of the configuration, once per I/O thread, and loads the TLS
 * certificate. Runs as root when started as root; nothing here reads network input.
 * protos[svc] may be NULL for a service that has no protocol yet (its listener is then not
 * opened). */
ATTR_WUR int net_server_new(const struct cfg *cfg, const struct net_proto *const *protos,
                            struct net_server **server_r, const char **error_r);
/* Starts the I/O threads (server.io_threads), which accept and serve, and runs the main loop
 * (signals) until net_server_stop(). */
void net_server_run(struct net_server *server);
/* Stops accepting, asks every session to shut down, waits up to grace ms, closes the rest,
 * stops the I/O threads and returns from net_server_run. Main thread (signal handler event). */
void net_server_stop(struct net_server *server, uint64_t grace_ms);
/* Reloads what can change without a restart: timeouts, limits and the TLS certificate. The
 * old certificate stays when the new one cannot be loaded. */
ATTR_WUR int net_server_reload(struct net_server *server, const struct cfg *cfg,
                               const char **error_r);
void net_server_free(struct net_server **server);
/* Number of open connections (all threads). */
uint64_t net_server_connections(struct net_server *server);
/* The main thread's event base, for signal events (a struct event_base *). */
void *net_server_base(struct net_server *server);

/* Loads a certificate chain and key into a new server context with the configured versions and
 * ciphers. Caller frees with SSL_CTX_free. */
struct ssl_ctx_st *net_tls_context_new(const struct cfg *cfg, const char **error_r);

/* ---- Threads -------------------------------------------------------------------------------- */

typedef void net_thread_fn(void *arg);
/* Runs fn(arg) on the I/O thread soon. Any thread. */
void net_thread_post(struct net_thread *thread, net_thread_fn *fn, void *arg);
/* Runs fn(arg) on the I/O thread after ms milliseconds (failure delays, tarpits). Any thread.
 * The task always runs, also during shutdown, so that it can release what it holds. */
void net_thread_post_delayed(struct net_thread *thread, uint64_t ms, net_thread_fn *fn, void *arg);

/* ---- Connections (on their I/O thread) ------------------------------------------------------ */

struct net_thread *net_conn_thread(struct net_conn *conn);
enum net_service net_conn_service(const struct net_conn *conn);
/* Session id: 12 hex digits, unique per process run; valid while the conn lives. */
const char *net_conn_sid(const struct net_conn *conn);
/* Client address as text ("203.0.113.5", "2001:db8::1"). */
const char *net_conn_rip(const struct net_conn *conn);
bool net_conn_is_loopback(const struct net_conn *conn);
bool net_conn_is_tls(const struct net_conn *conn);
/* "TLSv1.3", "TLS_AES_128_GCM_SHA256" or NULL without TLS. */
const char *net_conn_tls_version(const struct net_conn *conn);
const char *net_conn_tls_cipher(const struct net_conn *conn);

/* Buffered input: a contiguous view of up to max bytes; valid until the next drain or return
 * to the loop. */
const uint8_t *net_conn_peek(struct net_conn *conn, size_t max, size_t *len_r);
/* Finds the first LF within the first max bytes; returns its offset, or -1 (need more). */
ssize_t net_conn_find_lf(struct net_conn *conn, size_t max);
size_t net_conn_input_len(struct net_conn *conn);
void net_conn_drain(struct net_conn *conn, size_t n);
/* Stops/starts reading (back-pressure while waiting for a store or auth result). */
void net_conn_pause(struct net_conn *conn);
void net_conn_resume(struct net_conn *conn);

void net_conn_write(struct net_conn *conn, const void *data, size_t len);
ATTR_FORMAT(2, 3) void net_conn_printf(struct net_conn *conn, const char *fmt, ...);
/* Bytes waiting to be sent. */
size_t net_conn_output_len(struct net_conn *conn);
/* Starts TLS on a plain connection: pending output is flushed first, input that arrived before
 * the handshake is discarded (RFC 3207 6, STARTTLS injection). proto->tls_done follows. */
ATTR_WUR int net_conn_starttls(struct net_conn *conn);
/* Starts COMPRESS=DEFLATE (RFC 4978): from now on input is inflated and output deflated. Output
 * already written goes out uncompressed (the command's OK), input already buffered is taken as
 * compressed. Returns 0, or -1 when already compressing or out of memory. */
ATTR_WUR int net_conn_compress(struct net_conn *conn);
bool net_conn_is_compressed(const struct net_conn *conn);
/* Idle timeout in ms (reset by every read). */
void net_conn_set_timeout(struct net_conn *conn, uint64_t ms);
/* Flushes pending output, then closes; the session's close() runs from the loop. */
void net_conn_close(struct net_conn *conn);
/* The same, naming the reason in the disconnect log line (reason: static text, key=value safe,
 * e.g. "quit", "too-many-errors"). */
void net_conn_close_because(struct net_conn *conn, const char *reason);
bool net_conn_is_closing(const struct net_conn *conn);

/* References keep the connection's memory (not the socket) alive for async completions. */
void net_conn_ref(struct net_conn *conn);
void net_conn_unref(struct net_conn **conn);

#endif
