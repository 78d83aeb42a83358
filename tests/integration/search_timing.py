"""Times IMAP SEARCH with text keys over one mailbox, without the full-text index
(imap.search_index_budget = 0), on the search that indexes it (cold) and once indexed (warm).
Not a test (pytest does not collect it); run it by hand:

    make build && POSTAMT_BIN=$PWD/build/postamt /usr/bin/python3 tests/integration/search_timing.py 2000

Messages are about 6 KB of words (a quarter with base64 bodies); each timing is the wall time
of one UID SEARCH as the client sees it, and the server's own count of files read."""
import base64
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import Server  # noqa: E402
from test_imap import ALICE, PW, Imap, Lit, q  # noqa: E402

VOCAB = [w.strip() for w in """alpha bravo charlie delta echo foxtrot golf hotel india juliet
kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee
zulu report meeting budget invoice travel schedule project review draft final update""".split()]


def message(i, rng):
    words = " ".join(rng.choice(VOCAB) for _ in range(900))
    body = "\r\n".join(words[k:k + 70] for k in range(0, len(words), 70)) + "\r\n"
    body += f"ticket T{i:06d}\r\n"
    subject = f"{rng.choice(VOCAB)} {rng.choice(VOCAB)} {i}"
    if i % 4 == 1:
        extra = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
        text = base64.encodebytes(body.encode()).replace(b"\n", b"\r\n")
    else:
        extra, text = "", body.encode()
    return (f"From: user{i % 50}@example.org\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{i}@example.org>\r\nMIME-Version: 1.0\r\n{extra}\r\n").encode() + text


def timed(c, srv, *keys):
    t = time.monotonic()
    r = c.cmd("UID SEARCH", *keys)
    ms = (time.monotonic() - t) * 1000
    assert r.status == "OK", r
    hits = len(r.lines("SEARCH")[0].split()) if r.lines("SEARCH") else 0
    line = [x for x in srv.read_log().splitlines() if "event=search " in x][-1]
    read = re.search(r"read=(\d+)", line).group(1)
    return ms, hits, read


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    root = tempfile.mkdtemp(prefix="postamt-timing-")
    os.chmod(root, 0o755)
    srv = Server(os.path.join(root, "srv"))
    srv.set_config({"auth.failure_delay": "0s", "log.level": "debug",
                    "imap.search_index_budget": "0"})
    srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
    srv.start()
    try:
        c = Imap(srv)
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        rng = random.Random(1)
        t = time.monotonic()
        for start in range(0, n, 50):
            parts = []
            for i in range(start, min(n, start + 50)):
                parts += ["()", Lit(message(i, rng), plus=True)]
            assert c.cmd("APPEND", "INBOX", *parts).status == "OK"
        print(f"{n} messages appended in {time.monotonic() - t:.1f} s")
        c.select()
        searches = [("BODY", "T000123"), ("SUBJECT", "budget"), ("TEXT", "whiskey"),
                    ("FROM", "user7@"), ("OR", "BODY", "T000042", "SUBJECT", "nothing")]
        print(f"{'search':36} {'no index':>14} {'cold':>14} {'warm':>14}  hits")
        rows = {k: [timed(c, srv, *k)] for k in searches}
        c.close()
        srv.stop()
        srv.set_config({"imap.search_index_budget": "1G"})
        srv.start()
        c = Imap(srv)
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        c.select()
        for k in searches:
            rows[k].append(timed(c, srv, *k))  # the first one indexes the whole mailbox
        for k in searches:
            rows[k].append(timed(c, srv, *k))
        for k, r in rows.items():
            cells = " ".join(f"{ms:8.0f} ms r{read:<5}" for ms, _, read in r)
            print(f"{' '.join(k):36} {cells}  {r[0][1]}")
        c.close()
        srv.stop()
        db = os.path.join(srv.data_dir, "postamt.db")
        con = sqlite3.connect(db)
        blobs = con.execute("SELECT coalesce(sum(size), 0) FROM blobs").fetchone()[0]
        fts = con.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'fts%'").fetchone()[0]
        con.close()
        print(f"message files {blobs / 1e6:.1f} MB, full-text index {fts / 1e6:.1f} MB")
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
