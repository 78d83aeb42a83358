/* TLS server contexts (OpenSSL 3): TLS 1.2+ with modern ciphers only, no renegotiation, no
 * compression, server cipher preference. Certificates are reloaded on SIGHUP by building a new
 * context; connections already open keep the one they started with. */
#include "net/net.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

static const char *
tls_error(const char *what)
{
	static __thread char msg[256];
	unsigned long e = ERR_get_error();
	char detail[160];

	ERR_error_string_n(e, detail, sizeof(detail));
	snprintf(msg, sizeof(msg), "%s: %s", what, e ? detail : "unknown error");
	ERR_clear_error();
	return msg;
}

struct ssl_ctx_st *
net_tls_context_new(const struct cfg *cfg, const char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	static __thread char msg[512];

	if (ctx == NULL) {
		*error_r = tls_error("SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, strcmp(cfg->tls_min_version, "TLSv1.3") == 0
	                                       ? TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
		*error_r = tls_error("tls.ciphers");
		goto fail;
	}
	if (SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites) != 1) {
		*error_r = tls_error("tls.ciphersuites");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
		snprintf(msg, sizeof(msg), "tls.cert %s: %s", cfg->tls_cert,
		         tls_error("cannot load certificate"));
		*error_r = msg;
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
		snprintf(msg, sizeof(msg), "tls.key %s: %s", cfg->tls_key,
		         tls_error("cannot load key"));
		*error_r = msg;
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = "tls.key does not match tls.cert";
		goto fail;
	}
	/* Resumption without server-side state: tickets are enough for mail clients. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}
