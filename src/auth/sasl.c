/* Server side of SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login-00), shared by SMTP
 * AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 3501 6.2.2, SASL-IR RFC 4959) and POP3 AUTH (RFC 5034).
 *
 * The protocol layer hands over base64 lines; this file decodes them and keeps the state:
 *   PLAIN: [initial] -> "" challenge -> "authzid NUL authcid NUL passwd" -> done
 *   LOGIN: [initial = user] -> "Username:" -> user -> "Password:" -> password -> done
 * Invariants: every response is bounded (AUTH_MAX_SASL_RESPONSE) before it is decoded; decoded
 * bytes only live in a buffer that is wiped (buf_deinit_secure) and in the fixed fields below,
 * which auth_sasl_free() and every failure wipe; identities never hold control characters, so
 * they are safe to pass on (after log_sanitize) and to look up. Nothing here logs. */
#include "auth/auth.h"
#include "core/base64.h"
#include "core/limits.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* base64("Username:") and base64("Password:"): what every LOGIN client expects, byte for byte. */
#define LOGIN_CHALLENGE_USER "VXNlcm5hbWU6"
#define LOGIN_CHALLENGE_PASS "UGFzc3dvcmQ6"
/* Bytes that the longest accepted response decodes to. */
#define SASL_MAX_DECODED (AUTH_MAX_SASL_RESPONSE / 4 * 3)

enum sasl_state {
	SASL_STATE_NEW,        /* auth_sasl_start not called yet */
	SASL_STATE_PLAIN_WAIT, /* PLAIN without initial response: waiting for the message */
	SASL_STATE_LOGIN_USER, /* LOGIN: "Username:" sent */
	SASL_STATE_LOGIN_PASS, /* LOGIN: "Password:" sent */
	SASL_STATE_DONE,       /* credentials complete */
	SASL_STATE_FAILED,     /* error or cancel: nothing more is accepted */
};

struct auth_sasl {
	enum auth_sasl_mech mech;
	enum sasl_state state;
	char authzid[AUTH_MAX_ADDRESS + 1];   /* "" when none */
	char user[AUTH_MAX_ADDRESS + 1];      /* authcid */
	char password[AUTH_MAX_PASSWORD + 1]; /* wiped on failure and free */
};

int
auth_sasl_mech_parse(const char *name, enum auth_sasl_mech *r)
{
	if (strcasecmp(name, "PLAIN") == 0) {
		*r = AUTH_SASL_PLAIN;
		return 0;
	}
	if (strcasecmp(name, "LOGIN") == 0) {
		*r = AUTH_SASL_LOGIN;
		return 0;
	}
	return -1;
}

struct auth_sasl *
auth_sasl_new(enum auth_sasl_mech mech)
{
	struct auth_sasl *sasl = xcalloc(1, sizeof(*sasl));

	sasl->mech = mech;
	sasl->state = SASL_STATE_NEW;
	return sasl;
}

void
auth_sasl_free(struct auth_sasl **saslp)
{
	struct auth_sasl *sasl = *saslp;

	if (sasl == NULL)
		return;
	explicit_bzero(sasl, sizeof(*sasl));
	free(sasl);
	*saslp = NULL;
}

/* Ends the exchange for good and forgets whatever had been received. */
static int
sasl_fail(struct auth_sasl *sasl, int status, const char *error, const char **error_r)
{
	explicit_bzero(sasl->authzid, sizeof(sasl->authzid));
	explicit_bzero(sasl->user, sizeof(sasl->user));
	explicit_bzero(sasl->password, sizeof(sasl->password));
	sasl->state = SASL_STATE_FAILED;
	if (status == AUTH_SASL_ERROR)
		*error_r = error;
	return status;
}

/* Copies an identity (authcid, authzid, LOGIN user name). Control characters, NUL, CR and LF
 * included, are refused: the name goes into lookups, logs and replies. 8-bit bytes are allowed
 * for internationalised addresses (RFC 6531). */
static int
copy_identity(char *dst, size_t dstsize, const uint8_t *p, size_t len, bool may_be_empty)
{
	if ((len == 0 && !may_be_empty) || len >= dstsize)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return -1;
	}
	memcpy(dst, p, len);
	dst[len] = '\0';
	return 0;
}

/* Copies a password: any byte but NUL (RFC 4616 passwd = 1*SAFE, SAFE excludes only NUL), at
 * least one, at most AUTH_MAX_PASSWORD. */
static int
copy_password(char *dst, size_t dstsize, const uint8_t *p, size_t len)
{
	if (len == 0 || len >= dstsize || memchr(p, '\0', len) != NULL)
		return -1;
	memcpy(dst, p, len);
	dst[len] = '\0';
	return 0;
}

/* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd */
static int
plain_parse(struct auth_sasl *sasl, const uint8_t *d, size_t len, const char **error_r)
{
	const uint8_t *end = d + len, *nul1, *nul2;

	nul1 = memchr(d, '\0', len);
	nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1)) : NULL;
	if (nul2 == NULL) {
		*error_r = "PLAIN: expected authzid NUL authcid NUL password";
		return -1;
	}
	if (copy_identity(sasl->authzid, sizeof(sasl->authzid), d, (size_t)(nul1 - d), true) < 0) {
		*error_r = "PLAIN: invalid authorization identity";
		return -1;
	}
	if (copy_identity(sasl->user, sizeof(sasl->user), nul1 + 1, (size_t)(nul2 - nul1 - 1),
	                  false) < 0) {
		*error_r = "PLAIN: invalid or empty user name";
		return -1;
	}
	if (copy_password(sasl->password, sizeof(sasl->password), nul2 + 1,
	                  (size_t)(end - nul2 - 1)) < 0) {
		*error_r = "PLAIN: empty, too long or invalid password";
		return -1;
	}
	return 0;
}

/* Decodes one response and advances the state. Not for "*" (see auth_sasl_step). */
static int
sasl_feed(struct auth_sasl *sasl, const char *b64, size_t len, const char **challenge_r,
          const char **error_r)
{
	struct buf dec;
	const uint8_t *d;
	const char *error = NULL;
	int status = AUTH_SASL_ERROR;

	if (len > AUTH_MAX_SASL_RESPONSE)
		return sasl_fail(sasl, AUTH_SASL_ERROR, "response too long", error_r);
	buf_init(&dec, SASL_MAX_DECODED);
	if (base64_decode(&dec, b64, len) < 0) {
		buf_deinit_secure(&dec);
		return sasl_fail(sasl, AUTH_SASL_ERROR, "invalid base64", error_r);
	}
	/* An empty response leaves dec.data NULL; the parsers get a valid pointer either way. */
	d = dec.data != NULL ? dec.data : (const uint8_t *)"";
	switch (sasl->state) {
	case SASL_STATE_PLAIN_WAIT:
		if (plain_parse(sasl, d, dec.len, &error) == 0) {
			sasl->state = SASL_STATE_DONE;
			status = AUTH_SASL_DONE;
		}
		break;
	case SASL_STATE_LOGIN_USER:
		if (copy_identity(sasl->user, sizeof(sasl->user), d, dec.len, false) < 0) {
			error = "LOGIN: invalid or empty user name";
		} else {
			sasl->state = SASL_STATE_LOGIN_PASS;
			*challenge_r = LOGIN_CHALLENGE_PASS;
			status = AUTH_SASL_CONTINUE;
		}
		break;
	case SASL_STATE_LOGIN_PASS:
		if (copy_password(sasl->password, sizeof(sasl->password), d, dec.len) < 0) {
			error = "LOGIN: empty, too long or invalid password";
		} else {
			sasl->state = SASL_STATE_DONE;
			status = AUTH_SASL_DONE;
		}
		break;
	default:
		PANIC("sasl_feed in state %d", (int)sasl->state);
	}
	buf_deinit_secure(&dec);
	if (status == AUTH_SASL_ERROR)
		return sasl_fail(sasl, AUTH_SASL_ERROR, error, error_r);
	return status;
}

int
auth_sasl_start(struct auth_sasl *sasl, const char *initial, const char **challenge_r,
                const char **error_r)
{
	size_t len;

	*challenge_r = "";
	if (sasl->state != SASL_STATE_NEW)
		return sasl_fail(sasl, AUTH_SASL_ERROR, "exchange already started", error_r);
	sasl->state = sasl->mech == AUTH_SASL_PLAIN ? SASL_STATE_PLAIN_WAIT : SASL_STATE_LOGIN_USER;
	/* RFC 4954 4: "=" is an initial response of zero length. Both mechanisms are client-first
	 * and an empty message is useless to them, so it is taken like no initial response: the
	 * server asks (Dovecot and Postfix do the same). */
	if (initial == NULL || initial[0] == '\0' || strcmp(initial, "=") == 0) {
		if (sasl->mech == AUTH_SASL_LOGIN)
			*challenge_r = LOGIN_CHALLENGE_USER;
		return AUTH_SASL_CONTINUE;
	}
	/* Bounded strlen: sasl_feed refuses anything longer anyway. A "*" here is not a
	 * cancellation (RFC 4954 defines that only as an answer to a challenge); it fails as
	 * invalid base64. */
	len = strnlen(initial, AUTH_MAX_SASL_RESPONSE + 1);
	return sasl_feed(sasl, initial, len, challenge_r, error_r);
}

int
auth_sasl_step(struct auth_sasl *sasl, const char *response, size_t len, const char **challenge_r,
               const char **error_r)
{
	*challenge_r = "";
	if (sasl->state != SASL_STATE_PLAIN_WAIT && sasl->state != SASL_STATE_LOGIN_USER &&
	    sasl->state != SASL_STATE_LOGIN_PASS)
		return sasl_fail(sasl, AUTH_SASL_ERROR, "no exchange in progress", error_r);
	/* RFC 4954 4, RFC 3501 6.2.2, RFC 5034 4: a line of a single "*" cancels. */
	if (len == 1 && response[0] == '*')
		return sasl_fail(sasl, AUTH_SASL_CANCEL, NULL, error_r);
	return sasl_feed(sasl, response, len, challenge_r, error_r);
}

const char *
auth_sasl_user(const struct auth_sasl *sasl)
{
	return sasl->state == SASL_STATE_DONE ? sasl->user : "";
}

const char *
auth_sasl_password(const struct auth_sasl *sasl)
{
	return sasl->state == SASL_STATE_DONE ? sasl->password : "";
}

const char *
auth_sasl_authzid(const struct auth_sasl *sasl)
{
	return sasl->state == SASL_STATE_DONE ? sasl->authzid : "";
}
