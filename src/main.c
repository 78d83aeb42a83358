/* postamt: one binary for the server and its administration.
 *
 *   postamt [-c CONF] COMMAND [ARGS...]
 *
 * The configuration file is -c CONF, else $POSTAMT_CONFIG, else /etc/postamt/postamt.conf. */
#include "admin/cli.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POSTAMT_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/postamt/postamt.conf"

static const struct {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);
	const char *summary;
} commands[] = {
	{"init", cli_init, "create a configuration, data folder and TLS certificate"},
	{"serve", cli_serve, "run the mail server in the foreground"},
	{"config", cli_config, "check or show the configuration"},
	{"domain", cli_domain, "add, list or remove local domains"},
	{"user", cli_user, "add, list, change the password of or remove accounts"},
	{"alias", cli_alias, "add, list or remove aliases and catch-alls"},
	{"store", cli_store, "check the store's consistency, collect unused message files"},
	{"ban", cli_ban, "list, add or remove bans of the guard against password guessing"},
	{"queue", cli_queue, "list, show, hold, release, delete or retry outbound mail"},
};

static int
usage(FILE *out)
{
	fprintf(out, "usage: postamt [-c CONF] COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < N_ELEMENTS(commands); i++)
		fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\n`postamt COMMAND --help` describes each command.\n"
	             "CONF defaults to $POSTAMT_CONFIG, else " DEFAULT_CONFIG ".\n");
	return out == stdout ? 0 : 2;
}

int
main(int argc, char **argv)
{
	struct cli cli;
	int i = 1;

	log_init("postamt");
	memset(&cli, 0, sizeof(cli));
	cli.config_path = getenv("POSTAMT_CONFIG");
	if (cli.config_path == NULL || cli.config_path[0] == '\0')
		cli.config_path = DEFAULT_CONFIG;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			cli.config_path = argv[++i];
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			return usage(stdout);
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("postamt %s\n", POSTAMT_VERSION);
			return 0;
		} else {
			cli_error("unknown option %s", argv[i]);
			return usage(stderr);
		}
	}
	if (i >= argc)
		return usage(stderr);
	for (size_t c = 0; c < N_ELEMENTS(commands); c++) {
		if (strcmp(argv[i], commands[c].name) == 0)
			return commands[c].run(&cli, argc - i - 1, argv + i + 1);
	}
	cli_error("unknown command %s", argv[i]);
	return usage(stderr);
}
