/* The guard against password guessing (per service: smtp, imap, pop3).
 *
 * - Failed logins are counted per (service, client address; IPv6 per /64) within a window;
 *   past max_failures the address is banned on that service only, for ban_time, doubled for
 *   each new ban of the same address within a day, up to ban_max.
 * - A device repeating ONE stale password is not an attack: the same wrong password for the
 *   same user from the same address counts once. Such a device is slowed down, never banned,
 *   logged (event=stale-password) and listed by `postamt ban list --stale`; the account owner
 *   may get one notice per day per address in the INBOX. Passwords are only ever held as a keyed
 *   hash (HMAC-SHA256 with the per-server secret), in memory.
 * - Guessing one account from many addresses is counted per account: its failures are answered
 *   more slowly and the operator is alerted; the account is never locked.
 * - Allow-listed networks are never banned.
 * - Bans live in the store (they survive restarts) and are shared with the CLI: `postamt ban
 *   add/remove` bump a generation counter that the server polls.
 *
 * Thread-safety: every function may be called from any thread (one mutex); none blocks on I/O:
 * persistence goes through store jobs. */
#ifndef GUARD_GUARD_H
#define GUARD_GUARD_H

#include "core/tpool.h"
#include "store/store.h"

enum guard_service {
	GUARD_SMTP,
	GUARD_IMAP,
	GUARD_POP3,
	GUARD_SERVICES
};

const char *guard_service_name(enum guard_service svc);
/* "smtp", "imap", "pop3" -> 0 with *r set; -1 otherwise. */
int guard_service_parse(const char *name, enum guard_service *r);

struct guard_options {
	uint64_t max_failures;     /* distinct failures per address and service before a ban */
	uint64_t window;           /* ms */
	uint64_t ban_time;         /* ms, first ban */
	uint64_t ban_max;          /* ms, ceiling of the doubling */
	uint64_t failure_delay;    /* ms before a failure is answered */
	uint64_t stale_max_delay;  /* ms, ceiling of a stale device's growing delay */
	uint64_t account_threshold;/* failures on one account within the window before slowing */
	uint64_t account_max_delay;/* ms, ceiling of the per-account delay */
	bool stale_notify;         /* tell the account owner about a stale device */
	const char *allow;         /* "192.0.2.0/24 2001:db8::/32 ..." (borrowed during guard_new) */
	const char *hostname;      /* for the notice's From (borrowed, must outlive the guard) */
};

struct guard;

/* store and pool are borrowed. The secret comes from the store. Loads the active bans. */
ATTR_WUR int guard_new(struct store *store, struct tpool *pool, const struct guard_options *opts,
                       struct guard **guard_r, const char **error_r);
void guard_free(struct guard **guard);
/* Applies new options (reload); the tables are kept. */
ATTR_WUR int guard_set_options(struct guard *guard, const struct guard_options *opts,
                               const char **error_r);

/* The form in which an address is counted and banned: IPv4 as it is, IPv6 as its /64
 * ("2001:db8:1:2::/64"). -1 when rip is not an IP address. */
int guard_address_prefix(const char *rip, char *out, size_t outsize);

/* Until when (seconds since the epoch) rip is banned on svc, or 0. */
int64_t guard_banned_until(struct guard *guard, enum guard_service svc, const char *rip);

/* The keyed hash of an attempted password for a user; call where the password is at hand and
 * keep only this. */
#define GUARD_MAC_SIZE 16
void guard_password_mac(struct guard *guard, const char *user, const char *password,
                        uint8_t mac[GUARD_MAC_SIZE]);

/* The priority (enum tpool_priority) of a login from rip on svc: TPOOL_HIGH when a user logged
 * in successfully from there within a day, TPOOL_LOW when it failed within the window, else
 * TPOOL_NORMAL. */
int guard_priority(struct guard *guard, enum guard_service svc, const char *rip);

/* A failed login. Returns the delay in ms before the failure may be answered. May ban rip. */
uint64_t guard_auth_failed(struct guard *guard, enum guard_service svc, const char *rip,
                           const char *user, const uint8_t mac[GUARD_MAC_SIZE]);
/* A successful login: forgets the user's stale password at this address. */
void guard_auth_succeeded(struct guard *guard, enum guard_service svc, const char *rip,
                          const char *user);

/* Rereads the bans from the store when the CLI changed them (checks a counter; cheap). Runs
 * store reads: call it on a worker. */
void guard_refresh(struct guard *guard);

#endif
