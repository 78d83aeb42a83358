/* `postamt config check|show|doc`. */
#include "admin/cli.h"

#include <stdio.h>
#include <string.h>

static int
config_usage(FILE *out)
{
	fprintf(out, "usage: postamt [-c CONF] config check\n"
	             "       postamt [-c CONF] config show [--verbose]\n"
	             "       postamt config doc\n"
	             "check: validates the file; errors are printed as file:line: message, exit 1.\n"
	             "show:  every setting with its effective value (--verbose: with descriptions).\n"
	             "doc:   the reference of all settings, as Markdown.\n");
	return out == stdout ? 0 : 2;
}

int
cli_config(struct cli *cli, int argc, char **argv)
{
	struct cfg *cfg;

	if (cli_wants_help(argc, argv))
		return config_usage(stdout);
	if (argc == 1 && strcmp(argv[0], "doc") == 0) {
		cfg_doc(stdout);
		return 0;
	}
	if (argc == 1 && strcmp(argv[0], "check") == 0) {
		cfg = cli_load_config(cli);
		if (cfg == NULL)
			return 1;
		printf("%s: OK\n", cli->config_path);
		cfg_free(&cfg);
		return 0;
	}
	if (argc >= 1 && strcmp(argv[0], "show") == 0 &&
	    (argc == 1 || (argc == 2 && strcmp(argv[1], "--verbose") == 0))) {
		cfg = cli_load_config(cli);
		if (cfg == NULL)
			return 1;
		cfg_show(cfg, stdout, argc == 2);
		cfg_free(&cfg);
		return 0;
	}
	return config_usage(stderr);
}
