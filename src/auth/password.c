/* Password hashes with libxcrypt: crypt_gensalt_rn() makes the setting (random salt from the
 * kernel, the scheme's cost), crypt_rn() hashes. Both are reentrant; the 32 KiB struct
 * crypt_data is per call, on the heap, and wiped before it is freed because it holds the
 * password's intermediate state.
 *
 * Only three hash families are accepted: yescrypt ($y$), bcrypt ($2a$ $2b$ $2y$; not the
 * buggy $2x$) and SHA512-CRYPT ($6$). DES, MD5-crypt and the rest verify in libxcrypt too but are
 * too weak to accept silently: an account with such a hash cannot log in until its password is
 * reset. Dovecot passwd-file hashes carry a "{SCHEME}" prefix, which is checked against the
 * hash and stripped. The final comparison is constant-time. */
#include "auth/auth.h"
#include "core/buf.h"
#include "core/limits.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* bcrypt reads only the first 72 bytes of a password: a longer one would silently be cut. */
#define BCRYPT_MAX_PASSWORD 72

/* libxcrypt refuses passphrases of CRYPT_MAX_PASSPHRASE_SIZE bytes or more (512 with the NUL),
 * so that is our limit too when it is below AUTH_MAX_PASSWORD: a password that could be set
 * but never verified would be worse than one refused up front. */
#define PASSWORD_MAX MIN(AUTH_MAX_PASSWORD, CRYPT_MAX_PASSPHRASE_SIZE - 1)

struct scheme {
	const char *name;   /* as in the configuration (auth.password_scheme) */
	const char *prefix; /* crypt_gensalt prefix */
	/* crypt_gensalt count; 0 = libxcrypt's default, which follows current advice. bcrypt 11:
	 * about 100 ms on a current core, like yescrypt's default, above OWASP's minimum of 10. */
	unsigned long cost;
};

static const struct scheme schemes[] = {
	{"yescrypt", "$y$", 0},
	{"bcrypt", "$2b$", 11},
	{"sha512-crypt", "$6$", 0},
};

/* Prefixes of the hashes we verify. */
static const char *const hash_prefixes[] = {"$y$", "$2a$", "$2b$", "$2y$", "$6$"};

/* Dovecot's scheme names for crypt(3) hashes (its doc "Password Schemes"). Dovecot writes
 * BLF-CRYPT hashes as $2y$ and has no yescrypt scheme of its own: a yescrypt hash appears as
 * {CRYPT}$y$..., CRYPT meaning "whatever crypt(3) verifies". Names are case-insensitive, as in
 * Dovecot. required: the hash prefix the scheme implies, NULL for any we accept. */
static const struct {
	const char *name;
	const char *required;
} dovecot_schemes[] = {
	{"SHA512-CRYPT", "$6$"},
	{"BLF-CRYPT", "$2"},
	{"CRYPT", NULL},
};

static bool
password_is_valid(const char *password)
{
	/* strnlen: never read further than we would accept. A C string cannot hold a NUL;
	 * length-carrying input (SASL) is checked for NUL before it gets here. */
	size_t len = strnlen(password, PASSWORD_MAX + 1);

	return len > 0 && len <= PASSWORD_MAX;
}

/* Characters of the crypt(3) formats we accept: the hash alphabet "./0-9A-Za-z", '$' between
 * fields, and '=' ',' of SHA512-CRYPT's "rounds=N" parameter. */
static bool
hash_chars_valid(const char *h)
{
	for (; *h != '\0'; h++) {
		char c = *h;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '/' || c == '$' || c == '=' || c == ','))
			return false;
	}
	return true;
}

/* Strips a Dovecot "{SCHEME}" prefix: returns what follows it, hash itself when there is none,
 * or NULL for a scheme we do not take or one that does not match the hash after it. */
static const char *
strip_dovecot_scheme(const char *hash)
{
	const char *rb;
	size_t len;

	if (hash[0] != '{')
		return hash;
	rb = strchr(hash, '}');
	if (rb == NULL)
		return NULL;
	len = (size_t)(rb - hash - 1);
	for (size_t i = 0; i < N_ELEMENTS(dovecot_schemes); i++) {
		const char *required = dovecot_schemes[i].required;

		if (strlen(dovecot_schemes[i].name) == len &&
		    strncasecmp(hash + 1, dovecot_schemes[i].name, len) == 0)
			return required == NULL || str_has_prefix(rb + 1, required) ? rb + 1 : NULL;
	}
	return NULL;
}

/* The crypt(3) hash inside a stored hash, or NULL when it is not in a format we verify. */
static const char *
hash_body(const char *hash)
{
	const char *h = strip_dovecot_scheme(hash);
	bool known = false;
	size_t len;

	if (h == NULL)
		return NULL;
	len = strnlen(h, AUTH_HASH_SIZE);
	if (len >= AUTH_HASH_SIZE || !hash_chars_valid(h))
		return NULL;
	for (size_t i = 0; i < N_ELEMENTS(hash_prefixes) && !known; i++)
		known = str_has_prefix(h, hash_prefixes[i]) && len > strlen(hash_prefixes[i]);
	if (!known)
		return NULL;
	/* libxcrypt's own opinion: the method may be disabled in this build or the setting
	 * malformed (bad cost, salt). "Too cheap" and "legacy" still verify. */
	switch (crypt_checksalt(h)) {
	case CRYPT_SALT_INVALID:
	case CRYPT_SALT_METHOD_DISABLED:
		return NULL;
	default:
		return h;
	}
}

bool
auth_hash_is_supported(const char *hash)
{
	return hash_body(hash) != NULL;
}

int
auth_password_hash(const char *password, const char *scheme, char out[AUTH_HASH_SIZE],
                   const char **error_r)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	const struct scheme *s = NULL;
	struct crypt_data *data;
	const char *h;
	int ret = 0;

	for (size_t i = 0; i < N_ELEMENTS(schemes) && s == NULL; i++) {
		if (strcmp(scheme, schemes[i].name) == 0)
			s = &schemes[i];
	}
	if (s == NULL) {
		*error_r = "unknown password scheme (yescrypt, bcrypt or sha512-crypt)";
		return -1;
	}
	if (!password_is_valid(password)) {
		*error_r = "password is empty or too long";
		return -1;
	}
	if (strcmp(s->name, "bcrypt") == 0 && strlen(password) > BCRYPT_MAX_PASSWORD) {
		*error_r = "bcrypt uses only the first 72 bytes of a password: use yescrypt";
		return -1;
	}
	/* rbytes NULL: libxcrypt takes the salt from getentropy(). */
	if (crypt_gensalt_rn(s->prefix, s->cost, NULL, 0, setting, sizeof(setting)) == NULL) {
		*error_r = "cannot make a salt (no random bytes?)";
		return -1;
	}
	data = xcalloc(1, sizeof(*data));
	h = crypt_rn(password, setting, data, sizeof(*data));
	if (h == NULL || h[0] == '*') {
		*error_r = "hashing failed";
		ret = -1;
	} else if (str_copy(out, AUTH_HASH_SIZE, h) < 0) {
		*error_r = "hash longer than expected";
		ret = -1;
	}
	explicit_bzero(data, sizeof(*data));
	free(data);
	if (ret < 0)
		explicit_bzero(out, AUTH_HASH_SIZE);
	return ret;
}

bool
auth_password_verify(const char *password, const char *hash)
{
	const char *h = hash_body(hash);
	struct crypt_data *data;
	const char *r;
	bool ok;

	if (h == NULL || !password_is_valid(password))
		return false;
	data = xcalloc(1, sizeof(*data));
	r = crypt_rn(password, h, data, sizeof(*data));
	/* The lengths are not secret (they follow from the format); the bytes are compared in
	 * constant time so that the time taken reveals nothing about how much of a guess's hash
	 * matched. */
	ok = r != NULL && r[0] != '*' && strlen(r) == strlen(h) && mem_equal_ct(r, h, strlen(h));
	explicit_bzero(data, sizeof(*data));
	free(data);
	return ok;
}
