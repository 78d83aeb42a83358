/* MX and address lookup with c-ares on a libevent base (contract in dns.h).
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB); each gets a libevent
 * event, and one timer follows ares_timeout(). A lookup is one MX query, then an A and an AAAA
 * query per host (at most DNS_MAX_HOSTS hosts); its result is handed over on a fresh event, so
 * the callback never runs inside dns_resolve_mx or inside c-ares. */
#include "dns/dns.h"

#include "core/buf.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* MX hosts looked at per domain: more is a misconfiguration or an attack. */
#define DNS_MAX_HOSTS 16
/* Addresses kept per host. */
#define DNS_MAX_ADDRS 8
#define DNS_MAX_SOCKETS 16

struct dns_sock {
	ares_socket_t fd;
	struct event *ev;
};

struct dns_resolver {
	struct event_base *base;
	ares_channel channel;
	struct event *timer;
	struct dns_sock socks[DNS_MAX_SOCKETS];
	bool destroying;
};

struct dns_host {
	char name[256];
	unsigned int pref;
	uint32_t rnd; /* random order among equal preferences */
	struct dns_target targets[2 * DNS_MAX_ADDRS];
	size_t ntargets;
};

struct dns_lookup {
	struct dns_resolver *r;
	char domain[256];
	uint16_t port;
	dns_mx_cb *cb;
	void *ctx;
	struct dns_host hosts[DNS_MAX_HOSTS];
	size_t nhosts;
	size_t pending; /* address queries outstanding */
	bool implicit;  /* no MX: the domain itself */
	bool tempfail;
	enum dns_status status;
	char error[400];
};

static void
dns_timer_update(struct dns_resolver *r)
{
	struct timeval max = {5, 0}, tv, *t;

	if (r->destroying)
		return;
	t = ares_timeout(r->channel, &max, &tv);
	(void)event_add(r->timer, t);
}

static void
dns_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;

	ares_process_fd(r->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
	                (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	dns_timer_update(r);
}

static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_resolver *r = arg;

	(void)fd;
	(void)what;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_timer_update(r);
}

static void
dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	struct dns_sock *slot = NULL, *free_slot = NULL;

	for (size_t i = 0; i < DNS_MAX_SOCKETS; i++) {
		if (r->socks[i].ev != NULL && r->socks[i].fd == fd)
			slot = &r->socks[i];
		else if (r->socks[i].ev == NULL && free_slot == NULL)
			free_slot = &r->socks[i];
	}
	if (slot != NULL) {
		event_free(slot->ev);
		slot->ev = NULL;
	}
	if (!readable && !writable)
		return;
	if (slot == NULL)
		slot = free_slot;
	if (slot == NULL)
		PANIC("c-ares uses more than %d sockets", DNS_MAX_SOCKETS);
	slot->fd = fd;
	slot->ev = event_new(r->base, fd, (short)(EV_PERSIST | (readable ? EV_READ : 0) |
	                                          (writable ? EV_WRITE : 0)),
	                     dns_sock_cb, r);
	if (slot->ev == NULL || event_add(slot->ev, NULL) < 0)
		PANIC("cannot watch a DNS socket");
}

int
dns_resolver_new(struct event_base *base, const char *servers, uint64_t timeout,
                 struct dns_resolver **resolver_r, const char **error_r)
{
	static bool library_ready;
	struct dns_resolver *r;
	struct ares_options o;
	int rc;

	if (!library_ready) {
		if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
			*error_r = "cannot initialise c-ares";
			return -1;
		}
		library_ready = true;
	}
	r = xcalloc(1, sizeof(*r));
	r->base = base;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = dns_sock_state;
	o.sock_state_cb_data = r;
	o.timeout = (int)MIN(timeout, 60000);
	o.tries = 2;
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	rc = ares_init_options(&r->channel, &o,
	                       ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	                       ARES_OPT_FLAGS);
	if (rc != ARES_SUCCESS) {
		*error_r = "cannot create the DNS resolver";
		free(r);
		return -1;
	}
	if (servers[0] != '\0') {
		char *csv = xstrdup(servers);

		for (char *p = csv; *p != '\0'; p++) {
			if (*p == ' ' || *p == '\t')
				*p = ',';
		}
		rc = ares_set_servers_ports_csv(r->channel, csv);
		free(csv);
		if (rc != ARES_SUCCESS) {
			*error_r = "queue.resolvers: expected numeric addresses like 127.0.0.1:53";
			ares_destroy(r->channel);
			free(r);
			return -1;
		}
	}
	r->timer = evtimer_new(base, dns_timer_cb, r);
	if (r->timer == NULL) {
		*error_r = "cannot create the DNS timer";
		ares_destroy(r->channel);
		free(r);
		return -1;
	}
	*resolver_r = r;
	return 0;
}

void
dns_resolver_free(struct dns_resolver **resolver)
{
	struct dns_resolver *r = *resolver;

	if (r == NULL)
		return;
	*resolver = NULL;
	r->destroying = true;
	ares_destroy(r->channel); /* calls the pending callbacks with ARES_EDESTRUCTION */
	for (size_t i = 0; i < DNS_MAX_SOCKETS; i++) {
		if (r->socks[i].ev != NULL)
			event_free(r->socks[i].ev);
	}
	event_free(r->timer);
	free(r);
}

/* ---- A lookup --------------------------------------------------------------------------- */

static int
dns_host_cmp(const void *a, const void *b)
{
	const struct dns_host *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return x->rnd < y->rnd ? -1 : x->rnd > y->rnd;
}

static void
dns_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_lookup *l = arg;
	struct dns_target *all = NULL;
	size_t n = 0;

	(void)fd;
	(void)what;
	if (l->status == DNS_OK) {
		for (size_t i = 0; i < l->nhosts; i++)
			n += l->hosts[i].ntargets;
		all = xcalloc(n > 0 ? n : 1, sizeof(*all));
		n = 0;
		for (size_t i = 0; i < l->nhosts; i++) {
			memcpy(all + n, l->hosts[i].targets,
			       l->hosts[i].ntargets * sizeof(*all));
			n += l->hosts[i].ntargets;
		}
		if (n == 0) {
			/* RFC 5321 5.1: hosts without addresses. An implicit MX without an address
			 * is a domain that cannot receive mail. */
			l->status = l->implicit && !l->tempfail ? DNS_NOTFOUND : DNS_TEMPFAIL;
			(void)snprintf(l->error, sizeof(l->error), "no address for the mail hosts "
			               "of %s", l->domain);
		}
	}
	l->cb(l->status, all, l->status == DNS_OK ? n : 0, l->error, l->ctx);
	free(all);
	free(l);
}

/* The lookup is complete: hand it over on a fresh event (or now, when shutting down). */
static void
dns_finish(struct dns_lookup *l)
{
	if (l->r->destroying) {
		l->status = DNS_TEMPFAIL;
		(void)snprintf(l->error, sizeof(l->error), "shutting down");
		dns_deliver_cb(-1, 0, l);
		return;
	}
	if (event_base_once(l->r->base, -1, EV_TIMEOUT, dns_deliver_cb, l, NULL) < 0)
		PANIC("event_base_once failed");
}

static void
dns_fail(struct dns_lookup *l, enum dns_status status, const char *what, int rc)
{
	l->status = status;
	(void)snprintf(l->error, sizeof(l->error), "%s for %s: %s", what, l->domain,
	               ares_strerror(rc));
	dns_finish(l);
}

struct dns_addr_query {
	struct dns_lookup *l;
	struct dns_host *host;
	int family;
};

static void
dns_addr_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_addr_query *q = arg;
	struct dns_lookup *l = q->l;
	struct dns_host *h = q->host;

	(void)timeouts;
	if (status == ARES_SUCCESS && q->family == AF_INET) {
		struct ares_addrttl a[DNS_MAX_ADDRS];
		int na = DNS_MAX_ADDRS;

		if (ares_parse_a_reply(abuf, alen, NULL, a, &na) == ARES_SUCCESS) {
			for (int i = 0; i < na && h->ntargets < N_ELEMENTS(h->targets); i++) {
				struct dns_target *t = &h->targets[h->ntargets++];
				struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;

				memset(t, 0, sizeof(*t));
				sin->sin_family = AF_INET;
				sin->sin_port = htons(l->port);
				sin->sin_addr = a[i].ipaddr;
				t->addrlen = sizeof(*sin);
				(void)!str_copy(t->host, sizeof(t->host), h->name);
			}
		}
	} else if (status == ARES_SUCCESS) {
		struct ares_addr6ttl a[DNS_MAX_ADDRS];
		int na = DNS_MAX_ADDRS;

		if (ares_parse_aaaa_reply(abuf, alen, NULL, a, &na) == ARES_SUCCESS) {
			for (int i = 0; i < na && h->ntargets < N_ELEMENTS(h->targets); i++) {
				struct dns_target *t = &h->targets[h->ntargets++];
				struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->addr;

				memset(t, 0, sizeof(*t));
				sin6->sin6_family = AF_INET6;
				sin6->sin6_port = htons(l->port);
				memcpy(&sin6->sin6_addr, &a[i].ip6addr, sizeof(sin6->sin6_addr));
				t->addrlen = sizeof(*sin6);
				(void)!str_copy(t->host, sizeof(t->host), h->name);
			}
		}
	} else if (status != ARES_ENODATA && status != ARES_ENOTFOUND) {
		l->tempfail = true;
	}
	free(q);
	if (--l->pending == 0) {
		l->status = DNS_OK;
		dns_finish(l);
	}
}

static void
dns_query_addrs(struct dns_lookup *l)
{
	qsort(l->hosts, l->nhosts, sizeof(l->hosts[0]), dns_host_cmp);
	l->pending = 2 * l->nhosts;
	for (size_t i = 0; i < l->nhosts; i++) {
		/* IPv4 first: a sending host without IPv6 connectivity fails fast on the AAAA
		 * targets anyway, and tries them after. */
		static const int families[2] = {AF_INET, AF_INET6};

		for (int k = 0; k < 2; k++) {
			struct dns_addr_query *q = xcalloc(1, sizeof(*q));

			q->l = l;
			q->host = &l->hosts[i];
			q->family = families[k];
			ares_query(l->r->channel, l->hosts[i].name, ns_c_in,
			           families[k] == AF_INET ? ns_t_a : ns_t_aaaa, dns_addr_cb, q);
		}
	}
}

static void
dns_mx_reply_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_lookup *l = arg;
	struct ares_mx_reply *mx = NULL;
	int rc;

	(void)timeouts;
	if (status == ARES_EDESTRUCTION || l->r->destroying) {
		dns_fail(l, DNS_TEMPFAIL, "lookup cancelled", status);
		return;
	}
	if (status == ARES_ENOTFOUND) {
		dns_fail(l, DNS_NOTFOUND, "domain not found", status);
		return;
	}
	if (status == ARES_ENODATA) {
		rc = ARES_ENODATA;
	} else if (status != ARES_SUCCESS) {
		dns_fail(l, DNS_TEMPFAIL, "MX lookup failed", status);
		return;
	} else {
		rc = ares_parse_mx_reply(abuf, alen, &mx);
	}
	if (rc == ARES_ENODATA) {
		/* RFC 5321 5.1: no MX records: the domain is its own mail host. */
		l->implicit = true;
		l->nhosts = 1;
		(void)!str_copy(l->hosts[0].name, sizeof(l->hosts[0].name), l->domain);
		dns_query_addrs(l);
		return;
	}
	if (rc != ARES_SUCCESS) {
		dns_fail(l, DNS_TEMPFAIL, "bad MX reply", rc);
		return;
	}
	for (struct ares_mx_reply *m = mx; m != NULL; m = m->next) {
		/* RFC 7505: a single MX "." with preference 0 means no mail at all. */
		if (m->host == NULL || m->host[0] == '\0' || strcmp(m->host, ".") == 0) {
			if (mx->next == NULL) {
				ares_free_data(mx);
				l->status = DNS_NULL_MX;
				(void)snprintf(l->error, sizeof(l->error),
				               "%s does not accept mail (null MX)", l->domain);
				dns_finish(l);
				return;
			}
			continue;
		}
		if (l->nhosts == DNS_MAX_HOSTS)
			break;
		{
			struct dns_host *h = &l->hosts[l->nhosts];

			if (str_copy(h->name, sizeof(h->name), m->host) < 0)
				continue;
			h->pref = m->priority;
			if (getrandom(&h->rnd, sizeof(h->rnd), 0) != (ssize_t)sizeof(h->rnd))
				h->rnd = (uint32_t)l->nhosts;
			l->nhosts++;
		}
	}
	ares_free_data(mx);
	if (l->nhosts == 0) {
		dns_fail(l, DNS_TEMPFAIL, "no usable MX host", ARES_ENODATA);
		return;
	}
	dns_query_addrs(l);
}

void
dns_resolve_mx(struct dns_resolver *r, const char *domain, uint16_t port, dns_mx_cb *cb,
               void *ctx)
{
	struct dns_lookup *l = xcalloc(1, sizeof(*l));

	l->r = r;
	l->port = port;
	l->cb = cb;
	l->ctx = ctx;
	if (str_copy(l->domain, sizeof(l->domain), domain) < 0) {
		l->status = DNS_NOTFOUND;
		(void)snprintf(l->error, sizeof(l->error), "domain name too long");
		dns_finish(l);
		return;
	}
	ares_query(r->channel, domain, ns_c_in, ns_t_mx, dns_mx_reply_cb, l);
	dns_timer_update(r);
}
