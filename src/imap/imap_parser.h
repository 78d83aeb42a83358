/* IMAP command parsing without I/O: an incremental parser of client commands (RFC 9051 §2.2.1,
 * §9; RFC 3501 §9) into a tag, a command name and a tree of typed arguments, with literals
 * (synchronising, LITERAL+/LITERAL- RFC 7888, literal8 RFC 3516), UTF-8 quoted strings
 * (RFC 6855, RFC 9051 QUOTED-CHAR) and a sequence-set helper. Needs only core, so tests and
 * fuzzers link it alone.
 *
 * Contract
 *   Feed bytes as they arrive; any split gives the same results (the same statuses at the same
 *   input offsets, the same commands, the same streamed literal octets). imap_parser_feed()
 *   consumes up to the end of a command, a continuation point, a streamed literal chunk or an
 *   error, and leaves the rest (the next pipelined command) to the caller.
 *
 *   Statuses: IMAP_PARSE_MORE (0): everything consumed, feed more. IMAP_PARSE_COMMAND: a
 *   command is complete (imap_parser_command()); call imap_parser_reset() before the next one.
 *   IMAP_PARSE_CONTINUATION: a synchronising literal was announced: the caller sends
 *   "+ <text>" (or refuses the command with a tagged NO/BAD and calls imap_parser_reset(): the
 *   client then does not send the literal, RFC 9051 §7.5) and feeds more; returned exactly once
 *   per synchronising literal, before any of its data is consumed. IMAP_PARSE_LITERAL_DATA: a
 *   chunk of a streamed literal (imap_parser_literal_chunk()). IMAP_PARSE_ERROR (-1): a protocol
 *   error (imap_parser_error(), imap_parser_tag()); call imap_parser_reset() to go on, or close
 *   the connection when the error is fatal. After COMMAND and ERROR, until reset, further feeds
 *   return the same status and consume nothing.
 *
 *   Recoverable errors are reported once the whole command has been consumed: the rest of its
 *   line, and any non-synchronising literal that line announces (the client sends it without
 *   waiting, so treating it as commands would be command injection). A synchronising literal
 *   announced at the end of a bad line is not consumed: the client waits for a continuation,
 *   gets the tagged BAD instead and drops the command. Fatal errors (the connection must be
 *   closed after the reply, as resynchronising is unsafe or too costly): a line longer than
 *   max_line, and a bad command whose line announces a non-synchronising literal larger than
 *   the limits (e.g. LITERAL- and more than 4096 octets, RFC 7888 §4).
 *
 * Grammar choices (RFC 9051 §9 unless noted)
 *   - tag: 1*<ASTRING-CHAR except "+">; command name: 1*ATOM-CHAR, upper-cased; "UID" followed
 *     by SP and a name sets uid and gives that name. Exactly one SP after the tag and between
 *     UID and the name; between arguments runs of SP and a trailing SP are tolerated
 *     (as Dovecot does), TAB never.
 *   - atoms: ASTRING-CHAR (so "]" too, for astrings such as "[Gmail]/Sent"), a leading "\" for
 *     flags ("\Seen"). List wildcards "%" and "*" only in LIST and LSUB, and "*" in atoms made of
 *     digits, ":", "," and "*" only (sequence sets). After BODY, BODY.PEEK, BINARY, BINARY.PEEK or
 *     BINARY.SIZE a "[...]" section belongs to the atom, with its spaces, its parenthesised
 *     header list and quoted names ("BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.100>" is one
 *     atom, kept verbatim); a literal inside a section is refused. "NIL" (any case) is
 *     IMAP_ARG_NIL; digits only, up to 2^63-1 (number64), are IMAP_ARG_NUMBER. Both keep their
 *     text, so they are astrings too. 8-bit octets are refused in atoms.
 *   - quoted: escapes only for DQUOTE and "\"; no CR, LF or NUL; 8-bit octets only when
 *     limits.utf8 is set and only as well-formed UTF-8 (RFC 3629: no overlong forms, surrogates
 *     or code points above U+10FFFF). The value is unescaped.
 *   - literals: "{n}" and "{n+}" hold any octet but NUL (CHAR8, RFC 9051 §4.3), "~{n}" and
 *     "~{n+}" any octet (RFC 3516); n is checked before anything is allocated and memory grows
 *     only with the octets received. A literal ends its line: its header must be followed by
 *     CRLF. Bare CR, bare LF and NUL are refused everywhere in command text.
 *
 * Memory: the parser owns everything it returns. Pointers from imap_parser_command(),
 * imap_parser_tag() and imap_parser_error() are valid until the next feed, reset or free;
 * imap_parser_literal_chunk() points into the caller's input of the last feed. One command
 * holds at most max_command octets of text and in-memory literal data plus max_args argument
 * records (imap_parser_mem_used()). Not thread-safe: one parser per connection, used by the
 * connection's thread. */
#ifndef IMAP_IMAP_PARSER_H
#define IMAP_IMAP_PARSER_H

#include "core/buf.h"

/* Ceilings of the configurable limits: the parser clamps to them. */
#define IMAP_MAX_LINE (1024 * 1024)       /* octets: Dovecot's 64 KiB post-auth with margin */
#define IMAP_MAX_COMMAND ((size_t)1 << 30) /* octets held in memory for one command */
#define IMAP_MAX_DEPTH 1000               /* list nesting; RFC needs a handful, ~100 is usual */
#define IMAP_MAX_ARGS 100000              /* argument records of one command */
/* RFC 7888 §4: the largest non-synchronising literal a LITERAL- server must accept. */
#define IMAP_LITERAL_MINUS_MAX 4096

#if IMAP_MAX_LINE > 16 * 1024 * 1024
#error "IMAP_MAX_LINE must stay small: a line is buffered before it can be refused"
#endif

enum imap_parse_status {
	IMAP_PARSE_ERROR = -1,
	IMAP_PARSE_MORE = 0,
	IMAP_PARSE_COMMAND = 1,
	IMAP_PARSE_CONTINUATION = 2,
	IMAP_PARSE_LITERAL_DATA = 3,
};

enum imap_parse_error {
	IMAP_PARSE_ERR_NONE = 0,
	IMAP_PARSE_ERR_SYNTAX,        /* BAD */
	IMAP_PARSE_ERR_CHAR,          /* NUL, bare CR or LF, an octet not allowed there: BAD */
	IMAP_PARSE_ERR_LINE_TOO_LONG, /* always fatal: BYE */
	IMAP_PARSE_ERR_TOO_BIG,       /* a literal or the command over its limit: [TOOBIG]
	                               * (RFC 7888 §4; for APPEND RFC 7889 allows NO [TOOBIG]) */
	IMAP_PARSE_ERR_LIMIT,         /* too many arguments or lists nested too deep: BAD */
};

struct imap_parser_limits {
	size_t max_line;              /* octets of one line of command text, CRLF included; the
	                               * text after a literal starts a new line (8 KiB pre-auth,
	                               * 64 KiB after) */
	size_t max_command;           /* octets of one command held in memory: its text, one NUL
	                               * per string and its in-memory literals */
	uint64_t max_literal;         /* octets of one literal, in commands other than APPEND */
	uint64_t max_append_literal;  /* octets of one literal in APPEND (APPENDLIMIT, RFC 7889) */
	uint64_t max_nonsync_literal; /* octets of one {n+} literal: 0 = neither LITERAL+ nor
	                               * LITERAL- advertised, IMAP_LITERAL_MINUS_MAX = LITERAL-,
	                               * UINT64_MAX = LITERAL+ */
	uint64_t stream_literal_min;  /* literals of at least this many octets are not kept but
	                               * handed out as IMAP_PARSE_LITERAL_DATA; 0 = never */
	unsigned int max_depth;       /* nesting of parenthesised lists; 0 = no lists */
	unsigned int max_args;        /* arguments of one command, nested ones included */
	bool utf8;                    /* UTF-8 in quoted strings (UTF8=ACCEPT, IMAP4rev2) */
};

enum imap_arg_type {
	IMAP_ARG_ATOM,
	IMAP_ARG_NUMBER,   /* an atom of digits <= 2^63-1: num holds it, str its text */
	IMAP_ARG_NIL,      /* the atom NIL, any case; str holds it as sent */
	IMAP_ARG_QUOTED,
	IMAP_ARG_LITERAL,  /* {n} / {n+} */
	IMAP_ARG_LITERAL8, /* ~{n} / ~{n+} (RFC 3516) */
	IMAP_ARG_LIST,
};

enum imap_arg_flags {
	IMAP_ARG_FLAG_NONSYNC = 1 << 0,  /* a literal sent as {n+} */
	IMAP_ARG_FLAG_STREAMED = 1 << 1, /* a literal handed out in chunks: str is NULL */
	IMAP_ARG_FLAG_SECTION = 1 << 2,  /* an atom with a "[...]" section (FETCH) */
	IMAP_ARG_FLAG_WILDCARD = 1 << 3, /* an atom with "%" or "*" (LIST pattern, sequence set) */
};

struct imap_arg {
	enum imap_arg_type type;
	unsigned int flags;          /* enum imap_arg_flags */
	const char *str;             /* all but LIST: the value, NUL-terminated; literal8 may hold
	                              * NULs (use len); NULL for a streamed literal and LIST */
	size_t len;                  /* octets of str; a literal's size even when streamed */
	uint64_t num;                /* NUMBER: its value; streamed literal: its index in the
	                              * command (struct imap_literal_chunk.index) */
	const struct imap_arg *list; /* LIST: its elements */
	size_t count;                /* LIST: number of elements */
};

struct imap_command {
	const char *tag;
	const char *name;            /* upper-cased, without the UID prefix */
	bool uid;                    /* sent as "UID <name>" */
	const struct imap_arg *args; /* the top-level arguments */
	size_t nargs;
};

struct imap_literal_chunk {
	const uint8_t *data; /* borrowed: into the input of the last feed */
	size_t len;          /* octets, > 0 */
	uint64_t offset;     /* octets of this literal before this chunk */
	uint64_t size;       /* octets of the whole literal */
	unsigned int index;  /* streamed literals of this command before this one */
	bool binary;         /* literal8 */
	bool last;           /* this chunk ends the literal */
};

struct imap_parser;

/* Limits for a session before (authenticated = false) or after login: 8 KiB / 64 KiB lines,
 * 16 KiB / 1 MiB of command in memory, 4 KiB / 64 KiB literals, APPEND literals refused /
 * 64 MiB, LITERAL-, after login literals of 256 KiB or more streamed (in practice APPEND's),
 * nesting 100, 128 / 4096 arguments, no UTF-8. */
void imap_parser_limits_default(struct imap_parser_limits *limits, bool authenticated);

/* limits is copied; NULL means imap_parser_limits_default(false). Caller frees with
 * imap_parser_free(). */
struct imap_parser *imap_parser_new(const struct imap_parser_limits *limits);
void imap_parser_free(struct imap_parser **p);
/* Replaces the limits (after login, after ENABLE UTF8=ACCEPT); call between commands. */
void imap_parser_set_limits(struct imap_parser *p, const struct imap_parser_limits *limits);

/* Parses data[0..len); *consumed_r gets the octets used. Returns an enum imap_parse_status;
 * see the contract above. */
ATTR_WUR ATTR_NONNULL(1, 4) int imap_parser_feed(struct imap_parser *p, const uint8_t *data,
                                                 size_t len, size_t *consumed_r);
/* Forgets the current command (or error) and waits for the next one. Memory beyond a small
 * working set is released. */
void imap_parser_reset(struct imap_parser *p);

/* After IMAP_PARSE_COMMAND: the command. After IMAP_PARSE_CONTINUATION or
 * IMAP_PARSE_LITERAL_DATA: the command so far (its complete arguments; a literal whose data is
 * still to come is left out), so that e.g. APPEND can check its mailbox before accepting the
 * literal. NULL otherwise (after MORE, ERROR or a reset). */
const struct imap_command *imap_parser_command(struct imap_parser *p);
/* After IMAP_PARSE_LITERAL_DATA: the chunk; NULL otherwise. A streamed literal may still end
 * in IMAP_PARSE_ERROR (e.g. a NUL in a non-binary literal): the caller drops what it kept. */
const struct imap_literal_chunk *imap_parser_literal_chunk(const struct imap_parser *p);
/* The tag of the current command once it was read in full, else NULL (reply "* BAD"). */
const char *imap_parser_tag(const struct imap_parser *p);
/* After IMAP_PARSE_ERROR: a short text for the BAD reply (static, no CRLF, no response code),
 * the error class, and whether the connection must be closed after replying. */
const char *imap_parser_error(const struct imap_parser *p, enum imap_parse_error *code_r,
                              bool *fatal_r);
/* Octets of memory the parser holds now (bounded by the limits). */
size_t imap_parser_mem_used(const struct imap_parser *p);

/* ---- arguments ------------------------------------------------------------------------------ */

/* An atom (ATOM, NUMBER or NIL) equal to s, ignoring ASCII case. */
bool imap_arg_atom_equals(const struct imap_arg *arg, const char *s);
/* ATOM, NUMBER or NIL: its text. */
ATTR_WUR int imap_arg_get_atom(const struct imap_arg *arg, const char **str_r);
/* astring (ATOM, NUMBER, NIL, QUOTED or an in-memory LITERAL): its value, NUL-free. */
ATTR_WUR int imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* string (QUOTED or in-memory LITERAL): its value, NUL-free. */
ATTR_WUR int imap_arg_get_string(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* nstring: a string, or NIL giving *str_r = NULL and *len_r = 0. */
ATTR_WUR int imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* RFC 9051 number (0..2^32-1) and number64 (0..2^63-1). */
ATTR_WUR int imap_arg_get_number(const struct imap_arg *arg, uint32_t *num_r);
ATTR_WUR int imap_arg_get_number64(const struct imap_arg *arg, uint64_t *num_r);
ATTR_WUR int imap_arg_get_list(const struct imap_arg *arg, const struct imap_arg **list_r,
                               size_t *count_r);

/* ---- sequence sets -------------------------------------------------------------------------- */

struct imap_seq_range {
	uint32_t lo, hi; /* lo <= hi */
};

/* Parses a sequence-set (RFC 9051 §9: seq-number / seq-range, comma-separated; nz-number without
 * leading zeros, at most 2^32-1). "*" becomes star (the largest number in use; the caller
 * decides what it is for an empty mailbox). Each range is ordered ("4:2" is 2..4); ranges are
 * neither sorted nor merged. At most max_ranges ranges: ranges may be NULL to only check and
 * count, else it holds max_ranges entries. "$" (RFC 5182) is the caller's. Returns 0, or -1
 * with a static *error_r. */
ATTR_WUR int imap_seqset_parse(const char *s, size_t len, uint32_t star,
                               struct imap_seq_range *ranges, size_t max_ranges,
                               size_t *count_r, const char **error_r);

#endif
