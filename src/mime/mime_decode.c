/* Content-Transfer-Encoding decoders for message bodies (RFC 2045 6.7, 6.8), lenient as the
 * RFC asks of readers; shared by SEARCH (text of parts) and FETCH BINARY. */
#include "mime/mime_header.h"

static int
b64(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if ((c >= '0' && c <= '9'))
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Lenient base64 (RFC 2045 §6.8): octets outside the alphabet are ignored, as the RFC asks. */
void
mime_decode_base64(struct buf *out, const uint8_t *p, size_t n)
{
	uint32_t acc = 0;
	unsigned int bits = 0;

	for (size_t i = 0; i < n && !out->err; i++) {
		int v = b64(p[i]);

		if (p[i] == '=')
			break;
		if (v < 0)
			continue;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			(void)buf_append_byte(out, (uint8_t)(acc >> bits));
		}
	}
}

static int
hexval(uint8_t c)
{
	if ((c >= '0' && c <= '9'))
		return c - '0';
	c = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Quoted-printable (RFC 2045 §6.7): "=XX" octets, "=" line ends are soft breaks; a malformed
 * "=" is kept (rule (4) of the RFC's robustness advice). */
void
mime_decode_qp(struct buf *out, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n && !out->err) {
		if (p[i] != '=') {
			size_t run = i;

			while (run < n && p[run] != '=')
				run++;
			(void)buf_append(out, p + i, run - i);
			i = run;
			continue;
		}
		if (i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
			(void)buf_append_byte(out, (uint8_t)(hexval(p[i + 1]) * 16 + hexval(p[i + 2])));
			i += 3;
			continue;
		}
		{
			size_t j = i + 1;

			while (j < n && (p[j] == ' ' || p[j] == '\t'))
				j++;
			if (j < n && p[j] == '\r' && j + 1 < n && p[j + 1] == '\n') {
				i = j + 2;
				continue;
			}
			if (j < n && p[j] == '\n') {
				i = j + 1;
				continue;
			}
			if (j == n) {
				i = n;
				continue;
			}
		}
		(void)buf_append_byte(out, '=');
		i++;
	}
}
