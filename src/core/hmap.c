/* Chained hash map with FNV-1a hashing; grows at load factor 1. See hmap.h. */
#include "core/hmap.h"

#include <stdlib.h>
#include <string.h>

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

static uint32_t
hash_bytes(const void *key, size_t len)
{
	const uint8_t *p = key;
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
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
