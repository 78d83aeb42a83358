/* Internals of the IMAP server shared by its files (imap_server.c: connection, parsing, login,
 * dispatch; imap_mailbox.c: mailbox commands; imap_message.c: message commands; imap_view.c:
 * the selected mailbox and its synchronisation). Not an API.
 *
 * Threads: a session belongs to its connection's I/O thread. A command that touches the store
 * runs on a worker (env.workers) while the session is busy: input is paused and the I/O thread
 * touches nothing of the session but `changed`, `notice_modseq` and `dead`; the worker writes
 * its responses into s->out, which the I/O thread sends when the worker is done. */
#ifndef IMAP_IMAP_SESSION_H
#define IMAP_IMAP_SESSION_H

#include "imap/imap_parser.h"
#include "imap/imap_server.h"
#include "store/store.h"

#include <stdatomic.h>

/* Responses a worker produces before the I/O thread sends them and the worker goes on: bounds
 * the memory of a FETCH of a whole mailbox. */
#define IMAP_OUT_CHUNK (256 * 1024)
/* Messages an APPEND command may carry (MULTIAPPEND). */
#define IMAP_MAX_APPEND 64

enum imap_state {
	IMAP_NOTAUTH,
	IMAP_AUTH,
	IMAP_SELECTED,
	IMAP_LOGOUT,
};

/* The selected mailbox as this session knows it: message sequence numbers are positions in
 * uids[] (RFC 3501 2.3.1.2), which changes only when the session is told (EXISTS, EXPUNGE). */
struct imap_view {
	int64_t mailbox_id;
	char name[256];
	bool readonly;          /* EXAMINE */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t modseq;        /* the highest MODSEQ this session has caught up with */
	uint32_t *uids;         /* ascending */
	uint32_t count, cap;
	/* MODSEQs of this session's own flag changes since the last sync: their FETCH responses
	 * were sent already. */
	uint64_t *own;
	size_t nown, own_cap;
	/* SEARCHRES (RFC 5182): the saved result, as UIDs. */
	uint32_t *saved;
	size_t nsaved;
	bool have_saved;
};

struct imap_append {
	struct store_blob *blob;
	bool done;              /* its literal was received in full */
};

struct imap_session {
	struct net_conn *conn;
	struct imap_parser *parser;
	struct imap_parser_limits limits;
	enum imap_state state;
	unsigned int bad;       /* count of refused commands */
	bool busy;              /* a worker or a login runs; input is paused */
	bool dead;              /* the connection went while busy: free when the work returns */
	/* The selected mailbox changed since the last sync (set by change notices on the I/O
	 * thread, taken by the sync on a worker): without it a command need not look. */
	atomic_bool changed;
	/* The highest MODSEQ the notices named since the mailbox was selected: a sync whose view
	 * has seen it has nothing to look for (the notice of the session's own change comes after
	 * the command that made it has shown it). */
	_Atomic uint64_t notice_modseq;
	/* Look whatever the notices said: just selected, or a change of the session's own that
	 * its command must show at once. */
	atomic_bool must_look;
	bool shutdown_pending;
	bool tls_starting;
	/* Extensions the client turned on (ENABLE, or implied by use). */
	bool condstore, qresync, utf8, rev2;
	/* login */
	struct auth_sasl *sasl;
	bool authenticating;    /* AUTHENTICATE continuation lines follow */
	char auth_tag[64];
	int64_t account_id;
	char user[256];
	/* IDLE */
	bool idling;
	char idle_tag[64];
	bool idle_sync_running;
	/* the command being run by the worker */
	const struct imap_command *cmd;
	int (*resume)(struct imap_session *s); /* a command that continues after a flush */
	void *resume_ctx;
	void (*resume_free)(void *ctx); /* frees resume_ctx when the command is abandoned */
	struct buf out;
	/* APPEND literals streamed to blobs as they arrive */
	struct imap_append appends[IMAP_MAX_APPEND];
	size_t nappends;
	bool append_failed;
	struct imap_view *view;
	struct imap_watch *watch; /* registration for change notices of the selected mailbox */
	int64_t watch_request;    /* set by a worker: the mailbox to watch (0 none), applied on
	                           * the I/O thread when watch_pending */
	bool watch_pending;
};

/* ---- output (any thread that owns the session) ---- */
ATTR_FORMAT(2, 3) void imap_out(struct imap_session *s, const char *fmt, ...);
/* Tagged completion of the current command. */
ATTR_FORMAT(3, 4) void imap_tagged(struct imap_session *s, const char *status, const char *fmt,
                                   ...);
/* An astring for a response: atom when possible, quoted or literal otherwise. */
void imap_out_astring(struct imap_session *s, const char *str);
/* Appends lo or lo:hi to a UID set being built in b ("1:3,7"); nothing when lo > hi. */
void imap_uidset_add(struct buf *b, uint32_t lo, uint32_t hi);
/* A tagged NO for a store error: temporary ones get [UNAVAILABLE] / [SERVERBUG]. */
void imap_tagged_store_error(struct imap_session *s, int err, const char *what);

/* ---- commands run on a worker: each writes its responses and its tagged completion ---- */
void imap_cmd_list(struct imap_session *s, bool lsub);
void imap_cmd_create(struct imap_session *s);
void imap_cmd_delete(struct imap_session *s);
void imap_cmd_rename(struct imap_session *s);
void imap_cmd_subscribe(struct imap_session *s, bool on);
void imap_cmd_status(struct imap_session *s);
void imap_cmd_select(struct imap_session *s, bool readonly);
void imap_cmd_fetch(struct imap_session *s);
void imap_cmd_store(struct imap_session *s);
void imap_cmd_copy(struct imap_session *s, bool move);
void imap_cmd_expunge(struct imap_session *s);
void imap_cmd_close(struct imap_session *s, bool expunge);
void imap_cmd_search(struct imap_session *s);
void imap_cmd_sort(struct imap_session *s, bool thread);
void imap_cmd_append(struct imap_session *s);
void imap_cmd_quota(struct imap_session *s);
/* Whether add more bytes fit in the account's quota: 1 yes, 0 no (the tagged NO [OVERQUOTA]
 * was sent), or a negative store_err (nothing sent). */
int imap_quota_room(struct imap_session *s, uint64_t add);
/* NOOP, CHECK, IDLE wake-ups and the end of most commands: tells the client what changed. */
void imap_cmd_noop(struct imap_session *s);

/* ---- the selected mailbox (imap_view.c) ---- */
struct imap_view *imap_view_new(int64_t mailbox_id, const char *name, bool readonly);
void imap_view_free(struct imap_view **v);
/* Sends what changed since the view's MODSEQ: EXPUNGE (or VANISHED with QRESYNC) when
 * expunges is true, FETCH FLAGS, EXISTS. Returns 0 or a store_err. */
int imap_view_sync(struct imap_session *s, bool expunges);
/* Whether a sync now could have anything to tell (the I/O thread may ask while the session is
 * not busy: then no worker touches the view). */
bool imap_view_has_news(struct imap_session *s);
/* A command of this session committed a change to mailbox_id: its next sync looks. */
void imap_view_written(struct imap_session *s, int64_t mailbox_id);
/* Sequence number of uid, or 0 when the view does not have it. */
uint32_t imap_view_seq(const struct imap_view *v, uint32_t uid);
/* Removes uid from the view; returns its former sequence number or 0. */
uint32_t imap_view_remove(struct imap_view *v, uint32_t uid);
void imap_view_own_modseq(struct imap_view *v, uint64_t modseq);
/* Resolves a sequence set (or UID set when uid) of the current view into a sorted array of
 * UIDs present in the view. "$" is the saved result. Returns 0, or -1 with *error_r for BAD. */
int imap_view_resolve(struct imap_session *s, const char *set, bool uid, uint32_t **uids_r,
                      size_t *n_r, const char **error_r);

/* ---- change notices ---- */
/* Watches the selected mailbox (or stops: mailbox_id 0). I/O thread. */
void imap_watch_set(struct imap_session *s, int64_t mailbox_id);
/* The same from a worker: applied when the command returns to the I/O thread. */
void imap_watch_request(struct imap_session *s, int64_t mailbox_id);

/* ---- environment ---- */
extern struct imap_server_env imap_env;
struct imap_limits {
	uint64_t idle_timeout;  /* ms, IDLE (RFC 9051 5.4: at least 30 minutes) */
	uint64_t timeout;       /* ms, between commands */
	unsigned int max_bad;
	uint64_t append_limit;  /* octets (APPENDLIMIT, RFC 7889) */
	uint64_t failure_delay; /* ms */
	bool plaintext_loopback;
	uint64_t default_quota; /* bytes, storage.quota; 0 = unlimited */
	uint64_t search_index_budget; /* bytes of files one command may index; 0 = none */
};
extern struct imap_limits imap_limits;

/* Message rows of the selected mailbox, read for a command. */
struct imap_row {
	uint32_t uid, seq;
	uint32_t flags;
	char *keywords;
	char blob_id[33];
	uint64_t size, modseq;
	int64_t internaldate;
};

struct imap_rows {
	struct imap_row *v;
	size_t n, cap;
	const uint32_t *want; /* sorted uids */
	size_t nwant;
	const struct imap_view *view;
};

/* The rows of the given sorted uids that still exist, by uid; free with imap_rows_free. */
int imap_rows_load(struct imap_session *s, const uint32_t *uids, size_t n,
                   struct imap_rows *r);
void imap_rows_free(struct imap_rows *r);
/* Resolves a set argument of the current command into sorted UIDs of the view; on failure the
 * tagged BAD is sent and false returned. */
bool imap_resolve_set(struct imap_session *s, const struct imap_arg *arg, uint32_t **uids,
                      size_t *n);
/* Writes a stored mailbox name for this session (UTF-8 after UTF8=ACCEPT or IMAP4rev2). */
void imap_out_mailbox(struct imap_session *s, const char *stored);
/* Reads a mailbox name argument into its stored form; on failure the tagged response is sent
 * and false returned. */
bool imap_arg_mailbox(struct imap_session *s, const struct imap_arg *arg, char out[256]);
/* Appends sorted uids as a compact set ("1:3,7"). */
void imap_out_uidset(struct buf *b, const uint32_t *uids, size_t n);
/* Flag names for responses; flags are enum store_flag. */
void imap_out_flags(struct imap_session *s, uint32_t flags, const char *keywords);
/* Parses a flag list into system flags and a keyword list; -1 on a bad flag. \Recent is
 * ignored. kw holds STORE_KEYWORDS_MAX bytes. */
int imap_parse_flags(const struct imap_arg *args, size_t n, uint32_t *flags_r, char *kw);

#endif
