/* MIME header field values: Content-Type and parameters (RFC 2045 5.1), RFC 2231 parameter
 * continuations and charsets, Content-Disposition (RFC 2183 2), Content-Transfer-Encoding
 * (RFC 2045 6.1) and Content-Language (RFC 3282 2).
 * Parsing is lenient where real mail is broken (missing ';', unquoted values with blanks or
 * 8-bit octets, unterminated quotes) and strict where a wrong guess would change the structure
 * (type/subtype must be tokens). RFC 2231 sections are merged the way Dovecot does it, keeping
 * the extended form ("name*" = "charset'lang'%XX..."), so BODYSTRUCTURE stays 7-bit and clients
 * decode it themselves; mime_param_get() decodes for our own use. */
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <string.h>

/* RFC 2231 section numbers above this are not taken as sections. */
#define RFC2231_MAX_SECTION 999

/* One parameter as written, before RFC 2231 merging. */
struct raw_param {
	struct mime_str name;  /* lowercased, without the "*N*" suffix when is2231 */
	struct mime_str value; /* unquoted */
	unsigned int section;  /* RFC 2231 section number (0 for "name*") */
	bool is2231;           /* the name had a "*N", "*N*" or "*" suffix */
	bool extended;         /* ... ending in "*": the value is charset'lang'%XX */
	bool done;             /* merged into an output parameter already */
};

/* Reads a token (RFC 2045 5.1) into a span; false when there is none. */
static bool
lex_token(struct mime__lex *lx, struct mime_str *tok)
{
	const uint8_t *start = lx->p;

	while (lx->p < lx->end && mime__is_token(*lx->p))
		lx->p++;
	tok->s = (const char *)start;
	tok->len = (size_t)(lx->p - start);
	return tok->len > 0;
}

/* A parameter value: a quoted string, or (leniently) everything up to ';', a blank or a comment.
 * Unquoted values with 8-bit octets or tspecials are common enough to take. */
static struct mime_str
lex_value(struct mime_pool *pool, struct mime__lex *lx)
{
	struct buf tmp;
	struct mime_str v;

	if (lx->p < lx->end && *lx->p == '"') {
		mime__scratch_init(&tmp, (size_t)(lx->end - lx->p));
		mime__quoted_string(lx, &tmp);
		v = mime__str_dup(pool, tmp.data != NULL ? tmp.data : (const uint8_t *)"", tmp.len);
		buf_deinit(&tmp);
		return v;
	}
	const uint8_t *start = lx->p;

	while (lx->p < lx->end && *lx->p != ';' && *lx->p != '(' && *lx->p != '"' &&
	       !mime__is_wsp(*lx->p) && *lx->p != '\r' && *lx->p != '\n')
		lx->p++;
	return mime__str_dup(pool, start, (size_t)(lx->p - start));
}

/* Splits "name*N*" into its RFC 2231 parts (RFC 2231 3, 4). */
static void
split_2231(struct raw_param *rp)
{
	const char *s = rp->name.s;
	size_t n = rp->name.len, star, i;
	unsigned int section = 0;

	for (star = 0; star < n && s[star] != '*'; star++)
		;
	if (star == 0 || star == n)
		return;
	i = star + 1;
	if (i < n && s[i] >= '0' && s[i] <= '9') {
		for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
			section = section * 10 + (unsigned int)(s[i] - '0');
			if (section > RFC2231_MAX_SECTION)
				return;
		}
		if (i < n && s[i] == '*') {
			rp->extended = true;
			i++;
		}
	} else {
		/* "name*": a single extended value */
		rp->extended = true;
	}
	if (i != n) {
		rp->extended = false;
		return; /* "a*b" and the like: an ordinary name */
	}
	rp->is2231 = true;
	rp->section = section;
	rp->name.len = star;
}

/* Appends s with '%' escaped, for a plain section inside an extended value. */
static void
append_pct_escaped(struct buf *b, struct mime_str s)
{
	for (size_t i = 0; i < s.len; i++) {
		if (s.s[i] == '%')
			(void)buf_append_str(b, "%25");
		else
			(void)buf_append_byte(b, (uint8_t)s.s[i]);
	}
}

/* Merges the sections of raw[first].name into out (RFC 2231 3): sorted by number, they must run
 * 0..n-1 without a gap or a repeat, else each one is kept under its own "name*N[*]" key, as
 * Dovecot does. Returns the number of output parameters written. */
static unsigned int
merge_2231(struct mime_pool *pool, struct raw_param *raw, unsigned int nraw, unsigned int first,
           struct mime_param *out, unsigned int room)
{
	unsigned int idx[MIME_MAX_PARAMS], n = 0, written = 0;
	bool ok = true, extended = false;
	size_t total = 2;
	struct buf v;

	for (unsigned int i = first; i < nraw; i++) {
		if (raw[i].is2231 && !raw[i].done && raw[i].name.len == raw[first].name.len &&
		    memcmp(raw[i].name.s, raw[first].name.s, raw[i].name.len) == 0) {
			/* insertion sort by section: n <= MIME_MAX_PARAMS */
			unsigned int k = n++;

			while (k > 0 && raw[idx[k - 1]].section > raw[i].section) {
				idx[k] = idx[k - 1];
				k--;
			}
			idx[k] = i;
			raw[i].done = true;
			total += raw[i].value.len * 3; /* '%' may become "%25" */
		}
	}
	for (unsigned int k = 0; k < n; k++) {
		if (raw[idx[k]].section != k)
			ok = false;
		if (raw[idx[k]].extended)
			extended = true;
	}
	if (!ok) {
		for (unsigned int k = 0; k < n && written < room; k++) {
			struct raw_param *rp = &raw[idx[k]];
			struct buf name;

			buf_init(&name, rp->name.len + 16);
			(void)buf_append(&name, rp->name.s, rp->name.len);
			(void)buf_printf(&name, rp->extended ? "*%u*" : "*%u", rp->section);
			out[written].name = mime__str_dup(pool, name.data, name.len);
			out[written].value = rp->value;
			written++;
			buf_deinit(&name);
		}
		return written;
	}
	if (room == 0)
		return 0;
	buf_init(&v, total);
	/* A plain first section in an extended value has no charset'lang' prefix: add an empty
	 * one so the merged value still reads as RFC 2231. */
	if (extended && !raw[idx[0]].extended)
		(void)buf_append_str(&v, "''");
	for (unsigned int k = 0; k < n; k++) {
		struct raw_param *rp = &raw[idx[k]];

		if (extended && !rp->extended)
			append_pct_escaped(&v, rp->value);
		else
			(void)buf_append(&v, rp->value.s, rp->value.len);
	}
	if (extended) {
		struct buf name;

		buf_init(&name, raw[first].name.len + 2);
		(void)buf_append(&name, raw[first].name.s, raw[first].name.len);
		(void)buf_append_byte(&name, '*');
		out[0].name = mime__str_dup(pool, name.data, name.len);
		buf_deinit(&name);
	} else {
		/* a copy: the raw name is cut short by length only */
		out[0].name = mime__str_dup(pool, raw[first].name.s, raw[first].name.len);
	}
	out[0].value = mime__str_dup(pool, v.data != NULL ? v.data : (const uint8_t *)"", v.len);
	buf_deinit(&v);
	return 1;
}

void
mime_parse_params(struct mime_pool *pool, const uint8_t *value, size_t len,
                  struct mime_param **params_r, unsigned int *count_r)
{
	struct mime__lex lx = {value, value + len};
	struct raw_param raw[MIME_MAX_PARAMS];
	struct mime_param *out;
	unsigned int nraw = 0, nout = 0;

	*params_r = NULL;
	*count_r = 0;
	while (lx.p < lx.end && nraw < MIME_MAX_PARAMS) {
		struct mime_str name;

		(void)mime__skip_cfws(&lx, NULL);
		if (lx.p >= lx.end)
			break;
		if (*lx.p == ';') {
			lx.p++;
			continue;
		}
		if (!lex_token(&lx, &name)) {
			lx.p++; /* a stray octet: skip it and try again */
			continue;
		}
		(void)mime__skip_cfws(&lx, NULL);
		if (lx.p >= lx.end || *lx.p != '=')
			continue; /* an attribute without value: ignored */
		lx.p++;
		(void)mime__skip_cfws(&lx, NULL);
		memset(&raw[nraw], 0, sizeof(raw[nraw]));
		raw[nraw].name = mime__str_dup_lower(pool, name.s, name.len);
		raw[nraw].value = lex_value(pool, &lx);
		split_2231(&raw[nraw]);
		nraw++;
	}
	if (nraw == 0)
		return;
	out = mime_pool_alloc(pool, nraw * sizeof(*out));
	for (unsigned int i = 0; i < nraw; i++) {
		if (raw[i].done)
			continue;
		if (!raw[i].is2231) {
			out[nout].name = raw[i].name;
			out[nout].value = raw[i].value;
			nout++;
			continue;
		}
		nout += merge_2231(pool, raw, nraw, i, out + nout, nraw - nout);
	}
	*params_r = out;
	*count_r = nout;
}

int
mime_parse_content_type(struct mime_pool *pool, const uint8_t *value, size_t len,
                        struct mime_content_type *ct_r)
{
	struct mime__lex lx = {value, value + len};
	struct mime_str type, subtype;

	memset(ct_r, 0, sizeof(*ct_r));
	(void)mime__skip_cfws(&lx, NULL);
	if (!lex_token(&lx, &type))
		return -1;
	(void)mime__skip_cfws(&lx, NULL);
	if (lx.p >= lx.end || *lx.p != '/')
		return -1;
	lx.p++;
	(void)mime__skip_cfws(&lx, NULL);
	if (!lex_token(&lx, &subtype))
		return -1;
	ct_r->type = mime__str_dup(pool, type.s, type.len);
	ct_r->subtype = mime__str_dup(pool, subtype.s, subtype.len);
	mime_parse_params(pool, lx.p, (size_t)(lx.end - lx.p), &ct_r->params, &ct_r->nparams);
	return 0;
}

int
mime_parse_disposition(struct mime_pool *pool, const uint8_t *value, size_t len,
                       struct mime_str *disp_r, struct mime_param **params_r,
                       unsigned int *count_r)
{
	struct mime__lex lx = {value, value + len};
	struct mime_str tok;

	*params_r = NULL;
	*count_r = 0;
	disp_r->s = NULL;
	disp_r->len = 0;
	(void)mime__skip_cfws(&lx, NULL);
	if (!lex_token(&lx, &tok))
		return -1;
	*disp_r = mime__str_dup(pool, tok.s, tok.len);
	mime_parse_params(pool, lx.p, (size_t)(lx.end - lx.p), params_r, count_r);
	return 0;
}

int
mime_parse_token_value(struct mime_pool *pool, const uint8_t *value, size_t len,
                       struct mime_str *token_r)
{
	struct mime__lex lx = {value, value + len};
	struct mime_str tok;

	token_r->s = NULL;
	token_r->len = 0;
	(void)mime__skip_cfws(&lx, NULL);
	if (!lex_token(&lx, &tok))
		return -1;
	(void)mime__skip_cfws(&lx, NULL);
	if (lx.p != lx.end)
		return -1; /* "?invalid", "base64 junk": not a transfer encoding */
	*token_r = mime__str_dup(pool, tok.s, tok.len);
	return 0;
}

unsigned int
mime_parse_languages(struct mime_pool *pool, const uint8_t *value, size_t len,
                     struct mime_str **langs_r)
{
	struct mime__lex lx = {value, value + len};
	struct mime_str *langs;
	unsigned int n = 0, max = 0;

	*langs_r = NULL;
	/* Count the commas first: the tags go into one array of the right size. */
	for (size_t i = 0; i < len; i++)
		max += value[i] == ',';
	max++;
	langs = mime_pool_alloc(pool, max * sizeof(*langs));
	for (;;) {
		const uint8_t *start;

		(void)mime__skip_cfws(&lx, NULL);
		start = lx.p;
		/* Language-Tag = Primary-tag *( "-" Subtag ), 1*8ALPHA each (RFC 3282 2 takes RFC
		 * 3066); taken as any run of atext, as Dovecot does. */
		while (lx.p < lx.end && mime__is_atext(*lx.p))
			lx.p++;
		if (lx.p == start)
			break;
		langs[n++] = mime__str_dup(pool, start, (size_t)(lx.p - start));
		(void)mime__skip_cfws(&lx, NULL);
		if (lx.p >= lx.end || *lx.p != ',' || n == max)
			break;
		lx.p++;
	}
	if (n > 0)
		*langs_r = langs;
	return n;
}

const struct mime_param *
mime_param_find(const struct mime_param *params, unsigned int count, const char *name)
{
	size_t n = strlen(name);
	const struct mime_param *plain = NULL;

	for (unsigned int i = 0; i < count; i++) {
		const struct mime_str *pn = &params[i].name;

		/* RFC 2231 4: the extended value is the better one when both are there. */
		if (pn->len == n + 1 && pn->s[n] == '*' && mime__eq_ci(pn->s, name, n))
			return &params[i];
		if (plain == NULL && mime__span_is(pn->s, pn->len, name))
			plain = &params[i];
	}
	return plain;
}

/* RFC 2231 4: charset'language'percent-encoded octets. */
static void
decode_2231(struct buf *out, struct mime_str v)
{
	const char *q1, *q2, *p;
	size_t cslen, rest;
	struct buf raw;

	q1 = memchr(v.s, '\'', v.len);
	q2 = q1 != NULL ? memchr(q1 + 1, '\'', v.len - (size_t)(q1 + 1 - v.s)) : NULL;
	if (q2 == NULL) {
		/* Not RFC 2231 after all: take it as it is. */
		(void)buf_append(out, v.s, v.len);
		return;
	}
	cslen = (size_t)(q1 - v.s);
	p = q2 + 1;
	rest = v.len - (size_t)(p - v.s);
	mime__scratch_init(&raw, rest);
	for (size_t i = 0; i < rest; i++) {
		int hi = -1, lo = -1;

		if (p[i] == '%' && i + 2 < rest) {
			hi = mime__hex_val((uint8_t)p[i + 1]);
			lo = mime__hex_val((uint8_t)p[i + 2]);
		}
		if (hi >= 0 && lo >= 0) {
			(void)buf_append_byte(&raw, (uint8_t)(hi << 4 | lo));
			i += 2;
		} else {
			(void)buf_append_byte(&raw, (uint8_t)p[i]);
		}
	}
	/* An empty charset says nothing; UTF-8 is the superset of what it could be. */
	if (cslen == 0 ||
	    mime_charset_to_utf8(out, v.s, cslen, raw.data != NULL ? raw.data :
	                         (const uint8_t *)"", raw.len) < 0)
		(void)mime_charset_to_utf8(out, "utf-8", 5, raw.data != NULL ? raw.data :
		                           (const uint8_t *)"", raw.len);
	buf_deinit(&raw);
}

int
mime_param_get(struct buf *out, const struct mime_param *params, unsigned int count,
               const char *name)
{
	const struct mime_param *p = mime_param_find(params, count, name);

	if (p == NULL)
		return 0;
	if (p->name.len > 0 && p->name.s[p->name.len - 1] == '*')
		decode_2231(out, p->value);
	else
		(void)mime_header_decode(out, (const uint8_t *)p->value.s, p->value.len);
	return out->err ? -1 : 1;
}
