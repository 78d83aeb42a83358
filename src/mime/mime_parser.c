/* The streaming MIME parser (contract in mime.h): RFC 5322 header sections, RFC 2045 Content-*
 * fields, RFC 2046 5.1 multipart bodies (boundaries, preamble, epilogue, nesting) and 5.2.1
 * message/rfc822, with the defaults of RFC 2045 5.2 and RFC 2046 5.1.5 (digest).
 * Invariants: the input is seen once, one octet or one run at a time, and only these are kept
 * between calls: counters, the first max_boundary + 4 octets of the current line (enough to
 * tell a boundary line), the value of one interesting header field (at most max_header_bytes),
 * and one entry per open part (at most max_depth + 1). Everything is decided at line ends, so
 * no split of the input can change the result. A boundary line ends the innermost open parts
 * and, as RFC 2046 5.1.1 says, takes the line end before it: a part ends where that line end
 * starts. Limits never fail the parse: structure past them is body (see mime_warning). */
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <stdlib.h>
#include <string.h>

/* Longest header field name we look for is "content-transfer-encoding" (25). */
#define HNAME_MAX 32

/* Counters at one point of the stream. */
struct snap {
	uint64_t off;  /* octets before it */
	uint64_t lf;   /* LFs before it */
	uint64_t bare; /* LFs without CR before it */
};

enum open_state {
	OS_HEADER,   /* reading the part's header */
	OS_BODY,     /* its body: a leaf body, or a multipart's preamble and parts */
	OS_EPILOGUE, /* a multipart after its close delimiter */
};

enum content_field {
	CF_TYPE,
	CF_ENCODING,
	CF_ID,
	CF_DESCRIPTION,
	CF_DISPOSITION,
	CF_LANGUAGE,
	CF_LOCATION,
	CF_MD5,
	CF_MIME_VERSION,
};

/* The header fields we read; all others are only skipped. */
static const struct field_def {
	const char *name;
	int content; /* enum content_field, or -1 */
	int env;     /* enum mime_env_field, or -1 */
} field_defs[] = {
	{"content-type", CF_TYPE, -1},
	{"content-transfer-encoding", CF_ENCODING, -1},
	{"content-id", CF_ID, -1},
	{"content-description", CF_DESCRIPTION, -1},
	{"content-disposition", CF_DISPOSITION, -1},
	{"content-language", CF_LANGUAGE, -1},
	{"content-location", CF_LOCATION, -1},
	{"content-md5", CF_MD5, -1},
	{"mime-version", CF_MIME_VERSION, -1},
	{"date", -1, MIME_ENV_DATE},
	{"subject", -1, MIME_ENV_SUBJECT},
	{"from", -1, MIME_ENV_FROM},
	{"sender", -1, MIME_ENV_SENDER},
	{"reply-to", -1, MIME_ENV_REPLY_TO},
	{"to", -1, MIME_ENV_TO},
	{"cc", -1, MIME_ENV_CC},
	{"bcc", -1, MIME_ENV_BCC},
	{"in-reply-to", -1, MIME_ENV_IN_REPLY_TO},
	{"message-id", -1, MIME_ENV_MESSAGE_ID},
};

/* A part that has not ended yet. */
struct open_part {
	struct mime_part *part;
	enum open_state state;
	struct snap hdr;          /* where the header starts */
	struct snap body;         /* where the body starts (once known) */
	struct mime_part **tail;  /* where the next child is linked */
	unsigned int nfields;     /* header lines that started a field */
	unsigned int content_seen; /* bit per enum content_field: the first one counts */
	unsigned int env_seen;    /* bit per enum mime_env_field */
	bool msg_root;            /* a message header: envelope fields are kept */
	bool in_multipart;        /* a body part, MIME by definition (RFC 2046 5.1) */
	bool mime_seen;           /* MIME-Version or Content-Type present (RFC 2045 4) */
	bool ctype_valid;         /* a Content-Type that parsed */
	bool digest;              /* multipart/digest: parts default to message/rfc822 */
	bool hdr_stop;            /* a header limit was reached: fields are no longer read */
	bool bnd_active;          /* a multipart before its close delimiter */
	size_t bnd_len;           /* octets of bnd (the boundary, cut to max_boundary) */
	size_t bnd_full;          /* octets of the whole boundary */
	uint8_t *bnd;             /* max_boundary octets of p->bnd_store */
};

enum hf_state {
	HF_NONE,  /* no field yet in this header */
	HF_NAME,  /* reading a field name */
	HF_VALUE, /* reading the value of a field we keep */
	HF_SKIP,  /* a field (or line) we do not keep */
};

struct mime_parser {
	struct mime_limits lim;
	struct mime__tree *tree; /* NULL once handed over */
	struct mime_pool *pool;  /* the tree's */
	struct open_part *stack; /* max_depth + 1 entries */
	unsigned int depth;      /* open parts; stack[depth - 1] is the innermost */
	unsigned int nparts;     /* parts created */
	unsigned int nactive;    /* multiparts whose boundary is looked for */
	uint8_t *bnd_store;      /* (max_depth + 1) * max_boundary octets */

	uint64_t off;  /* octets fed */
	uint64_t lf;   /* LFs fed */
	uint64_t bare; /* LFs fed without a CR before them */
	uint8_t prev;  /* the last octet fed ('\n' at a line start) */

	/* the current line */
	struct snap line_start;
	struct snap prev_eol;     /* where the line end before this line starts */
	bool prev_eol_valid;      /* false on the first line */
	uint64_t line_len;        /* octets so far, a final CR included */
	uint8_t *prefix;          /* its first prefix_max octets */
	size_t prefix_max;        /* max_boundary + 4: "--", boundary, "--" */
	/* Where the line's text ends, blanks not counted, kept while the line may be a boundary
	 * line: what follows "--boundary" is then known without keeping the line. */
	uint64_t nb_len;          /* octets up to the last non-blank one */
	uint8_t last2[2];         /* the last two non-blank octets */
	bool cr_pending;          /* the last octet is a CR that may be the line end's */

	/* the header field being read */
	enum hf_state hf;
	uint8_t hname[HNAME_MAX];
	size_t hname_len;
	bool hname_blank;         /* blanks came after the name (obs "Subject :") */
	const struct field_def *hfield;
	struct buf hval;          /* its value, unfolded; max max_header_bytes */

	size_t kept;              /* octets the tree's pool grew by for header values */
	unsigned int warnings;    /* enum mime_warning */
	bool finished;
};

static const struct mime_str str_text = {"text", 4};
static const struct mime_str str_plain = {"plain", 5};
static const struct mime_str str_message = {"message", 7};
static const struct mime_str str_rfc822 = {"rfc822", 6};

static struct snap
now(const struct mime_parser *p)
{
	return (struct snap){p->off, p->lf, p->bare};
}

static struct open_part *
top(struct mime_parser *p)
{
	return &p->stack[p->depth - 1];
}

/* ---- parts ---------------------------------------------------------------------------------- */

static void
push_part(struct mime_parser *p, struct mime_part *part, bool msg_root, bool in_multipart)
{
	struct open_part *o = &p->stack[p->depth];
	uint8_t *bnd = p->bnd_store + (size_t)p->depth * p->lim.max_boundary;

	memset(o, 0, sizeof(*o));
	o->part = part;
	o->state = OS_HEADER;
	o->hdr = now(p);
	o->body = o->hdr;
	o->tail = &part->children;
	o->msg_root = msg_root;
	o->in_multipart = in_multipart;
	o->bnd = bnd;
	part->hdr_offset = p->off;
	if (msg_root)
		part->envelope = mime_pool_alloc(p->pool, sizeof(*part->envelope));
	p->depth++;
	p->nparts++;
	p->hf = HF_NONE;
}

/* A new child of the innermost part at the current offset; false when max_parts is reached
 * (what follows is then body of the parent). */
static bool
open_child(struct mime_parser *p, bool msg_root, bool in_multipart)
{
	struct open_part *parent = top(p);
	struct mime_part *part;

	if (p->nparts >= p->lim.max_parts) {
		p->warnings |= MIME_WARN_PARTS;
		return false;
	}
	/* end_header() made the parent a leaf when its children would be too deep. */
	ASSERT(p->depth <= p->lim.max_depth);
	part = mime_pool_alloc(p->pool, sizeof(*part));
	part->parent = parent->part;
	*parent->tail = part;
	parent->tail = &part->next;
	push_part(p, part, msg_root, in_multipart);
	return true;
}

/* ---- header fields -------------------------------------------------------------------------- */

static void
trim(const uint8_t **v, size_t *n)
{
	while (*n > 0 && (mime__is_wsp((*v)[0]) || (*v)[0] == '\r' || (*v)[0] == '\n')) {
		(*v)++;
		(*n)--;
	}
	while (*n > 0 && (mime__is_wsp((*v)[*n - 1]) || (*v)[*n - 1] == '\r' ||
	                  (*v)[*n - 1] == '\n'))
		(*n)--;
}

static void
apply_content_field(struct mime_parser *p, struct open_part *o, int field, const uint8_t *v,
                    size_t n)
{
	struct mime_part *part = o->part;
	struct mime_content_type ct;

	switch ((enum content_field)field) {
	case CF_TYPE:
		o->mime_seen = true;
		if (mime_parse_content_type(p->pool, v, n, &ct) == 0) {
			part->type = ct.type;
			part->subtype = ct.subtype;
			part->params = ct.params;
			part->nparams = ct.nparams;
			o->ctype_valid = true;
		}
		break;
	case CF_ENCODING:
		(void)mime_parse_token_value(p->pool, v, n, &part->encoding);
		break;
	case CF_ID:
		part->id = mime__str_dup(p->pool, v, n);
		break;
	case CF_DESCRIPTION:
		part->description = mime__str_dup(p->pool, v, n);
		break;
	case CF_DISPOSITION:
		(void)mime_parse_disposition(p->pool, v, n, &part->disposition, &part->disp_params,
		                             &part->ndisp_params);
		break;
	case CF_LANGUAGE:
		part->nlanguages = mime_parse_languages(p->pool, v, n, &part->languages);
		break;
	case CF_LOCATION:
		part->location = mime__str_dup(p->pool, v, n);
		break;
	case CF_MD5:
		part->md5 = mime__str_dup(p->pool, v, n);
		break;
	case CF_MIME_VERSION:
		break;
	}
}

/* The field being read is complete: parse it into the part. */
static void
field_end(struct mime_parser *p, struct open_part *o)
{
	const uint8_t *v = p->hval.data != NULL ? p->hval.data : (const uint8_t *)"";
	size_t n = p->hval.len, before;

	if (p->hf != HF_VALUE)
		return;
	p->hf = HF_SKIP;
	if (p->hval.err) {
		/* hval's max is the header limit, so never; but a cut value is never parsed */
		p->warnings |= MIME_WARN_HEADER_BYTES;
		return;
	}
	trim(&v, &n);
	if (p->kept > p->lim.max_kept_bytes || n > p->lim.max_kept_bytes - p->kept) {
		p->warnings |= MIME_WARN_KEPT_BYTES;
		o->part->flags |= MIME_PART_HEADER_CUT;
		return;
	}
	before = mime__pool_used(p->pool);
	if (p->hfield->env >= 0)
		o->part->envelope->field[p->hfield->env] = mime__str_dup(p->pool, v, n);
	else
		apply_content_field(p, o, p->hfield->content, v, n);
	p->kept += mime__pool_used(p->pool) - before;
}

/* The name before ':' is complete: keep the field or skip it. */
static void
field_name_end(struct mime_parser *p, struct open_part *o)
{
	const struct field_def *def = NULL;

	p->hf = HF_SKIP;
	for (size_t i = 0; i < N_ELEMENTS(field_defs); i++) {
		if (mime__span_is(p->hname, p->hname_len, field_defs[i].name)) {
			def = &field_defs[i];
			break;
		}
	}
	if (def == NULL)
		return;
	if (def->content == CF_MIME_VERSION) {
		o->mime_seen = true;
		return;
	}
	if (def->content >= 0) {
		/* The first of each counts (Dovecot): later ones are not even buffered. */
		if (o->content_seen & (1u << def->content))
			return;
		o->content_seen |= 1u << def->content;
		if (def->content == CF_TYPE)
			o->mime_seen = true;
	} else {
		if (!o->msg_root || (o->env_seen & (1u << def->env)))
			return;
		o->env_seen |= 1u << def->env;
	}
	p->hf = HF_VALUE;
	p->hfield = def;
	buf_reset(&p->hval);
}

static void
header_stop(struct mime_parser *p, struct open_part *o, unsigned int warning)
{
	o->hdr_stop = true;
	o->part->flags |= MIME_PART_HEADER_CUT;
	p->hf = HF_SKIP;
	p->warnings |= warning;
}

/* One octet (not LF) of a header line. Unfolding (RFC 5322 2.2.3) falls out of it: the line end
 * before a continuation line is never appended, its leading blank is. */
static void
header_octet(struct mime_parser *p, struct open_part *o, uint8_t c)
{
	if (o->hdr_stop)
		return;
	if (p->off - o->hdr.off >= p->lim.max_header_bytes) {
		header_stop(p, o, MIME_WARN_HEADER_BYTES);
		return;
	}
	if (p->line_len == 0) {
		if (mime__is_wsp(c)) {
			/* a continuation line; without a field before it, nothing to continue */
			if (p->hf == HF_NONE || p->hf == HF_NAME)
				p->hf = HF_SKIP;
		} else {
			field_end(p, o);
			if (++o->nfields > p->lim.max_header_fields) {
				header_stop(p, o, MIME_WARN_HEADER_FIELDS);
				return;
			}
			p->hf = HF_NAME;
			p->hname_len = 0;
			p->hname_blank = false;
		}
	}
	switch (p->hf) {
	case HF_NAME:
		/* RFC 5322 3.6.8 ftext; RFC 5322 4.5 lets blanks come before the colon. */
		if (c == ':')
			field_name_end(p, o);
		else if (mime__is_wsp(c))
			p->hname_blank = true;
		else if (c < 33 || c > 126 || p->hname_blank || p->hname_len == HNAME_MAX)
			p->hf = HF_SKIP; /* not a field we look for */
		else
			p->hname[p->hname_len++] = c;
		break;
	case HF_VALUE:
		(void)buf_append_byte(&p->hval, c);
		break;
	case HF_NONE:
	case HF_SKIP:
		break;
	}
}

/* ---- part boundaries ------------------------------------------------------------------------ */

static bool
is_encoding(const struct mime_str *enc, const char *name)
{
	return mime__span_is(enc->s, enc->len, name);
}

/* Takes the boundary parameter of a multipart into o; false when there is none. */
static bool
take_boundary(struct mime_parser *p, struct open_part *o)
{
	const struct mime_part *part = o->part;
	const struct mime_param *bp = mime_param_find(part->params, part->nparams, "boundary");
	struct buf tmp;
	const uint8_t *b;
	size_t n;

	if (bp == NULL)
		return false;
	b = (const uint8_t *)bp->value.s;
	n = bp->value.len;
	buf_init(&tmp, n + 64);
	if (bp->name.s[bp->name.len - 1] == '*') {
		/* RFC 2231 boundary*=''abc: decode it, it is ASCII anyway. A plain value is taken
		 * literally: an encoded word in a boundary is not one. */
		(void)mime_param_get(&tmp, part->params, part->nparams, "boundary");
		b = tmp.data != NULL ? tmp.data : (const uint8_t *)"";
		n = tmp.len;
	}
	/* A longer boundary is cut: lines start with the whole of it, so they still match. */
	o->bnd_full = n;
	o->bnd_len = MIN(n, p->lim.max_boundary);
	if (o->bnd_len > 0)
		memcpy(o->bnd, b, o->bnd_len);
	buf_deinit(&tmp);
	return o->bnd_len > 0;
}

/* The header of the innermost part ends at body_start: the blank line was seen (has_body), or a
 * boundary or the end of the message cut it short. Decides the part's type and kind. */
static void
end_header(struct mime_parser *p, struct open_part *o, struct snap body_start, bool has_body)
{
	struct mime_part *part = o->part;
	bool is_mime = o->in_multipart || o->mime_seen;
	enum mime_kind kind = MIME_KIND_LEAF;

	field_end(p, o);
	p->hf = HF_NONE;
	o->body = body_start;
	part->body_offset = body_start.off;
	if (!has_body)
		p->warnings |= MIME_WARN_NO_HEADER_END;
	if (is_mime) {
		part->flags |= MIME_PART_IS_MIME;
	} else {
		/* RFC 2045 4: without MIME-Version (or a Content-Type, as Dovecot also takes it),
		 * Content-* fields mean nothing. Only Content-Type makes ctype_valid. */
		static const struct mime_str none = {NULL, 0};

		part->encoding = part->id = part->description = none;
		part->md5 = part->location = part->disposition = none;
		part->disp_params = NULL;
		part->ndisp_params = 0;
		part->languages = NULL;
		part->nlanguages = 0;
	}
	if (!o->ctype_valid) {
		/* RFC 2045 5.2 (also for an invalid Content-Type), RFC 2046 5.1.5 (digest). */
		const struct open_part *parent = o > p->stack ? o - 1 : NULL;

		part->params = NULL;
		part->nparams = 0;
		if (o->in_multipart && parent != NULL && parent->digest) {
			part->type = str_message;
			part->subtype = str_rfc822;
		} else {
			part->type = str_text;
			part->subtype = str_plain;
		}
	}
	if (mime_part_is_type(part, "multipart", NULL)) {
		if (has_body && take_boundary(p, o))
			kind = MIME_KIND_MULTIPART;
		else if (has_body)
			p->warnings |= MIME_WARN_BOUNDARY;
	} else if (mime_part_is_type(part, "message", "rfc822")) {
		/* RFC 2046 5.2.1: only 7bit, 8bit or binary; an encoded message cannot be parsed
		 * without decoding it first, so it stays a leaf. */
		const struct mime_str *enc = &part->encoding;

		if (enc->s != NULL && !is_encoding(enc, "7bit") && !is_encoding(enc, "8bit") &&
		    !is_encoding(enc, "binary"))
			p->warnings |= MIME_WARN_ENCODED_MESSAGE;
		else if (has_body)
			kind = MIME_KIND_MESSAGE;
	}
	if (kind != MIME_KIND_LEAF && p->depth > p->lim.max_depth) {
		p->warnings |= MIME_WARN_DEPTH;
		kind = MIME_KIND_LEAF;
	}
	if (kind == MIME_KIND_MESSAGE && p->nparts >= p->lim.max_parts) {
		p->warnings |= MIME_WARN_PARTS;
		kind = MIME_KIND_LEAF;
	}
	part->kind = kind;
	o->state = OS_BODY;
	if (kind == MIME_KIND_MULTIPART) {
		o->digest = mime_part_is_type(part, "multipart", "digest");
		o->bnd_active = true;
		p->nactive++;
	} else if (kind == MIME_KIND_MESSAGE) {
		/* RFC 2046 5.2.1: the body is a message, with its own header. */
		(void)open_child(p, true, false);
	}
}

/* Ends the innermost open part at end. */
static void
close_top(struct mime_parser *p, struct snap end)
{
	struct open_part *o = top(p);
	struct mime_part *part = o->part;

	if (o->state == OS_HEADER)
		end_header(p, o, end, false);
	if (o->bnd_active) {
		o->bnd_active = false;
		p->nactive--;
		part->flags |= MIME_PART_NO_FINAL_BOUNDARY;
		p->warnings |= MIME_WARN_NO_FINAL_BOUNDARY;
	}
	if (part->kind == MIME_KIND_MULTIPART && part->children == NULL) {
		/* no delimiter line at all: nothing to call a part */
		part->kind = MIME_KIND_LEAF;
		p->warnings |= MIME_WARN_BOUNDARY;
	}
	part->end_offset = end.off;
	part->hdr_vsize = (o->body.off - o->hdr.off) + (o->body.bare - o->hdr.bare);
	part->hdr_lines = o->body.lf - o->hdr.lf;
	part->body_vsize = (end.off - o->body.off) + (end.bare - o->body.bare);
	part->body_lines = end.lf - o->body.lf;
	p->depth--;
}

/* The open multipart whose boundary the current line is, or -1. RFC 2046 5.1.1: the line need
 * only start with "--" and the boundary. When several match (one boundary a prefix of another,
 * or reused in a nested part), an exact match (nothing but blanks after the boundary and its
 * optional "--") wins, then the longer boundary, then the inner part (Dovecot's order). */
static int
find_boundary(const struct mime_parser *p, uint64_t content_len, bool *close_r)
{
	size_t pmax = (size_t)MIN(content_len, (uint64_t)p->prefix_max);
	bool dashes_last = p->last2[0] == '-' && p->last2[1] == '-';
	int best = -1;
	size_t best_len = 0;
	bool best_exact = false;

	for (unsigned int k = p->depth; k-- > 0;) {
		const struct open_part *o = &p->stack[k];
		uint64_t full = o->bnd_full;
		bool exact, close;

		if (!o->bnd_active || content_len < 2 + full ||
		    memcmp(p->prefix + 2, o->bnd, o->bnd_len) != 0)
			continue;
		if (o->bnd_len == full)
			close = 2 + full + 2 <= pmax && p->prefix[2 + full] == '-' &&
			        p->prefix[2 + full + 1] == '-';
		else /* cut boundary: what follows it is past the prefix */
			close = p->nb_len >= 2 + full + 2 && dashes_last;
		exact = p->nb_len == 2 + full || (p->nb_len == 2 + full + 2 && dashes_last);
		if (best < 0 || (exact && !best_exact) ||
		    (exact == best_exact && o->bnd_len > best_len)) {
			best = (int)k;
			best_len = o->bnd_len;
			best_exact = exact;
			*close_r = close;
		}
	}
	return best;
}

/* The current line is a boundary of the multipart at stack[idx]. */
static void
on_boundary(struct mime_parser *p, unsigned int idx, bool close, bool has_eol)
{
	struct open_part *o = top(p), *m;
	uint64_t region = o->state == OS_HEADER ? o->hdr.off : o->body.off;
	/* RFC 2046 5.1.1: the line end before the boundary belongs to the boundary. Parts that
	 * began on this very line (or had no line yet) end where it starts. */
	struct snap end = p->prev_eol_valid && p->prev_eol.off >= region ? p->prev_eol
	                                                                : p->line_start;

	p->hf = HF_NONE; /* the boundary line is no header field */
	while (p->depth - 1 > idx)
		close_top(p, end);
	m = top(p);
	if (close) {
		m->bnd_active = false;
		p->nactive--;
		m->state = OS_EPILOGUE;
	} else if (has_eol) {
		(void)open_child(p, false, true);
	}
}

/* ---- lines ---------------------------------------------------------------------------------- */

static bool
dash_line(const struct mime_parser *p)
{
	return p->prefix[0] == '-' && p->prefix[1] == '-';
}

static void
line_end(struct mime_parser *p, uint64_t content_len, bool has_eol)
{
	struct open_part *o;
	bool close = false;
	int idx;

	if (p->nactive > 0 && content_len >= 2 && dash_line(p) &&
	    (idx = find_boundary(p, content_len, &close)) >= 0) {
		on_boundary(p, (unsigned int)idx, close, has_eol);
		return;
	}
	o = top(p);
	if (o->state == OS_HEADER && has_eol && content_len == 0)
		end_header(p, o, now(p), true); /* RFC 5322 2.1: the empty line */
}

/* Moves nb_len and last2 past octet c, the line's octet number p->line_len. A CR waits for the
 * next octet: before LF it is the line end's, not text. */
static void
track_octet(struct mime_parser *p, uint8_t c)
{
	if (p->cr_pending) {
		p->cr_pending = false;
		p->nb_len = p->line_len;
		p->last2[0] = p->last2[1];
		p->last2[1] = '\r';
	}
	if (c == '\r') {
		p->cr_pending = true;
	} else if (!mime__is_wsp(c)) {
		p->nb_len = p->line_len + 1;
		p->last2[0] = p->last2[1];
		p->last2[1] = c;
	}
}

/* One octet of a line, not its LF. */
static void
line_octet(struct mime_parser *p, uint8_t c)
{
	if (p->line_len < p->prefix_max)
		p->prefix[p->line_len] = c;
	track_octet(p, c);
	p->line_len++;
	p->off++;
	p->prev = c;
}

/* A run of line octets without LF, in a body, where the prefix is no longer needed. */
static void
line_run(struct mime_parser *p, const uint8_t *d, size_t n)
{
	if (p->nactive > 0 && p->line_len >= p->prefix_max && dash_line(p)) {
		for (size_t i = 0; i < n; i++) {
			track_octet(p, d[i]);
			p->line_len++;
		}
	} else {
		p->line_len += n;
	}
	p->off += n;
	p->prev = d[n - 1];
}

static void
line_reset(struct mime_parser *p)
{
	p->line_len = 0;
	p->nb_len = 0;
	p->last2[0] = p->last2[1] = 0;
	p->cr_pending = false;
	p->prev = '\n';
}

static void
eol(struct mime_parser *p)
{
	struct open_part *o = top(p);
	bool had_cr = p->prev == '\r';
	struct snap e = {p->off - (had_cr ? 1 : 0), p->lf, p->bare};

	/* The CR of CRLF went into the value like any octet; it is the line end's. */
	if (o->state == OS_HEADER && p->hf == HF_VALUE && had_cr && p->hval.len > 0)
		p->hval.len--;
	p->lf++;
	if (!had_cr) {
		p->bare++;
		p->warnings |= MIME_WARN_BARE_LF;
	}
	p->off++;
	line_end(p, p->line_len - (had_cr ? 1 : 0), true);
	p->prev_eol = e;
	p->prev_eol_valid = true;
	p->line_start = now(p);
	line_reset(p);
}

void
mime_parser_feed(struct mime_parser *p, const uint8_t *data, size_t len)
{
	size_t i = 0;

	ASSERT(!p->finished);
	while (i < len) {
		struct open_part *o = top(p);
		const uint8_t *lf;
		size_t end;

		/* Headers go octet by octet, and so do the first octets of a body line while it may
		 * still turn out to be a boundary line. */
		if (o->state == OS_HEADER ||
		    (p->nactive > 0 && p->line_len < p->prefix_max &&
		     (p->line_len < 2 || dash_line(p)))) {
			uint8_t c = data[i++];

			if (c == '\n') {
				eol(p);
				continue;
			}
			if (o->state == OS_HEADER)
				header_octet(p, o, c);
			line_octet(p, c);
			continue;
		}
		/* The rest of a body line: nothing in it matters but its end. */
		lf = memchr(data + i, '\n', len - i);
		end = lf != NULL ? (size_t)(lf - data) : len;
		if (end > i)
			line_run(p, data + i, end - i);
		i = end;
		if (lf != NULL) {
			eol(p);
			i++;
		}
	}
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static size_t
clamp_size(size_t v, size_t def, size_t max)
{
	return v == 0 ? def : MIN(v, max);
}

struct mime_parser *
mime_parser_new(const struct mime_limits *limits)
{
	struct mime_parser *p = xcalloc(1, sizeof(*p));
	struct mime_limits def;

	mime_limits_default(&def);
	if (limits == NULL)
		limits = &def;
	p->lim.max_header_bytes = clamp_size(limits->max_header_bytes, def.max_header_bytes,
	                                     MIME_MAX_HEADER_BYTES);
	p->lim.max_header_fields = (unsigned int)clamp_size(
		limits->max_header_fields, def.max_header_fields, MIME_MAX_HEADER_FIELDS);
	p->lim.max_depth = (unsigned int)clamp_size(limits->max_depth, def.max_depth,
	                                            MIME_MAX_DEPTH);
	p->lim.max_parts = (unsigned int)clamp_size(limits->max_parts, def.max_parts,
	                                            MIME_MAX_PARTS);
	p->lim.max_boundary = clamp_size(limits->max_boundary, def.max_boundary, MIME_MAX_BOUNDARY);
	p->lim.max_kept_bytes = clamp_size(limits->max_kept_bytes, def.max_kept_bytes,
	                                   MIME_MAX_KEPT_BYTES);

	p->stack = xcalloc(p->lim.max_depth + 1, sizeof(*p->stack));
	p->bnd_store = xmalloc((p->lim.max_depth + 1) * p->lim.max_boundary);
	p->prefix_max = p->lim.max_boundary + 4;
	p->prefix = xmalloc(p->prefix_max);
	buf_init(&p->hval, p->lim.max_header_bytes);
	p->tree = mime__tree_new();
	p->pool = p->tree->pool;
	line_reset(p);
	push_part(p, &p->tree->root, true, false);
	return p;
}

int
mime_parser_finish(struct mime_parser *p, struct mime_part **root_r)
{
	*root_r = NULL;
	if (p->finished)
		return -1;
	p->finished = true;
	/* The last line without a line end can still be a boundary. A CR at its end is text:
	 * tracking one more blank settles it and moves nothing else. */
	if (p->line_len > 0) {
		track_octet(p, ' ');
		line_end(p, p->line_len, false);
	}
	while (p->depth > 0)
		close_top(p, now(p));
	*root_r = &p->tree->root;
	p->tree = NULL;
	p->pool = NULL;
	return 0;
}

unsigned int
mime_parser_warnings(const struct mime_parser *p)
{
	return p->warnings;
}

void
mime_parser_free(struct mime_parser **pp)
{
	struct mime_parser *p = *pp;

	if (p == NULL)
		return;
	if (p->tree != NULL) {
		struct mime_part *root = &p->tree->root;

		mime_part_free(&root);
	}
	buf_deinit(&p->hval);
	free(p->prefix);
	free(p->bnd_store);
	free(p->stack);
	free(p);
	*pp = NULL;
}

int
mime_parse(const uint8_t *msg, size_t len, const struct mime_limits *limits,
           struct mime_part **root_r)
{
	struct mime_parser *p = mime_parser_new(limits);
	int ret;

	mime_parser_feed(p, msg, len);
	ret = mime_parser_finish(p, root_r);
	mime_parser_free(&p);
	return ret;
}
