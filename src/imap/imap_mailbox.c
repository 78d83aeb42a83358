/* Mailbox commands: LIST/LSUB (with LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CHILDREN), CREATE
 * (CREATE-SPECIAL-USE), DELETE, RENAME, SUBSCRIBE, STATUS, SELECT/EXAMINE (CONDSTORE, QRESYNC).
 * They run on a worker. Names are kept as the client sends them (modified UTF-7, RFC 3501
 * 5.1.3); the hierarchy separator is "/". */
#include "imap/imap_session.h"
#include "imap/imap_utf7.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_NAME 255

/* ---- names -------------------------------------------------------------------------------- */

/* Checks and normalises a mailbox name into out: "inbox" in any case (and as the first level)
 * becomes INBOX; a trailing "/" is dropped when trailing_ok. NULL or a reason. */
static const char *
norm_name(const char *in, char out[MAX_NAME + 1], bool trailing_ok)
{
	size_t len = strlen(in);

	if (len == 0)
		return "Empty mailbox name";
	if (len > MAX_NAME)
		return "Mailbox name too long";
	memcpy(out, in, len + 1);
	if (trailing_ok && len > 1 && out[len - 1] == '/')
		out[--len] = '\0';
	if (out[0] == '/' || out[len - 1] == '/' || strstr(out, "//") != NULL)
		return "Invalid hierarchy in mailbox name";
	for (const unsigned char *p = (const unsigned char *)out; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '*' || *p == '%')
			return "Invalid character in mailbox name";
	}
	if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == '/'))
		memcpy(out, "INBOX", 5);
	return NULL;
}

/* Whether this session speaks UTF-8 mailbox names (UTF8=ACCEPT, IMAP4rev2). The store keeps
 * the modified UTF-7 form either way. */
static bool
names_utf8(const struct imap_session *s)
{
	return s->utf8 || s->rev2;
}

/* The stored form of a name as the client sent it into out (size bytes). */
static bool
to_stored(const struct imap_session *s, const char *name, char *out, size_t size)
{
	struct buf b;
	bool ok;

	if (!names_utf8(s))
		return str_copy(out, size, name) == 0;
	buf_init(&b, size - 1);
	ok = imap_utf8_to_utf7(name, &b) == 0 && str_copy(out, size, buf_cstr(&b)) == 0;
	buf_deinit(&b);
	return ok;
}

void
imap_out_mailbox(struct imap_session *s, const char *stored)
{
	struct buf b;

	if (!names_utf8(s)) {
		imap_out_astring(s, stored);
		return;
	}
	buf_init(&b, 4 * MAX_NAME);
	/* A name stored by a client that did not follow RFC 3501 is shown as it is. */
	if (imap_utf7_to_utf8(stored, &b) < 0) {
		buf_reset(&b);
		(void)buf_append_str(&b, stored);
	}
	imap_out_astring(s, buf_cstr(&b));
	buf_deinit(&b);
}

/* Reads a mailbox name argument; on failure the tagged BAD is sent and false returned. */
static bool
arg_name(struct imap_session *s, const struct imap_arg *arg, char out[MAX_NAME + 1],
         bool trailing_ok)
{
	const char *name, *why;
	char stored[MAX_NAME + 1];
	size_t len;

	if (imap_arg_get_astring(arg, &name, &len) < 0) {
		imap_tagged(s, "BAD", "Mailbox name expected");
		return false;
	}
	if (!to_stored(s, name, stored, sizeof(stored))) {
		imap_tagged(s, "NO", "[CANNOT] Invalid or too long mailbox name");
		return false;
	}
	why = norm_name(stored, out, trailing_ok);
	if (why != NULL) {
		imap_tagged(s, "NO", "[CANNOT] %s", why);
		return false;
	}
	return true;
}

bool
imap_arg_mailbox(struct imap_session *s, const struct imap_arg *arg, char out[256])
{
	return arg_name(s, arg, out, false);
}

/* ---- pattern matching (RFC 3501 6.3.8) ----------------------------------------------------
 * "*" matches anything, "%" anything but the separator. Iterative with one backtrack point per
 * wildcard kind, so hostile patterns stay linear-ish: the classic two-pointer glob, with "%"
 * not allowed to cross "/". */
static bool
match_from(const char *p, const char *n)
{
	if (*p == '\0')
		return *n == '\0';
	if (*p == '*') {
		while (*p == '*')
			p++;
		if (*p == '\0')
			return true;
		for (; *n != '\0'; n++) {
			if (match_from(p, n))
				return true;
		}
		return match_from(p, n);
	}
	if (*p == '%') {
		for (;; n++) {
			if (match_from(p + 1, n))
				return true;
			if (*n == '\0' || *n == '/')
				return false;
		}
	}
	return *p == *n && match_from(p + 1, n + 1);
}

static bool
pattern_match(const char *pattern, const char *name)
{
	char buf[2 * MAX_NAME + 2];
	unsigned int wild = 0;

	/* Bounded recursion: patterns with many wildcards are refused by the caller. */
	for (const char *p = pattern; *p != '\0'; p++)
		wild += *p == '*' || *p == '%';
	if (wild > 8)
		return false;
	if (strncasecmp(pattern, "INBOX", 5) == 0 && (pattern[5] == '\0' || pattern[5] == '/' ||
	                                              pattern[5] == '*' || pattern[5] == '%') &&
	    strlen(pattern) < sizeof(buf)) {
		memcpy(buf, "INBOX", 5);
		memcpy(buf + 5, pattern + 5, strlen(pattern + 5) + 1);
		pattern = buf;
	}
	return match_from(pattern, name);
}

/* ---- the account's mailboxes --------------------------------------------------------------- */

struct mbx {
	char name[MAX_NAME + 1];
	char special[32];
	bool exists, subscribed, children;
	int64_t id;
};

struct mbx_list {
	struct mbx *v;
	size_t n, cap;
};

static struct mbx *
mbx_find(struct mbx_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i].name, name) == 0)
			return &l->v[i];
	}
	return NULL;
}

static struct mbx *
mbx_add(struct mbx_list *l, const char *name)
{
	struct mbx *m = mbx_find(l, name);

	if (m != NULL)
		return m;
	if (l->n == l->cap) {
		l->cap = l->cap == 0 ? 16 : l->cap * 2;
		l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
	}
	m = &l->v[l->n++];
	memset(m, 0, sizeof(*m));
	(void)!str_copy(m->name, sizeof(m->name), name);
	return m;
}

static int
collect_cb(const struct store_mailbox *mb, void *ctx)
{
	struct mbx_list *l = ctx;
	struct mbx *m = mbx_add(l, mb->name);

	m->exists = true;
	m->subscribed = mb->subscribed;
	m->id = mb->id;
	(void)!str_copy(m->special, sizeof(m->special), mb->special_use);
	return 0;
}

static int
mbx_cmp(const void *a, const void *b)
{
	const struct mbx *x = a, *y = b;
	bool xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;

	if (xi != yi)
		return xi ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Every mailbox of the account plus the parents that names imply, sorted, with children. */
static int
collect(struct imap_session *s, struct mbx_list *l)
{
	size_t n;
	int ret;

	memset(l, 0, sizeof(*l));
	ret = store_mailbox_list(imap_env.store, s->account_id, collect_cb, l);
	if (ret < 0)
		return ret;
	n = l->n;
	for (size_t i = 0; i < n; i++) {
		char name[MAX_NAME + 1];
		char *slash;

		memcpy(name, l->v[i].name, sizeof(name));
		while ((slash = strrchr(name, '/')) != NULL) {
			*slash = '\0';
			mbx_add(l, name)->children = true;
		}
	}
	qsort(l->v, l->n, sizeof(*l->v), mbx_cmp);
	return 0;
}

static bool
has_subscribed_child(const struct mbx_list *l, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].subscribed && l->v[i].exists && strncmp(l->v[i].name, name, len) == 0 &&
		    l->v[i].name[len] == '/')
			return true;
	}
	return false;
}

/* ---- STATUS -------------------------------------------------------------------------------- */

enum status_item {
	ST_MESSAGES = 1 << 0,
	ST_UIDNEXT = 1 << 1,
	ST_UIDVALIDITY = 1 << 2,
	ST_UNSEEN = 1 << 3,
	ST_RECENT = 1 << 4,
	ST_SIZE = 1 << 5,
	ST_HIGHESTMODSEQ = 1 << 6,
	ST_DELETED = 1 << 7,
	ST_APPENDLIMIT = 1 << 8,
};

static int
parse_status_items(const struct imap_arg *list, size_t n, unsigned int *items_r)
{
	static const char *const names[] = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT",
	                                    "SIZE", "HIGHESTMODSEQ", "DELETED", "APPENDLIMIT"};
	unsigned int items = 0;

	for (size_t i = 0; i < n; i++) {
		bool found = false;

		for (size_t j = 0; j < N_ELEMENTS(names); j++) {
			if (imap_arg_atom_equals(&list[i], names[j])) {
				items |= 1u << j;
				found = true;
			}
		}
		if (!found)
			return -1;
	}
	*items_r = items;
	return n > 0 ? 0 : -1;
}

static int
out_status(struct imap_session *s, const char *name, int64_t mailbox_id, unsigned int items)
{
	struct store_mailbox mb;
	struct store_totals t = {0};
	const char *sep = "";
	int ret;

	ret = store_mailbox_get_id(imap_env.store, mailbox_id, &mb);
	if (ret <= 0)
		return ret == 0 ? STORE_ERR_NOTFOUND : ret;
	if ((items & (ST_UNSEEN | ST_SIZE | ST_DELETED)) != 0) {
		ret = store_mailbox_totals(imap_env.store, mailbox_id, &t);
		if (ret < 0)
			return ret;
	}
	imap_out(s, "* STATUS ");
	imap_out_mailbox(s, name);
	imap_out(s, " (");
#define ITEM(bit, fmt, val)                                                                   \
	if (items & (bit)) {                                                                  \
		imap_out(s, "%s" fmt, sep, val);                                               \
		sep = " ";                                                                    \
	}
	ITEM(ST_MESSAGES, "MESSAGES %u", mb.messages)
	ITEM(ST_UIDNEXT, "UIDNEXT %u", mb.uidnext)
	ITEM(ST_UIDVALIDITY, "UIDVALIDITY %u", mb.uidvalidity)
	ITEM(ST_UNSEEN, "UNSEEN %u", t.unseen)
	ITEM(ST_RECENT, "RECENT %u", 0u)
	ITEM(ST_SIZE, "SIZE %llu", (unsigned long long)t.size)
	ITEM(ST_HIGHESTMODSEQ, "HIGHESTMODSEQ %llu", (unsigned long long)mb.highestmodseq)
	ITEM(ST_DELETED, "DELETED %u", t.deleted)
	ITEM(ST_APPENDLIMIT, "APPENDLIMIT %llu", (unsigned long long)imap_limits.append_limit)
#undef ITEM
	imap_out(s, ")\r\n");
	if (items & ST_HIGHESTMODSEQ)
		s->condstore = true; /* RFC 7162 3.1: the client used CONDSTORE */
	return 0;
}

void
imap_cmd_status(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	const struct imap_arg *list;
	char name[MAX_NAME + 1];
	struct store_mailbox mb;
	unsigned int items;
	size_t n;
	int ret;

	if (cmd->nargs != 2 || imap_arg_get_list(&cmd->args[1], &list, &n) < 0 ||
	    parse_status_items(list, n, &items) < 0) {
		imap_tagged(s, "BAD", "Usage: STATUS mailbox (items)");
		return;
	}
	if (!arg_name(s, &cmd->args[0], name, false))
		return;
	ret = store_mailbox_get(imap_env.store, s->account_id, name, &mb);
	if (ret == 0) {
		imap_tagged(s, "NO", "[NONEXISTENT] Mailbox does not exist");
		return;
	}
	if (ret > 0)
		ret = out_status(s, name, mb.id, items);
	if (ret < 0) {
		imap_tagged_store_error(s, ret, "STATUS");
		return;
	}
	imap_view_sync(s, true);
	imap_tagged(s, "OK", "STATUS completed");
}

/* ---- LIST ---------------------------------------------------------------------------------- */

enum list_opt {
	SEL_SUBSCRIBED = 1 << 0,
	SEL_SPECIAL = 1 << 1,
	SEL_RECURSIVE = 1 << 2,
	RET_SUBSCRIBED = 1 << 3,
	RET_CHILDREN = 1 << 4,
	RET_SPECIAL = 1 << 5,
	RET_STATUS = 1 << 6,
};

static int
parse_list_opts(const struct imap_arg *list, size_t n, bool selection, unsigned int *opts,
                unsigned int *status_items)
{
	for (size_t i = 0; i < n; i++) {
		if (selection && imap_arg_atom_equals(&list[i], "SUBSCRIBED"))
			*opts |= SEL_SUBSCRIBED | RET_SUBSCRIBED;
		else if (selection && imap_arg_atom_equals(&list[i], "SPECIAL-USE"))
			*opts |= SEL_SPECIAL;
		else if (selection && imap_arg_atom_equals(&list[i], "RECURSIVEMATCH"))
			*opts |= SEL_RECURSIVE;
		else if (selection && imap_arg_atom_equals(&list[i], "REMOTE"))
			continue;
		else if (!selection && imap_arg_atom_equals(&list[i], "SUBSCRIBED"))
			*opts |= RET_SUBSCRIBED;
		else if (!selection && imap_arg_atom_equals(&list[i], "CHILDREN"))
			*opts |= RET_CHILDREN;
		else if (!selection && imap_arg_atom_equals(&list[i], "SPECIAL-USE"))
			*opts |= RET_SPECIAL;
		else if (!selection && imap_arg_atom_equals(&list[i], "STATUS") && i + 1 < n &&
		         list[i + 1].type == IMAP_ARG_LIST) {
			if (parse_status_items(list[i + 1].list, list[i + 1].count, status_items) < 0)
				return -1;
			*opts |= RET_STATUS;
			i++;
		} else {
			return -1;
		}
	}
	/* RFC 5258 3.1: RECURSIVEMATCH needs another selection option. */
	if ((*opts & SEL_RECURSIVE) && !(*opts & (SEL_SUBSCRIBED | SEL_SPECIAL)))
		return -1;
	return 0;
}

void
imap_cmd_list(struct imap_session *s, bool lsub)
{
	const struct imap_command *cmd = s->cmd;
	const struct imap_arg *args = cmd->args;
	size_t nargs = cmd->nargs, npat = 0;
	const char *ref, *patterns[16];
	unsigned int opts = 0, status_items = 0;
	struct mbx_list l;
	size_t len;
	int ret;

	if (!lsub && nargs > 0 && args[0].type == IMAP_ARG_LIST) {
		if (parse_list_opts(args[0].list, args[0].count, true, &opts, &status_items) < 0) {
			imap_tagged(s, "BAD", "Invalid LIST selection options");
			return;
		}
		args++;
		nargs--;
	}
	if (nargs < 2 || imap_arg_get_astring(&args[0], &ref, &len) < 0) {
		imap_tagged(s, "BAD", "Usage: LIST reference pattern");
		return;
	}
	if (args[1].type == IMAP_ARG_LIST && !lsub) {
		for (size_t i = 0; i < args[1].count && npat < N_ELEMENTS(patterns); i++) {
			if (imap_arg_get_astring(&args[1].list[i], &patterns[npat], &len) < 0) {
				imap_tagged(s, "BAD", "Invalid pattern");
				return;
			}
			npat++;
		}
	} else if (imap_arg_get_astring(&args[1], &patterns[0], &len) == 0) {
		npat = 1;
	} else {
		imap_tagged(s, "BAD", "Invalid pattern");
		return;
	}
	if (nargs == 4 && !lsub && imap_arg_atom_equals(&args[2], "RETURN") &&
	    args[3].type == IMAP_ARG_LIST) {
		if (parse_list_opts(args[3].list, args[3].count, false, &opts, &status_items) < 0) {
			imap_tagged(s, "BAD", "Invalid LIST return options");
			return;
		}
	} else if (nargs != 2) {
		imap_tagged(s, "BAD", "Usage: LIST reference pattern");
		return;
	}
	/* RFC 3501 6.3.8: an empty pattern asks for the separator and the root. */
	if (npat == 1 && patterns[0][0] == '\0') {
		imap_out(s, "* %s (\\Noselect) \"/\" \"\"\r\n", lsub ? "LSUB" : "LIST");
		imap_tagged(s, "OK", "%s completed", lsub ? "LSUB" : "LIST");
		return;
	}
	ret = collect(s, &l);
	if (ret < 0) {
		imap_tagged_store_error(s, ret, lsub ? "LSUB" : "LIST");
		return;
	}
	for (size_t i = 0; i < l.n; i++) {
		struct mbx *m = &l.v[i];
		bool matched = false;

		for (size_t p = 0; p < npat && !matched; p++) {
			char full[2 * MAX_NAME + 2], stored[4 * MAX_NAME + 4];

			if (patterns[p][0] != '\0' && ref[0] != '\0' && patterns[p][0] != '/')
				(void)snprintf(full, sizeof(full), "%s%s", ref, patterns[p]);
			else
				(void)snprintf(full, sizeof(full), "%s", patterns[p]);
			/* Wildcards are ASCII: the pattern converts like a name. */
			if (!to_stored(s, full, stored, sizeof(stored)))
				continue;
			matched = pattern_match(stored, m->name);
		}
		if (!matched)
			continue;
		bool childinfo = false;

		if ((lsub || (opts & SEL_SUBSCRIBED)) && !(m->subscribed && m->exists)) {
			/* RFC 5258 4: RECURSIVEMATCH lists a parent of subscribed mailboxes with
			 * CHILDINFO; LSUB lists it as \Noselect (RFC 3501 6.3.9). */
			if (!((opts & SEL_RECURSIVE) || lsub) || !has_subscribed_child(&l, m->name))
				continue;
			childinfo = true;
		}
		if ((opts & SEL_SPECIAL) && m->special[0] == '\0')
			continue;
		imap_out(s, "* %s (", lsub ? "LSUB" : "LIST");
		{
			const char *sep = "";

			if (!m->exists) {
				imap_out(s, "%s", lsub ? "\\Noselect" : "\\NonExistent \\Noselect");
				sep = " ";
			}
			imap_out(s, "%s%s", sep, m->children ? "\\HasChildren" : "\\HasNoChildren");
			sep = " ";
			if ((opts & RET_SUBSCRIBED) && m->subscribed)
				imap_out(s, " \\Subscribed");
			if (m->special[0] != '\0')
				imap_out(s, " %s", m->special);
		}
		imap_out(s, ") \"/\" ");
		imap_out_mailbox(s, m->name);
		if (childinfo && !lsub)
			imap_out(s, " (\"CHILDINFO\" (\"SUBSCRIBED\"))");
		imap_out(s, "\r\n");
		if ((opts & RET_STATUS) && m->exists) {
			ret = out_status(s, m->name, m->id, status_items);
			if (ret < 0 && ret != STORE_ERR_NOTFOUND)
				break;
		}
	}
	free(l.v);
	if (ret < 0 && ret != STORE_ERR_NOTFOUND) {
		imap_tagged_store_error(s, ret, "LIST");
		return;
	}
	imap_view_sync(s, true);
	imap_tagged(s, "OK", "%s completed", lsub ? "LSUB" : "LIST");
}

/* ---- CREATE, DELETE, RENAME, SUBSCRIBE ----------------------------------------------------- */

struct create_ctx {
	int64_t account_id;
	const char *name;
	const char *special;
};

static int
create_run(struct store_txn *txn, void *ctx)
{
	struct create_ctx *c = ctx;
	char parent[MAX_NAME + 1];
	int64_t id;
	int ret;

	/* RFC 3501 6.3.3: superior names are created too. */
	(void)!str_copy(parent, sizeof(parent), c->name);
	for (char *p = strchr(parent, '/'); p != NULL; p = strchr(p + 1, '/')) {
		*p = '\0';
		ret = store_txn_mailbox_create(txn, c->account_id, parent, "", &id);
		*p = '/';
		if (ret != STORE_OK && ret != STORE_ERR_EXISTS)
			return ret;
	}
	return store_txn_mailbox_create(txn, c->account_id, c->name, c->special, &id);
}

void
imap_cmd_create(struct imap_session *s)
{
	static const char *const uses[] = {"\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash"};
	const struct imap_command *cmd = s->cmd;
	char name[MAX_NAME + 1];
	struct create_ctx c = {s->account_id, name, ""};
	const char *error;
	int ret;

	if (cmd->nargs < 1 || cmd->nargs > 2) {
		imap_tagged(s, "BAD", "Usage: CREATE mailbox [(USE (attr))]");
		return;
	}
	if (!arg_name(s, &cmd->args[0], name, true))
		return;
	if (cmd->nargs == 2) {
		const struct imap_arg *l = cmd->args[1].list;

		if (cmd->args[1].type != IMAP_ARG_LIST || cmd->args[1].count != 2 ||
		    !imap_arg_atom_equals(&l[0], "USE") || l[1].type != IMAP_ARG_LIST ||
		    l[1].count > 1) {
			imap_tagged(s, "BAD", "Invalid CREATE parameters");
			return;
		}
		if (l[1].count == 1) {
			for (size_t i = 0; i < N_ELEMENTS(uses); i++) {
				if (imap_arg_atom_equals(&l[1].list[0], uses[i]))
					c.special = uses[i];
			}
			if (c.special[0] == '\0') {
				imap_tagged(s, "NO", "[USEATTR] Unsupported special-use attribute");
				return;
			}
		}
	}
	if (strcmp(name, "INBOX") == 0) {
		imap_tagged(s, "NO", "[ALREADYEXISTS] INBOX always exists");
		return;
	}
	ret = store_exec(imap_env.store, create_run, &c, &error);
	if (ret != STORE_OK) {
		imap_tagged_store_error(s, ret, "CREATE");
		return;
	}
	imap_view_sync(s, true);
	imap_tagged(s, "OK", "CREATE completed");
}

struct delete_ctx {
	int64_t mailbox_id;
};

static int
delete_run(struct store_txn *txn, void *ctx)
{
	struct delete_ctx *c = ctx;

	return store_txn_mailbox_delete(txn, c->mailbox_id);
}

void
imap_cmd_delete(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	char name[MAX_NAME + 1];
	struct store_mailbox mb;
	struct delete_ctx c;
	const char *error;
	int ret;

	if (cmd->nargs != 1) {
		imap_tagged(s, "BAD", "Usage: DELETE mailbox");
		return;
	}
	if (!arg_name(s, &cmd->args[0], name, false))
		return;
	if (strcmp(name, "INBOX") == 0) {
		imap_tagged(s, "NO", "[CANNOT] INBOX cannot be deleted");
		return;
	}
	ret = store_mailbox_get(imap_env.store, s->account_id, name, &mb);
	if (ret == 0) {
		imap_tagged(s, "NO", "[NONEXISTENT] Mailbox does not exist");
		return;
	}
	if (ret < 0) {
		imap_tagged_store_error(s, ret, "DELETE");
		return;
	}
	if (s->view != NULL && s->view->mailbox_id == mb.id) {
		imap_tagged(s, "NO", "[INUSE] Close the mailbox before deleting it");
		return;
	}
	c.mailbox_id = mb.id;
	ret = store_exec(imap_env.store, delete_run, &c, &error);
	if (ret != STORE_OK) {
		imap_tagged_store_error(s, ret, "DELETE");
		return;
	}
	imap_view_sync(s, true);
	imap_tagged(s, "OK", "DELETE completed");
}

struct rename_ctx {
	int64_t account_id;
	const char *from, *to;
	int64_t inbox_id;
	uint32_t *uids;
	size_t nuids;
};

static int
rename_run(struct store_txn *txn, void *ctx)
{
	struct rename_ctx *c = ctx;
	char parent[MAX_NAME + 1];
	int64_t id, new_id;
	int ret;

	(void)!str_copy(parent, sizeof(parent), c->to);
	for (char *p = strchr(parent, '/'); p != NULL; p = strchr(p + 1, '/')) {
		*p = '\0';
		ret = store_txn_mailbox_create(txn, c->account_id, parent, "", &id);
		*p = '/';
		if (ret != STORE_OK && ret != STORE_ERR_EXISTS)
			return ret;
	}
	if (c->inbox_id == 0)
		return store_txn_mailbox_rename(txn, c->account_id, c->from, c->to);
	/* RFC 3501 6.3.5: renaming INBOX moves its messages to the new name; INBOX stays. */
	ret = store_txn_mailbox_create(txn, c->account_id, c->to, "", &new_id);
	for (size_t i = 0; i < c->nuids && ret == STORE_OK; i++) {
		uint32_t uid;

		ret = store_txn_copy(txn, c->inbox_id, c->uids[i], new_id, &uid);
		if (ret == STORE_OK)
			ret = store_txn_expunge(txn, c->inbox_id, c->uids[i]);
	}
	return ret;
}

static int
uid_collect_cb(const struct store_message *m, void *ctx)
{
	struct rename_ctx *c = ctx;

	c->uids = xrealloc(c->uids, (c->nuids + 1) * sizeof(*c->uids));
	c->uids[c->nuids++] = m->uid;
	return 0;
}

void
imap_cmd_rename(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	char from[MAX_NAME + 1], to[MAX_NAME + 1];
	struct rename_ctx c = {s->account_id, from, to, 0, NULL, 0};
	struct store_mailbox mb;
	const char *error;
	int ret;

	if (cmd->nargs != 2) {
		imap_tagged(s, "BAD", "Usage: RENAME from to");
		return;
	}
	if (!arg_name(s, &cmd->args[0], from, false) || !arg_name(s, &cmd->args[1], to, false))
		return;
	if (strcmp(to, "INBOX") == 0 || strncmp(to, "INBOX/", 6) == 0 ||
	    (strncmp(to, from, strlen(from)) == 0 && to[strlen(from)] == '/')) {
		imap_tagged(s, "NO", "[CANNOT] Cannot rename to that name");
		return;
	}
	ret = store_mailbox_get(imap_env.store, s->account_id, from, &mb);
	if (ret == 0) {
		imap_tagged(s, "NO", "[NONEXISTENT] Mailbox does not exist");
		return;
	}
	if (ret > 0 && strcmp(from, "INBOX") == 0) {
		c.inbox_id = mb.id;
		ret = store_message_list(imap_env.store, mb.id, uid_collect_cb, &c);
	}
	if (ret >= 0)
		ret = store_exec(imap_env.store, rename_run, &c, &error);
	free(c.uids);
	if (ret != STORE_OK) {
		imap_tagged_store_error(s, ret, "RENAME");
		return;
	}
	if (s->view != NULL && strcmp(s->view->name, from) == 0)
		(void)!str_copy(s->view->name, sizeof(s->view->name), to);
	imap_view_sync(s, true);
	imap_tagged(s, "OK", "RENAME completed");
}

struct subscribe_ctx {
	int64_t account_id;
	const char *name;
	bool on;
};

static int
subscribe_run(struct store_txn *txn, void *ctx)
{
	struct subscribe_ctx *c = ctx;

	return store_txn_mailbox_subscribe(txn, c->account_id, c->name, c->on);
}

void
imap_cmd_subscribe(struct imap_session *s, bool on)
{
	const struct imap_command *cmd = s->cmd;
	char name[MAX_NAME + 1];
	struct subscribe_ctx c = {s->account_id, name, on};
	const char *error;
	int ret;

	if (cmd->nargs != 1) {
		imap_tagged(s, "BAD", "Usage: %s mailbox", cmd->name);
		return;
	}
	if (!arg_name(s, &cmd->args[0], name, false))
		return;
	ret = store_exec_relaxed(imap_env.store, subscribe_run, &c, &error);
	/* Unsubscribing a name that is gone is what the client wanted anyway. */
	if (ret != STORE_OK && !(ret == STORE_ERR_NOTFOUND && !on)) {
		imap_tagged_store_error(s, ret, cmd->name);
		return;
	}
	imap_view_sync(s, true);
	imap_tagged(s, "OK", "%s completed", cmd->name);
}

/* ---- SELECT / EXAMINE ----------------------------------------------------------------------- */

struct select_ctx {
	struct imap_session *s;
	struct imap_view *v;
	uint32_t first_unseen;
	struct buf keywords; /* distinct keywords, space-separated */
};

static void
add_keywords(struct buf *b, const char *kw)
{
	while (*kw != '\0') {
		size_t n = strcspn(kw, " ");
		const char *have = buf_cstr(b);
		bool found = false;

		for (const char *p = have; *p != '\0';) {
			size_t m = strcspn(p, " ");

			if (m == n && strncasecmp(p, kw, n) == 0) {
				found = true;
				break;
			}
			p += m;
			while (*p == ' ')
				p++;
		}
		if (!found && b->len < 4096) {
			if (b->len > 0)
				(void)buf_append_byte(b, ' ');
			(void)buf_append(b, kw, n);
		}
		kw += n;
		while (*kw == ' ')
			kw++;
	}
}

static int
select_load_cb(const struct store_message *m, void *ctx)
{
	struct select_ctx *c = ctx;
	struct imap_view *v = c->v;

	if (v->count == v->cap) {
		v->cap = v->cap == 0 ? 64 : v->cap * 2;
		v->uids = xrealloc(v->uids, v->cap * sizeof(v->uids[0]));
	}
	v->uids[v->count++] = m->uid;
	if (c->first_unseen == 0 && (m->flags & STORE_FLAG_SEEN) == 0)
		c->first_unseen = v->count;
	if (m->keywords[0] != '\0')
		add_keywords(&c->keywords, m->keywords);
	return 0;
}

/* QRESYNC (RFC 7162 3.2.5): what changed since the client's MODSEQ. */
struct qresync_ctx {
	struct imap_session *s;
	struct buf vanished;
	uint32_t known_lo, known_hi; /* the client's known UIDs, as a range; 0 = all */
};

static int
qresync_expunged(uint32_t lo, uint32_t hi, void *ctx)
{
	struct qresync_ctx *q = ctx;

	if (q->known_hi != 0) {
		lo = MAX(lo, q->known_lo);
		hi = MIN(hi, q->known_hi);
	}
	imap_uidset_add(&q->vanished, lo, hi);
	return 0;
}

static int
qresync_changed(const struct store_message *m, void *ctx)
{
	struct qresync_ctx *q = ctx;
	uint32_t seq = imap_view_seq(q->s->view, m->uid);

	if (seq == 0)
		return 0;
	imap_out(q->s, "* %u FETCH (UID %u FLAGS ", seq, m->uid);
	imap_out_flags(q->s, m->flags, m->keywords);
	imap_out(q->s, " MODSEQ (%llu))\r\n", (unsigned long long)m->modseq);
	return 0;
}

void
imap_cmd_select(struct imap_session *s, bool readonly)
{
	const struct imap_command *cmd = s->cmd;
	char name[MAX_NAME + 1];
	struct select_ctx c = {0};
	struct store_mailbox mb;
	uint32_t q_uidvalidity = 0;
	uint64_t q_modseq = 0;
	bool qresync = false;
	struct qresync_ctx q = {0};
	int ret;

	if (cmd->nargs < 1 || cmd->nargs > 2) {
		imap_tagged(s, "BAD", "Usage: %s mailbox [(CONDSTORE)]", cmd->name);
		return;
	}
	if (cmd->nargs == 2) {
		const struct imap_arg *l = cmd->args[1].list;

		if (cmd->args[1].type != IMAP_ARG_LIST || cmd->args[1].count < 1) {
			imap_tagged(s, "BAD", "Invalid %s parameters", cmd->name);
			return;
		}
		if (imap_arg_atom_equals(&l[0], "CONDSTORE") && cmd->args[1].count == 1) {
			s->condstore = true;
		} else if (imap_arg_atom_equals(&l[0], "QRESYNC") && cmd->args[1].count == 2 &&
		           l[1].type == IMAP_ARG_LIST && l[1].count >= 2 && s->qresync &&
		           imap_arg_get_number(&l[1].list[0], &q_uidvalidity) == 0 &&
		           imap_arg_get_number64(&l[1].list[1], &q_modseq) == 0) {
			qresync = true;
			if (l[1].count >= 3) {
				struct imap_seq_range r[1];
				size_t nr;
				const char *set, *err;

				/* The known UIDs are used as one range (a superset is allowed). */
				if (imap_arg_get_atom(&l[1].list[2], &set) == 0 &&
				    imap_seqset_parse(set, strlen(set), UINT32_MAX, NULL, SIZE_MAX, &nr,
				                      &err) == 0) {
					struct imap_seq_range *all = xmalloc(nr * sizeof(*all));

					(void)!imap_seqset_parse(set, strlen(set), UINT32_MAX, all, nr, &nr,
					                         &err);
					r[0] = all[0];
					for (size_t i = 1; i < nr; i++) {
						r[0].lo = MIN(r[0].lo, all[i].lo);
						r[0].hi = MAX(r[0].hi, all[i].hi);
					}
					free(all);
					q.known_lo = r[0].lo;
					q.known_hi = r[0].hi;
				}
			}
		} else {
			imap_tagged(s, "BAD", "Invalid %s parameters", cmd->name);
			return;
		}
	}
	if (!arg_name(s, &cmd->args[0], name, false))
		return;
	/* Leaving the old mailbox first (RFC 3501 6.3.1), even if the new one fails. */
	if (s->view != NULL) {
		imap_view_free(&s->view);
		imap_watch_request(s, 0);
		s->state = IMAP_AUTH;
		if (s->qresync)
			imap_out(s, "* OK [CLOSED] Previous mailbox closed\r\n");
	}
	ret = store_mailbox_get(imap_env.store, s->account_id, name, &mb);
	if (ret == 0) {
		imap_tagged(s, "NO", "[NONEXISTENT] Mailbox does not exist");
		return;
	}
	if (ret < 0) {
		imap_tagged_store_error(s, ret, cmd->name);
		return;
	}
	c.s = s;
	c.v = imap_view_new(mb.id, name, readonly);
	buf_init(&c.keywords, 8192);
	ret = store_mailbox_changes(imap_env.store, mb.id, 0, select_load_cb, NULL, &c, &mb);
	if (ret < 0) {
		imap_view_free(&c.v);
		buf_deinit(&c.keywords);
		imap_tagged_store_error(s, ret, cmd->name);
		return;
	}
	c.v->uidvalidity = mb.uidvalidity;
	c.v->uidnext = mb.uidnext;
	c.v->modseq = mb.highestmodseq;
	s->view = c.v;
	s->state = IMAP_SELECTED;
	imap_watch_request(s, mb.id);

	imap_out(s, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s)\r\n",
	         c.keywords.len > 0 ? " " : "", buf_cstr(&c.keywords));
	if (readonly)
		imap_out(s, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
	else
		imap_out(s, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s "
		            "\\*)] Flags permitted\r\n",
		         c.keywords.len > 0 ? " " : "", buf_cstr(&c.keywords));
	buf_deinit(&c.keywords);
	imap_out(s, "* %u EXISTS\r\n", c.v->count);
	if (!s->rev2) {
		imap_out(s, "* 0 RECENT\r\n");
		if (c.first_unseen != 0)
			imap_out(s, "* OK [UNSEEN %u] First unseen\r\n", c.first_unseen);
	}
	imap_out(s, "* OK [UIDVALIDITY %u] UIDs valid\r\n", mb.uidvalidity);
	imap_out(s, "* OK [UIDNEXT %u] Predicted next UID\r\n", mb.uidnext);
	imap_out(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)mb.highestmodseq);
	if (qresync && q_uidvalidity == mb.uidvalidity && q_modseq < mb.highestmodseq) {
		struct store_mailbox again;

		q.s = s;
		buf_init(&q.vanished, SIZE_MAX / 2);
		/* The same snapshot is not needed: later changes come again at the next sync. */
		ret = store_mailbox_changes(imap_env.store, mb.id, q_modseq, qresync_changed,
		                            qresync_expunged, &q, &again);
		if (q.vanished.len > 0)
			imap_out(s, "* VANISHED (EARLIER) %s\r\n", buf_cstr(&q.vanished));
		buf_deinit(&q.vanished);
		if (ret < 0) {
			imap_tagged_store_error(s, ret, cmd->name);
			return;
		}
	}
	imap_tagged(s, "OK", "[%s] %s completed", readonly ? "READ-ONLY" : "READ-WRITE",
	            cmd->name);
}

/* ---- QUOTA (RFC 9208): one quota root "" per account, resource STORAGE ------------------- */

int
imap_quota_room(struct imap_session *s, uint64_t add)
{
	struct store_account acc;
	uint64_t quota;
	int ret = store_account_get(imap_env.store, s->user, &acc);

	explicit_bzero(acc.pwhash, sizeof(acc.pwhash));
	if (ret < 0)
		return ret;
	if (ret == 0)
		return STORE_ERR_NOTFOUND;
	quota = store_account_quota(&acc, imap_limits.default_quota);
	if (quota == 0 || acc.used + add <= quota)
		return 1;
	imap_tagged(s, "NO", "[OVERQUOTA] Quota exceeded (mailbox full)");
	return 0;
}

static int
out_quota(struct imap_session *s)
{
	struct store_account acc;
	uint64_t quota;
	int ret = store_account_get(imap_env.store, s->user, &acc);

	explicit_bzero(acc.pwhash, sizeof(acc.pwhash));
	if (ret <= 0)
		return ret < 0 ? ret : STORE_ERR_NOTFOUND;
	quota = store_account_quota(&acc, imap_limits.default_quota);
	/* STORAGE counts units of 1024 octets (RFC 9208 5.1). */
	if (quota == 0)
		imap_out(s, "* QUOTA \"\" ()\r\n");
	else
		imap_out(s, "* QUOTA \"\" (STORAGE %llu %llu)\r\n",
		         (unsigned long long)((acc.used + 1023) / 1024),
		         (unsigned long long)(quota / 1024));
	return 0;
}

void
imap_cmd_quota(struct imap_session *s)
{
	const struct imap_command *cmd = s->cmd;
	const char *arg;
	size_t len;
	int ret;

	if (strcmp(cmd->name, "SETQUOTA") == 0) {
		imap_tagged(s, "NO", "[NOPERM] Quotas are set by the administrator");
		return;
	}
	if (cmd->nargs != 1 || imap_arg_get_astring(&cmd->args[0], &arg, &len) < 0) {
		imap_tagged(s, "BAD", "Usage: %s %s", cmd->name,
		            strcmp(cmd->name, "GETQUOTA") == 0 ? "root" : "mailbox");
		return;
	}
	if (strcmp(cmd->name, "GETQUOTAROOT") == 0) {
		char name[MAX_NAME + 1];
		struct store_mailbox mb;

		if (!arg_name(s, &cmd->args[0], name, false))
			return;
		ret = store_mailbox_get(imap_env.store, s->account_id, name, &mb);
		if (ret == 0) {
			imap_tagged(s, "NO", "[NONEXISTENT] Mailbox does not exist");
			return;
		}
		if (ret > 0) {
			imap_out(s, "* QUOTAROOT ");
			imap_out_mailbox(s, name);
			imap_out(s, " \"\"\r\n");
			ret = out_quota(s);
		}
	} else if (arg[0] != '\0') {
		imap_tagged(s, "NO", "[NONEXISTENT] No such quota root");
		return;
	} else {
		ret = out_quota(s);
	}
	if (ret < 0) {
		imap_tagged_store_error(s, ret, cmd->name);
		return;
	}
	imap_tagged(s, "OK", "%s completed", cmd->name);
}
