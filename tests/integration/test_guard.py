"""The guard against password guessing, through SMTP AUTH on the submission port (POP3 logins
are covered in test_pop3.py; IMAP logins do not exist yet, its ports already refuse banned
addresses)."""
import json
import smtplib
import socket
import ssl
import time

import pytest

from conftest import mailbox_messages

PW = "the right one"
FAST = {"auth.failure_delay": "20ms", "guard.stale_max_delay": "100ms",
        "guard.account_max_delay": "200ms"}


@pytest.fixture
def guarded(make_server):
    def factory(extra=None):
        cfg = dict(FAST)
        cfg.update(extra or {})
        srv = make_server(cfg, start=False)
        srv.cli("user", "add", "alice@example.test", "--password-stdin", input=PW + "\n")
        srv.cli("user", "add", "bob@example.test", "--password-stdin", input=PW + "\n")
        srv.start()
        time.sleep(0.3)
        return srv
    return factory


def login(srv, user, pw, src="127.0.0.1"):
    """Returns the reply code of AUTH, or the greeting code when refused at connect."""
    try:
        c = smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=15,
                         source_address=(src, 0))
    except smtplib.SMTPConnectError as e:
        return e.smtp_code
    try:
        c.ehlo("device")
        # One AUTH PLAIN per login (smtplib's login() would retry with LOGIN).
        c.user, c.password = user, pw
        return c.auth("PLAIN", c.auth_plain)[0]
    except smtplib.SMTPAuthenticationError as e:
        return e.smtp_code
    finally:
        try:
            c.quit()
        except (smtplib.SMTPException, OSError):
            pass


def greeting(port, src="127.0.0.1"):
    with socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(src, 0)) as s:
        return s.recv(512)


def test_guessing_bans_the_address_on_smtp_only(guarded):
    srv = guarded()
    for i in range(5):
        assert login(srv, "alice@example.test", f"guess-{i}") == 535
    assert greeting(srv.ports["submission"]).startswith(b"421 4.7.0")
    assert greeting(srv.ports["smtp"]).startswith(b"421 4.7.0")
    assert greeting(srv.ports["imap"]).startswith(b"* OK")      # other services stay open
    assert greeting(srv.ports["pop3"]).startswith(b"+OK")
    assert login(srv, "alice@example.test", PW, src="127.0.0.2") == 235  # other addresses too
    assert "event=ban service=smtp rip=127.0.0.1" in srv.read_log()
    bans = json.loads(srv.cli("ban", "list", "--json").stdout)
    assert [(b["ip"], b["service"]) for b in bans] == [("127.0.0.1", "smtp")]


def test_ban_expires_and_repeat_bans_double(guarded):
    srv = guarded({"guard.ban_time": "1s"})
    for i in range(5):
        login(srv, "alice@example.test", f"a-{i}")
    assert greeting(srv.ports["submission"]).startswith(b"421")
    time.sleep(1.5)
    assert login(srv, "alice@example.test", PW) == 235
    assert "event=unban service=smtp rip=127.0.0.1 reason=expired" in srv.read_log()
    for i in range(5):
        login(srv, "alice@example.test", f"b-{i}")
    log = srv.read_log()
    assert "seconds=1 failures=5 strikes=1" in log
    assert "seconds=2 failures=5 strikes=2" in log


def test_restart_keeps_the_ban(guarded):
    srv = guarded({"guard.ban_time": "1h"})
    for i in range(5):
        login(srv, "alice@example.test", f"x-{i}")
    assert srv.stop() == 0
    srv.start()
    assert greeting(srv.ports["submission"]).startswith(b"421")


def test_stale_password_never_bans_and_is_reported(guarded):
    srv = guarded()
    for _ in range(50):
        assert login(srv, "alice@example.test", "last year's password") == 535
    assert login(srv, "bob@example.test", PW) == 235          # same address, other user
    assert login(srv, "alice@example.test", PW) == 235         # and alice herself
    assert "event=ban" not in srv.read_log()
    assert "event=stale-password service=smtp rip=127.0.0.1 user=alice@example.test" in srv.read_log()
    stale = json.loads(srv.cli("ban", "list", "--stale", "--json").stdout)
    assert stale and stale[0]["user"] == "alice@example.test" and stale[0]["attempts"] >= 32
    deadline = time.time() + 10
    while True:
        notes = [m for _, m in mailbox_messages(srv, "alice@example.test")
                 if b"old password" in m]
        if notes or time.time() > deadline:
            break
        time.sleep(0.2)
    assert len(notes) == 1, "one notice per day per address"
    assert b"127.0.0.1" in notes[0]


def test_allow_listed_address_is_never_banned(guarded):
    srv = guarded({"guard.allow": "127.0.0.5 10.0.0.0/8"})
    for i in range(10):
        login(srv, "alice@example.test", f"n-{i}", src="127.0.0.5")
    assert login(srv, "alice@example.test", PW, src="127.0.0.5") == 235
    assert "event=ban" not in srv.read_log()


def test_distributed_guessing_slows_and_alerts_but_never_locks(guarded):
    srv = guarded({"guard.account_threshold": "5"})
    for i in range(12):
        assert login(srv, "alice@example.test", f"d-{i}", src=f"127.0.1.{i + 1}") == 535
    assert "event=account-attack user=alice@example.test" in srv.read_log()
    assert "event=ban" not in srv.read_log()
    assert login(srv, "alice@example.test", PW, src="127.0.2.1") == 235


def test_ban_add_and_remove_act_on_the_running_server(guarded):
    srv = guarded()
    assert greeting(srv.ports["submission"], src="127.0.0.7").startswith(b"220")
    out = srv.cli("ban", "add", "127.0.0.7", "--service", "smtp", "--time", "1h",
                  "--reason", "test").stdout
    assert "banned 127.0.0.7 on smtp" in out
    deadline = time.time() + 10
    while not greeting(srv.ports["submission"], src="127.0.0.7").startswith(b"421"):
        assert time.time() < deadline, "ban not applied"
        time.sleep(0.2)
    assert greeting(srv.ports["imap"], src="127.0.0.7").startswith(b"* OK")
    srv.cli("ban", "add", "127.0.0.7", "--service", "imap", "--time", "1h")
    deadline = time.time() + 10
    while not greeting(srv.ports["imap"], src="127.0.0.7").startswith(b"* BYE"):
        assert time.time() < deadline, "imap ban not applied"
        time.sleep(0.2)
    assert b"try again after" in greeting(srv.ports["imap"], src="127.0.0.7")
    srv.cli("ban", "remove", "127.0.0.7")
    deadline = time.time() + 10
    while not greeting(srv.ports["submission"], src="127.0.0.7").startswith(b"220"):
        assert time.time() < deadline, "ban not lifted"
        time.sleep(0.2)
    assert json.loads(srv.cli("ban", "list", "--json").stdout) == []
    assert "event=unban service=smtp rip=127.0.0.7 reason=manual" in srv.read_log()


def test_ban_cli_errors(guarded):
    srv = guarded()
    assert srv.cli("ban", "add", "not-an-ip", "--service", "smtp", "--time", "1h",
                   check=False).returncode == 1
    assert srv.cli("ban", "add", "127.0.0.9", "--service", "ftp", "--time", "1h",
                   check=False).returncode == 2
    assert srv.cli("ban", "add", "127.0.0.9", "--service", "smtp",
                   check=False).returncode == 2
