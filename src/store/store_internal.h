/* Internals of the store module, shared by its files and by its unit tests; not part of the API
 * (that is store.h). Threads: the engine's write functions run on the write connection with
 * store->write_lock held (the writer thread, or an inline store_exec caller); its read functions
 * run on any non-I/O thread and take a pooled read connection themselves.
 *
 * Files: store.c (open/close, argument checks, dispatch), writer.c (jobs, queue, writer thread,
 * group commit), blob.c (message files and their durability steps), gc.c (removal of
 * unreferenced and orphaned files), store_sqlite.c + sqlite_schema.c (the SQLite engine). */
#ifndef STORE_STORE_INTERNAL_H
#define STORE_STORE_INTERNAL_H

#include "store/store.h"

#include <pthread.h>

/* A blob id: 8 hex digits of the creation hour (unix time / 3600, which is also the name of the
 * bucket folder), 8 of the microsecond within that hour, then 16 hex digits (64 bits) from
 * getrandom(). */
#define STORE__BLOB_ID_LEN 32
#define STORE__BUCKET_LEN 8
/* Jobs per batch when the options leave batch_max at 0. */
#define STORE__DEFAULT_BATCH 64
/* Unreferenced blobs removed per garbage-collection transaction: bounds how long the write lock
 * is held while files are unlinked. */
#define STORE__GC_LIMIT 256
/* How long a relaxed commit may wait before the writer puts it on disk, ms. */
#define STORE__RELAXED_MS 1000

struct tpool;
struct store__gc_req;

/* Called for each blob id an engine lists; non-zero stops the listing and is returned. */
typedef int store__id_cb(const char *id, void *ctx);
/* A referenced blob for store check: inline_len is the length of its bytes in the database,
 * or -1 when it is a file. Returns the number of problems found (reported into report). */
typedef int store__blob_check_cb(struct store *store, const char *id, uint64_t size,
                                 int64_t inline_len, struct buf *report);

/* An engine. Functions return STORE_OK or a negative store_err unless noted. The generic code
 * owns threads, blob files and the durability protocol; an engine only knows SQL. */
struct store_ops {
	const char *name;
	int (*queue_stats)(struct store *store, unsigned int top, struct store_queue_stats *r,
	                   store_queue_domain_cb *cb, void *ctx);
	/* Whether the next commits wait for the disk (the default) or not (relaxed jobs). */
	int (*set_durable)(struct store *store, bool durable);
	/* Puts everything committed so far on disk. Called with write_lock held. */
	int (*sync)(struct store *store);
	/* Opens the database, applies migrations, sets store->engine. */
	int (*open)(struct store *store, const char **error_r);
	void (*close)(struct store *store);
	/* Text of the last error on the write connection; valid until its next use. */
	const char *(*last_error)(struct store *store);

	/* Transactions on the write connection. rollback_to also releases the savepoint. */
	int (*begin)(struct store *store);
	int (*commit)(struct store *store);
	void (*rollback)(struct store *store);
	int (*savepoint)(struct store *store);
	int (*release)(struct store *store);
	int (*rollback_to)(struct store *store);
	/* False when the engine rolled the transaction back by itself (e.g. on SQLITE_FULL). */
	bool (*in_txn)(struct store *store);

	/* Blob rows, inside a write transaction. */
	/* data: the blob's bytes when it is kept in the database, else NULL (a file). */
	int (*blob_insert)(struct store_txn *txn, const char *id, uint64_t size,
	                   const uint8_t *data);
	/* A committed blob's bytes when they are kept in the database: 1 and *out filled, 0 when
	 * the blob is a file (or unknown), or an error. Any thread. */
	/* head: may stop after the header section (store_blob_read_head) */
	int (*blob_data)(struct store *store, const char *id, bool head, struct buf *out);
	/* store_read_pin/unpin for the calling thread; refresh ends the pinned snapshot (the
	 * thread is about to wait for a write). */
	void (*read_pin)(struct store *store);
	void (*read_refresh)(struct store *store);
	void (*read_unpin)(struct store *store);
	/* Lists up to `limit` blobs whose refs = 0. */
	int (*blob_unreferenced)(struct store *store, unsigned int limit, store__id_cb *cb,
	                         void *ctx);
	/* Deletes the row of an unreferenced blob (no-op when it gained a reference). */
	int (*blob_forget)(struct store *store, const char *id);
	/* Outside a transaction: 1 if some blob has refs = 0, 0 if none. */
	int (*blob_any_unreferenced)(struct store *store);
	/* Read connection: the ids in [lo, hi), in ascending order. */
	int (*blob_list_range)(struct store *store, const char *lo, const char *hi,
	                       store__id_cb *cb, void *ctx);

	/* Writes inside a job; arguments are checked and normalised by store.c. They report
	 * failures with store_txn_error(). */
	int (*domain_add)(struct store_txn *txn, const char *domain);
	int (*domain_remove)(struct store_txn *txn, const char *domain);
	int (*account_add)(struct store_txn *txn, const char *address, const char *domain,
	                   const char *pwhash, int64_t *id_r);
	int (*account_set_quota)(struct store_txn *txn, const char *address, int64_t quota);
	int (*account_set_password)(struct store_txn *txn, const char *address,
	                            const char *pwhash);
	int (*account_remove)(struct store_txn *txn, const char *address);
	int (*alias_add)(struct store_txn *txn, const char *source, const char *domain,
	                 const char *target);
	int (*alias_remove)(struct store_txn *txn, const char *source, const char *target);
	int (*deliver)(struct store_txn *txn, int64_t mailbox_id, const char *blob_id,
	               uint32_t flags, const char *keywords, int64_t internaldate, uint32_t *uid_r);
	int (*expunge)(struct store_txn *txn, int64_t mailbox_id, uint32_t uid);
	int (*expunged_prune)(struct store_txn *txn, int64_t before, uint32_t limit,
	                      uint32_t *rows_r);
	int (*queue_add)(struct store_txn *txn, const char *blob_id, const char *sender,
	                 const char *const *rcpts, const char *const *domains, size_t nrcpts,
	                 int priority, int64_t *id_r);
	int (*queue_remove)(struct store_txn *txn, int64_t queue_id);
	int (*queue_set_dsn)(struct store_txn *txn, int64_t queue_id, const char *envid,
	                     const char *ret, const char *const *notify, const char *const *orcpt,
	                     size_t nrcpts);

	int (*queue_rcpt_done)(struct store_txn *txn, int64_t rcpt_id);
	int (*queue_rcpt_defer)(struct store_txn *txn, int64_t rcpt_id, int64_t next_attempt,
	                        const char *error, bool delay_notified);
	int (*queue_hold)(struct store_txn *txn, int64_t queue_id, bool held);
	int (*queue_retry)(struct store_txn *txn, int64_t queue_id);
	int (*inbox_of)(struct store_txn *txn, const char *address, int64_t *mailbox_id_r);
	int (*queue_scan)(struct store *store, int64_t now, unsigned int limit,
	                  unsigned int max_examine, const int64_t *skip, size_t nskip,
	                  struct store_queue_cursor *cursor, store_queue_rcpt_cb *cb, void *ctx);
	int (*queue_find)(struct store *store, const struct store_queue_filter *filter,
	                  unsigned int limit, store_queue_rcpt_cb *cb, void *ctx);
	int (*queue_act)(struct store_txn *txn, struct store_queue_filter *filter,
	                 enum store_queue_action action, unsigned int limit,
	                 struct store_queue_act_result *result);
	/* Reads, same contracts as in store.h. */
	int (*domain_exists)(struct store *store, const char *domain);
	int (*domain_list)(struct store *store, store_name_cb *cb, void *ctx);
	int (*account_get)(struct store *store, const char *address, struct store_account *r);
	int (*account_list)(struct store *store, const char *domain, store_account_cb *cb,
	                    void *ctx);
	int (*alias_list)(struct store *store, store_alias_cb *cb, void *ctx);
	int (*alias_targets)(struct store *store, const char *source, store_alias_cb *cb,
	                     void *ctx);
	int (*mailbox_list)(struct store *store, int64_t account_id, store_mailbox_cb *cb,
	                    void *ctx);
	int (*mailbox_get)(struct store *store, int64_t account_id, const char *name,
	                   struct store_mailbox *r);
	int (*message_list)(struct store *store, int64_t mailbox_id, store_message_cb *cb,
	                    void *ctx);
	int (*queue_count)(struct store *store, uint64_t *count_r);
	/* Guard state (writes inside a job, reads on the pool). */
	int (*ban_set)(struct store_txn *txn, const struct store_ban *ban);
	int (*ban_remove)(struct store_txn *txn, const char *ip, const char *service);
	int (*stale_set)(struct store_txn *txn, const struct store_stale *stale);
	int (*meta_bump)(struct store_txn *txn, const char *key);
	int (*ban_list)(struct store *store, store_ban_cb *cb, void *ctx);
	int (*stale_list)(struct store *store, store_stale_cb *cb, void *ctx);
	/* The text meta value of key into out: 1 found, 0 absent, or a negative store_err. */
	int (*meta_get)(struct store *store, const char *key, char *out, size_t outsize);
	/* Mailboxes and messages for IMAP (see store.h). */
	int (*mailbox_create)(struct store_txn *txn, int64_t account_id, const char *name,
	                      const char *special_use, int64_t *id_r);
	int (*mailbox_delete)(struct store_txn *txn, int64_t mailbox_id);
	int (*mailbox_rename)(struct store_txn *txn, int64_t account_id, const char *from,
	                      const char *to);
	int (*mailbox_subscribe)(struct store_txn *txn, int64_t account_id, const char *name,
	                         bool on);
	/* Writes flags and keywords as given with the mailbox's next MODSEQ. */
	int (*set_flags)(struct store_txn *txn, int64_t mailbox_id, uint32_t uid, uint32_t flags,
	                 const char *keywords, uint64_t *modseq_r);
	/* One message on the write connection; its keywords are copied into kw. */
	int (*message_get_txn)(struct store_txn *txn, int64_t mailbox_id, uint32_t uid,
	                       struct store_message *m, char *kw, size_t kwsize);
	int (*copy_message)(struct store_txn *txn, int64_t from_mailbox, uint32_t uid,
	                    int64_t to_mailbox, uint32_t *uid_r);
	int (*mailbox_get_id)(struct store *store, int64_t mailbox_id, struct store_mailbox *r);
	int (*mailbox_totals)(struct store *store, int64_t mailbox_id, struct store_totals *r);
	/* deleted_only: the messages with \Deleted (store_message_deleted) */
	int (*message_range)(struct store *store, int64_t mailbox_id, uint32_t lo, uint32_t hi,
	                     bool deleted_only, store_message_cb *cb, void *ctx);
	int (*mailbox_changes)(struct store *store, int64_t mailbox_id, uint64_t since,
	                       store_message_cb *changed, store_uid_range_cb *expunged, void *ctx,
	                       struct store_mailbox *mb);
	int (*blob_meta_get)(struct store *store, const char *blob_id, struct buf *out);
	int (*blob_meta_set)(struct store_txn *txn, const char *blob_id, const void *data,
	                     size_t len);
	/* Full-text index (see store.h); terms are checked by store.c. */
	int (*fts_add)(struct store_txn *txn, int64_t account_id, const char *blob_id,
	               const void *header, size_t header_len, const void *body, size_t body_len);
	int (*fts_match)(struct store *store, int64_t account_id, int64_t mailbox_id,
	                 const struct store_fts_term *terms, size_t nterms, store_fts_cb *cb,
	                 void *ctx);
	/* Database checks; calls blob_cb for every referenced blob. Returns problems or < 0. */
	int (*check)(struct store *store, struct buf *report, store__blob_check_cb *blob_cb);
};

extern const struct store_ops store__sqlite_ops;

/* Records that the running job changed mailbox_id; once the job's transaction commits, the
 * change hook hears of it. */
void store__txn_touch(struct store_txn *txn, int64_t mailbox_id, uint64_t modseq);

/* Counters for tests and stats; read with store__stats(). */
struct store__stats {
	uint64_t jobs;          /* jobs that reached the writer (or ran inline), count */
	uint64_t jobs_failed;   /* of these, failed or rolled back, count */
	uint64_t batches;       /* batches run (each one BEGIN..COMMIT attempt), count */
	uint64_t commits;       /* successful job-batch commits, count */
	uint64_t blobs_synced;  /* blob files fsynced, count */
	uint64_t dirs_synced;   /* folder fsyncs, count */
	uint64_t gc_removed;    /* files removed by garbage collection, count */
	uint64_t relaxed_commits; /* batches committed without waiting for the disk, count */
	uint64_t relaxed_syncs;   /* writer syncs that put relaxed commits on disk, count */
};

enum store__blob_state {
	STORE__BLOB_TMP,       /* in BLOB_DIR/tmp, being written */
	STORE__BLOB_PLACED,    /* renamed into its bucket, transaction not committed yet */
	STORE__BLOB_COMMITTED, /* its row is committed: the file belongs to the database */
	STORE__BLOB_REMOVED,   /* its job failed and the file was unlinked */
};

struct store_blob {
	struct store *store;
	struct store_blob *live_prev, *live_next; /* store->live, under blobs_lock */
	char id[STORE__BLOB_ID_LEN + 1];
	int fd;              /* -1 once synced and closed, or while in memory */
	/* Small blobs stay in memory and are stored in the database with their commit (one
	 * flush for data and metadata); a blob that outgrows store->inline_max moves to a file. */
	bool in_memory;
	uint8_t *mem;
	size_t mem_len, mem_cap;
	uint64_t size;       /* bytes written */
	int err;             /* sticky: first write error (store_err) */
	int sync_err;        /* result of the fsync before rename (store_err) */
	enum store__blob_state state;
	bool in_job;         /* owned by a job: only the job frees it */
};

struct store_job {
	struct store_job *next; /* queue link */
	store_job_fn *run;
	store_done_fn *done;
	void *ctx;
	struct store_blob **blobs;
	size_t nblobs, blobs_cap;
	int result;     /* store_err */
	char *error;    /* message of a failure, or NULL */
	bool queued;    /* handed to store_submit */
	bool relaxed;   /* store_job_set_relaxed: may commit without waiting for the disk */
	struct store__touched {
		int64_t mailbox_id;
		uint64_t modseq; /* the highest this job gave it */
	} *touched; /* mailboxes this job changed (store__txn_touch), for the change hook */
	size_t ntouched, touched_cap;
};

struct store_txn {
	struct store *store;
	struct store_job *job;
	int64_t now; /* seconds since the epoch */
};

struct store {
	const struct store_ops *ops;
	void *engine;
	struct store_options opts; /* database and blob_dir point to the copies below */
	char *database;
	char *blob_dir;
	char *tmp_dir;

	/* The write connection: held by whoever runs a transaction. */
	pthread_mutex_t write_lock;

	/* Writer queue and shutdown, under `lock`. */
	pthread_mutex_t lock;
	pthread_cond_t wake;     /* for the writer: jobs, gc requests, shutdown */
	pthread_cond_t gc_done;  /* for store_blob_gc callers */
	pthread_cond_t sweep_wake; /* for the sweeper: shutdown */
	struct store_job *head, *tail;
	struct store__gc_req *gc_reqs;
	bool gc_check;   /* unreferenced blobs may exist: look after the next batch */
	bool gc_stuck;   /* the last look removed nothing: wait for the sweeper's next turn */
	bool closing;    /* no new jobs; the writer drains and stops */
	bool stopping;   /* the sweeper stops */
	bool have_writer, have_sweeper;
	pthread_t writer, sweeper;
	struct tpool *sync_pool;
	bool sync_filesystem; /* store_options.sync_filesystem */
	uint64_t inline_max;  /* store_options.inline_max */
	struct store__stats stats;
	/* A relaxed batch committed and has not reached the disk yet (since relaxed_since, ms of
	 * CLOCK_MONOTONIC). Under `lock`. */
	bool relaxed_pending;
	uint64_t relaxed_since;
	/* The relaxed lane (writer.c): its queue under `lock`, its thread. */
	struct store_job *rhead, *rtail;
	pthread_cond_t rwake;
	pthread_t relaxed_writer;
	bool have_relaxed_writer;
	/* The syncer (writer.c): durable batches the writer committed, waiting for the log's
	 * flush and their done callbacks, in commit order; under `lock`. */
	struct store__synced *shead, *stail;
	pthread_cond_t swake;
	pthread_t syncer;
	bool have_syncer, syncer_stop;
	store_change_fn *change_hook; /* set before any job runs */
	void *change_ctx;

	/* Blobs alive in this process (created, not yet freed): the orphan sweep never touches
	 * their files, whatever their age. */
	pthread_mutex_t blobs_lock;
	struct store_blob *live;
	size_t nlive;

	/* One orphan sweep at a time (sweeper thread or store_blob_gc), and what sweeps learnt:
	 * buckets found clean once their hour was over by more than blob_orphan_age. A bucket
	 * only receives blobs created in its hour, so no orphan can appear there any more and
	 * later sweeps skip it; the steady-state cost of a sweep follows the recent hours, not
	 * the number of messages. Sorted. Under sweep_lock. */
	pthread_mutex_t sweep_lock;
	char (*settled)[STORE__BUCKET_LEN + 1];
	size_t nsettled, settled_cap;
};

/* Fault injection for tests: when set, called at each of these points; a non-zero return is
 * an errno that makes the step fail as if the system call had. NULL outside tests; set it only
 * while no job is being run. */
enum store__fault_point {
	STORE__FAULT_WRITE,   /* store_blob_write */
	STORE__FAULT_SYNC,    /* fdatasync of a blob */
	STORE__FAULT_RENAME,  /* rename of a blob into its bucket */
	STORE__FAULT_DIRSYNC, /* fsync of a bucket folder */
	STORE__FAULT_COMMIT,  /* COMMIT of a batch (rolled back instead) */
};
extern int (*store__fault)(enum store__fault_point point);

static inline int
store__fault_at(enum store__fault_point point)
{
	return store__fault != NULL ? store__fault(point) : 0;
}

/* store.c */
void store__stats(struct store *store, struct store__stats *r);
bool store__valid_blob_id(const char *id);
/* True when blob_id is one of the blobs of the job running in txn. */
bool store__txn_owns_blob(const struct store_txn *txn, const char *blob_id);
/* Octets of the UTF-8 sequence at p[0..len) (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 when it is not one or is NUL. len > 0. */
size_t store__utf8_len(const uint8_t *p, size_t len);
/* Maps errno of a failed write/fsync to STORE_ERR_FULL or STORE_ERR_IO. */
int store__errno_err(int err);
/* Formats into a thread-local buffer valid until the next call on this thread. */
ATTR_FORMAT(1, 2) const char *store__tls_error(const char *fmt, ...);

/* writer.c */
/* Runs jobs as one batch on the calling thread: blob durability steps, one transaction, done
 * callbacks. Takes ownership of the jobs. */
void store__run_batch(struct store *store, struct store_job **jobs, size_t n);
int store__writer_start(struct store *store, const char **error_r);
/* Drains the queue and joins the writer (store_close). */
void store__writer_stop(struct store *store);
ATTR_FORMAT(3, 4) void store__job_fail(struct store_job *job, int err, const char *fmt, ...);

/* blob.c */
/* Writes the path of a blob's final file; -1 if it does not fit. */
ATTR_WUR int store__blob_final_path(const struct store *store, const char *id, char *dst,
                                    size_t size);
/* fdatasync + close. Sets blob->sync_err and returns it. */
int store__blob_sync(struct store_blob *blob);
/* A set of bucket folders touched by renames, to fsync once per batch. */
struct store__dirset {
	char (*names)[STORE__BUCKET_LEN + 1];
	size_t n, cap;
	bool parent; /* a bucket was created: BLOB_DIR itself needs an fsync */
};
void store__dirset_deinit(struct store__dirset *set);
/* Renames a synced blob into its bucket, creating the bucket if needed. */
int store__blob_place(struct store_blob *blob, struct store__dirset *dirs, const char **error_r);
/* fsyncs a folder (EINVAL, a file system that cannot, counts as done). */
int store__fsync_dir(const char *path, const char **error_r);
/* fsyncs every folder of the set; returns STORE_OK or the first error. */
/* syncfs(2) of the blob folder's filesystem (store_options.sync_filesystem). */
int store__syncfs(struct store *store, const char **error_r);
int store__dirset_sync(struct store *store, struct store__dirset *dirs, const char **error_r);
/* Unlinks the file of a blob whose job failed. */
void store__blob_discard(struct store_blob *blob);
/* Frees a blob owned by a job (the file stays if committed). */
void store__blob_destroy(struct store_blob *blob);
/* Sorted copy of the ids of the live blobs; caller frees. */
char (*store__live_snapshot(struct store *store, size_t *n_r))[STORE__BLOB_ID_LEN + 1];
/* Unlinks a committed blob's file: 1 removed, 0 was not there, -1 error (logged). */
int store__blob_unlink(struct store *store, const char *id);

/* gc.c */
/* One transaction removing up to limit unreferenced blobs (files, then rows). Caller holds
 * write_lock. Returns files removed or < 0; *rows_r = rows deleted. */
int store__gc_unreferenced(struct store *store, unsigned int limit, unsigned int *rows_r);
/* Loops the above until no unreferenced blob is left. */
int store__gc_unreferenced_all(struct store *store);
/* Removes orphaned files (tmp and buckets) older than blob_orphan_age. Returns files removed. */
int store__gc_orphans(struct store *store);
int store__sweeper_start(struct store *store, const char **error_r);
void store__sweeper_stop(struct store *store);
/* Writer side of store_blob_gc() requests. */
struct store__gc_req {
	struct store__gc_req *next;
	int removed; /* files removed, or < 0 */
	bool done;
};
void store__gc_serve_requests(struct store *store);

#endif
