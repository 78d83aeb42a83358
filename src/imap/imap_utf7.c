/* Modified UTF-7 <-> UTF-8 for mailbox names (see imap_utf7.h). */
#include "imap/imap_utf7.h"

#include <string.h>

static const char utf7_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int
utf7_value(unsigned char c)
{
	const char *p = c != '\0' ? strchr(utf7_alphabet, c) : NULL;

	return p != NULL ? (int)(p - utf7_alphabet) : -1;
}

static void
put_utf8(struct buf *out, uint32_t cp)
{
	uint8_t b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (uint8_t)(0xc0 | (cp >> 6));
		b[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (uint8_t)(0xe0 | (cp >> 12));
		b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (uint8_t)(0xf0 | (cp >> 18));
		b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	(void)buf_append(out, b, n);
}

/* Decodes one "&...-" run starting after the "&"; *pp ends after the "-". */
static int
decode_run(const unsigned char **pp, struct buf *out)
{
	const unsigned char *p = *pp;
	uint32_t bits = 0, high = 0;
	unsigned int nbits = 0;
	size_t units = 0;

	for (; *p != '-'; p++) {
		int v = utf7_value(*p);

		if (v < 0)
			return -1;
		bits = (bits << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		{
			uint32_t u = (bits >> nbits) & 0xffff;

			units++;
			if (high != 0) {
				if (u < 0xdc00 || u > 0xdfff)
					return -1;
				put_utf8(out, 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00));
				high = 0;
			} else if (u >= 0xd800 && u <= 0xdbff) {
				high = u;
			} else if ((u >= 0xdc00 && u <= 0xdfff) || u <= 0x7f) {
				/* A lone low surrogate, printable ASCII that must stand for itself, or a
				 * control character, which no name holds. */
				return -1;
			} else {
				put_utf8(out, u);
			}
		}
	}
	/* Leftover bits must be zero padding shorter than one base64 digit; "&-" is "&". */
	if (high != 0 || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0)
		return -1;
	if (units == 0)
		(void)buf_append_byte(out, '&');
	*pp = p + 1;
	return 0;
}

int
imap_utf7_to_utf8(const char *in, struct buf *out)
{
	const unsigned char *p = (const unsigned char *)in;

	while (*p != '\0') {
		if (*p >= 0x80 || *p < 0x20 || *p == 0x7f)
			return -1;
		if (*p != '&') {
			(void)buf_append_byte(out, *p++);
			continue;
		}
		p++;
		if (decode_run(&p, out) < 0)
			return -1;
	}
	return out->err ? -1 : 0;
}

/* Reads one UTF-8 code point (RFC 3629); -1 when malformed. */
static int
next_code_point(const unsigned char **pp, uint32_t *cp_r)
{
	const unsigned char *p = *pp;
	uint32_t cp;
	size_t n;

	if (p[0] < 0x80) {
		*cp_r = p[0];
		*pp = p + 1;
		return 0;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		cp = p[0] & 0x1f;
		n = 1;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		cp = p[0] & 0x0f;
		n = 2;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		cp = p[0] & 0x07;
		n = 3;
	} else {
		return -1;
	}
	for (size_t i = 1; i <= n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*cp_r = cp;
	*pp = p + n + 1;
	return 0;
}

static void
flush_run(struct buf *out, const uint16_t *units, size_t n)
{
	uint32_t bits = 0;
	unsigned int nbits = 0;

	(void)buf_append_byte(out, '&');
	for (size_t i = 0; i < n; i++) {
		bits = (bits << 16) | units[i];
		nbits += 16;
		while (nbits >= 6) {
			nbits -= 6;
			(void)buf_append_byte(out, (uint8_t)utf7_alphabet[(bits >> nbits) & 0x3f]);
		}
	}
	if (nbits > 0)
		(void)buf_append_byte(out, (uint8_t)utf7_alphabet[(bits << (6 - nbits)) & 0x3f]);
	(void)buf_append_byte(out, '-');
}

int
imap_utf8_to_utf7(const char *in, struct buf *out)
{
	const unsigned char *p = (const unsigned char *)in;
	uint16_t units[256];
	size_t n = 0;

	while (*p != '\0') {
		uint32_t cp;

		if (next_code_point(&p, &cp) < 0 || cp < 0x20 || cp == 0x7f)
			return -1;
		if (cp >= 0x20 && cp <= 0x7e) {
			if (n > 0) {
				flush_run(out, units, n);
				n = 0;
			}
			if (cp == '&')
				(void)buf_append_str(out, "&-");
			else
				(void)buf_append_byte(out, (uint8_t)cp);
			continue;
		}
		/* A run is flushed before it could overflow; splitting it is still valid. */
		if (n + 2 > N_ELEMENTS(units)) {
			flush_run(out, units, n);
			n = 0;
		}
		if (cp >= 0x10000) {
			units[n++] = (uint16_t)(0xd800 + ((cp - 0x10000) >> 10));
			units[n++] = (uint16_t)(0xdc00 + ((cp - 0x10000) & 0x3ff));
		} else {
			units[n++] = (uint16_t)cp;
		}
	}
	if (n > 0)
		flush_run(out, units, n);
	return out->err ? -1 : 0;
}
