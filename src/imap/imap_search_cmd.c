/* SEARCH, SORT and THREAD commands (RFC 3501 6.4.4, RFC 4731 ESEARCH, RFC 5182 SEARCHRES,
 * RFC 5256). */
#include "imap/imap_session.h"

void
imap_cmd_search(struct imap_session *s)
{
	imap_tagged(s, "NO", "[UNAVAILABLE] SEARCH is not available yet");
}

void
imap_cmd_sort(struct imap_session *s, bool thread)
{
	(void)thread;
	imap_tagged(s, "NO", "[UNAVAILABLE] SORT is not available yet");
}
