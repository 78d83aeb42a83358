/* Placeholder protocol handlers (see greeter.h). Lines are read with a hard length limit and
 * input pipelined before STARTTLS is discarded by the network layer (RFC 3207 6). */
#include "proto/greeter.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define GREETER_MAX_LINE 2048
#define GREETER_MAX_BAD 10

enum greeter_kind { KIND_SMTP, KIND_IMAP, KIND_POP3 };

struct greeter {
	enum greeter_kind kind;
	unsigned int bad; /* count of refused or malformed commands */
};

static const char *greeter_hostname = "localhost";
static struct guard *greeter_guard;

void
greeter_set_guard(struct guard *guard)
{
	greeter_guard = guard;
}

void
greeter_set_hostname(const char *hostname)
{
	greeter_hostname = hostname;
}

static enum greeter_kind
kind_of(enum net_service svc)
{
	switch (svc) {
	case NET_SVC_IMAP:
	case NET_SVC_IMAPS:
		return KIND_IMAP;
	case NET_SVC_POP3:
	case NET_SVC_POP3S:
		return KIND_POP3;
	default:
		return KIND_SMTP;
	}
}

static void *
greeter_open(struct net_conn *conn)
{
	struct greeter *g = xcalloc(1, sizeof(*g));

	g->kind = kind_of(net_conn_service(conn));
	if (greeter_guard != NULL && g->kind != KIND_SMTP) {
		int64_t until = guard_banned_until(greeter_guard,
		                                   g->kind == KIND_IMAP ? GUARD_IMAP : GUARD_POP3,
		                                   net_conn_rip(conn));
		if (until > 0) {
			char when[64];
			struct tm tm;
			time_t t = (time_t)until;

			gmtime_r(&t, &tm);
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
			net_conn_printf(conn, "%s Too many failed logins from your address; try again "
			                      "after %s\r\n",
			                g->kind == KIND_IMAP ? "* BYE [UNAVAILABLE]" : "-ERR [SYS/TEMP]",
			                when);
			net_conn_close_because(conn, "banned");
			return g;
		}
	}
	switch (g->kind) {
	case KIND_SMTP:
		net_conn_printf(conn, "220 %s ESMTP Postamt\r\n", greeter_hostname);
		break;
	case KIND_IMAP:
		net_conn_printf(conn, "* OK [CAPABILITY IMAP4rev1%s] %s Postamt ready\r\n",
		                net_conn_is_tls(conn) ? "" : " STARTTLS", greeter_hostname);
		break;
	case KIND_POP3:
		net_conn_printf(conn, "+OK %s Postamt ready\r\n", greeter_hostname);
		break;
	}
	return g;
}

static void
smtp_line(struct greeter *g, struct net_conn *conn, char *line)
{
	char *arg = line + strcspn(line, " ");

	if (*arg != '\0')
		*arg++ = '\0';
	if (strcasecmp(line, "EHLO") == 0) {
		net_conn_printf(conn, "250-%s\r\n%s250 ENHANCEDSTATUSCODES\r\n", greeter_hostname,
		                net_conn_is_tls(conn) ? "" : "250-STARTTLS\r\n");
	} else if (strcasecmp(line, "HELO") == 0) {
		net_conn_printf(conn, "250 %s\r\n", greeter_hostname);
	} else if (strcasecmp(line, "NOOP") == 0 || strcasecmp(line, "RSET") == 0) {
		net_conn_printf(conn, "250 2.0.0 OK\r\n");
	} else if (strcasecmp(line, "QUIT") == 0) {
		net_conn_printf(conn, "221 2.0.0 Bye\r\n");
		net_conn_close(conn);
	} else if (strcasecmp(line, "STARTTLS") == 0 && !net_conn_is_tls(conn)) {
		net_conn_printf(conn, "220 2.0.0 Ready to start TLS\r\n");
		if (net_conn_starttls(conn) < 0)
			net_conn_close(conn);
	} else {
		g->bad++;
		net_conn_printf(conn, "451 4.3.2 Mail service not available yet, try again later\r\n");
	}
}

static void
imap_line(struct greeter *g, struct net_conn *conn, char *line)
{
	char *tag = line, *cmd = line + strcspn(line, " ");

	if (*cmd == '\0') {
		g->bad++;
		net_conn_printf(conn, "* BAD Missing command\r\n");
		return;
	}
	*cmd++ = '\0';
	cmd[strcspn(cmd, " ")] = '\0';
	if (strcasecmp(cmd, "CAPABILITY") == 0) {
		net_conn_printf(conn, "* CAPABILITY IMAP4rev1%s\r\n%s OK CAPABILITY completed\r\n",
		                net_conn_is_tls(conn) ? "" : " STARTTLS", tag);
	} else if (strcasecmp(cmd, "NOOP") == 0) {
		net_conn_printf(conn, "%s OK NOOP completed\r\n", tag);
	} else if (strcasecmp(cmd, "LOGOUT") == 0) {
		net_conn_printf(conn, "* BYE Logging out\r\n%s OK LOGOUT completed\r\n", tag);
		net_conn_close(conn);
	} else if (strcasecmp(cmd, "STARTTLS") == 0 && !net_conn_is_tls(conn)) {
		net_conn_printf(conn, "%s OK Begin TLS negotiation now\r\n", tag);
		if (net_conn_starttls(conn) < 0)
			net_conn_close(conn);
	} else {
		g->bad++;
		net_conn_printf(conn, "%s NO [UNAVAILABLE] Mailbox service not available yet\r\n", tag);
	}
}

static void
pop3_line(struct greeter *g, struct net_conn *conn, char *line)
{
	line[strcspn(line, " ")] = '\0';
	if (strcasecmp(line, "CAPA") == 0) {
		net_conn_printf(conn, "+OK Capability list follows\r\n%s.\r\n",
		                net_conn_is_tls(conn) ? "" : "STLS\r\n");
	} else if (strcasecmp(line, "NOOP") == 0) {
		net_conn_printf(conn, "+OK\r\n");
	} else if (strcasecmp(line, "QUIT") == 0) {
		net_conn_printf(conn, "+OK Bye\r\n");
		net_conn_close(conn);
	} else if (strcasecmp(line, "STLS") == 0 && !net_conn_is_tls(conn)) {
		net_conn_printf(conn, "+OK Begin TLS negotiation\r\n");
		if (net_conn_starttls(conn) < 0)
			net_conn_close(conn);
	} else {
		g->bad++;
		net_conn_printf(conn, "-ERR [SYS/TEMP] Mailbox service not available yet\r\n");
	}
}

static void
greeter_input(void *session, struct net_conn *conn)
{
	struct greeter *g = session;
	char line[GREETER_MAX_LINE + 1];

	while (!net_conn_is_closing(conn)) {
		ssize_t lf = net_conn_find_lf(conn, GREETER_MAX_LINE);
		const uint8_t *p;
		size_t len;

		if (lf < 0) {
			if (net_conn_input_len(conn) >= GREETER_MAX_LINE) {
				net_conn_printf(conn, g->kind == KIND_SMTP ? "500 5.5.2 Line too long\r\n"
				                      : g->kind == KIND_IMAP ? "* BYE Line too long\r\n"
				                                             : "-ERR Line too long\r\n");
				net_conn_close(conn);
			}
			return;
		}
		p = net_conn_peek(conn, (size_t)lf + 1, &len);
		len = (size_t)lf;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		memcpy(line, p, len);
		line[len] = '\0';
		net_conn_drain(conn, (size_t)lf + 1);
		if (strlen(line) != len) {
			g->bad++; /* NUL inside the line */
			continue;
		}
		switch (g->kind) {
		case KIND_SMTP: smtp_line(g, conn, line); break;
		case KIND_IMAP: imap_line(g, conn, line); break;
		case KIND_POP3: pop3_line(g, conn, line); break;
		}
		if (g->bad >= GREETER_MAX_BAD) {
			net_conn_close(conn);
			return;
		}
	}
}

static void
greeter_tls_done(void *session, struct net_conn *conn)
{
	/* RFC 3207 4.2: the client starts over with EHLO; nothing to send. */
}

static void
greeter_shutdown(void *session, struct net_conn *conn)
{
	struct greeter *g = session;

	switch (g->kind) {
	case KIND_SMTP: net_conn_printf(conn, "421 4.3.2 Server shutting down\r\n"); break;
	case KIND_IMAP: net_conn_printf(conn, "* BYE Server shutting down\r\n"); break;
	case KIND_POP3: net_conn_printf(conn, "-ERR [SYS/TEMP] Server shutting down\r\n"); break;
	}
	net_conn_close(conn);
}

static void
greeter_close(void *session, struct net_conn *conn)
{
	free(session);
}

static const struct net_proto greeter_smtp = {
	greeter_open, greeter_input, greeter_tls_done, greeter_shutdown, greeter_close,
	"421 4.7.0 Too many connections, try again later\r\n",
};
static const struct net_proto greeter_imap = {
	greeter_open, greeter_input, greeter_tls_done, greeter_shutdown, greeter_close,
	"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
};
static const struct net_proto greeter_pop3 = {
	greeter_open, greeter_input, greeter_tls_done, greeter_shutdown, greeter_close,
	"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
};

const struct net_proto *
greeter_proto(enum net_service svc)
{
	switch (kind_of(svc)) {
	case KIND_IMAP: return &greeter_imap;
	case KIND_POP3: return &greeter_pop3;
	default: return &greeter_smtp;
	}
}
