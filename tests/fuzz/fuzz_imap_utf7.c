/* Fuzz target for mailbox names between modified UTF-7 and UTF-8 (imap/imap_utf7.c). Besides
 * crashes and sanitizer reports it aborts when an invariant breaks: a UTF-8 name that converts
 * must come back unchanged from its modified UTF-7 form, which must be 7-bit printable; a
 * modified UTF-7 name that converts must give valid UTF-8 that converts again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_utf7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in;
	struct buf a, b;

	if (size > 4096)
		return 0;
	in = malloc(size + 1);
	if (in == NULL)
		return 0;
	memcpy(in, data, size);
	in[size] = '\0';
	buf_init(&a, 1 << 16);
	buf_init(&b, 1 << 16);
	if (imap_utf8_to_utf7(in, &a) == 0) {
		for (size_t i = 0; i < a.len; i++) {
			if (a.data[i] < 0x20 || a.data[i] > 0x7e)
				abort();
		}
		if (imap_utf7_to_utf8(buf_cstr(&a), &b) != 0 || strcmp(buf_cstr(&b), in) != 0)
			abort();
	}
	buf_reset(&a);
	buf_reset(&b);
	if (imap_utf7_to_utf8(in, &a) == 0 && imap_utf8_to_utf7(buf_cstr(&a), &b) != 0)
		abort();
	buf_deinit(&a);
	buf_deinit(&b);
	free(in);
	return 0;
}
