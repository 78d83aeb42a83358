/* The engine-independent front of the store: open/close, argument checking and normalisation,
 * and dispatch of every store.h call to the engine's vtable (struct store_ops).
 *
 * Invariants: names reach the engine checked and normalised (domains in lower case, addresses
 * as local@domain with the domain lowered; comparisons stay case-insensitive in the engine);
 * a transaction call after the engine lost its transaction fails instead of running in
 * autocommit mode, so a job is never half-applied. */
#include "store/store_internal.h"

#include "core/limits.h"
#include "core/log.h"
#include "core/tpool.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longest domain name: RFC 1035 2.3.4 (253 octets in text form). */
#define STORE__MAX_DOMAIN 253

int (*store__fault)(enum store__fault_point point);

bool
store_err_is_temporary(int err)
{
	return err == STORE_ERR_IO || err == STORE_ERR_FULL || err == STORE_ERR_SHUTDOWN;
}

const char *
store_err_str(int err)
{
	switch (err) {
	case STORE_OK:
		return "ok";
	case STORE_ERR_IO:
		return "storage error";
	case STORE_ERR_FULL:
		return "storage full";
	case STORE_ERR_EXISTS:
		return "already exists";
	case STORE_ERR_NOTFOUND:
		return "not found";
	case STORE_ERR_INVALID:
		return "invalid request";
	case STORE_ERR_SHUTDOWN:
		return "storage shutting down";
	default:
		return "unknown storage error";
	}
}

int
store__errno_err(int err)
{
	return err == ENOSPC || err == EDQUOT ? STORE_ERR_FULL : STORE_ERR_IO;
}

const char *
store__tls_error(const char *fmt, ...)
{
	static _Thread_local char msg[512];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap); /* truncation only shortens a message */
	va_end(ap);
	return msg;
}

void
store__stats(struct store *store, struct store__stats *r)
{
	pthread_mutex_lock(&store->lock);
	*r = store->stats;
	pthread_mutex_unlock(&store->lock);
}

/* ---- Names ------------------------------------------------------------------------------ */

bool
store__valid_blob_id(const char *id)
{
	size_t i;

	for (i = 0; id[i] != '\0'; i++) {
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return false;
	}
	return i == STORE__BLOB_ID_LEN;
}

/* Checks a domain (a DNS name in text form; U-labels are passed through as UTF-8) and writes it
 * in lower case to dst. Returns NULL or the reason it is refused. */
static const char *
store__norm_domain(const char *s, size_t len, char *dst, size_t size)
{
	if (len == 0)
		return "empty domain";
	if (len > STORE__MAX_DOMAIN || len >= size)
		return "domain too long";
	if (s[0] == '.' || s[len - 1] == '.')
		return "domain starts or ends with a dot";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' && s[i + 1] == '.')
			return "empty label in domain";
		if (!(c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
			return "invalid character in domain";
		dst[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	dst[len] = '\0';
	return NULL;
}

/* Checks "local@domain" (or "@domain" when catchall is allowed) and writes it with the domain in
 * lower case to dst; *domain_r points at the domain inside dst. Returns NULL or the reason. */
static const char *
store__norm_address(const char *s, bool catchall, char *dst, size_t size,
                    const char **domain_r)
{
	const char *at = strrchr(s, '@'), *why;
	size_t len = strlen(s), llen;

	if (at == NULL)
		return "address without @";
	if (len > AUTH_MAX_ADDRESS || len >= size)
		return "address too long";
	llen = (size_t)(at - s);
	if (llen == 0 && !catchall)
		return "empty local part";
	for (size_t i = 0; i < llen; i++) {
		unsigned char c = (unsigned char)s[i];

		/* Quoted local parts with spaces or '@' are legal (RFC 5321 4.1.2) but unused in
		 * practice; refusing them keeps one canonical, log-safe form. */
		if (c <= 0x20 || c == 0x7f || c == '@' || c == '"' || c == '\\')
			return "invalid character in local part";
	}
	memcpy(dst, s, llen + 1);
	why = store__norm_domain(at + 1, len - llen - 1, dst + llen + 1, size - llen - 1);
	if (why != NULL)
		return why;
	*domain_r = dst + llen + 1;
	return NULL;
}

/* A password hash: printable ASCII without spaces (so it never breaks a log line or a file
 * format), shorter than max. */
static bool
store__valid_token(const char *s, size_t max)
{
	size_t len = strlen(s);

	if (len == 0 || len >= max)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x21 || c >= 0x7f)
			return false;
	}
	return true;
}

/* ---- Open and close --------------------------------------------------------------------- */

/* Creates a folder if missing; a new folder's entry is made durable in its parent, since
 * committed rows will point into it. */
static int
store__mkdir(const char *path, const char **error_r)
{
	char *parent;
	char *slash;
	int ret;

	if (mkdir(path, 0750) < 0) {
		int err = errno;

		if (err == EEXIST)
			return STORE_OK;
		*error_r = store__tls_error("cannot create %s: %s", path, strerror(err));
		return store__errno_err(err);
	}
	parent = xstrdup(path);
	slash = strrchr(parent, '/');
	if (slash == NULL) {
		ret = store__fsync_dir(".", error_r);
	} else if (slash == parent) {
		ret = store__fsync_dir("/", error_r);
	} else {
		*slash = '\0';
		ret = store__fsync_dir(parent, error_r);
	}
	free(parent);
	return ret;
}

static void
store__free(struct store *store)
{
	pthread_mutex_destroy(&store->write_lock);
	pthread_mutex_destroy(&store->lock);
	pthread_cond_destroy(&store->wake);
	pthread_cond_destroy(&store->gc_done);
	pthread_cond_destroy(&store->sweep_wake);
	pthread_cond_destroy(&store->rwake);
	pthread_cond_destroy(&store->swake);
	pthread_mutex_destroy(&store->blobs_lock);
	pthread_mutex_destroy(&store->sweep_lock);
	free(store->settled);
	free(store->database);
	free(store->blob_dir);
	free(store->tmp_dir);
	free(store);
}

int
store_open(const struct store_options *opts, struct store **store_r, const char **error_r)
{
	struct store *store;
	pthread_condattr_t cattr;
	int ret;

	*store_r = NULL;
	*error_r = NULL;
	if (opts->database == NULL || opts->database[0] == '\0' || opts->blob_dir == NULL ||
	    opts->blob_dir[0] == '\0') {
		*error_r = "database and blob folder must be set";
		return STORE_ERR_INVALID;
	}
	if (opts->batch_max > STORE_MAX_BATCH || opts->sync_threads > STORE_MAX_SYNC_THREADS) {
		*error_r = store__tls_error("batch_max (max %d) or sync_threads (max %d) too large",
		                            STORE_MAX_BATCH, STORE_MAX_SYNC_THREADS);
		return STORE_ERR_INVALID;
	}
	/* Every blob path is BLOB_DIR/bucket/id: checking the length once here lets the path
	 * helpers never fail. */
	if (strlen(opts->blob_dir) + 2 + STORE__BUCKET_LEN + STORE__BLOB_ID_LEN >= PATH_MAX) {
		*error_r = "blob folder path too long";
		return STORE_ERR_INVALID;
	}

	store = xcalloc(1, sizeof(*store));
	store->ops = &store__sqlite_ops;
	store->opts = *opts;
	store->database = xstrdup(opts->database);
	store->blob_dir = xstrdup(opts->blob_dir);
	store->tmp_dir = xasprintf("%s/tmp", opts->blob_dir);
	store->opts.database = store->database;
	store->opts.blob_dir = store->blob_dir;
	if (store->opts.batch_max == 0)
		store->opts.batch_max = STORE__DEFAULT_BATCH;
	pthread_mutex_init(&store->write_lock, NULL);
	pthread_mutex_init(&store->lock, NULL);
	pthread_mutex_init(&store->blobs_lock, NULL);
	pthread_mutex_init(&store->sweep_lock, NULL);
	/* Timed waits use the monotonic clock: a wall-clock jump must not stall the sweeps. */
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&store->wake, &cattr);
	pthread_cond_init(&store->sweep_wake, &cattr);
	pthread_cond_init(&store->rwake, &cattr);
	pthread_cond_init(&store->swake, &cattr);
	pthread_condattr_destroy(&cattr);
	pthread_cond_init(&store->gc_done, NULL);

	ret = store__mkdir(store->blob_dir, error_r);
	if (ret == STORE_OK)
		ret = store__mkdir(store->tmp_dir, error_r);
	if (ret != STORE_OK) {
		store__free(store);
		return ret;
	}
	ret = store->ops->open(store, error_r);
	if (ret != STORE_OK) {
		store__free(store);
		return ret;
	}
	store->sync_filesystem = opts->sync_filesystem;
	store->inline_max = opts->inline_max;
	if (opts->background) {
		if (opts->sync_threads > 0)
			store->sync_pool = tpool_new(opts->sync_threads, "store-sync");
		ret = store__writer_start(store, error_r);
		if (ret == STORE_OK)
			ret = store__sweeper_start(store, error_r);
		if (ret != STORE_OK) {
			store_close(&store);
			return ret;
		}
	}
	*store_r = store;
	return STORE_OK;
}

void
store_close(struct store **storep)
{
	struct store *store = *storep;

	if (store == NULL)
		return;
	/* The sweeper first: it reads the database and must not outlive the connections. The
	 * writer then commits everything already queued. */
	store__sweeper_stop(store);
	store__writer_stop(store);
	tpool_free(&store->sync_pool);
	if (store->nlive > 0)
		log_warn("event=store_close blobs_alive=%zu", store->nlive);
	store->ops->close(store);
	store__free(store);
	*storep = NULL;
}

/* ---- Transactions ----------------------------------------------------------------------- */

void
store_txn_error(struct store_txn *txn, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	/* The first message wins: it names the cause, later ones its consequences. */
	if (txn->job == NULL || txn->job->error != NULL)
		return;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	txn->job->error = msg;
}

int64_t
store_txn_now(const struct store_txn *txn)
{
	return txn->now;
}

bool
store__txn_owns_blob(const struct store_txn *txn, const char *blob_id)
{
	if (txn->job == NULL)
		return false;
	for (size_t i = 0; i < txn->job->nblobs; i++) {
		if (strcmp(txn->job->blobs[i]->id, blob_id) == 0)
			return true;
	}
	return false;
}

/* Refuses to run a statement once the engine dropped the transaction: in autocommit mode each
 * statement would commit alone and a job could be half-stored. */
static int
store__txn_usable(struct store_txn *txn)
{
	if (!txn->store->ops->in_txn(txn->store)) {
		store_txn_error(txn, "transaction aborted");
		return STORE_ERR_IO;
	}
	return STORE_OK;
}

static int
store__txn_refuse(struct store_txn *txn, const char *what, const char *why)
{
	char san[LOG_SANITIZE_SIZE];

	store_txn_error(txn, "%s: %s", why, log_sanitize_str(san, what));
	return STORE_ERR_INVALID;
}

int
store_txn_domain_add(struct store_txn *txn, const char *domain)
{
	char norm[STORE__MAX_DOMAIN + 1];
	const char *why = store__norm_domain(domain, strlen(domain), norm, sizeof(norm));

	if (why != NULL)
		return store__txn_refuse(txn, domain, why);
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->domain_add(txn, norm);
}

int
store_txn_domain_remove(struct store_txn *txn, const char *domain)
{
	char norm[STORE__MAX_DOMAIN + 1];
	const char *why = store__norm_domain(domain, strlen(domain), norm, sizeof(norm));

	if (why != NULL)
		return store__txn_refuse(txn, domain, why);
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->domain_remove(txn, norm);
}

int
store_txn_account_add(struct store_txn *txn, const char *address, const char *pwhash,
                      int64_t *id_r)
{
	char norm[AUTH_MAX_ADDRESS + 1];
	const char *domain, *why;
	int64_t id = 0;
	int ret;

	why = store__norm_address(address, false, norm, sizeof(norm), &domain);
	if (why != NULL)
		return store__txn_refuse(txn, address, why);
	if (!store__valid_token(pwhash, sizeof(((struct store_account *)NULL)->pwhash))) {
		store_txn_error(txn, "invalid password hash");
		return STORE_ERR_INVALID;
	}
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	ret = txn->store->ops->account_add(txn, norm, domain, pwhash, &id);
	if (ret == STORE_OK && id_r != NULL)
		*id_r = id;
	return ret;
}

int
store_txn_account_set_password(struct store_txn *txn, const char *address, const char *pwhash)
{
	char norm[AUTH_MAX_ADDRESS + 1];
	const char *domain, *why;

	why = store__norm_address(address, false, norm, sizeof(norm), &domain);
	if (why != NULL)
		return store__txn_refuse(txn, address, why);
	if (!store__valid_token(pwhash, sizeof(((struct store_account *)NULL)->pwhash))) {
		store_txn_error(txn, "invalid password hash");
		return STORE_ERR_INVALID;
	}
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->account_set_password(txn, norm, pwhash);
}

int
store_txn_account_set_quota(struct store_txn *txn, const char *address, int64_t quota)
{
	char norm[AUTH_MAX_ADDRESS + 1];
	const char *domain, *why;

	why = store__norm_address(address, false, norm, sizeof(norm), &domain);
	if (why != NULL)
		return store__txn_refuse(txn, address, why);
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->account_set_quota(txn, norm, quota < 0 ? -1 : quota);
}

uint64_t
store_account_quota(const struct store_account *account, uint64_t default_quota)
{
	return account->quota >= 0 ? (uint64_t)account->quota : default_quota;
}

int
store_txn_account_remove(struct store_txn *txn, const char *address)
{
	char norm[AUTH_MAX_ADDRESS + 1];
	const char *domain, *why;

	why = store__norm_address(address, false, norm, sizeof(norm), &domain);
	if (why != NULL)
		return store__txn_refuse(txn, address, why);
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->account_remove(txn, norm);
}

int
store_txn_alias_add(struct store_txn *txn, const char *source, const char *target)
{
	char src[AUTH_MAX_ADDRESS + 1], dst[AUTH_MAX_ADDRESS + 1];
	const char *domain, *tdomain, *why;

	why = store__norm_address(source, true, src, sizeof(src), &domain);
	if (why != NULL)
		return store__txn_refuse(txn, source, why);
	why = store__norm_address(target, false, dst, sizeof(dst), &tdomain);
	if (why != NULL)
		return store__txn_refuse(txn, target, why);
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->alias_add(txn, src, domain, dst);
}

int
store_txn_alias_remove(struct store_txn *txn, const char *source, const char *target)
{
	char src[AUTH_MAX_ADDRESS + 1], dst[AUTH_MAX_ADDRESS + 1];
	const char *domain, *why;

	why = store__norm_address(source, true, src, sizeof(src), &domain);
	if (why != NULL)
		return store__txn_refuse(txn, source, why);
	if (target != NULL) {
		why = store__norm_address(target, false, dst, sizeof(dst), &domain);
		if (why != NULL)
			return store__txn_refuse(txn, target, why);
	}
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->alias_remove(txn, src, target != NULL ? dst : NULL);
}

int
store_txn_deliver(struct store_txn *txn, int64_t mailbox_id, const char *blob_id,
                  uint32_t flags, int64_t internaldate, uint32_t *uid_r)
{
	return store_txn_append(txn, mailbox_id, blob_id, flags, "", internaldate, uid_r);
}

bool
store_keywords_valid(const char *kw)
{
	size_t len = strlen(kw);

	if (len >= STORE_KEYWORDS_MAX)
		return false;
	if (len == 0)
		return true;
	if (kw[0] == ' ' || kw[len - 1] == ' ')
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)kw[i];

		/* atom-specials of RFC 3501 9, and "\\" (only system flags have it). */
		if (c <= 0x20 ? c != ' ' : c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return false;
		if (c == ' ' && kw[i + 1] == ' ')
			return false;
	}
	return true;
}

int
store_txn_append(struct store_txn *txn, int64_t mailbox_id, const char *blob_id, uint32_t flags,
                 const char *keywords, int64_t internaldate, uint32_t *uid_r)
{
	uint32_t uid = 0;
	int ret;

	if (!store__valid_blob_id(blob_id))
		return store__txn_refuse(txn, blob_id, "invalid blob id");
	if ((flags & ~STORE_FLAGS_ALL) != 0 || !store_keywords_valid(keywords)) {
		store_txn_error(txn, "invalid message flags 0x%x or keywords", flags);
		return STORE_ERR_INVALID;
	}
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	ret = txn->store->ops->deliver(txn, mailbox_id, blob_id, flags, keywords, internaldate,
	                               &uid);
	if (ret == STORE_OK && uid_r != NULL)
		*uid_r = uid;
	return ret;
}

int
store_txn_mailbox_create(struct store_txn *txn, int64_t account_id, const char *name,
                         const char *special_use, int64_t *id_r)
{
	int64_t id = 0;
	int ret;

	if (name[0] == '\0' || strlen(name) >= sizeof(((struct store_mailbox *)0)->name))
		return store__txn_refuse(txn, name, "invalid mailbox name");
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	ret = txn->store->ops->mailbox_create(txn, account_id, name, special_use, &id);
	if (ret == STORE_OK && id_r != NULL)
		*id_r = id;
	return ret;
}

int
store_txn_mailbox_delete(struct store_txn *txn, int64_t mailbox_id)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->mailbox_delete(txn, mailbox_id);
}

int
store_txn_mailbox_rename(struct store_txn *txn, int64_t account_id, const char *from,
                         const char *to)
{
	if (to[0] == '\0' || strlen(to) >= sizeof(((struct store_mailbox *)0)->name))
		return store__txn_refuse(txn, to, "invalid mailbox name");
	if (strcasecmp(from, "INBOX") == 0)
		return store__txn_refuse(txn, from, "INBOX is not renamed by the store");
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->mailbox_rename(txn, account_id, from, to);
}

int
store_txn_mailbox_subscribe(struct store_txn *txn, int64_t account_id, const char *name,
                            bool on)
{
	if (strcasecmp(name, "INBOX") == 0)
		name = "INBOX";
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->mailbox_subscribe(txn, account_id, name, on);
}

/* True when the space-separated list kw holds word (keywords compare case-insensitively). */
static bool
store__kw_has(const char *kw, const char *word, size_t wlen)
{
	const char *p = kw;

	while (*p != '\0') {
		size_t n = strcspn(p, " ");

		if (n == wlen && strncasecmp(p, word, n) == 0)
			return true;
		p += n;
		while (*p == ' ')
			p++;
	}
	return false;
}

/* Appends word to the list in out (size bytes). -1 when it does not fit. */
static int
store__kw_add(char *out, size_t size, const char *word, size_t wlen)
{
	size_t len = strlen(out);

	if (len + (len > 0) + wlen + 1 > size)
		return -1;
	if (len > 0)
		out[len++] = ' ';
	memcpy(out + len, word, wlen);
	out[len + wlen] = '\0';
	return 0;
}

int
store_txn_update_flags(struct store_txn *txn, int64_t mailbox_id, uint32_t uid,
                       enum store_flags_mode mode, uint32_t flags, const char *keywords,
                       uint64_t unchangedsince, struct store_flags_result *r)
{
	char cur[STORE_KEYWORDS_MAX], next[STORE_KEYWORDS_MAX];
	struct store_message m;
	const char *p;
	uint32_t nflags;
	int ret;

	memset(r, 0, sizeof(*r));
	if ((flags & ~STORE_FLAGS_ALL) != 0 || !store_keywords_valid(keywords)) {
		store_txn_error(txn, "invalid message flags 0x%x or keywords", flags);
		return STORE_ERR_INVALID;
	}
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	ret = txn->store->ops->message_get_txn(txn, mailbox_id, uid, &m, cur, sizeof(cur));
	if (ret != STORE_OK)
		return ret;
	r->flags = m.flags;
	r->modseq = m.modseq;
	(void)snprintf(r->keywords, sizeof(r->keywords), "%s", cur);
	if (unchangedsince != 0 && m.modseq > unchangedsince) {
		r->modified = true;
		return STORE_OK;
	}
	next[0] = '\0';
	switch (mode) {
	case STORE_FLAGS_REPLACE:
		nflags = flags;
		break;
	case STORE_FLAGS_ADD:
		nflags = m.flags | flags;
		(void)snprintf(next, sizeof(next), "%s", cur);
		break;
	case STORE_FLAGS_REMOVE:
	default:
		nflags = m.flags & ~flags;
		break;
	}
	/* The keyword list: REPLACE takes the given ones, ADD the current plus new ones, REMOVE
	 * the current minus the given ones; duplicates are dropped. */
	p = mode == STORE_FLAGS_REMOVE ? cur : keywords;
	while (*p != '\0') {
		size_t n = strcspn(p, " ");
		bool drop = mode == STORE_FLAGS_REMOVE && store__kw_has(keywords, p, n);

		if (!drop && !store__kw_has(next, p, n) && store__kw_add(next, sizeof(next), p, n) < 0) {
			store_txn_error(txn, "too many keywords");
			return STORE_ERR_INVALID;
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	if (nflags == m.flags && strcmp(next, cur) == 0)
		return STORE_OK;
	ret = txn->store->ops->set_flags(txn, mailbox_id, uid, nflags, next, &r->modseq);
	if (ret != STORE_OK)
		return ret;
	r->flags = nflags;
	(void)snprintf(r->keywords, sizeof(r->keywords), "%s", next);
	r->changed = true;
	return STORE_OK;
}

int
store_txn_copy(struct store_txn *txn, int64_t from_mailbox, uint32_t uid, int64_t to_mailbox,
               uint32_t *uid_r)
{
	uint32_t newuid = 0;
	int ret;

	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	ret = txn->store->ops->copy_message(txn, from_mailbox, uid, to_mailbox, &newuid);
	if (ret == STORE_OK && uid_r != NULL)
		*uid_r = newuid;
	return ret;
}

int
store_txn_blob_meta_set(struct store_txn *txn, const char *blob_id, const void *data,
                        size_t len)
{
	if (!store__valid_blob_id(blob_id))
		return store__txn_refuse(txn, blob_id, "invalid blob id");
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->blob_meta_set(txn, blob_id, data, len);
}

int
store_txn_fts_add(struct store_txn *txn, int64_t account_id, const char *blob_id,
                  const void *header, size_t header_len, const void *body, size_t body_len)
{
	if (!store__valid_blob_id(blob_id))
		return store__txn_refuse(txn, blob_id, "invalid blob id");
	if ((header == NULL && header_len > 0) || (body == NULL && body_len > 0) ||
	    header_len > INT32_MAX || body_len > INT32_MAX)
		return store__txn_refuse(txn, blob_id, "invalid message text");
	if (account_id <= 0 || account_id > INT32_MAX)
		return store__txn_refuse(txn, blob_id, "invalid account");
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->fts_add(txn, account_id, blob_id, header != NULL ? header : "",
	                                header_len, body != NULL ? body : "", body_len);
}

int
store_txn_expunged_prune(struct store_txn *txn, int64_t before, uint32_t limit,
                         uint32_t *rows_r)
{
	*rows_r = 0;
	return txn->store->ops->expunged_prune(txn, before, limit, rows_r);
}

int
store_txn_expunge(struct store_txn *txn, int64_t mailbox_id, uint32_t uid)
{
	int ret = store_txn_expunge_quiet(txn, mailbox_id, uid);

	if (ret == STORE_ERR_NOTFOUND)
		store_txn_error(txn, "no message %u in mailbox %lld", uid, (long long)mailbox_id);
	return ret;
}

int
store_txn_expunge_quiet(struct store_txn *txn, int64_t mailbox_id, uint32_t uid)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->expunge(txn, mailbox_id, uid);
}

int
store_txn_queue_add(struct store_txn *txn, const char *blob_id, const char *sender,
                    const char *const *rcpts, size_t nrcpts, int priority, int64_t *id_r)
{
	char (*norm)[AUTH_MAX_ADDRESS + 1];
	const char **nrcpt, **domains, *why;
	char sender_norm[AUTH_MAX_ADDRESS + 1];
	int64_t id = 0;
	int ret;

	if (!store__valid_blob_id(blob_id))
		return store__txn_refuse(txn, blob_id, "invalid blob id");
	if (nrcpts == 0) {
		store_txn_error(txn, "queue entry without recipients");
		return STORE_ERR_INVALID;
	}
	/* The delivery order reads one index range per class (store_queue_due). */
	if (priority < 0 || priority >= STORE_QUEUE_PRIORITIES) {
		store_txn_error(txn, "priority %d out of range", priority);
		return STORE_ERR_INVALID;
	}
	/* "" is the null reverse-path of bounces (RFC 5321 4.5.5). */
	if (sender[0] != '\0') {
		const char *sdomain;

		why = store__norm_address(sender, false, sender_norm, sizeof(sender_norm),
		                          &sdomain);
		if (why != NULL)
			return store__txn_refuse(txn, sender, why);
	} else {
		sender_norm[0] = '\0';
	}
	norm = xcalloc(nrcpts, sizeof(*norm));
	nrcpt = xcalloc(nrcpts, sizeof(*nrcpt));
	domains = xcalloc(nrcpts, sizeof(*domains));
	ret = STORE_OK;
	for (size_t i = 0; i < nrcpts && ret == STORE_OK; i++) {
		why = store__norm_address(rcpts[i], false, norm[i], sizeof(norm[i]), &domains[i]);
		if (why != NULL)
			ret = store__txn_refuse(txn, rcpts[i], why);
		nrcpt[i] = norm[i];
	}
	if (ret == STORE_OK)
		ret = store__txn_usable(txn);
	if (ret == STORE_OK) {
		ret = txn->store->ops->queue_add(txn, blob_id, sender_norm, nrcpt, domains, nrcpts,
		                                 priority, &id);
	}
	if (ret == STORE_OK && id_r != NULL)
		*id_r = id;
	free(norm);
	free(nrcpt);
	free(domains);
	return ret;
}

int
store_txn_queue_remove(struct store_txn *txn, int64_t queue_id)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->queue_remove(txn, queue_id);
}

/* ---- Reads ------------------------------------------------------------------------------ */

int
store_domain_exists(struct store *store, const char *domain)
{
	char norm[STORE__MAX_DOMAIN + 1];

	if (store__norm_domain(domain, strlen(domain), norm, sizeof(norm)) != NULL)
		return 0; /* a name we could never have stored */
	return store->ops->domain_exists(store, norm);
}

int
store_domain_list(struct store *store, store_name_cb *cb, void *ctx)
{
	return store->ops->domain_list(store, cb, ctx);
}

int
store_account_get(struct store *store, const char *address, struct store_account *r)
{
	char norm[AUTH_MAX_ADDRESS + 1];
	const char *domain;

	if (store__norm_address(address, false, norm, sizeof(norm), &domain) != NULL)
		return 0;
	return store->ops->account_get(store, norm, r);
}

int
store_account_list(struct store *store, const char *domain, store_account_cb *cb, void *ctx)
{
	char norm[STORE__MAX_DOMAIN + 1];

	if (domain == NULL)
		return store->ops->account_list(store, NULL, cb, ctx);
	if (store__norm_domain(domain, strlen(domain), norm, sizeof(norm)) != NULL)
		return 0;
	return store->ops->account_list(store, norm, cb, ctx);
}

int
store_alias_list(struct store *store, store_alias_cb *cb, void *ctx)
{
	return store->ops->alias_list(store, cb, ctx);
}

int
store_alias_targets(struct store *store, const char *source, store_alias_cb *cb, void *ctx)
{
	char norm[AUTH_MAX_ADDRESS + 1];
	const char *domain;

	if (store__norm_address(source, true, norm, sizeof(norm), &domain) != NULL)
		return 0; /* could never have been stored */
	return store->ops->alias_targets(store, norm, cb, ctx);
}

int
store_mailbox_list(struct store *store, int64_t account_id, store_mailbox_cb *cb, void *ctx)
{
	return store->ops->mailbox_list(store, account_id, cb, ctx);
}

int
store_mailbox_get(struct store *store, int64_t account_id, const char *name,
                  struct store_mailbox *r)
{
	/* RFC 3501 5.1: INBOX is case-insensitive, every other name is not. */
	if (strcasecmp(name, "INBOX") == 0)
		name = "INBOX";
	return store->ops->mailbox_get(store, account_id, name, r);
}

int
store_message_list(struct store *store, int64_t mailbox_id, store_message_cb *cb, void *ctx)
{
	return store->ops->message_list(store, mailbox_id, cb, ctx);
}

int
store_mailbox_get_id(struct store *store, int64_t mailbox_id, struct store_mailbox *r)
{
	return store->ops->mailbox_get_id(store, mailbox_id, r);
}

int
store_mailbox_totals(struct store *store, int64_t mailbox_id, struct store_totals *r)
{
	memset(r, 0, sizeof(*r));
	return store->ops->mailbox_totals(store, mailbox_id, r);
}

int
store_message_range(struct store *store, int64_t mailbox_id, uint32_t lo, uint32_t hi,
                    store_message_cb *cb, void *ctx)
{
	return store->ops->message_range(store, mailbox_id, lo, hi, false, cb, ctx);
}

int
store_message_deleted(struct store *store, int64_t mailbox_id, uint32_t lo, uint32_t hi,
                      store_message_cb *cb, void *ctx)
{
	return store->ops->message_range(store, mailbox_id, lo, hi, true, cb, ctx);
}

int
store_mailbox_changes(struct store *store, int64_t mailbox_id, uint64_t since,
                      store_message_cb *changed, store_uid_range_cb *expunged, void *ctx,
                      struct store_mailbox *mb_r)
{
	memset(mb_r, 0, sizeof(*mb_r));
	return store->ops->mailbox_changes(store, mailbox_id, since, changed, expunged, ctx, mb_r);
}

int
store_blob_meta_get(struct store *store, const char *blob_id, struct buf *out)
{
	if (!store__valid_blob_id(blob_id))
		return 0;
	return store->ops->blob_meta_get(store, blob_id, out);
}

size_t
store__utf8_len(const uint8_t *p, size_t len)
{
	uint8_t c = p[0];
	size_t n;
	uint32_t cp;

	if (c < 0x80)
		return c != 0 ? 1 : 0;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (len < n)
		return 0;
	for (size_t k = 1; k < n; k++) {
		if ((p[k] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[k] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

/* Characters of a valid UTF-8 text without NUL, or -1 when it is not one. */
static ssize_t
store__utf8_chars(const uint8_t *p, size_t len)
{
	size_t i = 0;
	ssize_t chars = 0;

	while (i < len) {
		size_t n = store__utf8_len(p + i, len - i);

		if (n == 0)
			return -1;
		i += n;
		chars++;
	}
	return chars;
}

int
store_fts_match(struct store *store, int64_t account_id, int64_t mailbox_id,
                const struct store_fts_term *terms, size_t nterms, store_fts_cb *cb, void *ctx)
{
	if (nterms == 0 || nterms > STORE_FTS_MAX_TERMS || account_id <= 0 ||
	    account_id > INT32_MAX)
		return STORE_ERR_INVALID;
	for (size_t i = 0; i < nterms; i++) {
		const struct store_fts_term *t = &terms[i];

		if (t->text == NULL || t->len > STORE_FTS_MAX_TERM ||
		    t->where == 0 || (t->where & ~(STORE_FTS_HEADER | STORE_FTS_BODY)) != 0 ||
		    (i > 0 && t->group < terms[i - 1].group) ||
		    store__utf8_chars((const uint8_t *)t->text, t->len) < STORE_FTS_MIN_CHARS)
			return STORE_ERR_INVALID;
	}
	return store->ops->fts_match(store, account_id, mailbox_id, terms, nterms, cb, ctx);
}

int
store_queue_stats(struct store *store, unsigned int top, struct store_queue_stats *r,
                  store_queue_domain_cb *cb, void *ctx)
{
	memset(r, 0, sizeof(*r));
	return store->ops->queue_stats(store, top, r, cb, ctx);
}

int
store_queue_count(struct store *store, uint64_t *count_r)
{
	return store->ops->queue_count(store, count_r);
}

int
store_txn_queue_set_dsn(struct store_txn *txn, int64_t queue_id, const char *envid,
                        const char *ret, const char *const *notify, const char *const *orcpt,
                        size_t nrcpts)
{
	return txn->store->ops->queue_set_dsn(txn, queue_id, envid, ret, notify, orcpt, nrcpts);
}

/* ---- Guard state ------------------------------------------------------------------------ */

int
store_txn_ban_set(struct store_txn *txn, const struct store_ban *ban)
{
	if (ban->ip[0] == '\0' || ban->service[0] == '\0') {
		store_txn_error(txn, "a ban needs an address and a service");
		return STORE_ERR_INVALID;
	}
	return txn->store->ops->ban_set(txn, ban);
}

int
store_txn_ban_remove(struct store_txn *txn, const char *ip, const char *service)
{
	return txn->store->ops->ban_remove(txn, ip, service);
}

int
store_txn_stale_set(struct store_txn *txn, const struct store_stale *stale)
{
	return txn->store->ops->stale_set(txn, stale);
}

int
store_txn_meta_bump(struct store_txn *txn, const char *key)
{
	return txn->store->ops->meta_bump(txn, key);
}

int
store_ban_list(struct store *store, store_ban_cb *cb, void *ctx)
{
	return store->ops->ban_list(store, cb, ctx);
}

int
store_stale_list(struct store *store, store_stale_cb *cb, void *ctx)
{
	return store->ops->stale_list(store, cb, ctx);
}

int
store_meta_get_int(struct store *store, const char *key, int64_t *value_r)
{
	char text[32];
	uint64_t v;
	int ret = store->ops->meta_get(store, key, text, sizeof(text));

	*value_r = 0;
	if (ret < 0)
		return ret;
	if (ret == 1 && str_to_u64(text, &v) == 0 && v <= INT64_MAX)
		*value_r = (int64_t)v;
	return STORE_OK;
}

int
store_secret(struct store *store, uint8_t secret[32])
{
	char hex[80];
	int ret = store->ops->meta_get(store, "server_secret", hex, sizeof(hex));

	if (ret < 0)
		return ret;
	if (ret == 0 || strlen(hex) != 64)
		return STORE_ERR_NOTFOUND;
	for (int i = 0; i < 32; i++) {
		unsigned int hi, lo;
		char c1 = hex[2 * i], c2 = hex[2 * i + 1];
		hi = (unsigned int)(c1 <= '9' ? c1 - '0' : (c1 | 0x20) - 'a' + 10);
		lo = (unsigned int)(c2 <= '9' ? c2 - '0' : (c2 | 0x20) - 'a' + 10);
		if (hi > 15 || lo > 15)
			return STORE_ERR_IO;
		secret[i] = (uint8_t)(hi << 4 | lo);
	}
	explicit_bzero(hex, sizeof(hex));
	return STORE_OK;
}

/* ---- Check and gc ----------------------------------------------------------------------- */

static int
store__check_blob_file(struct store *store, const char *id, uint64_t size, int64_t inline_len,
                       struct buf *report)
{
	char path[PATH_MAX];
	struct stat st;
	bool file;

	if (!store__valid_blob_id(id)) {
		buf_printf(report, "blob %.40s: malformed id\n", id);
		return 1;
	}
	if (store__blob_final_path(store, id, path, sizeof(path)) < 0)
		PANIC("blob path too long"); /* store_open checked the length */
	file = stat(path, &st) == 0;
	if (inline_len >= 0) {
		if (file) {
			buf_printf(report, "blob %s: kept in the database and as file %s\n", id, path);
			return 1;
		}
		if ((uint64_t)inline_len != size) {
			buf_printf(report, "blob %s: database holds %lld bytes, its size says %llu\n",
			           id, (long long)inline_len, (unsigned long long)size);
			return 1;
		}
		return 0;
	}
	if (!file) {
		buf_printf(report, "blob %s: file %s: %s\n", id, path, strerror(errno));
		return 1;
	}
	if (!S_ISREG(st.st_mode)) {
		buf_printf(report, "blob %s: %s is not a regular file\n", id, path);
		return 1;
	}
	if ((uint64_t)st.st_size != size) {
		buf_printf(report, "blob %s: file has %llu bytes, database says %llu\n", id,
		           (unsigned long long)st.st_size, (unsigned long long)size);
		return 1;
	}
	return 0;
}

int
store_check(struct store *store, struct buf *report)
{
	return store->ops->check(store, report, store__check_blob_file);
}

int
store_blob_gc(struct store *store)
{
	int removed, orphans;

	if (store->opts.background) {
		/* Rows are deleted by the writer, the only one writing in this process. */
		struct store__gc_req req = {NULL, 0, false};

		pthread_mutex_lock(&store->lock);
		if (store->closing) {
			pthread_mutex_unlock(&store->lock);
			return STORE_ERR_SHUTDOWN;
		}
		req.next = store->gc_reqs;
		store->gc_reqs = &req;
		pthread_cond_signal(&store->wake);
		while (!req.done)
			pthread_cond_wait(&store->gc_done, &store->lock);
		pthread_mutex_unlock(&store->lock);
		removed = req.removed;
	} else {
		pthread_mutex_lock(&store->write_lock);
		removed = store__gc_unreferenced_all(store);
		pthread_mutex_unlock(&store->write_lock);
	}
	if (removed < 0)
		return removed;
	orphans = store__gc_orphans(store);
	if (orphans < 0)
		return orphans;
	return removed + orphans;
}

/* ---- Outbound queue --------------------------------------------------------------------- */

int
store_queue_due(struct store *store, int64_t now, unsigned int limit, const int64_t *skip,
                size_t nskip, store_queue_rcpt_cb *cb, void *ctx)
{
	struct store_queue_cursor start;

	store_queue_cursor_reset(&start);
	return store->ops->queue_scan(store, now, limit, UINT_MAX, skip, nskip, &start, cb, ctx);
}

void
store_queue_cursor_reset(struct store_queue_cursor *cursor)
{
	for (int i = 0; i < STORE_QUEUE_PRIORITIES; i++) {
		cursor->next_attempt[i] = INT64_MIN;
		cursor->id[i] = INT64_MIN;
	}
	cursor->end = false;
}

int
store_queue_scan(struct store *store, int64_t now, unsigned int limit, unsigned int max_examine,
                 const int64_t *skip, size_t nskip, struct store_queue_cursor *cursor,
                 store_queue_rcpt_cb *cb, void *ctx)
{
	return store->ops->queue_scan(store, now, limit, max_examine, skip, nskip, cursor, cb,
	                              ctx);
}

int
store_queue_list(struct store *store, int64_t after, unsigned int limit, store_queue_rcpt_cb *cb,
                 void *ctx)
{
	struct store_queue_filter f;

	memset(&f, 0, sizeof(f));
	f.after = after;
	return store->ops->queue_find(store, &f, limit, cb, ctx);
}

bool
store_queue_filter_by_rcpt(const struct store_queue_filter *filter)
{
	return filter->rcpt != NULL || filter->domain != NULL || filter->deferred;
}

/* Filter strings are compared, never stored: only their length is checked. */
static bool
store__queue_filter_valid(const struct store_queue_filter *f)
{
	const char *const s[] = {f->sender, f->rcpt, f->domain};

	for (size_t i = 0; i < N_ELEMENTS(s); i++) {
		if (s[i] != NULL && strlen(s[i]) > AUTH_MAX_ADDRESS)
			return false;
	}
	return f->after >= 0 && f->after_rcpt >= 0 && f->until >= 0;
}

int
store_queue_find(struct store *store, const struct store_queue_filter *filter,
                 unsigned int limit, store_queue_rcpt_cb *cb, void *ctx)
{
	if (!store__queue_filter_valid(filter))
		return STORE_ERR_INVALID;
	return store->ops->queue_find(store, filter, limit, cb, ctx);
}

int
store_txn_queue_act(struct store_txn *txn, struct store_queue_filter *filter,
                    enum store_queue_action action, unsigned int limit,
                    struct store_queue_act_result *result)
{
	if (!store__queue_filter_valid(filter)) {
		store_txn_error(txn, "invalid queue filter");
		return STORE_ERR_INVALID;
	}
	if (limit == 0 || limit > STORE_MAX_QUEUE_CHUNK || action < STORE_QUEUE_HOLD ||
	    action > STORE_QUEUE_DELETE) {
		store_txn_error(txn, "invalid queue action");
		return STORE_ERR_INVALID;
	}
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	result->more = false;
	return txn->store->ops->queue_act(txn, filter, action, limit, result);
}

int
store_txn_queue_rcpt_done(struct store_txn *txn, int64_t rcpt_id)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->queue_rcpt_done(txn, rcpt_id);
}

int
store_txn_queue_rcpt_defer(struct store_txn *txn, int64_t rcpt_id, int64_t next_attempt,
                           const char *error, bool delay_notified)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->queue_rcpt_defer(txn, rcpt_id, next_attempt,
	                                         error != NULL ? error : "", delay_notified);
}

int
store_txn_queue_hold(struct store_txn *txn, int64_t queue_id, bool held)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->queue_hold(txn, queue_id, held);
}

int
store_txn_queue_retry(struct store_txn *txn, int64_t queue_id)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->queue_retry(txn, queue_id);
}

int
store_txn_inbox_of(struct store_txn *txn, const char *address, int64_t *mailbox_id_r)
{
	if (store__txn_usable(txn) < 0)
		return STORE_ERR_IO;
	return txn->store->ops->inbox_of(txn, address, mailbox_id_r);
}
