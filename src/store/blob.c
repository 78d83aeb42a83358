/* Message files (blobs): creation in BLOB_DIR/tmp, writes, and the durability steps the writer
 * runs before a commit (fdatasync, rename into BLOB_DIR/<bucket>/<id>, fsync of the folders).
 *
 * Invariants: a blob's bucket is the first 8 hex digits of its id (its creation hour), so the
 * final path follows from the id alone and one batch touches few folders. Every blob alive in
 * this process is on store->live from store_blob_new() until it is freed; the orphan sweep
 * never removes a live blob's file. store_blob_write() only calls write(2): I/O threads use it. */
#include "store/store_internal.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A system call's result, or -1 with errno when a test injects a fault at this point. For the
 * calls with side effects (write, rename) it is called before them, with ret 0. */
static int
store__sys(enum store__fault_point point, int ret)
{
	int err = store__fault_at(point);

	if (err == 0)
		return ret;
	errno = err;
	return -1;
}

static int
store__random(void *dst, size_t len)
{
	uint8_t *p = dst;

	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void
store__tmp_path(const struct store *store, const char *id, char *dst, size_t size)
{
	int n = snprintf(dst, size, "%s/%s", store->tmp_dir, id);

	/* store_open checked that BLOB_DIR + bucket + id fits in PATH_MAX. */
	ASSERT(n > 0 && (size_t)n < size);
}

int
store__blob_final_path(const struct store *store, const char *id, char *dst, size_t size)
{
	int n = snprintf(dst, size, "%s/%.*s/%s", store->blob_dir, STORE__BUCKET_LEN, id, id);

	return n > 0 && (size_t)n < size ? 0 : -1;
}

static int
store__blob_open_file(struct store *store, const char *blob_id)
{
	char path[PATH_MAX];

	if (store__blob_final_path(store, blob_id, path, sizeof(path)) < 0)
		PANIC("blob path too long"); /* store_open checked the length */
	return open(path, O_RDONLY | O_CLOEXEC);
}

size_t
store_header_end(const uint8_t *msg, size_t len)
{
	size_t i = 0;

	/* line by line: a line that is empty, or only CR, ends the header */
	while (i < len) {
		const uint8_t *nl = memchr(msg + i, '\n', len - i);

		if (nl == NULL)
			return 0;
		if ((size_t)(nl - msg) == i || ((size_t)(nl - msg) == i + 1 && msg[i] == '\r'))
			return (size_t)(nl - msg) + 1;
		i = (size_t)(nl - msg) + 1;
	}
	return 0;
}

/* Reads a blob's file into out: all of it, or (head) until the header section is in. */
static int
store__blob_read_file(struct store *store, const char *blob_id, bool head, struct buf *out)
{
	uint8_t chunk[65536];
	/* A header section is usually a few KiB: small reads first when only that is wanted. */
	size_t want = head ? 8192 : sizeof(chunk);
	size_t start = out->len;
	int ret = 0, fd;
	ssize_t n;

	fd = store__blob_open_file(store, blob_id);
	if (fd < 0)
		return errno == ENOENT ? 0 : store__errno_err(errno);
	while ((n = read(fd, chunk, want)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || buf_append(out, chunk, (size_t)n) < 0) {
			ret = n < 0 ? store__errno_err(errno) : STORE_ERR_IO;
			break;
		}
		if (head && store_header_end(out->data + start, out->len - start) > 0)
			break;
		want = sizeof(chunk);
	}
	(void)close(fd);
	return ret < 0 ? ret : 1;
}

/* A blob's bytes from the database, else from its file: all, or (head) its header section. */
static int
store__blob_read(struct store *store, const char *blob_id, bool head, struct buf *out)
{
	int ret;

	if (!store__valid_blob_id(blob_id))
		return 0;
	ret = store->ops->blob_data(store, blob_id, head, out);
	if (ret != 0)
		return ret;
	return store__blob_read_file(store, blob_id, head, out);
}

int
store_blob_read(struct store *store, const char *blob_id, struct buf *out)
{
	return store__blob_read(store, blob_id, false, out);
}

int
store_blob_read_head(struct store *store, const char *blob_id, struct buf *out)
{
	return store__blob_read(store, blob_id, true, out);
}

char *
store_blob_path(struct store *store, const char *blob_id)
{
	if (!store__valid_blob_id(blob_id))
		return NULL;
	return xasprintf("%s/%.*s/%s", store->blob_dir, STORE__BUCKET_LEN, blob_id, blob_id);
}

/* A read-only descriptor of bytes that live in memory (a blob kept in the database). */
static int
store__memfd(const char *id, const uint8_t *data, size_t len)
{
	int fd = memfd_create(id, MFD_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			(void)close(fd);
			errno = err;
			return -1;
		}
		off += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		int err = errno;

		(void)close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

int
store_blob_open(struct store *store, const char *blob_id)
{
	struct buf b;
	int ret, fd;

	if (!store__valid_blob_id(blob_id)) {
		errno = ENOENT;
		return -1;
	}
	buf_init(&b, SIZE_MAX / 2);
	ret = store->ops->blob_data(store, blob_id, false, &b);
	if (ret > 0) {
		fd = store__memfd(blob_id, b.data, b.len);
		buf_deinit(&b);
		return fd;
	}
	buf_deinit(&b);
	if (ret < 0) {
		errno = EIO;
		return -1;
	}
	return store__blob_open_file(store, blob_id);
}

/* Names a new blob and puts it on the live list in one step under blobs_lock: the sweep reads
 * the clock before it snapshots the list, so a blob missing from a snapshot was named after
 * that clock reading, never in an hour the sweep considers long past. */
static void
store__live_add(struct store_blob *blob, const uint8_t *rnd, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	struct store *store = blob->store;
	struct timespec now;
	uint32_t hour, usec;

	/* The hour, the microsecond within it, then random bits: ids grow with time, so the
	 * database's indexes on them take new blobs at their right edge (a few pages per batch)
	 * instead of one random page per blob. */
	ASSERT(STORE__BUCKET_LEN + 8 + 2 * len == STORE__BLOB_ID_LEN);
	pthread_mutex_lock(&store->blobs_lock);
	clock_gettime(CLOCK_REALTIME, &now);
	hour = (uint32_t)((uint64_t)now.tv_sec / 3600);
	usec = (uint32_t)((uint64_t)now.tv_sec % 3600 * 1000000 + (uint64_t)now.tv_nsec / 1000);
	(void)snprintf(blob->id, sizeof(blob->id), "%08x%08x", (unsigned int)hour,
	               (unsigned int)usec);
	for (size_t i = 0; i < len; i++) {
		blob->id[STORE__BUCKET_LEN + 8 + 2 * i] = hex[rnd[i] >> 4];
		blob->id[STORE__BUCKET_LEN + 8 + 2 * i + 1] = hex[rnd[i] & 15];
	}
	blob->id[STORE__BLOB_ID_LEN] = '\0';
	blob->live_prev = NULL;
	blob->live_next = store->live;
	if (store->live != NULL)
		store->live->live_prev = blob;
	store->live = blob;
	store->nlive++;
	pthread_mutex_unlock(&store->blobs_lock);
}

static void
store__live_remove(struct store_blob *blob)
{
	struct store *store = blob->store;

	pthread_mutex_lock(&store->blobs_lock);
	if (blob->live_prev != NULL)
		blob->live_prev->live_next = blob->live_next;
	else
		store->live = blob->live_next;
	if (blob->live_next != NULL)
		blob->live_next->live_prev = blob->live_prev;
	store->nlive--;
	pthread_mutex_unlock(&store->blobs_lock);
}

static int
store__id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, STORE__BLOB_ID_LEN);
}

char (*store__live_snapshot(struct store *store, size_t *n_r))[STORE__BLOB_ID_LEN + 1]
{
	char (*ids)[STORE__BLOB_ID_LEN + 1];
	size_t n = 0;

	pthread_mutex_lock(&store->blobs_lock);
	ids = xcalloc(store->nlive + 1, sizeof(*ids));
	for (struct store_blob *b = store->live; b != NULL; b = b->live_next)
		memcpy(ids[n++], b->id, sizeof(b->id));
	pthread_mutex_unlock(&store->blobs_lock);
	qsort(ids, n, sizeof(*ids), store__id_cmp);
	*n_r = n;
	return ids;
}

/* Creates the blob's file in BLOB_DIR/tmp under its id. */
static int
store__blob_create_file(struct store_blob *blob, const char **error_r)
{
	char path[PATH_MAX];
	int fd, err;

	store__tmp_path(blob->store, blob->id, path, sizeof(path));
	/* O_EXCL makes a collision (2^-96 per pair within an hour) an error, never a shared
	 * file. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0) {
		err = errno;
		*error_r = store__tls_error("cannot create %s: %s", path, strerror(err));
		errno = err;
		return store__errno_err(err);
	}
	blob->fd = fd;
	return STORE_OK;
}

int
store_blob_new(struct store *store, struct store_blob **blob_r, const char **error_r)
{
	struct store_blob *blob;
	uint8_t rnd[(STORE__BLOB_ID_LEN - STORE__BUCKET_LEN - 8) / 2];
	int ret = STORE_ERR_IO;

	*blob_r = NULL;
	blob = xcalloc(1, sizeof(*blob));
	blob->store = store;
	blob->fd = -1;
	blob->state = STORE__BLOB_REMOVED; /* until it has a name */
	for (int attempt = 0; attempt < 3 && ret != STORE_OK; attempt++) {
		if (store__random(rnd, sizeof(rnd)) < 0) {
			*error_r = store__tls_error("getrandom: %s", strerror(errno));
			free(blob);
			return STORE_ERR_IO;
		}
		/* Live before the file exists: the sweep must never see the file without the
		 * blob in the live set. */
		store__live_add(blob, rnd, sizeof(rnd));
		if (store->inline_max > 0) {
			/* Kept in memory: it goes into the database with its commit, unless it
			 * outgrows inline_max and moves to a file (store_blob_write). */
			blob->in_memory = true;
			ret = STORE_OK;
			break;
		}
		ret = store__blob_create_file(blob, error_r);
		if (ret != STORE_OK) {
			int err = errno;

			store__live_remove(blob);
			if (err != EEXIST) {
				free(blob);
				return ret;
			}
		}
	}
	if (ret != STORE_OK) {
		*error_r = "cannot create a unique message file";
		free(blob);
		return STORE_ERR_IO;
	}
	blob->state = STORE__BLOB_TMP;
	*blob_r = blob;
	return STORE_OK;
}

/* Appends to the file with write(2), retrying short writes. */
static int
store__blob_write_file(struct store_blob *blob, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = store__sys(STORE__FAULT_WRITE, 0) < 0 ? -1 : write(blob->fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			blob->err = store__errno_err(errno);
			log_warn("event=blob_write id=%s result=failed error=\"%s\"", blob->id,
			         strerror(errno));
			return blob->err;
		}
		if (n == 0) { /* no progress: treat like a full disk rather than spin */
			blob->err = STORE_ERR_FULL;
			return blob->err;
		}
		p += n;
		len -= (size_t)n;
	}
	return STORE_OK;
}

/* A blob in memory that outgrew inline_max becomes a file: what it held is written first. */
static int
store__blob_spill(struct store_blob *blob)
{
	const char *error;
	int ret = store__blob_create_file(blob, &error);

	if (ret != STORE_OK) {
		log_warn("event=blob_write id=%s result=failed error=\"%s\"", blob->id, error);
		blob->err = ret;
		return ret;
	}
	blob->in_memory = false;
	ret = store__blob_write_file(blob, blob->mem, blob->mem_len);
	free(blob->mem);
	blob->mem = NULL;
	blob->mem_len = blob->mem_cap = 0;
	return ret;
}

int
store_blob_write(struct store_blob *blob, const void *data, size_t len)
{
	int ret;

	if (blob->err != STORE_OK)
		return blob->err;
	ASSERT(blob->state == STORE__BLOB_TMP);
	if (len == 0)
		return STORE_OK;
	if (blob->in_memory && blob->mem_len + len <= blob->store->inline_max) {
		if (blob->mem_len + len > blob->mem_cap) {
			size_t cap = MAX(blob->mem_cap * 2, (size_t)4096);

			while (cap < blob->mem_len + len)
				cap *= 2;
			blob->mem_cap = MIN(cap, (size_t)blob->store->inline_max);
			blob->mem = xrealloc(blob->mem, blob->mem_cap);
		}
		memcpy(blob->mem + blob->mem_len, data, len);
		blob->mem_len += len;
		blob->size += len;
		return STORE_OK;
	}
	if (blob->in_memory && (ret = store__blob_spill(blob)) != STORE_OK)
		return ret;
	ASSERT(blob->fd >= 0);
	ret = store__blob_write_file(blob, data, len);
	if (ret == STORE_OK)
		blob->size += len;
	return ret;
}

const char *
store_blob_id(const struct store_blob *blob)
{
	return blob->id;
}

uint64_t
store_blob_size(const struct store_blob *blob)
{
	return blob->size;
}

static void
store__blob_close(struct store_blob *blob)
{
	if (blob->fd >= 0) {
		(void)close(blob->fd);
		blob->fd = -1;
	}
}

void
store__blob_discard(struct store_blob *blob)
{
	char path[PATH_MAX];

	store__blob_close(blob);
	free(blob->mem);
	blob->mem = NULL;
	blob->mem_len = blob->mem_cap = 0;
	if (blob->in_memory) {
		blob->state = STORE__BLOB_REMOVED; /* no file: the data went with the memory */
		return;
	}
	switch (blob->state) {
	case STORE__BLOB_TMP:
		store__tmp_path(blob->store, blob->id, path, sizeof(path));
		break;
	case STORE__BLOB_PLACED:
		if (store__blob_final_path(blob->store, blob->id, path, sizeof(path)) < 0)
			PANIC("blob path too long");
		break;
	case STORE__BLOB_COMMITTED:
	case STORE__BLOB_REMOVED:
		return;
	}
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("event=blob_unlink id=%s result=failed error=\"%s\"", blob->id,
		         strerror(errno));
	blob->state = STORE__BLOB_REMOVED;
}

void
store__blob_destroy(struct store_blob *blob)
{
	/* A blob whose job never reached the writer still has its temporary file. */
	store__blob_discard(blob);
	store__live_remove(blob);
	free(blob);
}

void
store_blob_free(struct store_blob **blobp)
{
	struct store_blob *blob = *blobp;

	if (blob == NULL)
		return;
	ASSERT(!blob->in_job);
	store__blob_destroy(blob);
	*blobp = NULL;
}

int
store__blob_sync(struct store_blob *blob)
{
	int ret = STORE_OK;

	if (blob->in_memory) {
		blob->sync_err = STORE_OK; /* written with the commit */
		return STORE_OK;
	}
	if (blob->store->sync_filesystem) {
		/* One syncfs for the whole batch follows the renames (store__syncfs). */
		if (close(blob->fd) < 0 && errno != EINTR)
			ret = store__errno_err(errno);
		blob->fd = -1;
		blob->sync_err = ret;
		return ret;
	}
	/* fdatasync covers the size (needed to read the data back), which is all we need. */
	while (store__sys(STORE__FAULT_SYNC, fdatasync(blob->fd)) < 0) {
		int err = errno;

		if (err == EINTR)
			continue;
		/* After a failed fsync the page cache state is unknown (the kernel may have
		 * dropped the dirty pages): never retry, fail the job. */
		ret = store__errno_err(err);
		log_warn("event=blob_sync id=%s result=failed error=\"%s\"", blob->id,
		         strerror(err));
		break;
	}
	if (close(blob->fd) < 0 && ret == STORE_OK && errno != EINTR)
		ret = store__errno_err(errno);
	blob->fd = -1;
	blob->sync_err = ret;
	return ret;
}

void
store__dirset_deinit(struct store__dirset *set)
{
	free(set->names);
	memset(set, 0, sizeof(*set));
}

static void
store__dirset_add(struct store__dirset *set, const char *id)
{
	for (size_t i = 0; i < set->n; i++) {
		if (memcmp(set->names[i], id, STORE__BUCKET_LEN) == 0)
			return;
	}
	if (set->n == set->cap) {
		set->cap = set->cap == 0 ? 4 : set->cap * 2;
		set->names = xrealloc(set->names, set->cap * sizeof(*set->names));
	}
	memcpy(set->names[set->n], id, STORE__BUCKET_LEN);
	set->names[set->n][STORE__BUCKET_LEN] = '\0';
	set->n++;
}

int
store__blob_place(struct store_blob *blob, struct store__dirset *dirs, const char **error_r)
{
	struct store *store = blob->store;
	char from[PATH_MAX], to[PATH_MAX], bucket[PATH_MAX];
	int n;

	if (blob->in_memory)
		return STORE_OK; /* no file to move */
	ASSERT(blob->state == STORE__BLOB_TMP && blob->fd < 0);
	store__tmp_path(store, blob->id, from, sizeof(from));
	if (store__blob_final_path(store, blob->id, to, sizeof(to)) < 0)
		PANIC("blob path too long");
	n = snprintf(bucket, sizeof(bucket), "%s/%.*s", store->blob_dir, STORE__BUCKET_LEN,
	             blob->id);
	ASSERT(n > 0 && (size_t)n < sizeof(bucket));
	/* Try the rename first: the bucket usually exists. ENOENT means it does not, or the
	 * sweep just removed it as empty; then create it and retry. */
	for (int attempt = 0;; attempt++) {
		int err;

		if (store__sys(STORE__FAULT_RENAME, 0) == 0 && rename(from, to) == 0)
			break;
		err = errno;
		if (err != ENOENT || attempt == 3) {
			*error_r = store__tls_error("cannot move %s into place: %s", blob->id,
			                            strerror(err));
			return store__errno_err(err);
		}
		if (mkdir(bucket, 0750) == 0) {
			dirs->parent = true; /* the new folder's entry must be made durable too */
		} else if ((err = errno) != EEXIST) {
			*error_r = store__tls_error("cannot create %s: %s", bucket, strerror(err));
			return store__errno_err(err);
		}
	}
	blob->state = STORE__BLOB_PLACED;
	store__dirset_add(dirs, blob->id);
	return STORE_OK;
}

int
store__fsync_dir(const char *path, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err;

	if (fd < 0) {
		err = errno;
		*error_r = store__tls_error("cannot open %s: %s", path, strerror(err));
		return store__errno_err(err);
	}
	while (store__sys(STORE__FAULT_DIRSYNC, fsync(fd)) < 0) {
		err = errno;
		/* EINVAL: this file system cannot sync folders; nothing more we can do. */
		if (err == EINVAL)
			break;
		if (err == EINTR)
			continue;
		*error_r = store__tls_error("cannot sync %s: %s", path, strerror(err));
		(void)close(fd);
		return store__errno_err(err);
	}
	(void)close(fd);
	return STORE_OK;
}

int
store__syncfs(struct store *store, const char **error_r)
{
	int fd = open(store->blob_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = STORE_OK;

	if (fd < 0 || syncfs(fd) < 0) {
		int err = errno;
		*error_r = store__tls_error("cannot sync the filesystem of %s: %s", store->blob_dir,
		                            strerror(err));
		ret = err == ENOSPC || err == EDQUOT ? STORE_ERR_FULL : STORE_ERR_IO;
	}
	if (fd >= 0)
		(void)close(fd);
	return ret;
}

int
store__dirset_sync(struct store *store, struct store__dirset *dirs, const char **error_r)
{
	char path[PATH_MAX];
	int ret;

	for (size_t i = 0; i < dirs->n; i++) {
		int n = snprintf(path, sizeof(path), "%s/%s", store->blob_dir, dirs->names[i]);

		ASSERT(n > 0 && (size_t)n < sizeof(path));
		ret = store__fsync_dir(path, error_r);
		if (ret != STORE_OK)
			return ret;
	}
	if (dirs->parent)
		return store__fsync_dir(store->blob_dir, error_r);
	return STORE_OK;
}

int
store__blob_unlink(struct store *store, const char *id)
{
	char path[PATH_MAX];

	if (store__blob_final_path(store, id, path, sizeof(path)) < 0)
		PANIC("blob path too long");
	if (unlink(path) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	log_warn("event=blob_unlink id=%s result=failed error=\"%s\"", id, strerror(errno));
	return -1;
}
