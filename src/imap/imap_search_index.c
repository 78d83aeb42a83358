/* The full-text index as SEARCH, SORT and THREAD use it: before a program with text keys runs,
 * one query of the account's index names the messages of the mailbox that cannot match (the
 * engine skips them) and the files the index does not hold yet. Those are indexed then, at most
 * imap.search_index_budget bytes of them per command, newest first, so that the first search
 * of a large mailbox is not held up for minutes (the rest is read directly, as without an
 * index, and indexed by later searches); after a large batch the query runs again. The engine
 * stays the judge of every message it reads, so results are those of a search without index.
 * Nothing is indexed at delivery: SMTP does not pay for it.
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

static int
read_blob(const char *blob_id, bool head, uint8_t **data_r, size_t *len_r)
{
	struct buf b;
	int ret;

	*data_r = NULL;
	*len_r = 0;
	buf_init(&b, SIZE_MAX / 2);
	ret = head ? store_blob_read_head(imap_env.store, blob_id, &b)
	           : store_blob_read(imap_env.store, blob_id, &b);
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

int
imap_search_read_file(const char *blob_id, uint8_t **data_r, size_t *len_r)
{
	return read_blob(blob_id, false, data_r, len_r);
}

int
imap_search_read_head(const char *blob_id, uint8_t **data_r, size_t *len_r)
{
	return read_blob(blob_id, true, data_r, len_r);
}

/* ---- indexing ------------------------------------------------------------------------------ */

/* The files the match found missing from the account's index, the newest last: a window that
 * keeps the newest ones within the budget (and INDEX_MAX_FILES), as the rows come by uid. */
struct pending {
	char (*ids)[33];
	uint64_t *sizes;
	size_t head, n, cap; /* listed: [head, n) */
	uint64_t bytes;      /* raw size of the files listed */
	uint64_t budget;     /* bytes */
	size_t left;         /* files not listed: beyond the budget, or dropped for newer ones */
};

/* At most this many files indexed by one command, whatever their size. */
#define INDEX_MAX_FILES 4096

static void
pending_add(struct pending *p, const char *blob_id, uint64_t size)
{
	if (size > p->budget || strlen(blob_id) != 32) {
		p->left++; /* never fits: read directly */
		return;
	}
	for (size_t i = p->n; i > p->head && i + 8 > p->n; i--) {
		if (strcmp(p->ids[i - 1], blob_id) == 0)
			return; /* a copy in the same mailbox, listed just before */
	}
	if (p->n == p->cap) {
		if (p->head > 0) {
			/* slide the window to the front before growing */
			memmove(p->ids, p->ids + p->head, (p->n - p->head) * sizeof(*p->ids));
			memmove(p->sizes, p->sizes + p->head, (p->n - p->head) * sizeof(*p->sizes));
			p->n -= p->head;
			p->head = 0;
		}
		if (p->n == p->cap) {
			p->cap = p->cap ? p->cap * 2 : 64;
			p->ids = xrealloc(p->ids, p->cap * sizeof(*p->ids));
			p->sizes = xrealloc(p->sizes, p->cap * sizeof(*p->sizes));
		}
	}
	memcpy(p->ids[p->n], blob_id, 33);
	p->sizes[p->n++] = size;
	p->bytes += size;
	while (p->bytes > p->budget || p->n - p->head > INDEX_MAX_FILES) {
		p->bytes -= p->sizes[p->head++];
		p->left++;
	}
}

static void
pending_free(struct pending *p)
{
	free(p->ids);
	free(p->sizes);
}

struct index_doc {
	const char *blob_id;
	struct buf header, body;
};

struct index_job {
	int64_t account_id;
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
		int ret = store_txn_fts_add(txn, j->account_id, d->blob_id, d->header.data,
		                            d->header.len, d->body.data, d->body.len);

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

/* Indexes the listed files, newest first. */
static void
index_pending(struct imap_session *s, struct pending *p, struct imap_search_stats *stats)
{
	struct index_job *j = xcalloc(1, sizeof(*j));

	j->account_id = s->account_id;
	stats->unindexed = p->left;
	for (size_t i = p->n; i > p->head; i--) {
		struct index_doc *d = &j->docs[j->n];
		uint8_t *data;
		size_t len;

		if (imap_search_read_file(p->ids[i - 1], &data, &len) < 0 || data == NULL) {
			free(data);
			stats->unindexed++; /* read directly if the search needs it */
			continue;
		}
		d->blob_id = p->ids[i - 1];
		imap_search_extract(data, len, &d->header, &d->body);
		free(data);
		j->n++;
		j->bytes += len;
		if (j->n == INDEX_JOB_FILES || j->bytes >= INDEX_JOB_BYTES) {
			size_t n = j->n;

			if (index_flush(s, j, &stats->indexed) != STORE_OK) {
				stats->unindexed += i - 1 - p->head + n;
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
}

/* ---- filtering ----------------------------------------------------------------------------- */

/* Above this many files indexed by a search, the match is run again, so that they too can be
 * ruled out; below, the engine reads them (they were just read for the index anyway). */
#define REMATCH_FILES 32

struct filter {
	const uint32_t *uids; /* the candidates' uids, ascending */
	size_t n, i;
	bool *skip;
	size_t skipped;
	struct pending *pending; /* NULL: do not list */
};

static int
filter_cb(const struct store_fts_row *row, void *ctx)
{
	struct filter *f = ctx;

	while (f->i < f->n && f->uids[f->i] < row->uid)
		f->i++;
	if (f->i >= f->n || f->uids[f->i] != row->uid)
		return 0;
	if (row->state == STORE_FTS_NOMATCH) {
		f->skip[f->i] = true;
		f->skipped++;
	} else if (row->state == STORE_FTS_PENDING && f->pending != NULL) {
		pending_add(f->pending, row->blob_id, row->size);
	}
	return 0;
}

/* One pass of the match over the candidates; -1 when the index could not answer. */
static int
filter_run(struct imap_session *s, const struct store_fts_term *terms, size_t nterms,
           struct filter *f)
{
	int ret;

	f->i = 0;
	f->skipped = 0;
	memset(f->skip, 0, f->n * sizeof(*f->skip));
	ret = store_fts_match(imap_env.store, s->account_id, s->view->mailbox_id, terms, nterms,
	                      filter_cb, f);
	if (ret < 0) {
		/* Without the index the search is only slower: read every message. */
		log_warn("sid=%s event=search-index result=failed error=\"%s\"",
		         net_conn_sid(s->conn), store_err_str(ret));
		memset(f->skip, 0, f->n * sizeof(*f->skip));
		f->skipped = 0;
		return -1;
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
	struct pending p = {.budget = imap_limits.search_index_budget};
	struct filter f = {uids, n, 0, skip, 0, p.budget > 0 ? &p : NULL};
	size_t nterms;

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
	/* One query tells both what is ruled out and what is missing from the index; the
	 * missing files are indexed for the next searches and, here, read by the engine. */
	if (filter_run(s, terms, nterms, &f) < 0) {
		stats->used = false;
		pending_free(&p);
		return;
	}
	if (p.n > p.head || p.left > 0) {
		index_pending(s, &p, stats);
		f.pending = NULL;
		if (stats->indexed >= REMATCH_FILES && filter_run(s, terms, nterms, &f) < 0)
			stats->used = false;
	}
	pending_free(&p);
	stats->skipped = f.skipped;
}
