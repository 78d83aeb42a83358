/* Mailbox names in modified UTF-7 (RFC 3501 5.1.3), the form the store keeps them in, and
 * UTF-8, the form IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855) clients use. No I/O. */
#ifndef IMAP_IMAP_UTF7_H
#define IMAP_IMAP_UTF7_H

#include "core/buf.h"

/* Appends the UTF-8 form of a modified UTF-7 name. Returns 0, or -1 when the name is not valid
 * modified UTF-7 (bad base64, odd length, broken surrogates, "&" not closed, a printable ASCII
 * character encoded, 8-bit octets) or out is full. */
ATTR_WUR int imap_utf7_to_utf8(const char *in, struct buf *out);
/* Appends the modified UTF-7 form of a UTF-8 name. Returns 0, or -1 when the name is not valid
 * UTF-8 (RFC 3629: no overlong forms, surrogates or code points above U+10FFFF), holds a
 * control character, or out is full. */
ATTR_WUR int imap_utf8_to_utf7(const char *in, struct buf *out);

#endif
