/* auth: password hashing for each scheme, known hashes made by other tools (openssl passwd,
 * crypt_blowfish's test vectors, Dovecot's "{SCHEME}" prefixes), SASL PLAIN and LOGIN exchanges
 * with their malformed variants, and the verifier against a real store in a temporary folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <crypt.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "auth/auth.h"
#include "core/base64.h"
#include "core/limits.h"

#define PW_MAX MIN(AUTH_MAX_PASSWORD, CRYPT_MAX_PASSPHRASE_SIZE - 1)

/* ---- passwords ---------------------------------------------------------------------------- */

static void
test_hash_each_scheme(void **state)
{
	static const struct {
		const char *scheme, *prefix;
	} schemes[] = {
		{"yescrypt", "$y$"},
		{"bcrypt", "$2b$11$"},
		{"sha512-crypt", "$6$"},
	};
	const char *pw = "correct horse battery staple";

	(void)state;
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		char h1[AUTH_HASH_SIZE], h2[AUTH_HASH_SIZE];
		const char *error = NULL;

		if (auth_password_hash(pw, schemes[i].scheme, h1, &error) < 0)
			fail_msg("%s: %s", schemes[i].scheme, error);
		assert_int_equal(auth_password_hash(pw, schemes[i].scheme, h2, &error), 0);
		assert_true(strncmp(h1, schemes[i].prefix, strlen(schemes[i].prefix)) == 0);
		assert_string_not_equal(h1, h2); /* fresh salt each time */
		assert_true(auth_hash_is_supported(h1));
		assert_true(auth_password_verify(pw, h1));
		assert_true(auth_password_verify(pw, h2));
		assert_false(auth_password_verify("correct horse battery stapl", h1));
		assert_false(auth_password_verify("Correct horse battery staple", h1));
		assert_false(auth_password_verify("", h1));
	}
}

static void
test_hash_errors(void **state)
{
	char h[AUTH_HASH_SIZE], pw[AUTH_MAX_PASSWORD + 2];
	const char *error = NULL;

	(void)state;
	assert_int_equal(auth_password_hash("x", "md5-crypt", h, &error), -1);
	assert_non_null(error);
	error = NULL;
	assert_int_equal(auth_password_hash("", "yescrypt", h, &error), -1);
	assert_non_null(error);

	/* The longest password is fine; one byte more is refused, for hashing and verifying.
	 * The longest is what libxcrypt takes (511 bytes) when that is below AUTH_MAX_PASSWORD. */
	memset(pw, 'p', PW_MAX);
	pw[PW_MAX] = '\0';
	assert_int_equal(auth_password_hash(pw, "sha512-crypt", h, &error), 0);
	assert_true(auth_password_verify(pw, h));
	pw[PW_MAX] = 'p';
	pw[PW_MAX + 1] = '\0';
	error = NULL;
	assert_int_equal(auth_password_hash(pw, "sha512-crypt", h, &error), -1);
	assert_non_null(error);
	assert_false(auth_password_verify(pw, h));
	memset(pw, 'p', AUTH_MAX_PASSWORD + 1);
	pw[AUTH_MAX_PASSWORD + 1] = '\0';
	assert_int_equal(auth_password_hash(pw, "yescrypt", h, &error), -1);
	assert_false(auth_password_verify(pw, h));

	/* bcrypt would ignore everything after byte 72: refused rather than silently cut. */
	memset(pw, 'b', 73);
	pw[73] = '\0';
	assert_int_equal(auth_password_hash(pw, "bcrypt", h, &error), -1);
	pw[72] = '\0';
	assert_int_equal(auth_password_hash(pw, "bcrypt", h, &error), 0);
	assert_true(auth_password_verify(pw, h));
}

/* Hashes made outside Postamt. $6$: `openssl passwd -6 -salt abcdefgh12345678 'correct horse'`
 * (an independent implementation). $2a$: the test vectors of crypt_blowfish (Openwall), which
 * bcrypt implementations share. $2y$: the form Dovecot's BLF-CRYPT writes. */
#define SHA512_KNOWN                                                                               \
	"$6$abcdefgh12345678$hH3FjZZkD.RuGmIukoJ6X1/ojxI7Q6oXs70HmGNrON9WfqbLQ0xd/ksJZ6H.4WbnNfveboF" \
	"8T745gOj/MOnsv."
#define BCRYPT_KNOWN "$2y$10$abcdefghijklmnopqrstuu7gIUFBKrYXdzQy8HrouzMJyZ4cijAb2"
#define YESCRYPT_KNOWN "$y$j9T$saltsaltsaltsalt$gNcNhvFTt75JDF1LO9O.MCPyp8TkQxrhQSKqUeo/Uy6"

static void
test_known_hashes(void **state)
{
	static const struct {
		const char *hash, *password;
		bool ok;
	} cases[] = {
		{SHA512_KNOWN, "correct horse", true},
		{SHA512_KNOWN, "correct horse ", false},
		{"{SHA512-CRYPT}" SHA512_KNOWN, "correct horse", true},
		{"{sha512-crypt}" SHA512_KNOWN, "correct horse", true}, /* Dovecot: any case */
		{"{CRYPT}" SHA512_KNOWN, "correct horse", true},
		{"{SHA512-CRYPT}" SHA512_KNOWN, "wrong", false},
		{"$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U", true},
		{"$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK", "U*U*", true},
		{"$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK", "U*U", false},
		{BCRYPT_KNOWN, "hunter2", true},
		{BCRYPT_KNOWN, "hunter3", false},
		{"{BLF-CRYPT}" BCRYPT_KNOWN, "hunter2", true},
		{"$2b$10$abcdefghijklmnopqrstuu7gIUFBKrYXdzQy8HrouzMJyZ4cijAb2", "hunter2", true},
		{YESCRYPT_KNOWN, "correct horse", true},
		{YESCRYPT_KNOWN, "correct hors", false},
		{"{CRYPT}" YESCRYPT_KNOWN, "correct horse", true},
		/* The scheme in braces must match the hash. */
		{"{SHA512-CRYPT}" BCRYPT_KNOWN, "hunter2", false},
		{"{BLF-CRYPT}" SHA512_KNOWN, "correct horse", false},
		/* Weak formats that libxcrypt itself would verify are refused. */
		{"$1$abc$OGyl6dDvZCDiGmIVbeuCq/", "x", false}, /* MD5-crypt of "x" */
		{"abiQ6Ep3EYTHc", "x", false},                  /* DES crypt of "x" */
		{"{PLAIN}hunter2", "hunter2", false},
		{"hunter2", "hunter2", false},
		{"", "", false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (auth_password_verify(cases[i].password, cases[i].hash) != cases[i].ok)
			fail_msg("verify(\"%s\", %s) != %d", cases[i].password, cases[i].hash,
			         cases[i].ok);
	}
}

static void
test_hash_is_supported(void **state)
{
	static const char *const yes[] = {
		SHA512_KNOWN, BCRYPT_KNOWN, YESCRYPT_KNOWN,
		"$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
		"$6$rounds=10000$abcdefgh$hH3FjZZkD.RuGmIukoJ6X1/ojxI7Q6oXs70HmGNrON9WfqbLQ0xd/ksJZ6H.4W",
		"{SHA512-CRYPT}" SHA512_KNOWN, "{BLF-CRYPT}" BCRYPT_KNOWN, "{CRYPT}" YESCRYPT_KNOWN,
	};
	static const char *const no[] = {
		"", "*", "!", "!" SHA512_KNOWN, "*" YESCRYPT_KNOWN,
		"$1$abc$OGyl6dDvZCDiGmIVbeuCq/", "abiQ6Ep3EYTHc",
		"$5$abcdefgh$wEDkG2ThkxjeVv.fvWU5SbnxwRHA5rlufsuyftJtmS9", /* SHA256-CRYPT */
		"$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", /* buggy variant */
		"$y$", "$6$", "$2b$",
		"{PLAIN}x", "{SSHA512}abc", "{YESCRYPT}" YESCRYPT_KNOWN, "{SHA512-CRYPT",
		"{SHA512-CRYPT}", "{SHA256-CRYPT}" SHA512_KNOWN,
		"$6$abcdefgh$hH3FjZZkD.RuGmIukoJ6X1/oj\nxI7Q6oXs70HmGNrON9Wf",
		"$6$abcdefgh$hH3FjZZkD.RuGmIukoJ6X1/oj xI7Q6oXs70HmGNrON9Wf",
	};
	char longhash[AUTH_HASH_SIZE + 16];

	(void)state;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!auth_hash_is_supported(yes[i]))
			fail_msg("should be supported: %s", yes[i]);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		if (auth_hash_is_supported(no[i]))
			fail_msg("should not be supported: %s", no[i]);
	}
	memcpy(longhash, "$6$abcdefgh$", 12);
	memset(longhash + 12, 'a', sizeof(longhash) - 13);
	longhash[sizeof(longhash) - 1] = '\0';
	assert_false(auth_hash_is_supported(longhash));
	assert_false(auth_password_verify("x", longhash));
}

/* ---- SASL helpers ------------------------------------------------------------------------- */

/* base64 of len raw bytes; static, valid until the next call. */
static const char *
b64(const void *raw, size_t len)
{
	static char out[AUTH_MAX_SASL_RESPONSE * 2];
	struct buf b;

	buf_init(&b, sizeof(out) - 1);
	assert_int_equal(base64_encode(&b, raw, len), 0);
	memcpy(out, buf_cstr(&b), b.len + 1);
	buf_deinit(&b);
	return out;
}

#define B64(lit) b64(lit, sizeof(lit) - 1)

static int
step_str(struct auth_sasl *sasl, const char *response, const char **challenge_r,
         const char **error_r)
{
	return auth_sasl_step(sasl, response, strlen(response), challenge_r, error_r);
}

static void
test_sasl_mech_parse(void **state)
{
	enum auth_sasl_mech m;

	(void)state;
	assert_int_equal(auth_sasl_mech_parse("PLAIN", &m), 0);
	assert_int_equal(m, AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_mech_parse("plain", &m), 0);
	assert_int_equal(m, AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_mech_parse("Login", &m), 0);
	assert_int_equal(m, AUTH_SASL_LOGIN);
	assert_int_equal(auth_sasl_mech_parse("CRAM-MD5", &m), -1);
	assert_int_equal(auth_sasl_mech_parse("PLAIN ", &m), -1);
	assert_int_equal(auth_sasl_mech_parse("", &m), -1);
}

/* Byte-exact LOGIN challenges: clients compare these strings. */
static void
test_sasl_login_challenges(void **state)
{
	struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	const char *ch = NULL, *error = NULL;
	struct buf d;

	(void)state;
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_string_equal(ch, "VXNlcm5hbWU6");
	buf_init(&d, 64);
	assert_int_equal(base64_decode(&d, ch, strlen(ch)), 0);
	assert_string_equal(buf_cstr(&d), "Username:");
	assert_int_equal(step_str(sasl, B64("alice@example.org"), &ch, &error),
	                 AUTH_SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6");
	buf_reset(&d);
	assert_int_equal(base64_decode(&d, ch, strlen(ch)), 0);
	assert_string_equal(buf_cstr(&d), "Password:");
	buf_deinit(&d);
	auth_sasl_free(&sasl);
	assert_null(sasl);
	auth_sasl_free(&sasl);
}

/* ---- SASL PLAIN --------------------------------------------------------------------------- */

struct plain_case {
	const char *raw; /* decoded message */
	size_t len;
	int status;
	const char *authzid, *user, *password;
};

#define PLAIN_OK(raw, z, u, p) {raw, sizeof(raw) - 1, AUTH_SASL_DONE, z, u, p}
#define PLAIN_BAD(raw) {raw, sizeof(raw) - 1, AUTH_SASL_ERROR, NULL, NULL, NULL}

static const struct plain_case plain_cases[] = {
	PLAIN_OK("\0alice@example.org\0secret", "", "alice@example.org", "secret"),
	PLAIN_OK("admin@example.org\0alice@example.org\0s3cr3t", "admin@example.org",
	         "alice@example.org", "s3cr3t"),
	PLAIN_OK("\0u\0p", "", "u", "p"),
	/* RFC 4616: passwd is any UTF-8 but NUL; spaces and 8-bit are password bytes. */
	PLAIN_OK("\0alice@example.org\0 p\xc3\xa4ss word ", "", "alice@example.org",
	         " p\xc3\xa4ss word "),
	PLAIN_OK("\0j\xc3\xb6rg@b\xc3\xbc" "cher.example\0pw", "", "j\xc3\xb6rg@b\xc3\xbc" "cher.example",
	         "pw"),
	PLAIN_BAD(""),                                  /* nothing */
	PLAIN_BAD("alice@example.org secret"),          /* no NUL at all */
	PLAIN_BAD("alice@example.org\0secret"),         /* only one NUL */
	PLAIN_BAD("\0alice@example.org\0sec\0ret"),     /* a third NUL */
	PLAIN_BAD("\0alice@example.org\0secret\0"),
	PLAIN_BAD("\0alice@example.org\0"),             /* empty password */
	PLAIN_BAD("\0\0secret"),                        /* empty user */
	PLAIN_BAD("\0\0"),
	PLAIN_BAD("\0ali\rce@example.org\0secret"),     /* CR, LF, controls in identities */
	PLAIN_BAD("\0alice@example.org\n\0secret"),
	PLAIN_BAD("\0alice\x01@example.org\0secret"),
	PLAIN_BAD("\0alice\x7f@example.org\0secret"),
	PLAIN_BAD("ad\r\nmin\0alice@example.org\0secret"),
};

static void
check_plain(size_t i, const char *initial, bool via_step)
{
	const struct plain_case *c = &plain_cases[i];
	struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	const char *ch = NULL, *error = NULL;
	int status;

	if (via_step) {
		assert_int_equal(auth_sasl_start(sasl, initial, &ch, &error), AUTH_SASL_CONTINUE);
		assert_string_equal(ch, ""); /* PLAIN's challenge is empty: "334 " / "+ " */
		status = step_str(sasl, b64(c->raw, c->len), &ch, &error);
	} else {
		status = auth_sasl_start(sasl, b64(c->raw, c->len), &ch, &error);
	}
	if (status != c->status)
		fail_msg("PLAIN case %zu (%s): status %d, want %d (%s)", i,
		         via_step ? "after a challenge" : "initial response", status, c->status,
		         status == AUTH_SASL_ERROR ? error : "-");
	if (status == AUTH_SASL_DONE) {
		assert_string_equal(auth_sasl_authzid(sasl), c->authzid);
		assert_string_equal(auth_sasl_user(sasl), c->user);
		assert_string_equal(auth_sasl_password(sasl), c->password);
	} else {
		assert_non_null(error);
		assert_string_equal(auth_sasl_user(sasl), "");
		assert_string_equal(auth_sasl_password(sasl), "");
		/* Nothing more is accepted after an error. */
		assert_int_equal(step_str(sasl, B64("\0a\0b"), &ch, &error), AUTH_SASL_ERROR);
	}
	auth_sasl_free(&sasl);
}

static void
test_sasl_plain_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		/* An empty initial response is no initial response: see test_sasl_plain_empty. */
		if (plain_cases[i].len > 0)
			check_plain(i, NULL, false); /* initial response */
		check_plain(i, NULL, true);          /* after an empty challenge */
		check_plain(i, "=", true);           /* RFC 4954 empty initial response */
	}
}

/* "=" (RFC 4954 4) and an empty string both mean "no data yet": the server asks with an empty
 * challenge, and an empty answer to that is malformed PLAIN. */
static void
test_sasl_plain_empty(void **state)
{
	static const char *const initial[] = {"=", ""};

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_PLAIN);
		const char *ch = NULL, *error = NULL;

		assert_int_equal(auth_sasl_start(sasl, initial[i], &ch, &error), AUTH_SASL_CONTINUE);
		assert_string_equal(ch, "");
		assert_int_equal(auth_sasl_step(sasl, "", 0, &ch, &error), AUTH_SASL_ERROR);
		assert_non_null(error);
		auth_sasl_free(&sasl);
	}
}

static void
test_sasl_plain_cancel(void **state)
{
	struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	const char *ch = NULL, *error = NULL;

	(void)state;
	assert_int_equal(auth_sasl_start(sasl, "=", &ch, &error), AUTH_SASL_CONTINUE);
	assert_int_equal(step_str(sasl, "*", &ch, &error), AUTH_SASL_CANCEL);
	assert_int_equal(step_str(sasl, B64("\0a\0b"), &ch, &error), AUTH_SASL_ERROR);
	assert_string_equal(auth_sasl_user(sasl), "");
	auth_sasl_free(&sasl);

	/* "*" is a cancellation only as an answer; as an initial response it is bad base64. */
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	error = NULL;
	assert_int_equal(auth_sasl_start(sasl, "*", &ch, &error), AUTH_SASL_ERROR);
	assert_non_null(error);
	auth_sasl_free(&sasl);

	/* "**" and "* " are not cancellations. */
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_int_equal(step_str(sasl, "* ", &ch, &error), AUTH_SASL_ERROR);
	auth_sasl_free(&sasl);
}

static void
test_sasl_plain_bad_base64(void **state)
{
	static const char *const bad[] = {
		"AGFsaWNlAHNlY3JldA",    /* padding missing */
		"AGFsaWNlAHNlY3JldA= ",  /* trailing space */
		" AGFsaWNlAHNlY3JldA==",
		"AGFsaWNl\r\nAHNlY3JldA==",
		"AGFsaWNlAHNlY3JldA==\r\n",
		"AGFsaW!lAHNlY3JldA==",
		"==",
		"AGFsaWNlAHNlY3JldA===",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_PLAIN);
		const char *ch = NULL, *error = NULL;

		assert_int_equal(auth_sasl_start(sasl, bad[i], &ch, &error), AUTH_SASL_ERROR);
		assert_string_equal(error, "invalid base64");
		auth_sasl_free(&sasl);

		sasl = auth_sasl_new(AUTH_SASL_PLAIN);
		error = NULL;
		assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
		assert_int_equal(step_str(sasl, bad[i], &ch, &error), AUTH_SASL_ERROR);
		assert_string_equal(error, "invalid base64");
		auth_sasl_free(&sasl);
	}
	/* The step length is what counts, not a NUL: a NUL inside is bad base64. */
	{
		struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_PLAIN);
		const char *ch = NULL, *error = NULL;

		assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
		assert_int_equal(auth_sasl_step(sasl, "AGFs\0WNlAHNlY3JldA==", 20, &ch, &error),
		                 AUTH_SASL_ERROR);
		auth_sasl_free(&sasl);
	}
}

static void
test_sasl_plain_limits(void **state)
{
	char raw[AUTH_MAX_SASL_RESPONSE], *resp;
	struct auth_sasl *sasl;
	const char *ch = NULL, *error = NULL;
	size_t n;

	(void)state;
	/* Longest user name and password: accepted. */
	raw[0] = '\0';
	memset(raw + 1, 'u', AUTH_MAX_ADDRESS);
	raw[1 + AUTH_MAX_ADDRESS] = '\0';
	memset(raw + 2 + AUTH_MAX_ADDRESS, 'p', AUTH_MAX_PASSWORD);
	n = 2 + AUTH_MAX_ADDRESS + AUTH_MAX_PASSWORD;
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, b64(raw, n), &ch, &error), AUTH_SASL_DONE);
	assert_int_equal(strlen(auth_sasl_user(sasl)), AUTH_MAX_ADDRESS);
	assert_int_equal(strlen(auth_sasl_password(sasl)), AUTH_MAX_PASSWORD);
	auth_sasl_free(&sasl);

	/* One byte more password. */
	raw[n] = 'p';
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, b64(raw, n + 1), &ch, &error), AUTH_SASL_ERROR);
	auth_sasl_free(&sasl);

	/* One byte more user name. */
	memset(raw + 1, 'u', AUTH_MAX_ADDRESS + 1);
	raw[2 + AUTH_MAX_ADDRESS] = '\0';
	raw[3 + AUTH_MAX_ADDRESS] = 'p';
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, b64(raw, 4 + AUTH_MAX_ADDRESS), &ch, &error),
	                 AUTH_SASL_ERROR);
	auth_sasl_free(&sasl);
	/* Over-long authzid. */
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	memset(raw, 'z', AUTH_MAX_ADDRESS + 1);
	memcpy(raw + AUTH_MAX_ADDRESS + 1, "\0u\0p", 4);
	assert_int_equal(auth_sasl_start(sasl, b64(raw, AUTH_MAX_ADDRESS + 5), &ch, &error),
	                 AUTH_SASL_ERROR);
	auth_sasl_free(&sasl);

	/* A response longer than AUTH_MAX_SASL_RESPONSE is refused before decoding, both as an
	 * initial response and as a step. */
	resp = malloc(AUTH_MAX_SASL_RESPONSE + 5);
	assert_non_null(resp);
	memset(resp, 'A', AUTH_MAX_SASL_RESPONSE + 4);
	resp[AUTH_MAX_SASL_RESPONSE + 4] = '\0';
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, resp, &ch, &error), AUTH_SASL_ERROR);
	assert_string_equal(error, "response too long");
	auth_sasl_free(&sasl);
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_int_equal(auth_sasl_step(sasl, resp, AUTH_MAX_SASL_RESPONSE + 4, &ch, &error),
	                 AUTH_SASL_ERROR);
	assert_string_equal(error, "response too long");
	auth_sasl_free(&sasl);
	/* Exactly at the limit it is decoded (and then fails as PLAIN: no NULs). */
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_int_equal(auth_sasl_step(sasl, resp, AUTH_MAX_SASL_RESPONSE, &ch, &error),
	                 AUTH_SASL_ERROR);
	assert_string_not_equal(error, "response too long");
	auth_sasl_free(&sasl);
	free(resp);
}

static void
test_sasl_misuse(void **state)
{
	struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	const char *ch = NULL, *error = NULL;

	(void)state;
	/* A step before start. */
	assert_int_equal(step_str(sasl, B64("\0a\0b"), &ch, &error), AUTH_SASL_ERROR);
	auth_sasl_free(&sasl);

	/* Start twice; a step after DONE. */
	sasl = auth_sasl_new(AUTH_SASL_PLAIN);
	assert_string_equal(auth_sasl_user(sasl), "");
	assert_int_equal(auth_sasl_start(sasl, B64("\0a\0b"), &ch, &error), AUTH_SASL_DONE);
	assert_string_equal(auth_sasl_user(sasl), "a");
	assert_int_equal(step_str(sasl, B64("\0c\0d"), &ch, &error), AUTH_SASL_ERROR);
	assert_string_equal(auth_sasl_user(sasl), "");
	auth_sasl_free(&sasl);
	sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_ERROR);
	auth_sasl_free(&sasl);
}

/* ---- SASL LOGIN --------------------------------------------------------------------------- */

static void
test_sasl_login_exchange(void **state)
{
	struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	const char *ch = NULL, *error = NULL;

	(void)state;
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_string_equal(ch, "VXNlcm5hbWU6");
	assert_int_equal(step_str(sasl, B64("alice@example.org"), &ch, &error),
	                 AUTH_SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6");
	assert_string_equal(auth_sasl_user(sasl), ""); /* not before DONE */
	assert_int_equal(step_str(sasl, B64("p\xc3\xa4ss word"), &ch, &error), AUTH_SASL_DONE);
	assert_string_equal(auth_sasl_user(sasl), "alice@example.org");
	assert_string_equal(auth_sasl_password(sasl), "p\xc3\xa4ss word");
	assert_string_equal(auth_sasl_authzid(sasl), "");
	auth_sasl_free(&sasl);

	/* "=" is the same as no initial response. */
	sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	assert_int_equal(auth_sasl_start(sasl, "=", &ch, &error), AUTH_SASL_CONTINUE);
	assert_string_equal(ch, "VXNlcm5hbWU6");
	auth_sasl_free(&sasl);
}

static void
test_sasl_login_initial_response(void **state)
{
	struct auth_sasl *sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	const char *ch = NULL, *error = NULL;

	(void)state;
	/* AUTH LOGIN <base64 user>: straight to the password. */
	assert_int_equal(auth_sasl_start(sasl, B64("bob@example.org"), &ch, &error),
	                 AUTH_SASL_CONTINUE);
	assert_string_equal(ch, "UGFzc3dvcmQ6");
	assert_int_equal(step_str(sasl, B64("hunter2"), &ch, &error), AUTH_SASL_DONE);
	assert_string_equal(auth_sasl_user(sasl), "bob@example.org");
	assert_string_equal(auth_sasl_password(sasl), "hunter2");
	auth_sasl_free(&sasl);
}

static void
test_sasl_login_cancel_and_errors(void **state)
{
	struct auth_sasl *sasl;
	const char *ch = NULL, *error = NULL;

	(void)state;
	/* Cancel at the user name and at the password. */
	sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
	assert_int_equal(step_str(sasl, "*", &ch, &error), AUTH_SASL_CANCEL);
	auth_sasl_free(&sasl);
	sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	assert_int_equal(auth_sasl_start(sasl, B64("bob@example.org"), &ch, &error),
	                 AUTH_SASL_CONTINUE);
	assert_int_equal(step_str(sasl, "*", &ch, &error), AUTH_SASL_CANCEL);
	assert_int_equal(step_str(sasl, B64("hunter2"), &ch, &error), AUTH_SASL_ERROR);
	assert_string_equal(auth_sasl_user(sasl), "");
	auth_sasl_free(&sasl);

	/* Empty user, NUL or CR in the user, empty password, NUL in the password, bad base64. */
	{
		static const struct {
			const char *user;
			size_t ulen;
			const char *pass;
			size_t plen;
			bool user_ok;
		} cases[] = {
			{"", 0, "x", 1, false},
			{"bo\0b", 4, "x", 1, false},
			{"bob\r\n", 5, "x", 1, false},
			{"bob", 3, "", 0, true},
			{"bob", 3, "hun\0ter2", 8, true},
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			sasl = auth_sasl_new(AUTH_SASL_LOGIN);
			error = NULL;
			assert_int_equal(auth_sasl_start(sasl, NULL, &ch, &error), AUTH_SASL_CONTINUE);
			if (!cases[i].user_ok) {
				assert_int_equal(step_str(sasl, b64(cases[i].user, cases[i].ulen), &ch,
				                          &error), AUTH_SASL_ERROR);
				assert_non_null(error);
			} else {
				assert_int_equal(step_str(sasl, b64(cases[i].user, cases[i].ulen), &ch,
				                          &error), AUTH_SASL_CONTINUE);
				assert_int_equal(step_str(sasl, b64(cases[i].pass, cases[i].plen), &ch,
				                          &error), AUTH_SASL_ERROR);
				assert_non_null(error);
			}
			auth_sasl_free(&sasl);
		}
	}
	sasl = auth_sasl_new(AUTH_SASL_LOGIN);
	assert_int_equal(auth_sasl_start(sasl, "Ym9i=", &ch, &error), AUTH_SASL_ERROR);
	assert_string_equal(error, "invalid base64");
	auth_sasl_free(&sasl);
}

/* ---- the verifier against a real store ---------------------------------------------------- */

struct fixture {
	char dir[PATH_MAX];
	char db[PATH_MAX + 16];
	struct store *store;
	struct auth *auth;
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static const struct {
	const char *address, *password, *scheme; /* scheme NULL: password is a ready hash */
} accounts[] = {
	{"alice@example.org", "secret", "yescrypt"},
	{"carol@example.org", "open sesame", "bcrypt"},
	{"dave@example.org", "{SHA512-CRYPT}" SHA512_KNOWN, NULL},   /* "correct horse" */
	{"erin@example.org", "$1$abc$OGyl6dDvZCDiGmIVbeuCq/", NULL}, /* MD5-crypt of "x" */
	{"frank@example.org", "secret", "sha512-crypt"},              /* disabled by a test */
};

static int
job_populate(struct store_txn *txn, void *ctx)
{
	int ret;

	(void)ctx;
	ret = store_txn_domain_add(txn, "example.org");
	for (size_t i = 0; i < sizeof(accounts) / sizeof(accounts[0]) && ret == STORE_OK; i++) {
		char hash[AUTH_HASH_SIZE];
		const char *error = NULL;
		int64_t id;

		if (accounts[i].scheme == NULL) {
			if (str_copy(hash, sizeof(hash), accounts[i].password) < 0)
				return STORE_ERR_INVALID;
		} else if (auth_password_hash(accounts[i].password, accounts[i].scheme, hash,
		                              &error) < 0) {
			store_txn_error(txn, "hash: %s", error);
			return STORE_ERR_INVALID;
		}
		ret = store_txn_account_add(txn, accounts[i].address, hash, &id);
	}
	return ret;
}

static int
store_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	const char *base = getenv("POSTAMT_TEST_TMP");
	char blobs[PATH_MAX + 16];
	struct store_options so;
	struct auth_options ao = {.workers = 2, .password_scheme = "yescrypt"};
	const char *error = NULL;
	int ret;

	if (fx == NULL)
		return -1;
	*state = fx;
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	(void)mkdir(base, 0700);
	snprintf(fx->dir, sizeof(fx->dir), "%s/test_auth.XXXXXX", base);
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->db, sizeof(fx->db), "%s/postamt.db", fx->dir);
	snprintf(blobs, sizeof(blobs), "%s/blobs", fx->dir);
	memset(&so, 0, sizeof(so));
	so.database = fx->db;
	so.blob_dir = blobs;
	so.sync_threads = 0;
	so.batch_max = 16;
	so.blob_orphan_age = 3600 * 1000;
	so.blob_sweep_interval = 0;
	so.background = false;
	if (store_open(&so, &fx->store, &error) < 0) {
		fprintf(stderr, "store_open: %s\n", error);
		return -1;
	}
	ret = store_exec(fx->store, job_populate, NULL, &error);
	if (ret != STORE_OK) {
		fprintf(stderr, "populate: %s\n", error);
		return -1;
	}
	if (auth_new(fx->store, &ao, &fx->auth, &error) < 0) {
		fprintf(stderr, "auth_new: %s\n", error);
		return -1;
	}
	return 0;
}

static int
store_teardown(void **state)
{
	struct fixture *fx = *state;
	int ret = 0;

	if (fx == NULL)
		return 0;
	auth_free(&fx->auth);
	store_close(&fx->store);
	if (fx->dir[0] != '\0' && strstr(fx->dir, "XXXXXX") == NULL)
		ret = nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return ret;
}

static void
test_verify_sync(void **state)
{
	struct fixture *fx = *state;
	struct store_account acct;
	char longuser[AUTH_MAX_ADDRESS + 20];

	assert_int_equal(auth_verify(fx->auth, "alice@example.org", "secret", &acct), AUTH_OK);
	assert_string_equal(acct.address, "alice@example.org");
	assert_true(acct.id > 0);
	assert_false(acct.disabled);
	/* Addresses are compared case-insensitively. */
	assert_int_equal(auth_verify(fx->auth, "Alice@Example.ORG", "secret", NULL), AUTH_OK);
	assert_int_equal(auth_verify(fx->auth, "carol@example.org", "open sesame", &acct), AUTH_OK);
	assert_int_equal(auth_verify(fx->auth, "dave@example.org", "correct horse", &acct),
	                 AUTH_OK);

	/* One answer for every kind of failure; account_r is cleared. */
	assert_int_equal(auth_verify(fx->auth, "alice@example.org", "Secret", &acct), AUTH_FAILED);
	assert_int_equal(acct.id, 0);
	assert_string_equal(acct.pwhash, "");
	assert_int_equal(auth_verify(fx->auth, "nobody@example.org", "secret", &acct),
	                 AUTH_FAILED);
	assert_int_equal(auth_verify(fx->auth, "alice@example.net", "secret", &acct), AUTH_FAILED);
	assert_int_equal(auth_verify(fx->auth, "erin@example.org", "x", &acct), AUTH_FAILED);
	assert_int_equal(auth_verify(fx->auth, "alice@example.org", "", &acct), AUTH_FAILED);
	assert_int_equal(auth_verify(fx->auth, "", "secret", &acct), AUTH_FAILED);
	memset(longuser, 'a', sizeof(longuser) - 1);
	longuser[sizeof(longuser) - 1] = '\0';
	assert_int_equal(auth_verify(fx->auth, longuser, "secret", &acct), AUTH_FAILED);
}

/* Changes the database behind the store's back, as another process (or a broken disk) would:
 * the store has no call that disables an account, nor one that breaks itself. */
static void
db_exec(const struct fixture *fx, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	assert_int_equal(sqlite3_open_v2(fx->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		char msg[256];

		snprintf(msg, sizeof(msg), "%s", err != NULL ? err : "?");
		sqlite3_free(err);
		sqlite3_close(db);
		fail_msg("%s: %s", sql, msg);
	}
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* A disabled account fails like a wrong password, even with the right one. */
static void
test_verify_disabled(void **state)
{
	struct fixture *fx = *state;
	struct store_account acct;

	assert_int_equal(auth_verify(fx->auth, "frank@example.org", "secret", &acct), AUTH_OK);
	db_exec(fx, "UPDATE accounts SET disabled = 1 WHERE address = 'frank@example.org'");
	assert_int_equal(auth_verify(fx->auth, "frank@example.org", "secret", &acct), AUTH_FAILED);
	assert_int_equal(acct.id, 0);
	assert_int_equal(auth_verify(fx->auth, "frank@example.org", "wrong", &acct), AUTH_FAILED);
}

static void
tempfail_cb(enum auth_result result, const struct store_account *account, void *ctx)
{
	int *r = ctx;

	*r = account == NULL ? (int)result : -1;
}

/* A store that cannot answer gives AUTH_TEMPFAIL (retry later), not AUTH_FAILED. */
static void
test_verify_store_error(void **state)
{
	struct fixture *fx = *state;
	int async_result = -2;

	db_exec(fx, "ALTER TABLE accounts RENAME TO accounts_gone");
	assert_int_equal(auth_verify(fx->auth, "alice@example.org", "secret", NULL),
	                 AUTH_TEMPFAIL);
	assert_int_equal(auth_verify(fx->auth, "nobody@example.org", "secret", NULL),
	                 AUTH_TEMPFAIL);
	auth_verify_async(fx->auth, "alice@example.org", "secret", tempfail_cb, &async_result);
	auth_free(&fx->auth); /* waits for the callback */
	assert_int_equal(async_result, AUTH_TEMPFAIL);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* An unknown user costs a hash too (the dummy hash): without it, the answer would come orders
 * of magnitude faster than for a wrong password. The bound is loose on purpose. */
static void
test_verify_unknown_user_costs_a_hash(void **state)
{
	struct fixture *fx = *state;
	double t0, wrong = 0, unknown = 0;

	for (int i = 0; i < 3; i++) {
		t0 = now_ms();
		assert_int_equal(auth_verify(fx->auth, "alice@example.org", "guess", NULL),
		                 AUTH_FAILED);
		wrong += now_ms() - t0;
		t0 = now_ms();
		assert_int_equal(auth_verify(fx->auth, "mallory@example.org", "guess", NULL),
		                 AUTH_FAILED);
		unknown += now_ms() - t0;
	}
	if (unknown < wrong / 4)
		fail_msg("unknown user took %.1f ms, wrong password %.1f ms", unknown, wrong);
}

struct async_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int calls;
	unsigned int ok, failed, tempfail;
	bool wrong_thread;
	bool bad_account;
	pthread_t main_thread;
};

static void
async_cb(enum auth_result result, const struct store_account *account, void *ctx)
{
	struct async_wait *w = ctx;

	pthread_mutex_lock(&w->lock);
	if (pthread_equal(pthread_self(), w->main_thread))
		w->wrong_thread = true;
	switch (result) {
	case AUTH_OK:
		w->ok++;
		if (account == NULL || strcmp(account->address, "alice@example.org") != 0)
			w->bad_account = true;
		break;
	case AUTH_FAILED:
		w->failed++;
		if (account != NULL)
			w->bad_account = true;
		break;
	case AUTH_TEMPFAIL:
		w->tempfail++;
		break;
	}
	w->calls++;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void
test_verify_async(void **state)
{
	struct fixture *fx = *state;
	struct async_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER,
	                       .cond = PTHREAD_COND_INITIALIZER};
	char password[32];

	w.main_thread = pthread_self();
	/* The password buffer may be reused as soon as the call returns: it was copied. */
	snprintf(password, sizeof(password), "secret");
	auth_verify_async(fx->auth, "alice@example.org", password, async_cb, &w);
	memset(password, 'X', sizeof(password) - 1);
	auth_verify_async(fx->auth, "alice@example.org", "wrong", async_cb, &w);
	auth_verify_async(fx->auth, "nobody@example.org", "secret", async_cb, &w);
	auth_verify_async(fx->auth, "ALICE@EXAMPLE.ORG", "secret", async_cb, &w);

	pthread_mutex_lock(&w.lock);
	while (w.calls < 4) {
		struct timespec deadline;

		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_sec += 30;
		if (pthread_cond_timedwait(&w.cond, &w.lock, &deadline) != 0)
			break;
	}
	pthread_mutex_unlock(&w.lock);
	assert_int_equal(w.calls, 4);
	assert_int_equal(w.ok, 2);
	assert_int_equal(w.failed, 2);
	assert_int_equal(w.tempfail, 0);
	assert_false(w.wrong_thread);
	assert_false(w.bad_account);
}

/* auth_free runs the callbacks of verifications still queued. */
static void
test_verify_async_free_drains(void **state)
{
	struct fixture *fx = *state;
	struct async_wait w = {.lock = PTHREAD_MUTEX_INITIALIZER,
	                       .cond = PTHREAD_COND_INITIALIZER};

	w.main_thread = pthread_self();
	for (int i = 0; i < 6; i++)
		auth_verify_async(fx->auth, "alice@example.org", i % 2 ? "secret" : "nope", async_cb,
		                  &w);
	auth_free(&fx->auth);
	assert_null(fx->auth);
	assert_int_equal(w.calls, 6);
	assert_int_equal(w.ok, 3);
	assert_int_equal(w.failed, 3);
}

static void
test_auth_new_errors(void **state)
{
	struct fixture *fx = *state;
	struct auth_options ao = {.workers = 1, .password_scheme = "md5"};
	struct auth *auth = NULL;
	const char *error = NULL;

	assert_int_equal(auth_new(fx->store, &ao, &auth, &error), -1);
	assert_non_null(error);
	assert_null(auth);
	ao.password_scheme = "sha512-crypt";
	ao.workers = 0;
	error = NULL;
	assert_int_equal(auth_new(fx->store, &ao, &auth, &error), -1);
	assert_non_null(error);
	ao.workers = 1;
	assert_int_equal(auth_new(fx->store, &ao, &auth, &error), 0);
	assert_int_equal(auth_verify(auth, "alice@example.org", "secret", NULL), AUTH_OK);
	auth_free(&auth);
	assert_null(auth);
	auth_free(&auth);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_each_scheme),
		cmocka_unit_test(test_hash_errors),
		cmocka_unit_test(test_known_hashes),
		cmocka_unit_test(test_hash_is_supported),
		cmocka_unit_test(test_sasl_mech_parse),
		cmocka_unit_test(test_sasl_login_challenges),
		cmocka_unit_test(test_sasl_plain_vectors),
		cmocka_unit_test(test_sasl_plain_empty),
		cmocka_unit_test(test_sasl_plain_cancel),
		cmocka_unit_test(test_sasl_plain_bad_base64),
		cmocka_unit_test(test_sasl_plain_limits),
		cmocka_unit_test(test_sasl_misuse),
		cmocka_unit_test(test_sasl_login_exchange),
		cmocka_unit_test(test_sasl_login_initial_response),
		cmocka_unit_test(test_sasl_login_cancel_and_errors),
		cmocka_unit_test_setup_teardown(test_verify_sync, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_verify_disabled, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_verify_store_error, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_verify_unknown_user_costs_a_hash, store_setup,
		                                store_teardown),
		cmocka_unit_test_setup_teardown(test_verify_async, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_verify_async_free_drains, store_setup,
		                                store_teardown),
		cmocka_unit_test_setup_teardown(test_auth_new_errors, store_setup, store_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
