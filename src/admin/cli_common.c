/* Helpers shared by the CLI commands. */
#include "admin/cli.h"
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void
cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("postamt: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

bool
cli_wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

struct cfg *
cli_load_config(const struct cli *cli)
{
	struct cfg *cfg = cfg_new();
	struct buf errors;

	buf_init(&errors, 1 << 20);
	if (cfg_load(cfg, cli->config_path, &errors) < 0 || cfg_check(cfg, &errors) < 0) {
		fputs(buf_cstr(&errors), stderr);
		buf_deinit(&errors);
		cfg_free(&cfg);
		return NULL;
	}
	buf_deinit(&errors);
	return cfg;
}

struct store *
cli_open_store(const struct cfg *cfg)
{
	struct store_options opts;
	struct store *store;
	const char *error;
	char *db = cfg_database_path(cfg), *blobs = xasprintf("%s/blobs", cfg->data_dir);

	if (mkdir(cfg->data_dir, 0750) < 0 && errno != EEXIST) {
		cli_error("cannot create %s: %s", cfg->data_dir, strerror(errno));
		free(db);
		free(blobs);
		return NULL;
	}
	memset(&opts, 0, sizeof(opts));
	opts.database = db;
	opts.blob_dir = blobs;
	opts.batch_max = (unsigned int)cfg->batch_max;
	opts.inline_max = cfg->inline_max;
	opts.blob_orphan_age = cfg->blob_orphan_age;
	opts.expunge_history = cfg->imap_expunge_history;
	opts.background = false;
	if (store_open(&opts, &store, &error) < 0) {
		cli_error("cannot open the store: %s", error);
		store = NULL;
	}
	free(db);
	free(blobs);
	return store;
}

void
cli_json_string(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

void
cli_format_time(int64_t t, char *out, size_t outsize)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	if (strftime(out, outsize, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		out[0] = '\0';
}
