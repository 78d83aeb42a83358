/* `postamt domain|user|alias ...`: managing who receives mail. These commands write through the
 * store's job interface, so they work the same whether or not the server is running. */
#include "admin/cli.h"
#include "auth/auth.h"
#include "core/limits.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <termios.h>
#include <unistd.h>

struct names_job {
	const char *a, *b;
	int64_t id;
};

static int
job_domain_add(struct store_txn *txn, void *ctx)
{
	return store_txn_domain_add(txn, ((struct names_job *)ctx)->a);
}

static int
job_domain_remove(struct store_txn *txn, void *ctx)
{
	return store_txn_domain_remove(txn, ((struct names_job *)ctx)->a);
}

static int
job_account_add(struct store_txn *txn, void *ctx)
{
	struct names_job *j = ctx;
	return store_txn_account_add(txn, j->a, j->b, &j->id);
}

static int
job_account_passwd(struct store_txn *txn, void *ctx)
{
	struct names_job *j = ctx;
	return store_txn_account_set_password(txn, j->a, j->b);
}

static int
job_account_remove(struct store_txn *txn, void *ctx)
{
	return store_txn_account_remove(txn, ((struct names_job *)ctx)->a);
}

static int
job_account_quota(struct store_txn *txn, void *ctx)
{
	struct names_job *j = ctx;
	return store_txn_account_set_quota(txn, j->a, j->id);
}

static int
job_alias_add(struct store_txn *txn, void *ctx)
{
	struct names_job *j = ctx;
	return store_txn_alias_add(txn, j->a, j->b);
}

static int
job_alias_remove(struct store_txn *txn, void *ctx)
{
	struct names_job *j = ctx;
	return store_txn_alias_remove(txn, j->a, j->b);
}

/* Runs one job against the configured store and reports the outcome. */
static int
run_job(const struct cli *cli, store_job_fn *fn, struct names_job *j, const char *done_msg)
{
	struct cfg *cfg = cli_load_config(cli);
	struct store *store;
	const char *error;
	int ret;

	if (cfg == NULL)
		return 1;
	store = cli_open_store(cfg);
	cfg_free(&cfg);
	if (store == NULL)
		return 1;
	ret = store_exec(store, fn, j, &error);
	if (ret != STORE_OK)
		cli_error("%s", error != NULL && error[0] != '\0' ? error : store_err_str(ret));
	else if (done_msg != NULL)
		printf("%s: %s%s%s\n", done_msg, j->a, j->b != NULL ? " -> " : "",
		       j->b != NULL ? j->b : "");
	store_close(&store);
	return ret == STORE_OK ? 0 : 1;
}

/* A domain name as we store it: lower case, letters, digits, hyphens and dots. */
static bool
valid_domain(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > 253 || d[0] == '.' || d[n - 1] == '.' || d[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		if (!(isalnum(c) || c == '-' || c == '.' || c >= 0x80))
			return false;
		if (c == '.' && d[i + 1] == '.')
			return false;
	}
	return true;
}

/* "local@domain" with a non-empty local part free of spaces and controls (RFC 5321 4.1.2). */
static bool
valid_address(const char *a, bool allow_catchall)
{
	const char *at = strrchr(a, '@');

	if (at == NULL || strlen(a) > AUTH_MAX_ADDRESS || !valid_domain(at + 1))
		return false;
	if (at == a)
		return allow_catchall;
	if ((size_t)(at - a) > 64)
		return false;
	for (const char *p = a; p < at; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == '"' || c == '\\' || c == '@')
			return false;
	}
	return true;
}

static int
domain_usage(FILE *out)
{
	fprintf(out, "usage: postamt [-c CONF] domain add DOMAIN\n"
	             "       postamt [-c CONF] domain list\n"
	             "       postamt [-c CONF] domain remove DOMAIN\n"
	             "A domain must have no accounts or aliases left to be removed.\n");
	return out == stdout ? 0 : 2;
}

static int
print_name(const char *name, void *ctx)
{
	printf("%s\n", name);
	return 0;
}

/* Runs a read-only listing against the store. */
static int
run_list(const struct cli *cli, int (*fn)(struct store *, void *), void *ctx)
{
	struct cfg *cfg = cli_load_config(cli);
	struct store *store;
	int ret;

	if (cfg == NULL)
		return 1;
	store = cli_open_store(cfg);
	cfg_free(&cfg);
	if (store == NULL)
		return 1;
	ret = fn(store, ctx);
	if (ret < 0)
		cli_error("%s", store_err_str(ret));
	store_close(&store);
	return ret < 0 ? 1 : 0;
}

static int
list_domains(struct store *store, void *ctx)
{
	return store_domain_list(store, print_name, NULL);
}

int
cli_domain(struct cli *cli, int argc, char **argv)
{
	struct names_job j = {0};
	char *name;
	int ret;

	if (cli_wants_help(argc, argv))
		return domain_usage(stdout);
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return run_list(cli, list_domains, NULL);
	if (argc != 2 || (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "remove") != 0))
		return domain_usage(stderr);
	name = xstrdup(argv[1]);
	str_lower(name);
	if (!valid_domain(name)) {
		cli_error("not a valid domain name: %s", argv[1]);
		free(name);
		return 1;
	}
	j.a = name;
	if (strcmp(argv[0], "add") == 0)
		ret = run_job(cli, job_domain_add, &j, "domain added");
	else
		ret = run_job(cli, job_domain_remove, &j, "domain removed");
	free(name);
	return ret;
}

/* ---- users -------------------------------------------------------------------------------- */

static int
user_usage(FILE *out)
{
	fprintf(out,
	        "usage: postamt [-c CONF] user add ADDRESS [--password-stdin | --generate-password]\n"
	        "       postamt [-c CONF] user passwd ADDRESS [--password-stdin | --generate-password]\n"
	        "       postamt [-c CONF] user list [--domain DOMAIN]\n"
	        "       postamt [-c CONF] user remove ADDRESS\n"
	        "       postamt [-c CONF] user test ADDRESS [--password-stdin]\n"
	        "       postamt [-c CONF] user quota ADDRESS [SIZE | unlimited | default]\n"
	        "Without a password option the password is asked for on the terminal.\n"
	        "--password-stdin reads one line from standard input; --generate-password makes a\n"
	        "random one and prints it once. `user remove` deletes the account's mail.\n"
	        "`user test` checks a password the way the servers do (exit 0 if it is right).\n"
	        "`user quota` shows the storage used and the quota, or sets the quota (e.g. 2G;\n"
	        "`default` follows storage.quota).\n");
	return out == stdout ? 0 : 2;
}

/* Reads a password from a terminal without echo. */
static int
prompt_password(const char *prompt, char *out, size_t outsize)
{
	struct termios old, noecho;
	bool restore = false;
	int ret = 0;

	fputs(prompt, stderr);
	fflush(stderr);
	if (tcgetattr(STDIN_FILENO, &old) == 0) {
		noecho = old;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho) == 0;
	}
	if (fgets(out, (int)outsize, stdin) == NULL)
		ret = -1;
	if (restore)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	fputc('\n', stderr);
	return ret;
}

static void
generate_password(char *out, size_t len)
{
	/* No look-alikes (0/O, 1/l/I): the password is read off a screen and typed. */
	static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	uint8_t rnd[64];

	ASSERT(len < sizeof(rnd));
	if (getrandom(rnd, len, 0) != (ssize_t)len)
		PANIC("getrandom failed");
	for (size_t i = 0; i < len; i++)
		out[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	out[len] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
}

/* Gets the new password as the options say; 0 ok, -1 error (printed). */
static int
obtain_password(int argc, char **argv, char *pw, size_t pwsize, bool *generated_r)
{
	bool from_stdin = false, generate = false;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--password-stdin") == 0)
			from_stdin = true;
		else if (strcmp(argv[i], "--generate-password") == 0)
			generate = true;
	}
	*generated_r = generate;
	if (generate) {
		generate_password(pw, 16);
		return 0;
	}
	if (from_stdin) {
		if (fgets(pw, (int)pwsize, stdin) == NULL) {
			cli_error("no password on standard input");
			return -1;
		}
	} else if (isatty(STDIN_FILENO)) {
		char again[AUTH_MAX_PASSWORD + 2];
		if (prompt_password("New password: ", pw, pwsize) < 0 ||
		    prompt_password("Repeat password: ", again, sizeof(again)) < 0) {
			cli_error("no password given");
			return -1;
		}
		if (strcmp(pw, again) != 0) {
			explicit_bzero(again, sizeof(again));
			cli_error("the passwords differ");
			return -1;
		}
		explicit_bzero(again, sizeof(again));
	} else {
		cli_error("give the password with --password-stdin or --generate-password");
		return -1;
	}
	pw[strcspn(pw, "\r\n")] = '\0';
	if (pw[0] == '\0') {
		cli_error("empty password refused");
		return -1;
	}
	return 0;
}

static int
user_set(struct cli *cli, int argc, char **argv, bool add)
{
	char pw[AUTH_MAX_PASSWORD + 2], hash[AUTH_HASH_SIZE], *address;
	struct names_job j = {0};
	const char *error;
	struct cfg *cfg;
	bool generated;
	int ret;

	address = xstrdup(argv[1]);
	str_lower(address);
	if (!valid_address(address, false)) {
		cli_error("not a valid address: %s", argv[1]);
		free(address);
		return 1;
	}
	cfg = cli_load_config(cli);
	if (cfg == NULL || obtain_password(argc - 2, argv + 2, pw, sizeof(pw), &generated) < 0) {
		cfg_free(&cfg);
		free(address);
		return 1;
	}
	ret = auth_password_hash(pw, cfg->password_scheme, hash, &error);
	cfg_free(&cfg);
	if (ret < 0) {
		explicit_bzero(pw, sizeof(pw));
		cli_error("cannot hash the password: %s", error);
		free(address);
		return 1;
	}
	j.a = address;
	j.b = hash;
	ret = run_job(cli, add ? job_account_add : job_account_passwd, &j, NULL);
	if (ret == 0) {
		printf("%s %s\n", add ? "account added:" : "password changed:", address);
		if (generated)
			printf("password: %s\n", pw);
	}
	explicit_bzero(pw, sizeof(pw));
	free(address);
	return ret;
}

/* Verifies a password through the same code path as IMAP, POP3 and SMTP AUTH. */
static int
user_test(struct cli *cli, const char *address)
{
	char pw[AUTH_MAX_PASSWORD + 2];
	struct store_account account;
	struct auth_options opts = {1, NULL};
	struct cfg *cfg = cli_load_config(cli);
	struct store *store = NULL;
	struct auth *auth = NULL;
	const char *error;
	enum auth_result r;
	int ret = 1;

	if (cfg == NULL)
		return 1;
	if (isatty(STDIN_FILENO)) {
		if (prompt_password("Password: ", pw, sizeof(pw)) < 0)
			goto out;
	} else if (fgets(pw, sizeof(pw), stdin) == NULL) {
		cli_error("no password on standard input");
		goto out;
	}
	pw[strcspn(pw, "\r\n")] = '\0';
	store = cli_open_store(cfg);
	opts.password_scheme = cfg->password_scheme;
	if (store == NULL || auth_new(store, &opts, &auth, &error) < 0) {
		if (store != NULL)
			cli_error("%s", error);
		goto out;
	}
	r = auth_verify(auth, address, pw, &account);
	if (r == AUTH_OK) {
		printf("ok: %s\n", account.address);
		ret = 0;
	} else {
		printf("%s\n", r == AUTH_TEMPFAIL ? "temporary failure" : "failed");
	}
out:
	explicit_bzero(pw, sizeof(pw));
	auth_free(&auth);
	if (store != NULL)
		store_close(&store);
	cfg_free(&cfg);
	return ret;
}

static int
print_account(const struct store_account *a, void *ctx)
{
	printf("%s%s\n", a->address, a->disabled ? " (disabled)" : "");
	return 0;
}

static int
list_accounts(struct store *store, void *ctx)
{
	return store_account_list(store, ctx, print_account, NULL);
}

static void
print_size(const char *label, uint64_t bytes)
{
	printf("%s: %llu bytes (%.1f MiB)\n", label, (unsigned long long)bytes,
	       (double)bytes / (1024.0 * 1024.0));
}

/* Shows (value NULL) or sets an account's quota. */
static int
user_quota(struct cli *cli, const char *address_arg, const char *value)
{
	struct names_job j = {0};
	struct store_account acc;
	struct cfg *cfg;
	struct store *store;
	char *address = xstrdup(address_arg);
	uint64_t bytes = 0;
	int ret;

	str_lower(address);
	if (value != NULL) {
		if (strcmp(value, "default") == 0)
			j.id = -1;
		else if (strcmp(value, "unlimited") == 0)
			j.id = 0;
		else if (cfg_parse_size(value, &bytes) == 0 && bytes <= INT64_MAX)
			j.id = (int64_t)bytes;
		else {
			cli_error("not a size: %s (use e.g. 500M, 2G, unlimited or default)", value);
			free(address);
			return 2;
		}
		j.a = address;
		ret = run_job(cli, job_account_quota, &j, "quota set");
		free(address);
		return ret;
	}
	cfg = cli_load_config(cli);
	if (cfg == NULL) {
		free(address);
		return 1;
	}
	store = cli_open_store(cfg);
	if (store == NULL) {
		cfg_free(&cfg);
		free(address);
		return 1;
	}
	ret = store_account_get(store, address, &acc);
	explicit_bzero(acc.pwhash, sizeof(acc.pwhash));
	if (ret <= 0) {
		cli_error("%s", ret == 0 ? "no such account" : store_err_str(ret));
		ret = 1;
	} else {
		uint64_t q = store_account_quota(&acc, cfg->storage_quota);

		printf("account: %s\n", acc.address);
		print_size("used", acc.used);
		if (q == 0)
			printf("quota: unlimited%s\n", acc.quota < 0 ? " (default)" : "");
		else
			print_size(acc.quota < 0 ? "quota (default)" : "quota", q);
		ret = 0;
	}
	store_close(&store);
	cfg_free(&cfg);
	free(address);
	return ret;
}

int
cli_user(struct cli *cli, int argc, char **argv)
{
	if (cli_wants_help(argc, argv))
		return user_usage(stdout);
	if (argc >= 1 && strcmp(argv[0], "list") == 0) {
		const char *domain = NULL;
		if (argc == 3 && strcmp(argv[1], "--domain") == 0)
			domain = argv[2];
		else if (argc != 1)
			return user_usage(stderr);
		return run_list(cli, list_accounts, (void *)(uintptr_t)domain);
	}
	if (argc < 2)
		return user_usage(stderr);
	if (strcmp(argv[0], "add") == 0 || strcmp(argv[0], "passwd") == 0) {
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--password-stdin") != 0 &&
			    strcmp(argv[i], "--generate-password") != 0)
				return user_usage(stderr);
		}
		return user_set(cli, argc, argv, strcmp(argv[0], "add") == 0);
	}
	if (strcmp(argv[0], "test") == 0 &&
	    (argc == 2 || (argc == 3 && strcmp(argv[2], "--password-stdin") == 0)))
		return user_test(cli, argv[1]);
	if (strcmp(argv[0], "quota") == 0 && (argc == 2 || argc == 3))
		return user_quota(cli, argv[1], argc == 3 ? argv[2] : NULL);
	if (strcmp(argv[0], "remove") == 0 && argc == 2) {
		struct names_job j = {0};
		char *address = xstrdup(argv[1]);
		int ret;

		str_lower(address);
		j.a = address;
		ret = run_job(cli, job_account_remove, &j, "account removed");
		free(address);
		return ret;
	}
	return user_usage(stderr);
}

/* ---- aliases ------------------------------------------------------------------------------ */

static int
alias_usage(FILE *out)
{
	fprintf(out, "usage: postamt [-c CONF] alias add SOURCE TARGET\n"
	             "       postamt [-c CONF] alias list\n"
	             "       postamt [-c CONF] alias remove SOURCE [TARGET]\n"
	             "SOURCE is user@domain, or @domain for a catch-all; the domain must be local.\n"
	             "TARGET is any address, local or remote. One source may have many targets.\n");
	return out == stdout ? 0 : 2;
}

static int
print_alias(const char *source, const char *target, void *ctx)
{
	printf("%s -> %s\n", source, target);
	return 0;
}

static int
list_aliases(struct store *store, void *ctx)
{
	return store_alias_list(store, print_alias, NULL);
}

int
cli_alias(struct cli *cli, int argc, char **argv)
{
	struct names_job j = {0};
	char *source, *target = NULL;
	int ret;

	if (cli_wants_help(argc, argv))
		return alias_usage(stdout);
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return run_list(cli, list_aliases, NULL);
	if (argc < 2 || argc > 3)
		return alias_usage(stderr);
	if (strcmp(argv[0], "add") == 0 && argc != 3)
		return alias_usage(stderr);
	if (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "remove") != 0)
		return alias_usage(stderr);
	source = xstrdup(argv[1]);
	str_lower(source);
	if (argc == 3) {
		target = xstrdup(argv[2]);
		str_lower(target);
	}
	if (!valid_address(source, true) || (target != NULL && !valid_address(target, false))) {
		cli_error("not a valid address: %s", !valid_address(source, true) ? argv[1] : argv[2]);
		ret = 1;
	} else {
		j.a = source;
		j.b = target;
		if (strcmp(argv[0], "add") == 0)
			ret = run_job(cli, job_alias_add, &j, "alias added");
		else
			ret = run_job(cli, job_alias_remove, &j, "alias removed");
	}
	free(source);
	free(target);
	return ret;
}
