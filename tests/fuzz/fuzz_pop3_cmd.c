/* Fuzz target for POP3 input (pop3/pop3_parser.c).
 *
 * The input goes through the line reader twice, whole and in pieces whose sizes come from the
 * input itself, with the command limit and with the SASL limit; both must give the same lines.
 * Each line is parsed as a command. It also goes through the dot-stuffer as a message for RETR,
 * and for TOP with a line count taken from the input. Besides crashes and sanitizer reports it
 * aborts when an invariant breaks: a line longer than its limit or holding NUL or a bare CR, a
 * span outside its line, an error text with CR or LF, a RETR answer that does not unstuff to the
 * message (plus a final CRLF when it had none), or a TOP answer that is not a prefix of it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3/pop3_parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_span(struct span s, const uint8_t *line, size_t len)
{
	if (s.len == 0)
		return;
	if (s.p < line || s.p > line + len || s.len > (size_t)(line + len - s.p))
		abort();
}

static void
check_text(const char *text)
{
	if (text == NULL || text[0] == '\0' || strpbrk(text, "\r\n") != NULL)
		abort();
}

static void
parse_line(struct span line)
{
	/* Exactly the line's size, so ASan sees a read past its end. */
	uint8_t *copy = malloc(line.len ? line.len : 1);
	struct pop3_cmd cmd;
	const char *error = NULL;

	if (copy == NULL)
		abort();
	if (line.len > 0)
		memcpy(copy, line.p, line.len);
	if (pop3_parse_command(copy, line.len, &cmd, &error) < 0) {
		check_text(error);
	} else {
		if (cmd.nargs > 2)
			abort();
		for (size_t i = 0; i < cmd.nargs; i++)
			check_span(cmd.args[i], copy, line.len);
		check_span(cmd.rest, copy, line.len);
		check_text(pop3_verb_name(cmd.verb));
	}
	free(copy);
}

/* Feeds data in pieces (step 0: whole) and appends every line and error to out as records. */
static void
read_lines(const uint8_t *data, size_t size, size_t step, size_t max, struct buf *out,
           bool parse)
{
	struct pop3_line *l = malloc(sizeof(*l));
	size_t off = 0;

	if (l == NULL)
		abort();
	pop3_line_init(l);
	while (off < size) {
		size_t n = step == 0 ? size - off : MIN(step, size - off), pos = 0;

		while (pos < n) {
			size_t used, left = n - pos;
			int ret = pop3_line_feed(l, data + off + pos, left, max, &used);

			if (used > left || (ret == 0 && used != left))
				abort(); /* "need more" consumes everything */
			pos += used;
			if (ret == 1) {
				struct span s = pop3_line_get(l);
				if (s.len + 1 > max || memchr(s.p, '\0', s.len) != NULL ||
				    memchr(s.p, '\r', s.len) != NULL || memchr(s.p, '\n', s.len) != NULL)
					abort();
				(void)buf_printf(out, "L%zu:", s.len);
				(void)buf_append(out, s.p, s.len);
				if (parse)
					parse_line(s);
			} else if (ret < 0) {
				check_text(l->error);
				(void)buf_printf(out, "E:%s;", l->error);
				if (l->too_long)
					goto out;
			}
		}
		off += n;
	}
out:
	free(l);
}

static void
check_lines(const uint8_t *data, size_t size)
{
	size_t step = size > 0 ? (size_t)data[0] % 17 + 1 : 1;
	size_t maxes[2] = {POP3_MAX_LINE, size > 1 ? (size_t)data[1] % 64 + 3 : 8};

	for (size_t m = 0; m < 2; m++) {
		struct buf a, b;

		buf_init(&a, (size_t)1 << 24);
		buf_init(&b, (size_t)1 << 24);
		read_lines(data, size, 0, maxes[m], &a, m == 0);
		read_lines(data, size, step, maxes[m], &b, false);
		if (a.len != b.len || (a.len > 0 && memcmp(a.data, b.data, a.len) != 0))
			abort();
		buf_deinit(&a);
		buf_deinit(&b);
	}
}

static void
stuff(const uint8_t *data, size_t size, bool top, uint64_t lines, size_t step, struct buf *out)
{
	struct pop3_stuff st;
	size_t off = 0;

	pop3_stuff_init(&st, top, lines);
	while (off < size && !st.done) {
		size_t n = MIN(step, size - off), used = pop3_stuff_feed(&st, data + off, n, out);
		if (used > n || (used < n && !st.done))
			abort();
		off += n;
	}
	pop3_stuff_finish(&st, out);
}

static void
check_stuffing(const uint8_t *data, size_t size)
{
	struct buf retr, top, plain;
	size_t step = size > 2 ? (size_t)data[2] % 31 + 1 : 1;
	uint64_t lines = size > 3 ? data[3] % 8 : 0;
	size_t i = 0;

	buf_init(&retr, (size_t)1 << 24);
	buf_init(&top, (size_t)1 << 24);
	buf_init(&plain, (size_t)1 << 24);
	stuff(data, size, false, 0, size > 0 ? size : 1, &retr);
	stuff(data, size, true, lines, step, &top);
	if (retr.len < 3 || memcmp(retr.data + retr.len - 3, ".\r\n", 3) != 0)
		abort();
	/* Unstuff: drop the terminator, and one dot at the start of every line. */
	retr.len -= 3;
	while (i < retr.len) {
		const uint8_t *lf = memchr(retr.data + i, '\n', retr.len - i);
		size_t end = lf ? (size_t)(lf - retr.data) + 1 : retr.len;
		size_t start = i + (retr.data[i] == '.' ? 1 : 0);

		(void)buf_append(&plain, retr.data + start, end - start);
		i = end;
	}
	if (size > 0 && data[size - 1] != '\n') {
		if (plain.len != size + 2 || memcmp(plain.data + size, "\r\n", 2) != 0)
			abort();
		plain.len = size;
	}
	if (plain.len != size || (size > 0 && memcmp(plain.data, data, size) != 0))
		abort();
	/* TOP sends a prefix of RETR's answer: whole lines when it stops early, all otherwise. */
	retr.len += 3;
	if (top.len < 3 || top.len > retr.len || memcmp(top.data + top.len - 3, ".\r\n", 3) != 0 ||
	    (top.len > 3 && memcmp(top.data, retr.data, top.len - 3) != 0))
		abort();
	buf_deinit(&retr);
	buf_deinit(&top);
	buf_deinit(&plain);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_lines(data, size);
	check_stuffing(data, size);
	return 0;
}
