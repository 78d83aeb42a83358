/* bench/queue-fill: puts N messages into the outbound queue of a stopped Postamt, directly
 * through the store API (store.h), for bench/queue. Filling a million over SMTP would take
 * most of an hour; this takes about a minute.
 *
 *   queue-fill -c postamt.conf -n 1000000 [-d 10] [-s 5] [-f 1000] [-l 4096] [-t 20000]
 *
 * Every queue entry has one recipient, userK@dQ.queue.bench.test for Q in 0..d-1 (the
 * destination domains, taken in turn), from one of s senders, priority class 1 (normal mail).
 * Messages are f distinct message files of l bytes; queue entries share them (entry i uses file
 * i mod f), as copies of one message to many recipients do. The files are written first, in
 * jobs of up to 100 (each fsynced and committed by the store as usual), then the entries in
 * transactions of t. Built with -DPOSTAMT_BENCH=ON (target queue-fill); not part of `all`.
 * Run it only while the server is stopped (the server would start delivering at once). */
#include "core/config.h"
#include "store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILL_FILES_PER_JOB 100

static unsigned long n_count = 1000000, n_domains = 10, n_senders = 5, n_files = 1000;
static unsigned long msg_size = 4096, per_txn = 20000;

static char (*blob_ids)[33];

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
usage(void)
{
	fprintf(stderr, "usage: queue-fill -c CONF [-n COUNT] [-d DOMAINS] [-s SENDERS] "
	                "[-f FILES] [-l BYTES] [-t PER_TRANSACTION]\n");
	exit(2);
}

static unsigned long
num(const char *s, unsigned long lo, unsigned long hi)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v < lo || v > hi) {
		fprintf(stderr, "queue-fill: %s: expected a number from %lu to %lu\n", s, lo, hi);
		exit(2);
	}
	return v;
}

static void
sender_of(unsigned long i, char *out, size_t size)
{
	(void)snprintf(out, size, "sender%lu@bench.test", i % n_senders);
}

static void
rcpt_of(unsigned long i, char *out, size_t size)
{
	(void)snprintf(out, size, "user%lu@d%lu.queue.bench.test", (i / n_domains) % 1000,
	               i % n_domains);
}

/* One message file: a plain header section and a body of printable lines, msg_size bytes. */
static void
make_message(unsigned long k, struct buf *b)
{
	static const char line[] = "The quick brown fox jumps over the lazy dog, "
	                           "queue benchmark line.\r\n";
	char head[512];
	int n;

	buf_reset(b);
	n = snprintf(head, sizeof(head),
	             "From: <sender%lu@bench.test>\r\n"
	             "To: undisclosed-recipients:;\r\n"
	             "Subject: queue benchmark message %lu\r\n"
	             "Message-ID: <queue-fill-%lu@bench.test>\r\n"
	             "Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n"
	             "MIME-Version: 1.0\r\n"
	             "Content-Type: text/plain; charset=us-ascii\r\n"
	             "\r\n",
	             k % n_senders, k, k);
	(void)buf_append(b, head, (size_t)n);
	while (b->len + sizeof(line) - 1 <= msg_size)
		(void)buf_append(b, line, sizeof(line) - 1);
	while (b->len + 2 < msg_size)
		(void)buf_append(b, "x", 1);
	(void)buf_append(b, "\r\n", 2);
}

struct files_job {
	unsigned long first, n; /* files first .. first+n-1; entries with the same numbers */
};

/* The first entry of each new file goes into the job that brings the file: a file is usable
 * by a queue entry once it is in the job or committed. */
static int
files_run(struct store_txn *txn, void *ctx)
{
	struct files_job *fj = ctx;
	char sender[64], rcpt[96];
	const char *r = rcpt;
	int64_t id;
	int ret;

	for (unsigned long i = fj->first; i < fj->first + fj->n; i++) {
		sender_of(i, sender, sizeof(sender));
		rcpt_of(i, rcpt, sizeof(rcpt));
		ret = store_txn_queue_add(txn, blob_ids[i], sender, &r, 1, 1, &id);
		if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

static void
files_done(struct store_job *job, void *ctx)
{
	const char *error;
	int ret = store_job_result(job, &error);

	if (ret != STORE_OK) {
		fprintf(stderr, "queue-fill: writing message files failed: %s\n", error);
		exit(1);
	}
	store_job_free(&job);
	(void)ctx;
}

struct entries_job {
	unsigned long first, end;
};

static int
entries_run(struct store_txn *txn, void *ctx)
{
	struct entries_job *ej = ctx;
	char sender[64], rcpt[96];
	const char *r = rcpt;
	int64_t id;
	int ret;

	for (unsigned long i = ej->first; i < ej->end; i++) {
		sender_of(i, sender, sizeof(sender));
		rcpt_of(i, rcpt, sizeof(rcpt));
		ret = store_txn_queue_add(txn, blob_ids[i % n_files], sender, &r, 1, 1, &id);
		if (ret != STORE_OK)
			return ret;
	}
	return STORE_OK;
}

int
main(int argc, char **argv)
{
	const char *conf = NULL, *error;
	struct store_options opts;
	struct store *store;
	struct cfg *cfg;
	struct buf errors, msg;
	unsigned long done = 0;
	char *db, *blobs;
	double t0, t1;
	int c;

	while ((c = getopt(argc, argv, "c:n:d:s:f:l:t:h")) != -1) {
		switch (c) {
		case 'c': conf = optarg; break;
		case 'n': n_count = num(optarg, 1, 100000000); break;
		case 'd': n_domains = num(optarg, 1, 100000); break;
		case 's': n_senders = num(optarg, 1, 100000); break;
		case 'f': n_files = num(optarg, 1, 10000000); break;
		case 'l': msg_size = num(optarg, 512, 64 * 1024 * 1024); break;
		case 't': per_txn = num(optarg, 1, 1000000); break;
		default: usage();
		}
	}
	if (conf == NULL || optind != argc)
		usage();
	if (n_files > n_count)
		n_files = n_count;

	cfg = cfg_new();
	buf_init(&errors, 1 << 20);
	if (cfg_load(cfg, conf, &errors) < 0 || cfg_check(cfg, &errors) < 0) {
		fputs(buf_cstr(&errors), stderr);
		return 1;
	}
	buf_deinit(&errors);
	db = cfg_database_path(cfg);
	blobs = xasprintf("%s/blobs", cfg->data_dir);
	memset(&opts, 0, sizeof(opts));
	opts.database = db;
	opts.blob_dir = blobs;
	opts.batch_max = (unsigned int)cfg->batch_max;
	opts.blob_orphan_age = cfg->blob_orphan_age;
	opts.background = false; /* every job runs at once, in its own transaction */
	if (store_open(&opts, &store, &error) < 0) {
		fprintf(stderr, "queue-fill: cannot open the store: %s\n", error);
		return 1;
	}

	t0 = now_s();
	blob_ids = calloc(n_files, sizeof(*blob_ids));
	if (blob_ids == NULL) {
		fprintf(stderr, "queue-fill: out of memory\n");
		return 1;
	}
	buf_init(&msg, msg_size + 1024);
	for (unsigned long first = 0; first < n_files; first += FILL_FILES_PER_JOB) {
		struct files_job fj = {first, n_files - first < FILL_FILES_PER_JOB ?
		                                  n_files - first : FILL_FILES_PER_JOB};
		struct store_job *job = store_job_new(files_run, files_done, &fj);

		for (unsigned long k = first; k < first + fj.n; k++) {
			struct store_blob *blob;

			if (store_blob_new(store, &blob, &error) < 0) {
				fprintf(stderr, "queue-fill: %s\n", error);
				return 1;
			}
			make_message(k, &msg);
			if (store_blob_write(blob, msg.data, msg.len) != STORE_OK) {
				fprintf(stderr, "queue-fill: cannot write a message file\n");
				return 1;
			}
			memcpy(blob_ids[k], store_blob_id(blob), 33);
			store_job_add_blob(job, &blob);
		}
		store_submit(store, job); /* runs now: background is off */
	}
	done = n_files;
	t1 = now_s();
	fprintf(stderr, "queue-fill: %lu message files of %lu bytes in %.1f s\n", n_files,
	        (unsigned long)msg.len, t1 - t0);

	while (done < n_count) {
		struct entries_job ej = {done, n_count - done < per_txn ? n_count : done + per_txn};

		if (store_exec(store, entries_run, &ej, &error) != STORE_OK) {
			fprintf(stderr, "queue-fill: queueing failed: %s\n", error);
			return 1;
		}
		done = ej.end;
		if (done % (per_txn * 10) == 0 || done == n_count)
			fprintf(stderr, "queue-fill: %lu queued, %.0f/s\n", done,
			        (double)(done - n_files) / (now_s() - t1));
	}
	fprintf(stderr, "queue-fill: %lu queue entries (%lu domains, %lu senders, %lu files) "
	                "in %.1f s\n", n_count, n_domains, n_senders, n_files, now_s() - t0);
	buf_deinit(&msg);
	free(blob_ids);
	store_close(&store);
	free(db);
	free(blobs);
	cfg_free(&cfg);
	return 0;
}
