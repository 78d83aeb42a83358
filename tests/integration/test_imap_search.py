"""SEARCH with text keys and the full-text index: results must be those of a search that reads
every message (the expected answers are computed here from the messages we made), whether the
mailbox is indexed, partly indexed or not at all; and once it is indexed, the messages the index
rules out are not read. That last point is shown by rewriting the files of such messages so that
they WOULD match: a search that read them would return them."""
import base64
import glob
import os
import re
import sqlite3

import pytest

from test_imap import ALICE, FAST, PW, Imap, Lit, q

DEBUG = {"log.level": "debug"}


@pytest.fixture
def start(make_server):
    """start(extra_config) -> a running server with alice."""
    def factory(extra=None):
        cfg = dict(FAST)
        cfg.update(DEBUG)
        cfg.update(extra or {})
        srv = make_server(cfg, start=False)
        srv.cli("user", "add", ALICE, "--password-stdin", input=PW + "\n")
        srv.start()
        return srv
    return factory


@pytest.fixture
def client():
    clients = []

    def factory(srv):
        c = Imap(srv)
        clients.append(c)
        assert c.cmd("LOGIN", q(ALICE), q(PW)).status == "OK"
        return c
    yield factory
    for c in clients:
        c.close()


# ---- the corpus ---------------------------------------------------------------------------------

WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel", "iris",
         "juniper", "kiwi", "lemon"]


def enc_word(text):
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def make(i):
    """Message i and what a reader sees in it: (raw bytes, subject, from, body text)."""
    w1, w2 = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
    subject = f"report {w1} number {i}"
    sender = f"user{i % 5}@sender{i % 3}.example"
    body = f"Dear reader, the {w2} harvest of week {i} was good.\r\nRegards\r\n"
    kind = i % 4
    if kind == 0:  # plain
        head = f"Subject: {subject}\r\n"
        text = body.encode()
        extra = ""
    elif kind == 1:  # encoded-word subject, base64 body
        subject = f"Grüße {w1} Nummer {i}"
        head = f"Subject: {enc_word(subject)}\r\n"
        extra = ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: base64\r\n")
        body = f"Schöne {w2} Ernte, Woche {i}.\r\n"
        text = base64.encodebytes(body.encode()).replace(b"\n", b"\r\n")
    elif kind == 2:  # quoted-printable latin-1
        head = f"Subject: {subject}\r\n"
        extra = ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
                 "Content-Transfer-Encoding: quoted-printable\r\n")
        body = f"Caf\u00e9 {w2}, semaine {i}.\r\n"
        text = body.encode("latin-1").replace(b"\xe9", b"=E9")
    else:  # multipart with an attachment that is not text
        head = f"Subject: {subject}\r\n"
        extra = ("MIME-Version: 1.0\r\n"
                 "Content-Type: multipart/mixed; boundary=\"b\"\r\n")
        attach = base64.b64encode(f"secret {w1} zzzattach".encode()).decode()
        text = (f"--b\r\nContent-Type: text/plain\r\n\r\n{body}--b\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                f"\r\n{attach}\r\n--b--\r\n").encode()
    raw = (f"From: {sender}\r\nTo: {ALICE}\r\n{head}"
           f"Date: Mon, 02 Jan 2023 10:00:00 +0000\r\nMessage-ID: <m{i}@example.org>\r\n"
           f"{extra}\r\n").encode() + text
    return raw, subject, sender, body


def fill(c, n, box="INBOX"):
    msgs = [make(i) for i in range(n)]
    for start in range(0, n, 50):
        parts = []
        for raw, *_ in msgs[start:start + 50]:
            parts += ["()", Lit(raw, plus=True)]
        r = c.cmd("APPEND", box, *parts)
        assert r.status == "OK", r
    return msgs


def L(text):
    """A UTF-8 search string (8-bit text cannot be quoted)."""
    return Lit(text.encode(), plus=True)


def search(c, *keys):
    r = c.cmd("UID SEARCH", "CHARSET", "UTF-8", *keys)
    assert r.status == "OK", r
    line = r.lines("SEARCH")[0] if r.lines("SEARCH") else b""
    return [int(x) for x in line.split()]


def expect(msgs, pred):
    return [i + 1 for i, m in enumerate(msgs) if pred(*m[1:])]


# (search keys, predicate over (subject, from, body)); needles of all lengths and kinds
QUERIES = [
    (["SUBJECT", "banana"], lambda s, f, b: "banana" in s),
    (["BODY", "HARVEST"], lambda s, f, b: "harvest" in b.lower()),
    (["BODY", "ernte"], lambda s, f, b: "ernte" in b.lower()),
    (["BODY", L("Café")], lambda s, f, b: "café" in b.lower()),
    (["SUBJECT", L("GRÜßE")], lambda s, f, b: "grüße" in s.lower()),
    (["SUBJECT", "GR"], lambda s, f, b: "gr" in s.lower()),
    (["BODY", "ig"], lambda s, f, b: "ig" in b.lower()),
    (["FROM", "sender2"], lambda s, f, b: "sender2" in f),
    (["TEXT", "kiwi"], lambda s, f, b: "kiwi" in (s + f + b).lower()),
    (["BODY", "zzzattach"], lambda s, f, b: False),  # in an attachment: not text
    (["SUBJECT", "lemon", "BODY", "week"],
     lambda s, f, b: "lemon" in s and "week" in b),
    (["OR", "SUBJECT", "fig", "BODY", "semaine"],
     lambda s, f, b: "fig" in s or "semaine" in b),
    (["NOT", "BODY", "regards"], lambda s, f, b: "regards" not in b.lower()),
    (["SUBJECT", "number", "NOT", "SUBJECT", "apple"],
     lambda s, f, b: "number" in s and "apple" not in s),
    (["HEADER", "Message-ID", "m17@"], lambda s, f, b: s.endswith(" 17")),
    (["BODY", q("week 3")], lambda s, f, b: "week 3" in b),
    (["SUBJECT", '"report \\"x"'], lambda s, f, b: False),
]


def check_all(c, msgs):
    for keys, pred in QUERIES:
        assert search(c, *keys) == expect(msgs, pred), keys


def index_state(srv):
    con = sqlite3.connect(f"file:{os.path.join(srv.data_dir, 'postamt.db')}?mode=ro", uri=True,
                          timeout=30)
    try:
        docs = con.execute("SELECT count(*) FROM fts_docs").fetchone()[0]
        rows = con.execute("SELECT count(*) FROM fts_text").fetchone()[0]
        blobs = con.execute("SELECT count(*) FROM blobs").fetchone()[0]
    finally:
        con.close()
    return docs, rows, blobs


def blob_of(srv, box, uid):
    con = sqlite3.connect(f"file:{os.path.join(srv.data_dir, 'postamt.db')}?mode=ro", uri=True,
                          timeout=30)
    try:
        row = con.execute("SELECT m.blob_id FROM messages m JOIN mailboxes b ON b.id = "
                          "m.mailbox_id WHERE b.name = ? AND m.uid = ?", (box, uid)).fetchone()
    finally:
        con.close()
    paths = glob.glob(os.path.join(srv.data_dir, "blobs", "*", row[0]))
    assert len(paths) <= 1
    return row[0], paths[0] if paths else None  # None: kept in the database


def search_logs(srv):
    return [dict(kv.split("=", 1) for kv in re.findall(r"\b\w+=\S+", line))
            for line in srv.read_log().splitlines() if "event=search " in line]


# ---- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", ["32M", "1K", "0"])
def test_results_are_those_of_a_full_read(start, client, budget):
    """Cold (indexing on the way, fully or within a small budget, or never) and then warm."""
    srv = start({"imap.search_index_budget": budget})
    c = client(srv)
    msgs = fill(c, 120)
    c.select()
    check_all(c, msgs)
    check_all(c, msgs)  # the index (whatever got into it) gives the same answers
    docs, rows, blobs = index_state(srv)
    assert docs == rows
    if budget == "32M":
        assert docs == 120
    elif budget == "0":
        assert docs == 0
    else:
        assert 0 < docs < 120  # several commands, a few files each
    # SORT and THREAD run the same filter
    r = c.cmd("UID SORT", "(SUBJECT)", "UTF-8", "SUBJECT", "banana")
    assert r.status == "OK", r
    assert sorted(int(x) for x in r.lines("SORT")[0].split()) == \
        expect(msgs, lambda s, f, b: "banana" in s)
    assert srv.cli("store", "check").returncode == 0


def test_indexed_search_reads_only_candidates(start, client):
    srv = start({"storage.inline_max": "0"})  # message files, which the test rewrites
    c = client(srv)
    msgs = fill(c, 60)
    c.select()
    want = expect(msgs, lambda s, f, b: "cherry" in s)
    assert search(c, "SUBJECT", "cherry") == want  # indexes the mailbox
    log = search_logs(srv)[-1]
    assert log["indexed"] == "60" and log["index"] == "yes", log

    # Rewrite the files of some messages the index rules out so that they would match now.
    fake = (b"From: x@example.org\r\nSubject: cherry cherry\r\n\r\ncherry\r\n")
    others = [u for u in range(1, 61) if u not in want][:10]
    for uid in others:
        _, path = blob_of(srv, "INBOX", uid)
        os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(fake)
    assert search(c, "SUBJECT", "cherry") == want  # not read: still not found
    log = search_logs(srv)[-1]
    assert log["skipped"] == str(60 - len(want)) and log["read"] == str(len(want)), log
    assert search(c, "BODY", "cherry") == expect(msgs, lambda s, f, b: "cherry" in b)
    assert search(c, "SUBJECT", "cherry", "BODY", "zzz") == []
    assert search_logs(srv)[-1]["read"] == "0"
    # ... while a key the index cannot answer reads them all
    assert search(c, "NOT", "SUBJECT", "cherry") == [u for u in range(1, 61) if u not in want
                                                      and u not in others]
    assert search_logs(srv)[-1]["read"] == "60"
    assert search(c, "SUBJECT", "ch") == sorted(want + others)  # too short for the index


def test_new_messages_are_read_until_indexed(start, client):
    srv = start({"imap.search_index_budget": "0"})
    c = client(srv)
    msgs = fill(c, 20)
    c.select()
    assert search(c, "BODY", "harvest") == expect(msgs, lambda s, f, b: "harvest" in b)
    assert search_logs(srv)[-1]["read"] == "20"
    assert index_state(srv)[0] == 0


def test_copies_share_one_entry_and_expunged_messages_go(start, client):
    srv = start()
    c = client(srv)
    msgs = fill(c, 24)
    c.select()
    want = expect(msgs, lambda s, f, b: "damson" in s)
    assert search(c, "SUBJECT", "damson") == want
    assert index_state(srv)[:2] == (24, 24)

    assert c.cmd("CREATE", "Keep").status == "OK"
    assert c.cmd("UID COPY", ",".join(map(str, want)), "Keep").status == "OK"
    c.select("Keep")
    assert search(c, "SUBJECT", "damson") == list(range(1, len(want) + 1))
    assert search_logs(srv)[-1]["indexed"] == "0"  # the copies' files were indexed already
    assert index_state(srv)[:2] == (24, 24)

    # Expunge one of them in INBOX: the copy still finds it; expunge the copy too and the
    # file's entry goes with the file.
    c.select()
    gone = want[0]
    blob, _ = blob_of(srv, "INBOX", gone)
    assert c.cmd("UID STORE", str(gone), "+FLAGS.SILENT", "(\\Deleted)").status == "OK"
    assert c.cmd("EXPUNGE").status == "OK"
    assert search(c, "SUBJECT", "damson") == want[1:]
    c.select("Keep")
    assert search(c, "SUBJECT", "damson") == list(range(1, len(want) + 1))
    assert c.cmd("UID STORE", "1", "+FLAGS.SILENT", "(\\Deleted)").status == "OK"
    assert c.cmd("EXPUNGE").status == "OK"
    assert search(c, "SUBJECT", "damson") == list(range(2, len(want) + 1))
    srv.cli("store", "gc")
    con = sqlite3.connect(f"file:{os.path.join(srv.data_dir, 'postamt.db')}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM fts_docs WHERE blob_id = ?",
                           (blob,)).fetchone()[0] == 0
    finally:
        con.close()
    docs, rows, _ = index_state(srv)
    assert docs == rows == 23
    assert srv.cli("store", "check").returncode == 0


def test_binary_and_unusual_text(start, client):
    """NUL octets, 8-bit text without a charset, quotes and long needles."""
    srv = start()
    c = client(srv)
    raws = [
        b"Subject: nul\r\n\r\nbefore\x00after the nul octet\r\n",
        b"Subject: raw8\r\n\r\nna\xefve \xff\xfe bytes\r\n",
        b"Subject: \"quoted\" words\r\n\r\nsay \"hello\" there\r\n",
        b"Subject: long\r\n\r\n" + b"x" * 5000 + b"needle-at-the-end\r\n",
        b"Subject: plain\r\n\r\nnothing special\r\n",
    ]
    for raw in raws:  # literal8 (RFC 3516), which may hold NUL
        r = c.cmd("APPEND", "INBOX", b"~{%d+}\r\n" % len(raw) + raw)
        assert r.status == "OK", r
    c.select()
    for _ in range(2):  # cold, then indexed
        assert search(c, "BODY", q("after the nul")) == [1]
        assert search(c, "BODY", "before") == [1]
        assert search(c, "BODY", "bytes") == [2]
        assert search(c, "SUBJECT", q('"quoted"')) == [3]
        assert search(c, "BODY", q('say "hello"')) == [3]
        assert search(c, "BODY", "needle-at-the-end") == [4]
        assert search(c, "BODY", Lit(b"x" * 3000 + b"needle")) == [4]
        assert search(c, "TEXT", "special") == [5]
        assert search(c, "OR", "BODY", "special", "SUBJECT", "raw8") == [2, 5]
