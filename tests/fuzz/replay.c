/* Corpus replay driver: linked with a fuzz target instead of libFuzzer, so that every build runs
 * the checked-in corpora as a regression test (ctest fuzz_<name>_corpus). Each argument is a
 * file or a folder whose regular files are inputs; each input is copied into a buffer of exactly
 * its size, so that the sanitizers catch a read past the end as libFuzzer would. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long inputs_run;

/* Runs one file; -1 when it cannot be read. */
static int
run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data;
	long size;
	size_t n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		if (f != NULL)
			fclose(f);
		return -1;
	}
	data = malloc(size > 0 ? (size_t)size : 1);
	if (data == NULL) {
		fclose(f);
		fprintf(stderr, "replay: %s: out of memory\n", path);
		return -1;
	}
	n = fread(data, 1, (size_t)size, f);
	fclose(f);
	if (n != (size_t)size) {
		fprintf(stderr, "replay: %s: short read\n", path);
		free(data);
		return -1;
	}
	LLVMFuzzerTestOneInput(data, n);
	free(data);
	inputs_run++;
	return 0;
}

static int
run_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int ret = 0;

	if (d == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		char file[PATH_MAX];
		struct stat st;

		if (e->d_name[0] == '.')
			continue; /* ".", ".." and hidden files such as .gitkeep */
		if (snprintf(file, sizeof(file), "%s/%s", path, e->d_name) >= (int)sizeof(file)) {
			fprintf(stderr, "replay: %s/%s: path too long\n", path, e->d_name);
			ret = -1;
			continue;
		}
		if (stat(file, &st) == 0 && S_ISREG(st.st_mode) && run_file(file) < 0)
			ret = -1;
	}
	closedir(d);
	return ret;
}

int
main(int argc, char **argv)
{
	int failures = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			failures++;
		} else if (S_ISDIR(st.st_mode)) {
			failures += run_dir(argv[i]) < 0;
		} else {
			failures += run_file(argv[i]) < 0;
		}
	}
	/* A crash or sanitizer report fails the run; paths that could not be read are reported
	 * but do not, so that a target whose corpus is still empty does not break the build. */
	printf("replay: %lu inputs ran%s\n", inputs_run,
	       failures > 0 ? " (some paths could not be read, see above)" : "");
	return 0;
}
