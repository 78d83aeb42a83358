"""Interoperability with a real Postfix (Debian package postfix) on loopback, in both directions.

Postamt -> Postfix: Postamt's queue runner delivers to a Postfix instance of the test's own
(config_directory, queue_directory, data_directory, maillog and a virtual Maildir tree under the
test's temporary folder; smtpd on a free port of 127.0.0.1), through `queue.routes` or through an
MX lookup at a dnsmasq on loopback (`queue.resolvers`, `queue.mx_port`). Postfix accepts mail for
remote.test into one Maildir per address (virtual(8)); unknown addresses get its 550 5.1.1, and
an access table (hash:, rebuilt with postmap while Postfix runs) answers 450 for chosen ones.

Postfix -> Postamt: the same instance relays everything that is not remote.test to
`relayhost = [127.0.0.1]:<Postamt's smtp port>` (STARTTLS at `smtp_tls_security_level = may`),
mail submitted with Postfix's own sendmail(1) -C and the delivery notices Postfix writes.

No DNS from Postfix, by configuration: every next hop is a numeric address in brackets
(relayhost) and remote.test is final at Postfix itself; `smtp_dns_support_level = disabled`
and `smtp_host_lookup = native` (the client never asks DNS, and glibc answers numeric addresses
without a query); `smtpd_peername_lookup = no` (no reverse lookup of the client);
`myhostname`/`mydomain` are set (no lookup of the machine's name); `inet_interfaces` and
`mynetworks` are numeric; no DNS-based restrictions. Checked once by hand, a run of this whole
file under `strace -f -e trace=connect,sendto,sendmsg` (Postfix's daemons included): every
inet connect or sendto went to 127.0.0.1, none to port 53 (Postamt's MX lookups go to the
test's dnsmasq on another port).

Postfix's master wants root (its daemons switch to user postfix); the tests skip when not run as
root or when Postfix is not installed (`make test-deps` installs it without a system instance).
Each instance is stopped by its fixture (`postfix stop`, `postfix abort`, then any process still
carrying its MAIL_CONFIG is killed), also when the test failed. Postfix's queue timers are
shortened (queue_run_delay, backoff times) and every wait is a bounded poll.
"""
import grp
import os
import pwd
import random
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import mailbox_messages, queue_count

PW = "correct horse battery"
SBIN = "/usr/sbin"
POSTFIX = os.path.join(SBIN, "postfix")
POSTMAP = os.path.join(SBIN, "postmap")
SENDMAIL = os.path.join(SBIN, "sendmail")
DNSMASQ = "/usr/sbin/dnsmasq"
DAEMONS = "/usr/lib/postfix/sbin"
REMOTE = "remote.test"
# The addresses Postfix has a Maildir for; everything else at remote.test is unknown (550).
MAILBOXES = ("friend", "other", "third", "later", "jörg")


def _why_not():
    if os.geteuid() != 0:
        return "Postfix's master needs root (run the tests as root, as CI does)"
    for path in (POSTFIX, POSTMAP, SENDMAIL, os.path.join(DAEMONS, "master"),
                 os.path.join(DAEMONS, "smtpd")):
        if not os.path.exists(path):
            return f"{path} is missing (install the Debian package postfix: make test-deps)"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the user postfix or the group postdrop is missing (package postfix)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def wait_for(cond, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def backdate(path):
    """Postfix waits until a configuration file it reads is some seconds old (a writer may
    not be done yet): our files are complete, so they get an mtime in the past."""
    past = time.time() - 60
    os.utime(path, (past, past))


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    for _ in range(200):
        port = random.randrange(20000, 64000)
        if port_free(port):
            return port
    raise RuntimeError("no free port on 127.0.0.1")


MASTER_CF = """\
# The services these tests use, none chrooted.
127.0.0.1:{port} inet n - n - - smtpd {smtpd_opts}
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp -o debug_peer_list=127.0.0.1
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
virtual   unix  - n n -     - virtual
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """One Postfix instance in `root`: accepts mail for remote.test on 127.0.0.1:port, relays
    the rest to relay_port (or refuses to send it anywhere)."""

    def __init__(self, root):
        self.root = root
        self.etc = os.path.join(root, "etc")
        self.spool = os.path.join(root, "spool")
        self.data = os.path.join(root, "data")
        self.vmail = os.path.join(root, "vmail")
        self.maillog = os.path.join(root, "maillog")
        self.port = free_port()
        self.started = False

    def configure(self, relay_port=None, tls=False, verbose_smtpd=False, access=None):
        for d in (self.root, self.etc, self.spool, self.vmail):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.data, exist_ok=True)
        os.chown(self.data, pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)
        os.chmod(self.data, 0o700)
        os.chown(self.vmail, 65534, 65534)
        self.make_queue_dirs()
        with open(os.path.join(self.etc, "vmailbox"), "w", encoding="utf-8") as f:
            for name in MAILBOXES:
                f.write(f"{name}@{REMOTE} {name}/\n")
        backdate(os.path.join(self.etc, "vmailbox"))
        tls_cf = ""
        if tls:
            key, cert = os.path.join(self.etc, "key.pem"), os.path.join(self.etc, "cert.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                            "/CN=mx.remote.test", "-keyout", key, "-out", cert],
                           check=True, capture_output=True, timeout=60)
            os.chmod(key, 0o600)
            tls_cf = (f"smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {key}, {cert}\n"
                      "smtpd_tls_loglevel = 1\n")
        else:
            tls_cf = "smtpd_tls_security_level = none\n"
        if relay_port:
            out_cf = f"relayhost = [127.0.0.1]:{relay_port}\n"
        else:
            out_cf = "relayhost =\ndefault_transport = error:no outbound mail in this test\n"
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.data}
meta_directory = /etc/postfix
command_directory = {SBIN}
daemon_directory = {DAEMONS}
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{REMOTE}
mydomain = {REMOTE}
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
virtual_mailbox_domains = {REMOTE}
virtual_mailbox_base = {self.vmail}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_recipient_restrictions = check_recipient_access hash:{self.etc}/access
smtputf8_enable = yes
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
smtpd_banner = $myhostname ESMTP
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
# No DNS (see the top of the test file).
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
# Quick retries inside Postfix.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_tls_security_level = may
smtp_tls_loglevel = 1
{tls_cf}{out_cf}"""
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(main_cf)
        backdate(os.path.join(self.etc, "main.cf"))
        smtpd_opts = "-o debug_peer_list=127.0.0.1" if verbose_smtpd else ""
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port, smtpd_opts=smtpd_opts))
        backdate(os.path.join(self.etc, "master.cf"))
        self.set_access(access or {})

    def make_queue_dirs(self):
        """The queue's directories with the owners and modes of /etc/postfix/postfix-files
        (what `postfix start` would make with post-install create-missing, in seconds of
        shell), so that the master can be started directly."""
        owner = pwd.getpwnam("postfix").pw_uid
        postdrop = grp.getgrnam("postdrop").gr_gid
        dirs = {name: (owner, -1, 0o700) for name in (
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
            "private", "saved", "trace")}
        dirs.update({"maildrop": (owner, postdrop, 0o730), "public": (owner, postdrop, 0o710),
                     "pid": (0, -1, 0o755)})
        for name, (uid, gid, mode) in dirs.items():
            path = os.path.join(self.spool, name)
            os.makedirs(path, exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, mode)

    def set_access(self, table):
        """{address: "450 4.2.0 reason"}, rebuilt with postmap; smtpd notices the change
        before it accepts its next connection."""
        path = os.path.join(self.etc, "access")
        with open(path, "w") as f:
            for addr, action in table.items():
                f.write(f"{addr} {action}\n")
        backdate(path)
        db = path + ".db"
        before = int(os.stat(db).st_mtime) if os.path.exists(db) else None
        subprocess.run([POSTMAP, "-c", self.etc, f"hash:{path}"], check=True,
                       capture_output=True, timeout=60)
        # smtpd sees a changed table by its modification time, in whole seconds: a rebuild
        # within the second of the last one would go unnoticed.
        if before is not None and int(os.stat(db).st_mtime) == before:
            os.utime(db, (before - 1, before - 1))

    def postfix(self, *args, check=True, timeout=60):
        cmd = [POSTFIX, "-c", self.etc] + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            # Postfix tells why only to a terminal or syslog: ask again under script(1).
            why = subprocess.run(["script", "-qec", " ".join(cmd), "/dev/null"],
                                 capture_output=True, text=True, timeout=timeout)
            raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}: "
                                 f"{(why.stdout + p.stderr).strip()}\n{self.read_log()[-3000:]}")
        return p

    def start(self):
        """Starts the master directly (what `postfix start` ends with, without its seconds
        of shell checks: the directories were made by make_queue_dirs); `-w` returns once the
        master has initialised or failed."""
        self.started = True
        p = subprocess.run([os.path.join(DAEMONS, "master"), "-c", self.etc, "-w"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            why = self.postfix("check", check=False)
            raise AssertionError(f"postfix master did not start ({p.returncode}): {p.stderr}"
                                 f"{why.stderr}\n{self.read_log()[-3000:]}")
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"postfix does not listen on {self.port}: "
                                         f"{self.read_log()[-3000:]}")
                time.sleep(0.05)

    def master_pid(self):
        try:
            with open(os.path.join(self.spool, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def own_processes(self):
        """Processes of this instance: the master passes MAIL_CONFIG to all its daemons."""
        mine, want = [], f"MAIL_CONFIG={self.etc}".encode()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        mine.append(int(name))
            except OSError:
                pass
        return [p for p in mine if p != os.getpid()]

    def stop(self):
        if not self.started:
            return
        self.started = False
        self.postfix("stop", check=False)
        deadline = time.monotonic() + 15
        while self.own_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.own_processes():
            self.postfix("abort", check=False)
            deadline = time.monotonic() + 5
            while self.own_processes() and time.monotonic() < deadline:
                time.sleep(0.1)
        for pid in self.own_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def read_log(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def maildir(self, name):
        """The messages delivered to name@remote.test, as bytes, oldest first."""
        new = os.path.join(self.vmail, name, "new")
        try:
            files = sorted(os.listdir(new))
        except FileNotFoundError:
            return []
        out = []
        for fn in files:
            with open(os.path.join(new, fn), "rb") as f:
                out.append(f.read())
        return out

    def queue_empty(self):
        for q in ("maildrop", "incoming", "active", "deferred"):
            for _, _, files in os.walk(os.path.join(self.spool, q)):
                if files:
                    return False
        return True

    def sendmail(self, sender, rcpts, message):
        p = subprocess.run([SENDMAIL, "-C", self.etc, "-f", sender, "-i", "--"] + list(rcpts),
                           input=message, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr


@pytest.fixture
def make_postfix(tmpdir_world):
    instances = []

    def factory(name="postfix"):
        pf = Postfix(os.path.join(tmpdir_world, name))
        instances.append(pf)
        return pf

    yield factory
    for pf in instances:
        pf.stop()
        assert not pf.own_processes(), "Postfix processes left behind"
        log = pf.read_log()
        assert "panic:" not in log, log[-3000:]


def postamt(make_server, routes="", extra=None):
    conf = {
        "queue.routes": routes,
        "queue.retry_schedule": "1h",
        "queue.interval": "200ms",
        "queue.connect_timeout": "2s",
        "queue.command_timeout": "10s",
        "queue.data_timeout": "10s",
        "server.hostname": "mail.example.test",
    }
    conf.update(extra or {})
    srv = make_server(conf, start=False)
    for user in ("alice", "bob"):
        srv.cli("user", "add", f"{user}@example.test", "--password-stdin", input=PW + "\n")
    return srv


def pair(make_server, make_postfix, tls=True, extra=None, verbose_smtpd=False, access=None):
    """A Postamt routing remote.test to a Postfix that relays everything else back to it."""
    pf = make_postfix()
    srv = postamt(make_server, f"{REMOTE}=127.0.0.1:{pf.port}", extra)
    srv.start()
    pf.configure(relay_port=srv.ports["smtp"], tls=tls, verbose_smtpd=verbose_smtpd,
                 access=access)
    pf.start()
    return srv, pf


def submit(srv, rcpts, subject="interop", body="Hello, Postfix.\r\n.a leading dot\r\n",
           headers="", mail_options=(), rcpt_options=(), sender="alice@example.test"):
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    message = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
               f"{headers}\r\n{body}").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx)
        c.login(sender, PW)
        assert c.sendmail(sender, list(rcpts), message, list(mail_options),
                          list(rcpt_options)) == {}
    return message


def body_of(message):
    return message.split(b"\r\n\r\n", 1)[1]


def crlf(data):
    """Maildir files have bare LF line ends: compare on CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---- Postamt -> Postfix -------------------------------------------------------------------

@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_delivery_through_route(make_server, make_postfix, tls):
    srv, pf = pair(make_server, make_postfix, tls=tls)
    sent = submit(srv, [f"friend@{REMOTE}"])
    wait_for(lambda: len(pf.maildir("friend")) == 1, what="delivery into Postfix's Maildir")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    got = crlf(pf.maildir("friend")[0])
    assert got.startswith(b"Return-Path: <alice@example.test>\r\n"), got
    assert got.count(b"Return-Path:") == 1, "Postamt's own Return-Path is not sent on"
    assert b"Delivered-To: friend@remote.test\r\n" in got
    assert got.endswith(body_of(sent)), "the body (dot-stuffing undone) arrived intact"
    assert b"from mail.example.test (unknown [127.0.0.1])" in got, "EHLO server.hostname"
    log = srv.read_log()
    if tls:
        assert b"with ESMTPS id" in got
        assert "event=smtp_client_tls" in log
        assert "TLS connection established from unknown[127.0.0.1]" in pf.read_log()
    else:
        assert b"with ESMTP id" in got
        assert "event=smtp_client_tls" not in log
    assert re.search(rf"event=delivered .*rcpt=friend@{REMOTE}", log), log[-2000:]


@pytest.fixture
def dns(tmpdir_world):
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq-base is not installed (make test-deps)")
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            if port_free(port):
                break
    p = subprocess.Popen([DNSMASQ, "-k", f"--port={port}", "--listen-address=127.0.0.1",
                          "--bind-interfaces", "--no-resolv", "--no-hosts",
                          "--conf-file=/dev/null", "--local=/test/",
                          f"--pid-file={os.path.join(tmpdir_world, 'dnsmasq.pid')}",
                          f"--mx-host={REMOTE},mx.{REMOTE},10",
                          f"--host-record=mx.{REMOTE},127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answers():
        q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x06remote\x04test\x00"
             + b"\x00\x0f\x00\x01")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(0.2)
            try:
                u.sendto(q, ("127.0.0.1", port))
                return u.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return p.poll() is not None
    wait_for(answers, timeout=10, what="dnsmasq")
    assert p.poll() is None, p.stderr.read()
    yield f"127.0.0.1:{port}"
    p.terminate()
    p.wait(10)


def test_delivery_via_mx(make_server, make_postfix, dns):
    pf = make_postfix()
    srv = postamt(make_server, "", {"queue.resolvers": dns, "queue.mx_port": str(pf.port)})
    srv.start()
    pf.configure(relay_port=srv.ports["smtp"], tls=True)
    pf.start()
    sent = submit(srv, [f"friend@{REMOTE}"], subject="via mx")
    wait_for(lambda: len(pf.maildir("friend")) == 1, what="delivery via MX")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    assert crlf(pf.maildir("friend")[0]).endswith(body_of(sent))


def test_several_messages_one_connection(make_server, make_postfix):
    """Three messages waiting for the same destination go over one connection: they are
    deferred while Postfix is not there yet, then made due together with `queue retry`."""
    pf = make_postfix()
    srv = postamt(make_server, f"{REMOTE}=127.0.0.1:{pf.port}",
                  {"queue.connections_per_destination": "1"})
    srv.start()
    for i in range(3):
        submit(srv, [f"friend@{REMOTE}"], subject=f"number {i}")
    wait_for(lambda: srv.read_log().count("event=deferred") == 3, what="three deferrals")
    pf.configure(relay_port=srv.ports["smtp"], tls=True)
    pf.start()
    import json
    ids = sorted({str(r["id"]) for r in json.loads(srv.cli("queue", "list", "--json").stdout)})
    assert len(ids) == 3
    srv.cli("queue", "retry", *ids)
    wait_for(lambda: len(pf.maildir("friend")) == 3, what="three deliveries")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    subjects = sorted(re.search(rb"Subject: ([^\r\n]*)", m).group(1) for m in pf.maildir("friend"))
    assert subjects == [b"number 0", b"number 1", b"number 2"]
    sessions = re.findall(r"postfix/smtpd\[\d+\]: disconnect from .* mail=(\d+)", pf.read_log())
    assert sessions == ["3"], "one SMTP connection for the three messages"


def test_several_recipients_one_rejected(make_server, make_postfix):
    """One message for three mailboxes Postfix has and one it does not know: the three get
    it from one transaction, the unknown one (550 5.1.1 from Postfix) bounces into the
    sender's INBOX."""
    srv, pf = pair(make_server, make_postfix)
    rcpts = [f"friend@{REMOTE}", f"nobody@{REMOTE}", f"other@{REMOTE}", f"third@{REMOTE}"]
    sent = submit(srv, rcpts, subject="for four")
    for name in ("friend", "other", "third"):
        wait_for(lambda: len(pf.maildir(name)) == 1, what=f"delivery to {name}")
        assert crlf(pf.maildir(name)[0]).endswith(body_of(sent))
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    report = bounce.split(b"text/rfc822-headers")[0]
    assert b"Final-Recipient: rfc822; nobody@remote.test" in report
    assert b"Action: failed" in report and b"Status: 5.1.1" in report
    assert b"User unknown in virtual mailbox table" in report, "Postfix's reply is quoted"
    for name in ("friend", "other", "third"):
        assert f"{name}@{REMOTE}".encode() not in report
    assert b"Subject: for four" in bounce
    # One transaction: Postfix queued a single message for the three recipients.
    assert len(set(re.findall(r"postfix/cleanup\[\d+\]: (\w+): message-id", pf.read_log()))) == 1


def test_8bit_body_and_smtputf8_address(make_server, make_postfix):
    srv, pf = pair(make_server, make_postfix, verbose_smtpd=True)
    body = "Grüße aus Köln, 東京 und Αθήνα.\r\n".encode()
    headers = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" \
              "Content-Transfer-Encoding: 8bit\r\n"
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    # One 8-bit message to an ASCII address, one to a UTF-8 address (SMTPUTF8).
    for rcpt, opts in ((f"friend@{REMOTE}", ["BODY=8BITMIME"]),
                       (f"jörg@{REMOTE}", ["BODY=8BITMIME", "SMTPUTF8"])):
        msg = (f"From: alice@example.test\r\nTo: {rcpt}\r\nSubject: utf-8\r\n{headers}\r\n"
               .encode() + body)
        with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15) as c:
            c.starttls(context=ctx)
            c.login("alice@example.test", PW)
            assert c.sendmail("alice@example.test", [rcpt], msg, opts) == {}
    wait_for(lambda: len(pf.maildir("friend")) == 1, what="8-bit delivery")
    wait_for(lambda: len(pf.maildir("jörg")) == 1, what="SMTPUTF8 delivery")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    for name in ("friend", "jörg"):
        got = crlf(pf.maildir(name)[0])
        assert got.endswith(b"\r\n\r\n" + body), got
        assert b"Content-Transfer-Encoding: 8bit" in got
    assert "Delivered-To: jörg@remote.test".encode() in crlf(pf.maildir("jörg")[0])
    assert b"with UTF8SMTPS id" in pf.maildir("jörg")[0]
    log = pf.read_log()
    assert re.search(r"< unknown\[127\.0\.0\.1\]: MAIL FROM:<alice@example\.test> SIZE=\d+ "
                     r"BODY=8BITMIME\s*$", log, re.M), "8BITMIME without SMTPUTF8"
    assert re.search(r"< unknown\[127\.0\.0\.1\]: MAIL FROM:<alice@example\.test> .*SMTPUTF8",
                     log), "SMTPUTF8 for the UTF-8 address"


def test_dsn_parameters_reach_postfix(make_server, make_postfix):
    """RET, ENVID, NOTIFY and ORCPT go on to Postfix, which answers NOTIFY=SUCCESS with a
    delivery notice of its own, relayed back to the sender's INBOX at Postamt."""
    srv, pf = pair(make_server, make_postfix, verbose_smtpd=True)
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    msg = (f"From: alice@example.test\r\nTo: friend@{REMOTE}, other@{REMOTE}\r\n"
           "Subject: tell me\r\n\r\nHello, Postfix.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx)
        c.login("alice@example.test", PW)
        c.ehlo()
        assert c.mail("alice@example.test", ["RET=HDRS", "ENVID=env+2Bid-42"])[0] == 250
        assert c.rcpt(f"friend@{REMOTE}", ["NOTIFY=SUCCESS,FAILURE",
                                           "ORCPT=rfc822;Friend.Orig@remote.test"])[0] == 250
        assert c.rcpt(f"other@{REMOTE}", ["NOTIFY=NEVER"])[0] == 250
        assert c.data(msg)[0] == 250
    wait_for(lambda: len(pf.maildir("friend")) == 1 and len(pf.maildir("other")) == 1,
             what="delivery")
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, timeout=30,
             what="Postfix's success notice back at Postamt")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    log = pf.read_log()
    assert re.search(r"< unknown\[127\.0\.0\.1\]: MAIL FROM:<alice@example\.test> .*"
                     r"RET=HDRS", log) and "ENVID=env+2Bid-42" in log, log[-3000:]
    assert re.search(r"< unknown\[127\.0\.0\.1\]: RCPT TO:<friend@remote\.test> "
                     r"NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Friend\.Orig@remote\.test", log)
    assert re.search(r"< unknown\[127\.0\.0\.1\]: RCPT TO:<other@remote\.test> NOTIFY=NEVER",
                     log)
    notice = mailbox_messages(srv, "alice@example.test")[0][1]
    assert notice.startswith(b"Return-Path: <>\r\n"), notice[:200]
    assert b"report-type=delivery-status" in notice
    report = notice.split(b"text/rfc822-headers")[0]
    assert b"Original-Envelope-Id: env+id-42\r\n" in report, "ENVID (xtext) decoded by Postfix"
    assert b"Final-Recipient: rfc822; friend@remote.test" in report
    assert b"Original-Recipient: rfc822;Friend.Orig@remote.test" in report
    assert b"Action: delivered" in report
    assert b"other@remote.test" not in report, "NOTIFY=NEVER: no notice for it"
    assert b"Content-Type: text/rfc822-headers" in notice, "RET=HDRS: the header only"
    assert b"Hello, Postfix." not in notice


def test_4xx_deferred_then_delivered_after_retry(make_server, make_postfix):
    srv, pf = pair(make_server, make_postfix,
                   access={f"later@{REMOTE}": "450 4.2.0 Mailbox busy, try later"})
    submit(srv, [f"later@{REMOTE}"], subject="later")
    wait_for(lambda: "event=deferred" in srv.read_log(), what="deferral")
    import json
    rows = json.loads(srv.cli("queue", "list", "--json").stdout)
    assert len(rows) == 1 and rows[0]["state"] == "deferred", rows
    assert "450 4.2.0" in rows[0]["last_error"] and "Mailbox busy" in rows[0]["last_error"]
    assert pf.maildir("later") == []
    assert mailbox_messages(srv, "alice@example.test") == [], "a 4xx never bounces"
    pf.set_access({})

    # Postfix's smtpd notices the rebuilt table at its next session or so: a retry that
    # still meets the old answer is deferred again, so retry until one gets through.
    def retried():
        srv.cli("queue", "retry", str(rows[0]["id"]))
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            if len(pf.maildir("later")) == 1:
                return True
            time.sleep(0.1)
        return False
    wait_for(retried, timeout=40, what="delivery after the retry")
    wait_for(lambda: queue_count(srv) == 0, what="Postamt's queue empty")
    assert mailbox_messages(srv, "alice@example.test") == []


# ---- Postfix -> Postamt -------------------------------------------------------------------

def test_postfix_relays_to_postamt(make_server, make_postfix):
    """Mail submitted with Postfix's sendmail(1) goes out through its relayhost, Postamt's
    SMTP port: STARTTLS, PIPELINING (two recipients), the 8-bit body unchanged (8BITMIME; a
    peer without it would get quoted-printable from Postfix)."""
    srv, pf = pair(make_server, make_postfix)
    body = "Grüße von Postfix.\n.a leading dot\n".encode()
    msg = (b"From: sender@remote.test\nTo: alice@example.test, bob@example.test\n"
           b"Subject: from postfix\nMIME-Version: 1.0\n"
           b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + body)
    pf.sendmail(f"sender@{REMOTE}", ["alice@example.test", "bob@example.test"], msg)
    for user in ("alice", "bob"):
        wait_for(lambda: len(mailbox_messages(srv, f"{user}@example.test")) == 1,
                 what=f"delivery to {user} at Postamt")
    wait_for(pf.queue_empty, what="Postfix's queue empty")
    for user in ("alice", "bob"):
        got = mailbox_messages(srv, f"{user}@example.test")[0][1]
        assert got.startswith(b"Return-Path: <sender@remote.test>\r\n"), got[:300]
        assert b"Received: from mx.remote.test ([127.0.0.1])" in got
        assert b"with ESMTPS id" in got and b"version=TLS" in got
        assert got.endswith(crlf(body)), got
        assert b"Content-Transfer-Encoding: 8bit" in got
    log = pf.read_log()
    assert re.search(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d" %
                     srv.ports["smtp"], log), log[-3000:]
    assert "Using ESMTP PIPELINING" in log
    assert re.search(r"> 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: MAIL FROM:<sender@remote\.test> "
                     r"SIZE=\d+ BODY=8BITMIME", log)
    assert len(re.findall(r"status=sent \(250 2\.0\.0 Ok: queued as", log)) == 2
