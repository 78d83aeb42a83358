/* POP3 line reader, command parser and dot-stuffer (see pop3_parser.h).
 *
 * RFC 1939 3: commands are a case-insensitive keyword and arguments separated by single
 * spaces, ended by CRLF; multi-line answers end with "." CRLF and lines that begin with "." are
 * "byte-stuffed". RFC 2449 4: keywords 3-4 octets, arguments up to 40, lines up to 255 octets
 * (we accept POP3_MAX_LINE). Invariants: a line is never longer than the reader's max, bytes
 * after a LF are never consumed (pipelining, RFC 2449 6.6), and a NUL or bare CR never reaches
 * the command parser. */
#include "pop3/pop3_parser.h"

#include <string.h>
#include <strings.h>

/* ---- Lines ----------------------------------------------------------------------------------- */

void
pop3_line_init(struct pop3_line *l)
{
	memset(l, 0, sizeof(*l));
}

void
pop3_line_wipe(struct pop3_line *l)
{
	bool too_long = l->too_long;

	/* The CR dropped before the LF lies just past len. */
	explicit_bzero(l->data, MIN(l->len + 1, sizeof(l->data)));
	l->len = 0;
	l->complete = l->nul = l->bare_cr = false;
	l->too_long = too_long;
	l->error = too_long ? "Line too long" : NULL;
}

int
pop3_line_feed(struct pop3_line *l, const uint8_t *data, size_t len, size_t max, size_t *used_r)
{
	size_t i;

	*used_r = 0;
	if (max > sizeof(l->data))
		max = sizeof(l->data);
	if (l->too_long) {
		l->error = "Line too long";
		return -1;
	}
	if (l->complete)
		pop3_line_wipe(l);
	for (i = 0; i < len; i++) {
		uint8_t c = data[i];

		if (c == '\n') {
			*used_r = i + 1;
			l->complete = true;
			if (l->len > 0 && l->data[l->len - 1] == '\r')
				l->len--;
			if (l->nul || l->bare_cr) {
				l->error = l->nul ? "NUL character in command"
				                  : "CR without LF in command";
				return -1;
			}
			l->error = NULL;
			return 1;
		}
		/* This byte and the LF still to come must fit in max. */
		if (l->len + 2 > max) {
			*used_r = i;
			l->too_long = true;
			l->error = "Line too long";
			return -1;
		}
		if (l->len > 0 && l->data[l->len - 1] == '\r')
			l->bare_cr = true;
		if (c == '\0')
			l->nul = true;
		l->data[l->len++] = c;
	}
	*used_r = len;
	return 0;
}

struct span
pop3_line_get(const struct pop3_line *l)
{
	return (struct span){l->data, l->len};
}

/* ---- Commands -------------------------------------------------------------------------------- */

enum arg_kind {
	ARGS_NONE,     /* no argument */
	ARGS_NUM_OPT,  /* [msg] */
	ARGS_NUM,      /* msg */
	ARGS_NUM_NUM,  /* msg n */
	ARGS_REST,     /* the rest of the line, not empty (USER, PASS) */
	ARGS_WORDS,    /* 0-2 words (AUTH [mechanism [initial-response]]) */
};

static const struct verb_def {
	const char *name;
	enum pop3_verb verb;
	enum arg_kind args;
	const char *syntax; /* the reply to a malformed command */
} verbs[] = {
	{"USER", POP3_VERB_USER, ARGS_REST, "Syntax: USER name"},
	{"PASS", POP3_VERB_PASS, ARGS_REST, "Syntax: PASS password"},
	{"QUIT", POP3_VERB_QUIT, ARGS_NONE, "Syntax: QUIT"},
	{"STAT", POP3_VERB_STAT, ARGS_NONE, "Syntax: STAT"},
	{"LIST", POP3_VERB_LIST, ARGS_NUM_OPT, "Syntax: LIST [message]"},
	{"RETR", POP3_VERB_RETR, ARGS_NUM, "Syntax: RETR message"},
	{"DELE", POP3_VERB_DELE, ARGS_NUM, "Syntax: DELE message"},
	{"NOOP", POP3_VERB_NOOP, ARGS_NONE, "Syntax: NOOP"},
	{"RSET", POP3_VERB_RSET, ARGS_NONE, "Syntax: RSET"},
	{"TOP", POP3_VERB_TOP, ARGS_NUM_NUM, "Syntax: TOP message lines"},
	{"UIDL", POP3_VERB_UIDL, ARGS_NUM_OPT, "Syntax: UIDL [message]"},
	{"CAPA", POP3_VERB_CAPA, ARGS_NONE, "Syntax: CAPA"},
	{"STLS", POP3_VERB_STLS, ARGS_NONE, "Syntax: STLS"},
	{"AUTH", POP3_VERB_AUTH, ARGS_WORDS, "Syntax: AUTH mechanism [initial-response]"},
};

const char *
pop3_verb_name(enum pop3_verb verb)
{
	for (size_t i = 0; i < N_ELEMENTS(verbs); i++) {
		if (verbs[i].verb == verb)
			return verbs[i].name;
	}
	return "?";
}

/* 1*DIGIT within 32 bits. */
static int
parse_num(struct span s, uint32_t *r)
{
	uint64_t v = 0;

	if (s.len == 0 || s.len > 10)
		return -1;
	for (size_t i = 0; i < s.len; i++) {
		if (s.p[i] < '0' || s.p[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s.p[i] - '0');
	}
	if (v > UINT32_MAX)
		return -1;
	*r = (uint32_t)v;
	return 0;
}

/* Splits p[0..len) at single spaces into at most max words; a trailing space is dropped.
 * Returns the number of words, or -1 (empty word: two spaces in a row, or too many words). */
static int
split_words(const uint8_t *p, size_t len, struct span *words, size_t max)
{
	size_t n = 0, start = 0;

	if (len > 0 && p[len - 1] == ' ')
		len--;
	if (len == 0)
		return 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && p[i] != ' ')
			continue;
		if (i == start || n == max)
			return -1;
		words[n].p = p + start;
		words[n].len = i - start;
		n++;
		start = i + 1;
	}
	return (int)n;
}

int
pop3_parse_command(const uint8_t *line, size_t len, struct pop3_cmd *cmd_r,
                   const char **error_r)
{
	const struct verb_def *def = NULL;
	const uint8_t *args;
	size_t klen, alen;
	bool eight_bit = false;
	int n;

	memset(cmd_r, 0, sizeof(*cmd_r));
	for (size_t i = 0; i < len; i++) {
		if (line[i] < 0x20 || line[i] == 0x7f) {
			*error_r = "Control characters in command";
			return -1;
		}
		eight_bit = eight_bit || line[i] >= 0x80;
	}
	for (klen = 0; klen < len && line[klen] != ' '; klen++)
		;
	if (klen == 0) {
		*error_r = len == 0 ? "Empty command" : "Unknown command";
		return -1;
	}
	for (size_t i = 0; i < N_ELEMENTS(verbs); i++) {
		if (strlen(verbs[i].name) == klen && strncasecmp((const char *)line, verbs[i].name,
		                                                 klen) == 0) {
			def = &verbs[i];
			break;
		}
	}
	if (def == NULL) {
		*error_r = "Unknown command";
		return -1;
	}
	cmd_r->verb = def->verb;
	args = klen < len ? line + klen + 1 : line + len;
	alen = klen < len ? len - klen - 1 : 0;
	if (eight_bit && def->args != ARGS_REST) {
		*error_r = "8-bit characters in command";
		return -1;
	}
	if (def->args == ARGS_REST) {
		/* The whole rest, spaces included; only a lone trailing space means nothing. */
		if (alen == 0 || (alen == 1 && args[0] == ' ')) {
			*error_r = def->syntax;
			return -1;
		}
		cmd_r->rest.p = args;
		cmd_r->rest.len = alen;
		cmd_r->args[0] = cmd_r->rest;
		cmd_r->nargs = 1;
		return 0;
	}
	n = split_words(args, alen, cmd_r->args, 2);
	if (n < 0)
		goto syntax;
	cmd_r->nargs = (size_t)n;
	switch (def->args) {
	case ARGS_NONE:
		if (n != 0)
			goto syntax;
		break;
	case ARGS_NUM_OPT:
		if (n > 1 || (n == 1 && parse_num(cmd_r->args[0], &cmd_r->num[0]) < 0))
			goto syntax;
		break;
	case ARGS_NUM:
		if (n != 1 || parse_num(cmd_r->args[0], &cmd_r->num[0]) < 0)
			goto syntax;
		break;
	case ARGS_NUM_NUM:
		if (n != 2 || parse_num(cmd_r->args[0], &cmd_r->num[0]) < 0 ||
		    parse_num(cmd_r->args[1], &cmd_r->num[1]) < 0)
			goto syntax;
		break;
	case ARGS_WORDS:
	case ARGS_REST:
		break;
	}
	return 0;
syntax:
	*error_r = def->syntax;
	return -1;
}

/* ---- Multi-line answers ------------------------------------------------------------------------ */

void
pop3_stuff_init(struct pop3_stuff *st, bool top, uint64_t body_lines)
{
	memset(st, 0, sizeof(*st));
	st->line_start = true;
	st->line_empty = true;
	st->top = top;
	st->body_lines = body_lines;
}

size_t
pop3_stuff_feed(struct pop3_stuff *st, const uint8_t *data, size_t len, struct buf *out)
{
	size_t i = 0;

	while (i < len && !st->done) {
		/* The run of bytes up to and including the next LF, or to the end. */
		const uint8_t *lf = memchr(data + i, '\n', len - i);
		size_t end = lf != NULL ? (size_t)(lf - data) + 1 : len;

		if (st->line_start && data[i] == '.')
			(void)buf_append_byte(out, '.');
		for (size_t j = i; j < end; j++) {
			if (data[j] != '\r' && data[j] != '\n')
				st->line_empty = false;
		}
		(void)buf_append(out, data + i, end - i);
		st->line_start = lf != NULL;
		i = end;
		if (lf == NULL)
			break;
		/* A line ended. */
		if (!st->in_body) {
			if (st->line_empty) {
				st->in_body = true; /* the blank line after the header */
				if (st->top && st->body_lines == 0)
					st->done = true;
			}
		} else if (st->top && --st->body_lines == 0) {
			st->done = true;
		}
		st->line_empty = true;
	}
	return i;
}

void
pop3_stuff_finish(struct pop3_stuff *st, struct buf *out)
{
	if (!st->line_start)
		(void)buf_append(out, "\r\n", 2);
	(void)buf_append(out, ".\r\n", 3);
	st->done = true;
}
