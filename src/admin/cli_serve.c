/* `postamt serve`: the daemon in the foreground.
 *
 * Order matters: configuration, then the listening sockets and the TLS key (as root when
 * started as root), then dropping to the configured user BEFORE any network input is read,
 * then the store and the authentication workers, then the I/O threads. SIGTERM/SIGINT shut
 * down gracefully (in-flight work finishes, every queued store job is committed, exit 0);
 * SIGHUP rereads the configuration and the TLS certificate. */
#include "admin/cli.h"
#include "auth/auth.h"
#include "core/log.h"
#include "guard/guard.h"
#include "net/net.h"
#include "pop3/pop3_server.h"
#include "queue/queue.h"
#include "imap/imap_server.h"
#include "smtp/smtp_server.h"

#include <errno.h>
#include <ftw.h>
#include <event2/event.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct serve {
	struct cli *cli;
	struct cfg *cfg;
	struct net_server *net;
	struct store *store;
	struct auth *auth;
	struct tpool *lookups;
	struct tpool *imap_workers; /* IMAP commands: they wait for reads and commits */
	struct guard *guard;
	struct queue_runner *queue;
	struct event *guard_timer;
	atomic_bool guard_refreshing;
	char hostname[256];
};

static void
apply_log_settings(const struct cfg *cfg)
{
	enum log_level level;
	const char *error;

	if (log_level_parse(cfg->log_level, &level) == 0)
		log_set_level(level);
	if (log_set_target(cfg->log_target, &error) < 0)
		log_warn("event=config reason=\"%s\"", error);
}

static void
guard_options_from(const struct serve *sv, const struct cfg *cfg, struct guard_options *o)
{
	memset(o, 0, sizeof(*o));
	o->max_failures = cfg->guard_max_failures;
	o->window = cfg->guard_window;
	o->ban_time = cfg->guard_ban_time;
	o->ban_max = cfg->guard_ban_max;
	o->failure_delay = cfg->auth_failure_delay;
	o->stale_max_delay = MAX(cfg->guard_stale_max_delay, cfg->auth_failure_delay);
	o->account_threshold = cfg->guard_account_threshold;
	o->account_max_delay = MAX(cfg->guard_account_max_delay, cfg->auth_failure_delay);
	o->stale_notify = cfg->guard_stale_notify != 0;
	o->allow = cfg->guard_allow;
	o->hostname = sv->hostname;
}

static void
guard_refresh_task(void *arg)
{
	struct serve *sv = arg;

	guard_refresh(sv->guard);
	atomic_store(&sv->guard_refreshing, false);
}

/* Bans changed by `postamt ban` take effect within a second: the check is one read, on a
 * worker, never on the accept loop. */
static void
on_guard_timer(evutil_socket_t fd, short what, void *arg)
{
	struct serve *sv = arg;

	if (!atomic_exchange(&sv->guard_refreshing, true))
		tpool_submit(sv->lookups, guard_refresh_task, sv);
}

/* New mail for remote recipients: deliver now. sv.queue is set before the I/O threads start
 * and stopped after they end. */
static void
kick_queue(void *ctx)
{
	struct serve *sv = ctx;

	if (sv->queue != NULL)
		queue_runner_kick(sv->queue);
}

static void
on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct serve *sv = arg;

	log_info("event=shutdown signal=%s connections=%llu grace_ms=%llu",
	         sig == SIGTERM ? "TERM" : "INT",
	         (unsigned long long)net_server_connections(sv->net),
	         (unsigned long long)sv->cfg->shutdown_grace);
	net_server_stop(sv->net, sv->cfg->shutdown_grace);
}

static void
on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
	struct serve *sv = arg;
	struct cfg *cfg;
	const char *error;

	log_info("event=reload file=%s", sv->cli->config_path);
	cfg = cli_load_config(sv->cli); /* prints the errors on stderr */
	if (cfg == NULL) {
		log_error("event=reload result=failed reason=\"configuration has errors; keeping the running one\"");
		return;
	}
	/* Listeners, data_dir and user need a restart; everything else applies now. */
	apply_log_settings(cfg);
	smtp_server_reload(cfg);
	imap_server_reload(cfg);
	pop3_server_reload(cfg);
	{
		struct guard_options gopts;
		const char *gerr;
		guard_options_from(sv, cfg, &gopts);
		if (guard_set_options(sv->guard, &gopts, &gerr) < 0)
			log_error("event=reload result=partial reason=\"%s\"", gerr);
	}
	if (net_server_reload(sv->net, cfg, &error) < 0)
		log_error("event=reload result=partial reason=\"%s; keeping the old certificate\"", error);
	else
		log_info("event=reload result=ok");
	cfg_free(&sv->cfg);
	sv->cfg = cfg;
}

/* mkdir unless it exists: after dropping privileges the parent may not be writable. */
static int
ensure_dir(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	return mkdir(path, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

static uid_t chown_uid;
static gid_t chown_gid;

static int
chown_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (st->st_uid == chown_uid && st->st_gid == chown_gid)
		return 0;
	return lchown(path, chown_uid, chown_gid) < 0 ? -1 : 0;
}

/* Started as root with server.user set: become that user for good. */
static int
drop_privileges(const struct cfg *cfg)
{
	struct passwd *pw;

	if (geteuid() != 0 || cfg->user[0] == '\0')
		return 0;
	pw = getpwnam(cfg->user);
	if (pw == NULL) {
		log_error("event=start result=failed reason=\"server.user %s does not exist\"", cfg->user);
		return -1;
	}
	/* The data folder must belong to the user the server runs as. */
	if (ensure_dir(cfg->data_dir) < 0) {
		log_error("event=start result=failed reason=\"cannot create %s: %s\"", cfg->data_dir,
		          strerror(errno));
		return -1;
	}
	/* Only a data folder created by root (postamt init run as root) is walked: after the
	 * first start it already belongs to the user, and start-up stays independent of its
	 * size. */
	chown_uid = pw->pw_uid;
	chown_gid = pw->pw_gid;
	struct stat st;
	if (stat(cfg->data_dir, &st) == 0 && st.st_uid != pw->pw_uid &&
	    nftw(cfg->data_dir, chown_entry, 32, FTW_PHYS) != 0) {
		log_error("event=start result=failed reason=\"cannot chown %s: %s\"", cfg->data_dir,
		          strerror(errno));
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_error("event=start result=failed reason=\"cannot become %s: %s\"", cfg->user,
		          strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		log_error("event=start result=failed reason=\"privileges could be regained\"");
		return -1;
	}
	log_info("event=privileges user=%s uid=%u", cfg->user, (unsigned int)pw->pw_uid);
	return 0;
}

static int
open_store(struct serve *sv)
{
	struct store_options opts;
	const char *error;
	char *db = cfg_database_path(sv->cfg), *blobs = xasprintf("%s/blobs", sv->cfg->data_dir);
	int ret;

	if (ensure_dir(sv->cfg->data_dir) < 0) {
		log_error("event=start result=failed reason=\"cannot create %s: %s\"",
		          sv->cfg->data_dir, strerror(errno));
		free(db);
		free(blobs);
		return -1;
	}
	memset(&opts, 0, sizeof(opts));
	opts.database = db;
	opts.blob_dir = blobs;
	opts.sync_threads = (unsigned int)sv->cfg->sync_threads;
	opts.sync_filesystem = sv->cfg->sync_filesystem != 0;
	opts.inline_max = sv->cfg->inline_max;
	opts.relaxed_sync = sv->cfg->storage_sync_flags == 0;
	opts.batch_max = (unsigned int)sv->cfg->batch_max;
	opts.blob_orphan_age = sv->cfg->blob_orphan_age;
	opts.blob_sweep_interval = sv->cfg->blob_sweep_interval;
	opts.expunge_history = sv->cfg->imap_expunge_history;
	opts.background = true;
	ret = store_open(&opts, &sv->store, &error);
	if (ret < 0)
		log_error("event=start result=failed reason=\"cannot open the store: %s\"", error);
	free(db);
	free(blobs);
	return ret;
}

static int
serve_usage(FILE *out)
{
	fprintf(out, "usage: postamt [-c CONF] serve\n"
	             "Runs the mail server in the foreground, logging to stderr or syslog.\n"
	             "SIGTERM or SIGINT: graceful shutdown (exit 0). SIGHUP: reread the configuration\n"
	             "and the TLS certificate; listeners, data_dir and user need a restart.\n");
	return out == stdout ? 0 : 2;
}

int
cli_serve(struct cli *cli, int argc, char **argv)
{
	const struct net_proto *protos[NET_SVC_COUNT] = {0};
	struct event *sig_term = NULL, *sig_int = NULL, *sig_hup = NULL;
	struct auth_options aopts;
	sigset_t stop_signals;
	struct serve sv;
	const char *error;
	int ret = 1;

	if (cli_wants_help(argc, argv))
		return serve_usage(stdout);
	if (argc != 0)
		return serve_usage(stderr);
	memset(&sv, 0, sizeof(sv));
	sv.cli = cli;
	sv.cfg = cli_load_config(cli);
	if (sv.cfg == NULL)
		return 1;
	apply_log_settings(sv.cfg);
	signal(SIGPIPE, SIG_IGN);
	/* Until the main loop handles them, stop signals stay pending instead of killing a
	 * half-started server; every thread started from here on inherits the mask. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

	if (sv.cfg->hostname[0] != '\0')
		(void)!str_copy(sv.hostname, sizeof(sv.hostname), sv.cfg->hostname);
	else if (gethostname(sv.hostname, sizeof(sv.hostname) - 1) < 0)
		(void)!str_copy(sv.hostname, sizeof(sv.hostname), "localhost");
	protos[NET_SVC_SMTP] = smtp_server_proto();
	protos[NET_SVC_SUBMISSION] = smtp_server_proto();
	protos[NET_SVC_SUBMISSIONS] = smtp_server_proto();
	protos[NET_SVC_IMAP] = imap_server_proto();
	protos[NET_SVC_IMAPS] = imap_server_proto();
	protos[NET_SVC_POP3] = pop3_server_proto();
	protos[NET_SVC_POP3S] = pop3_server_proto();

	if (net_server_new(sv.cfg, protos, &sv.net, &error) < 0) {
		log_error("event=start result=failed reason=\"%s\"", error);
		goto out;
	}
	if (drop_privileges(sv.cfg) < 0 || open_store(&sv) < 0)
		goto out;
	memset(&aopts, 0, sizeof(aopts));
	aopts.workers = (unsigned int)sv.cfg->auth_workers;
	aopts.password_scheme = sv.cfg->password_scheme;
	if (auth_new(sv.store, &aopts, &sv.auth, &error) < 0) {
		log_error("event=start result=failed reason=\"%s\"", error);
		goto out;
	}
	sv.lookups = tpool_new((unsigned int)sv.cfg->workers, "lookup");
	{
		struct guard_options gopts;
		struct timeval second = {1, 0};

		guard_options_from(&sv, sv.cfg, &gopts);
		if (guard_new(sv.store, sv.lookups, &gopts, &sv.guard, &error) < 0) {
			log_error("event=start result=failed reason=\"%s\"", error);
			goto out;
		}
		sv.guard_timer = event_new(net_server_base(sv.net), -1, EV_PERSIST, on_guard_timer, &sv);
		event_add(sv.guard_timer, &second);
	}
	{
		struct smtp_server_env senv = {sv.store, sv.auth, sv.lookups, sv.hostname, sv.guard,
		                               kick_queue, &sv};
		smtp_server_setup(&senv, sv.cfg);
		struct pop3_server_env penv = {sv.store, sv.auth, sv.lookups, sv.hostname, sv.guard};
		pop3_server_setup(&penv, sv.cfg);
	}
	{
		struct imap_server_env ienv = {sv.store, sv.auth, NULL, sv.hostname, sv.guard};

		/* A command waits for its commit on the worker: enough of them that the writer's
		 * group commit sees many sessions' changes at once. */
		sv.imap_workers = tpool_new((unsigned int)MAX(sv.cfg->workers * 4, 16), "imap");
		ienv.workers = sv.imap_workers;
		imap_server_setup(&ienv, sv.cfg);
	}
	{
		/* After the store; it reads only due recipients, so start-up does not depend on
		 * the size of the queue. */
		struct queue_options qopts = {
			.hostname = sv.hostname,
			.routes = sv.cfg->queue_routes,
			.relay_host = sv.cfg->queue_relay_host,
			.relay_user = sv.cfg->queue_relay_user,
			.relay_password = sv.cfg->queue_relay_password,
			.retry_schedule = sv.cfg->queue_retry_schedule,
			.bounce_after = sv.cfg->queue_bounce_after,
			.delay_warning = sv.cfg->queue_delay_warning,
			.interval = sv.cfg->queue_interval,
			.batch = sv.cfg->queue_batch,
			.max_in_flight = sv.cfg->queue_max_in_flight,
			.connections_per_destination = sv.cfg->queue_connections_per_destination,
			.destination_rate = sv.cfg->queue_destination_rate,
			.connect_timeout = sv.cfg->queue_connect_timeout,
			.command_timeout = sv.cfg->queue_command_timeout,
			.data_timeout = sv.cfg->queue_data_timeout,
			.tls = queue_tls_level(sv.cfg->queue_starttls),
			.tls_policies = sv.cfg->queue_tls_policies,
			.tls_ca_file = sv.cfg->queue_tls_ca_file,
			.relay_tls = queue_tls_level(sv.cfg->queue_relay_tls),
			.relay_name = sv.cfg->queue_relay_name,
			.chunking = sv.cfg->queue_chunking != 0,
			.resolvers = sv.cfg->queue_resolvers,
			.dns_timeout = sv.cfg->queue_dns_timeout,
			.mx_port = sv.cfg->queue_mx_port,
		};

		if (queue_runner_new(sv.store, &qopts, &sv.queue, &error) < 0) {
			log_error("event=start result=failed reason=\"%s\"", error);
			goto out;
		}
	}
	sig_term = evsignal_new(net_server_base(sv.net), SIGTERM, on_stop_signal, &sv);
	sig_int = evsignal_new(net_server_base(sv.net), SIGINT, on_stop_signal, &sv);
	sig_hup = evsignal_new(net_server_base(sv.net), SIGHUP, on_reload_signal, &sv);
	event_add(sig_term, NULL);
	event_add(sig_int, NULL);
	event_add(sig_hup, NULL);
	pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL);
	log_info("event=start hostname=%s io_threads=%u pid=%ld", sv.hostname,
	         cfg_io_threads(sv.cfg), (long)getpid());
	net_server_run(sv.net);
	ret = 0;
out:
	if (sig_term != NULL)
		event_free(sig_term);
	if (sig_int != NULL)
		event_free(sig_int);
	if (sig_hup != NULL)
		event_free(sig_hup);
	if (sv.guard_timer != NULL)
		event_free(sv.guard_timer);
	/* The I/O loops have ended. Work still queued elsewhere completes first and posts its
	 * results to the threads' inboxes; net_server_free then runs those, and they find their
	 * connections closed. So the order is: auth (its last failures may queue a guard notice
	 * on the lookup pool), lookups, queue runner, store, network. The queue runner stops
	 * before the store closes (its deliveries in progress are dropped and stay due) and is
	 * freed after it (the store's last done callbacks land in it). */
	auth_free(&sv.auth);
	tpool_free(&sv.lookups); /* also runs the guard's queued notices */
	tpool_free(&sv.imap_workers);
	imap_server_cleanup();
	if (sv.queue != NULL)
		queue_runner_stop(sv.queue);
	if (sv.store != NULL)
		store_close(&sv.store); /* commits every job still queued */
	queue_runner_free(&sv.queue);
	guard_free(&sv.guard);
	net_server_free(&sv.net);
	smtp_server_cleanup();
	if (ret == 0)
		log_info("event=stop result=ok");
	cfg_free(&sv.cfg);
	return ret;
}
