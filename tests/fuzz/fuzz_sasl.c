/* Fuzz target for SASL PLAIN/LOGIN (auth/sasl.c) and base64 decoding (core/base64.c).
 *
 * The input is split at '\n' into lines, as the protocol layers would hand them over (a '\r'
 * stays in the line: a careless caller might leave it). The first line is the initial response,
 * the others are answers to challenges; both mechanisms get the same lines. Besides crashes and
 * sanitizer reports, it aborts when an invariant breaks: a decoded-then-encoded base64 string
 * differs from the input (decoding is strict, so it must be canonical), a challenge is not one
 * of the three defined, or finished credentials are empty, too long or hold control characters
 * in an identity. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "core/base64.h"
#include "core/limits.h"

/* Lines fed per exchange: a real exchange takes at most three. */
#define FUZZ_MAX_LINES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_identity(const char *s, bool may_be_empty)
{
	size_t len = strlen(s);

	if ((len == 0 && !may_be_empty) || len > AUTH_MAX_ADDRESS)
		abort();
	for (size_t i = 0; i < len; i++) {
		if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
			abort();
	}
}

static void
check_status(const struct auth_sasl *sasl, int status, const char *challenge, const char *error)
{
	switch (status) {
	case AUTH_SASL_CONTINUE:
		if (strcmp(challenge, "") != 0 && strcmp(challenge, "VXNlcm5hbWU6") != 0 &&
		    strcmp(challenge, "UGFzc3dvcmQ6") != 0)
			abort();
		break;
	case AUTH_SASL_DONE: {
		size_t plen = strlen(auth_sasl_password(sasl));

		check_identity(auth_sasl_user(sasl), false);
		check_identity(auth_sasl_authzid(sasl), true);
		if (plen == 0 || plen > AUTH_MAX_PASSWORD)
			abort();
		break;
	}
	case AUTH_SASL_CANCEL:
		break;
	case AUTH_SASL_ERROR:
		if (error == NULL || error[0] == '\0')
			abort();
		break;
	default:
		abort();
	}
}

/* One exchange over the lines of the input. */
static void
run_exchange(enum auth_sasl_mech mech, const uint8_t *data, size_t size)
{
	struct auth_sasl *sasl = auth_sasl_new(mech);
	const uint8_t *p = data, *end = data + size;
	const char *challenge = NULL, *error = NULL;
	int status;

	for (int line = 0; line < FUZZ_MAX_LINES && p <= end; line++) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		/* An exact-size copy: reading past len is a sanitizer report, not a silent read of
		 * the next line. The initial response is a C string, so it gets a NUL. */
		char *copy = malloc(len + 1);

		if (copy == NULL)
			abort();
		if (len > 0)
			memcpy(copy, p, len);
		copy[len] = '\0';
		error = NULL;
		if (line == 0)
			status = auth_sasl_start(sasl, copy, &challenge, &error);
		else
			status = auth_sasl_step(sasl, copy, len, &challenge, &error);
		check_status(sasl, status, challenge, error);
		free(copy);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	auth_sasl_free(&sasl);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf dec, enc;

	/* Strict base64: whatever decodes must encode back to exactly the input. */
	buf_init(&dec, AUTH_MAX_SASL_RESPONSE);
	buf_init(&enc, AUTH_MAX_SASL_RESPONSE * 2);
	if (base64_decode(&dec, (const char *)data, size) == 0) {
		if (dec.len != size / 4 * 3 - (size > 0 && data[size - 1] == '=') -
		               (size > 1 && data[size - 2] == '='))
			abort();
		if (base64_encode(&enc, dec.data, dec.len) < 0 || enc.len != size ||
		    (size > 0 && memcmp(enc.data, data, size) != 0))
			abort();
	} else if (dec.len != 0) {
		abort(); /* a failed decode must not leave bytes behind */
	}
	buf_deinit_secure(&dec);
	buf_deinit(&enc);

	run_exchange(AUTH_SASL_PLAIN, data, size);
	run_exchange(AUTH_SASL_LOGIN, data, size);
	return 0;
}
