"""SMTP: MX and submission through the real server, with smtplib and raw sockets."""
import base64
import os
import random
import signal
import smtplib
import socket
import ssl
import threading
import time

import pytest

from conftest import blob_rows, mailbox_messages, queue_count

PW = "correct horse battery"


@pytest.fixture
def mx(make_server):
    srv = make_server({"auth.failure_delay": "200ms"}, start=False)
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input=PW + "\n")
    srv.cli("user", "add", "bob@example.test", "--password-stdin", input=PW + "\n")
    srv.start()
    return srv


def msg(subject="hello", body="Hi there.\r\n", extra=""):
    return (f"From: sender@example.org\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"{extra}\r\n{body}").encode()


def ctx(srv):
    c = ssl.create_default_context(cafile=srv.cert)
    c.check_hostname = False  # we connect to 127.0.0.1; the chain is still verified
    return c


class Raw:
    """A line-oriented raw SMTP client for the cases smtplib cannot produce."""

    def __init__(self, port, tls_ctx=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=15)
        if tls_ctx is not None:
            self.s = tls_ctx.wrap_socket(self.s, server_hostname="mail.example.test")
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return lines[-1][:3].decode(), b"\n".join(lines)

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def close(self):
        self.s.close()


def test_mx_delivers_to_a_local_user(mx):
    with smtplib.SMTP("127.0.0.1", mx.ports["smtp"], timeout=15) as c:
        c.ehlo("client.example.org")
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "chunking", "dsn", "starttls"):
            assert c.has_extn(ext), ext
        assert not c.has_extn("auth"), "AUTH must not be offered on the MX port"
        refused = c.sendmail("sender@example.org", ["alice@example.test"], msg("first"))
        assert refused == {}
    msgs = mailbox_messages(mx, "alice@example.test")
    assert len(msgs) == 1
    uid, data = msgs[0]
    assert uid == 1
    assert data.startswith(b"Return-Path: <sender@example.org>\r\nReceived: from client.example.org")
    assert b"Subject: first\r\n" in data and data.endswith(b"\r\nHi there.\r\n")
    assert b"with ESMTP id" in data
    assert mailbox_messages(mx, "bob@example.test") == []


def test_one_blob_for_many_local_recipients(mx):
    mx.cli("alias", "add", "team@example.test", "alice@example.test")
    mx.cli("alias", "add", "team@example.test", "bob@example.test")
    before = blob_rows(mx)
    with smtplib.SMTP("127.0.0.1", mx.ports["smtp"], timeout=15) as c:
        c.sendmail("sender@example.org", ["alice@example.test", "bob@example.test",
                                          "team@example.test"], msg("shared"))
    a = mailbox_messages(mx, "alice@example.test")
    b = mailbox_messages(mx, "bob@example.test")
    assert len(a) == 1 and len(b) == 1, "one copy per mailbox, whatever the aliases"
    assert a[0][1] == b[0][1]
    assert blob_rows(mx) == before + 1


def test_recipient_kinds(mx):
    mx.cli("domain", "add", "other.test")
    mx.cli("alias", "add", "@other.test", "bob@example.test")
    with smtplib.SMTP("127.0.0.1", mx.ports["smtp"], timeout=15) as c:
        c.ehlo("client.example.org")
        c.mail("sender@example.org")
        assert c.rcpt("alice+news@example.test")[0] == 250       # subaddress
        assert c.rcpt("ALICE@Example.TEST")[0] == 250            # case
        assert c.rcpt("anything@other.test")[0] == 250           # catch-all
        assert c.rcpt("postmaster@example.test")[0] == 250       # RFC 5321 4.5.1
        assert c.rcpt("abuse@other.test")[0] == 250              # RFC 2142
        assert c.rcpt("postmaster")[0] == 250                    # without domain
        code, text = c.rcpt("nobody@example.test")
        assert code == 550 and b"5.1.1" in text
        code, text = c.rcpt("someone@remote.example")
        assert code == 554 and b"5.7.1" in text                  # no relaying
        assert c.data(msg("kinds"))[0] == 250
    # alice: subaddress, case, postmaster x2 (first account of the domain) -> one copy
    assert len(mailbox_messages(mx, "alice@example.test")) == 1
    assert len(mailbox_messages(mx, "bob@example.test")) == 1
    assert queue_count(mx) == 0


def test_submission_requires_auth_and_tls(mx):
    with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=15) as c:
        c.ehlo("laptop")
        code, text = c.mail("alice@example.test")
        assert code == 530 and b"5.7.0" in text
        c.rset()
        c.starttls(context=ctx(mx))
        c.ehlo("laptop")
        assert "PLAIN" in c.esmtp_features["auth"] and "LOGIN" in c.esmtp_features["auth"]
        c.login("alice@example.test", PW)
        assert c.sendmail("alice@example.test", ["bob@example.test"], msg("submitted")) == {}
    data = mailbox_messages(mx, "bob@example.test")[0][1]
    assert b"with ESMTPSA" in data and b"version=TLSv1." in data
    assert b"\r\nMessage-ID: <" in data and b"\r\nDate: " in data   # added when missing


def test_submission_implicit_tls_and_auth_login(mx):
    with smtplib.SMTP_SSL("127.0.0.1", mx.ports["submissions"], context=ctx(mx),
                          timeout=15) as c:
        c.ehlo("phone")
        c.user, c.password = "bob@example.test", PW
        code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
        assert code == 235
        c.sendmail("bob@example.test", ["alice@example.test"],
                   msg("over 465", extra="Message-ID: <keep@example.test>\r\n"))
    data = mailbox_messages(mx, "alice@example.test")[0][1]
    assert data.count(b"Message-ID:") == 1 and b"<keep@example.test>" in data


def test_auth_failures_are_uniform(mx):
    def attempt(user, pw):
        with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=15) as c:
            c.starttls(context=ctx(mx))
            start = time.time()
            try:
                c.login(user, pw)
                return None, 0
            except smtplib.SMTPAuthenticationError as e:
                return (e.smtp_code, e.smtp_error), time.time() - start

    wrong, t1 = attempt("alice@example.test", "wrong")
    unknown, t2 = attempt("nobody@example.test", "wrong")
    assert wrong == unknown
    assert wrong[0] == 535 and b"5.7.8" in wrong[1]
    assert t1 >= 0.2 and t2 >= 0.2     # the configured failure delay
    assert "event=auth-failed service=submission" in mx.read_log()
    assert "wrong" not in mx.read_log().replace("wrong-", "")


def test_auth_refused_without_tls_when_configured(make_server):
    srv = make_server({"smtp.plaintext_auth_loopback": "no"})
    r = Raw(srv.ports["submission"])
    code, text = r.cmd("EHLO x")
    assert b"AUTH" not in text
    code, text = r.cmd("AUTH PLAIN " + base64.b64encode(b"\0a@example.test\0pw").decode())
    assert code == "538", text
    r.close()


def test_submission_sender_must_be_owned(mx):
    mx.cli("alias", "add", "sales@example.test", "alice@example.test")
    with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx(mx))
        c.login("alice@example.test", PW)
        code, text = c.mail("bob@example.test")
        assert code == 553 and b"5.7.1" in text
        c.rset()
        assert c.mail("sales@example.test")[0] == 250            # her alias
        c.rset()
        assert c.mail("alice+tag@example.test")[0] == 250        # her subaddress
        c.rset()
        assert c.mail("<>")[0] == 250
        c.rset()
        assert c.mail("ceo@elsewhere.example")[0] == 553


def test_submission_to_remote_is_queued(mx):
    with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx(mx))
        c.login("alice@example.test", PW)
        refused = c.sendmail("alice@example.test", ["friend@remote.example", "bob@example.test"],
                             msg("mixed"))
        assert refused == {}
    assert queue_count(mx) == 1
    assert len(mailbox_messages(mx, "bob@example.test")) == 1


def test_smtputf8_and_8bit(mx):
    mx.cli("alias", "add", "jörg@example.test", "alice@example.test", check=False)
    body = "Grüße aus Köln — ünïcödé\r\n".encode()
    with smtplib.SMTP("127.0.0.1", mx.ports["smtp"], timeout=15) as c:
        c.ehlo("client")
        m = b"From: j\xc3\xb6rg@example.org\r\nSubject: 8bit\r\n\r\n" + body
        c.sendmail("jörg@example.org", ["alice@example.test"], m,
                   mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    data = mailbox_messages(mx, "alice@example.test")[0][1]
    assert data.endswith(body)
    assert b"with UTF8SMTP" in data


def test_bdat_chunks(mx):
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    assert r.cmd("MAIL FROM:<a@example.org>")[0] == "250"
    assert r.cmd("RCPT TO:<alice@example.test>")[0] == "250"
    part1 = b"Subject: chunky\r\n\r\nfirst part, "
    part2 = b"second part\r\n.leading dot stays\r\n"
    r.send(b"BDAT %d\r\n" % len(part1) + part1)
    assert r.reply()[0] == "250"
    r.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    code, text = r.reply()
    assert code == "250", text
    r.cmd("QUIT")
    data = mailbox_messages(mx, "alice@example.test")[0][1]
    assert data.endswith(part1 + part2)


def test_bdat_without_recipients_is_read_and_refused(mx):
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    payload = b"x" * 100
    r.send(b"BDAT 100 LAST\r\n" + payload)
    code, _ = r.reply()
    assert code == "503"
    assert r.cmd("NOOP")[0] == "250"   # the chunk was consumed, not parsed as commands


def test_pipelining(mx):
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    r.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\n"
           b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    codes = [r.reply()[0] for _ in range(5)]
    assert codes == ["250", "250", "550", "250", "354"]
    r.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert r.reply()[0] == "250"
    assert r.reply()[0] == "221"
    assert len(mailbox_messages(mx, "alice@example.test")) == 1
    assert len(mailbox_messages(mx, "bob@example.test")) == 1



def test_half_closed_client_gets_its_pipelined_replies(mx):
    # A client sends all of its transactions, half-closes and then reads: the commands that
    # arrived while the session waited for a lookup or a commit still run and are answered
    # before the connection goes.
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    r.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
           b"Subject: half 1\r\n\r\nbody\r\n.\r\n"
           b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
           b"Subject: half 2\r\n\r\nbody\r\n.\r\n")
    r.s.shutdown(socket.SHUT_WR)
    assert [r.reply()[0] for _ in range(8)] == ["250", "250", "354", "250"] * 2
    with pytest.raises(EOFError):
        r.line()
    assert len(mailbox_messages(mx, "alice@example.test")) == 1
    assert len(mailbox_messages(mx, "bob@example.test")) == 1

def data_exchange(srv, payload, rcpt="alice@example.test"):
    r = Raw(srv.ports["smtp"])
    r.cmd("EHLO raw")
    r.cmd("MAIL FROM:<a@example.org>")
    assert r.cmd(f"RCPT TO:<{rcpt}>")[0] == "250"
    assert r.cmd("DATA")[0] == "354"
    r.send(payload)
    res = r.reply()
    r.close()
    return res


def test_bare_lf_is_refused(mx):
    code, text = data_exchange(mx, b"Subject: x\r\n\r\nsmuggled\n.\nMAIL FROM:<e@vil>\r\n.\r\n")
    assert code == "554" and b"bare" in text
    assert mailbox_messages(mx, "alice@example.test") == []


def test_bare_cr_is_refused(mx):
    code, _ = data_exchange(mx, b"Subject: x\r\n\r\nsmuggled\r.\rstill data\r\n.\r\n")
    assert code == "554"
    assert mailbox_messages(mx, "alice@example.test") == []


def test_dot_stuffing(mx):
    code, _ = data_exchange(mx, b"Subject: dots\r\n\r\n..one dot\r\n...two\r\n.\r\n")
    assert code == "250"
    assert mailbox_messages(mx, "alice@example.test")[0][1].endswith(b"\r\n.one dot\r\n..two\r\n")


def test_long_text_line_is_refused(mx):
    ok = b"Subject: x\r\n\r\n" + b"a" * 998 + b"\r\n.\r\n"
    assert data_exchange(mx, ok)[0] == "250"
    bad = b"Subject: x\r\n\r\n" + b"a" * 999 + b"\r\n.\r\n"
    code, text = data_exchange(mx, bad)
    assert code == "554" and b"998" in text


def test_mail_loop_is_refused(mx):
    hops = b"".join(b"Received: from hop%d by x; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % i
                    for i in range(51))
    code, text = data_exchange(mx, hops + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
    assert code == "554" and b"5.4.6" in text
    assert mailbox_messages(mx, "alice@example.test") == []


def test_size_limits(make_server):
    srv = make_server({"smtp.max_message_size": "64K", "smtp.max_recipients": "3"}, start=False)
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    srv.start()
    r = Raw(srv.ports["smtp"])
    code, text = r.cmd("EHLO raw")
    assert b"SIZE 65536" in text
    code, text = r.cmd("MAIL FROM:<a@example.org> SIZE=100000")
    assert code == "552" and b"5.3.4" in text
    assert r.cmd("MAIL FROM:<a@example.org>")[0] == "250"
    for _ in range(3):
        assert r.cmd("RCPT TO:<alice@example.test>")[0] == "250"
    code, text = r.cmd("RCPT TO:<alice@example.test>")
    assert code == "452" and b"4.5.3" in text
    assert r.cmd("DATA")[0] == "354"
    r.send(b"Subject: big\r\n\r\n" + (b"y" * 900 + b"\r\n") * 100 + b".\r\n")
    code, text = r.reply()
    assert code == "552" and b"5.3.4" in text
    assert r.cmd("NOOP")[0] == "250"   # the session goes on
    r.close()
    assert mailbox_messages(srv, "alice@example.test") == []


def test_command_errors(mx):
    r = Raw(mx.ports["smtp"])
    assert r.cmd("MAIL FROM:<a@example.org>")[0] == "503"   # before EHLO
    r.cmd("EHLO raw")
    assert r.cmd("RCPT TO:<alice@example.test>")[0] == "503"
    assert r.cmd("DATA")[0] == "503"
    assert r.cmd("MAIL FROM:a@example.org")[0] == "501"
    assert r.cmd("VRFY alice")[0] == "252"                    # reveals nothing
    assert r.cmd("FROB")[0] == "500"
    r.send(b"NOOP \x00\r\n")
    assert r.reply()[0] == "500"
    r.send(b"NOOP " + b"x" * 3000 + b"\r\n")
    code, text = r.reply()
    assert code == "500" and b"5.5.2" in text
    assert r.cmd("NOOP")[0] == "250"
    r.close()


def test_too_many_bad_commands_disconnects(mx):
    r = Raw(mx.ports["smtp"])
    codes = []
    try:
        for _ in range(20):
            codes.append(r.cmd("BOGUS")[0])
    except (EOFError, ConnectionError):
        pass
    # ten errors answered, then 421 and the connection is closed
    assert codes[-1] == "421" and len(codes) == 11


def test_starttls_forgets_the_session(mx):
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    assert r.cmd("STARTTLS")[0] == "220"
    r.s = ctx(mx).wrap_socket(r.s, server_hostname="mail.example.test")
    assert r.cmd("MAIL FROM:<a@example.org>")[0] == "503"    # EHLO again first
    code, text = r.cmd("EHLO raw")
    assert b"STARTTLS" not in text
    r.close()


def test_graceful_shutdown_finishes_the_transaction(mx):
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    r.cmd("MAIL FROM:<a@example.org>")
    r.cmd("RCPT TO:<alice@example.test>")
    assert r.cmd("DATA")[0] == "354"
    r.send(b"Subject: during shutdown\r\n\r\nfirst half ")
    time.sleep(0.2)
    mx.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    r.send(b"second half\r\n.\r\n")
    assert r.reply()[0] == "250"
    code, _ = r.reply()
    assert code == "421"
    assert mx.stop() == 0
    assert len(mailbox_messages(mx, "alice@example.test")) == 1


def test_crash_never_loses_an_accepted_message(mx):
    """Clients send continuously; the server is SIGKILLed at random moments and restarted.
    Every message answered 250 must be in the mailbox exactly once."""
    accepted = []
    lock = threading.Lock()
    rounds = 4

    def client(n, stop):
        i = 0
        while not stop.is_set():
            token = f"tok-{n}-{i}-{random.random()}"
            i += 1
            try:
                with smtplib.SMTP("127.0.0.1", mx.ports["smtp"], timeout=10) as c:
                    for _ in range(5):
                        c.sendmail("load@example.org", ["alice@example.test"],
                                   msg(token, body=token + "\r\n"))
                        with lock:
                            accepted.append(token)
                        token = f"tok-{n}-{i}-{random.random()}"
                        i += 1
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)

    for _ in range(rounds):
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(n, stop)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.5, 1.5))
        mx.proc.send_signal(signal.SIGKILL)
        mx.proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        mx.stop()
        mx.start()
    mx.stop()
    assert len(accepted) > 10, "the load did not get going"
    bodies = [data for _, data in mailbox_messages(mx, "alice@example.test")]
    seen = {}
    for data in bodies:
        token = data.rsplit(b"\r\n\r\n", 1)[1].strip().decode()
        seen[token] = seen.get(token, 0) + 1
    missing = [t for t in accepted if t not in seen]
    assert not missing, f"{len(missing)} accepted messages lost: {missing[:5]}"
    dups = [t for t in accepted if seen.get(t, 0) > 1]
    assert not dups, f"messages stored twice: {dups[:5]}"
    assert mx.cli("store", "check").returncode == 0


def test_dsn_parameters_are_kept_for_the_queue(mx):
    import sqlite3
    mx.cli("alias", "add", "fwd@example.test", "far@remote.example")
    with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx(mx))
        c.login("alice@example.test", PW)
        c.ehlo("laptop")
        assert c.mail("alice@example.test", ["RET=HDRS", "ENVID=env+2Bid"])[0] == 250
        assert c.rcpt("friend@remote.example",
                      ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;friend@remote.example"])[0] == 250
        assert c.rcpt("fwd@example.test", ["NOTIFY=NEVER"])[0] == 250
        assert c.rcpt("x@remote.example", ["ORCPT="])[0] == 501
        assert c.data(msg("dsn"))[0] == 250
    con = sqlite3.connect(os.path.join(mx.data_dir, "postamt.db"))
    q = con.execute("SELECT id, envid, ret FROM queue").fetchall()
    assert len(q) == 1 and q[0][1:] == ("env+2Bid", "HDRS")
    rows = con.execute("SELECT rcpt, notify, orcpt FROM queue_rcpts WHERE queue_id = ? "
                       "ORDER BY id", (q[0][0],)).fetchall()
    con.close()
    assert rows == [("friend@remote.example", "SUCCESS,FAILURE", "rfc822;friend@remote.example"),
                    ("far@remote.example", "NEVER", "rfc822;fwd@example.test")]


def test_password_change_applies_at_once_despite_the_login_cache(mx):
    def login(pw):
        with smtplib.SMTP("127.0.0.1", mx.ports["submission"], timeout=15) as c:
            c.ehlo("x")
            c.user, c.password = "alice@example.test", pw
            try:
                return c.auth("PLAIN", c.auth_plain)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    assert login(PW) == 235
    assert login(PW) == 235          # answered from the cache
    mx.cli("user", "passwd", "alice@example.test", "--password-stdin", input="brand new\n")
    assert login(PW) == 535
    assert login("brand new") == 235


def test_no_recipients_after_bdat_and_no_huge_refused_chunk(mx):
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    r.cmd("MAIL FROM:<a@example.org>")
    r.cmd("RCPT TO:<alice@example.test>")
    r.send(b"BDAT 5\r\nhello")
    assert r.reply()[0] == "250"
    assert r.cmd("RCPT TO:<bob@example.test>")[0] == "503"     # RFC 3030: not mid-message
    r.send(b"BDAT 0 LAST\r\n")
    assert r.reply()[0] == "250"
    r.close()
    r = Raw(mx.ports["smtp"])
    r.cmd("EHLO raw")
    r.send(b"BDAT 99999999999 LAST\r\n")                       # refused and too big to skip
    assert r.reply()[0] == "503"
    assert r.reply()[0] == "421"
    r.close()


def test_auth_failures_count_toward_the_error_limit(make_server):
    srv = make_server({"auth.failure_delay": "1ms", "smtp.max_bad_commands": "3",
                       "guard.max_failures": "100"}, start=False)
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input=PW + "\n")
    srv.start()
    r = Raw(srv.ports["submission"])
    r.cmd("EHLO raw")
    codes = []
    try:
        for i in range(5):
            codes.append(r.cmd("AUTH PLAIN " + base64.b64encode(
                f"\0alice@example.test\0wrong{i}".encode()).decode())[0])
    except (EOFError, ConnectionError):
        pass
    assert codes[:2] == ["535", "535"] and codes[-1] == "421", codes


def test_sync_filesystem_mode_stores_durably(make_server):
    srv = make_server({"storage.sync_filesystem": "yes"}, start=False)
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input=PW + "\n")
    srv.start()
    for i in range(20):
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=15) as c:
            assert c.sendmail("a@example.org", ["alice@example.test"], msg(f"fs {i}")) == {}
    assert srv.stop() == 0
    assert srv.cli("store", "check").stdout.strip().endswith("0 problems found")
    srv.start()
    assert len(mailbox_messages(srv, "alice@example.test")) == 20


def test_removed_account_never_gets_a_250_from_the_recipient_cache(mx):
    """RCPT reuses the lookup of a local recipient for smtp.recipient_cache_ttl (5 s). An
    account removed with the CLI in that time is still accepted at RCPT, but its mailbox is
    gone at commit: the message gets a temporary error, never a 250 into nowhere. A reload
    empties the cache, and the removal counts at once."""
    def send(rcpts):
        c = smtplib.SMTP("127.0.0.1", mx.ports["smtp"], timeout=15)
        try:
            c.ehlo("client.example.org")
            c.mail("sender@example.org")
            codes = [c.rcpt(r)[0] for r in rcpts]
            data = c.data(msg("cached"))[0] if 250 in codes else None
            return codes, data
        finally:
            c.close()

    assert send(["alice@example.test", "bob@example.test"]) == ([250, 250], 250)
    mx.cli("user", "remove", "alice@example.test")
    codes, data = send(["alice@example.test", "bob@example.test"])
    if codes[0] == 250:  # answered from the cache (the test ran within the TTL)
        assert data == 451, data
    else:
        assert codes[0] == 550 and data == 250
    assert len(mailbox_messages(mx, "bob@example.test")) == 1 + (codes[0] == 550)

    mx.cli("user", "add", "carol@example.test", "--password-stdin", input=PW + "\n")
    assert send(["carol@example.test"]) == ([250], 250)
    mx.cli("user", "remove", "carol@example.test")
    mx.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "event=reload result=ok" not in mx.read_log():
        assert time.time() < deadline, mx.read_log()
        time.sleep(0.05)
    assert send(["carol@example.test"]) == ([550], None)


def test_recipient_cache_off(make_server):
    srv = make_server({"smtp.recipient_cache_ttl": "0"}, start=False)
    srv.cli("user", "add", "dave@example.test", "--password-stdin", input=PW + "\n")
    srv.start()
    for expect in (250, 550):
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=15) as c:
            c.ehlo("client.example.org")
            c.mail("sender@example.org")
            assert c.rcpt("dave@example.test")[0] == expect
            c.rset()
        srv.cli("user", "remove", "dave@example.test", check=False)
