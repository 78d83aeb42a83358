/* The selected mailbox as one session sees it, and how it catches up with the store. */
#include "imap/imap_session.h"

#include <stdlib.h>
#include <string.h>

struct imap_view *
imap_view_new(int64_t mailbox_id, const char *name, bool readonly)
{
	struct imap_view *v = xcalloc(1, sizeof(*v));

	v->mailbox_id = mailbox_id;
	(void)!str_copy(v->name, sizeof(v->name), name);
	v->readonly = readonly;
	return v;
}

void
imap_view_free(struct imap_view **vp)
{
	struct imap_view *v = *vp;

	if (v == NULL)
		return;
	free(v->uids);
	free(v->own);
	free(v->saved);
	free(v);
	*vp = NULL;
}

/* Index of the first uid >= uid. */
static uint32_t
lower_bound(const struct imap_view *v, uint32_t uid)
{
	uint32_t lo = 0, hi = v->count;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (v->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint32_t
imap_view_seq(const struct imap_view *v, uint32_t uid)
{
	uint32_t i = lower_bound(v, uid);

	return i < v->count && v->uids[i] == uid ? i + 1 : 0;
}

uint32_t
imap_view_remove(struct imap_view *v, uint32_t uid)
{
	uint32_t seq = imap_view_seq(v, uid);

	if (seq == 0)
		return 0;
	memmove(&v->uids[seq - 1], &v->uids[seq], (v->count - seq) * sizeof(v->uids[0]));
	v->count--;
	return seq;
}

static void
view_append(struct imap_view *v, uint32_t uid)
{
	if (v->count == v->cap) {
		v->cap = v->cap == 0 ? 64 : v->cap * 2;
		v->uids = xrealloc(v->uids, v->cap * sizeof(v->uids[0]));
	}
	v->uids[v->count++] = uid;
}

void
imap_view_own_modseq(struct imap_view *v, uint64_t modseq)
{
	if (v->nown == v->own_cap) {
		v->own_cap = v->own_cap == 0 ? 16 : v->own_cap * 2;
		v->own = xrealloc(v->own, v->own_cap * sizeof(v->own[0]));
	}
	v->own[v->nown++] = modseq;
}

static bool
view_is_own(const struct imap_view *v, uint64_t modseq)
{
	for (size_t i = 0; i < v->nown; i++) {
		if (v->own[i] == modseq)
			return true;
	}
	return false;
}

struct sync_ctx {
	struct imap_session *s;
	uint32_t added;
	struct buf vanished;
};

static int
sync_expunged(uint32_t lo, uint32_t hi, void *ctx)
{
	struct sync_ctx *c = ctx;
	struct imap_session *s = c->s;
	struct imap_view *v = s->view;
	uint32_t i = lower_bound(v, lo);

	/* Lowest first, each EXPUNGE with the sequence number it has once those before it went
	 * (RFC 9051 7.5.1). A range may be the superset of a pruned history: only the view's
	 * own UIDs in it count. */
	while (i < v->count && v->uids[i] <= hi) {
		uint32_t uid = v->uids[i], seq = imap_view_remove(v, uid);

		if (s->qresync)
			(void)buf_printf(&c->vanished, "%s%u", c->vanished.len > 0 ? "," : "", uid);
		else
			imap_out(s, "* %u EXPUNGE\r\n", seq);
	}
	return 0;
}

static int
sync_changed(const struct store_message *m, void *ctx)
{
	struct sync_ctx *c = ctx;
	struct imap_session *s = c->s;
	struct imap_view *v = s->view;
	uint32_t seq;

	if (v->count == 0 || m->uid > v->uids[v->count - 1]) {
		view_append(v, m->uid);
		c->added++;
		return 0;
	}
	seq = imap_view_seq(v, m->uid);
	if (seq == 0 || view_is_own(v, m->modseq))
		return 0;
	imap_out(s, "* %u FETCH (UID %u FLAGS ", seq, m->uid);
	imap_out_flags(s, m->flags, m->keywords);
	if (s->condstore)
		imap_out(s, " MODSEQ (%llu)", (unsigned long long)m->modseq);
	imap_out(s, ")\r\n");
	return 0;
}

int
imap_view_sync(struct imap_session *s, bool expunges)
{
	struct imap_view *v = s->view;
	struct store_mailbox mb;
	struct sync_ctx c = {s, 0, {0}};
	int ret;

	if (v == NULL || !expunges)
		return 0;
	/* Every committed change to the mailbox notifies its sessions (the store's change hook):
	 * no notice since the last look, or none beyond what the view has seen (the session's
	 * own changes), nothing to look at. */
	if (!atomic_exchange(&s->changed, false))
		return 0;
	if (!atomic_exchange(&s->must_look, false) && atomic_load(&s->notice_modseq) <= v->modseq)
		return 0;
	/* The command's snapshot may be older than the commit that sent the notice. */
	store_read_refresh(imap_env.store);
	buf_init(&c.vanished, SIZE_MAX / 2);
	ret = store_mailbox_changes(imap_env.store, v->mailbox_id, v->modseq, sync_changed,
	                            sync_expunged, &c, &mb);
	if (ret == STORE_ERR_NOTFOUND) {
		imap_out(s, "* BYE [NONEXISTENT] The selected mailbox was deleted\r\n");
		s->state = IMAP_LOGOUT;
		buf_deinit(&c.vanished);
		return ret;
	}
	if (ret == STORE_OK) {
		if (c.vanished.len > 0)
			imap_out(s, "* VANISHED %s\r\n", buf_cstr(&c.vanished));
		if (c.added > 0)
			imap_out(s, "* %u EXISTS\r\n", v->count);
		v->modseq = mb.highestmodseq;
		v->uidnext = mb.uidnext;
		v->nown = 0;
	} else {
		atomic_store(&s->must_look, true); /* look again next time */
		atomic_store(&s->changed, true);
	}
	buf_deinit(&c.vanished);
	return ret;
}

bool
imap_view_has_news(struct imap_session *s)
{
	return s->view != NULL && atomic_load(&s->changed) &&
	       (atomic_load(&s->must_look) || atomic_load(&s->notice_modseq) > s->view->modseq);
}

void
imap_view_written(struct imap_session *s, int64_t mailbox_id)
{
	/* The store's change notice reaches the session through its I/O thread, possibly after
	 * this command's own sync: without this, an APPEND would not announce its message, and a
	 * UID STORE on its APPENDUID right after would find nothing. */
	if (s->view != NULL && s->view->mailbox_id == mailbox_id) {
		atomic_store(&s->must_look, true);
		atomic_store(&s->changed, true);
	}
}

void
imap_cmd_noop(struct imap_session *s)
{
	(void)imap_view_sync(s, true);
}

int
imap_view_resolve(struct imap_session *s, const char *set, bool uid, uint32_t **uids_r,
                  size_t *n_r, const char **error_r)
{
	struct imap_view *v = s->view;
	struct imap_seq_range *ranges;
	uint8_t *mark;
	uint32_t *out;
	uint32_t star;
	size_t nranges = 0, n = 0;

	*uids_r = NULL;
	*n_r = 0;
	if (strcmp(set, "$") == 0) {
		if (!v->have_saved) {
			*n_r = 0;
			return 0;
		}
		out = xmalloc((v->nsaved + 1) * sizeof(*out));
		for (size_t i = 0; i < v->nsaved; i++) {
			if (imap_view_seq(v, v->saved[i]) != 0)
				out[n++] = v->saved[i];
		}
		*uids_r = out;
		*n_r = n;
		return 0;
	}
	star = uid ? (v->count > 0 ? v->uids[v->count - 1] : 0) : v->count;
	if (!uid && v->count == 0) {
		*error_r = "No messages";
		return -1;
	}
	if (star == 0)
		star = uid ? UINT32_MAX : 1;
	if (imap_seqset_parse(set, strlen(set), star, NULL, SIZE_MAX, &nranges, error_r) < 0)
		return -1;
	ranges = xmalloc(nranges * sizeof(*ranges));
	if (imap_seqset_parse(set, strlen(set), star, ranges, nranges, &nranges, error_r) < 0) {
		free(ranges);
		return -1;
	}
	mark = xcalloc(v->count / 8 + 1, 1);
	for (size_t i = 0; i < nranges; i++) {
		uint32_t lo, hi;

		if (uid) {
			lo = lower_bound(v, ranges[i].lo);
			hi = lower_bound(v, ranges[i].hi);
			if (hi < v->count && v->uids[hi] == ranges[i].hi)
				hi++;
		} else {
			if (ranges[i].hi > v->count) {
				free(mark);
				free(ranges);
				*error_r = "Invalid message sequence number";
				return -1;
			}
			lo = ranges[i].lo - 1;
			hi = ranges[i].hi;
		}
		for (uint32_t j = lo; j < hi; j++)
			mark[j / 8] |= (uint8_t)(1u << (j % 8));
	}
	out = xmalloc(((size_t)v->count + 1) * sizeof(*out));
	for (uint32_t j = 0; j < v->count; j++) {
		if (mark[j / 8] & (1u << (j % 8)))
			out[n++] = v->uids[j];
	}
	free(mark);
	free(ranges);
	*uids_r = out;
	*n_r = n;
	return 0;
}
