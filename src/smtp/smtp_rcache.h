/* Recipient cache: recent answers of smtp_resolve for local recipients, so that RCPT for an
 * address that receives mail often is answered on the I/O thread, without a round trip
 * through a lookup worker (two thread wake-ups per recipient).
 *
 * Only a local recipient whose accounts have no storage quota is kept: an unknown address, a
 * remote one, an account with a quota (full or not) and a store error are looked up every
 * time, so that a new account, a new domain, a mailbox that fills up and freed space count at
 * once. What a kept entry may miss for up to the TTL is a change made with the CLI (another
 * process): a removed or disabled account, a removed alias or a changed alias target. A
 * removed account's mailbox no longer exists at commit, which fails the message with a
 * temporary error, so nothing is lost or misdelivered.
 *
 * A fixed number of slots, one entry each (a newer address takes the slot over): bounded
 * memory whatever the traffic. Thread-safe. */
#ifndef SMTP_SMTP_RCACHE_H
#define SMTP_SMTP_RCACHE_H

#include "smtp/smtp_resolve.h"

/* Routes with more targets than this are not kept (big aliases; bounds the memory). */
#define SMTP_RCACHE_MAX_TARGETS 64

struct smtp_rcache;

struct smtp_rcache *smtp_rcache_new(size_t slots);
void smtp_rcache_free(struct smtp_rcache **cache);
/* How long an entry is used (0 = the cache is off). Empties the cache. */
void smtp_rcache_set_ttl(struct smtp_rcache *cache, uint64_t ttl_ms);
/* True and a copy of the route (smtp_route_deinit it) when address has an entry younger than
 * the TTL. Exact match of the address as given. */
bool smtp_rcache_get(struct smtp_rcache *cache, const char *address, uint64_t now_ms,
                     struct smtp_route *route_r);
/* Keeps what smtp_resolve answered for address, if it is worth keeping (see above). */
void smtp_rcache_put(struct smtp_rcache *cache, const char *address,
                     enum smtp_resolve_result result, const struct smtp_route *route,
                     uint64_t now_ms);
void smtp_rcache_clear(struct smtp_rcache *cache);

#endif
