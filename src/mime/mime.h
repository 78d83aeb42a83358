/* Message and MIME structure (RFC 5322, RFC 2045/2046) for IMAP: a streaming parser that turns
 * a message into a tree of parts with byte offsets, sizes and line counts, plus the Content-*
 * and envelope header fields each part needs; the IMAP BODYSTRUCTURE / BODY / ENVELOPE writers
 * (RFC 3501 7.4.2); and a compact serialisation of the tree for the database.
 *
 * The parser never keeps message bodies: memory is bounded by struct mime_limits whatever the
 * message size, and BODY[section] is served later by reading byte ranges of the stored file.
 * Nothing here blocks or touches files; any thread may use its own parser and trees.
 *
 * Header value helpers (RFC 2047, RFC 2231, addresses) are in mime/mime_header.h. */
#ifndef MIME_MIME_H
#define MIME_MIME_H

#include "core/buf.h"

/* ---- limits ---------------------------------------------------------------------------------
 * Ceilings no configuration can exceed (they belong with the others in core/limits.h once the
 * lead moves them there). Each one bounds memory or time per message. */

/* Bytes of one part's header that are interpreted: RFC 5322 asks nothing of the sort; 64 KiB is
 * Dovecot's and our SMTP default. Beyond it the header is still skipped, but not read. */
#define MIME_MAX_HEADER_BYTES (1024 * 1024)
/* Header fields interpreted per part (SMTP default 1000, Postfix header_field_limit). */
#define MIME_MAX_HEADER_FIELDS 100000
/* Nesting depth of multiparts and message/rfc822: each open level costs one boundary check per
 * line starting with "--", so the ceiling also bounds parse time. */
#define MIME_MAX_DEPTH 100
/* Parts in one message (Dovecot max_total_mime_parts is 10000). */
#define MIME_MAX_PARTS 100000
/* Boundary octets compared: RFC 2046 5.1.1 allows 70; longer ones are cut to this many, which
 * still matches because a boundary line only has to start with the boundary. */
#define MIME_MAX_BOUNDARY 1024
/* Octets of header field values kept in one tree (all parts together). */
#define MIME_MAX_KEPT_BYTES (64 * 1024 * 1024)
/* Parameters kept from one Content-Type or Content-Disposition field. */
#define MIME_MAX_PARAMS 256

#if MIME_MAX_DEPTH > 1000
#error "MIME_MAX_DEPTH bounds recursion in the writers and the deserialiser"
#endif

/* The configurable limits; zero fields take the default. Values above a ceiling are clamped. */
struct mime_limits {
	size_t max_header_bytes;       /* bytes per part header (default 64 KiB) */
	unsigned int max_header_fields; /* fields per part header (default 1000) */
	unsigned int max_depth;        /* nesting levels below the root (default 50) */
	unsigned int max_parts;        /* parts in the tree, root included (default 10000) */
	size_t max_boundary;           /* boundary octets compared (default 200) */
	size_t max_kept_bytes;         /* header value bytes kept in the tree (default 4 MiB) */
};

#define MIME_DEFAULT_HEADER_BYTES (64 * 1024)
#define MIME_DEFAULT_HEADER_FIELDS 1000
#define MIME_DEFAULT_DEPTH 50
#define MIME_DEFAULT_PARTS 10000
#define MIME_DEFAULT_BOUNDARY 200
#define MIME_DEFAULT_KEPT_BYTES (4 * 1024 * 1024)

/* Fills in the defaults. */
void mime_limits_default(struct mime_limits *limits);

/* ---- memory -------------------------------------------------------------------------------- */

/* An allocate-only pool: everything of one tree (or of one helper call) is freed at once. */
struct mime_pool;

struct mime_pool *mime_pool_new(void);
/* Frees every allocation of the pool; NULL is fine. Sets *pool to NULL. */
void mime_pool_free(struct mime_pool **pool);
/* Zeroed memory that lives until the pool is freed; dies on OOM like xmalloc. */
void *mime_pool_alloc(struct mime_pool *pool, size_t size);

/* A string from a header: octets plus a length, NUL-terminated too (header values may hold a
 * NUL, so use the length). s == NULL means absent (NIL in IMAP); "" is present but empty. */
struct mime_str {
	const char *s;
	size_t len; /* octets, without the terminating NUL */
};

/* A MIME parameter (RFC 2045 5.1). The name is lowercased. RFC 2231 continuations are merged,
 * and an extended value keeps its encoding as Dovecot does: name "title*", value
 * "utf-8'en'%E2%82%AC" (use mime_param_get() in mime_header.h for the decoded text). */
struct mime_param {
	struct mime_str name;
	struct mime_str value;
};

/* ---- the part tree ------------------------------------------------------------------------- */

enum mime_kind {
	MIME_KIND_LEAF,      /* a body without structure (text/plain, image/png, ...) */
	MIME_KIND_MULTIPART, /* children are the body parts; at least one */
	MIME_KIND_MESSAGE,   /* message/rfc822: exactly one child, the enclosed message */
};

/* The header fields of a message that ENVELOPE reports (RFC 3501 7.4.2), unfolded, raw (encoded
 * words left as they are, addresses unparsed), leading and trailing blanks removed. The first
 * occurrence of each field counts. */
enum mime_env_field {
	MIME_ENV_DATE,
	MIME_ENV_SUBJECT,
	MIME_ENV_FROM,
	MIME_ENV_SENDER,
	MIME_ENV_REPLY_TO,
	MIME_ENV_TO,
	MIME_ENV_CC,
	MIME_ENV_BCC,
	MIME_ENV_IN_REPLY_TO,
	MIME_ENV_MESSAGE_ID,
	MIME_ENV_COUNT
};

struct mime_envelope {
	struct mime_str field[MIME_ENV_COUNT]; /* s == NULL: the field is absent */
};

enum mime_part_flag {
	MIME_PART_IS_MIME = 1 << 0,           /* Content-* fields apply (RFC 2045 4) */
	MIME_PART_HEADER_CUT = 1 << 1,        /* a header limit stopped reading its fields */
	MIME_PART_NO_FINAL_BOUNDARY = 1 << 2, /* multipart ended without its close delimiter */
};
#define MIME_PART_FLAGS_ALL 0x7u

/* One entity (RFC 2045 2.4). Offsets count octets from the start of the message: the header is
 * [hdr_offset, body_offset), the blank line included; the body is [body_offset, end_offset),
 * without the line end that precedes the next boundary (RFC 2046 5.1.1). Sizes in "v" are the
 * sizes a client sees, with each bare LF counted as CRLF. Lines are the LFs in the range
 * (IMAP body-fld-lines: what Dovecot reports).
 *
 * Content fields (RFC 2045, 2183, 3282, 2557, 1864) are as the header had them (type and
 * subtype keep their case); type/subtype are always set, to the default (text/plain, or
 * message/rfc822 under multipart/digest) when the header had none or an invalid one. A
 * a multipart or message/rfc822 part that could not be parsed as such (no boundary, no
 * delimiter found, encoded message, a limit reached) is a MIME_KIND_LEAF: the writers report
 * it as application/octet-stream so that clients never expect children it does not have. */
struct mime_part {
	struct mime_part *parent;   /* NULL for the root */
	struct mime_part *children; /* first child */
	struct mime_part *next;     /* next sibling */
	enum mime_kind kind;
	unsigned int flags; /* enum mime_part_flag */

	uint64_t hdr_offset;  /* octets */
	uint64_t body_offset; /* octets */
	uint64_t end_offset;  /* octets */
	uint64_t hdr_vsize;   /* octets, bare LF counted as CRLF */
	uint64_t body_vsize;  /* octets, bare LF counted as CRLF */
	uint64_t hdr_lines;   /* LFs in the header */
	uint64_t body_lines;  /* LFs in the body */

	struct mime_str type;    /* "text" */
	struct mime_str subtype; /* "plain" */
	struct mime_param *params;
	unsigned int nparams;
	struct mime_str id;          /* Content-ID */
	struct mime_str description; /* Content-Description */
	struct mime_str encoding;    /* Content-Transfer-Encoding token; absent: 7bit */
	struct mime_str md5;         /* Content-MD5 */
	struct mime_str location;    /* Content-Location */
	struct mime_str disposition; /* Content-Disposition token */
	struct mime_param *disp_params;
	unsigned int ndisp_params;
	struct mime_str *languages; /* Content-Language tags */
	unsigned int nlanguages;

	/* The root and the child of each message/rfc822 part (a message header); else NULL. */
	struct mime_envelope *envelope;
};

/* Frees a tree returned by mime_parser_finish() or mime_part_deserialize(); *root must be a
 * root. Sets *root to NULL; NULL is fine. */
void mime_part_free(struct mime_part **root);

/* True when the part's type is type/subtype (ASCII case-insensitive); subtype NULL: any. */
bool mime_part_is_type(const struct mime_part *part, const char *type, const char *subtype);

/* ---- the streaming parser ------------------------------------------------------------------ */

enum mime_warning {
	MIME_WARN_HEADER_BYTES = 1 << 0,   /* a header was longer than max_header_bytes */
	MIME_WARN_HEADER_FIELDS = 1 << 1,  /* a header had more than max_header_fields */
	MIME_WARN_DEPTH = 1 << 2,          /* structure below max_depth was not parsed */
	MIME_WARN_PARTS = 1 << 3,          /* parts beyond max_parts were not created */
	MIME_WARN_KEPT_BYTES = 1 << 4,     /* header values beyond max_kept_bytes were dropped */
	MIME_WARN_BOUNDARY = 1 << 5,       /* a multipart had no usable boundary or no delimiter */
	MIME_WARN_NO_FINAL_BOUNDARY = 1 << 6, /* a multipart lacked its close delimiter */
	MIME_WARN_BARE_LF = 1 << 7,        /* a line ended in LF without CR */
	MIME_WARN_ENCODED_MESSAGE = 1 << 8, /* message/rfc822 with a transfer encoding */
	MIME_WARN_NO_HEADER_END = 1 << 9,  /* a header ended without its blank line */
};

struct mime_parser;

/* limits NULL: the defaults. The parser allocates what the limits need up front (the boundary
 * stack and a value buffer grown up to max_header_bytes). Caller frees with mime_parser_free. */
struct mime_parser *mime_parser_new(const struct mime_limits *limits);
/* Feeds the next octets of the message: any split gives the same tree. data is borrowed for
 * the call only. Never fails: what does not parse is body. Not after mime_parser_finish(). */
void mime_parser_feed(struct mime_parser *p, const uint8_t *data, size_t len);
/* Ends the message (open parts end at its last octet) and hands over the tree: the caller
 * frees it with mime_part_free(). Returns 0, or -1 when called a second time. */
ATTR_WUR int mime_parser_finish(struct mime_parser *p, struct mime_part **root_r);
/* What the parser had to work around so far (enum mime_warning), for logs and tests. */
unsigned int mime_parser_warnings(const struct mime_parser *p);
/* Frees the parser and a tree it still owns. Sets *p to NULL; NULL is fine. */
void mime_parser_free(struct mime_parser **p);

/* Parses a whole message in one call: mime_parser_new + feed + finish. */
ATTR_WUR int mime_parse(const uint8_t *msg, size_t len, const struct mime_limits *limits,
                        struct mime_part **root_r);

/* ---- IMAP (RFC 3501 7.4.2, RFC 9051 7.5.2) ------------------------------------------------- */

/* Appends the part's "body" production, parentheses included: BODYSTRUCTURE with extended,
 * BODY without. Strings are quoted, or sent as literals ({n}CRLF...) when they hold CR, LF or
 * octets >= 0x80 (NUL becomes U+FFFD), so the result can be stored and sent as it is. Returns
 * 0, or -1 when out's max was reached (out->err is set). */
ATTR_WUR int mime_write_bodystructure(struct buf *out, const struct mime_part *part,
                                      bool extended);
/* Appends the "envelope" production for a message header (a root, or the child of a
 * message/rfc822 part), parentheses included; NULL writes an envelope of NILs. Sender and
 * Reply-To default to From (RFC 3501 7.4.2). Returns 0 or -1 as above. */
ATTR_WUR int mime_write_envelope(struct buf *out, const struct mime_envelope *env);
/* Appends an IMAP string (quoted or literal, as above) / nstring (NIL when s->s is NULL). */
int mime_write_imap_string(struct buf *out, const void *data, size_t len);
int mime_write_imap_nstring(struct buf *out, const struct mime_str *s);

/* ---- storage -------------------------------------------------------------------------------- */

/* Appends a versioned binary image of the tree (every field above) to out. Returns 0, or -1
 * when out's max was reached. */
ATTR_WUR int mime_part_serialize(struct buf *out, const struct mime_part *root);
/* Rebuilds a tree from mime_part_serialize() output; any input is safe. Returns 0 with a tree
 * the caller frees with mime_part_free(), or -1 with *error_r set (static string). */
ATTR_WUR int mime_part_deserialize(const uint8_t *data, size_t len, struct mime_part **root_r,
                                   const char **error_r);

#endif
