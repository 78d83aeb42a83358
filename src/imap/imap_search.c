/* IMAP SEARCH programs (RFC 3501 §6.4.4, RFC 9051 §6.4.4, RFC 4731 RETURN, RFC 5182 "$",
 * RFC 7162 MODSEQ): compiling the argument tree into a tree of keys, and matching it against
 * one message, reading and decoding the message text only when a key needs it and at most once
 * per message (the decoded, case-folded header and body are kept for the rest of the match).
 *
 * Invariants: a program's tree is at most IMAP_SEARCH_MAX_DEPTH deep and holds at most
 * IMAP_SEARCH_MAX_KEYS nodes, so the recursive parser and matcher are bounded; needles are
 * folded once at parse time with the same function as the text; sequence sets are sorted and
 * merged so a lookup is a binary search. */
#include "imap/imap_search.h"

#include "mime/mime.h"
#include "mime/mime_header.h"

#include <stdlib.h>
#include <string.h>

/* ---- case folding ---------------------------------------------------------------------------- */

/* Simple one-to-one case folding (Unicode CaseFolding.txt status C and S) for the scripts most
 * mail in European languages uses; everything else folds to itself. */
static uint32_t
fold_cp(uint32_t c)
{
	if (c < 0x80)
		return (c >= 'A' && c <= 'Z') ? c + 32 : c;
	if (c == 0xB5)
		return 0x3BC;
	if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
		return c + 32;
	if (c >= 0x100 && c <= 0x17F) {
		if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149)
			return c;
		if (c == 0x178)
			return 0xFF;
		if (c == 0x17F)
			return 's';
		if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
			return (c & 1) ? c + 1 : c;
		return (c & 1) ? c : c + 1;
	}
	if (c >= 0x386 && c <= 0x3AB) {
		if (c == 0x386)
			return 0x3AC;
		if (c >= 0x388 && c <= 0x38A)
			return c + 37;
		if (c == 0x38C)
			return 0x3CC;
		if (c == 0x38E || c == 0x38F)
			return c + 63;
		if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
			return c + 32;
		return c;
	}
	if (c == 0x3C2)
		return 0x3C3;
	if (c >= 0x400 && c <= 0x40F)
		return c + 80;
	if (c >= 0x410 && c <= 0x42F)
		return c + 32;
	return c;
}

/* Decodes one well-formed UTF-8 sequence (RFC 3629) at p; returns its length, 0 if malformed. */
static size_t
utf8_decode(const uint8_t *p, size_t n, uint32_t *cp_r)
{
	uint32_t c;
	size_t len;

	if (p[0] < 0x80) {
		*cp_r = p[0];
		return 1;
	}
	if (p[0] >= 0xC2 && p[0] <= 0xDF) {
		len = 2;
		c = p[0] & 0x1F;
	} else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
		len = 3;
		c = p[0] & 0x0F;
	} else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
		len = 4;
		c = p[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3F);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)) ||
	    (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp_r = c;
	return len;
}

static void
utf8_put(struct buf *out, uint32_t c)
{
	uint8_t b[4];

	if (c < 0x80) {
		(void)buf_append_byte(out, (uint8_t)c);
	} else if (c < 0x800) {
		b[0] = (uint8_t)(0xC0 | (c >> 6));
		b[1] = (uint8_t)(0x80 | (c & 0x3F));
		(void)buf_append(out, b, 2);
	} else if (c < 0x10000) {
		b[0] = (uint8_t)(0xE0 | (c >> 12));
		b[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
		b[2] = (uint8_t)(0x80 | (c & 0x3F));
		(void)buf_append(out, b, 3);
	} else {
		b[0] = (uint8_t)(0xF0 | (c >> 18));
		b[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
		b[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
		b[3] = (uint8_t)(0x80 | (c & 0x3F));
		(void)buf_append(out, b, 4);
	}
}

int
imap_search_fold(struct buf *out, const void *s, size_t len)
{
	const uint8_t *p = s;
	size_t i = 0;

	while (i < len && !out->err) {
		size_t run = i;
		uint32_t c;
		size_t n;

		/* ASCII runs in bulk: most text is ASCII. */
		while (run < len && p[run] < 0x80 && !(p[run] >= 'A' && p[run] <= 'Z'))
			run++;
		if (run > i) {
			(void)buf_append(out, p + i, run - i);
			i = run;
			continue;
		}
		n = utf8_decode(p + i, len - i, &c);
		if (n == 0) {
			(void)buf_append_byte(out, p[i]); /* not UTF-8: the octet as it is */
			i++;
			continue;
		}
		utf8_put(out, fold_cp(c));
		i += n;
	}
	return out->err ? -1 : 0;
}

/* ---- dates ------------------------------------------------------------------------------------ */

int64_t
imap_search_days_from_civil(int64_t y, unsigned int m, unsigned int d)
{
	/* Howard Hinnant's days_from_civil: eras of 400 years. */
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static const char *const month_names[12] = {"jan", "feb", "mar", "apr", "may", "jun",
                                             "jul", "aug", "sep", "oct", "nov", "dec"};

static unsigned int
days_in_month(int64_t y, unsigned int m)
{
	static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return dim[m - 1];
}

static uint8_t
lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

static bool
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alpha(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A month from its three-letter English abbreviation: 1..12, 0 if none. */
static unsigned int
month_from(const uint8_t *p, size_t n)
{
	if (n < 3)
		return 0;
	for (unsigned int i = 0; i < 12; i++) {
		if (lower(p[0]) == month_names[i][0] && lower(p[1]) == month_names[i][1] &&
		    lower(p[2]) == month_names[i][2])
			return i + 1;
	}
	return 0;
}

/* The search-key date: date-day "-" date-month "-" date-year (RFC 9051 §9), already unquoted,
 * into days since 1970-01-01. Returns false when it is not one. */
static bool
parse_search_date(const char *s, size_t len, int64_t *day_r)
{
	const uint8_t *p = (const uint8_t *)s;
	unsigned int d = 0, m, y = 0;
	size_t i = 0;

	while (i < len && i < 2 && is_digit(p[i]))
		d = d * 10 + (p[i++] - '0');
	if (i == 0 || i + 9 != len || p[i] != '-' || p[i + 4] != '-')
		return false;
	m = month_from(p + i + 1, 3);
	if (m == 0 || !is_alpha(p[i + 3]))
		return false;
	for (size_t k = i + 5; k < len; k++) {
		if (!is_digit(p[k]))
			return false;
		y = y * 10 + (p[k] - '0');
	}
	if (d < 1 || d > days_in_month(y, m))
		return false;
	*day_r = imap_search_days_from_civil(y, m, d);
	return true;
}

/* A lexer over an RFC 5322 date: skips blanks, line breaks and nested comments. */
struct dlex {
	const uint8_t *p;
	size_t len, pos;
};

static void
dlex_skip(struct dlex *lx)
{
	unsigned int depth = 0;

	while (lx->pos < lx->len) {
		uint8_t c = lx->p[lx->pos];

		if (depth > 0) {
			if (c == '\\' && lx->pos + 1 < lx->len)
				lx->pos++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			lx->pos++;
		} else if (c == '(') {
			depth = 1;
			lx->pos++;
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			lx->pos++;
		} else {
			break;
		}
	}
}

/* Up to max digits; returns how many were read. */
static size_t
dlex_num(struct dlex *lx, size_t max, unsigned int *v_r)
{
	size_t n = 0;
	unsigned int v = 0;

	while (lx->pos < lx->len && n < max && is_digit(lx->p[lx->pos])) {
		v = v * 10 + (unsigned int)(lx->p[lx->pos++] - '0');
		n++;
	}
	*v_r = v;
	return n;
}

static size_t
dlex_word(struct dlex *lx, const uint8_t **w_r)
{
	size_t start = lx->pos;

	while (lx->pos < lx->len && is_alpha(lx->p[lx->pos]))
		lx->pos++;
	*w_r = lx->p + start;
	return lx->pos - start;
}

static bool
dlex_char(struct dlex *lx, uint8_t c)
{
	if (lx->pos < lx->len && lx->p[lx->pos] == c) {
		lx->pos++;
		return true;
	}
	return false;
}

/* Obsolete zone names (RFC 5322 §4.3), minutes east of UTC; military zones and anything
 * unknown are -0000 ("no information"), taken as UTC. */
static int
zone_from_name(const uint8_t *w, size_t n)
{
	static const struct {
		const char *name;
		int minutes;
	} zones[] = {{"ut", 0},       {"gmt", 0},      {"utc", 0},      {"est", -5 * 60},
	             {"edt", -4 * 60}, {"cst", -6 * 60}, {"cdt", -5 * 60}, {"mst", -7 * 60},
	             {"mdt", -6 * 60}, {"pst", -8 * 60}, {"pdt", -7 * 60}};

	for (size_t i = 0; i < N_ELEMENTS(zones); i++) {
		size_t zl = strlen(zones[i].name);
		bool eq = zl == n;

		for (size_t k = 0; eq && k < n; k++)
			eq = lower(w[k]) == (uint8_t)zones[i].name[k];
		if (eq)
			return zones[i].minutes;
	}
	return 0;
}

int
imap_search_parse_date(const char *s, size_t len, int64_t *utc_r, int64_t *day_r)
{
	struct dlex lx = {(const uint8_t *)s, len, 0};
	unsigned int d, m, y, hh, mm, ss = 0;
	const uint8_t *w;
	size_t n;
	int zone = 0;
	int64_t day;

	dlex_skip(&lx);
	n = dlex_word(&lx, &w);
	if (n > 0) { /* day-of-week, checked only for being a word */
		dlex_skip(&lx);
		(void)dlex_char(&lx, ',');
		dlex_skip(&lx);
	}
	if (dlex_num(&lx, 2, &d) == 0)
		return -1;
	dlex_skip(&lx);
	(void)dlex_char(&lx, '-'); /* "1-Jan-2020" is common enough in broken mail */
	n = dlex_word(&lx, &w);
	m = n == 3 || (n > 3 && n <= 9) ? month_from(w, n) : 0;
	if (m == 0)
		return -1;
	dlex_skip(&lx);
	(void)dlex_char(&lx, '-');
	n = dlex_num(&lx, 4, &y);
	if (n < 2)
		return -1;
	if (n == 2) /* RFC 5322 §4.3 */
		y += y < 50 ? 2000 : 1900;
	else if (n == 3)
		y += 1900;
	if (d < 1 || d > days_in_month(y, m))
		return -1;
	day = imap_search_days_from_civil(y, m, d);
	dlex_skip(&lx);
	if (dlex_num(&lx, 2, &hh) == 0) {
		hh = mm = 0; /* a date without a time: still a date */
	} else {
		dlex_skip(&lx);
		if (!dlex_char(&lx, ':'))
			return -1;
		dlex_skip(&lx);
		if (dlex_num(&lx, 2, &mm) == 0)
			return -1;
		dlex_skip(&lx);
		if (dlex_char(&lx, ':')) {
			dlex_skip(&lx);
			if (dlex_num(&lx, 2, &ss) == 0)
				return -1;
		}
		if (hh > 23 || mm > 59 || ss > 60)
			return -1;
		dlex_skip(&lx);
		if (lx.pos < lx.len && (lx.p[lx.pos] == '+' || lx.p[lx.pos] == '-')) {
			bool neg = lx.p[lx.pos++] == '-';
			unsigned int z;

			if (dlex_num(&lx, 4, &z) == 4 && z % 100 < 60)
				zone = (int)(z / 100 * 60 + z % 100) * (neg ? -1 : 1);
		} else {
			n = dlex_word(&lx, &w);
			zone = zone_from_name(w, n);
		}
	}
	*day_r = day;
	*utc_r = day * 86400 + (int64_t)hh * 3600 + (int64_t)mm * 60 + ss - (int64_t)zone * 60;
	return 0;
}

/* Floor division of seconds into days, with the zone offset applied. */
static int64_t
day_of(int64_t t, int tz_minutes)
{
	int64_t x = t + (int64_t)tz_minutes * 60;

	return x >= 0 ? x / 86400 : -((-x + 86399) / 86400);
}

/* ---- header fields of a raw message ---------------------------------------------------------- */

struct hdr_iter {
	const uint8_t *p;
	size_t len, pos;
	bool done;
};

/* The next field of the top-level header: its name and its raw value (continuation lines and
 * line breaks included, the final line break not). Lines without a colon, or with a blank or a
 * control octet in the name, are skipped (mbox "From " lines, garbage). */
static bool
hdr_next(struct hdr_iter *it, struct span *name_r, struct span *value_r)
{
	while (!it->done && it->pos < it->len) {
		const uint8_t *p = it->p;
		size_t start = it->pos, eol, end, colon = SIZE_MAX;
		bool name_ok = true;

		/* one physical line and its continuations */
		eol = start;
		while (eol < it->len && p[eol] != '\n')
			eol++;
		if (eol == start || (eol == start + 1 && p[start] == '\r')) {
			it->done = true; /* the blank line ends the header */
			return false;
		}
		end = eol;
		while (end < it->len && end + 1 < it->len && (p[end + 1] == ' ' || p[end + 1] == '\t')) {
			end++;
			while (end < it->len && p[end] != '\n')
				end++;
		}
		it->pos = end < it->len ? end + 1 : it->len;
		for (size_t i = start; i < eol; i++) {
			if (p[i] == ':') {
				colon = i;
				break;
			}
			if (p[i] <= ' ' || p[i] >= 0x7F)
				name_ok = false;
		}
		if (colon == SIZE_MAX || !name_ok)
			continue;
		/* RFC 5322 obsolete syntax allows blanks before the colon */
		{
			size_t ne = colon;
			size_t ve = end;

			while (ne > start && (p[ne - 1] == ' ' || p[ne - 1] == '\t'))
				ne--;
			if (ne == start)
				continue;
			if (ve > colon + 1 && p[ve - 1] == '\r')
				ve--;
			name_r->p = p + start;
			name_r->len = ne - start;
			value_r->p = p + colon + 1;
			value_r->len = ve - (colon + 1);
		}
		return true;
	}
	return false;
}

static bool
name_eq(struct span name, const char *s)
{
	size_t n = strlen(s);

	if (name.len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (lower(name.p[i]) != lower((uint8_t)s[i]))
			return false;
	}
	return true;
}

/* Appends the unfolded value with blanks trimmed at both ends. */
static int
append_unfolded(struct buf *out, struct span v)
{
	size_t start = out->len;
	size_t a = 0;

	if (mime_header_unfold(out, v.p, v.len) < 0)
		return -1;
	while (start + a < out->len && (out->data[start + a] == ' ' || out->data[start + a] == '\t'))
		a++;
	if (a > 0) {
		memmove(out->data + start, out->data + start + a, out->len - start - a);
		out->len -= a;
	}
	while (out->len > start &&
	       (out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t' ||
	        out->data[out->len - 1] == '\r' || out->data[out->len - 1] == '\n'))
		out->len--;
	if (out->data != NULL)
		out->data[out->len] = '\0';
	return 0;
}

int
imap_search_header_get(struct buf *out, const uint8_t *msg, size_t len, const char *name)
{
	struct hdr_iter it = {msg, len, 0, false};
	struct span n, v;

	if (msg == NULL)
		return 0;
	while (hdr_next(&it, &n, &v)) {
		if (name_eq(n, name))
			return append_unfolded(out, v) < 0 ? -1 : 1;
	}
	return 0;
}

/* ---- the program ----------------------------------------------------------------------------- */

enum key_type {
	K_AND,
	K_OR,
	K_NOT,
	K_ALL,
	K_FLAG_SET,   /* flag */
	K_FLAG_UNSET, /* flag */
	K_NEW,
	K_OLD,
	K_KEYWORD,   /* str */
	K_UNKEYWORD, /* str */
	K_LARGER,    /* num */
	K_SMALLER,   /* num */
	K_SEQ,       /* ranges */
	K_UID,       /* ranges */
	K_MODSEQ,    /* num */
	K_BEFORE,    /* day */
	K_ON,
	K_SINCE,
	K_SENTBEFORE,
	K_SENTON,
	K_SENTSINCE,
	K_HEADER, /* name, str (folded) */
	K_BODY,   /* str (folded) */
	K_TEXT,   /* str (folded) */
};

struct node {
	enum key_type type;
	bool needs_msg;         /* this key or one below reads the message */
	struct node *child;     /* AND, OR, NOT: first operand */
	struct node *next;      /* next operand of the parent */
	struct node *all_next;  /* every node of the program, for freeing */
	uint32_t flag;          /* IMAP_SF_* */
	uint64_t num;           /* octets (LARGER, SMALLER) or a mod-sequence */
	int64_t day;            /* days since 1970-01-01 */
	char *name;             /* HEADER: field name */
	char *str;              /* keyword, or a folded needle */
	size_t str_len;         /* octets of str */
	struct imap_seq_range *ranges; /* sorted, merged */
	size_t nranges;
};

struct imap_search {
	struct node *root;
	struct node *all;
	size_t nkeys;
	bool uses_modseq;
	int tz; /* minutes east of UTC, for the day of the internal date */
};

struct pstate {
	struct imap_search *s;
	const struct imap_search_context *ctx;
	const char *error;
};

enum arg_kind {
	A_NONE,
	A_STRING, /* a needle */
	A_DATE,
	A_NUMBER,
	A_KEYWORD,
	A_HEADER, /* field name and needle */
	A_SEQSET, /* UID */
	A_NOT,
	A_OR,
	A_MODSEQ,
};

static const struct key_def {
	const char *name;
	enum key_type type;
	enum arg_kind arg;
	uint32_t flag;
	const char *header; /* header keys: the field */
} key_defs[] = {
	{"ALL", K_ALL, A_NONE, 0, NULL},
	{"ANSWERED", K_FLAG_SET, A_NONE, IMAP_SF_ANSWERED, NULL},
	{"BCC", K_HEADER, A_STRING, 0, "Bcc"},
	{"BEFORE", K_BEFORE, A_DATE, 0, NULL},
	{"BODY", K_BODY, A_STRING, 0, NULL},
	{"CC", K_HEADER, A_STRING, 0, "Cc"},
	{"DELETED", K_FLAG_SET, A_NONE, IMAP_SF_DELETED, NULL},
	{"DRAFT", K_FLAG_SET, A_NONE, IMAP_SF_DRAFT, NULL},
	{"FLAGGED", K_FLAG_SET, A_NONE, IMAP_SF_FLAGGED, NULL},
	{"FROM", K_HEADER, A_STRING, 0, "From"},
	{"HEADER", K_HEADER, A_HEADER, 0, NULL},
	{"KEYWORD", K_KEYWORD, A_KEYWORD, 0, NULL},
	{"LARGER", K_LARGER, A_NUMBER, 0, NULL},
	{"MODSEQ", K_MODSEQ, A_MODSEQ, 0, NULL},
	{"NEW", K_NEW, A_NONE, 0, NULL},
	{"NOT", K_NOT, A_NOT, 0, NULL},
	{"OLD", K_OLD, A_NONE, 0, NULL},
	{"ON", K_ON, A_DATE, 0, NULL},
	{"OR", K_OR, A_OR, 0, NULL},
	{"RECENT", K_FLAG_SET, A_NONE, IMAP_SF_RECENT, NULL},
	{"SEEN", K_FLAG_SET, A_NONE, IMAP_SF_SEEN, NULL},
	{"SENTBEFORE", K_SENTBEFORE, A_DATE, 0, NULL},
	{"SENTON", K_SENTON, A_DATE, 0, NULL},
	{"SENTSINCE", K_SENTSINCE, A_DATE, 0, NULL},
	{"SINCE", K_SINCE, A_DATE, 0, NULL},
	{"SMALLER", K_SMALLER, A_NUMBER, 0, NULL},
	{"SUBJECT", K_HEADER, A_STRING, 0, "Subject"},
	{"TEXT", K_TEXT, A_STRING, 0, NULL},
	{"TO", K_HEADER, A_STRING, 0, "To"},
	{"UID", K_UID, A_SEQSET, 0, NULL},
	{"UNANSWERED", K_FLAG_UNSET, A_NONE, IMAP_SF_ANSWERED, NULL},
	{"UNDELETED", K_FLAG_UNSET, A_NONE, IMAP_SF_DELETED, NULL},
	{"UNDRAFT", K_FLAG_UNSET, A_NONE, IMAP_SF_DRAFT, NULL},
	{"UNFLAGGED", K_FLAG_UNSET, A_NONE, IMAP_SF_FLAGGED, NULL},
	{"UNKEYWORD", K_UNKEYWORD, A_KEYWORD, 0, NULL},
	{"UNSEEN", K_FLAG_UNSET, A_NONE, IMAP_SF_SEEN, NULL},
};

static struct node *
node_new(struct pstate *ps, enum key_type type)
{
	struct node *n;

	if (ps->s->nkeys >= IMAP_SEARCH_MAX_KEYS) {
		ps->error = "Too many search keys";
		return NULL;
	}
	n = xcalloc(1, sizeof(*n));
	n->type = type;
	n->all_next = ps->s->all;
	ps->s->all = n;
	ps->s->nkeys++;
	return n;
}

static int
cmp_range(const void *a, const void *b)
{
	const struct imap_seq_range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* Sorts and merges ranges in place; returns the new count. */
static size_t
ranges_normalise(struct imap_seq_range *r, size_t n)
{
	size_t out = 0;

	if (n == 0)
		return 0;
	qsort(r, n, sizeof(*r), cmp_range);
	for (size_t i = 1; i < n; i++) {
		if (r[i].lo <= r[out].hi || (r[out].hi != UINT32_MAX && r[i].lo == r[out].hi + 1)) {
			if (r[i].hi > r[out].hi)
				r[out].hi = r[i].hi;
		} else {
			r[++out] = r[i];
		}
	}
	return out + 1;
}

static bool
ranges_contain(const struct imap_seq_range *r, size_t n, uint32_t v)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v < r[mid].lo)
			hi = mid;
		else if (v > r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/* A sequence set argument, or "$". */
static int
parse_seqset(struct pstate *ps, struct node *n, const struct imap_arg *arg, uint32_t star,
             bool allow_saved)
{
	const char *s;
	size_t count = 0;

	if (imap_arg_get_atom(arg, &s) < 0) {
		ps->error = "Invalid sequence set";
		return -1;
	}
	if (strcmp(s, "$") == 0) {
		if (!allow_saved || !ps->ctx->have_saved) {
			ps->error = "Saved search results are not available";
			return -1;
		}
		n->type = K_UID; /* the saved result holds UIDs, whatever the key */
		n->nranges = ps->ctx->nsaved;
		if (n->nranges > 0) {
			n->ranges = xmalloc(n->nranges * sizeof(*n->ranges));
			memcpy(n->ranges, ps->ctx->saved, n->nranges * sizeof(*n->ranges));
			for (size_t i = 0; i < n->nranges; i++) {
				if (n->ranges[i].lo > n->ranges[i].hi) {
					uint32_t t = n->ranges[i].lo;

					n->ranges[i].lo = n->ranges[i].hi;
					n->ranges[i].hi = t;
				}
			}
			n->nranges = ranges_normalise(n->ranges, n->nranges);
		}
		return 0;
	}
	if (imap_seqset_parse(s, arg->len, star, NULL, IMAP_SEARCH_MAX_RANGES, &count,
	                      &ps->error) < 0)
		return -1;
	n->ranges = xmalloc(count * sizeof(*n->ranges));
	if (imap_seqset_parse(s, arg->len, star, n->ranges, count, &n->nranges, &ps->error) < 0)
		return -1;
	n->nranges = ranges_normalise(n->ranges, n->nranges);
	return 0;
}

/* A string key's argument, folded. */
static int
parse_needle(struct pstate *ps, struct node *n, const struct imap_arg *arg)
{
	struct buf b;
	const char *s;
	size_t len;

	if (imap_arg_get_astring(arg, &s, &len) < 0) {
		ps->error = "Invalid search string";
		return -1;
	}
	buf_init(&b, IMAP_SEARCH_MAX_TEXT);
	(void)imap_search_fold(&b, s, len);
	n->str = xmemdup0(b.data != NULL ? (const char *)b.data : "", b.len);
	n->str_len = b.len;
	buf_deinit(&b);
	return 0;
}

static int parse_key(struct pstate *ps, const struct imap_arg *args, size_t nargs, size_t *pos,
                     unsigned int depth, struct node **node_r);

/* Keys of a list (or of the whole command) into an AND node; a single key is returned as it
 * is. */
static int
parse_keys(struct pstate *ps, const struct imap_arg *args, size_t nargs, unsigned int depth,
           struct node **node_r)
{
	struct node *and, *first = NULL, **tail = &first;
	size_t pos = 0, count = 0;

	if (nargs == 0) {
		ps->error = "Missing search key";
		return -1;
	}
	while (pos < nargs) {
		struct node *k;

		if (parse_key(ps, args, nargs, &pos, depth, &k) < 0)
			return -1;
		*tail = k;
		tail = &k->next;
		count++;
	}
	if (count == 1) {
		*node_r = first;
		return 0;
	}
	and = node_new(ps, K_AND);
	if (and == NULL)
		return -1;
	and->child = first;
	for (struct node *k = first; k != NULL; k = k->next)
		and->needs_msg |= k->needs_msg;
	*node_r = and;
	return 0;
}

static bool
is_seqset_atom(const struct imap_arg *a)
{
	uint8_t c;

	if ((a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NUMBER) || a->len == 0)
		return false;
	c = (uint8_t)a->str[0];
	return is_digit(c) || c == '*' || c == '$';
}

static int
parse_key(struct pstate *ps, const struct imap_arg *args, size_t nargs, size_t *pos,
          unsigned int depth, struct node **node_r)
{
	const struct imap_arg *a = &args[*pos];
	const struct key_def *def = NULL;
	struct node *n;

	if (depth >= IMAP_SEARCH_MAX_DEPTH) {
		ps->error = "Search keys nested too deep";
		return -1;
	}
	(*pos)++;
	if (a->type == IMAP_ARG_LIST) {
		if (a->count == 0) {
			ps->error = "Empty search key list";
			return -1;
		}
		return parse_keys(ps, a->list, a->count, depth + 1, node_r);
	}
	if (is_seqset_atom(a)) {
		n = node_new(ps, K_SEQ);
		if (n == NULL || parse_seqset(ps, n, a, ps->ctx->max_seq, true) < 0)
			return -1;
		*node_r = n;
		return 0;
	}
	if (a->type == IMAP_ARG_ATOM) {
		for (size_t i = 0; i < N_ELEMENTS(key_defs); i++) {
			if (imap_arg_atom_equals(a, key_defs[i].name)) {
				def = &key_defs[i];
				break;
			}
		}
	}
	if (def == NULL) {
		ps->error = "Unknown search key";
		return -1;
	}
	n = node_new(ps, def->type);
	if (n == NULL)
		return -1;
	n->flag = def->flag;
	/* arguments */
	switch (def->arg) {
	case A_NONE:
		break;
	case A_NOT:
	case A_OR:
		for (int i = 0; i < (def->arg == A_OR ? 2 : 1); i++) {
			struct node *k, **tail = &n->child;

			if (*pos >= nargs) {
				ps->error = "Missing search key";
				return -1;
			}
			while (*tail != NULL)
				tail = &(*tail)->next;
			if (parse_key(ps, args, nargs, pos, depth + 1, &k) < 0)
				return -1;
			*tail = k;
			n->needs_msg |= k->needs_msg;
		}
		break;
	default:
		if (*pos >= nargs) {
			ps->error = "Missing search key argument";
			return -1;
		}
		a = &args[(*pos)++];
		break;
	}
	switch (def->arg) {
	case A_NONE:
	case A_NOT:
	case A_OR:
		break;
	case A_STRING:
		if (def->header != NULL)
			n->name = xstrdup(def->header);
		if (parse_needle(ps, n, a) < 0)
			return -1;
		n->needs_msg = true;
		break;
	case A_HEADER: {
		const char *s;
		size_t len;

		if (imap_arg_get_astring(a, &s, &len) < 0 || len == 0) {
			ps->error = "Invalid header field name";
			return -1;
		}
		n->name = xmemdup0(s, len);
		if (*pos >= nargs) {
			ps->error = "Missing search key argument";
			return -1;
		}
		if (parse_needle(ps, n, &args[(*pos)++]) < 0)
			return -1;
		n->needs_msg = true;
		break;
	}
	case A_DATE: {
		const char *s;
		size_t len;

		if (imap_arg_get_astring(a, &s, &len) < 0 || !parse_search_date(s, len, &n->day)) {
			ps->error = "Invalid search date";
			return -1;
		}
		n->needs_msg = def->type == K_SENTBEFORE || def->type == K_SENTON ||
		               def->type == K_SENTSINCE;
		break;
	}
	case A_NUMBER:
		if (imap_arg_get_number64(a, &n->num) < 0) {
			ps->error = "Invalid search number";
			return -1;
		}
		break;
	case A_KEYWORD: {
		const char *s;
		size_t len;

		if (imap_arg_get_astring(a, &s, &len) < 0 || len == 0) {
			ps->error = "Invalid keyword";
			return -1;
		}
		n->str = xmemdup0(s, len);
		n->str_len = len;
		break;
	}
	case A_SEQSET:
		if (parse_seqset(ps, n, a, ps->ctx->max_uid, true) < 0)
			return -1;
		break;
	case A_MODSEQ:
		/* RFC 7162 §3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer; the
		 * metadata item is ignored (per-flag mod-sequences are not kept). */
		if (a->type == IMAP_ARG_QUOTED || a->type == IMAP_ARG_LITERAL) {
			if (*pos + 1 >= nargs || !(imap_arg_atom_equals(&args[*pos], "priv") ||
			                           imap_arg_atom_equals(&args[*pos], "shared") ||
			                           imap_arg_atom_equals(&args[*pos], "all"))) {
				ps->error = "Invalid MODSEQ entry type";
				return -1;
			}
			a = &args[*pos + 1];
			*pos += 2;
		}
		if (imap_arg_get_number64(a, &n->num) < 0) {
			ps->error = "Invalid mod-sequence";
			return -1;
		}
		ps->s->uses_modseq = true;
		break;
	}
	*node_r = n;
	return 0;
}

static bool
charset_supported(const char *s)
{
	static const char *const names[] = {"UTF-8", "US-ASCII", "UTF8", "ASCII"};

	for (size_t i = 0; i < N_ELEMENTS(names); i++) {
		if (strcasecmp(s, names[i]) == 0)
			return true;
	}
	return false;
}

struct imap_search *
imap_search_parse(const struct imap_arg *args, size_t nargs,
                  const struct imap_search_context *ctx, const char **error_r,
                  bool *badcharset_r)
{
	struct pstate ps = {NULL, ctx, NULL};
	size_t start = 0;

	*badcharset_r = false;
	*error_r = NULL;
	if (ctx->require_charset || (nargs > 0 && imap_arg_atom_equals(&args[0], "CHARSET"))) {
		const char *cs;
		size_t len;

		start = ctx->require_charset ? 0 : 1;
		if (start >= nargs || imap_arg_get_astring(&args[start], &cs, &len) < 0) {
			*error_r = "Missing charset";
			return NULL;
		}
		if (!charset_supported(cs)) {
			*badcharset_r = true;
			*error_r = "Unsupported charset";
			return NULL;
		}
		start++;
	}
	if (start >= nargs) {
		*error_r = "Missing search key";
		return NULL;
	}
	ps.s = xcalloc(1, sizeof(*ps.s));
	ps.s->tz = ctx->tz_offset_minutes;
	if (parse_keys(&ps, &args[start], nargs - start, 0, &ps.s->root) < 0) {
		*error_r = ps.error != NULL ? ps.error : "Invalid search";
		imap_search_free(&ps.s);
		return NULL;
	}
	return ps.s;
}

void
imap_search_free(struct imap_search **sp)
{
	struct imap_search *s = *sp;
	struct node *n, *next;

	if (s == NULL)
		return;
	for (n = s->all; n != NULL; n = next) {
		next = n->all_next;
		free(n->name);
		free(n->str);
		free(n->ranges);
		free(n);
	}
	free(s);
	*sp = NULL;
}

bool
imap_search_needs_message(const struct imap_search *s)
{
	return s->root->needs_msg;
}

bool
imap_search_uses_modseq(const struct imap_search *s)
{
	return s->uses_modseq;
}

int
imap_search_parse_return(const struct imap_arg *args, size_t nargs, unsigned int *return_r,
                         size_t *consumed_r, const char **error_r)
{
	static const struct {
		const char *name;
		unsigned int bit;
	} opts[] = {{"MIN", IMAP_SEARCH_RETURN_MIN},
	            {"MAX", IMAP_SEARCH_RETURN_MAX},
	            {"ALL", IMAP_SEARCH_RETURN_ALL},
	            {"COUNT", IMAP_SEARCH_RETURN_COUNT},
	            {"SAVE", IMAP_SEARCH_RETURN_SAVE}};
	const struct imap_arg *list;
	size_t count;
	unsigned int ret = 0;

	*return_r = 0;
	*consumed_r = 0;
	if (nargs == 0 || !imap_arg_atom_equals(&args[0], "RETURN"))
		return 0;
	if (nargs < 2 || imap_arg_get_list(&args[1], &list, &count) < 0) {
		*error_r = "RETURN needs a list of options";
		return -1;
	}
	for (size_t i = 0; i < count; i++) {
		size_t k;

		for (k = 0; k < N_ELEMENTS(opts); k++) {
			if (imap_arg_atom_equals(&list[i], opts[k].name))
				break;
		}
		if (k == N_ELEMENTS(opts)) {
			*error_r = "Unknown RETURN option";
			return -1;
		}
		ret |= opts[k].bit;
	}
	if (ret == 0)
		ret = IMAP_SEARCH_RETURN_ALL; /* RFC 4731 §3.1: "RETURN ()" means ALL */
	*return_r = ret;
	*consumed_r = 2;
	return 0;
}

/* ---- matching -------------------------------------------------------------------------------- */

struct field {
	struct span name;  /* into the message */
	struct span raw;   /* the value as written, into the message */
	bool decoded;
	size_t off, len;   /* once decoded: the folded, decoded value in mstate.vals */
};

struct mstate {
	const struct imap_search_msg *msg;
	const struct imap_search *s;
	int loaded; /* 0 not yet, 1 read, 2 the header section only, -1 read error */
	const uint8_t *data;
	size_t len;

	bool hdr_done;
	struct buf hdr; /* "name: value\n" per field, folded (TEXT) */
	/* The fields by name (header keys): a value is decoded when a key asks for its field. */
	bool fields_done;
	struct field *fields;
	size_t nfields, fields_cap;
	struct buf vals;

	bool body_done;
	struct buf body; /* decoded text of the body, folded */

	bool sent_done;
	int64_t sent_day;

	struct buf tmp, tmp2; /* scratch */
};

/* Reads the message, or only its header section when whole is false and the caller can. */
static int
load(struct mstate *st, bool whole)
{
	int (*read)(void *, const uint8_t **, size_t *) = st->msg->read_message;

	if (st->loaded == 2 && whole) {
		/* The header read may go with this one: nothing may point into it any more. */
		st->loaded = 0;
		st->hdr_done = false;
		buf_reset(&st->hdr);
		st->fields_done = false;
		st->nfields = 0;
		buf_reset(&st->vals);
	}
	if (st->loaded == 0) {
		st->loaded = 1;
		if (!whole && st->msg->read_header != NULL) {
			read = st->msg->read_header;
			st->loaded = 2;
		}
		if (read != NULL && read(st->msg->ctx, &st->data, &st->len) < 0) {
			st->loaded = -1;
			st->data = NULL;
		}
		if (st->data == NULL)
			st->len = 0;
	}
	return st->loaded < 0 ? -1 : 0;
}

/* Appends a header value unfolded, RFC 2047-decoded and case-folded to out. */
static void
add_value(struct mstate *st, struct buf *out, struct span v)
{
	buf_reset(&st->tmp);
	buf_reset(&st->tmp2);
	(void)append_unfolded(&st->tmp, v);
	(void)mime_header_decode(&st->tmp2, st->tmp.data, st->tmp.len);
	(void)imap_search_fold(out, st->tmp2.data, st->tmp2.len);
}

/* Appends decoded, folded header fields of msg[0..len) to out, "name: value\n" each. */
static void
add_header_text(struct mstate *st, struct buf *out, const uint8_t *msg, size_t len)
{
	struct hdr_iter it = {msg, len, 0, false};
	struct span n, v;

	while (hdr_next(&it, &n, &v) && !out->err) {
		(void)imap_search_fold(out, n.p, n.len);
		(void)buf_append(out, ": ", 2);
		add_value(st, out, v);
		(void)buf_append_byte(out, '\n');
	}
}

/* The whole decoded header, for TEXT. */
static int
load_header(struct mstate *st)
{
	if (st->hdr_done)
		return 0;
	if (load(st, false) < 0)
		return -1;
	st->hdr_done = true;
	add_header_text(st, &st->hdr, st->data, st->len);
	return 0;
}

/* The fields by name, values not decoded yet: a key on one field decodes that one only. */
static int
load_fields(struct mstate *st)
{
	struct hdr_iter it;
	struct span n, v;

	if (st->fields_done)
		return 0;
	if (load(st, false) < 0)
		return -1;
	st->fields_done = true;
	it = (struct hdr_iter){st->data, st->len, 0, false};
	while (hdr_next(&it, &n, &v)) {
		if (st->nfields == st->fields_cap) {
			st->fields_cap = st->fields_cap ? st->fields_cap * 2 : 16;
			st->fields = xrealloc(st->fields, st->fields_cap * sizeof(*st->fields));
		}
		st->fields[st->nfields++] = (struct field){.name = n, .raw = v};
	}
	return 0;
}

static struct field *
field_value(struct mstate *st, struct field *f)
{
	if (!f->decoded) {
		f->decoded = true;
		f->off = st->vals.len;
		add_value(st, &st->vals, f->raw);
		f->len = st->vals.len - f->off;
	}
	return f;
}


static bool
str_is(const struct mime_str *s, const char *v)
{
	return s->s != NULL && strcasecmp(s->s, v) == 0;
}

/* One text leaf: transfer-decoded into tmp, converted to UTF-8 into tmp2, folded into body. */
static void
add_body_part(struct mstate *st, const struct mime_part *part)
{
	const struct mime_param *cs;
	const uint8_t *p;
	size_t n;

	if (part->body_offset >= st->len || part->end_offset <= part->body_offset)
		return;
	p = st->data + part->body_offset;
	n = (size_t)(MIN(part->end_offset, (uint64_t)st->len) - part->body_offset);
	buf_reset(&st->tmp);
	buf_reset(&st->tmp2);
	if (str_is(&part->encoding, "base64"))
		mime_decode_base64(&st->tmp, p, n);
	else if (str_is(&part->encoding, "quoted-printable"))
		mime_decode_qp(&st->tmp, p, n);
	else
		(void)buf_append(&st->tmp, p, n);
	cs = mime_param_find(part->params, part->nparams, "charset");
	if (cs == NULL || cs->value.s == NULL ||
	    mime_charset_to_utf8(&st->tmp2, cs->value.s, cs->value.len, st->tmp.data,
	                         st->tmp.len) < 0) {
		/* no charset (or an unknown one): UTF-8 if it is, else the octets folded as they
		 * are */
		(void)imap_search_fold(&st->body, st->tmp.data, st->tmp.len);
	} else {
		(void)imap_search_fold(&st->body, st->tmp2.data, st->tmp2.len);
	}
	(void)buf_append_byte(&st->body, '\n');
}

static int
load_body(struct mstate *st)
{
	struct mime_part *root = NULL;
	const struct mime_part *part;

	if (st->body_done)
		return 0;
	if (load(st, true) < 0)
		return -1;
	st->body_done = true;
	if (st->len == 0 || mime_parse(st->data, st->len, NULL, &root) < 0 || root == NULL)
		return 0;
	/* Pre-order walk without recursion: the tree may be MIME_MAX_DEPTH deep. */
	part = root;
	while (part != NULL && !st->body.err) {
		if (part->parent != NULL && part->parent->kind == MIME_KIND_MESSAGE &&
		    part->body_offset <= st->len && part->hdr_offset <= part->body_offset) {
			/* the header of an enclosed message is text of the body */
			add_header_text(st, &st->body, st->data + part->hdr_offset,
			                (size_t)(part->body_offset - part->hdr_offset));
		}
		if (part->kind == MIME_KIND_LEAF &&
		    (mime_part_is_type(part, "text", NULL) || mime_part_is_type(part, "message", NULL) ||
		     mime_part_is_type(part, "multipart", NULL)))
			add_body_part(st, part); /* unparsed multiparts and messages: as text */
		if (part->children != NULL) {
			part = part->children;
			continue;
		}
		while (part != NULL && part->next == NULL)
			part = part->parent;
		if (part != NULL)
			part = part->next;
	}
	mime_part_free(&root);
	return 0;
}

static bool
contains(const struct buf *hay, size_t off, size_t len, const struct node *n)
{
	if (n->str_len == 0)
		return true;
	if (hay->data == NULL || len < n->str_len)
		return false;
	return memmem(hay->data + off, len, n->str, n->str_len) != NULL;
}

static bool
has_keyword(const char *list, const char *kw, size_t kwlen)
{
	const char *p = list;

	if (p == NULL)
		return false;
	while (*p != '\0') {
		const char *e;

		while (*p == ' ')
			p++;
		e = p;
		while (*e != '\0' && *e != ' ')
			e++;
		if ((size_t)(e - p) == kwlen && strncasecmp(p, kw, kwlen) == 0)
			return true;
		p = e;
	}
	return false;
}

static int
sent_day(struct mstate *st, int64_t *day_r)
{
	if (!st->sent_done) {
		int64_t utc;

		if (load(st, false) < 0)
			return -1;
		st->sent_done = true;
		buf_reset(&st->tmp);
		if (imap_search_header_get(&st->tmp, st->data, st->len, "Date") <= 0 ||
		    imap_search_parse_date((const char *)st->tmp.data, st->tmp.len, &utc,
		                           &st->sent_day) < 0)
			st->sent_day = day_of(st->msg->internaldate, st->s->tz);
	}
	*day_r = st->sent_day;
	return 0;
}

static int eval(const struct node *n, struct mstate *st);

/* AND / OR: the operands that need no message text first, so that a cheap miss (AND) or hit
 * (OR) spares reading the file. */
static int
eval_list(const struct node *n, struct mstate *st, bool is_or)
{
	for (int pass = 0; pass < 2; pass++) {
		for (const struct node *k = n->child; k != NULL; k = k->next) {
			int r;

			if (k->needs_msg != (pass == 1))
				continue;
			r = eval(k, st);
			if (r < 0)
				return -1;
			if (r == (is_or ? 1 : 0))
				return r;
		}
	}
	return is_or ? 0 : 1;
}

static int
eval(const struct node *n, struct mstate *st)
{
	const struct imap_search_msg *m = st->msg;
	int64_t day;
	int r;

	switch (n->type) {
	case K_AND:
		return eval_list(n, st, false);
	case K_OR:
		return eval_list(n, st, true);
	case K_NOT:
		r = eval(n->child, st);
		return r < 0 ? -1 : !r;
	case K_ALL:
		return 1;
	case K_FLAG_SET:
		return (m->flags & n->flag) != 0;
	case K_FLAG_UNSET:
		return (m->flags & n->flag) == 0;
	case K_NEW:
		return (m->flags & IMAP_SF_RECENT) && !(m->flags & IMAP_SF_SEEN);
	case K_OLD:
		return !(m->flags & IMAP_SF_RECENT);
	case K_KEYWORD:
		return has_keyword(m->keywords, n->str, n->str_len);
	case K_UNKEYWORD:
		return !has_keyword(m->keywords, n->str, n->str_len);
	case K_LARGER:
		return m->size > n->num;
	case K_SMALLER:
		return m->size < n->num;
	case K_SEQ:
		return ranges_contain(n->ranges, n->nranges, m->seq);
	case K_UID:
		return ranges_contain(n->ranges, n->nranges, m->uid);
	case K_MODSEQ:
		return m->modseq >= n->num;
	case K_BEFORE:
		return day_of(m->internaldate, st->s->tz) < n->day;
	case K_ON:
		return day_of(m->internaldate, st->s->tz) == n->day;
	case K_SINCE:
		return day_of(m->internaldate, st->s->tz) >= n->day;
	case K_SENTBEFORE:
	case K_SENTON:
	case K_SENTSINCE:
		if (sent_day(st, &day) < 0)
			return -1;
		if (n->type == K_SENTBEFORE)
			return day < n->day;
		if (n->type == K_SENTON)
			return day == n->day;
		return day >= n->day;
	case K_HEADER:
		if (load_fields(st) < 0)
			return -1;
		for (size_t i = 0; i < st->nfields; i++) {
			const struct field *f = &st->fields[i];

			if (!name_eq(f->name, n->name))
				continue;
			f = field_value(st, &st->fields[i]);
			if (contains(&st->vals, f->off, f->len, n))
				return 1;
		}
		return 0;
	case K_BODY:
		if (load_body(st) < 0)
			return -1;
		return contains(&st->body, 0, st->body.len, n);
	case K_TEXT:
		if (load_header(st) < 0)
			return -1;
		if (contains(&st->hdr, 0, st->hdr.len, n))
			return 1;
		if (load_body(st) < 0)
			return -1;
		return contains(&st->body, 0, st->body.len, n);
	}
	PANIC("search key type %d", (int)n->type);
}

static void
mstate_init(struct mstate *st, const struct imap_search *s, const struct imap_search_msg *msg)
{
	memset(st, 0, sizeof(*st));
	st->msg = msg;
	st->s = s;
	buf_init(&st->hdr, IMAP_SEARCH_MAX_TEXT);
	buf_init(&st->vals, IMAP_SEARCH_MAX_TEXT);
	buf_init(&st->body, IMAP_SEARCH_MAX_TEXT);
	buf_init(&st->tmp, IMAP_SEARCH_MAX_TEXT);
	buf_init(&st->tmp2, IMAP_SEARCH_MAX_TEXT);
	/* never hand a NULL buffer to the decoders, even for empty text */
	(void)buf_append(&st->tmp, "", 0);
	(void)buf_append(&st->tmp2, "", 0);
	(void)buf_append(&st->hdr, "", 0);
	(void)buf_append(&st->vals, "", 0);
	(void)buf_append(&st->body, "", 0);
}

static void
mstate_deinit(struct mstate *st)
{
	buf_deinit(&st->hdr);
	buf_deinit(&st->vals);
	buf_deinit(&st->body);
	buf_deinit(&st->tmp);
	buf_deinit(&st->tmp2);
	free(st->fields);
}

int
imap_search_match(const struct imap_search *s, const struct imap_search_msg *msg)
{
	struct mstate st;
	int r;

	mstate_init(&st, s, msg);
	r = eval(s->root, &st);
	mstate_deinit(&st);
	return r;
}

/* ---- text for an index ------------------------------------------------------------------------ */

void
imap_search_extract(const uint8_t *data, size_t len, struct buf *header_r, struct buf *body_r)
{
	static const struct imap_search_msg none = {0};
	struct mstate st;

	/* The matcher's own state, with the message already "read": the same functions build
	 * the same text as HEADER, BODY and TEXT keys search. */
	mstate_init(&st, NULL, &none);
	st.loaded = 1;
	st.data = data;
	st.len = data != NULL ? len : 0;
	(void)load_header(&st);
	(void)load_body(&st);
	*header_r = st.hdr;
	*body_r = st.body;
	buf_init(&st.hdr, 0);
	buf_init(&st.body, 0);
	mstate_deinit(&st);
}

/* Whether an index can look a needle up: valid UTF-8 without NUL (an index may store other
 * octets as U+FFFD, which such a needle could then not meet), at least min_chars characters
 * and at most max_len octets. */
static bool
needle_indexable(const struct node *n, size_t min_chars, size_t max_len)
{
	const uint8_t *p = (const uint8_t *)n->str;
	size_t i = 0, chars = 0;

	if (n->str_len > max_len)
		return false;
	while (i < n->str_len) {
		uint32_t c;
		size_t k = utf8_decode(p + i, n->str_len - i, &c);

		if (k == 0 || c == 0)
			return false;
		i += k;
		chars++;
	}
	return chars >= min_chars && chars > 0;
}

struct terms {
	struct imap_search_term *v;
	size_t n, max;
	size_t min_chars, max_len;
	unsigned int group;
};

/* Appends texts one of which every message matching n contains (alternatives of one group).
 * Returns false, appending nothing, when n gives no such list: NOT, non-text keys, short or
 * long or binary needles, or too many terms. */
static bool
alternatives(const struct node *n, struct terms *t)
{
	size_t save = t->n;

	switch (n->type) {
	case K_HEADER:
	case K_BODY:
	case K_TEXT:
		if (!needle_indexable(n, t->min_chars, t->max_len) || t->n >= t->max)
			return false;
		t->v[t->n++] = (struct imap_search_term){
			.group = t->group,
			.where = n->type == K_HEADER ? IMAP_SEARCH_IN_HEADER :
			         n->type == K_BODY   ? IMAP_SEARCH_IN_BODY :
			                               IMAP_SEARCH_IN_HEADER | IMAP_SEARCH_IN_BODY,
			.text = n->str,
			.len = n->str_len,
		};
		return true;
	case K_OR:
		/* a OR b: every message has a text of a's list or of b's */
		for (const struct node *k = n->child; k != NULL; k = k->next) {
			if (!alternatives(k, t)) {
				t->n = save;
				return false;
			}
		}
		return true;
	case K_AND:
		/* a AND b: a's list alone is enough */
		for (const struct node *k = n->child; k != NULL; k = k->next) {
			if (alternatives(k, t))
				return true;
		}
		return false;
	default:
		return false;
	}
}

/* The operands of the top-level AND (and of lists nested in it) are groups of their own. */
static void
conjuncts(const struct node *n, struct terms *t)
{
	if (n->type == K_AND) {
		for (const struct node *k = n->child; k != NULL; k = k->next)
			conjuncts(k, t);
		return;
	}
	if (alternatives(n, t))
		t->group++;
}

size_t
imap_search_required(const struct imap_search *s, size_t min_chars, size_t max_len,
                     struct imap_search_term *terms, size_t max)
{
	struct terms t = {terms, 0, max, min_chars, max_len, 0};

	conjuncts(s->root, &t);
	return t.n;
}
