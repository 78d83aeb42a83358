/* Minimal protocol handlers that hold each port until its full protocol server is in place:
 * they greet, answer capabilities, NOOP, STARTTLS/STLS and QUIT/LOGOUT, and refuse every other
 * command with a TEMPORARY error, so a sender retries later and nothing is lost or bounced. */
#ifndef PROTO_GREETER_H
#define PROTO_GREETER_H

#include "guard/guard.h"
#include "net/net.h"

/* hostname is borrowed and must outlive the server. */
void greeter_set_hostname(const char *hostname);
/* Banned clients are refused at connect (guard borrowed; NULL = none). */
void greeter_set_guard(struct guard *guard);
const struct net_proto *greeter_proto(enum net_service svc);

#endif
