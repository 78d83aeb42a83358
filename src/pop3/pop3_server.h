/* The POP3 server (RFC 1939) for the pop3 port (STLS, RFC 2595) and the pop3s port (implicit
 * TLS, RFC 8314), as a net_proto. It serves the INBOX of the logged-in account: a snapshot of
 * its messages taken at login, RETR/TOP streamed from the message files, DELE applied by QUIT
 * in one store job whose commit comes before the "+OK". */
#ifndef POP3_POP3_SERVER_H
#define POP3_POP3_SERVER_H

#include "auth/auth.h"
#include "core/config.h"
#include "core/tpool.h"
#include "guard/guard.h"
#include "net/net.h"
#include "store/store.h"

struct pop3_server_env {
	struct store *store;   /* borrowed */
	struct auth *auth;     /* borrowed */
	struct tpool *lookups; /* borrowed: threads for store reads and message file reads */
	const char *hostname;  /* borrowed */
	struct guard *guard;   /* borrowed; NULL = no bans, fixed failure delay */
};

/* Call once before the server runs (main thread); again with a new cfg on reload (limits are
 * copied, the env is kept). */
void pop3_server_setup(const struct pop3_server_env *env, const struct cfg *cfg);
void pop3_server_reload(const struct cfg *cfg);
const struct net_proto *pop3_server_proto(void);

#endif
