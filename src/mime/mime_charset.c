/* Charset conversion to UTF-8 for RFC 2047 encoded words and RFC 2231 parameter values.
 * UTF-8, US-ASCII, ISO-8859-1 and Windows-1252 are built in; other charsets go through iconv(3)
 * with a fresh descriptor per call (each encoded word starts in the initial shift state, RFC
 * 2047 5). The output is always valid UTF-8: what does not convert becomes U+FFFD, one per
 * offending octet, so a broken word never swallows the text after it. */
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <errno.h>
#include <iconv.h>
#include <string.h>

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

/* Windows-1252 0x80..0x9F (WHATWG Encoding Standard index). The five unassigned positions map
 * to the C1 code point of the same value, as browsers do. */
static const uint16_t cp1252_c1[32] = {
	0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
	0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
	0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
	0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
};

enum builtin {
	CS_UTF8,
	CS_ASCII,
	CS_CP1252,
	CS_OTHER,
};

static const struct {
	const char *name;
	enum builtin cs;
} aliases[] = {
	{"utf-8", CS_UTF8},
	{"utf8", CS_UTF8},
	{"us-ascii", CS_ASCII},
	{"ascii", CS_ASCII},
	{"us", CS_ASCII},
	{"ansi_x3.4-1968", CS_ASCII},
	{"iso646-us", CS_ASCII},
	{"iso-8859-1", CS_CP1252},
	{"iso8859-1", CS_CP1252},
	{"iso_8859-1", CS_CP1252},
	{"iso_8859-1:1987", CS_CP1252},
	{"latin1", CS_CP1252},
	{"l1", CS_CP1252},
	{"cp819", CS_CP1252},
	{"ibm819", CS_CP1252},
	{"iso-ir-100", CS_CP1252},
	{"windows-1252", CS_CP1252},
	{"cp1252", CS_CP1252},
	{"x-cp1252", CS_CP1252},
};

static void
put_cp(struct buf *out, uint32_t cp)
{
	uint8_t u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xC0 | (cp >> 6));
		u[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else {
		/* everything built in is in the BMP */
		u[0] = (uint8_t)(0xE0 | (cp >> 12));
		u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	}
	(void)buf_append(out, u, n);
}

/* The length of the valid UTF-8 sequence at p (RFC 3629 4: no overlong forms, no surrogates,
 * nothing above U+10FFFF), 1 for ASCII, or 0 when the octet does not start one. */
static size_t
utf8_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xBF;
	size_t len;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++) {
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	}
	return len;
}

static void
from_utf8(struct buf *out, const uint8_t *p, size_t n)
{
	size_t i = 0, start = 0, l;

	while (i < n) {
		if ((l = utf8_len(p + i, n - i)) > 0) {
			i += l;
			continue;
		}
		(void)buf_append(out, p + start, i - start);
		(void)buf_append(out, REPLACEMENT, 3);
		start = ++i;
	}
	(void)buf_append(out, p + start, n - start);
}

static void
from_single(struct buf *out, enum builtin cs, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		if (c < 0x80)
			(void)buf_append_byte(out, c);
		else if (cs == CS_ASCII)
			(void)buf_append(out, REPLACEMENT, 3);
		else if (c < 0xA0)
			put_cp(out, cp1252_c1[c - 0x80]);
		else
			put_cp(out, c);
	}
}

/* Charset names are short tokens; anything else is refused before it reaches iconv_open(). */
static bool
charset_name_ok(const char *s, size_t n)
{
	if (n == 0 || n > 40)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':' || c == '+'))
			return false;
	}
	return true;
}

static int
from_iconv(struct buf *out, const char *charset, size_t cslen, const uint8_t *p, size_t n)
{
	char name[48], tmp[1024];
	iconv_t cd;
	char *in, *o;
	size_t inleft = n, oleft;

	if (!charset_name_ok(charset, cslen))
		return -1;
	memcpy(name, charset, cslen);
	name[cslen] = '\0';
	cd = iconv_open("UTF-8", name);
	if (cd == (iconv_t)-1)
		return -1;
	/* iconv(3) takes char ** for its input but does not write through it. */
	in = (char *)(uintptr_t)p;
	while (inleft > 0) {
		size_t r;

		o = tmp;
		oleft = sizeof(tmp);
		r = iconv(cd, &in, &inleft, &o, &oleft);
		(void)buf_append(out, tmp, sizeof(tmp) - oleft);
		if (r != (size_t)-1 || errno == E2BIG)
			continue;
		/* EILSEQ, or EINVAL for a sequence cut short by the end: one U+FFFD per octet, and
		 * the conversion goes on in the initial state. */
		(void)buf_append(out, REPLACEMENT, 3);
		in++;
		inleft--;
		(void)iconv(cd, NULL, NULL, NULL, NULL);
	}
	o = tmp;
	oleft = sizeof(tmp);
	(void)iconv(cd, NULL, NULL, &o, &oleft);
	(void)buf_append(out, tmp, sizeof(tmp) - oleft);
	iconv_close(cd);
	return 0;
}

int
mime_charset_to_utf8(struct buf *out, const char *charset, size_t cslen, const uint8_t *text,
                     size_t len)
{
	enum builtin cs = CS_OTHER;

	for (size_t i = 0; i < N_ELEMENTS(aliases); i++) {
		if (mime__span_is(charset, cslen, aliases[i].name)) {
			cs = aliases[i].cs;
			break;
		}
	}
	switch (cs) {
	case CS_UTF8:
		from_utf8(out, text, len);
		return 0;
	case CS_ASCII:
	case CS_CP1252:
		from_single(out, cs, text, len);
		return 0;
	case CS_OTHER:
		break;
	}
	return from_iconv(out, charset, cslen, text, len);
}
