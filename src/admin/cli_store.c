/* `postamt store check|gc`: consistency check, garbage collection of message files and of
 * the expunge history. */
#include "admin/cli.h"

#include <stdio.h>
#include <string.h>

static int
store_usage(FILE *out)
{
	fprintf(out, "usage: postamt [-c CONF] store check\n"
	             "       postamt [-c CONF] store gc\n"
	             "check: verifies that every message's file exists with its size and that\n"
	             "       reference counts and UIDs are consistent; exit 1 on any problem.\n"
	             "gc:    removes message files that nothing references any more now, and\n"
	             "       forgets expunges older than imap.expunge_history, instead of waiting\n"
	             "       for the server's background pass.\n");
	return out == stdout ? 0 : 2;
}

int
cli_store(struct cli *cli, int argc, char **argv)
{
	struct cfg *cfg;
	struct store *store;
	struct buf report;
	int n;

	if (cli_wants_help(argc, argv))
		return store_usage(stdout);
	if (argc != 1 || (strcmp(argv[0], "check") != 0 && strcmp(argv[0], "gc") != 0))
		return store_usage(stderr);
	cfg = cli_load_config(cli);
	if (cfg == NULL)
		return 1;
	store = cli_open_store(cfg);
	cfg_free(&cfg);
	if (store == NULL)
		return 1;
	if (strcmp(argv[0], "gc") == 0) {
		int64_t rows;

		n = store_blob_gc(store);
		if (n >= 0)
			printf("%d message files removed\n", n);
		else
			cli_error("gc failed: %s", store_err_str(n));
		rows = store_expunged_prune(store);
		if (rows >= 0)
			printf("%lld expunges forgotten (older than imap.expunge_history)\n",
			       (long long)rows);
		else if (n >= 0)
			n = (int)rows;
	} else {
		buf_init(&report, 64 << 20);
		n = store_check(store, &report);
		fputs(buf_cstr(&report), stdout);
		if (n >= 0)
			printf("%d problems found\n", n);
		else
			cli_error("check failed: %s", store_err_str(n));
		buf_deinit(&report);
	}
	store_close(&store);
	return n == 0 || (n > 0 && strcmp(argv[0], "gc") == 0) ? 0 : 1;
}
