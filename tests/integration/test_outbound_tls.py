"""Outbound TLS levels, CHUNKING and 8-bit mail to peers without 8BITMIME: Postamt's queue runner delivering to a receiving SMTP
server the test runs on loopback, which offers STARTTLS (with a certificate from a CA the test
makes) and CHUNKING or not. A destination that cannot meet its TLS level is deferred, with the
reason, and gets no MAIL command."""
import json
import os
import smtplib
import socketserver
import ssl
import subprocess
import threading

import pytest

from conftest import mailbox_messages, queue_count
from test_outbound import PW, outbound_server, submit, wait_for


def make_certs(d):
    """A CA, a certificate from it for remote.example, and a self-signed one."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
         "-keyout", "ca.key", "-out", "ca.pem",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name in ("remote.example", "wrong.example"):
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{name}\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=remote.example", "-addext", "subjectAltName=DNS:remote.example",
         "-keyout", "self.key", "-out", "self.pem")
    return {k: (os.path.join(d, f"{k}.pem"), os.path.join(d, f"{k}.key"))
            for k in ("remote.example", "wrong.example", "self")}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    c = make_certs(d)
    c["ca"] = os.path.join(d, "ca.pem")
    return c


class TlsSink:
    """An SMTP server with optional STARTTLS (cert = (pem, key)) and CHUNKING. Records each
    message as (transfer, mail, rcpts, data), transfer "DATA" or "BDAT", and the commands."""

    def __init__(self, cert=None, chunking=False, pipelining=False, bdat_reply=None,
                 eightbit=True):
        self.messages = []
        self.commands = []
        self.tls_used = []
        self.sni = []
        sink = self
        ctx = None
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*cert)
            ctx.sni_callback = lambda sock, name, c: sink.sni.append(name)

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line):
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self):
                self.reply("220 sink.test ESMTP")
                mail, rcpts, tls = None, [], False
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                    sink.commands.append(cmd)
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        exts = ["SIZE 10000000"] + (["8BITMIME"] if eightbit else [])
                        if ctx is not None and not tls:
                            exts.append("STARTTLS")
                        if chunking:
                            exts.append("CHUNKING")
                        if pipelining:
                            exts.append("PIPELINING")
                        self.reply("250-sink.test")
                        for i, e in enumerate(exts):
                            self.reply(("250 " if i == len(exts) - 1 else "250-") + e)
                    elif verb == "STARTTLS" and ctx is not None and not tls:
                        self.reply("220 go ahead")
                        try:
                            conn = ctx.wrap_socket(self.connection, server_side=True)
                        except (ssl.SSLError, OSError):
                            return
                        self.connection = conn
                        self.rfile = conn.makefile("rb")
                        self.wfile = conn.makefile("wb")
                        tls = True
                        sink.tls_used.append(conn.version())
                        mail, rcpts = None, []
                    elif verb == "MAIL":
                        mail, rcpts = cmd, []
                        self.reply("250 2.1.0 ok")
                    elif verb == "RCPT":
                        rcpts.append(cmd)
                        self.reply("250 2.1.5 ok")
                    elif verb == "DATA":
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
                        sink.messages.append(("DATA", mail, rcpts, data))
                        mail, rcpts = None, []
                        self.reply("250 2.0.0 queued")
                    elif verb == "BDAT":
                        parts = cmd.split()
                        size = int(parts[1])
                        data = self.rfile.read(size)
                        assert len(parts) == 3 and parts[2].upper() == "LAST"
                        if bdat_reply is not None and not sink.messages:
                            sink.messages.append(("REFUSED", mail, rcpts, data))
                            self.reply(bdat_reply)
                            continue
                        sink.messages.append(("BDAT", mail, rcpts, data))
                        mail, rcpts = None, []
                        self.reply("250 2.0.0 queued")
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sinks():
    made = []

    def factory(**kw):
        s = TlsSink(**kw)
        made.append(s)
        return s
    yield factory
    for s in made:
        s.close()


def queue_rows(srv):
    return json.loads(srv.cli("queue", "list", "--json").stdout)


def deferred_reason(srv):
    """Waits for the first deferral and returns its reason."""
    found = []

    def deferred():
        rows = queue_rows(srv)
        found[:] = [r for r in rows if r.get("attempts", 0) > 0]
        return bool(found)
    wait_for(deferred, what="a deferral")
    return found[0]["last_error"]


def test_required_without_starttls_defers(make_server, sinks):
    sink = sinks()
    srv = outbound_server(make_server, sink.port,
                          {"queue.tls_policies": "remote.example=required",
                           "queue.retry_schedule": "1h"})
    submit(srv)
    assert "TLS is required" in deferred_reason(srv)
    assert not any(c.startswith("MAIL") for c in sink.commands)
    assert queue_count(srv) == 1


def test_required_with_starttls_delivers_without_checking(make_server, sinks, certs):
    sink = sinks(cert=certs["self"])
    srv = outbound_server(make_server, sink.port, {"queue.starttls": "required"})
    submit(srv)
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    assert sink.tls_used and sink.tls_used[0] in ("TLSv1.2", "TLSv1.3")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_verify_accepts_a_trusted_certificate_for_the_domain(make_server, sinks, certs):
    sink = sinks(cert=certs["remote.example"])
    srv = outbound_server(make_server, sink.port,
                          {"queue.tls_policies": "remote.example=verify",
                           "queue.tls_ca_file": certs["ca"]})
    submit(srv)
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    assert sink.sni == ["remote.example"]
    wait_for(lambda: "verified=yes" in srv.read_log(), what="the TLS log line")


@pytest.mark.parametrize("cert,why", [("wrong.example", "certificate"),
                                      ("self", "certificate")])
def test_verify_refuses_a_wrong_or_untrusted_certificate(make_server, sinks, certs, cert, why):
    sink = sinks(cert=certs[cert])
    srv = outbound_server(make_server, sink.port,
                          {"queue.tls_policies": ".example=opportunistic remote.example=verify",
                           "queue.tls_ca_file": certs["ca"], "queue.retry_schedule": "1h"})
    submit(srv)
    reason = deferred_reason(srv)
    assert "TLS handshake failed" in reason and why in reason
    assert sink.messages == []
    assert not any(c.startswith("MAIL") for c in sink.commands)


def test_subdomain_policy_applies(make_server, sinks):
    sink = sinks()
    srv = outbound_server(make_server, sink.port,
                          {"queue.tls_policies": ".example=required",
                           "queue.retry_schedule": "1h"})
    submit(srv)
    assert "TLS is required" in deferred_reason(srv)


def test_never_sends_in_plain_text(make_server, sinks, certs):
    sink = sinks(cert=certs["self"])
    srv = outbound_server(make_server, sink.port, {"queue.starttls": "never"})
    submit(srv)
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    assert "STARTTLS" not in sink.commands and sink.tls_used == []


def test_bad_policy_is_refused_at_start(make_server):
    srv = make_server({"queue.tls_policies": "remote.example=maybe"}, start=False)
    p = srv.cli("serve", check=False)
    assert p.returncode != 0
    assert "tls_policies" in p.stderr


BODY = "Line one\r\n.leading dot\r\n..two dots\r\nlast line\r\n"


@pytest.mark.parametrize("pipelining", [False, True], ids=["sequential", "pipelining"])
def test_chunking_sends_bdat_unstuffed(make_server, sinks, pipelining):
    sink = sinks(chunking=True, pipelining=pipelining)
    srv = outbound_server(make_server, sink.port)
    sent = submit(srv, body=BODY, rcpts=("friend@remote.example", "other@remote.example"))
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    transfer, mail, rcpts, data = sink.messages[0]
    assert transfer == "BDAT" and "DATA" not in sink.commands
    assert len(rcpts) == 2
    # Exactly the stored message, dots and all, minus the Return-Path added at acceptance.
    assert data.endswith(sent[sent.index(b"From:"):])
    assert not data.lower().startswith(b"return-path:")
    assert data.endswith(b"\r\n.leading dot\r\n..two dots\r\nlast line\r\n")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_chunking_off_uses_data(make_server, sinks):
    sink = sinks(chunking=True)
    srv = outbound_server(make_server, sink.port, {"queue.chunking": "no"})
    submit(srv, body=BODY)
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    assert sink.messages[0][0] == "DATA"
    assert sink.messages[0][3].endswith(b"\r\n.leading dot\r\n..two dots\r\nlast line\r\n")


def test_refused_bdat_resets_and_next_message_goes(make_server, sinks):
    sink = sinks(chunking=True, bdat_reply="451 4.3.0 try again")
    srv = outbound_server(make_server, sink.port, {"queue.retry_schedule": "1s"})
    submit(srv, subject="first")
    wait_for(lambda: len([m for m in sink.messages if m[0] == "BDAT"]) == 1,
             what="delivery after the refusal")
    assert sink.messages[0][0] == "REFUSED"
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


# ---- 8-bit mail to a server without 8BITMIME (RFC 6152 3) ----------------------------------

def send_raw(srv, message, rcpts=("friend@remote.example",), sender="alice@example.test",
             options=()):
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx)
        c.login("alice@example.test", PW)
        assert c.sendmail(sender, list(rcpts), message, mail_options=list(options)) == {}


def test_8bit_body_is_converted_for_a_7bit_peer(make_server, sinks):
    sink = sinks(eightbit=False)
    srv = outbound_server(make_server, sink.port)
    body = "Grüße aus Köln, 5 € = fünf Euro.\r\n"
    msg = ("From: alice@example.test\r\nTo: friend@remote.example\r\nSubject: umlauts\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()
    send_raw(srv, msg, options=["BODY=8BITMIME"])
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    _, mail, _, data = sink.messages[0]
    assert "BODY=" not in mail
    assert all(b < 0x80 for b in data)
    assert b"Content-Transfer-Encoding: quoted-printable" in data
    assert b"Content-Transfer-Encoding: 8bit" not in data
    import quopri
    decoded = quopri.decodestring(data.split(b"\r\n\r\n", 1)[1])
    assert decoded.replace(b"\r\n", b"\n") == body.encode().replace(b"\r\n", b"\n")
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_7bit_message_goes_unchanged_to_a_7bit_peer(make_server, sinks):
    sink = sinks(eightbit=False)
    srv = outbound_server(make_server, sink.port)
    sent = submit(srv, body="plain ascii\r\n")
    wait_for(lambda: len(sink.messages) == 1, what="delivery")
    assert sink.messages[0][3].endswith(sent[sent.index(b"From:"):])


def test_8bit_header_to_a_7bit_peer_bounces(make_server, sinks):
    sink = sinks(eightbit=False)
    srv = outbound_server(make_server, sink.port)
    msg = ("From: alice@example.test\r\nTo: friend@remote.example\r\nSubject: Grüße\r\n"
           "\r\nbody\r\n").encode()
    send_raw(srv, msg, options=["BODY=8BITMIME"])
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    assert b"Status: 5.6.7" in bounce
    assert sink.messages == [] and not any(c.startswith("MAIL") for c in sink.commands)
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_utf8_address_to_a_peer_without_smtputf8_bounces(make_server, sinks):
    sink = sinks()
    srv = outbound_server(make_server, sink.port)
    msg = ("From: alice@example.test\r\nTo: jörg@remote.example\r\nSubject: hi\r\n"
           "\r\nbody\r\n").encode()
    send_raw(srv, msg, rcpts=("jörg@remote.example",), options=["SMTPUTF8", "BODY=8BITMIME"])
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="bounce")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    assert b"Status: 5.6.7" in bounce and b"SMTPUTF8" in bounce
    assert sink.messages == []
