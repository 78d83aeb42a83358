/* core/config: defaults, "file:line: message" errors with the right line numbers for every kind
 * of mistake, duration/size/bool syntax, cfg_show -> cfg_load round trip, relative paths.
 * Files are written to a fresh folder under $POSTAMT_TEST_TMP (or /tmp). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/limits.h"

static char tmpdir[PATH_MAX];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	const char *base = getenv("POSTAMT_TEST_TMP");

	(void)state;
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	(void)mkdir(base, 0700); /* ctest's folder may not exist yet; EEXIST is fine */
	if (snprintf(tmpdir, sizeof(tmpdir), "%s/test_config.XXXXXX", base) >= (int)sizeof(tmpdir))
		return -1;
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes len bytes to tmpdir/name; returns the path (static, until the next call). */
static const char *
write_file(const char *name, const void *data, size_t len)
{
	static char path[PATH_MAX + 64];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

static const char *
write_str(const char *name, const char *text)
{
	return write_file(name, text, strlen(text));
}

/* ---- defaults ----------------------------------------------------------------------------- */

static void
test_defaults(void **state)
{
	struct cfg *cfg = cfg_new();
	struct buf errors;
	const char *path;

	(void)state;
	assert_string_equal(cfg->data_dir, "/var/lib/postamt");
	assert_string_equal(cfg->hostname, "");
	assert_true(cfg->io_threads == 0);
	assert_true(cfg->shutdown_grace == 30000);
	assert_string_equal(cfg->listen_smtp, "*:25");
	assert_string_equal(cfg->listen_imaps, "*:993");
	assert_string_equal(cfg->tls_min_version, "TLSv1.2");
	assert_true(cfg->idle_timeout == 300000);
	assert_true(cfg->max_output_buffer == 1024 * 1024);
	assert_string_equal(cfg->storage_engine, "sqlite");
	assert_true(cfg->batch_max == 256);
	assert_string_equal(cfg->password_scheme, "yescrypt");
	assert_true(cfg->auth_workers == 2);
	assert_true(cfg->auth_failure_delay == 2000);
	assert_string_equal(cfg->log_level, "info");

	/* An empty file (comments only) changes nothing. */
	path = write_str("empty.conf", "# nothing\n\n; also nothing\n   \n");
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), 0);
	assert_int_equal(errors.len, 0);
	assert_string_equal(cfg->data_dir, "/var/lib/postamt");
	assert_true(cfg->idle_timeout == 300000);
	buf_deinit(&errors);
	cfg_free(&cfg);
	assert_null(cfg);
	cfg_free(&cfg);
}

static void
test_missing_file(void **state)
{
	struct cfg *cfg = cfg_new();
	struct buf errors;
	char path[PATH_MAX + 32];

	(void)state;
	snprintf(path, sizeof(path), "%s/does-not-exist.conf", tmpdir);
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), -1);
	assert_non_null(strstr(buf_cstr(&errors), "cannot open"));
	buf_deinit(&errors);
	cfg_free(&cfg);
}

/* ---- errors ------------------------------------------------------------------------------- */

/* errors must hold exactly the lines "PATH:LINE: ...FRAGMENT..." in order. */
struct want_err {
	unsigned int line;
	const char *fragment; /* expected somewhere after "path:line: " */
};

static void
expect_errors(const char *errors, const char *path, const struct want_err *want, size_t nwant)
{
	const char *p = errors;
	size_t n = 0;

	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		char prefix[PATH_MAX + 96], line[1024];
		size_t len;

		assert_non_null(nl);
		len = (size_t)(nl - p);
		assert_true(len < sizeof(line));
		memcpy(line, p, len);
		line[len] = '\0';
		if (n >= nwant)
			fail_msg("unexpected error line: %s", line);
		snprintf(prefix, sizeof(prefix), "%s:%u: ", path, want[n].line);
		if (strncmp(line, prefix, strlen(prefix)) != 0 ||
		    strstr(line + strlen(prefix), want[n].fragment) == NULL)
			fail_msg("error %zu: got \"%s\", want \"%s...%s\"", n, line, prefix,
			         want[n].fragment);
		n++;
		p = nl + 1;
	}
	if (n != nwant)
		fail_msg("got %zu error lines, want %zu:\n%s", n, nwant, errors);
}

static void
test_errors_with_line_numbers(void **state)
{
	static const char text[] =
		"# every kind of mistake, one per line\n"      /* 1 */
		"hostname = early.example\n"                   /* 2: outside a section */
		"[nosuch]\n"                                   /* 3: unknown section */
		"[server]\n"                                   /* 4 */
		"hostname = mx.example.org\n"                  /* 5: fine */
		"no_such_setting = 1\n"                        /* 6: unknown setting */
		"this line has no equals sign\n"               /* 7: missing '=' */
		"shutdown_grace = 5 minutes\n"                 /* 8: bad duration */
		"io_threads = 100000\n"                        /* 9: out of range */
		"hostname = twice.example.org\n"               /* 10: duplicate */
		"[tls]\n"                                      /* 11 */
		"min_version = SSLv3\n"                        /* 12: bad enum */
		"[listen]\n"                                   /* 13 */
		"smtp = localhost\n"                           /* 14: bad address */
		"imap = [::1]143\n"                            /* 15: bad v6 address */
		"pop3 = *:0\n"                                 /* 16: bad port */
		"[limits]\n"                                   /* 17 */
		"max_output_buffer = 12Q\n"                    /* 18: bad size */
		"idle_timeout = 500ms\n"                       /* 19: below the minimum */
		"max_connections = -5\n"                       /* 20: not a number */
		"[server\n";                                   /* 21: bad section header */
	static const struct want_err want[] = {
		{2, "outside of a [section]"},
		{3, "unknown section [nosuch]"},
		{6, "unknown setting server.no_such_setting"},
		{7, "expected name = value"},
		{8, "server.shutdown_grace: not a duration"},
		{9, "server.io_threads: out of range (0 to 256)"},
		{10, "server.hostname set twice"},
		{12, "tls.min_version: must be one of: TLSv1.2|TLSv1.3"},
		{14, "listen.smtp: listen address must look like"},
		{15, "listen.imap: IPv6 listen address"},
		{16, "listen.pop3: listen port must be 1-65535"},
		{18, "limits.max_output_buffer: not a size"},
		{19, "limits.idle_timeout: out of range"},
		{20, "limits.max_connections: not a whole number"},
		{21, "bad section header"},
	};
	struct cfg *cfg = cfg_new();
	struct buf errors;
	const char *path = write_str("errors.conf", text);

	(void)state;
	buf_init(&errors, 16384);
	assert_int_equal(cfg_load(cfg, path, &errors), -1);
	expect_errors(buf_cstr(&errors), path, want, sizeof(want) / sizeof(want[0]));
	/* What parsed was applied; what failed kept its default. */
	assert_string_equal(cfg->hostname, "mx.example.org");
	assert_true(cfg->shutdown_grace == 30000);
	assert_string_equal(cfg->listen_smtp, "*:25");
	assert_string_equal(cfg->tls_min_version, "TLSv1.2");
	buf_deinit(&errors);
	cfg_free(&cfg);
}

static void
test_error_line_too_long(void **state)
{
	static const struct want_err want[] = {
		{3, "line longer than 4096 bytes"},
	};
	struct cfg *cfg = cfg_new();
	struct buf text, errors;
	const char *path;

	(void)state;
	buf_init(&text, 65536);
	assert_int_equal(buf_append_str(&text, "[server]\n# a comment\nhostname = "), 0);
	for (int i = 0; i < CFG_MAX_LINE; i++)
		assert_int_equal(buf_append_byte(&text, 'h'), 0);
	/* The rest of the long line is skipped, not read as the next line; numbering goes on. */
	assert_int_equal(buf_append_str(&text, " = [x]\nuser = mail\n"), 0);
	path = write_file("long.conf", text.data, text.len);
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), -1);
	expect_errors(buf_cstr(&errors), path, want, 1);
	assert_string_equal(cfg->user, "mail");
	assert_string_equal(cfg->hostname, "");
	buf_deinit(&errors);

	/* A line of exactly CFG_MAX_LINE bytes is fine. */
	buf_reset(&text);
	assert_int_equal(buf_append_str(&text, "[server]\nhostname = "), 0);
	while (text.len - strlen("[server]\n") < CFG_MAX_LINE)
		assert_int_equal(buf_append_byte(&text, 'h'), 0);
	assert_int_equal(buf_append_byte(&text, '\n'), 0);
	path = write_file("long-ok.conf", text.data, text.len);
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), 0);
	assert_int_equal(strlen(cfg->hostname), CFG_MAX_LINE - strlen("hostname = "));
	buf_deinit(&errors);
	buf_deinit(&text);
	cfg_free(&cfg);
}

static void
test_error_nul_byte(void **state)
{
	static const char text[] = "[server]\nhostname = a\0b\nuser = mail\n";
	static const struct want_err want[] = {
		{2, "NUL byte"},
	};
	struct cfg *cfg = cfg_new();
	struct buf errors;
	const char *path = write_file("nul.conf", text, sizeof(text) - 1);

	(void)state;
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), -1);
	expect_errors(buf_cstr(&errors), path, want, 1);
	assert_string_equal(cfg->user, "mail");
	assert_string_equal(cfg->hostname, "");
	buf_deinit(&errors);
	cfg_free(&cfg);
}

/* ---- value syntax ------------------------------------------------------------------------- */

static void
test_durations(void **state)
{
	static const struct {
		const char *s;
		int ret;
		uint64_t ms;
	} cases[] = {
		{"0", 0, 0},
		{"250ms", 0, 250},
		{"5s", 0, 5000},
		{"5", 0, 5000}, /* bare number = seconds */
		{"2m", 0, 120000},
		{"3h", 0, 3ULL * 3600 * 1000},
		{"1d", 0, 86400000},
		{"2w", 0, 2ULL * 7 * 86400000},
		{"", -1, 0},
		{"s", -1, 0},
		{"5x", -1, 0},
		{"5 s", -1, 0},
		{" 5s", -1, 0},
		{"-5s", -1, 0},
		{"+5s", -1, 0},
		{"1.5s", -1, 0},
		{"5S", -1, 0},
		{"5sec", -1, 0},
		{"18446744073709551615w", -1, 0}, /* multiplication would overflow */
		{"99999999999999999999", -1, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t ms = 0;
		int ret = cfg_parse_duration(cases[i].s, &ms);

		if (ret != cases[i].ret || (ret == 0 && ms != cases[i].ms))
			fail_msg("duration \"%s\": got %d/%llu", cases[i].s, ret, (unsigned long long)ms);
	}
}

static void
test_sizes(void **state)
{
	static const struct {
		const char *s;
		int ret;
		uint64_t bytes;
	} cases[] = {
		{"0", 0, 0},
		{"100", 0, 100},
		{"1K", 0, 1024},
		{"16K", 0, 16384},
		{"2M", 0, 2ULL << 20},
		{"3G", 0, 3ULL << 30},
		{"", -1, 0},
		{"K", -1, 0},
		{"1T", -1, 0},
		{"1 K", -1, 0},
		{"-1K", -1, 0},
		{"1.5M", -1, 0},
		{"18446744073709551615G", -1, 0},
	};
	bool b;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 0;
		int ret = cfg_parse_size(cases[i].s, &v);

		if (ret != cases[i].ret || (ret == 0 && v != cases[i].bytes))
			fail_msg("size \"%s\": got %d/%llu", cases[i].s, ret, (unsigned long long)v);
	}
	assert_int_equal(cfg_parse_bool("yes", &b), 0);
	assert_true(b);
	assert_int_equal(cfg_parse_bool("off", &b), 0);
	assert_false(b);
	assert_int_equal(cfg_parse_bool("maybe", &b), -1);
}

/* Units in a file end up as milliseconds and bytes in the struct. */
static void
test_units_in_file(void **state)
{
	struct cfg *cfg = cfg_new();
	struct buf errors;
	const char *path = write_str("units.conf",
	                             "[server]\nshutdown_grace = 1500ms\n"
	                             "[limits]\n  idle_timeout =  10m  \nhandshake_timeout = 45\n"
	                             "max_output_buffer = 64K\n"
	                             "[storage]\nblob_orphan_age = 2d\nblob_sweep_interval = 1w\n");

	(void)state;
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), 0);
	assert_true(cfg->shutdown_grace == 1500);
	assert_true(cfg->idle_timeout == 600000);
	assert_true(cfg->handshake_timeout == 45000);
	assert_true(cfg->max_output_buffer == 65536);
	assert_true(cfg->blob_orphan_age == 2ULL * 86400000);
	assert_true(cfg->blob_sweep_interval == 7ULL * 86400000);
	buf_deinit(&errors);
	cfg_free(&cfg);
}

/* ---- show / load round trip --------------------------------------------------------------- */

static char *
show(const struct cfg *cfg, bool descriptions, size_t *len_r)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len_r);

	assert_non_null(f);
	cfg_show(cfg, f, descriptions);
	assert_int_equal(fclose(f), 0);
	return text;
}

static void
roundtrip(const struct cfg *cfg, bool descriptions)
{
	struct cfg *again = cfg_new();
	struct buf errors;
	size_t len1, len2;
	char *text1 = show(cfg, descriptions, &len1), *text2;
	const char *path = write_file(descriptions ? "shown-doc.conf" : "shown.conf", text1, len1);

	buf_init(&errors, 4096);
	if (cfg_load(again, path, &errors) != 0)
		fail_msg("cfg_show output does not load:\n%s", buf_cstr(&errors));
	text2 = show(again, false, &len2);
	free(text1);
	text1 = show(cfg, false, &len1);
	assert_string_equal(text2, text1);
	free(text1);
	free(text2);
	buf_deinit(&errors);
	cfg_free(&again);
}

static void
test_show_roundtrip(void **state)
{
	static const char *const sets[][2] = {
		{"server.hostname", "mx.example.org"},
		{"server.data_dir", "/srv/postamt"},
		{"server.io_threads", "8"},
		{"server.shutdown_grace", "1500ms"},
		{"listen.smtp", "127.0.0.1:2525 [::1]:2525"},
		{"listen.pop3", ""},
		{"tls.cert", "/etc/postamt/cert.pem"},
		{"tls.min_version", "TLSv1.3"},
		{"limits.idle_timeout", "90"},
		{"limits.max_output_buffer", "1536K"},
		{"storage.blob_orphan_age", "36h"},
		{"auth.password_scheme", "bcrypt"},
		{"auth.failure_delay", "0"},
		{"log.level", "debug"},
	};
	struct cfg *cfg = cfg_new();
	const char *error;

	(void)state;
	roundtrip(cfg, false);
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		if (cfg_set(cfg, sets[i][0], sets[i][1], &error) < 0)
			fail_msg("cfg_set %s: %s", sets[i][0], error);
	}
	roundtrip(cfg, false);
	roundtrip(cfg, true);
	assert_int_equal(cfg_set(cfg, "server", "x", &error), -1);
	assert_int_equal(cfg_set(cfg, "server.nope", "x", &error), -1);
	assert_int_equal(cfg_set(cfg, "limits.idle_timeout", "1ms", &error), -1);
	cfg_free(&cfg);
}

/* ---- relative paths ----------------------------------------------------------------------- */

static void
test_relative_paths(void **state)
{
	struct cfg *cfg = cfg_new();
	struct buf errors;
	char want[PATH_MAX + 64], *db;
	const char *path = write_str("paths.conf", "[server]\ndata_dir = data\n"
	                                           "[tls]\ncert = certs/fullchain.pem\n"
	                                           "key = /etc/ssl/private/key.pem\n"
	                                           "[storage]\ndatabase = \n");

	(void)state;
	buf_init(&errors, 4096);
	assert_int_equal(cfg_load(cfg, path, &errors), 0);
	snprintf(want, sizeof(want), "%s/data", tmpdir);
	assert_string_equal(cfg->data_dir, want);
	snprintf(want, sizeof(want), "%s/certs/fullchain.pem", tmpdir);
	assert_string_equal(cfg->tls_cert, want);
	assert_string_equal(cfg->tls_key, "/etc/ssl/private/key.pem"); /* absolute: as written */
	db = cfg_database_path(cfg);
	snprintf(want, sizeof(want), "%s/data/postamt.db", tmpdir);
	assert_string_equal(db, want);
	free(db);
	buf_deinit(&errors);
	cfg_free(&cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_with_line_numbers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_line_too_long, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_nul_byte, setup, teardown),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test_setup_teardown(test_units_in_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_show_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relative_paths, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
