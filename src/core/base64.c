/* Base64, RFC 4648 section 4 (standard alphabet, '=' padding), for SASL (RFC 4422 / RFC 4954).
 *
 * Decoding is strict because the input comes from unauthenticated clients: only the alphabet,
 * a length that is a multiple of 4, at most two '=' and only at the end, and zero pad bits
 * (RFC 4648 3.5) are accepted; whitespace is an error. The input is checked completely before
 * anything is written, and the output is appended with one buf_append() so that the decoded
 * bytes (often a password) never pass through a temporary copy or a realloc'ed-and-freed block
 * that nobody wipes. */
#include "core/base64.h"

#include <string.h>
#include <sys/types.h>

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 character, or -1. A switch on ranges rather than a table keeps it obvious
 * that every byte outside the alphabet (NUL, 8-bit, '=', whitespace) is rejected. */
static int
b64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
base64_encode(struct buf *out, const void *data, size_t len)
{
	const uint8_t *p = data;
	char q[4];
	size_t i;

	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		q[0] = alphabet[v >> 18];
		q[1] = alphabet[(v >> 12) & 63];
		q[2] = alphabet[(v >> 6) & 63];
		q[3] = alphabet[v & 63];
		if (buf_append(out, q, 4) < 0)
			return -1;
	}
	if (i < len) {
		uint32_t v = (uint32_t)p[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		q[0] = alphabet[v >> 18];
		q[1] = alphabet[(v >> 12) & 63];
		q[2] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		q[3] = '=';
		if (buf_append(out, q, 4) < 0)
			return -1;
	}
	return 0;
}

/* Checks src completely; returns the decoded length, or -1. */
static ssize_t
b64_check(const char *src, size_t len)
{
	const uint8_t *s = (const uint8_t *)src;
	size_t pad = 0;
	int last;

	if (len % 4 != 0)
		return -1;
	if (len == 0)
		return 0;
	if (s[len - 1] == '=')
		pad = s[len - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < len - pad; i++) {
		if (b64_value(s[i]) < 0)
			return -1;
	}
	/* RFC 4648 3.5: the bits of the last character that padding leaves unused must be zero,
	 * otherwise several encodings would decode to the same bytes. */
	if (pad > 0) {
		last = b64_value(s[len - pad - 1]);
		if ((pad == 1 && (last & 0x03) != 0) || (pad == 2 && (last & 0x0f) != 0))
			return -1;
	}
	return (ssize_t)(len / 4 * 3 - pad);
}

int
base64_decode(struct buf *out, const char *src, size_t len)
{
	const uint8_t *s = (const uint8_t *)src;
	ssize_t n = b64_check(src, len);
	uint8_t *d;
	size_t o = 0;

	if (n < 0)
		return -1;
	if (n == 0)
		return 0;
	/* Grow out once, to the exact size, before any secret is written into it: the n bytes of
	 * src are only placeholders (src holds at least 4n/3 bytes) and are overwritten below. */
	if (buf_append(out, src, (size_t)n) < 0)
		return -1;
	/* UNSAFE: d[0..n) was just appended; b64_check guaranteed every character is valid. */
	d = out->data + out->len - (size_t)n;
	for (size_t i = 0; i < len; i += 4) {
		uint32_t v = (uint32_t)b64_value(s[i]) << 18 | (uint32_t)b64_value(s[i + 1]) << 12;

		d[o++] = (uint8_t)(v >> 16);
		if (s[i + 2] == '=')
			break;
		v |= (uint32_t)b64_value(s[i + 2]) << 6;
		d[o++] = (uint8_t)(v >> 8);
		if (s[i + 3] == '=')
			break;
		v |= (uint32_t)b64_value(s[i + 3]);
		d[o++] = (uint8_t)v;
	}
	ASSERT(o == (size_t)n);
	return 0;
}
