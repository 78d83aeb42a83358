/* IMAP command parser (contract in imap_parser.h): tag, command name and arguments (RFC 9051
 * §2.2.1, §9 formal syntax; RFC 3501 §9), literals (RFC 9051 §4.3, LITERAL+/LITERAL- RFC 7888,
 * literal8 RFC 3516), UTF-8 quoted strings (RFC 6855 §3, RFC 3629 §4) and sequence sets.
 * Invariants: command text goes through one explicit state machine one octet at a time (literal
 * data in bulk), so results never depend on how the input was split; a size is checked against
 * its limit before anything is allocated for it, and memory grows only with octets received;
 * arguments are kept as flat records in input order with parent links (no recursion, whatever
 * the nesting) and laid out as a tree only when asked for; after a recoverable error the rest of
 * the command is skipped (a non-synchronising literal that line announces included), so the next
 * command always starts on a command boundary. */
#include "imap/imap_parser.h"

#include <stdlib.h>
#include <string.h>

/* Capacity kept across commands; anything larger is released by imap_parser_reset(). */
#define KEEP_DATA 16384
#define KEEP_NODES 256

#define NO_PARENT UINT32_MAX

/* A streamed literal's size is kept in a size_t (struct imap_arg.len). */
#if SIZE_MAX < UINT64_MAX
#error "imap_parser.c assumes a 64-bit size_t"
#endif

enum pstate {
	S_TAG,
	S_NAME,
	S_ARG,          /* expecting an argument, ")" or the end of the line */
	S_AFTER_ARG,    /* after a quoted string, a literal or a list: SP, ")" or CRLF */
	S_ATOM,
	S_SECTION,      /* inside the [...] of BODY[...] and friends */
	S_SECTION_QUOTED,
	S_SECTION_QUOTED_ESC,
	S_QUOTED,
	S_QUOTED_ESC,
	S_TILDE,        /* "~": literal8 or an atom */
	S_LIT_OPEN,     /* after "{" */
	S_LIT_SIZE,
	S_LIT_PLUS,
	S_LIT_CR,
	S_LIT_LF,
	S_LIT_DATA,
	S_CR,           /* the CR ending the command */
	S_SKIP,         /* after an error: up to the end of the command */
	S_SKIP_LITERAL, /* after an error: a non-synchronising literal's data */
	S_DONE,
	S_ERROR,
};

/* The end of the current line as seen so far, to know whether it announces a literal. */
enum tail {
	T_NONE,
	T_OPEN,
	T_DIGITS,
	T_PLUS,
	T_SYNC,    /* "{n}" */
	T_NONSYNC, /* "{n+}" */
};

/* One argument, in input order. */
struct node {
	uint8_t type;    /* enum imap_arg_type */
	uint8_t flags;   /* enum imap_arg_flags */
	bool complete;   /* false while its text or literal data is still arriving */
	uint32_t parent; /* index of the enclosing list, or NO_PARENT */
	size_t off;      /* offset of its text in data */
	size_t len;      /* octets of text, or the literal's size */
	uint64_t num;
	size_t count;    /* LIST: elements (laid out by build()) */
	size_t start;    /* LIST: index of its first element in out (build()) */
	size_t filled;   /* LIST: elements placed so far (build()) */
};

struct imap_parser {
	struct imap_parser_limits limits;
	enum pstate state;
	int status;             /* what feed returns in S_DONE / S_ERROR */
	int last_status;        /* what the last feed returned */
	size_t line_len;        /* octets of the current line, CRLF included */
	enum tail tail;
	uint64_t tail_size;     /* the literal size in the tail, saturated */

	struct buf data;        /* tag, name and argument text, each NUL-terminated */
	size_t tag_off, tag_len;
	bool has_tag;
	size_t name_off, name_len;
	bool has_name, uid, cmd_append, cmd_list;

	struct node *nodes;
	size_t nnodes, nodes_cap;
	uint32_t cur_list;      /* innermost open list, or NO_PARENT */
	unsigned int depth;

	/* the token being read */
	bool atom_section_done;
	unsigned int section_depth;
	uint8_t u8_need, u8_lo, u8_hi; /* UTF-8 sequence in a quoted string */
	uint64_t lit_size, lit_left;
	bool lit_overflow, lit_binary, lit_nonsync, lit_streamed;
	unsigned int lit_index; /* streamed literals so far */
	uint64_t skip_left;

	struct imap_literal_chunk chunk;
	bool has_chunk;

	enum imap_parse_error err;
	const char *err_msg;
	bool fatal;

	struct imap_arg *out;
	size_t out_cap;
	struct imap_command cmd;
};

/* ---- character classes --------------------------------------------------------------------- */

static bool
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* ATOM-CHAR: CHAR except atom-specials ( ) { SP CTL % * " \ ]. */
static bool
is_atom_char(uint8_t c)
{
	if (c <= 0x20 || c >= 0x7F)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '%':
	case '*':
	case '"':
	case '\\':
	case ']':
		return false;
	default:
		return true;
	}
}

/* ASTRING-CHAR = ATOM-CHAR / resp-specials. */
static bool
is_astring_char(uint8_t c)
{
	return is_atom_char(c) || c == ']';
}

static uint8_t
ascii_upper(uint8_t c)
{
	return c >= 'a' && c <= 'z' ? (uint8_t)(c - 'a' + 'A') : c;
}

/* n octets against an ASCII string, ignoring ASCII case only (no locale). */
static bool
ascii_eq_ci(const uint8_t *p, size_t n, const char *s)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (ascii_upper(p[i]) != ascii_upper((uint8_t)s[i]))
			return false;
	}
	return true;
}

/* ---- errors -------------------------------------------------------------------------------- */

/* A recoverable error: the first one is kept, the rest of the command is skipped and the error
 * reported at its end (skip_octet). */
static void
fail(struct imap_parser *p, enum imap_parse_error err, const char *msg)
{
	if (p->err == IMAP_PARSE_ERR_NONE) {
		p->err = err;
		p->err_msg = msg;
	}
	p->state = S_SKIP;
}

static int
fail_fatal(struct imap_parser *p, enum imap_parse_error err, const char *msg)
{
	p->err = err;
	p->err_msg = msg;
	p->fatal = true;
	p->state = S_ERROR;
	p->status = IMAP_PARSE_ERROR;
	return IMAP_PARSE_ERROR;
}

/* An octet that has no place where it is: NUL, LF and 8-bit octets get their own message, a CR
 * too where only LF may follow (msg NULL); elsewhere a CR ends the line too early (msg). */
static void
fail_char(struct imap_parser *p, uint8_t c, const char *msg)
{
	if (c == '\0')
		fail(p, IMAP_PARSE_ERR_CHAR, "NUL octet in command");
	else if (c == '\n')
		fail(p, IMAP_PARSE_ERR_CHAR, "Line must end with CRLF");
	else if (c == '\r' && msg == NULL)
		fail(p, IMAP_PARSE_ERR_CHAR, "CR not followed by LF");
	else if (c >= 0x80)
		fail(p, IMAP_PARSE_ERR_CHAR, "8-bit octet in command text");
	else
		fail(p, IMAP_PARSE_ERR_SYNTAX, msg);
}

/* ---- storage ------------------------------------------------------------------------------- */

/* Makes room for n more octets and a NUL within max_command. The buffer grows here rather than
 * in buf_append()'s realloc(): the old block is wiped before it is freed, as the text may hold a
 * LOGIN password, and the capacity never goes past max_command + 1. */
static int
reserve(struct imap_parser *p, size_t n)
{
	struct buf *b = &p->data;
	size_t need, cap;
	uint8_t *d;

	if (n > b->max || b->len > b->max - n)
		return -1;
	need = b->len + n + 1; /* max <= IMAP_MAX_COMMAND: no overflow */
	if (need <= b->cap)
		return 0;
	cap = b->cap > 0 ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	cap = MIN(cap, b->max + 1);
	d = xmalloc(cap);
	if (b->data != NULL) {
		memcpy(d, b->data, b->len);
		explicit_bzero(b->data, b->cap);
		free(b->data);
	}
	b->data = d;
	b->cap = cap;
	return 0;
}

/* Appends to the command's text. */
static int
put(struct imap_parser *p, const void *d, size_t n)
{
	if (reserve(p, n) < 0 || buf_append(&p->data, d, n) < 0) {
		fail(p, IMAP_PARSE_ERR_TOO_BIG, "Command too large");
		return -1;
	}
	return 0;
}

static int
put_byte(struct imap_parser *p, uint8_t c)
{
	return put(p, &c, 1);
}

/* Starts an argument of the given type at the current end of data; NULL past max_args. */
static struct node *
node_new(struct imap_parser *p, enum imap_arg_type type)
{
	struct node *n;

	if (p->nnodes >= p->limits.max_args) {
		fail(p, IMAP_PARSE_ERR_LIMIT, "Too many arguments");
		return NULL;
	}
	if (p->nnodes == p->nodes_cap) {
		/* max_args <= IMAP_MAX_ARGS, so this cannot overflow. */
		size_t cap = p->nodes_cap == 0 ? 16 : p->nodes_cap * 2;

		if (cap > p->limits.max_args)
			cap = p->limits.max_args;
		p->nodes = xrealloc(p->nodes, cap * sizeof(*p->nodes));
		p->nodes_cap = cap;
	}
	n = &p->nodes[p->nnodes++];
	memset(n, 0, sizeof(*n));
	n->type = (uint8_t)type;
	n->parent = p->cur_list;
	n->off = p->data.len;
	n->complete = type == IMAP_ARG_LIST;
	return n;
}

static struct node *
node_cur(struct imap_parser *p)
{
	return &p->nodes[p->nnodes - 1];
}

/* Ends a string argument: its NUL terminator. */
static int
node_end_text(struct imap_parser *p)
{
	struct node *n = node_cur(p);

	n->len = p->data.len - n->off;
	if (put_byte(p, '\0') < 0)
		return -1;
	n->complete = true;
	return 0;
}

/* ---- the end of the line ------------------------------------------------------------------- */

/* Tracks whether the line so far ends in "{n}" or "{n+}" (with or without "~"). CR and LF leave
 * it alone: they are judged by the states. */
static void
tail_octet(struct imap_parser *p, uint8_t c)
{
	if (c == '\r' || c == '\n')
		return;
	if (c == '{') {
		p->tail = T_OPEN;
		p->tail_size = 0;
	} else if (is_digit(c) && (p->tail == T_OPEN || p->tail == T_DIGITS)) {
		unsigned int d = (unsigned int)(c - '0');

		p->tail = T_DIGITS;
		p->tail_size = p->tail_size > (UINT64_MAX - d) / 10 ? UINT64_MAX
		                                                    : p->tail_size * 10 + d;
	} else if (c == '+' && p->tail == T_DIGITS) {
		p->tail = T_PLUS;
	} else if (c == '}' && p->tail == T_DIGITS) {
		p->tail = T_SYNC;
	} else if (c == '}' && p->tail == T_PLUS) {
		p->tail = T_NONSYNC;
	} else {
		p->tail = T_NONE;
	}
}

static void
new_line(struct imap_parser *p)
{
	p->line_len = 0;
	p->tail = T_NONE;
	p->tail_size = 0;
}

/* The largest literal this command may carry. */
static uint64_t
literal_limit(const struct imap_parser *p)
{
	return p->cmd_append ? p->limits.max_append_literal : p->limits.max_literal;
}

/* One octet of a command being skipped after an error. At the end of a line the command ends,
 * unless the line announces a non-synchronising literal: the client is sending it already, so
 * it is skipped too (or, when it is beyond what we would ever read, the connection is lost). */
static int
skip_octet(struct imap_parser *p, uint8_t c)
{
	uint64_t limit;

	if (c != '\n')
		return IMAP_PARSE_MORE;
	if (p->tail != T_NONSYNC) {
		/* A synchronising literal is not sent before the continuation we never send. */
		p->state = S_ERROR;
		p->status = IMAP_PARSE_ERROR;
		return IMAP_PARSE_ERROR;
	}
	limit = MIN(p->limits.max_nonsync_literal, literal_limit(p));
	if (p->tail_size > limit) {
		p->fatal = true;
		p->state = S_ERROR;
		p->status = IMAP_PARSE_ERROR;
		return IMAP_PARSE_ERROR;
	}
	p->skip_left = p->tail_size;
	p->state = p->skip_left > 0 ? S_SKIP_LITERAL : S_SKIP;
	new_line(p);
	return IMAP_PARSE_MORE;
}

/* ---- lists --------------------------------------------------------------------------------- */

static void
list_open(struct imap_parser *p)
{
	if (p->depth >= p->limits.max_depth) {
		fail(p, IMAP_PARSE_ERR_LIMIT, "Lists nested too deeply");
		return;
	}
	if (node_new(p, IMAP_ARG_LIST) == NULL)
		return;
	p->cur_list = (uint32_t)(p->nnodes - 1);
	p->depth++;
	p->state = S_ARG;
}

static void
list_close(struct imap_parser *p)
{
	if (p->cur_list == NO_PARENT) {
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Unexpected ')'");
		return;
	}
	p->cur_list = p->nodes[p->cur_list].parent;
	p->depth--;
	p->state = S_AFTER_ARG;
}

/* CR at the end of the command's last line. */
static void
line_cr(struct imap_parser *p)
{
	if (p->cur_list != NO_PARENT)
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing ')'");
	else
		p->state = S_CR;
}

/* ---- atoms --------------------------------------------------------------------------------- */

/* The atoms after which "[" opens a section (RFC 9051 §9 fetch-att, RFC 3516 §4.2). */
static bool
atom_takes_section(const uint8_t *s, size_t n)
{
	static const char *const names[] = {"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
	                                    "BINARY.SIZE"};

	for (size_t i = 0; i < N_ELEMENTS(names); i++) {
		if (ascii_eq_ci(s, n, names[i]))
			return true;
	}
	return false;
}

/* Only the octets of a sequence set: where "*" is allowed outside LIST. */
static bool
is_seqset_shape(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]) && s[i] != ':' && s[i] != ',' && s[i] != '*')
			return false;
	}
	return true;
}

static void
atom_begin(struct imap_parser *p)
{
	if (node_new(p, IMAP_ARG_ATOM) == NULL)
		return;
	p->atom_section_done = false;
	p->section_depth = 0;
	p->state = S_ATOM;
}

/* Types the atom that just ended. Returns -1 after fail(). */
static int
atom_end(struct imap_parser *p)
{
	struct node *n = node_cur(p);
	const uint8_t *s = p->data.data + n->off; /* UNSAFE: valid until the next put() */
	size_t len = p->data.len - n->off;
	uint64_t v = 0;
	bool digits = true;

	if (n->flags & IMAP_ARG_FLAG_WILDCARD) {
		/* RFC 9051 §9: list-wildcards only in list-mailbox; "*" in sequence sets. */
		if (!p->cmd_list && (memchr(s, '%', len) != NULL || !is_seqset_shape(s, len))) {
			fail(p, IMAP_PARSE_ERR_SYNTAX, "Wildcards not allowed in this atom");
			return -1;
		}
	}
	if (s[0] == '\\' && len == 1) {
		/* flag-extension = "\" atom */
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Empty flag name");
		return -1;
	}
	if (len == 3 && ascii_eq_ci(s, 3, "NIL")) {
		n->type = IMAP_ARG_NIL;
	} else {
		for (size_t i = 0; i < len && digits; i++) {
			unsigned int d = (unsigned int)(s[i] - '0');

			if (!is_digit(s[i]) || v > ((uint64_t)INT64_MAX - d) / 10)
				digits = false; /* not a number, or beyond number64 */
			else
				v = v * 10 + d;
		}
		if (digits) {
			n->type = IMAP_ARG_NUMBER;
			n->num = v;
		}
	}
	return node_end_text(p);
}

/* An octet that may continue an atom, or end it. */
static void
atom_octet(struct imap_parser *p, uint8_t c)
{
	struct node *n = node_cur(p);

	switch (c) {
	case ' ':
		if (atom_end(p) == 0)
			p->state = S_ARG;
		return;
	case ')':
		if (atom_end(p) == 0)
			list_close(p);
		return;
	case '\r':
		if (atom_end(p) == 0)
			line_cr(p);
		return;
	case '[':
		if (!p->atom_section_done &&
		    atom_takes_section(p->data.data + n->off, p->data.len - n->off)) {
			n->flags |= IMAP_ARG_FLAG_SECTION;
			p->atom_section_done = true;
			p->state = S_SECTION;
		}
		(void)put_byte(p, c);
		return;
	case '*':
	case '%':
		n->flags |= IMAP_ARG_FLAG_WILDCARD;
		(void)put_byte(p, c);
		return;
	case '\\':
		/* Only first, as in "\Seen": atom_begin() stored it without coming here. */
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Invalid '\\' in atom");
		return;
	default:
		if (is_astring_char(c))
			(void)put_byte(p, c);
		else
			fail_char(p, c, "Invalid character in atom");
		return;
	}
}

/* Inside "[...]": section-spec with its header-list (RFC 9051 §9 section, header-list). */
static void
section_octet(struct imap_parser *p, uint8_t c)
{
	switch (c) {
	case ']':
		/* header-fld-name is an astring, which may hold "]" (ASTRING-CHAR). */
		if (p->section_depth == 0)
			p->state = S_ATOM;
		break;
	case '(':
		if (p->section_depth > 0) {
			fail(p, IMAP_PARSE_ERR_SYNTAX, "Nested list in section");
			return;
		}
		p->section_depth = 1;
		break;
	case ')':
		if (p->section_depth == 0) {
			fail(p, IMAP_PARSE_ERR_SYNTAX, "Unexpected ')' in section");
			return;
		}
		p->section_depth = 0;
		break;
	case '"':
		p->u8_need = 0;
		p->state = S_SECTION_QUOTED;
		break;
	case ' ':
		break;
	case '\r':
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing ']'");
		return;
	case '{':
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Literal not allowed in section");
		return;
	default:
		if (!is_astring_char(c) || c == '[') {
			fail_char(p, c, "Invalid character in section");
			return;
		}
		break;
	}
	(void)put_byte(p, c);
}

/* ---- quoted strings ------------------------------------------------------------------------ */

/* The first octet of a UTF-8 sequence (RFC 3629 §4): sets what must follow, -1 if it cannot
 * start one (ASCII is not handled here). */
static int
utf8_lead(struct imap_parser *p, uint8_t c)
{
	p->u8_lo = 0x80;
	p->u8_hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF) {
		p->u8_need = 1;
	} else if (c >= 0xE0 && c <= 0xEF) {
		p->u8_need = 2;
		if (c == 0xE0)
			p->u8_lo = 0xA0; /* overlong below U+0800 */
		else if (c == 0xED)
			p->u8_hi = 0x9F; /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		p->u8_need = 3;
		if (c == 0xF0)
			p->u8_lo = 0x90; /* overlong below U+10000 */
		else if (c == 0xF4)
			p->u8_hi = 0x8F; /* above U+10FFFF */
	} else {
		return -1;
	}
	return 0;
}

/* One octet of a quoted string, outside an escape. raw keeps the quotes and escapes (a quoted
 * header name inside a section stays verbatim in its atom). Returns 1 at the closing quote. */
static int
quoted_octet(struct imap_parser *p, uint8_t c, bool raw)
{
	if (p->u8_need > 0) {
		if (c < p->u8_lo || c > p->u8_hi) {
			fail(p, IMAP_PARSE_ERR_CHAR, "Invalid UTF-8 in quoted string");
			return -1;
		}
		p->u8_need--;
		p->u8_lo = 0x80;
		p->u8_hi = 0xBF;
		return put_byte(p, c);
	}
	switch (c) {
	case '"':
		if (raw && put_byte(p, c) < 0)
			return -1;
		return 1;
	case '\\':
		p->state = raw ? S_SECTION_QUOTED_ESC : S_QUOTED_ESC;
		return raw ? put_byte(p, c) : 0;
	case '\r':
	case '\n':
		/* QUOTED-CHAR is a TEXT-CHAR: a CRLF inside means the quote was never closed. */
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing '\"'");
		return -1;
	case '\0':
		fail(p, IMAP_PARSE_ERR_CHAR, "NUL octet in command");
		return -1;
	default:
		break;
	}
	if (c >= 0x80) {
		if (!p->limits.utf8) {
			fail(p, IMAP_PARSE_ERR_CHAR, "8-bit octet in quoted string");
			return -1;
		}
		if (utf8_lead(p, c) < 0) {
			fail(p, IMAP_PARSE_ERR_CHAR, "Invalid UTF-8 in quoted string");
			return -1;
		}
	}
	return put_byte(p, c);
}

static int
quoted_escape(struct imap_parser *p, uint8_t c, bool raw)
{
	/* quoted-specials only (RFC 9051 §9 QUOTED-CHAR). */
	if (c != '"' && c != '\\') {
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Invalid escape in quoted string");
		return -1;
	}
	p->state = raw ? S_SECTION_QUOTED : S_QUOTED;
	return put_byte(p, c);
}

/* ---- literals ------------------------------------------------------------------------------ */

static void
literal_begin(struct imap_parser *p, bool binary)
{
	p->lit_binary = binary;
	p->lit_size = 0;
	p->lit_overflow = false;
	p->lit_nonsync = false;
	p->state = S_LIT_OPEN;
}

/* "}" of "{n}" / "{n+}": every limit is checked here, before anything is allocated. */
static void
literal_header(struct imap_parser *p, bool nonsync)
{
	struct node *n;

	p->lit_nonsync = nonsync;
	if (nonsync && (p->lit_overflow || p->lit_size > p->limits.max_nonsync_literal)) {
		fail(p, IMAP_PARSE_ERR_TOO_BIG, p->limits.max_nonsync_literal == 0
		                                    ? "Non-synchronizing literals not supported"
		                                    : "Non-synchronizing literal too large");
		return;
	}
	if (p->lit_overflow || p->lit_size > literal_limit(p)) {
		fail(p, IMAP_PARSE_ERR_TOO_BIG, "Literal too large");
		return;
	}
	p->lit_streamed = p->limits.stream_literal_min > 0 &&
	                  p->lit_size >= p->limits.stream_literal_min;
	/* In memory: its octets and a NUL must fit in what is left of max_command. */
	if (!p->lit_streamed && (p->data.len >= p->data.max ||
	                         p->lit_size >= (uint64_t)(p->data.max - p->data.len))) {
		fail(p, IMAP_PARSE_ERR_TOO_BIG, "Literal too large");
		return;
	}
	n = node_new(p, p->lit_binary ? IMAP_ARG_LITERAL8 : IMAP_ARG_LITERAL);
	if (n == NULL)
		return;
	/* Fits: an in-memory literal is below max_command, and size_t is 64 bits (see the top). */
	n->len = (size_t)p->lit_size;
	if (p->lit_streamed) {
		n->flags |= IMAP_ARG_FLAG_STREAMED;
		n->num = p->lit_index;
	}
	if (nonsync)
		n->flags |= IMAP_ARG_FLAG_NONSYNC;
	p->state = S_LIT_CR;
}

static void
literal_end(struct imap_parser *p)
{
	struct node *n = node_cur(p);

	if (p->lit_streamed) {
		n->complete = true;
		p->lit_index++;
	} else {
		if (put_byte(p, '\0') < 0)
			return;
		n->complete = true;
	}
	p->state = S_AFTER_ARG;
}

/* The LF of the literal header: the data starts, and a new line after it. */
static int
literal_start(struct imap_parser *p)
{
	new_line(p);
	p->lit_left = p->lit_size;
	p->state = S_LIT_DATA;
	if (p->lit_left == 0)
		literal_end(p);
	/* Never ask for a literal while skipping (literal_end() has room for its NUL anyway). */
	if (p->lit_nonsync || p->state == S_SKIP)
		return IMAP_PARSE_MORE;
	return IMAP_PARSE_CONTINUATION;
}

/* Literal data in bulk: returns the octets used and sets *ret. */
static size_t
literal_data(struct imap_parser *p, const uint8_t *d, size_t n, int *ret)
{
	size_t take = (size_t)MIN((uint64_t)n, p->lit_left);

	if (!p->lit_binary && memchr(d, '\0', take) != NULL) {
		/* RFC 9051 §4.3: CHAR8 excludes NUL; literal8 is for that. Skip what is left. */
		fail(p, IMAP_PARSE_ERR_CHAR, "NUL octet in literal (use literal8)");
		p->skip_left = p->lit_left;
		p->state = S_SKIP_LITERAL;
		return 0;
	}
	if (p->lit_streamed) {
		p->chunk = (struct imap_literal_chunk){
			.data = d,
			.len = take,
			.offset = p->lit_size - p->lit_left,
			.size = p->lit_size,
			.index = p->lit_index,
			.binary = p->lit_binary,
			.last = take == p->lit_left,
		};
		p->has_chunk = true;
		*ret = IMAP_PARSE_LITERAL_DATA;
	} else if (put(p, d, take) < 0) {
		/* Not reached: literal_header() made room. Skip the rest to stay in step. */
		p->skip_left = p->lit_left;
		p->state = S_SKIP_LITERAL;
		return 0;
	}
	p->lit_left -= take;
	if (p->lit_left == 0)
		literal_end(p);
	return take;
}

/* ---- the command line ---------------------------------------------------------------------- */

static void
tag_octet(struct imap_parser *p, uint8_t c)
{
	if (c == ' ' || c == '\r') {
		if (p->tag_len == 0) {
			fail(p, IMAP_PARSE_ERR_SYNTAX, c == ' ' ? "Missing tag" : "Empty command");
			return;
		}
		if (put_byte(p, '\0') < 0)
			return;
		p->has_tag = true;
		if (c == '\r') {
			fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing command");
			return;
		}
		p->name_off = p->data.len;
		p->state = S_NAME;
		return;
	}
	/* tag = 1*<any ASTRING-CHAR except "+"> */
	if (!is_astring_char(c) || c == '+') {
		fail_char(p, c, "Invalid character in tag");
		return;
	}
	if (p->tag_len == 0)
		p->tag_off = p->data.len;
	if (put_byte(p, c) == 0)
		p->tag_len++;
}

static void
name_end(struct imap_parser *p, uint8_t c)
{
	const uint8_t *s;

	if (p->name_len == 0) {
		fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing command");
		return;
	}
	s = p->data.data + p->name_off;
	if (!p->uid && ascii_eq_ci(s, p->name_len, "UID")) {
		/* RFC 9051 §6.4.9: "UID" SP command; the name that follows is the command. */
		if (c != ' ') {
			fail(p, IMAP_PARSE_ERR_SYNTAX, "Missing command after UID");
			return;
		}
		p->uid = true;
		p->data.len = p->name_off; /* drop "UID": nothing else was stored after it */
		p->name_len = 0;
		return;
	}
	if (put_byte(p, '\0') < 0)
		return;
	s = p->data.data + p->name_off; /* UNSAFE: put_byte() may have moved the data */
	p->has_name = true;
	p->cmd_append = ascii_eq_ci(s, p->name_len, "APPEND");
	p->cmd_list = ascii_eq_ci(s, p->name_len, "LIST") || ascii_eq_ci(s, p->name_len, "LSUB");
	if (c == ' ')
		p->state = S_ARG;
	else
		line_cr(p);
}

static void
name_octet(struct imap_parser *p, uint8_t c)
{
	if (c == ' ' || c == '\r') {
		name_end(p, c);
		return;
	}
	if (!is_atom_char(c)) {
		fail_char(p, c, "Invalid character in command name");
		return;
	}
	if (put_byte(p, ascii_upper(c)) == 0)
		p->name_len++;
}

/* The start of an argument, ")" or the end of the line. */
static void
arg_octet(struct imap_parser *p, uint8_t c)
{
	switch (c) {
	case ' ':
		return; /* runs of SP are tolerated */
	case '\r':
		line_cr(p);
		return;
	case '(':
		list_open(p);
		return;
	case ')':
		list_close(p);
		return;
	case '"':
		if (node_new(p, IMAP_ARG_QUOTED) != NULL) {
			p->u8_need = 0;
			p->state = S_QUOTED;
		}
		return;
	case '{':
		literal_begin(p, false);
		return;
	case '~':
		p->state = S_TILDE;
		return;
	case '\\':
		/* flag = "\" atom (RFC 9051 §9 flag-extension, the system flags) */
		atom_begin(p);
		if (p->state == S_ATOM)
			(void)put_byte(p, c);
		return;
	default:
		if (is_astring_char(c) || c == '*' || c == '%') {
			atom_begin(p);
			if (p->state == S_ATOM)
				atom_octet(p, c);
			return;
		}
		fail_char(p, c, "Invalid character in argument");
		return;
	}
}

static void
after_arg_octet(struct imap_parser *p, uint8_t c)
{
	switch (c) {
	case ' ':
		p->state = S_ARG;
		return;
	case ')':
		list_close(p);
		return;
	case '\r':
		line_cr(p);
		return;
	default:
		fail_char(p, c, "Missing space after argument");
		return;
	}
}

static void
literal_size_octet(struct imap_parser *p, uint8_t c)
{
	if (is_digit(c)) {
		unsigned int d = (unsigned int)(c - '0');

		/* Saturates: the size is refused at "}", once we know the literal's kind. */
		if (p->lit_size > (UINT64_MAX - d) / 10)
			p->lit_overflow = true;
		else
			p->lit_size = p->lit_size * 10 + d;
		p->state = S_LIT_SIZE;
	} else if (p->state == S_LIT_SIZE && c == '+') {
		p->state = S_LIT_PLUS;
	} else if (p->state == S_LIT_SIZE && c == '}') {
		literal_header(p, false);
	} else {
		fail_char(p, c, "Invalid literal size");
	}
}

/* One octet of command text (not literal data). Returns a status. */
static int
text_octet(struct imap_parser *p, uint8_t c)
{
	int r;

	/* CR and LF are only legal where a state expects them; NUL nowhere. */
	if (c == '\n' && p->state != S_CR && p->state != S_LIT_LF && p->state != S_SKIP) {
		fail_char(p, c, NULL);
		return skip_octet(p, c);
	}
	switch (p->state) {
	case S_TAG:
		tag_octet(p, c);
		break;
	case S_NAME:
		name_octet(p, c);
		break;
	case S_ARG:
		arg_octet(p, c);
		break;
	case S_AFTER_ARG:
		after_arg_octet(p, c);
		break;
	case S_ATOM:
		atom_octet(p, c);
		break;
	case S_SECTION:
		section_octet(p, c);
		break;
	case S_SECTION_QUOTED:
		if (quoted_octet(p, c, true) == 1)
			p->state = S_SECTION;
		break;
	case S_SECTION_QUOTED_ESC:
		(void)quoted_escape(p, c, true);
		break;
	case S_QUOTED:
		r = quoted_octet(p, c, false);
		if (r == 1 && node_end_text(p) == 0)
			p->state = S_AFTER_ARG;
		break;
	case S_QUOTED_ESC:
		(void)quoted_escape(p, c, false);
		break;
	case S_TILDE:
		if (c == '{') {
			literal_begin(p, true);
		} else {
			/* "~" is an ATOM-CHAR: an atom that starts with it. */
			atom_begin(p);
			if (p->state == S_ATOM && put_byte(p, '~') == 0)
				atom_octet(p, c);
		}
		break;
	case S_LIT_OPEN:
	case S_LIT_SIZE:
		literal_size_octet(p, c);
		break;
	case S_LIT_PLUS:
		if (c == '}')
			literal_header(p, true);
		else
			fail_char(p, c, "Invalid literal size");
		break;
	case S_LIT_CR:
		/* RFC 9051 §4.3: the CRLF right after "}" is part of the literal's syntax. */
		if (c == '\r')
			p->state = S_LIT_LF;
		else
			fail_char(p, c, "Missing CRLF after literal size");
		break;
	case S_LIT_LF:
		if (c == '\n')
			return literal_start(p);
		fail_char(p, '\r', NULL);
		break;
	case S_CR:
		if (c == '\n') {
			p->state = S_DONE;
			p->status = IMAP_PARSE_COMMAND;
			return IMAP_PARSE_COMMAND;
		}
		fail_char(p, '\r', NULL);
		break;
	case S_SKIP:
		return skip_octet(p, c);
	case S_LIT_DATA:
	case S_SKIP_LITERAL:
	case S_DONE:
	case S_ERROR:
		PANIC("imap parser: octet in state %d", (int)p->state);
	}
	if (p->state == S_SKIP)
		return skip_octet(p, c);
	return IMAP_PARSE_MORE;
}

int
imap_parser_feed(struct imap_parser *p, const uint8_t *data, size_t len, size_t *consumed_r)
{
	size_t i = 0;
	int ret = IMAP_PARSE_MORE;

	p->has_chunk = false;
	if (p->state == S_DONE || p->state == S_ERROR) {
		*consumed_r = 0;
		p->last_status = p->status;
		return p->status;
	}
	while (i < len && ret == IMAP_PARSE_MORE) {
		if (p->state == S_LIT_DATA) {
			i += literal_data(p, data + i, len - i, &ret);
			continue;
		}
		if (p->state == S_SKIP_LITERAL) {
			size_t take = (size_t)MIN((uint64_t)(len - i), p->skip_left);

			i += take;
			p->skip_left -= take;
			if (p->skip_left == 0)
				p->state = S_SKIP;
			continue;
		}
		/* Command text: a line is refused before it costs more than max_line. */
		if (++p->line_len > p->limits.max_line) {
			ret = fail_fatal(p, IMAP_PARSE_ERR_LINE_TOO_LONG, "Line too long");
			break;
		}
		tail_octet(p, data[i]);
		ret = text_octet(p, data[i]);
		i++;
	}
	*consumed_r = i;
	p->last_status = ret;
	return ret;
}

/* ---- results ------------------------------------------------------------------------------- */

/* Lays the complete arguments out as a tree: each list's elements contiguous, in input order.
 * Three linear passes over the flat records, whatever the nesting. */
static const struct imap_command *
build(struct imap_parser *p)
{
	size_t n = p->nnodes, next, root = 0, root_filled = 0;
	const char *base = (const char *)p->data.data;

	/* Only the last record can be incomplete (the token being read), and it has no elements. */
	if (n > 0 && !p->nodes[n - 1].complete)
		n--;
	if (n > p->out_cap) {
		p->out = xrealloc(p->out, p->nodes_cap * sizeof(*p->out));
		p->out_cap = p->nodes_cap;
	}
	for (size_t i = 0; i < n; i++)
		p->nodes[i].count = p->nodes[i].filled = 0;
	for (size_t i = 0; i < n; i++) {
		if (p->nodes[i].parent == NO_PARENT)
			root++;
		else
			p->nodes[p->nodes[i].parent].count++;
	}
	next = root;
	for (size_t i = 0; i < n; i++) {
		if (p->nodes[i].type == IMAP_ARG_LIST) {
			p->nodes[i].start = next;
			next += p->nodes[i].count;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct node *nd = &p->nodes[i];
		struct node *parent = nd->parent == NO_PARENT ? NULL : &p->nodes[nd->parent];
		size_t pos = parent == NULL ? root_filled++ : parent->start + parent->filled++;
		struct imap_arg *a = &p->out[pos];

		memset(a, 0, sizeof(*a));
		a->type = (enum imap_arg_type)nd->type;
		a->flags = nd->flags;
		a->len = nd->len;
		a->num = nd->num;
		if (nd->type == IMAP_ARG_LIST) {
			a->list = p->out + nd->start;
			a->count = nd->count;
			a->len = 0;
		} else if (!(nd->flags & IMAP_ARG_FLAG_STREAMED)) {
			a->str = base + nd->off;
		}
	}
	p->cmd.tag = base + p->tag_off;
	p->cmd.name = base + p->name_off;
	p->cmd.uid = p->uid;
	p->cmd.args = root > 0 ? p->out : NULL;
	p->cmd.nargs = root;
	return &p->cmd;
}

const struct imap_command *
imap_parser_command(struct imap_parser *p)
{
	/* Complete, or stopped at a literal (its continuation, or a chunk of its data). */
	if (p->last_status != IMAP_PARSE_COMMAND && p->last_status != IMAP_PARSE_CONTINUATION &&
	    p->last_status != IMAP_PARSE_LITERAL_DATA)
		return NULL;
	return build(p);
}

const struct imap_literal_chunk *
imap_parser_literal_chunk(const struct imap_parser *p)
{
	return p->has_chunk ? &p->chunk : NULL;
}

const char *
imap_parser_tag(const struct imap_parser *p)
{
	return p->has_tag ? (const char *)p->data.data + p->tag_off : NULL;
}

const char *
imap_parser_error(const struct imap_parser *p, enum imap_parse_error *code_r, bool *fatal_r)
{
	if (code_r != NULL)
		*code_r = p->err;
	if (fatal_r != NULL)
		*fatal_r = p->fatal;
	return p->err_msg != NULL ? p->err_msg : "";
}

size_t
imap_parser_mem_used(const struct imap_parser *p)
{
	return sizeof(*p) + p->data.cap + p->nodes_cap * sizeof(*p->nodes) +
	       p->out_cap * sizeof(*p->out);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

void
imap_parser_limits_default(struct imap_parser_limits *l, bool authenticated)
{
	memset(l, 0, sizeof(*l));
	l->max_line = authenticated ? 65536 : 8192;
	l->max_command = authenticated ? 1024 * 1024 : 16384;
	l->max_literal = authenticated ? 65536 : 4096;
	/* APPEND needs a login: before it, its literal is refused without a continuation. */
	l->max_append_literal = authenticated ? 64 * 1024 * 1024 : 0;
	l->max_nonsync_literal = IMAP_LITERAL_MINUS_MAX;
	l->stream_literal_min = authenticated ? 256 * 1024 : 0;
	l->max_depth = 100;
	l->max_args = authenticated ? 4096 : 128;
	l->utf8 = false;
}

void
imap_parser_set_limits(struct imap_parser *p, const struct imap_parser_limits *limits)
{
	p->limits = *limits;
	p->limits.max_line = MIN(MAX(p->limits.max_line, (size_t)1), (size_t)IMAP_MAX_LINE);
	p->limits.max_command = MIN(MAX(p->limits.max_command, (size_t)1), IMAP_MAX_COMMAND);
	p->limits.max_depth = MIN(p->limits.max_depth, (unsigned int)IMAP_MAX_DEPTH);
	p->limits.max_args = MIN(MAX(p->limits.max_args, 1u), (unsigned int)IMAP_MAX_ARGS);
	p->data.max = p->limits.max_command;
}

struct imap_parser *
imap_parser_new(const struct imap_parser_limits *limits)
{
	struct imap_parser *p = xcalloc(1, sizeof(*p));
	struct imap_parser_limits def;

	if (limits == NULL) {
		imap_parser_limits_default(&def, false);
		limits = &def;
	}
	buf_init(&p->data, 1);
	imap_parser_set_limits(p, limits);
	imap_parser_reset(p);
	return p;
}

void
imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;

	if (p == NULL)
		return;
	/* The text may hold a LOGIN password. */
	buf_deinit_secure(&p->data);
	free(p->nodes);
	free(p->out);
	free(p);
	*pp = NULL;
}

void
imap_parser_reset(struct imap_parser *p)
{
	/* Everything ever stored is below len (only "UID" is dropped, and then written over). */
	if (p->data.data != NULL)
		explicit_bzero(p->data.data, p->data.len);
	if (p->data.cap > KEEP_DATA)
		buf_deinit(&p->data);
	buf_reset(&p->data);
	p->data.max = p->limits.max_command;
	if (p->nodes_cap > KEEP_NODES) {
		free(p->nodes);
		free(p->out);
		p->nodes = NULL;
		p->out = NULL;
		p->nodes_cap = p->out_cap = 0;
	}
	p->nnodes = 0;
	p->state = S_TAG;
	p->status = p->last_status = IMAP_PARSE_MORE;
	new_line(p);
	p->tag_off = p->tag_len = p->name_off = p->name_len = 0;
	p->has_tag = p->has_name = p->uid = p->cmd_append = p->cmd_list = false;
	p->cur_list = NO_PARENT;
	p->depth = 0;
	p->u8_need = 0;
	p->lit_size = p->lit_left = p->skip_left = 0;
	p->lit_overflow = p->lit_binary = p->lit_nonsync = p->lit_streamed = false;
	p->lit_index = 0;
	p->has_chunk = false;
	p->err = IMAP_PARSE_ERR_NONE;
	p->err_msg = NULL;
	p->fatal = false;
	memset(&p->cmd, 0, sizeof(p->cmd));
}

/* ---- arguments ----------------------------------------------------------------------------- */

static bool
is_atomish(const struct imap_arg *arg)
{
	return arg->type == IMAP_ARG_ATOM || arg->type == IMAP_ARG_NUMBER ||
	       arg->type == IMAP_ARG_NIL;
}

bool
imap_arg_atom_equals(const struct imap_arg *arg, const char *s)
{
	return is_atomish(arg) && ascii_eq_ci((const uint8_t *)arg->str, arg->len, s);
}

int
imap_arg_get_atom(const struct imap_arg *arg, const char **str_r)
{
	if (!is_atomish(arg))
		return -1;
	*str_r = arg->str;
	return 0;
}

int
imap_arg_get_string(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	/* literal8 may hold NULs, and is allowed only where a command says so (RFC 3516 §4.2). */
	if ((arg->type != IMAP_ARG_QUOTED && arg->type != IMAP_ARG_LITERAL) || arg->str == NULL)
		return -1;
	*str_r = arg->str;
	*len_r = arg->len;
	return 0;
}

int
imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (is_atomish(arg)) {
		*str_r = arg->str;
		*len_r = arg->len;
		return 0;
	}
	return imap_arg_get_string(arg, str_r, len_r);
}

int
imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg->type == IMAP_ARG_NIL) {
		*str_r = NULL;
		*len_r = 0;
		return 0;
	}
	return imap_arg_get_string(arg, str_r, len_r);
}

int
imap_arg_get_number(const struct imap_arg *arg, uint32_t *num_r)
{
	if (arg->type != IMAP_ARG_NUMBER || arg->num > UINT32_MAX)
		return -1;
	*num_r = (uint32_t)arg->num;
	return 0;
}

int
imap_arg_get_number64(const struct imap_arg *arg, uint64_t *num_r)
{
	if (arg->type != IMAP_ARG_NUMBER)
		return -1;
	*num_r = arg->num;
	return 0;
}

int
imap_arg_get_list(const struct imap_arg *arg, const struct imap_arg **list_r, size_t *count_r)
{
	if (arg->type != IMAP_ARG_LIST)
		return -1;
	*list_r = arg->list;
	*count_r = arg->count;
	return 0;
}

/* ---- sequence sets ------------------------------------------------------------------------- */

/* seq-number = nz-number / "*" at s[*i]. */
static int
seq_number(const char *s, size_t len, size_t *i, uint32_t star, uint32_t *num_r,
           const char **error_r)
{
	uint32_t v = 0;

	if (*i < len && s[*i] == '*') {
		(*i)++;
		*num_r = star;
		return 0;
	}
	if (*i >= len || s[*i] < '1' || s[*i] > '9') {
		/* nz-number = digit-nz *DIGIT: no 0, no leading zero, no sign */
		*error_r = *i < len && s[*i] == '0' ? "Invalid sequence number 0 or leading zero"
		                                    : "Invalid sequence set";
		return -1;
	}
	for (; *i < len && is_digit((uint8_t)s[*i]); (*i)++) {
		uint32_t d = (uint32_t)(s[*i] - '0');

		if (v > (UINT32_MAX - d) / 10) {
			*error_r = "Sequence number too large";
			return -1;
		}
		v = v * 10 + d;
	}
	*num_r = v;
	return 0;
}

int
imap_seqset_parse(const char *s, size_t len, uint32_t star, struct imap_seq_range *ranges,
                  size_t max_ranges, size_t *count_r, const char **error_r)
{
	size_t i = 0, n = 0;

	*count_r = 0;
	for (;;) {
		uint32_t a, b;

		if (seq_number(s, len, &i, star, &a, error_r) < 0)
			return -1;
		b = a;
		if (i < len && s[i] == ':') {
			i++;
			if (seq_number(s, len, &i, star, &b, error_r) < 0)
				return -1;
		}
		if (n >= max_ranges) {
			*error_r = "Too many ranges in sequence set";
			return -1;
		}
		if (ranges != NULL) {
			/* RFC 9051 §9 seq-range: "2:4" and "4:2" are the same. */
			ranges[n].lo = MIN(a, b);
			ranges[n].hi = MAX(a, b);
		}
		n++;
		if (i == len)
			break;
		if (s[i] != ',') {
			*error_r = "Invalid sequence set";
			return -1;
		}
		i++;
	}
	*count_r = n;
	return 0;
}
