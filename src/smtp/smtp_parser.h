/* SMTP parsing without I/O: command lines (RFC 5321 4.1), paths and ESMTP parameters, and the
 * DATA decoder (dot-unstuffing, end of data, RFC 5322 line and header checks). Needs only core,
 * so tests and fuzzers link it alone.
 *
 * Spans returned point into the caller's input and are valid as long as that input is. */
#ifndef SMTP_SMTP_PARSER_H
#define SMTP_SMTP_PARSER_H

#include "core/buf.h"

/* RFC 5321 4.5.3.1: limits we enforce (ceilings; the configurable ones are lower or equal). */
#define SMTP_MAX_PARAMS 16       /* ESMTP parameters on one MAIL/RCPT */
#define SMTP_MAX_PATH 256        /* RFC 5321 4.5.3.1.3, octets incl. the angle brackets */
#define SMTP_MAX_LOCALPART 64    /* RFC 5321 4.5.3.1.1 */
#define SMTP_MAX_DOMAIN 255      /* RFC 5321 4.5.3.1.2 */
#define SMTP_MAX_TEXT_LINE 1000  /* RFC 5321 4.5.3.1.6, octets incl. CRLF */

enum smtp_verb {
	SMTP_VERB_UNKNOWN,
	SMTP_VERB_EHLO,
	SMTP_VERB_HELO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_BDAT,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_HELP,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
};

struct smtp_param {
	struct span key;   /* e.g. "SIZE"; compare case-insensitively */
	struct span value; /* may be empty (e.g. "SMTPUTF8") */
};

struct smtp_cmd {
	enum smtp_verb verb;
	struct span arg; /* everything after the verb and the spaces after it, without trailing
	                  * blanks (EHLO domain, AUTH args); p is never NULL, even when empty */
	/* MAIL FROM:<path> / RCPT TO:<path> */
	struct span path; /* between the angle brackets; empty for the null path <> */
	struct smtp_param params[SMTP_MAX_PARAMS];
	size_t nparams;
	/* BDAT size [LAST] (RFC 3030); chunk_size <= INT64_MAX octets, to fit an off_t */
	uint64_t chunk_size;
	bool last;
};

/* Parses one command line (without its CRLF). Returns 0, or -1 with *reply_r set to the full
 * reply to send, a static string without CRLF (e.g. "501 5.5.4 Syntax: MAIL FROM:<address>
 * [parameters]"). Unknown verbs are not an error: cmd->verb is SMTP_VERB_UNKNOWN. Rejects NUL,
 * bare CR and other control characters but HT ("500 5.5.2"); leading and trailing blanks are
 * ignored. MAIL/RCPT: the path is checked with smtp_mailbox_is_valid() (553 5.1.7 / 5.1.3), a
 * source route is dropped from it, <> is taken for MAIL only and <postmaster> for RCPT.
 * utf8: accept UTF-8 in paths and parameter values (the client declared SMTPUTF8, RFC 6531);
 * without it, a path that is valid only as UTF-8 gets "553 5.6.7". */
ATTR_WUR int smtp_parse_command_utf8(const uint8_t *line, size_t len, bool utf8,
                                     struct smtp_cmd *cmd, const char **reply_r);
/* smtp_parse_command_utf8() with utf8=true: for callers that learn about SMTPUTF8 only from the
 * parameters of the same MAIL command. They then check the path again with
 * smtp_mailbox_is_valid(cmd->path, smtputf8). */
ATTR_WUR int smtp_parse_command(const uint8_t *line, size_t len, struct smtp_cmd *cmd,
                                const char **reply_r);

/* Checks a mailbox (local-part@domain, RFC 5321 4.1.2: dot-string or quoted-string local part,
 * domain name or address literal), within the RFC 5321 length limits. utf8 allows UTF-8
 * (RFC 6531 3.3). */
bool smtp_mailbox_is_valid(struct span mailbox, bool utf8);

/* Finds a parameter by name (case-insensitive); NULL when absent. */
const struct smtp_param *smtp_cmd_param(const struct smtp_cmd *cmd, const char *key);

/* ---- DATA ----------------------------------------------------------------------------------- */

enum smtp_data_error {
	SMTP_DATA_BARE_LF = 1 << 0,   /* LF not preceded by CR (SMTP smuggling) */
	SMTP_DATA_BARE_CR = 1 << 1,   /* CR not followed by LF */
	SMTP_DATA_LONG_LINE = 1 << 2, /* a line longer than 998 octets + CRLF */
	SMTP_DATA_TOO_BIG = 1 << 3,   /* more than max_size octets after unstuffing */
	SMTP_DATA_NUL = 1 << 4,       /* a NUL octet */
	SMTP_DATA_8BIT = 1 << 5,      /* an octet >= 0x80 (not an error: noted for 8BITMIME) */
};

/* Incremental decoder of a DATA stream as it arrives from the wire. */
struct smtp_data {
	int state;             /* internal */
	uint64_t max_size;     /* octets */
	uint64_t size;         /* octets of decoded message so far (counted past max_size too) */
	size_t line_len;       /* octets of the current line so far */
	unsigned int flags;    /* enum smtp_data_error, sticky */
	bool in_header;        /* still in the RFC 5322 header section */
	unsigned int received; /* Received: header fields seen (loop detection, RFC 5321 6.3) */
	bool has_message_id;   /* a Message-ID: field was seen in the header */
	bool has_date;         /* a Date: field was seen */
	char hname[32];        /* internal: the start of the current header line */
	size_t hname_len;      /* internal */
};

void smtp_data_init(struct smtp_data *d, uint64_t max_size);
/* Consumes raw input up to and including the terminating CRLF.CRLF. Appends the decoded
 * message (dot-unstuffed, CRLF line ends, without the terminator) to out, except once
 * SMTP_DATA_TOO_BIG is set (from then on input is consumed and discarded). Returns the number
 * of input octets consumed; *done_r becomes true once the end of data was consumed (the octets
 * after it are left to the caller: they are the next pipelined command). Bare CR or LF never
 * end the data: only CRLF.CRLF does (RFC 5321 4.1.1.4). */
size_t smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t len, struct buf *out,
                      bool *done_r);
/* Sizing out: a call appends at most len + 1 octets (a CR held back at the end of the previous
 * call may come out with this one); the caller empties out between calls, and an append past
 * its max leaves out->err set. Lines end only at CRLF: a bare CR or LF is line text (flagged,
 * counted in line_len and passed through unchanged). Results do not depend on how the input is
 * split into calls. Once done, further calls consume nothing. */

/* The same header checks for a BDAT chunk (RFC 3030: no dot-stuffing, no terminator): feeds
 * raw message octets, appends them to out (until TOO_BIG) and updates the flags and header
 * fields. Bare CR/LF are flagged too. */
void smtp_data_feed_raw(struct smtp_data *d, const uint8_t *in, size_t len, struct buf *out);

#endif
