/* The storage interface. Protocol code and the CLI see only this header; the engine behind it
 * (store_sqlite.c today, PostgreSQL later) is chosen by store_open() and no engine type leaks
 * through.
 *
 * Model
 *   Messages are immutable blobs, one file each under BLOB_DIR, written once and fsynced.
 *   Everything mutable (domains, accounts, aliases, mailboxes, messages' flags, the outbound
 *   queue, guard state) is metadata in the database. A blob may be referenced by many mailbox
 *   messages and queue entries; the engine counts references and removes a blob's file in the
 *   background once nothing references it.
 *
 * Writes
 *   Every change is a job: a function run inside a transaction (struct store_txn). Jobs from all
 *   threads are queued to one writer thread, which commits whatever has arrived meanwhile in one
 *   transaction (group commit); each job runs in its own savepoint, so one failing job does not
 *   fail the others. A job's blobs are fsynced (in parallel by the sync threads), renamed into
 *   place and their folders fsynced BEFORE the transaction that references them commits.
 *   Durability protocol per blob: write, fsync, rename, fsync the folder, commit the metadata.
 *   Only then is the job's done callback called: a positive answer to a client is sent from
 *   there, never earlier.
 *
 * Threads
 *   store_open/store_close: the main thread. store_submit, store_exec, the blob functions:
 *   any thread (store_blob_write only does write(2) into the page cache, never fsync, so I/O
 *   threads may call it). Synchronous reads (store_*_get/list): any thread but the I/O threads
 *   (use a worker), each call uses a pooled read connection. Done callbacks run on the writer
 *   thread and must only hand the result over (e.g. post it to the submitting thread).
 */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include "core/buf.h"

struct store;
struct store_txn;
struct store_job;
struct store_blob;
struct store_account;

/* Result codes of store functions: 0 or one of these (negative). */
enum store_err {
	STORE_OK = 0,
	STORE_ERR_IO = -1,       /* read/write/fsync failure, database error: temporary */
	STORE_ERR_FULL = -2,     /* disk or database full: temporary */
	STORE_ERR_EXISTS = -3,   /* unique name already taken */
	STORE_ERR_NOTFOUND = -4, /* the named object does not exist */
	STORE_ERR_INVALID = -5,  /* request refused (e.g. removing a domain that has accounts) */
	STORE_ERR_SHUTDOWN = -6, /* the store is closing; the job was not run */
};

/* True for the errors a client should retry (4xx, NO [UNAVAILABLE], -ERR [SYS/TEMP]). */
bool store_err_is_temporary(int err);
const char *store_err_str(int err);

struct store_options {
	const char *database; /* path of the database file (borrowed) */
	const char *blob_dir; /* folder of message blobs (borrowed); created if missing */
	unsigned int sync_threads;  /* parallel blob fsyncs; 0 = inline in the writer */
	/* Instead of one fdatasync per message file and one fsync per folder, rename the batch's
	 * files into place and make them durable with ONE syncfs(2) of the blob folder's
	 * filesystem (then commit). Fewer flushes; meant for a filesystem of its own, since
	 * syncfs also flushes whatever else is dirty on it. */
	bool sync_filesystem;
	/* Messages up to this size are kept in the database itself: written with the commit
	 * that references them, so storing one costs no file and no flush of its own. Larger
	 * ones, and all with 0, are files. */
	uint64_t inline_max;
	unsigned int batch_max;     /* jobs per transaction, <= STORE_MAX_BATCH */
	bool relaxed_sync;          /* honour store_job_set_relaxed (storage.sync_flags = no) */
	uint64_t blob_orphan_age;   /* ms: an unreferenced file older than this is garbage */
	uint64_t blob_sweep_interval; /* ms between orphan sweeps; 0 = never */
	/* ms: expunges are remembered one by one this long (CONDSTORE/QRESYNC clients that
	 * resynchronise); the sweeps let go of older ones. 0 = forever. */
	uint64_t expunge_history;
	/* true (serve): start the writer thread, sync threads and background blob removal.
	 * false (CLI, tools): store_exec runs the job in its own transaction on the caller's
	 * thread. Both may run against one database at the same time. */
	bool background;
};

/* Opens (creating if needed) the database and blob folder and applies schema migrations.
 * Start-up cost does not depend on the number of messages or queue entries. */
ATTR_WUR int store_open(const struct store_options *opts, struct store **store_r,
                        const char **error_r);
/* Runs every job already submitted, stops the threads and closes. Sets *store to NULL. */
void store_close(struct store **store);

/* ---- Blobs ------------------------------------------------------------------------------ */

/* Starts a new blob in BLOB_DIR/tmp. Caller owns it until it hands it to a job. */
ATTR_WUR int store_blob_new(struct store *store, struct store_blob **blob_r, const char **error_r);
/* Appends bytes (write(2) only; no fsync). Returns 0 or STORE_ERR_IO/STORE_ERR_FULL. */
ATTR_WUR int store_blob_write(struct store_blob *blob, const void *data, size_t len);
/* The blob's id (32 hex digits): valid while the blob exists. */
const char *store_blob_id(const struct store_blob *blob);
uint64_t store_blob_size(const struct store_blob *blob);
/* Discards a blob that was never handed to a job: its file is removed. */
void store_blob_free(struct store_blob **blob);
/* Opens a committed blob for reading, whether it is kept in the database or in a file: a
 * read-only descriptor positioned at 0 (caller closes), or -1 with errno (ENOENT: no such blob).
 * Any thread; it may read the database. */
int store_blob_open(struct store *store, const char *blob_id);
/* Appends a committed blob's whole content to out: 1, 0 when there is no such blob, or a
 * negative store_err (STORE_ERR_IO also when out's maximum is too small). Any thread. Cheaper
 * than store_blob_open for a blob kept in the database. */
int store_blob_read(struct store *store, const char *blob_id, struct buf *out);
/* The same, but it may stop once out holds the message's header section: the empty line that
 * ends it (CRLF or LF), or the whole blob when there is none. Reads about as little as that
 * takes, whether the blob is in the database or a file. */
int store_blob_read_head(struct store *store, const char *blob_id, struct buf *out);
/* Octets of the header section at the start of msg, through the empty line that ends it, or
 * 0 when len octets hold no such line. */
size_t store_header_end(const uint8_t *msg, size_t len);
/* Where a blob's file is, for a blob that is not kept in the database (tests, tools). Caller
 * frees; NULL for a malformed id. */
char *store_blob_path(struct store *store, const char *blob_id);

/* ---- Jobs ------------------------------------------------------------------------------- */

/* Runs inside the transaction. Returns STORE_OK or an error code; on error the job's changes
 * are rolled back (its savepoint) and the message set with store_txn_error() is reported. */
typedef int store_job_fn(struct store_txn *txn, void *ctx);
/* Called exactly once when the job is committed or has failed. Takes ownership of the job:
 * read it with store_job_result() and free it with store_job_free(). */
typedef void store_done_fn(struct store_job *job, void *ctx);

struct store_job *store_job_new(store_job_fn *run, store_done_fn *done, void *ctx);
/* The job takes ownership of the blob and sets *blob to NULL. The blob is fsynced and put in
 * place before the job's transaction commits; if the job fails, the file is removed. The job
 * function refers to it by store_blob_id() (the blob stays valid while the job runs). */
void store_job_add_blob(struct store_job *job, struct store_blob **blob);
/* After done: STORE_OK or the error code, and a message (valid until store_job_free). */
int store_job_result(const struct store_job *job, const char **error_r);
void store_job_free(struct store_job **job);
/* Until store_read_unpin, the calling thread's reads share one read transaction: one
 * consistent snapshot, whose pages stay cached from one read to the next (without it, each read
 * after any commit reads its pages again). For a unit of work such as one IMAP command; never
 * across a wait for the client. Submitting a job (store_submit, store_exec) ends the snapshot,
 * so that the thread's next read sees the write it waited for. Not nested. */
void store_read_pin(struct store *store);
void store_read_unpin(struct store *store);
/* Ends the pinned snapshot now: the next read sees every commit made so far (for instance after
 * a change notice, whose commit an older snapshot would not show). */
void store_read_refresh(struct store *store);

/* Queues the job; takes ownership until done is called. With background=false runs it now. */
void store_submit(struct store *store, struct store_job *job);
/* Runs fn in a job and waits for the commit. Returns STORE_OK or the error code; *error_r is
 * valid until the next store_exec on this thread. Not for I/O threads. */
int store_exec(struct store *store, store_job_fn *fn, void *ctx, const char **error_r);
/* Relaxed durability, for changes that are not mail (flags, expunges, subscriptions): the job
 * is committed (atomic, visible to every reader, safe from a crash of the process) before done,
 * but may reach the disk up to a second later, or with the next durable commit, whichever
 * comes first; a power loss in between may undo it. With store_options.relaxed_sync off (or
 * without the writer thread) these are the same as the durable ones. */
void store_job_set_relaxed(struct store_job *job);
int store_exec_relaxed(struct store *store, store_job_fn *fn, void *ctx, const char **error_r);

/* ---- Writes (inside a job) -------------------------------------------------------------- */

ATTR_FORMAT(2, 3) void store_txn_error(struct store_txn *txn, const char *fmt, ...);
/* Seconds since the epoch at which this transaction runs. */
int64_t store_txn_now(const struct store_txn *txn);

int store_txn_domain_add(struct store_txn *txn, const char *domain);
/* Refused (STORE_ERR_INVALID) while the domain has accounts or aliases. */
int store_txn_domain_remove(struct store_txn *txn, const char *domain);
/* The domain of `address` must exist. Creates the account's default mailboxes: INBOX,
 * Drafts, Sent, Junk, Trash and Archive with their special-use attributes (RFC 6154). */
int store_txn_account_add(struct store_txn *txn, const char *address, const char *pwhash,
                          int64_t *id_r);
int store_txn_account_set_password(struct store_txn *txn, const char *address,
                                   const char *pwhash);
/* Sets the account's storage quota in bytes (0 = unlimited, -1 = the configured default). */
int store_txn_account_set_quota(struct store_txn *txn, const char *address, int64_t quota);
/* The quota that applies to an account given the configured default: 0 = unlimited. */
uint64_t store_account_quota(const struct store_account *account, uint64_t default_quota);
/* Removes the account, its mailboxes and messages (blobs lose their references). */
int store_txn_account_remove(struct store_txn *txn, const char *address);
/* source: "user@domain" or "@domain" (catch-all); target: any address, local or remote.
 * The source's domain must exist. */
int store_txn_alias_add(struct store_txn *txn, const char *source, const char *target);
/* target NULL removes every alias of source. */
int store_txn_alias_remove(struct store_txn *txn, const char *source, const char *target);

/* System flags of a message (RFC 3501 2.3.2); keywords are stored apart. */
enum store_flag {
	STORE_FLAG_SEEN = 1 << 0,
	STORE_FLAG_ANSWERED = 1 << 1,
	STORE_FLAG_FLAGGED = 1 << 2,
	STORE_FLAG_DELETED = 1 << 3,
	STORE_FLAG_DRAFT = 1 << 4,
};
#define STORE_FLAGS_ALL                                                                       \
	(STORE_FLAG_SEEN | STORE_FLAG_ANSWERED | STORE_FLAG_FLAGGED | STORE_FLAG_DELETED |      \
	 STORE_FLAG_DRAFT)

/* Adds a message referencing blob_id (a blob of this job, or one already committed) to the
 * mailbox: assigns uid = UIDNEXT and a new MODSEQ. */
int store_txn_deliver(struct store_txn *txn, int64_t mailbox_id, const char *blob_id,
                      uint32_t flags, int64_t internaldate, uint32_t *uid_r);
/* The same with IMAP keywords (space-separated, as store_keywords_valid() accepts; "" none). */
int store_txn_append(struct store_txn *txn, int64_t mailbox_id, const char *blob_id,
                     uint32_t flags, const char *keywords, int64_t internaldate,
                     uint32_t *uid_r);
/* Removes one message (its blob loses a reference) and records the expunge with a new MODSEQ,
 * so that other sessions and QRESYNC clients learn of it. */
int store_txn_expunge(struct store_txn *txn, int64_t mailbox_id, uint32_t uid);
/* The same, but a message that is gone (another session expunged it) returns
 * STORE_ERR_NOTFOUND without failing the job, which may go on. So do store_txn_update_flags
 * and store_txn_copy. */
int store_txn_expunge_quiet(struct store_txn *txn, int64_t mailbox_id, uint32_t uid);

/* ---- Mailboxes and messages (IMAP) --------------------------------------------------------
 * Mailbox names are checked by the protocol layer (hierarchy separator "/", no empty levels);
 * the store compares them exactly except INBOX. Every change to a mailbox's messages takes the
 * mailbox's next MODSEQ (RFC 7162). */

/* Longest keyword list of one message, in bytes with NUL. */
#define STORE_KEYWORDS_MAX 1024

/* A new mailbox (subscribed) with a new UIDVALIDITY; special_use "" or "\\Sent" etc.
 * STORE_ERR_EXISTS if the name is taken. */
int store_txn_mailbox_create(struct store_txn *txn, int64_t account_id, const char *name,
                             const char *special_use, int64_t *id_r);
/* Removes a mailbox with its messages (their blobs lose a reference). */
int store_txn_mailbox_delete(struct store_txn *txn, int64_t mailbox_id);
/* Renames `from` and every mailbox below it ("from/..."). STORE_ERR_EXISTS if a target name
 * is taken, STORE_ERR_NOTFOUND if `from` does not exist. Not for INBOX (the caller moves its
 * messages instead, RFC 3501 6.3.5). */
int store_txn_mailbox_rename(struct store_txn *txn, int64_t account_id, const char *from,
                             const char *to);
int store_txn_mailbox_subscribe(struct store_txn *txn, int64_t account_id, const char *name,
                                bool on);
enum store_flags_mode {
	STORE_FLAGS_REPLACE, /* FLAGS */
	STORE_FLAGS_ADD,     /* +FLAGS */
	STORE_FLAGS_REMOVE,  /* -FLAGS */
};
/* A message's flags after store_txn_update_flags. */
struct store_flags_result {
	uint32_t flags;
	char keywords[STORE_KEYWORDS_MAX];
	uint64_t modseq;
	bool changed;  /* a new MODSEQ was taken */
	bool modified; /* refused by unchangedsince: nothing changed */
};
/* Changes a message's flags and keywords (space-separated) by mode. unchangedsince != 0: the
 * change is refused (r->modified) when the message's MODSEQ is above it (RFC 7162
 * UNCHANGEDSINCE). A change that changes nothing takes no new MODSEQ. Keywords beyond
 * STORE_KEYWORDS_MAX are refused with STORE_ERR_INVALID. STORE_ERR_NOTFOUND if the message is
 * gone. */
int store_txn_update_flags(struct store_txn *txn, int64_t mailbox_id, uint32_t uid,
                           enum store_flags_mode mode, uint32_t flags, const char *keywords,
                           uint64_t unchangedsince, struct store_flags_result *r);
/* Copies a message (same blob, flags, keywords, INTERNALDATE) into another mailbox. */
int store_txn_copy(struct store_txn *txn, int64_t from_mailbox, uint32_t uid, int64_t to_mailbox,
                   uint32_t *uid_r);
/* Caches a message file's parsed MIME structure (mime_part_serialize), which never changes. */
int store_txn_blob_meta_set(struct store_txn *txn, const char *blob_id, const void *data,
                            size_t len);

/* ---- Full-text index (IMAP SEARCH) --------------------------------------------------------
 * The text SEARCH matches in a message file (its decoded header and body), kept per file:
 * files never change and copies of a message share theirs. A file's entry goes with its row.
 * The index is a filter: it tells which messages cannot contain some text, so that they need
 * not be read; what it lets through is checked against the message itself. Entries are made
 * lazily (by SEARCH), never at delivery. */

#define STORE_FTS_HEADER 0x1u
#define STORE_FTS_BODY 0x2u
/* Shortest term that can be looked up, in characters: the index is one of character
 * trigrams. */
#define STORE_FTS_MIN_CHARS 3
/* Terms of one lookup, and octets of one term: bound the query built from them. */
#define STORE_FTS_MAX_TERMS 64
#define STORE_FTS_MAX_TERM 4096

/* Adds the texts of a committed message file to the account's index (octets; NUL and octets
 * that are not UTF-8 are indexed as U+FFFD, which no term holds). The index is per account: a
 * lookup reads the account's documents only. Nothing happens when the account has indexed the
 * file already, or the file has lost its references. */
int store_txn_fts_add(struct store_txn *txn, int64_t account_id, const char *blob_id,
                      const void *header, size_t header_len, const void *body,
                      size_t body_len);

/* A text looked up in the index: in one of the `where` texts of a file, as a substring (octet
 * for octet). */
struct store_fts_term {
	unsigned int group;  /* terms of one group are alternatives; every group must hold;
	                      * groups in ascending order */
	unsigned int where;  /* STORE_FTS_* bits, not 0 */
	const char *text;    /* borrowed: valid UTF-8 without NUL, >= STORE_FTS_MIN_CHARS chars,
	                      * <= STORE_FTS_MAX_TERM octets */
	size_t len;          /* octets of text */
};

enum store_fts_state {
	STORE_FTS_PENDING = 0, /* the file is not indexed: look at the message itself */
	STORE_FTS_MATCH = 1,   /* indexed, and every group may hold: look at the message */
	STORE_FTS_NOMATCH = 2, /* indexed, and some group does not hold: the message cannot match */
};

/* A message as the index sees it; blob_id is valid during the callback only. */
struct store_fts_row {
	uint32_t uid;
	enum store_fts_state state;
	const char *blob_id;
	uint64_t size;        /* octets of the file */
};

typedef int store_fts_cb(const struct store_fts_row *row, void *ctx);

/* Every message of a mailbox, by uid, with what the account's index says of them for the
 * terms (PENDING: the file is not in the account's index yet), read in one snapshot.
 * account_id is the mailbox's account. STORE_ERR_INVALID when nterms is 0 or above
 * STORE_FTS_MAX_TERMS, or a term is not as described. Returns the callback's stop value, 0,
 * or a negative store_err. */
int store_fts_match(struct store *store, int64_t account_id, int64_t mailbox_id,
                    const struct store_fts_term *terms, size_t nterms, store_fts_cb *cb,
                    void *ctx);

/* True when kw is a valid keyword list: atoms (RFC 3501 flag-keyword) separated by one space,
 * no "\\", shorter than STORE_KEYWORDS_MAX. */
bool store_keywords_valid(const char *kw);

/* Called on the writer thread after a commit, once per mailbox whose messages a committed job
 * changed (deliveries, expunges, flags, copies, deletion), with the highest MODSEQ the job gave
 * the mailbox (UINT64_MAX for a deletion): a reader that has seen that MODSEQ has nothing new
 * to learn from it. Must only hand the news over. */
typedef void store_change_fn(int64_t mailbox_id, uint64_t modseq, void *ctx);
/* Set once, before jobs run. */
void store_set_change_hook(struct store *store, store_change_fn *fn, void *ctx);
/* Puts a message for remote recipients into the outbound queue: one entry, one row per
 * recipient. Returns the queue id. */
int store_txn_queue_add(struct store_txn *txn, const char *blob_id, const char *sender,
                        const char *const *rcpts, size_t nrcpts, int priority, int64_t *id_r);
int store_txn_queue_remove(struct store_txn *txn, int64_t queue_id);
/* Records the DSN parameters (RFC 3461) of a queue entry made in this transaction: ENVID and
 * RET for the message (NULL = absent), NOTIFY and ORCPT for the i-th recipient as it was given
 * to store_txn_queue_add (arrays of nrcpts entries, or NULL; NULL entries = absent). */
int store_txn_queue_set_dsn(struct store_txn *txn, int64_t queue_id, const char *envid,
                            const char *ret, const char *const *notify,
                            const char *const *orcpt, size_t nrcpts);

/* Outbound delivery (src/queue). A recipient row is queued (never tried) or deferred (tried,
 * temporary failure); delivered and bounced recipients are deleted, and the queue entry with
 * its last recipient (its blob then loses the reference). Priority classes: 0 interactive
 * submissions, 1 normal, 2 bulk, 3 suspected spam; lower goes first. */
enum store_queue_state {
	STORE_QUEUE_QUEUED = 0,
	STORE_QUEUE_DEFERRED = 1,
};
#define STORE_QUEUE_PRIORITIES 4

struct store_queue_rcpt {
	int64_t id;            /* recipient row id */
	int64_t queue_id;      /* queue entry (message) id */
	char blob_id[33];
	char sender[256];      /* "" = null reverse-path */
	char rcpt[256];
	char domain[256];
	int priority;          /* 0..STORE_QUEUE_PRIORITIES-1 */
	int state;             /* enum store_queue_state */
	bool held;
	uint32_t attempts;     /* count of failed attempts */
	int64_t created;       /* seconds since the epoch: when the message was queued */
	int64_t next_attempt;  /* seconds since the epoch */
	uint64_t size;         /* bytes of the blob */
	char envid[104];       /* RFC 3461 ENVID (xtext as received) or "" */
	char ret[8];           /* "FULL", "HDRS" or "" */
	char notify[64];       /* RFC 3461 NOTIFY or "" */
	char orcpt[512];       /* RFC 3461 ORCPT or "" */
	char last_error[256];  /* reason of the last deferral, or "" */
	bool delay_notified;   /* the sender got a delay notification */
};
typedef int store_queue_rcpt_cb(const struct store_queue_rcpt *rcpt, void *ctx);

/* Reads up to `limit` due recipients (queued or deferred, next_attempt <= now, not held), in
 * priority order, then oldest due first; recipients whose id is in skip[0..nskip) (already in
 * delivery; sorted ascending) are passed over. One index range per priority class, never a
 * table scan. Any thread but the I/O threads. Returns the callback's stop value, 0, or a
 * negative store_err. */
int store_queue_due(struct store *store, int64_t now, unsigned int limit,
                    const int64_t *skip, size_t nskip, store_queue_rcpt_cb *cb, void *ctx);

/* A position in the delivery order of each priority class, for reads that go on where the
 * last one stopped instead of reading past the recipients already taken again. */
struct store_queue_cursor {
	int64_t next_attempt[STORE_QUEUE_PRIORITIES]; /* INT64_MIN: the class's start */
	int64_t id[STORE_QUEUE_PRIORITIES];
	bool end; /* set by the read: every class was read to its end */
};
/* Sets every class to its start. */
void store_queue_cursor_reset(struct store_queue_cursor *cursor);
/* The callback of store_queue_scan returns this to pass a recipient over without taking it
 * (it does not count against the limit). */
#define STORE_QUEUE_PASS 1
/* Like store_queue_due, but each class from just after its position in *cursor, which moves
 * past every row looked at. Stops after `limit` recipients taken (callback returned 0) or
 * `max_examine` rows looked at (skipped and passed ones included). New mail and mail whose
 * next attempt comes later sort after the positions; what else became due behind them (mail
 * released, passed over) is found after a reset. */
int store_queue_scan(struct store *store, int64_t now, unsigned int limit,
                     unsigned int max_examine, const int64_t *skip, size_t nskip,
                     struct store_queue_cursor *cursor, store_queue_rcpt_cb *cb, void *ctx);
/* Lists up to `limit` recipients of the queue (every state, held ones too) by queue id, from
 * queue id `after` + 1 on, for `postamt queue show`. The same as store_queue_find with an
 * empty filter. */
int store_queue_list(struct store *store, int64_t after, unsigned int limit,
                     store_queue_rcpt_cb *cb, void *ctx);

/* Which recipients of the queue `postamt queue list` and the actions by filter see. The terms
 * given combine with AND; an empty filter (all NULL, false, 0) matches every recipient. Every
 * term is answered through an index in (queue id, recipient id) order, never by a scan of the
 * queue: the engine reads the index of the first term given of rcpt, sender, domain, held,
 * deferred, and checks the others on the rows that index yields. Strings are borrowed. */
struct store_queue_filter {
	const char *sender;  /* NULL any; "" the null reverse-path; else the address, exact but
	                      * case-insensitive (ASCII) */
	const char *rcpt;    /* NULL any; the recipient address, exact, case-insensitive */
	const char *domain;  /* NULL any; the recipient's domain, exact, case-insensitive */
	bool held;           /* only recipients of held entries */
	bool deferred;       /* only recipients tried and deferred (not those never tried) */
	/* Position: only rows after (after, after_rcpt) in (queue id, recipient id) order;
	 * after_rcpt 0 means after every recipient of entry `after`. until: only entries with
	 * id <= until; 0 = no bound. The actions advance after/after_rcpt and set until. */
	int64_t after;
	int64_t after_rcpt;
	int64_t until;
};

/* True when the filter has a term on recipients (rcpt, domain, deferred): a delete by such a
 * filter removes recipients, not whole entries. */
bool store_queue_filter_by_rcpt(const struct store_queue_filter *filter);
/* Lists up to `limit` recipients matching the filter in (queue id, recipient id) order. Any
 * thread but the I/O threads. STORE_ERR_INVALID for a filter string longer than an address.
 * Returns the callback's stop value, 0, or a negative store_err. */
int store_queue_find(struct store *store, const struct store_queue_filter *filter,
                     unsigned int limit, store_queue_rcpt_cb *cb, void *ctx);

enum store_queue_action {
	STORE_QUEUE_HOLD = 0,    /* the entries (whole messages) of matching recipients: held */
	STORE_QUEUE_RELEASE = 1, /* the same entries: no longer held */
	STORE_QUEUE_RETRY = 2,   /* the matching recipients: due now (held entries stay held) */
	STORE_QUEUE_DELETE = 3,  /* without a bounce: the matching recipients when the filter has
	                          * a term on recipients (an entry goes with its last one), the
	                          * whole entries of matching recipients otherwise */
};

struct store_queue_act_result {
	uint64_t matched; /* recipient rows read through the filter */
	uint64_t entries; /* entries held or released (whose flag changed), with a recipient
	                   * made due, or removed */
	uint64_t rcpts;   /* recipients made due or deleted (0 for hold and release) */
	bool more;        /* the chunk was full: run the next one (filter holds the position) */
};

/* One chunk of an action by filter: reads up to `limit` (1..STORE_MAX_QUEUE_CHUNK) matching
 * recipients from the filter's position on, acts on them, adds the counts to *result and
 * moves the position past them. On the first chunk (until 0) sets filter->until to the
 * newest entry, so that mail queued meanwhile is left alone. Run chunk after chunk, each in
 * its own job, while result->more: one job never holds the writer for long. */
int store_txn_queue_act(struct store_txn *txn, struct store_queue_filter *filter,
                        enum store_queue_action action, unsigned int limit,
                        struct store_queue_act_result *result);
/* A recipient was delivered or bounced: its row is removed, and the queue entry too when it was
 * the last one. STORE_ERR_NOTFOUND if the row is gone (deleted by an operator meanwhile). */
int store_txn_queue_rcpt_done(struct store_txn *txn, int64_t rcpt_id);
/* A temporary failure: attempts + 1, state deferred, next attempt at `next_attempt` (seconds
 * since the epoch), error (borrowed, truncated to 255 bytes) kept for `queue list`;
 * delay_notified true records that the sender was told about the delay (it stays set). */
int store_txn_queue_rcpt_defer(struct store_txn *txn, int64_t rcpt_id, int64_t next_attempt,
                               const char *error, bool delay_notified);
/* Sets or clears the held flag of a queue entry. */
int store_txn_queue_hold(struct store_txn *txn, int64_t queue_id, bool held);
/* Makes every recipient of a queue entry due now. */
int store_txn_queue_retry(struct store_txn *txn, int64_t queue_id);
/* The INBOX of the local account `address`: 1 found, 0 no such account, or a negative
 * store_err. For bounces to local senders. */
int store_txn_inbox_of(struct store_txn *txn, const char *address, int64_t *mailbox_id_r);

/* ---- Guard state ------------------------------------------------------------------------ */

struct store_ban {
	char ip[64];       /* an address, or an IPv6 /64 prefix "2001:db8::/64" */
	char service[16];  /* "smtp", "imap", "pop3" */
	int64_t until;     /* seconds since the epoch */
	int64_t created;   /* seconds: when this ban started */
	uint32_t failures; /* count that caused it */
	uint32_t strikes;  /* bans within a day of each other, for the doubling */
	char reason[128];
};

/* A device that keeps trying one outdated password (no password data is ever stored). */
struct store_stale {
	char user[256];
	char ip[64];
	char service[16];
	uint32_t attempts;   /* count */
	int64_t since, last; /* seconds */
};

/* Inserts or replaces the ban of (ip, service). */
int store_txn_ban_set(struct store_txn *txn, const struct store_ban *ban);
/* Removes the bans of ip on service (NULL: on every service). Not found is not an error. */
int store_txn_ban_remove(struct store_txn *txn, const char *ip, const char *service);
/* Inserts or replaces the record of (user, ip, service). */
int store_txn_stale_set(struct store_txn *txn, const struct store_stale *stale);
/* Adds 1 to the integer meta value key (created at 1). */
int store_txn_meta_bump(struct store_txn *txn, const char *key);

typedef int store_ban_cb(const struct store_ban *ban, void *ctx);
typedef int store_stale_cb(const struct store_stale *stale, void *ctx);
/* Every ban, expired ones included (the caller filters by until). */
int store_ban_list(struct store *store, store_ban_cb *cb, void *ctx);
int store_stale_list(struct store *store, store_stale_cb *cb, void *ctx);
/* The integer meta value key, 0 when absent. STORE_OK or a negative store_err. */
int store_meta_get_int(struct store *store, const char *key, int64_t *value_r);
/* The per-server secret (32 random bytes made with the database). */
int store_secret(struct store *store, uint8_t secret[32]);

/* ---- Reads (synchronous; not on I/O threads) -------------------------------------------- */

struct store_account {
	int64_t id;
	int64_t domain_id;
	char address[256];
	char pwhash[256];
	int64_t created;
	bool disabled;
	int64_t quota;  /* bytes; -1 = the configured default (storage.quota) */
	uint64_t used;  /* bytes of all the account's messages */
};

struct store_mailbox {
	int64_t id;
	int64_t account_id;
	char name[256];
	char special_use[32]; /* "\\Sent" etc., or "" */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint32_t messages; /* count */
	bool subscribed;
	/* Expunges up to this MODSEQ are no longer remembered one by one (the history is kept
	 * for store_opts.expunge_history): for an older `since`, store_mailbox_changes reports
	 * every UID below uidnext that is gone instead. 0: the whole history is there. */
	uint64_t expunged_floor;
};

struct store_totals {
	uint32_t messages; /* count */
	uint32_t unseen;   /* count without \\Seen */
	uint32_t deleted;  /* count with \\Deleted */
	uint64_t size;     /* bytes of all messages (STATUS SIZE, RFC 8438) */
};

struct store_message {
	int64_t mailbox_id;
	uint32_t uid;
	char blob_id[33];
	uint64_t size;         /* bytes */
	int64_t internaldate;  /* seconds since the epoch */
	uint32_t flags;        /* enum store_flag */
	uint64_t modseq;
	const char *keywords;  /* space-separated; valid during the callback only */
};

/* Callbacks return 0 to go on, non-zero to stop (which the list call then returns). */
typedef int store_name_cb(const char *name, void *ctx);
typedef int store_account_cb(const struct store_account *account, void *ctx);
typedef int store_alias_cb(const char *source, const char *target, void *ctx);
typedef int store_mailbox_cb(const struct store_mailbox *mailbox, void *ctx);
typedef int store_message_cb(const struct store_message *message, void *ctx);
/* UIDs lo..hi (lo <= hi). */
typedef int store_uid_range_cb(uint32_t lo, uint32_t hi, void *ctx);

/* 1 = exists, 0 = does not, or a negative store_err. */
int store_domain_exists(struct store *store, const char *domain);
int store_domain_list(struct store *store, store_name_cb *cb, void *ctx);
/* 1 = found (filled in), 0 = no such account, or a negative store_err. */
int store_account_get(struct store *store, const char *address, struct store_account *r);
/* domain NULL lists all accounts. */
int store_account_list(struct store *store, const char *domain, store_account_cb *cb, void *ctx);
int store_alias_list(struct store *store, store_alias_cb *cb, void *ctx);
/* The targets of one alias source ("user@domain" or "@domain"), compared case-insensitively.
 * Returns the callback's stop value, 0, or a negative store_err. */
int store_alias_targets(struct store *store, const char *source, store_alias_cb *cb, void *ctx);
int store_mailbox_list(struct store *store, int64_t account_id, store_mailbox_cb *cb, void *ctx);
/* 1 = found, 0 = no such mailbox, or a negative store_err. */
int store_mailbox_get(struct store *store, int64_t account_id, const char *name,
                      struct store_mailbox *r);
int store_message_list(struct store *store, int64_t mailbox_id, store_message_cb *cb, void *ctx);
/* 1 = found, 0 = gone, or a negative store_err. */
int store_mailbox_get_id(struct store *store, int64_t mailbox_id, struct store_mailbox *r);
int store_mailbox_totals(struct store *store, int64_t mailbox_id, struct store_totals *r);
/* Messages with lo <= uid <= hi, by uid. */
int store_message_range(struct store *store, int64_t mailbox_id, uint32_t lo, uint32_t hi,
                        store_message_cb *cb, void *ctx);
/* The same for the messages with \Deleted only, read through an index of those: the cost
 * follows their number, not the mailbox's. */
int store_message_deleted(struct store *store, int64_t mailbox_id, uint32_t lo, uint32_t hi,
                          store_message_cb *cb, void *ctx);
/* What changed in a mailbox since MODSEQ `since`, from one consistent snapshot: *mb_r gets the
 * mailbox, expunged() the UIDs expunged after since, in ascending ranges (not called when
 * since is 0), changed() each message whose MODSEQ is above since (every message when since
 * is 0: new ones, and ones whose flags changed), by uid. Either callback may be NULL.
 * When since is below the mailbox's expunged_floor (that part of the history was let go),
 * expunged() gets a superset, as RFC 7162 3.2.5.2 allows: every UID below uidnext that no
 * message has. STORE_ERR_NOTFOUND when the mailbox is gone. */
int store_mailbox_changes(struct store *store, int64_t mailbox_id, uint64_t since,
                          store_message_cb *changed, store_uid_range_cb *expunged, void *ctx,
                          struct store_mailbox *mb_r);
/* Lets go of the expunge history recorded before `before` (seconds since the epoch), at most
 * limit rows, raising each affected mailbox's expunged_floor; *rows_r = rows removed. */
int store_txn_expunged_prune(struct store_txn *txn, int64_t before, uint32_t limit,
                             uint32_t *rows_r);
/* The cached MIME structure of a message file: 1 appended to out, 0 none cached. */
int store_blob_meta_get(struct store *store, const char *blob_id, struct buf *out);
/* The queue at a glance (`postamt queue stats`): one read snapshot, which scans the queue. */
struct store_queue_stats {
	uint64_t messages;                          /* queue entries */
	uint64_t rcpts[STORE_QUEUE_PRIORITIES][3];  /* [priority][0 queued, 1 deferred, 2 held] */
	int64_t oldest;                             /* seconds: the oldest entry's time; 0 none */
};
struct store_queue_domain {
	const char *domain;  /* valid during the callback */
	uint64_t rcpts;      /* recipients waiting for this domain */
	uint64_t deferred;   /* of these, tried and deferred */
	int64_t oldest;      /* seconds: when the oldest of them was queued */
};
typedef int store_queue_domain_cb(const struct store_queue_domain *d, void *ctx);
/* Fills r and calls cb (may be NULL) for the `top` domains with the most recipients. */
int store_queue_stats(struct store *store, unsigned int top, struct store_queue_stats *r,
                      store_queue_domain_cb *cb, void *ctx);
/* Number of queue entries (messages), for tests and stats. */
int store_queue_count(struct store *store, uint64_t *count_r);

/* Consistency check (fsck): every referenced blob exists with its recorded size, reference
 * counts match, UIDs are below UIDNEXT. Appends one line per problem to `report`; returns the
 * number of problems, or a negative store_err. Reads every row: for tools and tests only. */
int store_check(struct store *store, struct buf *report);

/* Runs one pass of background blob removal now (unreferenced blobs and orphans older than
 * blob_orphan_age). Returns the number of files removed. For tests and `postamt store gc`. */
int store_blob_gc(struct store *store);

/* Lets go of the expunge history older than expunge_history now (the sweeper does it at each
 * sweep). Returns the number of rows removed, or a negative store_err. */
int64_t store_expunged_prune(struct store *store);

#endif
