/* A small hash map from byte-string keys to pointers, for in-memory tables that must stay
 * bounded (the caller evicts). Not thread-safe: the owner holds its own lock. */
#ifndef CORE_HMAP_H
#define CORE_HMAP_H

#include "core/compat.h"

struct hmap;

/* SipHash-2-4 of data under a 128-bit key (exposed for its test vectors). */
uint64_t hmap_siphash(const uint8_t key[16], const void *data, size_t len);

struct hmap *hmap_new(void);
/* Frees the map; values are the caller's (free them first with hmap_foreach). */
void hmap_free(struct hmap **map);
/* The value for key, or NULL. */
void *hmap_get(const struct hmap *map, const void *key, size_t keylen);
/* Inserts or replaces; returns the previous value or NULL. The key is copied. */
void *hmap_put(struct hmap *map, const void *key, size_t keylen, void *value);
/* Removes key; returns its value or NULL. */
void *hmap_remove(struct hmap *map, const void *key, size_t keylen);
size_t hmap_count(const struct hmap *map);
/* Calls fn for every entry; when fn returns true the entry is removed (after the call, so fn
 * may free the value). */
void hmap_foreach(struct hmap *map, bool (*fn)(const void *key, size_t keylen, void *value,
                                               void *ctx), void *ctx);

#endif
