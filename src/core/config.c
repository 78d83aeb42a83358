/* The settings table and the parser of postamt.conf (see config.h).
 * Every setting is one row: adding a setting means adding a row and a struct field. */
#include "core/config.h"
#include "core/limits.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECONDS(n) ((uint64_t)(n) * 1000)
#define MINUTES(n) (SECONDS(n) * 60)
#define HOURS(n) (MINUTES(n) * 60)
#define DAYS(n) (HOURS(n) * 24)
#define KIB(n) ((uint64_t)(n) * 1024)
#define MIB(n) (KIB(n) * 1024)
#define GIB(n) (MIB(n) * 1024)

#define ROW(sec, nam, typ, dflt, mn, mx, ch, field, desc) \
	{sec, nam, typ, dflt, mn, mx, ch, offsetof(struct cfg, field), desc}

static const struct cfg_setting settings[] = {
	ROW("server", "hostname", CFG_STRING, "", 0, 0, NULL, hostname,
	    "Name used in greetings, Received headers and the TLS certificate; empty = the system host name"),
	ROW("server", "data_dir", CFG_PATH, "/var/lib/postamt", 0, 0, NULL, data_dir,
	    "Folder of the database and the message blobs"),
	ROW("server", "user", CFG_STRING, "", 0, 0, NULL, user,
	    "When started as root: bind the ports, then run as this user (empty = keep the starting user)"),
	ROW("server", "io_threads", CFG_UINT, "0", 0, NET_MAX_IO_THREADS, NULL, io_threads,
	    "Network threads, each with its own event loop; 0 = one per CPU core"),
	ROW("server", "workers", CFG_UINT, "4", 1, 256, NULL, workers,
	    "Threads for lookups that may block (recipients, aliases), off the network threads"),
	ROW("server", "shutdown_grace", CFG_DURATION, "30s", 0, MINUTES(10), NULL, shutdown_grace,
	    "On SIGTERM, how long sessions may take to finish their transaction before they are closed"),

	ROW("listen", "smtp", CFG_ADDRS, "*:25", 0, 0, NULL, listen_smtp,
	    "SMTP for incoming mail (MX), STARTTLS offered; empty = off"),
	ROW("listen", "submission", CFG_ADDRS, "*:587", 0, 0, NULL, listen_submission,
	    "Submission for users' outgoing mail, STARTTLS offered; empty = off"),
	ROW("listen", "submissions", CFG_ADDRS, "*:465", 0, 0, NULL, listen_submissions,
	    "Submission over implicit TLS; empty = off"),
	ROW("listen", "imap", CFG_ADDRS, "*:143", 0, 0, NULL, listen_imap,
	    "IMAP, STARTTLS offered; empty = off"),
	ROW("listen", "imaps", CFG_ADDRS, "*:993", 0, 0, NULL, listen_imaps,
	    "IMAP over implicit TLS; empty = off"),
	ROW("listen", "pop3", CFG_ADDRS, "*:110", 0, 0, NULL, listen_pop3,
	    "POP3, STLS offered; empty = off"),
	ROW("listen", "pop3s", CFG_ADDRS, "*:995", 0, 0, NULL, listen_pop3s,
	    "POP3 over implicit TLS; empty = off"),

	ROW("tls", "cert", CFG_PATH, "", 0, 0, NULL, tls_cert,
	    "Certificate chain (PEM); reread on SIGHUP"),
	ROW("tls", "key", CFG_PATH, "", 0, 0, NULL, tls_key, "Private key (PEM); reread on SIGHUP"),
	ROW("tls", "min_version", CFG_ENUM, "TLSv1.2", 0, 0, "TLSv1.2|TLSv1.3", tls_min_version,
	    "Oldest TLS version accepted"),
	ROW("tls", "ciphers", CFG_STRING,
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
	    0, 0, NULL, tls_ciphers, "TLS 1.2 cipher list (OpenSSL syntax)"),
	ROW("tls", "ciphersuites", CFG_STRING,
	    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256", 0, 0, NULL,
	    tls_ciphersuites, "TLS 1.3 cipher suites (OpenSSL syntax)"),

	ROW("limits", "max_connections", CFG_UINT, "10000", 1, 1000000, NULL, max_connections,
	    "Connections open at once over all listeners; past it new ones get a temporary refusal"),
	ROW("limits", "max_connections_per_ip", CFG_UINT, "50", 1, 1000000, NULL,
	    max_connections_per_ip,
	    "Connections open at once from one client address on one service (IPv6: per /64)"),
	ROW("limits", "max_connection_rate_per_ip", CFG_UINT, "0", 0, 1000000, NULL,
	    max_connection_rate_per_ip,
	    "New connections per minute from one client address, all services together; 0 = no limit"),
	ROW("limits", "idle_timeout", CFG_DURATION, "5m", SECONDS(1), HOURS(24), NULL, idle_timeout,
	    "A connection that sends nothing for this long is closed (RFC 5321 4.5.3.2: at least 5m)"),
	ROW("limits", "handshake_timeout", CFG_DURATION, "30s", SECONDS(1), MINUTES(10), NULL,
	    handshake_timeout, "Time allowed for a TLS handshake"),
	ROW("limits", "max_output_buffer", CFG_SIZE, "1M", KIB(16), GIB(1), NULL, max_output_buffer,
	    "Bytes waiting for a client that does not read before the connection is dropped"),

	ROW("smtp", "max_message_size", CFG_SIZE, "35M", KIB(64), GIB(2), NULL, smtp_max_message_size,
	    "Largest message accepted (SIZE); enforced while the message streams in"),
	ROW("smtp", "max_recipients", CFG_UINT, "1000", 1, 100000, NULL, smtp_max_recipients,
	    "Recipients in one transaction (RFC 5321 4.5.3.1.8 asks for at least 100)"),
	ROW("smtp", "max_bad_commands", CFG_UINT, "10", 1, 1000, NULL, smtp_max_bad_commands,
	    "Refused or malformed commands before the connection is closed"),
	ROW("smtp", "max_received_headers", CFG_UINT, "50", 10, 1000, NULL, smtp_max_received,
	    "A message with more Received: fields is a mail loop (554 5.4.6)"),
	ROW("smtp", "data_timeout", CFG_DURATION, "10m", SECONDS(10), HOURS(2), NULL,
	    smtp_data_timeout, "Longest time one DATA or BDAT transfer may take"),
	ROW("smtp", "min_data_rate", CFG_SIZE, "1K", 0, MIB(100), NULL, smtp_min_data_rate,
	    "Slowest average transfer accepted after the first 30 s (bytes per second; 0 = off)"),
	ROW("smtp", "recipient_cache_ttl", CFG_DURATION, "5s", 0, HOURS(1), NULL,
	    smtp_recipient_cache_ttl,
	    "How long RCPT reuses the lookup of a local recipient without a quota (0 = look up "
	    "every time); account and alias changes made with the CLI reach SMTP within it, or "
	    "at once on reload"),
	ROW("smtp", "plaintext_auth_loopback", CFG_BOOL, "yes", 0, 1, NULL,
	    smtp_plaintext_auth_loopback,
	    "Allow AUTH without TLS from loopback addresses (elsewhere TLS is always required); "
	    "also applies to POP3 USER/PASS and AUTH"),

	ROW("pop3", "max_bad_commands", CFG_UINT, "10", 1, 1000, NULL, pop3_max_bad_commands,
	    "Refused or malformed POP3 commands (failed logins included) before the connection is "
	    "closed"),
	ROW("pop3", "idle_timeout", CFG_DURATION, "10m", MINUTES(1), HOURS(24), NULL,
	    pop3_idle_timeout,
	    "Inactivity timeout after login (RFC 1939 3: at least 10m); before login "
	    "limits.idle_timeout applies"),

	ROW("imap", "timeout", CFG_DURATION, "30m", SECONDS(1), HOURS(24), NULL, imap_timeout,
	    "Idle time allowed between IMAP commands (RFC 9051 asks for at least 30 minutes)"),
	ROW("imap", "idle_timeout", CFG_DURATION, "30m", SECONDS(1), HOURS(24), NULL,
	    imap_idle_timeout, "How long one IDLE command may last before the client is logged out"),
	ROW("imap", "expunge_history", CFG_DURATION, "30d", 0, DAYS(3650), NULL,
	    imap_expunge_history,
	    "How long expunges are remembered one by one for clients that resynchronise "
	    "(CONDSTORE/QRESYNC); a client away longer is told every UID that is gone (0 = "
	    "forever)"),
	ROW("imap", "max_bad_commands", CFG_UINT, "20", 1, 1000, NULL, imap_max_bad_commands,
	    "Refused or failed commands before the connection is closed"),
	ROW("imap", "append_limit", CFG_SIZE, "64M", KIB(64), GIB(2), NULL, imap_append_limit,
	    "Largest message APPEND accepts (advertised as APPENDLIMIT, RFC 7889)"),
	ROW("imap", "plaintext_auth_loopback", CFG_BOOL, "yes", 0, 1, NULL,
	    imap_plaintext_auth_loopback,
	    "Allow LOGIN and AUTHENTICATE without TLS from loopback addresses"),
	ROW("imap", "search_index_budget", CFG_SIZE, "32M", 0, GIB(1), NULL,
	    imap_search_index_budget,
	    "Bytes of messages one SEARCH may add to the full-text index before searching (the rest is read directly; 0 = never index)"),

	ROW("storage", "sync_flags", CFG_BOOL, "no", 0, 1, NULL, storage_sync_flags,
	    "Make IMAP flag changes, expunges and subscriptions wait for the disk before OK, like "
	    "mail does (no: they are committed at once and reach the disk within a second)"),
	ROW("storage", "quota", CFG_SIZE, "0", 0, GIB(1024 * 1024), NULL, storage_quota,
	    "Storage quota of each account (0 = unlimited); `postamt user quota` sets one apart"),
	ROW("storage", "engine", CFG_ENUM, "sqlite", 0, 0, "sqlite", storage_engine,
	    "Metadata engine"),
	ROW("storage", "database", CFG_PATH, "", 0, 0, NULL, database,
	    "SQLite database file; empty = DATA_DIR/postamt.db"),
	ROW("storage", "sync_threads", CFG_UINT, "4", 1, STORE_MAX_SYNC_THREADS, NULL, sync_threads,
	    "Threads that fsync message files in parallel before their batch is committed"),
	ROW("storage", "sync_filesystem", CFG_BOOL, "no", 0, 1, NULL, sync_filesystem,
	    "Make each batch's message files durable with one syncfs of their filesystem instead of "
	    "one fsync per file; for a data_dir on a filesystem of its own"),
	ROW("storage", "inline_max", CFG_SIZE, "64K", 0, MIB(1), NULL, inline_max,
	    "Messages up to this size are kept in the database, written with the commit that "
	    "references them (one flush); larger ones are files under data_dir/blobs (0 = all files)"),
	ROW("storage", "batch_max", CFG_UINT, "256", 1, STORE_MAX_BATCH, NULL, batch_max,
	    "Write jobs committed together in one transaction (group commit)"),
	ROW("storage", "blob_sweep_interval", CFG_DURATION, "1h", SECONDS(1), DAYS(7), NULL,
	    blob_sweep_interval, "How often message files that nothing references are looked for"),
	ROW("storage", "blob_orphan_age", CFG_DURATION, "1h", SECONDS(1), DAYS(30), NULL,
	    blob_orphan_age, "A message file without a reference this old is garbage from a crash"),

	ROW("auth", "password_scheme", CFG_ENUM, "yescrypt", 0, 0, "yescrypt|bcrypt|sha512-crypt",
	    password_scheme, "Hash for new passwords; all three are verified"),
	ROW("auth", "workers", CFG_UINT, "2", 1, 64, NULL, auth_workers,
	    "Threads that hash and verify passwords, off the network threads"),
	ROW("auth", "failure_delay", CFG_DURATION, "2s", 0, MINUTES(1), NULL, auth_failure_delay,
	    "A failed login is answered after this delay; unknown users and wrong passwords alike"),

	ROW("guard", "max_failures", CFG_UINT, "5", 1, 1000, NULL, guard_max_failures,
	    "Failed logins (different passwords) from one address before it is banned on that service"),
	ROW("guard", "window", CFG_DURATION, "10m", SECONDS(1), DAYS(1), NULL, guard_window,
	    "Time in which max_failures must happen"),
	ROW("guard", "ban_time", CFG_DURATION, "10m", SECONDS(1), DAYS(7), NULL, guard_ban_time,
	    "Length of a first ban; each further ban within a day doubles it"),
	ROW("guard", "ban_max", CFG_DURATION, "7d", SECONDS(1), DAYS(365), NULL, guard_ban_max,
	    "Longest ban"),
	ROW("guard", "allow", CFG_STRING, "", 0, 0, NULL, guard_allow,
	    "Addresses and networks never banned (\"192.0.2.0/24 2001:db8::/32\")"),
	ROW("guard", "stale_notify", CFG_BOOL, "yes", 0, 1, NULL, guard_stale_notify,
	    "Tell an account's owner (once a day per address) about a device with an old password"),
	ROW("guard", "stale_max_delay", CFG_DURATION, "30s", 0, MINUTES(5), NULL,
	    guard_stale_max_delay, "Longest delay for a device that repeats one stale password"),
	ROW("guard", "account_threshold", CFG_UINT, "10", 1, 100000, NULL, guard_account_threshold,
	    "Failed logins on one account within the window (any addresses) before it is slowed"),
	ROW("guard", "account_max_delay", CFG_DURATION, "5s", 0, MINUTES(1), NULL,
	    guard_account_max_delay, "Longest delay for failures on an account under attack"),

	ROW("queue", "routes", CFG_STRING, "", 0, 0, NULL, queue_routes,
	    "Per-domain routes for outbound mail: \"domain=host:port ...\" (numeric addresses, "
	    "IPv6 as [addr]:port)"),
	ROW("queue", "relay_host", CFG_STRING, "", 0, 0, NULL, queue_relay_host,
	    "Smarthost for every domain without a route: host:port (numeric), or empty"),
	ROW("queue", "relay_user", CFG_STRING, "", 0, 0, NULL, queue_relay_user,
	    "User for AUTH PLAIN at the relay host (sent only over TLS); empty: no AUTH"),
	ROW("queue", "relay_password", CFG_STRING, "", 0, 0, NULL, queue_relay_password,
	    "Password for relay_user; keep the file readable by the server only"),
	ROW("queue", "retry_schedule", CFG_STRING, "5m 10m 20m 40m 1h 2h 4h", 0, 0, NULL,
	    queue_retry_schedule,
	    "Delays before the retries of a deferred recipient; the last one repeats"),
	ROW("queue", "bounce_after", CFG_DURATION, "5d", SECONDS(1), DAYS(60), NULL,
	    queue_bounce_after, "A recipient still deferred this long after queueing bounces"),
	ROW("queue", "delay_warning", CFG_DURATION, "4h", 0, DAYS(30), NULL, queue_delay_warning,
	    "Tell the sender once when a recipient is still deferred this long after queueing "
	    "(RFC 3464 Action: delayed); 0 = never"),
	ROW("queue", "interval", CFG_DURATION, "1s", 10, MINUTES(10), NULL, queue_interval,
	    "How often the queue runner looks for due recipients"),
	ROW("queue", "batch", CFG_UINT, "256", 1, 100000, NULL, queue_batch,
	    "Due recipients read from the store per look"),
	ROW("queue", "max_in_flight", CFG_UINT, "10000", 1, 1000000, NULL, queue_max_in_flight,
	    "Recipients in delivery at once; no more are read while this many are"),
	ROW("queue", "connections_per_destination", CFG_UINT, "4", 1, 1000, NULL,
	    queue_connections_per_destination,
	    "Most concurrent SMTP connections to one destination; after a 421, a timeout or a "
	    "refused connection it gets half as many, then one more per round of deliveries"),
	ROW("queue", "destination_rate", CFG_UINT, "0", 0, 100000, NULL, queue_destination_rate,
	    "Most messages per second started to one destination (a connection that would go "
	    "faster ends, the next opens when allowed); 0 = no limit"),
	ROW("queue", "connect_timeout", CFG_DURATION, "30s", 100, MINUTES(10), NULL,
	    queue_connect_timeout, "Time to establish a TCP connection to a destination"),
	ROW("queue", "command_timeout", CFG_DURATION, "5m", 100, HOURS(1), NULL,
	    queue_command_timeout,
	    "Wait for a reply to the greeting and each command (RFC 5321 4.5.3.2: 5 minutes)"),
	ROW("queue", "data_timeout", CFG_DURATION, "10m", 100, HOURS(1), NULL, queue_data_timeout,
	    "Wait for the reply to the end of the message data (RFC 5321 4.5.3.2.6: 10 minutes)"),
	ROW("queue", "starttls", CFG_ENUM, "opportunistic", 0, 0,
	    "opportunistic|never|required|verify", queue_starttls,
	    "TLS for destinations without a policy: opportunistic (STARTTLS when offered, "
	    "certificate not checked), never, required (no delivery without STARTTLS), verify "
	    "(required, and the certificate must be trusted and name the MX host or domain)"),
	ROW("queue", "tls_policies", CFG_STRING, "", 0, 0, NULL, queue_tls_policies,
	    "Per-domain TLS levels: \"bank.example=verify partner.test=required "
	    ".corp.example=verify legacy.test=never\" (a leading dot covers the subdomains)"),
	ROW("queue", "tls_ca_file", CFG_STRING, "", 0, 0, NULL, queue_tls_ca_file,
	    "Trusted CA certificates (PEM) for the verify level; empty: the system's trust store"),
	ROW("queue", "relay_tls", CFG_ENUM, "opportunistic", 0, 0,
	    "opportunistic|never|required|verify", queue_relay_tls,
	    "TLS level for the relay host (with relay_user, TLS is required whatever this says)"),
	ROW("queue", "relay_name", CFG_STRING, "", 0, 0, NULL, queue_relay_name,
	    "The relay host's name: sent as TLS SNI and checked in its certificate with "
	    "relay_tls = verify"),
	ROW("queue", "chunking", CFG_BOOL, "yes", 0, 1, NULL, queue_chunking,
	    "Send with BDAT (RFC 3030 CHUNKING) to destinations that offer it: no dot-stuffing"),
	ROW("queue", "resolvers", CFG_STRING, "", 0, 0, NULL, queue_resolvers,
	    "DNS servers for MX lookups: numeric \"host:port\" words; empty: /etc/resolv.conf"),
	ROW("queue", "dns_timeout", CFG_DURATION, "5s", 100, MINUTES(1), NULL, queue_dns_timeout,
	    "Wait for one DNS answer (tried twice per server)"),
	ROW("queue", "mx_port", CFG_UINT, "25", 1, 65535, NULL, queue_mx_port,
	    "TCP port of MX hosts; anything but 25 is for tests"),

	ROW("log", "target", CFG_ENUM, "stderr", 0, 0, "stderr|syslog", log_target,
	    "Where log lines go"),
	ROW("log", "level", CFG_ENUM, "info", 0, 0, "debug|info|warn|error", log_level,
	    "Least severe level written"),
};

const struct cfg_setting *
cfg_settings(size_t *count_r)
{
	*count_r = N_ELEMENTS(settings);
	return settings;
}

static char **
field_str(struct cfg *cfg, const struct cfg_setting *s)
{
	return (char **)((char *)cfg + s->offset);
}

static uint64_t *
field_u64(struct cfg *cfg, const struct cfg_setting *s)
{
	return (uint64_t *)((char *)cfg + s->offset);
}

static bool
is_string_type(enum cfg_type t)
{
	return t == CFG_STRING || t == CFG_PATH || t == CFG_ENUM || t == CFG_ADDRS;
}

int
cfg_parse_duration(const char *s, uint64_t *ms_r)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{"ms", 1}, {"s", 1000}, {"", 1000}, {"m", 60000}, {"h", 3600000},
		{"d", 86400000}, {"w", 604800000},
	};
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	for (size_t i = 0; i < N_ELEMENTS(units); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > UINT64_MAX / units[i].ms)
				return -1;
			*ms_r = v * units[i].ms;
			return 0;
		}
	}
	return -1;
}

int
cfg_parse_size(const char *s, uint64_t *bytes_r)
{
	static const struct { const char *unit; uint64_t mult; } units[] = {
		{"", 1}, {"K", KIB(1)}, {"M", MIB(1)}, {"G", GIB(1)},
		{"k", KIB(1)}, {"KB", KIB(1)}, {"MB", MIB(1)}, {"GB", GIB(1)},
	};
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	for (size_t i = 0; i < N_ELEMENTS(units); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > UINT64_MAX / units[i].mult)
				return -1;
			*bytes_r = v * units[i].mult;
			return 0;
		}
	}
	return -1;
}

int
cfg_parse_bool(const char *s, bool *r)
{
	if (strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "on") == 0 ||
	    strcmp(s, "1") == 0) {
		*r = true;
		return 0;
	}
	if (strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "off") == 0 ||
	    strcmp(s, "0") == 0) {
		*r = false;
		return 0;
	}
	return -1;
}

static bool
enum_allows(const char *choices, const char *v)
{
	size_t n = strlen(v);

	for (const char *p = choices; *p != '\0';) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);

		if (len == n && strncmp(p, v, n) == 0)
			return true;
		p += len + (bar ? 1 : 0);
	}
	return false;
}

/* Checks one "host:port" word of a CFG_ADDRS value. */
static int
check_addr(const char *w, size_t len, const char **error_r)
{
	const char *colon;
	char port[8];
	unsigned int p;

	if (len > 0 && w[0] == '[') {
		const char *rb = memchr(w, ']', len);
		if (rb == NULL || rb + 1 >= w + len || rb[1] != ':') {
			*error_r = "IPv6 listen address must look like [::1]:25";
			return -1;
		}
		colon = rb + 1;
	} else {
		colon = memrchr(w, ':', len);
		if (colon == NULL || colon == w) {
			*error_r = "listen address must look like host:port, [v6]:port or *:port";
			return -1;
		}
	}
	len = (size_t)(w + len - colon - 1);
	if (len == 0 || len >= sizeof(port)) {
		*error_r = "bad port in listen address";
		return -1;
	}
	memcpy(port, colon + 1, len);
	port[len] = '\0';
	if (str_to_uint(port, &p) < 0 || p == 0 || p > 65535) {
		*error_r = "listen port must be 1-65535";
		return -1;
	}
	return 0;
}

static int
set_value(struct cfg *cfg, const struct cfg_setting *s, const char *value, const char **error_r)
{
	uint64_t v = 0;
	bool b;

	switch (s->type) {
	case CFG_STRING:
		break;
	case CFG_PATH:
		if (value[0] != '\0' && value[0] != '/' && cfg->path != NULL) {
			const char *slash = strrchr(cfg->path, '/');
			if (slash != NULL) {
				char **f = field_str(cfg, s);
				free(*f);
				*f = xasprintf("%.*s/%s", (int)(slash - cfg->path), cfg->path, value);
				return 0;
			}
		}
		break;
	case CFG_ENUM:
		if (!enum_allows(s->choices, value)) {
			static __thread char msg[160];
			snprintf(msg, sizeof(msg), "must be one of: %s", s->choices);
			*error_r = msg;
			return -1;
		}
		break;
	case CFG_ADDRS:
		for (const char *p = value; *p != '\0';) {
			size_t len;
			while (*p == ' ' || *p == ',')
				p++;
			len = strcspn(p, " ,");
			if (len > 0 && check_addr(p, len, error_r) < 0)
				return -1;
			p += len;
		}
		break;
	case CFG_UINT:
		if (str_to_u64(value, &v) < 0) {
			*error_r = "not a whole number";
			return -1;
		}
		break;
	case CFG_DURATION:
		if (cfg_parse_duration(value, &v) < 0) {
			*error_r = "not a duration (a number with ms, s, m, h, d or w)";
			return -1;
		}
		break;
	case CFG_SIZE:
		if (cfg_parse_size(value, &v) < 0) {
			*error_r = "not a size (a number with K, M or G)";
			return -1;
		}
		break;
	case CFG_BOOL:
		if (cfg_parse_bool(value, &b) < 0) {
			*error_r = "must be yes or no";
			return -1;
		}
		*field_u64(cfg, s) = b;
		return 0;
	}
	if (is_string_type(s->type)) {
		char **f = field_str(cfg, s);
		free(*f);
		*f = xstrdup(value);
		return 0;
	}
	if (v < s->min || v > s->max) {
		static __thread char msg[160];
		snprintf(msg, sizeof(msg), "out of range (%llu to %llu%s)", (unsigned long long)s->min,
		         (unsigned long long)s->max,
		         s->type == CFG_DURATION ? " ms" : s->type == CFG_SIZE ? " bytes" : "");
		*error_r = msg;
		return -1;
	}
	*field_u64(cfg, s) = v;
	return 0;
}

static const struct cfg_setting *
find_setting(const char *section, const char *name)
{
	for (size_t i = 0; i < N_ELEMENTS(settings); i++) {
		if (strcmp(settings[i].section, section) == 0 && strcmp(settings[i].name, name) == 0)
			return &settings[i];
	}
	return NULL;
}

struct cfg *
cfg_new(void)
{
	struct cfg *cfg = xcalloc(1, sizeof(*cfg));
	const char *error;

	for (size_t i = 0; i < N_ELEMENTS(settings); i++) {
		if (set_value(cfg, &settings[i], settings[i].def, &error) < 0)
			PANIC("default of %s.%s: %s", settings[i].section, settings[i].name, error);
	}
	return cfg;
}

void
cfg_free(struct cfg **cfgp)
{
	struct cfg *cfg = *cfgp;

	if (cfg == NULL)
		return;
	for (size_t i = 0; i < N_ELEMENTS(settings); i++) {
		if (is_string_type(settings[i].type))
			free(*field_str(cfg, &settings[i]));
	}
	free(cfg->path);
	free(cfg);
	*cfgp = NULL;
}

int
cfg_set(struct cfg *cfg, const char *key, const char *value, const char **error_r)
{
	const char *dot = strchr(key, '.');
	const struct cfg_setting *s;
	char section[64];

	if (dot == NULL || (size_t)(dot - key) >= sizeof(section)) {
		*error_r = "setting must be written section.name";
		return -1;
	}
	memcpy(section, key, (size_t)(dot - key));
	section[dot - key] = '\0';
	s = find_setting(section, dot + 1);
	if (s == NULL) {
		*error_r = "unknown setting";
		return -1;
	}
	return set_value(cfg, s, value, error_r);
}

int
cfg_load(struct cfg *cfg, const char *path, struct buf *errors)
{
	char line[CFG_MAX_LINE + 2], section[64] = "", *raw = NULL;
	size_t rawcap = 0;
	ssize_t nread;
	unsigned int lineno = 0;
	bool seen[N_ELEMENTS(settings)] = {false};
	int ret = 0;
	FILE *f;

	free(cfg->path);
	cfg->path = xstrdup(path);
	f = fopen(path, "r");
	if (f == NULL) {
		buf_printf(errors, "%s: cannot open: %s\n", path, strerror(errno));
		return -1;
	}
	while ((nread = getline(&raw, &rawcap, f)) >= 0) {
		size_t len = (size_t)nread;
		const struct cfg_setting *s;
		const char *error;
		char *p, *eq, *name, *value;

		lineno++;
		if (len > 0 && raw[len - 1] == '\n')
			raw[--len] = '\0';
		if (memchr(raw, '\0', len) != NULL) {
			buf_printf(errors, "%s:%u: NUL byte in line\n", path, lineno);
			ret = -1;
			continue;
		}
		if (len > CFG_MAX_LINE) {
			buf_printf(errors, "%s:%u: line longer than %d bytes\n", path, lineno,
			           CFG_MAX_LINE);
			ret = -1;
			continue;
		}
		memcpy(line, raw, len + 1);
		p = str_trim(line);
		if (*p == '\0' || *p == '#' || *p == ';')
			continue;
		if (*p == '[') {
			char *rb = strchr(p, ']');
			if (rb == NULL || rb[1] != '\0' || (size_t)(rb - p - 1) >= sizeof(section)) {
				buf_printf(errors, "%s:%u: bad section header\n", path, lineno);
				ret = -1;
				continue;
			}
			*rb = '\0';
			if (str_copy(section, sizeof(section), str_trim(p + 1)) < 0)
				section[0] = '\0'; /* cannot happen: length checked above */
			bool known = false;
			for (size_t i = 0; i < N_ELEMENTS(settings); i++)
				known = known || strcmp(settings[i].section, section) == 0;
			if (!known) {
				buf_printf(errors, "%s:%u: unknown section [%s]\n", path, lineno, section);
				ret = -1;
			}
			continue;
		}
		eq = strchr(p, '=');
		if (eq == NULL) {
			buf_printf(errors, "%s:%u: expected name = value\n", path, lineno);
			ret = -1;
			continue;
		}
		*eq = '\0';
		name = str_trim(p);
		value = str_trim(eq + 1);
		if (section[0] == '\0') {
			buf_printf(errors, "%s:%u: setting %s outside of a [section]\n", path, lineno, name);
			ret = -1;
			continue;
		}
		s = find_setting(section, name);
		if (s == NULL) {
			buf_printf(errors, "%s:%u: unknown setting %s.%s\n", path, lineno, section, name);
			ret = -1;
			continue;
		}
		if (seen[s - settings]) {
			buf_printf(errors, "%s:%u: %s.%s set twice\n", path, lineno, section, name);
			ret = -1;
			continue;
		}
		seen[s - settings] = true;
		if (set_value(cfg, s, value, &error) < 0) {
			buf_printf(errors, "%s:%u: %s.%s: %s\n", path, lineno, section, name, error);
			ret = -1;
		}
	}
	if (ferror(f)) {
		buf_printf(errors, "%s: read error: %s\n", path, strerror(errno));
		ret = -1;
	}
	free(raw);
	fclose(f);
	return ret;
}

static bool
any_tls_listener(const struct cfg *cfg)
{
	/* Every listener offers TLS, either implicit or by STARTTLS/STLS. */
	return cfg->listen_smtp[0] || cfg->listen_submission[0] || cfg->listen_submissions[0] ||
	       cfg->listen_imap[0] || cfg->listen_imaps[0] || cfg->listen_pop3[0] ||
	       cfg->listen_pop3s[0];
}

int
cfg_check(const struct cfg *cfg, struct buf *errors)
{
	const char *p = cfg->path ? cfg->path : "(defaults)";
	int ret = 0;

	if (cfg->data_dir[0] == '\0') {
		buf_printf(errors, "%s: server.data_dir must be set\n", p);
		ret = -1;
	}
	if (any_tls_listener(cfg) && (cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0')) {
		buf_printf(errors, "%s: tls.cert and tls.key must be set: every listener offers TLS\n", p);
		ret = -1;
	} else {
		if (cfg->tls_cert[0] != '\0' && access(cfg->tls_cert, R_OK) < 0) {
			buf_printf(errors, "%s: tls.cert %s: %s\n", p, cfg->tls_cert, strerror(errno));
			ret = -1;
		}
		if (cfg->tls_key[0] != '\0' && access(cfg->tls_key, R_OK) < 0) {
			buf_printf(errors, "%s: tls.key %s: %s\n", p, cfg->tls_key, strerror(errno));
			ret = -1;
		}
	}
	return ret;
}

static void
format_value(const struct cfg *cfg, const struct cfg_setting *s, char *out, size_t outsize)
{
	const void *f = (const char *)cfg + s->offset;
	uint64_t v;

	if (is_string_type(s->type)) {
		snprintf(out, outsize, "%s", *(char *const *)f);
		return;
	}
	v = *(const uint64_t *)f;
	switch (s->type) {
	case CFG_BOOL:
		snprintf(out, outsize, "%s", v ? "yes" : "no");
		break;
	case CFG_DURATION:
		if (v % DAYS(1) == 0 && v > 0)
			snprintf(out, outsize, "%llud", (unsigned long long)(v / DAYS(1)));
		else if (v % HOURS(1) == 0 && v > 0)
			snprintf(out, outsize, "%lluh", (unsigned long long)(v / HOURS(1)));
		else if (v % MINUTES(1) == 0 && v > 0)
			snprintf(out, outsize, "%llum", (unsigned long long)(v / MINUTES(1)));
		else if (v % SECONDS(1) == 0)
			snprintf(out, outsize, "%llus", (unsigned long long)(v / SECONDS(1)));
		else
			snprintf(out, outsize, "%llums", (unsigned long long)v);
		break;
	case CFG_SIZE:
		if (v % GIB(1) == 0 && v > 0)
			snprintf(out, outsize, "%lluG", (unsigned long long)(v / GIB(1)));
		else if (v % MIB(1) == 0 && v > 0)
			snprintf(out, outsize, "%lluM", (unsigned long long)(v / MIB(1)));
		else if (v % KIB(1) == 0 && v > 0)
			snprintf(out, outsize, "%lluK", (unsigned long long)(v / KIB(1)));
		else
			snprintf(out, outsize, "%llu", (unsigned long long)v);
		break;
	default:
		snprintf(out, outsize, "%llu", (unsigned long long)v);
		break;
	}
}

void
cfg_show(const struct cfg *cfg, FILE *out, bool with_descriptions)
{
	const char *section = "";
	char value[1024];

	for (size_t i = 0; i < N_ELEMENTS(settings); i++) {
		const struct cfg_setting *s = &settings[i];

		if (strcmp(section, s->section) != 0) {
			fprintf(out, "%s[%s]\n", i > 0 ? "\n" : "", s->section);
			section = s->section;
		}
		if (with_descriptions)
			fprintf(out, "# %s\n", s->description);
		format_value(cfg, s, value, sizeof(value));
		/* The one secret among the settings: `config show` output ends up in tickets. */
		if (strcmp(s->name, "relay_password") == 0 && value[0] != '\0')
			(void)!str_copy(value, sizeof(value), "(hidden)");
		fprintf(out, "%s = %s\n", s->name, value);
	}
}

void
cfg_doc(FILE *out)
{
	static const char *const type_names[] = {"string", "path", "number", "yes/no", "duration",
	                                         "size", "choice", "addresses"};
	const char *section = "";

	for (size_t i = 0; i < N_ELEMENTS(settings); i++) {
		const struct cfg_setting *s = &settings[i];
		char range[96] = "";

		if (strcmp(section, s->section) != 0) {
			fprintf(out, "\n### [%s]\n\n| setting | type | default | range | meaning |\n"
			             "|---|---|---|---|---|\n", s->section);
			section = s->section;
		}
		if (s->type == CFG_ENUM) {
			/* '|' would end a Markdown table cell. */
			size_t o = 0;
			for (const char *c = s->choices; *c != '\0' && o + 3 < sizeof(range); c++) {
				if (*c == '|') {
					range[o++] = ',';
					range[o++] = ' ';
				} else {
					range[o++] = *c;
				}
			}
			range[o] = '\0';
		}
		if (s->type == CFG_UINT || s->type == CFG_DURATION || s->type == CFG_SIZE) {
			struct cfg tmp;
			char lo[32], hi[32];
			memset(&tmp, 0, sizeof(tmp));
			*(uint64_t *)((char *)&tmp + s->offset) = s->min;
			format_value(&tmp, s, lo, sizeof(lo));
			*(uint64_t *)((char *)&tmp + s->offset) = s->max;
			format_value(&tmp, s, hi, sizeof(hi));
			snprintf(range, sizeof(range), "%s – %s", lo, hi);
		}
		fprintf(out, "| `%s` | %s | `%s` | %s | %s |\n", s->name, type_names[s->type],
		        s->def, range, s->description);
	}
}

char *
cfg_database_path(const struct cfg *cfg)
{
	if (cfg->database[0] != '\0')
		return xstrdup(cfg->database);
	return xasprintf("%s/postamt.db", cfg->data_dir);
}

unsigned int
cfg_io_threads(const struct cfg *cfg)
{
	long n;

	if (cfg->io_threads > 0)
		return (unsigned int)cfg->io_threads;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned int)MIN(n, NET_MAX_IO_THREADS) : 1;
}
