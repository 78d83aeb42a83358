/* Message commands: FETCH (with BODY[section]<partial>, BINARY, CHANGEDSINCE), STORE (with
 * UNCHANGEDSINCE), COPY/MOVE (UIDPLUS), EXPUNGE, CLOSE and APPEND (MULTIAPPEND). They run on a
 * worker; a FETCH of many messages sends its responses in chunks (s->resume). */
#include "imap/imap_session.h"

#include "core/log.h"
#include "mime/mime.h"
#include "mime/mime_header.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_SECTIONS 32
#define MAX_PART_DEPTH 32
#define MAX_FIELDS 64

/* ---- message rows ------------------------------------------------------------------------- */

static bool
uid_wanted(const uint32_t *v, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && v[lo] == uid;
}

static int
rows_cb(const struct store_message *m, void *ctx)
{
	struct imap_rows *r = ctx;
	struct imap_row *w;

	if (!uid_wanted(r->want, r->nwant, m->uid))
		return 0;
	if (r->n == r->cap) {
		r->cap = r->cap == 0 ? 64 : r->cap * 2;
		r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
	}
	w = &r->v[r->n++];
	w->uid = m->uid;
	w->seq = imap_view_seq(r->view, m->uid);
	w->flags = m->flags;
	w->keywords = xstrdup(m->keywords);
	memcpy(w->blob_id, m->blob_id, sizeof(w->blob_id));
	w->size = m->size;
	w->modseq = m->modseq;
	w->internaldate = m->internaldate;
	return 0;
}

void
imap_rows_free(struct imap_rows *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].keywords);
	free(r->v);
	r->v = NULL;
	r->n = r->cap = 0;
}

/* The rows of the given uids (sorted) that still exist, by uid. */
int
imap_rows_load(struct imap_session *s, const uint32_t *uids, size_t n, struct imap_rows *r)
{
	memset(r, 0, sizeof(*r));
	r->want = uids;
	r->nwant = n;
	r->view = s->view;
	if (n == 0)
		return 0;
	return store_message_range(imap_env.store, s->view->mailbox_id, uids[0], uids[n - 1],
	                           rows_cb, r);
}

/* Resolves the set argument; on failure the tagged BAD is sent. */
bool
imap_resolve_set(struct imap_session *s, const struct imap_arg *arg, uint32_t **uids, size_t *n)
{
	const char *set, *error = "Invalid sequence set";

	if (imap_arg_get_atom(arg, &set) < 0 ||
	    imap_view_resolve(s, set, s->cmd->uid, uids, n, &error) < 0) {
		imap_tagged(s, "BAD", "%s", error);
		return false;
	}
	return true;
}

/* Appends lo or lo:hi to a UID set being built ("1:3,7"); nothing when lo > hi. */
void
imap_uidset_add(struct buf *b, uint32_t lo, uint32_t hi)
{
	if (lo > hi)
		return;
	(void)buf_printf(b, "%s%u", b->len > 0 ? "," : "", lo);
	if (hi > lo)
		(void)buf_printf(b, ":%u", hi);
}

/* Appends a compact UID set (ESEARCH ALL, RFC 4731) ("1:3,7") of sorted uids. */
void
imap_out_uidset(struct buf *b, const uint32_t *uids, size_t n)
{
	for (size_t i = 0; i < n;) {
		size_t j = i;

		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		(void)buf_printf(b, "%s%u", i > 0 ? "," : "", uids[i]);
		if (j > i)
			(void)buf_printf(b, ":%u", uids[j]);
		i = j + 1;
	}
}

/* ---- running jobs with blobs -------------------------------------------------------------- */

struct wait_job {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int result;
	store_job_fn *fn;
	void *ctx;
};

static int
wait_run(struct store_txn *txn, void *ctx)
{
	struct wait_job *w = ctx;

	return w->fn(txn, w->ctx);
}

static void
wait_done(struct store_job *job, void *ctx)
{
	struct wait_job *w = ctx;
	const char *error;

	pthread_mutex_lock(&w->lock);
	w->result = store_job_result(job, &error);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	store_job_free(&job);
}

/* Like store_exec, with blobs handed to the job. */
static int
exec_with_blobs(store_job_fn *fn, void *ctx, struct store_blob **blobs, size_t n)
{
	struct wait_job w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, fn, ctx};
	struct store_job *job = store_job_new(wait_run, wait_done, &w);

	for (size_t i = 0; i < n; i++)
		store_job_add_blob(job, &blobs[i]);
	store_submit(imap_env.store, job);
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
	return w.result;
}

/* ---- FETCH -------------------------------------------------------------------------------- */

enum fetch_bit {
	FB_UID = 1 << 0,
	FB_FLAGS = 1 << 1,
	FB_INTERNALDATE = 1 << 2,
	FB_SIZE = 1 << 3,
	FB_ENVELOPE = 1 << 4,
	FB_BODY = 1 << 5,
	FB_BODYSTRUCTURE = 1 << 6,
	FB_MODSEQ = 1 << 7,
};

enum sec_kind { SEC_BODY, SEC_HEADER, SEC_FIELDS, SEC_FIELDS_NOT, SEC_TEXT, SEC_MIME };

struct section {
	char label[512];      /* as echoed: "BODY[1.HEADER]", "RFC822.TEXT", "BINARY[2]" */
	bool peek, binary, binary_size;
	uint32_t part[MAX_PART_DEPTH];
	size_t nparts;
	enum sec_kind kind;
	char *fields[MAX_FIELDS];
	size_t nfields;
	bool partial;
	uint64_t off, len;
};

struct fetch {
	unsigned int bits;
	struct section sec[MAX_SECTIONS];
	size_t nsec;
	uint64_t changedsince;
	bool vanished;
	bool set_seen;
	bool need_tree;
	bool gone; /* some requested messages were expunged by another session meanwhile */
	struct imap_rows rows;
	size_t next; /* the next row to send */
	uint32_t *uids;
	size_t nuids;
};

static void
fetch_free(struct fetch *f)
{
	for (size_t i = 0; i < f->nsec; i++) {
		for (size_t j = 0; j < f->sec[i].nfields; j++)
			free(f->sec[i].fields[j]);
	}
	imap_rows_free(&f->rows);
	free(f->uids);
	free(f);
}

/* Parses "BODY[...]<o.l>", "BODY.PEEK[...]", "BINARY[...]", "BINARY.PEEK[...]",
 * "BINARY.SIZE[...]". Returns 0 or -1. */
static int
parse_section(const char *atom, struct section *sec)
{
	const char *open = strchr(atom, '['), *close, *p;
	size_t plen = (size_t)(open - atom);

	memset(sec, 0, sizeof(*sec));
	if (plen == 4 && strncasecmp(atom, "BODY", 4) == 0) {
	} else if (plen == 9 && strncasecmp(atom, "BODY.PEEK", 9) == 0) {
		sec->peek = true;
	} else if (plen == 6 && strncasecmp(atom, "BINARY", 6) == 0) {
		sec->binary = true;
	} else if (plen == 11 && strncasecmp(atom, "BINARY.PEEK", 11) == 0) {
		sec->binary = sec->peek = true;
	} else if (plen == 11 && strncasecmp(atom, "BINARY.SIZE", 11) == 0) {
		sec->binary = sec->binary_size = sec->peek = true;
	} else {
		return -1;
	}
	close = strrchr(atom, ']');
	if (close == NULL || close < open)
		return -1;
	p = open + 1;
	while (isdigit((unsigned char)*p)) {
		char *end;
		unsigned long n = strtoul(p, &end, 10);

		if (n == 0 || n > UINT32_MAX || sec->nparts == MAX_PART_DEPTH || *p == '0')
			return -1;
		sec->part[sec->nparts++] = (uint32_t)n;
		p = end;
		if (*p == '.' && isdigit((unsigned char)p[1]))
			p++;
		else if (*p == '.')
			p++;
		else
			break;
	}
	if (p == close) {
		sec->kind = SEC_BODY;
	} else if (sec->binary) {
		return -1;
	} else if ((size_t)(close - p) == 6 && strncasecmp(p, "HEADER", 6) == 0) {
		sec->kind = SEC_HEADER;
	} else if ((size_t)(close - p) == 4 && strncasecmp(p, "TEXT", 4) == 0) {
		sec->kind = SEC_TEXT;
	} else if ((size_t)(close - p) == 4 && strncasecmp(p, "MIME", 4) == 0 && sec->nparts > 0) {
		sec->kind = SEC_MIME;
	} else if (strncasecmp(p, "HEADER.FIELDS", 13) == 0) {
		const char *q = p + 13;

		sec->kind = SEC_FIELDS;
		if (strncasecmp(q, ".NOT", 4) == 0) {
			sec->kind = SEC_FIELDS_NOT;
			q += 4;
		}
		while (*q == ' ')
			q++;
		if (*q++ != '(')
			return -1;
		while (*q != ')' && q < close) {
			const char *start;
			bool quoted = *q == '"';

			if (quoted)
				q++;
			start = q;
			while (q < close && *q != ' ' && *q != ')' && *q != '"')
				q++;
			if (q == start || sec->nfields == MAX_FIELDS)
				return -1;
			sec->fields[sec->nfields++] = xmemdup0(start, (size_t)(q - start));
			if (quoted && *q++ != '"')
				return -1;
			while (*q == ' ')
				q++;
		}
		if (*q != ')' || sec->nfields == 0)
			return -1;
	} else {
		return -1;
	}
	p = close + 1;
	if (*p == '<') {
		char *end;
		unsigned long long o, l;

		if (sec->binary_size)
			return -1;
		o = strtoull(p + 1, &end, 10);
		if (end == p + 1 || *end != '.')
			return -1;
		l = strtoull(end + 1, &end, 10);
		if (*end != '>' || end[1] != '\0' || l == 0)
			return -1;
		sec->partial = true;
		sec->off = o;
		sec->len = l;
	} else if (*p != '\0') {
		return -1;
	}
	(void)snprintf(sec->label, sizeof(sec->label), "%s%.*s",
	               sec->binary_size ? "BINARY.SIZE" : sec->binary ? "BINARY" : "BODY",
	               (int)(close - open + 1), open);
	if (sec->partial) {
		size_t l = strlen(sec->label);

		(void)snprintf(sec->label + l, sizeof(sec->label) - l, "<%llu>",
		               (unsigned long long)sec->off);
	}
	return 0;
}

static int
parse_fetch_item(const struct imap_arg *arg, struct fetch *f)
{
	const char *a;

	if (imap_arg_get_atom(arg, &a) < 0)
		return -1;
	if (arg->flags & IMAP_ARG_FLAG_SECTION) {
		struct section *sec;

		if (f->nsec == MAX_SECTIONS)
			return -1;
		sec = &f->sec[f->nsec];
		if (parse_section(a, sec) < 0) {
			for (size_t j = 0; j < sec->nfields; j++)
				free(sec->fields[j]);
			return -1;
		}
		f->nsec++;
		f->need_tree = true;
		if (!sec->peek)
			f->set_seen = true;
		return 0;
	}
	if (strcasecmp(a, "UID") == 0)
		f->bits |= FB_UID;
	else if (strcasecmp(a, "FLAGS") == 0)
		f->bits |= FB_FLAGS;
	else if (strcasecmp(a, "INTERNALDATE") == 0)
		f->bits |= FB_INTERNALDATE;
	else if (strcasecmp(a, "RFC822.SIZE") == 0)
		f->bits |= FB_SIZE;
	else if (strcasecmp(a, "ENVELOPE") == 0)
		f->bits |= FB_ENVELOPE;
	else if (strcasecmp(a, "BODY") == 0)
		f->bits |= FB_BODY;
	else if (strcasecmp(a, "BODYSTRUCTURE") == 0)
		f->bits |= FB_BODYSTRUCTURE;
	else if (strcasecmp(a, "MODSEQ") == 0)
		f->bits |= FB_MODSEQ;
	else if (strcasecmp(a, "ALL") == 0)
		f->bits |= FB_FLAGS | FB_INTERNALDATE | FB_SIZE | FB_ENVELOPE;
	else if (strcasecmp(a, "FAST") == 0)
		f->bits |= FB_FLAGS | FB_INTERNALDATE | FB_SIZE;
	else if (strcasecmp(a, "FULL") == 0)
		f->bits |= FB_FLAGS | FB_INTERNALDATE | FB_SIZE | FB_ENVELOPE | FB_BODY;
	else if (strcasecmp(a, "RFC822") == 0 || strcasecmp(a, "RFC822.HEADER") == 0 ||
	         strcasecmp(a, "RFC822.TEXT") == 0) {
		struct section *sec;

		if (f->nsec == MAX_SECTIONS)
			return -1;
		sec = &f->sec[f->nsec++];
		memset(sec, 0, sizeof(*sec));
		(void)snprintf(sec->label, sizeof(sec->label), "%s", a);
		for (char *p = sec->label; *p != '\0'; p++)
			*p = (char)toupper((unsigned char)*p);
		sec->kind = a[6] == '\0' ? SEC_BODY : (a[7] == 'H' || a[7] == 'h') ? SEC_HEADER
		                                                                    : SEC_TEXT;
		sec->peek = sec->kind == SEC_HEADER;
		if (!sec->peek)
			f->set_seen = true;
		f->need_tree = true;
	} else
		return -1;
	if (f->bits & (FB_ENVELOPE | FB_BODY | FB_BODYSTRUCTURE))
		f->need_tree = true;
	return 0;
}

struct meta_ctx {
	char blob_id[33];
	uint8_t *data;
	size_t len;
};

static int
meta_run(struct store_txn *txn, void *ctx)
{
	struct meta_ctx *m = ctx;

	return store_txn_blob_meta_set(txn, m->blob_id, m->data, m->len);
}

static void
meta_done(struct store_job *job, void *ctx)
{
	struct meta_ctx *m = ctx;

	store_job_free(&job);
	free(m->data);
	free(m);
}

static void
meta_store(const char *blob_id, struct buf *data)
{
	struct meta_ctx *m = xcalloc(1, sizeof(*m));

	memcpy(m->blob_id, blob_id, sizeof(m->blob_id));
	m->data = xmalloc(data->len + 1);
	memcpy(m->data, data->data, data->len);
	m->len = data->len;
	store_submit(imap_env.store, store_job_new(meta_run, meta_done, m));
}

/* The MIME tree of a message: cached in the store, else parsed from the file and cached. */
static struct mime_part *
load_tree(const char *blob_id)
{
	struct mime_part *root = NULL;
	struct buf b;
	const char *error;
	int ret;

	buf_init(&b, SIZE_MAX / 2);
	ret = store_blob_meta_get(imap_env.store, blob_id, &b);
	if (ret > 0 && mime_part_deserialize(b.data, b.len, &root, &error) == 0) {
		buf_deinit(&b);
		return root;
	}
	buf_reset(&b);
	{
		int fd = store_blob_open(imap_env.store, blob_id);
		struct mime_parser *p;
		uint8_t chunk[65536];
		ssize_t n;

		if (fd < 0) {
			buf_deinit(&b);
			return NULL;
		}
		p = mime_parser_new(NULL);
		while ((n = read(fd, chunk, sizeof(chunk))) > 0)
			mime_parser_feed(p, chunk, (size_t)n);
		close(fd);
		if (n < 0 || mime_parser_finish(p, &root) < 0)
			root = NULL;
		mime_parser_free(&p);
	}
	/* Cached by a job of its own; nobody waits for it. */
	if (root != NULL && mime_part_serialize(&b, root) == 0)
		meta_store(blob_id, &b);
	buf_deinit(&b);
	return root;
}

/* Finds the part a section names (RFC 3501 6.4.5). For HEADER/TEXT/FIELDS the result is the
 * message whose header is meant (root or the child of a message/rfc822 part). */
static const struct mime_part *
find_part(const struct mime_part *root, const struct section *sec)
{
	const struct mime_part *p = root;

	for (size_t i = 0; i < sec->nparts; i++) {
		uint32_t n = sec->part[i];

		/* A message/rfc822 part's numbers address the enclosed message's parts. */
		if (p->kind == MIME_KIND_MESSAGE && (i > 0 || p != root))
			p = p->children;
		if (p->kind == MIME_KIND_MULTIPART) {
			const struct mime_part *c = p->children;

			while (c != NULL && --n > 0)
				c = c->next;
			if (c == NULL)
				return NULL;
			p = c;
		} else if (n != 1) {
			return NULL;
		}
	}
	if (sec->kind == SEC_HEADER || sec->kind == SEC_TEXT || sec->kind == SEC_FIELDS ||
	    sec->kind == SEC_FIELDS_NOT) {
		if (sec->nparts > 0) {
			if (p->kind != MIME_KIND_MESSAGE || p->children == NULL)
				return NULL;
			p = p->children;
		}
	}
	return p;
}

/* A message's bytes for FETCH: a small one read whole into memory (one database read when it
 * is kept there: storage.inline_max is 64 KiB by default), a larger one through a descriptor,
 * from which only the sections asked for are read. */
#define MSG_IN_MEMORY_MAX (64 * 1024)

struct msg_data {
	int fd;
	bool in_memory;
	struct buf mem;
};

static int
msg_open(struct msg_data *md, const struct imap_row *r)
{
	md->fd = -1;
	md->in_memory = r->size <= MSG_IN_MEMORY_MAX;
	if (md->in_memory) {
		buf_init(&md->mem, MSG_IN_MEMORY_MAX);
		if (store_blob_read(imap_env.store, r->blob_id, &md->mem) == 1)
			return 0;
		buf_deinit(&md->mem);
		md->in_memory = false;
	}
	md->fd = store_blob_open(imap_env.store, r->blob_id);
	return md->fd >= 0 ? 0 : -1;
}

static void
msg_close(struct msg_data *md)
{
	if (md->in_memory)
		buf_deinit(&md->mem);
	md->in_memory = false;
	if (md->fd >= 0)
		close(md->fd);
	md->fd = -1;
}

static int
read_range(const struct msg_data *md, uint64_t off, uint64_t len, struct buf *out)
{
	uint8_t chunk[65536];

	if (md->in_memory) {
		if (off > md->mem.len || len > md->mem.len - off)
			return -1;
		return buf_append(out, md->mem.data + off, (size_t)len);
	}
	while (len > 0) {
		ssize_t n = pread(md->fd, chunk, MIN(len, sizeof(chunk)), (off_t)off);

		if (n <= 0)
			return -1;
		if (buf_append(out, chunk, (size_t)n) < 0)
			return -1;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

static bool
field_listed(const struct section *sec, const uint8_t *name, size_t len)
{
	for (size_t i = 0; i < sec->nfields; i++) {
		if (strlen(sec->fields[i]) == len && strncasecmp(sec->fields[i], (const char *)name,
		                                                 len) == 0)
			return true;
	}
	return false;
}

/* Keeps (or drops, for .NOT) the listed fields of a header, ending with the blank line. */
static void
filter_fields(const struct section *sec, const struct buf *hdr, struct buf *out)
{
	const uint8_t *p = hdr->data, *end = hdr->data + hdr->len;

	while (p < end) {
		const uint8_t *start = p, *colon, *q = p;

		if (*p == '\r' || *p == '\n')
			break; /* the blank line */
		/* The field runs to the next line that does not start with a blank. */
		do {
			const uint8_t *lf = memchr(q, '\n', (size_t)(end - q));

			q = lf != NULL ? lf + 1 : end;
		} while (q < end && (*q == ' ' || *q == '\t'));
		colon = memchr(start, ':', (size_t)(q - start));
		if (colon != NULL) {
			size_t nlen = (size_t)(colon - start);
			bool listed;

			while (nlen > 0 && (start[nlen - 1] == ' ' || start[nlen - 1] == '\t'))
				nlen--;
			listed = field_listed(sec, start, nlen);
			if (listed == (sec->kind == SEC_FIELDS))
				(void)buf_append(out, start, (size_t)(q - start));
		}
		p = q;
	}
	(void)buf_append_str(out, "\r\n");
}

/* Decodes a part body for BINARY (RFC 3516). Returns 0, or -1 for an unknown encoding. */
static int
decode_body(const struct mime_part *part, const struct buf *in, struct buf *out)
{
	const char *enc = part->encoding.s;

	if (enc == NULL || strcasecmp(enc, "7bit") == 0 || strcasecmp(enc, "8bit") == 0 ||
	    strcasecmp(enc, "binary") == 0) {
		(void)buf_append(out, in->data, in->len);
		return 0;
	}
	if (strcasecmp(enc, "base64") == 0) {
		mime_decode_base64(out, in->data, in->len);
		return 0;
	}
	if (strcasecmp(enc, "quoted-printable") == 0) {
		mime_decode_qp(out, in->data, in->len);
		return 0;
	}
	return -1;
}

static void
out_literal(struct imap_session *s, const struct buf *data, uint64_t off, uint64_t len,
            bool binary)
{
	bool has_nul = binary && memchr(data->data, 0, data->len) != NULL;

	if (off > data->len)
		off = data->len;
	if (len > data->len - off)
		len = data->len - off;
	imap_out(s, "%s{%llu}\r\n", has_nul ? "~" : "", (unsigned long long)len);
	(void)buf_append(&s->out, data->data + off, (size_t)len);
}

static void
format_internaldate(char out[32], int64_t t)
{
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	time_t tt = (time_t)t;

	gmtime_r(&tt, &tm);
	(void)snprintf(out, 32, "%02d-%s-%04d %02d:%02d:%02d +0000", tm.tm_mday,
	               months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Writes one section of one message; returns 0 or -1 (tells the caller to stop with NO). */
static int
out_section(struct imap_session *s, const struct section *sec, const struct mime_part *root,
            const struct msg_data *md, const struct imap_row *r, const char **why)
{
	const struct mime_part *p = find_part(root, sec);
	uint64_t start, end;
	struct buf data;
	int ret = 0;

	imap_out(s, " %s ", sec->label);
	if (p == NULL) {
		/* RFC 3501: a part that does not exist is an empty string (Dovecot: NIL). */
		imap_out(s, "NIL");
		return 0;
	}
	switch (sec->kind) {
	case SEC_HEADER:
	case SEC_FIELDS:
	case SEC_FIELDS_NOT:
	case SEC_MIME:
		start = p->hdr_offset;
		end = p->body_offset;
		break;
	case SEC_TEXT:
		start = p->body_offset;
		end = p->end_offset;
		break;
	case SEC_BODY:
	default:
		if (sec->nparts == 0) {
			start = 0;
			end = r->size;
		} else {
			start = p->body_offset;
			end = p->end_offset;
		}
		break;
	}
	if (end < start)
		end = start;
	buf_init(&data, SIZE_MAX / 2);
	if (read_range(md, start, end - start, &data) < 0) {
		*why = "Message file could not be read";
		buf_deinit(&data);
		return -1;
	}
	if (sec->kind == SEC_FIELDS || sec->kind == SEC_FIELDS_NOT) {
		struct buf f;

		buf_init(&f, SIZE_MAX / 2);
		filter_fields(sec, &data, &f);
		buf_deinit(&data);
		data = f;
	}
	if (sec->binary) {
		struct buf d;

		buf_init(&d, SIZE_MAX / 2);
		if (p->kind != MIME_KIND_LEAF || decode_body(p, &data, &d) < 0) {
			*why = "[UNKNOWN-CTE] Cannot decode this part";
			buf_deinit(&d);
			buf_deinit(&data);
			return -1;
		}
		buf_deinit(&data);
		data = d;
	}
	if (sec->binary_size)
		imap_out(s, "%zu", data.len);
	else
		out_literal(s, &data, sec->partial ? sec->off : 0,
		            sec->partial ? sec->len : UINT64_MAX, sec->binary);
	buf_deinit(&data);
	return ret;
}

static int
fetch_one(struct imap_session *s, struct fetch *f, const struct imap_row *r, const char **why)
{
	struct mime_part *root = NULL;
	struct msg_data md = {-1, false, {0}};
	const char *sp = "";
	int ret = 0;

	if (f->need_tree) {
		root = load_tree(r->blob_id);
		if (root == NULL) {
			*why = "Message file could not be read";
			return -1;
		}
	}
	if (f->nsec > 0) {
		if (msg_open(&md, r) < 0) {
			mime_part_free(&root);
			*why = "Message file could not be read";
			return -1;
		}
	}
	imap_out(s, "* %u FETCH (", r->seq);
	if (f->bits & FB_UID) {
		imap_out(s, "UID %u", r->uid);
		sp = " ";
	}
	if (f->bits & FB_FLAGS) {
		imap_out(s, "%sFLAGS ", sp);
		imap_out_flags(s, r->flags, r->keywords);
		sp = " ";
	}
	if (f->bits & FB_MODSEQ) {
		imap_out(s, "%sMODSEQ (%llu)", sp, (unsigned long long)r->modseq);
		sp = " ";
	}
	if (f->bits & FB_INTERNALDATE) {
		char date[32];

		format_internaldate(date, r->internaldate);
		imap_out(s, "%sINTERNALDATE \"%s\"", sp, date);
		sp = " ";
	}
	if (f->bits & FB_SIZE) {
		imap_out(s, "%sRFC822.SIZE %llu", sp, (unsigned long long)r->size);
		sp = " ";
	}
	if (f->bits & FB_ENVELOPE) {
		imap_out(s, "%sENVELOPE ", sp);
		(void)!mime_write_envelope(&s->out, root->envelope);
		sp = " ";
	}
	if (f->bits & FB_BODY) {
		imap_out(s, "%sBODY ", sp);
		(void)!mime_write_bodystructure(&s->out, root, false);
		sp = " ";
	}
	if (f->bits & FB_BODYSTRUCTURE) {
		imap_out(s, "%sBODYSTRUCTURE ", sp);
		(void)!mime_write_bodystructure(&s->out, root, true);
		sp = " ";
	}
	for (size_t i = 0; i < f->nsec && ret == 0; i++) {
		if (*sp == '\0') {
			/* out_section writes a leading space */
			size_t before = s->out.len;

			ret = out_section(s, &f->sec[i], root, &md, r, why);
			if (s->out.len > before && s->out.data[before] == ' ')
				memmove(s->out.data + before, s->out.data + before + 1,
				        --s->out.len - before);
		} else {
			ret = out_section(s, &f->sec[i], root, &md, r, why);
		}
		sp = " ";
	}
	imap_out(s, ")\r\n");
	msg_close(&md);
	mime_part_free(&root);
	return ret;
}

static int fetch_continue(struct imap_session *s);

static void
fetch_free_ctx(void *ctx)
{
	fetch_free(ctx);
}

static int
fetch_finish(struct imap_session *s, struct fetch *f, const char *why)
{
	bool gone = f->gone;

	s->resume_ctx = NULL;
	s->resume_free = NULL;
	fetch_free(f);
	if (why != NULL) {
		imap_tagged(s, "NO", "%s", why);
		return -1;
	}
	if (s->cmd->uid)
		(void)imap_view_sync(s, true);
	if (gone && !s->cmd->uid)
		imap_tagged(s, "OK", "[EXPUNGEISSUED] Some messages were expunged meanwhile");
	else
		imap_tagged(s, "OK", "%sFETCH completed", s->cmd->uid ? "UID " : "");
	return 0;
}

static int
fetch_continue(struct imap_session *s)
{
	struct fetch *f = s->resume_ctx;
	const char *why = NULL;

	while (f->next < f->rows.n) {
		const struct imap_row *r = &f->rows.v[f->next++];

		if (f->changedsince != 0 && r->modseq <= f->changedsince)
			continue;
		if (fetch_one(s, f, r, &why) < 0)
			return fetch_finish(s, f, why);
		if (s->out.len >= IMAP_OUT_CHUNK && f->next < f->rows.n) {
			s->resume = fetch_continue;
			return 0;
		}
	}
	return fetch_finish(s, f, NULL);
}

struct seen_ctx {
	int64_t mailbox_id;
	struct imap_row *rows;
	size_t n;
};

static int
seen_run(struct store_txn *txn, void *ctx)
{
	struct seen_ctx *c = ctx;

	for (size_t i = 0; i < c->n; i++) {
		struct store_flags_result r;
		int ret;

		if (c->rows[i].flags & STORE_FLAG_SEEN)
			continue;
		ret = store_txn_update_flags(txn, c->mailbox_id, c->rows[i].uid, STORE_FLAGS_ADD,
		                             STORE_FLAG_SEEN, "", 0, &r);
		if (ret == STORE_ERR_NOTFOUND)
			continue;
		if (ret != STORE_OK)
			return ret;
		c->rows[i].flags = r.flags;
		c->rows[i].modseq = r.modseq;
	}
	return STORE_OK;
}

struct vanished_ctx {
	struct imap_seq_range *ranges;
	size_t n;
	struct buf out;
};

static int
vanished_cb(uint32_t lo, uint32_t hi, void *ctx)
{
	struct vanished_ctx *v = ctx;

	/* Per UID only what the set names, once, in ascending order, however its ranges
	 * overlap: the next UID not reported yet is the lowest of lo..hi within any range. */
	while (lo <= hi) {
		uint32_t end = 0;
		bool found = false;

		for (size_t i = 0; i < v->n; i++) {
			if (v->ranges[i].lo <= lo && lo <= v->ranges[i].hi) {
				end = MAX(end, MIN(hi, v->ranges[i].hi));
				found = true;
			}
		}
		if (found) {
			imap_uidset_add(&v->out, lo, end);
		} else {
			/* lo is in no range: go on at the lowest range start above it. */
			uint32_t next = 0;

			for (size_t i = 0; i < v->n; i++) {
				if (v->ranges[i].lo > lo && (next == 0 || v->ranges[i].lo < next))
					next = v->ranges[i].lo;
			}
			if (next == 0 || next > hi)
				break;
			lo = next;
			continue;
		}
		if (end == UINT32_MAX)
			break;
		lo = end + 1;
	}
	return 0;
}

/* QRESYNC 3.2.6: "UID FETCH set (CHANGEDSINCE n VANISHED)" first reports the UIDs of the set
 * expunged since n. */
static int
out_vanished(struct imap_session *s, const struct imap_arg *set_arg, uint64_t since)
{
	struct vanished_ctx v = {0};
	struct store_mailbox mb;
	const char *set, *error;
	int ret;

	if (imap_arg_get_atom(set_arg, &set) < 0 ||
	    imap_seqset_parse(set, strlen(set), UINT32_MAX, NULL, SIZE_MAX, &v.n, &error) < 0)
		return 0; /* the set was checked already */
	v.ranges = xmalloc((v.n + 1) * sizeof(*v.ranges));
	if (imap_seqset_parse(set, strlen(set), UINT32_MAX, v.ranges, v.n, &v.n, &error) < 0)
		v.n = 0;
	buf_init(&v.out, SIZE_MAX / 2);
	ret = store_mailbox_changes(imap_env.store, s->view->mailbox_id, since, NULL, vanished_cb,
	                            &v, &mb);
	if (ret == STORE_OK && v.out.len > 0)
		imap_out(s, "* VANISHED (EARLIER) %s\r\n", buf_cstr(&v.out));
	buf_deinit(&v.out);
	free(v.ranges);
	return ret;
}

void
imap_cmd_fetch(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	struct fetch *f;
	int ret;

	if (cmd->nargs < 2 || cmd->nargs > 3) {
		imap_tagged(s, "BAD", "Usage: FETCH set items");
		return;
	}
	f = xcalloc(1, sizeof(*f));
	if (cmd->args[1].type == IMAP_ARG_LIST) {
		for (size_t i = 0; i < cmd->args[1].count; i++) {
			if (parse_fetch_item(&cmd->args[1].list[i], f) < 0) {
				fetch_free(f);
				imap_tagged(s, "BAD", "Invalid FETCH item");
				return;
			}
		}
	} else if (parse_fetch_item(&cmd->args[1], f) < 0) {
		fetch_free(f);
		imap_tagged(s, "BAD", "Invalid FETCH item");
		return;
	}
	if (cmd->nargs == 3) {
		const struct imap_arg *m = cmd->args[2].list;
		size_t n = cmd->args[2].count;

		if (cmd->args[2].type != IMAP_ARG_LIST || n < 2 ||
		    !imap_arg_atom_equals(&m[0], "CHANGEDSINCE") ||
		    imap_arg_get_number64(&m[1], &f->changedsince) < 0 ||
		    (n == 3 && !(imap_arg_atom_equals(&m[2], "VANISHED") && cmd->uid && s->qresync)) ||
		    n > 3) {
			fetch_free(f);
			imap_tagged(s, "BAD", "Invalid FETCH modifiers");
			return;
		}
		f->vanished = n == 3;
		f->bits |= FB_MODSEQ;
		s->condstore = true;
	}
	if (f->bits & FB_MODSEQ)
		s->condstore = true;
	if (cmd->uid)
		f->bits |= FB_UID;
	if (s->condstore && (f->bits & FB_FLAGS))
		f->bits |= FB_MODSEQ;
	if (!imap_resolve_set(s, &cmd->args[0], &f->uids, &f->nuids)) {
		fetch_free(f);
		return;
	}
	if (f->vanished && out_vanished(s, &cmd->args[0], f->changedsince) < 0) {
		fetch_free(f);
		imap_tagged_store_error(s, STORE_ERR_IO, "FETCH");
		return;
	}
	ret = imap_rows_load(s, f->uids, f->nuids, &f->rows);
	if (ret < 0) {
		fetch_free(f);
		imap_tagged_store_error(s, ret, "FETCH");
		return;
	}
	f->gone = f->rows.n < f->nuids;
	if (f->set_seen && !s->view->readonly) {
		struct seen_ctx c = {s->view->mailbox_id, f->rows.v, f->rows.n};
		const char *error;
		bool any = false;

		for (size_t i = 0; i < f->rows.n; i++)
			any |= (f->rows.v[i].flags & STORE_FLAG_SEEN) == 0;
		if (any) {
			ret = store_exec_relaxed(imap_env.store, seen_run, &c, &error);
			if (ret != STORE_OK) {
				fetch_free(f);
				imap_tagged_store_error(s, ret, "FETCH");
				return;
			}
			f->bits |= FB_FLAGS;
			for (size_t i = 0; i < f->rows.n; i++)
				imap_view_own_modseq(s->view, f->rows.v[i].modseq);
		}
	}
	s->resume_ctx = f;
	s->resume_free = fetch_free_ctx;
	(void)fetch_continue(s);
}

/* ---- STORE -------------------------------------------------------------------------------- */

struct store_ctx {
	int64_t mailbox_id;
	struct imap_row *rows;
	size_t n;
	enum store_flags_mode mode;
	uint32_t flags;
	const char *keywords;
	uint64_t unchangedsince;
	bool *modified;
	bool *changed;
	bool *gone;
};

static int
store_run(struct store_txn *txn, void *ctx)
{
	struct store_ctx *c = ctx;

	for (size_t i = 0; i < c->n; i++) {
		struct store_flags_result r;
		int ret = store_txn_update_flags(txn, c->mailbox_id, c->rows[i].uid, c->mode,
		                                 c->flags, c->keywords, c->unchangedsince, &r);

		if (ret == STORE_ERR_NOTFOUND) {
			c->gone[i] = true;
			continue;
		}
		if (ret != STORE_OK)
			return ret;
		c->modified[i] = r.modified;
		c->changed[i] = r.changed;
		c->rows[i].flags = r.flags;
		c->rows[i].modseq = r.modseq;
		free(c->rows[i].keywords);
		c->rows[i].keywords = xstrdup(r.keywords);
	}
	return STORE_OK;
}

void
imap_cmd_store(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	const struct imap_arg *args = cmd->args;
	size_t nargs = cmd->nargs, i = 1;
	struct store_ctx c = {0};
	char kw[STORE_KEYWORDS_MAX];
	const char *item, *error;
	uint32_t *uids = NULL;
	size_t nuids = 0;
	struct imap_rows rows;
	bool silent;
	struct buf modified;
	bool has_unchanged = false;
	int ret;

	if (nargs < 3) {
		imap_tagged(s, "BAD", "Usage: STORE set item flags");
		return;
	}
	if (args[1].type == IMAP_ARG_LIST) {
		if (args[1].count != 2 || !imap_arg_atom_equals(&args[1].list[0], "UNCHANGEDSINCE") ||
		    imap_arg_get_number64(&args[1].list[1], &c.unchangedsince) < 0) {
			imap_tagged(s, "BAD", "Invalid STORE modifiers");
			return;
		}
		s->condstore = true;
		has_unchanged = true;
		i++;
	}
	if (i + 1 >= nargs || imap_arg_get_atom(&args[i], &item) < 0) {
		imap_tagged(s, "BAD", "Usage: STORE set item flags");
		return;
	}
	silent = strlen(item) > 7 && strcasecmp(item + strlen(item) - 7, ".SILENT") == 0;
	if (strncasecmp(item, "+FLAGS", 6) == 0)
		c.mode = STORE_FLAGS_ADD;
	else if (strncasecmp(item, "-FLAGS", 6) == 0)
		c.mode = STORE_FLAGS_REMOVE;
	else if (strncasecmp(item, "FLAGS", 5) == 0)
		c.mode = STORE_FLAGS_REPLACE;
	else {
		imap_tagged(s, "BAD", "Invalid STORE item");
		return;
	}
	if (strlen(item) != (c.mode == STORE_FLAGS_REPLACE ? 5u : 6u) + (silent ? 7u : 0u)) {
		imap_tagged(s, "BAD", "Invalid STORE item");
		return;
	}
	i++;
	if (i + 1 == nargs && args[i].type == IMAP_ARG_LIST)
		ret = imap_parse_flags(args[i].list, args[i].count, &c.flags, kw);
	else
		ret = imap_parse_flags(&args[i], nargs - i, &c.flags, kw);
	if (ret < 0) {
		imap_tagged(s, "BAD", "Invalid flags");
		return;
	}
	if (s->view->readonly) {
		imap_tagged(s, "NO", "[READ-ONLY] Mailbox is read-only");
		return;
	}
	if (!imap_resolve_set(s, &args[0], &uids, &nuids))
		return;
	ret = imap_rows_load(s, uids, nuids, &rows);
	free(uids);
	if (ret < 0) {
		imap_rows_free(&rows);
		imap_tagged_store_error(s, ret, "STORE");
		return;
	}
	c.mailbox_id = s->view->mailbox_id;
	c.rows = rows.v;
	c.n = rows.n;
	c.keywords = kw;
	c.modified = xcalloc(rows.n + 1, sizeof(bool));
	c.changed = xcalloc(rows.n + 1, sizeof(bool));
	c.gone = xcalloc(rows.n + 1, sizeof(bool));
	if (has_unchanged && c.unchangedsince == 0) {
		/* RFC 7162 3.1.3: every message has a MODSEQ above 0, so none may change. */
		for (size_t j = 0; j < rows.n; j++)
			c.modified[j] = true;
		ret = STORE_OK;
	} else {
		ret = store_exec_relaxed(imap_env.store, store_run, &c, &error);
	}
	if (ret != STORE_OK) {
		imap_tagged_store_error(s, ret, "STORE");
		goto out;
	}
	buf_init(&modified, SIZE_MAX / 2);
	for (size_t j = 0; j < rows.n; j++) {
		const struct imap_row *r = &rows.v[j];

		if (c.gone[j])
			continue;
		if (c.modified[j]) {
			(void)buf_printf(&modified, "%s%u", modified.len > 0 ? "," : "",
			                 cmd->uid ? r->uid : r->seq);
			continue;
		}
		if (c.changed[j])
			imap_view_own_modseq(s->view, r->modseq);
		if (silent && !(s->condstore && c.changed[j]))
			continue;
		imap_out(s, "* %u FETCH (", r->seq);
		if (cmd->uid)
			imap_out(s, "UID %u ", r->uid);
		if (!silent) {
			imap_out(s, "FLAGS ");
			imap_out_flags(s, r->flags, r->keywords);
		}
		if (s->condstore)
			imap_out(s, "%sMODSEQ (%llu)", silent ? "" : " ", (unsigned long long)r->modseq);
		imap_out(s, ")\r\n");
	}
	if (cmd->uid)
		(void)imap_view_sync(s, true);
	if (modified.len > 0)
		imap_tagged(s, "OK", "[MODIFIED %s] Conditional STORE failed",
		            buf_cstr(&modified));
	else
		imap_tagged(s, "OK", "STORE completed");
	buf_deinit(&modified);
out:
	free(c.modified);
	free(c.changed);
	free(c.gone);
	imap_rows_free(&rows);
}

/* ---- EXPUNGE, CLOSE ------------------------------------------------------------------------ */

struct expunge_ctx {
	int64_t mailbox_id;
	uint32_t *uids;
	size_t n;
	bool *gone;
	/* COPY/MOVE */
	int64_t dest;
	uint32_t *new_uids;
	bool move;
};

static int
expunge_run(struct store_txn *txn, void *ctx)
{
	struct expunge_ctx *c = ctx;

	for (size_t i = 0; i < c->n; i++) {
		int ret = store_txn_expunge_quiet(txn, c->mailbox_id, c->uids[i]);

		if (ret == STORE_ERR_NOTFOUND)
			c->gone[i] = true;
		else if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

/* The \Deleted messages the store lists that are in the view (and among the wanted ones). */
struct deleted_ctx {
	const struct imap_view *view;
	const uint32_t *only; /* sorted; NULL: all of the view */
	size_t nonly, i;
	uint32_t *uids;
	size_t n, cap;
};

static int
deleted_cb(const struct store_message *m, void *ctx)
{
	struct deleted_ctx *d = ctx;

	if (d->only != NULL) {
		while (d->i < d->nonly && d->only[d->i] < m->uid)
			d->i++;
		if (d->i == d->nonly || d->only[d->i] != m->uid)
			return 0;
	} else if (imap_view_seq(d->view, m->uid) == 0) {
		return 0; /* not announced to this session yet */
	}
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 16;
		d->uids = xrealloc(d->uids, d->cap * sizeof(*d->uids));
	}
	d->uids[d->n++] = m->uid;
	return 0;
}

/* Expunges the \Deleted messages among uids (all of the view when uids is NULL) and reports
 * them unless quiet. */
static int
expunge_deleted(struct imap_session *s, const uint32_t *only, size_t nonly, bool quiet)
{
	struct imap_view *v = s->view;
	struct expunge_ctx c = {0};
	struct deleted_ctx d = {v, only, nonly, 0, NULL, 0, 0};
	const char *error;
	struct buf vanished;
	int ret;

	if (v->count == 0 || (only != NULL && nonly == 0))
		return 0;
	ret = store_message_deleted(imap_env.store, v->mailbox_id,
	                            only != NULL ? only[0] : v->uids[0],
	                            only != NULL ? only[nonly - 1] : v->uids[v->count - 1],
	                            deleted_cb, &d);
	if (ret < 0) {
		free(d.uids);
		return ret;
	}
	c.mailbox_id = v->mailbox_id;
	c.uids = d.uids;
	c.n = d.n;
	c.gone = xcalloc(c.n + 1, sizeof(bool));
	ret = c.n > 0 ? store_exec_relaxed(imap_env.store, expunge_run, &c, &error) : STORE_OK;
	if (ret == STORE_OK && !quiet) {
		buf_init(&vanished, SIZE_MAX / 2);
		for (size_t i = 0; i < c.n; i++) {
			uint32_t seq = imap_view_remove(v, c.uids[i]);

			if (seq == 0)
				continue;
			if (s->qresync)
				(void)buf_printf(&vanished, "%s%u", vanished.len > 0 ? "," : "",
				                 c.uids[i]);
			else
				imap_out(s, "* %u EXPUNGE\r\n", seq);
		}
		if (vanished.len > 0)
			imap_out(s, "* VANISHED %s\r\n", buf_cstr(&vanished));
		buf_deinit(&vanished);
	}
	free(c.uids);
	free(c.gone);
	return ret;
}

void
imap_cmd_expunge(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	uint32_t *uids = NULL;
	size_t n = 0;
	int ret;

	if (cmd->nargs != (cmd->uid ? 1u : 0u)) {
		imap_tagged(s, "BAD", "Usage: %sEXPUNGE%s", cmd->uid ? "UID " : "",
		            cmd->uid ? " set" : "");
		return;
	}
	if (s->view->readonly) {
		imap_tagged(s, "NO", "[READ-ONLY] Mailbox is read-only");
		return;
	}
	if (cmd->uid && !imap_resolve_set(s, &cmd->args[0], &uids, &n))
		return;
	ret = expunge_deleted(s, cmd->uid ? uids : NULL, n, false);
	free(uids);
	if (ret < 0) {
		imap_tagged_store_error(s, ret, "EXPUNGE");
		return;
	}
	(void)imap_view_sync(s, true);
	imap_tagged(s, "OK", "EXPUNGE completed");
}

void
imap_cmd_close(struct imap_session *s, bool expunge)
{
	int ret = 0;

	if (expunge && !s->view->readonly)
		ret = expunge_deleted(s, NULL, 0, true);
	imap_view_free(&s->view);
	imap_watch_request(s, 0);
	s->state = IMAP_AUTH;
	if (ret < 0) {
		imap_tagged_store_error(s, ret, "CLOSE");
		return;
	}
	imap_tagged(s, "OK", "CLOSE completed");
}

/* ---- COPY, MOVE ---------------------------------------------------------------------------- */

static int
copy_run(struct store_txn *txn, void *ctx)
{
	struct expunge_ctx *c = ctx;

	for (size_t i = 0; i < c->n; i++) {
		int ret = store_txn_copy(txn, c->mailbox_id, c->uids[i], c->dest, &c->new_uids[i]);

		if (ret == STORE_ERR_NOTFOUND) {
			c->gone[i] = true;
			continue;
		}
		if (ret == STORE_OK && c->move)
			ret = store_txn_expunge_quiet(txn, c->mailbox_id, c->uids[i]);
		if (ret != STORE_OK && ret != STORE_ERR_NOTFOUND)
			return ret;
	}
	return STORE_OK;
}

void
imap_cmd_copy(struct imap_session *s, bool move)
{
	const struct imap_command *cmd = s->cmd;
	struct expunge_ctx c = {0};
	struct store_mailbox mb;
	struct buf src, dst;
	char name[256];
	const char *error;
	size_t k = 0;
	int ret;

	if (cmd->nargs != 2) {
		imap_tagged(s, "BAD", "Usage: %s set mailbox", cmd->name);
		return;
	}
	if (!imap_arg_mailbox(s, &cmd->args[1], name))
		return;
	if (move && s->view->readonly) {
		imap_tagged(s, "NO", "[READ-ONLY] Mailbox is read-only");
		return;
	}
	ret = store_mailbox_get(imap_env.store, s->account_id, name, &mb);
	if (ret == 0) {
		imap_tagged(s, "NO", "[TRYCREATE] Mailbox does not exist");
		return;
	}
	if (ret < 0) {
		imap_tagged_store_error(s, ret, cmd->name);
		return;
	}
	if (!imap_resolve_set(s, &cmd->args[0], &c.uids, &c.n))
		return;
	if (!move && c.n > 0) {
		struct imap_rows rows;
		uint64_t total = 0;

		ret = imap_rows_load(s, c.uids, c.n, &rows);
		for (size_t i = 0; i < rows.n; i++)
			total += rows.v[i].size;
		imap_rows_free(&rows);
		if (ret >= 0)
			ret = imap_quota_room(s, total);
		if (ret <= 0) {
			if (ret < 0)
				imap_tagged_store_error(s, ret, cmd->name);
			free(c.uids);
			return;
		}
	}
	c.mailbox_id = s->view->mailbox_id;
	c.dest = mb.id;
	c.move = move;
	c.new_uids = xcalloc(c.n + 1, sizeof(uint32_t));
	c.gone = xcalloc(c.n + 1, sizeof(bool));
	ret = c.n > 0 ? store_exec(imap_env.store, copy_run, &c, &error) : STORE_OK;
	if (ret != STORE_OK) {
		imap_tagged_store_error(s, ret, cmd->name);
		goto out;
	}
	if (c.n > 0)
		imap_view_written(s, mb.id);
	buf_init(&src, SIZE_MAX / 2);
	buf_init(&dst, SIZE_MAX / 2);
	for (size_t i = 0; i < c.n; i++) {
		if (c.gone[i])
			continue;
		(void)buf_printf(&src, "%s%u", k > 0 ? "," : "", c.uids[i]);
		(void)buf_printf(&dst, "%s%u", k > 0 ? "," : "", c.new_uids[i]);
		k++;
	}
	if (move) {
		struct buf vanished;

		if (k > 0)
			imap_out(s, "* OK [COPYUID %u %s %s] Moved\r\n", mb.uidvalidity,
			         buf_cstr(&src), buf_cstr(&dst));
		buf_init(&vanished, SIZE_MAX / 2);
		for (size_t i = 0; i < c.n; i++) {
			uint32_t seq;

			if (c.gone[i] || (seq = imap_view_remove(s->view, c.uids[i])) == 0)
				continue;
			if (s->qresync)
				(void)buf_printf(&vanished, "%s%u", vanished.len > 0 ? "," : "",
				                 c.uids[i]);
			else
				imap_out(s, "* %u EXPUNGE\r\n", seq);
		}
		if (vanished.len > 0)
			imap_out(s, "* VANISHED %s\r\n", buf_cstr(&vanished));
		buf_deinit(&vanished);
		(void)imap_view_sync(s, true);
		imap_tagged(s, "OK", "MOVE completed");
	} else {
		if (cmd->uid)
			(void)imap_view_sync(s, true);
		if (k > 0)
			imap_tagged(s, "OK", "[COPYUID %u %s %s] COPY completed", mb.uidvalidity,
			            buf_cstr(&src), buf_cstr(&dst));
		else if (c.n > 0)
			imap_tagged(s, "NO", "[EXPUNGEISSUED] The messages were expunged meanwhile");
		else
			imap_tagged(s, "OK", "COPY completed");
	}
	buf_deinit(&src);
	buf_deinit(&dst);
out:
	free(c.uids);
	free(c.new_uids);
	free(c.gone);
}

/* ---- APPEND -------------------------------------------------------------------------------- */

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};

/* "dd-Mon-yyyy hh:mm:ss +zzzz" (day may have a leading space). -1 when malformed. */
static int
parse_datetime(const char *s, int64_t *t_r)
{
	int day, year, hh, mm, ss, zone, n = 0;
	char mon[4], sign;
	struct tm tm = {0};
	int m = -1;

	if (sscanf(s, "%2d-%3s-%4d %2d:%2d:%2d %c%4d%n", &day, mon, &year, &hh, &mm, &ss, &sign,
	           &zone, &n) != 8 || s[n] != '\0' || (sign != '+' && sign != '-'))
		return -1;
	for (int i = 0; i < 12; i++) {
		if (strcasecmp(mon, months[i]) == 0)
			m = i;
	}
	if (m < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1900)
		return -1;
	tm.tm_year = year - 1900;
	tm.tm_mon = m;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	*t_r = (int64_t)timegm(&tm) - (sign == '+' ? 1 : -1) * ((zone / 100) * 3600 + (zone % 100) * 60);
	return 0;
}

struct append_msg {
	uint32_t flags;
	char keywords[STORE_KEYWORDS_MAX];
	int64_t date;
	char blob_id[33];
	uint32_t uid;
};

struct append_ctx {
	int64_t mailbox_id;
	struct append_msg *msgs;
	size_t n;
};

static int
append_run(struct store_txn *txn, void *ctx)
{
	struct append_ctx *c = ctx;

	for (size_t i = 0; i < c->n; i++) {
		int ret = store_txn_append(txn, c->mailbox_id, c->msgs[i].blob_id, c->msgs[i].flags,
		                           c->msgs[i].keywords, c->msgs[i].date, &c->msgs[i].uid);

		if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

void
imap_cmd_append(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	struct append_msg msgs[IMAP_MAX_APPEND];
	struct store_blob *blobs[IMAP_MAX_APPEND] = {0};
	struct append_ctx c = {0, msgs, 0};
	struct store_mailbox mb;
	char name[256];
	const char *error;
	size_t i = 1;
	struct buf uids;
	int ret;

	if (cmd->nargs < 2) {
		imap_tagged(s, "BAD", "Usage: APPEND mailbox [(flags)] [date] message");
		return;
	}
	if (!imap_arg_mailbox(s, &cmd->args[0], name))
		return;
	if (s->append_failed) {
		imap_tagged(s, "NO", "[UNAVAILABLE] The message could not be stored, try again later");
		return;
	}
	while (i < cmd->nargs) {
		struct append_msg *m;
		const struct imap_arg *a = &cmd->args[i];

		if (c.n == IMAP_MAX_APPEND) {
			imap_tagged(s, "NO", "[LIMIT] Too many messages in one APPEND");
			goto out;
		}
		m = &msgs[c.n];
		memset(m, 0, sizeof(*m));
		m->date = (int64_t)time(NULL);
		if (a->type == IMAP_ARG_LIST) {
			if (imap_parse_flags(a->list, a->count, &m->flags, m->keywords) < 0) {
				imap_tagged(s, "BAD", "Invalid flags");
				goto out;
			}
			a = &cmd->args[++i];
			if (i >= cmd->nargs)
				break;
		}
		if (a->type == IMAP_ARG_QUOTED) {
			if (parse_datetime(a->str, &m->date) < 0) {
				imap_tagged(s, "BAD", "Invalid date-time");
				goto out;
			}
			a = &cmd->args[++i];
			if (i >= cmd->nargs)
				break;
		}
		if (a->type != IMAP_ARG_LITERAL && a->type != IMAP_ARG_LITERAL8)
			break;
		if (a->len == 0) {
			imap_tagged(s, "NO", "Cannot store an empty message");
			goto out;
		}
		if (a->flags & IMAP_ARG_FLAG_STREAMED) {
			if (a->num >= s->nappends || s->appends[a->num].blob == NULL) {
				imap_tagged(s, "NO", "[UNAVAILABLE] The message was not stored, try "
				                     "again later");
				goto out;
			}
			blobs[c.n] = s->appends[a->num].blob;
			s->appends[a->num].blob = NULL;
		} else {
			if (store_blob_new(imap_env.store, &blobs[c.n], &error) < 0 ||
			    store_blob_write(blobs[c.n], a->str, a->len) < 0) {
				store_blob_free(&blobs[c.n]);
				imap_tagged(s, "NO", "[UNAVAILABLE] The message could not be stored, try "
				                     "again later");
				goto out;
			}
		}
		memcpy(m->blob_id, store_blob_id(blobs[c.n]), sizeof(m->blob_id));
		c.n++;
		i++;
	}
	if (i != cmd->nargs || c.n == 0) {
		imap_tagged(s, "BAD", "Usage: APPEND mailbox [(flags)] [date] message");
		goto out;
	}
	ret = store_mailbox_get(imap_env.store, s->account_id, name, &mb);
	if (ret == 0) {
		imap_tagged(s, "NO", "[TRYCREATE] Mailbox does not exist");
		goto out;
	}
	if (ret < 0) {
		imap_tagged_store_error(s, ret, "APPEND");
		goto out;
	}
	{
		uint64_t total = 0;

		for (size_t j = 0; j < c.n; j++)
			total += store_blob_size(blobs[j]);
		ret = imap_quota_room(s, total);
		if (ret <= 0) {
			if (ret < 0)
				imap_tagged_store_error(s, ret, "APPEND");
			goto out;
		}
	}
	c.mailbox_id = mb.id;
	ret = exec_with_blobs(append_run, &c, blobs, c.n);
	if (ret != STORE_OK) {
		imap_tagged_store_error(s, ret, "APPEND");
		goto out;
	}
	imap_view_written(s, mb.id);
	(void)imap_view_sync(s, true);
	buf_init(&uids, SIZE_MAX / 2);
	for (size_t j = 0; j < c.n; j++)
		(void)buf_printf(&uids, "%s%u", j > 0 ? "," : "", msgs[j].uid);
	imap_tagged(s, "OK", "[APPENDUID %u %s] APPEND completed", mb.uidvalidity,
	            buf_cstr(&uids));
	buf_deinit(&uids);
out:
	for (size_t j = 0; j < IMAP_MAX_APPEND; j++)
		store_blob_free(&blobs[j]);
}

