/* SMTP parsing without I/O (contract in smtp_parser.h): command lines (RFC 5321 4.1.1), paths
 * with source routes accepted and dropped (RFC 5321 4.1.2, appendix C), ESMTP parameters
 * (RFC 5321 4.1.2), mailbox syntax and limits (RFC 5321 4.1.2, 4.5.3.1, RFC 6531 3.3), and the
 * DATA decoder (end of data RFC 5321 4.1.1.4, dot-unstuffing 4.5.2) with line, size and header
 * accounting for the RFC 5322 checks the server makes.
 * Invariants: nothing here allocates except through the caller's struct buf; spans point into
 * the caller's input; the DATA decoder is driven one octet at a time by an explicit state, so its
 * results never depend on how the input was split into calls, and the only octet it holds back
 * between calls is the CR of a line that so far reads ".\r" (it may be the terminator's). */
#include "smtp/smtp_parser.h"

#include <arpa/inet.h>
#include <limits.h>
#include <string.h>

/* ---- character classes --------------------------------------------------------------------- */

static bool
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(uint8_t c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 5322 3.2.3 atext. */
static bool
is_atext(uint8_t c)
{
	static const char specials[] = "!#$%&'*+-/=?^_`{|}~";

	return is_alnum(c) || (c != '\0' && memchr(specials, c, sizeof(specials) - 1) != NULL);
}

static uint8_t
ascii_lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c - 'A' + 'a') : c;
}

/* Compares n octets with an ASCII string, ignoring ASCII case only: verbs and keywords must not
 * match through a locale's idea of case (strncasecmp would consult it). */
static bool
ascii_eq_ci(const uint8_t *p, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (ascii_lower(p[i]) != ascii_lower((uint8_t)s[i]))
			return false;
	}
	return true;
}

/* The length of the valid UTF-8 sequence of two to four octets at p (RFC 3629 4: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0. ASCII is not handled here on purpose:
 * each caller has its own rules for it. */
static size_t
utf8_seq_len(const uint8_t *p, size_t n)
{
	uint8_t c = p[0], lo = 0x80, hi = 0xBF;
	size_t len;

	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0; /* overlong below U+0800 */
		else if (c == 0xED)
			hi = 0x9F; /* U+D800..U+DFFF are surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90; /* overlong below U+10000 */
		else if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0; /* ASCII, a continuation octet, C0/C1 (overlong) or F5..FF */
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++) {
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	}
	return len;
}

/* ---- mailboxes ----------------------------------------------------------------------------- */

/* The length of the local part at p: a quoted-string (RFC 5321 4.1.2 qtextSMTP / quoted-pairSMTP,
 * quotes included) or a dot-string (atoms of atext, no empty atom), up to but not including
 * '@'; 0 when it is not valid. RFC 6531 3.3 adds UTF8-non-ascii to both. */
static size_t
local_part_len(const uint8_t *p, size_t n, bool utf8)
{
	size_t i, u;
	bool atom_empty = true;

	if (n > 0 && p[0] == '"') {
		for (i = 1; i < n; i++) {
			uint8_t c = p[i];

			if (c == '"')
				return i + 1;
			if (c == '\\') {
				/* quoted-pairSMTP = "\" %d32-126 */
				if (i + 1 >= n || p[i + 1] < 32 || p[i + 1] > 126)
					return 0;
				i++;
			} else if (c >= 0x80) {
				if (!utf8 || (u = utf8_seq_len(p + i, n - i)) == 0)
					return 0;
				i += u - 1;
			} else if (c < 32 || c > 126) {
				return 0;
			}
		}
		return 0; /* no closing quote */
	}
	for (i = 0; i < n && p[i] != '@'; i++) {
		if (p[i] == '.') {
			if (atom_empty)
				return 0; /* leading or double dot */
			atom_empty = true;
			continue;
		}
		if (p[i] >= 0x80) {
			if (!utf8 || (u = utf8_seq_len(p + i, n - i)) == 0)
				return 0;
			i += u - 1;
		} else if (!is_atext(p[i])) {
			return 0;
		}
		atom_empty = false;
	}
	return atom_empty ? 0 : i; /* empty, or a trailing dot */
}

/* RFC 5321 4.1.3: "[" IPv4 "]" or "[IPv6:" IPv6 "]". General address literals (a registered
 * tag) are refused: nothing could route to them. inet_pton does the address syntax. */
static bool
address_literal_is_valid(const uint8_t *p, size_t n)
{
	char tmp[64];
	uint8_t addr[16];
	int af = AF_INET;

	if (n < 3 || p[0] != '[' || p[n - 1] != ']')
		return false;
	p++;
	n -= 2;
	if (n > 5 && ascii_eq_ci(p, "IPv6:", 5)) {
		af = AF_INET6;
		p += 5;
		n -= 5;
	}
	/* A NUL would end the copy early and let junk after it pass. */
	if (n >= sizeof(tmp) || memchr(p, '\0', n) != NULL)
		return false;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	return inet_pton(af, tmp, addr) == 1;
}

/* RFC 5321 4.1.2 Domain: sub-domains of letters, digits and inner hyphens (RFC 1035 2.3.1
 * labels, at most 63 octets, RFC 5321 4.5.3.1.2: 255 in all), or an address literal. With utf8,
 * U-labels (RFC 6531 3.3) may hold UTF-8; their limit is counted in octets, which is stricter
 * than the A-label form. No trailing dot: RFC 5321 has no root label in paths. */
static bool
domain_is_valid(const uint8_t *p, size_t n, bool utf8)
{
	size_t label = 0, u;
	bool hyphen_last = false;

	if (n == 0 || n > SMTP_MAX_DOMAIN)
		return false;
	if (p[0] == '[')
		return address_literal_is_valid(p, n);
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		if (c == '.') {
			if (label == 0 || hyphen_last)
				return false;
			label = 0;
			continue;
		}
		if (c == '-') {
			if (label == 0)
				return false;
			hyphen_last = true;
			label++;
		} else if (is_alnum(c)) {
			hyphen_last = false;
			label++;
		} else if (c >= 0x80 && utf8 && (u = utf8_seq_len(p + i, n - i)) > 0) {
			hyphen_last = false;
			label += u;
			i += u - 1;
		} else {
			return false;
		}
		if (label > 63)
			return false;
	}
	return label > 0 && !hyphen_last;
}

bool
smtp_mailbox_is_valid(struct span mailbox, bool utf8)
{
	const uint8_t *p = mailbox.p;
	size_t n = mailbox.len, l;

	/* RFC 5321 4.5.3.1.3: the path, brackets included, is at most SMTP_MAX_PATH octets. */
	if (n == 0 || n > SMTP_MAX_PATH - 2)
		return false;
	l = local_part_len(p, n, utf8);
	if (l == 0 || l > SMTP_MAX_LOCALPART || l >= n || p[l] != '@')
		return false;
	return domain_is_valid(p + l + 1, n - l - 1, utf8);
}

/* ---- command lines ------------------------------------------------------------------------- */

#define REPLY_BAD_CHARS "500 5.5.2 Invalid characters in command"
#define REPLY_EMPTY "500 5.5.2 Syntax error, empty command"
#define REPLY_NO_ARGS "501 5.5.4 Syntax error, no parameters allowed"
#define REPLY_PARAMS "501 5.5.4 Syntax error in parameters"
#define REPLY_TOO_MANY "501 5.5.4 Too many parameters"

enum arg_rule {
	ARG_NONE,     /* DATA, RSET, QUIT, STARTTLS */
	ARG_OPTIONAL, /* NOOP, HELP: RFC 5321 4.1.1.8, 4.1.1.9 [ SP String ] */
	ARG_REQUIRED,
	ARG_PATH,     /* MAIL, RCPT */
	ARG_BDAT,
};

static const struct verb_def {
	const char *name;
	enum smtp_verb verb;
	enum arg_rule rule;
	const char *syntax; /* reply when the argument is wrong */
} verbs[] = {
	{"EHLO", SMTP_VERB_EHLO, ARG_REQUIRED, "501 5.5.4 Syntax: EHLO domain"},
	{"HELO", SMTP_VERB_HELO, ARG_REQUIRED, "501 5.5.4 Syntax: HELO domain"},
	{"MAIL", SMTP_VERB_MAIL, ARG_PATH, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"},
	{"RCPT", SMTP_VERB_RCPT, ARG_PATH, "501 5.5.4 Syntax: RCPT TO:<address> [parameters]"},
	{"DATA", SMTP_VERB_DATA, ARG_NONE, REPLY_NO_ARGS},
	{"BDAT", SMTP_VERB_BDAT, ARG_BDAT, "501 5.5.4 Syntax: BDAT size [LAST]"},
	{"RSET", SMTP_VERB_RSET, ARG_NONE, REPLY_NO_ARGS},
	{"NOOP", SMTP_VERB_NOOP, ARG_OPTIONAL, NULL},
	{"QUIT", SMTP_VERB_QUIT, ARG_NONE, REPLY_NO_ARGS},
	{"HELP", SMTP_VERB_HELP, ARG_OPTIONAL, NULL},
	{"VRFY", SMTP_VERB_VRFY, ARG_REQUIRED, "501 5.5.4 Syntax: VRFY address"},
	{"EXPN", SMTP_VERB_EXPN, ARG_REQUIRED, "501 5.5.4 Syntax: EXPN list"},
	{"STARTTLS", SMTP_VERB_STARTTLS, ARG_NONE, REPLY_NO_ARGS},
	{"AUTH", SMTP_VERB_AUTH, ARG_REQUIRED,
	 "501 5.5.4 Syntax: AUTH mechanism [initial-response]"},
};

/* The length of one esmtp-value character at p (RFC 5321 4.1.2: %d33-60 / %d62-126; RFC 6531
 * 3.3 adds UTF8-non-ascii), or 0. */
static size_t
value_char_len(const uint8_t *p, size_t n, bool utf8)
{
	if (p[0] >= 0x80)
		return utf8 ? utf8_seq_len(p, n) : 0;
	return p[0] >= 33 && p[0] <= 126 && p[0] != '=' ? 1 : 0;
}

/* RFC 5321 4.1.2 Mail-parameters: esmtp-keyword ["=" esmtp-value] separated by SP (runs of SP
 * are tolerated); RFC 6531 3.3 lets the value hold UTF-8 too. At most SMTP_MAX_PARAMS. */
static int
parse_params(struct smtp_cmd *cmd, const uint8_t *p, size_t n, bool utf8, const char **reply_r)
{
	size_t i = 0, u;

	while (i < n) {
		struct span key, value = {p + i, 0};
		size_t start;

		if (p[i] == ' ') {
			i++;
			continue;
		}
		start = i;
		if (!is_alnum(p[i]))
			goto syntax;
		while (i < n && (is_alnum(p[i]) || p[i] == '-'))
			i++;
		key = (struct span){p + start, i - start};
		if (i < n && p[i] == '=') {
			start = ++i;
			while (i < n && p[i] != ' ') {
				if ((u = value_char_len(p + i, n - i, utf8)) == 0)
					goto syntax;
				i += u;
			}
			if (i == start)
				goto syntax; /* esmtp-value is 1*( ... ) */
			value = (struct span){p + start, i - start};
		}
		if (i < n && p[i] != ' ')
			goto syntax;
		if (cmd->nparams == SMTP_MAX_PARAMS) {
			*reply_r = REPLY_TOO_MANY;
			return -1;
		}
		cmd->params[cmd->nparams].key = key;
		cmd->params[cmd->nparams].value = value;
		cmd->nparams++;
	}
	return 0;
syntax:
	*reply_r = REPLY_PARAMS;
	return -1;
}

/* The length of a source route ("@a,@b:") at the start of p, RFC 5321 4.1.2 A-d-l; 0 when it is
 * malformed. The route's domains are checked, then ignored (RFC 5321 appendix C). */
static size_t
route_len(const uint8_t *p, size_t n, bool utf8)
{
	size_t i = 0, start;

	for (;;) {
		if (i >= n || p[i] != '@')
			return 0;
		start = ++i;
		if (i < n && p[i] == '[') {
			/* An IPv6 literal holds ':', so it is skipped as a whole. */
			while (i < n && p[i] != ']')
				i++;
			if (i < n)
				i++;
		} else {
			while (i < n && p[i] != ',' && p[i] != ':')
				i++;
		}
		if (i >= n || !domain_is_valid(p + start, i - start, utf8))
			return 0;
		if (p[i] == ':')
			return i + 1;
		if (p[i] != ',')
			return 0;
		i++;
	}
}

static bool
has_8bit(struct span s)
{
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] >= 0x80)
			return true;
	}
	return false;
}

/* "MAIL FROM:<path> [params]" / "RCPT TO:<path> [params]", RFC 5321 4.1.1.2, 4.1.1.3. */
static int
parse_path(struct smtp_cmd *cmd, const struct verb_def *v, bool utf8, const char **reply_r)
{
	bool mail = v->verb == SMTP_VERB_MAIL, quoted = false;
	const char *prefix = mail ? "FROM:" : "TO:";
	const char *bad = mail ? "553 5.1.7 Bad sender address syntax"
	                       : "553 5.1.3 Bad address syntax";
	size_t plen = strlen(prefix), n = cmd->arg.len, i, start, end, r;
	const uint8_t *p = cmd->arg.p;
	struct span path;

	if (n < plen || !ascii_eq_ci(p, prefix, plen))
		goto syntax;
	i = plen;
	/* Not in the grammar, but sent by enough clients that Postfix and others take it. */
	if (i < n && p[i] == ' ')
		i++;
	if (i >= n || p[i] != '<')
		goto syntax;
	/* Find the closing bracket; a quoted local part may hold '>' (RFC 5321 4.1.2). */
	start = i + 1;
	for (end = start; end < n; end++) {
		if (end - i + 1 > SMTP_MAX_PATH) {
			/* RFC 5321 4.5.3.1.10 */
			*reply_r = mail ? "501 5.1.7 Path too long" : "501 5.1.3 Path too long";
			return -1;
		}
		if (quoted && p[end] == '\\')
			end++;
		else if (p[end] == '"')
			quoted = !quoted;
		else if (p[end] == '>' && !quoted)
			break;
	}
	if (end >= n)
		goto syntax;
	if (end + 1 < n) {
		if (p[end + 1] != ' ')
			goto syntax;
		if (parse_params(cmd, p + end + 1, n - end - 1, utf8, reply_r) < 0)
			return -1;
	}
	path = (struct span){p + start, end - start};
	if (path.len > 0 && path.p[0] == '@') {
		if ((r = route_len(path.p, path.len, utf8)) == 0 || r == path.len) {
			*reply_r = bad; /* a malformed route, or a route to the null path */
			return -1;
		}
		path.p += r;
		path.len -= r;
	}
	cmd->path = path;
	if (path.len == 0) {
		if (mail)
			return 0; /* the null reverse-path, RFC 5321 4.5.5 */
		*reply_r = bad;
		return -1;
	}
	/* RFC 5321 4.1.1.3: <Postmaster> without a domain must be accepted. */
	if (!mail && path.len == 10 && ascii_eq_ci(path.p, "postmaster", 10))
		return 0;
	if (smtp_mailbox_is_valid(path, utf8))
		return 0;
	if (!utf8 && has_8bit(path) && smtp_mailbox_is_valid(path, true)) {
		/* Valid, but only as an internationalized address: RFC 6531 3.5, 3.7.4.1. */
		*reply_r = "553 5.6.7 Non-ASCII address requires SMTPUTF8";
		return -1;
	}
	*reply_r = bad;
	return -1;
syntax:
	*reply_r = v->syntax;
	return -1;
}

/* RFC 3030 2: "BDAT" SP chunk-size [ SP end-marker ]. The size must fit in int64_t, so callers
 * may hold it in an off_t. */
static int
parse_bdat(struct smtp_cmd *cmd)
{
	const uint8_t *p = cmd->arg.p;
	size_t n = cmd->arg.len, i = 0;
	uint64_t v = 0;

	if (n == 0 || !is_digit(p[0]))
		return -1;
	for (; i < n && is_digit(p[i]); i++) {
		unsigned int d = (unsigned int)(p[i] - '0');

		if (v > ((uint64_t)INT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	cmd->chunk_size = v;
	if (i == n)
		return 0;
	if (p[i] != ' ')
		return -1;
	while (i < n && p[i] == ' ')
		i++;
	if (n - i != 4 || !ascii_eq_ci(p + i, "LAST", 4))
		return -1;
	cmd->last = true;
	return 0;
}

int
smtp_parse_command_utf8(const uint8_t *line, size_t len, bool utf8, struct smtp_cmd *cmd,
                        const char **reply_r)
{
	const struct verb_def *v = NULL;
	size_t i, vlen;

	memset(cmd, 0, sizeof(*cmd));
	if (line == NULL)
		line = (const uint8_t *)"";
	cmd->arg = cmd->path = (struct span){line + len, 0};
	/* NUL, bare CR, LF, DEL and other controls have no place in a command line (RFC 5321
	 * 4.1.1) and are a classic smuggling and log-injection vector; HT is let through, as
	 * trailing or in AUTH/NOOP text it is harmless. */
	for (i = 0; i < len; i++) {
		if ((line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7F) {
			*reply_r = REPLY_BAD_CHARS;
			return -1;
		}
	}
	/* Leading and trailing blanks are tolerated (Postfix does the same). */
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	while (len > 0 && (line[0] == ' ' || line[0] == '\t')) {
		line++;
		len--;
	}
	if (len == 0) {
		*reply_r = REPLY_EMPTY;
		return -1;
	}
	for (vlen = 0; vlen < len && line[vlen] != ' '; vlen++)
		;
	for (i = vlen; i < len && line[i] == ' '; i++)
		;
	cmd->arg = (struct span){line + i, len - i};
	for (size_t k = 0; k < N_ELEMENTS(verbs); k++) {
		if (strlen(verbs[k].name) == vlen && ascii_eq_ci(line, verbs[k].name, vlen)) {
			v = &verbs[k];
			break;
		}
	}
	if (v == NULL) {
		cmd->verb = SMTP_VERB_UNKNOWN; /* the caller replies 500 and counts it */
		return 0;
	}
	cmd->verb = v->verb;
	switch (v->rule) {
	case ARG_NONE:
		if (cmd->arg.len == 0)
			return 0;
		break;
	case ARG_OPTIONAL:
		return 0;
	case ARG_REQUIRED:
		if (cmd->arg.len > 0)
			return 0;
		break;
	case ARG_PATH:
		return parse_path(cmd, v, utf8, reply_r);
	case ARG_BDAT:
		if (parse_bdat(cmd) == 0)
			return 0;
		break;
	}
	*reply_r = v->syntax;
	return -1;
}

int
smtp_parse_command(const uint8_t *line, size_t len, struct smtp_cmd *cmd, const char **reply_r)
{
	return smtp_parse_command_utf8(line, len, true, cmd, reply_r);
}

const struct smtp_param *
smtp_cmd_param(const struct smtp_cmd *cmd, const char *key)
{
	size_t n = strlen(key);

	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];

		if (p->key.len == n && ascii_eq_ci(p->key.p, key, n))
			return p;
	}
	return NULL;
}

/* ---- DATA ---------------------------------------------------------------------------------- */

enum data_state {
	DS_BOL,    /* at the start of a line */
	DS_DOT,    /* a line started with '.', which was dropped */
	DS_DOT_CR, /* the line so far is ".\r"; the CR is held back: it may be the terminator's */
	DS_TEXT,   /* inside a line */
	DS_CR,     /* after a CR inside a line (already appended: it is kept either way) */
	DS_DONE,   /* CRLF.CRLF consumed */
};

/* hname_len once the current line is known not to start a field we look for. */
#define HNAME_SKIP SIZE_MAX

/* One call's view of its input: in[seg..] are octets that pass through unchanged and are
 * appended to out in one go when something breaks the run (a dropped dot, a held CR, the end). */
struct feed {
	struct smtp_data *d;
	const uint8_t *in;
	size_t seg;
	struct buf *out;
};

void
smtp_data_init(struct smtp_data *d, uint64_t max_size)
{
	memset(d, 0, sizeof(*d));
	d->state = DS_BOL;
	d->max_size = max_size;
	d->in_header = true;
}

static void
feed_flush(struct feed *f, size_t end)
{
	/* A refused append leaves out->err set for the caller (the out max is its sizing). */
	if (end > f->seg && !(f->d->flags & SMTP_DATA_TOO_BIG))
		(void)buf_append(f->out, f->in + f->seg, end - f->seg);
	f->seg = end;
}

/* Counts one decoded octet, the one at in[i] or one emitted just before it. The first octet past
 * max_size stops the output: what came before it is appended, nothing after. */
static void
count_octet(struct feed *f, size_t i)
{
	struct smtp_data *d = f->d;

	d->size++;
	if (d->size > d->max_size && !(d->flags & SMTP_DATA_TOO_BIG)) {
		feed_flush(f, i);
		d->flags |= SMTP_DATA_TOO_BIG;
	}
}

/* RFC 5322 2.2, 3.6.8: the field name is ftext up to ':'; RFC 5322 4.5 (obs-optional) allows WSP
 * before the colon, as in "Received :". */
static void
header_field(struct smtp_data *d)
{
	size_t n = d->hname_len;
	struct span name;

	while (n > 0 && (d->hname[n - 1] == ' ' || d->hname[n - 1] == '\t'))
		n--;
	if (n == 0)
		return;
	for (size_t i = 0; i < n; i++) {
		if ((uint8_t)d->hname[i] < 33 || (uint8_t)d->hname[i] > 126)
			return;
	}
	name = (struct span){(const uint8_t *)d->hname, n};
	if (name.len == 8 && ascii_eq_ci(name.p, "Received", 8)) {
		if (d->received < UINT_MAX)
			d->received++;
	} else if (name.len == 10 && ascii_eq_ci(name.p, "Message-ID", 10)) {
		d->has_message_id = true;
	} else if (name.len == 4 && ascii_eq_ci(name.p, "Date", 4)) {
		d->has_date = true;
	}
}

/* Collects the start of a header line into hname until its ':'. A line that starts with WSP
 * continues the previous field (RFC 5322 2.2.3), and a name that does not fit in hname is none
 * of the ones we look for. */
static void
header_octet(struct smtp_data *d, uint8_t c)
{
	if (d->hname_len == HNAME_SKIP)
		return;
	if (d->hname_len == 0 && (c == ' ' || c == '\t')) {
		d->hname_len = HNAME_SKIP;
	} else if (c == ':') {
		header_field(d);
		d->hname_len = HNAME_SKIP;
	} else if (d->hname_len == sizeof(d->hname)) {
		d->hname_len = HNAME_SKIP;
	} else {
		d->hname[d->hname_len++] = (char)c;
	}
}

/* One decoded octet of a line's text (a bare CR or LF included: only CRLF ends a line). */
static void
line_octet(struct smtp_data *d, uint8_t c)
{
	if (c == '\0')
		d->flags |= SMTP_DATA_NUL;
	else if (c >= 0x80)
		d->flags |= SMTP_DATA_8BIT;
	/* RFC 5321 4.5.3.1.6, RFC 5322 2.1.1: 998 octets plus CRLF. */
	if (++d->line_len > SMTP_MAX_TEXT_LINE - 2)
		d->flags |= SMTP_DATA_LONG_LINE;
	if (d->in_header)
		header_octet(d, c);
}

static void
end_of_line(struct smtp_data *d)
{
	/* RFC 5322 2.1: the header section ends at the first empty line. */
	if (d->line_len == 0)
		d->in_header = false;
	d->line_len = 0;
	d->hname_len = 0;
}

/* The common case, a body line's text up to its CR or LF: it passes through unchanged, so only
 * the counts and flags change, without the per-octet state machine. Returns its length. */
static size_t
text_run(struct smtp_data *d, const uint8_t *in, size_t len)
{
	uint8_t high = 0;
	size_t n;

	for (n = 0; n < len; n++) {
		uint8_t c = in[n];

		if (c == '\r' || c == '\n')
			break;
		if (c == '\0')
			d->flags |= SMTP_DATA_NUL;
		high |= c;
	}
	if (high & 0x80)
		d->flags |= SMTP_DATA_8BIT;
	d->size += n;
	d->line_len += n;
	if (d->line_len > SMTP_MAX_TEXT_LINE - 2)
		d->flags |= SMTP_DATA_LONG_LINE;
	return n;
}

/* The state machine for both DATA (dots) and BDAT (no dots): returns the octets consumed. */
static size_t
data_run(struct smtp_data *d, const uint8_t *in, size_t len, struct buf *out, bool dots)
{
	struct feed f = {d, in, 0, out};
	size_t i;

	for (i = 0; i < len && d->state != DS_DONE; i++) {
		uint8_t c = in[i];

		if (d->state == DS_TEXT && !d->in_header) {
			/* Up to the size limit only: the octet past it goes through count_octet,
			 * which cuts the output there. */
			size_t room = len - i, n;

			if (!(d->flags & SMTP_DATA_TOO_BIG))
				room = (size_t)MIN((uint64_t)room, d->max_size - d->size);
			n = text_run(d, in + i, room);
			if (n > 0) {
				i += n - 1;
				continue;
			}
		}
		switch (d->state) {
		case DS_BOL:
			if (dots && c == '.') {
				/* RFC 5321 4.5.2: the dot goes whatever follows (".\r\n" ends). */
				feed_flush(&f, i);
				f.seg = i + 1;
				d->state = DS_DOT;
				continue;
			}
			break;
		case DS_DOT:
			if (c == '\r') {
				feed_flush(&f, i);
				f.seg = i + 1;
				d->state = DS_DOT_CR;
				continue;
			}
			break;
		case DS_DOT_CR:
			if (c == '\n') {
				/* RFC 5321 4.1.1.4: CRLF "." CRLF, the first CRLF ending the last
				 * line of the message. */
				f.seg = i + 1;
				d->state = DS_DONE;
				continue;
			}
			/* The held CR was a bare one: it is text, and goes out before c. The run
			 * starts at c (seg == i), so appending it here keeps the order. */
			count_octet(&f, i);
			if (!(d->flags & SMTP_DATA_TOO_BIG))
				(void)buf_append_byte(out, '\r');
			d->flags |= SMTP_DATA_BARE_CR;
			line_octet(d, '\r');
			break;
		case DS_CR:
			if (c == '\n') {
				count_octet(&f, i);
				end_of_line(d);
				d->state = DS_BOL;
				continue;
			}
			d->flags |= SMTP_DATA_BARE_CR;
			line_octet(d, '\r');
			break;
		default:
			break;
		}
		/* c is text, or a CR that may end the line. */
		count_octet(&f, i);
		if (c == '\r') {
			d->state = DS_CR;
			continue;
		}
		if (c == '\n')
			d->flags |= SMTP_DATA_BARE_LF; /* never a line end: SMTP smuggling */
		line_octet(d, c);
		d->state = DS_TEXT;
	}
	feed_flush(&f, i);
	return i;
}

size_t
smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t len, struct buf *out,
               bool *done_r)
{
	size_t n = data_run(d, in, len, out, true);

	*done_r = d->state == DS_DONE;
	return n;
}

void
smtp_data_feed_raw(struct smtp_data *d, const uint8_t *in, size_t len, struct buf *out)
{
	(void)data_run(d, in, len, out, false);
}
