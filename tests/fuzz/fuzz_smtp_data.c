/* Fuzz target for the DATA/BDAT decoder (smtp_data_feed, smtp_data_feed_raw).
 *
 * Input: byte 0 picks max_size (0xff: no limit, else 4 * byte), bytes 1..4 are the sizes of the
 * pieces the rest is fed in (cycled; a piece may be empty), the rest is the stream. The stream
 * is decoded in one call and again piece by piece, each piece copied into a buffer of its exact
 * size; it aborts when the two disagree in any way (output, octets consumed, end of data, flags,
 * counters, state), when a call appends more than its length + 1, when the output and size do
 * not match, or when the data ended anywhere but after CRLF "." CRLF (or "." CRLF at the start).
 * The same stream then goes through the BDAT decoder both ways. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parser.h"

#define FUZZ_HEADER 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
	struct smtp_data d;
	struct buf out;
	size_t consumed;
	bool done;
};

static void
feed_piece(struct run *r, const uint8_t *p, size_t len, bool raw)
{
	struct buf stage;
	uint8_t *copy = malloc(len > 0 ? len : 1);
	size_t n;

	if (copy == NULL)
		abort();
	if (len > 0)
		memcpy(copy, p, len);
	buf_init(&stage, len + 1);
	if (raw) {
		smtp_data_feed_raw(&r->d, copy, len, &stage);
		n = len;
	} else {
		n = smtp_data_feed(&r->d, copy, len, &stage, &r->done);
	}
	/* stage's max is len + 1: the documented bound, so a larger append sets err */
	if (n > len || stage.err || (!r->done && n != len))
		abort();
	if (buf_append(&r->out, stage.data, stage.len) < 0)
		abort();
	buf_deinit(&stage);
	free(copy);
	r->consumed += n;
}

static void
run_init(struct run *r, uint64_t max_size, size_t len)
{
	memset(r, 0, sizeof(*r));
	smtp_data_init(&r->d, max_size);
	buf_init(&r->out, len + 1);
}

static void
compare(const struct run *a, const struct run *b)
{
	if (a->out.len != b->out.len ||
	    (a->out.len > 0 && memcmp(a->out.data, b->out.data, a->out.len) != 0) ||
	    a->consumed != b->consumed || a->done != b->done || a->d.state != b->d.state ||
	    a->d.size != b->d.size || a->d.line_len != b->d.line_len ||
	    a->d.flags != b->d.flags || a->d.in_header != b->d.in_header ||
	    a->d.received != b->d.received || a->d.has_message_id != b->d.has_message_id ||
	    a->d.has_date != b->d.has_date || a->d.hname_len != b->d.hname_len)
		abort();
}

static void
check_one(const struct run *r, const uint8_t *msg, size_t len, uint64_t max_size, bool raw)
{
	/* decoded octets never outnumber the input; BDAT passes everything through */
	if (r->consumed > len || r->d.size > r->consumed || (raw && r->d.size != len))
		abort();
	if (r->d.flags & SMTP_DATA_TOO_BIG) {
		if (r->out.len > max_size || r->d.size <= max_size)
			abort();
	} else if (r->out.len != r->d.size || r->d.size > max_size) {
		abort();
	}
	if (r->done) {
		size_t c = r->consumed;

		if (c < 3 || memcmp(msg + c - 3, ".\r\n", 3) != 0)
			abort();
		if (c > 3 && (c < 5 || msg[c - 5] != '\r' || msg[c - 4] != '\n'))
			abort();
	}
}

static void
run_both(const uint8_t *msg, size_t len, const uint8_t *sizes, uint64_t max_size, bool raw)
{
	struct run one, pieces;
	size_t pos = 0, k = 0, zero_run = 0;

	run_init(&one, max_size, len);
	feed_piece(&one, msg, len, raw);
	check_one(&one, msg, len, max_size, raw);

	run_init(&pieces, max_size, len);
	while (pos < len && !pieces.done) {
		size_t n = sizes[k++ % 4];

		/* four empty pieces in a row: force progress */
		if (n == 0 && ++zero_run >= 4)
			n = 1;
		if (n > 0)
			zero_run = 0;
		if (n > len - pos)
			n = len - pos;
		feed_piece(&pieces, msg + pos, n, raw);
		pos += n;
	}
	if (len == 0)
		feed_piece(&pieces, msg, 0, raw);
	compare(&one, &pieces);
	buf_deinit(&one.out);
	buf_deinit(&pieces.out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t sizes[4];
	uint64_t max_size;

	if (size < FUZZ_HEADER)
		return 0;
	max_size = data[0] == 0xff ? UINT64_MAX : (uint64_t)data[0] * 4;
	for (size_t i = 0; i < 4; i++)
		sizes[i] = data[1 + i] % 64; /* small pieces find more split bugs */
	run_both(data + FUZZ_HEADER, size - FUZZ_HEADER, sizes, max_size, false);
	run_both(data + FUZZ_HEADER, size - FUZZ_HEADER, sizes, max_size, true);
	return 0;
}
