/* Address lists (RFC 5322 3.4) for IMAP ENVELOPE: mailboxes, name-addr with display names,
 * groups, and the obsolete forms of RFC 5322 4.4 (source routes, empty list elements, CFWS
 * around dots, phrases with dots). The value is first cut into RFC 5322 3.2 lexical tokens
 * (atoms, quoted strings, domain literals, specials; CFWS dropped but remembered), then read
 * with a small recursive-descent parser that never fails: an element it cannot read is skipped
 * to the next comma, one that lacks a part gets Dovecot's MISSING_* marker. Nesting is one
 * level (a group holds mailboxes), so nothing recurses on input. */
#include "mime/mime_header.h"
#include "mime/mime_internal.h"

#include <stdlib.h>
#include <string.h>

enum tok_type {
	T_ATOM,    /* a run of atext */
	T_QSTR,    /* a quoted string, quotes included, escapes still in */
	T_DLIT,    /* a domain literal "[...]", brackets included */
	T_SPECIAL, /* one other octet: < > : ; @ , . and stray ones */
	T_END,
};

struct tok {
	enum tok_type type;
	const uint8_t *p;
	size_t len;
	bool blank_before;   /* CFWS came before it */
	struct span comment; /* the last comment in that CFWS (len 0: none) */
};

struct aparser {
	struct mime_pool *pool;
	struct tok *t;
	size_t n; /* tokens, the T_END included */
	size_t i; /* the current token */
	size_t len; /* octets of the value */
	struct mime_address *head, **tail;
	unsigned int count;
};

static const struct mime_str missing_mailbox = {"MISSING_MAILBOX", 15};
static const struct mime_str missing_domain = {"MISSING_DOMAIN", 14};

static void
tokenize(struct aparser *ap, const uint8_t *value, size_t len)
{
	struct mime__lex lx = {value, value + len};
	size_t cap = 16;

	ap->t = xmalloc(cap * sizeof(*ap->t));
	ap->n = 0;
	for (;;) {
		struct tok tk;

		memset(&tk, 0, sizeof(tk));
		tk.blank_before = mime__skip_cfws(&lx, &tk.comment);
		tk.p = lx.p;
		if (lx.p >= lx.end) {
			tk.type = T_END;
		} else if (*lx.p == '"' || *lx.p == '[') {
			uint8_t close = *lx.p == '"' ? '"' : ']';

			tk.type = close == '"' ? T_QSTR : T_DLIT;
			lx.p++;
			while (lx.p < lx.end && *lx.p != close) {
				if (*lx.p == '\\' && lx.p + 1 < lx.end)
					lx.p++;
				lx.p++;
			}
			if (lx.p < lx.end)
				lx.p++; /* the closing one; unterminated runs to the end */
		} else if (mime__is_atext(*lx.p)) {
			tk.type = T_ATOM;
			while (lx.p < lx.end && mime__is_atext(*lx.p))
				lx.p++;
		} else {
			tk.type = T_SPECIAL;
			lx.p++;
		}
		tk.len = (size_t)(lx.p - tk.p);
		if (ap->n == cap) {
			cap *= 2;
			ap->t = xrealloc(ap->t, cap * sizeof(*ap->t));
		}
		ap->t[ap->n++] = tk;
		if (tk.type == T_END)
			break;
	}
}

static bool
is_special(const struct tok *tk, uint8_t c)
{
	return tk->type == T_SPECIAL && tk->p[0] == c;
}

static bool
is_word_or_dot(const struct tok *tk)
{
	return tk->type == T_ATOM || tk->type == T_QSTR || is_special(tk, '.');
}

/* Appends the text of a word token: a quoted string unquoted, anything else as written. */
static void
append_word(struct buf *b, const struct tok *tk)
{
	if (tk->type == T_QSTR) {
		struct mime__lex lx = {tk->p, tk->p + tk->len};

		mime__quoted_string(&lx, b);
	} else {
		(void)buf_append(b, tk->p, tk->len);
	}
}

/* Tokens [from, to) as text; blanks: one space where the source had CFWS (a phrase, RFC 5322
 * 3.2.5), or none (a local part or domain, whose CFWS is not part of the value). An empty range
 * is absent. */
static struct mime_str
join(struct aparser *ap, size_t from, size_t to, bool blanks)
{
	struct buf b;
	size_t total = 1;
	struct mime_str s = {NULL, 0};

	if (from >= to)
		return s;
	for (size_t k = from; k < to; k++)
		total += ap->t[k].len + 1;
	buf_init(&b, total);
	for (size_t k = from; k < to; k++) {
		if (blanks && k > from && ap->t[k].blank_before)
			(void)buf_append_byte(&b, ' ');
		append_word(&b, &ap->t[k]);
	}
	s = mime__str_dup(ap->pool, b.data != NULL ? b.data : (const uint8_t *)"", b.len);
	buf_deinit(&b);
	return s;
}

static void
emit(struct aparser *ap, enum mime_addr_type type, struct mime_str name, struct mime_str adl,
     struct mime_str mailbox, struct mime_str host)
{
	struct mime_address *a = mime_pool_alloc(ap->pool, sizeof(*a));

	a->type = type;
	a->name = name;
	a->adl = adl;
	a->mailbox = mailbox;
	a->host = host;
	*ap->tail = a;
	ap->tail = &a->next;
	ap->count++;
}

static void
emit_mailbox(struct aparser *ap, struct mime_str name, struct mime_str adl,
             struct mime_str mailbox, struct mime_str host)
{
	if (name.s != NULL && name.len == 0)
		name.s = NULL; /* "" <a@b>: no display name (Dovecot does the same) */
	emit(ap, MIME_ADDR_MAILBOX, name, adl, mailbox.len > 0 ? mailbox : missing_mailbox,
	     host.len > 0 ? host : missing_domain);
}

/* A domain: atoms, dots and domain literals, CFWS dropped (RFC 5322 3.4.1, 4.4 obs-domain). */
static struct mime_str
parse_domain(struct aparser *ap)
{
	size_t from = ap->i;

	while (ap->t[ap->i].type == T_ATOM || ap->t[ap->i].type == T_DLIT ||
	       is_special(&ap->t[ap->i], '.'))
		ap->i++;
	return join(ap, from, ap->i, false);
}

/* The comment of a bare addr-spec, "user@host (Real Name)", used as its name as Dovecot and
 * most clients do: the last comment before tokens (from, to], that is after the first word. */
static struct mime_str
comment_name(struct aparser *ap, size_t from, size_t to)
{
	struct span c = {NULL, 0};

	for (size_t k = from + 1; k <= to && k < ap->n; k++) {
		if (ap->t[k].comment.len > 0)
			c = ap->t[k].comment;
	}
	if (c.len == 0)
		return (struct mime_str){NULL, 0};
	return mime__comment_text(ap->pool, c);
}

/* Skips what is left of an element: up to a ',' (or the ';' that ends a group). */
static void
skip_to_separator(struct aparser *ap, bool in_group)
{
	while (ap->t[ap->i].type != T_END && !is_special(&ap->t[ap->i], ',') &&
	       !(in_group && is_special(&ap->t[ap->i], ';')))
		ap->i++;
}

/* After '<': [obs-route] local-part "@" domain ">" (RFC 5322 3.4, 4.4). */
static void
parse_angle_addr(struct aparser *ap, struct mime_str name)
{
	struct mime_str adl = {NULL, 0}, local, host = {NULL, 0};
	size_t from;

	if (is_special(&ap->t[ap->i], '@')) {
		/* obs-route = obs-domain-list ":", kept as "@a,@b" (what IMAP's adl holds) */
		struct buf route;

		buf_init(&route, 2 * ap->len + 16);
		while (is_special(&ap->t[ap->i], '@')) {
			struct mime_str d;

			ap->i++;
			d = parse_domain(ap);
			if (route.len > 0)
				(void)buf_append_byte(&route, ',');
			(void)buf_append_byte(&route, '@');
			(void)buf_append(&route, d.s, d.len);
			while (is_special(&ap->t[ap->i], ','))
				ap->i++;
			host = d;
		}
		if (is_special(&ap->t[ap->i], ':')) {
			ap->i++;
			adl = mime__str_dup(ap->pool, route.data, route.len);
			host.s = NULL;
			host.len = 0;
		}
		/* else "<@host>": no route but a mailbox without local part; host is set */
		buf_deinit(&route);
	}
	from = ap->i;
	while (is_word_or_dot(&ap->t[ap->i]))
		ap->i++;
	local = join(ap, from, ap->i, false);
	if (is_special(&ap->t[ap->i], '@')) {
		ap->i++;
		host = parse_domain(ap);
	}
	if (is_special(&ap->t[ap->i], '>'))
		ap->i++;
	emit_mailbox(ap, name, adl, local, host);
}

static void parse_element(struct aparser *ap, bool in_group);

/* After "name:": mailboxes up to ';' (RFC 5322 3.4 group; RFC 6854 allows it in From too). */
static void
parse_group(struct aparser *ap, struct mime_str name)
{
	static const struct mime_str none = {NULL, 0};

	if (name.s == NULL)
		name = mime__str_dup(ap->pool, "", 0);
	emit(ap, MIME_ADDR_GROUP_START, none, none, name, none);
	while (ap->t[ap->i].type != T_END && !is_special(&ap->t[ap->i], ';')) {
		if (is_special(&ap->t[ap->i], ','))
			ap->i++;
		else
			parse_element(ap, true);
	}
	if (is_special(&ap->t[ap->i], ';'))
		ap->i++;
	emit(ap, MIME_ADDR_GROUP_END, none, none, none, none);
}

/* One address (RFC 5322 3.4): a group, a name-addr or an addr-spec, decided by what follows
 * the leading words. Always consumes at least one token. */
static void
parse_element(struct aparser *ap, bool in_group)
{
	static const struct mime_str none = {NULL, 0};
	size_t start = ap->i, end;
	const struct tok *next;

	while (is_word_or_dot(&ap->t[ap->i]))
		ap->i++;
	end = ap->i;
	next = &ap->t[end];
	if (is_special(next, ':') && !in_group) {
		ap->i++;
		parse_group(ap, join(ap, start, end, true));
		return;
	}
	if (is_special(next, '<')) {
		ap->i++;
		parse_angle_addr(ap, join(ap, start, end, true));
		skip_to_separator(ap, in_group);
		return;
	}
	if (is_special(next, '@')) {
		struct mime_str local = join(ap, start, end, false), host;

		ap->i++;
		host = parse_domain(ap);
		emit_mailbox(ap, comment_name(ap, start, ap->i), none, local, host);
		skip_to_separator(ap, in_group);
		return;
	}
	if (end > start) {
		/* Words without '@' ("undisclosed-recipients"): a mailbox without domain. */
		emit_mailbox(ap, comment_name(ap, start, end), none, join(ap, start, end, true),
		             none);
	} else if (next->type != T_END) {
		ap->i++; /* a stray special: make progress */
	}
	skip_to_separator(ap, in_group);
}

unsigned int
mime_address_parse(struct mime_pool *pool, const uint8_t *value, size_t len,
                   struct mime_address **list_r)
{
	struct aparser ap;

	memset(&ap, 0, sizeof(ap));
	ap.pool = pool;
	ap.tail = &ap.head;
	ap.len = len;
	tokenize(&ap, value, len);
	while (ap.t[ap.i].type != T_END) {
		if (is_special(&ap.t[ap.i], ','))
			ap.i++;
		else
			parse_element(&ap, false);
	}
	free(ap.t);
	*list_r = ap.head;
	return ap.count;
}
