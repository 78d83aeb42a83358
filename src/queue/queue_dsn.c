/* Delivery status notifications (bounces): RFC 3464 multipart/report (RFC 6522) with a human
 * part, the message/delivery-status part and the original header section (text/rfc822-headers),
 * sent from the null reverse-path (RFC 5321 4.5.5) so that it is never bounced in turn.
 * Also the retry schedule and enhanced status codes (RFC 3463) used by the runner. */
#include "queue/queue.h"

#include "core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int
queue_parse_schedule(const char *text, uint64_t **ms_r, size_t *n_r)
{
	char *copy = xstrdup(text), *p = copy, *word;
	uint64_t *ms = NULL;
	size_t n = 0;

	for (;;) {
		size_t len;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		word = p;
		len = strcspn(word, " \t,");
		p = word + len;
		if (*p != '\0')
			*p++ = '\0';
		ms = xrealloc(ms, (n + 1) * sizeof(*ms));
		if (cfg_parse_duration(word, &ms[n]) < 0 || ms[n] == 0) {
			free(ms);
			free(copy);
			return -1;
		}
		n++;
	}
	free(copy);
	if (n == 0) {
		free(ms);
		return -1;
	}
	*ms_r = ms;
	*n_r = n;
	return 0;
}

uint64_t
queue_retry_delay(const uint64_t *schedule, size_t n, uint32_t attempts)
{
	return schedule[attempts < n ? attempts : n - 1];
}

void
queue_status_code(const char *reply, char dst[16])
{
	const char *p = reply;
	size_t len;

	/* "550 5.1.1 text": the class digit of the enhanced code matches the reply's. */
	if (p[0] >= '2' && p[0] <= '5' && p[1] != '\0' && p[2] != '\0' && p[3] == ' ') {
		const char *e = p + 4;

		len = strspn(e, "0123456789.");
		if (len >= 5 && len < 16 && e[0] == p[0] && e[1] == '.') {
			memcpy(dst, e, len);
			dst[len] = '\0';
			return;
		}
	}
	(void)snprintf(dst, 16, "%c.0.0", reply[0] == '5' ? '5' : '4');
}

void
queue_dsn_build(struct buf *out, const char *hostname, const char *sender, const char *envid,
                int64_t arrival, int64_t now, const struct queue_dsn_rcpt *rcpts, size_t nrcpts,
                const uint8_t *headers, size_t headers_len)
{
	char date[RFC5322_DATE_SIZE], arrived[RFC5322_DATE_SIZE], until[RFC5322_DATE_SIZE];
	char boundary[48];
	bool any_failed = false;
	uint8_t rnd[12];

	for (size_t i = 0; i < nrcpts; i++)
		any_failed = any_failed || rcpts[i].retry_until == 0;

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0x5a, sizeof(rnd));
	(void)snprintf(boundary, sizeof(boundary),
	               "dsn=%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x/%lld", rnd[0],
	               rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], rnd[8], rnd[9],
	               rnd[10], rnd[11], (long long)now);
	rfc5322_date(date, now, true);
	rfc5322_date(arrived, arrival, true);
	/* The null reverse-path: the server adds the same field at final delivery. */
	(void)buf_printf(out, "Return-Path: <>\r\n");
	(void)buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", hostname);
	(void)buf_printf(out, "To: <%s>\r\n", sender);
	(void)buf_printf(out, "Subject: %s\r\n", any_failed ?
	                 "Undelivered Mail Returned to Sender" :
	                 "Delayed Mail (still being retried)");
	(void)buf_printf(out, "Date: %s\r\n", date);
	(void)buf_printf(out, "Message-ID: <%s@%s>\r\n", boundary + 4, hostname);
	(void)buf_printf(out, "Auto-Submitted: auto-replied\r\n"); /* RFC 3834 */
	(void)buf_printf(out, "MIME-Version: 1.0\r\n");
	(void)buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	                      "\tboundary=\"%s\"\r\n\r\n", boundary);
	(void)buf_printf(out, "This is a MIME-encapsulated message.\r\n\r\n");
	(void)buf_printf(out, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
	                 boundary);
	(void)buf_printf(out, "This is the mail system at host %s.\r\n\r\n", hostname);
	if (any_failed)
		(void)buf_printf(out, "Your message could not be delivered to one or more "
		                      "recipients.\r\n\r\n");
	else
		(void)buf_printf(out, "Your message has not been delivered yet; this is only a "
		                      "warning, there is no need to send it again.\r\n\r\n");
	for (size_t i = 0; i < nrcpts; i++) {
		if (rcpts[i].retry_until != 0) {
			rfc5322_date(until, rcpts[i].retry_until, true);
			(void)buf_printf(out, "<%s>: delayed: %s (retried until %s)\r\n",
			                 rcpts[i].address, rcpts[i].diagnostic, until);
		} else {
			(void)buf_printf(out, "<%s>: %s\r\n", rcpts[i].address,
			                 rcpts[i].diagnostic);
		}
	}
	(void)buf_printf(out, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n",
	                 boundary);
	(void)buf_printf(out, "Reporting-MTA: dns; %s\r\n", hostname);
	if (envid != NULL && envid[0] != '\0')
		(void)buf_printf(out, "Original-Envelope-Id: %s\r\n", envid);
	(void)buf_printf(out, "Arrival-Date: %s\r\n", arrived);
	for (size_t i = 0; i < nrcpts; i++) {
		(void)buf_printf(out, "\r\nFinal-Recipient: rfc822; %s\r\n", rcpts[i].address);
		if (rcpts[i].orcpt != NULL && rcpts[i].orcpt[0] != '\0')
			(void)buf_printf(out, "Original-Recipient: %s\r\n", rcpts[i].orcpt);
		(void)buf_printf(out, "Action: %s\r\nStatus: %s\r\n",
		                 rcpts[i].retry_until != 0 ? "delayed" : "failed", rcpts[i].status);
		(void)buf_printf(out, "Diagnostic-Code: smtp; %s\r\n", rcpts[i].diagnostic);
		(void)buf_printf(out, "Last-Attempt-Date: %s\r\n", date);
		if (rcpts[i].retry_until != 0) {
			rfc5322_date(until, rcpts[i].retry_until, true);
			(void)buf_printf(out, "Will-Retry-Until: %s\r\n", until);
		}
	}
	(void)buf_printf(out, "\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary);
	(void)buf_append(out, headers, headers_len);
	if (headers_len > 0 && headers[headers_len - 1] != '\n')
		(void)buf_append_str(out, "\r\n");
	(void)buf_printf(out, "\r\n--%s--\r\n", boundary);
}
