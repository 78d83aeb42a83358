/* Crash safety of the store: a child process delivers messages from several threads with the
 * writer, the sync pool and an aggressive orphan sweeper running, and reports every job whose
 * done callback said STORE_OK (or the planned failure) through a pipe; the parent kills it with
 * SIGKILL after a random delay, reopens the store and checks that every reported message is
 * there exactly once with its UID and intact content, that failed jobs left nothing, and that
 * store_check finds no problem, before and after a garbage-collection pass. The rounds run on
 * the same store, so recovery accumulates.
 *
 * fork: the parent never has threads (it opens the store inline, background=false) and never
 * has the store open while a child runs. The child leaves only through _exit or SIGKILL.
 * POSTAMT_CRASH_ROUNDS and POSTAMT_CRASH_SEED override the defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_internal.h"

#define CRASH_ROUNDS 25
#define CHILD_THREADS 3
#define CHILD_WINDOW 8   /* jobs in flight per thread */
#define FAIL_EVERY 17    /* every 17th job fails on purpose after delivering */
#define MAX_BODY 6000    /* bytes */

struct token {
	char blob_id[33];
	uint8_t failed;   /* the planned failure came back as such */
	uint32_t uid;
	uint64_t seq;
};

struct crash {
	char dir[PATH_MAX];
	char db[PATH_MAX];
	char blobs[PATH_MAX];
	int64_t inbox;
	struct token *tokens;
	size_t ntokens, cap;
	size_t failed_tokens;
};

ATTR_FORMAT(3, 4) static void
fmt(char *dst, size_t size, const char *format, ...)
{
	va_list ap;
	int n;

	va_start(ap, format);
	n = vsnprintf(dst, size, format, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		fail_msg("path too long");
}

static void
options(const struct crash *c, struct store_options *o, bool child)
{
	memset(o, 0, sizeof(*o));
	o->database = c->db;
	o->blob_dir = c->blobs;
	o->batch_max = 32;
	/* Bodies run up to MAX_BODY: about half the messages are kept in the database, the
	 * others are files, so a crash hits both kinds. */
	o->inline_max = MAX_BODY / 2;
	if (child) {
		/* Everything running at once, and a sweeper that considers any file without a
		 * row garbage almost at once: only the live set protects the jobs in flight. */
		o->background = true;
		o->sync_threads = 2;
		o->blob_orphan_age = 5;
		o->blob_sweep_interval = 20;
	} else {
		/* No child runs while the parent has the store open: every file without a row
		 * is an orphan now. */
		o->blob_orphan_age = 0;
	}
}

/* The message of sequence number seq: a header naming it, then bytes derived from it. */
static size_t
make_content(uint64_t seq, char *dst, size_t size)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789\r\n";
	size_t body = (size_t)((seq * 7919) % MAX_BODY), n;
	int h = snprintf(dst, size, "seq=%llu len=%zu\n", (unsigned long long)seq, body);

	n = (size_t)h;
	for (size_t i = 0; i < body && n < size; i++)
		dst[n++] = alphabet[(seq * 31 + i) % (sizeof(alphabet) - 1)];
	return n;
}

/* ---- The child -------------------------------------------------------------------------- */

struct child_thread;

struct child_job {
	struct child_thread *t;
	struct token tok;
	bool fail;
};

struct child {
	struct store *store;
	int fd;
	int64_t inbox;
	pthread_mutex_t write_lock;
};

struct child_thread {
	struct child *c;
	uint64_t base;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int outstanding;
};

static int
child_run(struct store_txn *txn, void *ctx)
{
	struct child_job *j = ctx;
	int ret;

	ret = store_txn_deliver(txn, j->t->c->inbox, j->tok.blob_id, 0, store_txn_now(txn),
	                        &j->tok.uid);
	if (ret != STORE_OK || !j->fail)
		return ret;
	store_txn_error(txn, "planned failure");
	return STORE_ERR_INVALID;
}

static void
child_done(struct store_job *job, void *ctx)
{
	struct child_job *j = ctx;
	struct child_thread *t = j->t;
	const char *error;
	int ret = store_job_result(job, &error);

	if (ret != (j->fail ? STORE_ERR_INVALID : STORE_OK)) {
		fprintf(stderr, "child: job %llu: unexpected result %d: %s\n",
		        (unsigned long long)j->tok.seq, ret, error);
		_exit(4);
	}
	store_job_free(&job);
	j->tok.failed = j->fail;
	/* One record per write(2), below PIPE_BUF: atomic, never interleaved. */
	if (write(t->c->fd, &j->tok, sizeof(j->tok)) != (ssize_t)sizeof(j->tok))
		_exit(5);
	free(j);
	pthread_mutex_lock(&t->lock);
	t->outstanding--;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

static void *
child_thread_main(void *arg)
{
	struct child_thread *t = arg;
	char *content = malloc(MAX_BODY + 64);

	if (content == NULL)
		_exit(6);
	for (uint64_t i = 0;; i++) {
		struct store_blob *blob;
		struct child_job *j;
		struct store_job *job;
		const char *error;
		size_t len;

		pthread_mutex_lock(&t->lock);
		while (t->outstanding >= CHILD_WINDOW)
			pthread_cond_wait(&t->cond, &t->lock);
		t->outstanding++;
		pthread_mutex_unlock(&t->lock);

		j = calloc(1, sizeof(*j));
		if (j == NULL || store_blob_new(t->c->store, &blob, &error) != STORE_OK)
			_exit(7);
		j->t = t;
		j->tok.seq = t->base + i;
		j->fail = j->tok.seq % FAIL_EVERY == 0;
		len = make_content(j->tok.seq, content, MAX_BODY + 64);
		/* Written in two pieces, like a message arriving in chunks. */
		if (store_blob_write(blob, content, len / 2) != STORE_OK ||
		    store_blob_write(blob, content + len / 2, len - len / 2) != STORE_OK)
			_exit(8);
		memcpy(j->tok.blob_id, store_blob_id(blob), sizeof(j->tok.blob_id));
		job = store_job_new(child_run, child_done, j);
		store_job_add_blob(job, &blob);
		store_submit(t->c->store, job);
	}
	return NULL;
}

ATTR_NORETURN static void
child_main(const struct crash *crash, int fd, unsigned int round)
{
	struct child_thread threads[CHILD_THREADS];
	struct store_options o;
	struct child c;
	const char *error;

	memset(&c, 0, sizeof(c));
	c.fd = fd;
	c.inbox = crash->inbox;
	options(crash, &o, true);
	if (store_open(&o, &c.store, &error) != STORE_OK) {
		fprintf(stderr, "child: store_open: %s\n", error);
		_exit(2);
	}
	for (int i = 0; i < CHILD_THREADS; i++) {
		threads[i].c = &c;
		threads[i].base = (uint64_t)round * 10000000 + (uint64_t)i * 1000000 + 1;
		threads[i].outstanding = 0;
		pthread_mutex_init(&threads[i].lock, NULL);
		pthread_cond_init(&threads[i].cond, NULL);
		if (pthread_create(&threads[i].thread, NULL, child_thread_main, &threads[i]) != 0)
			_exit(3);
	}
	for (;;)
		pause(); /* until SIGKILL */
}

/* ---- The parent ------------------------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
add_token(struct crash *c, const struct token *t)
{
	if (c->ntokens == c->cap) {
		c->cap = c->cap == 0 ? 1024 : c->cap * 2;
		c->tokens = realloc(c->tokens, c->cap * sizeof(*c->tokens));
		assert_non_null(c->tokens);
	}
	c->tokens[c->ntokens++] = *t;
	if (t->failed)
		c->failed_tokens++;
}

/* Reads records until the kill and on until EOF. The kill comes `delay` ms after the fork in
 * early rounds (a crash during open and recovery), else `delay` ms after the first record (a
 * crash with jobs in flight, whatever the start-up time). */
static void
collect(struct crash *c, int fd, pid_t pid, int64_t delay, bool early)
{
	uint8_t buf[64 * sizeof(struct token)];
	const int64_t give_up = now_ms() + 30000;
	int64_t kill_at = early ? now_ms() + delay : INT64_MAX;
	size_t have = 0, before = c->ntokens;
	bool killed = false;

	for (;;) {
		struct pollfd pfd = {fd, POLLIN, 0};
		int64_t wait = killed ? 1000 : MIN(kill_at, give_up) - now_ms();
		ssize_t n;

		if (!killed && wait <= 0) {
			if (now_ms() >= give_up && c->ntokens == before) {
				(void)kill(pid, SIGKILL);
				fail_msg("the child made no progress in 30 s");
			}
			assert_int_equal(kill(pid, SIGKILL), 0);
			killed = true;
			continue;
		}
		if (poll(&pfd, 1, (int)MIN(wait, 1000)) < 0) {
			assert_int_equal(errno, EINTR);
			continue;
		}
		if (pfd.revents == 0)
			continue;
		n = read(fd, buf + have, sizeof(buf) - have);
		if (n < 0) {
			assert_int_equal(errno, EINTR);
			continue;
		}
		if (n == 0)
			break; /* the child is gone and everything it wrote was read */
		have += (size_t)n;
		while (have >= sizeof(struct token)) {
			struct token t;

			memcpy(&t, buf, sizeof(t));
			add_token(c, &t);
			memmove(buf, buf + sizeof(t), have - sizeof(t));
			have -= sizeof(t);
		}
		if (kill_at == INT64_MAX)
			kill_at = now_ms() + delay;
	}
	assert_int_equal(have, 0);
	if (!killed)
		(void)kill(pid, SIGKILL);
}

struct seen {
	char id[33];
	uint32_t uid;
	uint64_t size;
};

struct seen_list {
	struct seen *v;
	size_t n, cap;
};

static int
collect_message(const struct store_message *m, void *ctx)
{
	struct seen_list *l = ctx;

	if (l->n == l->cap) {
		l->cap = l->cap == 0 ? 1024 : l->cap * 2;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (l->v == NULL)
			return -1;
	}
	memcpy(l->v[l->n].id, m->blob_id, sizeof(l->v[0].id));
	l->v[l->n].uid = m->uid;
	l->v[l->n].size = m->size;
	l->n++;
	return 0;
}

static int
cmp_seen(const void *a, const void *b)
{
	return strcmp(((const struct seen *)a)->id, ((const struct seen *)b)->id);
}

/* The file's content must be exactly what its own header says it is. */
static void
check_content(struct store *store, const struct seen *s, uint64_t want_seq)
{
	static char want[MAX_BODY + 64], got[MAX_BODY + 128];
	unsigned long long seq;
	int fd = store_blob_open(store, s->id);
	size_t wlen, glen = 0;
	ssize_t n;

	if (fd < 0)
		fail_msg("message %s: %s", s->id, strerror(errno));
	while (glen < sizeof(got) && (n = read(fd, got + glen, sizeof(got) - glen)) > 0)
		glen += (size_t)n;
	close(fd);
	assert_int_equal(glen, s->size);
	got[MIN(glen, sizeof(got) - 1)] = '\0';
	assert_int_equal(sscanf(got, "seq=%llu", &seq), 1);
	if (want_seq != 0)
		assert_int_equal(seq, want_seq);
	wlen = make_content(seq, want, sizeof(want));
	assert_int_equal(glen, wlen);
	assert_memory_equal(got, want, wlen);
}

static size_t
count_files(const char *dir, bool want_dirs)
{
	char cmd[PATH_MAX + 64];
	unsigned long n = 0;
	FILE *p;

	fmt(cmd, sizeof(cmd), "find '%s' -mindepth 1 -type %c | wc -l", dir, want_dirs ? 'd' : 'f');
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%lu", &n), 1);
	pclose(p);
	return n;
}

static void
verify(struct crash *c, unsigned int round)
{
	struct store_options o;
	struct store *store;
	struct seen_list l = {NULL, 0, 0};
	struct buf report;
	const char *error;
	char tmp[PATH_MAX];
	int removed;

	options(c, &o, false);
	if (store_open(&o, &store, &error) != STORE_OK)
		fail_msg("round %u: reopen: %s", round, error);
	buf_init(&report, 1 << 20);
	if (store_check(store, &report) != 0)
		fail_msg("round %u: store_check before gc:\n%s", round, buf_cstr(&report));

	assert_int_equal(store_message_list(store, c->inbox, collect_message, &l), 0);
	if (l.n > 0)
		qsort(l.v, l.n, sizeof(*l.v), cmp_seen);
	for (size_t i = 1; i < l.n; i++) {
		if (strcmp(l.v[i].id, l.v[i - 1].id) == 0)
			fail_msg("round %u: blob %s in two messages", round, l.v[i].id);
	}
	/* Every acknowledged job is there, once, with its UID and content; every planned
	 * failure left nothing. */
	for (size_t i = 0; i < c->ntokens; i++) {
		const struct token *t = &c->tokens[i];
		struct seen key;
		const struct seen *s;

		memcpy(key.id, t->blob_id, sizeof(key.id));
		s = l.n > 0 ? bsearch(&key, l.v, l.n, sizeof(*l.v), cmp_seen) : NULL;
		if (t->failed) {
			char *path = store_blob_path(store, t->blob_id);
			struct stat st;

			if (s != NULL)
				fail_msg("round %u: failed job %s was stored", round, t->blob_id);
			assert_true(stat(path, &st) < 0 && errno == ENOENT);
			free(path);
			continue;
		}
		if (s == NULL)
			fail_msg("round %u: acknowledged message %s (seq %llu) lost", round,
			         t->blob_id, (unsigned long long)t->seq);
		assert_int_equal(s->uid, t->uid);
		check_content(store, s, t->seq);
	}
	/* Messages committed but not acknowledged before the kill are fine, and intact too. */
	for (size_t i = 0; i < l.n; i++)
		check_content(store, &l.v[i], 0);

	/* Collect the crash's leftovers: every file without a row, every temporary file. */
	removed = store_blob_gc(store);
	assert_true(removed >= 0);
	buf_reset(&report);
	if (store_check(store, &report) != 0)
		fail_msg("round %u: store_check after gc:\n%s", round, buf_cstr(&report));
	fmt(tmp, sizeof(tmp), "%s/tmp", c->blobs);
	assert_int_equal(count_files(tmp, false), 0);
	/* Each message over inline_max has its own file, and nothing else is left. */
	{
		size_t files = 0;

		for (size_t i = 0; i < l.n; i++)
			files += l.v[i].size > MAX_BODY / 2;
		assert_int_equal(count_files(c->blobs, false), files);
	}
	print_message("round %u: %zu acknowledged so far (%zu planned failures), %zu messages, "
	              "%d leftover files removed\n", round, c->ntokens, c->failed_tokens, l.n,
	              removed);
	buf_deinit(&report);
	free(l.v);
	store_close(&store);
}

static int
job_setup(struct store_txn *txn, void *ctx)
{
	int64_t *id = ctx;
	int ret = store_txn_domain_add(txn, "crash.test");

	if (ret == STORE_OK)
		ret = store_txn_account_add(txn, "victim@crash.test", "$h$", id);
	return ret;
}

static void
test_crash_rounds(void **state)
{
	struct crash *c = calloc(1, sizeof(*c));
	const char *base = getenv("POSTAMT_TEST_TMP"), *env;
	unsigned int rounds = CRASH_ROUNDS, seed = (unsigned int)time(NULL);
	struct store_options o;
	struct store *store;
	struct store_mailbox m;
	const char *error;
	int64_t account = 0;

	(void)state;
	assert_non_null(c);
	if ((env = getenv("POSTAMT_CRASH_ROUNDS")) != NULL)
		assert_int_equal(str_to_uint(env, &rounds), 0);
	if ((env = getenv("POSTAMT_CRASH_SEED")) != NULL)
		assert_int_equal(str_to_uint(env, &seed), 0);
	print_message("crash test: %u rounds, seed %u\n", rounds, seed);
	srand(seed);
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	(void)mkdir(base, 0700);
	fmt(c->dir, sizeof(c->dir), "%s/store-crash-XXXXXX", base);
	assert_non_null(mkdtemp(c->dir));
	fmt(c->db, sizeof(c->db), "%s/postamt.db", c->dir);
	fmt(c->blobs, sizeof(c->blobs), "%s/blobs", c->dir);

	options(c, &o, false);
	if (store_open(&o, &store, &error) != STORE_OK)
		fail_msg("store_open: %s", error);
	assert_int_equal(store_exec(store, job_setup, &account, &error), STORE_OK);
	assert_int_equal(store_mailbox_get(store, account, "INBOX", &m), 1);
	c->inbox = m.id;
	store_close(&store);

	for (unsigned int round = 0; round < rounds; round++) {
		int64_t delay = 3 + rand() % 200; /* ms */
		int fds[2], status;
		pid_t pid;

		assert_int_equal(pipe(fds), 0);
		fflush(NULL);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			child_main(c, fds[1], round);
		}
		close(fds[1]);
		collect(c, fds[0], pid, delay, round % 5 == 0);
		close(fds[0]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			fail_msg("round %u: child did not die by SIGKILL (status 0x%x)", round,
			         (unsigned int)status);
		verify(c, round);
	}
	/* The child must have made progress, or this test proves nothing. */
	assert_true(c->ntokens > rounds);
	assert_true(c->failed_tokens > 0);

	(void)nftw(c->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(c->tokens);
	free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crash_rounds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
