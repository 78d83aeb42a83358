/* The guard against password guessing (see guard.h).
 *
 * Tables (in memory, under one mutex, bounded by GUARD_MAX_ENTRIES each with expiry sweeps):
 *   addrs:    "svc|prefix"       -> failures in the window and the distinct (user, password)
 *                                   hashes seen, so a repeated stale password counts once
 *   stale:    "svc|prefix|user"  -> repeats of one stale password (delay, listing, notice)
 *   accounts: "user"             -> failures over all addresses (distributed guessing)
 *   bans:     "svc|prefix"       -> until, strikes (for doubling), persisted in the store
 * Address keys use the /64 of IPv6 clients, as the connection limits do. */
#include "guard/guard.h"
#include "core/hmap.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GUARD_MAX_SEEN 32        /* distinct (user, password) hashes remembered per address */
#define GUARD_MAX_ENTRIES 100000 /* per table: beyond it, expired entries are swept first */
#define GUARD_MAX_ALLOW 64       /* allow-list networks */
#define GUARD_DAY_MS (24ULL * 3600 * 1000)

struct net_prefix {
	uint8_t addr[16];
	unsigned int bits;
};

struct addr_rec {
	uint64_t window_start; /* ms */
	unsigned int failures; /* distinct failures in the window */
	unsigned int nseen;
	uint8_t seen[GUARD_MAX_SEEN][GUARD_MAC_SIZE];
};

struct stale_rec {
	char user[256];
	char ip[INET6_ADDRSTRLEN];
	enum guard_service svc;
	uint8_t mac[GUARD_MAC_SIZE];
	uint32_t attempts;   /* repeats of the same stale password */
	int64_t since, last; /* s */
	int64_t notified_day; /* day number of the last notice */
};

struct account_rec {
	uint64_t window_start; /* ms */
	unsigned int failures;
	bool alerted;
};

struct ban_rec {
	int64_t until;     /* s */
	int64_t last_ban;  /* s */
	uint32_t strikes;  /* bans within a day of each other */
	uint32_t failures;
	bool local;        /* issued by this process (not read from the store) */
};

struct guard {
	pthread_mutex_t lock;
	struct store *store;
	struct tpool *pool;
	struct guard_options opts;
	uint8_t secret[32];
	struct net_prefix allow[GUARD_MAX_ALLOW];
	size_t nallow;
	struct hmap *addrs, *stale, *accounts, *bans;
	struct hmap *good; /* "svc|prefix" -> int64_t, s of the last successful login */
	int64_t generation; /* of the bans in the store, as last loaded */
};

static const char *const service_names[GUARD_SERVICES] = {"smtp", "imap", "pop3"};

const char *
guard_service_name(enum guard_service svc)
{
	return svc < GUARD_SERVICES ? service_names[svc] : "?";
}

int
guard_service_parse(const char *name, enum guard_service *r)
{
	for (int i = 0; i < GUARD_SERVICES; i++) {
		if (strcmp(name, service_names[i]) == 0) {
			*r = (enum guard_service)i;
			return 0;
		}
	}
	return -1;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 16 address bytes; IPv4 as v4-mapped. -1 when rip is not an address. */
static int
parse_addr(const char *rip, uint8_t out[16], bool *v6_r)
{
	struct in_addr a4;

	memset(out, 0, 16);
	if (inet_pton(AF_INET, rip, &a4) == 1) {
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &a4, 4);
		*v6_r = false;
		return 0;
	}
	if (inet_pton(AF_INET6, rip, out) == 1) {
		*v6_r = !(memcmp(out, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0);
		return 0;
	}
	return -1;
}

int
guard_address_prefix(const char *rip, char *out, size_t outsize)
{
	uint8_t a[16];
	bool v6;
	char text[INET6_ADDRSTRLEN];
	const char *slash = strchr(rip, '/');
	char plain[INET6_ADDRSTRLEN];

	/* "2001:db8::/64" as given by an operator is the prefix itself. */
	if (slash != NULL && strcmp(slash, "/64") == 0 && (size_t)(slash - rip) < sizeof(plain)) {
		memcpy(plain, rip, (size_t)(slash - rip));
		plain[slash - rip] = '\0';
		rip = plain;
	}
	if (parse_addr(rip, a, &v6) < 0) {
		snprintf(out, outsize, "%s", rip);
		return -1;
	}
	if (!v6) {
		inet_ntop(AF_INET, a + 12, text, sizeof(text));
		snprintf(out, outsize, "%s", text);
		return 0;
	}
	memset(a + 8, 0, 8);
	inet_ntop(AF_INET6, a, text, sizeof(text));
	snprintf(out, outsize, "%s/64", text);
	return 0;
}

static void
addr_prefix(const char *rip, char *out, size_t outsize)
{
	(void)guard_address_prefix(rip, out, outsize);
}

static bool
prefix_match(const struct net_prefix *p, const uint8_t a[16])
{
	unsigned int full = p->bits / 8, rest = p->bits % 8;

	if (memcmp(p->addr, a, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((p->addr[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool
is_allowed(const struct guard *g, const char *rip)
{
	uint8_t a[16];
	bool v6;

	if (parse_addr(rip, a, &v6) < 0)
		return false;
	for (size_t i = 0; i < g->nallow; i++) {
		if (prefix_match(&g->allow[i], a))
			return true;
	}
	return false;
}

static int
parse_allow(struct guard *g, const char *list, const char **error_r)
{
	g->nallow = 0;
	for (const char *p = list ? list : ""; *p != '\0';) {
		char word[64], *slash;
		size_t len;
		unsigned int bits;
		bool v6;
		struct net_prefix *np;

		while (*p == ' ' || *p == ',')
			p++;
		len = strcspn(p, " ,");
		if (len == 0)
			break;
		if (len >= sizeof(word) || g->nallow >= GUARD_MAX_ALLOW) {
			*error_r = "guard.allow: too many or too long entries";
			return -1;
		}
		memcpy(word, p, len);
		word[len] = '\0';
		p += len;
		np = &g->allow[g->nallow];
		slash = strchr(word, '/');
		if (slash != NULL)
			*slash++ = '\0';
		if (parse_addr(word, np->addr, &v6) < 0) {
			*error_r = "guard.allow: not an IP address or network";
			return -1;
		}
		bits = v6 ? 128 : 32;
		if (slash != NULL && (str_to_uint(slash, &bits) < 0 || bits > (v6 ? 128u : 32u))) {
			*error_r = "guard.allow: bad prefix length";
			return -1;
		}
		np->bits = v6 ? bits : bits + 96;
		g->nallow++;
	}
	return 0;
}

static size_t
make_key(char *out, size_t outsize, enum guard_service svc, const char *prefix, const char *user)
{
	int n = snprintf(out, outsize, "%s|%s%s%s", service_names[svc], prefix, user ? "|" : "",
	                 user ? user : "");

	return n < 0 ? 0 : MIN((size_t)n, outsize - 1);
}

/* ---- persistence (store jobs; never waited for) -------------------------------------------- */

struct ban_job {
	struct store_ban ban;
	bool remove;
};

static int
ban_job_run(struct store_txn *txn, void *ctx)
{
	struct ban_job *j = ctx;

	return store_txn_ban_set(txn, &j->ban);
}

static void
job_done_free(struct store_job *job, void *ctx)
{
	const char *error = NULL;

	if (store_job_result(job, &error) != STORE_OK)
		log_warn("event=error reason=\"guard state not saved: %s\"", error ? error : "?");
	store_job_free(&job);
	free(ctx);
}

static void
persist_ban(struct guard *g, enum guard_service svc, const char *prefix, const struct ban_rec *b,
            const char *reason)
{
	struct ban_job *j = xcalloc(1, sizeof(*j));

	(void)!str_copy(j->ban.ip, sizeof(j->ban.ip), prefix);
	(void)!str_copy(j->ban.service, sizeof(j->ban.service), service_names[svc]);
	(void)!str_copy(j->ban.reason, sizeof(j->ban.reason), reason);
	j->ban.until = b->until;
	j->ban.created = b->last_ban;
	j->ban.failures = b->failures;
	j->ban.strikes = b->strikes;
	store_submit(g->store, store_job_new(ban_job_run, job_done_free, j));
}

struct stale_job {
	struct store_stale stale;
};

static int
stale_job_run(struct store_txn *txn, void *ctx)
{
	return store_txn_stale_set(txn, &((struct stale_job *)ctx)->stale);
}

static void
persist_stale(struct guard *g, const struct stale_rec *s)
{
	struct stale_job *j = xcalloc(1, sizeof(*j));

	(void)!str_copy(j->stale.user, sizeof(j->stale.user), s->user);
	(void)!str_copy(j->stale.ip, sizeof(j->stale.ip), s->ip);
	(void)!str_copy(j->stale.service, sizeof(j->stale.service), service_names[s->svc]);
	j->stale.attempts = s->attempts;
	j->stale.since = s->since;
	j->stale.last = s->last;
	store_submit(g->store, store_job_new(stale_job_run, job_done_free, j));
}

/* The notice to the account owner: built and delivered on a worker (it needs store reads). */
struct notice {
	struct guard *g;
	char user[256];
	char ip[INET6_ADDRSTRLEN];
	char service[16];
	uint32_t attempts;
	int64_t mailbox_id;
	struct store_blob *blob;
	char blob_id[40]; /* the blob belongs to the job once submitted */
};

static int
notice_run(struct store_txn *txn, void *ctx)
{
	struct notice *n = ctx;
	uint32_t uid;

	return store_txn_deliver(txn, n->mailbox_id, n->blob_id, 0, store_txn_now(txn), &uid);
}

static void
notice_done(struct store_job *job, void *ctx)
{
	struct notice *n = ctx;
	const char *error = NULL;
	char user[LOG_SANITIZE_SIZE];

	if (store_job_result(job, &error) == STORE_OK)
		log_info("event=stale-notice user=%s rip=%s service=%s", log_sanitize_str(user, n->user),
		         n->ip, n->service);
	store_job_free(&job);
	free(n);
}

static void
notice_task(void *arg)
{
	struct notice *n = arg;
	struct store_account acc;
	struct store_mailbox mbox;
	struct store_job *job;
	struct buf text;
	char date[RFC5322_DATE_SIZE];
	const char *error;
	time_t now = time(NULL);

	if (store_account_get(n->g->store, n->user, &acc) != 1 ||
	    store_mailbox_get(n->g->store, acc.id, "INBOX", &mbox) != 1 ||
	    store_blob_new(n->g->store, &n->blob, &error) < 0) {
		free(n);
		return;
	}
	n->mailbox_id = mbox.id;
	rfc5322_date(date, now, false);
	buf_init(&text, 8192);
	buf_printf(&text,
	           "From: Mail server <postmaster@%s>\r\nTo: <%s>\r\n"
	           "Subject: A device keeps using an old password for your mailbox\r\n"
	           "Date: %s\r\nMessage-ID: <stale.%lld.%u@%s>\r\nAuto-Submitted: auto-generated\r\n"
	           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
	           "A device at the address %s has tried to log in to your mailbox %s (%s) with a\r\n"
	           "password that is no longer valid, %u times so far.\r\n\r\n"
	           "This is usually a phone, tablet, computer or telephone that still has your old\r\n"
	           "password. Please enter your current password on that device. If you do not know\r\n"
	           "the device, tell your mail administrator.\r\n\r\n"
	           "The device is slowed down but not blocked, and other devices are not affected.\r\n",
	           n->g->opts.hostname, n->user, date, (long long)now, n->attempts, n->g->opts.hostname,
	           n->ip, n->user, n->service, n->attempts);
	if (store_blob_write(n->blob, text.data, text.len) != STORE_OK) {
		buf_deinit(&text);
		store_blob_free(&n->blob);
		free(n);
		return;
	}
	buf_deinit(&text);
	(void)!str_copy(n->blob_id, sizeof(n->blob_id), store_blob_id(n->blob));
	job = store_job_new(notice_run, notice_done, n);
	store_job_add_blob(job, &n->blob);
	store_submit(n->g->store, job);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

static int
load_ban(const struct store_ban *b, void *ctx)
{
	struct hmap *bans = ctx;
	enum guard_service svc;
	struct ban_rec *r;
	char key[512];
	size_t klen;

	if (guard_service_parse(b->service, &svc) < 0)
		return 0;
	klen = make_key(key, sizeof(key), svc, b->ip, NULL);
	r = hmap_get(bans, key, klen);
	if (r == NULL) {
		r = xcalloc(1, sizeof(*r));
		hmap_put(bans, key, klen, r);
	}
	r->until = b->until;
	r->last_ban = b->created;
	r->strikes = b->strikes;
	r->failures = b->failures;
	return 0;
}

static bool
free_value(const void *key, size_t keylen, void *value, void *ctx)
{
	free(value);
	return true;
}

/* The bans in the store, as a new map (NULL on error). A store read: never under g->lock, which
 * the I/O threads take at every connect. */
static struct hmap *
read_bans(struct guard *g)
{
	struct hmap *bans = hmap_new();

	if (store_ban_list(g->store, load_ban, bans) < 0) {
		hmap_foreach(bans, free_value, NULL);
		hmap_free(&bans);
	}
	return bans;
}

int
guard_set_options(struct guard *g, const struct guard_options *opts, const char **error_r)
{
	int ret;

	pthread_mutex_lock(&g->lock);
	g->opts = *opts;
	g->opts.allow = NULL;
	ret = parse_allow(g, opts->allow, error_r);
	pthread_mutex_unlock(&g->lock);
	return ret;
}

int
guard_new(struct store *store, struct tpool *pool, const struct guard_options *opts,
          struct guard **guard_r, const char **error_r)
{
	struct guard *g = xcalloc(1, sizeof(*g));
	int64_t gen = 0;

	pthread_mutex_init(&g->lock, NULL);
	g->store = store;
	g->pool = pool;
	g->addrs = hmap_new();
	g->stale = hmap_new();
	g->accounts = hmap_new();
	g->bans = hmap_new();
	g->good = hmap_new();
	if (guard_set_options(g, opts, error_r) < 0)
		goto fail;
	if (store_secret(store, g->secret) != STORE_OK) {
		*error_r = "cannot read the server secret from the store";
		goto fail;
	}
	if (store_meta_get_int(store, "guard_generation", &gen) < 0) {
		*error_r = "cannot read the bans from the store";
		goto fail;
	}
	{
		struct hmap *bans = read_bans(g);
		if (bans == NULL) {
			*error_r = "cannot read the bans from the store";
			goto fail;
		}
		hmap_free(&g->bans);
		g->bans = bans;
	}
	g->generation = gen;
	*guard_r = g;
	return 0;
fail:
	guard_free(&g);
	return -1;
}

void
guard_free(struct guard **gp)
{
	struct guard *g = *gp;

	if (g == NULL)
		return;
	hmap_foreach(g->addrs, free_value, NULL);
	hmap_foreach(g->stale, free_value, NULL);
	hmap_foreach(g->accounts, free_value, NULL);
	hmap_foreach(g->bans, free_value, NULL);
	hmap_foreach(g->good, free_value, NULL);
	hmap_free(&g->good);
	hmap_free(&g->addrs);
	hmap_free(&g->stale);
	hmap_free(&g->accounts);
	hmap_free(&g->bans);
	explicit_bzero(g->secret, sizeof(g->secret));
	pthread_mutex_destroy(&g->lock);
	free(g);
	*gp = NULL;
}

static bool
log_lifted(const void *key, size_t keylen, void *value, void *ctx)
{
	struct guard *g = ctx;
	struct ban_rec *b = value, *now_rec = hmap_get(g->bans, key, keylen);
	const char *bar = memchr(key, '|', keylen);

	if (b->until > (int64_t)time(NULL) && (now_rec == NULL || now_rec->until <= (int64_t)time(NULL))
	    && bar != NULL)
		log_info("event=unban service=%.*s rip=%.*s reason=manual",
		         (int)((const char *)bar - (const char *)key), (const char *)key,
		         (int)(keylen - (size_t)((const char *)bar - (const char *)key) - 1), bar + 1);
	return false;
}

#define GUARD_UNSAVED_S 10 /* seconds a new ban may take to reach the store */

static bool
keep_recent(const void *key, size_t keylen, void *value, void *ctx)
{
	struct hmap *fresh = ctx;
	struct ban_rec *b = value, *loaded = hmap_get(fresh, key, keylen);

	if (!b->local || b->last_ban + GUARD_UNSAVED_S < (int64_t)time(NULL) || b->until == 0 ||
	    (loaded != NULL && loaded->last_ban >= b->last_ban))
		return false;
	if (loaded == NULL) {
		loaded = xmalloc(sizeof(*loaded));
		hmap_put(fresh, key, keylen, loaded);
	}
	*loaded = *b;
	return false;
}

void
guard_refresh(struct guard *g)
{
	struct hmap *fresh, *old;
	int64_t gen = 0, known;

	if (store_meta_get_int(g->store, "guard_generation", &gen) < 0)
		return;
	pthread_mutex_lock(&g->lock);
	known = g->generation;
	pthread_mutex_unlock(&g->lock);
	if (gen == known)
		return;
	fresh = read_bans(g);
	if (fresh == NULL)
		return;
	pthread_mutex_lock(&g->lock);
	old = g->bans;
	/* A ban issued here in the last seconds may still wait for its store job: keep it. */
	hmap_foreach(old, keep_recent, fresh);
	g->bans = fresh;
	g->generation = gen;
	/* Bans that were active and are gone were lifted by an operator. */
	hmap_foreach(old, log_lifted, g);
	log_info("event=bans-reloaded bans=%zu", hmap_count(g->bans));
	pthread_mutex_unlock(&g->lock);
	hmap_foreach(old, free_value, NULL);
	hmap_free(&old);
}

/* ---- checks ----------------------------------------------------------------------------------- */

int64_t
guard_banned_until(struct guard *g, enum guard_service svc, const char *rip)
{
	char prefix[INET6_ADDRSTRLEN + 4], key[512];
	struct ban_rec *b;
	int64_t until = 0, now = (int64_t)time(NULL);
	size_t klen;

	addr_prefix(rip, prefix, sizeof(prefix));
	klen = make_key(key, sizeof(key), svc, prefix, NULL);
	pthread_mutex_lock(&g->lock);
	if (!is_allowed(g, rip)) {
		b = hmap_get(g->bans, key, klen);
		if (b != NULL && b->until > now) {
			until = b->until;
		} else if (b != NULL && b->until > 0) {
			/* Kept for the doubling of a next ban within a day; logged once. */
			log_info("event=unban service=%s rip=%s reason=expired", service_names[svc],
			         prefix);
			b->until = 0;
		}
	}
	pthread_mutex_unlock(&g->lock);
	return until;
}

void
guard_password_mac(struct guard *g, const char *user, const char *password,
                   uint8_t mac[GUARD_MAC_SIZE])
{
	uint8_t full[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	size_t ulen = strlen(user), plen = strlen(password);
	uint8_t *msg = xmalloc(ulen + 1 + plen);

	/* The user is part of the message: one password tried against two users is two guesses. */
	for (size_t i = 0; i < ulen; i++)
		msg[i] = (uint8_t)(user[i] >= 'A' && user[i] <= 'Z' ? user[i] + 32 : user[i]);
	msg[ulen] = 0;
	memcpy(msg + ulen + 1, password, plen);
	HMAC(EVP_sha256(), g->secret, sizeof(g->secret), msg, ulen + 1 + plen, full, &len);
	memcpy(mac, full, GUARD_MAC_SIZE);
	explicit_bzero(msg, ulen + 1 + plen);
	explicit_bzero(full, sizeof(full));
	free(msg);
}

struct sweep_ctx {
	uint64_t now, window;
};

static bool
sweep_window(const void *key, size_t keylen, void *value, void *ctx)
{
	struct sweep_ctx *c = ctx;
	/* addr_rec and account_rec both start with window_start. */
	uint64_t start = *(uint64_t *)value;

	if (c->now - start <= c->window)
		return false;
	free(value);
	return true;
}

static bool
sweep_stale(const void *key, size_t keylen, void *value, void *ctx)
{
	struct stale_rec *s = value;
	struct sweep_ctx *c = ctx;

	if ((uint64_t)s->last * 1000 + GUARD_DAY_MS > c->now)
		return false;
	free(value);
	return true;
}

/* Keeps the tables bounded: an attacker with many addresses must not grow them without end. */
static void
bound_tables(struct guard *g, uint64_t now)
{
	struct sweep_ctx c = {now, g->opts.window};

	if (hmap_count(g->addrs) >= GUARD_MAX_ENTRIES)
		hmap_foreach(g->addrs, sweep_window, &c);
	if (hmap_count(g->accounts) >= GUARD_MAX_ENTRIES)
		hmap_foreach(g->accounts, sweep_window, &c);
	if (hmap_count(g->stale) >= GUARD_MAX_ENTRIES)
		hmap_foreach(g->stale, sweep_stale, &c);
	/* Still full after the sweep: forget everything rather than grow (fail open, logged). */
	if (hmap_count(g->addrs) >= GUARD_MAX_ENTRIES || hmap_count(g->accounts) >= GUARD_MAX_ENTRIES ||
	    hmap_count(g->stale) >= GUARD_MAX_ENTRIES) {
		log_warn("event=guard-overflow reason=\"too many tracked addresses; counters reset\"");
		hmap_foreach(g->addrs, free_value, NULL);
		hmap_foreach(g->accounts, free_value, NULL);
		hmap_foreach(g->stale, free_value, NULL);
	}
}

static uint64_t
clamp_shift(uint64_t base, unsigned int shift, uint64_t max)
{
	if (shift >= 20 || base > (max >> shift))
		return max;
	return MIN(base << shift, max);
}

/* Bans the address on svc. Caller holds the lock. */
static void
ban(struct guard *g, enum guard_service svc, const char *prefix, const char *key, size_t klen,
    unsigned int failures)
{
	struct ban_rec *b = hmap_get(g->bans, key, klen);
	int64_t now = (int64_t)time(NULL);
	uint64_t ms;

	if (b == NULL) {
		b = xcalloc(1, sizeof(*b));
		hmap_put(g->bans, key, klen, b);
	}
	/* Repeat offenders: each ban within a day of the previous one doubles the time. */
	if (b->last_ban > 0 && (uint64_t)(now - b->last_ban) * 1000 < GUARD_DAY_MS)
		b->strikes++;
	else
		b->strikes = 1;
	ms = clamp_shift(g->opts.ban_time, b->strikes - 1, g->opts.ban_max);
	b->local = true;
	b->last_ban = now;
	b->until = now + (int64_t)((ms + 999) / 1000);
	b->failures = failures;
	log_info("event=ban service=%s rip=%s until=%lld seconds=%llu failures=%u strikes=%u",
	         service_names[svc], prefix, (long long)b->until, (unsigned long long)(ms / 1000),
	         failures, b->strikes);
	persist_ban(g, svc, prefix, b, "auth-failures");
}

int
guard_priority(struct guard *g, enum guard_service svc, const char *rip)
{
	char prefix[INET6_ADDRSTRLEN + 4], key[512];
	struct addr_rec *a;
	int64_t *good;
	size_t klen;
	int prio = TPOOL_NORMAL;
	uint64_t now = now_ms();

	addr_prefix(rip, prefix, sizeof(prefix));
	klen = make_key(key, sizeof(key), svc, prefix, NULL);
	pthread_mutex_lock(&g->lock);
	a = hmap_get(g->addrs, key, klen);
	good = hmap_get(g->good, key, klen);
	if (a != NULL && a->failures > 0 && now - a->window_start <= g->opts.window)
		prio = TPOOL_LOW;
	else if (good != NULL && (uint64_t)*good * 1000 + GUARD_DAY_MS > now)
		prio = TPOOL_HIGH;
	pthread_mutex_unlock(&g->lock);
	return prio;
}

uint64_t
guard_auth_failed(struct guard *g, enum guard_service svc, const char *rip, const char *user,
                  const uint8_t mac[GUARD_MAC_SIZE])
{
	char prefix[INET6_ADDRSTRLEN + 4], key[512], skey[1024], suser[LOG_SANITIZE_SIZE];
	uint64_t now = now_ms(), delay = g->opts.failure_delay;
	struct addr_rec *a;
	struct account_rec *acc;
	size_t klen, sklen;
	bool repeat = false;

	addr_prefix(rip, prefix, sizeof(prefix));
	klen = make_key(key, sizeof(key), svc, prefix, NULL);
	sklen = make_key(skey, sizeof(skey), svc, prefix, user);
	log_sanitize_str(suser, user);
	pthread_mutex_lock(&g->lock);
	bound_tables(g, now);

	/* Per address: count distinct (user, password) pairs only. */
	a = hmap_get(g->addrs, key, klen);
	if (a == NULL) {
		a = xcalloc(1, sizeof(*a));
		hmap_put(g->addrs, key, klen, a);
	}
	if (now - a->window_start > g->opts.window) {
		a->window_start = now;
		a->failures = 0;
		a->nseen = 0;
	}
	for (unsigned int i = 0; i < a->nseen && !repeat; i++)
		repeat = memcmp(a->seen[i], mac, GUARD_MAC_SIZE) == 0;
	/* A stale password from an earlier window is still the same device. */
	if (!repeat) {
		struct stale_rec *s = hmap_get(g->stale, skey, sklen);
		repeat = s != NULL && memcmp(s->mac, mac, GUARD_MAC_SIZE) == 0;
	}

	if (repeat) {
		struct stale_rec *s = hmap_get(g->stale, skey, sklen);
		int64_t secs = (int64_t)(now / 1000);
		if (s == NULL) {
			s = xcalloc(1, sizeof(*s));
			(void)!str_copy(s->user, sizeof(s->user), user);
			(void)!str_copy(s->ip, sizeof(s->ip), prefix);
			s->svc = svc;
			s->since = secs;
			hmap_put(g->stale, skey, sklen, s);
		}
		if (memcmp(s->mac, mac, GUARD_MAC_SIZE) != 0) {
			/* Another stale password from this device: count it from the start. */
			memcpy(s->mac, mac, GUARD_MAC_SIZE);
			s->attempts = 0;
			s->since = secs;
		}
		s->attempts++;
		s->last = secs;
		/* Slow the device down more each time, up to a ceiling; never ban it. */
		delay = clamp_shift(g->opts.failure_delay ? g->opts.failure_delay : 1000,
		                    MIN(s->attempts, 16u), g->opts.stale_max_delay);
		if ((s->attempts & (s->attempts - 1)) == 0) {
			/* Logged and saved at 1, 2, 4, 8... repeats: visible, not flooding. */
			log_info("event=stale-password service=%s rip=%s user=%s attempts=%u",
			         service_names[svc], prefix, suser, s->attempts);
			persist_stale(g, s);
		}
		if (g->opts.stale_notify && s->attempts >= 3 &&
		    s->notified_day != secs / 86400) {
			struct notice *n = xcalloc(1, sizeof(*n));
			s->notified_day = secs / 86400;
			n->g = g;
			(void)!str_copy(n->user, sizeof(n->user), user);
			(void)!str_copy(n->ip, sizeof(n->ip), prefix);
			(void)!str_copy(n->service, sizeof(n->service), service_names[svc]);
			n->attempts = s->attempts;
			tpool_submit(g->pool, notice_task, n);
		}
	} else {
		if (a->nseen < GUARD_MAX_SEEN)
			memcpy(a->seen[a->nseen++], mac, GUARD_MAC_SIZE);
		a->failures++;
		if (a->failures >= g->opts.max_failures && !is_allowed(g, rip)) {
			ban(g, svc, prefix, key, klen, a->failures);
			a->failures = 0;
			a->nseen = 0;
		}
	}

	/* Per account, over all addresses: slow, alert, never lock. */
	acc = hmap_get(g->accounts, user, strlen(user));
	if (acc == NULL) {
		acc = xcalloc(1, sizeof(*acc));
		hmap_put(g->accounts, user, strlen(user), acc);
	}
	if (now - acc->window_start > g->opts.window) {
		acc->window_start = now;
		acc->failures = 0;
		acc->alerted = false;
	}
	if (!repeat)
		acc->failures++;
	if (acc->failures > g->opts.account_threshold) {
		uint64_t extra = ((uint64_t)acc->failures - g->opts.account_threshold) * 500;
		delay = MAX(delay, MIN(g->opts.failure_delay + extra, g->opts.account_max_delay));
		if (!acc->alerted) {
			acc->alerted = true;
			log_warn("event=account-attack user=%s failures=%u window_s=%llu "
			         "reason=\"many failed logins on one account; slowed, not locked\"",
			         suser, acc->failures, (unsigned long long)(g->opts.window / 1000));
		}
	}
	pthread_mutex_unlock(&g->lock);
	return delay;
}

void
guard_auth_succeeded(struct guard *g, enum guard_service svc, const char *rip, const char *user)
{
	char prefix[INET6_ADDRSTRLEN + 4], skey[1024];
	size_t sklen;

	addr_prefix(rip, prefix, sizeof(prefix));
	sklen = make_key(skey, sizeof(skey), svc, prefix, user);
	pthread_mutex_lock(&g->lock);
	free(hmap_remove(g->stale, skey, sklen));
	{
		char key[512];
		size_t klen = make_key(key, sizeof(key), svc, prefix, NULL);
		int64_t *good = hmap_get(g->good, key, klen);

		if (good == NULL) {
			if (hmap_count(g->good) >= GUARD_MAX_ENTRIES)
				hmap_foreach(g->good, free_value, NULL); /* bounded: start over */
			good = xmalloc(sizeof(*good));
			hmap_put(g->good, key, klen, good);
		}
		*good = (int64_t)(now_ms() / 1000);
	}
	pthread_mutex_unlock(&g->lock);
}
