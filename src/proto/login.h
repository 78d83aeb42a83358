/* A password login as SMTP AUTH, IMAP and POP3 do it: verified on the auth workers with the
 * guard's priority, counted by the guard (failure or success), and a failure answered only
 * after the guard's delay, counted from the verification's end, so that guessing is slow and
 * an unknown user looks the same as a wrong password. */
#ifndef PROTO_LOGIN_H
#define PROTO_LOGIN_H

#include "auth/auth.h"
#include "guard/guard.h"
#include "net/net.h"

struct login_env {
	struct auth *auth;      /* borrowed */
	struct guard *guard;    /* borrowed; NULL = no guard: a fixed failure_delay */
	uint64_t failure_delay; /* ms, without a guard */
};

struct login_result {
	enum auth_result result;
	int64_t account_id;  /* when AUTH_OK */
	const char *user;    /* as the client gave it */
};

/* Runs on conn's I/O thread. The connection may be closing meanwhile (check
 * net_conn_is_closing); the caller keeps its own reference to it while the login runs. */
typedef void login_done_fn(struct net_conn *conn, const struct login_result *r, void *ctx);

/* Starts the check of user and password (copied; the copy of the password is wiped).
 * On conn's I/O thread. */
void login_start(const struct login_env *env, enum guard_service svc, struct net_conn *conn,
                 const char *user, const char *password, login_done_fn *done, void *ctx);

/* At connect: when the client's address is banned from svc, sends prefix followed by "Too many
 * failed logins from your address; try again after <time>" and closes the connection.
 * Returns true when it did. guard may be NULL (no bans). */
bool login_refuse_banned(struct guard *guard, enum guard_service svc, struct net_conn *conn,
                         const char *prefix);

#endif
