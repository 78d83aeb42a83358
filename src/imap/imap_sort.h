/* IMAP SORT and THREAD (RFC 5256) without I/O or store access: sort criteria, the base subject
 * of RFC 5256 §2.1, sorting a set of messages (the matches of an imap_search program), and the
 * ORDEREDSUBJECT and REFERENCES threading algorithms (RFC 5256 §3) with their thread-list
 * response text (§4). DISPLAYFROM and DISPLAYTO of RFC 5957 are supported.
 *
 * Comparison: strings are compared octet by octet after the case folding of imap_search_fold()
 * (for ASCII that is i;ascii-casemap, which RFC 5256 asks for; beyond ASCII a simple
 * i;unicode-casemap without normalisation). Ties on every criterion are ordered by sequence
 * number (RFC 5256 §3). The sent date is the Date: header in UTC, or the internal date when
 * that is missing or unparsable (RFC 5256 §2.2).
 *
 * Messages are given as struct imap_search_msg (imap/imap_search.h); read_message is called at
 * most once per message and only when a criterion needs the header (all but ARRIVAL and SIZE;
 * THREAD always). Its data only has to stay valid until the next read_message call or the return
 * of the function that called it. Any thread may call these; nothing blocks but read_message. */
#ifndef IMAP_IMAP_SORT_H
#define IMAP_IMAP_SORT_H

#include "imap/imap_search.h"

/* Criteria in one SORT: the RFC has nine keys; repeating them is pointless. */
#define IMAP_SORT_MAX_CRITERIA 32
/* Message-IDs taken from one References field (RFC 5256 §3 REFERENCES (1)): bounds the work
 * per message; real threads carry far fewer, and the last ones are the ones that count. */
#define IMAP_THREAD_MAX_REFERENCES 128

enum imap_sort_key {
	IMAP_SORT_ARRIVAL,
	IMAP_SORT_CC,
	IMAP_SORT_DATE,
	IMAP_SORT_FROM,
	IMAP_SORT_SIZE,
	IMAP_SORT_SUBJECT,
	IMAP_SORT_TO,
	IMAP_SORT_DISPLAYFROM, /* RFC 5957 */
	IMAP_SORT_DISPLAYTO,   /* RFC 5957 */
};

struct imap_sort_criterion {
	enum imap_sort_key key;
	bool reverse;
};

struct imap_sort_program {
	struct imap_sort_criterion crit[IMAP_SORT_MAX_CRITERIA];
	unsigned int count; /* criteria in crit, >= 1 */
};

/* Parses the sort criteria list "(REVERSE DATE SUBJECT)" (RFC 5256 §4 sort-criteria). Returns 0,
 * or -1 with a static *error_r (reply BAD). */
ATTR_WUR int imap_sort_parse(const struct imap_arg *arg, struct imap_sort_program *prog_r,
                             const char **error_r);
/* Whether the criteria need the message header. */
bool imap_sort_needs_message(const struct imap_sort_program *prog);

/* Sorts msgs[0..n): order_r[0..n) (the caller's array) gets the indexes into msgs in sorted
 * order. Returns 0, or -1 when a read_message failed (temporary error). */
ATTR_WUR int imap_sort(const struct imap_sort_program *prog, const struct imap_search_msg *msgs,
                       size_t n, size_t *order_r);
/* Appends " <n>" for each message in order, its UID when uid is set, else its sequence
 * number: the caller writes "* SORT" before and CRLF after. Returns 0, or -1 when out is full. */
int imap_sort_write(struct buf *out, const struct imap_search_msg *msgs, const size_t *order,
                    size_t n, bool uid);

/* Appends the base subject (RFC 5256 §2.1) of a Subject: field value (raw: encoded words,
 * folding and tabs allowed) to out, case-folded. *is_reply_r (may be NULL) tells whether the
 * extraction removed a "Re:", "Fw:", "Fwd:", "(fwd)" or "[fwd: ...]" (RFC 5256 §2.1, used by
 * THREAD=REFERENCES). Returns 0, or -1 when out is full. Besides the RFC's BLOBCHAR, octets
 * >= 0x80 are accepted inside "[...]" blobs ("[Ärger]" list tags). */
int imap_base_subject(struct buf *out, const char *subject, size_t len, bool *is_reply_r);

enum imap_thread_algorithm {
	IMAP_THREAD_ORDEREDSUBJECT,
	IMAP_THREAD_REFERENCES,
};

/* Parses the THREAD algorithm name (case-insensitive). Returns 0, or -1 with a static *error_r
 * (reply BAD). */
ATTR_WUR int imap_thread_parse_algorithm(const struct imap_arg *arg,
                                         enum imap_thread_algorithm *alg_r,
                                         const char **error_r);
/* Threads msgs[0..n) (the matches of the search, any order) and appends the thread-list of
 * RFC 5256 §4, e.g. "(2)(3 6 (4 23)(44 7 96))", with UIDs when uid is set, else sequence
 * numbers; nothing for n == 0. The caller writes "* THREAD " before it (no space when empty)
 * and CRLF after. Returns 0, or -1 when a read_message failed or out is full (out->err set). */
ATTR_WUR int imap_thread(enum imap_thread_algorithm alg, const struct imap_search_msg *msgs,
                         size_t n, bool uid, struct buf *out);

#endif
