/* The IMAP server (IMAP4rev1 RFC 3501, IMAP4rev2 RFC 9051, and the extensions listed in
 * docs/IMAP.md) as a net_proto for the imap (STARTTLS) and imaps (implicit TLS) ports. Every
 * change a command makes is committed before its tagged OK; sessions on one mailbox hear of
 * each other's changes through the store's change hook. */
#ifndef IMAP_IMAP_SERVER_H
#define IMAP_IMAP_SERVER_H

#include "auth/auth.h"
#include "core/config.h"
#include "core/tpool.h"
#include "guard/guard.h"
#include "net/net.h"
#include "store/store.h"

struct imap_server_env {
	struct store *store;   /* borrowed */
	struct auth *auth;     /* borrowed */
	struct tpool *workers; /* borrowed: threads for the commands' store work */
	const char *hostname;  /* borrowed */
	struct guard *guard;   /* borrowed; NULL = no bans */
};

/* Call once before the server runs (it sets the store's change hook); again with a new cfg on
 * reload. */
void imap_server_setup(const struct imap_server_env *env, const struct cfg *cfg);
void imap_server_reload(const struct cfg *cfg);
const struct net_proto *imap_server_proto(void);
/* Stops watching the store (before it closes). */
void imap_server_cleanup(void);

#endif
