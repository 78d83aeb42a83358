/* Accounts' authentication: password hashing (libxcrypt), SASL PLAIN and LOGIN (shared by SMTP,
 * IMAP and POP3), and an asynchronous verifier whose hashing runs on worker threads.
 *
 * Hashes: new passwords are hashed with the configured scheme (yescrypt by default); stored
 * yescrypt ($y$), bcrypt ($2b$/$2y$/$2a$) and SHA512-CRYPT ($6$) hashes all verify, so a hash
 * copied from a Dovecot passwd-file works as it is ("{SHA512-CRYPT}$6$..." and "{BLF-CRYPT}..."
 * prefixes are accepted and stripped). */
#ifndef AUTH_AUTH_H
#define AUTH_AUTH_H

#include "core/compat.h"
#include "store/store.h"

/* ---- Passwords ---------------------------------------------------------------------------- */

/* Longest hash we produce or store, with NUL. */
#define AUTH_HASH_SIZE 256

/* scheme: "yescrypt", "bcrypt" or "sha512-crypt". Writes the hash into out. Slow (tens of ms):
 * never on an I/O thread. */
ATTR_WUR int auth_password_hash(const char *password, const char *scheme,
                                char out[AUTH_HASH_SIZE], const char **error_r);
/* True when password matches hash. Constant-time comparison. Slow; never on an I/O thread. */
bool auth_password_verify(const char *password, const char *hash);
/* True when hash is in a format this build can verify. */
bool auth_hash_is_supported(const char *hash);

/* ---- SASL (RFC 4422; PLAIN RFC 4616; LOGIN draft-murchison-sasl-login) ----------------------- */

enum auth_sasl_mech {
	AUTH_SASL_PLAIN,
	AUTH_SASL_LOGIN,
};

enum auth_sasl_status {
	AUTH_SASL_CONTINUE = 1, /* send *challenge_r (base64) to the client and wait */
	AUTH_SASL_DONE = 2,     /* credentials complete: read them with auth_sasl_user() etc. */
	AUTH_SASL_CANCEL = 3,   /* the client sent "*" (RFC 4954 4): answer 501 / BAD / -ERR */
	AUTH_SASL_ERROR = -1,   /* malformed response; *error_r says why */
};

struct auth_sasl;

/* name is matched case-insensitively ("PLAIN", "LOGIN"). */
ATTR_WUR int auth_sasl_mech_parse(const char *name, enum auth_sasl_mech *r);
struct auth_sasl *auth_sasl_new(enum auth_sasl_mech mech);
/* Wipes the credentials and frees; sets *sasl to NULL. */
void auth_sasl_free(struct auth_sasl **sasl);
/* Starts the exchange. initial: the initial response as sent (base64, "=" for an empty one,
 * RFC 4954 4), or NULL when there is none. Returns an auth_sasl_status. */
int auth_sasl_start(struct auth_sasl *sasl, const char *initial, const char **challenge_r,
                    const char **error_r);
/* Feeds one client response line (base64, without CRLF; "*" cancels). */
int auth_sasl_step(struct auth_sasl *sasl, const char *response, size_t len,
                   const char **challenge_r, const char **error_r);
/* After AUTH_SASL_DONE; valid until auth_sasl_free. authzid is "" when none was given. */
const char *auth_sasl_user(const struct auth_sasl *sasl);
const char *auth_sasl_password(const struct auth_sasl *sasl);
const char *auth_sasl_authzid(const struct auth_sasl *sasl);

/* ---- Asynchronous verification -------------------------------------------------------------- */

enum auth_result {
	AUTH_OK = 0,
	AUTH_FAILED = 1,   /* unknown user, wrong password or disabled account: one answer */
	AUTH_TEMPFAIL = 2, /* the store could not be read: retry later */
};

struct auth;

struct auth_options {
	unsigned int workers;        /* hashing threads */
	const char *password_scheme; /* for the dummy hash that unknown users are checked against */
};

/* store is borrowed and must outlive the auth service. */
ATTR_WUR int auth_new(struct store *store, const struct auth_options *opts, struct auth **auth_r,
                      const char **error_r);
/* Waits for running verifications; callbacks of queued ones still run. Sets *auth to NULL. */
void auth_free(struct auth **auth);

/* account is valid only during the callback and is NULL unless result is AUTH_OK. */
typedef void auth_verify_cb(enum auth_result result, const struct store_account *account,
                            void *ctx);
/* Looks the user up and verifies the password on a worker thread, then calls cb ON THAT
 * WORKER THREAD (the caller hands the result to its own thread). An unknown user is verified
 * against a dummy hash of the configured scheme, so it costs the same time as a wrong
 * password. user and password are copied; the copy of the password is wiped after use. */
void auth_verify_async(struct auth *auth, const char *user, const char *password,
                       auth_verify_cb *cb, void *ctx);
/* The same with a priority (enum tpool_priority): a request waits only for requests of its
 * own or a higher priority. The guard tells which (guard_priority). */
void auth_verify_async_prio(struct auth *auth, int priority, const char *user,
                            const char *password, auth_verify_cb *cb, void *ctx);
/* The same, synchronously, for the CLI and tests. Not on I/O threads. */
enum auth_result auth_verify(struct auth *auth, const char *user, const char *password,
                             struct store_account *account_r);

#endif
