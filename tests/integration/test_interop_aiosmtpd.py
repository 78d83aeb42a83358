"""Postamt's queue runner delivering to Python's aiosmtpd (the Debian package), an SMTP server
written independently of ours and of the test's own sinks: a route, several messages over one
connection, several recipients, an 8-bit body, a UTF-8 address (SMTPUTF8), a refused
recipient (bounce) and a temporary refusal (deferral, then delivery)."""
import threading

import pytest

from conftest import mailbox_messages, queue_count
from test_outbound import free_port, outbound_server, submit, wait_for
from test_outbound_tls import send_raw

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller",
                                          reason="python3-aiosmtpd is not installed")


class Recorder:
    """An aiosmtpd handler: keeps every envelope; answers RCPT from a table."""

    def __init__(self):
        self.envelopes = []
        self.sessions = set()
        self.rcpt_answers = {}  # address -> reply line
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self.rcpt_answers.get(address)
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos),
                                   envelope.original_content, list(envelope.mail_options)))
            self.sessions.add(id(session))
        return "250 2.0.0 Message accepted"


@pytest.fixture
def aiosmtpd():
    handler = Recorder()
    port = free_port()
    ctl = aiosmtpd_controller.Controller(handler, hostname="127.0.0.1", port=port,
                                         enable_SMTPUTF8=True, decode_data=False)
    ctl.start()
    handler.port = port
    yield handler
    ctl.stop()


def test_delivery_to_aiosmtpd(make_server, aiosmtpd):
    srv = outbound_server(make_server, aiosmtpd.port, {"queue.connections_per_destination": "1"})
    sent = submit(srv, rcpts=("friend@remote.example", "other@remote.example"))
    wait_for(lambda: len(aiosmtpd.envelopes) == 1, what="delivery")
    mail_from, rcpts, content, options = aiosmtpd.envelopes[0]
    assert mail_from == "alice@example.test"
    assert sorted(rcpts) == ["friend@remote.example", "other@remote.example"]
    assert "BODY=8BITMIME" in options
    # aiosmtpd undoes the dot-stuffing: the message arrives as stored, minus our Return-Path.
    assert content.replace(b"\r\n", b"\n").endswith(
        sent[sent.index(b"From:"):].replace(b"\r\n", b"\n"))
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")


def test_8bit_and_utf8_to_aiosmtpd(make_server, aiosmtpd):
    srv = outbound_server(make_server, aiosmtpd.port)
    body = "Grüße, 5 € für dich.\r\n"
    msg = ("From: alice@example.test\r\nTo: jörg@remote.example\r\nSubject: utf-8\r\n"
           "\r\n" + body).encode()
    send_raw(srv, msg, rcpts=("jörg@remote.example",), options=["SMTPUTF8", "BODY=8BITMIME"])
    wait_for(lambda: len(aiosmtpd.envelopes) == 1, what="delivery")
    _, rcpts, content, options = aiosmtpd.envelopes[0]
    assert rcpts == ["jörg@remote.example"] and "SMTPUTF8" in options
    assert content.endswith(body.encode())


def test_refusals_from_aiosmtpd(make_server, aiosmtpd):
    aiosmtpd.rcpt_answers["gone@remote.example"] = "550 5.1.1 no such user"
    aiosmtpd.rcpt_answers["later@remote.example"] = "450 4.2.0 try again later"
    srv = outbound_server(make_server, aiosmtpd.port)
    submit(srv, rcpts=("gone@remote.example", "later@remote.example", "here@remote.example"))
    wait_for(lambda: len(aiosmtpd.envelopes) == 1, what="the accepted recipient")
    assert aiosmtpd.envelopes[0][1] == ["here@remote.example"]
    wait_for(lambda: len(mailbox_messages(srv, "alice@example.test")) == 1, what="the bounce")
    bounce = mailbox_messages(srv, "alice@example.test")[0][1]
    assert b"Final-Recipient: rfc822; gone@remote.example" in bounce
    assert b"later@remote.example" not in bounce
    # The 450 is deferred; once the server takes it, the retry delivers.
    del aiosmtpd.rcpt_answers["later@remote.example"]
    wait_for(lambda: len(aiosmtpd.envelopes) == 2, what="the retried recipient")
    assert aiosmtpd.envelopes[1][1] == ["later@remote.example"]
    wait_for(lambda: queue_count(srv) == 0, what="empty queue")
