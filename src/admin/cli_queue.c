/* `postamt queue list|show|stats|hold|release|delete|retry`: the outbound queue, read and changed in
 * the store while the server runs. Listing reads recipients in queue-id order through an index
 * with a limit, so it answers as fast with a million entries as with ten. A change is a store
 * job; the running queue runner sees it at its next look (held entries are not read, retried
 * ones are due now, deleted ones are gone; a delivery already in progress finishes). */
#include "admin/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int
queue_usage(FILE *out)
{
	fprintf(out,
	        "usage: postamt [-c CONF] queue list [--json] [--limit N]\n"
	        "       postamt [-c CONF] queue show ID [--json]\n"
	        "       postamt [-c CONF] queue hold|release|delete|retry ID...\n"
	        "       postamt [-c CONF] queue stats [--json] [--top N]\n"
	        "list shows one line per recipient, oldest queue entries first (default limit\n"
	        "100). "
	        "hold keeps an entry from delivery until release; retry makes it\n"
	        "due now; delete removes it without a bounce. stats counts recipients by priority\n"
	        "class and state and lists the destination domains with the most (default 10).\n");
	return out == stdout ? 0 : 2;
}

struct qlist {
	bool json, first;
	int64_t only; /* show: this queue id; 0 = all */
	unsigned int rows;
};

static int
print_rcpt(const struct store_queue_rcpt *r, void *ctx)
{
	struct qlist *l = ctx;
	const char *state = r->held ? "held" :
	                    r->state == STORE_QUEUE_DEFERRED ? "deferred" : "queued";
	char created[32], next[32];

	if (l->only != 0 && r->queue_id != l->only)
		return 1; /* past the entry: stop */
	cli_format_time(r->created, created, sizeof(created));
	cli_format_time(r->next_attempt, next, sizeof(next));
	if (l->json) {
		printf("%s{\"id\":%lld,\"rcpt_id\":%lld,\"sender\":", l->first ? "" : ",",
		       (long long)r->queue_id, (long long)r->id);
		cli_json_string(r->sender);
		printf(",\"recipient\":");
		cli_json_string(r->rcpt);
		printf(",\"state\":\"%s\",\"priority\":%d,\"size\":%llu,\"attempts\":%u,"
		       "\"created\":\"%s\",\"next_attempt\":\"%s\",\"last_error\":",
		       state, r->priority, (unsigned long long)r->size, r->attempts, created, next);
		cli_json_string(r->last_error);
		putchar('}');
	} else {
		printf("%-8lld %-8s %8llu %s <%s> -> <%s> attempts=%u next=%s%s%s\n",
		       (long long)r->queue_id, state, (unsigned long long)r->size, created,
		       r->sender, r->rcpt, r->attempts, next, r->last_error[0] ? " error=" : "",
		       r->last_error);
	}
	l->first = false;
	l->rows++;
	return 0;
}

struct qchange {
	int64_t id;
	int kind; /* 0 hold, 1 release, 2 delete, 3 retry */
};

static int
job_qchange(struct store_txn *txn, void *ctx)
{
	struct qchange *c = ctx;

	switch (c->kind) {
	case 0:
		return store_txn_queue_hold(txn, c->id, true);
	case 1:
		return store_txn_queue_hold(txn, c->id, false);
	case 2:
		return store_txn_queue_remove(txn, c->id);
	default:
		return store_txn_queue_retry(txn, c->id);
	}
}

static int
parse_id(const char *s, int64_t *id_r)
{
	uint64_t v;

	if (str_to_u64(s, &v) < 0 || v == 0 || v > INT64_MAX)
		return -1;
	*id_r = (int64_t)v;
	return 0;
}

struct qstats_out {
	bool json, first;
	int64_t now;
};

static int
print_domain(const struct store_queue_domain *d, void *ctx)
{
	struct qstats_out *o = ctx;
	long long age = d->oldest > 0 ? (long long)(o->now - d->oldest) : 0;

	if (o->json) {
		printf("%s{\"domain\":", o->first ? "" : ",");
		cli_json_string(d->domain);
		printf(",\"recipients\":%llu,\"deferred\":%llu,\"oldest_seconds\":%lld}",
		       (unsigned long long)d->rcpts, (unsigned long long)d->deferred, age);
	} else {
		printf("  %-40s %8llu %8llu %10lld\n", d->domain, (unsigned long long)d->rcpts,
		       (unsigned long long)d->deferred, age);
	}
	o->first = false;
	return 0;
}

/* `queue stats`: counts by class and state, the busiest destinations, the oldest entry. */
static int
queue_stats(struct store *store, bool json, unsigned int top)
{
	static const char *const classes[STORE_QUEUE_PRIORITIES] = {"interactive", "normal",
	                                                            "bulk", "suspect"};
	struct qstats_out o = {json, true, (int64_t)time(NULL)};
	struct store_queue_stats st;
	uint64_t total[3] = {0, 0, 0};
	long long oldest;
	int ret;

	if (json)
		printf("{\"domains\":[");
	else
		printf("destination                              recipients deferred oldest(s)\n");
	ret = store_queue_stats(store, top, &st, print_domain, &o);
	if (ret < 0) {
		if (json)
			printf("]}\n");
		cli_error("cannot read the queue: %s", store_err_str(ret));
		return 1;
	}
	oldest = st.oldest > 0 ? (long long)(o.now - st.oldest) : 0;
	for (int p = 0; p < STORE_QUEUE_PRIORITIES; p++) {
		for (int k = 0; k < 3; k++)
			total[k] += st.rcpts[p][k];
	}
	if (json) {
		printf("],\"messages\":%llu,\"oldest_seconds\":%lld,\"classes\":{",
		       (unsigned long long)st.messages, oldest);
		for (int p = 0; p < STORE_QUEUE_PRIORITIES; p++)
			printf("%s\"%s\":{\"queued\":%llu,\"deferred\":%llu,\"held\":%llu}",
			       p > 0 ? "," : "", classes[p], (unsigned long long)st.rcpts[p][0],
			       (unsigned long long)st.rcpts[p][1], (unsigned long long)st.rcpts[p][2]);
		printf("},\"recipients\":{\"queued\":%llu,\"deferred\":%llu,\"held\":%llu}}\n",
		       (unsigned long long)total[0], (unsigned long long)total[1],
		       (unsigned long long)total[2]);
		return 0;
	}
	printf("\nclass         queued deferred     held\n");
	for (int p = 0; p < STORE_QUEUE_PRIORITIES; p++)
		printf("%-11s %8llu %8llu %8llu\n", classes[p], (unsigned long long)st.rcpts[p][0],
		       (unsigned long long)st.rcpts[p][1], (unsigned long long)st.rcpts[p][2]);
	printf("%-11s %8llu %8llu %8llu\n", "total", (unsigned long long)total[0],
	       (unsigned long long)total[1], (unsigned long long)total[2]);
	printf("\nmessages: %llu, oldest: %lld s\n", (unsigned long long)st.messages, oldest);
	return 0;
}

int
cli_queue(struct cli *cli, int argc, char **argv)
{
	static const char *const changes[] = {"hold", "release", "delete", "retry"};
	struct qlist l = {false, true, 0, 0};
	unsigned int limit = 100;
	struct store *store;
	struct cfg *cfg;
	const char *cmd, *error;
	int kind = -1, ret = 0;

	if (cli_wants_help(argc, argv))
		return queue_usage(stdout);
	if (argc < 1)
		return queue_usage(stderr);
	cmd = argv[0];
	if (strcmp(cmd, "stats") == 0) {
		unsigned int top = 10;
		bool json = false;

		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--json") == 0) {
				json = true;
			} else if (strcmp(argv[i], "--top") == 0 && i + 1 < argc) {
				if (str_to_uint(argv[++i], &top) < 0 || top == 0 || top > 10000) {
					cli_error("--top: expected a number from 1 to 10000");
					return 2;
				}
			} else {
				return queue_usage(stderr);
			}
		}
		cfg = cli_load_config(cli);
		if (cfg == NULL)
			return 1;
		store = cli_open_store(cfg);
		cfg_free(&cfg);
		if (store == NULL)
			return 1;
		ret = queue_stats(store, json, top);
		store_close(&store);
		return ret;
	}
	for (size_t i = 0; i < N_ELEMENTS(changes); i++) {
		if (strcmp(cmd, changes[i]) == 0)
			kind = (int)i;
	}
	if (kind < 0 && strcmp(cmd, "list") != 0 && strcmp(cmd, "show") != 0)
		return queue_usage(stderr);
	if (kind >= 0 && argc < 2)
		return queue_usage(stderr);
	if (kind < 0) {
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--json") == 0) {
				l.json = true;
			} else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc &&
			           strcmp(cmd, "list") == 0) {
				if (str_to_uint(argv[++i], &limit) < 0 || limit == 0) {
					cli_error("--limit: expected a positive number");
					return 2;
				}
			} else if (strcmp(cmd, "show") == 0 && l.only == 0 &&
			           parse_id(argv[i], &l.only) == 0) {
				continue;
			} else {
				return queue_usage(stderr);
			}
		}
		if (strcmp(cmd, "show") == 0 && l.only == 0)
			return queue_usage(stderr);
	} else {
		for (int i = 1; i < argc; i++) {
			int64_t id;

			if (parse_id(argv[i], &id) < 0) {
				cli_error("%s: not a queue id", argv[i]);
				return 2;
			}
		}
	}
	cfg = cli_load_config(cli);
	if (cfg == NULL)
		return 1;
	store = cli_open_store(cfg);
	if (store == NULL) {
		cfg_free(&cfg);
		return 1;
	}
	if (kind < 0) {
		int r;

		if (l.json)
			putchar('[');
		if (l.only != 0)
			r = store_queue_list(store, l.only - 1, STORE_QUEUE_PRIORITIES * 1000,
			                     print_rcpt, &l);
		else
			r = store_queue_list(store, 0, limit, print_rcpt, &l);
		if (l.json)
			printf("]\n");
		if (r < 0) {
			cli_error("cannot read the queue: %s", store_err_str(r));
			ret = 1;
		} else if (l.only != 0 && l.rows == 0) {
			cli_error("no queue entry %lld", (long long)l.only);
			ret = 1;
		}
	} else {
		for (int i = 1; i < argc; i++) {
			struct qchange c = {0, kind};

			(void)parse_id(argv[i], &c.id);
			if (store_exec(store, job_qchange, &c, &error) != STORE_OK) {
				cli_error("%s %s: %s", cmd, argv[i], error);
				ret = 1;
			}
		}
	}
	store_close(&store);
	cfg_free(&cfg);
	return ret;
}
