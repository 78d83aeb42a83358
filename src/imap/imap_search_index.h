/* The full-text index for SEARCH, SORT and THREAD (imap_search_index.c): indexing on demand
 * and the filter that spares reading messages that cannot match. Not an API: the commands of
 * imap_search_cmd.c use it. Threads: a command's worker. */
#ifndef IMAP_IMAP_SEARCH_INDEX_H
#define IMAP_IMAP_SEARCH_INDEX_H

#include "imap/imap_search.h"

struct imap_session;

/* What the filter did, for the debug log and tests. */
struct imap_search_stats {
	bool used;         /* the program had terms the index could look up */
	size_t indexed;    /* files indexed by this command, count */
	size_t unindexed;  /* files of the mailbox left unindexed (budget, errors), count */
	size_t skipped;    /* messages the index ruled out, count */
};

/* Reads a committed message file: *data_r (caller frees) and *len_r; *data_r = NULL when the
 * file is gone. Returns 0, or -1 on an I/O error. */
int imap_search_read_file(const char *blob_id, uint8_t **data_r, size_t *len_r);
/* The same, but what is read may end after the message's header section. */
int imap_search_read_head(const char *blob_id, uint8_t **data_r, size_t *len_r);

/* For the candidates uids[0..n) (ascending) of the selected mailbox: indexes what the budget
 * allows, then sets skip[i] for each message the index rules out for prog (it cannot match).
 * Every other skip[i] is false; on any failure all are (the search reads every message). */
void imap_search_prefilter(struct imap_session *s, const struct imap_search *prog,
                           const uint32_t *uids, size_t n, bool *skip,
                           struct imap_search_stats *stats);

#endif
