/* The command-line interface: one function per command group, called from main.c with the
 * arguments after the group name. Each returns the process exit code (0 ok, 1 error, 2 usage).
 * Errors are printed as one line on stderr, "postamt: ...". */
#ifndef ADMIN_CLI_H
#define ADMIN_CLI_H

#include "core/config.h"
#include "store/store.h"

struct cli {
	const char *config_path; /* -c, $POSTAMT_CONFIG or the default */
};

int cli_init(struct cli *cli, int argc, char **argv);
int cli_serve(struct cli *cli, int argc, char **argv);
int cli_config(struct cli *cli, int argc, char **argv);
int cli_domain(struct cli *cli, int argc, char **argv);
int cli_user(struct cli *cli, int argc, char **argv);
int cli_alias(struct cli *cli, int argc, char **argv);
int cli_store(struct cli *cli, int argc, char **argv);
int cli_ban(struct cli *cli, int argc, char **argv);
int cli_queue(struct cli *cli, int argc, char **argv);

/* Helpers shared by the commands. */
ATTR_FORMAT(1, 2) void cli_error(const char *fmt, ...);
/* Loads and checks the configuration; prints every error and returns NULL on failure. */
struct cfg *cli_load_config(const struct cli *cli);
/* Opens the store for a command (no background threads). NULL after printing the error. */
struct store *cli_open_store(const struct cfg *cfg);
/* Writes s to stdout as a JSON string (quotes, backslashes and controls escaped). */
void cli_json_string(const char *s);
/* Formats seconds since the epoch as "2026-11-23T13:42:00Z". */
void cli_format_time(int64_t t, char *out, size_t outsize);
/* True when argv holds -h or --help. */
bool cli_wants_help(int argc, char **argv);

#endif
