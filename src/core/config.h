/* Configuration: one settings table drives parsing, validation, `config show` and the
 * reference documentation (`postamt config doc`).
 *
 * File format: INI-style sections and `name = value` lines; '#' starts a comment line.
 *
 *   [server]
 *   hostname = mail.example.org
 *   [limits]
 *   idle_timeout = 5m
 *
 * Durations take the units ms, s, m, h, d, w (a bare number is seconds); sizes take K, M, G
 * (powers of 1024; a bare number is bytes). Errors are reported as "file:line: message". */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include "core/buf.h"
#include <stdio.h>

enum cfg_type {
	CFG_STRING,
	CFG_PATH,     /* string; a relative path is taken relative to the config file's folder */
	CFG_UINT,     /* unsigned 64-bit within [min, max] */
	CFG_BOOL,     /* yes/no, true/false, on/off, 1/0 */
	CFG_DURATION, /* milliseconds within [min, max] */
	CFG_SIZE,     /* bytes within [min, max] */
	CFG_ENUM,     /* one of `choices`, separated by '|' */
	CFG_ADDRS,    /* listen addresses: "host:port" or "[v6]:port" or "*:port", space separated */
};

struct cfg {
	/* [server] */
	char *hostname;
	char *data_dir;
	char *user;
	uint64_t io_threads;     /* count; 0 = one per core */
	uint64_t shutdown_grace; /* ms given to in-flight sessions on SIGTERM */
	uint64_t workers;        /* threads for blocking lookups */
	/* [listen] */
	char *listen_smtp;
	char *listen_submission;
	char *listen_submissions;
	char *listen_imap;
	char *listen_imaps;
	char *listen_pop3;
	char *listen_pop3s;
	/* [tls] */
	char *tls_cert;
	char *tls_key;
	char *tls_min_version;
	char *tls_ciphers;
	char *tls_ciphersuites;
	/* [limits] */
	uint64_t max_connections;
	uint64_t max_connections_per_ip;
	uint64_t max_connection_rate_per_ip; /* new connections per minute; 0 = unlimited */
	uint64_t idle_timeout;      /* ms */
	uint64_t handshake_timeout; /* ms */
	uint64_t max_output_buffer; /* bytes queued for a slow reader before it is dropped */
	/* [smtp] */
	uint64_t smtp_max_message_size; /* bytes */
	uint64_t smtp_max_recipients;   /* per transaction */
	uint64_t smtp_max_bad_commands; /* before disconnecting */
	uint64_t smtp_max_received;     /* Received: fields before we call it a loop */
	uint64_t smtp_data_timeout;     /* ms for a whole DATA/BDAT transfer */
	uint64_t smtp_min_data_rate;    /* bytes/s averaged over a transfer, after 30 s */
	uint64_t smtp_recipient_cache_ttl; /* ms, 0 = off */
	uint64_t smtp_plaintext_auth_loopback; /* bool */
	uint64_t storage_quota;                /* bytes, 0 = unlimited */
	uint64_t storage_sync_flags;           /* bool */
	uint64_t imap_timeout;                 /* ms */
	uint64_t imap_idle_timeout;            /* ms */
	uint64_t imap_expunge_history;         /* ms, 0 = forever */
	uint64_t imap_max_bad_commands;        /* count */
	uint64_t imap_append_limit;            /* bytes */
	uint64_t imap_plaintext_auth_loopback; /* bool */
	uint64_t imap_search_index_budget;     /* bytes */
	/* [pop3] */
	uint64_t pop3_max_bad_commands; /* before disconnecting */
	uint64_t pop3_idle_timeout;     /* ms, after login */
	/* [storage] */
	char *storage_engine;
	char *database;
	uint64_t sync_threads;
	uint64_t sync_filesystem; /* bool */
	uint64_t inline_max;      /* bytes */
	uint64_t batch_max;
	uint64_t blob_sweep_interval; /* ms */
	uint64_t blob_orphan_age;     /* ms */
	/* [auth] */
	char *password_scheme;
	uint64_t auth_workers;
	uint64_t auth_failure_delay; /* ms */
	/* [guard] */
	uint64_t guard_max_failures;
	uint64_t guard_window;          /* ms */
	uint64_t guard_ban_time;        /* ms */
	uint64_t guard_ban_max;         /* ms */
	char *guard_allow;
	uint64_t guard_stale_notify;    /* bool */
	uint64_t guard_stale_max_delay; /* ms */
	uint64_t guard_account_threshold;
	uint64_t guard_account_max_delay; /* ms */
	/* [queue] */
	char *queue_routes;            /* "domain=host:port ..." */
	char *queue_relay_host;        /* "host:port" or "" */
	char *queue_relay_user;
	char *queue_relay_password;
	char *queue_retry_schedule;    /* durations, space separated */
	uint64_t queue_bounce_after;   /* ms in the queue before a deferred recipient bounces */
	uint64_t queue_delay_warning;  /* ms in the queue before the sender is told; 0 = never */
	uint64_t queue_interval;       /* ms between looks for due recipients */
	uint64_t queue_batch;          /* recipients read per look */
	uint64_t queue_max_in_flight;  /* recipients in delivery at once */
	uint64_t queue_connections_per_destination;
	uint64_t queue_destination_rate; /* messages per second; 0 = no limit */
	uint64_t queue_connect_timeout; /* ms */
	uint64_t queue_command_timeout; /* ms: greeting, EHLO, MAIL, RCPT, DATA, QUIT replies */
	uint64_t queue_data_timeout;    /* ms: reply to the end of the data */
	char *queue_starttls;        /* TLS level of destinations without a policy */
	char *queue_tls_policies;    /* "domain=level ..." */
	char *queue_tls_ca_file;
	char *queue_relay_tls;
	char *queue_relay_name;
	uint64_t queue_chunking;     /* bool */
	char *queue_resolvers;       /* "127.0.0.1:53 ..." or "" */
	uint64_t queue_dns_timeout;  /* ms */
	uint64_t queue_mx_port;
	/* [log] */
	char *log_target;
	char *log_level;

	/* Not settings: where the file came from, for relative paths and messages. */
	char *path;
};

struct cfg_setting {
	const char *section;
	const char *name;
	enum cfg_type type;
	const char *def; /* default, as it would be written in the file */
	uint64_t min, max;
	const char *choices; /* CFG_ENUM: "a|b|c" */
	size_t offset;       /* into struct cfg */
	const char *description;
};

/* The table, for documentation. */
const struct cfg_setting *cfg_settings(size_t *count_r);

/* A configuration holding every default. Caller frees with cfg_free(). */
struct cfg *cfg_new(void);
void cfg_free(struct cfg **cfg);

/* Reads path into cfg. On errors, appends one "file:line: message\n" per error to `errors`
 * and returns -1; cfg then holds the values that parsed. */
ATTR_WUR int cfg_load(struct cfg *cfg, const char *path, struct buf *errors);
/* Sets "section.name" to a value in file syntax. */
ATTR_WUR int cfg_set(struct cfg *cfg, const char *key, const char *value, const char **error_r);
/* Checks the settings against each other (after load). Appends errors like cfg_load. */
ATTR_WUR int cfg_check(const struct cfg *cfg, struct buf *errors);
/* Writes every setting with its effective value, grouped by section, in file syntax. */
void cfg_show(const struct cfg *cfg, FILE *out, bool with_descriptions);
/* Writes the reference of all settings as Markdown. */
void cfg_doc(FILE *out);

/* The effective database path (storage.database, or DATA_DIR/postamt.db). Caller frees. */
char *cfg_database_path(const struct cfg *cfg);
unsigned int cfg_io_threads(const struct cfg *cfg);

ATTR_WUR int cfg_parse_duration(const char *s, uint64_t *ms_r);
ATTR_WUR int cfg_parse_size(const char *s, uint64_t *bytes_r);
ATTR_WUR int cfg_parse_bool(const char *s, bool *r);

#endif
