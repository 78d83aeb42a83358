/* Chained hash map with keyed hashing (SipHash-2-4 under a random per-process key); grows at
 * load factor 1. See hmap.h. */
#include "core/hmap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct hmap_entry {
	struct hmap_entry *next;
	uint32_t hash;
	size_t keylen;
	void *value;
	uint8_t key[];
};

struct hmap {
	struct hmap_entry **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
};

static uint64_t
rotl64(uint64_t x, unsigned int b)
{
	return (x << b) | (x >> (64 - b));
}

static uint64_t
load_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* One SipRound on the four state words. */
#define SIPROUND(v)                                                                            \
	do {                                                                                   \
		(v)[0] += (v)[1];                                                               \
		(v)[1] = rotl64((v)[1], 13) ^ (v)[0];                                           \
		(v)[0] = rotl64((v)[0], 32);                                                    \
		(v)[2] += (v)[3];                                                               \
		(v)[3] = rotl64((v)[3], 16) ^ (v)[2];                                           \
		(v)[0] += (v)[3];                                                               \
		(v)[3] = rotl64((v)[3], 21) ^ (v)[0];                                           \
		(v)[2] += (v)[1];                                                               \
		(v)[1] = rotl64((v)[1], 17) ^ (v)[2];                                           \
		(v)[2] = rotl64((v)[2], 32);                                                    \
	} while (0)

uint64_t
hmap_siphash(const uint8_t key[16], const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t k0 = load_le64(key), k1 = load_le64(key + 8), m, v[4];
	uint8_t last[8] = {0};
	size_t i;

	v[0] = k0 ^ 0x736f6d6570736575ULL;
	v[1] = k1 ^ 0x646f72616e646f6dULL;
	v[2] = k0 ^ 0x6c7967656e657261ULL;
	v[3] = k1 ^ 0x7465646279746573ULL;
	for (i = 0; i + 8 <= len; i += 8) {
		m = load_le64(p + i);
		v[3] ^= m;
		SIPROUND(v);
		SIPROUND(v);
		v[0] ^= m;
	}
	memcpy(last, p + i, len - i);
	last[7] = (uint8_t)len;
	m = load_le64(last);
	v[3] ^= m;
	SIPROUND(v);
	SIPROUND(v);
	v[0] ^= m;
	v[2] ^= 0xff;
	for (int r = 0; r < 4; r++)
		SIPROUND(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* Keys of the maps are often chosen by clients (addresses, user names): with a hash they can
 * predict, they could pile every key into one chain. The key of the hash is random. */
static uint8_t hash_key[16];
static pthread_once_t hash_key_once = PTHREAD_ONCE_INIT;

static void
hash_key_init(void)
{
	if (getrandom(hash_key, sizeof(hash_key), 0) != (ssize_t)sizeof(hash_key)) {
		/* No entropy this early: still different per process and per run. */
		struct timespec ts;
		uint64_t a;

		clock_gettime(CLOCK_REALTIME, &ts);
		a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)&ts;
		memcpy(hash_key, &a, sizeof(a));
		a = (uint64_t)(uintptr_t)hash_key ^ (uint64_t)getpid() << 17;
		memcpy(hash_key + 8, &a, sizeof(a));
	}
}

static uint32_t
hash_bytes(const void *key, size_t len)
{
	(void)pthread_once(&hash_key_once, hash_key_init);
	return (uint32_t)hmap_siphash(hash_key, key, len);
}

struct hmap *
hmap_new(void)
{
	struct hmap *m = xcalloc(1, sizeof(*m));

	m->nbuckets = 64;
	m->buckets = xcalloc(m->nbuckets, sizeof(*m->buckets));
	return m;
}

void
hmap_free(struct hmap **mp)
{
	struct hmap *m = *mp;

	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct hmap_entry *e = m->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(m->buckets);
	free(m);
	*mp = NULL;
}

static struct hmap_entry **
find(const struct hmap *m, const void *key, size_t keylen, uint32_t h)
{
	struct hmap_entry **pp = &m->buckets[h & (m->nbuckets - 1)];

	for (; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->hash == h && (*pp)->keylen == keylen && memcmp((*pp)->key, key, keylen) == 0)
			break;
	}
	return pp;
}

void *
hmap_get(const struct hmap *m, const void *key, size_t keylen)
{
	struct hmap_entry **pp = find(m, key, keylen, hash_bytes(key, keylen));

	return *pp != NULL ? (*pp)->value : NULL;
}

static void
grow(struct hmap *m)
{
	size_t n = m->nbuckets * 2;
	struct hmap_entry **b = xcalloc(n, sizeof(*b));

	for (size_t i = 0; i < m->nbuckets; i++) {
		struct hmap_entry *e = m->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

void *
hmap_put(struct hmap *m, const void *key, size_t keylen, void *value)
{
	uint32_t h = hash_bytes(key, keylen);
	struct hmap_entry **pp = find(m, key, keylen, h), *e;
	void *old;

	if (*pp != NULL) {
		old = (*pp)->value;
		(*pp)->value = value;
		return old;
	}
	e = xmalloc(sizeof(*e) + keylen);
	e->next = NULL;
	e->hash = h;
	e->keylen = keylen;
	e->value = value;
	memcpy(e->key, key, keylen);
	*pp = e;
	if (++m->count > m->nbuckets)
		grow(m);
	return NULL;
}

void *
hmap_remove(struct hmap *m, const void *key, size_t keylen)
{
	struct hmap_entry **pp = find(m, key, keylen, hash_bytes(key, keylen)), *e = *pp;
	void *v;

	if (e == NULL)
		return NULL;
	*pp = e->next;
	v = e->value;
	free(e);
	m->count--;
	return v;
}

size_t
hmap_count(const struct hmap *m)
{
	return m->count;
}

void
hmap_foreach(struct hmap *m, bool (*fn)(const void *, size_t, void *, void *), void *ctx)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct hmap_entry **pp = &m->buckets[i];
		while (*pp != NULL) {
			struct hmap_entry *e = *pp;
			if (fn(e->key, e->keylen, e->value, ctx)) {
				*pp = e->next;
				free(e);
				m->count--;
			} else {
				pp = &e->next;
			}
		}
	}
}
