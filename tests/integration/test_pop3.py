"""POP3 (RFC 1939, CAPA/PIPELINING RFC 2449, AUTH RFC 5034, STLS RFC 2595) against the real
server: mail is delivered through SMTP first, then read with poplib, raw sockets and fetchmail."""
import base64
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import mailbox_messages

PW = "pop secret 42"
ALICE = "alice@example.test"


@pytest.fixture
def pop(make_server):
    srv = make_server({"auth.failure_delay": "50ms"}, start=False)
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.cli("user", "add", "bob@example.test", "--password-stdin", input=PW + "\n")
    srv.start()
    return srv


def ctx(srv):
    c = ssl.create_default_context(cafile=srv.cert)
    c.check_hostname = False  # we connect to 127.0.0.1; the chain is still verified
    return c


def deliver(srv, body, subject="hello", to=ALICE):
    """Delivers one message through the MX port; body lines end in CRLF."""
    m = (f"From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=15) as c:
        c.sendmail("sender@example.org", [to], m)


def login(srv, user=ALICE, pw=PW, attempts=150):
    """A logged-in poplib client; waits while an earlier session still holds the mailbox."""
    for _ in range(attempts):
        c = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=15)
        c.user(user)
        try:
            c.pass_(pw)
            return c
        except poplib.error_proto as e:
            c.close()
            if b"[IN-USE]" not in e.args[0]:
                raise
            time.sleep(0.1)
    raise AssertionError("mailbox stayed in use")


class Raw:
    """A raw POP3 connection for what poplib hides (stuffing, pipelining, bad input)."""

    def __init__(self, srv, port="pop3", tls=None, src="127.0.0.1", rcvbuf=None):
        self.s = socket.socket()
        self.s.settimeout(15)
        if rcvbuf is not None:  # before connect, so the window stays small
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.bind((src, 0))
        self.s.connect(("127.0.0.1", srv.ports[port]))
        if tls is not None:
            self.s = tls.wrap_socket(self.s, server_hostname="mail.example.test")
        self.buf = b""
        self.greeting = self.line()

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

    def multi(self):
        """The lines of a multi-line answer as sent (still stuffed), without the final dot."""
        out = []
        while True:
            line = self.line()
            if line == b".":
                return out
            out.append(line)

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.line()

    def rest(self):
        """Everything until the server closes."""
        self.s.settimeout(15)
        while True:
            chunk = self.s.recv(65536)
            if not chunk:
                return self.buf
            self.buf += chunk

    def close(self):
        self.s.close()


def test_greeting_and_capabilities(pop):
    c = poplib.POP3("127.0.0.1", pop.ports["pop3"], timeout=15)
    assert c.getwelcome().startswith(b"+OK ")
    caps = c.capa()
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
        assert cap in caps, caps
    assert caps["SASL"] == ["PLAIN", "LOGIN"]
    c.user(ALICE)
    c.pass_(PW)
    caps = c.capa()
    assert "USER" not in caps and "STLS" not in caps and "SASL" not in caps
    assert "UIDL" in caps and "TOP" in caps
    c.quit()


def test_stat_list_retr_top_uidl(pop):
    deliver(pop, "First line.\r\nSecond line.\r\n", subject="one")
    deliver(pop, "Body two.\r\n", subject="two")
    stored = [m for _, m in mailbox_messages(pop, ALICE)]
    c = login(pop)
    count, size = c.stat()
    assert count == 2 and size == sum(len(m) for m in stored)
    resp, lines, _ = c.list()
    assert lines == [f"{i + 1} {len(m)}".encode() for i, m in enumerate(stored)]
    assert c.list(2).split()[1:] == [b"2", str(len(stored[1])).encode()]
    for i, m in enumerate(stored):
        resp, lines, octets = c.retr(i + 1)
        assert resp.startswith(b"+OK")
        assert b"\r\n".join(lines) + b"\r\n" == m
    resp, lines, _ = c.top(1, 1)
    blank = lines.index(b"")
    assert lines[blank + 1:] == [b"First line."]
    assert b"Subject: one" in lines[:blank]
    resp, lines, _ = c.top(1, 0)
    assert lines[-1] == b"" and b"First line." not in lines
    resp, uids, _ = c.uidl()
    assert len(uids) == 2
    ids = [u.split()[1] for u in uids]
    assert all(i.count(b".") == 1 for i in ids) and ids[0] != ids[1]
    assert c.uidl(2).split()[2] == ids[1]
    with pytest.raises(poplib.error_proto, match="No such message"):
        c.retr(3)
    with pytest.raises(poplib.error_proto, match="No such message"):
        c.list(0)
    c.quit()


def test_dot_stuffing_on_the_wire(pop):
    deliver(pop, ".leading dot\r\n..two dots\r\nplain\r\n.\r\n")
    stored = mailbox_messages(pop, ALICE)[0][1]
    r = Raw(pop)
    assert r.cmd(b"USER " + ALICE.encode()).startswith(b"+OK")
    assert r.cmd(b"PASS " + PW.encode()).startswith(b"+OK")
    assert r.cmd(b"RETR 1") == f"+OK {len(stored)} octets".encode()
    lines = r.multi()
    assert b"..leading dot" in lines and b"...two dots" in lines and b"plain" in lines
    assert lines[-1] == b".."  # the body's lone "." line, stuffed
    # Unstuffed, the answer is exactly the stored message.
    unstuffed = [ln[1:] if ln.startswith(b".") else ln for ln in lines]
    assert b"\r\n".join(unstuffed) + b"\r\n" == stored
    assert r.cmd(b"QUIT").startswith(b"+OK")
    r.close()


def test_auth_plain_login_and_cancel(pop):
    plain = base64.b64encode(b"\0" + ALICE.encode() + b"\0" + PW.encode())
    r = Raw(pop)
    assert r.cmd(b"AUTH PLAIN " + plain).startswith(b"+OK")
    assert r.cmd(b"STAT").startswith(b"+OK 0 0")
    r.cmd(b"QUIT")
    r.close()
    r = Raw(pop)
    assert r.cmd(b"AUTH PLAIN") == b"+ "
    assert r.cmd(plain).startswith(b"+OK")
    r.cmd(b"QUIT")
    r.close()
    r = Raw(pop)
    assert r.cmd(b"AUTH LOGIN") == b"+ VXNlcm5hbWU6"
    assert r.cmd(base64.b64encode(ALICE.encode())) == b"+ UGFzc3dvcmQ6"
    assert r.cmd(base64.b64encode(PW.encode())).startswith(b"+OK")
    r.cmd(b"QUIT")
    r.close()
    r = Raw(pop)
    assert r.cmd(b"AUTH PLAIN") == b"+ "
    assert r.cmd(b"*").startswith(b"-ERR")
    assert r.cmd(b"AUTH CRAM-MD5").startswith(b"-ERR")
    bad = base64.b64encode(b"\0" + ALICE.encode() + b"\0wrong")
    assert r.cmd(b"AUTH PLAIN " + bad).startswith(b"-ERR [AUTH]")
    assert r.cmd(b"STAT") == b"-ERR Log in first"
    r.close()


def test_stls(pop):
    c = poplib.POP3("127.0.0.1", pop.ports["pop3"], timeout=15)
    c.stls(context=ctx(pop))
    assert "STLS" not in c.capa()
    c.user(ALICE)
    c.pass_(PW)
    assert c.stat() == (0, 0)
    c.quit()
    assert "event=tls service=pop3" in pop.read_log()


def test_pop3s(pop):
    deliver(pop, "over TLS\r\n")
    c = poplib.POP3_SSL("127.0.0.1", pop.ports["pop3s"], context=ctx(pop), timeout=15)
    assert "STLS" not in c.capa() and "USER" in c.capa()
    c.user(ALICE)
    c.pass_(PW)
    assert c.stat()[0] == 1
    assert b"over TLS" in c.retr(1)[1]
    c.quit()


def test_plaintext_login_refused_without_tls(make_server):
    srv = make_server({"smtp.plaintext_auth_loopback": "no"}, start=False)
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.start()
    c = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=15)
    caps = c.capa()
    assert "USER" not in caps and "SASL" not in caps and "STLS" in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        c.user(ALICE)
    r = Raw(srv)
    assert r.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0a\0b")).startswith(b"-ERR [AUTH]")
    r.close()
    c.stls(context=ctx(srv))
    assert "USER" in c.capa()
    c.user(ALICE)
    c.pass_(PW)
    c.quit()


def test_dele_and_quit_expunge_durably(pop):
    for i in range(3):
        deliver(pop, f"message {i}\r\n", subject=f"m{i}")
    c = login(pop)
    before = [u.split()[1] for u in c.uidl()[1]]
    assert c.dele(2).startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match="deleted"):
        c.retr(2)
    with pytest.raises(poplib.error_proto, match="deleted"):
        c.dele(2)
    assert c.stat()[0] == 2
    assert [ln.split()[0] for ln in c.list()[1]] == [b"1", b"3"]
    assert c.quit().startswith(b"+OK")
    # The "+OK" came after the commit: the store already agrees.
    msgs = mailbox_messages(pop, ALICE)
    assert len(msgs) == 2 and all(b"Subject: m1" not in m for _, m in msgs)
    c = login(pop)
    assert c.stat()[0] == 2
    assert [u.split()[1] for u in c.uidl()[1]] == [before[0], before[2]]
    c.quit()
    assert "event=update service=pop3" in pop.read_log() and "deleted=1" in pop.read_log()
    assert pop.cli("store", "check").returncode == 0


def test_failed_expunge_deletes_nothing(pop):
    """QUIT's deletions are one transaction: when one of them fails, none is done and the
    client hears -ERR [SYS/TEMP]."""
    import sqlite3
    for i in range(3):
        deliver(pop, f"message {i}\r\n")
    db = os.path.join(pop.data_dir, "postamt.db")
    con = sqlite3.connect(db, timeout=30)
    with con:  # a fault for the third message only, after the first two were deleted
        con.execute("CREATE TRIGGER fail_expunge BEFORE DELETE ON messages WHEN OLD.uid = 3 "
                    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    c = login(pop)
    for n in (1, 2, 3):
        c.dele(n)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        c.quit()
    c.close()
    assert len(mailbox_messages(pop, ALICE)) == 3
    assert "event=update service=pop3" in pop.read_log() and "result=failed" in pop.read_log()
    with con:
        con.execute("DROP TRIGGER fail_expunge")
    con.close()
    c = login(pop)
    for n in (1, 2, 3):
        c.dele(n)
    assert c.quit().startswith(b"+OK Bye, 3 messages deleted")
    assert mailbox_messages(pop, ALICE) == []


def test_dropped_connection_deletes_nothing(pop):
    for i in range(2):
        deliver(pop, f"message {i}\r\n")
    c = login(pop)
    c.dele(1)
    c.dele(2)
    c.close()  # no QUIT
    c = login(pop)
    assert c.stat()[0] == 2
    c.quit()
    assert len(mailbox_messages(pop, ALICE)) == 2


def test_rset_unmarks(pop):
    deliver(pop, "keep me\r\n")
    c = login(pop)
    c.dele(1)
    assert c.stat()[0] == 0
    assert c.rset().startswith(b"+OK")
    assert c.stat()[0] == 1
    assert c.quit().startswith(b"+OK")
    assert len(mailbox_messages(pop, ALICE)) == 1


def test_uidl_stable_across_sessions(pop):
    deliver(pop, "a\r\n")
    deliver(pop, "b\r\n")
    c = login(pop)
    first = c.uidl()[1]
    c.dele(1)
    c.quit()
    deliver(pop, "c\r\n")
    # Flags as IMAP would set them (\\Seen, \\Flagged, a keyword, a new MODSEQ) change nothing.
    import sqlite3
    con = sqlite3.connect(os.path.join(pop.data_dir, "postamt.db"), timeout=30)
    with con:
        con.execute("UPDATE messages SET flags = flags | 5, keywords = 'Junk', "
                    "modseq = modseq + 1")
    con.close()
    c = login(pop)
    second = [u.split()[1] for u in c.uidl()[1]]
    c.quit()
    assert second[0] == first[1].split()[1]
    assert len(second) == 2 and second[1] not in [u.split()[1] for u in first]


def test_mailbox_in_use(pop):
    a = login(pop)
    b = poplib.POP3("127.0.0.1", pop.ports["pop3"], timeout=15)
    b.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        b.pass_(PW)
    b.close()
    a.quit()
    login(pop).quit()


def test_wrong_password_then_ban(make_server):
    srv = make_server({"auth.failure_delay": "20ms", "guard.max_failures": "3"}, start=False)
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.start()
    for i in range(3):
        c = poplib.POP3("127.0.0.1", srv.ports["pop3"], timeout=15)
        c.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
            c.pass_(f"guess {i}")
        c.close()
    with socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=15) as s:
        greeting = s.recv(512)
    assert greeting.startswith(b"-ERR [SYS/TEMP] Too many failed logins"), greeting
    # Other services and other addresses are not affected.
    with socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=15) as s:
        assert s.recv(512).startswith(b"* OK")
    r = Raw(srv, src="127.0.0.2")
    assert r.cmd(b"USER " + ALICE.encode()).startswith(b"+OK")
    assert r.cmd(b"PASS " + PW.encode()).startswith(b"+OK")
    r.close()
    log = srv.read_log()
    assert "event=ban service=pop3 rip=127.0.0.1" in log
    assert PW not in log and "guess 1" not in log  # passwords are never logged


def test_line_limit(pop):
    r = Raw(pop)
    assert r.cmd(b"NOOP " + b"x" * 1000).startswith(b"-ERR Syntax")  # long, but within limit
    r.send(b"NOOP " + b"x" * 1100 + b"\r\n")
    assert r.rest().startswith(b"-ERR Line too long")
    r.close()


def test_bad_input_and_too_many_errors(pop):
    r = Raw(pop)
    assert r.cmd(b"NO\0OP").startswith(b"-ERR NUL")
    assert r.cmd(b"NO\rOP").startswith(b"-ERR CR")
    assert r.cmd(b"noop") == b"+OK"  # keywords are case-insensitive
    r.send(b"NOOP\n")  # a lone LF ends a line too
    assert r.line() == b"+OK"
    for _ in range(7):
        assert r.cmd(b"XYZZY") == b"-ERR Unknown command"
    assert r.cmd(b"XYZZY") == b"-ERR Unknown command"
    assert r.rest().startswith(b"-ERR Too many bad commands")
    r.close()


def test_pipelining(pop):
    deliver(pop, "pipelined\r\n")
    deliver(pop, "second\r\n")
    r = Raw(pop)
    r.send(b"USER " + ALICE.encode() + b"\r\nPASS " + PW.encode() +
           b"\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nDELE 2\r\nNOOP\r\nQUIT\r\n")
    assert r.line().startswith(b"+OK")           # USER
    assert r.line().startswith(b"+OK Logged in")  # PASS
    assert r.line().startswith(b"+OK 2 ")         # STAT
    assert r.line().startswith(b"+OK") and len(r.multi()) == 2  # LIST
    assert r.line().startswith(b"+OK") and len(r.multi()) == 2  # UIDL
    assert r.line().startswith(b"+OK") and b"pipelined" in r.multi()  # RETR
    assert r.line().startswith(b"+OK") and b"second" not in r.multi()  # TOP
    assert r.line().startswith(b"+OK")           # DELE
    assert r.line() == b"+OK"                    # NOOP
    assert r.line().startswith(b"+OK Bye")       # QUIT
    r.close()
    assert len(mailbox_messages(pop, ALICE)) == 1


def test_big_message_with_small_output_buffer(make_server):
    """A message larger than the output cap streams through back-pressure, to a slow reader."""
    srv = make_server({"limits.max_output_buffer": "64K"}, start=False)
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.start()
    line = "." + "0123456789" * 7 + "\r\n"
    deliver(srv, line * 30000)  # about 2 MB, every line stuffed
    stored = mailbox_messages(srv, ALICE)[0][1]
    for port, tls in (("pop3", None), ("pop3s", ctx(srv))):
        r = Raw(srv, port, tls)
        r.cmd(b"USER " + ALICE.encode())
        assert r.cmd(b"PASS " + PW.encode()).startswith(b"+OK")
        r.send(b"RETR 1\r\n")
        time.sleep(0.5)  # let the server run into the cap if it ignored it
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            chunk = r.s.recv(4096)
            assert chunk, "connection dropped"
            data += chunk
            time.sleep(0.0005)
        body = (r.buf + data).split(b"\r\n", 1)[1][:-3]
        assert body.count(b"\r\n..0123") == 30000
        assert body.replace(b"\r\n..", b"\r\n.") == stored
        assert r.cmd(b"QUIT").startswith(b"+OK")
        r.close()
    assert "output-overflow" not in srv.read_log()


def test_listings_are_paced_for_a_stalled_reader(make_server):
    """Pipelined UIDL/LIST answers larger than the output cap wait for the client to read."""
    srv = make_server({"limits.max_output_buffer": "16K"}, start=False)
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.start()
    m = b"From: a@example.org\r\nSubject: s\r\n\r\nx\r\n"
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
        for _ in range(300):
            c.sendmail("a@example.org", [ALICE], m)
    r = Raw(srv, rcvbuf=4096)
    r.cmd(b"USER " + ALICE.encode())
    assert r.cmd(b"PASS " + PW.encode()).startswith(b"+OK Logged in, 300 messages")
    r.send(b"UIDL\r\nLIST\r\n" * 40 + b"QUIT\r\n")  # about 600 KB of answers
    time.sleep(1.5)  # stalled
    for _ in range(40):
        assert r.line().startswith(b"+OK")
        uids = r.multi()
        assert len(uids) == 300 and uids[299].startswith(b"300 ")
        assert r.line().startswith(b"+OK 300 messages")
        assert len(r.multi()) == 300
    assert r.line().startswith(b"+OK Bye")
    r.close()
    assert "output-overflow" not in srv.read_log()


def test_big_message_over_stls_to_a_stalled_reader(make_server):
    srv = make_server({"limits.max_output_buffer": "64K"}, start=False)
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.start()
    deliver(srv, ("x" * 70 + "\r\n") * 40000)
    r = Raw(srv)
    assert r.cmd(b"STLS").startswith(b"+OK")
    r.s = ctx(srv).wrap_socket(r.s, server_hostname="mail.example.test")
    r.send(f"USER {ALICE}\r\nPASS {PW}\r\nRETR 1\r\n".encode())
    time.sleep(2)  # the client stalls; the server must wait, not overflow
    data = b""
    while not data.endswith(b"\r\n.\r\n"):
        chunk = r.s.recv(65536)
        assert chunk, "connection dropped"
        data += chunk
    r.close()
    assert "output-overflow" not in srv.read_log()


def test_shutdown_says_goodbye_and_keeps_marked_messages(pop):
    deliver(pop, "stays\r\n")
    c = login(pop)
    c.dele(1)
    pop.proc.send_signal(15)
    assert c.sock.recv(512).startswith(b"-ERR [SYS/TEMP]")
    assert pop.stop() == 0
    assert len(mailbox_messages(pop, ALICE)) == 1


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")
@pytest.mark.parametrize("port,tls", [("pop3s", "ssl"), ("pop3", "sslproto tls1.2+")])
def test_fetchmail(pop, tmpdir_world, port, tls):
    """fetchmail over implicit TLS and over STLS, certificate checked against the server's own
    (by the name in it: we connect to 127.0.0.1, never through DNS), into a local MDA."""
    deliver(pop, "Fetched by fetchmail.\r\n.dot line\r\n", subject="for fetchmail")
    deliver(pop, "Second one.\r\n", subject="also for fetchmail")
    home = os.path.join(tmpdir_world, "fm")
    os.mkdir(home)
    out = os.path.join(home, "mbox")
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(f'poll 127.0.0.1 proto pop3 port {pop.ports[port]} no dns\n'
                f'  user "{ALICE}" password "{PW}"\n'
                f'  {tls} sslcertfile "{pop.cert}" sslcertck sslcommonname "mail.example.test"\n'
                f'  fetchall mda "cat >> {out}"\n')
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, FETCHMAILHOME=home)
    p = subprocess.run(["fetchmail", "--fetchmailrc", rc, "--nosyslog", "-v", "--idfile",
                        os.path.join(home, "ids")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    if port == "pop3":
        assert "upgrade to TLS succeeded" in p.stdout, p.stdout
    with open(out, "rb") as f:
        got = f.read()
    assert b"Subject: for fetchmail" in got and b"Subject: also for fetchmail" in got
    assert b"\n.dot line" in got  # unstuffed again
    # fetchmail deletes what it fetched (no "keep"): QUIT expunged both.
    assert mailbox_messages(pop, ALICE) == []
