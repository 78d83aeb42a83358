/* Shared inside src/net only. */
#ifndef NET_INTERNAL_H
#define NET_INTERNAL_H

#include "net/net.h"

#include <netinet/in.h>
#include <sys/socket.h>

/* Per-client-address connection counting; IPv6 addresses count per /64. Thread-safe. */
struct net_iplimit;
struct net_iplimit *net__iplimit_new(void);
void net__iplimit_free(struct net_iplimit **lim);
enum net_iplimit_result {
	NET_IPLIMIT_OK,
	NET_IPLIMIT_CONCURRENT, /* max connections of this address on this service reached */
	NET_IPLIMIT_RATE,       /* max new connections of this address per minute reached */
};

/* Counts one more connection from addr on svc, unless that would exceed max_concurrent (per
 * service) or max_per_minute (over all services; 0 = no rate limit). Thread-safe. */
enum net_iplimit_result net__iplimit_take(struct net_iplimit *lim,
                                          const struct sockaddr_storage *addr, unsigned int svc,
                                          uint64_t max_concurrent, uint64_t max_per_minute,
                                          uint64_t now_ms);
void net__iplimit_release(struct net_iplimit *lim, const struct sockaddr_storage *addr,
                          unsigned int svc);

/* Splits a CFG_ADDRS value and binds copies listening sockets on each address (SO_REUSEPORT
 * when more than one, after checking that nothing listens there yet); returns the number of
 * fds put into fds (at most max; the copies of one address are adjacent), or -1 with error_r.
 * Binds only numeric addresses: no DNS at start. */
int net__bind_addrs(const char *addrs, unsigned int copies, int *fds, size_t max,
                    const char **error_r);

#endif
