/* Fuzz target for IMAP SEARCH, SORT and THREAD (imap/imap_search.c, imap/imap_sort.c).
 *
 * Input: byte 0 picks the context (SEARCHRES available, charset required as in SORT, a time zone
 * offset); then search arguments up to the first NUL, which are parsed as "a SEARCH <args>"
 * (a CRLF is added; literals are continued); after the NUL, the text of a message. Arguments that
 * parse are compiled (after RETURN options) and the program is run against that message and
 * three fixed ones (a plain message, a message without text, one whose read fails): the result
 * must be 1, 0 or -1, -1 only when a read failed, and a program that does not need the text must
 * never read it. Then the message goes through SORT (every criterion) and both THREAD
 * algorithms with the fixed messages; the thread-list must be balanced and name every message
 * exactly once. abort() on any violation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap/imap_search.h"
#include "imap/imap_sort.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NMSG 4

struct fmsg {
	const uint8_t *text;
	size_t len;
	bool fail;
	int reads, head_reads;
	uint8_t *copy; /* what the last read handed out: freed by the next, as the server does */
};

/* Hands out a fresh copy of the message, or of its start up to the first empty line (as
 * much as the server's header read may give), so that ASan sees the engine use memory that a
 * later read freed. */
static int
read_copy(struct fmsg *f, bool head, const uint8_t **data_r, size_t *len_r)
{
	size_t len = f->len;

	if (f->fail)
		return -1;
	if (head) {
		for (size_t i = 0; i + 1 < f->len; i++) {
			if (f->text[i] == '\n' && (f->text[i + 1] == '\n' ||
			    (f->text[i + 1] == '\r' && i + 2 < f->len && f->text[i + 2] == '\n'))) {
				len = i + 1;
				break;
			}
		}
	}
	free(f->copy);
	f->copy = malloc(len + 1);
	if (f->copy == NULL)
		abort();
	if (len > 0)
		memcpy(f->copy, f->text, len);
	*data_r = f->text != NULL ? f->copy : NULL;
	*len_r = f->text != NULL ? len : 0;
	return 0;
}

static int
read_cb(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	struct fmsg *f = ctx;

	f->reads++;
	return read_copy(f, false, data_r, len_r);
}

static int
read_head_cb(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	struct fmsg *f = ctx;

	f->head_reads++;
	return read_copy(f, true, data_r, len_r);
}

static const char fixed_msg[] =
	"Date: Tue, 14 Jan 2020 23:30:00 -0800\r\n"
	"From: =?ISO-8859-1?Q?J=F6rg?= <joerg@example.org>\r\n"
	"To: a@example.com\r\n"
	"Subject: Re: [list] hello (fwd)\r\n"
	"Message-ID: <1@example.org>\r\n"
	"References: <0@example.org>\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-Transfer-Encoding: quoted-printable\r\n"
	"\r\n"
	"Gr=C3=BC=C3=9Fe\r\n";

/* The thread-list must be balanced and hold each number 1..n once. */
static void
check_threads(const struct buf *out, size_t n)
{
	unsigned int seen[NMSG + 1] = {0};
	int depth = 0;

	for (size_t i = 0; i < out->len; i++) {
		uint8_t c = out->data[i];

		if (c == '(') {
			depth++;
		} else if (c == ')') {
			if (--depth < 0)
				abort();
		} else if (c >= '0' && c <= '9') {
			unsigned int v = 0;

			while (i < out->len && out->data[i] >= '0' && out->data[i] <= '9')
				v = v * 10 + (unsigned int)(out->data[i++] - '0');
			i--;
			if (v == 0 || v > n)
				abort();
			seen[v]++;
		} else if (c != ' ') {
			abort();
		}
	}
	if (depth != 0)
		abort();
	for (size_t v = 1; v <= n; v++) {
		if (seen[v] != 1)
			abort();
	}
}

static void
run_sort_thread(struct imap_search_msg *msgs, size_t n)
{
	static const enum imap_sort_key keys[] = {
		IMAP_SORT_SUBJECT, IMAP_SORT_DATE, IMAP_SORT_FROM,        IMAP_SORT_TO,
		IMAP_SORT_CC,      IMAP_SORT_SIZE, IMAP_SORT_DISPLAYFROM, IMAP_SORT_DISPLAYTO,
		IMAP_SORT_ARRIVAL,
	};
	struct imap_sort_program prog;
	size_t order[NMSG];
	bool seen[NMSG] = {false};
	struct buf out;

	memset(&prog, 0, sizeof(prog));
	for (size_t i = 0; i < N_ELEMENTS(keys); i++) {
		prog.crit[i].key = keys[i];
		prog.crit[i].reverse = (i & 1) != 0;
	}
	prog.count = N_ELEMENTS(keys);
	if (imap_sort(&prog, msgs, n, order) != 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		if (order[i] >= n || seen[order[i]])
			abort();
		seen[order[i]] = true;
	}
	for (int alg = 0; alg < 2; alg++) {
		buf_init(&out, 1024 * 1024);
		if (imap_thread(alg == 0 ? IMAP_THREAD_ORDEREDSUBJECT : IMAP_THREAD_REFERENCES, msgs,
		                n, false, &out) != 0)
			abort();
		check_threads(&out, n);
		buf_deinit(&out);
	}
}

static void
run_search(const struct imap_command *cmd, const struct imap_search_context *ctx,
           struct imap_search_msg *msgs, struct fmsg *f)
{
	struct imap_search *s;
	const char *error = NULL;
	unsigned int ret_opts = 0;
	size_t skip = 0;
	bool badcs = false;

	if (imap_search_parse_return(cmd->args, cmd->nargs, &ret_opts, &skip, &error) < 0) {
		if (error == NULL)
			abort();
		return;
	}
	if (skip > cmd->nargs)
		abort();
	s = imap_search_parse(skip > 0 ? &cmd->args[skip] : cmd->args, cmd->nargs - skip, ctx, &error,
	                      &badcs);
	if (s == NULL) {
		if (error == NULL)
			abort();
		return;
	}
	for (size_t i = 0; i < NMSG; i++) {
		int r;

		f[i].reads = 0;
		f[i].head_reads = 0;
		r = imap_search_match(s, &msgs[i]);
		if (r < -1 || r > 1 || (r == -1 && !f[i].fail) || f[i].reads > 1 ||
		    f[i].head_reads > 1)
			abort();
		if (!imap_search_needs_message(s) && f[i].reads + f[i].head_reads != 0)
			abort();
	}
	(void)imap_search_uses_modseq(s);
	imap_search_free(&s);
	if (s != NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_search_context ctx;
	static const struct imap_seq_range saved[] = {{2, 3}, {7, 9}};
	struct imap_parser_limits l;
	struct imap_parser *p;
	struct fmsg f[NMSG];
	struct imap_search_msg msgs[NMSG];
	const uint8_t *sep;
	struct buf line;
	size_t off = 0, cmdlen;
	int ret;

	if (size < 1)
		return 0;
	memset(&ctx, 0, sizeof(ctx));
	ctx.max_seq = NMSG;
	ctx.max_uid = 10 * NMSG;
	ctx.have_saved = (data[0] & 1) != 0;
	ctx.saved = saved;
	ctx.nsaved = (data[0] & 2) ? N_ELEMENTS(saved) : 0;
	ctx.require_charset = (data[0] & 4) != 0;
	ctx.tz_offset_minutes = ((int)(data[0] >> 3) - 16) * 60;
	data++;
	size--;

	sep = memchr(data, 0, size);
	cmdlen = sep != NULL ? (size_t)(sep - data) : size;
	memset(f, 0, sizeof(f));
	f[0].text = sep != NULL ? sep + 1 : NULL;
	f[0].len = sep != NULL ? size - cmdlen - 1 : 0;
	f[1].text = (const uint8_t *)fixed_msg;
	f[1].len = sizeof(fixed_msg) - 1;
	f[3].fail = true;
	for (size_t i = 0; i < NMSG; i++) {
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].seq = (uint32_t)i + 1;
		msgs[i].uid = (uint32_t)(i + 1) * 3;
		msgs[i].flags = (uint32_t)i * 7 & 0x3F;
		msgs[i].keywords = i == 1 ? "$Junk work" : "";
		msgs[i].size = 100 * i;
		msgs[i].internaldate = (int64_t)1579000000 + (int64_t)i * 86400 - 2 * 86400;
		msgs[i].modseq = i * 10;
		msgs[i].read_message = read_cb;
		/* half of them offer the header read */
		msgs[i].read_header = i % 2 == 0 ? read_head_cb : NULL;
		msgs[i].ctx = &f[i];
	}

	buf_init(&line, 1024 * 1024);
	(void)buf_append_str(&line, "a SEARCH ");
	(void)buf_append(&line, data, cmdlen);
	if (cmdlen < 2 || data[cmdlen - 2] != '\r' || data[cmdlen - 1] != '\n')
		(void)buf_append_str(&line, "\r\n");
	imap_parser_limits_default(&l, true);
	l.utf8 = true;
	p = imap_parser_new(&l);
	do {
		size_t n = 0;

		ret = imap_parser_feed(p, line.data + off, line.len - off, &n);
		off += n;
	} while (ret == IMAP_PARSE_CONTINUATION || ret == IMAP_PARSE_LITERAL_DATA);
	if (ret == IMAP_PARSE_COMMAND)
		run_search(imap_parser_command(p), &ctx, msgs, f);
	imap_parser_free(&p);
	buf_deinit(&line);

	/* SORT and THREAD over the fuzzed message and the fixed ones (not the failing one) */
	run_sort_thread(msgs, NMSG - 1);
	for (size_t i = 0; i < NMSG; i++)
		free(f[i].copy);
	return 0;
}
