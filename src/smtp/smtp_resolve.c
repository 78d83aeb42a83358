/* Recipient resolution (see smtp_resolve.h). Addresses are compared case-insensitively: the
 * store does that for accounts and aliases, and domains are lower-cased here. */
#include "smtp/smtp_resolve.h"
#include "core/hmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* storage.quota, set by the server (read without a lock: a torn read is harmless). */
static _Atomic uint64_t default_quota;

void
smtp_resolve_set_default_quota(uint64_t bytes)
{
	default_quota = bytes;
}

struct resolve {
	struct store *store;
	struct smtp_route *route;
	bool tempfail;
	size_t targets; /* count, bounded by SMTP_RESOLVE_MAX_TARGETS */
};

static void
add_mailbox(struct resolve *r, int64_t id)
{
	struct smtp_route *rt = r->route;

	for (size_t i = 0; i < rt->nmailboxes; i++) {
		if (rt->mailboxes[i] == id)
			return;
	}
	rt->mailboxes = xrealloc(rt->mailboxes, (rt->nmailboxes + 1) * sizeof(*rt->mailboxes));
	rt->mailboxes[rt->nmailboxes++] = id;
}

static void
add_remote(struct resolve *r, const char *address)
{
	struct smtp_route *rt = r->route;

	for (size_t i = 0; i < rt->nremote; i++) {
		if (strcasecmp(rt->remote[i], address) == 0)
			return;
	}
	rt->remote = xrealloc(rt->remote, (rt->nremote + 1) * sizeof(*rt->remote));
	rt->remote[rt->nremote++] = xstrdup(address);
}

/* account id -> INBOX mailbox id. An account's INBOX never changes while the account exists
 * (a removed and re-added account gets a new id), and looking it up each time costs a count of
 * the mailbox's messages in the store. Bounded: emptied when full. */
#define INBOX_CACHE_MAX 100000

static pthread_mutex_t inbox_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hmap *inbox_cache;

static bool
free_entry(const void *key, size_t keylen, void *value, void *ctx)
{
	free(value);
	return true;
}

static int
inbox_of(struct store *store, int64_t account_id, int64_t *mailbox_r)
{
	struct store_mailbox mbox;
	int64_t *cached;
	int ret;

	pthread_mutex_lock(&inbox_lock);
	cached = inbox_cache ? hmap_get(inbox_cache, &account_id, sizeof(account_id)) : NULL;
	if (cached != NULL)
		*mailbox_r = *cached;
	pthread_mutex_unlock(&inbox_lock);
	if (cached != NULL)
		return 1;
	ret = store_mailbox_get(store, account_id, "INBOX", &mbox);
	if (ret <= 0)
		return ret;
	*mailbox_r = mbox.id;
	pthread_mutex_lock(&inbox_lock);
	if (inbox_cache == NULL)
		inbox_cache = hmap_new();
	if (hmap_count(inbox_cache) >= INBOX_CACHE_MAX)
		hmap_foreach(inbox_cache, free_entry, NULL);
	cached = xmalloc(sizeof(*cached));
	*cached = mbox.id;
	free(hmap_put(inbox_cache, &account_id, sizeof(account_id), cached));
	pthread_mutex_unlock(&inbox_lock);
	return 1;
}

int
smtp_route_reaches(struct store *store, const struct smtp_route *route, const char *user)
{
	struct store_account acc;
	int64_t inbox;
	int ret = store_account_get(store, user, &acc);

	explicit_bzero(acc.pwhash, sizeof(acc.pwhash));
	if (ret <= 0)
		return ret;
	ret = inbox_of(store, acc.id, &inbox);
	if (ret <= 0)
		return ret;
	for (size_t i = 0; i < route->nmailboxes; i++) {
		if (route->mailboxes[i] == inbox)
			return 1;
	}
	return 0;
}

/* 1 = delivered to the account's INBOX, 0 = no such account, -1 = store error. */
static int
try_account(struct resolve *r, const char *address)
{
	struct store_account acc;
	int64_t inbox;
	int ret = store_account_get(r->store, address, &acc);

	explicit_bzero(acc.pwhash, sizeof(acc.pwhash));
	if (ret <= 0)
		return ret < 0 ? -1 : 0;
	if (acc.disabled)
		return 0;
	ret = inbox_of(r->store, acc.id, &inbox);
	if (ret <= 0)
		return ret < 0 ? -1 : 0;
	{
		uint64_t quota = store_account_quota(&acc, default_quota);

		if (quota > 0)
			r->route->quota_limited = true;
		if (quota > 0 && acc.used >= quota)
			r->route->over_quota = true;
	}
	add_mailbox(r, inbox);
	return 1;
}

static int expand(struct resolve *r, const char *address, unsigned int depth);

struct alias_walk {
	struct resolve *r;
	unsigned int depth;
	int found;
};

static int
alias_target(const char *source, const char *target, void *ctx)
{
	struct alias_walk *w = ctx;
	struct resolve *r = w->r;
	const char *at = strrchr(target, '@');
	int local;

	if (++r->targets > SMTP_RESOLVE_MAX_TARGETS)
		return 1;
	w->found = 1;
	local = at != NULL ? store_domain_exists(r->store, at + 1) : 0;
	if (local < 0) {
		r->tempfail = true;
		return 1;
	}
	if (!local)
		add_remote(r, target);
	else if (w->depth + 1 <= SMTP_RESOLVE_MAX_DEPTH && expand(r, target, w->depth + 1) < 0) {
		/* One target unreadable: the whole recipient is a temporary failure, never a
		 * delivery to only some of its targets. */
		r->tempfail = true;
		return 1;
	}
	return 0;
}

/* 1 = aliases found and followed, 0 = none, -1 = store error. */
static int
try_aliases(struct resolve *r, const char *source, unsigned int depth)
{
	struct alias_walk w = {r, depth, 0};

	if (store_alias_targets(r->store, source, alias_target, &w) < 0 || r->tempfail)
		return -1;
	return w.found;
}

/* Resolves one local address: account, aliases, then the same without +tag. Returns 1 when
 * the address exists, 0 when not, -1 on store error. */
static int
expand(struct resolve *r, const char *address, unsigned int depth)
{
	const char *at = strrchr(address, '@');
	const char *plus;
	int acc, ali;

	acc = try_account(r, address);
	ali = try_aliases(r, address, depth);
	if (acc < 0 || ali < 0)
		return -1;
	if (acc > 0 || ali > 0)
		return 1;
	plus = memchr(address, '+', (size_t)(at - address));
	if (plus != NULL && plus > address) {
		char *base = xasprintf("%.*s%s", (int)(plus - address), address, at);
		int ret = expand(r, base, depth);
		free(base);
		return ret;
	}
	return 0;
}

static int
first_account(const struct store_account *a, void *ctx)
{
	struct store_account *out = ctx;

	if (a->disabled)
		return 0;
	*out = *a;
	return 1;
}

/* postmaster@ and abuse@ must always work: the domain's first account, else any account. */
static int
role_fallback(struct resolve *r, const char *domain)
{
	struct store_account acc;
	int ret;

	memset(&acc, 0, sizeof(acc));
	ret = store_account_list(r->store, domain, first_account, &acc);
	if (ret == 0)
		ret = store_account_list(r->store, NULL, first_account, &acc);
	if (ret < 0)
		return -1;
	if (acc.id == 0)
		return 0;
	return try_account(r, acc.address);
}

enum smtp_resolve_result
smtp_resolve(struct store *store, const char *address, struct smtp_route *route)
{
	struct resolve r = {store, route, false, 0};
	const char *at = strrchr(address, '@');
	char *addr, *domain, *catchall;
	int ret;

	memset(route, 0, sizeof(*route));
	if (at == NULL) /* RCPT TO:<postmaster> without domain: RFC 5321 4.1.1.3 */
		addr = xasprintf("%s@", address);
	else
		addr = xstrdup(address);
	at = strrchr(addr, '@');
	domain = addr + (at - addr) + 1;
	str_lower(domain);
	if (domain[0] == '\0') {
		/* <postmaster> without a domain: this server's postmaster (RFC 5321 4.1.1.3). */
		ret = strcasecmp(addr, "postmaster@") == 0 ? role_fallback(&r, NULL) : 0;
		free(addr);
		if (ret < 0)
			return SMTP_RESOLVE_TEMPFAIL;
		return ret > 0 ? SMTP_RESOLVE_LOCAL : SMTP_RESOLVE_UNKNOWN;
	}
	ret = store_domain_exists(store, domain);
	if (ret <= 0) {
		free(addr);
		return ret < 0 ? SMTP_RESOLVE_TEMPFAIL : SMTP_RESOLVE_REMOTE;
	}
	ret = expand(&r, addr, 0);
	if (ret == 0) {
		size_t llen = (size_t)(at - addr);
		bool role = (llen == 10 && strncasecmp(addr, "postmaster", 10) == 0) ||
		            (llen == 5 && strncasecmp(addr, "abuse", 5) == 0);
		catchall = xasprintf("@%s", domain);
		/* Role addresses are never swallowed by a catch-all's owner by accident: they go to
		 * the catch-all only when it exists, else to the fallback. */
		ret = try_aliases(&r, catchall, 0);
		free(catchall);
		if (ret == 0 && role)
			ret = role_fallback(&r, domain);
	}
	free(addr);
	if (ret < 0 || r.tempfail)
		return SMTP_RESOLVE_TEMPFAIL;
	if (route->nmailboxes == 0 && route->nremote == 0)
		return SMTP_RESOLVE_UNKNOWN;
	return SMTP_RESOLVE_LOCAL;
}

void
smtp_route_deinit(struct smtp_route *route)
{
	for (size_t i = 0; i < route->nremote; i++)
		free(route->remote[i]);
	free(route->remote);
	free(route->mailboxes);
	memset(route, 0, sizeof(*route));
}

void
smtp_route_copy(struct smtp_route *dst, const struct smtp_route *src)
{
	*dst = *src;
	dst->mailboxes = NULL;
	dst->remote = NULL;
	if (src->nmailboxes > 0) {
		dst->mailboxes = xcalloc(src->nmailboxes, sizeof(*dst->mailboxes));
		memcpy(dst->mailboxes, src->mailboxes, src->nmailboxes * sizeof(*dst->mailboxes));
	}
	if (src->nremote > 0) {
		dst->remote = xcalloc(src->nremote, sizeof(*dst->remote));
		for (size_t i = 0; i < src->nremote; i++)
			dst->remote[i] = xstrdup(src->remote[i]);
	}
}
