/* The password verifier: account lookup and hash check on a pool of worker threads, so that the
 * I/O threads never block on the database or on tens of milliseconds of hashing.
 *
 * Invariants: one answer, AUTH_FAILED, for an unknown user, a disabled account, an unusable hash
 * and a wrong password, and each of them costs one hash computation: when there is no hash to
 * check, a dummy hash of a random password made at start-up with the configured scheme is
 * checked instead, so response time does not tell whether an address exists (as far as the
 * account's own hash uses the configured scheme). Only a store failure answers differently
 * (AUTH_TEMPFAIL), so that the client retries instead of counting a wrong password. Password
 * copies are wiped as soon as they are checked. */
#include "auth/auth.h"
#include "core/limits.h"
#include "core/log.h"
#include "core/tpool.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct auth {
	struct store *store; /* borrowed */
	struct tpool *pool;
	char dummy_hash[AUTH_HASH_SIZE];
};

struct auth_task {
	struct auth *auth;
	auth_verify_cb *cb;
	void *ctx;
	bool input_ok; /* user and password fitted the limits below */
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
	if (make_dummy_hash(auth, opts->password_scheme != NULL ? opts->password_scheme :
	                    "yescrypt", error_r) < 0) {
		free(auth);
		return -1;
	}
	auth->pool = tpool_new(opts->workers, "auth");
	*auth_r = auth;
	return 0;
}

void
auth_free(struct auth **authp)
{
	struct auth *auth = *authp;

	if (auth == NULL)
		return;
	tpool_free(&auth->pool);
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
	if (!auth_password_verify(password, account_r->pwhash)) {
		explicit_bzero(account_r, sizeof(*account_r));
		return AUTH_FAILED;
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
verify_task(void *arg)
{
	struct auth_task *t = arg;
	struct store_account account;
	enum auth_result result;

	result = verify(t->auth, t->user, t->password, t->input_ok, &account);
	explicit_bzero(t->password, sizeof(t->password));
	t->cb(result, result == AUTH_OK ? &account : NULL, t->ctx);
	explicit_bzero(&account, sizeof(account));
	explicit_bzero(t, sizeof(*t));
	free(t);
}

void
auth_verify_async(struct auth *auth, const char *user, const char *password, auth_verify_cb *cb,
                  void *ctx)
{
	struct auth_task *t = xcalloc(1, sizeof(*t));

	t->auth = auth;
	t->cb = cb;
	t->ctx = ctx;
	/* Too long for the fixed copies means no account can match: the task still runs (and
	 * hashes) so that the answer comes the same way and after the same time. */
	t->input_ok = input_fits(user, password) &&
	              str_copy(t->user, sizeof(t->user), user) == 0 &&
	              str_copy(t->password, sizeof(t->password), password) == 0;
	if (!t->input_ok) {
		explicit_bzero(t->user, sizeof(t->user));
		explicit_bzero(t->password, sizeof(t->password));
	}
	tpool_submit(auth->pool, verify_task, t);
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
