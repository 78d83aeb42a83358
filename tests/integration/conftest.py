"""Fixtures that run the real postamt binary: `postamt init` into a temporary folder on free
loopback ports, then `postamt serve`, talked to with Python's own mail clients."""
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("POSTAMT_BIN", os.path.join(TOP, "build", "postamt"))

OFFSETS = {"smtp": 25, "submission": 587, "submissions": 465, "imap": 143,
           "imaps": 993, "pop3": 110, "pop3s": 995}


def _free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_base():
    for _ in range(200):
        base = random.randrange(20000, 64000 - 1000)
        if all(_free(base + off) for off in OFFSETS.values()):
            return base
    raise RuntimeError("no free port range")


def run(args, conf=None, input=None, check=True, timeout=60):
    cmd = [BIN] + (["-c", conf] if conf else []) + list(args)
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}: {p.stderr}")
    return p


class Server:
    def __init__(self, root, extra_config=None, domain="example.test"):
        self.root = root
        self.base = free_port_base()
        self.ports = {k: self.base + v for k, v in OFFSETS.items()}
        run(["init", root, "--domain", domain, "--port-base", str(self.base)])
        self.conf = os.path.join(root, "postamt.conf")
        self.data_dir = os.path.join(root, "data")
        self.cert = os.path.join(root, "tls", "cert.pem")
        if extra_config:
            self.set_config(extra_config)
        self.proc = None
        self.start_offset = 0
        self.log_path = os.path.join(root, "server.log")

    def set_config(self, settings):
        """settings: {"limits.idle_timeout": "1s"}; rewrites or adds lines in their sections."""
        with open(self.conf) as f:
            lines = f.read().splitlines()
        for key, value in settings.items():
            section, name = key.split(".", 1)
            out, cur, done = [], None, False
            for line in lines:
                s = line.strip()
                if s.startswith("["):
                    if cur == section and not done:
                        out.append(f"{name} = {value}")
                        done = True
                    cur = s[1:-1]
                if cur == section and s.split("=")[0].strip() == name and not s.startswith("#"):
                    out.append(f"{name} = {value}")
                    done = True
                    continue
                out.append(line)
            if not done:
                if cur != section:
                    out.append(f"[{section}]")
                out.append(f"{name} = {value}")
            lines = out
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def cli(self, *args, input=None, check=True):
        return run(args, conf=self.conf, input=input, check=check)

    def move_ports(self):
        """Another process took one of our ports: move every listener to a new base."""
        self.base = free_port_base()
        self.ports = {k: self.base + v for k, v in OFFSETS.items()}
        self.set_config({f"listen.{k}": f"127.0.0.1:{p}" for k, p in self.ports.items()})

    def start(self, wait=True):
        for _ in range(5):
            self.log = open(self.log_path, "ab")
            self.start_offset = self.log.tell()
            self.proc = subprocess.Popen([BIN, "-c", self.conf, "serve"], stdout=self.log,
                                         stderr=subprocess.STDOUT)
            if not wait:
                return self
            try:
                self.wait_listening()
                return self
            except AssertionError:
                if "Address already in use" not in self.read_log()[self.start_offset:]:
                    raise
                self.proc.wait()
                self.proc = None
                self.log.close()
                self.move_ports()
        raise AssertionError("no free ports")

    def wait_listening(self, timeout=30):
        deadline = time.time() + timeout
        while "event=start hostname=" not in self.read_log()[self.start_offset:]:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.read_log()}")
            if time.time() > deadline:
                raise AssertionError(f"server did not start: {self.read_log()}")
            time.sleep(0.05)
        for port in self.ports.values():
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited {self.proc.returncode}: {self.read_log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise AssertionError(f"port {port} not listening: {self.read_log()}")
                    time.sleep(0.05)

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.log.close()
        return code


@pytest.fixture
def tmpdir_world():
    """A temporary folder any user can traverse (the server may drop privileges)."""
    d = tempfile.mkdtemp(prefix="postamt-test-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_server(tmpdir_world):
    servers = []

    def factory(extra_config=None, start=True, name="srv"):
        root = os.path.join(tmpdir_world, name)
        s = Server(root, extra_config)
        servers.append(s)
        if start:
            s.start()
        return s

    yield factory
    for s in servers:
        code = s.stop()
        # A sanitizer report or a crash at shutdown is a failure of whichever test ran.
        log = s.read_log() if os.path.exists(s.log_path) else ""
        assert "ERROR: AddressSanitizer" not in log and "runtime error:" not in log, log
        assert "ERROR: LeakSanitizer" not in log, log
        assert code in (0, None, -9), f"server exit code {code}: {log[-3000:]}"


@pytest.fixture
def server(make_server):
    return make_server()


def mailbox_messages(server, address, mailbox="INBOX"):
    """The messages of a mailbox, read straight from the store (the database, and the blob
    files of messages larger than storage.inline_max), as a list of (uid, bytes), in UID
    order."""
    import sqlite3
    db = os.path.join(server.data_dir, "postamt.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT m.uid, m.blob_id, d.data FROM messages m "
            "JOIN mailboxes b ON m.mailbox_id = b.id "
            "JOIN accounts a ON b.account_id = a.id LEFT JOIN blob_data d ON d.id = m.blob_id "
            "WHERE a.address = ? AND b.name = ? "
            "ORDER BY m.uid", (address.lower(), mailbox)).fetchall()
    finally:
        con.close()
    out = []
    for uid, blob, data in rows:
        paths = blob_file_paths(server, blob)
        if data is not None:
            assert paths == [], (blob, "kept in the database and as a file", paths)
            out.append((uid, bytes(data)))
            continue
        assert len(paths) == 1, (blob, paths)
        with open(paths[0], "rb") as f:
            out.append((uid, f.read()))
    return out


def blob_file_paths(server, blob):
    import glob
    return glob.glob(os.path.join(server.data_dir, "blobs", "*", blob))


def db_count(server, table):
    """Rows of a table, read with a connection of our own."""
    import sqlite3
    db = os.path.join(server.data_dir, "postamt.db")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def blob_rows(server):
    """Number of message blobs the store knows (in the database or as files)."""
    return db_count(server, "blobs")


def queue_count(server):
    return db_count(server, "queue")
