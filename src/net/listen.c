/* Binding listening sockets from a listen setting ("127.0.0.1:25 [::1]:25 *:587").
 * Only numeric addresses are accepted, so start-up never waits for DNS; "*" binds both the IPv4
 * and the IPv6 wildcard (IPv6 with V6ONLY, so the two never conflict). */
#include "net/net_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

static int
bind_one(const char *host, const char *port, int *fd_r, const char **error_r)
{
	static __thread char msg[256];
	struct addrinfo hints, *res = NULL;
	int fd, one = 1, err;

	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	err = getaddrinfo(host, port, &hints, &res);
	if (err != 0) {
		snprintf(msg, sizeof(msg), "listen address %s: must be an IP address (%s)", host,
		         gai_strerror(err));
		*error_r = msg;
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (res->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
		goto fail;
	freeaddrinfo(res);
	*fd_r = fd;
	return 0;
fail:
	snprintf(msg, sizeof(msg), "cannot listen on %s%s%s:%s: %s",
	         res->ai_family == AF_INET6 ? "[" : "", host, res->ai_family == AF_INET6 ? "]" : "",
	         port, strerror(errno));
	*error_r = msg;
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return -1;
}

int
net__bind_addrs(const char *addrs, int *fds, size_t max, const char **error_r)
{
	size_t n = 0;

	for (const char *p = addrs; *p != '\0';) {
		char word[128], *host, *port;
		size_t len;

		while (*p == ' ' || *p == ',')
			p++;
		len = strcspn(p, " ,");
		if (len == 0)
			break;
		if (len >= sizeof(word) || n + 2 > max) {
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
			const char *err6;
			if (bind_one("0.0.0.0", port, &fds[n], error_r) < 0)
				goto fail;
			n++;
			/* A host without IPv6 still serves IPv4. */
			if (bind_one("::", port, &fds[n], &err6) == 0)
				n++;
			continue;
		}
		if (bind_one(host, port, &fds[n], error_r) < 0)
			goto fail;
		n++;
	}
	return (int)n;
fail:
	while (n > 0)
		close(fds[--n]);
	return -1;
}
