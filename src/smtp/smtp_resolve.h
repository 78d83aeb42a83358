/* Recipient resolution: what a recipient address means on this server.
 *
 * Local domain: the account (with subaddressing, "user+tag@" delivers to "user@"), its aliases
 * (one to many; to local or remote addresses; expanded recursively up to a depth, loops cut),
 * the domain's catch-all ("@domain"), and postmaster@/abuse@ of every local domain (RFC 5321
 * 4.5.1, RFC 2142), which reach the domain's first account when nobody configured them.
 * Anything else in a local domain does not exist. Other domains are remote.
 *
 * Runs synchronous store reads: call it on a worker thread, never on an I/O thread. */
#ifndef SMTP_SMTP_RESOLVE_H
#define SMTP_SMTP_RESOLVE_H

#include "store/store.h"

#define SMTP_RESOLVE_MAX_DEPTH 8     /* alias chains longer than this are a loop */
#define SMTP_RESOLVE_MAX_TARGETS 1000 /* expansion of one recipient */

enum smtp_resolve_result {
	SMTP_RESOLVE_LOCAL = 0,    /* route filled in (mailboxes and/or remote addresses) */
	SMTP_RESOLVE_REMOTE = 1,   /* not a local domain */
	SMTP_RESOLVE_UNKNOWN = 2,  /* local domain, no such recipient */
	SMTP_RESOLVE_TEMPFAIL = 3, /* the store could not be read */
};

struct smtp_route {
	int64_t *mailboxes; /* INBOX ids of local accounts, without duplicates */
	size_t nmailboxes;
	char **remote; /* remote addresses reached through aliases, without duplicates */
	size_t nremote;
	bool over_quota;    /* a local account it reaches has used up its storage quota */
	bool quota_limited; /* a local account it reaches has a storage quota */
};

/* The storage quota of accounts without one of their own (0 = unlimited). */
void smtp_resolve_set_default_quota(uint64_t bytes);

/* address is "local@domain" (already syntax-checked). Caller frees the route with
 * smtp_route_deinit() whatever the result. */
enum smtp_resolve_result smtp_resolve(struct store *store, const char *address,
                                      struct smtp_route *route);
void smtp_route_deinit(struct smtp_route *route);
/* dst becomes a deep copy of src (dst's old content is not freed). */
void smtp_route_copy(struct smtp_route *dst, const struct smtp_route *src);
/* 1 when the route delivers to the INBOX of the account `user`, 0 when not, -1 on a store
 * error. (Is a MAIL FROM address one of the account's own? It is when it reaches her INBOX.) */
int smtp_route_reaches(struct store *store, const struct smtp_route *route, const char *user);


#endif
