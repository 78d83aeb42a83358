/* Header field value helpers: unfolding (RFC 5322 2.2.3), encoded words (RFC 2047), charset
 * conversion to UTF-8, MIME parameters with RFC 2231 continuations and charsets, Content-Type,
 * Content-Disposition (RFC 2183), Content-Transfer-Encoding, Content-Language (RFC 3282), and
 * address lists (RFC 5322 3.4 with the obsolete forms of 4.4) as IMAP ENVELOPE needs them.
 *
 * Inputs are octets plus a length and need not be NUL-terminated; values are expected unfolded
 * (the parser unfolds), but folded input parses too. Results that are allocated come from the
 * caller's struct mime_pool and live as long as it. Decoders append to a struct buf and leave
 * its sticky err set when its max was reached. Any thread may call these. */
#ifndef MIME_MIME_HEADER_H
#define MIME_MIME_HEADER_H

#include "mime/mime.h"

/* Appends the value with every line break that is followed by a blank removed (CRLF or bare
 * LF), and a final line break dropped. Returns 0, or -1 when out is full. */
int mime_header_unfold(struct buf *out, const uint8_t *value, size_t len);

/* Appends the value with RFC 2047 encoded words decoded to UTF-8: B and Q encodings, the
 * charsets of mime_charset_to_utf8(); blanks between two encoded words are dropped (RFC 2047
 * 6.2) and adjacent words of one charset are decoded together, so a character split across
 * words survives. Malformed words and words in unknown charsets are left as they are; other
 * text is copied unchanged. For IMAP SEARCH. Returns 0, or -1 when out is full. */
int mime_header_decode(struct buf *out, const uint8_t *value, size_t len);

/* Appends text in the charset named by charset (cslen octets, case-insensitive) as UTF-8.
 * Built in: UTF-8 (invalid sequences become U+FFFD), US-ASCII (8-bit octets become U+FFFD),
 * ISO-8859-1 and Windows-1252 (both decoded as Windows-1252, as mail readers and the WHATWG
 * Encoding Standard do, since the C1 range is never meant as controls); any other name goes to
 * iconv(3). Returns 0, or -1 when the charset is unknown (nothing appended). A full out leaves
 * out->err set. */
int mime_charset_to_utf8(struct buf *out, const char *charset, size_t cslen, const uint8_t *text,
                         size_t len);

/* Parses "; name=value" parameters (RFC 2045 5.1) from value: names lowercased, quoted strings
 * unquoted, RFC 2231 sections merged (see struct mime_param), at most MIME_MAX_PARAMS. Lenient
 * about missing semicolons and stray octets, as real mail needs. *params_r is NULL when there
 * are none. */
void mime_parse_params(struct mime_pool *pool, const uint8_t *value, size_t len,
                       struct mime_param **params_r, unsigned int *count_r);

struct mime_content_type {
	struct mime_str type;    /* as written */
	struct mime_str subtype; /* as written */
	struct mime_param *params;
	unsigned int nparams;
};

/* Content-Type (RFC 2045 5.1): type "/" subtype *(";" parameter). Returns 0, or -1 when there is
 * no type/subtype (RFC 2045 5.2: the field is then taken as absent; ct_r is zeroed). */
int mime_parse_content_type(struct mime_pool *pool, const uint8_t *value, size_t len,
                            struct mime_content_type *ct_r);
/* Content-Disposition (RFC 2183 2): token *(";" parameter). Returns 0, or -1 without a token. */
int mime_parse_disposition(struct mime_pool *pool, const uint8_t *value, size_t len,
                           struct mime_str *disp_r, struct mime_param **params_r,
                           unsigned int *count_r);
/* Content-Transfer-Encoding (RFC 2045 6.1): a single token, comments allowed around it.
 * Returns 0, or -1 when the value is not exactly one token (then absent: 7bit). */
int mime_parse_token_value(struct mime_pool *pool, const uint8_t *value, size_t len,
                           struct mime_str *token_r);
/* Content-Language (RFC 3282 2): 1#Language-Tag. Returns the number of tags (0: none). */
unsigned int mime_parse_languages(struct mime_pool *pool, const uint8_t *value, size_t len,
                                  struct mime_str **langs_r);

/* The parameter called name (lowercase) or its RFC 2231 extended form "name*", which is
 * preferred; NULL when neither is there. */
const struct mime_param *mime_param_find(const struct mime_param *params, unsigned int count,
                                         const char *name);
/* Appends the decoded value of the parameter name as UTF-8: an RFC 2231 value is
 * percent-decoded and converted from its charset, another one has its RFC 2047 encoded words
 * decoded (not standard, but how many mailers send file names). Returns 1, 0 when there is no
 * such parameter (nothing appended), -1 when out is full. */
int mime_param_get(struct buf *out, const struct mime_param *params, unsigned int count,
                   const char *name);

/* ---- addresses ------------------------------------------------------------------------------ */

enum mime_addr_type {
	MIME_ADDR_MAILBOX,     /* an address: mailbox and host are set */
	MIME_ADDR_GROUP_START, /* "name:" of a group (RFC 5322 3.4); mailbox holds the name */
	MIME_ADDR_GROUP_END,   /* its ";" */
};

/* One entry of an address list, as the IMAP "address" production: (name adl mailbox host).
 * name: the display name (phrase) as written, quotes removed, words joined by single spaces,
 * encoded words left for the client; or the comment after a bare addr-spec. adl: an obsolete
 * source route "@a,@b". mailbox: the local part, unquoted. host: the domain, a domain literal
 * with its brackets. Parts that are missing from a mailbox come back as "MISSING_MAILBOX" and
 * "MISSING_DOMAIN" (Dovecot's markers), since host NIL would mean a group to IMAP. */
struct mime_address {
	struct mime_address *next;
	enum mime_addr_type type;
	struct mime_str name;    /* may be absent */
	struct mime_str adl;     /* may be absent */
	struct mime_str mailbox; /* absent only for GROUP_END */
	struct mime_str host;    /* absent only for groups */
};

/* Parses an address-list (RFC 5322 3.4: mailboxes, groups, display names with quoted strings
 * and comments; RFC 5322 4.4: routes, empty list elements, CFWS around dots). Never fails:
 * garbage is skipped up to the next comma. Returns the number of entries; *list_r is NULL when
 * there are none. */
unsigned int mime_address_parse(struct mime_pool *pool, const uint8_t *value, size_t len,
                                 struct mime_address **list_r);

/* Appends the decoded octets of a base64 body (RFC 2045 6.8): characters outside the alphabet
 * are skipped, decoding stops at "=". */
void mime_decode_base64(struct buf *out, const uint8_t *p, size_t n);
/* Appends the decoded octets of a quoted-printable body (RFC 2045 6.7): "=XX" octets, "="
 * before a line end is a soft break, a malformed "=" is kept. */
void mime_decode_qp(struct buf *out, const uint8_t *p, size_t n);

#endif
