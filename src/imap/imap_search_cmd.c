/* SEARCH (RFC 3501 6.4.4, ESEARCH RFC 4731, SEARCHRES RFC 5182, MODSEQ RFC 7162), SORT and
 * THREAD (RFC 5256): the commands around the engine of imap_search.c / imap_sort.c. Message
 * text is read from the files only when a key needs it, and not for the messages the full-text
 * index rules out (imap_search_index.c); one message at a time is held. */
#include "imap/imap_search.h"
#include "imap/imap_search_index.h"
#include "imap/imap_session.h"
#include "imap/imap_sort.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Reads message files for the engine: the last one read stays until the next read. */
struct reader {
	uint8_t *data;
	size_t len;
	size_t reads; /* files read, count */
};

struct msg_ctx {
	struct reader *reader;
	const char *blob_id;
};

static int
read_blob(void *ctx, bool head, const uint8_t **data_r, size_t *len_r)
{
	struct msg_ctx *m = ctx;
	struct reader *r = m->reader;

	free(r->data);
	r->data = NULL;
	r->len = 0;
	r->reads++;
	if ((head ? imap_search_read_head : imap_search_read_file)(m->blob_id, &r->data,
	                                                           &r->len) < 0)
		return -1;
	*data_r = r->data; /* NULL: gone meanwhile, matches as empty */
	*len_r = r->len;
	return 0;
}

static int
read_message(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	return read_blob(ctx, false, data_r, len_r);
}

/* Header keys, SORT and THREAD: only the header section is read. */
static int
read_header(void *ctx, const uint8_t **data_r, size_t *len_r)
{
	return read_blob(ctx, true, data_r, len_r);
}

/* Everything SEARCH, SORT and THREAD share: the view's messages as the engine sees them. */
struct corpus {
	struct imap_rows rows;
	struct imap_search_msg *msgs;
	struct msg_ctx *ctxs;
	struct reader reader;
};

static int
corpus_load(struct imap_session *s, struct corpus *c)
{
	int ret;

	memset(c, 0, sizeof(*c));
	ret = imap_rows_load(s, s->view->uids, s->view->count, &c->rows);
	if (ret < 0)
		return ret;
	c->msgs = xcalloc(c->rows.n + 1, sizeof(*c->msgs));
	c->ctxs = xcalloc(c->rows.n + 1, sizeof(*c->ctxs));
	for (size_t i = 0; i < c->rows.n; i++) {
		const struct imap_row *r = &c->rows.v[i];

		c->ctxs[i].reader = &c->reader;
		c->ctxs[i].blob_id = r->blob_id;
		c->msgs[i] = (struct imap_search_msg){
			.seq = r->seq,
			.uid = r->uid,
			.flags = r->flags,
			.keywords = r->keywords,
			.size = r->size,
			.internaldate = r->internaldate,
			.modseq = r->modseq,
			.read_message = read_message,
			.read_header = read_header,
			.ctx = &c->ctxs[i],
		};
	}
	return 0;
}

static void
corpus_free(struct corpus *c)
{
	imap_rows_free(&c->rows);
	free(c->msgs);
	free(c->ctxs);
	free(c->reader.data);
}

/* The saved result as ranges for the parser. */
static struct imap_seq_range *
saved_ranges(const struct imap_view *v, size_t *n_r)
{
	struct imap_seq_range *r = xmalloc((v->nsaved + 1) * sizeof(*r));
	size_t n = 0;

	for (size_t i = 0; i < v->nsaved; i++) {
		if (n > 0 && r[n - 1].hi + 1 == v->saved[i])
			r[n - 1].hi = v->saved[i];
		else
			r[n++] = (struct imap_seq_range){v->saved[i], v->saved[i]};
	}
	*n_r = n;
	return r;
}

/* Compiles the search keys at args; on failure the tagged response is sent. */
static struct imap_search *
compile(struct imap_session *s, const struct imap_arg *args, size_t nargs, bool sort)
{
	struct imap_view *v = s->view;
	struct imap_search_context ctx = {0};
	struct imap_search *prog;
	const char *error = "Invalid search";
	bool badcharset = false;
	struct imap_seq_range *saved;
	size_t nsaved = 0;

	ctx.max_seq = v->count;
	ctx.max_uid = v->count > 0 ? v->uids[v->count - 1] : 0;
	saved = saved_ranges(v, &nsaved);
	ctx.saved = saved;
	ctx.nsaved = nsaved;
	ctx.have_saved = true;
	ctx.require_charset = sort;
	prog = imap_search_parse(args, nargs, &ctx, &error, &badcharset);
	free(saved);
	if (prog == NULL && badcharset)
		imap_tagged(s, "NO", "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
	else if (prog == NULL)
		imap_tagged(s, "BAD", "%s", error);
	return prog;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs prog over the corpus: matches[] gets indexes into c->msgs. Messages the full-text index
 * rules out are not looked at. Returns the count or -1. */
static ssize_t
run(struct imap_session *s, struct imap_search *prog, struct corpus *c, size_t *matches)
{
	struct imap_search_stats stats;
	uint32_t *uids = xmalloc((c->rows.n + 1) * sizeof(*uids));
	bool *skip = xmalloc((c->rows.n + 1) * sizeof(*skip));
	uint64_t start = now_ms();
	size_t n = 0;
	ssize_t ret = 0;

	for (size_t i = 0; i < c->rows.n; i++)
		uids[i] = c->rows.v[i].uid;
	imap_search_prefilter(s, prog, uids, c->rows.n, skip, &stats);
	for (size_t i = 0; i < c->rows.n && ret >= 0; i++) {
		int m;

		if (skip[i])
			continue;
		m = imap_search_match(prog, &c->msgs[i]);
		if (m < 0)
			ret = -1;
		else if (m > 0)
			matches[n++] = i;
	}
	if (ret >= 0)
		ret = (ssize_t)n;
	free(uids);
	free(skip);
	if (imap_search_needs_message(prog))
		log_debug("sid=%s event=search mailbox=%lld messages=%zu index=%s indexed=%zu "
		          "unindexed=%zu skipped=%zu read=%zu ms=%llu",
		          net_conn_sid(s->conn), (long long)s->view->mailbox_id, c->rows.n,
		          stats.used ? "yes" : "no", stats.indexed, stats.unindexed, stats.skipped,
		          c->reader.reads, (unsigned long long)(now_ms() - start));
	return ret;
}

void
imap_cmd_search(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	struct imap_view *v = s->view;
	unsigned int ret_opts = 0;
	size_t consumed = 0, *matches;
	const char *error = "Invalid RETURN options";
	struct imap_search *prog;
	struct corpus c;
	uint64_t maxmod = 0;
	uint32_t *uids;
	ssize_t n;
	bool esearch;

	if (imap_search_parse_return(cmd->args, cmd->nargs, &ret_opts, &consumed, &error) < 0) {
		imap_tagged(s, "BAD", "%s", error);
		return;
	}
	esearch = consumed > 0 || s->rev2;
	if (s->rev2 && consumed == 0)
		ret_opts = IMAP_SEARCH_RETURN_ALL;
	prog = compile(s, cmd->args + consumed, cmd->nargs - consumed, false);
	if (prog == NULL)
		return;
	if (imap_search_uses_modseq(prog))
		s->condstore = true;
	if (corpus_load(s, &c) < 0) {
		imap_search_free(&prog);
		imap_tagged_store_error(s, STORE_ERR_IO, "SEARCH");
		return;
	}
	matches = xmalloc((c.rows.n + 1) * sizeof(*matches));
	n = run(s, prog, &c, matches);
	if (n < 0) {
		imap_tagged(s, "NO", "[UNAVAILABLE] A message could not be read, try again later");
		goto out;
	}
	uids = xmalloc(((size_t)n + 1) * sizeof(*uids));
	for (ssize_t i = 0; i < n; i++) {
		uids[i] = c.msgs[matches[i]].uid;
		maxmod = MAX(maxmod, c.msgs[matches[i]].modseq);
	}
	if (ret_opts & IMAP_SEARCH_RETURN_SAVE) {
		/* RFC 5182 2.1: MIN or MAX with SAVE keep only those. */
		free(v->saved);
		v->saved = xmalloc(((size_t)n + 1) * sizeof(*uids));
		v->nsaved = 0;
		v->have_saved = true;
		if ((ret_opts & (IMAP_SEARCH_RETURN_MIN | IMAP_SEARCH_RETURN_MAX)) &&
		    !(ret_opts & (IMAP_SEARCH_RETURN_ALL | IMAP_SEARCH_RETURN_COUNT))) {
			if ((ret_opts & IMAP_SEARCH_RETURN_MIN) && n > 0)
				v->saved[v->nsaved++] = uids[0];
			if ((ret_opts & IMAP_SEARCH_RETURN_MAX) && n > 1)
				v->saved[v->nsaved++] = uids[n - 1];
		} else {
			memcpy(v->saved, uids, (size_t)n * sizeof(*uids));
			v->nsaved = (size_t)n;
		}
	}
	if (!esearch) {
		imap_out(s, "* SEARCH");
		for (ssize_t i = 0; i < n; i++)
			imap_out(s, " %u", cmd->uid ? uids[i] : c.msgs[matches[i]].seq);
		if (imap_search_uses_modseq(prog) && n > 0)
			imap_out(s, " (MODSEQ %llu)", (unsigned long long)maxmod);
		imap_out(s, "\r\n");
	} else if (ret_opts != IMAP_SEARCH_RETURN_SAVE) {
		imap_out(s, "* ESEARCH (TAG ");
		imap_out_astring(s, cmd->tag);
		imap_out(s, ")%s", cmd->uid ? " UID" : "");
		if ((ret_opts & IMAP_SEARCH_RETURN_MIN) && n > 0)
			imap_out(s, " MIN %u", cmd->uid ? uids[0] : c.msgs[matches[0]].seq);
		if ((ret_opts & IMAP_SEARCH_RETURN_MAX) && n > 0)
			imap_out(s, " MAX %u", cmd->uid ? uids[n - 1] : c.msgs[matches[n - 1]].seq);
		if ((ret_opts & IMAP_SEARCH_RETURN_ALL) && n > 0) {
			imap_out(s, " ALL ");
			if (cmd->uid) {
				imap_out_uidset(&s->out, uids, (size_t)n);
			} else {
				uint32_t *seqs = xmalloc(((size_t)n + 1) * sizeof(*seqs));

				for (ssize_t i = 0; i < n; i++)
					seqs[i] = c.msgs[matches[i]].seq;
				imap_out_uidset(&s->out, seqs, (size_t)n);
				free(seqs);
			}
		}
		if (ret_opts & IMAP_SEARCH_RETURN_COUNT)
			imap_out(s, " COUNT %zd", n);
		if (imap_search_uses_modseq(prog) && n > 0)
			imap_out(s, " MODSEQ %llu", (unsigned long long)maxmod);
		imap_out(s, "\r\n");
	}
	free(uids);
	if (cmd->uid)
		(void)imap_view_sync(s, true);
	imap_tagged(s, "OK", "%sSEARCH completed", cmd->uid ? "UID " : "");
out:
	free(matches);
	corpus_free(&c);
	imap_search_free(&prog);
}

void
imap_cmd_sort(struct imap_session *s, bool thread)
{
	const struct imap_command *cmd = s->cmd;
	struct imap_sort_program sort;
	enum imap_thread_algorithm alg = IMAP_THREAD_REFERENCES;
	const char *error = "Invalid arguments";
	struct imap_search *prog;
	struct imap_search_msg *found;
	size_t *matches, *order;
	struct corpus c;
	ssize_t n;
	int ret;

	if (cmd->nargs < 3) {
		imap_tagged(s, "BAD", "Usage: %s %s charset keys", cmd->name,
		            thread ? "algorithm" : "(criteria)");
		return;
	}
	if (thread ? imap_thread_parse_algorithm(&cmd->args[0], &alg, &error) < 0
	           : imap_sort_parse(&cmd->args[0], &sort, &error) < 0) {
		imap_tagged(s, "BAD", "%s", error);
		return;
	}
	prog = compile(s, cmd->args + 1, cmd->nargs - 1, true);
	if (prog == NULL)
		return;
	if (corpus_load(s, &c) < 0) {
		imap_search_free(&prog);
		imap_tagged_store_error(s, STORE_ERR_IO, cmd->name);
		return;
	}
	matches = xmalloc((c.rows.n + 1) * sizeof(*matches));
	order = xmalloc((c.rows.n + 1) * sizeof(*order));
	found = xmalloc((c.rows.n + 1) * sizeof(*found));
	n = run(s, prog, &c, matches);
	ret = n < 0 ? -1 : 0;
	for (ssize_t i = 0; i < n; i++)
		found[i] = c.msgs[matches[i]];
	if (ret == 0 && !thread) {
		ret = imap_sort(&sort, found, (size_t)n, order);
		if (ret == 0) {
			imap_out(s, "* SORT");
			(void)imap_sort_write(&s->out, found, order, (size_t)n, cmd->uid);
			imap_out(s, "\r\n");
		}
	} else if (ret == 0) {
		imap_out(s, "* THREAD%s", n > 0 ? " " : "");
		ret = imap_thread(alg, found, (size_t)n, cmd->uid, &s->out);
		imap_out(s, "\r\n");
	}
	if (ret < 0) {
		imap_tagged(s, "NO", "[UNAVAILABLE] A message could not be read, try again later");
	} else {
		if (cmd->uid)
			(void)imap_view_sync(s, true);
		imap_tagged(s, "OK", "%s%s completed", cmd->uid ? "UID " : "", cmd->name);
	}
	free(found);
	free(order);
	free(matches);
	corpus_free(&c);
	imap_search_free(&prog);
}
