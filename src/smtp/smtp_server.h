/* The SMTP server (RFC 5321) for the MX port and the submission ports (RFC 6409, 8314), as a
 * net_proto. Mail for local recipients is delivered into their INBOX in the same transaction
 * that accepts it; remote recipients go to the outbound queue. "250" after the data is sent
 * only once that transaction is committed. */
#ifndef SMTP_SMTP_SERVER_H
#define SMTP_SMTP_SERVER_H

#include "auth/auth.h"
#include "core/config.h"
#include "core/tpool.h"
#include "guard/guard.h"
#include "net/net.h"
#include "store/store.h"

struct smtp_server_env {
	struct store *store;     /* borrowed */
	struct auth *auth;       /* borrowed */
	struct tpool *lookups;   /* borrowed: threads for store reads */
	const char *hostname;    /* borrowed */
	struct guard *guard;     /* borrowed; NULL = no bans, fixed failure delay */
	/* Called (on an I/O thread) after a message for remote recipients was committed to the
	 * queue, so that delivery starts at once; NULL = nobody to tell. */
	void (*queued)(void *ctx);
	void *queued_ctx;
};

/* Call once before the server runs; again with a new cfg on reload (limits are copied). */
void smtp_server_setup(const struct smtp_server_env *env, const struct cfg *cfg);
void smtp_server_reload(const struct cfg *cfg);
const struct net_proto *smtp_server_proto(void);
/* Frees what setup allocated, once the server has stopped. */
void smtp_server_cleanup(void);

#endif
