/* Binding listening sockets from a listen setting ("127.0.0.1:25 [::1]:25 *:587").
 * Only numeric addresses are accepted, so start-up never waits for DNS; "*" binds both the IPv4
 * and the IPv6 wildcard (IPv6 with V6ONLY, so the two never conflict).
 *
 * Each address gets one socket per I/O thread (SO_REUSEPORT): the kernel spreads new
 * connections over them and each thread accepts its own, with no hand-off between threads.
 * SO_REUSEPORT would also let a second server of the same user share the port unnoticed, so
 * the address is first bound once without it: that fails while anything listens there. */
#include "net/net_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

struct bind_error {
	char msg[256];
};

static int
bind_error(struct bind_error *e, const struct addrinfo *ai, const char *host, const char *port)
{
	snprintf(e->msg, sizeof(e->msg), "cannot listen on %s%s%s:%s: %s",
	         ai->ai_family == AF_INET6 ? "[" : "", host, ai->ai_family == AF_INET6 ? "]" : "",
	         port, strerror(errno));
	return -1;
}

/* One socket on ai: listening, or (probe) only bound to see that the address is free. */
static int
bind_ai(const struct addrinfo *ai, bool reuseport, bool probe, int *fd_r)
{
	int fd, one = 1;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if ((reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || (!probe && listen(fd, LISTEN_BACKLOG) < 0)) {
		int err = errno;

		close(fd);
		errno = err;
		return -1;
	}
	*fd_r = fd;
	return 0;
}

/* Binds copies sockets on host:port into fds; returns how many (= copies) or -1. */
static int
bind_one(const char *host, const char *port, unsigned int copies, int *fds,
         struct bind_error *e)
{
	struct addrinfo hints, *res = NULL;
	unsigned int n = 0;
	int err, fd;

	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	err = getaddrinfo(host, port, &hints, &res);
	if (err != 0) {
		snprintf(e->msg, sizeof(e->msg), "listen address %s: must be an IP address (%s)",
		         host, gai_strerror(err));
		return -1;
	}
	if (copies > 1 && strcmp(port, "0") != 0) {
		if (bind_ai(res, false, true, &fd) < 0)
			goto fail;
		close(fd);
	}
	while (n < copies) {
		if (bind_ai(res, copies > 1, false, &fds[n]) < 0)
			goto fail;
		if (n++ == 0 && copies > 1) {
			/* Port 0: the others join the port the kernel chose for the first. */
			struct sockaddr_storage ss;
			socklen_t len = sizeof(ss);

			if (getsockname(fds[0], (struct sockaddr *)&ss, &len) < 0 ||
			    len > sizeof(ss) || len != res->ai_addrlen)
				goto fail;
			memcpy(res->ai_addr, &ss, len);
		}
	}
	freeaddrinfo(res);
	return (int)copies;
fail:
	bind_error(e, res, host, port);
	while (n > 0)
		close(fds[--n]);
	freeaddrinfo(res);
	return -1;
}

int
net__bind_addrs(const char *addrs, unsigned int copies, int *fds, size_t max,
                const char **error_r)
{
	static __thread struct bind_error e;
	size_t n = 0;

	copies = copies > 0 ? copies : 1;
	for (const char *p = addrs; *p != '\0';) {
		char word[128], *host, *port;
		size_t len;
		int got;

		while (*p == ' ' || *p == ',')
			p++;
		len = strcspn(p, " ,");
		if (len == 0)
			break;
		if (len >= sizeof(word) || n + 2 * copies > max) {
			*error_r = "too many or too long listen addresses";
			goto fail;
		}
		memcpy(word, p, len);
		word[len] = '\0';
		p += len;
		port = strrchr(word, ':'); /* config.c checked the syntax */
		*port++ = '\0';
		host = word;
		if (host[0] == '[') {
			host++;
			host[strlen(host) - 1] = '\0';
		}
		if (strcmp(host, "*") == 0) {
			struct bind_error e6;

			if ((got = bind_one("0.0.0.0", port, copies, &fds[n], &e)) < 0)
				goto fail_bind;
			n += (size_t)got;
			/* A host without IPv6 still serves IPv4. */
			if ((got = bind_one("::", port, copies, &fds[n], &e6)) > 0)
				n += (size_t)got;
			continue;
		}
		if ((got = bind_one(host, port, copies, &fds[n], &e)) < 0)
			goto fail_bind;
		n += (size_t)got;
	}
	return (int)n;
fail_bind:
	*error_r = e.msg;
fail:
	while (n > 0)
		close(fds[--n]);
	return -1;
}
