/* 8-bit to 7-bit conversion of a message for an SMTP peer that does not offer 8BITMIME
 * (RFC 6152 3, RFC 2045 6, RFC 2046 5): bodies with 8-bit octets, NUL or over-long lines are
 * re-encoded, the MIME structure and every header field stay as they are. Nothing here blocks
 * or touches files; any thread may call it. */
#ifndef MIME_MIME_7BIT_H
#define MIME_MIME_7BIT_H

#include "core/buf.h"

/* Nesting levels of multiparts and message/rfc822 below the top-level message that are
 * converted: each level is one stack frame and one more pass over its octets. Postfix stops at
 * 20 (mime_nesting_limit); deeper 8-bit mail is refused rather than sent half converted. */
#define MIME_7BIT_MAX_DEPTH 32
/* Parts converted in one message (the store's parser default, Dovecot's max_total_mime_parts). */
#define MIME_7BIT_MAX_PARTS 10000

/* SMTP line length without CRLF (RFC 5321 4.5.3.1.6); RFC 2045 2.7/2.8 ask the same of 7bit
 * and 8bit data. */
#define MIME_7BIT_MAX_LINE 998

#if MIME_7BIT_MAX_DEPTH > 100
#error "MIME_7BIT_MAX_DEPTH must stay within the parser's MIME_MAX_DEPTH"
#endif

enum mime_7bit_result {
	/* Nothing to do: no octet >= 0x80, no NUL and no line over 998 octets, so the message
	 * can be sent as it is. out is untouched. */
	MIME_7BIT_CLEAN = 0,
	/* A 7-bit equivalent was appended to out. */
	MIME_7BIT_CONVERTED,
	/* A header section (of the message or of any part, an enclosed message's included) holds
	 * 8-bit octets, a NUL or a line over 998 octets; or an 8-bit message/global part, or a
	 * multipart boundary that is not 7-bit or does not fit a line. Header fields are never
	 * rewritten: 8-bit ones need SMTPUTF8, the caller bounces (5.6.7, or 5.6.3). */
	MIME_7BIT_HEADERS,
	/* A limit was reached: out's max, MIME_7BIT_MAX_DEPTH, MIME_7BIT_MAX_PARTS or the
	 * parser's header ceilings. Retrying the same message gives the same answer. */
	MIME_7BIT_ERROR,
};

/* Converts msg[0..len) (a stored message: CRLF line ends, bare LF tolerated) to 7 bits.
 *
 * Leaf parts whose body holds 8-bit octets, NUL or a line over 998 octets, whatever their
 * Content-Transfer-Encoding says (8bit, binary, 7bit mislabelled, absent), are re-encoded:
 * text and message types as quoted-printable (line breaks kept), any other type (a multipart
 * without usable structure too) as base64; the part gets "Content-Transfer-Encoding:
 * quoted-printable" or "base64" in place of its own field (at the end of its header when it
 * had none), and a message header that lacks MIME-Version gets "MIME-Version: 1.0" (no
 * Content-Type is added: the default text/plain; charset=us-ascii is wrong for 8-bit text,
 * but the real charset is unknown; Postfix leaves it alone too). A body that is
 * quoted-printable already is decoded and encoded again; a base64 one keeps only the alphabet
 * and "=" (what a decoder reads), in lines of 76. Multiparts and message/rfc822 are converted
 * part by part (RFC 2046 5.2.1 forbids encoding a message/rfc822 as a whole); their "8bit" or
 * "binary" label becomes "7bit" once their content changed. Preamble and epilogue lines with
 * 8-bit octets, NUL or over 998 octets are emptied (their line ends stay), and so are those of
 * a multipart closed before its first part; such a boundary delimiter line is written again
 * as "--boundary" or "--boundary--". Everything else is copied byte for byte. No encoded
 * line starts with "--" (its first dash is written "=2D"), so none can pass for a boundary.
 *
 * The output has only octets 1..127, lines of at most 998 octets, and parses into the same
 * MIME tree. On any result but CONVERTED, out->len is what it was (out->err stays set when
 * its max was reached). msg is borrowed for the call. */
ATTR_WUR enum mime_7bit_result mime_to_7bit(const uint8_t *msg, size_t len, struct buf *out);

#endif
