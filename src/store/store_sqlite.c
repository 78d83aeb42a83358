/* The SQLite engine behind store.h (struct store_ops).
 *
 * One write connection (WAL, synchronous=FULL so a COMMIT is on disk before it returns,
 * foreign_keys=ON, 10 s busy timeout because the CLI and the server may write at once), used
 * only with store->write_lock held; a pool of read-only connections for the synchronous reads,
 * which WAL lets run while the writer writes. Every statement is a constant string prepared
 * once per connection; values are only ever bound with sqlite3_bind_*. Names arrive checked
 * and normalised from store.c; the columns compare them case-insensitively (COLLATE NOCASE). */
#include "store/store_internal.h"
#include "store/store_sqlite.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Waiting for another process's write lock: long enough for any sane transaction. */
#define SQLITE__BUSY_TIMEOUT_MS 10000
/* Pooled read connections; more are opened when all are busy and closed after use. */
/* Read connections kept open. Pinned reads (store_read_pin) hold one each for a command, so
 * there are enough for every IMAP worker and lookup thread at once. */
#define SQLITE__POOL_MAX 48

enum sqlite__st {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_BLOB_INSERT,
	ST_BLOB_GET,
	ST_BLOB_UNREFERENCED,
	ST_BLOB_ANY_UNREFERENCED,
	ST_BLOB_FORGET,
	ST_BLOB_RANGE,
	ST_BLOB_DATA_INSERT,
	ST_BLOB_DATA_GET,
	ST_BLOB_DATA_LOCATE,
	ST_DOMAIN_ID,
	ST_DOMAIN_INSERT,
	ST_DOMAIN_ACCOUNTS,
	ST_DOMAIN_ALIASES,
	ST_DOMAIN_DELETE,
	ST_DOMAIN_LIST,
	ST_ACCOUNT_INSERT,
	ST_ACCOUNT_SET_PASSWORD,
	ST_ACCOUNT_DELETE,
	ST_ACCOUNT_GET,
	ST_ACCOUNT_LIST,
	ST_ACCOUNT_LIST_DOMAIN,
	ST_ALIAS_INSERT,
	ST_ALIAS_DELETE,
	ST_ALIAS_DELETE_ALL,
	ST_ALIAS_LIST,
	ST_ALIAS_TARGETS,
	ST_MAILBOX_INSERT,
	ST_MAILBOX_NEXT,
	ST_MAILBOX_BUMP_UID,
	ST_MAILBOX_BUMP_MODSEQ,
	ST_MAILBOX_LIST,
	ST_MAILBOX_GET,
	ST_MESSAGE_INSERT,
	ST_MESSAGE_DELETE,
	ST_MESSAGE_LIST,
	ST_QUEUE_INSERT,
	ST_QUEUE_RCPT_INSERT,
	ST_QUEUE_DELETE,
	ST_QUEUE_COUNT,
	ST_QUEUE_DSN,
	ST_QUEUE_RCPT_DSN,
	ST_QUEUE_DUE,
	ST_QFIND_ALL,
	ST_QFIND_RCPT,
	ST_QFIND_SENDER,
	ST_QFIND_DOMAIN,
	ST_QFIND_HELD,
	ST_QFIND_DEFERRED,
	ST_QUEUE_MAX_ID,
	ST_QUEUE_SET_HELD,
	ST_QUEUE_RCPT_RETRY,
	ST_QUEUE_RCPT_DROP,
	ST_QUEUE_RCPTS_DROP,
	ST_QUEUE_RCPT_DELETE,
	ST_QUEUE_RCPT_LEFT,
	ST_QUEUE_RCPT_DEFER,
	ST_QUEUE_HOLD,
	ST_QUEUE_RETRY,
	ST_INBOX_OF,
	ST_BAN_SET,
	ST_BAN_REMOVE_ONE,
	ST_BAN_REMOVE_ALL,
	ST_BAN_LIST,
	ST_STALE_SET,
	ST_STALE_LIST,
	ST_META_BUMP,
	ST_META_GET,
	ST_MAILBOX_GET_ID,
	ST_MAILBOX_DELETE,
	ST_MAILBOX_DELETE_MESSAGES,
	ST_QSTATS_COUNT,
	ST_QSTATS_CLASSES,
	ST_QSTATS_DOMAINS,
	ST_ACCOUNT_SET_QUOTA,
	ST_MAILBOX_RENAME,
	ST_MAILBOX_SUBSCRIBE,
	ST_MAILBOX_NEXT_MODSEQ,
	ST_MAILBOX_TOTALS,
	ST_MESSAGE_GET,
	ST_MESSAGE_SET_FLAGS,
	ST_MESSAGE_CHANGES,
	ST_MESSAGE_RANGE,
	ST_MESSAGE_DELETED,
	ST_EXPUNGED_INSERT,
	ST_EXPUNGED_SINCE,
	ST_MESSAGE_UIDS,
	ST_EXPUNGED_PRUNE_BOUND,
	ST_EXPUNGED_PRUNE_FLOORS,
	ST_EXPUNGED_PRUNE_FLOOR_SET,
	ST_EXPUNGED_PRUNE,
	ST_BLOB_META_GET,
	ST_BLOB_META_SET,
	ST_FTS_DOC_INSERT,
	ST_FTS_TEXT_INSERT,
	ST_FTS_MERGE,
	ST_FTS_FORGET,
	ST_FTS_MATCH,
	ST_COUNT
};

#define SQLITE__ACCOUNT_COLS                                                                  \
	"a.id, a.domain_id, a.address, a.pwhash, a.created, a.disabled, a.quota, "  \
	"a.used"
#define SQLITE__MAILBOX_COLS                                                                  \
	"mb.id, mb.account_id, mb.name, mb.special_use, mb.uidvalidity, mb.uidnext, "          \
	"mb.highestmodseq, (SELECT count(*) FROM messages m WHERE m.mailbox_id = mb.id), "      \
	"mb.subscribed, mb.expunged_floor"
#define SQLITE__MESSAGE_COLS "mailbox_id, uid, blob_id, size, internaldate, flags, modseq, keywords"

#define SQLITE__QRCPT_COLS                                                                    \
	"r.id, r.queue_id, q.blob_id, q.sender, r.rcpt, r.domain, q.priority, r.state, q.held, "  \
	"r.attempts, q.created, r.next_attempt, q.size, q.envid, q.ret, r.notify, r.orcpt, "    \
	"r.last_error, r.delay_notified"

/* `queue list` and the actions by filter (store_queue_filter): one statement per driving index,
 * named with INDEXED BY so that no plan can fall back to a scan; the other terms are checked
 * on the rows it yields (a NULL or 0 parameter switches a term off). Rows come in (queue id,
 * recipient id) order straight from the index, so LIMIT stops the read early. ?1/?2 the
 * position (after, after_rcpt), ?3 until, ?4 sender, ?5 recipient, ?6 domain, ?7 held,
 * ?8 deferred, ?9 limit. */
#define SQLITE__QFIND(rindex, qindex, driver, order)                                         \
	"SELECT " SQLITE__QRCPT_COLS " FROM queue_rcpts r " rindex " JOIN queue q " qindex    \
	" ON q.id = r.queue_id WHERE " driver " AND r.queue_id >= ?1 AND r.queue_id <= ?3 "   \
	"AND (r.queue_id > ?1 OR r.id > ?2) "                                                 \
	"AND (?4 IS NULL OR q.sender = ?4 COLLATE NOCASE) "                                   \
	"AND (?5 IS NULL OR r.rcpt = ?5 COLLATE NOCASE) AND (?6 IS NULL OR r.domain = ?6) "   \
	"AND (?7 = 0 OR r.held = 1) AND (?8 = 0 OR r.state = 1) "                             \
	"ORDER BY " order " LIMIT ?9"

static const char *const sqlite__sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT job",
	[ST_RELEASE] = "RELEASE job",
	[ST_ROLLBACK_TO] = "ROLLBACK TO job",
	[ST_BLOB_INSERT] = "INSERT INTO blobs (id, size, refs, created) VALUES (?1, ?2, 0, ?3)",
	[ST_BLOB_GET] = "SELECT size, refs FROM blobs WHERE id = ?1",
	[ST_BLOB_UNREFERENCED] = "SELECT id FROM blobs WHERE refs = 0 LIMIT ?1",
	[ST_BLOB_ANY_UNREFERENCED] = "SELECT 1 FROM blobs WHERE refs = 0 LIMIT 1",
	[ST_BLOB_FORGET] = "DELETE FROM blobs WHERE id = ?1 AND refs = 0",
	[ST_BLOB_RANGE] = "SELECT id FROM blobs WHERE id >= ?1 AND id < ?2 ORDER BY id",
	[ST_BLOB_DATA_INSERT] = "INSERT INTO blob_data (id, data) VALUES (?1, ?2)",
	[ST_BLOB_DATA_GET] = "SELECT data FROM blob_data WHERE id = ?1",
	/* length() of a BLOB is read from the record header, without its overflow pages. */
	[ST_BLOB_DATA_LOCATE] = "SELECT rowid, length(data) FROM blob_data WHERE id = ?1",
	[ST_DOMAIN_ID] = "SELECT id FROM domains WHERE name = ?1",
	[ST_DOMAIN_INSERT] = "INSERT INTO domains (name, created) VALUES (?1, ?2)",
	[ST_DOMAIN_ACCOUNTS] = "SELECT count(*) FROM accounts WHERE domain_id = ?1",
	[ST_DOMAIN_ALIASES] = "SELECT count(*) FROM aliases WHERE domain_id = ?1",
	[ST_DOMAIN_DELETE] = "DELETE FROM domains WHERE id = ?1",
	[ST_DOMAIN_LIST] = "SELECT name FROM domains ORDER BY name",
	[ST_ACCOUNT_INSERT] = "INSERT INTO accounts (domain_id, address, pwhash, created, quota) "
	                      "VALUES (?1, ?2, ?3, ?4, -1)",
	[ST_ACCOUNT_SET_PASSWORD] = "UPDATE accounts SET pwhash = ?2 WHERE address = ?1",
	[ST_ACCOUNT_DELETE] = "DELETE FROM accounts WHERE address = ?1",
	[ST_ACCOUNT_GET] = "SELECT " SQLITE__ACCOUNT_COLS " FROM accounts a WHERE a.address = ?1",
	[ST_ACCOUNT_LIST] = "SELECT " SQLITE__ACCOUNT_COLS " FROM accounts a ORDER BY a.address",
	[ST_ACCOUNT_LIST_DOMAIN] = "SELECT " SQLITE__ACCOUNT_COLS " FROM accounts a "
	                           "JOIN domains d ON d.id = a.domain_id WHERE d.name = ?1 "
	                           "ORDER BY a.address",
	[ST_ALIAS_INSERT] = "INSERT INTO aliases (domain_id, source, target) VALUES (?1, ?2, ?3)",
	[ST_ALIAS_DELETE] = "DELETE FROM aliases WHERE source = ?1 AND target = ?2",
	[ST_ALIAS_DELETE_ALL] = "DELETE FROM aliases WHERE source = ?1",
	[ST_ALIAS_LIST] = "SELECT source, target FROM aliases ORDER BY source, target",
	[ST_ALIAS_TARGETS] = "SELECT source, target FROM aliases WHERE source = ?1 ORDER BY target",
	[ST_MAILBOX_INSERT] = "INSERT INTO mailboxes (account_id, name, special_use, subscribed, "
	                      "uidvalidity, uidnext, highestmodseq) "
	                      "VALUES (?1, ?2, ?3, 1, ?4, 1, 1)",
	[ST_MAILBOX_NEXT] = "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?1",
	[ST_MAILBOX_BUMP_UID] = "UPDATE mailboxes SET uidnext = uidnext + 1, "
	                        "highestmodseq = highestmodseq + 1 WHERE id = ?1",
	[ST_MAILBOX_BUMP_MODSEQ] = "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 "
	                           "WHERE id = ?1",
	[ST_MAILBOX_LIST] = "SELECT " SQLITE__MAILBOX_COLS " FROM mailboxes mb "
	                    "WHERE mb.account_id = ?1 ORDER BY mb.id",
	[ST_MAILBOX_GET] = "SELECT " SQLITE__MAILBOX_COLS " FROM mailboxes mb "
	                   "WHERE mb.account_id = ?1 AND mb.name = ?2",
	[ST_MESSAGE_INSERT] = "INSERT INTO messages (mailbox_id, uid, blob_id, size, internaldate, "
	                      "flags, keywords, modseq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?7)",
	[ST_MESSAGE_DELETE] = "DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2",
	[ST_MESSAGE_LIST] = "SELECT " SQLITE__MESSAGE_COLS " FROM messages WHERE mailbox_id = ?1 "
	                    "ORDER BY uid",
	[ST_QUEUE_INSERT] = "INSERT INTO queue (blob_id, sender, created, priority, held, size) "
	                    "VALUES (?1, ?2, ?3, ?4, 0, ?5)",
	[ST_QUEUE_RCPT_INSERT] = "INSERT INTO queue_rcpts (queue_id, rcpt, domain, state, "
	                         "attempts, next_attempt) VALUES (?1, ?2, ?3, 0, 0, ?4)",
	[ST_QUEUE_DELETE] = "DELETE FROM queue WHERE id = ?1",
	[ST_QUEUE_COUNT] = "SELECT count(*) FROM queue",
	[ST_QUEUE_DSN] = "UPDATE queue SET envid = ?2, ret = ?3 WHERE id = ?1",
	[ST_QUEUE_RCPT_DSN] = "UPDATE queue_rcpts SET notify = ?3, orcpt = ?4 WHERE id = "
	                      "(SELECT id FROM queue_rcpts WHERE queue_id = ?1 ORDER BY id "
	                      "LIMIT 1 OFFSET ?2)",
	[ST_QUEUE_DUE] = "SELECT " SQLITE__QRCPT_COLS " FROM queue_rcpts r "
	                  "JOIN queue q ON q.id = r.queue_id "
	                  "WHERE r.priority = ?1 AND r.state < 2 AND r.held = 0 "
	                  "AND r.next_attempt <= ?2 AND (r.next_attempt, r.id) > (?4, ?5) "
	                  "ORDER BY r.next_attempt, r.id LIMIT ?3",
	[ST_QFIND_ALL] = SQLITE__QFIND("INDEXED BY queue_rcpts_queue", "", "1",
	                               "r.queue_id, r.id"),
	[ST_QFIND_RCPT] = SQLITE__QFIND("INDEXED BY queue_rcpts_rcpt", "",
	                                "r.rcpt = ?5 COLLATE NOCASE", "r.queue_id, r.id"),
	/* Driven from the queue table: the entries of the sender by id, then their rows. */
	[ST_QFIND_SENDER] = SQLITE__QFIND("INDEXED BY queue_rcpts_queue", "INDEXED BY queue_sender",
	                                  "q.sender = ?4 COLLATE NOCASE AND q.id >= ?1 "
	                                  "AND q.id <= ?3", "q.id, r.id"),
	[ST_QFIND_DOMAIN] = SQLITE__QFIND("INDEXED BY queue_rcpts_domain", "", "r.domain = ?6",
	                                  "r.queue_id, r.id"),
	[ST_QFIND_HELD] = SQLITE__QFIND("INDEXED BY queue_rcpts_held", "", "r.held = 1",
	                                "r.queue_id, r.id"),
	[ST_QFIND_DEFERRED] = SQLITE__QFIND("INDEXED BY queue_rcpts_deferred", "", "r.state = 1",
	                                    "r.queue_id, r.id"),
	[ST_QUEUE_MAX_ID] = "SELECT coalesce(max(id), 0) FROM queue",
	[ST_QUEUE_SET_HELD] = "UPDATE queue SET held = ?2 WHERE id = ?1 AND held <> ?2",
	[ST_QUEUE_RCPT_RETRY] = "UPDATE queue_rcpts SET next_attempt = ?2 WHERE id = ?1",
	[ST_QUEUE_RCPT_DROP] = "DELETE FROM queue_rcpts WHERE id = ?1",
	[ST_QUEUE_RCPTS_DROP] = "DELETE FROM queue_rcpts WHERE queue_id = ?1",
	[ST_QUEUE_RCPT_DELETE] = "DELETE FROM queue_rcpts WHERE id = ?1 RETURNING queue_id",
	[ST_QUEUE_RCPT_LEFT] = "SELECT 1 FROM queue_rcpts WHERE queue_id = ?1 LIMIT 1",
	[ST_QUEUE_RCPT_DEFER] = "UPDATE queue_rcpts SET state = 1, attempts = attempts + 1, "
	                        "next_attempt = ?2, last_error = ?3, "
	                        "delay_notified = max(delay_notified, ?4) WHERE id = ?1",
	[ST_QUEUE_HOLD] = "UPDATE queue SET held = ?2 WHERE id = ?1",
	[ST_QUEUE_RETRY] = "UPDATE queue_rcpts SET next_attempt = ?2 WHERE queue_id = ?1",
	[ST_INBOX_OF] = "SELECT mb.id FROM mailboxes mb JOIN accounts a ON a.id = mb.account_id "
	                "WHERE a.address = ?1 AND mb.name = 'INBOX'",
	[ST_BAN_SET] = "INSERT OR REPLACE INTO guard_bans (ip, service, until, reason, failures, "
	               "created, strikes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_BAN_REMOVE_ONE] = "DELETE FROM guard_bans WHERE ip = ?1 AND service = ?2",
	[ST_BAN_REMOVE_ALL] = "DELETE FROM guard_bans WHERE ip = ?1",
	[ST_BAN_LIST] = "SELECT ip, service, until, created, failures, strikes, reason "
	                "FROM guard_bans ORDER BY until",
	[ST_STALE_SET] = "INSERT OR REPLACE INTO guard_stale (user, ip, service, attempts, since, last) "
	                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_STALE_LIST] = "SELECT user, ip, service, attempts, since, last FROM guard_stale "
	                  "ORDER BY last DESC",
	[ST_META_BUMP] = "INSERT INTO meta (key, value) VALUES (?1, '1') ON CONFLICT(key) DO "
	                 "UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
	[ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
	[ST_MAILBOX_GET_ID] = "SELECT " SQLITE__MAILBOX_COLS " FROM mailboxes mb WHERE mb.id = ?1",
	[ST_MAILBOX_DELETE] = "DELETE FROM mailboxes WHERE id = ?1",
	[ST_MAILBOX_DELETE_MESSAGES] = "DELETE FROM messages WHERE mailbox_id = ?1",
	[ST_QSTATS_COUNT] = "SELECT count(*), coalesce(min(created), 0) FROM queue",
	/* Both from indexes alone (no table rows): a million recipients in a fraction of a
	 * second. The oldest entry of a domain is its lowest queue id (ids grow with time). */
	[ST_QSTATS_CLASSES] = "SELECT priority, state, held, count(*) FROM queue_rcpts "
	                      "INDEXED BY queue_rcpts_class GROUP BY priority, state, held",
	[ST_QSTATS_DOMAINS] = "SELECT d, n, deferred, (SELECT created FROM queue WHERE id = oldest) "
	                      "FROM (SELECT domain AS d, count(*) AS n, sum(state = 1) AS deferred, "
	                      "min(queue_id) AS oldest FROM queue_rcpts "
	                      "INDEXED BY queue_rcpts_domain GROUP BY domain "
	                      "ORDER BY n DESC, d LIMIT ?1)",
	[ST_ACCOUNT_SET_QUOTA] = "UPDATE accounts SET quota = ?2 WHERE address = ?1",
	/* The mailbox and its children ("a/b" moves "a/b/c" too); names compare exactly. */
	[ST_MAILBOX_RENAME] = "UPDATE mailboxes SET name = ?3 || substr(name, length(?2) + 1) "
	                      "WHERE account_id = ?1 AND (name = ?2 OR "
	                      "substr(name, 1, length(?2) + 1) = ?2 || '/')",
	[ST_MAILBOX_SUBSCRIBE] = "UPDATE mailboxes SET subscribed = ?3 "
	                         "WHERE account_id = ?1 AND name = ?2",
	[ST_MAILBOX_NEXT_MODSEQ] = "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 "
	                           "WHERE id = ?1 RETURNING highestmodseq",
	[ST_MAILBOX_TOTALS] = "SELECT count(*), coalesce(sum((flags & 1) = 0), 0), "
	                      "coalesce(sum(size), 0), coalesce(sum((flags & 8) != 0), 0) "
	                      "FROM messages WHERE mailbox_id = ?1",
	[ST_MESSAGE_GET] = "SELECT " SQLITE__MESSAGE_COLS " FROM messages "
	                   "WHERE mailbox_id = ?1 AND uid = ?2",
	[ST_MESSAGE_SET_FLAGS] = "UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5 "
	                         "WHERE mailbox_id = ?1 AND uid = ?2",
	/* The modseq indexes by name: without statistics the planner prefers reading the whole
	 * mailbox in uid order to sorting the few rows of the index range, and a session's every
	 * look for changes would then cost as much as the mailbox and its history of expunges. */
	[ST_MESSAGE_CHANGES] = "SELECT " SQLITE__MESSAGE_COLS " FROM messages "
	                       "INDEXED BY messages_modseq "
	                       "WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid",
	[ST_MESSAGE_RANGE] = "SELECT " SQLITE__MESSAGE_COLS " FROM messages "
	                     "WHERE mailbox_id = ?1 AND uid >= ?2 AND uid <= ?3 ORDER BY uid",
	/* The condition is the partial index's (v10), word for word: 8 is STORE_FLAG_DELETED. */
	[ST_MESSAGE_DELETED] = "SELECT " SQLITE__MESSAGE_COLS " FROM messages "
	                       "INDEXED BY messages_deleted WHERE mailbox_id = ?1 "
	                       "AND uid >= ?2 AND uid <= ?3 AND (flags & 8) <> 0 ORDER BY uid",
	[ST_EXPUNGED_INSERT] = "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq, at) "
	                       "VALUES (?1, ?2, ?3, ?4)",
	[ST_MESSAGE_UIDS] = "SELECT uid FROM messages WHERE mailbox_id = ?1 ORDER BY uid",
	/* Pruning the expunge history (v12), oldest first, a bounded number of rows at a time:
	 * the time below which at most ?2 rows lie. */
	[ST_EXPUNGED_PRUNE_BOUND] = "SELECT at FROM expunged INDEXED BY expunged_at "
	                            "WHERE at < ?1 ORDER BY at LIMIT 1 OFFSET ?2",
	[ST_EXPUNGED_PRUNE_FLOORS] = "SELECT mailbox_id, max(modseq) FROM expunged "
	                             "INDEXED BY expunged_at WHERE at < ?1 GROUP BY mailbox_id",
	[ST_EXPUNGED_PRUNE_FLOOR_SET] = "UPDATE mailboxes SET expunged_floor = "
	                                "max(expunged_floor, ?2) WHERE id = ?1",
	[ST_EXPUNGED_PRUNE] = "DELETE FROM expunged WHERE at < ?1",
	[ST_EXPUNGED_SINCE] = "SELECT uid FROM expunged INDEXED BY expunged_modseq "
	                      "WHERE mailbox_id = ?1 AND modseq > ?2 "
	                      "ORDER BY uid",
	[ST_BLOB_META_GET] = "SELECT mime FROM blob_meta WHERE blob_id = ?1",
	/* Only for a blob that is still there: a row for a collected one would never go. */
	[ST_BLOB_META_SET] = "INSERT OR REPLACE INTO blob_meta (blob_id, mime) "
	                     "SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM blobs WHERE id = ?1)",
	/* Full-text index. A file that lost its references is not indexed: the collector may be
	 * about to remove it. */
	/* The next rowid of the account's stretch; none left after 2^32 documents. */
	[ST_FTS_DOC_INSERT] = "INSERT INTO fts_docs (id, account_id, blob_id) "
	                      "SELECT n, ?4, ?1 FROM (SELECT coalesce(max(id) + 1, ?2) AS n "
	                      "FROM fts_docs WHERE id BETWEEN ?2 AND ?3) WHERE n <= ?3 "
	                      "AND EXISTS (SELECT 1 FROM blobs WHERE id = ?1 AND refs > 0) "
	                      "AND NOT EXISTS (SELECT 1 FROM fts_docs "
	                      "WHERE account_id = ?4 AND blob_id = ?1)",
	[ST_FTS_TEXT_INSERT] = "INSERT INTO fts_text (rowid, header, body) VALUES (?1, ?2, ?3)",
	/* Up to 16 pages of merging where a level has two segments or more (automerge, v11): every
	 * search that indexes a file adds a segment, and FTS5's own merging, paid for by the size
	 * of what is written, falls behind with writes of one file; each lookup probes every
	 * segment. */
	[ST_FTS_MERGE] = "INSERT INTO fts_text (fts_text, rank) VALUES ('merge', 16)",
	/* Before ST_BLOB_FORGET, with the same condition; its cascade removes the fts_docs rows. */
	[ST_FTS_FORGET] = "DELETE FROM fts_text WHERE rowid IN (SELECT d.id FROM fts_docs d "
	                  "JOIN blobs b ON b.id = d.blob_id WHERE d.blob_id = ?1 AND b.refs = 0)",
	/* The MATCH runs once, over the account's rowids (a list subquery), then each message is
	 * one index lookup. */
	[ST_FTS_MATCH] = "SELECT m.uid, d.id IS NOT NULL, "
	                 "d.id IN (SELECT rowid FROM fts_text WHERE fts_text MATCH ?2 "
	                 "AND rowid BETWEEN ?3 AND ?4), m.blob_id, m.size "
	                 "FROM messages m LEFT JOIN fts_docs d "
	                 "ON d.account_id = ?5 AND d.blob_id = m.blob_id "
	                 "WHERE m.mailbox_id = ?1 ORDER BY m.uid",
};

_Static_assert(STORE_FLAG_DELETED == 8, "the messages_deleted index names the flag's bit");

struct sqlite__conn {
	sqlite3 *db;
	sqlite3_stmt *stmt[ST_COUNT];
	struct sqlite__conn *next_free;
	bool extra; /* opened beyond SQLITE__POOL_MAX: closed when released */
};

struct sqlite__engine {
	struct sqlite__conn writer;
	char *wal_path; /* the write-ahead log, synced by sqlite__sync after every durable batch */
	pthread_mutex_t pool_lock;
	struct sqlite__conn *free_conns;
	struct sqlite__conn *all[SQLITE__POOL_MAX];
	unsigned int nall;
};

static struct sqlite__engine *
sqlite__engine(struct store *store)
{
	return store->engine;
}

/* Maps a SQLite result code to a store_err. */
static int
sqlite__err(sqlite3 *db, int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
		return STORE_ERR_FULL;
	case SQLITE_IOERR:
		return store__errno_err(sqlite3_system_errno(db));
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
			return STORE_ERR_EXISTS;
		if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
			return STORE_ERR_NOTFOUND;
		return STORE_ERR_INVALID;
	default:
		return STORE_ERR_IO;
	}
}

/* ---- Connections ------------------------------------------------------------------------ */

static int
sqlite__exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void
sqlite__conn_close(struct sqlite__conn *c)
{
	for (int i = 0; i < ST_COUNT; i++) {
		if (c->stmt[i] != NULL)
			sqlite3_finalize(c->stmt[i]);
		c->stmt[i] = NULL;
	}
	if (c->db != NULL && sqlite3_close(c->db) != SQLITE_OK)
		log_error("event=store_close result=failed error=\"%s\"", sqlite3_errmsg(c->db));
	c->db = NULL;
}

static int
sqlite__conn_open(struct sqlite__conn *c, const char *path, bool readonly, const char **error_r)
{
	int flags = SQLITE_OPEN_NOMUTEX |
	            (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	int rc;

	memset(c, 0, sizeof(*c));
	/* NOMUTEX: a connection is used by one thread at a time (write_lock or the pool). */
	rc = sqlite3_open_v2(path, &c->db, flags, NULL);
	if (rc != SQLITE_OK) {
		*error_r = store__tls_error("cannot open %s: %s", path,
		                            c->db != NULL ? sqlite3_errmsg(c->db) :
		                                            sqlite3_errstr(rc));
		rc = c->db != NULL ? sqlite__err(c->db, rc) : STORE_ERR_IO;
		sqlite__conn_close(c);
		return rc;
	}
	sqlite3_extended_result_codes(c->db, 1);
	sqlite3_busy_timeout(c->db, SQLITE__BUSY_TIMEOUT_MS);
	/* Our schema has no functions in views or triggers that need trust. */
	(void)sqlite__exec(c->db, "PRAGMA trusted_schema = OFF");
	return STORE_OK;
}

static int
sqlite__pragma_text(sqlite3 *db, const char *sql, char *dst, size_t size)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(st, 0);

		(void)snprintf(dst, size, "%s", v != NULL ? v : "");
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		dst[0] = '\0';
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

static int
sqlite__open_writer(struct store *store, struct sqlite__conn *c, const char **error_r)
{
	char mode[16];
	int rc, ret;

	ret = sqlite__conn_open(c, store->database, false, error_r);
	if (ret != STORE_OK)
		return ret;
	/* WAL: readers never block the writer nor the other way round. FULL: in WAL mode the
	 * log is fsynced at every COMMIT, which is what lets done callbacks promise delivery. */
	rc = sqlite__pragma_text(c->db, "PRAGMA journal_mode = WAL", mode, sizeof(mode));
	if (rc == SQLITE_OK && strcmp(mode, "wal") != 0) {
		*error_r = store__tls_error("%s: cannot use WAL mode (journal mode is %s)",
		                            store->database, mode);
		return STORE_ERR_IO;
	}
	if (rc == SQLITE_OK)
		rc = sqlite__exec(c->db, "PRAGMA synchronous = FULL");
	if (rc == SQLITE_OK)
		rc = sqlite__exec(c->db, "PRAGMA foreign_keys = ON");
	if (rc != SQLITE_OK) {
		*error_r = store__tls_error("%s: %s", store->database, sqlite3_errmsg(c->db));
		return sqlite__err(c->db, rc);
	}
	return STORE_OK;
}

/* Process-wide settings, before SQLite initialises itself.
 * - Memory statistics off: with them every allocation of every connection takes one global
 *   mutex, which the IMAP workers, the readers and the writer fought over (about 3% of the
 *   server's time in futex calls alone).
 * - Statement journals (the undo of a savepoint or of a statement that fails halfway) stay in
 *   memory: with the default spill threshold of 64 KiB, a batch of a few deliveries, one
 *   savepoint each, went past it and created, wrote and deleted a temporary file in every
 *   commit. -1, not a larger threshold: SQLite allocates a journal's memory in chunks of the
 *   threshold's size, and a 4 MiB allocation for every statement that needs a journal made
 *   IMAP commands five times slower. A journal holds the original of each page a transaction
 *   changes, so it is bounded by the size of the transactions, which the store bounds (batch
 *   sizes, the collector's row limit). */
#define SQLITE__STMT_JOURNAL_SPILL (-1)

static void
sqlite__configure(void)
{
	/* SQLITE_MISUSE when something in the process initialised SQLite first: then it runs
	 * with its defaults, only slower. */
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	(void)sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, SQLITE__STMT_JOURNAL_SPILL);
	(void)sqlite3_initialize();
}

static int
sqlite__open(struct store *store, const char **error_r)
{
	static pthread_once_t configured = PTHREAD_ONCE_INIT;
	struct sqlite__engine *e;
	int ret;

	if (sqlite3_threadsafe() == 0) {
		*error_r = "the SQLite library was built without thread support";
		return STORE_ERR_INVALID;
	}
	(void)pthread_once(&configured, sqlite__configure);
	e = xcalloc(1, sizeof(*e));
	pthread_mutex_init(&e->pool_lock, NULL);
	ret = sqlite__open_writer(store, &e->writer, error_r);
	if (ret == STORE_OK)
		ret = store__sqlite_migrate(e->writer.db, error_r);
	if (ret != STORE_OK) {
		sqlite__conn_close(&e->writer);
		pthread_mutex_destroy(&e->pool_lock);
		free(e);
		return ret;
	}
	e->wal_path = xasprintf("%s-wal", store->database);
	store->engine = e;
	return STORE_OK;
}

static void
sqlite__close(struct store *store)
{
	struct sqlite__engine *e = sqlite__engine(store);

	/* Readers first: the last connection to close checkpoints the WAL into the database,
	 * which only the read-write one can do. */
	for (unsigned int i = 0; i < SQLITE__POOL_MAX; i++) {
		if (e->all[i] != NULL) {
			sqlite__conn_close(e->all[i]);
			free(e->all[i]);
		}
	}
	sqlite__conn_close(&e->writer);
	pthread_mutex_destroy(&e->pool_lock);
	free(e->wal_path);
	free(e);
	store->engine = NULL;
}

static struct sqlite__conn *
sqlite__reader_take(struct store *store)
{
	struct sqlite__engine *e = sqlite__engine(store);
	struct sqlite__conn *c;
	const char *error;
	bool pooled = false;

	pthread_mutex_lock(&e->pool_lock);
	c = e->free_conns;
	if (c != NULL) {
		e->free_conns = c->next_free;
		pthread_mutex_unlock(&e->pool_lock);
		return c;
	}
	if (e->nall < SQLITE__POOL_MAX) {
		pooled = true;
		e->nall++; /* reserve the slot; filled below */
	}
	pthread_mutex_unlock(&e->pool_lock);

	/* All busy: a callback of one read may start another, so never wait; open one more. */
	c = xmalloc(sizeof(*c));
	if (sqlite__conn_open(c, store->database, true, &error) != STORE_OK) {
		log_error("event=store_read result=failed error=\"%s\"", error);
		free(c);
		if (pooled) {
			pthread_mutex_lock(&e->pool_lock);
			e->nall--;
			pthread_mutex_unlock(&e->pool_lock);
		}
		return NULL;
	}
	c->extra = !pooled;
	if (pooled) {
		pthread_mutex_lock(&e->pool_lock);
		/* Slots are only ever appended, and nall was reserved: find the first empty. */
		for (unsigned int i = 0; i < SQLITE__POOL_MAX; i++) {
			if (e->all[i] == NULL) {
				e->all[i] = c;
				break;
			}
		}
		pthread_mutex_unlock(&e->pool_lock);
	}
	return c;
}

/* A thread's pinned reads (store_read_pin): one connection in one read transaction, shared by
 * the thread's reads until it unpins or submits a write. Every commit of another connection
 * empties a connection's page cache at the start of its next read transaction; a command that
 * makes ten reads in one transaction reads each page once instead of ten times. */
static _Thread_local struct sqlite__pin {
	struct store *store;    /* pinned for this store, or NULL */
	struct sqlite__conn *c; /* in a read transaction, or NULL until the first read */
} sqlite__pin;

static void sqlite__reader_release(struct store *store, struct sqlite__conn *c);

static struct sqlite__conn *
sqlite__reader_get(struct store *store)
{
	struct sqlite__conn *c;

	if (sqlite__pin.store != store)
		return sqlite__reader_take(store);
	c = sqlite__pin.c;
	if (c == NULL) {
		c = sqlite__reader_take(store);
		if (c == NULL)
			return NULL;
		sqlite__pin.c = c;
	}
	/* BEGIN again after an error ended the transaction. */
	if (sqlite3_get_autocommit(c->db) && sqlite__exec(c->db, "BEGIN") != SQLITE_OK) {
		sqlite__pin.c = NULL;
		sqlite__reader_release(store, c);
		return sqlite__reader_take(store);
	}
	return c;
}

static void
sqlite__reader_put(struct store *store, struct sqlite__conn *c)
{
	if (c == sqlite__pin.c)
		return; /* stays in the pinned transaction */
	sqlite__reader_release(store, c);
}

static void
sqlite__read_pin(struct store *store)
{
	ASSERT(sqlite__pin.store == NULL || sqlite__pin.store == store);
	sqlite__pin.store = store;
}

/* Ends the pinned transaction (the next read starts a new one): before the thread waits for a
 * write, which it must then see, and at unpin. */
static void
sqlite__read_refresh(struct store *store)
{
	struct sqlite__conn *c = sqlite__pin.c;

	if (sqlite__pin.store != store || c == NULL)
		return;
	sqlite__pin.c = NULL;
	if (!sqlite3_get_autocommit(c->db))
		(void)sqlite__exec(c->db, "COMMIT");
	sqlite__reader_release(store, c);
}

static void
sqlite__read_unpin(struct store *store)
{
	sqlite__read_refresh(store);
	if (sqlite__pin.store == store)
		sqlite__pin.store = NULL;
}

static void
sqlite__reader_release(struct store *store, struct sqlite__conn *c)
{
	struct sqlite__engine *e = sqlite__engine(store);

	if (c->extra) {
		sqlite__conn_close(c);
		free(c);
		return;
	}
	pthread_mutex_lock(&e->pool_lock);
	c->next_free = e->free_conns;
	e->free_conns = c;
	pthread_mutex_unlock(&e->pool_lock);
}

/* The prepared statement `id` of c, reset and unbound; NULL (logged) if it cannot be prepared. */
static sqlite3_stmt *
sqlite__stmt(struct sqlite__conn *c, enum sqlite__st id)
{
	if (c->stmt[id] == NULL) {
		int rc = sqlite3_prepare_v3(c->db, sqlite__sql[id], -1, SQLITE_PREPARE_PERSISTENT,
		                            &c->stmt[id], NULL);

		if (rc != SQLITE_OK) {
			log_error("event=store_prepare result=failed error=\"%s\"",
			          sqlite3_errmsg(c->db));
			c->stmt[id] = NULL;
			return NULL;
		}
	}
	return c->stmt[id];
}

/* Ends a statement's use: resetting it releases its read snapshot. */
static void
sqlite__done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

static void
sqlite__bind_text(sqlite3_stmt *st, int i, const char *s)
{
	/* STATIC: every string outlives the statement's use, which ends in sqlite__done(). */
	sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* Steps a statement that returns no rows and ends its use. Returns the SQLite code. */
static int
sqlite__run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite__done(st);
	return rc;
}

/* ---- Transactions ----------------------------------------------------------------------- */

static const char *
sqlite__last_error(struct store *store)
{
	return sqlite3_errmsg(sqlite__engine(store)->writer.db);
}

static int
sqlite__simple(struct store *store, enum sqlite__st id)
{
	struct sqlite__conn *c = &sqlite__engine(store)->writer;
	sqlite3_stmt *st = sqlite__stmt(c, id);
	int rc;

	if (st == NULL)
		return STORE_ERR_IO;
	rc = sqlite__run(st);
	return rc == SQLITE_DONE ? STORE_OK : sqlite__err(c->db, rc);
}

static int
sqlite__set_durable(struct store *store, bool durable)
{
	/* In WAL mode NORMAL commits without syncing the log; FULL syncs it, and with it every
	 * commit before. */
	int rc = sqlite__exec(sqlite__engine(store)->writer.db,
	                      durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");

	return rc == SQLITE_OK ? STORE_OK : sqlite__err(sqlite__engine(store)->writer.db, rc);
}

static int
sqlite__sync(struct store *store)
{
	/* The relaxed commits are in the write-ahead log, written but not synced: syncing the
	 * log file makes them durable, exactly as a FULL commit would have. */
	int fd = open(sqlite__engine(store)->wal_path, O_RDONLY | O_CLOEXEC);
	int ret = STORE_OK;

	if (fd < 0)
		return errno == ENOENT ? STORE_OK : store__errno_err(errno);
	if (fdatasync(fd) < 0)
		ret = store__errno_err(errno);
	close(fd);
	return ret;
}

static int
sqlite__begin(struct store *store)
{
	return sqlite__simple(store, ST_BEGIN);
}

static int
sqlite__commit(struct store *store)
{
	return sqlite__simple(store, ST_COMMIT);
}

static void
sqlite__rollback(struct store *store)
{
	if (!sqlite3_get_autocommit(sqlite__engine(store)->writer.db))
		(void)sqlite__simple(store, ST_ROLLBACK);
}

static int
sqlite__savepoint(struct store *store)
{
	return sqlite__simple(store, ST_SAVEPOINT);
}

static int
sqlite__release(struct store *store)
{
	return sqlite__simple(store, ST_RELEASE);
}

static int
sqlite__rollback_to(struct store *store)
{
	int ret = sqlite__simple(store, ST_ROLLBACK_TO);

	/* ROLLBACK TO keeps the savepoint open; RELEASE drops it (changes already undone). */
	return ret == STORE_OK ? sqlite__simple(store, ST_RELEASE) : ret;
}

static bool
sqlite__in_txn(struct store *store)
{
	return !sqlite3_get_autocommit(sqlite__engine(store)->writer.db);
}

/* Reports a failed statement of a job and maps its code. */
static int
sqlite__txn_fail(struct store_txn *txn, int rc, const char *what)
{
	sqlite3 *db = sqlite__engine(txn->store)->writer.db;

	store_txn_error(txn, "%s: %s", what, sqlite3_errmsg(db));
	return sqlite__err(db, rc);
}

static struct sqlite__conn *
sqlite__w(struct store_txn *txn)
{
	return &sqlite__engine(txn->store)->writer;
}

#define SQLITE__STMT(txn, st, id)                                                             \
	do {                                                                                  \
		(st) = sqlite__stmt(sqlite__w(txn), (id));                                     \
		if ((st) == NULL) {                                                           \
			store_txn_error((txn), "cannot prepare a statement");                 \
			return STORE_ERR_IO;                                                  \
		}                                                                             \
	} while (0)

/* ---- Blob rows -------------------------------------------------------------------------- */

static int
sqlite__blob_insert(struct store_txn *txn, const char *id, uint64_t size, const uint8_t *data)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_BLOB_INSERT);
	sqlite__bind_text(st, 1, id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)size);
	sqlite3_bind_int64(st, 3, txn->now);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot record message file");
	if (data == NULL)
		return STORE_OK;
	SQLITE__STMT(txn, st, ST_BLOB_DATA_INSERT);
	sqlite__bind_text(st, 1, id);
	/* Static: the blob's memory outlives the statement's step. */
	sqlite3_bind_blob64(st, 2, data, size, SQLITE_STATIC);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot store message");
	return STORE_OK;
}

/* A blob a job may reference: its own, or a committed one that still has references (a blob
 * at refs = 0 may already have lost its file to the collector). */
static int
sqlite__blob_usable(struct store_txn *txn, const char *blob_id, uint64_t *size_r)
{
	sqlite3_stmt *st;
	int64_t refs;
	int rc;

	SQLITE__STMT(txn, st, ST_BLOB_GET);
	sqlite__bind_text(st, 1, blob_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite__done(st);
		if (rc != SQLITE_DONE)
			return sqlite__txn_fail(txn, rc, "cannot look up message file");
		store_txn_error(txn, "no message file %s", blob_id);
		return STORE_ERR_NOTFOUND;
	}
	*size_r = (uint64_t)sqlite3_column_int64(st, 0);
	refs = sqlite3_column_int64(st, 1);
	sqlite__done(st);
	if (refs <= 0 && !store__txn_owns_blob(txn, blob_id)) {
		store_txn_error(txn, "message file %s is no longer referenced", blob_id);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__blob_unreferenced(struct store *store, unsigned int limit, store__id_cb *cb, void *ctx)
{
	struct sqlite__conn *c = &sqlite__engine(store)->writer;
	sqlite3_stmt *st = sqlite__stmt(c, ST_BLOB_UNREFERENCED);
	int rc, ret = STORE_OK;

	if (st == NULL)
		return STORE_ERR_IO;
	sqlite3_bind_int64(st, 1, limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);

		if (id != NULL && (ret = cb(id, ctx)) != 0)
			break;
	}
	if (ret == STORE_OK && rc != SQLITE_DONE)
		ret = sqlite__err(c->db, rc);
	sqlite__done(st);
	return ret;
}

static int
sqlite__blob_forget(struct store *store, const char *id)
{
	struct sqlite__conn *c = &sqlite__engine(store)->writer;
	sqlite3_stmt *st = sqlite__stmt(c, ST_FTS_FORGET);
	int rc;

	/* The file's full-text row first (a virtual table cannot be reached from a trigger). */
	if (st == NULL)
		return STORE_ERR_IO;
	sqlite__bind_text(st, 1, id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__err(c->db, rc);
	st = sqlite__stmt(c, ST_BLOB_FORGET);
	if (st == NULL)
		return STORE_ERR_IO;
	sqlite__bind_text(st, 1, id);
	rc = sqlite__run(st);
	return rc == SQLITE_DONE ? STORE_OK : sqlite__err(c->db, rc);
}

static int
sqlite__blob_any_unreferenced(struct store *store)
{
	struct sqlite__conn *c = &sqlite__engine(store)->writer;
	sqlite3_stmt *st = sqlite__stmt(c, ST_BLOB_ANY_UNREFERENCED);
	int rc;

	if (st == NULL)
		return STORE_ERR_IO;
	rc = sqlite3_step(st);
	sqlite__done(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : sqlite__err(c->db, rc);
}

static int
sqlite__blob_list_range(struct store *store, const char *lo, const char *hi, store__id_cb *cb,
                        void *ctx)
{
	struct sqlite__conn *c = sqlite__reader_get(store);
	sqlite3_stmt *st;
	int rc, ret = STORE_OK;

	if (c == NULL)
		return STORE_ERR_IO;
	st = sqlite__stmt(c, ST_BLOB_RANGE);
	if (st == NULL) {
		sqlite__reader_put(store, c);
		return STORE_ERR_IO;
	}
	sqlite__bind_text(st, 1, lo);
	sqlite__bind_text(st, 2, hi);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);

		if (id != NULL && (ret = cb(id, ctx)) != 0)
			break;
	}
	if (ret == STORE_OK && rc != SQLITE_DONE)
		ret = sqlite__err(c->db, rc);
	sqlite__done(st);
	sqlite__reader_put(store, c);
	return ret;
}

/* ---- Domains, accounts, aliases --------------------------------------------------------- */

/* Looks up a domain's id on the write connection: STORE_OK, NOTFOUND (reported) or an error. */
static int
sqlite__domain_id(struct store_txn *txn, const char *domain, int64_t *id_r)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_DOMAIN_ID);
	sqlite__bind_text(st, 1, domain);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*id_r = sqlite3_column_int64(st, 0);
	sqlite__done(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot look up domain");
	store_txn_error(txn, "domain %s does not exist", domain);
	return STORE_ERR_NOTFOUND;
}

static int
sqlite__count(struct store_txn *txn, enum sqlite__st id, int64_t arg, int64_t *count_r)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, id);
	sqlite3_bind_int64(st, 1, arg);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*count_r = sqlite3_column_int64(st, 0);
	sqlite__done(st);
	if (rc != SQLITE_ROW)
		return sqlite__txn_fail(txn, rc, "cannot count");
	return STORE_OK;
}

static int
sqlite__domain_add(struct store_txn *txn, const char *domain)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_DOMAIN_INSERT);
	sqlite__bind_text(st, 1, domain);
	sqlite3_bind_int64(st, 2, txn->now);
	rc = sqlite__run(st);
	if (rc == SQLITE_DONE)
		return STORE_OK;
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_txn_error(txn, "domain %s already exists", domain);
		return STORE_ERR_EXISTS;
	}
	return sqlite__txn_fail(txn, rc, "cannot add domain");
}

static int
sqlite__domain_remove(struct store_txn *txn, const char *domain)
{
	sqlite3_stmt *st;
	int64_t id = 0, n = 0;
	int ret, rc;

	ret = sqlite__domain_id(txn, domain, &id);
	if (ret != STORE_OK)
		return ret;
	ret = sqlite__count(txn, ST_DOMAIN_ACCOUNTS, id, &n);
	if (ret != STORE_OK)
		return ret;
	if (n > 0) {
		store_txn_error(txn, "domain %s still has %lld account%s; remove %s first", domain,
		                (long long)n, n == 1 ? "" : "s", n == 1 ? "it" : "them");
		return STORE_ERR_INVALID;
	}
	ret = sqlite__count(txn, ST_DOMAIN_ALIASES, id, &n);
	if (ret != STORE_OK)
		return ret;
	if (n > 0) {
		store_txn_error(txn, "domain %s still has %lld alias%s; remove %s first", domain,
		                (long long)n, n == 1 ? "" : "es", n == 1 ? "it" : "them");
		return STORE_ERR_INVALID;
	}
	SQLITE__STMT(txn, st, ST_DOMAIN_DELETE);
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot remove domain");
	return STORE_OK;
}

/* The default mailboxes of a new account, with their RFC 6154 special-use attributes. */
static const struct {
	const char *name, *special_use;
} sqlite__default_mailboxes[] = {
	{"INBOX", ""},         {"Drafts", "\\Drafts"}, {"Sent", "\\Sent"},
	{"Junk", "\\Junk"},    {"Trash", "\\Trash"},   {"Archive", "\\Archive"},
};

static int
sqlite__account_add(struct store_txn *txn, const char *address, const char *domain,
                    const char *pwhash, int64_t *id_r)
{
	sqlite3 *db = sqlite__w(txn)->db;
	sqlite3_stmt *st;
	int64_t domain_id = 0, id;
	uint32_t uidvalidity;
	int ret, rc;

	ret = sqlite__domain_id(txn, domain, &domain_id);
	if (ret != STORE_OK)
		return ret;
	SQLITE__STMT(txn, st, ST_ACCOUNT_INSERT);
	sqlite3_bind_int64(st, 1, domain_id);
	sqlite__bind_text(st, 2, address);
	sqlite__bind_text(st, 3, pwhash);
	sqlite3_bind_int64(st, 4, txn->now);
	rc = sqlite__run(st);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_txn_error(txn, "account %s already exists", address);
		return STORE_ERR_EXISTS;
	}
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot add account");
	id = sqlite3_last_insert_rowid(db);

	/* RFC 3501 2.3.1.1: UIDVALIDITY from the clock, so a mailbox recreated later under the
	 * same name gets a new one; never 0. */
	uidvalidity = (uint32_t)txn->now;
	if (uidvalidity == 0)
		uidvalidity = 1;
	SQLITE__STMT(txn, st, ST_MAILBOX_INSERT);
	for (size_t i = 0; i < N_ELEMENTS(sqlite__default_mailboxes); i++) {
		sqlite3_bind_int64(st, 1, id);
		sqlite__bind_text(st, 2, sqlite__default_mailboxes[i].name);
		sqlite__bind_text(st, 3, sqlite__default_mailboxes[i].special_use);
		sqlite3_bind_int64(st, 4, uidvalidity);
		rc = sqlite__run(st);
		if (rc != SQLITE_DONE)
			return sqlite__txn_fail(txn, rc, "cannot create mailbox");
	}
	*id_r = id;
	return STORE_OK;
}

static int
sqlite__account_set_password(struct store_txn *txn, const char *address, const char *pwhash)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_ACCOUNT_SET_PASSWORD);
	sqlite__bind_text(st, 1, address);
	sqlite__bind_text(st, 2, pwhash);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot change password");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "account %s does not exist", address);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__account_set_quota(struct store_txn *txn, const char *address, int64_t quota)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_ACCOUNT_SET_QUOTA);
	sqlite__bind_text(st, 1, address);
	sqlite3_bind_int64(st, 2, quota < 0 ? -1 : quota);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot set quota");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "account %s does not exist", address);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__account_remove(struct store_txn *txn, const char *address)
{
	sqlite3_stmt *st;
	int rc;

	/* Mailboxes and messages go by ON DELETE CASCADE; the triggers drop the references. */
	SQLITE__STMT(txn, st, ST_ACCOUNT_DELETE);
	sqlite__bind_text(st, 1, address);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot remove account");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "account %s does not exist", address);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__alias_add(struct store_txn *txn, const char *source, const char *domain,
                  const char *target)
{
	sqlite3_stmt *st;
	int64_t domain_id = 0;
	int ret, rc;

	ret = sqlite__domain_id(txn, domain, &domain_id);
	if (ret != STORE_OK)
		return ret;
	SQLITE__STMT(txn, st, ST_ALIAS_INSERT);
	sqlite3_bind_int64(st, 1, domain_id);
	sqlite__bind_text(st, 2, source);
	sqlite__bind_text(st, 3, target);
	rc = sqlite__run(st);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_txn_error(txn, "alias %s -> %s already exists", source, target);
		return STORE_ERR_EXISTS;
	}
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot add alias");
	return STORE_OK;
}

static int
sqlite__alias_remove(struct store_txn *txn, const char *source, const char *target)
{
	sqlite3_stmt *st;
	int rc;

	if (target != NULL) {
		SQLITE__STMT(txn, st, ST_ALIAS_DELETE);
		sqlite__bind_text(st, 2, target);
	} else {
		SQLITE__STMT(txn, st, ST_ALIAS_DELETE_ALL);
	}
	sqlite__bind_text(st, 1, source);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot remove alias");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		if (target != NULL)
			store_txn_error(txn, "no alias %s -> %s", source, target);
		else
			store_txn_error(txn, "no alias %s", source);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

/* ---- Messages and queue ----------------------------------------------------------------- */

static int
sqlite__deliver(struct store_txn *txn, int64_t mailbox_id, const char *blob_id, uint32_t flags,
                const char *keywords, int64_t internaldate, uint32_t *uid_r)
{
	sqlite3_stmt *st;
	int64_t uidnext = 0, modseq = 0;
	uint64_t size = 0;
	int ret, rc;

	ret = sqlite__blob_usable(txn, blob_id, &size);
	if (ret != STORE_OK)
		return ret;
	SQLITE__STMT(txn, st, ST_MAILBOX_NEXT);
	sqlite3_bind_int64(st, 1, mailbox_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		uidnext = sqlite3_column_int64(st, 0);
		modseq = sqlite3_column_int64(st, 1) + 1;
	}
	sqlite__done(st);
	if (rc == SQLITE_DONE) {
		store_txn_error(txn, "mailbox %lld does not exist", (long long)mailbox_id);
		return STORE_ERR_NOTFOUND;
	}
	if (rc != SQLITE_ROW)
		return sqlite__txn_fail(txn, rc, "cannot look up mailbox");
	/* UIDs are 32-bit nz-numbers (RFC 3501 9); the mailbox needs a new UIDVALIDITY. */
	if (uidnext < 1 || uidnext > (int64_t)UINT32_MAX) {
		store_txn_error(txn, "mailbox %lld has run out of UIDs", (long long)mailbox_id);
		return STORE_ERR_INVALID;
	}
	SQLITE__STMT(txn, st, ST_MAILBOX_BUMP_UID);
	sqlite3_bind_int64(st, 1, mailbox_id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot update mailbox");
	SQLITE__STMT(txn, st, ST_MESSAGE_INSERT);
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uidnext);
	sqlite__bind_text(st, 3, blob_id);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)size);
	sqlite3_bind_int64(st, 5, internaldate);
	sqlite3_bind_int64(st, 6, flags);
	sqlite3_bind_int64(st, 7, modseq);
	sqlite__bind_text(st, 8, keywords != NULL ? keywords : "");
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot add message");
	*uid_r = (uint32_t)uidnext;
	store__txn_touch(txn, mailbox_id, (uint64_t)modseq);
	return STORE_OK;
}

static const char *
sqlite__col_text(sqlite3_stmt *st, int i)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	return s != NULL ? s : "";
}

/* Copies a text column into a fixed field; STORE_ERR_IO if the row holds something longer
 * than any value we write (a truncated password hash must not be used). */
static int
sqlite__copy(char *dst, size_t size, sqlite3_stmt *st, int i)
{
	if (str_copy(dst, size, sqlite__col_text(st, i)) < 0) {
		log_warn("event=store_read result=failed error=\"value too long in column %s\"",
		         sqlite3_column_name(st, i));
		return STORE_ERR_IO;
	}
	return STORE_OK;
}

/* A read connection inside one read transaction: every query sees the same snapshot while the
 * writer goes on. End with sqlite__snapshot_end. */
static int
sqlite__snapshot_begin(struct store *store, struct sqlite__conn **c_r)
{
	struct sqlite__conn *c = sqlite__reader_get(store);
	int rc, ret;

	if (c == NULL)
		return STORE_ERR_IO;
	if (c == sqlite__pin.c) {
		*c_r = c; /* already one snapshot */
		return STORE_OK;
	}
	rc = sqlite__exec(c->db, "BEGIN");
	if (rc != SQLITE_OK) {
		ret = sqlite__err(c->db, rc);
		sqlite__reader_put(store, c);
		return ret;
	}
	*c_r = c;
	return STORE_OK;
}

static void
sqlite__snapshot_end(struct store *store, struct sqlite__conn *c)
{
	if (c == sqlite__pin.c)
		return;
	(void)sqlite__exec(c->db, "COMMIT");
	sqlite__reader_put(store, c);
}

/* Fills m from a row of SQLITE__MESSAGE_COLS; m->keywords points into the row. */
static int
sqlite__fill_message(sqlite3_stmt *st, struct store_message *m)
{
	memset(m, 0, sizeof(*m));
	m->mailbox_id = sqlite3_column_int64(st, 0);
	m->uid = (uint32_t)sqlite3_column_int64(st, 1);
	m->size = (uint64_t)sqlite3_column_int64(st, 3);
	m->internaldate = sqlite3_column_int64(st, 4);
	m->flags = (uint32_t)sqlite3_column_int64(st, 5);
	m->modseq = (uint64_t)sqlite3_column_int64(st, 6);
	m->keywords = sqlite__col_text(st, 7);
	return sqlite__copy(m->blob_id, sizeof(m->blob_id), st, 2);
}

/* Takes the mailbox's next MODSEQ (RFC 7162): every change gets its own. */
static int
sqlite__next_modseq(struct store_txn *txn, int64_t mailbox_id, uint64_t *modseq_r)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_MAILBOX_NEXT_MODSEQ);
	sqlite3_bind_int64(st, 1, mailbox_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*modseq_r = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite__done(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	if (rc == SQLITE_DONE) {
		store_txn_error(txn, "mailbox %lld does not exist", (long long)mailbox_id);
		return STORE_ERR_NOTFOUND;
	}
	return sqlite__txn_fail(txn, rc, "cannot update mailbox");
}

static int
sqlite__expunge(struct store_txn *txn, int64_t mailbox_id, uint32_t uid)
{
	sqlite3_stmt *st;
	uint64_t modseq = 0;
	int ret, rc;

	SQLITE__STMT(txn, st, ST_MESSAGE_DELETE);
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot expunge");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0)
		return STORE_ERR_NOTFOUND; /* quiet: the caller decides (store.h) */
	/* An expunge is a change CONDSTORE/QRESYNC clients must see (RFC 7162 3.2.10); other
	 * sessions learn from the expunged row which of their messages went. */
	ret = sqlite__next_modseq(txn, mailbox_id, &modseq);
	if (ret != STORE_OK)
		return ret;
	SQLITE__STMT(txn, st, ST_EXPUNGED_INSERT);
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)modseq);
	sqlite3_bind_int64(st, 4, txn->now);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot record expunge");
	store__txn_touch(txn, mailbox_id, modseq);
	return STORE_OK;
}

static int
sqlite__expunged_prune(struct store_txn *txn, int64_t before, uint32_t limit, uint32_t *rows_r)
{
	sqlite3_stmt *st, *up;
	int64_t bound = before;
	int rc;

	if (limit == 0)
		return STORE_OK;
	SQLITE__STMT(txn, st, ST_EXPUNGED_PRUNE_BOUND);
	sqlite3_bind_int64(st, 1, before);
	sqlite3_bind_int64(st, 2, limit);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		/* More than limit rows are old enough: those below the limit-th row's time. When
		 * that time is the oldest, the rows of that one second go together. */
		bound = sqlite3_column_int64(st, 0);
		sqlite__done(st);
		SQLITE__STMT(txn, st, ST_EXPUNGED_PRUNE_BOUND);
		sqlite3_bind_int64(st, 1, before);
		sqlite3_bind_int64(st, 2, 0);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) == bound)
			bound++;
	}
	sqlite__done(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot read the expunge history");
	/* The floors first: a session must never see a history that misses rows without knowing. */
	SQLITE__STMT(txn, up, ST_EXPUNGED_PRUNE_FLOOR_SET);
	SQLITE__STMT(txn, st, ST_EXPUNGED_PRUNE_FLOORS);
	sqlite3_bind_int64(st, 1, bound);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t mailbox_id = sqlite3_column_int64(st, 0), floor = sqlite3_column_int64(st, 1);

		sqlite3_bind_int64(up, 1, mailbox_id);
		sqlite3_bind_int64(up, 2, floor);
		if (sqlite__run(up) != SQLITE_DONE) {
			rc = sqlite3_errcode(sqlite__w(txn)->db);
			sqlite__done(st);
			return sqlite__txn_fail(txn, rc, "cannot raise the expunge floor");
		}
	}
	sqlite__done(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot read the expunge history");
	SQLITE__STMT(txn, st, ST_EXPUNGED_PRUNE);
	sqlite3_bind_int64(st, 1, bound);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot prune the expunge history");
	*rows_r = (uint32_t)sqlite3_changes(sqlite__w(txn)->db);
	return STORE_OK;
}

/* ---- Mailboxes and messages for IMAP ---------------------------------------------------- */

static int
sqlite__mailbox_create(struct store_txn *txn, int64_t account_id, const char *name,
                       const char *special_use, int64_t *id_r)
{
	sqlite3_stmt *st;
	uint32_t uidvalidity = (uint32_t)txn->now;
	int rc;

	SQLITE__STMT(txn, st, ST_MAILBOX_INSERT);
	sqlite3_bind_int64(st, 1, account_id);
	sqlite__bind_text(st, 2, name);
	sqlite__bind_text(st, 3, special_use != NULL ? special_use : "");
	sqlite3_bind_int64(st, 4, uidvalidity != 0 ? uidvalidity : 1);
	rc = sqlite__run(st);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_txn_error(txn, "mailbox %s already exists", name);
		return STORE_ERR_EXISTS;
	}
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
		store_txn_error(txn, "no such account");
		return STORE_ERR_NOTFOUND;
	}
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot create mailbox");
	*id_r = sqlite3_last_insert_rowid(sqlite__w(txn)->db);
	return STORE_OK;
}

static int
sqlite__mailbox_delete(struct store_txn *txn, int64_t mailbox_id)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_MAILBOX_DELETE_MESSAGES);
	sqlite3_bind_int64(st, 1, mailbox_id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot delete messages");
	SQLITE__STMT(txn, st, ST_MAILBOX_DELETE);
	sqlite3_bind_int64(st, 1, mailbox_id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot delete mailbox");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "mailbox %lld does not exist", (long long)mailbox_id);
		return STORE_ERR_NOTFOUND;
	}
	store__txn_touch(txn, mailbox_id, UINT64_MAX); /* gone: every session must look */
	return STORE_OK;
}

static int
sqlite__mailbox_rename(struct store_txn *txn, int64_t account_id, const char *from,
                       const char *to)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_MAILBOX_RENAME);
	sqlite3_bind_int64(st, 1, account_id);
	sqlite__bind_text(st, 2, from);
	sqlite__bind_text(st, 3, to);
	rc = sqlite__run(st);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_txn_error(txn, "mailbox %s already exists", to);
		return STORE_ERR_EXISTS;
	}
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot rename mailbox");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "mailbox %s does not exist", from);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__mailbox_subscribe(struct store_txn *txn, int64_t account_id, const char *name, bool on)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_MAILBOX_SUBSCRIBE);
	sqlite3_bind_int64(st, 1, account_id);
	sqlite__bind_text(st, 2, name);
	sqlite3_bind_int64(st, 3, on ? 1 : 0);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot subscribe");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "mailbox %s does not exist", name);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

/* Reads one message on the write connection; keywords are copied into kw (kwsize bytes). */
static int
sqlite__txn_message(struct store_txn *txn, int64_t mailbox_id, uint32_t uid,
                    struct store_message *m, char *kw, size_t kwsize)
{
	sqlite3_stmt *st;
	int rc, ret = STORE_OK;

	SQLITE__STMT(txn, st, ST_MESSAGE_GET);
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		ret = sqlite__fill_message(st, m);
		if (ret == STORE_OK && str_copy(kw, kwsize, m->keywords) < 0)
			ret = STORE_ERR_INVALID;
		m->keywords = kw;
	}
	sqlite__done(st);
	if (rc == SQLITE_DONE)
		return STORE_ERR_NOTFOUND; /* quiet: the caller decides (store.h) */
	if (rc != SQLITE_ROW)
		return sqlite__txn_fail(txn, rc, "cannot read message");
	if (ret != STORE_OK)
		store_txn_error(txn, "message %u has oversized keywords", uid);
	return ret;
}

static int
sqlite__message_get_txn(struct store_txn *txn, int64_t mailbox_id, uint32_t uid,
                        struct store_message *m, char *kw, size_t kwsize)
{
	return sqlite__txn_message(txn, mailbox_id, uid, m, kw, kwsize);
}

static int
sqlite__set_flags(struct store_txn *txn, int64_t mailbox_id, uint32_t uid, uint32_t flags,
                  const char *keywords, uint64_t *modseq_r)
{
	sqlite3_stmt *st;
	uint64_t modseq = 0;
	int ret, rc;

	ret = sqlite__next_modseq(txn, mailbox_id, &modseq);
	if (ret != STORE_OK)
		return ret;
	SQLITE__STMT(txn, st, ST_MESSAGE_SET_FLAGS);
	sqlite3_bind_int64(st, 1, mailbox_id);
	sqlite3_bind_int64(st, 2, uid);
	sqlite3_bind_int64(st, 3, flags);
	sqlite__bind_text(st, 4, keywords);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)modseq);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot store flags");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0)
		return STORE_ERR_NOTFOUND; /* quiet: the caller decides (store.h) */
	*modseq_r = modseq;
	store__txn_touch(txn, mailbox_id, modseq);
	return STORE_OK;
}

static int
sqlite__copy_message(struct store_txn *txn, int64_t from_mailbox, uint32_t uid,
                     int64_t to_mailbox, uint32_t *uid_r)
{
	struct store_message m;
	char kw[STORE_KEYWORDS_MAX];
	int ret;

	ret = sqlite__txn_message(txn, from_mailbox, uid, &m, kw, sizeof(kw));
	if (ret != STORE_OK)
		return ret;
	return sqlite__deliver(txn, to_mailbox, m.blob_id, m.flags, kw, m.internaldate, uid_r);
}

static int
sqlite__blob_meta_set(struct store_txn *txn, const char *blob_id, const void *data, size_t len)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_BLOB_META_SET);
	sqlite__bind_text(st, 1, blob_id);
	sqlite3_bind_blob(st, 2, data, (int)len, SQLITE_STATIC);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot store message structure");
	return STORE_OK;
}

static int
sqlite__queue_add(struct store_txn *txn, const char *blob_id, const char *sender,
                  const char *const *rcpts, const char *const *domains, size_t nrcpts,
                  int priority, int64_t *id_r)
{
	sqlite3_stmt *st;
	uint64_t size = 0;
	int64_t id;
	int ret, rc;

	ret = sqlite__blob_usable(txn, blob_id, &size);
	if (ret != STORE_OK)
		return ret;
	SQLITE__STMT(txn, st, ST_QUEUE_INSERT);
	sqlite__bind_text(st, 1, blob_id);
	sqlite__bind_text(st, 2, sender);
	sqlite3_bind_int64(st, 3, txn->now);
	sqlite3_bind_int(st, 4, priority);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)size);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot queue message");
	id = sqlite3_last_insert_rowid(sqlite__w(txn)->db);
	SQLITE__STMT(txn, st, ST_QUEUE_RCPT_INSERT);
	for (size_t i = 0; i < nrcpts; i++) {
		sqlite3_bind_int64(st, 1, id);
		sqlite__bind_text(st, 2, rcpts[i]);
		sqlite__bind_text(st, 3, domains[i]);
		sqlite3_bind_int64(st, 4, txn->now);
		rc = sqlite__run(st);
		if (rc != SQLITE_DONE)
			return sqlite__txn_fail(txn, rc, "cannot queue recipient");
	}
	*id_r = id;
	return STORE_OK;
}

static int
sqlite__queue_remove(struct store_txn *txn, int64_t queue_id)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_QUEUE_DELETE);
	sqlite3_bind_int64(st, 1, queue_id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot remove queue entry");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "no queue entry %lld", (long long)queue_id);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

/* ---- Reads ------------------------------------------------------------------------------ */

/* A read in progress: a pooled connection and one of its statements. */
struct sqlite__read {
	struct store *store;
	struct sqlite__conn *c;
	sqlite3_stmt *st;
};

static int
sqlite__read_begin(struct sqlite__read *r, struct store *store, enum sqlite__st id)
{
	r->store = store;
	r->st = NULL;
	r->c = sqlite__reader_get(store);
	if (r->c == NULL)
		return STORE_ERR_IO;
	r->st = sqlite__stmt(r->c, id);
	if (r->st == NULL) {
		sqlite__reader_put(store, r->c);
		return STORE_ERR_IO;
	}
	return STORE_OK;
}

/* Ends a read; maps rc (the last step's code) unless ret already says something. */
static int
sqlite__read_end(struct sqlite__read *r, int rc, int ret)
{
	if (ret == STORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		log_warn("event=store_read result=failed error=\"%s\"", sqlite3_errmsg(r->c->db));
		ret = sqlite__err(r->c->db, rc);
	}
	sqlite__done(r->st);
	sqlite__reader_put(r->store, r->c);
	return ret;
}

static int
sqlite__domain_exists(struct store *store, const char *domain)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_DOMAIN_ID);
	if (ret != STORE_OK)
		return ret;
	sqlite__bind_text(r.st, 1, domain);
	rc = sqlite3_step(r.st);
	return sqlite__read_end(&r, rc, rc == SQLITE_ROW ? 1 : 0);
}

static int
sqlite__domain_list(struct store *store, store_name_cb *cb, void *ctx)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_DOMAIN_LIST);
	if (ret != STORE_OK)
		return ret;
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		ret = cb(sqlite__col_text(r.st, 0), ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__fill_account(sqlite3_stmt *st, struct store_account *a)
{
	memset(a, 0, sizeof(*a));
	a->id = sqlite3_column_int64(st, 0);
	a->domain_id = sqlite3_column_int64(st, 1);
	a->created = sqlite3_column_int64(st, 4);
	a->disabled = sqlite3_column_int(st, 5) != 0;
	a->quota = sqlite3_column_int64(st, 6);
	a->used = (uint64_t)MAX(sqlite3_column_int64(st, 7), 0);
	if (sqlite__copy(a->address, sizeof(a->address), st, 2) < 0 ||
	    sqlite__copy(a->pwhash, sizeof(a->pwhash), st, 3) < 0)
		return STORE_ERR_IO;
	return STORE_OK;
}

static int
sqlite__account_get(struct store *store, const char *address, struct store_account *a)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_ACCOUNT_GET);
	if (ret != STORE_OK)
		return ret;
	sqlite__bind_text(r.st, 1, address);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW) {
		ret = sqlite__fill_account(r.st, a);
		if (ret == STORE_OK)
			ret = 1;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__account_list(struct store *store, const char *domain, store_account_cb *cb, void *ctx)
{
	struct store_account a;
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, domain != NULL ? ST_ACCOUNT_LIST_DOMAIN :
	                                                     ST_ACCOUNT_LIST);
	if (ret != STORE_OK)
		return ret;
	if (domain != NULL)
		sqlite__bind_text(r.st, 1, domain);
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		ret = sqlite__fill_account(r.st, &a);
		if (ret == STORE_OK)
			ret = cb(&a, ctx);
		explicit_bzero(a.pwhash, sizeof(a.pwhash));
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__alias_list(struct store *store, store_alias_cb *cb, void *ctx)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_ALIAS_LIST);
	if (ret != STORE_OK)
		return ret;
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		ret = cb(sqlite__col_text(r.st, 0), sqlite__col_text(r.st, 1), ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__alias_targets(struct store *store, const char *source, store_alias_cb *cb, void *ctx)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_ALIAS_TARGETS);
	if (ret != STORE_OK)
		return ret;
	sqlite__bind_text(r.st, 1, source);
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		ret = cb(sqlite__col_text(r.st, 0), sqlite__col_text(r.st, 1), ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__fill_mailbox(sqlite3_stmt *st, struct store_mailbox *m)
{
	memset(m, 0, sizeof(*m));
	m->id = sqlite3_column_int64(st, 0);
	m->account_id = sqlite3_column_int64(st, 1);
	m->uidvalidity = (uint32_t)sqlite3_column_int64(st, 4);
	m->uidnext = (uint32_t)MIN(sqlite3_column_int64(st, 5), (sqlite3_int64)UINT32_MAX);
	m->highestmodseq = (uint64_t)sqlite3_column_int64(st, 6);
	m->messages = (uint32_t)sqlite3_column_int64(st, 7);
	m->subscribed = sqlite3_column_int64(st, 8) != 0;
	m->expunged_floor = (uint64_t)sqlite3_column_int64(st, 9);
	if (sqlite__copy(m->name, sizeof(m->name), st, 2) < 0 ||
	    sqlite__copy(m->special_use, sizeof(m->special_use), st, 3) < 0)
		return STORE_ERR_IO;
	return STORE_OK;
}

static int
sqlite__mailbox_list(struct store *store, int64_t account_id, store_mailbox_cb *cb, void *ctx)
{
	struct store_mailbox m;
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_MAILBOX_LIST);
	if (ret != STORE_OK)
		return ret;
	sqlite3_bind_int64(r.st, 1, account_id);
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		ret = sqlite__fill_mailbox(r.st, &m);
		if (ret == STORE_OK)
			ret = cb(&m, ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__mailbox_get(struct store *store, int64_t account_id, const char *name,
                    struct store_mailbox *m)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_MAILBOX_GET);
	if (ret != STORE_OK)
		return ret;
	sqlite3_bind_int64(r.st, 1, account_id);
	sqlite__bind_text(r.st, 2, name);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW) {
		ret = sqlite__fill_mailbox(r.st, m);
		if (ret == STORE_OK)
			ret = 1;
	}
	return sqlite__read_end(&r, rc, ret);
}

/* Steps a statement of messages, calling cb for each row. */
static int
sqlite__each_message(sqlite3_stmt *st, store_message_cb *cb, void *ctx, int *rc_r)
{
	struct store_message m;
	int rc, ret = STORE_OK;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret = sqlite__fill_message(st, &m);
		if (ret == STORE_OK)
			ret = cb(&m, ctx);
		if (ret != 0)
			break;
	}
	*rc_r = rc;
	return ret;
}

static int
sqlite__message_list(struct store *store, int64_t mailbox_id, store_message_cb *cb, void *ctx)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_MESSAGE_LIST);
	if (ret != STORE_OK)
		return ret;
	sqlite3_bind_int64(r.st, 1, mailbox_id);
	ret = sqlite__each_message(r.st, cb, ctx, &rc);
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__mailbox_get_id(struct store *store, int64_t mailbox_id, struct store_mailbox *m)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_MAILBOX_GET_ID);
	if (ret != STORE_OK)
		return ret;
	sqlite3_bind_int64(r.st, 1, mailbox_id);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW) {
		ret = sqlite__fill_mailbox(r.st, m);
		if (ret == STORE_OK)
			ret = 1;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__mailbox_totals(struct store *store, int64_t mailbox_id, struct store_totals *t)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_MAILBOX_TOTALS);
	if (ret != STORE_OK)
		return ret;
	sqlite3_bind_int64(r.st, 1, mailbox_id);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW) {
		t->messages = (uint32_t)sqlite3_column_int64(r.st, 0);
		t->unseen = (uint32_t)sqlite3_column_int64(r.st, 1);
		t->size = (uint64_t)sqlite3_column_int64(r.st, 2);
		t->deleted = (uint32_t)sqlite3_column_int64(r.st, 3);
	}
	return sqlite__read_end(&r, rc, STORE_OK);
}

static int
sqlite__message_range(struct store *store, int64_t mailbox_id, uint32_t lo, uint32_t hi,
                      bool deleted_only, store_message_cb *cb, void *ctx)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, deleted_only ? ST_MESSAGE_DELETED : ST_MESSAGE_RANGE);
	if (ret != STORE_OK)
		return ret;
	sqlite3_bind_int64(r.st, 1, mailbox_id);
	sqlite3_bind_int64(r.st, 2, lo);
	sqlite3_bind_int64(r.st, 3, hi);
	ret = sqlite__each_message(r.st, cb, ctx, &rc);
	return sqlite__read_end(&r, rc, ret);
}

/* Calls cb for the expunged UIDs a statement yields: each one (gaps false), or the gaps between
 * the present UIDs it yields, up to uidnext (gaps true). */
static int
sqlite__each_expunged(sqlite3_stmt *st, bool gaps, uint32_t uidnext, store_uid_range_cb *cb,
                      void *ctx, int *rc_r)
{
	uint32_t next = 1; /* gaps: the lowest UID not yet accounted for */
	int ret = 0;

	while ((*rc_r = sqlite3_step(st)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);

		if (!gaps)
			ret = cb(uid, uid, ctx);
		else if (uid > next)
			ret = cb(next, uid - 1, ctx);
		if (ret != 0)
			return ret;
		if (gaps && uid >= next)
			next = uid + 1;
	}
	if (gaps && *rc_r == SQLITE_DONE && next < uidnext && next != 0)
		ret = cb(next, uidnext - 1, ctx);
	return ret;
}

/* The mailbox row, its expunges and its changed messages, all from one read snapshot, so a
 * session's view moves from one committed state to the next. */
static int
sqlite__mailbox_changes(struct store *store, int64_t mailbox_id, uint64_t since,
                        store_message_cb *changed, store_uid_range_cb *expunged, void *ctx,
                        struct store_mailbox *mb)
{
	struct sqlite__conn *c;
	sqlite3_stmt *st;
	int rc, ret = sqlite__snapshot_begin(store, &c);

	if (ret != STORE_OK)
		return ret;
	st = sqlite__stmt(c, ST_MAILBOX_GET_ID);
	if (st == NULL)
		goto fail;
	sqlite3_bind_int64(st, 1, mailbox_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = sqlite__fill_mailbox(st, mb);
	sqlite__done(st);
	if (rc == SQLITE_DONE)
		ret = STORE_ERR_NOTFOUND;
	else if (rc != SQLITE_ROW)
		ret = sqlite__err(c->db, rc);
	if (ret == STORE_OK && since > 0 && expunged != NULL) {
		bool gaps = since < mb->expunged_floor;

		/* The history since `since` is gone in part: every UID that is not there. */
		st = sqlite__stmt(c, gaps ? ST_MESSAGE_UIDS : ST_EXPUNGED_SINCE);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, mailbox_id);
		if (!gaps)
			sqlite3_bind_int64(st, 2, (sqlite3_int64)since);
		ret = sqlite__each_expunged(st, gaps, mb->uidnext, expunged, ctx, &rc);
		if (ret == STORE_OK && rc != SQLITE_DONE)
			ret = sqlite__err(c->db, rc);
		sqlite__done(st);
	}
	if (ret == STORE_OK && changed != NULL) {
		st = sqlite__stmt(c, since > 0 ? ST_MESSAGE_CHANGES : ST_MESSAGE_LIST);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, mailbox_id);
		if (since > 0)
			sqlite3_bind_int64(st, 2, (sqlite3_int64)since);
		ret = sqlite__each_message(st, changed, ctx, &rc);
		if (ret == STORE_OK && rc != SQLITE_DONE)
			ret = sqlite__err(c->db, rc);
		sqlite__done(st);
	}
	sqlite__snapshot_end(store, c);
	return ret;
fail:
	sqlite__snapshot_end(store, c);
	return STORE_ERR_IO;
}

static int
sqlite__blob_meta_get(struct store *store, const char *blob_id, struct buf *out)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_BLOB_META_GET);
	if (ret != STORE_OK)
		return ret;
	sqlite__bind_text(r.st, 1, blob_id);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW) {
		buf_append(out, sqlite3_column_blob(r.st, 0), (size_t)sqlite3_column_bytes(r.st, 0));
		ret = 1;
	}
	return sqlite__read_end(&r, rc, ret);
}

/* The start of a blob kept in the database, read through incremental blob I/O until the header
 * section is in: only the overflow pages it takes are read, not the whole message's. */
static int
sqlite__blob_data_head(struct sqlite__read *r, int64_t rowid, size_t len, struct buf *out)
{
	uint8_t chunk[16384];
	size_t start = out->len, off = 0, want = 4096;
	sqlite3_blob *b;
	int rc;

	rc = sqlite3_blob_open(r->c->db, "main", "blob_data", "data", rowid, 0, &b);
	if (rc != SQLITE_OK)
		return sqlite__err(r->c->db, rc);
	while (off < len) {
		size_t n = MIN(want, len - off);

		rc = sqlite3_blob_read(b, chunk, (int)n, (int)off);
		if (rc != SQLITE_OK) {
			(void)sqlite3_blob_close(b);
			return sqlite__err(r->c->db, rc);
		}
		if (buf_append(out, chunk, n) < 0) {
			(void)sqlite3_blob_close(b);
			return STORE_ERR_IO;
		}
		off += n;
		if (store_header_end(out->data + start, out->len - start) > 0)
			break;
		want = sizeof(chunk);
	}
	(void)sqlite3_blob_close(b);
	return 1;
}

static int
sqlite__blob_data(struct store *store, const char *blob_id, bool head, struct buf *out)
{
	struct sqlite__read r;
	int rc, ret;

	if (head) {
		ret = sqlite__read_begin(&r, store, ST_BLOB_DATA_LOCATE);
		if (ret != STORE_OK)
			return ret;
		sqlite__bind_text(r.st, 1, blob_id);
		rc = sqlite3_step(r.st);
		if (rc == SQLITE_ROW)
			ret = sqlite__blob_data_head(&r, sqlite3_column_int64(r.st, 0),
			                             (size_t)sqlite3_column_int64(r.st, 1), out);
		return sqlite__read_end(&r, rc, ret);
	}
	ret = sqlite__read_begin(&r, store, ST_BLOB_DATA_GET);
	if (ret != STORE_OK)
		return ret;
	sqlite__bind_text(r.st, 1, blob_id);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW) {
		const void *p = sqlite3_column_blob(r.st, 0);
		size_t n = (size_t)sqlite3_column_bytes(r.st, 0);

		ret = n == 0 || buf_append(out, p, n) == 0 ? 1 : STORE_ERR_IO;
	}
	return sqlite__read_end(&r, rc, ret);
}

/* Counts of the whole queue from one read snapshot; scans the queue (an operator's command). */
static int
sqlite__queue_stats(struct store *store, unsigned int top, struct store_queue_stats *r,
                    store_queue_domain_cb *cb, void *ctx)
{
	struct sqlite__conn *c;
	sqlite3_stmt *st;
	int rc, ret = sqlite__snapshot_begin(store, &c);

	if (ret != STORE_OK)
		return ret;
	st = sqlite__stmt(c, ST_QSTATS_COUNT);
	if (st == NULL)
		ret = STORE_ERR_IO;
	if (ret == STORE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			r->messages = (uint64_t)sqlite3_column_int64(st, 0);
			r->oldest = sqlite3_column_int64(st, 1);
		} else {
			ret = sqlite__err(c->db, rc);
		}
		sqlite__done(st);
	}
	st = ret == STORE_OK ? sqlite__stmt(c, ST_QSTATS_CLASSES) : NULL;
	if (ret == STORE_OK && st == NULL)
		ret = STORE_ERR_IO;
	if (ret == STORE_OK) {
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			int prio = sqlite3_column_int(st, 0), state = sqlite3_column_int(st, 1);
			int kind = sqlite3_column_int(st, 2) != 0 ? 2 : state == STORE_QUEUE_DEFERRED;

			if (prio >= 0 && prio < STORE_QUEUE_PRIORITIES)
				r->rcpts[prio][kind] += (uint64_t)sqlite3_column_int64(st, 3);
		}
		if (rc != SQLITE_DONE)
			ret = sqlite__err(c->db, rc);
		sqlite__done(st);
	}
	st = ret == STORE_OK && cb != NULL ? sqlite__stmt(c, ST_QSTATS_DOMAINS) : NULL;
	if (ret == STORE_OK && cb != NULL && st == NULL)
		ret = STORE_ERR_IO;
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, top);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			struct store_queue_domain d = {
				sqlite__col_text(st, 0), (uint64_t)sqlite3_column_int64(st, 1),
				(uint64_t)sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3)};

			ret = cb(&d, ctx);
			if (ret != 0)
				break;
		}
		if (ret == STORE_OK && rc != SQLITE_DONE)
			ret = sqlite__err(c->db, rc);
		sqlite__done(st);
	}
	sqlite__snapshot_end(store, c);
	return ret;
}

static int
sqlite__queue_count(struct store *store, uint64_t *count_r)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_QUEUE_COUNT);
	if (ret != STORE_OK)
		return ret;
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW)
		*count_r = (uint64_t)sqlite3_column_int64(r.st, 0);
	else if (rc == SQLITE_DONE)
		rc = SQLITE_ERROR; /* count(*) always returns a row */
	return sqlite__read_end(&r, rc, STORE_OK);
}

/* ---- Full-text index --------------------------------------------------------------------- */

/* The FTS5 trigram tokenizer stops at a NUL and reads octets that are not UTF-8 in its own way
 * (a lead octet swallows any continuation octets after it), which could hide a term that is
 * there octet for octet. So text is stored as valid UTF-8: each NUL or stray octet becomes
 * U+FFFD. A term (valid UTF-8 without NUL) found octet for octet in the original starts at a
 * character boundary and spans whole valid sequences, which are kept: it is still there. */
static const char *
sqlite__fts_clean(struct buf *tmp, const void *text, size_t len)
{
	const uint8_t *p = text;
	size_t i = 0;

	while (i < len) {
		size_t n = store__utf8_len(p + i, len - i);

		if (n == 0)
			break;
		i += n;
	}
	if (i == len)
		return text; /* the usual case: nothing to replace */
	buf_reset(tmp);
	(void)buf_append(tmp, p, i);
	while (i < len && !tmp->err) {
		size_t n = store__utf8_len(p + i, len - i);

		if (n == 0) {
			(void)buf_append(tmp, "\xEF\xBF\xBD", 3);
			i++;
		} else {
			(void)buf_append(tmp, p + i, n);
			i += n;
		}
	}
	return tmp->err ? NULL : (const char *)tmp->data;
}

/* The rowids of an account's documents (v9 schema). */
static int64_t
sqlite__fts_first(int64_t account_id)
{
	return account_id << 32;
}

static int64_t
sqlite__fts_last(int64_t account_id)
{
	return (account_id << 32) | INT64_C(0xffffffff);
}

static int
sqlite__fts_add(struct store_txn *txn, int64_t account_id, const char *blob_id,
                const void *header, size_t header_len, const void *body, size_t body_len)
{
	struct sqlite__conn *c = sqlite__w(txn);
	struct buf th, tb;
	const char *h, *b;
	sqlite3_stmt *st;
	int64_t id;
	int rc, ret = STORE_OK;

	SQLITE__STMT(txn, st, ST_FTS_DOC_INSERT);
	sqlite__bind_text(st, 1, blob_id);
	sqlite3_bind_int64(st, 2, sqlite__fts_first(account_id));
	sqlite3_bind_int64(st, 3, sqlite__fts_last(account_id));
	sqlite3_bind_int64(st, 4, account_id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot index message text");
	if (sqlite3_changes(c->db) == 0)
		return STORE_OK; /* indexed already, no longer referenced, or 2^32 documents */
	id = sqlite3_last_insert_rowid(c->db);
	SQLITE__STMT(txn, st, ST_FTS_TEXT_INSERT);
	/* Each U+FFFD takes 3 octets for 1: the cleaned text stays below SQLite's length limit,
	 * which refuses the insert (reported) otherwise. */
	buf_init(&th, 3 * (size_t)INT32_MAX);
	buf_init(&tb, 3 * (size_t)INT32_MAX);
	h = sqlite__fts_clean(&th, header, header_len);
	b = sqlite__fts_clean(&tb, body, body_len);
	if (h == NULL || b == NULL) {
		store_txn_error(txn, "cannot index message text: out of memory");
		ret = STORE_ERR_IO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text64(st, 2, h, h == header ? header_len : th.len, SQLITE_STATIC,
	                    SQLITE_UTF8);
	sqlite3_bind_text64(st, 3, b, b == body ? body_len : tb.len, SQLITE_STATIC, SQLITE_UTF8);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE) {
		ret = sqlite__txn_fail(txn, rc, "cannot index message text");
		goto out;
	}
	st = sqlite__stmt(c, ST_FTS_MERGE);
	if (st == NULL) {
		store_txn_error(txn, "cannot prepare a statement");
		ret = STORE_ERR_IO;
		goto out;
	}
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		ret = sqlite__txn_fail(txn, rc, "cannot merge the full-text index");
out:
	buf_deinit(&th);
	buf_deinit(&tb);
	return ret;
}

/* Trigrams of one term put in a query: each is one more posting list to read, and any subset
 * of a term's trigrams is still a condition every file holding the term meets. */
#define SQLITE__FTS_TRIGRAMS 8

/* Appends "tri" AND "tri" ... for a term (valid UTF-8, >= 3 characters, checked by store.c):
 * up to SQLITE__FTS_TRIGRAMS of its trigrams, spread over it, first and last included. Each is
 * an FTS5 string (double quotes, an embedded one doubled) of exactly three characters, which
 * the trigram tokenizer reads as one token. */
/* Octet offset of character k of a valid UTF-8 text (len for k = its character count). */
static size_t
sqlite__utf8_offset(const uint8_t *p, size_t len, size_t k)
{
	size_t i = 0;

	while (k-- > 0 && i < len)
		i += store__utf8_len(p + i, len - i);
	return i;
}

static void
sqlite__fts_trigrams(struct buf *q, const struct store_fts_term *t)
{
	const uint8_t *p = (const uint8_t *)t->text;
	size_t n = 0, picks;

	for (size_t i = 0; i < t->len; i += store__utf8_len(p + i, t->len - i))
		n++;
	picks = MIN(n - 2, (size_t)SQLITE__FTS_TRIGRAMS);
	for (size_t j = 0; j < picks; j++) {
		size_t k = picks == 1 ? 0 : j * (n - 3) / (picks - 1);
		size_t from = sqlite__utf8_offset(p, t->len, k);
		size_t to = from + sqlite__utf8_offset(p + from, t->len - from, 3);

		(void)buf_append_str(q, j == 0 ? "\"" : " AND \"");
		for (size_t b = from; b < to; b++) {
			if (p[b] == '"')
				(void)buf_append_byte(q, '"');
			(void)buf_append_byte(q, p[b]);
		}
		(void)buf_append_byte(q, '"');
	}
}

/* An FTS5 query from the terms: "(alt OR alt) AND (...)", each alternative a column filter
 * and the AND of the term's trigrams. The table keeps no token positions (detail=column), so
 * this asks for the trigrams anywhere in the column, not in a row: a superset of the files
 * holding the term, which is what a filter may answer. */
static void
sqlite__fts_query(struct buf *q, const struct store_fts_term *terms, size_t nterms)
{
	for (size_t i = 0; i < nterms; i++) {
		const struct store_fts_term *t = &terms[i];
		bool first = i == 0 || t->group != terms[i - 1].group;

		if (first)
			(void)buf_append_str(q, i == 0 ? "(" : ") AND (");
		else
			(void)buf_append_str(q, " OR ");
		if (t->where == STORE_FTS_HEADER)
			(void)buf_append_str(q, "header : (");
		else if (t->where == STORE_FTS_BODY)
			(void)buf_append_str(q, "body : (");
		else
			(void)buf_append_str(q, "{header body} : (");
		sqlite__fts_trigrams(q, t);
		(void)buf_append_byte(q, ')');
	}
	(void)buf_append_byte(q, ')');
}

static int
sqlite__fts_match(struct store *store, int64_t account_id, int64_t mailbox_id,
                  const struct store_fts_term *terms, size_t nterms, store_fts_cb *cb,
                  void *ctx)
{
	struct sqlite__read r;
	struct buf q;
	int rc, ret;

	/* Per term: its trigrams (12 octets each at most, 24 quoted) and operators. */
	buf_init(&q, STORE_FTS_MAX_TERMS * (SQLITE__FTS_TRIGRAMS * (24 + 8) + 64));
	sqlite__fts_query(&q, terms, nterms);
	if (q.err) {
		buf_deinit(&q);
		return STORE_ERR_INVALID;
	}
	ret = sqlite__read_begin(&r, store, ST_FTS_MATCH);
	if (ret != STORE_OK) {
		buf_deinit(&q);
		return ret;
	}
	sqlite3_bind_int64(r.st, 1, mailbox_id);
	sqlite3_bind_text(r.st, 2, (const char *)q.data, (int)q.len, SQLITE_STATIC);
	sqlite3_bind_int64(r.st, 3, sqlite__fts_first(account_id));
	sqlite3_bind_int64(r.st, 4, sqlite__fts_last(account_id));
	sqlite3_bind_int64(r.st, 5, account_id);
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		struct store_fts_row row = {
			.uid = (uint32_t)sqlite3_column_int64(r.st, 0),
			.state = STORE_FTS_PENDING,
			.blob_id = sqlite__col_text(r.st, 3),
			.size = (uint64_t)sqlite3_column_int64(r.st, 4),
		};

		if (sqlite3_column_int(r.st, 1) != 0)
			row.state = sqlite3_column_int(r.st, 2) != 0 ? STORE_FTS_MATCH
			                                             : STORE_FTS_NOMATCH;
		ret = cb(&row, ctx);
		if (ret != 0)
			break;
	}
	ret = sqlite__read_end(&r, rc, ret);
	buf_deinit(&q);
	return ret;
}

/* ---- Check ------------------------------------------------------------------------------ */

/* Each query returns one line of text per problem. */
static const char *const sqlite__checks[] = {
	"SELECT 'message ' || m.mailbox_id || '/' || m.uid || ': blob ' || m.blob_id || "
	"' has no row' FROM messages m WHERE NOT EXISTS (SELECT 1 FROM blobs b "
	"WHERE b.id = m.blob_id)",
	"SELECT 'queue entry ' || q.id || ': blob ' || q.blob_id || ' has no row' FROM queue q "
	"WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.id = q.blob_id)",
	"SELECT 'blob ' || id || ': refs is ' || refs || ', real count ' || n FROM (SELECT b.id, "
	"b.refs, (SELECT count(*) FROM messages m WHERE m.blob_id = b.id) + (SELECT count(*) "
	"FROM queue q WHERE q.blob_id = b.id) AS n FROM blobs b) WHERE refs <> n",
	"SELECT 'message ' || m.mailbox_id || '/' || m.uid || ': uid not below uidnext ' || "
	"mb.uidnext FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id "
	"WHERE m.uid >= mb.uidnext",
	"SELECT 'message ' || m.mailbox_id || '/' || m.uid || ': modseq ' || m.modseq || "
	"' above highestmodseq ' || mb.highestmodseq FROM messages m JOIN mailboxes mb "
	"ON mb.id = m.mailbox_id WHERE m.modseq > mb.highestmodseq",
	"SELECT 'message ' || m.mailbox_id || '/' || m.uid || ': size ' || m.size || "
	"' differs from blob size ' || b.size FROM messages m JOIN blobs b ON b.id = m.blob_id "
	"WHERE m.size <> b.size",
	"SELECT 'foreign key: ' || \"table\" || ' row ' || rowid || ' -> ' || parent "
	"FROM pragma_foreign_key_check",
	"SELECT 'database: ' || quick_check FROM pragma_quick_check WHERE quick_check <> 'ok'",
	"SELECT 'full-text row ' || rowid || ': no file' FROM fts_text "
	"WHERE rowid NOT IN (SELECT id FROM fts_docs)",
	"SELECT 'full-text entry of blob ' || blob_id || ': no text' FROM fts_docs "
	"WHERE id NOT IN (SELECT rowid FROM fts_text)",
};

static int
sqlite__check_query(sqlite3 *db, const char *sql, struct buf *report, int *problems)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK) {
		log_error("event=store_check result=failed error=\"%s\"", sqlite3_errmsg(db));
		return sqlite__err(db, rc);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		buf_printf(report, "%s\n", sqlite__col_text(st, 0));
		(*problems)++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		log_error("event=store_check result=failed error=\"%s\"", sqlite3_errmsg(db));
		return sqlite__err(db, rc);
	}
	return STORE_OK;
}

static int
sqlite__check(struct store *store, struct buf *report, store__blob_check_cb *blob_cb)
{
	struct sqlite__conn *c;
	sqlite3_stmt *st;
	int problems = 0, ret = sqlite__snapshot_begin(store, &c), rc;

	if (ret != STORE_OK)
		return ret;
	for (size_t i = 0; i < N_ELEMENTS(sqlite__checks) && ret == STORE_OK; i++)
		ret = sqlite__check_query(c->db, sqlite__checks[i], report, &problems);
	if (ret == STORE_OK) {
		rc = sqlite3_prepare_v2(c->db, "SELECT b.id, b.size, length(d.data) FROM blobs b "
		                        "LEFT JOIN blob_data d ON d.id = b.id WHERE b.refs > 0 "
		                        "ORDER BY b.id", -1, &st, NULL);
		if (rc == SQLITE_OK) {
			while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
				int64_t inline_len = sqlite3_column_type(st, 2) == SQLITE_NULL ?
				                             -1 : sqlite3_column_int64(st, 2);

				problems += blob_cb(store, sqlite__col_text(st, 0),
				                    (uint64_t)sqlite3_column_int64(st, 1), inline_len,
				                    report);
			}
			sqlite3_finalize(st);
		}
		if (rc != SQLITE_DONE && rc != SQLITE_OK)
			ret = sqlite__err(c->db, rc);
	}
	sqlite__snapshot_end(store, c);
	return ret == STORE_OK ? problems : ret;
}

static int
sqlite__queue_set_dsn(struct store_txn *txn, int64_t queue_id, const char *envid,
                      const char *ret, const char *const *notify, const char *const *orcpt,
                      size_t nrcpts)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_QUEUE_DSN);
	sqlite3_bind_int64(st, 1, queue_id);
	if (envid != NULL)
		sqlite__bind_text(st, 2, envid);
	if (ret != NULL)
		sqlite__bind_text(st, 3, ret);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot record DSN parameters");
	for (size_t i = 0; i < nrcpts; i++) {
		const char *n = notify != NULL ? notify[i] : NULL, *o = orcpt != NULL ? orcpt[i] : NULL;

		if (n == NULL && o == NULL)
			continue;
		SQLITE__STMT(txn, st, ST_QUEUE_RCPT_DSN);
		sqlite3_bind_int64(st, 1, queue_id);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
		if (n != NULL)
			sqlite__bind_text(st, 3, n);
		if (o != NULL)
			sqlite__bind_text(st, 4, o);
		rc = sqlite__run(st);
		if (rc != SQLITE_DONE)
			return sqlite__txn_fail(txn, rc, "cannot record DSN parameters");
	}
	return STORE_OK;
}

/* ---- Outbound queue --------------------------------------------------------------------- */

static int
sqlite__queue_rcpt_done(struct store_txn *txn, int64_t rcpt_id)
{
	sqlite3_stmt *st;
	int64_t queue_id;
	int rc;

	SQLITE__STMT(txn, st, ST_QUEUE_RCPT_DELETE);
	sqlite3_bind_int64(st, 1, rcpt_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite__done(st);
		if (rc == SQLITE_DONE) {
			store_txn_error(txn, "no queue recipient %lld", (long long)rcpt_id);
			return STORE_ERR_NOTFOUND;
		}
		return sqlite__txn_fail(txn, rc, "cannot remove queue recipient");
	}
	queue_id = sqlite3_column_int64(st, 0);
	rc = sqlite3_step(st);
	sqlite__done(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot remove queue recipient");
	SQLITE__STMT(txn, st, ST_QUEUE_RCPT_LEFT);
	sqlite3_bind_int64(st, 1, queue_id);
	rc = sqlite3_step(st);
	sqlite__done(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot look up queue recipients");
	/* The last recipient: the entry goes, and with it the blob's reference (trigger). */
	SQLITE__STMT(txn, st, ST_QUEUE_DELETE);
	sqlite3_bind_int64(st, 1, queue_id);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot remove queue entry");
	return STORE_OK;
}

static int
sqlite__queue_rcpt_defer(struct store_txn *txn, int64_t rcpt_id, int64_t next_attempt,
                         const char *error, bool delay_notified)
{
	char text[256];
	sqlite3_stmt *st;
	int rc;

	(void)snprintf(text, sizeof(text), "%s", error);
	SQLITE__STMT(txn, st, ST_QUEUE_RCPT_DEFER);
	sqlite3_bind_int64(st, 1, rcpt_id);
	sqlite3_bind_int64(st, 2, next_attempt);
	sqlite__bind_text(st, 3, text);
	sqlite3_bind_int(st, 4, delay_notified ? 1 : 0);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot defer queue recipient");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "no queue recipient %lld", (long long)rcpt_id);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__queue_update(struct store_txn *txn, enum sqlite__st id, int64_t queue_id, int64_t value)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, id);
	sqlite3_bind_int64(st, 1, queue_id);
	sqlite3_bind_int64(st, 2, value);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot update queue entry");
	if (sqlite3_changes(sqlite__w(txn)->db) == 0) {
		store_txn_error(txn, "no queue entry %lld", (long long)queue_id);
		return STORE_ERR_NOTFOUND;
	}
	return STORE_OK;
}

static int
sqlite__queue_hold(struct store_txn *txn, int64_t queue_id, bool held)
{
	return sqlite__queue_update(txn, ST_QUEUE_HOLD, queue_id, held ? 1 : 0);
}

static int
sqlite__queue_retry(struct store_txn *txn, int64_t queue_id)
{
	return sqlite__queue_update(txn, ST_QUEUE_RETRY, queue_id, txn->now);
}

static int
sqlite__inbox_of(struct store_txn *txn, const char *address, int64_t *mailbox_id_r)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_INBOX_OF);
	sqlite__bind_text(st, 1, address);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*mailbox_id_r = sqlite3_column_int64(st, 0);
	sqlite__done(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return sqlite__txn_fail(txn, rc, "cannot look up the INBOX");
}

/* Fills a recipient from a row of SQLITE__QRCPT_COLS. Text longer than a field is cut: these
 * are for display and for the envelope, whose lengths the SMTP server already bounded. */
static void
sqlite__qrcpt_row(sqlite3_stmt *st, struct store_queue_rcpt *r)
{
	memset(r, 0, sizeof(*r));
	r->id = sqlite3_column_int64(st, 0);
	r->queue_id = sqlite3_column_int64(st, 1);
	(void)!str_copy(r->blob_id, sizeof(r->blob_id), sqlite__col_text(st, 2));
	(void)!str_copy(r->sender, sizeof(r->sender), sqlite__col_text(st, 3));
	(void)!str_copy(r->rcpt, sizeof(r->rcpt), sqlite__col_text(st, 4));
	(void)!str_copy(r->domain, sizeof(r->domain), sqlite__col_text(st, 5));
	r->priority = sqlite3_column_int(st, 6);
	r->state = sqlite3_column_int(st, 7);
	r->held = sqlite3_column_int(st, 8) != 0;
	r->attempts = (uint32_t)sqlite3_column_int64(st, 9);
	r->created = sqlite3_column_int64(st, 10);
	r->next_attempt = sqlite3_column_int64(st, 11);
	r->size = (uint64_t)sqlite3_column_int64(st, 12);
	(void)!str_copy(r->envid, sizeof(r->envid), sqlite__col_text(st, 13));
	(void)!str_copy(r->ret, sizeof(r->ret), sqlite__col_text(st, 14));
	(void)!str_copy(r->notify, sizeof(r->notify), sqlite__col_text(st, 15));
	(void)!str_copy(r->orcpt, sizeof(r->orcpt), sqlite__col_text(st, 16));
	(void)!str_copy(r->last_error, sizeof(r->last_error), sqlite__col_text(st, 17));
	r->delay_notified = sqlite3_column_int(st, 18) != 0;
}

/* skip[0..nskip) is sorted. */
static bool
sqlite__skipped(int64_t id, const int64_t *skip, size_t nskip)
{
	size_t lo = 0, hi = nskip;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (skip[mid] == id)
			return true;
		if (skip[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

static int
sqlite__queue_scan(struct store *store, int64_t now, unsigned int limit,
                   unsigned int max_examine, const int64_t *skip, size_t nskip,
                   struct store_queue_cursor *cursor, store_queue_rcpt_cb *cb, void *ctx)
{
	struct store_queue_rcpt r;
	unsigned int found = 0, examined = 0;
	int ret = STORE_OK;
	int prio;

	for (prio = 0; prio < STORE_QUEUE_PRIORITIES && ret == 0; prio++) {
		struct sqlite__read rd;
		int rc = SQLITE_DONE;

		if (found >= limit || examined >= max_examine)
			break;
		ret = sqlite__read_begin(&rd, store, ST_QUEUE_DUE);
		if (ret != STORE_OK)
			return ret;
		/* Rows in delivery are passed over here, not in SQL: the LIMIT must cover them. */
		sqlite3_bind_int(rd.st, 1, prio);
		sqlite3_bind_int64(rd.st, 2, now);
		sqlite3_bind_int64(rd.st, 3, (sqlite3_int64)(max_examine - examined));
		sqlite3_bind_int64(rd.st, 4, cursor->next_attempt[prio]);
		sqlite3_bind_int64(rd.st, 5, cursor->id[prio]);
		while (found < limit && examined < max_examine &&
		       (rc = sqlite3_step(rd.st)) == SQLITE_ROW) {
			int64_t id = sqlite3_column_int64(rd.st, 0);

			examined++;
			cursor->next_attempt[prio] = sqlite3_column_int64(rd.st, 11);
			cursor->id[prio] = id;
			if (sqlite__skipped(id, skip, nskip))
				continue;
			sqlite__qrcpt_row(rd.st, &r);
			ret = cb(&r, ctx);
			if (ret == STORE_QUEUE_PASS) {
				ret = 0;
				continue;
			}
			if (ret != 0)
				break;
			found++;
		}
		if (found >= limit || examined >= max_examine)
			rc = SQLITE_DONE;
		ret = sqlite__read_end(&rd, rc, ret);
	}
	cursor->end = ret == 0 && prio >= STORE_QUEUE_PRIORITIES && found < limit &&
	              examined < max_examine;
	return ret;
}

/* The statement whose index drives a filter: the first term given of recipient, sender,
 * domain, held, deferred (roughly the most selective first; held entries are few in a
 * healthy queue, deferred ones may be most of it). */
static enum sqlite__st
sqlite__qfind_st(const struct store_queue_filter *f)
{
	if (f->rcpt != NULL)
		return ST_QFIND_RCPT;
	if (f->sender != NULL)
		return ST_QFIND_SENDER;
	if (f->domain != NULL)
		return ST_QFIND_DOMAIN;
	if (f->held)
		return ST_QFIND_HELD;
	if (f->deferred)
		return ST_QFIND_DEFERRED;
	return ST_QFIND_ALL;
}

const char *
store__sqlite_queue_find_sql(const struct store_queue_filter *filter)
{
	return sqlite__sql[sqlite__qfind_st(filter)];
}

static void
sqlite__qfind_bind(sqlite3_stmt *st, const struct store_queue_filter *f, unsigned int limit)
{
	sqlite3_bind_int64(st, 1, f->after);
	/* 0: past every recipient of entry `after` (row ids are positive). */
	sqlite3_bind_int64(st, 2, f->after_rcpt != 0 ? f->after_rcpt : INT64_MAX);
	sqlite3_bind_int64(st, 3, f->until != 0 ? f->until : INT64_MAX);
	if (f->sender != NULL)
		sqlite__bind_text(st, 4, f->sender);
	if (f->rcpt != NULL)
		sqlite__bind_text(st, 5, f->rcpt);
	if (f->domain != NULL)
		sqlite__bind_text(st, 6, f->domain);
	sqlite3_bind_int(st, 7, f->held ? 1 : 0);
	sqlite3_bind_int(st, 8, f->deferred ? 1 : 0);
	sqlite3_bind_int64(st, 9, limit);
}

static int
sqlite__queue_find(struct store *store, const struct store_queue_filter *filter,
                   unsigned int limit, store_queue_rcpt_cb *cb, void *ctx)
{
	struct store_queue_rcpt r;
	struct sqlite__read rd;
	int rc, ret;

	ret = sqlite__read_begin(&rd, store, sqlite__qfind_st(filter));
	if (ret != STORE_OK)
		return ret;
	sqlite__qfind_bind(rd.st, filter, limit);
	while ((rc = sqlite3_step(rd.st)) == SQLITE_ROW) {
		sqlite__qrcpt_row(rd.st, &r);
		ret = cb(&r, ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&rd, rc, ret);
}

/* Steps an UPDATE or DELETE of one id (and a value) and ends it; the rows it changed, or a
 * negative store_err after reporting. */
static int64_t
sqlite__qact_one(struct store_txn *txn, enum sqlite__st id, int64_t row, int64_t value,
                 bool with_value)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, id);
	sqlite3_bind_int64(st, 1, row);
	if (with_value)
		sqlite3_bind_int64(st, 2, value);
	rc = sqlite__run(st);
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot change the queue");
	return sqlite3_changes64(sqlite__w(txn)->db);
}

/* Removes entry queue_id when it has no recipient left. 1 removed, 0 not, or a store_err. */
static int
sqlite__qact_drop_empty(struct store_txn *txn, int64_t queue_id)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_QUEUE_RCPT_LEFT);
	sqlite3_bind_int64(st, 1, queue_id);
	rc = sqlite3_step(st);
	sqlite__done(st);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc != SQLITE_DONE)
		return sqlite__txn_fail(txn, rc, "cannot look up queue recipients");
	return (int)sqlite__qact_one(txn, ST_QUEUE_DELETE, queue_id, 0, false);
}

/* One action on one entry's rows of the chunk (ids[0..n), recipient row ids). */
static int
sqlite__qact_entry(struct store_txn *txn, const struct store_queue_filter *f,
                   enum store_queue_action action, int64_t queue_id, const int64_t *ids,
                   size_t n, struct store_queue_act_result *res)
{
	int64_t changed = 0, c;

	switch (action) {
	case STORE_QUEUE_HOLD:
	case STORE_QUEUE_RELEASE:
		/* The flag is the entry's; the v3 trigger copies it onto every row. */
		changed = sqlite__qact_one(txn, ST_QUEUE_SET_HELD, queue_id,
		                           action == STORE_QUEUE_HOLD, true);
		if (changed < 0)
			return (int)changed;
		res->entries += (uint64_t)changed;
		return STORE_OK;
	case STORE_QUEUE_RETRY:
		for (size_t i = 0; i < n; i++) {
			c = sqlite__qact_one(txn, ST_QUEUE_RCPT_RETRY, ids[i], txn->now, true);
			if (c < 0)
				return (int)c;
			changed += c;
		}
		res->rcpts += (uint64_t)changed;
		/* An entry cut by the previous chunk (the position is inside it) is counted. */
		res->entries += changed > 0 && queue_id != f->after;
		return STORE_OK;
	case STORE_QUEUE_DELETE:
		if (!store_queue_filter_by_rcpt(f)) {
			/* The whole entry: its rows first, to count them. */
			changed = sqlite__qact_one(txn, ST_QUEUE_RCPTS_DROP, queue_id, 0, false);
			if (changed < 0)
				return (int)changed;
			res->rcpts += (uint64_t)changed;
			c = sqlite__qact_one(txn, ST_QUEUE_DELETE, queue_id, 0, false);
			if (c < 0)
				return (int)c;
			res->entries += (uint64_t)c;
			return STORE_OK;
		}
		for (size_t i = 0; i < n; i++) {
			c = sqlite__qact_one(txn, ST_QUEUE_RCPT_DROP, ids[i], 0, false);
			if (c < 0)
				return (int)c;
			changed += c;
		}
		res->rcpts += (uint64_t)changed;
		c = sqlite__qact_drop_empty(txn, queue_id);
		if (c < 0)
			return (int)c;
		res->entries += (uint64_t)c;
		return STORE_OK;
	}
	return STORE_ERR_INVALID;
}

static int
sqlite__queue_act(struct store_txn *txn, struct store_queue_filter *f,
                  enum store_queue_action action, unsigned int limit,
                  struct store_queue_act_result *res)
{
	int64_t *qids, *ids;
	sqlite3_stmt *st;
	size_t n = 0, start;
	int rc, ret = STORE_OK;

	if (f->until == 0) {
		/* The first chunk: entries queued from now on are left alone. */
		SQLITE__STMT(txn, st, ST_QUEUE_MAX_ID);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			f->until = sqlite3_column_int64(st, 0);
		sqlite__done(st);
		if (rc != SQLITE_ROW)
			return sqlite__txn_fail(txn, rc, "cannot read the queue");
		if (f->until == 0)
			return STORE_OK; /* empty */
	}
	/* The chunk's rows are read first, then changed: no statement changes rows another one
	 * is still reading. */
	SQLITE__STMT(txn, st, sqlite__qfind_st(f));
	qids = xcalloc(limit, sizeof(*qids));
	ids = xcalloc(limit, sizeof(*ids));
	sqlite__qfind_bind(st, f, limit);
	while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		ids[n] = sqlite3_column_int64(st, 0);
		qids[n] = sqlite3_column_int64(st, 1);
		n++;
	}
	sqlite__done(st);
	if (n < limit && rc != SQLITE_DONE)
		ret = sqlite__txn_fail(txn, rc, "cannot read the queue");
	for (size_t i = 0; ret == STORE_OK && i < n; i = start) {
		start = i;
		while (start < n && qids[start] == qids[i])
			start++;
		ret = sqlite__qact_entry(txn, f, action, qids[i], ids + i, start - i, res);
	}
	if (ret == STORE_OK && n > 0) {
		res->matched += n;
		res->more = n == limit;
		f->after = qids[n - 1];
		f->after_rcpt = ids[n - 1];
	}
	free(qids);
	free(ids);
	return ret;
}

/* ---- Guard state ------------------------------------------------------------------------ */

static int
sqlite__ban_set(struct store_txn *txn, const struct store_ban *b)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_BAN_SET);
	sqlite__bind_text(st, 1, b->ip);
	sqlite__bind_text(st, 2, b->service);
	sqlite3_bind_int64(st, 3, b->until);
	sqlite__bind_text(st, 4, b->reason);
	sqlite3_bind_int64(st, 5, b->failures);
	sqlite3_bind_int64(st, 6, b->created);
	sqlite3_bind_int64(st, 7, b->strikes);
	rc = sqlite__run(st);
	return rc == SQLITE_DONE ? STORE_OK : sqlite__txn_fail(txn, rc, "cannot save ban");
}

static int
sqlite__ban_remove(struct store_txn *txn, const char *ip, const char *service)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, service != NULL ? ST_BAN_REMOVE_ONE : ST_BAN_REMOVE_ALL);
	sqlite__bind_text(st, 1, ip);
	if (service != NULL)
		sqlite__bind_text(st, 2, service);
	rc = sqlite__run(st);
	return rc == SQLITE_DONE ? STORE_OK : sqlite__txn_fail(txn, rc, "cannot remove ban");
}

static int
sqlite__stale_set(struct store_txn *txn, const struct store_stale *s)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_STALE_SET);
	sqlite__bind_text(st, 1, s->user);
	sqlite__bind_text(st, 2, s->ip);
	sqlite__bind_text(st, 3, s->service);
	sqlite3_bind_int64(st, 4, s->attempts);
	sqlite3_bind_int64(st, 5, s->since);
	sqlite3_bind_int64(st, 6, s->last);
	rc = sqlite__run(st);
	return rc == SQLITE_DONE ? STORE_OK : sqlite__txn_fail(txn, rc, "cannot save stale login");
}

static int
sqlite__meta_bump(struct store_txn *txn, const char *key)
{
	sqlite3_stmt *st;
	int rc;

	SQLITE__STMT(txn, st, ST_META_BUMP);
	sqlite__bind_text(st, 1, key);
	rc = sqlite__run(st);
	return rc == SQLITE_DONE ? STORE_OK : sqlite__txn_fail(txn, rc, "cannot update counter");
}

static int
sqlite__ban_list(struct store *store, store_ban_cb *cb, void *ctx)
{
	struct store_ban b;
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_BAN_LIST);
	if (ret != STORE_OK)
		return ret;
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		memset(&b, 0, sizeof(b));
		if (sqlite__copy(b.ip, sizeof(b.ip), r.st, 0) < 0 ||
		    sqlite__copy(b.service, sizeof(b.service), r.st, 1) < 0)
			continue; /* not a row we wrote */
		b.until = sqlite3_column_int64(r.st, 2);
		b.created = sqlite3_column_int64(r.st, 3);
		b.failures = (uint32_t)sqlite3_column_int64(r.st, 4);
		b.strikes = (uint32_t)sqlite3_column_int64(r.st, 5);
		(void)!str_copy(b.reason, sizeof(b.reason), sqlite__col_text(r.st, 6));
		ret = cb(&b, ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__stale_list(struct store *store, store_stale_cb *cb, void *ctx)
{
	struct store_stale s;
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_STALE_LIST);
	if (ret != STORE_OK)
		return ret;
	while ((rc = sqlite3_step(r.st)) == SQLITE_ROW) {
		memset(&s, 0, sizeof(s));
		if (sqlite__copy(s.user, sizeof(s.user), r.st, 0) < 0 ||
		    sqlite__copy(s.ip, sizeof(s.ip), r.st, 1) < 0 ||
		    sqlite__copy(s.service, sizeof(s.service), r.st, 2) < 0)
			continue;
		s.attempts = (uint32_t)sqlite3_column_int64(r.st, 3);
		s.since = sqlite3_column_int64(r.st, 4);
		s.last = sqlite3_column_int64(r.st, 5);
		ret = cb(&s, ctx);
		if (ret != 0)
			break;
	}
	return sqlite__read_end(&r, rc, ret);
}

static int
sqlite__meta_get(struct store *store, const char *key, char *out, size_t outsize)
{
	struct sqlite__read r;
	int rc, ret;

	ret = sqlite__read_begin(&r, store, ST_META_GET);
	if (ret != STORE_OK)
		return ret;
	sqlite__bind_text(r.st, 1, key);
	rc = sqlite3_step(r.st);
	if (rc == SQLITE_ROW)
		ret = sqlite__copy(out, outsize, r.st, 0) < 0 ? STORE_ERR_IO : 1;
	return sqlite__read_end(&r, rc, ret);
}

const struct store_ops store__sqlite_ops = {
	.name = "sqlite",
	.open = sqlite__open,
	.close = sqlite__close,
	.last_error = sqlite__last_error,
	.begin = sqlite__begin,
	.commit = sqlite__commit,
	.rollback = sqlite__rollback,
	.savepoint = sqlite__savepoint,
	.release = sqlite__release,
	.rollback_to = sqlite__rollback_to,
	.in_txn = sqlite__in_txn,
	.blob_insert = sqlite__blob_insert,
	.blob_unreferenced = sqlite__blob_unreferenced,
	.blob_forget = sqlite__blob_forget,
	.blob_any_unreferenced = sqlite__blob_any_unreferenced,
	.blob_list_range = sqlite__blob_list_range,
	.domain_add = sqlite__domain_add,
	.domain_remove = sqlite__domain_remove,
	.account_add = sqlite__account_add,
	.account_set_password = sqlite__account_set_password,
	.account_set_quota = sqlite__account_set_quota,
	.account_remove = sqlite__account_remove,
	.alias_add = sqlite__alias_add,
	.alias_remove = sqlite__alias_remove,
	.deliver = sqlite__deliver,
	.expunge = sqlite__expunge,
	.queue_add = sqlite__queue_add,
	.queue_remove = sqlite__queue_remove,
	.queue_set_dsn = sqlite__queue_set_dsn,
	.queue_rcpt_done = sqlite__queue_rcpt_done,
	.queue_rcpt_defer = sqlite__queue_rcpt_defer,
	.queue_hold = sqlite__queue_hold,
	.queue_retry = sqlite__queue_retry,
	.inbox_of = sqlite__inbox_of,
	.queue_scan = sqlite__queue_scan,
	.queue_find = sqlite__queue_find,
	.queue_act = sqlite__queue_act,
	.domain_exists = sqlite__domain_exists,
	.domain_list = sqlite__domain_list,
	.account_get = sqlite__account_get,
	.account_list = sqlite__account_list,
	.alias_list = sqlite__alias_list,
	.alias_targets = sqlite__alias_targets,
	.mailbox_list = sqlite__mailbox_list,
	.mailbox_get = sqlite__mailbox_get,
	.message_list = sqlite__message_list,
	.set_durable = sqlite__set_durable,
	.queue_stats = sqlite__queue_stats,
	.sync = sqlite__sync,
	.mailbox_create = sqlite__mailbox_create,
	.mailbox_delete = sqlite__mailbox_delete,
	.mailbox_rename = sqlite__mailbox_rename,
	.mailbox_subscribe = sqlite__mailbox_subscribe,
	.set_flags = sqlite__set_flags,
	.message_get_txn = sqlite__message_get_txn,
	.copy_message = sqlite__copy_message,
	.mailbox_get_id = sqlite__mailbox_get_id,
	.mailbox_totals = sqlite__mailbox_totals,
	.message_range = sqlite__message_range,
	.mailbox_changes = sqlite__mailbox_changes,
	.expunged_prune = sqlite__expunged_prune,
	.blob_meta_get = sqlite__blob_meta_get,
	.blob_data = sqlite__blob_data,
	.read_pin = sqlite__read_pin,
	.read_refresh = sqlite__read_refresh,
	.read_unpin = sqlite__read_unpin,
	.blob_meta_set = sqlite__blob_meta_set,
	.fts_add = sqlite__fts_add,
	.fts_match = sqlite__fts_match,
	.queue_count = sqlite__queue_count,
	.ban_set = sqlite__ban_set,
	.ban_remove = sqlite__ban_remove,
	.stale_set = sqlite__stale_set,
	.meta_bump = sqlite__meta_bump,
	.ban_list = sqlite__ban_list,
	.stale_list = sqlite__stale_list,
	.meta_get = sqlite__meta_get,
	.check = sqlite__check,
};
