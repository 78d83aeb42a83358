/* Base64 (core/base64.c): RFC 4648 section 10 vectors, and the strictness that SASL relies on:
 * bad characters, bad padding, whitespace and the output buffer's max all fail without
 * changing the output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "core/base64.h"

static const struct {
	const char *plain, *b64;
} rfc4648_vectors[] = {
	{"", ""},
	{"f", "Zg=="},
	{"fo", "Zm8="},
	{"foo", "Zm9v"},
	{"foob", "Zm9vYg=="},
	{"fooba", "Zm9vYmE="},
	{"foobar", "Zm9vYmFy"},
};

static void
test_rfc4648_encode(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rfc4648_vectors) / sizeof(rfc4648_vectors[0]); i++) {
		struct buf b;

		buf_init(&b, 1024);
		assert_int_equal(base64_encode(&b, rfc4648_vectors[i].plain,
		                               strlen(rfc4648_vectors[i].plain)), 0);
		assert_string_equal(buf_cstr(&b), rfc4648_vectors[i].b64);
		buf_deinit(&b);
	}
}

static void
test_rfc4648_decode(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rfc4648_vectors) / sizeof(rfc4648_vectors[0]); i++) {
		struct buf b;

		buf_init(&b, 1024);
		assert_int_equal(base64_decode(&b, rfc4648_vectors[i].b64,
		                               strlen(rfc4648_vectors[i].b64)), 0);
		assert_int_equal(b.len, strlen(rfc4648_vectors[i].plain));
		assert_string_equal(buf_cstr(&b), rfc4648_vectors[i].plain);
		buf_deinit_secure(&b);
	}
}

/* Every byte value and every length up to 3 blocks survive a round trip. */
static void
test_roundtrip_binary(void **state)
{
	uint8_t data[256];

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(255 - i);
	for (size_t len = 0; len <= sizeof(data); len++) {
		struct buf enc, dec;

		buf_init(&enc, 1024);
		buf_init(&dec, 1024);
		assert_int_equal(base64_encode(&enc, data, len), 0);
		assert_int_equal(enc.len, (len + 2) / 3 * 4);
		assert_int_equal(base64_decode(&dec, (const char *)enc.data, enc.len), 0);
		assert_int_equal(dec.len, len);
		if (len > 0)
			assert_memory_equal(dec.data, data, len);
		buf_deinit(&enc);
		buf_deinit(&dec);
	}
}

/* Each of these must fail and leave the output as it was ("keep"). */
static void
expect_reject(const char *src, size_t len)
{
	struct buf b;

	buf_init(&b, 1024);
	assert_int_equal(buf_append_str(&b, "keep"), 0);
	if (base64_decode(&b, src, len) == 0)
		fail_msg("accepted \"%.*s\" (%zu bytes)", (int)len, src, len);
	assert_int_equal(b.len, 4);
	assert_string_equal(buf_cstr(&b), "keep");
	buf_deinit(&b);
}

#define REJECT(s) expect_reject(s, sizeof(s) - 1)

static void
test_bad_characters(void **state)
{
	(void)state;
	REJECT("Zm9v!A==");
	REJECT("Zm9-");    /* base64url alphabet is not ours */
	REJECT("Zm9_");
	REJECT("Zm9\x80");
	REJECT("Zm9\xff");
	REJECT("Zm\x00v"); /* NUL inside the given length */
	REJECT("Zm9v.A==");
	REJECT("*");       /* SASL cancel is not base64 */
}

static void
test_bad_padding(void **state)
{
	(void)state;
	REJECT("Zg");       /* padding missing */
	REJECT("Zg=");      /* incomplete */
	REJECT("Z===");     /* three pad characters */
	REJECT("====");
	REJECT("=");        /* the RFC 4954 empty marker is the caller's business */
	REJECT("Zm=v");     /* pad in the middle of a block */
	REJECT("Zg==Zg=="); /* pad before the end */
	REJECT("=Zm9");
	REJECT("Zh==");     /* non-zero pad bits (RFC 4648 3.5) */
	REJECT("Zm9=");
	REJECT("Zm9vYmF=");
}

static void
test_whitespace(void **state)
{
	(void)state;
	REJECT("Zm9v\n");
	REJECT("Zm9v\r\n");
	REJECT(" Zm9v");
	REJECT("Zm 9v");
	REJECT("Zm9v ");
	REJECT("Zm\t9v");
	REJECT("Zm9vY\nmFy");
}

static void
test_max_exceeded(void **state)
{
	struct buf b;

	(void)state;
	/* Exactly max: fits. */
	buf_init(&b, 6);
	assert_int_equal(base64_decode(&b, "Zm9vYmFy", 8), 0);
	assert_string_equal(buf_cstr(&b), "foobar");
	buf_deinit(&b);

	/* One byte over: refused, sticky err, output unchanged. */
	buf_init(&b, 5);
	assert_int_equal(base64_decode(&b, "Zm9vYmFy", 8), -1);
	assert_int_equal(b.len, 0);
	assert_int_not_equal(b.err, 0);
	buf_deinit(&b);

	/* Counted against what the buffer already holds. */
	buf_init(&b, 8);
	assert_int_equal(buf_append_str(&b, "abc"), 0);
	assert_int_equal(base64_decode(&b, "Zm9vYmFy", 8), -1);
	assert_int_equal(b.len, 3);
	assert_int_equal(base64_decode(&b, "Zm9vYmE=", 8), 0);
	assert_string_equal(buf_cstr(&b), "abcfooba");
	buf_deinit(&b);

	/* Encoding is bounded too. */
	buf_init(&b, 7);
	assert_int_equal(base64_encode(&b, "foobar", 6), -1);
	assert_int_not_equal(b.err, 0);
	buf_deinit(&b);
}

/* Decoding appends; a decoded NUL is data, not an end. */
static void
test_append_and_nul(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 64);
	assert_int_equal(base64_decode(&b, "AGFsaWNlAHNlY3JldA==", 20), 0); /* "\0alice\0secret" */
	assert_int_equal(b.len, 13);
	assert_memory_equal(b.data, "\0alice\0secret", 13);
	assert_int_equal(base64_decode(&b, "", 0), 0);
	assert_int_equal(b.len, 13);
	buf_deinit_secure(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_encode),
		cmocka_unit_test(test_rfc4648_decode),
		cmocka_unit_test(test_roundtrip_binary),
		cmocka_unit_test(test_bad_characters),
		cmocka_unit_test(test_bad_padding),
		cmocka_unit_test(test_whitespace),
		cmocka_unit_test(test_max_exceeded),
		cmocka_unit_test(test_append_and_nul),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
