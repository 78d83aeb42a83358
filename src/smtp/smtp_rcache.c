/* Recipient cache (see smtp_rcache.h). */
#include "smtp/smtp_rcache.h"

#include "core/hmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct rcache_slot {
	char *address; /* NULL = empty */
	uint64_t added_ms;
	struct smtp_route route;
};

struct smtp_rcache {
	pthread_mutex_t lock;
	uint8_t key[16]; /* SipHash key: nobody can aim addresses at one slot */
	uint64_t ttl_ms;
	size_t nslots;
	struct rcache_slot *slots;
};

struct smtp_rcache *
smtp_rcache_new(size_t slots)
{
	struct smtp_rcache *c = xcalloc(1, sizeof(*c));

	pthread_mutex_init(&c->lock, NULL);
	if (getrandom(c->key, sizeof(c->key), 0) != (ssize_t)sizeof(c->key)) {
		/* Without randomness slots are only predictable, not wrong. */
		memset(c->key, 0x5a, sizeof(c->key));
	}
	c->nslots = slots > 0 ? slots : 1;
	c->slots = xcalloc(c->nslots, sizeof(*c->slots));
	return c;
}

static void
slot_clear(struct rcache_slot *sl)
{
	free(sl->address);
	sl->address = NULL;
	smtp_route_deinit(&sl->route);
}

void
smtp_rcache_clear(struct smtp_rcache *c)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nslots; i++)
		slot_clear(&c->slots[i]);
	pthread_mutex_unlock(&c->lock);
}

void
smtp_rcache_free(struct smtp_rcache **cp)
{
	struct smtp_rcache *c = *cp;

	if (c == NULL)
		return;
	smtp_rcache_clear(c);
	free(c->slots);
	pthread_mutex_destroy(&c->lock);
	free(c);
	*cp = NULL;
}

void
smtp_rcache_set_ttl(struct smtp_rcache *c, uint64_t ttl_ms)
{
	smtp_rcache_clear(c);
	pthread_mutex_lock(&c->lock);
	c->ttl_ms = ttl_ms;
	pthread_mutex_unlock(&c->lock);
}

static struct rcache_slot *
slot_of(struct smtp_rcache *c, const char *address)
{
	return &c->slots[hmap_siphash(c->key, address, strlen(address)) % c->nslots];
}

bool
smtp_rcache_get(struct smtp_rcache *c, const char *address, uint64_t now_ms,
                struct smtp_route *route_r)
{
	struct rcache_slot *sl;
	bool hit = false;

	pthread_mutex_lock(&c->lock);
	sl = slot_of(c, address);
	if (sl->address != NULL && strcmp(sl->address, address) == 0) {
		if (now_ms >= sl->added_ms && now_ms - sl->added_ms < c->ttl_ms) {
			smtp_route_copy(route_r, &sl->route);
			hit = true;
		} else {
			slot_clear(sl);
		}
	}
	pthread_mutex_unlock(&c->lock);
	return hit;
}

void
smtp_rcache_put(struct smtp_rcache *c, const char *address, enum smtp_resolve_result result,
                const struct smtp_route *route, uint64_t now_ms)
{
	struct rcache_slot *sl;

	if (result != SMTP_RESOLVE_LOCAL || route->quota_limited ||
	    route->nmailboxes + route->nremote > SMTP_RCACHE_MAX_TARGETS)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->ttl_ms > 0) {
		sl = slot_of(c, address);
		slot_clear(sl);
		sl->address = xstrdup(address);
		sl->added_ms = now_ms;
		smtp_route_copy(&sl->route, route);
	}
	pthread_mutex_unlock(&c->lock);
}
