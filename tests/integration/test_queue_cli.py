"""`postamt queue list` filters and the actions by filter, with the real binary against a running
server whose mail stays queued: every destination is routed to a closed port, so each
recipient is tried once and deferred for an hour. Output is read as JSON."""
import json
import smtplib
import ssl

from conftest import mailbox_messages, queue_count
from test_outbound import PW, FixedSink, free_port, wait_for


def submit(srv, user, rcpts, subject="queued"):
    ctx = ssl.create_default_context(cafile=srv.cert)
    ctx.check_hostname = False
    message = (f"From: {user}\r\nTo: {rcpts[0]}\r\nSubject: {subject}\r\n\r\nbody\r\n").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15) as c:
        c.starttls(context=ctx)
        c.login(user, PW)
        assert c.sendmail(user, list(rcpts), message) == {}


def listing(srv, *args):
    return json.loads(srv.cli("queue", "list", "--json", *args).stdout)


def action(srv, *args):
    return json.loads(srv.cli("queue", *args, "--json").stdout)


def queued_server(make_server, port):
    route = f"127.0.0.1:{port}"
    srv = make_server({
        "queue.routes": f"remote.example={route} other.example={route}",
        "queue.retry_schedule": "1h",
        "queue.interval": "200ms",
        "queue.connect_timeout": "2s",
        "server.hostname": "mail.example.test",
    }, start=False)
    for user in ("alice@example.test", "bob@example.test"):
        srv.cli("user", "add", user, "--password-stdin", input=PW + "\n")
    srv.start()
    # Entry 1: alice -> a@remote, b@other; entry 2: alice -> c@remote; entry 3: bob -> A@Remote.
    submit(srv, "alice@example.test", ["a@remote.example", "b@other.example"], "one")
    submit(srv, "alice@example.test", ["c@remote.example"], "two")
    submit(srv, "bob@example.test", ["A@Remote.example"], "three")
    wait_for(lambda: srv.read_log().count("event=deferred") >= 4, what="four deferrals")
    return srv


def test_list_filters_and_actions(make_server):
    port = free_port()
    srv = queued_server(make_server, port)
    rows = listing(srv)
    assert len(rows) == 4
    assert all(r["state"] == "deferred" for r in rows)
    ids = sorted({r["id"] for r in rows})
    assert len(ids) == 3

    # Each filter alone: exact addresses and domains, in any case.
    assert len(listing(srv, "--sender", "ALICE@example.test")) == 3
    assert [r["recipient"] for r in listing(srv, "--sender", "<bob@example.test>")] == \
        ["A@remote.example"]
    assert listing(srv, "--sender", "<>") == []
    assert listing(srv, "--sender", "alice") == []
    assert {r["id"] for r in listing(srv, "--recipient", "a@REMOTE.example")} == {ids[0], ids[2]}
    assert [r["recipient"] for r in listing(srv, "--domain", "Other.Example")] == \
        ["b@other.example"]
    assert len(listing(srv, "--domain", "remote.example")) == 3
    assert listing(srv, "--domain", "example") == []
    assert listing(srv, "--held") == []
    assert len(listing(srv, "--deferred")) == 4
    # Combined with AND.
    assert len(listing(srv, "--sender", "alice@example.test", "--domain", "remote.example")) == 2
    assert listing(srv, "--sender", "bob@example.test", "--domain", "other.example") == []

    # Paging: the limit says where the next page starts.
    p = srv.cli("queue", "list", "--limit", "1")
    assert len(p.stdout.splitlines()) == 1
    after = p.stderr.split("--after ")[1].split(")")[0]
    assert after.startswith(f"{ids[0]}:")
    rest = listing(srv, "--after", after)
    assert len(rest) == 3 and rest[0]["recipient"] == "b@other.example"
    assert {r["id"] for r in listing(srv, "--after", str(ids[0]))} == {ids[1], ids[2]}

    # An action needs ids, a filter or --all; not ids and a filter together.
    p = srv.cli("queue", "hold", check=False)
    assert p.returncode == 2 and "--all" in p.stderr
    assert srv.cli("queue", "delete", "--json", check=False).returncode == 2
    assert srv.cli("queue", "hold", str(ids[0]), "--domain", "other.example",
                   check=False).returncode == 2
    assert srv.cli("queue", "list", "--sender", check=False).returncode == 2
    assert queue_count(srv) == 3

    # hold by a recipient's domain holds the whole entry (message).
    r = action(srv, "hold", "--domain", "other.example")
    assert r["entries"] == 1 and r["matched"] == 1
    held = listing(srv, "--held")
    assert [x["recipient"] for x in held] == ["a@remote.example", "b@other.example"]
    assert "held 0 entries" in srv.cli("queue", "hold", "--domain", "other.example").stdout
    r = action(srv, "release", "--all")
    assert r["entries"] == 1
    assert listing(srv, "--held") == []

    # retry makes only the matching recipients due now.
    before = {x["recipient"]: x["next_attempt"] for x in listing(srv)}
    r = action(srv, "retry", "--recipient", "c@remote.example")
    assert r["recipients"] == 1 and r["entries"] == 1
    wait_for(lambda: srv.read_log().count("event=deferred") >= 5, what="the retried attempt")
    after_retry = {x["recipient"]: x["next_attempt"] for x in listing(srv)}
    assert after_retry["a@remote.example"] == before["a@remote.example"]

    # delete by sender: whole entries; by recipient or domain: the recipients, an entry with
    # its last one. No bounces.
    r = action(srv, "delete", "--sender", "bob@example.test")
    assert r == {"action": "delete", "matched": 1, "entries": 1, "recipients": 1}
    assert "deleted 1 recipients, 1 entries removed" in \
        srv.cli("queue", "delete", "--recipient", "c@remote.example").stdout
    r = action(srv, "delete", "--domain", "remote.example")
    assert r["recipients"] == 1 and r["entries"] == 0
    assert [x["recipient"] for x in listing(srv)] == ["b@other.example"]
    assert queue_count(srv) == 1
    assert mailbox_messages(srv, "alice@example.test") == []

    # The running server's runner sees a retry by filter at its next look.
    sink = FixedSink(port)
    try:
        r = action(srv, "retry", "--domain", "other.example", "--deferred")
        assert r["recipients"] == 1
        wait_for(lambda: len(sink.messages) == 1, what="delivery after retry")
        assert sink.messages[0][1] == ["RCPT TO:<b@other.example>"]
        wait_for(lambda: queue_count(srv) == 0, what="empty queue")
    finally:
        sink.close()


def test_hold_and_delete_everything(make_server):
    srv = queued_server(make_server, free_port())
    r = action(srv, "hold", "--all")
    assert r["entries"] == 3 and r["matched"] == 4
    assert len(listing(srv, "--held")) == 4
    r = action(srv, "release", "--held", "--sender", "alice@example.test")
    assert r["entries"] == 2
    assert [x["recipient"] for x in listing(srv, "--held")] == ["A@remote.example"]
    # By id still works and says how many.
    ids = sorted({x["id"] for x in listing(srv)})
    assert action(srv, "release", str(ids[2])) == {"action": "release", "entries": 1}
    # Several ids go in one transaction; one that is not there is reported, the others done.
    p = srv.cli("queue", "hold", str(ids[0]), "999999", str(ids[1]), check=False)
    assert p.returncode == 1 and "999999" in p.stderr, p
    assert "held 2 entries" in p.stdout, p.stdout
    assert sorted({x["id"] for x in listing(srv, "--held")}) == ids[:2]
    r = action(srv, "delete", "--all")
    assert r["entries"] == 3 and r["recipients"] == 4
    assert queue_count(srv) == 0
    assert listing(srv) == []
