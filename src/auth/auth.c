/* The password verifier: account lookup and hash check on a pool of worker threads, so that the
 * I/O threads never block on the database or on tens of milliseconds of hashing.
 *
 * Invariants: one answer, AUTH_FAILED, for an unknown user, a disabled account, an unusable hash
 * and a wrong password, and each of them costs one hash computation: when there is no hash to
 * check, a dummy hash of a random password made at start-up with the configured scheme is
 * checked instead, so response time does not tell whether an address exists (as far as the
 * account's own hash uses the configured scheme). Only a store failure answers differently
 * (AUTH_TEMPFAIL), so that the client retries instead of counting a wrong password. Password
 * copies are wiped as soon as they are checked.
 *
 * Cache: mail clients log in again and again with the same password (phones poll, IMAP clients
 * open several connections). A successful check is remembered for AUTH_CACHE_TTL as a keyed hash
 * of (user, password) -> digest of the account's stored hash, in memory only; a later login with
 * the same pair is accepted without the slow hash as long as the stored hash is unchanged, so a
 * password change or reset takes effect at once. Failures are never cached. */
#include "auth/auth.h"
#include "core/limits.h"
#include "core/log.h"
#include "core/tpool.h"

#include "core/hmap.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>
#include <time.h>

#define AUTH_CACHE_TTL 3600      /* seconds a verified (user, password) is remembered */
#define AUTH_CACHE_MAX 10000     /* entries; the cache is emptied when full */
#define AUTH_CACHE_KEY 32        /* bytes of HMAC-SHA256 */

struct auth_cache_entry {
	uint8_t pwhash_digest[32]; /* SHA-256 of the stored hash the password was checked against */
	int64_t expires;           /* seconds since the epoch */
};

struct auth {
	struct store *store; /* borrowed */
	struct tpool *pool;  /* hashing, by priority */
	struct tpool *fast;  /* lookups and cache hits: never behind a hash */
	char dummy_hash[AUTH_HASH_SIZE];
	pthread_mutex_t cache_lock;
	struct hmap *cache;       /* HMAC(user NUL password) -> struct auth_cache_entry */
	uint8_t cache_key[32];    /* random per process */
};

struct auth_task {
	struct auth *auth;
	auth_verify_cb *cb;
	void *ctx;
	bool input_ok; /* user and password fitted the limits below */
	int priority;  /* enum tpool_priority of the hashing stage */
	char user[AUTH_MAX_ADDRESS + 1];
	char password[AUTH_MAX_PASSWORD + 1];
};

/* A dummy password that nobody can type: 32 random bytes, hex. */
static int
make_dummy_hash(struct auth *auth, const char *scheme, const char **error_r)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t rnd[32];
	char pw[sizeof(rnd) * 2 + 1];
	int ret;

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		*error_r = "getrandom failed";
		return -1;
	}
	for (size_t i = 0; i < sizeof(rnd); i++) {
		pw[2 * i] = hex[rnd[i] >> 4];
		pw[2 * i + 1] = hex[rnd[i] & 15];
	}
	pw[sizeof(pw) - 1] = '\0';
	ret = auth_password_hash(pw, scheme, auth->dummy_hash, error_r);
	explicit_bzero(rnd, sizeof(rnd));
	explicit_bzero(pw, sizeof(pw));
	return ret;
}

int
auth_new(struct store *store, const struct auth_options *opts, struct auth **auth_r,
         const char **error_r)
{
	struct auth *auth;

	if (opts->workers == 0) {
		*error_r = "auth needs at least one worker";
		return -1;
	}
	auth = xcalloc(1, sizeof(*auth));
	auth->store = store;
	pthread_mutex_init(&auth->cache_lock, NULL);
	auth->cache = hmap_new();
	if (getrandom(auth->cache_key, sizeof(auth->cache_key), 0) != (ssize_t)sizeof(auth->cache_key)) {
		*error_r = "getrandom failed";
		hmap_free(&auth->cache);
		free(auth);
		return -1;
	}
	if (make_dummy_hash(auth, opts->password_scheme != NULL ? opts->password_scheme :
	                    "yescrypt", error_r) < 0) {
		hmap_free(&auth->cache);
		pthread_mutex_destroy(&auth->cache_lock);
		free(auth);
		return -1;
	}
	auth->pool = tpool_new(opts->workers, "auth");
	auth->fast = tpool_new(opts->workers, "auth-fast");
	*auth_r = auth;
	return 0;
}

static bool
cache_free_entry(const void *key, size_t keylen, void *value, void *ctx)
{
	free(value);
	return true;
}

static void
cache_key(const struct auth *auth, const char *user, const char *password,
          uint8_t out[AUTH_CACHE_KEY])
{
	size_t ulen = strlen(user), plen = strlen(password);
	uint8_t *msg = xmalloc(ulen + 1 + plen);
	unsigned int len = AUTH_CACHE_KEY;

	/* Lower-cased user: the store finds accounts case-insensitively. */
	for (size_t i = 0; i < ulen; i++)
		msg[i] = (uint8_t)(user[i] >= 'A' && user[i] <= 'Z' ? user[i] + 32 : user[i]);
	msg[ulen] = 0;
	memcpy(msg + ulen + 1, password, plen);
	HMAC(EVP_sha256(), auth->cache_key, sizeof(auth->cache_key), msg, ulen + 1 + plen, out,
	     &len);
	explicit_bzero(msg, ulen + 1 + plen);
	free(msg);
}

static void
pwhash_digest(const char *pwhash, uint8_t out[32])
{
	unsigned int len = 32;

	EVP_Digest(pwhash, strlen(pwhash), out, &len, EVP_sha256(), NULL);
}

/* True when (key) was verified against this very stored hash less than the TTL ago. */
static bool
cache_hit(struct auth *auth, const uint8_t key[AUTH_CACHE_KEY], const char *pwhash)
{
	struct auth_cache_entry *e;
	uint8_t digest[32];
	bool hit = false;

	pwhash_digest(pwhash, digest);
	pthread_mutex_lock(&auth->cache_lock);
	e = hmap_get(auth->cache, key, AUTH_CACHE_KEY);
	if (e != NULL && e->expires > (int64_t)time(NULL) &&
	    mem_equal_ct(e->pwhash_digest, digest, sizeof(digest)))
		hit = true;
	pthread_mutex_unlock(&auth->cache_lock);
	return hit;
}

static void
cache_store(struct auth *auth, const uint8_t key[AUTH_CACHE_KEY], const char *pwhash)
{
	struct auth_cache_entry *e = xmalloc(sizeof(*e));

	pwhash_digest(pwhash, e->pwhash_digest);
	e->expires = (int64_t)time(NULL) + AUTH_CACHE_TTL;
	pthread_mutex_lock(&auth->cache_lock);
	if (hmap_count(auth->cache) >= AUTH_CACHE_MAX)
		hmap_foreach(auth->cache, cache_free_entry, NULL);
	free(hmap_put(auth->cache, key, AUTH_CACHE_KEY, e));
	pthread_mutex_unlock(&auth->cache_lock);
}

void
auth_free(struct auth **authp)
{
	struct auth *auth = *authp;

	if (auth == NULL)
		return;
	tpool_free(&auth->fast); /* may still queue hashing tasks: before the hashing pool */
	tpool_free(&auth->pool);
	hmap_foreach(auth->cache, cache_free_entry, NULL);
	hmap_free(&auth->cache);
	pthread_mutex_destroy(&auth->cache_lock);
	explicit_bzero(auth, sizeof(*auth));
	free(auth);
	*authp = NULL;
}

/* The whole decision; account_r is filled in (and is valid) only when AUTH_OK is returned. */
static enum auth_result
verify(struct auth *auth, const char *user, const char *password, bool input_ok,
       struct store_account *account_r)
{
	char san[LOG_SANITIZE_SIZE];
	int ret = 0;

	memset(account_r, 0, sizeof(*account_r));
	/* Input that cannot belong to any account is not looked up but costs a hash like the rest.
	 * The store compares addresses case-insensitively, so the name is passed as given. */
	if (input_ok)
		ret = store_account_get(auth->store, user, account_r);
	if (ret < 0) {
		log_warn("event=auth result=tempfail user=%s error=%s",
		         log_sanitize_str(san, user), store_err_str(ret));
		explicit_bzero(account_r, sizeof(*account_r));
		return AUTH_TEMPFAIL;
	}
	if (ret > 0 && !account_r->disabled && !auth_hash_is_supported(account_r->pwhash)) {
		/* The administrator must reset it; the client sees a plain failure. */
		log_warn("event=auth result=failed user=%s reason=unsupported-password-hash",
		         log_sanitize_str(san, user));
		ret = 0;
	}
	if (ret == 0 || account_r->disabled) {
		/* Same cost as a real check; for input that did not fit, hash a stand-in. */
		(void)auth_password_verify(input_ok ? password : "-", auth->dummy_hash);
		explicit_bzero(account_r, sizeof(*account_r));
		return AUTH_FAILED;
	}
	{
		uint8_t key[AUTH_CACHE_KEY];

		cache_key(auth, user, password, key);
		if (cache_hit(auth, key, account_r->pwhash))
			return AUTH_OK;
		if (!auth_password_verify(password, account_r->pwhash)) {
			explicit_bzero(account_r, sizeof(*account_r));
			return AUTH_FAILED;
		}
		cache_store(auth, key, account_r->pwhash);
	}
	return AUTH_OK;
}

static bool
input_fits(const char *user, const char *password)
{
	size_t ulen = strnlen(user, AUTH_MAX_ADDRESS + 1);
	size_t plen = strnlen(password, AUTH_MAX_PASSWORD + 1);

	return ulen > 0 && ulen <= AUTH_MAX_ADDRESS && plen > 0 && plen <= AUTH_MAX_PASSWORD;
}

static void
finish_task(struct auth_task *t, enum auth_result result, struct store_account *account)
{
	explicit_bzero(t->password, sizeof(t->password));
	t->cb(result, result == AUTH_OK ? account : NULL, t->ctx);
	explicit_bzero(account, sizeof(*account));
	explicit_bzero(t, sizeof(*t));
	free(t);
}

static void
verify_task(void *arg)
{
	static __thread bool niced;
	struct auth_task *t = arg;
	struct store_account account;

	/* Hashing is the CPU hog of a guessing flood: let the network threads go first. */
	if (!niced) {
		niced = true;
		if (setpriority(PRIO_PROCESS, (id_t)gettid(), 5) < 0) {
			/* not allowed here: hashing keeps the normal priority */
		}
	}
	finish_task(t, verify(t->auth, t->user, t->password, t->input_ok, &account), &account);
}

/* First stage: a login whose (user, password) was verified recently against the account's
 * current hash is answered here, without waiting for a hashing thread. Everything else, and
 * every failure, goes on to the hashing stage, so failures all cost the same. */
static void
lookup_task(void *arg)
{
	struct auth_task *t = arg;
	struct store_account account;
	uint8_t key[AUTH_CACHE_KEY];

	if (t->input_ok && store_account_get(t->auth->store, t->user, &account) == 1 &&
	    !account.disabled) {
		cache_key(t->auth, t->user, t->password, key);
		if (cache_hit(t->auth, key, account.pwhash)) {
			finish_task(t, AUTH_OK, &account);
			return;
		}
	}
	explicit_bzero(&account, sizeof(account));
	tpool_submit_prio(t->auth->pool, (enum tpool_priority)t->priority, verify_task, t);
}

void
auth_verify_async_prio(struct auth *auth, int priority, const char *user, const char *password,
                       auth_verify_cb *cb, void *ctx)
{
	struct auth_task *t = xcalloc(1, sizeof(*t));

	t->auth = auth;
	t->cb = cb;
	t->ctx = ctx;
	t->priority = priority;
	/* Too long for the fixed copies means no account can match: the task still runs (and
	 * hashes) so that the answer comes the same way and after the same time. */
	t->input_ok = input_fits(user, password) &&
	              str_copy(t->user, sizeof(t->user), user) == 0 &&
	              str_copy(t->password, sizeof(t->password), password) == 0;
	if (!t->input_ok) {
		explicit_bzero(t->user, sizeof(t->user));
		explicit_bzero(t->password, sizeof(t->password));
	}
	tpool_submit(auth->fast, lookup_task, t);
}

void
auth_verify_async(struct auth *auth, const char *user, const char *password, auth_verify_cb *cb,
                  void *ctx)
{
	auth_verify_async_prio(auth, TPOOL_NORMAL, user, password, cb, ctx);
}

enum auth_result
auth_verify(struct auth *auth, const char *user, const char *password,
            struct store_account *account_r)
{
	struct store_account account;
	enum auth_result result;
	bool ok = input_fits(user, password);

	result = verify(auth, ok ? user : "", ok ? password : "", ok, &account);
	if (account_r != NULL)
		*account_r = account;
	explicit_bzero(&account, sizeof(account));
	return result;
}
