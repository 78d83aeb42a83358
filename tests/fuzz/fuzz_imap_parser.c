/* Fuzz target for the IMAP command parser (imap/imap_parser.c).
 *
 * Input: byte 0 picks the limits (pre/post-auth, UTF-8, streaming, tight limits, LITERAL+ or
 * no non-synchronising literals), bytes 1-4 the sizes of the pieces the rest is fed in (cycled).
 * The stream is parsed as a server would: reset after each command and each recoverable error,
 * stop at a fatal one. The transcript (each status with its input offset, each command dumped,
 * streamed literal data joined) must be the same fed whole and fed in pieces, each piece in a
 * buffer of its exact size so that ASan sees a read past it; abort() on a mismatch. Besides, the
 * tree is checked (NUL-terminated strings, no NUL outside literal8, counts), every command is
 * written back in IMAP syntax and parsed again to the same tree, and every atom goes through
 * imap_seqset_parse(), whose ranges are checked. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_parser.h"

#define FUZZ_MAX_STREAMED 8
#define FUZZ_MAX_RANGES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
limits_for(uint8_t sel, struct imap_parser_limits *l)
{
	imap_parser_limits_default(l, (sel & 1) != 0);
	if (sel & 2)
		l->utf8 = true;
	switch ((sel >> 2) & 7) {
	case 1:
		l->stream_literal_min = 4;
		break;
	case 2:
		l->max_line = 48;
		l->max_command = 160;
		l->max_depth = 4;
		l->max_args = 12;
		l->max_literal = 16;
		l->max_append_literal = 40;
		break;
	case 3:
		l->max_nonsync_literal = UINT64_MAX;
		break;
	case 4:
		l->max_nonsync_literal = 0;
		break;
	case 5:
		l->max_nonsync_literal = 3;
		l->max_literal = 5;
		l->max_append_literal = 100;
		l->stream_literal_min = 6;
		break;
	default:
		break;
	}
}

static void
dump_bytes(struct buf *b, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)s[i];

		if (c < 0x20 || c >= 0x7F || c == '\\')
			buf_printf(b, "\\x%02x", c);
		else
			buf_append_byte(b, c);
	}
}

static void
check_seqset(const struct imap_arg *a)
{
	struct imap_seq_range r[FUZZ_MAX_RANGES];
	const char *error = NULL;
	size_t count = 0, count2 = 0;
	int ret, ret2;

	ret = imap_seqset_parse(a->str, a->len, 1000, r, FUZZ_MAX_RANGES, &count, &error);
	ret2 = imap_seqset_parse(a->str, a->len, 0, NULL, FUZZ_MAX_RANGES, &count2, &error);
	if (ret != ret2 || count != count2 || (ret < 0 && (error == NULL || count != 0)) ||
	    count > FUZZ_MAX_RANGES)
		abort();
	for (size_t i = 0; i < count; i++) {
		if (r[i].lo > r[i].hi)
			abort();
		if (r[i].lo == 0 && r[i].hi == 0)
			abort(); /* nz-number: 0 only ever comes from star */
	}
	/* What parses only holds sequence-set octets, which the parser let through as an atom. */
	if (ret == 0 && a->type == IMAP_ARG_ATOM && !(a->flags & IMAP_ARG_FLAG_WILDCARD) &&
	    memchr(a->str, '*', a->len) != NULL)
		abort();
}

/* IMAP syntax for a parsed argument; false when it cannot be written back (streamed). */
static bool
serialize_arg(struct buf *b, const struct imap_arg *a)
{
	switch (a->type) {
	case IMAP_ARG_ATOM:
	case IMAP_ARG_NUMBER:
	case IMAP_ARG_NIL:
		buf_append(b, a->str, a->len);
		return true;
	case IMAP_ARG_QUOTED:
		buf_append_byte(b, '"');
		for (size_t i = 0; i < a->len; i++) {
			if (a->str[i] == '"' || a->str[i] == '\\')
				buf_append_byte(b, '\\');
			buf_append_byte(b, (uint8_t)a->str[i]);
		}
		buf_append_byte(b, '"');
		return true;
	case IMAP_ARG_LITERAL:
	case IMAP_ARG_LITERAL8:
		if (a->flags & IMAP_ARG_FLAG_STREAMED)
			return false;
		buf_printf(b, "%s{%zu+}\r\n", a->type == IMAP_ARG_LITERAL8 ? "~" : "", a->len);
		buf_append(b, a->str, a->len);
		return true;
	case IMAP_ARG_LIST:
		buf_append_byte(b, '(');
		for (size_t i = 0; i < a->count; i++) {
			if (i > 0)
				buf_append_byte(b, ' ');
			if (!serialize_arg(b, &a->list[i]))
				return false;
		}
		buf_append_byte(b, ')');
		return true;
	}
	abort();
}

static void dump_arg(struct buf *b, const struct imap_arg *a, unsigned int depth, bool flags);

static void
dump_command(struct buf *b, const struct imap_command *cmd, bool flags)
{
	buf_printf(b, "C %s %s%s", cmd->tag, cmd->uid ? "UID " : "", cmd->name);
	for (size_t i = 0; i < cmd->nargs; i++) {
		buf_append_byte(b, ' ');
		dump_arg(b, &cmd->args[i], 1, flags);
	}
}

/* Writes the command back in IMAP syntax and parses that again, with limits that only widen
 * (UTF-8, LITERAL+, ceilings): the same tree must come out. */
static void
check_round_trip(const struct imap_command *cmd, const struct imap_parser_limits *orig)
{
	struct imap_parser_limits l;
	struct imap_parser *p;
	struct buf text, a, b;
	bool ok = true;
	size_t n;

	buf_init(&text, 64 * 1024 * 1024);
	buf_printf(&text, "%s %s%s", cmd->tag, cmd->uid ? "UID " : "", cmd->name);
	for (size_t i = 0; i < cmd->nargs && ok; i++) {
		buf_append_byte(&text, ' ');
		ok = serialize_arg(&text, &cmd->args[i]);
	}
	buf_append_str(&text, "\r\n");
	if (!ok || text.err) {
		buf_deinit(&text);
		return;
	}
	l = *orig;
	l.max_line = IMAP_MAX_LINE;
	l.max_command = 64 * 1024 * 1024;
	l.max_literal = l.max_append_literal = l.max_nonsync_literal = UINT64_MAX;
	l.stream_literal_min = 0;
	l.max_depth = IMAP_MAX_DEPTH;
	l.max_args = IMAP_MAX_ARGS;
	l.utf8 = true;
	p = imap_parser_new(&l);
	if (imap_parser_feed(p, text.data, text.len, &n) != IMAP_PARSE_COMMAND || n != text.len) {
		fprintf(stderr, "round trip refused: %s (%s)\n", buf_cstr(&text),
		        imap_parser_error(p, NULL, NULL));
		abort();
	}
	buf_init(&a, 64 * 1024 * 1024);
	buf_init(&b, 64 * 1024 * 1024);
	dump_command(&a, cmd, false);
	dump_command(&b, imap_parser_command(p), false);
	if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) {
		fprintf(stderr, "round trip:\n%s\n%s\n", buf_cstr(&a), buf_cstr(&b));
		abort();
	}
	buf_deinit(&a);
	buf_deinit(&b);
	buf_deinit(&text);
	imap_parser_free(&p);
}

static void
dump_arg(struct buf *b, const struct imap_arg *a, unsigned int depth, bool flags)
{
	if (a->type != IMAP_ARG_LIST && !(a->flags & IMAP_ARG_FLAG_STREAMED)) {
		if (a->str == NULL || a->str[a->len] != '\0')
			abort();
		if (a->type != IMAP_ARG_LITERAL8 && memchr(a->str, '\0', a->len) != NULL)
			abort();
	}
	switch (a->type) {
	case IMAP_ARG_ATOM:
	case IMAP_ARG_NUMBER:
	case IMAP_ARG_NIL: {
		const char *s;

		if (a->len == 0 || imap_arg_get_atom(a, &s) != 0 || s != a->str)
			abort();
		if (a->type == IMAP_ARG_NUMBER && a->num > (uint64_t)INT64_MAX)
			abort();
		buf_printf(b, "%c:", a->type == IMAP_ARG_ATOM  ? 'A'
		                     : a->type == IMAP_ARG_NIL ? 'N'
		                                               : '#');
		if (flags)
			buf_printf(b, "%u:", a->flags);
		dump_bytes(b, a->str, a->len);
		if (flags)
			check_seqset(a);
		break;
	}
	case IMAP_ARG_QUOTED:
		buf_append_str(b, "Q:");
		dump_bytes(b, a->str, a->len);
		break;
	case IMAP_ARG_LITERAL:
	case IMAP_ARG_LITERAL8:
		buf_printf(b, "L%s%zu%s%s:", a->type == IMAP_ARG_LITERAL8 ? "8" : "", a->len,
		           flags && (a->flags & IMAP_ARG_FLAG_NONSYNC) ? "+" : "",
		           (a->flags & IMAP_ARG_FLAG_STREAMED) ? "S" : "");
		if (a->flags & IMAP_ARG_FLAG_STREAMED) {
			if (a->str != NULL)
				abort();
			buf_printf(b, "#%llu", (unsigned long long)a->num);
		} else {
			dump_bytes(b, a->str, a->len);
		}
		break;
	case IMAP_ARG_LIST:
		if (a->str != NULL || depth > IMAP_MAX_DEPTH)
			abort();
		buf_append_byte(b, '(');
		for (size_t i = 0; i < a->count; i++) {
			buf_append_byte(b, ' ');
			dump_arg(b, &a->list[i], depth + 1, flags);
		}
		buf_append_byte(b, ')');
		break;
	default:
		abort();
	}
}

struct run {
	struct imap_parser *p;
	struct imap_parser_limits limits;
	struct buf out;
	struct buf streamed[FUZZ_MAX_STREAMED];
	size_t pos;
	bool stop;
	bool check_round_trip; /* once per input is enough: the whole feed */
};

static void
event(struct run *r, const char *what)
{
	buf_printf(&r->out, "%s @%zu\n", what, r->pos);
}

/* Feeds one piece until it is consumed, the way a server does. */
static void
feed_piece(struct run *r, const uint8_t *piece, size_t len)
{
	size_t off = 0;

	while (off < len && !r->stop) {
		size_t n = SIZE_MAX;
		int ret = imap_parser_feed(r->p, piece + off, len - off, &n);
		const struct imap_literal_chunk *ch;
		const struct imap_command *cmd;

		if (n > len - off)
			abort();
		off += n;
		r->pos += n;
		if (imap_parser_mem_used(r->p) >
		    4 * r->limits.max_command + (size_t)r->limits.max_args * 256 + 65536)
			abort();
		switch (ret) {
		case IMAP_PARSE_MORE:
			if (off != len || imap_parser_command(r->p) != NULL)
				abort();
			break;
		case IMAP_PARSE_CONTINUATION:
			if (n == 0 || piece[off - 1] != '\n' || imap_parser_command(r->p) == NULL)
				abort();
			event(r, "+");
			break;
		case IMAP_PARSE_LITERAL_DATA:
			ch = imap_parser_literal_chunk(r->p);
			if (ch == NULL || ch->len == 0 || ch->len > n ||
			    ch->data + ch->len != piece + off || ch->offset + ch->len > ch->size ||
			    ch->last != (ch->offset + ch->len == ch->size))
				abort();
			if (ch->index < FUZZ_MAX_STREAMED) {
				if (ch->offset != r->streamed[ch->index].len)
					abort();
				(void)buf_append(&r->streamed[ch->index], ch->data, ch->len);
			}
			break;
		case IMAP_PARSE_COMMAND:
			cmd = imap_parser_command(r->p);
			if (cmd == NULL || n == 0 || piece[off - 1] != '\n' ||
			    cmd->tag[0] == '\0' || cmd->name[0] == '\0')
				abort();
			dump_command(&r->out, cmd, true);
			event(r, "");
			if (r->check_round_trip)
				check_round_trip(cmd, &r->limits);
			for (size_t i = 0; i < FUZZ_MAX_STREAMED; i++) {
				if (r->streamed[i].len == 0)
					continue;
				buf_printf(&r->out, "S%zu=", i);
				dump_bytes(&r->out, (const char *)r->streamed[i].data,
				           r->streamed[i].len);
				buf_append_byte(&r->out, '\n');
				buf_reset(&r->streamed[i]);
			}
			/* Until reset, the parser consumes nothing. */
			if (imap_parser_feed(r->p, piece + off, len - off, &n) !=
			        IMAP_PARSE_COMMAND ||
			    n != 0)
				abort();
			imap_parser_reset(r->p);
			break;
		case IMAP_PARSE_ERROR: {
			enum imap_parse_error code;
			bool fatal;
			const char *msg = imap_parser_error(r->p, &code, &fatal);
			const char *tag = imap_parser_tag(r->p);

			if (code == IMAP_PARSE_ERR_NONE || msg[0] == '\0' ||
			    imap_parser_command(r->p) != NULL ||
			    (code == IMAP_PARSE_ERR_LINE_TOO_LONG && !fatal))
				abort();
			buf_printf(&r->out, "E %s %d %d %s", tag != NULL ? tag : "*", (int)code,
			           (int)fatal, msg);
			event(r, "");
			for (size_t i = 0; i < FUZZ_MAX_STREAMED; i++)
				buf_reset(&r->streamed[i]);
			if (fatal)
				r->stop = true;
			else
				imap_parser_reset(r->p);
			break;
		}
		default:
			abort();
		}
	}
}

static void
run_init(struct run *r, uint8_t sel)
{
	memset(r, 0, sizeof(*r));
	limits_for(sel, &r->limits);
	r->p = imap_parser_new(&r->limits);
	buf_init(&r->out, 64 * 1024 * 1024);
	for (size_t i = 0; i < FUZZ_MAX_STREAMED; i++)
		buf_init(&r->streamed[i], 64 * 1024 * 1024);
}

static void
run_deinit(struct run *r)
{
	imap_parser_free(&r->p);
	buf_deinit(&r->out);
	for (size_t i = 0; i < FUZZ_MAX_STREAMED; i++)
		buf_deinit(&r->streamed[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, split;
	const uint8_t *in;
	size_t len, off = 0, k = 0;
	uint8_t sizes[4];

	if (size < 5)
		return 0;
	for (size_t i = 0; i < 4; i++)
		sizes[i] = (uint8_t)(data[1 + i] % 64 + 1);
	in = data + 5;
	len = size - 5;

	run_init(&whole, data[0]);
	whole.check_round_trip = true;
	feed_piece(&whole, in, len);

	run_init(&split, data[0]);
	while (off < len && !split.stop) {
		size_t want = sizes[k++ % 4]; /* not inside MIN(): it evaluates twice */
		size_t n = MIN(want, len - off);
		uint8_t *piece = malloc(n);

		if (piece == NULL)
			abort();
		memcpy(piece, in + off, n);
		feed_piece(&split, piece, n);
		free(piece);
		off += n;
	}
	if (whole.out.err || split.out.err || whole.out.len != split.out.len ||
	    (whole.out.len > 0 && memcmp(whole.out.data, split.out.data, whole.out.len) != 0)) {
		fprintf(stderr, "whole:\n%s\nsplit:\n%s\n", buf_cstr(&whole.out),
		        buf_cstr(&split.out));
		abort();
	}
	run_deinit(&whole);
	run_deinit(&split);
	return 0;
}
