/* The recipient cache: what it keeps, for how long, and that its copies are independent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "smtp/smtp_rcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct smtp_route
route_of(size_t nmailboxes, size_t nremote)
{
	struct smtp_route r;

	memset(&r, 0, sizeof(r));
	r.nmailboxes = nmailboxes;
	r.mailboxes = nmailboxes ? calloc(nmailboxes, sizeof(int64_t)) : NULL;
	for (size_t i = 0; i < nmailboxes; i++)
		r.mailboxes[i] = (int64_t)(100 + i);
	r.nremote = nremote;
	r.remote = nremote ? calloc(nremote, sizeof(char *)) : NULL;
	for (size_t i = 0; i < nremote; i++) {
		char a[48];

		snprintf(a, sizeof(a), "r%zu@remote.test", i);
		r.remote[i] = strdup(a);
	}
	return r;
}

static void
test_keeps_local_routes_for_the_ttl(void **state)
{
	struct smtp_rcache *c = smtp_rcache_new(16);
	struct smtp_route r = route_of(2, 1), got;

	smtp_rcache_set_ttl(c, 5000);
	assert_false(smtp_rcache_get(c, "a@example.test", 1000, &got));
	smtp_rcache_put(c, "a@example.test", SMTP_RESOLVE_LOCAL, &r, 1000);
	smtp_route_deinit(&r); /* the cache holds its own copy */

	assert_true(smtp_rcache_get(c, "a@example.test", 5999, &got));
	assert_int_equal(got.nmailboxes, 2);
	assert_int_equal(got.mailboxes[0], 100);
	assert_int_equal(got.mailboxes[1], 101);
	assert_int_equal(got.nremote, 1);
	assert_string_equal(got.remote[0], "r0@remote.test");
	smtp_route_deinit(&got); /* and hands out copies */
	assert_true(smtp_rcache_get(c, "a@example.test", 2000, &got));
	smtp_route_deinit(&got);

	/* Exact address only; expired at the TTL; a clock going back is not trusted. */
	assert_false(smtp_rcache_get(c, "A@example.test", 2000, &got));
	assert_false(smtp_rcache_get(c, "a@example.test", 999, &got));
	smtp_rcache_put(c, "a@example.test", SMTP_RESOLVE_LOCAL, &(struct smtp_route){0}, 1000);
	assert_false(smtp_rcache_get(c, "a@example.test", 6000, &got));
	assert_false(smtp_rcache_get(c, "a@example.test", 2000, &got)); /* dropped at expiry */
	smtp_rcache_free(&c);
	assert_null(c);
}

static void
test_keeps_only_what_may_not_change_at_once(void **state)
{
	struct smtp_rcache *c = smtp_rcache_new(64);
	struct smtp_route r = route_of(1, 0), big = route_of(SMTP_RCACHE_MAX_TARGETS, 1), got;
	struct smtp_route full = route_of(1, 0), limited = route_of(1, 0);

	full.over_quota = full.quota_limited = true;
	limited.quota_limited = true;
	smtp_rcache_set_ttl(c, 5000);
	smtp_rcache_put(c, "unknown@example.test", SMTP_RESOLVE_UNKNOWN, &r, 0);
	smtp_rcache_put(c, "x@remote.test", SMTP_RESOLVE_REMOTE, &r, 0);
	smtp_rcache_put(c, "err@example.test", SMTP_RESOLVE_TEMPFAIL, &r, 0);
	smtp_rcache_put(c, "full@example.test", SMTP_RESOLVE_LOCAL, &full, 0);
	smtp_rcache_put(c, "all@example.test", SMTP_RESOLVE_LOCAL, &big, 0);
	smtp_rcache_put(c, "q@example.test", SMTP_RESOLVE_LOCAL, &limited, 0);
	assert_false(smtp_rcache_get(c, "unknown@example.test", 1, &got));
	assert_false(smtp_rcache_get(c, "x@remote.test", 1, &got));
	assert_false(smtp_rcache_get(c, "err@example.test", 1, &got));
	assert_false(smtp_rcache_get(c, "full@example.test", 1, &got));
	assert_false(smtp_rcache_get(c, "all@example.test", 1, &got));
	assert_false(smtp_rcache_get(c, "q@example.test", 1, &got));

	/* Off: nothing is kept. A new TTL (a reload) empties the cache. */
	smtp_rcache_set_ttl(c, 0);
	smtp_rcache_put(c, "a@example.test", SMTP_RESOLVE_LOCAL, &r, 0);
	assert_false(smtp_rcache_get(c, "a@example.test", 0, &got));
	smtp_rcache_set_ttl(c, 5000);
	smtp_rcache_put(c, "a@example.test", SMTP_RESOLVE_LOCAL, &r, 0);
	smtp_rcache_set_ttl(c, 5000);
	assert_false(smtp_rcache_get(c, "a@example.test", 0, &got));
	smtp_route_deinit(&r);
	smtp_route_deinit(&big);
	smtp_route_deinit(&full);
	smtp_route_deinit(&limited);
	smtp_rcache_free(&c);
}

/* One slot: addresses take it over from each other, and a lookup never answers for another. */
static void
test_bounded_slots(void **state)
{
	struct smtp_rcache *c = smtp_rcache_new(1);
	struct smtp_route a = route_of(1, 0), b = route_of(3, 0), got;

	smtp_rcache_set_ttl(c, 5000);
	smtp_rcache_put(c, "a@example.test", SMTP_RESOLVE_LOCAL, &a, 0);
	smtp_rcache_put(c, "b@example.test", SMTP_RESOLVE_LOCAL, &b, 0);
	assert_false(smtp_rcache_get(c, "a@example.test", 1, &got));
	assert_true(smtp_rcache_get(c, "b@example.test", 1, &got));
	assert_int_equal(got.nmailboxes, 3);
	smtp_route_deinit(&got);
	for (int i = 0; i < 1000; i++) {
		char addr[64];

		snprintf(addr, sizeof(addr), "u%d@example.test", i);
		smtp_rcache_put(c, addr, SMTP_RESOLVE_LOCAL, &a, 0);
	}
	assert_true(smtp_rcache_get(c, "u999@example.test", 1, &got));
	smtp_route_deinit(&got);
	smtp_route_deinit(&a);
	smtp_route_deinit(&b);
	smtp_rcache_free(&c); /* LSan: every slot's copy is freed */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keeps_local_routes_for_the_ttl),
		cmocka_unit_test(test_keeps_only_what_may_not_change_at_once),
		cmocka_unit_test(test_bounded_slots),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
