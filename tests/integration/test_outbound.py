"""Outbound delivery: Postamt's queue runner delivering to a receiving SMTP server on loopback
that the test runs itself (a small threaded SMTP sink with scripted answers), through a
per-domain route. Retry schedules and timeouts are shortened by configuration."""
import os
import signal
import smtplib
import socket
import socketserver
import ssl
import threading
import time

import pytest

from conftest import mailbox_messages, queue_count

PW = "correct horse battery"


class Sink:
    """A minimal SMTP server: EHLO (SIZE, 8BITMIME, DSN), MAIL, RCPT, DATA, RSET, QUIT.
    rcpt_reply / data_reply: callables returning the reply line (or None for 250)."""

    def __init__(self, pipelining=False):
        self.messages = []  # (mail_from_line, [rcpt lines], data bytes)
        self.pipelining = pipelining
        self.mail_reply = lambda mail: None
        self.rcpt_reply = lambda rcpt: None
        self.data_reply = lambda: None
        self.ehlo_names = []
        self.connections = 0
        self.data_started = threading.Event()
        self.hold_data = None  # an Event: DATA's reply waits for it
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line):
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self):
                sink.connections += 1
                self.reply("220 sink.test ESMTP")
                mail, rcpts = None, []
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        sink.ehlo_names.append(cmd[5:])
                        self.reply("250-sink.test")
                        if sink.pipelining:
                            self.reply("250-PIPELINING")
                        self.reply("250-SIZE 10000000")
                        self.reply("250-8BITMIME")
                        self.reply("250 DSN")
                    elif verb == "HELO":
                        self.reply("250 sink.test")
                    elif verb == "MAIL":
                        r = sink.mail_reply(cmd)
                        if r is not None:
                            self.reply(r)
                            continue
                        mail, rcpts = cmd, []
                        self.reply("250 2.1.0 ok")
                    elif verb == "RCPT":
                        if mail is None:
                            self.reply("503 5.5.1 MAIL first")
                            continue
                        r = sink.rcpt_reply(cmd)
                        if r is None:
                            rcpts.append(cmd)
                            self.reply("250 2.1.5 ok")
                        else:
                            self.reply(r)
                    elif verb == "DATA":
                        if not rcpts:
                            self.reply("554 5.5.1 no valid recipients")
                            continue
                        self.reply("354 go ahead")
                        data = b""
                        while True:
                            l = self.rfile.readline()
                            if not l:
                                return
                            if l == b".\r\n":
                                break
                            if l.startswith(b"."):
                                l = l[1:]
                            data += l
                        sink.data_started.set()
                        if sink.hold_data is not None:
                            sink.hold_data.wait(30)
                        r = sink.data_reply()
                        if r is None:
                            sink.messages.append((mail, rcpts, data))
                            self.reply("250 2.0.0 queued")
                        else:
                            self.reply(r)
                    elif verb == "RSET":
                        mail, rcpts = None, []
                        self.reply("250 ok")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 5.5.2 unknown")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=[False, True], ids=["sequential", "pipelining"])
def sink(request):
    s = Sink(pipelining=request.param)
    yield s
    s.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outbound_server(make_server, port, extra=None):
    conf = {
        "queue.routes": f"remote.example=127.0.0.1:{port}",
        "queue.retry_schedule": "1s",
        "queue.interval": "200ms",
        "queue.connect_timeout": "2s",
        "queue.command_timeout": "5s",
        "queue.data_timeout": "5s",
        "server.hostname": "mail.example.test",
    }
    conf.update(extra or {})
    srv = make_server(conf, start=False)
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input=PW + "\n")
    srv.start()
    return srv


def submit(srv, body="Hello over there.\r\n.leading dot\r\n", rcpts=("friend@remote.example",),
           subject="outbound"):
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    message = (f"From: alice@example.test\r\nTo: friend@remote.example\r\n"
               f"Subject: {subject}\r\n\r\n{body}").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx)
        c.login("alice@example.test", PW)
        assert c.sendmail("alice@example.test", list(rcpts), message) == {}
    return message


def wait_for(cond, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_delivery_through_route(make_server, sink):
    srv = outbound_server(make_server, sink.port)
    submit(srv)
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    mail, rcpts, data = sink.messages[0]
    assert mail.startswith("MAIL FROM:<alice@example.test>")
    assert "SIZE=" in mail and "BODY=8BITMIME" in mail
    assert rcpts == ["RCPT TO:<friend@remote.example>"]
    assert sink.ehlo_names == ["mail.example.test"]
    # The body arrives intact (dot-stuffing undone by the sink), without our Return-Path.
    assert b"Subject: outbound\r\n" in data
    assert data.endswith(b"\r\nHello over there.\r\n.leading dot\r\n")
    assert not data.lower().startswith(b"return-path:")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_several_messages_one_connection(make_server, sink):
    srv = outbound_server(make_server, sink.port, {"queue.interval": "4s",
                                                   "queue.connections_per_destination": "1"})
    # The first message's end of data is answered only once the second one is queued: it
    # waits for the one connection allowed and takes it next.
    sink.hold_data = threading.Event()
    submit(srv, subject="one")
    wait_for(sink.data_started.is_set, what="the first message's data")
    submit(srv, subject="two")
    wait_for(lambda: "event=queue_read" in srv.read_log() or queue_count(srv) == 2,
             what="the second message queued")
    time.sleep(0.3)  # the runner's read after the kick; no assertion depends on its speed
    sink.hold_data.set()
    wait_for(lambda: len(sink.messages) == 2, what="two deliveries")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    assert sink.connections == 1, "both messages over one connection"
    subjects = sorted(m[2].split(b"Subject: ")[1].split(b"\r\n")[0] for m in sink.messages)
    assert subjects == [b"one", b"two"]


def test_4xx_is_deferred_then_delivered(make_server, sink):
    answers = ["451 4.3.0 try later"]
    sink.rcpt_reply = lambda rcpt: answers.pop() if answers else None
    srv = outbound_server(make_server, sink.port)
    submit(srv)
    wait_for(lambda: "event=deferred" in srv.read_log(), what="deferral")
    assert queue_count(srv) == 1
    wait_for(lambda: len(sink.messages) == 1, what="delivery at the retry")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_5xx_bounces_to_local_sender(make_server, sink):
    sink.rcpt_reply = lambda rcpt: "550 5.1.1 no such user"
    srv = outbound_server(make_server, sink.port)
    submit(srv, subject="will bounce")
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    assert b"multipart/report; report-type=delivery-status" in bounce
    assert b"Final-Recipient: rfc822; friend@remote.example" in bounce
    assert b"Status: 5.1.1" in bounce
    assert b"Action: failed" in bounce
    assert b"Subject: will bounce" in bounce  # the original headers
    assert sink.messages == []


def test_peer_down_then_up(make_server):
    port = free_port()
    srv = outbound_server(make_server, port)
    submit(srv)
    wait_for(lambda: "event=deferred" in srv.read_log(), what="deferral")
    assert queue_count(srv) == 1
    sink = FixedSink(port)
    try:
        wait_for(lambda: len(sink.messages) == 1, what="delivery after the peer came up")
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    finally:
        sink.close()


class FixedSink(Sink):
    def __init__(self, port):
        orig = socketserver.ThreadingTCPServer.__init__

        def bind_fixed(server, addr, handler, *a, **kw):
            orig(server, ("127.0.0.1", port), handler, *a, **kw)
        socketserver.ThreadingTCPServer.__init__ = bind_fixed
        try:
            super().__init__()
        finally:
            socketserver.ThreadingTCPServer.__init__ = orig


def test_restart_with_queued_mail(make_server):
    port = free_port()
    srv = outbound_server(make_server, port, {"queue.retry_schedule": "1h"})
    submit(srv)
    wait_for(lambda: "event=deferred" in srv.read_log(), what="deferral")
    assert srv.stop() == 0
    # Due again at once: the operator's retry through the database is not there yet, so
    # make the queue due by configuration of a short schedule and rewrite next_attempt.
    import sqlite3
    con = sqlite3.connect(os.path.join(srv.data_dir, "postamt.db"))
    con.execute("UPDATE queue_rcpts SET next_attempt = 0")
    con.commit()
    con.close()
    sink = FixedSink(port)
    try:
        srv.start()
        wait_for(lambda: len(sink.messages) == 1, what="delivery after restart")
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    finally:
        sink.close()


def test_delay_warning_once(make_server, sink):
    answers = ["451 4.3.0 later"] * 4
    sink.rcpt_reply = lambda rcpt: answers.pop() if answers else None
    srv = outbound_server(make_server, sink.port, {"queue.delay_warning": "1500ms"})
    submit(srv, subject="slow one")
    wait_for(lambda: len(sink.messages) == 1, timeout=30, what="final delivery")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    inbox = mailbox_messages(srv, "alice@example.test")
    assert len(inbox) == 1, "exactly one delay notification"
    warning = inbox[0][1]
    assert b"Subject: Delayed Mail (still being retried)" in warning
    assert b"Action: delayed" in warning and b"Status: 4.3.0" in warning
    assert b"Will-Retry-Until: " in warning


def test_refused_sender_bounces(make_server, sink):
    sink.mail_reply = lambda mail: "550 5.7.1 sender rejected"
    srv = outbound_server(make_server, sink.port)
    submit(srv, subject="refused sender")
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    assert b"Status: 5.7.1" in mailbox_messages(srv, "alice@example.test")[0][1]
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_mixed_recipients_one_transaction(make_server, sink):
    """Three recipients: one delivered, one deferred (4xx), one bounced (5xx), in one
    transaction; the deferred one is delivered at the next attempt."""
    answers = {"ok@remote.example": [None], "later@remote.example": ["450 4.2.0 busy", None],
               "bad@remote.example": ["550 5.1.1 unknown"]}

    def rcpt_reply(cmd):
        addr = cmd.split("<", 1)[1].split(">", 1)[0]
        seq = answers[addr]
        return seq.pop(0) if len(seq) > 1 else seq[0]
    sink.rcpt_reply = rcpt_reply
    srv = outbound_server(make_server, sink.port)
    submit(srv, rcpts=("ok@remote.example", "later@remote.example", "bad@remote.example"))
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    assert b"Final-Recipient: rfc822; bad@remote.example" in bounce
    assert b"ok@remote.example" not in bounce.split(b"text/rfc822-headers")[0]
    wait_for(lambda: len(sink.messages) == 2, what="the deferred recipient's delivery")
    assert sink.messages[0][1] == ["RCPT TO:<ok@remote.example>"]
    assert sink.messages[1][1] == ["RCPT TO:<later@remote.example>"]
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_sigterm_during_delivery_keeps_it_queued(make_server, sink):
    sink.hold_data = threading.Event()
    srv = outbound_server(make_server, sink.port)
    submit(srv)
    assert sink.data_started.wait(20), "delivery did not start"
    assert srv.stop() == 0  # graceful: the delivery in progress is dropped, not recorded
    sink.hold_data.set()
    assert queue_count(srv) == 1
    log = srv.read_log()
    assert "LeakSanitizer" not in log and "AddressSanitizer" not in log


def test_sigkill_during_delivery_loses_nothing(make_server, sink):
    sink.hold_data = threading.Event()
    srv = outbound_server(make_server, sink.port)
    submit(srv)
    assert sink.data_started.wait(20), "delivery did not start"
    srv.stop(sig=signal.SIGKILL)
    sink.hold_data.set()  # the peer accepts the message after we died: a duplicate is fine
    wait_for(lambda: len(sink.messages) == 1, what="the held delivery")
    assert queue_count(srv) == 1, "the outcome was never committed: still queued"
    sink.hold_data = None
    srv.start()
    wait_for(lambda: len(sink.messages) == 2, what="delivery after the crash")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


# ---- MX lookup against a DNS server of our own (dnsmasq on loopback, never the system's) ----

DNSMASQ = "/usr/sbin/dnsmasq"


def free_udp_tcp_port():
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port")


class Resolver(str):
    """The resolver's address, and the log of the queries it was asked."""

    def __new__(cls, addr, log):
        obj = super().__new__(cls, addr)
        obj.log = log
        return obj

    def queries(self, name, qtype="MX"):
        try:
            with open(self.log) as f:
                return sum(1 for line in f if f"query[{qtype}] {name} " in line)
        except FileNotFoundError:
            return 0


@pytest.fixture
def dns(tmpdir_world):
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq-base is not installed (make test-deps)")
    port = free_udp_tcp_port()
    import subprocess
    records = [
        "--mx-host=mx.test,mx1.mx.test,10", "--host-record=mx1.mx.test,127.0.0.1",
        # The preferred MX refuses connections (nothing listens on 127.0.0.2); the second works.
        "--mx-host=fallback.test,dead.fallback.test,10",
        "--mx-host=fallback.test,live.fallback.test,20",
        "--host-record=dead.fallback.test,127.0.0.2",
        "--host-record=live.fallback.test,127.0.0.1",
        # No MX: the domain's own address (RFC 5321 5.1).
        "--host-record=plain.test,127.0.0.1",
        # RFC 7505 null MX: preference 0, the root name.
        "--dns-rr=nullmx.test,15,000000",
    ]
    log = os.path.join(tmpdir_world, "dnsmasq.log")
    p = subprocess.Popen([DNSMASQ, "-k", f"--port={port}", "--listen-address=127.0.0.1",
                          "--log-queries", f"--log-facility={log}",
                          "--bind-interfaces", "--no-resolv", "--no-hosts",
                          "--conf-file=/dev/null", "--local=/test/",
                          f"--pid-file={os.path.join(tmpdir_world, 'dnsmasq.pid')}"] + records,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    assert p.poll() is None, p.stderr.read()
    yield Resolver(f"127.0.0.1:{port}", log)
    p.terminate()
    p.wait(10)


def mx_server(make_server, dns, sink_port):
    return outbound_server(make_server, 1, {"queue.routes": "", "queue.resolvers": dns,
                                            "queue.mx_port": str(sink_port)})


@pytest.mark.parametrize("domain", ["mx.test", "fallback.test", "plain.test"])
def test_delivery_via_mx(make_server, sink, dns, domain):
    srv = mx_server(make_server, dns, sink.port)
    submit(srv, rcpts=(f"friend@{domain}",))
    wait_for(lambda: len(sink.messages) == 1, what=f"delivery to {domain}")
    assert sink.messages[0][1] == [f"RCPT TO:<friend@{domain}>"]
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_mx_answers_are_remembered(make_server, sink, dns):
    srv = mx_server(make_server, dns, sink.port)
    submit(srv, rcpts=("friend@mx.test",), subject="first")
    wait_for(lambda: len(sink.messages) == 1, what="first delivery")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    submit(srv, rcpts=("other@mx.test",), subject="second")
    wait_for(lambda: len(sink.messages) == 2, what="second delivery")
    assert dns.queries("mx.test") == 1


def test_null_mx_bounces_at_once(make_server, sink, dns):
    srv = mx_server(make_server, dns, sink.port)
    submit(srv, rcpts=("friend@nullmx.test",), subject="to null mx")
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    assert b"Status: 5.1.10" in bounce
    assert b"Final-Recipient: rfc822; friend@nullmx.test" in bounce
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    assert sink.messages == []


# ---- The operator's CLI -------------------------------------------------------------------

def queue_list(srv):
    import json
    return json.loads(srv.cli("queue", "list", "--json").stdout)


def test_cli_list_hold_release_retry_delete(make_server):
    port = free_port()
    srv = outbound_server(make_server, port, {"queue.retry_schedule": "1h"})
    submit(srv, subject="first")
    wait_for(lambda: "event=deferred" in srv.read_log(), what="deferral")
    rows = queue_list(srv)
    assert len(rows) == 1
    import json
    st = json.loads(srv.cli("queue", "stats", "--json").stdout)
    assert st["messages"] == 1 and st["recipients"]["deferred"] == 1, st
    assert st["domains"][0]["domain"] == "remote.example" and st["domains"][0]["deferred"] == 1
    assert "remote.example" in srv.cli("queue", "stats").stdout
    assert srv.cli("queue", "stats", "--top", "0", check=False).returncode == 2
    row = rows[0]
    assert row["recipient"] == "friend@remote.example" and row["sender"] == "alice@example.test"
    assert row["state"] == "deferred" and row["attempts"] == 1 and row["last_error"]
    qid = str(row["id"])
    text = srv.cli("queue", "show", qid).stdout
    assert "friend@remote.example" in text and "deferred" in text
    assert srv.cli("queue", "show", "999999", check=False).returncode == 1

    sink = FixedSink(port)
    try:
        srv.cli("queue", "hold", qid)
        assert queue_list(srv)[0]["state"] == "held"
        st = json.loads(srv.cli("queue", "stats", "--json").stdout)
        assert st["recipients"]["held"] == 1 and st["recipients"]["deferred"] == 0, st
        srv.cli("queue", "retry", qid)
        time.sleep(1.5)
        assert sink.messages == [], "a held entry is not delivered"
        srv.cli("queue", "release", qid)
        wait_for(lambda: len(sink.messages) == 1, what="delivery after release + retry")
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")

        # delete: gone without delivery and without a bounce.
        sink.rcpt_reply = lambda rcpt: "451 4.3.0 later"
        submit(srv, subject="second")
        wait_for(lambda: srv.read_log().count("event=deferred") >= 2, what="second deferral")
        qid2 = str(queue_list(srv)[0]["id"])
        srv.cli("queue", "delete", qid2)
        assert queue_count(srv) == 0
        assert mailbox_messages(srv, "alice@example.test") == []
        assert srv.cli("queue", "delete", qid2, check=False).returncode == 1
    finally:
        sink.close()


def test_delivery_to_another_postamt_with_starttls(make_server, tmpdir_world):
    """Interoperability with our own server: STARTTLS (opportunistic), DSN parameters passed
    on, the message stored in the remote user's INBOX with the body intact."""
    from conftest import Server
    remote = Server(os.path.join(tmpdir_world, "remote"), {"server.hostname": "mx.remote.example"},
                    domain="remote.example")
    remote.cli("user", "add", "friend@remote.example", "--password-stdin", input=PW + "\n")
    remote.start()
    try:
        srv = outbound_server(make_server, remote.ports["smtp"])
        sent = submit(srv, body="Across.\r\n..two dots\r\n")
        wait_for(lambda: len(mailbox_messages(remote, "friend@remote.example")) == 1,
                 what="delivery to the other server")
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
        got = mailbox_messages(remote, "friend@remote.example")[0][1]
        assert got.endswith(sent.split(b"\r\n\r\n", 1)[1]), got
        assert got.count(b"Return-Path:") == 1 and got.startswith(b"Return-Path: <alice@example.test>")
        assert "event=smtp_client_tls" in srv.read_log()
    finally:
        code = remote.stop()
        assert code == 0


def test_relay_host_with_auth(make_server, tmpdir_world):
    """The relay host (a second Postamt's submission port): STARTTLS, then AUTH PLAIN; a wrong
    password defers (never bounces), the right one relays; the password is not shown by
    `config show`."""
    from conftest import Server
    # The relay keeps what it accepts (its own next hop refuses), so that it can be counted.
    relay = Server(os.path.join(tmpdir_world, "relay"), {"server.hostname": "relay.example.test",
                                                         "auth.failure_delay": "100ms",
                                                         "queue.routes": "remote.example=127.0.0.1:1",
                                                         "queue.retry_schedule": "1h"},
                   domain="example.test")
    relay.cli("user", "add", "alice@example.test", "--password-stdin", input=PW + "\n")
    relay.start()
    try:
        srv = outbound_server(make_server, 1, {
            "queue.routes": "", "queue.relay_host": f"127.0.0.1:{relay.ports['submission']}",
            "queue.relay_user": "alice@example.test", "queue.relay_password": "wrong",
            "queue.retry_schedule": "1h"})
        assert "(hidden)" in srv.cli("config", "show").stdout
        assert "wrong" not in srv.cli("config", "show").stdout
        submit(srv, subject="via relay")
        wait_for(lambda: "event=deferred" in srv.read_log(), what="deferral on bad password")
        assert queue_list(srv)[0]["last_error"].startswith("authentication refused: 535")
        assert queue_count(srv) == 1 and queue_count(relay) == 0
        srv.stop()
        srv.set_config({"queue.relay_password": PW})
        import sqlite3
        con = sqlite3.connect(os.path.join(srv.data_dir, "postamt.db"))
        con.execute("UPDATE queue_rcpts SET next_attempt = 0")
        con.commit()
        con.close()
        srv.start()
        wait_for(lambda: queue_count(srv) == 0, what="relayed")
        assert queue_count(relay) == 1  # the relay queued it for friend@remote.example
        assert PW not in srv.read_log()
    finally:
        assert relay.stop() == 0


def test_new_mail_is_delivered_at_once(make_server, sink):
    # The runner's own look comes only every minute: the SMTP server tells it about new mail.
    srv = outbound_server(make_server, sink.port, {"queue.interval": "1m"})
    time.sleep(0.5)
    start = time.time()
    submit(srv, subject="no waiting")
    wait_for(lambda: len(sink.messages) == 1, timeout=15, what="delivery without waiting")
    assert time.time() - start < 15
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
