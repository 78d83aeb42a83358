/* Password logins through the guard (see login.h). */
#include "proto/login.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct login_op {
	struct login_env env;
	enum guard_service svc;
	struct net_conn *conn;
	login_done_fn *done;
	void *ctx;
	enum auth_result result;
	int64_t account_id;
	char user[256];
	char rip[64];
	uint8_t mac[GUARD_MAC_SIZE]; /* keyed hash of the attempted password, for the guard */
};

static void
login_finish(void *arg)
{
	struct login_op *op = arg;
	struct login_result r = {op->result, op->account_id, op->user};

	op->done(op->conn, &r, op->ctx);
	free(op);
}

/* On an auth worker thread. */
static void
login_verified(enum auth_result result, const struct store_account *account, void *ctx)
{
	struct login_op *op = ctx;
	uint64_t delay = op->env.failure_delay;

	op->result = result;
	if (account != NULL)
		op->account_id = account->id;
	if (op->env.guard != NULL && result == AUTH_FAILED)
		delay = guard_auth_failed(op->env.guard, op->svc, op->rip, op->user, op->mac);
	else if (op->env.guard != NULL && result == AUTH_OK)
		guard_auth_succeeded(op->env.guard, op->svc, op->rip, op->user);
	explicit_bzero(op->mac, sizeof(op->mac));
	if (result == AUTH_FAILED && delay > 0)
		net_thread_post_delayed(net_conn_thread(op->conn), delay, login_finish, op);
	else
		net_thread_post(net_conn_thread(op->conn), login_finish, op);
}

void
login_start(const struct login_env *env, enum guard_service svc, struct net_conn *conn,
            const char *user, const char *password, login_done_fn *done, void *ctx)
{
	struct login_op *op = xcalloc(1, sizeof(*op));
	int prio = TPOOL_NORMAL;

	op->env = *env;
	op->svc = svc;
	op->conn = conn;
	op->done = done;
	op->ctx = ctx;
	(void)!str_copy(op->user, sizeof(op->user), user);
	(void)!str_copy(op->rip, sizeof(op->rip), net_conn_rip(conn));
	if (env->guard != NULL) {
		guard_password_mac(env->guard, user, password, op->mac);
		prio = guard_priority(env->guard, svc, op->rip);
	}
	auth_verify_async_prio(env->auth, prio, user, password, login_verified, op);
}

bool
login_refuse_banned(struct guard *guard, enum guard_service svc, struct net_conn *conn,
                    const char *prefix)
{
	int64_t until = guard != NULL ? guard_banned_until(guard, svc, net_conn_rip(conn)) : 0;
	char when[64];
	struct tm tm;
	time_t t = (time_t)until;

	if (until <= 0)
		return false;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	net_conn_printf(conn, "%sToo many failed logins from your address; try again after %s\r\n",
	                prefix, when);
	net_conn_close_because(conn, "banned");
	return true;
}
