/* Base64 (RFC 4648 section 4) as used by SASL. */
#ifndef CORE_BASE64_H
#define CORE_BASE64_H

#include "core/buf.h"

/* Appends the encoding of data to out. */
int base64_encode(struct buf *out, const void *data, size_t len);
/* Appends the decoded bytes of the base64 text src to out. Strict: rejects characters outside
 * the alphabet, bad padding and whitespace. Returns 0, or -1 on bad input or when out's max
 * would be exceeded. */
ATTR_WUR int base64_decode(struct buf *out, const char *src, size_t len);

#endif
