/* POP3 without I/O: the line reader, the command parser (RFC 1939, CAPA RFC 2449, AUTH RFC 5034,
 * STLS RFC 2595) and the dot-stuffing writer of multi-line answers (RFC 1939 3). Needs only
 * core, so unit tests and fuzz targets link it alone. Nothing here allocates except the stuffer's
 * appends to a caller's struct buf (bounded by its max); nothing logs. Any thread. */
#ifndef POP3_POP3_PARSER_H
#define POP3_POP3_PARSER_H

#include "core/buf.h"
#include "core/limits.h"

/* Longest line of any kind: a SASL response (base64) with its CRLF. */
#define POP3_MAX_SASL_LINE (AUTH_MAX_SASL_RESPONSE + 2)

/* ---- Lines ----------------------------------------------------------------------------------- */

/* An incremental line reader: bytes in, one line out at a time, whatever the split of the
 * input. A line ends at LF; one CR before it is dropped (CRLF or a lone LF both end a line). */
struct pop3_line {
	uint8_t data[POP3_MAX_SASL_LINE]; /* the line so far (a CR before the LF included) */
	size_t len;                       /* bytes in data */
	bool complete;                    /* the previous feed ended a line: start over */
	bool nul;                         /* a NUL byte was seen in this line */
	bool bare_cr;                     /* a CR not followed by LF was seen in this line */
	bool too_long;                    /* sticky: the line passed max; the reader is spent */
	const char *error;                /* after -1: why (static text) */
};

void pop3_line_init(struct pop3_line *l);
/* Feeds up to len bytes; consumes them up to and including the first LF and sets *used_r.
 * max: the longest accepted line in octets, its line end included (2 < max <=
 * POP3_MAX_SASL_LINE).
 * Returns 1: a line is complete, read it with pop3_line_get (valid until the next feed or wipe);
 *         0: all of the input was consumed and more is needed;
 *        -1: the line is refused, l->error says why. A line with NUL or a bare CR is consumed
 *            whole (feeding may go on with the next line). A line longer than max is refused
 *            as soon as that is known, before its end arrives; the reader stays spent
 *            (l->too_long, every later feed returns -1): the caller closes the connection. */
int pop3_line_feed(struct pop3_line *l, const uint8_t *data, size_t len, size_t max,
                   size_t *used_r);
/* The complete line without its line end. Valid until the next feed or wipe. */
struct span pop3_line_get(const struct pop3_line *l);
/* Wipes the line (passwords pass through here) and starts over. */
void pop3_line_wipe(struct pop3_line *l);

/* ---- Commands -------------------------------------------------------------------------------- */

enum pop3_verb {
	POP3_VERB_USER,
	POP3_VERB_PASS,
	POP3_VERB_QUIT,
	POP3_VERB_STAT,
	POP3_VERB_LIST,
	POP3_VERB_RETR,
	POP3_VERB_DELE,
	POP3_VERB_NOOP,
	POP3_VERB_RSET,
	POP3_VERB_TOP,
	POP3_VERB_UIDL,
	POP3_VERB_CAPA,
	POP3_VERB_STLS,
	POP3_VERB_AUTH,
};

struct pop3_cmd {
	enum pop3_verb verb;
	size_t nargs;          /* arguments given: 0..2 */
	struct span args[2];   /* the arguments as sent (spans into the line) */
	uint32_t num[2];       /* numeric arguments (LIST, RETR, DELE, TOP, UIDL), parsed */
	/* USER and PASS: everything after the keyword's single space, as sent (RFC 1939 7: a
	 * password may contain spaces). */
	struct span rest;
};

/* Parses one command line (without its line end). Returns 0 with *cmd_r filled in (spans point
 * into line and are valid as long as it is), or -1 with *error_r set to the text of a "-ERR"
 * reply (static, without "-ERR " and CRLF). Keywords are case-insensitive (RFC 1939 3);
 * arguments are separated by single spaces, a trailing space is tolerated; control
 * characters are refused everywhere, and so are bytes >= 0x80 outside USER and PASS.
 * Numbers are 1*DIGIT up to 2^32 - 1. */
ATTR_WUR int pop3_parse_command(const uint8_t *line, size_t len, struct pop3_cmd *cmd_r,
                                const char **error_r);
/* "USER", "RETR", ... for logs. */
const char *pop3_verb_name(enum pop3_verb verb);

/* ---- Multi-line answers ------------------------------------------------------------------------ */

/* Dot-stuffs a message for RETR or TOP (RFC 1939 3 and 7): a line starting with "." gets one
 * more; TOP sends the header, the blank line after it and then at most `body_lines` lines. The
 * message is expected with CRLF line ends as the store keeps it; bytes are passed on as they are. */
struct pop3_stuff {
	bool line_start;     /* the next byte begins a line (nothing sent yet, or after a LF) */
	bool line_empty;     /* the current line has nothing but possibly a CR so far */
	bool in_body;        /* past the blank line that ends the header */
	bool top;            /* stop after body_lines body lines */
	bool done;           /* TOP: everything to send has been sent */
	uint64_t body_lines; /* TOP: body lines still to send */
};

void pop3_stuff_init(struct pop3_stuff *st, bool top, uint64_t body_lines);
/* Appends the stuffed form of data to out (at most len * 4 / 3 + 2 bytes). Returns the number
 * of bytes of data used: len, or less once TOP has sent all it should (then st->done). */
size_t pop3_stuff_feed(struct pop3_stuff *st, const uint8_t *data, size_t len, struct buf *out);
/* Appends the end of the answer: a CRLF when the last line had none, then ".\r\n". */
void pop3_stuff_finish(struct pop3_stuff *st, struct buf *out);

#endif
