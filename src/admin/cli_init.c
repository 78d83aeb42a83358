/* `postamt init DIR --domain D [--hostname H] [--port-base N]`: a complete, working set-up in
 * one folder: DIR/postamt.conf, DIR/data (database and blobs) and DIR/tls with a self-signed
 * certificate for H, so that every listener can offer TLS from the first start. */
#include "admin/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
init_usage(FILE *out)
{
	fprintf(out,
	        "usage: postamt init DIR --domain DOMAIN [--hostname HOST] [--port-base N]\n"
	        "Creates DIR/postamt.conf, the data folder DIR/data and a self-signed TLS certificate\n"
	        "for HOST (default mail.DOMAIN) in DIR/tls, and adds DOMAIN as a local domain.\n"
	        "With --port-base N the listeners go on 127.0.0.1 at N+25 (SMTP), N+587\n"
	        "(submission), N+465 (submissions), N+143 (IMAP), N+993 (IMAPS), N+110 (POP3) and\n"
	        "N+995 (POP3S); without it on the standard ports of all addresses.\n");
	return out == stdout ? 0 : 2;
}

/* A self-signed certificate (ECDSA P-256, SHA-256, 10 years) with H as CN and SAN. */
static int
make_certificate(const char *host, const char *cert_path, const char *key_path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	X509_EXTENSION *ext = NULL;
	X509V3_CTX v3;
	char san[300];
	FILE *f = NULL;
	int fd, ret = -1;

	if (key == NULL || x == NULL)
		goto out;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)host, -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	snprintf(san, sizeof(san), "DNS:%s", host);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	if (ext == NULL || !X509_add_ext(x, ext, -1))
		goto out;
	if (!X509_sign(x, key, EVP_sha256()))
		goto out;

	/* The key is written 0600 from the start, never readable by others even briefly. */
	fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		cli_error("cannot create %s: %s", key_path, strerror(errno));
		goto out;
	}
	if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) || fclose(f) != 0) {
		f = NULL;
		goto out;
	}
	f = fopen(cert_path, "wx");
	if (f == NULL) {
		cli_error("cannot create %s: %s", cert_path, strerror(errno));
		goto out;
	}
	if (!PEM_write_X509(f, x))
		goto out;
	ret = fclose(f) == 0 ? 0 : -1;
	f = NULL;
out:
	if (f != NULL)
		fclose(f);
	X509_EXTENSION_free(ext);
	X509_free(x);
	EVP_PKEY_free(key);
	return ret;
}

static int
write_config(const char *path, const char *host, const char *dir, unsigned int port_base)
{
	static const struct { const char *name; unsigned int port; } listeners[] = {
		{"smtp", 25}, {"submission", 587}, {"submissions", 465}, {"imap", 143},
		{"imaps", 993}, {"pop3", 110}, {"pop3s", 995},
	};
	FILE *f = fopen(path, "wx");

	if (f == NULL) {
		cli_error("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(f, "# Postamt configuration, written by `postamt init`.\n"
	           "# Every setting and its default: `postamt config show --verbose`.\n\n"
	           "[server]\nhostname = %s\ndata_dir = %s/data\n"
	           "# When started as root, run as this user after binding the ports:\n"
	           "#user = postamt\n\n[listen]\n", host, dir);
	for (size_t i = 0; i < N_ELEMENTS(listeners); i++) {
		if (port_base > 0)
			fprintf(f, "%s = 127.0.0.1:%u\n", listeners[i].name, port_base + listeners[i].port);
		else
			fprintf(f, "%s = *:%u\n", listeners[i].name, listeners[i].port);
	}
	fprintf(f, "\n[tls]\ncert = %s/tls/cert.pem\nkey = %s/tls/key.pem\n\n"
	           "[log]\ntarget = stderr\nlevel = info\n", dir, dir);
	return fclose(f) == 0 ? 0 : -1;
}

static int
job_domain_add(struct store_txn *txn, void *ctx)
{
	return store_txn_domain_add(txn, ctx);
}

int
cli_init(struct cli *cli, int argc, char **argv)
{
	const char *dir_arg = NULL, *domain = NULL, *host_arg = NULL, *error;
	unsigned int port_base = 0;
	char *dir = NULL, *conf = NULL, *tls = NULL, *cert = NULL, *key = NULL, *host = NULL;
	struct cli sub = {0};
	struct cfg *cfg = NULL;
	struct store *store = NULL;
	int ret = 1;

	if (cli_wants_help(argc, argv))
		return init_usage(stdout);
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--domain") == 0 && i + 1 < argc)
			domain = argv[++i];
		else if (strcmp(argv[i], "--hostname") == 0 && i + 1 < argc)
			host_arg = argv[++i];
		else if (strcmp(argv[i], "--port-base") == 0 && i + 1 < argc) {
			if (str_to_uint(argv[++i], &port_base) < 0 || port_base == 0 ||
			    port_base > 65535 - 995) {
				cli_error("--port-base must be 1-%d", 65535 - 995);
				return 2;
			}
		} else if (argv[i][0] != '-' && dir_arg == NULL)
			dir_arg = argv[i];
		else
			return init_usage(stderr);
	}
	if (dir_arg == NULL || domain == NULL)
		return init_usage(stderr);

	if (mkdir(dir_arg, 0755) < 0 && errno != EEXIST) {
		cli_error("cannot create %s: %s", dir_arg, strerror(errno));
		return 1;
	}
	dir = realpath(dir_arg, NULL);
	if (dir == NULL) {
		cli_error("%s: %s", dir_arg, strerror(errno));
		return 1;
	}
	conf = xasprintf("%s/postamt.conf", dir);
	if (access(conf, F_OK) == 0) {
		cli_error("%s exists already; not overwriting it", conf);
		goto out;
	}
	host = host_arg ? xstrdup(host_arg) : xasprintf("mail.%s", domain);
	str_lower(host);
	tls = xasprintf("%s/tls", dir);
	cert = xasprintf("%s/cert.pem", tls);
	key = xasprintf("%s/key.pem", tls);
	if (mkdir(tls, 0750) < 0 && errno != EEXIST) {
		cli_error("cannot create %s: %s", tls, strerror(errno));
		goto out;
	}
	if (make_certificate(host, cert, key) < 0) {
		cli_error("cannot create the TLS certificate in %s", tls);
		goto out;
	}
	if (write_config(conf, host, dir, port_base) < 0)
		goto out;
	sub.config_path = conf;
	cfg = cli_load_config(&sub);
	if (cfg == NULL)
		goto out;
	store = cli_open_store(cfg);
	if (store == NULL)
		goto out;
	{
		char *d = xstrdup(domain);
		str_lower(d);
		if (store_exec(store, job_domain_add, d, &error) != STORE_OK)
			cli_error("cannot add domain %s: %s", d, error);
		else
			ret = 0;
		free(d);
	}
	if (ret == 0)
		printf("initialised %s\n  configuration: %s\n  domain: %s\n  host name: %s\n"
		       "  TLS certificate (self-signed): %s\n"
		       "Next: postamt -c %s user add USER@%s, then postamt -c %s serve\n",
		       dir, conf, domain, host, cert, conf, domain, conf);
out:
	if (store != NULL)
		store_close(&store);
	cfg_free(&cfg);
	(void)cli;
	free(dir);
	free(conf);
	free(tls);
	free(cert);
	free(key);
	free(host);
	return ret;
}
