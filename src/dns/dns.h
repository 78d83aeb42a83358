/* Destination lookup for outbound mail with c-ares, on a libevent base (never blocking).
 *
 * dns_resolve_mx() follows RFC 5321 5.1: the MX records sorted by preference (random order
 * among equal preferences), each host's A and AAAA addresses in that order; a domain without MX
 * records (NODATA) is its own implicit MX; a null MX (RFC 7505: one record ".") is reported as
 * such. Only the configured resolvers are asked; ares_query never reads /etc/hosts.
 *
 * Threads: every function and callback on the base's thread. */
#ifndef DNS_DNS_H
#define DNS_DNS_H

#include "core/compat.h"

#include <sys/socket.h>

struct event_base;
struct dns_resolver;

enum dns_status {
	DNS_OK = 0,        /* addresses found */
	DNS_TEMPFAIL = 1,  /* server failure, timeout, or no address for any host: retry later */
	DNS_NOTFOUND = 2,  /* the domain does not exist (NXDOMAIN) or has no address: permanent */
	DNS_NULL_MX = 3,   /* RFC 7505: the domain accepts no mail: permanent */
};

struct dns_target {
	struct sockaddr_storage addr; /* with the port filled in */
	socklen_t addrlen;
	char host[256]; /* the MX host name it came from */
};

/* status DNS_OK: targets[0..n) in the order to try them (valid during the call only). Other
 * status: n = 0 and error says why. Called exactly once, never from within dns_resolve_mx. */
typedef void dns_mx_cb(enum dns_status status, const struct dns_target *targets, size_t n,
                       const char *error, void *ctx);

/* servers: "127.0.0.1:5353 [::1]:53" (numeric, space or comma separated), or "" for the
 * system's resolvers (/etc/resolv.conf). timeout: ms per try. -1 with *error_r on failure. */
ATTR_WUR int dns_resolver_new(struct event_base *base, const char *servers, uint64_t timeout,
                              struct dns_resolver **resolver_r, const char **error_r);
/* Cancels every query in progress: their callbacks are called with DNS_TEMPFAIL first. */
void dns_resolver_free(struct dns_resolver **resolver);

/* Looks up where mail for domain goes; port: 25 outside tests. */
void dns_resolve_mx(struct dns_resolver *resolver, const char *domain, uint16_t port,
                    dns_mx_cb *cb, void *ctx);

#endif
