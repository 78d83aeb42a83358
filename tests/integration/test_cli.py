"""The scriptable contract of the postamt command (see README)."""
import os
import subprocess

import pytest

from conftest import BIN, Server, run

COMMANDS = [["init"], ["serve"], ["config"], ["domain"], ["user"], ["alias"], ["store"]]


@pytest.fixture
def inited(tmpdir_world):
    return Server(os.path.join(tmpdir_world, "srv"))


def test_help_everywhere():
    assert run(["--help"]).stdout.startswith("usage: postamt")
    for cmd in COMMANDS:
        p = run(cmd + ["--help"])
        assert p.stdout.startswith("usage: postamt"), cmd
    assert run(["--version"]).stdout.startswith("postamt ")


def test_usage_errors_are_one_line_and_nonzero():
    p = run(["frobnicate"], check=False)
    assert p.returncode != 0
    assert p.stderr.splitlines()[0] == "postamt: unknown command frobnicate"
    assert run(["domain", "add"], check=False).returncode == 2


def test_init_writes_a_working_setup(inited):
    conf = open(inited.conf).read()
    for name, off in (("smtp", 25), ("submission", 587), ("submissions", 465), ("imap", 143),
                      ("imaps", 993), ("pop3", 110), ("pop3s", 995)):
        assert f"{name} = 127.0.0.1:{inited.base + off}" in conf
    assert os.path.exists(inited.cert)
    assert os.stat(os.path.join(inited.root, "tls", "key.pem")).st_mode & 0o077 == 0
    assert inited.cli("config", "check").returncode == 0
    assert inited.cli("domain", "list").stdout.split() == ["example.test"]
    cert = subprocess.run(["openssl", "x509", "-in", inited.cert, "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:mail.example.test" in cert


def test_init_refuses_to_overwrite(inited):
    p = run(["init", inited.root, "--domain", "example.test"], check=False)
    assert p.returncode == 1 and "exists already" in p.stderr


def test_init_without_port_base_uses_standard_ports(tmpdir_world):
    d = os.path.join(tmpdir_world, "std")
    run(["init", d, "--domain", "example.org", "--hostname", "mx.example.org"])
    conf = open(os.path.join(d, "postamt.conf")).read()
    assert "smtp = *:25" in conf and "imaps = *:993" in conf and "hostname = mx.example.org" in conf


def test_bad_config_gives_line_numbered_errors(inited):
    with open(inited.conf, "a") as f:
        f.write("\n[limits]\nidle_timeout = 5 parsecs\nno_such_thing = 1\n")
    n = len(open(inited.conf).read().splitlines())
    p = inited.cli("config", "check", check=False)
    assert p.returncode == 1
    errs = p.stderr.splitlines()
    assert errs[0].startswith(f"{inited.conf}:{n - 1}: limits.idle_timeout: not a duration"), errs
    assert errs[1] == f"{inited.conf}:{n}: unknown setting limits.no_such_thing", errs
    # serve refuses to start with the same message
    p = subprocess.run([BIN, "-c", inited.conf, "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1 and f"{inited.conf}:{n}:" in p.stderr


def test_missing_config_file(tmpdir_world):
    p = run(["-c", os.path.join(tmpdir_world, "nope.conf"), "config", "check"], check=False)
    assert p.returncode == 1 and "cannot open" in p.stderr


def test_config_show_lists_every_setting(inited):
    shown = inited.cli("config", "show").stdout
    doc = run(["config", "doc"]).stdout
    names = [l.split("`")[1] for l in doc.splitlines() if l.startswith("| `")]
    assert len(names) > 20
    for name in names:
        assert f"\n{name} = " in shown, name
    assert "idle_timeout = 5m" in shown
    verbose = inited.cli("config", "show", "--verbose").stdout
    assert "# A connection that sends nothing" in verbose


def test_environment_names_the_config(inited):
    env = dict(os.environ, POSTAMT_CONFIG=inited.conf)
    p = subprocess.run([BIN, "domain", "list"], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and "example.test" in p.stdout


def test_domains(inited):
    inited.cli("domain", "add", "Example.ORG")
    assert inited.cli("domain", "list").stdout.split() == ["example.org", "example.test"]
    p = inited.cli("domain", "add", "example.org", check=False)
    assert p.returncode == 1 and p.stderr.startswith("postamt: ")
    assert inited.cli("domain", "add", "bad domain", check=False).returncode == 1
    inited.cli("domain", "remove", "example.org")
    assert inited.cli("domain", "list").stdout.split() == ["example.test"]
    assert inited.cli("domain", "remove", "example.org", check=False).returncode == 1


def test_users_and_passwords(inited):
    inited.cli("user", "add", "alice@example.test", "--password-stdin", input="s3cret pass\n")
    p = inited.cli("user", "add", "bob@example.test", "--generate-password")
    pw = [l for l in p.stdout.splitlines() if l.startswith("password: ")][0].split(": ", 1)[1]
    assert len(pw) >= 16
    assert inited.cli("user", "list").stdout.split() == ["alice@example.test", "bob@example.test"]
    assert inited.cli("user", "test", "alice@example.test", input="s3cret pass\n").returncode == 0
    assert inited.cli("user", "test", "ALICE@example.test", input="s3cret pass\n").returncode == 0
    assert inited.cli("user", "test", "alice@example.test", input="wrong\n",
                      check=False).returncode == 1
    assert inited.cli("user", "test", "nobody@example.test", input="s3cret pass\n",
                      check=False).stdout.strip() == "failed"
    assert inited.cli("user", "test", "bob@example.test", input=pw + "\n").returncode == 0
    inited.cli("user", "passwd", "alice@example.test", "--password-stdin", input="new one\n")
    assert inited.cli("user", "test", "alice@example.test", input="s3cret pass\n",
                      check=False).returncode == 1
    assert inited.cli("user", "test", "alice@example.test", input="new one\n").returncode == 0
    # the password never reaches the database in clear
    db = open(os.path.join(inited.root, "data", "postamt.db"), "rb").read()
    assert b"new one" not in db and b"s3cret" not in db
    # errors
    assert inited.cli("user", "add", "alice@example.test", "--password-stdin", input="x\n",
                      check=False).returncode == 1
    assert inited.cli("user", "add", "carol@unknown.test", "--password-stdin", input="x\n",
                      check=False).returncode == 1
    assert inited.cli("user", "add", "not-an-address", "--password-stdin", input="x\n",
                      check=False).returncode == 1
    assert inited.cli("user", "add", "dave@example.test", "--password-stdin", input="\n",
                      check=False).returncode == 1
    assert inited.cli("user", "add", "dave@example.test", check=False).returncode == 1  # no tty
    # a domain with accounts cannot be removed
    assert inited.cli("domain", "remove", "example.test", check=False).returncode == 1
    inited.cli("user", "remove", "bob@example.test")
    assert inited.cli("user", "list").stdout.split() == ["alice@example.test"]
    assert inited.cli("user", "test", "bob@example.test", input=pw + "\n",
                      check=False).returncode == 1


def test_dovecot_hashes_are_accepted(inited):
    # A SHA512-CRYPT hash as Dovecot writes it in a passwd-file works as it is.
    import crypt  # deprecated in 3.11, still present in Debian's python3
    h = crypt.crypt("from dovecot", crypt.mksalt(crypt.METHOD_SHA512))
    inited.cli("user", "add", "old@example.test", "--password-stdin", input="tmp\n")
    import sqlite3
    con = sqlite3.connect(os.path.join(inited.root, "data", "postamt.db"))
    con.execute("UPDATE accounts SET pwhash = ? WHERE address = ?",
                ("{SHA512-CRYPT}" + h, "old@example.test"))
    con.commit()
    con.close()
    assert inited.cli("user", "test", "old@example.test", input="from dovecot\n").returncode == 0


def test_aliases(inited):
    inited.cli("user", "add", "alice@example.test", "--password-stdin", input="pw\n")
    inited.cli("alias", "add", "info@example.test", "alice@example.test")
    inited.cli("alias", "add", "info@example.test", "someone@remote.example")
    inited.cli("alias", "add", "@example.test", "alice@example.test")
    listed = inited.cli("alias", "list").stdout.splitlines()
    assert "info@example.test -> alice@example.test" in listed
    assert "info@example.test -> someone@remote.example" in listed
    assert "@example.test -> alice@example.test" in listed
    assert inited.cli("alias", "add", "x@unknown.test", "alice@example.test",
                      check=False).returncode == 1
    assert inited.cli("alias", "add", "info@example.test", "alice@example.test",
                      check=False).returncode == 1
    inited.cli("alias", "remove", "info@example.test", "someone@remote.example")
    inited.cli("alias", "remove", "@example.test")
    assert inited.cli("alias", "list").stdout.splitlines() == [
        "info@example.test -> alice@example.test"]


def test_store_check_on_a_fresh_store(inited):
    p = inited.cli("store", "check")
    assert p.stdout.strip().endswith("0 problems found")
    assert inited.cli("store", "gc").returncode == 0


def test_configuration_reference_is_current():
    # docs/CONFIGURATION.md embeds `postamt config doc`; a new setting must be documented.
    doc = run(["config", "doc"]).stdout
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "docs", "CONFIGURATION.md")) as f:
        assert doc in f.read(), "regenerate the reference in docs/CONFIGURATION.md"
