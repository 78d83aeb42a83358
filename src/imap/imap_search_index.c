/* The full-text index as SEARCH, SORT and THREAD use it: before a program with text keys runs,
 * the files of the mailbox that are not indexed yet are indexed (at most
 * imap.search_index_budget bytes of them per command, so that the first search of a large
 * mailbox is not held up for minutes: the rest is read directly, as without an index, and
 * indexed by later searches); then the index names the messages that cannot match, and the
 * engine skips them. The engine stays the judge of every other message, so results are those
 * of a search without index. Nothing is indexed at delivery: SMTP does not pay for it.
 *
 * Threads: a worker (the command's), which may block on files and on store_exec. */
#include "imap/imap_search.h"
#include "imap/imap_search_index.h"
#include "imap/imap_session.h"

#include "core/log.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One store job indexes files until their raw size reaches this: each job is a commit, and it
 * holds the writer (and the deliveries batched with it) while FTS5 takes the text in. */
#define INDEX_JOB_BYTES (1024 * 1024)
/* ... or until it holds this many files. */
#define INDEX_JOB_FILES 64

int
imap_search_read_file(const char *blob_id, uint8_t **data_r, size_t *len_r)
{
	struct buf b;
	int ret;

	*data_r = NULL;
	*len_r = 0;
	buf_init(&b, SIZE_MAX / 2);
	ret = store_blob_read(imap_env.store, blob_id, &b);
	if (ret <= 0) {
		buf_deinit(&b);
		return ret == 0 ? 0 : -1; /* 0: gone meanwhile */
	}
	/* The caller owns the bytes (NUL-terminated like a file read into size + 1). */
	if (buf_append_byte(&b, 0) < 0) {
		buf_deinit(&b);
		return -1;
	}
	*data_r = b.data;
	*len_r = b.len - 1;
	return 0;
}

/* ---- indexing ------------------------------------------------------------------------------ */

struct pending {
	char (*ids)[33];
	size_t n, cap;
	uint64_t bytes;   /* raw size of the files listed */
	uint64_t budget;  /* bytes */
	size_t left;      /* files not listed: beyond the budget */
};

static int
pending_cb(const char *blob_id, uint64_t size, void *ctx)
{
	struct pending *p = ctx;

	if (size > p->budget - p->bytes || strlen(blob_id) != 32) {
		p->left++; /* this one waits for a later command (or never fits: read directly) */
		return 0;
	}
	for (size_t i = p->n; i > 0 && i + 8 > p->n; i--) {
		if (strcmp(p->ids[i - 1], blob_id) == 0)
			return 0; /* a copy in the same mailbox, listed just before */
	}
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 64;
		p->ids = xrealloc(p->ids, p->cap * sizeof(*p->ids));
	}
	memcpy(p->ids[p->n++], blob_id, 33);
	p->bytes += size;
	return 0;
}

struct index_doc {
	const char *blob_id;
	struct buf header, body;
};

struct index_job {
	struct index_doc docs[INDEX_JOB_FILES];
	size_t n;
	uint64_t bytes; /* raw size of the files in docs */
};

static int
index_run(struct store_txn *txn, void *ctx)
{
	struct index_job *j = ctx;

	for (size_t i = 0; i < j->n; i++) {
		const struct index_doc *d = &j->docs[i];
		int ret = store_txn_fts_add(txn, d->blob_id, d->header.data, d->header.len,
		                            d->body.data, d->body.len);

		if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

/* Commits the job's files; returns the store_err. */
static int
index_flush(struct imap_session *s, struct index_job *j, size_t *indexed)
{
	const char *error = NULL;
	int ret = STORE_OK;

	if (j->n > 0) {
		/* The index is a cache of the files: an entry a power loss takes back is found
		 * missing and made again by the next search, so it need not wait for the disk. */
		ret = store_exec_relaxed(imap_env.store, index_run, j, &error);
		if (ret != STORE_OK)
			log_warn("sid=%s event=search-index result=failed error=\"%s\"",
			         net_conn_sid(s->conn), error != NULL ? error : store_err_str(ret));
		else
			*indexed += j->n;
	}
	for (size_t i = 0; i < j->n; i++) {
		buf_deinit(&j->docs[i].header);
		buf_deinit(&j->docs[i].body);
	}
	j->n = 0;
	j->bytes = 0;
	return ret;
}

/* Indexes files of the mailbox that are not indexed yet, within the budget. */
static void
index_pending(struct imap_session *s, struct imap_search_stats *stats)
{
	struct pending p = {NULL, 0, 0, 0, imap_limits.search_index_budget, 0};
	struct index_job *j;
	int ret;

	if (p.budget == 0)
		return;
	ret = store_fts_pending(imap_env.store, s->view->mailbox_id, pending_cb, &p);
	if (ret < 0) {
		free(p.ids);
		return;
	}
	stats->unindexed = p.left;
	j = xcalloc(1, sizeof(*j));
	for (size_t i = 0; i < p.n; i++) {
		struct index_doc *d = &j->docs[j->n];
		uint8_t *data;
		size_t len;

		if (imap_search_read_file(p.ids[i], &data, &len) < 0 || data == NULL) {
			free(data);
			stats->unindexed++; /* read directly if the search needs it */
			continue;
		}
		d->blob_id = p.ids[i];
		imap_search_extract(data, len, &d->header, &d->body);
		free(data);
		j->n++;
		j->bytes += len;
		if (j->n == INDEX_JOB_FILES || j->bytes >= INDEX_JOB_BYTES) {
			size_t n = j->n;

			if (index_flush(s, j, &stats->indexed) != STORE_OK) {
				stats->unindexed += p.n - i - 1 + n;
				break;
			}
		}
	}
	if (j->n > 0) {
		size_t n = j->n;

		if (index_flush(s, j, &stats->indexed) != STORE_OK)
			stats->unindexed += n;
	}
	free(j);
	free(p.ids);
}

/* ---- filtering ----------------------------------------------------------------------------- */

struct filter {
	const uint32_t *uids; /* the candidates' uids, ascending */
	size_t n, i;
	bool *skip;
	size_t skipped;
};

static int
filter_cb(uint32_t uid, enum store_fts_state state, void *ctx)
{
	struct filter *f = ctx;

	while (f->i < f->n && f->uids[f->i] < uid)
		f->i++;
	if (f->i < f->n && f->uids[f->i] == uid && state == STORE_FTS_NOMATCH) {
		f->skip[f->i] = true;
		f->skipped++;
	}
	return 0;
}

void
imap_search_prefilter(struct imap_session *s, const struct imap_search *prog,
                      const uint32_t *uids, size_t n, bool *skip,
                      struct imap_search_stats *stats)
{
	struct imap_search_term found[STORE_FTS_MAX_TERMS];
	struct store_fts_term terms[STORE_FTS_MAX_TERMS];
	struct filter f = {uids, n, 0, skip, 0};
	size_t nterms;
	int ret;

	memset(stats, 0, sizeof(*stats));
	memset(skip, 0, n * sizeof(*skip));
	if (n == 0 || !imap_search_needs_message(prog))
		return;
	nterms = imap_search_required(prog, STORE_FTS_MIN_CHARS, STORE_FTS_MAX_TERM, found,
	                              N_ELEMENTS(found));
	if (nterms == 0)
		return; /* nothing the index can answer: every message is read */
	stats->used = true;
	for (size_t i = 0; i < nterms; i++) {
		terms[i] = (struct store_fts_term){
			.group = found[i].group,
			.where = ((found[i].where & IMAP_SEARCH_IN_HEADER) ? STORE_FTS_HEADER : 0) |
			         ((found[i].where & IMAP_SEARCH_IN_BODY) ? STORE_FTS_BODY : 0),
			.text = found[i].text,
			.len = found[i].len,
		};
	}
	index_pending(s, stats);
	ret = store_fts_match(imap_env.store, s->view->mailbox_id, terms, nterms, filter_cb, &f);
	if (ret < 0) {
		/* Without the index the search is only slower: read every message. */
		log_warn("sid=%s event=search-index result=failed error=\"%s\"",
		         net_conn_sid(s->conn), store_err_str(ret));
		memset(skip, 0, n * sizeof(*skip));
		stats->used = false;
		return;
	}
	stats->skipped = f.skipped;
}
