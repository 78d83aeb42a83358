/* Hard ceilings of Postamt, each with its reason. Configurable limits (config.c) have their
 * defaults and bounds in the settings table; the numbers here are what no configuration can
 * exceed, checked before anything is allocated. */
#ifndef CORE_LIMITS_H
#define CORE_LIMITS_H

/* Longest configuration line: longer lines are a mistake, not a setting. */
#define CFG_MAX_LINE 4096
/* Longest e-mail address we store: RFC 5321 4.5.3.1.3 path of 256 octets incl. brackets. */
#define AUTH_MAX_ADDRESS 254
/* Passwords: long enough for any password manager; libxcrypt takes at most 511 bytes
 * (CRYPT_MAX_PASSPHRASE_SIZE 512 with the NUL), and a password it cannot hash must not be
 * accepted by `user add` only to fail every login. */
#define AUTH_MAX_PASSWORD 511
/* AUTH responses (base64) before decoding: Dovecot max_auth_size. */
#define AUTH_MAX_SASL_RESPONSE 8192
/* POP3 command lines, CRLF included: RFC 2449 4 allows 255 octets and 40-octet arguments;
 * 1024 leaves room for long user names and passwords (USER/PASS) and AUTH initial responses
 * while staying small, since it is buffered before login. */
#define POP3_MAX_LINE 1024
/* Bytes of one sanitised log field: enough to recognise, too little to flood the log. */
#define LOG_MAX_FIELD 160
/* Listening sockets in one listener setting. */
#define NET_MAX_LISTEN_ADDRS 16
/* I/O threads: more than cores buys nothing; 256 is a sanity ceiling for typos. */
#define NET_MAX_IO_THREADS 256
/* Jobs committed in one store transaction: bounds the latency one batch adds to the others. */
#define STORE_MAX_BATCH 512
/* Queue recipients one action by filter (`postamt queue hold --domain ...`) reads and changes
 * per transaction: a million-row action is many short transactions, not one that keeps the
 * server's writer waiting. */
#define STORE_MAX_QUEUE_CHUNK 10000
/* Blob sync threads (parallel fsync of message files before commit). */
#define STORE_MAX_SYNC_THREADS 64

#if AUTH_MAX_SASL_RESPONSE > 65536
#error "AUTH_MAX_SASL_RESPONSE must stay small: it is buffered pre-auth"
#endif
#if POP3_MAX_LINE < 255 || POP3_MAX_LINE > 8192
#error "POP3_MAX_LINE must allow RFC 2449's 255 octets and stay small: it is buffered pre-auth"
#endif
#if STORE_MAX_BATCH > 10000
#error "STORE_MAX_BATCH too large: one transaction would hold the write lock too long"
#endif
#if STORE_MAX_QUEUE_CHUNK > 100000
#error "STORE_MAX_QUEUE_CHUNK too large: one chunk would hold the write lock too long"
#endif

#endif
