/* IMAP SORT and THREAD (RFC 5256, RFC 5957 DISPLAYFROM/DISPLAYTO): sort keys are computed once
 * per message (one read of its header), then the messages are sorted with qsort and ties broken
 * by sequence number. THREAD=REFERENCES follows the six steps of RFC 5256 §3 with containers
 * linked by pointers; nothing recurses over the thread trees (a reply chain may be as long as the
 * mailbox), so pruning, sorting and writing are loops over flat arrays and an explicit stack.
 *
 * Invariants of the REFERENCES containers after step (4): dummies (containers without a
 * message) only occur in the root set and have at least two children; no container is its own
 * ancestor (links that would make a loop are never made). */
#include "imap/imap_sort.h"

#include "core/hmap.h"
#include "mime/mime_header.h"

#include <stdlib.h>
#include <string.h>

/* ---- base subject (RFC 5256 §2.1) ----------------------------------------------------------- */

static bool
is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* subj-blob = "[" *BLOBCHAR "]" *WSP at s[i]: the position after it, or 0 if none. */
static size_t
match_blob(const uint8_t *s, size_t i, size_t end)
{
	if (i >= end || s[i] != '[')
		return 0;
	for (i++; i < end && s[i] != ']'; i++) {
		if (s[i] == '[' || s[i] == 0)
			return 0;
	}
	if (i >= end)
		return 0;
	i++;
	while (i < end && is_wsp(s[i]))
		i++;
	return i;
}

static bool
has_prefix(const uint8_t *s, size_t i, size_t end, const char *p)
{
	size_t n = strlen(p);

	return end - i >= n && memcmp(s + i, p, n) == 0;
}

/* subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" at s[i] (text already folded): the
 * position after it, or 0. */
static size_t
match_refwd(const uint8_t *s, size_t i, size_t end)
{
	static const char *const words[] = {"fwd", "fw", "re"};

	for (size_t w = 0; w < N_ELEMENTS(words); w++) {
		size_t j = i, b;

		if (!has_prefix(s, i, end, words[w]))
			continue;
		j += strlen(words[w]);
		while (j < end && is_wsp(s[j]))
			j++;
		b = match_blob(s, j, end);
		if (b != 0)
			j = b;
		if (j < end && s[j] == ':')
			return j + 1;
	}
	return 0;
}

int
imap_base_subject(struct buf *out, const char *subject, size_t len, bool *is_reply_r)
{
	struct buf tmp, dec, folded;
	const uint8_t *s;
	size_t start, end, w = 0;
	bool reply = false;
	int ret = 0;

	buf_init(&tmp, IMAP_SEARCH_MAX_TEXT);
	buf_init(&dec, IMAP_SEARCH_MAX_TEXT);
	buf_init(&folded, IMAP_SEARCH_MAX_TEXT);
	/* (1) encoded words to UTF-8, tabs and line breaks to spaces, runs of spaces to one */
	(void)mime_header_unfold(&tmp, (const uint8_t *)subject, len);
	(void)mime_header_decode(&dec, tmp.data, tmp.len);
	(void)imap_search_fold(&folded, dec.data, dec.len);
	for (size_t i = 0; i < folded.len; i++) {
		uint8_t c = folded.data[i];

		if (c == '\t' || c == '\r' || c == '\n')
			c = ' ';
		if (c == ' ' && w > 0 && folded.data[w - 1] == ' ')
			continue;
		folded.data[w++] = c;
	}
	folded.len = w;
	s = folded.data != NULL ? folded.data : (const uint8_t *)"";
	start = 0;
	end = folded.len;
	for (;;) {
		bool changed;

		/* (2) trailers: subj-trailer = "(fwd)" / WSP */
		for (;;) {
			if (end > start && is_wsp(s[end - 1])) {
				end--;
			} else if (end - start >= 5 && memcmp(s + end - 5, "(fwd)", 5) == 0) {
				end -= 5;
				reply = true;
			} else {
				break;
			}
		}
		/* (5) repeat (3) and (4) until nothing changes */
		do {
			size_t b;

			changed = false;
			/* (3) subj-leader = (*subj-blob subj-refwd) / WSP */
			for (;;) {
				size_t j = start, r;

				if (start < end && is_wsp(s[start])) {
					start++;
					changed = true;
					continue;
				}
				while ((b = match_blob(s, j, end)) != 0)
					j = b;
				r = match_refwd(s, j, end);
				if (r == 0)
					break;
				start = r;
				reply = true;
				changed = true;
			}
			/* (4) a leading subj-blob, when a non-empty subj-base remains */
			b = match_blob(s, start, end);
			if (b != 0 && b < end) {
				start = b;
				changed = true;
			}
		} while (changed);
		/* (6) subj-fwd-hdr "[fwd:" and subj-fwd-trl "]" */
		if (end - start >= 6 && has_prefix(s, start, end, "[fwd:") && s[end - 1] == ']') {
			start += 5;
			end--;
			reply = true;
			continue;
		}
		break;
	}
	if (tmp.err || dec.err || folded.err || buf_append(out, s + start, end - start) < 0)
		ret = -1;
	buf_deinit(&tmp);
	buf_deinit(&dec);
	buf_deinit(&folded);
	if (is_reply_r != NULL)
		*is_reply_r = reply;
	return ret;
}

/* ---- per-message keys ------------------------------------------------------------------------ */

enum addr_kind { ADDR_FROM, ADDR_TO, ADDR_CC, ADDR_DISPLAYFROM, ADDR_DISPLAYTO, ADDR_COUNT };

struct msgkey {
	const struct imap_search_msg *msg;
	size_t index;         /* into the caller's array */
	int64_t date;         /* sent date, UTC seconds */
	char *subject;        /* base subject, folded */
	bool reply;           /* the base subject dropped a Re:/Fwd: */
	char *addr[ADDR_COUNT]; /* folded */
};

static void
msgkey_free(struct msgkey *k)
{
	free(k->subject);
	for (size_t i = 0; i < ADDR_COUNT; i++)
		free(k->addr[i]);
}

static char *
buf_steal_str(struct buf *b)
{
	return xmemdup0(b->data != NULL ? (const char *)b->data : "", b->len);
}

/* The first mailbox of an address field: its local part (RFC 5256 addr-mailbox), or for the
 * display forms (RFC 5957 §3) the decoded display name, else "mailbox@host". */
static char *
first_address(const uint8_t *msg, size_t len, const char *field, bool display)
{
	struct buf v, t, f;
	struct mime_pool *pool;
	struct mime_address *list = NULL;
	char *ret;

	buf_init(&v, IMAP_SEARCH_MAX_TEXT);
	buf_init(&t, IMAP_SEARCH_MAX_TEXT);
	buf_init(&f, IMAP_SEARCH_MAX_TEXT);
	pool = mime_pool_new();
	if (imap_search_header_get(&v, msg, len, field) > 0)
		(void)mime_address_parse(pool, v.data, v.len, &list);
	while (list != NULL && list->type != MIME_ADDR_MAILBOX)
		list = list->next;
	if (list != NULL) {
		bool named = false;

		if (display && list->name.s != NULL) {
			(void)mime_header_decode(&t, (const uint8_t *)list->name.s, list->name.len);
			for (size_t i = 0; i < t.len; i++)
				named |= !is_wsp(t.data[i]);
		}
		if (!named) {
			buf_reset(&t);
			if (list->mailbox.s != NULL)
				(void)buf_append(&t, list->mailbox.s, list->mailbox.len);
			if (display && list->host.s != NULL) {
				(void)buf_append_byte(&t, '@');
				(void)buf_append(&t, list->host.s, list->host.len);
			}
		}
		(void)imap_search_fold(&f, t.data, t.len);
	}
	ret = buf_steal_str(&f);
	mime_pool_free(&pool);
	buf_deinit(&v);
	buf_deinit(&t);
	buf_deinit(&f);
	return ret;
}

enum {
	NEED_DATE = 1 << 0,
	NEED_SUBJECT = 1 << 1,
	NEED_ADDR = 1 << 2, /* shifted by enum addr_kind */
};

/* Fills in k from the message's raw text (data may be NULL); what need does not ask for stays
 * NULL / the internal date. */
static void
msgkey_fill(struct msgkey *k, const struct imap_search_msg *m, size_t index, unsigned int need,
            const uint8_t *data, size_t len)
{
	struct buf v;

	memset(k, 0, sizeof(*k));
	k->msg = m;
	k->index = index;
	k->date = m->internaldate;
	buf_init(&v, IMAP_SEARCH_MAX_TEXT);
	if (need & NEED_DATE) {
		int64_t utc, day;

		if (imap_search_header_get(&v, data, len, "Date") > 0 &&
		    imap_search_parse_date((const char *)v.data, v.len, &utc, &day) == 0)
			k->date = utc;
	}
	if (need & NEED_SUBJECT) {
		struct buf b;

		buf_reset(&v);
		buf_init(&b, IMAP_SEARCH_MAX_TEXT);
		if (imap_search_header_get(&v, data, len, "Subject") > 0)
			(void)imap_base_subject(&b, (const char *)v.data, v.len, &k->reply);
		k->subject = buf_steal_str(&b);
		buf_deinit(&b);
	}
	for (unsigned int a = 0; a < ADDR_COUNT; a++) {
		static const char *const fields[ADDR_COUNT] = {"From", "To", "Cc", "From", "To"};

		if (need & (NEED_ADDR << a))
			k->addr[a] = first_address(data, len, fields[a], a >= ADDR_DISPLAYFROM);
	}
	buf_deinit(&v);
}

/* Reads the message when need asks for anything and fills in k. Returns 0, or -1 when
 * read_message failed (k is then zeroed). */
static int
msgkey_load(struct msgkey *k, const struct imap_search_msg *m, size_t index, unsigned int need,
            const uint8_t **data_r, size_t *len_r)
{
	int (*read)(void *, const uint8_t **, size_t *) =
		m->read_header != NULL ? m->read_header : m->read_message;
	const uint8_t *data = NULL;
	size_t len = 0;

	memset(k, 0, sizeof(*k));
	/* every key is in the header */
	if (need != 0 && read != NULL && read(m->ctx, &data, &len) < 0)
		return -1;
	if (data == NULL)
		len = 0;
	msgkey_fill(k, m, index, need, data, len);
	if (data_r != NULL) {
		*data_r = data;
		*len_r = len;
	}
	return 0;
}

/* ---- SORT ------------------------------------------------------------------------------------ */

static const struct {
	const char *name;
	enum imap_sort_key key;
} sort_keys[] = {
	{"ARRIVAL", IMAP_SORT_ARRIVAL}, {"CC", IMAP_SORT_CC},
	{"DATE", IMAP_SORT_DATE},       {"FROM", IMAP_SORT_FROM},
	{"SIZE", IMAP_SORT_SIZE},       {"SUBJECT", IMAP_SORT_SUBJECT},
	{"TO", IMAP_SORT_TO},           {"DISPLAYFROM", IMAP_SORT_DISPLAYFROM},
	{"DISPLAYTO", IMAP_SORT_DISPLAYTO},
};

int
imap_sort_parse(const struct imap_arg *arg, struct imap_sort_program *prog_r,
                const char **error_r)
{
	const struct imap_arg *list;
	size_t count;
	bool reverse = false;

	memset(prog_r, 0, sizeof(*prog_r));
	if (imap_arg_get_list(arg, &list, &count) < 0 || count == 0) {
		*error_r = "Sort criteria must be a non-empty list";
		return -1;
	}
	for (size_t i = 0; i < count; i++) {
		size_t k;

		if (imap_arg_atom_equals(&list[i], "REVERSE")) {
			if (reverse) {
				*error_r = "REVERSE twice";
				return -1;
			}
			reverse = true;
			continue;
		}
		for (k = 0; k < N_ELEMENTS(sort_keys); k++) {
			if (imap_arg_atom_equals(&list[i], sort_keys[k].name))
				break;
		}
		if (k == N_ELEMENTS(sort_keys)) {
			*error_r = "Unknown sort criterion";
			return -1;
		}
		if (prog_r->count == IMAP_SORT_MAX_CRITERIA) {
			*error_r = "Too many sort criteria";
			return -1;
		}
		prog_r->crit[prog_r->count].key = sort_keys[k].key;
		prog_r->crit[prog_r->count].reverse = reverse;
		prog_r->count++;
		reverse = false;
	}
	if (reverse || prog_r->count == 0) {
		*error_r = "REVERSE without a sort criterion";
		return -1;
	}
	return 0;
}

static unsigned int
sort_needs(const struct imap_sort_program *prog)
{
	unsigned int need = 0;

	for (unsigned int i = 0; i < prog->count; i++) {
		switch (prog->crit[i].key) {
		case IMAP_SORT_ARRIVAL:
		case IMAP_SORT_SIZE:
			break;
		case IMAP_SORT_DATE:
			need |= NEED_DATE;
			break;
		case IMAP_SORT_SUBJECT:
			need |= NEED_SUBJECT;
			break;
		case IMAP_SORT_FROM:
			need |= NEED_ADDR << ADDR_FROM;
			break;
		case IMAP_SORT_TO:
			need |= NEED_ADDR << ADDR_TO;
			break;
		case IMAP_SORT_CC:
			need |= NEED_ADDR << ADDR_CC;
			break;
		case IMAP_SORT_DISPLAYFROM:
			need |= NEED_ADDR << ADDR_DISPLAYFROM;
			break;
		case IMAP_SORT_DISPLAYTO:
			need |= NEED_ADDR << ADDR_DISPLAYTO;
			break;
		}
	}
	return need;
}

bool
imap_sort_needs_message(const struct imap_sort_program *prog)
{
	return sort_needs(prog) != 0;
}

struct sort_item {
	const struct imap_sort_program *prog;
	struct msgkey key;
};

static int
cmp_num(uint64_t a, uint64_t b)
{
	return a < b ? -1 : a > b;
}

static int
cmp_i64(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b;
}

static int
cmp_sort_item(const void *pa, const void *pb)
{
	const struct sort_item *a = pa, *b = pb;
	const struct imap_sort_program *prog = a->prog;

	for (unsigned int i = 0; i < prog->count; i++) {
		int c = 0;

		switch (prog->crit[i].key) {
		case IMAP_SORT_ARRIVAL:
			c = cmp_i64(a->key.msg->internaldate, b->key.msg->internaldate);
			break;
		case IMAP_SORT_SIZE:
			c = cmp_num(a->key.msg->size, b->key.msg->size);
			break;
		case IMAP_SORT_DATE:
			c = cmp_i64(a->key.date, b->key.date);
			break;
		case IMAP_SORT_SUBJECT:
			c = strcmp(a->key.subject, b->key.subject);
			break;
		case IMAP_SORT_FROM:
			c = strcmp(a->key.addr[ADDR_FROM], b->key.addr[ADDR_FROM]);
			break;
		case IMAP_SORT_TO:
			c = strcmp(a->key.addr[ADDR_TO], b->key.addr[ADDR_TO]);
			break;
		case IMAP_SORT_CC:
			c = strcmp(a->key.addr[ADDR_CC], b->key.addr[ADDR_CC]);
			break;
		case IMAP_SORT_DISPLAYFROM:
			c = strcmp(a->key.addr[ADDR_DISPLAYFROM], b->key.addr[ADDR_DISPLAYFROM]);
			break;
		case IMAP_SORT_DISPLAYTO:
			c = strcmp(a->key.addr[ADDR_DISPLAYTO], b->key.addr[ADDR_DISPLAYTO]);
			break;
		}
		if (c != 0)
			return prog->crit[i].reverse ? -c : c;
	}
	/* RFC 5256 §3: exact matches in mailbox order */
	return cmp_num(a->key.msg->seq, b->key.msg->seq);
}

int
imap_sort(const struct imap_sort_program *prog, const struct imap_search_msg *msgs, size_t n,
          size_t *order_r)
{
	unsigned int need = sort_needs(prog);
	struct sort_item *items;
	size_t loaded = 0;
	int ret = 0;

	if (n == 0)
		return 0;
	items = xcalloc(n, sizeof(*items));
	for (; loaded < n; loaded++) {
		items[loaded].prog = prog;
		if (msgkey_load(&items[loaded].key, &msgs[loaded], loaded, need, NULL, NULL) < 0) {
			ret = -1;
			break;
		}
	}
	if (ret == 0) {
		qsort(items, n, sizeof(*items), cmp_sort_item);
		for (size_t i = 0; i < n; i++)
			order_r[i] = items[i].key.index;
	}
	for (size_t i = 0; i < loaded; i++)
		msgkey_free(&items[i].key);
	free(items);
	return ret;
}

int
imap_sort_write(struct buf *out, const struct imap_search_msg *msgs, const size_t *order,
                size_t n, bool uid)
{
	for (size_t i = 0; i < n; i++) {
		const struct imap_search_msg *m = &msgs[order[i]];

		(void)buf_printf(out, " %u", uid ? m->uid : m->seq);
	}
	return out->err ? -1 : 0;
}

/* ---- THREAD ---------------------------------------------------------------------------------- */

int
imap_thread_parse_algorithm(const struct imap_arg *arg, enum imap_thread_algorithm *alg_r,
                            const char **error_r)
{
	if (imap_arg_atom_equals(arg, "ORDEREDSUBJECT"))
		*alg_r = IMAP_THREAD_ORDEREDSUBJECT;
	else if (imap_arg_atom_equals(arg, "REFERENCES"))
		*alg_r = IMAP_THREAD_REFERENCES;
	else {
		*error_r = "Unknown threading algorithm";
		return -1;
	}
	return 0;
}

/* A thread container (RFC 5256 §3 REFERENCES): a message, or a dummy (key NULL) standing for a
 * message that is only referenced. */
struct cont {
	struct cont *parent;
	struct cont *child; /* first child */
	struct cont *last;  /* last child: appending is O(1), a flat thread is not quadratic */
	struct cont *next;  /* next sibling */
	struct msgkey *key; /* NULL: dummy */
	bool removed;       /* pruned, or merged away from the root set */
};

struct tctx {
	struct cont **all; /* every container, in creation order */
	size_t nall, cap;
	struct hmap *ids;  /* Message-ID -> container */
};

static struct cont *
cont_new(struct tctx *t, struct msgkey *key)
{
	struct cont *c = xcalloc(1, sizeof(*c));

	if (t->nall == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 64;
		t->all = xrealloc(t->all, t->cap * sizeof(*t->all));
	}
	t->all[t->nall++] = c;
	c->key = key;
	return c;
}

/* Whether a is c or one of c's ancestors. */
static bool
is_ancestor_or_self(const struct cont *a, const struct cont *c)
{
	for (; c != NULL; c = c->parent) {
		if (c == a)
			return true;
	}
	return false;
}

static void
cont_unlink(struct cont *c)
{
	struct cont *p = c->parent, *prev = NULL;

	if (p == NULL)
		return;
	for (struct cont *k = p->child; k != c; k = k->next)
		prev = k;
	if (prev != NULL)
		prev->next = c->next;
	else
		p->child = c->next;
	if (p->last == c)
		p->last = prev;
	c->parent = NULL;
	c->next = NULL;
}

/* Appends c (without a parent) to parent's children. */
static void
cont_link(struct cont *parent, struct cont *c)
{
	if (parent->last != NULL)
		parent->last->next = c;
	else
		parent->child = c;
	parent->last = c;
	c->parent = parent;
	c->next = NULL;
}

/* The next "<...>" of a header value (the msg-id of RFC 5322 §3.6.4, leniently: anything between
 * angle brackets but blanks and line breaks, which are dropped). The id is written to id_out,
 * brackets included. Returns false when there is none left. */
static bool
next_msgid(const uint8_t *p, size_t len, size_t *pos, struct buf *id_out)
{
	while (*pos < len) {
		size_t i = *pos, j;

		while (i < len && p[i] != '<')
			i++;
		if (i >= len) {
			*pos = len;
			return false;
		}
		for (j = i + 1; j < len && p[j] != '>' && p[j] != '<'; j++)
			;
		if (j >= len) {
			*pos = len;
			return false;
		}
		*pos = p[j] == '>' ? j + 1 : j;
		if (p[j] != '>' || j == i + 1)
			continue;
		buf_reset(id_out);
		for (size_t k = i; k <= j; k++) {
			if (p[k] != ' ' && p[k] != '\t' && p[k] != '\r' && p[k] != '\n')
				(void)buf_append_byte(id_out, p[k]);
		}
		if (id_out->len > 2 && !id_out->err)
			return true;
	}
	return false;
}

static struct cont *
cont_for_id(struct tctx *t, const struct buf *id)
{
	struct cont *c = hmap_get(t->ids, id->data, id->len);

	if (c == NULL) {
		c = cont_new(t, NULL);
		(void)hmap_put(t->ids, id->data, id->len, c);
	}
	return c;
}

/* REFERENCES step (1) for one message: data is its raw text. */
static void
thread_link_message(struct tctx *t, struct msgkey *k, const uint8_t *data, size_t len)
{
	struct buf v, id;
	struct cont *mc = NULL, *prev = NULL;
	size_t pos = 0, nrefs = 0, skip = 0;

	buf_init(&v, IMAP_SEARCH_MAX_TEXT);
	buf_init(&id, 4096);
	if (imap_search_header_get(&v, data, len, "Message-ID") > 0 &&
	    next_msgid(v.data, v.len, &pos, &id)) {
		mc = hmap_get(t->ids, id.data, id.len);
		if (mc != NULL && mc->key == NULL) {
			mc->key = k; /* it was referenced before it was seen */
		} else if (mc == NULL) {
			mc = cont_new(t, k);
			(void)hmap_put(t->ids, id.data, id.len, mc);
		} else {
			mc = NULL; /* a duplicate Message-ID: the message stands alone */
		}
	}
	if (mc == NULL)
		mc = cont_new(t, k);

	/* (1)(A) References, else the first msg-id of In-Reply-To; only the last
	 * IMAP_THREAD_MAX_REFERENCES ids of a long References count. */
	buf_reset(&v);
	if (imap_search_header_get(&v, data, len, "References") > 0) {
		pos = 0;
		while (next_msgid(v.data, v.len, &pos, &id))
			nrefs++;
	}
	if (nrefs == 0) {
		buf_reset(&v);
		if (imap_search_header_get(&v, data, len, "In-Reply-To") > 0) {
			pos = 0;
			nrefs = next_msgid(v.data, v.len, &pos, &id) ? 1 : 0;
		}
	}
	if (nrefs > IMAP_THREAD_MAX_REFERENCES)
		skip = nrefs - IMAP_THREAD_MAX_REFERENCES;
	pos = 0;
	for (size_t i = 0; i < nrefs && next_msgid(v.data, v.len, &pos, &id); i++) {
		struct cont *c;

		if (i < skip)
			continue;
		c = cont_for_id(t, &id);
		/* link prev -> c unless c has a parent already or it would make a loop */
		if (prev != NULL && c->parent == NULL && !is_ancestor_or_self(c, prev))
			cont_link(prev, c);
		prev = c;
	}
	/* (1)(B) the message's parent is the last reference (none: a root); a parent it has from
	 * a truncated References of another message is replaced */
	if (prev == NULL || !is_ancestor_or_self(mc, prev)) {
		cont_unlink(mc);
		if (prev != NULL)
			cont_link(prev, mc);
	}
	buf_deinit(&v);
	buf_deinit(&id);
}

/* The message that dates a container: itself, or a dummy's first child. */
static const struct msgkey *
cont_key(const struct cont *c)
{
	while (c->key == NULL && c->child != NULL)
		c = c->child;
	return c->key;
}

static int
cmp_cont_date(const void *pa, const void *pb)
{
	const struct msgkey *a = cont_key(*(struct cont *const *)pa);
	const struct msgkey *b = cont_key(*(struct cont *const *)pb);
	int c;

	if (a == NULL || b == NULL)
		return (a == NULL) - (b == NULL);
	c = cmp_i64(a->date, b->date);
	return c != 0 ? c : cmp_num(a->msg->seq, b->msg->seq);
}

/* REFERENCES step (6): each set of siblings by sent date, ties by sequence number. Children
 * only ever hold messages, so the order in which the sets are sorted does not matter. */
static void
sort_children(struct cont *c, struct cont ***tmp, size_t *tmp_cap)
{
	size_t n = 0;
	struct cont **pp;

	for (struct cont *k = c->child; k != NULL; k = k->next)
		n++;
	if (n < 2)
		return;
	if (n > *tmp_cap) {
		*tmp_cap = n;
		*tmp = xrealloc(*tmp, n * sizeof(**tmp));
	}
	n = 0;
	for (struct cont *k = c->child; k != NULL; k = k->next)
		(*tmp)[n++] = k;
	qsort(*tmp, n, sizeof(**tmp), cmp_cont_date);
	pp = &c->child;
	for (size_t i = 0; i < n; i++) {
		*pp = (*tmp)[i];
		pp = &(*tmp)[i]->next;
	}
	*pp = NULL;
	c->last = (*tmp)[n - 1];
}

static void
sort_all_children(struct tctx *t)
{
	struct cont **tmp = NULL;
	size_t cap = 0;

	for (size_t i = 0; i < t->nall; i++) {
		if (!t->all[i]->removed)
			sort_children(t->all[i], &tmp, &cap);
	}
	free(tmp);
}

/* REFERENCES step (4): dummies below the root are replaced by their children; dummies in the
 * root set go when they have no child, and give way to their child when they have one. Done
 * without recursion: splicing one dummy does not depend on the others. */
static void
prune_dummies(struct tctx *t)
{
	for (size_t i = 0; i < t->nall; i++) {
		struct cont *d = t->all[i], *p, *prev = NULL, **pp;

		if (d->key != NULL || d->parent == NULL)
			continue;
		p = d->parent;
		for (struct cont *k = p->child; k != d; k = k->next)
			prev = k;
		pp = prev != NULL ? &prev->next : &p->child;
		for (struct cont *k = d->child; k != NULL; k = k->next)
			k->parent = p;
		if (d->child != NULL) {
			d->last->next = d->next;
			*pp = d->child;
			if (p->last == d)
				p->last = d->last;
		} else {
			*pp = d->next;
			if (p->last == d)
				p->last = prev;
		}
		d->parent = d->child = d->last = d->next = NULL;
		d->removed = true;
	}
	for (size_t i = 0; i < t->nall; i++) {
		struct cont *d = t->all[i];

		if (d->key != NULL || d->removed || d->parent != NULL)
			continue;
		if (d->child == NULL) {
			d->removed = true;
		} else if (d->child->next == NULL) {
			d->child->parent = NULL;
			d->child = d->last = NULL;
			d->removed = true;
		}
	}
}

/* REFERENCES step (5): roots with the same base subject are gathered. roots is sorted by date,
 * so the table takes the oldest of equals. */
static void
gather_subjects(struct tctx *t, struct cont **roots, size_t nroots)
{
	struct hmap *subjects = hmap_new();

	for (size_t i = 0; i < nroots; i++) { /* (B) */
		struct cont *r = roots[i], *e;
		const struct msgkey *k = cont_key(r);

		if (k == NULL || k->subject[0] == '\0')
			continue;
		e = hmap_get(subjects, k->subject, strlen(k->subject));
		if (e == NULL || (e->key != NULL && r->key == NULL) ||
		    (e->key != NULL && r->key != NULL && e->key->reply && !r->key->reply))
			(void)hmap_put(subjects, k->subject, strlen(k->subject), r);
	}
	for (size_t i = 0; i < nroots; i++) { /* (C) */
		struct cont *r = roots[i], *e, *d;
		const struct msgkey *k = cont_key(r);

		if (r->removed || k == NULL || k->subject[0] == '\0')
			continue;
		e = hmap_get(subjects, k->subject, strlen(k->subject));
		if (e == NULL || e == r)
			continue;
		if (e->key == NULL && r->key == NULL) {
			/* both dummies: the table's takes the other's children */
			while (r->child != NULL) {
				struct cont *c = r->child;

				cont_unlink(c);
				cont_link(e, c);
			}
			r->removed = true;
		} else if (e->key == NULL || (!e->key->reply && r->key->reply)) {
			r->removed = true; /* it leaves the root set */
			if (r->key == NULL) {
				while (r->child != NULL) {
					struct cont *c = r->child;

					cont_unlink(c);
					cont_link(e, c);
				}
			} else {
				cont_link(e, r);
			}
		} else {
			/* siblings under a new dummy, which takes the table message's place */
			d = cont_new(t, NULL);
			for (size_t j = 0; j < nroots; j++) {
				if (roots[j] == e)
					roots[j] = d;
			}
			cont_link(d, e);
			if (r->key == NULL) {
				while (r->child != NULL) {
					struct cont *c = r->child;

					cont_unlink(c);
					cont_link(d, c);
				}
			} else {
				cont_link(d, r);
			}
			r->removed = true;
			(void)hmap_put(subjects, k->subject, strlen(k->subject), d);
		}
	}
	hmap_free(&subjects);
}

/* Writes one thread (a root) as RFC 5256 §4 thread-list, with an explicit stack. */
enum { W_NODE, W_NODE_PAREN, W_CLOSE };

struct witem {
	struct cont *c;
	int what;
};

static void
write_thread(struct buf *out, struct cont *root, bool uid, struct witem *stack)
{
	size_t sp = 0;

	stack[sp++] = (struct witem){root, W_NODE_PAREN};
	while (sp > 0 && !out->err) {
		struct witem it = stack[--sp];
		struct cont *c = it.c;
		size_t n = 0;

		if (it.what == W_CLOSE) {
			(void)buf_append_byte(out, ')');
			continue;
		}
		if (it.what == W_NODE_PAREN) {
			(void)buf_append_byte(out, '(');
			stack[sp++] = (struct witem){NULL, W_CLOSE};
		}
		if (c->key != NULL)
			(void)buf_printf(out, "%u", uid ? c->key->msg->uid : c->key->msg->seq);
		for (struct cont *k = c->child; k != NULL; k = k->next)
			n++;
		if (n == 0)
			continue;
		if (c->key != NULL)
			(void)buf_append_byte(out, ' ');
		if (n == 1) {
			stack[sp++] = (struct witem){c->child, W_NODE};
			continue;
		}
		/* several children: "(a ...)(b ...)", pushed last first */
		{
			size_t base = sp;

			for (struct cont *k = c->child; k != NULL; k = k->next)
				stack[sp++] = (struct witem){k, W_NODE_PAREN};
			for (size_t i = 0; i < n / 2; i++) {
				struct witem tmp = stack[base + i];

				stack[base + i] = stack[sp - 1 - i];
				stack[sp - 1 - i] = tmp;
			}
		}
	}
}

static int
cmp_key_ptr_subject(const void *pa, const void *pb)
{
	const struct msgkey *a = *(struct msgkey *const *)pa, *b = *(struct msgkey *const *)pb;
	int c = strcmp(a->subject, b->subject);

	if (c == 0)
		c = cmp_i64(a->date, b->date);
	return c != 0 ? c : cmp_num(a->msg->seq, b->msg->seq);
}

int
imap_thread(enum imap_thread_algorithm alg, const struct imap_search_msg *msgs, size_t n,
            bool uid, struct buf *out)
{
	struct tctx t;
	struct msgkey *keys;
	struct cont **roots = NULL;
	struct witem *stack;
	size_t loaded = 0, nroots = 0;
	int ret = 0;

	if (n == 0)
		return 0;
	memset(&t, 0, sizeof(t));
	keys = xcalloc(n, sizeof(*keys));
	t.ids = hmap_new();
	for (; loaded < n; loaded++) {
		const uint8_t *data;
		size_t len;

		if (msgkey_load(&keys[loaded], &msgs[loaded], loaded, NEED_DATE | NEED_SUBJECT, &data,
		                &len) < 0) {
			ret = -1;
			break;
		}
		if (alg == IMAP_THREAD_REFERENCES)
			thread_link_message(&t, &keys[loaded], data, len);
	}
	/* keys[] is not reordered after containers point into it */
	if (ret == 0 && alg == IMAP_THREAD_ORDEREDSUBJECT) {
		struct msgkey **order = xmalloc(n * sizeof(*order));

		for (size_t i = 0; i < n; i++)
			order[i] = &keys[i];
		qsort(order, n, sizeof(*order), cmp_key_ptr_subject);
		/* RFC 5256 §3 ORDEREDSUBJECT: one thread per base subject, the first message the
		 * parent of the others */
		for (size_t i = 0; i < n;) {
			struct cont *root = cont_new(&t, order[i]);
			size_t j = i + 1;

			while (j < n && strcmp(order[j]->subject, order[i]->subject) == 0)
				cont_link(root, cont_new(&t, order[j++]));
			i = j;
		}
		free(order);
	} else if (ret == 0) {
		prune_dummies(&t);
	}
	if (ret == 0) {
		roots = xmalloc(t.nall * sizeof(*roots));
		for (size_t i = 0; i < t.nall; i++) {
			if (t.all[i]->parent == NULL && !t.all[i]->removed)
				roots[nroots++] = t.all[i];
		}
		sort_all_children(&t);
		qsort(roots, nroots, sizeof(*roots), cmp_cont_date);
		if (alg == IMAP_THREAD_REFERENCES) {
			gather_subjects(&t, roots, nroots);
			sort_all_children(&t);
			{
				size_t w = 0;

				for (size_t i = 0; i < nroots; i++) {
					if (!roots[i]->removed)
						roots[w++] = roots[i];
				}
				nroots = w;
			}
			qsort(roots, nroots, sizeof(*roots), cmp_cont_date);
		}
		stack = xmalloc((2 * t.nall + 2) * sizeof(*stack));
		for (size_t i = 0; i < nroots; i++)
			write_thread(out, roots[i], uid, stack);
		free(stack);
		if (out->err)
			ret = -1;
	}
	free(roots);
	for (size_t i = 0; i < t.nall; i++)
		free(t.all[i]);
	free(t.all);
	hmap_free(&t.ids);
	for (size_t i = 0; i < loaded; i++)
		msgkey_free(&keys[i]);
	free(keys);
	return ret;
}
