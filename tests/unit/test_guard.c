/* Unit tests for the guard's tables and decisions, against a real temporary store, and for the
 * hash map under them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/hmap.h"
#include "guard/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The reference vectors of SipHash-2-4: key 00 01 .. 0f, input 00 01 .. (n - 1). */
static void
test_siphash_vectors(void **state)
{
	static const struct {
		size_t n;
		uint64_t want;
	} v[] = {
		{0, 0x726fdb47dd0e0e31ULL},  {1, 0x74f839c593dc67fdULL},
		{8, 0x93f5f5799a932462ULL},  {15, 0xa129ca6149be45e5ULL},
	};
	uint8_t key[16], in[64];

	(void)state;
	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		in[i] = (uint8_t)i;
	for (size_t i = 0; i < N_ELEMENTS(v); i++)
		assert_true(hmap_siphash(key, in, v[i].n) == v[i].want);
}

static void
test_hmap(void **state)
{
	struct hmap *m = hmap_new();
	char key[32];
	int vals[5000];

	for (int i = 0; i < 5000; i++) {
		vals[i] = i;
		snprintf(key, sizeof(key), "k%d", i);
		assert_null(hmap_put(m, key, strlen(key), &vals[i]));
	}
	assert_int_equal(hmap_count(m), 5000);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_ptr_equal(hmap_get(m, key, strlen(key)), &vals[i]);
	}
	assert_null(hmap_get(m, "nope", 4));
	assert_ptr_equal(hmap_put(m, "k7", 2, &vals[8]), &vals[7]); /* replace */
	assert_ptr_equal(hmap_remove(m, "k7", 2), &vals[8]);
	assert_null(hmap_remove(m, "k7", 2));
	assert_int_equal(hmap_count(m), 4999);
	hmap_free(&m);
	assert_null(m);
}

static void
test_address_prefix(void **state)
{
	char out[64];

	assert_int_equal(guard_address_prefix("192.0.2.7", out, sizeof(out)), 0);
	assert_string_equal(out, "192.0.2.7");
	assert_int_equal(guard_address_prefix("2001:db8:1:2:aaaa::1", out, sizeof(out)), 0);
	assert_string_equal(out, "2001:db8:1:2::/64");
	assert_int_equal(guard_address_prefix("2001:db8:1:2::/64", out, sizeof(out)), 0);
	assert_string_equal(out, "2001:db8:1:2::/64");
	assert_int_equal(guard_address_prefix("::ffff:192.0.2.9", out, sizeof(out)), 0);
	assert_string_equal(out, "192.0.2.9");
	assert_int_equal(guard_address_prefix("example.org", out, sizeof(out)), -1);
}

struct fixture {
	char dir[256];
	struct store *store;
	struct tpool *pool;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("POSTAMT_TEST_TMP");
	struct store_options o;
	char db[300], blobs[300];
	const char *error;

	snprintf(f->dir, sizeof(f->dir), "%s/test_guard.XXXXXX", tmp ? tmp : "/tmp");
	if (tmp != NULL)
		(void)!system("mkdir -p \"$POSTAMT_TEST_TMP\"");
	assert_non_null(mkdtemp(f->dir));
	snprintf(db, sizeof(db), "%s/db", f->dir);
	snprintf(blobs, sizeof(blobs), "%s/blobs", f->dir);
	memset(&o, 0, sizeof(o));
	o.database = db;
	o.blob_dir = blobs;
	o.batch_max = 16;
	o.blob_orphan_age = 3600000;
	o.background = false;
	assert_int_equal(store_open(&o, &f->store, &error), 0);
	f->pool = tpool_new(1, "test");
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[300];

	tpool_free(&f->pool);
	store_close(&f->store);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	(void)!system(cmd);
	free(f);
	return 0;
}

static struct guard_options
options(void)
{
	struct guard_options o;

	memset(&o, 0, sizeof(o));
	o.max_failures = 5;
	o.window = 600000;
	o.ban_time = 600000;
	o.ban_max = 7 * 86400000ULL;
	o.failure_delay = 2000;
	o.stale_max_delay = 30000;
	o.account_threshold = 10;
	o.account_max_delay = 5000;
	o.stale_notify = false;
	o.allow = "192.0.2.200 198.51.100.0/24";
	o.hostname = "mail.example.test";
	return o;
}

static void
login_fails(struct guard *g, const char *ip, const char *user, const char *pw, uint64_t *delay_r)
{
	uint8_t mac[GUARD_MAC_SIZE];
	uint64_t d;

	guard_password_mac(g, user, pw, mac);
	d = guard_auth_failed(g, GUARD_IMAP, ip, user, mac);
	if (delay_r != NULL)
		*delay_r = d;
}

static void
test_ban_after_distinct_failures(void **state)
{
	struct fixture *f = *state;
	struct guard_options o = options();
	struct guard *g;
	const char *error;
	char pw[32];

	assert_int_equal(guard_new(f->store, f->pool, &o, &g, &error), 0);
	for (int i = 0; i < 4; i++) {
		snprintf(pw, sizeof(pw), "guess%d", i);
		login_fails(g, "192.0.2.1", "a@example.test", pw, NULL);
	}
	assert_int_equal(guard_banned_until(g, GUARD_IMAP, "192.0.2.1"), 0);
	login_fails(g, "192.0.2.1", "b@example.test", "guess4", NULL);
	assert_true(guard_banned_until(g, GUARD_IMAP, "192.0.2.1") > 0);
	/* Only that service, only that address. */
	assert_int_equal(guard_banned_until(g, GUARD_POP3, "192.0.2.1"), 0);
	assert_int_equal(guard_banned_until(g, GUARD_IMAP, "192.0.2.2"), 0);
	guard_free(&g);

	/* A new guard on the same store (a restart) still knows the ban. */
	assert_int_equal(guard_new(f->store, f->pool, &o, &g, &error), 0);
	assert_true(guard_banned_until(g, GUARD_IMAP, "192.0.2.1") > 0);
	guard_free(&g);
}

static void
test_ipv6_counts_per_64(void **state)
{
	struct fixture *f = *state;
	struct guard_options o = options();
	struct guard *g;
	const char *error;
	char ip[96], pw[32];

	assert_int_equal(guard_new(f->store, f->pool, &o, &g, &error), 0);
	for (int i = 0; i < 5; i++) {
		snprintf(ip, sizeof(ip), "2001:db8:5:6::%d", i + 1);
		snprintf(pw, sizeof(pw), "p%d", i);
		login_fails(g, ip, "a@example.test", pw, NULL);
	}
	assert_true(guard_banned_until(g, GUARD_IMAP, "2001:db8:5:6:ffff::1") > 0);
	assert_int_equal(guard_banned_until(g, GUARD_IMAP, "2001:db8:5:7::1"), 0);
	guard_free(&g);
}

static void
test_stale_password_is_slowed_not_banned(void **state)
{
	struct fixture *f = *state;
	struct guard_options o = options();
	struct guard *g;
	const char *error;
	uint64_t first, later;

	assert_int_equal(guard_new(f->store, f->pool, &o, &g, &error), 0);
	login_fails(g, "192.0.2.3", "a@example.test", "old", &first);
	assert_int_equal(first, 2000);
	for (int i = 0; i < 100; i++)
		login_fails(g, "192.0.2.3", "a@example.test", "old", &later);
	assert_int_equal(guard_banned_until(g, GUARD_IMAP, "192.0.2.3"), 0);
	assert_int_equal(later, 30000); /* grown to the ceiling */
	/* Another user's guesses from that address are still counted: 4 more make a ban. */
	for (int i = 0; i < 4; i++) {
		char pw[32];
		snprintf(pw, sizeof(pw), "x%d", i);
		login_fails(g, "192.0.2.3", "b@example.test", pw, NULL);
	}
	assert_true(guard_banned_until(g, GUARD_IMAP, "192.0.2.3") > 0);
	guard_free(&g);
}

static void
test_allow_list_and_account_delay(void **state)
{
	struct fixture *f = *state;
	struct guard_options o = options();
	struct guard *g;
	const char *error;
	uint64_t delay = 0;
	char ip[96], pw[32];

	assert_int_equal(guard_new(f->store, f->pool, &o, &g, &error), 0);
	for (int i = 0; i < 20; i++) {
		snprintf(pw, sizeof(pw), "a%d", i);
		login_fails(g, "198.51.100.7", "a@example.test", pw, NULL);
	}
	assert_int_equal(guard_banned_until(g, GUARD_IMAP, "198.51.100.7"), 0);
	/* One account from many addresses: slowed up to the ceiling, never a ban. */
	for (int i = 0; i < 30; i++) {
		snprintf(ip, sizeof(ip), "203.0.113.%d", i + 1);
		snprintf(pw, sizeof(pw), "b%d", i);
		login_fails(g, ip, "c@example.test", pw, &delay);
	}
	assert_int_equal(delay, 5000);
	guard_free(&g);

	o.allow = "not-an-address";
	assert_int_equal(guard_new(f->store, f->pool, &o, &g, &error), -1);
	assert_null(g);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_siphash_vectors),
		cmocka_unit_test(test_hmap),
		cmocka_unit_test(test_address_prefix),
		cmocka_unit_test_setup_teardown(test_ban_after_distinct_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ipv6_counts_per_64, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_password_is_slowed_not_banned, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_allow_list_and_account_delay, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
