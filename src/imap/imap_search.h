/* IMAP SEARCH as a library without I/O or store access: the search keys of RFC 3501 §6.4.4 and
 * RFC 9051 §6.4.4 (plus MODSEQ, RFC 7162 §3.1.5, and "$", RFC 5182) are compiled from the
 * argument tree of imap/imap_parser.h into a program, which is then run against one message at a
 * time. Cheap message attributes (flags, sizes, dates, numbers) come from the caller; the message
 * text is read through a callback only when a key needs it (HEADER, BODY, TEXT, SENT*, SUBJECT,
 * FROM, ...). The SORT and THREAD commands (imap/imap_sort.h) reuse the program for their search
 * keys and the helpers at the end of this file.
 *
 * Matching rules
 *   - Strings match as case-insensitive substrings of decoded text. Case folding: ASCII, Latin-1
 *     Supplement, Latin Extended-A, basic Greek and basic Cyrillic letters (simple one-to-one
 *     mappings; no multi-character folds such as "ß" = "ss", no normalisation).
 *   - Header keys (HEADER, SUBJECT, FROM, TO, CC, BCC) look at the top-level header: the value
 *     of each field of that name, unfolded and RFC 2047-decoded; address fields match that
 *     decoded text (as Dovecot does). HEADER name "" matches when the field is present.
 *   - BODY looks at the "text" leaves of the MIME tree, transfer-decoded (base64,
 *     quoted-printable) and converted to UTF-8 from their charset (unknown charsets: the octets
 *     as they are), and at the decoded headers of enclosed message/rfc822 parts. TEXT is the
 *     decoded top-level header ("Name: value" per field) or BODY.
 *   - BEFORE / ON / SINCE compare the day of the internal date in the server's time zone
 *     (struct imap_search_context.tz_offset_minutes). SENTBEFORE / SENTON / SENTSINCE compare
 *     the date written in the Date: header, time and zone disregarded (RFC 3501); without a
 *     parsable Date: the day of the internal date is used.
 *   - "*" in sequence sets is max_seq (max_uid in the UID key) of the context at parse time. A
 *     bare sequence set means sequence numbers in UID SEARCH too (RFC 9051 §6.4.9). "$" is the
 *     saved result of SEARCHRES (RFC 5182), given as UIDs, as a key or as the UID key's set.
 *
 * Limits: lists, NOT and OR nest at most IMAP_SEARCH_MAX_DEPTH deep (the recursion in the parser
 * and the matcher is bounded by it), a program has at most IMAP_SEARCH_MAX_KEYS keys, and the
 * decoded text kept for one message is at most IMAP_SEARCH_MAX_TEXT octets (beyond it the text
 * is searched as far as it was decoded).
 *
 * Threads: a program is read-only after imap_search_parse(), so any thread may match with it;
 * the callbacks run in the caller's thread. Nothing here blocks, except what read_message does. */
#ifndef IMAP_IMAP_SEARCH_H
#define IMAP_IMAP_SEARCH_H

#include "core/buf.h"
#include "imap/imap_parser.h"

/* Nesting of parenthesised lists, NOT and OR (each counts one level): RFC 9051 needs a few;
 * Dovecot's parser allows about 100 list levels. Bounds recursion on hostile input. */
#define IMAP_SEARCH_MAX_DEPTH 100
/* Keys in one program, nested ones included: a search of 10000 keys is abuse, not a query. */
#define IMAP_SEARCH_MAX_KEYS 10000
/* Ranges in one sequence set after parsing (before merging). */
#define IMAP_SEARCH_MAX_RANGES 100000
/* Octets of decoded and folded text kept per message (header and body each). */
#define IMAP_SEARCH_MAX_TEXT (64 * 1024 * 1024)

#if IMAP_SEARCH_MAX_DEPTH > 1000
#error "IMAP_SEARCH_MAX_DEPTH bounds recursion: keep it small"
#endif

/* Message flags: the store's bit values (SEEN 1 ... DRAFT 16), plus RECENT. */
#define IMAP_SF_SEEN 0x01u
#define IMAP_SF_ANSWERED 0x02u
#define IMAP_SF_FLAGGED 0x04u
#define IMAP_SF_DELETED 0x08u
#define IMAP_SF_DRAFT 0x10u
#define IMAP_SF_RECENT 0x20u

/* A message as the search sees it. Cheap fields are filled in by the caller; the text is fetched
 * through read_message only when a key needs it (imap_search_needs_message()). */
struct imap_search_msg {
	uint32_t seq, uid;
	uint32_t flags;         /* IMAP_SF_* bits */
	const char *keywords;   /* borrowed: space-separated keywords, "" for none */
	uint64_t size;          /* RFC822.SIZE, octets */
	int64_t internaldate;   /* seconds since the epoch, UTC */
	uint64_t modseq;        /* RFC 7162 mod-sequence */
	/* Reads the whole raw message (RFC 5322 text, CRLF line ends) into *data_r / *len_r; the
	 * memory is the caller's and must stay valid until imap_search_match() (or imap_sort(),
	 * imap_thread()) returns. *data_r = NULL: the message is gone (matches as empty). Returns
	 * 0, or -1 on an I/O error (the command then fails with a temporary error). Called at most
	 * once per message per call (read_header at most once before it). NULL: as if the
	 * message were empty. */
	int (*read_message)(void *ctx, const uint8_t **data_r, size_t *len_r);
	/* Optional, for keys that look at the header only (and SORT, THREAD): the same, but what
	 * is read may end after the empty line that ends the header section. A later
	 * read_message call for the same message may free it. NULL: read_message is used. */
	int (*read_header)(void *ctx, const uint8_t **data_r, size_t *len_r);
	void *ctx; /* borrowed: for read_message */
};

struct imap_search_context {
	uint32_t max_seq;                    /* messages in the mailbox: "*" */
	uint32_t max_uid;                    /* largest UID in use: "*" under UID */
	const struct imap_seq_range *saved;  /* borrowed, during parse only: UIDs of "$" */
	size_t nsaved;                       /* ranges in saved */
	bool have_saved;                     /* SEARCHRES is offered; false: "$" is BAD */
	bool require_charset;                /* SORT and THREAD: the charset is mandatory */
	int tz_offset_minutes;               /* server time zone for date keys: 0 = UTC */
};

/* A compiled search program. */
struct imap_search;

/* RETURN options of ESEARCH (RFC 4731) and SEARCHRES (RFC 5182). */
enum imap_search_return {
	IMAP_SEARCH_RETURN_MIN = 1 << 0,
	IMAP_SEARCH_RETURN_MAX = 1 << 1,
	IMAP_SEARCH_RETURN_ALL = 1 << 2,
	IMAP_SEARCH_RETURN_COUNT = 1 << 3,
	IMAP_SEARCH_RETURN_SAVE = 1 << 4,
};

/* Reads an optional "RETURN (opts)" at args[0]. *consumed_r gets the arguments it took (0 when
 * there is no RETURN), *return_r the options (0: plain SEARCH response; "RETURN ()" gives
 * IMAP_SEARCH_RETURN_ALL as RFC 4731 §3.1 says). Returns 0, or -1 with a static *error_r
 * (BAD). */
ATTR_WUR int imap_search_parse_return(const struct imap_arg *args, size_t nargs,
                                      unsigned int *return_r, size_t *consumed_r,
                                      const char **error_r);

/* Compiles "[CHARSET astring] search-key *(SP search-key)" (args after the RETURN options; for
 * SORT and THREAD the arguments after the criteria / algorithm, with ctx->require_charset).
 * Only US-ASCII and UTF-8 are supported: another charset gives NULL with *badcharset_r set
 * (reply NO [BADCHARSET (US-ASCII UTF-8)]). Other errors give NULL with a static *error_r
 * (reply BAD). ctx is borrowed for the call. Caller frees with imap_search_free(). */
ATTR_WUR struct imap_search *imap_search_parse(const struct imap_arg *args, size_t nargs,
                                               const struct imap_search_context *ctx,
                                               const char **error_r, bool *badcharset_r);
void imap_search_free(struct imap_search **s);

/* Whether a key needs the message text (so the caller may skip opening files). */
bool imap_search_needs_message(const struct imap_search *s);
/* Whether MODSEQ was used: the SEARCH response then ends in "(MODSEQ n)" (RFC 7162 §3.1.5). */
bool imap_search_uses_modseq(const struct imap_search *s);

/* Runs the program on one message: 1 match, 0 no match, -1 read_message failed. */
ATTR_WUR int imap_search_match(const struct imap_search *s, const struct imap_search_msg *msg);

/* ---- full-text index support ------------------------------------------------------------------
 * A caller may keep an index of the text below per message and use it to skip messages that
 * cannot match: imap_search_required() lists texts a matching message necessarily contains.
 * The program stays the judge: messages the index lets through are matched as usual. */

/* The text HEADER, BODY and TEXT keys search in a raw message (see "Matching rules"), built by
 * the matcher's own code: *header_r gets "name: value\n" per top-level field, each value
 * unfolded and RFC 2047-decoded; *body_r the decoded text leaves and the headers of enclosed
 * messages; both case-folded, each at most IMAP_SEARCH_MAX_TEXT octets. A needle of a key
 * matches the message's text exactly when it is a substring of these (for HEADER, of the named
 * field's value, which lies inside *header_r). Both buffers are initialised by the call; the
 * caller frees them with buf_deinit(). data NULL: an empty message. */
void imap_search_extract(const uint8_t *data, size_t len, struct buf *header_r,
                         struct buf *body_r);

#define IMAP_SEARCH_IN_HEADER 0x1u
#define IMAP_SEARCH_IN_BODY 0x2u

/* A text every matching message contains: in one of the `where` texts of imap_search_extract.
 * Terms of one group are alternatives (at least one of them is there); every group is. */
struct imap_search_term {
	unsigned int group;   /* 0, 1, ... in ascending order */
	unsigned int where;   /* IMAP_SEARCH_IN_* bits */
	const char *text;     /* borrowed from the program: folded, valid UTF-8 without NUL */
	size_t len;           /* octets of text */
};

/* Lists, into terms[0..max), what every message matching the program contains: one group per
 * operand of the top-level AND that is a text key (HEADER, SUBJECT, FROM, TO, CC, BCC, BODY,
 * TEXT), an OR of such keys (one group of alternatives), or a list holding one. NOT, other keys
 * and needles shorter than min_chars characters, longer than max_len octets, not valid UTF-8
 * or with NUL give no group; nor does an OR when terms[] has no room for all of it. Returns the
 * number of terms; 0 means no message can be skipped. */
size_t imap_search_required(const struct imap_search *s, size_t min_chars, size_t max_len,
                            struct imap_search_term *terms, size_t max);

/* ---- helpers shared with SORT and THREAD ---------------------------------------------------- */

/* Appends s[0..len) case-folded (see "Matching rules"); octets that are not UTF-8 are copied as
 * they are. Returns 0, or -1 when out is full. */
int imap_search_fold(struct buf *out, const void *s, size_t len);
/* Appends the unfolded value of the first top-level header field called name (ASCII
 * case-insensitive) of a raw message, leading and trailing blanks removed. Returns 1, 0 when
 * there is no such field (nothing appended), -1 when out is full. */
int imap_search_header_get(struct buf *out, const uint8_t *msg, size_t len, const char *name);
/* Parses an RFC 5322 §3.3 date-time, with the obsolete forms of §4.3 (two-digit years, zone
 * names, missing seconds, comments) and a missing day of week. *utc_r gets the instant in
 * seconds since the epoch, *day_r the day as written (days since 1970-01-01, time and zone
 * disregarded). Returns 0, or -1 when the text is not a date. */
int imap_search_parse_date(const char *s, size_t len, int64_t *utc_r, int64_t *day_r);
/* Days since 1970-01-01 of a proleptic Gregorian date. */
int64_t imap_search_days_from_civil(int64_t y, unsigned int m, unsigned int d);

#endif
