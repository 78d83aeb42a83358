"""The running server: listeners, TLS, STARTTLS, signals, limits, timeouts."""
import imaplib
import os
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
import time

from conftest import OFFSETS, BIN


def tls_context(server):
    # The chain is verified against the server's own certificate; clients here connect to
    # 127.0.0.1, not to the name in the certificate.
    ctx = ssl.create_default_context(cafile=server.cert)
    ctx.check_hostname = False
    return ctx


def test_listens_on_all_seven_ports(server):
    for name, port in server.ports.items():
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    assert set(server.ports) == set(OFFSETS)


def test_implicit_tls_handshake_and_certificate(server):
    for name in ("submissions", "imaps", "pop3s"):
        raw = socket.create_connection(("127.0.0.1", server.ports[name]), timeout=10)
        with tls_context(server).wrap_socket(raw, server_hostname="mail.example.test") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            greeting = s.recv(512)
            assert greeting.startswith({"submissions": b"220 ", "imaps": b"* OK",
                                        "pop3s": b"+OK"}[name]), greeting


def test_tls_1_1_refused(server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    except (ValueError, AttributeError):
        return
    raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=10)
    try:
        ctx.wrap_socket(raw)
        raise AssertionError("TLS 1.1 handshake succeeded")
    except (ssl.SSLError, ConnectionResetError):
        pass
    finally:
        raw.close()


def test_smtp_starttls(server):
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        c.starttls(context=tls_context(server))
        code, _ = c.ehlo("client.test")
        assert code == 250
        assert not c.has_extn("starttls")
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_submission_starttls(server):
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.starttls(context=tls_context(server))
        assert c.noop()[0] == 250


def test_imap_starttls(server):
    c = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
    assert "STARTTLS" in c.capabilities
    c.starttls(ssl_context=tls_context(server))
    typ, _ = c.noop()
    assert typ == "OK"
    c.logout()


def test_pop3_stls(server):
    c = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
    assert "STLS" in c.capa()
    c.stls(context=tls_context(server))
    assert c.noop().startswith(b"+OK")
    c.quit()



def test_starttls_injection_is_discarded(server):
    raw = socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10)
    assert raw.recv(512).startswith(b"220")
    # The NOOP is pipelined before the handshake: it must not be executed after it.
    raw.sendall(b"STARTTLS\r\nNOOP\r\n")
    time.sleep(0.2)
    resp = raw.recv(512)
    assert resp.startswith(b"220 2.0.0"), resp
    s = tls_context(server).wrap_socket(raw, server_hostname="mail.example.test")
    s.settimeout(1.0)
    try:
        data = s.recv(512)
    except socket.timeout:
        data = b""
    assert data == b"", data
    s.sendall(b"NOOP\r\n")
    s.settimeout(10)
    assert s.recv(512).startswith(b"250")
    s.close()


def test_overlong_line_is_refused(server):
    raw = socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=10)
    raw.recv(512)
    raw.sendall(b"NOOP " + b"x" * 5000 + b"\r\n")
    data = b""
    while True:
        chunk = raw.recv(512)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"-ERR Line too long"), data
    raw.close()


def test_sigterm_exits_zero(server):
    assert server.stop(signal.SIGTERM) == 0
    assert "event=stop result=ok" in server.read_log()


def test_sigterm_says_goodbye_to_open_sessions(server):
    c = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=10)
    assert c.recv(512).startswith(b"* OK")
    server.proc.send_signal(signal.SIGTERM)
    data = c.recv(512)
    assert data.startswith(b"* BYE"), data
    assert server.stop() == 0


def test_idle_timeout_closes_connection(make_server):
    srv = make_server({"limits.idle_timeout": "1s"})
    c = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10)
    assert c.recv(512).startswith(b"+OK")
    start = time.time()
    assert c.recv(512) == b""
    assert time.time() - start < 8
    assert "reason=timeout" in srv.read_log()


def test_connections_per_ip_limit(make_server):
    srv = make_server({"limits.max_connections_per_ip": "3"})
    time.sleep(0.5)  # the start-up probes' connections are released asynchronously
    held = [socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
            for _ in range(3)]
    for h in held:
        assert h.recv(512).startswith(b"220")
    extra = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
    assert extra.recv(512).startswith(b"421 4.7.0"), "fourth connection not refused"
    extra.close()
    # The limit is per service: IMAP from the same address still works.
    imap = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=10)
    assert imap.recv(512).startswith(b"* OK")
    imap.close()
    # Another loopback address is another client.
    other = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10,
                                     source_address=("127.0.0.2", 0))
    assert other.recv(512).startswith(b"220")
    other.close()
    held.pop().close()
    time.sleep(0.3)
    again = socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10)
    assert again.recv(512).startswith(b"220")
    again.close()
    for h in held:
        h.close()


def test_connection_rate_per_ip(make_server):
    srv = make_server({"limits.max_connection_rate_per_ip": "12"})
    time.sleep(0.5)  # the start-up probes used 7 of the 12
    answers = []
    for _ in range(7):
        with socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10) as c:
            answers.append(c.recv(512)[:15])
    assert answers[:5] == [b"+OK mail.exampl"] * 5, answers
    assert answers[5].startswith(b"-ERR [SYS/TEMP]"), answers
    with socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10,
                                  source_address=("127.0.0.2", 0)) as c:
        assert c.recv(512).startswith(b"+OK")
    assert "reason=connection-rate" in srv.read_log()


def test_global_connection_limit(make_server):
    srv = make_server({"limits.max_connections": "2"})
    time.sleep(0.5)
    a = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10)
    b = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=10,
                                 source_address=("127.0.0.3", 0))
    assert a.recv(512).startswith(b"+OK") and b.recv(512).startswith(b"* OK")
    c = socket.create_connection(("127.0.0.1", srv.ports["pop3"]), timeout=10,
                                 source_address=("127.0.0.4", 0))
    assert c.recv(512).startswith(b"-ERR [SYS/TEMP]")
    for s in (a, b, c):
        s.close()


def test_sighup_reloads_certificate(server):
    def served_cert():
        raw = socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=10)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True)

    before = served_cert()
    tls = os.path.join(server.root, "tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                    "/CN=mail.example.test", "-keyout", tls + "/key2.pem", "-out",
                    tls + "/cert2.pem"], check=True, capture_output=True)
    server.set_config({"tls.cert": tls + "/cert2.pem", "tls.key": tls + "/key2.pem"})
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while served_cert() == before:
        assert time.time() < deadline, server.read_log()
        time.sleep(0.1)
    assert "event=reload result=ok" in server.read_log()


def test_sighup_with_broken_config_keeps_running(server):
    with open(server.conf, "a") as f:
        f.write("[limits]\nnonsense = 1\n")
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert server.proc.poll() is None
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10) as c:
        assert c.recv(512).startswith(b"220")
    assert "event=reload result=failed" in server.read_log()


def test_log_lines_are_key_value_and_sanitised(server):
    c = socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=10)
    c.recv(512)
    c.sendall(b"QUIT\r\n")
    c.recv(512)
    c.close()
    time.sleep(0.3)
    log = server.read_log()
    # Start-up probes of other ports may be logged too, by other threads in any order.
    lines = [l for l in log.splitlines() if "event=connect" in l and "service=smtp" in l]
    assert lines, log
    assert " sid=" in lines[-1] and " rip=127.0.0.1" in lines[-1]


def test_drops_privileges_when_started_as_root(make_server):
    if os.geteuid() != 0:
        return
    srv = make_server({"server.user": "nobody"})
    with open(f"/proc/{srv.proc.pid}/status") as f:
        uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    assert all(int(u) == nobody for u in uids), uids
    assert "event=privileges user=nobody" in srv.read_log()
