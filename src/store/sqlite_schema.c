/* The SQLite schema and its migrations. PRAGMA user_version is the number of migration steps
 * applied; store_open runs the missing ones in one transaction, so a database is always at one
 * version, never between two. Steps are append-only: a released step is never edited, a change
 * is a new step.
 *
 * Reference counting: blobs.refs counts the rows of messages and queue that name the blob,
 * maintained by triggers (cascading deletes fire them too); the partial index on refs = 0 is
 * what the garbage collector reads, so its cost does not grow with the number of messages. */
#include "store/store_internal.h"
#include "store/store_sqlite.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

/* The triggers of messages, made by v1 (references) and v4 (quota), and again by v8. */
#define STORE__MESSAGES_REFS \
	"CREATE TRIGGER messages_ref AFTER INSERT ON messages BEGIN" \
	"  UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id;" \
	"END;" \
	"CREATE TRIGGER messages_unref AFTER DELETE ON messages BEGIN" \
	"  UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id;" \
	"END;" \
	"CREATE TRIGGER messages_reref AFTER UPDATE OF blob_id ON messages" \
	"  WHEN OLD.blob_id IS NOT NEW.blob_id BEGIN" \
	"  UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id;" \
	"  UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id;" \
	"END;"

#define STORE__MESSAGES_USED \
	"CREATE TRIGGER messages_used AFTER INSERT ON messages BEGIN" \
	"  UPDATE accounts SET used = used + NEW.size" \
	"  WHERE id = (SELECT account_id FROM mailboxes WHERE id = NEW.mailbox_id);" \
	"END;" \
	"CREATE TRIGGER messages_unused AFTER DELETE ON messages BEGIN" \
	"  UPDATE accounts SET used = used - OLD.size" \
	"  WHERE id = (SELECT account_id FROM mailboxes WHERE id = OLD.mailbox_id);" \
	"END;"

static const char store__schema_v1[] =
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL"
	");"
	"CREATE TABLE domains ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL COLLATE NOCASE UNIQUE,"
	"  created INTEGER NOT NULL"
	");"
	"CREATE TABLE accounts ("
	"  id INTEGER PRIMARY KEY,"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,"
	"  address TEXT NOT NULL COLLATE NOCASE UNIQUE,"
	"  pwhash TEXT NOT NULL,"
	"  created INTEGER NOT NULL,"
	"  disabled INTEGER NOT NULL DEFAULT 0,"
	"  quota INTEGER NOT NULL DEFAULT 0" /* bytes; 0 = unlimited */
	");"
	"CREATE INDEX accounts_domain ON accounts(domain_id);"
	"CREATE TABLE aliases ("
	"  id INTEGER PRIMARY KEY,"
	"  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE RESTRICT,"
	"  source TEXT NOT NULL COLLATE NOCASE," /* user@domain, or @domain (catch-all) */
	"  target TEXT NOT NULL COLLATE NOCASE,"
	"  UNIQUE (source, target)"
	");"
	"CREATE INDEX aliases_domain ON aliases(domain_id);"
	"CREATE TABLE mailboxes ("
	"  id INTEGER PRIMARY KEY,"
	"  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL,"
	"  special_use TEXT NOT NULL DEFAULT '',"
	"  subscribed INTEGER NOT NULL DEFAULT 1,"
	"  uidvalidity INTEGER NOT NULL,"
	"  uidnext INTEGER NOT NULL DEFAULT 1,"
	"  highestmodseq INTEGER NOT NULL DEFAULT 1,"
	"  UNIQUE (account_id, name)"
	");"
	"CREATE TABLE blobs ("
	"  id TEXT PRIMARY KEY," /* 32 lower-case hex digits; the file is BLOB_DIR/id[0..8]/id */
	"  size INTEGER NOT NULL," /* bytes */
	"  refs INTEGER NOT NULL DEFAULT 0 CHECK (refs >= 0),"
	"  created INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX blobs_unreferenced ON blobs(id) WHERE refs = 0;"
	"CREATE TABLE messages ("
	"  id INTEGER PRIMARY KEY,"
	"  mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,"
	"  uid INTEGER NOT NULL,"
	"  blob_id TEXT NOT NULL REFERENCES blobs(id),"
	"  size INTEGER NOT NULL,"
	"  internaldate INTEGER NOT NULL,"
	"  flags INTEGER NOT NULL DEFAULT 0," /* enum store_flag bits */
	"  keywords TEXT NOT NULL DEFAULT ''," /* space-separated IMAP keywords */
	"  modseq INTEGER NOT NULL,"
	"  UNIQUE (mailbox_id, uid)"
	");"
	"CREATE INDEX messages_blob ON messages(blob_id);"
	"CREATE TABLE queue ("
	"  id INTEGER PRIMARY KEY,"
	"  blob_id TEXT NOT NULL REFERENCES blobs(id),"
	"  sender TEXT NOT NULL," /* '' = null reverse-path */
	"  created INTEGER NOT NULL,"
	"  priority INTEGER NOT NULL DEFAULT 0,"
	"  held INTEGER NOT NULL DEFAULT 0,"
	"  size INTEGER NOT NULL,"
	"  envid TEXT," /* RFC 3461 ENVID */
	"  ret TEXT" /* RFC 3461 RET: FULL or HDRS */
	");"
	"CREATE INDEX queue_sender ON queue(sender);"
	"CREATE INDEX queue_blob ON queue(blob_id);"
	"CREATE TABLE queue_rcpts ("
	"  id INTEGER PRIMARY KEY,"
	"  queue_id INTEGER NOT NULL REFERENCES queue(id) ON DELETE CASCADE,"
	"  rcpt TEXT NOT NULL,"
	"  domain TEXT NOT NULL COLLATE NOCASE,"
	"  state INTEGER NOT NULL DEFAULT 0,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  next_attempt INTEGER NOT NULL DEFAULT 0,"
	"  last_error TEXT,"
	"  notify TEXT," /* RFC 3461 NOTIFY */
	"  orcpt TEXT" /* RFC 3461 ORCPT */
	");"
	"CREATE INDEX queue_rcpts_queue ON queue_rcpts(queue_id);"
	"CREATE INDEX queue_rcpts_due ON queue_rcpts(state, next_attempt);"
	"CREATE INDEX queue_rcpts_domain ON queue_rcpts(domain);"
	"CREATE TABLE guard_bans ("
	"  ip TEXT NOT NULL,"
	"  service TEXT NOT NULL,"
	"  until INTEGER NOT NULL,"
	"  reason TEXT NOT NULL DEFAULT '',"
	"  failures INTEGER NOT NULL DEFAULT 0,"
	"  created INTEGER NOT NULL,"
	"  PRIMARY KEY (ip, service)"
	") WITHOUT ROWID;"
	"CREATE INDEX guard_bans_until ON guard_bans(until);"
	STORE__MESSAGES_REFS
	"CREATE TRIGGER queue_ref AFTER INSERT ON queue BEGIN"
	"  UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id;"
	"END;"
	"CREATE TRIGGER queue_unref AFTER DELETE ON queue BEGIN"
	"  UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id;"
	"END;"
	"CREATE TRIGGER queue_reref AFTER UPDATE OF blob_id ON queue"
	"  WHEN OLD.blob_id IS NOT NEW.blob_id BEGIN"
	"  UPDATE blobs SET refs = refs - 1 WHERE id = OLD.blob_id;"
	"  UPDATE blobs SET refs = refs + 1 WHERE id = NEW.blob_id;"
	"END;";

/* A per-server secret for HMACs (e.g. signed tokens), created once with the database. */
static int
store__v1_secret(sqlite3 *db, const char **error_r)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t rnd[32];
	char text[2 * sizeof(rnd) + 1];
	sqlite3_stmt *st;
	ssize_t n;
	int rc;

	do {
		n = getrandom(rnd, sizeof(rnd), 0);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(rnd)) {
		*error_r = "getrandom failed";
		return STORE_ERR_IO;
	}
	for (size_t i = 0; i < sizeof(rnd); i++) {
		text[2 * i] = hex[rnd[i] >> 4];
		text[2 * i + 1] = hex[rnd[i] & 15];
	}
	text[2 * sizeof(rnd)] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
	rc = sqlite3_prepare_v2(db, "INSERT INTO meta (key, value) VALUES ('server_secret', ?1)",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	explicit_bzero(text, sizeof(text));
	if (rc != SQLITE_DONE) {
		*error_r = store__tls_error("cannot store the server secret: %s",
		                            sqlite3_errmsg(db));
		return STORE_ERR_IO;
	}
	return STORE_OK;
}

/* v2: what the guard keeps across restarts. */
static const char store__schema_v2[] =
	"ALTER TABLE guard_bans ADD COLUMN strikes INTEGER NOT NULL DEFAULT 1;"
	"CREATE TABLE guard_stale ("
	"  user TEXT NOT NULL COLLATE NOCASE,"
	"  ip TEXT NOT NULL,"
	"  service TEXT NOT NULL,"
	"  attempts INTEGER NOT NULL," /* count */
	"  since INTEGER NOT NULL,"    /* seconds */
	"  last INTEGER NOT NULL,"     /* seconds */
	"  PRIMARY KEY (user, ip, service)"
	");";

/* v3: outbound delivery. The delivery order (priority class, then next attempt) and the held
 * flag are copied onto each recipient row, kept in step by triggers, so that finding due
 * recipients is one range of a partial index per priority class, whatever the queue holds. */
static const char store__schema_v3[] =
	"ALTER TABLE queue_rcpts ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE queue_rcpts ADD COLUMN held INTEGER NOT NULL DEFAULT 0;"
	/* 1 once the sender was told the delivery is delayed (RFC 3464 Action: delayed). */
	"ALTER TABLE queue_rcpts ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0;"
	"UPDATE queue_rcpts SET"
	"  priority = (SELECT q.priority FROM queue q WHERE q.id = queue_rcpts.queue_id),"
	"  held = (SELECT q.held FROM queue q WHERE q.id = queue_rcpts.queue_id);"
	"CREATE INDEX queue_rcpts_ready ON queue_rcpts(priority, next_attempt, id)"
	"  WHERE state < 2 AND held = 0;"
	"CREATE TRIGGER queue_rcpts_class AFTER INSERT ON queue_rcpts BEGIN"
	"  UPDATE queue_rcpts SET"
	"    priority = (SELECT q.priority FROM queue q WHERE q.id = NEW.queue_id),"
	"    held = (SELECT q.held FROM queue q WHERE q.id = NEW.queue_id)"
	"  WHERE id = NEW.id;"
	"END;"
	"CREATE TRIGGER queue_class AFTER UPDATE OF priority, held ON queue BEGIN"
	"  UPDATE queue_rcpts SET priority = NEW.priority, held = NEW.held"
	"  WHERE queue_id = NEW.id;"
	"END;";

/* v4: IMAP. Expunges are remembered with their MODSEQ so that every session (and QRESYNC,
 * RFC 7162) can learn which messages went since it last looked, by an index range; changed
 * messages are found the same way. blob_meta caches each message file's parsed MIME structure
 * (files never change), and goes with the file's row. */
static const char store__schema_v4[] =
	"CREATE TABLE expunged ("
	"  mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,"
	"  uid INTEGER NOT NULL,"
	"  modseq INTEGER NOT NULL,"
	"  PRIMARY KEY (mailbox_id, uid)"
	") WITHOUT ROWID;"
	"CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq);"
	"CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);"
	"CREATE TABLE blob_meta ("
	"  blob_id TEXT PRIMARY KEY,"
	"  mime BLOB NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TRIGGER blob_meta_gone AFTER DELETE ON blobs BEGIN"
	"  DELETE FROM blob_meta WHERE blob_id = OLD.id;"
	"END;"
	/* Quota (RFC 9208 STORAGE): each account's bytes, kept by triggers so a check is one
	 * row read. accounts.quota: bytes, 0 = unlimited, -1 = the configured default (which
	 * every account had so far). A mailbox's messages are deleted before the mailbox
	 * (store_txn_mailbox_delete), so the triggers still find their account. */
	"UPDATE accounts SET quota = -1 WHERE quota = 0;"
	"ALTER TABLE accounts ADD COLUMN used INTEGER NOT NULL DEFAULT 0;"
	"UPDATE accounts SET used = (SELECT coalesce(sum(m.size), 0) FROM messages m"
	"  JOIN mailboxes mb ON mb.id = m.mailbox_id WHERE mb.account_id = accounts.id);"
	STORE__MESSAGES_USED;

/* v5: the full-text index of message files for IMAP SEARCH (store.h). fts_text holds each
 * file's decoded header and body text under an FTS5 trigram index: any text of 3 characters
 * or more is looked up as the trigrams it is made of. case_sensitive 1 because the text and
 * the terms arrive case-folded by the search engine, whose folding must be the only one.
 * detail=column: no token positions, so a lookup finds the files that have all of a term's
 * trigrams, not only those where they follow each other (the search checks the candidates
 * anyway), for an index about 2.5 times smaller and faster to fill than with positions.
 * fts_docs maps a file to its fts_text rowid. The entry goes with the file's row: the cascade
 * removes fts_docs, and the collector (sqlite__blob_forget) deletes the fts_text row first,
 * since trusted_schema = OFF keeps virtual tables out of triggers. */
static const char store__schema_v5[] =
	"CREATE TABLE fts_docs ("
	"  id INTEGER PRIMARY KEY," /* = fts_text.rowid */
	"  blob_id TEXT NOT NULL UNIQUE REFERENCES blobs(id) ON DELETE CASCADE"
	");"
	"CREATE VIRTUAL TABLE fts_text USING fts5(header, body,"
	"  tokenize = 'trigram case_sensitive 1', detail = column);";

/* v6: `postamt queue list` filters and actions by filter, each answered by an index range in
 * (queue id, recipient id) order whatever the queue holds: the sender and the recipient compare
 * case-insensitively (the indexes carry COLLATE NOCASE so that the comparison can use them),
 * the domain with its entries in queue order, and partial indexes for the held and the
 * deferred recipients (held is the entry's flag, copied onto each row by the v3 triggers).
 * The sender and domain indexes of v1 (binary sender; domain without queue order) are
 * replaced. `queue stats` reads only indexes: the domain index carries the state, and one
 * index holds class, state and held. */
static const char store__schema_v6[] =
	"DROP INDEX queue_sender;"
	"CREATE INDEX queue_sender ON queue(sender COLLATE NOCASE);"
	"DROP INDEX queue_rcpts_domain;"
	"CREATE INDEX queue_rcpts_domain ON queue_rcpts(domain, queue_id, id, state);"
	"CREATE INDEX queue_rcpts_class ON queue_rcpts(priority, state, held);"
	"CREATE INDEX queue_rcpts_rcpt ON queue_rcpts(rcpt COLLATE NOCASE, queue_id);"
	"CREATE INDEX queue_rcpts_held ON queue_rcpts(queue_id) WHERE held = 1;"
	"CREATE INDEX queue_rcpts_deferred ON queue_rcpts(queue_id) WHERE state = 1;";

/* v7: small messages are kept in the database (storage.inline_max): their bytes are written
 * with the commit that references them, in one flush. A blob either has a row here or a file
 * under BLOB_DIR, never both; the row goes with the blob's. */
static const char store__schema_v7[] =
	"CREATE TABLE blob_data ("
	"  id TEXT PRIMARY KEY,"
	"  data BLOB NOT NULL"
	");"
	"CREATE TRIGGER blob_data_gone AFTER DELETE ON blobs BEGIN"
	"  DELETE FROM blob_data WHERE id = OLD.id;"
	"END;";

/* v8: a mailbox's messages are stored together, in (mailbox, uid) order: a table without rowid
 * whose key is the IMAP identity of the message. Loading a mailbox's view, the rows of a FETCH
 * or a SEARCH, reads consecutive rows of few pages, instead of an index range followed by one
 * table lookup per message on pages shared with every other mailbox's deliveries. Dropping the
 * old table drops its triggers first (nothing fires); they are made again for the new one. */
static const char store__schema_v8[] =
	"CREATE TABLE messages_v8 ("
	"  mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,"
	"  uid INTEGER NOT NULL,"
	"  blob_id TEXT NOT NULL REFERENCES blobs(id),"
	"  size INTEGER NOT NULL,"
	"  internaldate INTEGER NOT NULL,"
	"  flags INTEGER NOT NULL DEFAULT 0,"
	"  keywords TEXT NOT NULL DEFAULT '',"
	"  modseq INTEGER NOT NULL,"
	"  PRIMARY KEY (mailbox_id, uid)"
	") WITHOUT ROWID;"
	"INSERT INTO messages_v8 (mailbox_id, uid, blob_id, size, internaldate, flags, keywords,"
	"  modseq) SELECT mailbox_id, uid, blob_id, size, internaldate, flags, keywords, modseq"
	"  FROM messages ORDER BY mailbox_id, uid;"
	"DROP TABLE messages;"
	"ALTER TABLE messages_v8 RENAME TO messages;"
	"CREATE INDEX messages_blob ON messages(blob_id);"
	"CREATE INDEX messages_modseq ON messages(mailbox_id, modseq);"
	STORE__MESSAGES_REFS
	STORE__MESSAGES_USED;

/* v9: the full-text index is kept per account. A document is a message file as one account
 * sees it (a file delivered to two accounts is indexed for each when each searches), and its
 * rowid is account_id * 2^32 + n: a lookup reads only the account's stretch of every posting
 * list (FTS5 seeks to a rowid range), not the doclists of every mailbox of the server. The
 * index is a cache: the old one is dropped and searches fill the new one. A document goes
 * with its file (the cascade, and the collector for fts_text), not with its account: it only
 * says which text a file holds, and searches reach it through the mailbox's messages. */
static const char store__schema_v9[] =
	"DROP TABLE fts_text;"
	"DROP TABLE fts_docs;"
	"CREATE TABLE fts_docs ("
	"  id INTEGER PRIMARY KEY," /* = fts_text.rowid */
	"  account_id INTEGER NOT NULL,"
	"  blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,"
	"  UNIQUE (account_id, blob_id)"
	");"
	"CREATE INDEX fts_docs_blob ON fts_docs(blob_id);"
	"CREATE VIRTUAL TABLE fts_text USING fts5(header, body,"
	"  tokenize = 'trigram case_sensitive 1', detail = column);";

/* v10: an index of the messages marked \Deleted (flag bit 8, STORE_FLAG_DELETED), so that
 * EXPUNGE and CLOSE find them without reading every message of the mailbox. */
static const char store__schema_v10[] =
	"CREATE INDEX messages_deleted ON messages(mailbox_id, uid) WHERE (flags & 8) <> 0;";

/* v11: the full-text index merges its segments as soon as two of a size exist (FTS5's
 * automerge, 4 by default). Searches index a few new files at a time, each commit adding a
 * segment, and every lookup probes every segment for every trigram: with the default a busy
 * index kept about 17 segments, with 2 about 3, for about 15% less CPU per IMAP command in the
 * benchmark's mix. The setting is stored with the index. */
static const char store__schema_v11[] =
	"INSERT INTO fts_text (fts_text, rank) VALUES ('automerge', 2);";

/* v12: the expunge history is bounded. Each row gets the time of its expunge, and the
 * collector removes rows older than the retention (store_opts.expunge_history); a mailbox's
 * expunged_floor is the highest MODSEQ among its removed rows, so a client that knows only an
 * older state gets the superset answer of RFC 7162 3.2.5.2 (every UID that is gone) instead of
 * an incomplete one. Rows from before count from the upgrade. */
static const char store__schema_v12[] =
	"ALTER TABLE mailboxes ADD COLUMN expunged_floor INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE expunged ADD COLUMN at INTEGER NOT NULL DEFAULT 0;"
	"UPDATE expunged SET at = CAST(strftime('%s', 'now') AS INTEGER);"
	"CREATE INDEX expunged_at ON expunged(at);";

struct store__migration {
	const char *sql;
	int (*post)(sqlite3 *db, const char **error_r); /* NULL or data changes after sql */
};

static const struct store__migration store__migrations[] = {
	{store__schema_v1, store__v1_secret},
	{store__schema_v2, NULL},
	{store__schema_v3, NULL},
	{store__schema_v4, NULL},
	{store__schema_v5, NULL},
	{store__schema_v6, NULL},
	{store__schema_v7, NULL},
	{store__schema_v8, NULL},
	{store__schema_v9, NULL},
	{store__schema_v10, NULL},
	{store__schema_v11, NULL},
	{store__schema_v12, NULL},
};

int
store__sqlite_schema_version(void)
{
	return (int)N_ELEMENTS(store__migrations);
}

static int
store__user_version(sqlite3 *db, int *version_r)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*version_r = sqlite3_column_int(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

static int
store__sqlite_errcode(sqlite3 *db, int rc)
{
	if ((rc & 0xff) == SQLITE_FULL)
		return STORE_ERR_FULL;
	if ((rc & 0xff) == SQLITE_IOERR)
		return store__errno_err(sqlite3_system_errno(db));
	return STORE_ERR_IO;
}

int
store__sqlite_migrate(sqlite3 *db, const char **error_r)
{
	return store__sqlite_migrate_to(db, store__sqlite_schema_version(), error_r);
}

int
store__sqlite_migrate_to(sqlite3 *db, int newest, const char **error_r)
{
	char sql[64];
	int version = 0, rc, ret = STORE_OK;

	/* IMMEDIATE: two processes opening a new database at once must not both migrate. The
	 * version is read inside the transaction for the same reason. */
	rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		*error_r = store__tls_error("cannot lock the database: %s", sqlite3_errmsg(db));
		return store__sqlite_errcode(db, rc);
	}
	rc = store__user_version(db, &version);
	if (rc != SQLITE_OK) {
		*error_r = store__tls_error("cannot read the schema version: %s",
		                            sqlite3_errmsg(db));
		ret = store__sqlite_errcode(db, rc);
		goto fail;
	}
	if (version > newest) {
		*error_r = store__tls_error("database schema version %d is newer than this "
		                            "program's (%d)", version, newest);
		ret = STORE_ERR_INVALID;
		goto fail;
	}
	if (version == newest) {
		(void)sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		return STORE_OK;
	}
	for (int v = version; v < newest; v++) {
		rc = sqlite3_exec(db, store__migrations[v].sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			*error_r = store__tls_error("schema migration %d failed: %s", v + 1,
			                            sqlite3_errmsg(db));
			ret = store__sqlite_errcode(db, rc);
			goto fail;
		}
		if (store__migrations[v].post != NULL) {
			ret = store__migrations[v].post(db, error_r);
			if (ret != STORE_OK)
				goto fail;
		}
	}
	/* PRAGMA takes no parameters; the value is our own constant, not outside data. */
	(void)snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", newest);
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		*error_r = store__tls_error("cannot commit the schema: %s", sqlite3_errmsg(db));
		ret = store__sqlite_errcode(db, rc);
		goto fail;
	}
	return STORE_OK;
fail:
	if (!sqlite3_get_autocommit(db))
		(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return ret;
}

