/* IMAP BODY / BODYSTRUCTURE and ENVELOPE (RFC 3501 7.4.2 and 9 "body", "envelope"; RFC 9051
 * 7.5.2 has the same syntax). Output follows Dovecot's choices where RFC 3501 leaves room:
 * type and parameters as written, lowercase defaults ("text" "plain" ("charset" "us-ascii")),
 * a missing Content-Transfer-Encoding as "7bit", Content-Language always as a list, Sender and
 * Reply-To falling back to From. A part that is a multipart or message/rfc822 by its header but
 * was not parsed as such is written as "application" "octet-stream", so that no client expects
 * children or an envelope that are not there.
 * Strings: quoted when every octet is a TEXT-CHAR (%x01-7F but CR and LF), else a literal with
 * NUL turned into U+FFFD (CHAR8 excludes NUL, RFC 3501 9). Nothing here depends on the session,
 * so the result can be stored at delivery and sent as it is. */
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <string.h>

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

int
mime_write_imap_string(struct buf *out, const void *data, size_t len)
{
	const uint8_t *p = data;
	bool literal = false;
	size_t nuls = 0;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\0')
			nuls++;
		if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n' || p[i] >= 0x80)
			literal = true;
	}
	if (literal) {
		size_t start = 0;

		(void)buf_printf(out, "{%zu}\r\n", len + 2 * nuls);
		for (size_t i = 0; i < len; i++) {
			if (p[i] != '\0')
				continue;
			(void)buf_append(out, p + start, i - start);
			(void)buf_append(out, REPLACEMENT, 3);
			start = i + 1;
		}
		(void)buf_append(out, p + start, len - start);
		return out->err ? -1 : 0;
	}
	(void)buf_append_byte(out, '"');
	for (size_t i = 0, start = 0; i <= len; i++) {
		if (i < len && p[i] != '"' && p[i] != '\\')
			continue;
		(void)buf_append(out, p + start, i - start);
		if (i < len) {
			(void)buf_append_byte(out, '\\'); /* quoted-specials, RFC 3501 9 */
			(void)buf_append_byte(out, p[i]);
		}
		start = i + 1;
	}
	(void)buf_append_byte(out, '"');
	return out->err ? -1 : 0;
}

int
mime_write_imap_nstring(struct buf *out, const struct mime_str *s)
{
	if (s->s == NULL) {
		(void)buf_append_str(out, "NIL");
		return out->err ? -1 : 0;
	}
	return mime_write_imap_string(out, s->s, s->len);
}

static void
put_str(struct buf *out, const struct mime_str *s)
{
	(void)mime_write_imap_string(out, s->s != NULL ? s->s : "", s->len);
}

static void
put_nstr(struct buf *out, const struct mime_str *s)
{
	(void)mime_write_imap_nstring(out, s);
}

/* body-fld-param: ("name" "value" ...) or NIL; default_charset adds ("charset" "us-ascii")
 * to a text part that has no charset, as RFC 2045 5.2 says it has. */
static void
put_params(struct buf *out, const struct mime_param *params, unsigned int n,
           bool default_charset)
{
	bool charset = false;

	for (unsigned int i = 0; i < n; i++) {
		if (mime__span_is(params[i].name.s, params[i].name.len, "charset"))
			charset = true;
	}
	if (n == 0 && !default_charset) {
		(void)buf_append_str(out, "NIL");
		return;
	}
	(void)buf_append_byte(out, '(');
	for (unsigned int i = 0; i < n; i++) {
		if (i > 0)
			(void)buf_append_byte(out, ' ');
		put_str(out, &params[i].name);
		(void)buf_append_byte(out, ' ');
		put_str(out, &params[i].value);
	}
	if (default_charset && !charset)
		(void)buf_append_str(out, n > 0 ? " \"charset\" \"us-ascii\"" :
		                                  "\"charset\" \"us-ascii\"");
	(void)buf_append_byte(out, ')');
}

/* body-fld-dsp SP body-fld-lang SP body-fld-loc, the tail of both extension forms. */
static void
put_ext_common(struct buf *out, const struct mime_part *part)
{
	(void)buf_append_byte(out, ' ');
	if (part->disposition.s == NULL) {
		(void)buf_append_str(out, "NIL");
	} else {
		(void)buf_append_byte(out, '(');
		put_str(out, &part->disposition);
		(void)buf_append_byte(out, ' ');
		put_params(out, part->disp_params, part->ndisp_params, false);
		(void)buf_append_byte(out, ')');
	}
	(void)buf_append_byte(out, ' ');
	if (part->nlanguages == 0) {
		(void)buf_append_str(out, "NIL");
	} else {
		(void)buf_append_byte(out, '(');
		for (unsigned int i = 0; i < part->nlanguages; i++) {
			if (i > 0)
				(void)buf_append_byte(out, ' ');
			put_str(out, &part->languages[i]);
		}
		(void)buf_append_byte(out, ')');
	}
	(void)buf_append_byte(out, ' ');
	put_nstr(out, &part->location);
}

static void put_envelope(struct buf *out, const struct mime_envelope *env);

static void
put_body(struct buf *out, const struct mime_part *part, bool extended)
{
	static const struct mime_str application = {"application", 11};
	static const struct mime_str octet_stream = {"octet-stream", 12};
	static const struct mime_str seven_bit = {"7bit", 4};
	const struct mime_str *type = &part->type, *subtype = &part->subtype;
	bool text, structured;

	(void)buf_append_byte(out, '(');
	if (part->kind == MIME_KIND_MULTIPART && part->children != NULL) {
		/* body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart] */
		for (const struct mime_part *c = part->children; c != NULL; c = c->next)
			put_body(out, c, extended);
		(void)buf_append_byte(out, ' ');
		put_str(out, subtype);
		if (extended) {
			(void)buf_append_byte(out, ' ');
			put_params(out, part->params, part->nparams, false);
			put_ext_common(out, part);
		}
		(void)buf_append_byte(out, ')');
		return;
	}
	structured = part->kind == MIME_KIND_MESSAGE && part->children != NULL;
	if (!structured && (mime_part_is_type(part, "multipart", NULL) ||
	                    mime_part_is_type(part, "message", "rfc822") || type->s == NULL ||
	                    subtype->s == NULL)) {
		type = &application;
		subtype = &octet_stream;
	}
	text = !structured && mime__span_is(type->s, type->len, "text");
	put_str(out, type);
	(void)buf_append_byte(out, ' ');
	put_str(out, subtype);
	(void)buf_append_byte(out, ' ');
	put_params(out, part->params, part->nparams, text);
	(void)buf_append_byte(out, ' ');
	put_nstr(out, &part->id);
	(void)buf_append_byte(out, ' ');
	put_nstr(out, &part->description);
	(void)buf_append_byte(out, ' ');
	put_str(out, part->encoding.s != NULL ? &part->encoding : &seven_bit);
	(void)buf_printf(out, " %llu", (unsigned long long)part->body_vsize);
	if (structured) {
		/* body-type-msg: ... SP envelope SP body SP body-fld-lines */
		(void)buf_append_byte(out, ' ');
		put_envelope(out, part->children->envelope);
		(void)buf_append_byte(out, ' ');
		put_body(out, part->children, extended);
		(void)buf_printf(out, " %llu", (unsigned long long)part->body_lines);
	} else if (text) {
		(void)buf_printf(out, " %llu", (unsigned long long)part->body_lines);
	}
	if (extended) {
		(void)buf_append_byte(out, ' ');
		put_nstr(out, &part->md5);
		put_ext_common(out, part);
	}
	(void)buf_append_byte(out, ')');
}

int
mime_write_bodystructure(struct buf *out, const struct mime_part *part, bool extended)
{
	put_body(out, part, extended);
	return out->err ? -1 : 0;
}

/* ---- ENVELOPE ------------------------------------------------------------------------------ */

/* env-from etc.: a list of addresses or NIL; returns false (nothing written) when the field
 * holds no address, so that Sender and Reply-To can fall back to From. */
static bool
put_addresses(struct buf *out, const struct mime_str *field, bool nil_if_empty)
{
	struct mime_pool *pool;
	struct mime_address *list;

	if (field->s == NULL) {
		if (nil_if_empty)
			(void)buf_append_str(out, "NIL");
		return false;
	}
	pool = mime_pool_new();
	if (mime_address_parse(pool, (const uint8_t *)field->s, field->len, &list) == 0) {
		mime_pool_free(&pool);
		if (nil_if_empty)
			(void)buf_append_str(out, "NIL");
		return false;
	}
	(void)buf_append_byte(out, '(');
	for (const struct mime_address *a = list; a != NULL; a = a->next) {
		(void)buf_append_byte(out, '(');
		put_nstr(out, &a->name);
		(void)buf_append_byte(out, ' ');
		put_nstr(out, &a->adl);
		(void)buf_append_byte(out, ' ');
		put_nstr(out, &a->mailbox);
		(void)buf_append_byte(out, ' ');
		put_nstr(out, &a->host);
		(void)buf_append_byte(out, ')');
	}
	(void)buf_append_byte(out, ')');
	mime_pool_free(&pool);
	return true;
}

static void
put_envelope(struct buf *out, const struct mime_envelope *env)
{
	static const struct mime_str nil = {NULL, 0};
	const struct mime_str *f[MIME_ENV_COUNT];

	for (unsigned int i = 0; i < MIME_ENV_COUNT; i++)
		f[i] = env != NULL ? &env->field[i] : &nil;
	(void)buf_append_byte(out, '(');
	put_nstr(out, f[MIME_ENV_DATE]);
	(void)buf_append_byte(out, ' ');
	put_nstr(out, f[MIME_ENV_SUBJECT]);
	(void)buf_append_byte(out, ' ');
	(void)put_addresses(out, f[MIME_ENV_FROM], true);
	/* RFC 3501 7.4.2: an absent or empty Sender or Reply-To is From. */
	(void)buf_append_byte(out, ' ');
	if (!put_addresses(out, f[MIME_ENV_SENDER], false))
		(void)put_addresses(out, f[MIME_ENV_FROM], true);
	(void)buf_append_byte(out, ' ');
	if (!put_addresses(out, f[MIME_ENV_REPLY_TO], false))
		(void)put_addresses(out, f[MIME_ENV_FROM], true);
	(void)buf_append_byte(out, ' ');
	(void)put_addresses(out, f[MIME_ENV_TO], true);
	(void)buf_append_byte(out, ' ');
	(void)put_addresses(out, f[MIME_ENV_CC], true);
	(void)buf_append_byte(out, ' ');
	(void)put_addresses(out, f[MIME_ENV_BCC], true);
	(void)buf_append_byte(out, ' ');
	put_nstr(out, f[MIME_ENV_IN_REPLY_TO]);
	(void)buf_append_byte(out, ' ');
	put_nstr(out, f[MIME_ENV_MESSAGE_ID]);
	(void)buf_append_byte(out, ')');
}

int
mime_write_envelope(struct buf *out, const struct mime_envelope *env)
{
	put_envelope(out, env);
	return out->err ? -1 : 0;
}
