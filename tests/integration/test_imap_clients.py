"""Real IMAP clients against the server: isync's mbsync (Debian package "isync") syncing both
ways between the server and a local Maildir, over plain IMAP from loopback and over IMAPS."""
import email
import imaplib
import os
import shutil
import smtplib
import subprocess
import time

import pytest

ALICE = "alice@example.test"
PW = "correct horse battery"
TIMEOUT = 15


def mbsync_bin():
    path = shutil.which("mbsync")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "isync"], env=env,
                       capture_output=True, timeout=600)
        path = shutil.which("mbsync")
    if path is None:
        pytest.skip("mbsync is not installed and could not be installed (Debian package isync)")
    return path


@pytest.fixture
def mbsync():
    return mbsync_bin()


@pytest.fixture
def srv(make_server):
    s = make_server({"auth.failure_delay": "0s"}, start=False)
    s.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    s.start()
    return s


def deliver(srv, subject, body="Hello.\r\n"):
    msg = (f"From: Sender <sender@example.org>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n{body}").encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=TIMEOUT) as c:
        assert c.sendmail("sender@example.org", [ALICE], msg) == {}


def write_config(tmp_path, srv, tls):
    maildir = tmp_path / "mail"
    maildir.mkdir()
    if tls:
        remote = (f"Port {srv.ports['imaps']}\nSSLType IMAPS\nCertificateFile {srv.cert}\n"
                  "AuthMechs PLAIN\n")
    else:
        remote = f"Port {srv.ports['imap']}\nSSLType None\nAuthMechs LOGIN\n"
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        "IMAPAccount postamt\n"
        "Host 127.0.0.1\n"
        f"User {ALICE}\n"
        f'Pass "{PW}"\n'
        f"{remote}"
        "Timeout 20\n"
        "\n"
        "IMAPStore remote\n"
        "Account postamt\n"
        "\n"
        "MaildirStore local\n"
        f"Path {maildir}/\n"
        f"Inbox {maildir}/INBOX\n"
        "SubFolders Verbatim\n"
        "\n"
        "Channel sync\n"
        "Far :remote:\n"
        "Near :local:\n"
        "Patterns *\n"
        "Create Both\n"
        "Expunge Both\n"
        "Sync All\n"
        "SyncState *\n")
    return rc, maildir


def run_mbsync(binary, rc):
    p = subprocess.run([binary, "-c", str(rc), "-a"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"mbsync exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def local_messages(folder):
    """{subject: (path, maildir flags)} of a Maildir folder (new/ and cur/)."""
    out = {}
    for sub in ("new", "cur"):
        d = folder / sub
        if not d.is_dir():
            continue
        for name in os.listdir(d):
            path = d / name
            with open(path, "rb") as f:
                subject = email.message_from_binary_file(f)["Subject"]
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            out[subject] = (path, flags)
    return out


def strip_tuid(data):
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not line.startswith(b"X-TUID: "))


def set_local_flags(path, flags):
    """Moves a Maildir message to cur/ with the given flags (letters, sorted)."""
    base = path.name.split(":2,", 1)[0]
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    os.rename(path, target)
    return target


def add_local_message(folder, subject, flags=""):
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.{os.getpid()}_{subject.replace(' ', '_')}.localhost"
    msg = (f"From: Alice <{ALICE}>\r\nTo: friend@example.org\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject.replace(' ', '.')}@example.test>\r\n\r\nWritten offline.\r\n")
    tmp = folder / "tmp" / name
    tmp.write_bytes(msg.encode())
    dest = folder / ("cur" if flags else "new") / (name + (f":2,{flags}" if flags else ""))
    os.rename(tmp, dest)
    return msg.encode()


def server_view(srv, box="INBOX"):
    """{subject: (flags, body)} of a mailbox on the server, read with imaplib."""
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
    try:
        m.login(ALICE, PW)
        typ, data = m.select(box, readonly=True)
        assert typ == "OK", (box, data)
        out = {}
        if int(data[0]) == 0:
            return out
        typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK"
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = imaplib.ParseFlags(item[0])
            subject = email.message_from_bytes(item[1])["Subject"]
            out[subject] = (set(f.decode() for f in flags), item[1])
        return out
    finally:
        m.logout()


def server_folders(srv):
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
    try:
        m.login(ALICE, PW)
        typ, data = m.list('""', "*")
        assert typ == "OK"
        return {d.rsplit(b' "/" ', 1)[1].strip(b'"').decode() for d in data}
    finally:
        m.logout()


def imap_do(srv, *commands):
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
    try:
        m.login(ALICE, PW)
        for name, args in commands:
            typ, data = getattr(m, name)(*args)
            assert typ == "OK", (name, args, data)
    finally:
        m.logout()


@pytest.mark.parametrize("tls", [False, True], ids=["imap-plain-loopback", "imaps"])
def test_mbsync_two_way(srv, mbsync, tmp_path, tls):
    for s in ("first", "second", "third"):
        deliver(srv, s)
    project_msg = (b"From: Bob <bob@example.org>\r\nSubject: plan\r\n"
                   b"Message-ID: <plan@example.org>\r\n\r\nThe plan.\r\n")
    imap_do(srv, ("create", ("Projects/2024",)),
            ("append", ("Projects/2024", "(\\Flagged)", None, project_msg)))
    rc, maildir = write_config(tmp_path, srv, tls)

    # 1. Server -> local.
    run_mbsync(mbsync, rc)
    inbox = local_messages(maildir / "INBOX")
    assert set(inbox) == {"first", "second", "third"}, inbox
    assert all("S" not in f for _, f in inbox.values()), "nothing is read yet"
    projects = local_messages(maildir / "Projects" / "2024")
    assert set(projects) == {"plan"} and "F" in projects["plan"][1], projects
    with open(projects["plan"][0], "rb") as f:
        # mbsync keeps Maildir files with bare LF line ends and may add its X-TUID field.
        assert strip_tuid(f.read()) == project_msg.replace(b"\r\n", b"\n")
    for box in ("Drafts", "Sent", "Trash", "Junk", "Archive"):
        assert (maildir / box / "cur").is_dir(), f"{box} created locally"

    # 2. Local -> server: a new message, \Seen on one, a deleted one, a new folder.
    written = add_local_message(maildir / "INBOX", "offline reply")
    set_local_flags(inbox["first"][0], "S")
    set_local_flags(inbox["second"][0], "T")
    written2 = add_local_message(maildir / "Local", "local only", flags="S")
    run_mbsync(mbsync, rc)
    view = server_view(srv)
    assert set(view) == {"first", "third", "offline reply"}, view
    assert "\\Seen" in view["first"][0]
    assert "\\Seen" not in view["third"][0]
    assert strip_tuid(view["offline reply"][1]) == written
    assert "Local" in server_folders(srv)
    local = server_view(srv, "Local")
    assert set(local) == {"local only"} and "\\Seen" in local["local only"][0]
    assert strip_tuid(local["local only"][1]) == written2

    # 3. Server -> local again: a flag set and a mail delivered meanwhile.
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=TIMEOUT)
    try:
        m.login(ALICE, PW)
        m.select("INBOX")
        typ, data = m.fetch("1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        by_subject = {}
        for item in data:
            if isinstance(item, tuple):
                uid = item[0].split(b"UID ")[1].split(b" ")[0]
                by_subject[email.message_from_bytes(item[1])["Subject"]] = uid.decode()
        assert m.uid("STORE", by_subject["third"], "+FLAGS", "(\\Flagged)")[0] == "OK"
    finally:
        m.logout()
    deliver(srv, "fourth")
    run_mbsync(mbsync, rc)
    inbox = local_messages(maildir / "INBOX")
    assert set(inbox) == {"first", "third", "offline reply", "fourth"}, inbox
    assert "F" in inbox["third"][1] and "S" in inbox["first"][1]

    # 4. A run with nothing to do changes nothing.
    run_mbsync(mbsync, rc)
    assert set(local_messages(maildir / "INBOX")) == set(inbox)
    assert set(server_view(srv)) == set(inbox)
