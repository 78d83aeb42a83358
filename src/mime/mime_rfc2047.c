/* RFC 2047 encoded words ("=?charset?B|Q?text?=") decoded to UTF-8, and header unfolding
 * (RFC 5322 2.2.3). A run of encoded words separated only by blanks is one unit: the blanks go
 * (RFC 2047 6.2) and words of the same charset are decoded together before conversion, so a
 * UTF-8 character split across two words comes out whole. A word that does not parse, or whose
 * charset is unknown, is copied as it is (RFC 2047 6.3 leaves that to the implementation; the
 * text stays searchable). Words are recognised anywhere, not only between blanks, because
 * mailers get that wrong too often (Dovecot does the same). RFC 2231 5 language suffixes
 * ("=?utf-8*en?Q?...?=") are accepted and ignored. */
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <string.h>

int
mime_header_unfold(struct buf *out, const uint8_t *value, size_t len)
{
	size_t i = 0, start = 0;

	while (i < len) {
		size_t brk;

		if (value[i] == '\r' && i + 1 < len && value[i + 1] == '\n')
			brk = 2;
		else if (value[i] == '\n')
			brk = 1;
		else {
			i++;
			continue;
		}
		/* A line break followed by a blank is a fold; the last one ends the value. */
		if (i + brk == len || mime__is_wsp(value[i + brk])) {
			(void)buf_append(out, value + start, i - start);
			start = i + brk;
		}
		i += brk;
	}
	(void)buf_append(out, value + start, len - start);
	return out->err ? -1 : 0;
}

static int
b64_val(uint8_t c)
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

/* RFC 2047 4.2: "_" is a space, "=XX" an octet; everything else stands for itself. */
static int
decode_q(struct buf *out, const uint8_t *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi, lo;

		if (t[i] == '_') {
			(void)buf_append_byte(out, ' ');
		} else if (t[i] == '=') {
			if (i + 2 >= n)
				return -1;
			hi = mime__hex_val(t[i + 1]);
			lo = mime__hex_val(t[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			(void)buf_append_byte(out, (uint8_t)(hi << 4 | lo));
			i += 2;
		} else {
			(void)buf_append_byte(out, t[i]);
		}
	}
	return 0;
}

/* RFC 2047 4.1 (RFC 4648 4). Missing padding is tolerated, as a lone sextet never is. */
static int
decode_b(struct buf *out, const uint8_t *t, size_t n)
{
	uint32_t acc = 0;
	size_t bits = 0, pad = 0;

	for (size_t i = 0; i < n; i++) {
		int v;

		if (t[i] == '=') {
			pad++;
			continue;
		}
		if (pad > 0 || (v = b64_val(t[i])) < 0)
			return -1; /* data after padding, or not base64 */
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			(void)buf_append_byte(out, (uint8_t)(acc >> bits));
			acc &= (1u << bits) - 1;
		}
	}
	/* Leftover bits: 0 (complete), 2 or 4 (padding, written or not); 6 is a lone sextet. */
	if (bits == 6 || pad > 2)
		return -1;
	return 0;
}

struct word {
	const uint8_t *charset;
	size_t cslen; /* without an RFC 2231 "*language" */
	size_t len;   /* octets of the whole word */
};

/* Parses the encoded word at p and appends its decoded octets to raw. Returns false (raw
 * unchanged) when p does not start a valid encoded word. */
static bool
parse_word(const uint8_t *p, size_t n, struct word *w, struct buf *raw)
{
	size_t i = 2, cs_start, cs_end, text_start, text_end, mark = raw->len;
	uint8_t enc;
	int ret;

	if (n < 8 || p[0] != '=' || p[1] != '?')
		return false;
	cs_start = i;
	while (i < n && p[i] != '?' && p[i] > ' ' && p[i] < 0x7f)
		i++;
	if (i >= n || p[i] != '?' || i == cs_start)
		return false;
	cs_end = i;
	for (size_t k = cs_start; k < cs_end; k++) {
		if (p[k] == '*') {
			cs_end = k;
			break;
		}
	}
	if (cs_end == cs_start || i + 3 >= n || p[i + 2] != '?')
		return false;
	enc = mime__lower(p[i + 1]);
	if (enc != 'b' && enc != 'q')
		return false;
	text_start = i + 3;
	/* encoded-text: printable ASCII but '?' and SPACE (RFC 2047 2, 5(3)). */
	for (i = text_start; i < n && p[i] != '?'; i++) {
		if (p[i] <= ' ' || p[i] >= 0x7f)
			return false;
	}
	if (i + 1 >= n || p[i + 1] != '=')
		return false;
	text_end = i;
	if (enc == 'q')
		ret = decode_q(raw, p + text_start, text_end - text_start);
	else
		ret = decode_b(raw, p + text_start, text_end - text_start);
	if (ret < 0) {
		raw->len = mark;
		return false;
	}
	w->charset = p + cs_start;
	w->cslen = cs_end - cs_start;
	w->len = i + 2;
	return true;
}

struct run {
	bool active;
	const uint8_t *charset;
	size_t cslen;
	size_t src_start, src_end; /* the words as written, to copy them back if need be */
	struct buf raw;            /* decoded octets in the run's charset */
};

/* Converts the run and appends it; returns false when its charset is unknown and the words
 * were copied as they are. */
static bool
run_flush(struct run *r, struct buf *out, const uint8_t *value)
{
	bool ok = true;

	if (!r->active)
		return true;
	if (mime_charset_to_utf8(out, (const char *)r->charset, r->cslen,
	                         r->raw.data != NULL ? r->raw.data : (const uint8_t *)"",
	                         r->raw.len) < 0) {
		(void)buf_append(out, value + r->src_start, r->src_end - r->src_start);
		ok = false;
	}
	r->active = false;
	buf_reset(&r->raw);
	return ok;
}

int
mime_header_decode(struct buf *out, const uint8_t *value, size_t len)
{
	struct run r;
	struct buf word;
	size_t i = 0, blank_start = 0;
	bool after_word = false;

	memset(&r, 0, sizeof(r));
	/* Decoded octets are never more than the text they come from. */
	mime__scratch_init(&r.raw, len);
	mime__scratch_init(&word, len);
	while (i < len) {
		uint8_t c = value[i];
		struct word w;

		if (c == '=' && i + 1 < len && value[i + 1] == '?') {
			buf_reset(&word);
			if (parse_word(value + i, len - i, &w, &word)) {
				const char *cs = (const char *)w.charset;
				bool same = r.active && w.cslen == r.cslen &&
				            mime__eq_ci(r.charset, cs, w.cslen);

				if (!same) {
					/* Blanks between two words go (RFC 2047 6.2), unless
					 * the first one could not be decoded. */
					if (!run_flush(&r, out, value))
						(void)buf_append(out, value + blank_start,
						                 i - blank_start);
					r.active = true;
					r.charset = w.charset;
					r.cslen = w.cslen;
					r.src_start = i;
				}
				(void)buf_append(&r.raw, word.data, word.len);
				i += w.len;
				r.src_end = i;
				after_word = true;
				blank_start = i;
				continue;
			}
		}
		if (after_word && (mime__is_wsp(c) || c == '\r' || c == '\n')) {
			i++;
			continue;
		}
		(void)run_flush(&r, out, value);
		if (after_word) {
			(void)buf_append(out, value + blank_start, i - blank_start);
			after_word = false;
		}
		(void)buf_append_byte(out, c);
		i++;
	}
	(void)run_flush(&r, out, value);
	if (after_word)
		(void)buf_append(out, value + blank_start, len - blank_start);
	buf_deinit(&r.raw);
	buf_deinit(&word);
	return out->err ? -1 : 0;
}
