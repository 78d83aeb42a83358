"""Outbound scheduling: fair share between destinations and senders, adaptive connection
limits after failures, dead destinations, and the per-destination rate. The receiving SMTP
servers are the test's own sinks on loopback (see test_outbound.py)."""
import json
import smtplib
import ssl
import threading

from conftest import queue_count
from test_outbound import PW, Sink, free_port, outbound_server, submit, wait_for


def send_many(srv, sender, rcpt, n, subject="bulk"):
    """n messages over one authenticated submission session."""
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as c:
        c.starttls(context=ctx)
        c.login(sender, PW)
        for i in range(n):
            msg = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject} {i}\r\n\r\n"
                   f"number {i}\r\n").encode()
            assert c.sendmail(sender, [rcpt], msg) == {}


def add_user(srv, address):
    srv.cli("user", "add", address, "--password-stdin", input=PW + "\n")


def test_backlog_of_one_destination_does_not_starve_another(make_server):
    big, small = Sink(), Sink()
    big.hold_data = threading.Event()  # the big destination answers nothing for now
    try:
        srv = outbound_server(make_server, big.port, {
            "queue.routes": f"big.example=127.0.0.1:{big.port} "
                            f"small.example=127.0.0.1:{small.port}",
            "queue.max_in_flight": "20", "queue.batch": "4",
            "queue.connections_per_destination": "1"})
        add_user(srv, "bob@example.test")
        send_many(srv, "alice@example.test", "someone@big.example", 30)
        wait_for(lambda: big.data_started.is_set(), what="the first message to big")
        # Without a share, the 30 waiting for big.example would fill max_in_flight and
        # bob's message would not even be read until they are gone.
        send_many(srv, "bob@example.test", "friend@small.example", 1)
        wait_for(lambda: len(small.messages) == 1, what="delivery to the small destination")
        assert big.messages == []
        big.hold_data.set()
        wait_for(lambda: len(big.messages) == 30, timeout=60, what="the big backlog")
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    finally:
        big.hold_data.set()
        big.close()
        small.close()


def test_sender_with_a_backlog_does_not_starve_another(make_server):
    hold = threading.Event()
    slow = [Sink() for _ in range(6)]
    for s in slow:
        s.hold_data = hold
    other = Sink()
    routes = " ".join(f"d{i}.example=127.0.0.1:{s.port}" for i, s in enumerate(slow))
    try:
        srv = outbound_server(make_server, other.port, {
            "queue.routes": f"{routes} other.example=127.0.0.1:{other.port}",
            "queue.max_in_flight": "20", "queue.batch": "4",
            "queue.connections_per_destination": "1"})
        add_user(srv, "bob@example.test")
        # alice's newsletter: six destinations, each within its own share, 24 messages
        # in all: more than max_in_flight.
        for i in range(len(slow)):
            send_many(srv, "alice@example.test", f"reader@d{i}.example", 4)
        wait_for(lambda: any(s.data_started.is_set() for s in slow),
                 what="the newsletter started")
        send_many(srv, "bob@example.test", "friend@other.example", 1)
        wait_for(lambda: len(other.messages) == 1, what="bob's message")
        hold.set()
        wait_for(lambda: queue_count(srv) == 0, timeout=60, what="empty queue")
        assert sum(len(s.messages) for s in slow) == 24
    finally:
        hold.set()
        for s in slow:
            s.close()
        other.close()


class RefusingSink(Sink):
    """Answers 421 to the first `refuse` connections, then works."""

    def __init__(self, refuse):
        super().__init__()
        self.refuse = refuse
        handler = self.server.RequestHandlerClass
        sink = self
        orig = handler.handle

        def handle(h):
            if sink.refuse > 0:
                sink.refuse -= 1
                h.wfile.write(b"421 4.3.2 too busy, come back later\r\n")
                h.wfile.flush()
                return
            orig(h)
        handler.handle = handle


def test_421_halves_the_connections_then_delivers(make_server):
    sink = RefusingSink(refuse=2)
    try:
        srv = outbound_server(make_server, sink.port,
                              {"queue.connections_per_destination": "8"})
        submit(srv)
        wait_for(lambda: "event=destination_throttle" in srv.read_log(),
                 what="the throttle log line")
        assert "connections=4" in srv.read_log()
        wait_for(lambda: len(sink.messages) == 1, what="delivery after the 421s")
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    finally:
        sink.close()


def test_dead_destination_defers_without_connecting(make_server):
    port = free_port()  # nobody listens
    srv = outbound_server(make_server, port, {"queue.retry_schedule": "1h"})
    submit(srv, subject="first")
    wait_for(lambda: "event=destination_dead" in srv.read_log(), what="the dead destination")
    submit(srv, subject="second")

    def both_deferred():
        rows = json.loads(srv.cli("queue", "list", "--json").stdout)
        return len(rows) == 2 and all(r["attempts"] == 1 for r in rows)
    wait_for(both_deferred, what="both deferred")
    rows = json.loads(srv.cli("queue", "list", "--json").stdout)
    assert any("(at the last try)" in r["last_error"] for r in rows)
    # One connection attempt for both: the second message was deferred at once.
    assert srv.read_log().count("event=smtp_client_fail") == 1


def test_destination_rate_spreads_messages_over_connections(make_server, ):
    sink = Sink()
    try:
        srv = outbound_server(make_server, sink.port, {"queue.destination_rate": "2",
                                                       "queue.interval": "5s"})
        send_many(srv, "alice@example.test", "friend@remote.example", 6)
        wait_for(lambda: len(sink.messages) == 6, timeout=60, what="six deliveries")
        # Two messages may start per second: a connection that would go faster ends.
        assert sink.connections >= 3
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    finally:
        sink.close()
