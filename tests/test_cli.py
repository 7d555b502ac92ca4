"""The operator CLI as an operator runs it: a real process, exit codes, clean messages."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailserver.config import REPO_ROOT

CLI = [sys.executable, str(REPO_ROOT / "bin" / "civicmail")]


def civicmail(*args: str, stdin: str | None = None, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run(CLI + list(args), input=stdin, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo") / "data"
    done = civicmail("--set", "passwords.memory_cost_kib=1024", "init", str(data), "--demo", "--domain", "hz.example.cn")
    assert done.returncode == 0, done.stderr
    return data, done.stdout


def test_init_demo_makes_a_working_city(demo):
    data, out = demo
    for path in ("civicmail.toml", "civicmail.sqlite3", "keys/idnumber.json", "tls/cert.pem", "tls/key.pem",
                 "dkim/civic1.key", "demo-credentials.txt"):
        assert (data / path).exists(), path
    assert (data / "tls" / "key.pem").stat().st_mode & 0o077 == 0
    assert "hz.example.cn.  MX   10 mail.hz.example.cn." in out
    assert "civic1._domainkey.hz.example.cn.  TXT  \"v=DKIM1; k=rsa; p=" in out
    # RFC 6186 SRV records with the configured ports (the development defaults here), naming the
    # host a client reaches: development listens on loopback only
    assert "_imaps._tcp.hz.example.cn.  SRV  0 1 2993 localhost." in out
    assert "_submission._tcp.hz.example.cn.  SRV  0 1 2587 localhost." in out
    assert "autoconfig.hz.example.cn.  CNAME  mail.hz.example.cn." in out
    # the demo's citizens are the sample drops' people, and sample drops were run for them
    assert "chen.jianguo@hz.example.cn" in out and "ouyang.minghui@hz.example.cn" in out and "traffic-police" in out
    assert "opt-out address    unsubscribe@hz.example.cn" in out
    assert re.search(r"drop 6 +provident-fund-statement +housing-fund +3 notices delivered", out)
    stats = civicmail("-c", str(data / "civicmail.toml"), "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert '"citizens_registered": 5' in stats.stdout and '"accounts_activated": 5' in stats.stdout
    agencies = civicmail("-c", str(data / "civicmail.toml"), "agency", "list")
    assert "traffic-police" in agencies.stdout and "social-security" in agencies.stdout


def test_init_twice_keeps_what_exists(demo):
    data, _ = demo
    key_before = (data / "keys" / "idnumber.json").read_bytes()
    again = civicmail("init", str(data), "--demo")
    assert again.returncode == 0, again.stderr
    assert (data / "keys" / "idnumber.json").read_bytes() == key_before
    assert "already present" in again.stdout
    assert "Sample drops run" not in again.stdout and "opt-out address" not in again.stdout


def test_production_advertises_the_server_hostname(tmp_path):
    """Outside development, clients are told server.hostname, whatever the listeners."""
    done = civicmail("--set", "server.development=false", "init", str(tmp_path / "data"), "--domain", "hz.example.cn")
    assert done.returncode == 0, done.stderr
    assert "_imaps._tcp.hz.example.cn.  SRV  0 1 2993 mail.hz.example.cn." in done.stdout
    assert "localhost" not in done.stdout.partition("DNS records")[2]


def test_init_writes_the_store_url_it_was_given(tmp_path, store_url):
    """`init --set store.url=...` sets up that store and writes it into civicmail.toml, so that the
    next command (no --set) uses the same store, not a new empty SQLite file (both engines)."""
    import tomllib

    from sqlalchemy import create_engine, text

    if store_url.startswith("sqlite"):
        store_url = f"sqlite:///{tmp_path / 'elsewhere' / 'city.sqlite3'}"
    data = tmp_path / "data"
    done = civicmail("--set", f"store.url={store_url}", "init", str(data), "--domain", "hz.example.cn")
    assert done.returncode == 0, done.stderr
    written = tomllib.loads((data / "civicmail.toml").read_text(encoding="utf-8"))
    assert written["store"]["url"] == store_url
    added = civicmail("-c", str(data / "civicmail.toml"), "agency", "add", "city-archive", "--name", "档案馆",
                      "--sender", "archive@hz.example.cn")
    assert added.returncode == 0, added.stderr
    assert not (data / "civicmail.sqlite3").exists()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM agency WHERE id = 'city-archive'")).scalar() == "档案馆"
    finally:
        engine.dispose()
    again = civicmail("--set", "store.url=sqlite:///somewhere/else.sqlite3", "init", str(data))
    assert again.returncode == 0 and "its store.url is not the one given" in again.stderr


def test_bin_civicmail_runs_with_the_checkouts_venv(tmp_path):
    """Run by a Python without the dependencies (the system's, as `bin/civicmail` from a shell
    finds it), bin/civicmail runs itself with the checkout's .venv; without one it says how to
    make it, with no traceback. The checkout here: links to this one's code and to the venv the
    tests run in."""
    checkout = tmp_path / "checkout"
    (checkout / "bin").mkdir(parents=True)
    (checkout / "bin" / "civicmail").write_bytes((REPO_ROOT / "bin" / "civicmail").read_bytes())
    for name in ("mailserver", "delivery", "templates", "config"):
        (checkout / name).symlink_to(REPO_ROOT / name)
    bare = [getattr(sys, "_base_executable", sys.executable), "-S"]  # -S: no site-packages, no dependencies
    script = str(checkout / "bin" / "civicmail")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    missing = subprocess.run(bare + [script, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert f"cd {checkout} && python3 -m venv .venv && .venv/bin/pip install -e ." in missing.stderr
    (checkout / ".venv").symlink_to(sys.prefix)
    assert sys.prefix != sys.base_prefix, "the tests run in a virtual environment"
    done = subprocess.run(bare + [script, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: civicmail" in done.stdout and "init" in done.stdout


def test_config_from_environment_and_cwd(demo):
    data, _ = demo
    via_env = civicmail("stats", env={"CIVICMAIL_CONFIG": str(data / "civicmail.toml")})
    via_cwd = civicmail("stats", cwd=data)
    assert via_env.returncode == via_cwd.returncode == 0
    assert via_env.stdout == via_cwd.stdout and "citizens registered" in via_env.stdout


@pytest.mark.parametrize("args", [("citizen", "show", "li.qiang@hz.example.cn"), ("check",), ("audit", "list"),
                                  ("ca", "init"), ("backup", "b", "--keys-to", "k")])
def test_without_a_configuration_file_a_command_says_how_to_name_one_and_makes_nothing(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CIVICMAIL_CONFIG"}
    done = subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "no configuration file found" in done.stderr and "civicmail -c PATH" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no blobs/, no ca/ in the current directory


def test_citizen_commands_and_user_errors(demo):
    data, _ = demo
    c = ["-c", str(data / "civicmail.toml")]
    added = civicmail(*c, "citizen", "add", "--name", "测试", "--id-number", "11010519491231002x", "--password-stdin",
                      stdin="a good password\n")
    assert added.returncode == 0 and added.stdout.strip() == "ce.shi@hz.example.cn"
    dup = civicmail(*c, "citizen", "add", "--name", "别人", "--id-number", "11010519491231002X")
    assert dup.returncode == 1 and "already registered" in dup.stderr and "Traceback" not in dup.stderr
    assert "11010519491231002X" not in dup.stderr
    bad = civicmail(*c, "citizen", "add", "--name", "别人", "--id-number", "110105194912310021")
    assert bad.returncode == 1 and "checksum" in bad.stderr
    shown = civicmail(*c, "citizen", "show", "ce.shi@hz.example.cn")
    assert "110*************2X" in shown.stdout and "11010519491231002X" not in shown.stdout
    assert civicmail(*c, "citizen", "passwd", "ce.shi@hz.example.cn", "--password-stdin", stdin="short\n").returncode == 1
    assert civicmail(*c, "citizen", "disable", "ce.shi@hz.example.cn").returncode == 0
    assert "disabled" in civicmail(*c, "citizen", "show", "ce.shi@hz.example.cn").stdout
    missing = civicmail(*c, "citizen", "show", "nobody@hz.example.cn")
    assert missing.returncode == 1 and "no account" in missing.stderr


def test_import_reports_lines_and_exits_zero(demo, tmp_path):
    data, _ = demo
    src = tmp_path / "people.csv"
    src.write_text("name,id_number,phone\n王五,440524188001010014,\n赵六,440524188001010015,\n", encoding="utf-8")
    done = civicmail("-c", str(data / "civicmail.toml"), "citizen", "import", str(src))
    assert done.returncode == 0, done.stderr
    assert "line 3: ID number: checksum" in done.stderr
    assert "imported 1, already registered 0, rejected 1" in done.stdout
    assert (tmp_path / "people.csv.codes.csv").exists()


def test_config_errors_exit_2_naming_the_key(tmp_path):
    path = tmp_path / "civicmail.toml"
    path.write_text('[imap]\nlisten = "nope"\n')
    done = civicmail("-c", str(path), "stats")
    assert done.returncode == 2 and "imap.listen" in done.stderr and "Traceback" not in done.stderr
    over = civicmail("--set", "smtp.max_message_size=big", "stats")
    assert over.returncode == 2 and "smtp.max_message_size" in over.stderr


def test_database_behind_the_schema_is_refused(tmp_path):
    path = tmp_path / "civicmail.toml"
    path.write_text("")
    done = civicmail("-c", str(path), "stats")
    assert done.returncode == 2 and "db upgrade" in done.stderr
    assert civicmail("-c", str(path), "db", "upgrade").returncode == 0


def test_usage_errors_exit_2():
    done = civicmail("citizen", "add", "--name", "x")
    assert done.returncode == 2 and "--id-number" in done.stderr


def test_spool_folders_for_every_grant(demo):
    """`init` makes spool/<agency>/<notice type>/ for each grant, and `agency grant` for a new one."""
    data, out = demo
    spool = data / "spool"
    for agency, notice_type in (("traffic-police", "licence-renewal"), ("social-security", "pension-statement"),
                                ("housing-fund", "provident-fund-statement")):
        folder = spool / agency / notice_type
        assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o750, folder
    assert "spool folders      13 made under" in out
    c = ["-c", str(data / "civicmail.toml")]
    added = civicmail(*c, "agency", "add", "city-archive", "--name", "档案馆", "--sender", "archive@hz.example.cn")
    assert added.returncode == 0, added.stderr
    assert not (spool / "city-archive").exists()  # nothing granted yet
    granted = civicmail(*c, "agency", "grant", "city-archive", "fitness-certificate")
    assert granted.returncode == 0, granted.stderr
    assert (spool / "city-archive" / "fitness-certificate").is_dir()
    assert f"spool folder {spool / 'city-archive' / 'fitness-certificate'}" in granted.stdout
