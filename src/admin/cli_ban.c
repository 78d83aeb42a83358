/* `postamt ban list|add|remove`: the guard's bans, read and changed in the store. A running
 * server notices a change within a second (it polls the guard_generation counter). */
#include "admin/cli.h"
#include "guard/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int
ban_usage(FILE *out)
{
	fprintf(out,
	        "usage: postamt [-c CONF] ban list [--service smtp|imap|pop3] [--stale] [--json]\n"
	        "       postamt [-c CONF] ban add IP --service smtp|imap|pop3 --time DURATION "
	        "[--reason TEXT]\n"
	        "       postamt [-c CONF] ban remove IP [--service smtp|imap|pop3]\n"
	        "IPv6 addresses are banned per /64. --stale lists devices that keep using an old\n"
	        "password (slowed down, never banned). Changes reach a running server within a\n"
	        "second.\n");
	return out == stdout ? 0 : 2;
}

struct list_ctx {
	const char *service;
	bool json, first;
	int64_t now;
};

static int
print_ban(const struct store_ban *b, void *ctx)
{
	struct list_ctx *c = ctx;
	char until[32];

	if (b->until <= c->now || (c->service != NULL && strcmp(c->service, b->service) != 0))
		return 0;
	cli_format_time(b->until, until, sizeof(until));
	if (c->json) {
		printf("%s{\"ip\":", c->first ? "" : ",");
		cli_json_string(b->ip);
		printf(",\"service\":\"%s\",\"until\":\"%s\",\"failures\":%u,\"strikes\":%u,\"reason\":",
		       b->service, until, b->failures, b->strikes);
		cli_json_string(b->reason);
		putchar('}');
	} else {
		printf("%-40s %-5s until %s  failures=%u strikes=%u reason=%s\n", b->ip, b->service,
		       until, b->failures, b->strikes, b->reason);
	}
	c->first = false;
	return 0;
}

static int
print_stale(const struct store_stale *s, void *ctx)
{
	struct list_ctx *c = ctx;
	char since[32], last[32];

	if (c->service != NULL && strcmp(c->service, s->service) != 0)
		return 0;
	cli_format_time(s->since, since, sizeof(since));
	cli_format_time(s->last, last, sizeof(last));
	if (c->json) {
		printf("%s{\"user\":", c->first ? "" : ",");
		cli_json_string(s->user);
		printf(",\"ip\":");
		cli_json_string(s->ip);
		printf(",\"service\":\"%s\",\"attempts\":%u,\"since\":\"%s\",\"last\":\"%s\"}",
		       s->service, s->attempts, since, last);
	} else {
		printf("%-30s %-40s %-5s attempts=%u since %s last %s\n", s->user, s->ip, s->service,
		       s->attempts, since, last);
	}
	c->first = false;
	return 0;
}

struct ban_change {
	struct store_ban ban;
	const char *service; /* remove: NULL = all services */
	bool add;
};

static int
job_ban_change(struct store_txn *txn, void *ctx)
{
	struct ban_change *ch = ctx;
	int ret;

	if (ch->add)
		ret = store_txn_ban_set(txn, &ch->ban);
	else
		ret = store_txn_ban_remove(txn, ch->ban.ip, ch->service);
	if (ret != STORE_OK)
		return ret;
	return store_txn_meta_bump(txn, "guard_generation");
}

int
cli_ban(struct cli *cli, int argc, char **argv)
{
	const char *service = NULL, *time_arg = NULL, *reason = "manual", *ip = NULL, *error;
	bool stale = false, json = false;
	struct cfg *cfg;
	struct store *store;
	enum guard_service svc;
	int ret = 0;

	if (cli_wants_help(argc, argv))
		return ban_usage(stdout);
	if (argc < 1)
		return ban_usage(stderr);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--service") == 0 && i + 1 < argc)
			service = argv[++i];
		else if (strcmp(argv[i], "--time") == 0 && i + 1 < argc)
			time_arg = argv[++i];
		else if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc)
			reason = argv[++i];
		else if (strcmp(argv[i], "--stale") == 0)
			stale = true;
		else if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (argv[i][0] != '-' && ip == NULL)
			ip = argv[i];
		else
			return ban_usage(stderr);
	}
	if (service != NULL && guard_service_parse(service, &svc) < 0) {
		cli_error("--service must be smtp, imap or pop3");
		return 2;
	}
	cfg = cli_load_config(cli);
	if (cfg == NULL)
		return 1;
	store = cli_open_store(cfg);
	cfg_free(&cfg);
	if (store == NULL)
		return 1;

	if (strcmp(argv[0], "list") == 0 && ip == NULL) {
		struct list_ctx c = {service, json, true, (int64_t)time(NULL)};
		if (json)
			putchar('[');
		ret = stale ? store_stale_list(store, print_stale, &c) : store_ban_list(store, print_ban, &c);
		if (json)
			printf("]\n");
		if (ret < 0)
			cli_error("%s", store_err_str(ret));
		ret = ret < 0 ? 1 : 0;
	} else if ((strcmp(argv[0], "add") == 0 || strcmp(argv[0], "remove") == 0) && ip != NULL) {
		struct ban_change ch;
		bool add = strcmp(argv[0], "add") == 0;
		uint64_t ms = 0;

		memset(&ch, 0, sizeof(ch));
		ch.add = add;
		ch.service = service;
		if (guard_address_prefix(ip, ch.ban.ip, sizeof(ch.ban.ip)) < 0) {
			cli_error("not an IP address: %s", ip);
			ret = 1;
		} else if (add && (service == NULL || time_arg == NULL ||
		                   cfg_parse_duration(time_arg, &ms) < 0 || ms == 0)) {
			cli_error("ban add needs --service and --time (e.g. 10m, 2h, 7d)");
			ret = 2;
		} else {
			if (add) {
				(void)!str_copy(ch.ban.service, sizeof(ch.ban.service), service);
				(void)!str_copy(ch.ban.reason, sizeof(ch.ban.reason), reason);
				ch.ban.created = (int64_t)time(NULL);
				ch.ban.until = ch.ban.created + (int64_t)((ms + 999) / 1000);
				ch.ban.strikes = 1;
			}
			ret = store_exec(store, job_ban_change, &ch, &error);
			if (ret != STORE_OK) {
				cli_error("%s", error != NULL && error[0] ? error : store_err_str(ret));
				ret = 1;
			} else if (add) {
				char until[32];
				cli_format_time(ch.ban.until, until, sizeof(until));
				printf("banned %s on %s until %s\n", ch.ban.ip, service, until);
			} else {
				printf("unbanned %s on %s\n", ch.ban.ip, service ? service : "all services");
			}
		}
	} else {
		ret = ban_usage(stderr);
	}
	store_close(&store);
	return ret;
}
