/* Mailbox names between modified UTF-7 (RFC 3501 5.1.3) and UTF-8 (imap/imap_utf7.c): the RFC's
 * examples, surrogate pairs, "&", and every kind of malformed input refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "imap/imap_utf7.h"

static const struct {
	const char *utf8, *utf7;
} vectors[] = {
	{"INBOX", "INBOX"},
	{"", ""},
	{"Tom & Jerry", "Tom &- Jerry"},
	{"&", "&-"},
	{"~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
	 "~peter/mail/&U,BTFw-/&ZeVnLIqe-"}, /* RFC 3501 5.1.3 */
	{"Entw\xc3\xbcrfe", "Entw&APw-rfe"},
	{"\xc3\xa4\xc3\xb6\xc3\xbc", "&AOQA9gD8-"},
	{"\xf0\x9f\x93\xa7 Mail", "&2D3c5w- Mail"}, /* U+1F4E7: a surrogate pair */
	{"a\xe2\x82\xac&b", "a&IKw-&-b"},
};

static void
test_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		struct buf a, b;

		buf_init(&a, 4096);
		buf_init(&b, 4096);
		assert_int_equal(imap_utf8_to_utf7(vectors[i].utf8, &a), 0);
		assert_string_equal(buf_cstr(&a), vectors[i].utf7);
		assert_int_equal(imap_utf7_to_utf8(vectors[i].utf7, &b), 0);
		assert_string_equal(buf_cstr(&b), vectors[i].utf8);
		buf_deinit(&a);
		buf_deinit(&b);
	}
}

static void
test_bad_utf7(void **state)
{
	static const char *const bad[] = {
		"&",          /* not closed */
		"&U,BTFw",    /* not closed */
		"&U,BT!w-",   /* not in the alphabet */
		"&AGE-",      /* "a" must stand for itself */
		"&2D0-",      /* a lone high surrogate */
		"&3+c-",      /* a lone low surrogate */
		"&AOQ-x&AOQ", /* the second run not closed */
		"&AOQB-",     /* leftover bits that are not zero */
		"&AOQAAA-",   /* NUL */
		"a\xc3\xa4",  /* 8-bit octets */
		"a\tb",       /* control */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf b;

		buf_init(&b, 4096);
		if (imap_utf7_to_utf8(bad[i], &b) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		buf_deinit(&b);
	}
}

static void
test_bad_utf8(void **state)
{
	static const char *const bad[] = {
		"\xc0\xaf",         /* overlong "/" */
		"\xe0\x80\xaf",     /* overlong */
		"\xed\xa0\x80",     /* a surrogate */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"\xc3",             /* cut */
		"a\x01",            /* control */
		"\x80",             /* a continuation byte alone */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf b;

		buf_init(&b, 4096);
		if (imap_utf8_to_utf7(bad[i], &b) != -1)
			fail_msg("accepted case %zu", i);
		buf_deinit(&b);
	}
}

static void
test_long_name_round_trip(void **state)
{
	char name[4096];
	size_t len = 0;
	struct buf a, b;

	(void)state;
	/* 600 non-ASCII characters: longer than one encoder run. */
	for (int i = 0; i < 600; i++) {
		const char *c = i % 7 == 0 ? "x" : "\xc3\xa9";

		memcpy(name + len, c, strlen(c));
		len += strlen(c);
	}
	name[len] = '\0';
	buf_init(&a, 1 << 16);
	buf_init(&b, 1 << 16);
	assert_int_equal(imap_utf8_to_utf7(name, &a), 0);
	assert_int_equal(imap_utf7_to_utf8(buf_cstr(&a), &b), 0);
	assert_string_equal(buf_cstr(&b), name);
	buf_deinit(&a);
	buf_deinit(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_bad_utf7),
		cmocka_unit_test(test_bad_utf8),
		cmocka_unit_test(test_long_name_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
