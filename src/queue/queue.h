/* The queue runner: outbound delivery of the messages in the store's queue.
 *
 * One thread with its own event base. Every `interval` (and at once after a full batch) it
 * reads up to `batch` due recipients from the store (store_queue_due: an index range, never a
 * scan; nothing is read at start-up beyond that), groups them by message and destination, and
 * hands them to SMTP clients (src/smtp/smtp_client.c), at most `connections_per_destination`
 * connections per destination, several messages per connection. Outcomes are store jobs
 * (group-committed), submitted only after the peer's reply: delivered (row removed), deferred
 * (attempts + 1, next attempt by the retry schedule), bounced (row removed, an RFC 3464 report
 * to the sender: into the INBOX of a local sender, queued for a remote one, never for the null
 * sender). A recipient stays "in flight" in memory until its outcome is committed, so it is
 * never read twice; after a crash it is simply due again (delivered at least once).
 *
 * Destinations: per-domain routes, then the relay host, then the domain's MX hosts (src/dns,
 * c-ares): tried in order until one answers; a null MX or a domain that does not exist bounces
 * at once, a failed lookup defers. Each destination has a TLS level (the default, or a policy
 * for the recipient domain): a destination that cannot meet it is deferred like an unreachable
 * one.
 *
 * Threads: new/stop/free on the main thread; everything else on the runner thread. */
#ifndef QUEUE_QUEUE_H
#define QUEUE_QUEUE_H

#include "core/buf.h"
#include "smtp/smtp_client.h"

struct store;
struct queue_runner;

struct queue_options {
	const char *hostname;       /* EHLO name and Reporting-MTA (borrowed, copied) */
	const char *routes;         /* "domain=host:port ..." (copied) */
	const char *relay_host;     /* "host:port" or "" (copied) */
	const char *relay_user;     /* AUTH PLAIN at the relay host, or "" (copied) */
	const char *relay_password; /* (copied; wiped at free) */
	const char *retry_schedule; /* "5m 10m ..." (copied) */
	uint64_t bounce_after;      /* ms */
	uint64_t delay_warning;     /* ms in the queue before the sender is told once; 0 = never */
	uint64_t interval;          /* ms */
	uint64_t batch;             /* recipients per read */
	uint64_t max_in_flight;     /* recipients */
	uint64_t connections_per_destination; /* the most; fewer after failures (adaptive) */
	uint64_t destination_rate;  /* messages per second to one destination; 0 = no limit */
	uint64_t connect_timeout, command_timeout, data_timeout; /* ms */
	enum smtp_client_tls tls;   /* the TLS level of destinations without a policy */
	const char *tls_policies;   /* "domain=never|opportunistic|required|verify ..." (copied) */
	const char *tls_ca_file;    /* trusted CAs for "verify" (PEM), "" = the system's (copied) */
	enum smtp_client_tls relay_tls; /* the relay host's level */
	const char *relay_name;     /* the relay host's name, for SNI and "verify" (copied) */
	bool chunking;              /* BDAT (RFC 3030) when a destination offers CHUNKING */
	const char *resolvers;      /* "127.0.0.1:53 ..." or "" for the system's (copied) */
	uint64_t dns_timeout;       /* ms per DNS try */
	uint64_t mx_port;           /* port of MX hosts: 25 (others for tests) */
};

/* Checks the options and starts the runner thread. -1 with *error_r (static or thread-local
 * text) on bad options. The store is borrowed and must stay open until queue_runner_stop. */
ATTR_WUR int queue_runner_new(struct store *store, const struct queue_options *opts,
                              struct queue_runner **runner_r, const char **error_r);
/* New mail was queued: look for due recipients now instead of at the next tick. Any thread. */
void queue_runner_kick(struct queue_runner *runner);
/* Stops the thread and drops the connections; recipients in delivery whose outcome was not
 * recorded stay due in the store. Call before store_close. */
void queue_runner_stop(struct queue_runner *runner);
/* Frees the runner; after store_close (late job results land in the runner). NULL is fine. */
void queue_runner_free(struct queue_runner **runner);

/* "never", "opportunistic", "required", "verify" (as the configuration checked them). */
enum smtp_client_tls queue_tls_level(const char *name);

/* ---- Parsing, exposed for tests ---------------------------------------------------------- */

/* "5m 10m 1h": delays in ms. Caller frees *ms_r. -1 on an empty or invalid list. */
ATTR_WUR int queue_parse_schedule(const char *text, uint64_t **ms_r, size_t *n_r);
/* The retry delay after `attempts` earlier failures: the last step repeats. */
uint64_t queue_retry_delay(const uint64_t *schedule, size_t n, uint32_t attempts);
/* The enhanced status code (RFC 3463) at the start of a reply text like "550 5.1.1 No", or a
 * default from the basic code ("5.0.0"/"4.0.0"). dst gets at most 15 bytes + NUL. */
void queue_status_code(const char *reply, char dst[16]);

/* Builds a delivery status notification (RFC 3464, multipart/report) for the failed and
 * delayed recipients of one message. headers: the original message's header section (borrowed). Appends to out. */
struct queue_dsn_rcpt {
	const char *address;
	const char *orcpt;      /* NULL or the ORCPT value ("rfc822;a@b") */
	const char *status;     /* "5.1.1" */
	const char *diagnostic; /* the remote reply or local reason */
	int64_t retry_until;    /* 0: failed; else delayed, retried until then (seconds) */
};
void queue_dsn_build(struct buf *out, const char *hostname, const char *sender,
                     const char *envid, int64_t arrival, int64_t now,
                     const struct queue_dsn_rcpt *rcpts, size_t nrcpts,
                     const uint8_t *headers, size_t headers_len);

#endif
