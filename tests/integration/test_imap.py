"""IMAP through the real server: Python's imaplib where it can say what we need, and a small raw
client (sockets, literals, response codes) for the rest. Mail arrives through SMTP as in real
life; every socket has a timeout, so a silent server fails a test instead of hanging it."""
import base64
import imaplib
import re
import smtplib
import socket
import ssl
import threading
import time
import zlib

import pytest

from conftest import db_count, mailbox_messages

ALICE = "alice@example.test"
BOB = "bob@example.test"
PW = "correct horse battery"
FAST = {"auth.failure_delay": "0s"}
TIMEOUT = 15


# ---- messages -------------------------------------------------------------------------------

def simple(subject="hello", body="Hi there.\r\n", sender="Carol Sender <carol@example.org>"):
    return (f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 02 Jan 2023 10:00:00 +0000\r\nMessage-ID: <{subject}@example.org>\r\n"
            f"\r\n{body}").encode()


GRUSS = "Grüße aus Köln, 100 €.\r\n".encode()
GRUSS_B64 = base64.encodebytes(GRUSS).replace(b"\n", b"\r\n")

ALTERNATIVE = (
    b"From: Dave <dave@example.org>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: alternative\r\n"
    b"Date: Tue, 03 Jan 2023 11:00:00 +0100\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=\"alt-b\"\r\n"
    b"\r\n"
    b"This is a preamble.\r\n"
    b"--alt-b\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"plain text\r\n"
    b"second line\r\n"
    b"--alt-b\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>html =C3=A4</p>\r\n"
    b"--alt-b--\r\n"
    b"epilogue\r\n")

INNER = (
    b"From: Erin <erin@example.org>\r\n"
    b"Subject: inner subject\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=\"in-b\"\r\n"
    b"\r\n"
    b"--in-b\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"inner plain\r\n"
    b"--in-b\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<b>inner</b>\r\n"
    b"--in-b--\r\n")

MIXED = (
    b"From: Frank <frank@example.org>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: mixed\r\n"
    b"Date: Wed, 04 Jan 2023 12:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"mix-b\"\r\n"
    b"\r\n"
    b"--mix-b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + GRUSS_B64 +
    b"--mix-b\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER +
    b"--mix-b--\r\n")


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def account(make_server):
    """A running server with alice and bob (LOGIN answers failures at once)."""
    def factory(extra=None, start=True):
        cfg = dict(FAST)
        cfg.update(extra or {})
        srv = make_server(cfg, start=False)
        srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
        srv.cli("user", "add", BOB, "--password-stdin", input=PW + "\n")
        if start:
            srv.start()
        return srv
    return factory


@pytest.fixture
def srv(account):
    return account()


@pytest.fixture
def connect(srv):
    """connect(login=True, port="imap") -> a raw client; all closed before the server stops."""
    clients = []

    def factory(login=True, port="imap", tls=None, user=ALICE):
        c = Imap(srv, port=port, tls=tls)
        clients.append(c)
        if login:
            r = c.cmd("LOGIN", q(user), q(PW))
            assert r.status == "OK", r
        return c
    yield factory
    for c in clients:
        c.close()


@pytest.fixture
def imap(srv):
    """imap() -> an imaplib client logged in as alice; logged out before the server stops."""
    clients = []

    def factory(user=ALICE):
        m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
        clients.append(m)
        m.login(user, PW)
        return m
    yield factory
    for m in clients:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def ctx(srv):
    c = ssl.create_default_context(cafile=srv.cert)
    c.check_hostname = False  # 127.0.0.1; the chain is still verified
    return c


def deliver(srv, message, rcpt=ALICE, sender="sender@example.org"):
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=TIMEOUT) as c:
        assert c.sendmail(sender, [rcpt], message) == {}


def q(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- response parsing ------------------------------------------------------------------------

def parse(b, i=0):
    """One IMAP value from b at i: list, bytes (quoted string or literal), str (atom), None
    (NIL). Atoms keep a [section] with its spaces and parentheses, and a <partial>."""
    while b[i:i + 1] == b" ":
        i += 1
    c = b[i:i + 1]
    if c == b"(":
        out, i = [], i + 1
        while True:
            while b[i:i + 1] == b" ":
                i += 1
            if b[i:i + 1] == b")":
                return out, i + 1
            if i >= len(b):
                raise ValueError(f"unterminated list: {b!r}")
            v, i = parse(b, i)
            out.append(v)
    if c == b'"':
        out, i = bytearray(), i + 1
        while b[i:i + 1] != b'"':
            if b[i:i + 1] == b"\\":
                i += 1
            out += b[i:i + 1]
            i += 1
        return bytes(out), i + 1
    if c == b"{" or b[i:i + 2] == b"~{":
        m = re.compile(rb"~?\{(\d+)\}\r\n").match(b, i)
        n = int(m.group(1))
        return b[m.end():m.end() + n], m.end() + n
    j = i
    while j < len(b) and b[j:j + 1] not in (b" ", b"(", b")"):
        if b[j:j + 1] == b"[":
            j = b.index(b"]", j)
        j += 1
    atom = b[i:j].decode("latin-1")
    return (None if atom.upper() == "NIL" else atom), j


def parse_all(b):
    out, i = [], 0
    while i < len(b):
        while b[i:i + 1] == b" ":
            i += 1
        if i >= len(b):
            break
        v, i = parse(b, i)
        out.append(v)
    return out


def fetch_dict(data):
    """b"(UID 1 FLAGS (\\Seen))" -> {"UID": "1", "FLAGS": ["\\Seen"]}"""
    items, _ = parse(data)
    return {items[k].upper(): items[k + 1] for k in range(0, len(items), 2)}


class Lit:
    def __init__(self, data, plus=False):
        self.data, self.plus = data, plus


class Reply:
    def __init__(self, tag, status, text, untagged):
        self.tag, self.status, self.text, self.untagged = tag, status, text, untagged

    def __repr__(self):
        return "\n".join([f"* {u!r}" for u in self.untagged] +
                         [f"{self.tag} {self.status} {self.text}"])

    def lines(self, kind):
        """Untagged responses named kind ("LIST", "EXPUNGE", ...), the name dropped."""
        out = []
        for u in self.untagged:
            words = u.split(b" ", 2)
            if words[0].upper() == kind.encode():
                out.append(u[len(kind) + 1:])
            elif len(words) > 1 and words[1].upper() == kind.encode() and words[0].isdigit():
                out.append(words[0] + (b" " + words[2] if len(words) > 2 else b""))
        return out

    def numbers(self, kind):
        """For "* n EXISTS" / "* n EXPUNGE": the n's in order."""
        return [int(x.split(b" ")[0]) for x in self.lines(kind)]

    def fetches(self):
        """[(msn, {item: value})] of the untagged FETCH responses, in order."""
        out = []
        for u in self.untagged:
            m = re.match(rb"(\d+) FETCH ", u)
            if m:
                out.append((int(m.group(1)), fetch_dict(u[m.end():])))
        return out

    def code(self, name):
        """The argument of a response code [NAME ...] in the tagged or an untagged OK."""
        for line in [self.text.encode()] + self.untagged:
            m = re.search(rb"\[" + name.encode() + rb"(?: ([^\]]*))?\]", line)
            if m:
                return (m.group(1) or b"").decode()
        return None


class Imap:
    """A raw IMAP client: one command at a time, literals both ways."""

    def __init__(self, srv, port="imap", tls=None, src="127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", srv.ports[port]), timeout=TIMEOUT,
                                             source_address=(src, 0))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="mail.example.test")
        self.srv = srv
        self.buf = b""
        self.n = 0
        self.greeting = self.response()

    def fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(self.buf)
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self):
        """One whole response line; literals are kept inline as {n}\\r\\n<bytes>."""
        out = self.line()
        while True:
            m = re.search(rb"~?\{(\d+)\}$", out)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self.fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]
            out += self.line()

    def send(self, data):
        self.sock.sendall(data)

    def tag(self):
        self.n += 1
        return f"t{self.n}"

    def cmd(self, *parts):
        """Sends one command made of words (joined by spaces) and Lit literals."""
        tag = self.tag()
        out, untagged = tag.encode(), []
        for p in parts:
            if isinstance(p, Lit):
                out += b" {%d%s}\r\n" % (len(p.data), b"+" if p.plus else b"")
                if not p.plus:
                    self.send(out)
                    out = b""
                    while True:
                        r = self.response()
                        if r.startswith(b"+"):
                            break
                        if r.startswith(b"* "):
                            untagged.append(r[2:])
                            continue
                        return self._tagged(tag, r, untagged)
                out += p.data
            else:
                out += b" " + (p.encode() if isinstance(p, str) else p)
        self.send(out + b"\r\n")
        return self.finish(tag, untagged)

    def finish(self, tag, untagged=None):
        untagged = [] if untagged is None else untagged
        while True:
            r = self.response()
            if r.startswith(b"* "):
                untagged.append(r[2:])
            elif r.startswith(tag.encode() + b" "):
                return self._tagged(tag, r, untagged)
            else:
                raise AssertionError(f"unexpected {r!r} after {untagged!r}")

    @staticmethod
    def _tagged(tag, line, untagged):
        words = line.decode("utf-8", "replace").split(" ", 2)
        return Reply(tag, words[1].upper(), words[2] if len(words) > 2 else "", untagged)

    def select(self, box="INBOX", *extra, examine=False):
        r = self.cmd("EXAMINE" if examine else "SELECT", box, *extra)
        assert r.status == "OK", r
        return r

    def fetch(self, seq, items, uid=False):
        r = self.cmd(("UID " if uid else "") + "FETCH", seq, items)
        assert r.status == "OK", r
        return r

    def closed(self, timeout=TIMEOUT):
        """True once the server has closed the connection (all remaining data read)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.settimeout(2)
            self.send(b"z LOGOUT\r\n")
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


def caps(line):
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", line)
    return set(m.group(1).decode().upper().split()) if m else None


def capability(c):
    r = c.cmd("CAPABILITY")
    assert r.status == "OK", r
    return set(r.lines("CAPABILITY")[0].decode().upper().split())


def uid_set(text):
    """"1:3,7" -> [1, 2, 3, 7] (a uid-set of COPYUID / APPENDUID, either order of a range)"""
    out = []
    for part in text.split(","):
        a, _, b = part.partition(":")
        lo, hi = sorted((int(a), int(b or a)))
        out.extend(range(lo, hi + 1))
    return out


def uids_of(c, seq="1:*"):
    r = c.fetch(seq, "(UID)")
    return [int(d["UID"]) for _, d in r.fetches()]


# ---- login -------------------------------------------------------------------------------------

def test_greeting_and_capabilities(connect):
    c = connect(login=False)
    assert c.greeting.startswith(b"* OK [CAPABILITY ")
    pre = caps(c.greeting)
    for cap in ("IMAP4REV1", "STARTTLS", "AUTH=PLAIN", "SASL-IR", "ID", "ENABLE"):
        assert cap in pre, (cap, pre)
    assert "LOGINDISABLED" not in pre
    assert capability(c) == pre
    r = c.cmd("LOGIN", q(ALICE), q(PW))
    assert r.status == "OK", r
    post = caps(r.text.encode())
    assert post is not None, "LOGIN's OK should carry the new CAPABILITY"
    for cap in ("IMAP4REV1", "IDLE", "MOVE", "UIDPLUS", "NAMESPACE", "UNSELECT", "CHILDREN",
                "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC",
                "LITERAL+", "MULTIAPPEND", "BINARY", "STATUS=SIZE", "ENABLE"):
        assert cap in post, (cap, post)
    assert "STARTTLS" not in post and "AUTH=PLAIN" not in post
    assert capability(c) == post
    assert any(x.startswith("APPENDLIMIT=") for x in post)


def test_namespace_id_enable(connect):
    c = connect()
    r = c.cmd("NAMESPACE")
    assert r.status == "OK"
    assert r.lines("NAMESPACE") == [b'(("" "/")) NIL NIL']
    r = c.cmd("ID", '("name" "pytest" "version" "1")')
    assert r.status == "OK", r
    ident = parse_all(r.lines("ID")[0])[0]
    assert ident[0].lower() == b"name" and ident[1] == b"Postamt"
    r = c.cmd("ID", "NIL")
    assert r.status == "OK" and r.lines("ID")
    r = c.cmd("ENABLE", "CONDSTORE", "X-UNKNOWN")
    assert r.status == "OK" and r.lines("ENABLED") == [b"CONDSTORE"], r
    r = c.cmd("ENABLE", "CONDSTORE")
    assert r.status == "OK" and r.lines("ENABLED") in ([b""], []), "only newly enabled ones"


def test_enable_before_login_is_refused(connect):
    c = connect(login=False)
    r = c.cmd("ENABLE", "CONDSTORE")
    assert r.status == "BAD", r
    r = c.cmd("SELECT", "INBOX")
    assert r.status == "BAD", r


def test_login_disabled_without_tls(account):
    srv = account({"imap.plaintext_auth_loopback": "no"})
    c = Imap(srv)
    try:
        pre = caps(c.greeting)
        assert "LOGINDISABLED" in pre and "STARTTLS" in pre
        assert not any(x.startswith("AUTH=") for x in pre), pre
        r = c.cmd("LOGIN", q(ALICE), q(PW))
        assert r.status == "NO" and r.code("PRIVACYREQUIRED") is not None, r
        ir = base64.b64encode(f"\0{ALICE}\0{PW}".encode()).decode()
        r = c.cmd("AUTHENTICATE", "PLAIN", ir)
        assert r.status == "NO" and r.code("PRIVACYREQUIRED") is not None, r
        r = c.cmd("STARTTLS")
        assert r.status == "OK", r
        c.sock = ctx(srv).wrap_socket(c.sock, server_hostname="mail.example.test")
        after = capability(c)
        assert "LOGINDISABLED" not in after and "STARTTLS" not in after
        assert "AUTH=PLAIN" in after
        r = c.cmd("STARTTLS")
        assert r.status == "BAD", r
        r = c.cmd("LOGIN", q(ALICE), q(PW))
        assert r.status == "OK", r
        assert c.cmd("SELECT", "INBOX").status == "OK"
    finally:
        c.close()


def test_starttls_with_imaplib(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
    try:
        assert "STARTTLS" in m.capabilities
        typ, _ = m.starttls(ssl_context=ctx(srv))
        assert typ == "OK"
        assert "STARTTLS" not in m.capabilities
        assert m.login(ALICE, PW)[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
    finally:
        m.logout()


def test_imaps_implicit_tls(srv):
    m = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=ctx(srv),
                          timeout=TIMEOUT)
    try:
        assert m.welcome.startswith(b"* OK")
        assert "STARTTLS" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
        assert m.login(ALICE, PW)[0] == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"0"]
    finally:
        m.logout()


def test_imaps_refuses_plaintext(srv):
    with socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=TIMEOUT) as s:
        s.sendall(b"a LOGIN alice@example.test x\r\n")
        s.settimeout(5)
        try:
            data = s.recv(4096)
        except (socket.timeout, ConnectionResetError):
            data = b""
        assert not data.startswith(b"* OK") and b"a OK" not in data


def test_authenticate_plain_sasl_ir_and_continuation(connect):
    c = connect(login=False)
    ir = base64.b64encode(f"\0{ALICE}\0{PW}".encode()).decode()
    r = c.cmd("AUTHENTICATE", "PLAIN", ir)
    assert r.status == "OK", r
    assert caps(r.text.encode()) and "IDLE" in caps(r.text.encode())
    assert c.cmd("SELECT", "INBOX").status == "OK"

    d = connect(login=False)
    tag = d.tag()
    d.send(f"{tag} AUTHENTICATE PLAIN\r\n".encode())
    assert d.response().startswith(b"+")
    d.send(base64.b64encode(f"{ALICE}\0{ALICE}\0{PW}".encode()) + b"\r\n")
    r = d.finish(tag)
    assert r.status == "OK", r

    e = connect(login=False)
    tag = e.tag()
    e.send(f"{tag} AUTHENTICATE LOGIN\r\n".encode())
    assert e.response().startswith(b"+")
    e.send(base64.b64encode(ALICE.encode()) + b"\r\n")
    assert e.response().startswith(b"+")
    e.send(base64.b64encode(PW.encode()) + b"\r\n")
    r = e.finish(tag)
    assert r.status == "OK", r

    f = connect(login=False)
    tag = f.tag()
    f.send(f"{tag} AUTHENTICATE PLAIN\r\n".encode())
    assert f.response().startswith(b"+")
    f.send(b"*\r\n")
    r = f.finish(tag)
    assert r.status == "BAD", r
    r = f.cmd("AUTHENTICATE", "PLAIN", "not-base64!!")
    assert r.status in ("BAD", "NO"), r
    r = f.cmd("AUTHENTICATE", "X-UNKNOWN")
    assert r.status == "NO", r
    r = f.cmd("LOGIN", q(ALICE), q(PW))
    assert r.status == "OK", r


def test_imaplib_authenticate_plain(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
    try:
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PW}".encode())
        assert typ == "OK"
        assert m.state == "AUTH"
    finally:
        m.logout()


def test_wrong_password(connect):
    c = connect(login=False)
    r = c.cmd("LOGIN", q(ALICE), q("wrong"))
    assert r.status == "NO" and r.code("AUTHENTICATIONFAILED") is not None, r
    r = c.cmd("LOGIN", q("nobody@example.test"), q(PW))
    assert r.status == "NO" and r.code("AUTHENTICATIONFAILED") is not None, r
    ir = base64.b64encode(f"\0{ALICE}\0nope".encode()).decode()
    r = c.cmd("AUTHENTICATE", "PLAIN", ir)
    assert r.status == "NO" and r.code("AUTHENTICATIONFAILED") is not None, r
    r = c.cmd("SELECT", "INBOX")
    assert r.status == "BAD", "still not authenticated"
    r = c.cmd("LOGIN", q(ALICE), q(PW))
    assert r.status == "OK", r


def test_authorization_identity_of_another_user_is_refused(connect):
    c = connect(login=False)
    ir = base64.b64encode(f"{BOB}\0{ALICE}\0{PW}".encode()).decode()
    r = c.cmd("AUTHENTICATE", "PLAIN", ir)
    assert r.status == "NO", r
    assert c.cmd("SELECT", "INBOX").status == "BAD"


def test_failure_delay_is_applied(account):
    srv = account({"auth.failure_delay": "500ms"})
    c = Imap(srv)
    try:
        t = time.monotonic()
        r = c.cmd("LOGIN", q(ALICE), q("wrong"))
        assert r.status == "NO"
        assert time.monotonic() - t >= 0.4
    finally:
        c.close()


def test_guard_bans_after_repeated_failures(account):
    srv = account({"auth.failure_delay": "20ms", "guard.stale_max_delay": "100ms",
                   "guard.account_max_delay": "200ms"})
    time.sleep(0.3)
    for i in range(5):
        try:
            c = Imap(srv)
        except (EOFError, ConnectionResetError):
            break
        try:
            if c.greeting.startswith(b"* BYE"):
                break
            r = c.cmd("LOGIN", q(ALICE), q(f"guess-{i}"))
            assert r.status == "NO", r
        finally:
            c.close()
    with socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=TIMEOUT) as s:
        greet = s.recv(512)
    assert greet.startswith(b"* BYE"), greet
    assert b"try again after" in greet
    with socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=TIMEOUT) as s:
        s = ctx(srv).wrap_socket(s, server_hostname="mail.example.test")
        greet = s.recv(512)
        assert greet.startswith(b"* BYE"), "imaps is the same service"
    assert "event=ban service=imap rip=127.0.0.1" in srv.read_log()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=TIMEOUT) as s:
        assert s.noop()[0] == 250, "other services stay open"
    c = Imap(srv, src="127.0.0.2")
    try:
        assert c.greeting.startswith(b"* OK")
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
    finally:
        c.close()


# ---- mailboxes ---------------------------------------------------------------------------------

def list_map(r, kind="LIST"):
    """{name: (attributes, delimiter, extended)} of LIST/LSUB responses."""
    out = {}
    for line in r.lines(kind):
        v = parse_all(line)
        name = v[2].decode() if isinstance(v[2], bytes) else v[2]
        out[name] = ({a.lower() for a in v[0]}, v[1], v[3:] if len(v) > 3 else None)
    return out


def test_default_mailboxes_with_special_use(connect):
    c = connect()
    r = c.cmd("LIST", '""', '"*"')
    assert r.status == "OK", r
    boxes = list_map(r)
    assert set(boxes) == {"INBOX", "Drafts", "Sent", "Junk", "Trash", "Archive"}
    for name, use in [("Drafts", "\\drafts"), ("Sent", "\\sent"), ("Junk", "\\junk"),
                      ("Trash", "\\trash"), ("Archive", "\\archive")]:
        assert use in boxes[name][0], (name, boxes[name])
    assert all(b[1] == b"/" for b in boxes.values())
    assert "\\hasnochildren" in boxes["INBOX"][0]
    r = c.cmd("LIST", '""', '""')
    assert r.lines("LIST") == [b'(\\Noselect) "/" ""'], r
    r = c.cmd("LIST", '""', "%")
    assert set(list_map(r)) == set(boxes)
    r = c.cmd("LIST", '""', "inbox")
    assert list(list_map(r)) == ["INBOX"], "INBOX is case-insensitive"
    r = c.cmd("LIST", '""', "S*")
    assert list(list_map(r)) == ["Sent"]


def test_imaplib_list(imap):
    m = imap()
    typ, data = m.list()
    assert typ == "OK"
    assert b'(\\HasNoChildren \\Sent) "/" Sent' in data or any(
        b"\\Sent" in d and d.endswith(b" Sent") for d in data), data


def test_create_hierarchy_children_and_delete(connect):
    c = connect()
    assert c.cmd("CREATE", "a/b").status == "OK"
    r = c.cmd("LIST", '""', '"*"')
    boxes = list_map(r)
    assert "\\haschildren" in boxes["a"][0], boxes["a"]
    assert "\\hasnochildren" in boxes["a/b"][0]
    r = c.cmd("LIST", '""', "%")
    assert "a" in list_map(r) and "a/b" not in list_map(r)
    r = c.cmd("LIST", '""', "a/%")
    assert list(list_map(r)) == ["a/b"]
    r = c.cmd("CREATE", "a/b")
    assert r.status == "NO" and r.code("ALREADYEXISTS") is not None, r
    r = c.cmd("CREATE", "inbox")
    assert r.status == "NO", r
    assert c.cmd("CREATE", "trailing/").status == "OK"
    assert "trailing" in list_map(c.cmd("LIST", '""', "*"))
    assert c.cmd("SELECT", "a").status == "OK", "a parent made by CREATE a/b is selectable"
    assert c.cmd("UNSELECT").status == "OK"
    assert c.cmd("DELETE", "a/b").status == "OK"
    boxes = list_map(c.cmd("LIST", '""', "*"))
    assert "a/b" not in boxes and "\\hasnochildren" in boxes["a"][0]
    r = c.cmd("DELETE", "a/b")
    assert r.status == "NO" and r.code("NONEXISTENT") is not None, r
    r = c.cmd("DELETE", "INBOX")
    assert r.status == "NO", r
    assert "INBOX" in list_map(c.cmd("LIST", '""', "*"))


def test_delete_parent_keeps_children(connect):
    c = connect()
    assert c.cmd("CREATE", "p/c").status == "OK"
    r = c.cmd("DELETE", "p")
    if r.status == "OK":
        boxes = list_map(c.cmd("LIST", '""', "*"))
        assert "p/c" in boxes
        assert "\\noselect" in boxes["p"][0] or "\\nonexistent" in boxes["p"][0], boxes["p"]
    else:
        assert r.status == "NO", r   # RFC 3501 6.3.4 allows refusing it
        assert "p/c" in list_map(c.cmd("LIST", '""', "*"))


def test_create_special_use(connect):
    c = connect()
    r = c.cmd("CREATE", "Old", "(USE (\\Archive))")
    assert r.status == "OK", r
    r = c.cmd("LIST", '""', "Old", "RETURN", "(SPECIAL-USE)")
    assert "\\archive" in list_map(r)["Old"][0], r
    r = c.cmd("LIST", "(SPECIAL-USE)", '""', "*")
    assert r.status == "OK", r
    assert {"Old", "Archive", "Sent", "Drafts", "Junk", "Trash"} <= set(list_map(r))
    assert "INBOX" not in list_map(r)
    r = c.cmd("CREATE", "Bad", "(USE (\\Nonsense))")
    assert r.status == "NO" and r.code("USEATTR") is not None, r


def test_list_subscribed_and_lsub(connect):
    c = connect()
    assert c.cmd("CREATE", "news/tech").status == "OK"
    # CREATE may subscribe on its own (this server does): start from a known state.
    assert c.cmd("UNSUBSCRIBE", "news").status in ("OK", "NO")
    assert c.cmd("UNSUBSCRIBE", "news/tech").status in ("OK", "NO")
    assert c.cmd("SUBSCRIBE", "news/tech").status == "OK"
    r = c.cmd("LIST", "(SUBSCRIBED)", '""', '"*"')
    assert r.status == "OK", r
    subs = list_map(r)
    assert "news/tech" in subs and "\\subscribed" in subs["news/tech"][0]
    assert "news" not in subs or "\\subscribed" not in subs["news"][0]
    r = c.cmd("LSUB", '""', '"*"')
    assert "news/tech" in list_map(r, "LSUB")
    r = c.cmd("LSUB", '""', "news/%")
    assert list(list_map(r, "LSUB")) == ["news/tech"]
    r = c.cmd("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "%")
    assert r.status == "OK", r
    m = list_map(r)
    # RFC 5258 3.5: the unsubscribed parent of a subscribed child, with CHILDINFO.
    assert "news" in m and "\\subscribed" not in m["news"][0], r
    ext = m["news"][2]
    assert ext and ext[0][0].upper() in ("CHILDINFO", b"CHILDINFO"), r
    assert [x.upper() for x in ext[0][1]] == [b"SUBSCRIBED"], r
    assert "news/tech" not in m, "% does not reach the child"
    r = c.cmd("LIST", '""', "*", "RETURN", "(SUBSCRIBED)")
    assert "\\subscribed" in list_map(r)["news/tech"][0]
    assert c.cmd("UNSUBSCRIBE", "news/tech").status == "OK"
    assert "news/tech" not in list_map(c.cmd("LSUB", '""', "*"), "LSUB")
    assert "news/tech" not in list_map(c.cmd("LIST", "(SUBSCRIBED)", '""', "*"))
    # A subscription may name a mailbox that does not exist (RFC 3501 6.3.6).
    r = c.cmd("SUBSCRIBE", "ghost")
    if r.status == "OK":
        m = list_map(c.cmd("LIST", "(SUBSCRIBED)", '""', "*"))
        assert "\\nonexistent" in m["ghost"][0]


def test_list_return_status(connect, srv):
    deliver(srv, simple("one"))
    deliver(srv, simple("two"))
    c = connect()
    c.select("INBOX")
    assert c.cmd("STORE", "1", "+FLAGS", "(\\Seen)").status == "OK"
    r = c.cmd("LIST", '""', "*", "RETURN", "(SPECIAL-USE STATUS (MESSAGES UNSEEN))")
    assert r.status == "OK", r
    boxes = list_map(r)
    assert "\\sent" in boxes["Sent"][0]
    status = {}
    for line in r.lines("STATUS"):
        v = parse_all(line)
        name = v[0].decode() if isinstance(v[0], bytes) else v[0]
        status[name] = dict(zip(v[1][::2], v[1][1::2]))
    assert status["INBOX"] == {"MESSAGES": "2", "UNSEEN": "1"}, r
    assert status["Sent"] == {"MESSAGES": "0", "UNSEEN": "0"}
    assert set(status) == set(boxes)


def status_of(c, box, items="(MESSAGES UIDNEXT UIDVALIDITY UNSEEN SIZE HIGHESTMODSEQ DELETED)"):
    r = c.cmd("STATUS", box, items)
    assert r.status == "OK", r
    v = parse_all(r.lines("STATUS")[0])
    return {k: int(x) for k, x in zip(v[1][::2], v[1][1::2])}


def test_status(connect, srv):
    c = connect()
    empty = status_of(c, "INBOX")
    assert empty["MESSAGES"] == 0 and empty["UIDNEXT"] >= 1 and empty["SIZE"] == 0
    deliver(srv, simple("one"))
    deliver(srv, simple("two", body="x" * 100 + "\r\n" * 10))
    st = status_of(c, "INBOX")
    assert st["MESSAGES"] == 2 and st["UNSEEN"] == 2 and st["DELETED"] == 0
    assert st["UIDVALIDITY"] == empty["UIDVALIDITY"] and st["UIDNEXT"] == empty["UIDNEXT"] + 2
    assert st["HIGHESTMODSEQ"] > empty["HIGHESTMODSEQ"]
    c.select()
    sizes = [int(d["RFC822.SIZE"]) for _, d in c.fetch("1:*", "(RFC822.SIZE)").fetches()]
    assert st["SIZE"] == sum(sizes)
    assert c.cmd("STORE", "1", "+FLAGS.SILENT", "(\\Seen \\Deleted)").status == "OK"
    st2 = status_of(c, "INBOX")
    assert st2["UNSEEN"] == 1 and st2["DELETED"] == 1
    assert st2["HIGHESTMODSEQ"] > st["HIGHESTMODSEQ"]
    r = c.cmd("STATUS", "Nope", "(MESSAGES)")
    assert r.status == "NO", r
    r = c.cmd("STATUS", "INBOX", "(BOGUS)")
    assert r.status == "BAD", r


def test_rename_with_children(connect):
    c = connect()
    assert c.cmd("CREATE", "a/x").status == "OK"
    assert c.cmd("APPEND", "a/x", Lit(simple("in a/x"))).status == "OK"
    assert c.cmd("SUBSCRIBE", "a/x").status == "OK"
    before = status_of(c, "a/x")
    r = c.cmd("RENAME", "a", "b")
    assert r.status == "OK", r
    boxes = list_map(c.cmd("LIST", '""', "*"))
    assert "a" not in boxes and "a/x" not in boxes
    assert "b" in boxes and "b/x" in boxes and "\\haschildren" in boxes["b"][0]
    after = status_of(c, "b/x")
    assert after["MESSAGES"] == 1 and after["UIDVALIDITY"] == before["UIDVALIDITY"]
    c.select("b/x")
    body = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)])").fetches()[0][1]
    assert body["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: in a/x\r\n\r\n"
    c.cmd("UNSELECT")
    r = c.cmd("RENAME", "b", "Sent")
    assert r.status == "NO" and r.code("ALREADYEXISTS") is not None, r
    r = c.cmd("RENAME", "nothing", "zzz")
    assert r.status == "NO" and r.code("NONEXISTENT") is not None, r


def test_rename_inbox_moves_its_messages(connect, srv):
    deliver(srv, simple("one"))
    deliver(srv, simple("two"))
    c = connect()
    inbox = status_of(c, "INBOX")
    r = c.cmd("RENAME", "INBOX", "Old-Inbox")
    assert r.status == "OK", r
    assert status_of(c, "Old-Inbox")["MESSAGES"] == 2
    after = status_of(c, "INBOX")
    assert after["MESSAGES"] == 0
    assert after["UIDNEXT"] >= inbox["UIDNEXT"] or after["UIDVALIDITY"] != inbox["UIDVALIDITY"]
    boxes = list_map(c.cmd("LIST", '""', "*"))
    assert "INBOX" in boxes and "Old-Inbox" in boxes
    deliver(srv, simple("three"))
    assert status_of(c, "INBOX")["MESSAGES"] == 1, "new mail still lands in INBOX"


def test_subscribe_unsubscribe(connect):
    c = connect()
    assert c.cmd("SUBSCRIBE", "Sent").status == "OK"
    assert "Sent" in list_map(c.cmd("LSUB", '""', "*"), "LSUB")
    assert c.cmd("UNSUBSCRIBE", "Sent").status == "OK"
    assert "Sent" not in list_map(c.cmd("LSUB", '""', "*"), "LSUB")


# ---- SELECT and FETCH --------------------------------------------------------------------------

def test_select_and_examine(connect, srv):
    deliver(srv, simple("one"))
    deliver(srv, simple("two"))
    c = connect()
    st = status_of(c, "INBOX")
    r = c.select("INBOX")
    assert r.numbers("EXISTS") == [2]
    assert r.code("UIDVALIDITY") == str(st["UIDVALIDITY"])
    assert r.code("UIDNEXT") == str(st["UIDNEXT"])
    assert r.code("HIGHESTMODSEQ") == str(st["HIGHESTMODSEQ"])
    perm = r.code("PERMANENTFLAGS")
    for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\*"):
        assert f in perm, perm
    flags = r.lines("FLAGS")[0]
    assert b"\\Seen" in flags and b"\\Deleted" in flags
    assert "[READ-WRITE]" in r.text, r
    r = c.select("INBOX", examine=True)
    assert "[READ-ONLY]" in r.text, r
    assert r.numbers("EXISTS") == [2]
    r = c.cmd("STORE", "1", "+FLAGS", "(\\Flagged)")
    assert r.status == "NO", r
    c.fetch("1", "(BODY[])")
    assert c.fetch("1", "(FLAGS)").fetches()[0][1]["FLAGS"] == [], "EXAMINE never sets \\Seen"
    r = c.cmd("SELECT", "Nope")
    assert r.status == "NO", r
    assert c.cmd("FETCH", "1", "(FLAGS)").status == "BAD", "a failed SELECT leaves none selected"


def test_fetch_basic_items(connect, srv):
    deliver(srv, simple("first subject"))
    c = connect()
    c.select()
    f = c.fetch("1", "(FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY[])").fetches()
    msn, d = f[0]
    assert msn == 1 and d["UID"] == "1"
    assert re.fullmatch(rb"[ \d]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}",
                        d["INTERNALDATE"]), d["INTERNALDATE"]
    assert int(d["RFC822.SIZE"]) == len(d["BODY[]"])
    assert d["BODY[]"].endswith(simple("first subject").split(b"\r\n\r\n", 1)[1])
    env = d["ENVELOPE"]
    assert env[0] == b"Mon, 02 Jan 2023 10:00:00 +0000"
    assert env[1] == b"first subject"
    assert env[2] == [[b"Carol Sender", None, b"carol", b"example.org"]]
    assert env[3] == env[2] and env[4] == env[2], "Sender and Reply-To default to From"
    assert env[5] == [[None, None, b"alice", b"example.test"]]
    assert env[9] == b"<first subject@example.org>"
    r = c.fetch("1", "ALL")
    assert {"FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"} <= set(r.fetches()[0][1])
    r = c.fetch("1", "FAST")
    assert {"FLAGS", "INTERNALDATE", "RFC822.SIZE"} == set(r.fetches()[0][1])
    r = c.fetch("1", "FULL")
    assert "BODY" in r.fetches()[0][1]
    r = c.cmd("FETCH", "2", "(FLAGS)")
    assert r.status in ("BAD", "NO"), r
    r = c.cmd("UID", "FETCH", "99", "(FLAGS)")
    assert r.status == "OK" and r.fetches() == [], r


def test_bodystructure_alternative(connect, srv):
    deliver(srv, ALTERNATIVE)
    c = connect()
    c.select()
    d = c.fetch("1", "(BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[TEXT])").fetches()[0][1]
    bs = d["BODYSTRUCTURE"]
    plain, html = bs[0], bs[1]
    assert bs[2].lower() == b"alternative"
    assert [x.lower() for x in bs[3]] == [b"boundary", b"alt-b"]
    assert plain[0].lower() == b"text" and plain[1].lower() == b"plain"
    assert [x.lower() for x in plain[2]] == [b"charset", b"us-ascii"]
    assert plain[5].lower() == b"7bit"
    assert d["BODY[1]"] == b"plain text\r\nsecond line"
    # Lines: 1 or 2 both seen in the wild (the CRLF before the boundary belongs to it).
    assert int(plain[6]) == len(d["BODY[1]"]) and int(plain[7]) in (1, 2)
    assert html[1].lower() == b"html" and html[5].lower() == b"quoted-printable"
    assert d["BODY[2]"] == b"<p>html =C3=A4</p>"
    assert int(html[6]) == len(d["BODY[2]"])
    assert d["BODY[TEXT]"] == ALTERNATIVE.split(b"\r\n\r\n", 1)[1]
    body = c.fetch("1", "(BODY)").fetches()[0][1]["BODY"]
    assert body[2].lower() == b"alternative" and len(body) == 3, "BODY has no extension data"


def test_bodystructure_nested_message(connect, srv):
    deliver(srv, MIXED)
    c = connect()
    c.select()
    d = c.fetch("1", "(BODYSTRUCTURE)").fetches()[0][1]
    bs = d["BODYSTRUCTURE"]
    part1, part2 = bs[0], bs[1]
    assert bs[2].lower() == b"mixed"
    assert part1[0].lower() == b"text" and part1[5].lower() == b"base64"
    assert int(part1[6]) == len(GRUSS_B64) - 2 or int(part1[6]) == len(GRUSS_B64)
    assert part2[0].lower() == b"message" and part2[1].lower() == b"rfc822"
    env, inner, lines = part2[7], part2[8], part2[9]
    assert env[1] == b"inner subject"
    assert env[2] == [[b"Erin", None, b"erin", b"example.org"]]
    assert isinstance(inner[0], list) and isinstance(inner[1], list)
    assert inner[2].lower() == b"alternative"
    assert int(lines) in (INNER.count(b"\r\n") - 1, INNER.count(b"\r\n"))
    r = c.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[1.MIME] "
                     "BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[2.2])")
    d = r.fetches()[0][1]
    assert base64.b64decode(d["BODY[1]"]) == GRUSS
    assert d["BODY[1.MIME]"] == (b"Content-Type: text/plain; charset=utf-8\r\n"
                                 b"Content-Transfer-Encoding: base64\r\n\r\n")
    assert d["BODY[2.MIME]"] == b"Content-Type: message/rfc822\r\n\r\n"
    assert d["BODY[2]"] == INNER or d["BODY[2]"] == INNER[:-2]
    assert d["BODY[2.HEADER]"] == INNER.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    assert d["BODY[2.TEXT]"] in (INNER.split(b"\r\n\r\n", 1)[1],
                                 INNER.split(b"\r\n\r\n", 1)[1][:-2])
    assert d["BODY[2.1]"] == b"inner plain"
    assert d["BODY[2.2]"] == b"<b>inner</b>"
    r = c.fetch("1", "(BODY.PEEK[9])")
    assert r.fetches()[0][1]["BODY[9]"] in (b"", None)


def test_header_fields_text_and_partial(connect, srv):
    deliver(srv, simple("fields"))
    c = connect()
    c.select()
    d = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[HEADER.FIELDS.NOT "
                     "(Subject)] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[] "
                     "BODY.PEEK[]<0.10> BODY.PEEK[TEXT]<3.5> BODY.PEEK[]<100000.10>)") \
        .fetches()[0][1]
    full = d["BODY[]"]
    header, text = full.split(b"\r\n\r\n", 1)
    assert d["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: fields\r\n\r\n"
    not_subject = d["BODY[HEADER.FIELDS.NOT (SUBJECT)]"]
    assert b"Subject:" not in not_subject and not_subject.endswith(b"\r\n\r\n")
    assert b"From: Carol Sender <carol@example.org>\r\n" in not_subject
    assert len(not_subject) == len(header) + 4 - len(b"Subject: fields\r\n")
    assert d["BODY[HEADER]"] == header + b"\r\n\r\n"
    assert d["BODY[TEXT]"] == text == b"Hi there.\r\n"
    assert d["BODY[]<0>"] == full[:10]
    assert d["BODY[TEXT]<3>"] == b"there"
    assert d["BODY[]<100000>"] == b""
    d = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM X-Missing)])").fetches()[0][1]
    got = d["BODY[HEADER.FIELDS (SUBJECT FROM X-MISSING)]"]
    assert got == b"From: Carol Sender <carol@example.org>\r\nSubject: fields\r\n\r\n"


def test_peek_does_not_set_seen(connect, srv):
    deliver(srv, simple("one"))
    deliver(srv, simple("two"))
    deliver(srv, simple("three"))
    c = connect()
    c.select()
    c.fetch("1", "(BODY.PEEK[] BODY.PEEK[TEXT] RFC822.HEADER BODY.PEEK[1] BINARY.PEEK[1] "
                 "RFC822.SIZE)")
    assert c.fetch("1", "(FLAGS)").fetches()[0][1]["FLAGS"] == []
    r = c.fetch("1", "(BODY[])")
    got = [d for _, d in r.fetches()]
    assert any("FLAGS" in d and "\\Seen" in d["FLAGS"] for d in got), \
        f"the implicit \\Seen should be reported: {r}"
    assert c.fetch("1", "(FLAGS)").fetches()[0][1]["FLAGS"] == ["\\Seen"]
    c.fetch("2", "(RFC822.TEXT)")
    assert "\\Seen" in c.fetch("2", "(FLAGS)").fetches()[0][1]["FLAGS"]
    c.fetch("3", "(BINARY[1])")
    assert "\\Seen" in c.fetch("3", "(FLAGS)").fetches()[0][1]["FLAGS"]
    assert status_of(c, "INBOX", "(UNSEEN)")["UNSEEN"] == 0


def test_rfc822_items(connect, srv):
    deliver(srv, simple("legacy"))
    c = connect()
    c.select()
    d = c.fetch("1", "(BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] RFC822.HEADER)") \
        .fetches()[0][1]
    assert d["RFC822.HEADER"] == d["BODY[HEADER]"]
    assert c.fetch("1", "(FLAGS)").fetches()[0][1]["FLAGS"] == [], "RFC822.HEADER peeks"
    e = c.fetch("1", "(RFC822.TEXT)").fetches()[0][1]
    assert e["RFC822.TEXT"] == d["BODY[TEXT]"]
    f = c.fetch("1", "(RFC822)").fetches()[0][1]
    assert f["RFC822"] == d["BODY[]"]


def test_binary_decodes_base64(connect, srv):
    deliver(srv, MIXED)
    deliver(srv, ALTERNATIVE)
    c = connect()
    c.select()
    d = c.fetch("1", "(BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[1]<4.5>)").fetches()[0][1]
    assert d["BINARY[1]"] == GRUSS
    assert int(d["BINARY.SIZE[1]"]) == len(GRUSS)
    assert d["BINARY[1]<4>"] == GRUSS[4:9]
    d = c.fetch("2", "(BINARY.PEEK[2] BINARY.SIZE[2])").fetches()[0][1]
    assert d["BINARY[2]"] == "<p>html ä</p>".encode(), "quoted-printable decoded"
    assert int(d["BINARY.SIZE[2]"]) == len("<p>html ä</p>".encode())
    r = c.cmd("FETCH", "1", "(BINARY.PEEK[2])")
    assert r.status == "NO" or r.fetches(), "BINARY of a message/rfc822 part: NO or data"
    with imaplib.IMAP4("127.0.0.1", c.srv.ports["imap"], timeout=TIMEOUT) as m:
        m.login(ALICE, PW)
        m.select("INBOX")
        typ, data = m.fetch("1", "(BINARY.PEEK[1])")
        assert typ == "OK" and data[0][1] == GRUSS, data


def test_imaplib_fetch(imap, srv):
    deliver(srv, simple("with imaplib"))
    m = imap()
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, data = m.fetch("1", "(UID RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    head, body = data[0]
    size = int(re.search(rb"RFC822.SIZE (\d+)", head).group(1))
    assert size == len(body) and b"Subject: with imaplib" in body


# ---- STORE, CONDSTORE, QRESYNC ------------------------------------------------------------------

def flags_of(c, seq="1:*"):
    return {msn: sorted(d["FLAGS"]) for msn, d in c.fetch(seq, "(FLAGS)").fetches()}


def test_store_flags_and_keywords(connect, srv):
    for i in range(3):
        deliver(srv, simple(f"m{i}"))
    c = connect()
    c.select()
    r = c.cmd("STORE", "1", "+FLAGS", "(\\Flagged $Label1 work)")
    assert r.status == "OK", r
    assert sorted(r.fetches()[0][1]["FLAGS"]) == sorted(["\\Flagged", "$Label1", "work"])
    r = c.cmd("STORE", "1", "-FLAGS", "(work)")
    assert sorted(r.fetches()[0][1]["FLAGS"]) == ["$Label1", "\\Flagged"]
    r = c.cmd("STORE", "2", "FLAGS", "(\\Answered $Forwarded)")
    assert sorted(r.fetches()[0][1]["FLAGS"]) == ["$Forwarded", "\\Answered"]
    r = c.cmd("STORE", "2:3", "+FLAGS.SILENT", "(\\Seen)")
    assert r.status == "OK" and r.fetches() == [], r
    r = c.cmd("STORE", "3", "FLAGS.SILENT", "(\\Draft)")
    assert r.status == "OK" and r.fetches() == [], r
    assert flags_of(c) == {1: ["$Label1", "\\Flagged"],
                           2: ["$Forwarded", "\\Answered", "\\Seen"],
                           3: ["\\Draft"]}
    r = c.cmd("UID", "STORE", "2", "-FLAGS", "(\\Answered)")
    assert r.status == "OK", r
    (msn, d), = r.fetches()
    assert msn == 2 and d["UID"] == "2" and sorted(d["FLAGS"]) == ["$Forwarded", "\\Seen"]
    r = c.cmd("UID", "STORE", "1:*", "+FLAGS.SILENT", "($Done)")
    assert r.status == "OK"
    assert all("$Done" in f for f in flags_of(c).values())
    r = c.cmd("STORE", "1", "+FLAGS", "(\\Bogus)")
    assert r.status == "BAD", r
    r = c.cmd("STORE", "1", "+FLAGS", "\\Seen")
    assert r.status == "OK", "a single flag without parentheses is allowed"
    r = c.cmd("UID", "STORE", "99", "+FLAGS", "(\\Seen)")
    assert r.status == "OK" and r.fetches() == []


def test_keywords_are_case_insensitive_and_not_duplicated(connect, srv):
    deliver(srv, simple("kw"))
    c = connect()
    c.select()
    c.cmd("STORE", "1", "+FLAGS", "(Important)")
    r = c.cmd("STORE", "1", "+FLAGS", "(IMPORTANT important)")
    flags = r.fetches()[0][1]["FLAGS"] if r.fetches() else flags_of(c)[1]
    assert [f.lower() for f in flags] == ["important"], flags
    r = c.cmd("STORE", "1", "-FLAGS", "(iMPORTANT)")
    assert flags_of(c)[1] == []


def test_condstore(connect, srv):
    deliver(srv, simple("one"))
    deliver(srv, simple("two"))
    a = connect()
    b = connect()
    r = a.cmd("ENABLE", "CONDSTORE")
    assert r.lines("ENABLED") == [b"CONDSTORE"]
    sel = a.select()
    hms = int(sel.code("HIGHESTMODSEQ"))
    d = a.fetch("1:*", "(MODSEQ)").fetches()
    m1 = int(d[0][1]["MODSEQ"][0])
    m2 = int(d[1][1]["MODSEQ"][0])
    assert 0 < m1 <= hms and 0 < m2 <= hms
    b.select()
    r = b.cmd("STORE", "1", "+FLAGS", "(\\Flagged)")
    assert r.status == "OK"
    r = a.cmd("STORE", "1:2", "(UNCHANGEDSINCE", f"{max(m1, m2)})", "+FLAGS", "(\\Seen)")
    assert r.status == "OK", r
    assert r.code("MODIFIED") == "1", r
    got = {msn: d for msn, d in r.fetches()}
    assert 2 in got and "\\Seen" in got[2]["FLAGS"] and int(got[2]["MODSEQ"][0]) > hms
    assert "\\Seen" not in flags_of(a, "1")[1], "the modified message is left alone"
    new = a.fetch("1:*", "(FLAGS) (CHANGEDSINCE %d)" % hms).fetches()
    assert sorted(msn for msn, _ in new) == [1, 2], new
    assert all("MODSEQ" in d for _, d in new), "MODSEQ comes with CHANGEDSINCE"
    top = max(int(d["MODSEQ"][0]) for _, d in new)
    assert a.fetch("1:*", "(FLAGS) (CHANGEDSINCE %d)" % top).fetches() == []
    r = a.cmd("STORE", "1", "(UNCHANGEDSINCE", f"{top})", "+FLAGS", "(\\Seen)")
    assert r.status == "OK" and r.code("MODIFIED") is None, r
    top = int(r.fetches()[0][1]["MODSEQ"][0])
    assert status_of(a, "INBOX", "(HIGHESTMODSEQ)")["HIGHESTMODSEQ"] == top
    # RFC 7162 3.1.3: UNCHANGEDSINCE 0 always fails for a system flag.
    r = a.cmd("STORE", "1", "(UNCHANGEDSINCE", "0)", "+FLAGS", "(\\Answered)")
    assert r.code("MODIFIED") == "1", r
    assert "\\Answered" not in flags_of(a, "1")[1]
    assert status_of(a, "INBOX", "(HIGHESTMODSEQ)")["HIGHESTMODSEQ"] == top
    r = a.cmd("UID", "FETCH", "1:*", "(FLAGS)", "(CHANGEDSINCE 1)")
    assert all("UID" in d and "MODSEQ" in d for _, d in r.fetches())


def test_condstore_enabled_by_fetch_modseq(connect, srv):
    deliver(srv, simple("one"))
    c = connect()
    r = c.select("INBOX", "(CONDSTORE)")
    assert r.code("HIGHESTMODSEQ") is not None
    d = c.fetch("1", "(MODSEQ)").fetches()[0][1]
    assert int(d["MODSEQ"][0]) > 0
    r = c.cmd("STORE", "1", "+FLAGS", "(\\Seen)")
    assert "MODSEQ" in r.fetches()[0][1], "after CONDSTORE, STORE reports MODSEQ"


def test_qresync(connect, srv):
    for i in range(4):
        deliver(srv, simple(f"q{i}"))
    a = connect()
    assert a.cmd("ENABLE", "QRESYNC").lines("ENABLED") == [b"QRESYNC"]
    sel = a.select()
    uidv, hms = sel.code("UIDVALIDITY"), int(sel.code("HIGHESTMODSEQ"))
    a.cmd("LOGOUT")
    b = connect()
    b.select()
    assert b.cmd("UID", "STORE", "2", "+FLAGS.SILENT", "(\\Deleted)").status == "OK"
    assert b.cmd("EXPUNGE").status == "OK"
    assert b.cmd("UID", "STORE", "3", "+FLAGS.SILENT", "(\\Flagged)").status == "OK"
    c = connect()
    assert c.cmd("ENABLE", "QRESYNC").status == "OK"
    r = c.cmd("SELECT", "INBOX", f"(QRESYNC ({uidv} {hms}))")
    assert r.status == "OK", r
    assert r.lines("VANISHED") == [b"(EARLIER) 2"], r
    f = r.fetches()
    assert [(int(d["UID"]), sorted(d["FLAGS"])) for _, d in f] == [(3, ["\\Flagged"])], r
    assert all("MODSEQ" in d for _, d in f)
    assert r.numbers("EXISTS") == [3]
    # With known UIDs and a sequence match, and a stale UIDVALIDITY (full resync).
    c.cmd("UNSELECT")
    r = c.cmd("SELECT", "INBOX", f"(QRESYNC ({uidv} {hms} 1:4))")
    assert r.lines("VANISHED") == [b"(EARLIER) 2"], r
    c.cmd("UNSELECT")
    r = c.cmd("SELECT", "INBOX", f"(QRESYNC ({int(uidv) ^ 1} {hms}))")
    assert r.status == "OK" and r.lines("VANISHED") == [] and r.fetches() == [], r
    # Once QRESYNC is on, expunges reach this session as VANISHED, not EXPUNGE.
    c.cmd("UNSELECT")
    c.select()
    b.cmd("UID", "STORE", "4", "+FLAGS.SILENT", "(\\Deleted)")
    b.cmd("EXPUNGE")
    r = c.cmd("NOOP")
    assert r.lines("VANISHED") == [b"4"] and r.lines("EXPUNGE") == [], r
    r = c.fetch("1:*", "(UID)", uid=False)
    assert [int(d["UID"]) for _, d in r.fetches()] == [1, 3]
    r = c.cmd("UID", "FETCH", "1:*", "(FLAGS)", f"(CHANGEDSINCE {hms} VANISHED)")
    assert r.status == "OK", r
    assert r.lines("VANISHED") == [b"(EARLIER) 2,4"] or \
        r.lines("VANISHED") == [b"(EARLIER) 2:4"] or r.lines("VANISHED") == [b"(EARLIER) 2 4"]


def test_qresync_after_the_expunge_history_was_let_go(account):
    """Expunges are remembered one by one for imap.expunge_history; after that a client
    resynchronising from an older state is told every UID that is gone (RFC 7162 3.2.5.2),
    and a session selected since then still gets its EXPUNGEs right."""
    srv = account({"imap.expunge_history": "1s"})
    for i in range(6):
        deliver(srv, simple(f"h{i}"))
    a = Imap(srv)
    assert a.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
    assert a.cmd("ENABLE", "QRESYNC").status == "OK"
    sel = a.select()
    uidv, hms = sel.code("UIDVALIDITY"), int(sel.code("HIGHESTMODSEQ"))
    old = Imap(srv)  # selected before the expunges, asks for nothing until after the pruning
    assert old.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
    old.select()
    b = Imap(srv)
    assert b.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
    b.select()
    assert b.cmd("UID", "STORE", "2,3,5", "+FLAGS.SILENT", "(\\Deleted)").status == "OK"
    assert b.cmd("EXPUNGE").status == "OK"
    time.sleep(2.2)
    out = srv.cli("store", "gc").stdout
    assert "3 expunges forgotten" in out, out
    assert db_count(srv, "expunged") == 0

    c = Imap(srv)
    assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
    assert c.cmd("ENABLE", "QRESYNC").status == "OK"
    r = c.cmd("SELECT", "INBOX", f"(QRESYNC ({uidv} {hms}))")
    assert r.status == "OK" and r.lines("VANISHED") == [b"(EARLIER) 2:3,5"], r
    c.cmd("UNSELECT")
    r = c.cmd("SELECT", "INBOX", f"(QRESYNC ({uidv} {hms} 1:4))")
    assert r.lines("VANISHED") == [b"(EARLIER) 2:3"], r
    r = c.cmd("UID", "FETCH", "1:4,6", "(FLAGS)", f"(CHANGEDSINCE {hms} VANISHED)")
    assert r.status == "OK" and r.lines("VANISHED") == [b"(EARLIER) 2:3"], r
    # A new expunge is remembered one by one again.
    assert b.cmd("UID", "STORE", "6", "+FLAGS.SILENT", "(\\Deleted)").status == "OK"
    assert b.cmd("EXPUNGE").status == "OK"
    r = c.cmd("NOOP")
    assert r.lines("VANISHED") == [b"6"], r

    r = old.cmd("NOOP")
    assert r.numbers("EXPUNGE") == [2, 2, 3, 3], r
    r = old.fetch("1:*", "(UID)")
    assert [int(d["UID"]) for _, d in r.fetches()] == [1, 4], r
    for cl in (a, b, c, old):
        cl.close()


def test_qresync_without_enable_is_refused(connect):
    c = connect()
    st = status_of(c, "INBOX", "(UIDVALIDITY)")
    r = c.cmd("SELECT", "INBOX", f"(QRESYNC ({st['UIDVALIDITY']} 1))")
    assert r.status == "BAD", r


# ---- COPY, MOVE, APPEND ------------------------------------------------------------------------

def test_copy_and_move(connect, srv):
    for i in range(3):
        deliver(srv, simple(f"c{i}"))
    c = connect()
    c.select()
    c.cmd("STORE", "1", "+FLAGS", "(\\Flagged kw1)")
    arch = status_of(c, "Archive")
    r = c.cmd("COPY", "1:2", "Archive")
    assert r.status == "OK", r
    uidv, src, dst = r.code("COPYUID").split(" ")
    assert int(uidv) == arch["UIDVALIDITY"] and uid_set(src) == [1, 2]
    assert uid_set(dst) == [arch["UIDNEXT"], arch["UIDNEXT"] + 1]
    assert status_of(c, "INBOX")["MESSAGES"] == 3
    r = c.cmd("MOVE", "2:3", "Trash")
    assert r.status == "OK", r
    copyuid = r.code("COPYUID")
    assert copyuid and uid_set(copyuid.split(" ")[1]) == [2, 3], r
    assert any(u.startswith(b"OK [COPYUID") for u in r.untagged), \
        "RFC 6851: COPYUID in an untagged OK before the expunges"
    exp = r.numbers("EXPUNGE")
    assert exp in ([3, 2], [2, 2]), r
    assert uids_of(c) == [1]
    assert status_of(c, "Trash")["MESSAGES"] == 2
    r = c.cmd("UID", "MOVE", "1", "Junk")
    assert r.status == "OK" and r.numbers("EXPUNGE") == [1], r
    assert r.code("COPYUID").split(" ")[1] == "1"
    c.select("Archive")
    assert flags_of(c)[1] == ["\\Flagged", "kw1"], "COPY keeps flags and keywords"
    r = c.cmd("COPY", "1", "Nowhere")
    assert r.status == "NO" and r.code("TRYCREATE") is not None, r
    r = c.cmd("MOVE", "1", "Nowhere")
    assert r.status == "NO" and r.code("TRYCREATE") is not None, r
    r = c.cmd("UID", "COPY", "77", "Trash")
    assert r.status == "OK" and r.code("COPYUID") is None, r
    assert status_of(c, "Archive")["MESSAGES"] == 2


def test_imaplib_copy_and_move(imap, srv):
    deliver(srv, simple("imaplib copy"))
    m = imap()
    m.select("INBOX")
    typ, data = m.copy("1", "Archive")
    assert typ == "OK" and b"[COPYUID " in data[0]
    typ, data = m._simple_command("MOVE", "1", "Trash")
    assert typ == "OK"
    typ, data = m.select("INBOX")
    assert data == [b"0"]


def test_append_flags_date_and_appenduid(connect):
    c = connect()
    st = status_of(c, "Drafts")
    msg = simple("draft")
    r = c.cmd("APPEND", "Drafts", "(\\Draft \\Seen $Todo)", '"05-Mar-2021 08:09:10 +0200"',
              Lit(msg))
    assert r.status == "OK", r
    uidv, uid = r.code("APPENDUID").split(" ")
    assert int(uidv) == st["UIDVALIDITY"] and int(uid) == st["UIDNEXT"]
    c.select("Drafts")
    d = c.fetch("1", "(UID FLAGS INTERNALDATE BODY.PEEK[] RFC822.SIZE)").fetches()[0][1]
    assert d["UID"] == uid
    assert sorted(d["FLAGS"]) == ["$Todo", "\\Draft", "\\Seen"]
    assert d["INTERNALDATE"] == b"05-Mar-2021 08:09:10 +0200" or \
        d["INTERNALDATE"] == b"05-Mar-2021 06:09:10 +0000"
    assert d["BODY[]"] == msg and int(d["RFC822.SIZE"]) == len(msg)
    r = c.cmd("APPEND", "Nowhere", Lit(msg))
    assert r.status == "NO" and r.code("TRYCREATE") is not None, r
    r = c.cmd("APPEND", "Drafts", "(\\Recent)", Lit(msg))
    assert r.status in ("OK", "BAD"), r
    r = c.cmd("APPEND", "Drafts", '"not a date"', Lit(msg))
    assert r.status == "BAD", r


def test_append_to_selected_mailbox_reports_exists(connect):
    # The APPEND itself announces its message, so that the client can use its APPENDUID at
    # once (a draft saved, then the older copy deleted). Repeated: the store's change notice
    # reaches the session asynchronously, and the command must not depend on it.
    c = connect()
    c.select()
    for i in range(1, 21):
        r = c.cmd("APPEND", "INBOX", Lit(simple(f"self {i}")))
        assert r.status == "OK", r
        assert r.numbers("EXISTS") == [i], (i, r)
        uid = r.code("APPENDUID").split(" ")[1]
        r = c.cmd("UID", "STORE", uid, "+FLAGS", "(\\Seen)")
        assert r.status == "OK" and len(r.fetches()) == 1, (i, r)
    r = c.cmd("UID", "COPY", "1", "INBOX")
    assert r.status == "OK" and r.numbers("EXISTS") == [21], r


def test_append_then_uid_store_under_concurrency(connect):
    # The same as above with several sessions at once on shared mailboxes, where the change
    # notices lag most: every APPEND must announce its own message, and every UID STORE and
    # UID EXPUNGE on its APPENDUID must find it, so that the mailboxes end empty.
    errors = []

    def client(user):
        c = connect(user=user)
        c.select()
        for i in range(25):
            r = c.cmd("APPEND", "INBOX", Lit(simple(f"{user} {i}")))
            if r.status != "OK" or not r.numbers("EXISTS"):
                errors.append(("APPEND", user, i, r))
                return
            uid = r.code("APPENDUID").split(" ")[1]
            r = c.cmd("UID", "STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
            r2 = c.cmd("UID", "EXPUNGE", uid)
            if r.status != "OK" or r2.status != "OK" or not r2.lines("EXPUNGE"):
                errors.append(("EXPUNGE", user, i, r, r2))
                return

    threads = [threading.Thread(target=client, args=(ALICE if i % 2 else BOB,))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT * 4)
    assert errors == []
    c = connect()
    assert status_of(c, "INBOX")["MESSAGES"] == 0
    c = connect(user=BOB)
    assert status_of(c, "INBOX")["MESSAGES"] == 0


def test_multiappend(connect):
    c = connect()
    st = status_of(c, "Archive")
    m1, m2 = simple("multi one"), simple("multi two")
    r = c.cmd("APPEND", "Archive", "(\\Seen)", Lit(m1), "(\\Flagged)", Lit(m2))
    assert r.status == "OK", r
    uidv, uids = r.code("APPENDUID").split(" ")
    assert int(uidv) == st["UIDVALIDITY"]
    assert uid_set(uids) == [st["UIDNEXT"], st["UIDNEXT"] + 1]
    c.select("Archive")
    d = c.fetch("1:*", "(FLAGS BODY.PEEK[])").fetches()
    assert [(x["FLAGS"], x["BODY[]"]) for _, x in d] == [(["\\Seen"], m1), (["\\Flagged"], m2)]
    # All or nothing: a bad second message leaves no first one behind.
    r = c.cmd("APPEND", "Archive", Lit(m1), '"bad date"', Lit(m2))
    assert r.status in ("BAD", "NO"), r
    assert status_of(c, "Archive")["MESSAGES"] == 2


def test_literal_plus_append(connect):
    c = connect()
    m1, m2 = simple("nonsync one"), simple("nonsync two")
    tag = c.tag()
    c.send(tag.encode() + b" APPEND INBOX {%d+}\r\n" % len(m1) + m1 +
           b" (\\Seen) {%d+}\r\n" % len(m2) + m2 + b"\r\n")
    r = c.finish(tag)
    assert r.status == "OK" and r.code("APPENDUID") is not None, r
    assert not any(u.startswith(b"+") for u in r.untagged)
    c.select()
    d = c.fetch("1:*", "(FLAGS BODY.PEEK[])").fetches()
    assert [x["BODY[]"] for _, x in d] == [m1, m2]
    # A nonsync literal inside another command (LITERAL+ is not only for APPEND).
    tag = c.tag()
    c.send(tag.encode() + b" CREATE {6+}\r\nlit/ab\r\n")
    assert c.finish(tag).status == "OK"
    assert c.cmd("STATUS", "lit/ab", "(MESSAGES)").status == "OK"


def test_literal_minus_before_login(connect):
    c = connect(login=False)
    tag = c.tag()
    c.send(f"{tag} LOGIN {{{len(ALICE)}+}}\r\n{ALICE} {{{len(PW)}+}}\r\n{PW}\r\n".encode())
    r = c.finish(tag)
    assert r.status == "OK", r
    c2 = connect(login=False)
    tag = c2.tag()
    c2.send(f"{tag} LOGIN {{5000+}}\r\n".encode())
    c2.sock.settimeout(5)
    line = c2.response()
    # RFC 7888 4: over 4096 octets is refused, with TOOBIG (the RFC says a tagged BAD).
    assert re.match(tag.encode() + rb" (BAD|NO) \[TOOBIG\]", line) or \
        line.startswith(b"* BYE"), line


def test_large_append_is_identical(imap, connect, srv):
    """Literals over 256 KiB are streamed to a file as they arrive: several of them, of
    several sizes, synchronizing (imaplib) and not (LITERAL+), must come back byte for byte,
    from FETCH and in the stored file."""
    m = imap()
    sent = []
    for k in range(8):
        body = b"".join(b"line %06d %d " % (i, k) + b"x" * 60 + b"\r\n"
                        for i in range(4200 + 700 * k))
        msg = simple(f"large {k}", body=body.decode())
        assert len(msg) > 300 * 1024
        typ, data = m.append("Archive", "(\\Seen)", None, msg)
        assert typ == "OK" and b"[APPENDUID " in data[0], data
        sent.append(msg)
    c = connect()
    for k in range(4):
        msg = simple(f"nonsync {k}", body="z" * 70 + "\r\n" * 1 + ("q" * 78 + "\r\n") * 5000)
        tag = c.tag()
        c.send(tag.encode() + b" APPEND Archive {%d+}\r\n" % len(msg) + msg + b"\r\n")
        r = c.finish(tag)
        assert r.status == "OK", r
        sent.append(msg)
    m.select("Archive")
    typ, data = m.fetch("1:*", "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    got = [d for d in data if isinstance(d, tuple)]
    assert len(got) == len(sent)
    for k, (head, body) in enumerate(got):
        assert body == sent[k], f"message {k + 1} differs from byte {first_diff(body, sent[k])}"
        assert int(re.search(rb"RFC822.SIZE (\d+)", head).group(1)) == len(sent[k])
    stored = [data for _, data in mailbox_messages(srv, ALICE, "Archive")]
    assert stored == sent
    typ, data = m.fetch("1", "(BODY.PEEK[]<300000.100>)")
    assert data[0][1] == sent[0][300000:300100]


def first_diff(a, b):
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))


def test_append_over_limit_is_refused(account):
    srv = account({"imap.append_limit": "64K"})
    c = Imap(srv)
    try:
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        assert "APPENDLIMIT=65536" in capability(c)
        r = c.cmd("APPEND", "INBOX", Lit(simple("big", body="y" * 70000)))
        assert r.status == "NO" and r.code("TOOBIG") is not None, r
        assert c.cmd("NOOP").status == "OK"
        assert status_of(c, "INBOX")["MESSAGES"] == 0
        # A non-synchronizing literal over the limit: already on its way, so the server has
        # to read past it (or say BYE and close); either way it must not leave us hanging.
        tag = c.tag()
        c.send(tag.encode() + b" APPEND INBOX {70000+}\r\n" + b"z" * 70000 + b"\r\n")
        r = c.finish(tag)
        assert r.status in ("NO", "BAD") and r.code("TOOBIG") is not None, r
        c.sock.settimeout(5)
        c.send(b"n1 NOOP\r\n")
        try:
            line = c.response()
        except socket.timeout:
            raise AssertionError("no answer to NOOP after the refused LITERAL+ APPEND")
        except EOFError:
            raise AssertionError("connection closed without BYE after the refused APPEND")
        if line.startswith(b"* BYE"):
            assert c.closed()
        else:
            assert line.startswith(b"n1 OK"), line
            assert status_of(c, "INBOX")["MESSAGES"] == 0
    finally:
        c.close()


# ---- EXPUNGE, CLOSE, UNSELECT ------------------------------------------------------------------

def apply_expunges(uids, numbers):
    uids = list(uids)
    for n in numbers:
        del uids[n - 1]
    return uids


def test_expunge_and_uid_expunge(connect, srv):
    for i in range(6):
        deliver(srv, simple(f"e{i}"))
    c = connect()
    c.select()
    c.cmd("STORE", "2,4", "+FLAGS.SILENT", "(\\Deleted)")
    r = c.cmd("EXPUNGE")
    assert r.status == "OK", r
    assert apply_expunges([1, 2, 3, 4, 5, 6], r.numbers("EXPUNGE")) == [1, 3, 5, 6], r
    assert uids_of(c) == [1, 3, 5, 6]
    c.cmd("UID", "STORE", "5:6", "+FLAGS.SILENT", "(\\Deleted)")
    r = c.cmd("UID", "EXPUNGE", "6")
    assert r.status == "OK" and r.numbers("EXPUNGE") == [4], r
    assert uids_of(c) == [1, 3, 5]
    r = c.cmd("EXPUNGE")
    assert r.numbers("EXPUNGE") == [3]
    r = c.cmd("EXPUNGE")
    assert r.status == "OK" and r.numbers("EXPUNGE") == []
    c.select(examine=True)
    r = c.cmd("EXPUNGE")
    assert r.status == "NO", "EXPUNGE in a read-only mailbox"


def test_close_expunges_silently_and_unselect_does_not(connect, srv):
    for i in range(3):
        deliver(srv, simple(f"x{i}"))
    c = connect()
    c.select()
    c.cmd("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    r = c.cmd("UNSELECT")
    assert r.status == "OK" and r.numbers("EXPUNGE") == [], r
    assert status_of(c, "INBOX")["MESSAGES"] == 3
    assert c.cmd("FETCH", "1", "(FLAGS)").status == "BAD", "nothing selected after UNSELECT"
    c.select(examine=True)
    assert c.cmd("CLOSE").status == "OK"
    assert status_of(c, "INBOX")["MESSAGES"] == 3, "CLOSE of EXAMINE expunges nothing"
    c.select()
    r = c.cmd("CLOSE")
    assert r.status == "OK" and r.numbers("EXPUNGE") == [], r
    assert status_of(c, "INBOX")["MESSAGES"] == 2
    assert c.cmd("CLOSE").status == "BAD"
    r = c.cmd("UNSELECT")
    assert r.status == "BAD", r


def test_select_other_mailbox_does_not_expunge(connect, srv):
    deliver(srv, simple("stay"))
    c = connect()
    c.select()
    c.cmd("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    r = c.select("Archive")
    assert r.numbers("EXPUNGE") == [] and status_of(c, "INBOX")["MESSAGES"] == 1
    c.cmd("ENABLE", "QRESYNC")
    c.select("INBOX")
    r = c.select("Archive")
    assert r.numbers("EXPUNGE") == []
    assert any(u.startswith(b"OK [CLOSED]") for u in r.untagged), \
        f"RFC 7162 3.2.11 / RFC 9051: [CLOSED] when one mailbox replaces another: {r}"
    assert status_of(c, "INBOX")["MESSAGES"] == 1


# ---- several sessions --------------------------------------------------------------------------

def test_changes_reach_other_sessions(connect, srv):
    for i in range(3):
        deliver(srv, simple(f"s{i}"))
    a = connect()
    b = connect()
    a.select()
    b.select()
    b.cmd("STORE", "1", "+FLAGS", "(\\Flagged)")
    r = a.cmd("NOOP")
    assert [(msn, d["FLAGS"]) for msn, d in r.fetches()] == [(1, ["\\Flagged"])], r
    b.cmd("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
    b.cmd("EXPUNGE")
    r = a.cmd("NOOP")
    assert r.numbers("EXPUNGE") == [2], r
    deliver(srv, simple("new"))
    r = a.cmd("NOOP")
    assert r.numbers("EXISTS") == [3], r
    assert uids_of(a) == [1, 3, 4]
    r = a.cmd("CHECK")
    assert r.status == "OK"
    # FETCH, STORE and SEARCH must not send EXPUNGE (RFC 3501 7.4.1): only NOOP and friends.
    b.cmd("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    b.cmd("EXPUNGE")
    r = a.cmd("FETCH", "1", "(UID)")
    assert r.lines("EXPUNGE") == [], r
    r = a.cmd("NOOP")
    assert r.numbers("EXPUNGE") == [1], r
    assert uids_of(a) == [3, 4]


def test_idle_reports_new_mail(connect, srv):
    deliver(srv, simple("before"))
    a = connect()
    b = connect()
    a.select()
    b.select()
    tag = a.tag()
    a.send(f"{tag} IDLE\r\n".encode())
    assert a.response().startswith(b"+")
    t = time.monotonic()
    deliver(srv, simple("during idle"))
    a.sock.settimeout(5)
    line = a.response()
    elapsed = time.monotonic() - t
    assert line == b"* 2 EXISTS", line
    print(f"IDLE notice after {elapsed:.3f}s")
    b.cmd("STORE", "1", "+FLAGS", "(\\Answered)")
    line = a.response()
    assert re.match(rb"\* 1 FETCH \(.*FLAGS \(\\Answered\)", line), line
    b.cmd("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    b.cmd("EXPUNGE")
    lines = [a.response()]
    while lines[-1] != b"* 1 EXPUNGE" and len(lines) < 3:
        assert lines[-1].startswith(b"* 1 FETCH"), lines  # the \Deleted flag, first
        lines.append(a.response())
    assert lines[-1] == b"* 1 EXPUNGE", lines
    a.send(b"DONE\r\n")
    a.sock.settimeout(TIMEOUT)
    r = a.finish(tag)
    assert r.status == "OK", r
    assert uids_of(a) == [2]


def test_idle_reports_changes_made_before_it(connect, srv):
    a = connect()
    a.select()
    deliver(srv, simple("queued"))
    tag = a.tag()
    a.send(f"{tag} IDLE\r\n".encode())
    lines = [a.response()]
    a.sock.settimeout(5)
    if lines[0].startswith(b"+"):
        lines.append(a.response())
    assert b"* 1 EXISTS" in lines, lines
    a.send(b"DONE\r\n")
    a.sock.settimeout(TIMEOUT)
    assert a.finish(tag).status == "OK"


def test_idle_without_done(connect):
    a = connect()
    tag = a.tag()
    a.send(f"{tag} IDLE\r\n".encode())
    assert a.response().startswith(b"+")
    a.send(b"NOOP\r\n")
    r = a.finish(tag)
    assert r.status == "BAD", r
    assert a.cmd("NOOP").status == "OK"


def test_idle_and_command_timeouts_log_out(account):
    srv = account({"imap.idle_timeout": "1s", "imap.timeout": "2s"})
    c = Imap(srv)
    d = Imap(srv)
    try:
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        c.send(b"i IDLE\r\n")
        assert c.response().startswith(b"+")
        t = time.monotonic()
        assert c.closed(timeout=10), "IDLE past imap.idle_timeout is ended"
        assert time.monotonic() - t < 10
        assert d.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        assert d.closed(timeout=10), "a silent session past imap.timeout is closed"
        assert "reason=timeout" in srv.read_log()
    finally:
        c.close()
        d.close()


# ---- limits ------------------------------------------------------------------------------------

def test_long_line_after_login(connect, srv):
    c = connect()
    c.send(b"a NOOP " + b"x" * (70 * 1024) + b"\r\n")
    line = c.response()
    assert line.startswith(b"* BYE"), line
    assert c.closed()
    d = connect()
    assert d.cmd("NOOP").status == "OK", "the server is alive"


def test_long_line_before_login(connect):
    c = connect(login=False)
    c.send(b"a LOGIN " + b"x" * 9000 + b" y\r\n")
    line = c.response()
    assert line.startswith(b"* BYE"), line
    assert c.closed()
    d = connect(login=False)
    assert d.cmd("CAPABILITY").status == "OK"


def test_line_just_under_the_limit_after_login(connect):
    c = connect()
    r = c.cmd("LIST", '""', q("x" * 200 + "*" + "y" * 50))
    assert r.status == "OK"
    r = c.cmd("FETCH", ",".join(["1"] * 10000), "(FLAGS)")
    assert r.status in ("BAD", "NO"), "nothing is selected"
    assert c.cmd("NOOP").status == "OK"


def test_huge_literal_is_refused(connect, srv):
    c = connect()
    c.send(b"a APPEND INBOX {18446744073709551615}\r\n")
    line = c.response()
    assert line.startswith(b"a NO") or line.startswith(b"a BAD") or line.startswith(b"* BYE"), \
        line
    if not line.startswith(b"* BYE"):
        assert c.cmd("NOOP").status == "OK"
    c2 = connect()
    c2.send(b"b APPEND INBOX {18446744073709551616}\r\n")
    line = c2.response()
    assert line.startswith(b"b NO") or line.startswith(b"b BAD") or line.startswith(b"* BYE"), \
        line
    c3 = connect()
    c3.send(b"c CREATE {18446744073709551615+}\r\n")
    line = c3.response()
    assert line.startswith(b"c NO") or line.startswith(b"c BAD") or line.startswith(b"* BYE"), \
        line
    c4 = connect(login=False)
    c4.send(b"d LOGIN {18446744073709551615}\r\n")
    line = c4.response()
    assert line.startswith(b"d NO") or line.startswith(b"d BAD") or line.startswith(b"* BYE"), \
        line
    assert srv.proc.poll() is None, "the server survived"
    d = connect()
    assert d.cmd("NOOP").status == "OK"


def test_too_many_bad_commands(connect, srv):
    c = connect()
    got = []
    for i in range(30):
        try:
            c.send(f"b{i} FROBNICATE\r\n".encode())
            line = c.response()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            break
        got.append(line)
        if line.startswith(b"* BYE"):
            break
    assert got[-1].startswith(b"* BYE") and b"Too many" in got[-1], got[-3:]
    assert len(got) <= 21, "the default imap.max_bad_commands is 20"
    assert all(x.startswith(b"b") and b" BAD " in x for x in got[:-1])
    assert c.closed()


def test_garbage_is_answered_with_bad(connect):
    c = connect()
    for line in (b"*", b"a", b"a SELECT", b"a FETCH 1", b'a LIST "" "unterminated',
                 b"a UID", b"a UID NOOP", b"a STORE 1 +FLAGS (\\Seen", b"a FETCH 0 (FLAGS)",
                 b"a LOGIN x y", b"a SELECT INBOX extra)", b"a NOOP\x00", b"a\tNOOP"):
        c.send(line + b"\r\n")
        resp = c.response()
        assert resp.split(b" ", 2)[1] == b"BAD", (line, resp)
    for line in (b"", b"    "):   # ignored or answered with a BAD: both fine
        c.send(line + b"\r\n")
        tag = c.tag()
        c.send(tag.encode() + b" NOOP\r\n")
        while True:
            resp = c.response()
            if resp.startswith(tag.encode()):
                assert resp.startswith(tag.encode() + b" OK"), resp
                break
            assert b"BAD" in resp, (line, resp)
    assert c.cmd("NOOP").status == "OK"


# ---- persistence -------------------------------------------------------------------------------

def test_state_survives_restart(srv):
    deliver(srv, simple("keep me"))
    deliver(srv, simple("keep me too"))
    c = Imap(srv)
    c.cmd("LOGIN", q(ALICE), q(PW))
    c.cmd("CREATE", "Projects/2024")
    c.cmd("SUBSCRIBE", "Projects/2024")
    sel = c.select()
    c.cmd("STORE", "1", "+FLAGS", "(\\Flagged \\Seen $Important)")
    c.cmd("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
    c.cmd("COPY", "1", "Projects/2024")
    before = status_of(c, "INBOX")
    c.cmd("LOGOUT")
    c.close()
    assert srv.stop() == 0
    srv.start()
    c = Imap(srv)
    try:
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        assert status_of(c, "INBOX") == before
        boxes = list_map(c.cmd("LIST", '""', "*"))
        assert "Projects/2024" in boxes and "\\haschildren" in boxes["Projects"][0]
        assert "Projects/2024" in list_map(c.cmd("LSUB", '""', "*"), "LSUB")
        r = c.select()
        assert r.code("UIDVALIDITY") == sel.code("UIDVALIDITY")
        assert flags_of(c) == {1: ["$Important", "\\Flagged", "\\Seen"], 2: ["\\Deleted"]}
        c.select("Projects/2024")
        assert flags_of(c) == {1: ["$Important", "\\Flagged", "\\Seen"]}
    finally:
        c.close()


def test_shutdown_says_bye(srv):
    c = Imap(srv)
    try:
        c.cmd("LOGIN", q(ALICE), q(PW))
        c.select()
        srv.proc.send_signal(15)
        c.sock.settimeout(10)
        line = c.response()
        assert line.startswith(b"* BYE"), line
        assert srv.stop() == 0
    finally:
        c.close()


# ---- COMPRESS=DEFLATE (RFC 4978) ------------------------------------------------------------------

def test_compress_deflate(srv):
    for i in range(3):
        deliver(srv, simple(f"z{i}", body="compressible text\r\n" * 200))
    s = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=TIMEOUT)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    s.sendall(f'a LOGIN {ALICE} "{PW}"\r\n'.encode())
    assert b"COMPRESS=DEFLATE" in f.readline()
    s.sendall(b"b COMPRESS DEFLATE\r\n")
    assert f.readline() == b"b OK DEFLATE active\r\n"
    co, de = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)

    def send(text):
        s.sendall(co.compress(text) + co.flush(zlib.Z_SYNC_FLUSH))

    got, wire = b"", 0

    def until(tag):
        nonlocal got, wire
        while tag not in got:
            chunk = s.recv(65536)
            assert chunk, got
            wire += len(chunk)
            got += de.decompress(chunk)
        return got

    send(b"c SELECT INBOX\r\nd FETCH 1:* (BODY.PEEK[])\r\n")
    out = until(b"d OK")
    assert b"* 3 EXISTS" in out and out.count(b"compressible text") == 600
    assert wire < len(out) / 5, "the FETCH went over the wire compressed"
    send(b"e COMPRESS DEFLATE\r\n")
    assert b"e NO [COMPRESSIONACTIVE]" in until(b"e NO")
    send(b"f LOGOUT\r\n")
    assert b"f OK" in until(b"f OK")
    s.close()


def test_compress_garbage_closes(srv):
    s = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=TIMEOUT)
    f = s.makefile("rb")
    f.readline()
    s.sendall(f'a LOGIN {ALICE} "{PW}"\r\nb COMPRESS DEFLATE\r\n'.encode())
    f.readline()
    assert f.readline() == b"b OK DEFLATE active\r\n"
    s.sendall(b"\xff\xfe this is not a deflate stream" * 10)
    assert s.recv(100) == b""  # the server closes the connection
    s.close()


# ---- QUOTA (RFC 9208) --------------------------------------------------------------------------

def test_quota_reported_and_enforced(account):
    srv = account({"storage.quota": "20K"})
    out = srv.cli("user", "quota", ALICE).stdout
    assert "used: 0 bytes" in out and "quota (default): 20480 bytes" in out, out
    deliver(srv, simple("q1", body="x" * 70 + "\r\n" * 100))
    c = Imap(srv)
    assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
    assert "QUOTA" in c.cmd("CAPABILITY").lines("CAPABILITY")[0].decode()
    r = c.cmd("GETQUOTAROOT", "INBOX")
    assert r.status == "OK", r
    assert r.lines("QUOTAROOT") == [b'INBOX ""'], r
    m = re.match(rb'"" \(STORAGE (\d+) 20\)', r.lines("QUOTA")[0])
    assert m and 1 <= int(m.group(1)) <= 2, r
    assert c.cmd("GETQUOTA", '""').status == "OK"
    assert c.cmd("GETQUOTA", '"other"').status == "NO"
    assert c.cmd("SETQUOTA", '""', "(STORAGE 1000)").code("NOPERM") is not None
    big = simple("big", body=("y" * 70 + "\r\n") * 300)   # ~21 KB: over the quota
    r = c.cmd("APPEND", "Archive", Lit(big))
    assert r.status == "NO" and r.code("OVERQUOTA") is not None, r
    assert status_of(c, "Archive")["MESSAGES"] == 0
    # Filling the account up to the quota makes SMTP answer 452 4.2.2 (try again later).
    r = c.cmd("APPEND", "Archive", Lit(simple("fill", body=("z" * 70 + "\r\n") * 230)))
    assert r.status == "OK", r
    deliver(srv, simple("over", body=("w" * 70 + "\r\n") * 60))  # the last one that fits
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=TIMEOUT) as s:
        s.ehlo()
        s.mail("sender@example.org")
        code, msg = s.rcpt(ALICE)
        assert code == 452 and b"4.2.2" in msg, (code, msg)
        assert s.rcpt(BOB)[0] == 250   # other accounts are not affected
    # An account of its own: raised quota, mail flows again.
    assert "quota set" in srv.cli("user", "quota", ALICE, "1M").stdout
    deliver(srv, simple("after"))
    assert "unlimited" in srv.cli("user", "quota", BOB, "unlimited").stdout or True
    assert "quota: unlimited" in srv.cli("user", "quota", BOB).stdout
    # Expunging gives the space back.
    r = c.cmd("GETQUOTA", '""')
    before = int(re.match(rb'"" \(STORAGE (\d+)', r.lines("QUOTA")[0]).group(1))
    c.cmd("SELECT", "Archive")
    c.cmd("STORE", "1:*", "+FLAGS", "(\\Deleted)")
    c.cmd("EXPUNGE")
    r = c.cmd("GETQUOTA", '""')
    used = int(re.match(rb'"" \(STORAGE (\d+)', r.lines("QUOTA")[0]).group(1))
    assert used <= before - 16, (before, r)
    c.close()
    assert srv.cli("user", "quota", ALICE, "lots", check=False).returncode == 2


# ---- UTF8=ACCEPT (RFC 6855) and modified UTF-7 names ------------------------------------------

def test_utf8_accept_mailbox_names(connect):
    legacy = connect()
    # A legacy client creates a name in modified UTF-7 (RFC 3501 5.1.3)...
    assert legacy.cmd("CREATE", "Entw&APw-rfe").status == "OK"
    assert "Entw&APw-rfe" in list_map(legacy.cmd("LIST", '""', "*"))
    c = connect()
    assert "UTF8=ACCEPT" in c.cmd("CAPABILITY").lines("CAPABILITY")[0].decode()
    assert c.cmd("ENABLE", "UTF8=ACCEPT").lines("ENABLED") == [b"UTF8=ACCEPT"]
    # ...which a UTF-8 client sees in UTF-8, and the other way round.
    names = list_map(c.cmd("LIST", '""', "*"))
    assert "Entwürfe" in names, names
    assert c.cmd("CREATE", '"Grüße/Tom & Jerry"').status == "OK"
    assert c.cmd("SELECT", '"Grüße/Tom & Jerry"').status == "OK"
    r = c.cmd("APPEND", '"Grüße/Tom & Jerry"', Lit(simple("utf8")))
    assert r.status == "OK", r
    st = c.cmd("STATUS", '"Grüße/Tom & Jerry"', "(MESSAGES)")
    assert st.status == "OK" and b"(MESSAGES 1)" in st.lines("STATUS")[0], st
    assert "Grüße/Tom & Jerry" in list_map(c.cmd("LIST", '""', '"Grüße/%"'))
    legacy_names = list_map(legacy.cmd("LIST", '""', "*"))
    assert "Gr&APwA3w-e/Tom &- Jerry" in legacy_names, legacy_names
    # Malformed UTF-8 is refused, and nothing is created.
    r = c.cmd("CREATE", Lit(b"bad\xc3(name"))
    assert r.status in ("NO", "BAD"), r


def test_connection_dropped_in_the_middle_of_a_big_fetch(srv, connect):
    body = ("z" * 76 + "\r\n") * 2000   # ~156 KB each: the FETCH goes out in several chunks
    for i in range(6):
        deliver(srv, simple(f"big{i}", body=body))
    s = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=TIMEOUT)
    s.recv(4096)
    s.sendall(f'a LOGIN {ALICE} "{PW}"\r\nb SELECT INBOX\r\nc FETCH 1:* (BODY.PEEK[])\r\n'.encode())
    got = b""
    while len(got) < 100_000:
        got += s.recv(65536)
    s.close()   # the server must drop the rest of the FETCH and free what it held
    c = connect()
    assert c.cmd("SELECT", "INBOX").status == "OK"
    assert c.cmd("NOOP").status == "OK"
