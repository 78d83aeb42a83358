/* SMTP parser (smtp/smtp_parser.c): tables of command lines and mailboxes with the expected verb,
 * path, parameters and reply, and the DATA decoder checked against expected output and flags,
 * then fed again split at every offset and one octet at a time, which must not change anything
 * (the server reads whatever TCP delivers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_parser.h"

/* ---- commands ------------------------------------------------------------------------------ */

static const struct cmd_vec {
	const char *line;
	size_t len;          /* 0: strlen(line) */
	bool utf8;
	int ret;             /* 0 or -1 */
	enum smtp_verb verb; /* when ret == 0 */
	const char *path;    /* when ret == 0; NULL: not checked */
	const char *params;  /* "K=V|K" when ret == 0; NULL: none */
	const char *arg;     /* when ret == 0; NULL: not checked */
	const char *reply;   /* prefix of the reply when ret == -1 */
} cmd_vecs[] = {
	/* verbs, case, arguments */
	{"EHLO mx.example.org", 0, false, 0, SMTP_VERB_EHLO, NULL, NULL, "mx.example.org", NULL},
	{"ehlo mx.example.org", 0, false, 0, SMTP_VERB_EHLO, NULL, NULL, "mx.example.org", NULL},
	{"HeLo [192.0.2.1]", 0, false, 0, SMTP_VERB_HELO, NULL, NULL, "[192.0.2.1]", NULL},
	{"EHLO  a.b  ", 0, false, 0, SMTP_VERB_EHLO, NULL, NULL, "a.b", NULL},
	{"EHLO", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"EHLO ", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"HELO", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"DATA", 0, false, 0, SMTP_VERB_DATA, NULL, NULL, "", NULL},
	{"data ", 0, false, 0, SMTP_VERB_DATA, NULL, NULL, "", NULL},
	{"DATA x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"RSET", 0, false, 0, SMTP_VERB_RSET, NULL, NULL, "", NULL},
	{"RSET now", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"QUIT", 0, false, 0, SMTP_VERB_QUIT, NULL, NULL, "", NULL},
	{"QUIT please", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"STARTTLS", 0, false, 0, SMTP_VERB_STARTTLS, NULL, NULL, "", NULL},
	{"starttls x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"NOOP", 0, false, 0, SMTP_VERB_NOOP, NULL, NULL, "", NULL},
	{"NOOP anything at all", 0, false, 0, SMTP_VERB_NOOP, NULL, NULL, "anything at all", NULL},
	{"HELP MAIL", 0, false, 0, SMTP_VERB_HELP, NULL, NULL, "MAIL", NULL},
	{"VRFY user", 0, false, 0, SMTP_VERB_VRFY, NULL, NULL, "user", NULL},
	{"VRFY", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"EXPN list", 0, false, 0, SMTP_VERB_EXPN, NULL, NULL, "list", NULL},
	{"AUTH PLAIN AGFsaWNlAHNlY3JldA==", 0, false, 0, SMTP_VERB_AUTH, NULL, NULL,
	 "PLAIN AGFsaWNlAHNlY3JldA==", NULL},
	{"AUTH", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"XCLIENT ADDR=1.2.3.4", 0, false, 0, SMTP_VERB_UNKNOWN, NULL, NULL, "ADDR=1.2.3.4", NULL},
	{"MAILFROM:<a@b>", 0, false, 0, SMTP_VERB_UNKNOWN, NULL, NULL, NULL, NULL},
	{"GET / HTTP/1.1", 0, false, 0, SMTP_VERB_UNKNOWN, NULL, NULL, NULL, NULL},
	/* characters and empty lines */
	{"", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2"},
	{"    ", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2"},
	{"\t \t", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2"},
	{"  NOOP", 0, false, 0, SMTP_VERB_NOOP, NULL, NULL, "", NULL},
	{"NOOP\0x", 6, false, -1, 0, NULL, NULL, NULL, "500 5.5.2 Invalid characters in command"},
	{"NOOP \rx", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2 Invalid characters in command"},
	{"NOOP \nx", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2 Invalid characters in command"},
	{"NOOP \x1b[2J", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2 Invalid characters"},
	{"NOOP \x7f", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2 Invalid characters"},
	{"NOOP a\tb", 0, false, 0, SMTP_VERB_NOOP, NULL, NULL, "a\tb", NULL},
	{"MAIL FROM:<a\x01@b.c>", 0, false, -1, 0, NULL, NULL, NULL, "500 5.5.2"},
	/* MAIL */
	{"MAIL FROM:<alice@example.org>", 0, false, 0, SMTP_VERB_MAIL, "alice@example.org", NULL,
	 NULL, NULL},
	{"mail from:<alice@example.org>", 0, false, 0, SMTP_VERB_MAIL, "alice@example.org", NULL,
	 NULL, NULL},
	{"MAIL FROM: <alice@example.org>", 0, false, 0, SMTP_VERB_MAIL, "alice@example.org", NULL,
	 NULL, NULL},
	{"MAIL FROM:  <alice@example.org>", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<>", 0, false, 0, SMTP_VERB_MAIL, "", NULL, NULL, NULL},
	{"MAIL FROM:<> SIZE=1000 BODY=8BITMIME", 0, false, 0, SMTP_VERB_MAIL, "",
	 "SIZE=1000|BODY=8BITMIME", NULL, NULL},
	{"MAIL FROM:<a@b.c> SIZE=1000  SMTPUTF8 ", 0, false, 0, SMTP_VERB_MAIL, "a@b.c",
	 "SIZE=1000|SMTPUTF8", NULL, NULL},
	{"MAIL FROM:<a@b.c> ENVID=QQ+2Bx RET=HDRS", 0, false, 0, SMTP_VERB_MAIL, "a@b.c",
	 "ENVID=QQ+2Bx|RET=HDRS", NULL, NULL},
	{"MAIL FROM:<a@b.c> X-Y-1=z", 0, false, 0, SMTP_VERB_MAIL, "a@b.c", "X-Y-1=z", NULL, NULL},
	{"MAIL FROM:alice@example.org", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM: alice@example.org", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<alice@example.org", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c>SIZE=1", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL TO:<a@b.c>", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a..b@c.d>", 0, false, -1, 0, NULL, NULL, NULL,
	 "553 5.1.7 Bad sender address syntax"},
	{"MAIL FROM:<a@b.c> =x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> -K=x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> K=", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> K=a=b", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> K_1=x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> K=a\tb", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> K=\xc3\xa9", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"MAIL FROM:<a@b.c> K=\xc3\xa9", 0, true, 0, SMTP_VERB_MAIL, "a@b.c", "K=\xc3\xa9", NULL,
	 NULL},
	{"MAIL FROM:<a@b.c> A B C D E F G H I J K L M N O P", 0, false, 0, SMTP_VERB_MAIL, "a@b.c",
	 "A|B|C|D|E|F|G|H|I|J|K|L|M|N|O|P", NULL, NULL},
	{"MAIL FROM:<a@b.c> A B C D E F G H I J K L M N O P Q", 0, false, -1, 0, NULL, NULL, NULL,
	 "501 5.5.4 Too many parameters"},
	/* quoted local parts may hold '>' and spaces */
	{"MAIL FROM:<\"a> b\"@example.org> SIZE=1", 0, false, 0, SMTP_VERB_MAIL,
	 "\"a> b\"@example.org", "SIZE=1", NULL, NULL},
	{"MAIL FROM:<\"a\\\"b\"@example.org>", 0, false, 0, SMTP_VERB_MAIL,
	 "\"a\\\"b\"@example.org", NULL, NULL, NULL},
	/* source routes: accepted, dropped */
	{"MAIL FROM:<@a.example,@b.example:user@c.example>", 0, false, 0, SMTP_VERB_MAIL,
	 "user@c.example", NULL, NULL, NULL},
	{"RCPT TO:<@[IPv6:2001:db8::1]:user@c.example>", 0, false, 0, SMTP_VERB_RCPT,
	 "user@c.example", NULL, NULL, NULL},
	{"RCPT TO:<@a.example,@[192.0.2.1]:u@c.example>", 0, false, 0, SMTP_VERB_RCPT,
	 "u@c.example", NULL, NULL, NULL},
	{"RCPT TO:<@a..b:user@c.example>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	{"RCPT TO:<@a.example,b.example:u@c.example>", 0, false, -1, 0, NULL, NULL, NULL,
	 "553 5.1.3"},
	{"RCPT TO:<@[192.0.2.1]x:u@c.example>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	{"RCPT TO:<@[192.0.2.1:u@c.example>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	{"RCPT TO:<@a.example user@c.example>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	{"RCPT TO:<@a.example:>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	{"MAIL FROM:<@a.example:>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.7"},
	/* RCPT */
	{"RCPT TO:<bob@example.org>", 0, false, 0, SMTP_VERB_RCPT, "bob@example.org", NULL, NULL,
	 NULL},
	{"rcpt to: <bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org", 0,
	 false, 0, SMTP_VERB_RCPT, "bob@example.org",
	 "NOTIFY=SUCCESS,FAILURE|ORCPT=rfc822;bob@example.org", NULL, NULL},
	{"RCPT TO:<>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3 Bad address syntax"},
	{"RCPT TO:<postmaster>", 0, false, 0, SMTP_VERB_RCPT, "postmaster", NULL, NULL, NULL},
	{"RCPT TO:<PostMaster>", 0, false, 0, SMTP_VERB_RCPT, "PostMaster", NULL, NULL, NULL},
	{"MAIL FROM:<postmaster>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.7"},
	{"RCPT TO:<bob>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3 Bad address syntax"},
	{"RCPT TO:bob@example.org", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"RCPT FROM:<bob@example.org>", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"RCPT TO:<bob@-example.org>", 0, false, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	{"RCPT TO:<bob@[1.2.3.4]>", 0, false, 0, SMTP_VERB_RCPT, "bob@[1.2.3.4]", NULL, NULL,
	 NULL},
	/* SMTPUTF8 */
	{"RCPT TO:<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", 0, true, 0, SMTP_VERB_RCPT,
	 "j\xc3\xb6rg@b\xc3\xbc" "cher.example", NULL, NULL, NULL},
	{"RCPT TO:<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", 0, false, -1, 0, NULL, NULL, NULL,
	 "553 5.6.7"},
	{"RCPT TO:<j\xc0\xb6rg@example.org>", 0, true, -1, 0, NULL, NULL, NULL, "553 5.1.3"},
	/* BDAT, RFC 3030 */
	{"BDAT 1000", 0, false, 0, SMTP_VERB_BDAT, NULL, NULL, NULL, NULL},
	{"BDAT 0 LAST", 0, false, 0, SMTP_VERB_BDAT, NULL, NULL, NULL, NULL},
	{"bdat 12 last", 0, false, 0, SMTP_VERB_BDAT, NULL, NULL, NULL, NULL},
	{"BDAT 9223372036854775807 LAST", 0, false, 0, SMTP_VERB_BDAT, NULL, NULL, NULL, NULL},
	{"BDAT 9223372036854775808", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT 99999999999999999999999", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT LAST", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT -1", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT +1", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT 12x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT 12 LASTX", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
	{"BDAT 12 LAST x", 0, false, -1, 0, NULL, NULL, NULL, "501 5.5.4"},
};

/* Replies are whole lines: "ddd d.d.d text", no CR or LF. */
static void
check_reply_format(const char *reply)
{
	size_t n = strlen(reply);

	assert_true(n > 10);
	assert_null(strpbrk(reply, "\r\n"));
	assert_true(reply[0] >= '4' && reply[0] <= '5');
	assert_true(reply[1] >= '0' && reply[1] <= '9' && reply[2] >= '0' && reply[2] <= '9');
	assert_true(reply[3] == ' ' && reply[4] == reply[0] && reply[5] == '.');
}

static void
params_str(const struct smtp_cmd *cmd, char *dst, size_t size)
{
	size_t off = 0;

	dst[0] = '\0';
	for (size_t i = 0; i < cmd->nparams; i++) {
		const struct smtp_param *p = &cmd->params[i];
		int n = snprintf(dst + off, size - off, "%s%.*s%s%.*s", i > 0 ? "|" : "",
		                 (int)p->key.len, (const char *)p->key.p,
		                 p->value.len > 0 ? "=" : "", (int)p->value.len,
		                 (const char *)p->value.p);

		assert_true(n > 0 && (size_t)n < size - off);
		off += (size_t)n;
	}
}

static void
test_command_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cmd_vecs); i++) {
		const struct cmd_vec *v = &cmd_vecs[i];
		size_t len = v->len ? v->len : strlen(v->line);
		/* An exact-size copy: a read past the line's end is caught by ASan. */
		uint8_t *line = malloc(len ? len : 1);
		struct smtp_cmd cmd;
		const char *reply = NULL;
		int ret;

		assert_non_null(line);
		memcpy(line, v->line, len);
		ret = smtp_parse_command_utf8(line, len, v->utf8, &cmd, &reply);
		if (ret != v->ret)
			fail_msg("vector %zu \"%s\": ret %d, reply %s", i, v->line, ret,
			         reply ? reply : "-");
		if (ret < 0) {
			check_reply_format(reply);
			if (strncmp(reply, v->reply, strlen(v->reply)) != 0)
				fail_msg("vector %zu \"%s\": reply \"%s\", want \"%s\"", i, v->line,
				         reply, v->reply);
		} else {
			char params[512];

			assert_int_equal(cmd.verb, v->verb);
			if (v->path != NULL) {
				assert_int_equal(cmd.path.len, strlen(v->path));
				assert_memory_equal(cmd.path.p, v->path, cmd.path.len);
			}
			if (v->arg != NULL) {
				assert_int_equal(cmd.arg.len, strlen(v->arg));
				assert_memory_equal(cmd.arg.p, v->arg, cmd.arg.len);
			}
			params_str(&cmd, params, sizeof(params));
			assert_string_equal(params, v->params ? v->params : "");
		}
		free(line);
	}
}

static int
parse(const char *line, struct smtp_cmd *cmd, const char **reply_r)
{
	return smtp_parse_command((const uint8_t *)line, strlen(line), cmd, reply_r);
}

static void
test_command_fields(void **state)
{
	struct smtp_cmd cmd;
	const char *reply;
	const struct smtp_param *p;

	(void)state;
	assert_int_equal(smtp_parse_command(NULL, 0, &cmd, &reply), -1);
	assert_string_equal(reply, "500 5.5.2 Syntax error, empty command");
	assert_int_equal(parse("BDAT 9223372036854775807 LAST", &cmd, &reply), 0);
	assert_true(cmd.chunk_size == INT64_MAX);
	assert_true(cmd.last);
	assert_int_equal(parse("BDAT 0042", &cmd, &reply), 0);
	assert_true(cmd.chunk_size == 42);
	assert_false(cmd.last);

	assert_int_equal(parse("MAIL FROM:<a@b.c> size=10 SmtpUtf8", &cmd, &reply), 0);
	p = smtp_cmd_param(&cmd, "SIZE");
	assert_non_null(p);
	assert_int_equal(p->value.len, 2);
	assert_memory_equal(p->value.p, "10", 2);
	p = smtp_cmd_param(&cmd, "smtputf8");
	assert_non_null(p);
	assert_int_equal(p->value.len, 0);
	assert_null(smtp_cmd_param(&cmd, "BODY"));
	assert_null(smtp_cmd_param(&cmd, "SIZ"));

	/* smtp_parse_command() takes UTF-8: SMTPUTF8 may come in the same MAIL command. */
	assert_int_equal(parse("MAIL FROM:<\xc3\xa9@b.c> SMTPUTF8", &cmd, &reply), 0);
	assert_false(smtp_mailbox_is_valid(cmd.path, false));
	assert_true(smtp_mailbox_is_valid(cmd.path, true));
}

/* RFC 5321 4.5.3.1.3: 256 octets with the brackets. */
static void
test_command_path_length(void **state)
{
	char line[600], local[65], domain[300];
	struct smtp_cmd cmd;
	const char *reply;
	int n;

	(void)state;
	memset(local, 'l', 64);
	local[64] = '\0';
	/* 64 + 1 + 189 = 254 octets of mailbox, 256 with the brackets. */
	memset(domain, 0, sizeof(domain));
	for (size_t i = 0; i < 189; i++)
		domain[i] = (i % 50 == 49) ? '.' : 'd';
	n = snprintf(line, sizeof(line), "RCPT TO:<%s@%s>", local, domain);
	assert_true(n > 0 && (size_t)n < sizeof(line));
	assert_int_equal(smtp_parse_command((const uint8_t *)line, (size_t)n, &cmd, &reply), 0);
	assert_int_equal(cmd.path.len, 254);

	domain[189] = 'd';
	n = snprintf(line, sizeof(line), "RCPT TO:<%s@%s>", local, domain);
	assert_true(n > 0 && (size_t)n < sizeof(line));
	assert_int_equal(smtp_parse_command((const uint8_t *)line, (size_t)n, &cmd, &reply), -1);
	assert_string_equal(reply, "501 5.1.3 Path too long");
	n = snprintf(line, sizeof(line), "MAIL FROM:<%s@%s>", local, domain);
	assert_int_equal(smtp_parse_command((const uint8_t *)line, (size_t)n, &cmd, &reply), -1);
	assert_string_equal(reply, "501 5.1.7 Path too long");
	/* ... and without a closing bracket the scan stops there too. */
	memset(line, 'a', 500);
	memcpy(line, "MAIL FROM:<", 11);
	assert_int_equal(smtp_parse_command((const uint8_t *)line, 500, &cmd, &reply), -1);
	assert_string_equal(reply, "501 5.1.7 Path too long");
}

/* ---- mailboxes ----------------------------------------------------------------------------- */

static const struct mailbox_vec {
	const char *mailbox;
	bool utf8;
	bool valid;
} mailbox_vecs[] = {
	{"alice@example.org", false, true},
	{"a@b", false, true},
	{"first.last+tag@mail.example.co.uk", false, true},
	{"!#$%&'*+-/=?^_`{|}~@example.org", false, true},
	{"\"john doe\"@example.org", false, true},
	{"\"a\\\"b\\\\c\"@example.org", false, true},
	{"\"a.b..c.\"@example.org", false, true},
	{"\"\"@example.org", false, true},
	{"user@[192.0.2.1]", false, true},
	{"user@[IPv6:2001:db8::1]", false, true},
	{"user@[ipv6:::ffff:192.0.2.1]", false, true},
	{"user@xn--bcher-kva.example", false, true},
	{"user@a-b.c-d.e", false, true},
	{"user@123.example", false, true},
	{"j\xc3\xb6rg@example.org", true, true},
	{"\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", true, true},
	{"\"\xc3\xa9t\xc3\xa9\"@example.org", true, true},
	{"user@b\xc3\xbc" "cher.example", true, true},
	{"emoji\xf0\x9f\x98\x80@example.org", true, true},
	/* invalid */
	{"", false, false},
	{"alice", false, false},
	{"alice@", false, false},
	{"@example.org", false, false},
	{"a..b@example.org", false, false},
	{".a@example.org", false, false},
	{"a.@example.org", false, false},
	{"a b@example.org", false, false},
	{"a\"b@example.org", false, false},
	{"a@b@example.org", false, false},
	{"\"unterminated@example.org", false, false},
	{"\"a\"b@example.org", false, false},
	{"\"a\tb\"@example.org", false, false},
	{"\"a\\\x01\"@example.org", false, false},
	{"user@-example.org", false, false},
	{"user@example-.org", false, false},
	{"user@example..org", false, false},
	{"user@.example.org", false, false},
	{"user@example.org.", false, false},
	{"user@exa_mple.org", false, false},
	{"user@[192.0.2.256]", false, false},
	{"user@[192.0.2]", false, false},
	{"user@[2001:db8::1]", false, false},
	{"user@[IPv6:2001:db8::g]", false, false},
	{"user@[IPv6:1.2.3.4]", false, false},
	{"user@[x-tag:whatever]", false, false},
	{"user@[]", false, false},
	{"user@[192.0.2.1", false, false},
	{"user@[192.0.2.1]x", false, false},
	{"j\xc3\xb6rg@example.org", false, false},
	{"user@b\xc3\xbc" "cher.example", false, false},
	{"j\xc0\xb6rg@example.org", true, false},           /* overlong */
	{"a\xe0\x80\xaf@example.org", true, false},          /* overlong '/' */
	{"a\xed\xa0\x80@example.org", true, false},          /* surrogate */
	{"a\xf4\x90\x80\x80@example.org", true, false},      /* above U+10FFFF */
	{"a\xc3@example.org", true, false},                  /* truncated */
	{"a\x80@example.org", true, false},                  /* stray continuation */
	{"user@b\xc3.example", true, false},
	{"a\xe4\xbe@example.org", true, false},              /* truncated 3 octets */
	{"a\xe4\xbe\x41@example.org", true, false},
	{"a\xf0\x9f\x98\x41@example.org", true, false},
	{"\"\xc3\"@example.org", true, false},
	{"\"\xc3\xa9\"@example.org", false, false},
	{"user@[IPv6:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]", false,
	 false},
};

static void
test_mailbox_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(mailbox_vecs); i++) {
		const struct mailbox_vec *v = &mailbox_vecs[i];
		size_t len = strlen(v->mailbox);
		uint8_t *copy = malloc(len ? len : 1);
		bool got;

		assert_non_null(copy);
		memcpy(copy, v->mailbox, len);
		got = smtp_mailbox_is_valid((struct span){copy, len}, v->utf8);
		if (got != v->valid)
			fail_msg("mailbox %zu \"%s\" utf8=%d: got %d", i, v->mailbox, v->utf8, got);
		/* UTF-8 only ever widens what is accepted. */
		if (got)
			assert_true(smtp_mailbox_is_valid((struct span){copy, len}, true));
		free(copy);
	}
}

static void
test_mailbox_lengths(void **state)
{
	char m[400];
	size_t n;

	(void)state;
	/* a NUL must not cut an address literal short for inet_pton */
	assert_false(smtp_mailbox_is_valid((struct span){(const uint8_t *)"u@[192.0.2.1\0x]", 15},
	                                   false));
	assert_true(smtp_mailbox_is_valid((struct span){(const uint8_t *)"u@[192.0.2.1]", 13},
	                                  false));
	assert_false(smtp_mailbox_is_valid((struct span){(const uint8_t *)"u@a\0b", 6}, false));
	assert_false(smtp_mailbox_is_valid((struct span){NULL, 0}, true));

	/* local part: 64 octets ok, 65 not (RFC 5321 4.5.3.1.1) */
	memset(m, 'x', 64);
	memcpy(m + 64, "@example.org", 12);
	assert_true(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 76}, false));
	memset(m, 'x', 65);
	memcpy(m + 65, "@example.org", 12);
	assert_false(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 77}, false));
	/* a quoted local part counts its quotes */
	m[0] = '"';
	memset(m + 1, 'x', 62);
	memcpy(m + 63, "\"@example.org", 13);
	assert_true(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 76}, false));
	m[0] = '"';
	memset(m + 1, 'x', 63);
	memcpy(m + 64, "\"@example.org", 13);
	assert_false(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 77}, false));

	/* labels: 63 octets ok, 64 not */
	memcpy(m, "u@", 2);
	memset(m + 2, 'l', 63);
	memcpy(m + 65, ".org", 4);
	assert_true(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 69}, false));
	memset(m + 2, 'l', 64);
	memcpy(m + 66, ".org", 4);
	assert_false(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 70}, false));

	/* the whole mailbox: 254 octets ok (256 with the brackets), 255 not; so a 256-octet
	 * domain never passes */
	memcpy(m, "u@", 2);
	for (n = 2; n < 254; n++)
		m[n] = (n % 40 == 0) ? '.' : 'd';
	assert_true(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 254}, false));
	m[254] = 'd';
	assert_false(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 255}, false));
	for (n = 2; n < 258; n++)
		m[n] = (n % 40 == 0) ? '.' : 'd';
	assert_false(smtp_mailbox_is_valid((struct span){(uint8_t *)m, 258}, false));
}

/* ---- DATA ---------------------------------------------------------------------------------- */

struct data_result {
	struct buf out;
	size_t consumed;
	bool done;
	unsigned int flags;
	uint64_t size;
	unsigned int received;
	bool has_message_id, has_date, in_header;
};

/* Feeds in[0..len) in pieces: cuts[] are the offsets where a new call starts. Each call's output
 * is moved to r->out, as the server does, checking the documented bound of len + 1 per call. */
static void
data_run_cuts(const uint8_t *in, size_t len, uint64_t max_size, bool raw, const size_t *cuts,
              size_t ncuts, struct data_result *r)
{
	struct smtp_data d;
	struct buf stage;
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	buf_init(&r->out, len + 16);
	buf_init(&stage, len + 16);
	smtp_data_init(&d, max_size);
	for (size_t k = 0; k <= ncuts && !r->done; k++) {
		size_t end = k < ncuts ? cuts[k] : len, n;
		/* an exact-size copy of the piece, so ASan sees any read past it */
		uint8_t *piece = malloc(end - pos ? end - pos : 1);

		assert_non_null(piece);
		memcpy(piece, in + pos, end - pos);
		if (raw) {
			smtp_data_feed_raw(&d, piece, end - pos, &stage);
			n = end - pos;
		} else {
			n = smtp_data_feed(&d, piece, end - pos, &stage, &r->done);
		}
		free(piece);
		assert_true(n <= end - pos);
		assert_true(stage.len <= end - pos + 1);
		assert_int_equal(buf_append(&r->out, stage.data, stage.len), 0);
		buf_reset(&stage);
		r->consumed += n;
		if (!r->done)
			assert_int_equal(n, end - pos); /* everything is taken until the end */
		pos = end;
	}
	buf_deinit(&stage);
	r->flags = d.flags;
	r->size = d.size;
	r->received = d.received;
	r->has_message_id = d.has_message_id;
	r->has_date = d.has_date;
	r->in_header = d.in_header;
}

static void
data_result_same(const struct data_result *a, const struct data_result *b, const char *how)
{
	if (a->out.len != b->out.len ||
	    (a->out.len > 0 && memcmp(a->out.data, b->out.data, a->out.len) != 0) ||
	    a->consumed != b->consumed || a->done != b->done || a->flags != b->flags ||
	    a->size != b->size || a->received != b->received ||
	    a->has_message_id != b->has_message_id || a->has_date != b->has_date ||
	    a->in_header != b->in_header)
		fail_msg("%s differs from one call: out %zu/%zu consumed %zu/%zu done %d/%d "
		         "flags %#x/%#x received %u/%u", how, b->out.len, a->out.len,
		         b->consumed, a->consumed, b->done, a->done, b->flags, a->flags,
		         b->received, a->received);
}

/* One call, then every 2-way split, every 3-way split of short inputs, and one octet per call:
 * all must agree. Returns the one-call result. */
static void
data_check_splits(const uint8_t *in, size_t len, uint64_t max_size, bool raw,
                  struct data_result *one)
{
	struct data_result r;
	size_t *cuts = malloc((len + 1) * sizeof(*cuts));

	assert_non_null(cuts);
	data_run_cuts(in, len, max_size, raw, NULL, 0, one);
	for (size_t i = 0; i <= len; i++) {
		cuts[0] = i;
		data_run_cuts(in, len, max_size, raw, cuts, 1, &r);
		data_result_same(one, &r, "a 2-way split");
		buf_deinit(&r.out);
	}
	if (len <= 64) {
		for (size_t i = 0; i <= len; i++) {
			for (size_t j = i; j <= len; j++) {
				cuts[0] = i;
				cuts[1] = j;
				data_run_cuts(in, len, max_size, raw, cuts, 2, &r);
				data_result_same(one, &r, "a 3-way split");
				buf_deinit(&r.out);
			}
		}
	}
	for (size_t i = 0; i < len; i++)
		cuts[i] = i + 1;
	data_run_cuts(in, len, max_size, raw, cuts, len, &r);
	data_result_same(one, &r, "octet by octet");
	buf_deinit(&r.out);
	free(cuts);
}

#define ALL ((size_t)-1)
#define NOLIMIT UINT64_MAX

static const struct data_vec {
	const char *name;
	const char *in;
	size_t in_len;       /* 0: strlen */
	uint64_t max_size;
	const char *out;
	size_t out_len;      /* 0: strlen */
	size_t consumed;     /* ALL: the whole input */
	bool done;
	unsigned int flags;
	unsigned int received;
	bool has_message_id, has_date, in_header;
} data_vecs[] = {
	{"simple", "Subject: hi\r\n\r\nHello\r\n.\r\n", 0, NOLIMIT,
	 "Subject: hi\r\n\r\nHello\r\n", 0, ALL, true, 0, 0, false, false, false},
	{"dot-unstuffing", "A\r\n..B\r\n.C\r\n..\r\n...\r\n.\r\n", 0, NOLIMIT,
	 "A\r\n.B\r\nC\r\n.\r\n..\r\n", 0, ALL, true, 0, 0, false, false, true},
	{"empty message", ".\r\n", 0, NOLIMIT, "", 0, ALL, true, 0, 0, false, false, true},
	{"only an empty line", "\r\n.\r\n", 0, NOLIMIT, "\r\n", 0, ALL, true, 0, 0, false, false,
	 false},
	{"pipelined command after the end", "A\r\n.\r\nQUIT\r\n", 0, NOLIMIT, "A\r\n", 0, 6, true,
	 0, 0, false, false, true},
	{"end at once, then more", ".\r\n.\r\n", 0, NOLIMIT, "", 0, 3, true, 0, 0, false, false,
	 true},
	{"not ended yet", "A\r\n.\r", 0, NOLIMIT, "A\r\n", 0, ALL, false, 0, 0, false, false, true},
	{"bare LF", "A\nB\r\n.\r\n", 0, NOLIMIT, "A\nB\r\n", 0, ALL, true, SMTP_DATA_BARE_LF, 0,
	 false, false, true},
	{"bare CR", "A\rB\r\n.\r\n", 0, NOLIMIT, "A\rB\r\n", 0, ALL, true, SMTP_DATA_BARE_CR, 0,
	 false, false, true},
	{"LF.LF does not end", "x\n.\n", 0, NOLIMIT, "x\n.\n", 0, ALL, false, SMTP_DATA_BARE_LF, 0,
	 false, false, true},
	{"CR.CR does not end", "x\r.\r", 0, NOLIMIT, "x\r.\r", 0, ALL, false, SMTP_DATA_BARE_CR, 0,
	 false, false, true},
	{"LF.CRLF does not end", "x\n.\r\n", 0, NOLIMIT, "x\n.\r\n", 0, ALL, false,
	 SMTP_DATA_BARE_LF, 0, false, false, true},
	{"CRLF.LF does not end", "x\r\n.\nB\r\n.\r\n", 0, NOLIMIT, "x\r\n\nB\r\n", 0, ALL, true,
	 SMTP_DATA_BARE_LF, 0, false, false, true},
	{"CRLF.CR.CRLF does not end", "x\r\n.\r.\r\n.\r\n", 0, NOLIMIT, "x\r\n\r.\r\n", 0, ALL,
	 true, SMTP_DATA_BARE_CR, 0, false, false, true},
	{"CRLF.CRCRLF does not end", "x\r\n.\r\r\n.\r\n", 0, NOLIMIT, "x\r\n\r\r\n", 0, ALL, true,
	 SMTP_DATA_BARE_CR, 0, false, false, true},
	{"smuggling attempt", "a\r\n\n.\nMAIL FROM:<x@y>\r\n.\r\nRSET\r\n", 0, NOLIMIT,
	 "a\r\n\n.\nMAIL FROM:<x@y>\r\n", 0, 26, true, SMTP_DATA_BARE_LF, 0, false, false, true},
	{"CRCRLF ends a line", "x\r\r\n.\r\n", 0, NOLIMIT, "x\r\r\n", 0, ALL, true,
	 SMTP_DATA_BARE_CR, 0, false, false, true},
	{"size exactly at the limit", "0123456789\r\n.\r\n", 0, 12, "0123456789\r\n", 0, ALL, true,
	 0, 0, false, false, true},
	{"size over the limit", "0123456789ABCDEF\r\n.\r\n", 0, 10, "0123456789", 0, ALL, true,
	 SMTP_DATA_TOO_BIG, 0, false, false, true},
	{"limit hit on a held CR", "ab\r\n.\rc\r\n.\r\nNOOP\r\n", 0, 4, "ab\r\n", 0, 12, true,
	 SMTP_DATA_TOO_BIG | SMTP_DATA_BARE_CR, 0, false, false, true},
	{"received counting",
	 "Received: a\r\nreceived : b\r\n\tReceived: x\r\n Received: y\r\nRECEIVED:c\r\n"
	 "X-Received: d\r\nReceivedx: e\r\nReceived\r\nRe ceived: f\r\nReceived\t:g\r\n\r\n"
	 "Received: body\r\n.\r\n", 0, NOLIMIT, NULL, 0, ALL, true, 0, 4, false, false, false},
	{"stuffed header", "..Received: a\r\n.Received: b\r\n.\r\n", 0, NOLIMIT,
	 ".Received: a\r\nReceived: b\r\n", 0, ALL, true, 0, 1, false, false, true},
	{"message-id and date", "message-id: <x@y>\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	 "\r\n.\r\n", 0, NOLIMIT, NULL, 0, ALL, true, 0, 0, true, true, false},
	{"message-id and date in the body", "Subject: x\r\n\r\nMessage-ID: <x@y>\r\nDate: x\r\n"
	 ".\r\n", 0, NOLIMIT, NULL, 0, ALL, true, 0, 0, false, false, false},
	{"continuation is not a field", "Subject: x\r\n Date: y\r\n\tMessage-ID: z\r\n.\r\n", 0,
	 NOLIMIT, NULL, 0, ALL, true, 0, 0, false, false, true},
	{"Message-IDs and Dates", "Message-IDs: x\r\nDated: x\r\nDate\r\n.\r\n", 0, NOLIMIT, NULL,
	 0, ALL, true, 0, 0, false, false, true},
	{"8bit", "Subject: \xc3\xa9\r\n.\r\n", 0, NOLIMIT, "Subject: \xc3\xa9\r\n", 0, ALL, true,
	 SMTP_DATA_8BIT, 0, false, false, true},
	{"NUL", "A\0B\r\n.\r\n", 8, NOLIMIT, "A\0B\r\n", 5, ALL, true, SMTP_DATA_NUL, 0, false,
	 false, true},
	{"NUL after a dot", ".\0\r\n.\r\n", 7, NOLIMIT, "\0\r\n", 3, ALL, true, SMTP_DATA_NUL, 0,
	 false, false, true},
	/* Body lines: runs of text are taken whole. */
	{"body text", "S: x\r\n\r\nabc def\r\n..dot\r\nlast\r\n.\r\n", 0, NOLIMIT,
	 "S: x\r\n\r\nabc def\r\n.dot\r\nlast\r\n", 0, ALL, true, 0, 0, false, false, false},
	{"body NUL", "S: x\r\n\r\nab\0cd\r\n.\r\n", 18, NOLIMIT, "S: x\r\n\r\nab\0cd\r\n", 15,
	 ALL, true, SMTP_DATA_NUL, 0, false, false, false},
	{"body 8bit", "S: x\r\n\r\nab \xe9t\xe9\r\n.\r\n", 0, NOLIMIT,
	 "S: x\r\n\r\nab \xe9t\xe9\r\n", 0, ALL, true, SMTP_DATA_8BIT, 0, false, false, false},
	{"body bare LF and CR in text", "S: x\r\n\r\nab\ncd\ref\r\n.\r\n", 0, NOLIMIT,
	 "S: x\r\n\r\nab\ncd\ref\r\n", 0, ALL, true, SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR, 0,
	 false, false, false},
	{"limit inside a body run", "S: x\r\n\r\n0123456789\r\n.\r\nNOOP\r\n", 0, 12,
	 "S: x\r\n\r\n0123", 0, 23, true, SMTP_DATA_TOO_BIG, 0, false, false, false},
	{"limit at the end of a body run", "S: x\r\n\r\n0123\r\n.\r\n", 0, 14,
	 "S: x\r\n\r\n0123\r\n", 0, ALL, true, 0, 0, false, false, false},
	{"limit just past a body run", "S: x\r\n\r\n0123\r\n.\r\n", 0, 10,
	 "S: x\r\n\r\n01", 0, ALL, true, SMTP_DATA_TOO_BIG, 0, false, false, false},
};

static void
test_data_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(data_vecs); i++) {
		const struct data_vec *v = &data_vecs[i];
		size_t len = v->in_len ? v->in_len : strlen(v->in);
		struct data_result r;

		data_check_splits((const uint8_t *)v->in, len, v->max_size, false, &r);
		if (v->out != NULL) {
			size_t olen = v->out_len ? v->out_len : strlen(v->out);

			if (r.out.len != olen ||
			    (olen > 0 && memcmp(r.out.data, v->out, olen) != 0))
				fail_msg("%s: out \"%.*s\"", v->name, (int)r.out.len,
				         r.out.data ? (const char *)r.out.data : "");
		}
		if (r.consumed != (v->consumed == ALL ? len : v->consumed) || r.done != v->done ||
		    r.flags != v->flags || r.received != v->received ||
		    r.has_message_id != v->has_message_id || r.has_date != v->has_date ||
		    r.in_header != v->in_header)
			fail_msg("%s: consumed %zu done %d flags %#x received %u mid %d date %d "
			         "in_header %d", v->name, r.consumed, r.done, r.flags, r.received,
			         r.has_message_id, r.has_date, r.in_header);
		if (!(r.flags & SMTP_DATA_TOO_BIG))
			assert_true(r.size == r.out.len);
		buf_deinit(&r.out);
	}
}

/* RFC 5321 4.5.3.1.6: 998 octets of text are fine, 999 are not; a stuffed dot does not count. */
static void
test_data_line_length(void **state)
{
	static const struct {
		size_t text;
		bool stuffed;
		bool long_line;
	} cases[] = {
		{998, false, false}, {999, false, true}, {998, true, false}, {999, true, true},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		size_t n = 0, len = cases[i].text + 16;
		uint8_t *in = malloc(len);
		struct data_result r;

		assert_non_null(in);
		if (cases[i].stuffed) {
			in[n++] = '.';
			in[n++] = '.';
			memset(in + n, 'x', cases[i].text - 1);
			n += cases[i].text - 1;
		} else {
			memset(in, 'x', cases[i].text);
			n = cases[i].text;
		}
		memcpy(in + n, "\r\nok\r\n.\r\n", 9);
		n += 9;
		data_run_cuts(in, n, NOLIMIT, false, NULL, 0, &r);
		assert_true(r.done);
		assert_int_equal(r.consumed, n);
		assert_int_equal(!!(r.flags & SMTP_DATA_LONG_LINE), cases[i].long_line);
		assert_int_equal(r.out.len, cases[i].text + 6);
		buf_deinit(&r.out);
		/* the flag is the same fed in two pieces anywhere */
		for (size_t cut = 990; cut < n; cut++) {
			struct data_result s;

			data_run_cuts(in, n, NOLIMIT, false, &cut, 1, &s);
			assert_int_equal(s.flags, r.flags);
			buf_deinit(&s.out);
		}
		/* a bare CR counts as text */
		memset(in, 'x', 998);
		memcpy(in + 998, "\r\r\n.\r\n", 6);
		data_run_cuts(in, 1004, NOLIMIT, false, NULL, 0, &r);
		assert_int_equal(r.flags, SMTP_DATA_LONG_LINE | SMTP_DATA_BARE_CR);
		buf_deinit(&r.out);
		free(in);
	}
}

/* A large message past max_size: consumed to the terminator, output stops at the limit. */
static void
test_data_too_big(void **state)
{
	size_t len = 64 * 313, n = 0;
	uint8_t *in = malloc(len + 8);
	struct data_result r;

	(void)state;
	assert_non_null(in);
	while (n < len) {
		memcpy(in + n, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n",
		       64);
		n += 64;
	}
	memcpy(in + n, ".\r\nQUIT", 7);
	n += 7;
	data_run_cuts(in, n, 1000, false, NULL, 0, &r);
	assert_true(r.done);
	assert_int_equal(r.consumed, n - 4);
	assert_true(r.flags & SMTP_DATA_TOO_BIG);
	assert_int_equal(r.out.len, 1000);
	assert_memory_equal(r.out.data, in, 1000);
	assert_true(r.size == len);
	buf_deinit(&r.out);
	free(in);
}

static void
test_data_after_done(void **state)
{
	struct smtp_data d;
	struct buf out;
	bool done = false;

	(void)state;
	buf_init(&out, 64);
	smtp_data_init(&d, NOLIMIT);
	assert_int_equal(smtp_data_feed(&d, (const uint8_t *)"a\r\n.\r\n", 6, &out, &done), 6);
	assert_true(done);
	done = false;
	assert_int_equal(smtp_data_feed(&d, (const uint8_t *)"b\r\n", 3, &out, &done), 0);
	assert_true(done);
	assert_int_equal(out.len, 3);
	buf_deinit(&out);
}

/* BDAT chunks: no dots, no terminator, same accounting. */
static void
test_data_raw(void **state)
{
	static const char in[] = "Received: x\r\nDate: y\r\n\r\n.\r\n..\r\nbare\nlf\rcr\r\n.\r\n";
	struct data_result r;

	(void)state;
	data_check_splits((const uint8_t *)in, sizeof(in) - 1, NOLIMIT, true, &r);
	assert_false(r.done);
	assert_int_equal(r.out.len, sizeof(in) - 1);
	assert_memory_equal(r.out.data, in, sizeof(in) - 1);
	assert_int_equal(r.flags, SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR);
	assert_int_equal(r.received, 1);
	assert_true(r.has_date);
	assert_false(r.has_message_id);
	assert_false(r.in_header);
	assert_true(r.size == sizeof(in) - 1);
	buf_deinit(&r.out);

	/* a CRLF split between two chunks is not bare */
	data_check_splits((const uint8_t *)"a\r\nb\r\n", 6, NOLIMIT, true, &r);
	assert_int_equal(r.flags, 0);
	buf_deinit(&r.out);

	data_check_splits((const uint8_t *)"abcdef", 6, 4, true, &r);
	assert_int_equal(r.flags, SMTP_DATA_TOO_BIG);
	assert_int_equal(r.out.len, 4);
	assert_true(r.size == 6);
	buf_deinit(&r.out);
}

/* A pseudo-random mix of the interesting octets: every split must still agree. */
static void
test_data_random_splits(void **state)
{
	static const char alphabet[] = "\r\n.\r\n.a:R \0\x80";
	uint32_t seed = 12345;
	uint8_t in[48];

	(void)state;
	for (int round = 0; round < 200; round++) {
		struct data_result r;

		for (size_t i = 0; i < sizeof(in); i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = (uint8_t)alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		data_check_splits(in, sizeof(in), (uint64_t)(round % 40), false, &r);
		buf_deinit(&r.out);
		data_check_splits(in, sizeof(in), NOLIMIT, true, &r);
		buf_deinit(&r.out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_vectors),
		cmocka_unit_test(test_command_fields),
		cmocka_unit_test(test_command_path_length),
		cmocka_unit_test(test_mailbox_vectors),
		cmocka_unit_test(test_mailbox_lengths),
		cmocka_unit_test(test_data_vectors),
		cmocka_unit_test(test_data_line_length),
		cmocka_unit_test(test_data_too_big),
		cmocka_unit_test(test_data_after_done),
		cmocka_unit_test(test_data_raw),
		cmocka_unit_test(test_data_random_splits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
