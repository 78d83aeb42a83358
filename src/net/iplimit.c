/* Connections per client address: a small chained hash table under one mutex. IPv6 clients are
 * counted per /64, because one subscriber usually holds a whole /64 and could otherwise open
 * connections from as many addresses as they like. Each entry keeps the open connections per
 * service and the new connections of the current minute; it goes once both are spent. */
#include "net/net_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define IPLIMIT_BUCKETS 4096

struct iplimit_entry {
	struct iplimit_entry *next;
	uint8_t key[16];
	uint64_t open[NET_SVC_COUNT]; /* connections open, per service */
	uint64_t open_total;          /* count, all services */
	uint64_t minute_start;        /* ms */
	uint64_t minute_new;          /* connections accepted since minute_start */
};

#define IPLIMIT_MINUTE_MS 60000

struct net_iplimit {
	pthread_mutex_t lock;
	struct iplimit_entry *buckets[IPLIMIT_BUCKETS];
};

static void
addr_key(const struct sockaddr_storage *ss, uint8_t key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &sin->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		const uint8_t *a = sin6->sin6_addr.s6_addr;
		/* v4-mapped addresses are IPv4 clients: keep them whole. */
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			memcpy(key, a, 16);
		else
			memcpy(key, a, 8);
	}
}

static unsigned int
key_hash(const uint8_t key[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % IPLIMIT_BUCKETS;
}

struct net_iplimit *
net__iplimit_new(void)
{
	struct net_iplimit *lim = xcalloc(1, sizeof(*lim));

	pthread_mutex_init(&lim->lock, NULL);
	return lim;
}

void
net__iplimit_free(struct net_iplimit **limp)
{
	struct net_iplimit *lim = *limp;

	if (lim == NULL)
		return;
	for (int i = 0; i < IPLIMIT_BUCKETS; i++) {
		struct iplimit_entry *e = lim->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	pthread_mutex_destroy(&lim->lock);
	free(lim);
	*limp = NULL;
}

/* Drops entries of the chain that hold nothing any more. Caller holds the lock. */
static void
prune(struct iplimit_entry **pp, uint64_t now)
{
	while (*pp != NULL) {
		struct iplimit_entry *e = *pp;
		if (e->open_total == 0 && now - e->minute_start >= IPLIMIT_MINUTE_MS) {
			*pp = e->next;
			free(e);
		} else {
			pp = &e->next;
		}
	}
}

enum net_iplimit_result
net__iplimit_take(struct net_iplimit *lim, const struct sockaddr_storage *addr, unsigned int svc,
                  uint64_t max_concurrent, uint64_t max_per_minute, uint64_t now)
{
	enum net_iplimit_result ret = NET_IPLIMIT_OK;
	struct iplimit_entry *e;
	uint8_t key[16];
	unsigned int h;

	addr_key(addr, key);
	h = key_hash(key);
	pthread_mutex_lock(&lim->lock);
	prune(&lim->buckets[h], now);
	for (e = lim->buckets[h]; e != NULL; e = e->next) {
		if (memcmp(e->key, key, 16) == 0)
			break;
	}
	if (e == NULL) {
		e = xcalloc(1, sizeof(*e));
		memcpy(e->key, key, 16);
		e->minute_start = now;
		e->next = lim->buckets[h];
		lim->buckets[h] = e;
	}
	if (now - e->minute_start >= IPLIMIT_MINUTE_MS) {
		e->minute_start = now;
		e->minute_new = 0;
	}
	if (max_per_minute > 0 && e->minute_new >= max_per_minute)
		ret = NET_IPLIMIT_RATE;
	else if (e->open[svc] >= max_concurrent)
		ret = NET_IPLIMIT_CONCURRENT;
	if (ret == NET_IPLIMIT_OK) {
		e->open[svc]++;
		e->open_total++;
		e->minute_new++;
	}
	pthread_mutex_unlock(&lim->lock);
	return ret;
}

void
net__iplimit_release(struct net_iplimit *lim, const struct sockaddr_storage *addr,
                     unsigned int svc)
{
	uint8_t key[16];
	struct iplimit_entry *e;
	unsigned int h;

	addr_key(addr, key);
	h = key_hash(key);
	pthread_mutex_lock(&lim->lock);
	for (e = lim->buckets[h]; e != NULL; e = e->next) {
		if (memcmp(e->key, key, 16) == 0) {
			if (e->open[svc] > 0) {
				e->open[svc]--;
				e->open_total--;
			}
			break;
		}
	}
	pthread_mutex_unlock(&lim->lock);
}
