/* Fuzz target for SMTP command lines and mailboxes (smtp/smtp_parser.c).
 *
 * The input is split at '\n' into lines, a trailing '\r' dropped as the server's line reader
 * does; each line is copied into a buffer of its exact size (so ASan sees a read past its end)
 * and parsed with utf8 off and on. Besides crashes and sanitizer reports it aborts when an
 * invariant breaks: a reply that is not one "5xx 5.x.x text" line, a span outside the line, a
 * MAIL/RCPT path that smtp_mailbox_is_valid() refuses, or something accepted without UTF-8 and
 * refused with it (UTF-8 only ever widens the grammar). The line is also checked as a mailbox. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parser.h"

/* Lines per input: more only slows the fuzzer down without reaching new code. */
#define FUZZ_MAX_LINES 64

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
check_reply(const char *reply)
{
	size_t n;

	if (reply == NULL)
		abort();
	n = strlen(reply);
	if (n < 11 || strpbrk(reply, "\r\n") != NULL || reply[0] != '5' || reply[3] != ' ' ||
	    reply[4] != '5' || reply[5] != '.')
		abort();
}

static void
check_cmd(const struct smtp_cmd *cmd, const uint8_t *line, size_t len, bool utf8)
{
	check_span(cmd->arg, line, len);
	check_span(cmd->path, line, len);
	if (cmd->nparams > SMTP_MAX_PARAMS)
		abort();
	for (size_t i = 0; i < cmd->nparams; i++) {
		check_span(cmd->params[i].key, line, len);
		check_span(cmd->params[i].value, line, len);
		if (cmd->params[i].key.len == 0 || smtp_cmd_param(cmd, "") != NULL)
			abort();
	}
	if (cmd->verb == SMTP_VERB_MAIL && cmd->path.len > 0 &&
	    !smtp_mailbox_is_valid(cmd->path, utf8))
		abort();
	if (cmd->verb == SMTP_VERB_RCPT && !smtp_mailbox_is_valid(cmd->path, utf8) &&
	    !span_eq_ci(cmd->path, "postmaster"))
		abort();
	if (cmd->verb == SMTP_VERB_BDAT && cmd->chunk_size > (uint64_t)INT64_MAX)
		abort();
}

static void
run_line(const uint8_t *line, size_t len)
{
	struct smtp_cmd a, b, c;
	const char *ra = NULL, *rb = NULL, *rc = NULL;
	int ret_a, ret_b, ret_c;
	bool va, vb;

	ret_a = smtp_parse_command_utf8(line, len, false, &a, &ra);
	ret_b = smtp_parse_command_utf8(line, len, true, &b, &rb);
	ret_c = smtp_parse_command(line, len, &c, &rc);
	if (ret_a < 0)
		check_reply(ra);
	else
		check_cmd(&a, line, len, false);
	if (ret_b < 0)
		check_reply(rb);
	else
		check_cmd(&b, line, len, true);
	/* UTF-8 only widens: what parses without it parses the same with it. */
	if (ret_a == 0 && (ret_b != 0 || a.verb != b.verb || a.path.p != b.path.p ||
	                   a.path.len != b.path.len || a.nparams != b.nparams))
		abort();
	/* smtp_parse_command() is the utf8 variant. */
	if (ret_c != ret_b || (ret_c < 0 && strcmp(rc, rb) != 0) ||
	    (ret_c == 0 && (c.verb != b.verb || c.path.len != b.path.len)))
		abort();

	va = smtp_mailbox_is_valid((struct span){line, len}, false);
	vb = smtp_mailbox_is_valid((struct span){line, len}, true);
	if ((va && !vb) || (vb && len > SMTP_MAX_PATH - 2))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t start = 0, lines = 0;

	while (start <= size && lines++ < FUZZ_MAX_LINES) {
		const uint8_t *nl = memchr(data + start, '\n', size - start);
		size_t end = nl != NULL ? (size_t)(nl - data) : size, len = end - start;
		uint8_t *line;

		if (len > 0 && data[start + len - 1] == '\r')
			len--;
		line = malloc(len > 0 ? len : 1);
		if (line == NULL)
			abort();
		if (len > 0)
			memcpy(line, data + start, len);
		run_line(line, len);
		free(line);
		if (nl == NULL)
			break;
		start = end + 1;
	}
	return 0;
}
