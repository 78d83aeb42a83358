"""A full disk gives temporary errors, stores nothing half, and the server recovers by itself
once there is space again. Needs root (a small tmpfs is mounted for the data folder)."""
import os
import shutil
import smtplib
import subprocess

import pytest

from conftest import mailbox_messages


@pytest.fixture
def small_disk(tmpdir_world):
    mnt = os.path.join(tmpdir_world, "small")
    os.mkdir(mnt)
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", mnt]).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", mnt])


def fill(path, leave):
    """Fills the file system of path until about `leave` bytes are free."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(path, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())


def server_on(make_server, disk):
    """A running server with alice whose data folder is on disk."""
    srv = make_server(start=False)
    srv.cli("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    data = os.path.join(disk, "data")
    shutil.copytree(os.path.join(srv.root, "data"), data)
    srv.set_config({"server.data_dir": data})
    srv.data_dir = data
    srv.start()
    return srv, data


def test_disk_full_is_temporary_and_recovers(make_server, small_disk):
    srv, data = server_on(make_server, small_disk)
    body = ("x" * 76 + "\r\n") * 4000   # about 300 KiB
    msg = f"Subject: big\r\n\r\n{body}".encode()

    fill(small_disk, 64 * 1024)
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
        try:
            c.sendmail("a@example.org", ["alice@example.test"], msg)
            raise AssertionError("accepted a message that cannot fit")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 452 and b"4.3.1" in e.smtp_error, e
        # the session survives the failure
        assert c.noop()[0] == 250
    assert mailbox_messages(srv, "alice@example.test") == []

    os.unlink(os.path.join(small_disk, "filler"))
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
        assert c.sendmail("a@example.org", ["alice@example.test"], msg) == {}
    msgs = mailbox_messages(srv, "alice@example.test")
    assert len(msgs) == 1 and msgs[0][1].endswith(body.encode())
    assert srv.stop() == 0
    assert srv.cli("store", "check").returncode == 0
    # nothing of the refused message is left behind in the blob folders
    leftovers = [f for d, _, fs in os.walk(os.path.join(data, "blobs")) for f in fs]
    assert len(leftovers) == 1, leftovers


def test_disk_full_with_messages_kept_in_the_database(make_server, small_disk):
    """Messages under storage.inline_max go into the database: when its log cannot grow, the
    client gets 452 and nothing acknowledged is lost; with space back, mail flows again."""
    srv, _ = server_on(make_server, small_disk)

    fill(small_disk, 512 * 1024)
    accepted, refused = [], 0
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
        for i in range(100):  # 100 x 30 KiB: far more than the space left
            body = (f"{i:04d}" + "y" * 72 + "\r\n") * 400
            try:
                c.sendmail("a@example.org", ["alice@example.test"],
                           f"Subject: small {i}\r\n\r\n{body}".encode())
                accepted.append(body.encode())
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 452 and b"4.3.1" in e.smtp_error, e
                refused += 1
                break
        assert c.noop()[0] == 250
    assert refused == 1, "the disk never filled up"
    msgs = mailbox_messages(srv, "alice@example.test")
    assert [m[1].split(b"\r\n\r\n", 1)[1] for m in msgs] == accepted

    os.unlink(os.path.join(small_disk, "filler"))
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as c:
        assert c.sendmail("a@example.org", ["alice@example.test"], b"Subject: after\r\n\r\nok\r\n") == {}
    assert len(mailbox_messages(srv, "alice@example.test")) == len(accepted) + 1
    assert srv.stop() == 0
    assert srv.cli("store", "check").returncode == 0
