/* `postamt queue list|show|stats|hold|release|delete|retry`: the outbound queue, read and changed in
 * the store while the server runs. Listing reads recipients in (queue id, recipient id) order
 * through an index chosen by the filter, with a limit, so it answers as fast with a million
 * entries as with ten. A change is a store job; the running queue runner sees it at its next
 * look (held entries are not read, retried ones are due now, deleted ones are gone; a delivery
 * already in progress finishes). An action by filter is a series of jobs of at most
 * STORE_MAX_QUEUE_CHUNK recipients each, so that the server's own writes wait only for one. */
#include "admin/cli.h"

#include "core/limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int
queue_usage(FILE *out)
{
	fprintf(out,
	        "usage: postamt [-c CONF] queue list [--json] [--limit N] [--after ID[:RCPT]] [FILTER]\n"
	        "       postamt [-c CONF] queue show ID [--json]\n"
	        "       postamt [-c CONF] queue hold|release|delete|retry [--json] ID...\n"
	        "       postamt [-c CONF] queue hold|release|delete|retry [--json] FILTER|--all\n"
	        "       postamt [-c CONF] queue stats [--json] [--top N]\n"
	        "FILTER, terms combined with AND (addresses and domains exact, any case):\n"
	        "  --sender ADDR     the envelope sender; '<>' or '' for the null sender\n"
	        "  --recipient ADDR  a recipient\n"
	        "  --domain DOMAIN   a recipient's domain\n"
	        "  --held            entries on hold\n"
	        "  --deferred        recipients tried and deferred\n"
	        "list shows one line per recipient, oldest queue entries first (default limit\n"
	        "100); when the limit cuts the list, it says which --after gives the next page.\n"
	        "hold keeps whole entries (messages) from delivery until release, also when the\n"
	        "filter names recipients; retry makes the matching recipients due now (held\n"
	        "entries stay held); delete removes without a bounce: the matching recipients\n"
	        "when the filter has --recipient, --domain or --deferred (an entry goes with its\n"
	        "last one), else the whole entries. --all acts on the whole queue. stats counts\n"
	        "recipients by priority class and state and lists the destination domains with\n"
	        "the most (default 10).\n");
	return out == stdout ? 0 : 2;
}

struct qlist {
	bool json, first;
	int64_t only; /* show: this queue id; 0 = all */
	unsigned int rows;
	int64_t last_id, last_rcpt; /* the last row printed */
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
	l->last_id = r->queue_id;
	l->last_rcpt = r->id;
	return 0;
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

static const char *const queue_actions[] = {"hold", "release", "retry", "delete"};

/* By id: all in one transaction, so that the running server's queue runner sees them together
 * (retried entries to one destination leave over one connection). An id that is not there is
 * reported; the others are still done. */
struct qchange {
	const int64_t *ids;
	size_t n;
	enum store_queue_action action;
	bool *missing;
	uint64_t done;
};

static int
job_qchange(struct store_txn *txn, void *ctx)
{
	struct qchange *c = ctx;
	int ret = STORE_OK;

	c->done = 0;
	for (size_t i = 0; i < c->n; i++) {
		switch (c->action) {
		case STORE_QUEUE_HOLD:
			ret = store_txn_queue_hold(txn, c->ids[i], true);
			break;
		case STORE_QUEUE_RELEASE:
			ret = store_txn_queue_hold(txn, c->ids[i], false);
			break;
		case STORE_QUEUE_DELETE:
			ret = store_txn_queue_remove(txn, c->ids[i]);
			break;
		default:
			ret = store_txn_queue_retry(txn, c->ids[i]);
			break;
		}
		c->missing[i] = ret == STORE_ERR_NOTFOUND;
		if (ret == STORE_ERR_NOTFOUND)
			continue;
		if (ret != STORE_OK)
			return ret;
		c->done++;
	}
	/* The running server's queue runner polls this: released and retried mail may sit
	 * behind where its reads have got to. */
	return c->done > 0 ? store_txn_meta_bump(txn, "queue_generation") : STORE_OK;
}

/* One chunk of an action by filter. */
struct qact {
	struct store_queue_filter filter;
	enum store_queue_action action;
	struct store_queue_act_result result;
};

static int
job_qact(struct store_txn *txn, void *ctx)
{
	struct qact *a = ctx;
	struct store_queue_filter f = a->filter;
	struct store_queue_act_result r = a->result;
	int ret = store_txn_queue_act(txn, &f, a->action, STORE_MAX_QUEUE_CHUNK, &r);

	if (ret == STORE_OK)
		ret = store_txn_meta_bump(txn, "queue_generation");
	/* Kept only when the chunk is: a failed job's changes are rolled back. */
	if (ret == STORE_OK) {
		a->filter = f;
		a->result = r;
	}
	return ret;
}

static void
print_act(enum store_queue_action action, bool json, uint64_t entries, uint64_t rcpts,
          uint64_t matched)
{
	if (json) {
		printf("{\"action\":\"%s\",\"matched\":%llu,\"entries\":%llu,\"recipients\":%llu}\n",
		       queue_actions[action], (unsigned long long)matched,
		       (unsigned long long)entries, (unsigned long long)rcpts);
		return;
	}
	switch (action) {
	case STORE_QUEUE_HOLD:
		printf("held %llu entries\n", (unsigned long long)entries);
		break;
	case STORE_QUEUE_RELEASE:
		printf("released %llu entries\n", (unsigned long long)entries);
		break;
	case STORE_QUEUE_RETRY:
		printf("due now: %llu recipients of %llu entries\n", (unsigned long long)rcpts,
		       (unsigned long long)entries);
		break;
	case STORE_QUEUE_DELETE:
		printf("deleted %llu recipients, %llu entries removed\n", (unsigned long long)rcpts,
		       (unsigned long long)entries);
		break;
	}
}

/* By filter: chunk after chunk, each its own job, until a chunk is not full. */
static int
queue_act_filter(struct store *store, const struct store_queue_filter *filter,
                 enum store_queue_action action, bool json)
{
	struct qact a;
	const char *error;

	memset(&a, 0, sizeof(a));
	a.filter = *filter;
	a.action = action;
	do {
		a.result.more = false;
		if (store_exec(store, job_qact, &a, &error) != STORE_OK) {
			cli_error("%s: %s (after %llu entries, %llu recipients)",
			          queue_actions[action], error, (unsigned long long)a.result.entries,
			          (unsigned long long)a.result.rcpts);
			return 1;
		}
	} while (a.result.more);
	print_act(action, json, a.result.entries, a.result.rcpts, a.result.matched);
	return 0;
}

static int
queue_act_ids(struct store *store, const int64_t *ids, size_t nids,
              enum store_queue_action action, bool json)
{
	struct qchange c = {ids, nids, action, xcalloc(nids + 1, sizeof(bool)), 0};
	uint64_t done = 0;
	const char *error;
	int ret = 0;

	if (store_exec(store, job_qchange, &c, &error) != STORE_OK) {
		cli_error("%s: %s", queue_actions[action], error);
		ret = 1;
	} else {
		done = c.done;
		for (size_t i = 0; i < nids; i++) {
			if (c.missing[i]) {
				cli_error("%s %lld: no queue entry %lld", queue_actions[action],
				          (long long)ids[i], (long long)ids[i]);
				ret = 1;
			}
		}
	}
	free(c.missing);
	if (json) {
		printf("{\"action\":\"%s\",\"entries\":%llu}\n", queue_actions[action],
		       (unsigned long long)done);
	} else if (action == STORE_QUEUE_RETRY) {
		printf("due now: %llu entries\n", (unsigned long long)done);
	} else if (action == STORE_QUEUE_DELETE) {
		printf("deleted %llu entries\n", (unsigned long long)done);
	} else {
		print_act(action, false, done, 0, 0);
	}
	return ret;
}

/* A filter option at argv[*i] (moving *i past its value): 1 taken, 0 not a filter option,
 * -1 a bad value (reported). */
static int
parse_filter(int argc, char **argv, int *i, struct store_queue_filter *f)
{
	const char *opt = argv[*i];
	const char **target = NULL;
	char *v;
	size_t len;

	if (strcmp(opt, "--held") == 0) {
		f->held = true;
		return 1;
	}
	if (strcmp(opt, "--deferred") == 0) {
		f->deferred = true;
		return 1;
	}
	if (strcmp(opt, "--sender") == 0)
		target = &f->sender;
	else if (strcmp(opt, "--recipient") == 0)
		target = &f->rcpt;
	else if (strcmp(opt, "--domain") == 0)
		target = &f->domain;
	else
		return 0;
	if (*i + 1 >= argc) {
		cli_error("%s: expected a value", opt);
		return -1;
	}
	v = argv[++*i];
	len = strlen(v);
	/* "<addr>" as in a reverse-path; "<>" is the null sender. */
	if (target != &f->domain && len >= 2 && v[0] == '<' && v[len - 1] == '>') {
		v[len - 1] = '\0';
		v++;
		len -= 2;
	}
	if (len == 0 && target != &f->sender) {
		cli_error("%s: expected a value", opt);
		return -1;
	}
	if (len > AUTH_MAX_ADDRESS) {
		cli_error("%s: too long", opt);
		return -1;
	}
	*target = v;
	return 1;
}

/* --after ID or ID:RCPT (a recipient row id, from the previous page). */
static int
parse_after(const char *s, struct store_queue_filter *f)
{
	const char *colon = strchr(s, ':');
	char id[32];
	uint64_t v;

	if (colon == NULL) {
		if (str_to_u64(s, &v) < 0 || v > INT64_MAX)
			return -1;
		f->after = (int64_t)v;
		f->after_rcpt = 0;
		return 0;
	}
	if ((size_t)(colon - s) >= sizeof(id))
		return -1;
	memcpy(id, s, (size_t)(colon - s));
	id[colon - s] = '\0';
	if (str_to_u64(id, &v) < 0 || v > INT64_MAX)
		return -1;
	f->after = (int64_t)v;
	if (str_to_u64(colon + 1, &v) < 0 || v == 0 || v > INT64_MAX)
		return -1;
	f->after_rcpt = (int64_t)v;
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

/* `queue list` and `queue show`. */
static int
queue_list(struct store *store, struct qlist *l, const struct store_queue_filter *filter,
           unsigned int limit)
{
	struct store_queue_filter f = *filter;
	int r, ret = 0;

	if (l->only != 0) {
		memset(&f, 0, sizeof(f));
		f.after = l->only - 1;
		f.until = l->only;
		limit = UINT32_MAX;
	}
	if (l->json)
		putchar('[');
	r = store_queue_find(store, &f, limit, print_rcpt, l);
	if (l->json)
		printf("]\n");
	if (r < 0) {
		cli_error("cannot read the queue: %s", store_err_str(r));
		ret = 1;
	} else if (l->only != 0 && l->rows == 0) {
		cli_error("no queue entry %lld", (long long)l->only);
		ret = 1;
	} else if (l->only == 0 && l->rows == limit && !l->json) {
		fprintf(stderr, "(limit of %u reached; the next page: --after %lld:%lld)\n", limit,
		        (long long)l->last_id, (long long)l->last_rcpt);
	}
	return ret;
}

static int
queue_stats_cmd(struct cli *cli, int argc, char **argv)
{
	unsigned int top = 10;
	struct store *store;
	struct cfg *cfg;
	bool json = false;
	int ret;

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

int
cli_queue(struct cli *cli, int argc, char **argv)
{
	struct qlist l = {false, true, 0, 0, 0, 0};
	struct store_queue_filter filter;
	unsigned int limit = 100;
	bool is_list, is_show, has_filter = false, all = false;
	struct store *store;
	struct cfg *cfg;
	const char *cmd;
	int64_t *ids;
	size_t nids = 0;
	int action = -1, ret = 2;

	if (cli_wants_help(argc, argv))
		return queue_usage(stdout);
	if (argc < 1)
		return queue_usage(stderr);
	cmd = argv[0];
	if (strcmp(cmd, "stats") == 0)
		return queue_stats_cmd(cli, argc, argv);
	for (size_t i = 0; i < N_ELEMENTS(queue_actions); i++) {
		if (strcmp(cmd, queue_actions[i]) == 0)
			action = (int)i;
	}
	is_list = strcmp(cmd, "list") == 0;
	is_show = strcmp(cmd, "show") == 0;
	if (action < 0 && !is_list && !is_show)
		return queue_usage(stderr);
	memset(&filter, 0, sizeof(filter));
	ids = xcalloc((size_t)argc, sizeof(*ids));
	for (int i = 1; i < argc; i++) {
		int64_t id;
		int r;

		if (strcmp(argv[i], "--json") == 0) {
			l.json = true;
		} else if (is_list && strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
			if (str_to_uint(argv[++i], &limit) < 0 || limit == 0) {
				cli_error("--limit: expected a positive number");
				goto out;
			}
		} else if (is_list && strcmp(argv[i], "--after") == 0 && i + 1 < argc) {
			if (parse_after(argv[++i], &filter) < 0) {
				cli_error("--after: expected a queue id, or ID:RCPT");
				goto out;
			}
		} else if (action >= 0 && strcmp(argv[i], "--all") == 0) {
			all = true;
		} else if (!is_show && (r = parse_filter(argc, argv, &i, &filter)) != 0) {
			if (r < 0)
				goto out;
			has_filter = true;
		} else if (!is_list && argv[i][0] != '-' && (!is_show || nids == 0)) {
			if (parse_id(argv[i], &id) < 0) {
				cli_error("%s: not a queue id", argv[i]);
				goto out;
			}
			ids[nids++] = id;
		} else {
			ret = queue_usage(stderr);
			goto out;
		}
	}
	if (is_show && nids == 0) {
		ret = queue_usage(stderr);
		goto out;
	}
	if (action >= 0 && nids == 0 && !has_filter && !all) {
		cli_error("queue %s: name queue ids, a filter (--sender, --recipient, --domain, "
		          "--held, --deferred) or --all", cmd);
		goto out;
	}
	if (action >= 0 && nids > 0 && (has_filter || all)) {
		cli_error("queue %s: either queue ids or a filter, not both", cmd);
		goto out;
	}
	ret = 1;
	cfg = cli_load_config(cli);
	if (cfg == NULL)
		goto out;
	store = cli_open_store(cfg);
	cfg_free(&cfg);
	if (store == NULL)
		goto out;
	if (is_show)
		l.only = ids[0];
	if (action < 0)
		ret = queue_list(store, &l, &filter, limit);
	else if (nids > 0)
		ret = queue_act_ids(store, ids, nids, (enum store_queue_action)action, l.json);
	else
		ret = queue_act_filter(store, &filter, (enum store_queue_action)action, l.json);
	store_close(&store);
out:
	free(ids);
	return ret;
}
