/* Unit tests for the network layer's pieces that need no event loop: per-address connection
 * counting (IPv6 per /64) and binding listen addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "net/net_internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static struct sockaddr_storage
addr(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	return ss;
}

#define OK NET_IPLIMIT_OK
#define TAKE(lim, a, svc, max, rate, now) net__iplimit_take((lim), (a), (svc), (max), (rate), (now))

static void
test_iplimit_counts_per_address_and_service(void **state)
{
	struct net_iplimit *lim = net__iplimit_new();
	struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2");

	assert_int_equal(TAKE(lim, &a, 0, 2, 0, 1000), OK);
	assert_int_equal(TAKE(lim, &a, 0, 2, 0, 1000), OK);
	assert_int_equal(TAKE(lim, &a, 0, 2, 0, 1000), NET_IPLIMIT_CONCURRENT);
	assert_int_equal(TAKE(lim, &a, 3, 2, 0, 1000), OK); /* another service */
	assert_int_equal(TAKE(lim, &b, 0, 2, 0, 1000), OK); /* another client */
	net__iplimit_release(lim, &a, 0);
	assert_int_equal(TAKE(lim, &a, 0, 2, 0, 1000), OK);
	net__iplimit_release(lim, &a, 0);
	net__iplimit_release(lim, &a, 0);
	net__iplimit_release(lim, &a, 3);
	net__iplimit_release(lim, &b, 0);
	/* Releasing what is not counted is harmless. */
	net__iplimit_release(lim, &b, 0);
	net__iplimit_free(&lim);
	assert_null(lim);
}

static void
test_iplimit_rate_per_minute(void **state)
{
	struct net_iplimit *lim = net__iplimit_new();
	struct sockaddr_storage a = addr("192.0.2.9");

	for (int i = 0; i < 3; i++) {
		assert_int_equal(TAKE(lim, &a, i % 2, 100, 3, 5000), OK);
		net__iplimit_release(lim, &a, i % 2);
	}
	/* Closed connections still count against the minute. */
	assert_int_equal(TAKE(lim, &a, 0, 100, 3, 30000), NET_IPLIMIT_RATE);
	assert_int_equal(TAKE(lim, &a, 0, 100, 3, 65000), OK); /* a new minute */
	net__iplimit_release(lim, &a, 0);
	net__iplimit_free(&lim);
}

static void
test_iplimit_ipv6_per_64(void **state)
{
	struct net_iplimit *lim = net__iplimit_new();
	struct sockaddr_storage a = addr("2001:db8:1:2::1"), b = addr("2001:db8:1:2:ffff::9"),
	                        c = addr("2001:db8:1:3::1"), m = addr("::ffff:192.0.2.7"),
	                        n = addr("::ffff:192.0.2.8");

	assert_int_equal(TAKE(lim, &a, 0, 1, 0, 1), OK);
	assert_int_equal(TAKE(lim, &b, 0, 1, 0, 1), NET_IPLIMIT_CONCURRENT); /* same /64 */
	assert_int_equal(TAKE(lim, &c, 0, 1, 0, 1), OK);                     /* next /64 */
	/* v4-mapped addresses are separate IPv4 clients, not one /64. */
	assert_int_equal(TAKE(lim, &m, 0, 1, 0, 1), OK);
	assert_int_equal(TAKE(lim, &n, 0, 1, 0, 1), OK);
	net__iplimit_free(&lim); /* frees entries still counted */
}

static void
test_bind_addrs(void **state)
{
	int fds[8], n;
	const char *error = NULL;

	n = net__bind_addrs("127.0.0.1:0, [::1]:0", 1, fds, 8, &error);
	if (n < 0) /* a host without IPv6: bind IPv4 alone */
		n = net__bind_addrs("127.0.0.1:0", 1, fds, 8, &error);
	assert_true(n >= 1);
	while (n > 0)
		close(fds[--n]);
	assert_int_equal(net__bind_addrs("localhost:25", 1, fds, 8, &error), -1);
	assert_non_null(strstr(error, "must be an IP address"));
	assert_int_equal(net__bind_addrs("", 1, fds, 8, &error), 0);
}

static unsigned int
port_of(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* One socket per I/O thread on one port; a second server on that port is still refused. */
static void
test_bind_addrs_per_thread(void **state)
{
	int fds[8], again[8], n;
	const char *error = NULL;
	char addr[64];

	n = net__bind_addrs("127.0.0.1:0", 3, fds, 8, &error);
	assert_int_equal(n, 3);
	assert_int_not_equal(port_of(fds[0]), 0);
	assert_int_equal(port_of(fds[1]), port_of(fds[0]));
	assert_int_equal(port_of(fds[2]), port_of(fds[0]));

	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port_of(fds[0]));
	assert_int_equal(net__bind_addrs(addr, 2, again, 8, &error), -1);
	assert_non_null(strstr(error, "in use"));
	assert_int_equal(net__bind_addrs(addr, 1, again, 8, &error), -1);
	while (n > 0)
		close(fds[--n]);

	/* Freed, the port can be taken again. */
	n = net__bind_addrs(addr, 2, again, 8, &error);
	assert_int_equal(n, 2);
	while (n > 0)
		close(again[--n]);
	/* Copies count against the room given. */
	assert_int_equal(net__bind_addrs("127.0.0.1:0", 5, fds, 4, &error), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iplimit_counts_per_address_and_service),
		cmocka_unit_test(test_iplimit_rate_per_minute),
		cmocka_unit_test(test_iplimit_ipv6_per_64),
		cmocka_unit_test(test_bind_addrs),
		cmocka_unit_test(test_bind_addrs_per_thread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
