/* Shared between the files of the SQLite engine (store_sqlite.c, sqlite_schema.c) only. */
#ifndef STORE_STORE_SQLITE_H
#define STORE_STORE_SQLITE_H

#include "core/compat.h"
#include "store/store.h"

#include <sqlite3.h>

/* Brings the schema of db (the write connection, outside any transaction) up to the newest
 * version, in one IMMEDIATE transaction; a no-op when it is current. Refuses a database newer
 * than this program. Returns STORE_OK or a negative store_err with *error_r set (valid until
 * the next call on this thread). */
ATTR_WUR int store__sqlite_migrate(sqlite3 *db, const char **error_r);
/* The same up to version newest only: for tests of a later step on an older database. */
ATTR_WUR int store__sqlite_migrate_to(sqlite3 *db, int newest, const char **error_r);
/* The schema version this program writes. */
int store__sqlite_schema_version(void);
/* The SQL the engine runs for `queue list` and the actions with this filter (parameters as in
 * store_sqlite.c), for tests that check its query plan. Static text. */
const char *store__sqlite_queue_find_sql(const struct store_queue_filter *filter);

#endif
