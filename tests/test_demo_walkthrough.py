"""The README's first ten minutes, run as written: the set-up line's `init --demo` and `serve`,
then the steps of "The demo in five minutes" (their shell blocks are read from README.md, so a
README that drifts fails here), logging in with the credentials `init` printed. Also what a
newcomer's client meets: every address a notice names takes mail, and the host the demo
advertises (autoconfig, SRV) is one a client reaches, with a certificate that names it.

The commands run in a scratch folder that stands for the checkout (`templates` links to the
real one); `. .venv/bin/activate` is replaced by what it does, a PATH on which `civicmail` (this
checkout's bin/civicmail) runs with the test's Python. `serve` gets free ports (`--set`), and
the steps' `localhost:2993` the port chosen for imaps.
"""
from __future__ import annotations

import email
import email.policy
import imaplib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailserver.config import REPO_ROOT
from tests.serverkit import on_free_ports, start_program

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "http")
#: a login line `init --demo` prints: who, address, password
LOGIN = re.compile(r"^ +(\S+) +(\S+@\S+) +(demo-\S+)$", re.M)
ACTIVATE = ". .venv/bin/activate"


def section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n#", start + len(heading))
    return README[start:end if end != -1 else None]


def sh_blocks(text: str) -> list[list[str]]:
    """The command lines of each ```sh block (indented inside a list item or not)."""
    return [[line.strip() for line in body.splitlines() if line.strip()]
            for body in re.findall(r"```sh\n(.*?)```", text, re.S)]


def setup_commands() -> list[str]:
    """The set-up line's civicmail commands (after the venv and pip steps), as `civicmail ...`."""
    (line,), *_ = sh_blocks(section("## Set-up"))
    steps = [s.strip() for s in line.split("&&")]
    assert steps[:2] == ["python3 -m venv .venv", ".venv/bin/pip install -e ."]
    return [s.replace(".venv/bin/civicmail", "civicmail", 1) for s in steps[2:]]


@dataclass
class Demo:
    folder: Path
    env: dict
    ports: dict[str, int]
    init_out: str
    logins: dict[str, str]  # address -> password, citizens only

    def sh(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess:
        line = line.replace("localhost:2993", f"localhost:{self.ports['imaps']}")
        return subprocess.run(["bash", "-c", line], cwd=self.folder, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def tls(self) -> ssl.SSLContext:
        """Trusting the demo's own self-signed certificate, host name checked (as a client that
        accepted it once)."""
        return ssl.create_default_context(cafile=str(self.folder / "demo-data" / "tls" / "cert.pem"))

    def imap(self, address: str, host: str = "localhost") -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(host, self.ports["imaps"], ssl_context=self.tls(), timeout=30)
        client.login(address, self.logins[address])
        return client

    def inbox(self, address: str) -> list[email.message.EmailMessage]:
        """Every message of the citizen's INBOX, read over IMAP and parsed."""
        client = self.imap(address)
        try:
            return notices(client)
        finally:
            client.logout()


def with_ports(command: str, ports: dict[str, int]) -> str:
    """`civicmail ARGS` with --set for every listener's port (global options, before ARGS)."""
    assert command.startswith("civicmail ")
    sets = " ".join(f"--set {k}.listen=127.0.0.1:{p}" for k, p in ports.items())
    sets += " --set http.metrics_listen=127.0.0.1:0"  # not the README's 2090: another run may hold it
    return f"civicmail {sets} {command[len('civicmail '):]}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkout")
    (folder / "templates").symlink_to(REPO_ROOT / "templates")
    bindir = folder / "on-path"
    bindir.mkdir()
    (bindir / "civicmail").symlink_to(REPO_ROOT / "bin" / "civicmail")
    env = {**os.environ, "PATH": f"{bindir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    env.pop("CIVICMAIL_CONFIG", None)
    init, serve = setup_commands()
    assert init == "civicmail init demo-data --demo" and serve == "civicmail -c demo-data/civicmail.toml serve"
    done = subprocess.run(["bash", "-c", init], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    logins = {address: password for _, address, password in LOGIN.findall(done.stdout) if "@" in address}

    def start(*picked: int) -> tuple[subprocess.Popen, dict[str, int]]:
        # a port taken between its pick and serve's bind ends serve with "address already in
        # use" in its output: on_free_ports starts it again on new ports
        ports = dict(zip(LISTENERS, picked))
        return start_program(["bash", "-c", "exec " + with_ports(serve, ports)], folder / "serve.log",
                             "civicmail ready", timeout=120, cwd=folder, env=env, stdin=subprocess.DEVNULL), ports

    proc, ports = on_free_ports(start, len(LISTENERS))
    demo = Demo(folder, env, ports, done.stdout, logins)
    try:
        yield demo
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def notices(client: imaplib.IMAP4_SSL) -> list[email.message.EmailMessage]:
    """Every message of the INBOX, parsed."""
    typ, data = client.select("INBOX", readonly=True)
    assert typ == "OK"
    if int(data[0]) == 0:
        return []
    typ, data = client.fetch("1:*", "(BODY.PEEK[])")
    assert typ == "OK"
    return [email.message_from_bytes(item[1], policy=email.policy.default) for item in data if isinstance(item, tuple)]


def test_every_demo_inbox_holds_notices_of_several_types(demo):
    """The demo's citizens are the sample drops' people, and init ran sample drops for them."""
    assert len(demo.logins) == 5, demo.init_out
    for address in demo.logins:
        inbox = demo.inbox(address)
        # beside the notices, the city's appraisal ballot (answered by mail or on the portal)
        assert [m["From"].addresses[0].addr_spec for m in inbox if not m["X-Civicmail-Notice-Type"]] == [
            "appraisal-2026@civic.example"], address
        got = [m for m in inbox if m["X-Civicmail-Notice-Type"]]
        types = {m["X-Civicmail-Notice-Type"] for m in got}
        assert len(types) >= 3, (address, types)
        agencies = {m["From"].addresses[0].addr_spec for m in got}
        assert all(re.search(r"[\u4e00-\u9fff]", str(m["Subject"])) for m in got)
        assert len(agencies) >= 2, (address, agencies)


class RawIMAP:
    """An IMAP connection over TLS spoken line by line (imaplib has no IDLE before 3.14)."""

    def __init__(self, demo: Demo) -> None:
        self.sock = demo.tls().wrap_socket(socket.create_connection(("localhost", demo.ports["imaps"]), timeout=30),
                                           server_hostname="localhost")
        self.reader = self.sock.makefile("rb")
        assert self.reader.readline().startswith(b"* OK")

    def send(self, text: bytes) -> None:
        self.sock.sendall(text + b"\r\n")

    def until(self, tag: bytes) -> list[bytes]:
        """The untagged lines up to ``tag``'s completion, which must be OK."""
        lines = []
        while not (line := self.reader.readline()).startswith(tag + b" "):
            assert line, lines
            lines.append(line)
        assert line.startswith(tag + b" OK"), line
        return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text)
        return self.until(tag)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def test_the_readme_walkthrough_as_written(demo):
    blocks = sh_blocks(section("### The demo in five minutes"))
    assert len(blocks) == 3, blocks
    look, read, drop = blocks
    # 1. civicmail on the PATH, the logins
    assert look[0] == ACTIVATE
    for line in look[1:]:
        done = demo.sh(line)
        assert done.returncode == 0, done.stderr
    me = re.fullmatch(r"ME=(\S+)", read[0]).group(1)
    assert me in demo.logins and f"{me}\t{demo.logins[me]}" in done.stdout
    # 2. log in as that citizen: curl's SEARCH names every notice the INBOX holds
    held = demo.inbox(me)
    done = demo.sh("\n".join(read))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["*", "SEARCH"] + [str(n) for n in range(1, len(held) + 1)]
    assert "* SEARCH 1 2 3 4 5" in section("### The demo in five minutes") and len(held) == 5
    # 3. one more sample drop, as the README runs it, arrives in IDLE
    (command,) = drop
    assert command.startswith("civicmail ")
    notice_type = re.search(r"--notice-type (\S+)", command).group(1)
    imap = RawIMAP(demo)
    try:
        imap.command(b"a1", b'LOGIN "%s" "%s"' % (me.encode(), demo.logins[me].encode()))
        (before,) = [int(m.group(1)) for line in imap.command(b"a2", b"SELECT INBOX")
                     if (m := re.match(rb"\* (\d+) EXISTS", line))]
        imap.send(b"a3 IDLE")
        assert imap.reader.readline().startswith(b"+")
        done = demo.sh(command)
        finished = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert re.search(r"^delivered +3$", done.stdout, re.M), done.stdout
        imap.sock.settimeout(5)  # "within a second", with room for a loaded machine
        line = imap.reader.readline()
        waited = time.monotonic() - finished
        imap.sock.settimeout(30)
        assert line == b"* %d EXISTS\r\n" % (before + 1), line
        imap.send(b"DONE")
        imap.until(b"a3")
        header = imap.command(b"a4", b"FETCH %d (BODY.PEEK[HEADER.FIELDS (X-Civicmail-Notice-Type)])" % (before + 1))
        assert f"X-Civicmail-Notice-Type: {notice_type}".encode() in b"".join(header)
    finally:
        imap.close()
    print(f"the notice in IDLE {waited:.2f} s after drop run ended")


def run_other_samples(demo: Demo) -> set[str]:
    """Every sample drop not run yet, into the demo city (as `drop run` would); their types."""
    from delivery.catalog import load_catalog
    from delivery.read import AlreadyRun
    from delivery.runner import run_drop
    from mailserver import config as config_mod
    from mailserver.registry import Registry
    from mailserver.store import open_store

    config = config_mod.load(demo.folder / "demo-data" / "civicmail.toml")
    store = open_store(config)
    ran = set()
    try:
        registry = Registry(config, store)
        for definition in load_catalog(config.templates_dir).values():
            try:
                run_drop(registry, definition.folder / "sample.csv", definition.agency, definition.id)
            except AlreadyRun:
                continue
            ran.add(definition.id)
    finally:
        store.dispose()
    return ran


def test_every_address_a_notice_names_takes_mail(demo):
    """From, the List-Unsubscribe mailto and every address in the text of every notice of every
    sample drop are mailboxes right after `init --demo`; the statements' text states their
    opt-out address and the application notices their agency's application address; mailing the
    opt-out address as the header says opts out."""
    assert {"driver-contact-change", "owner-contact-change"} <= run_other_samples(demo)
    named: set[str] = set()
    opt_out = None
    types = set()
    for address in demo.logins:
        got = demo.inbox(address)
        types.update(m["X-Civicmail-Notice-Type"] for m in got if m["X-Civicmail-Notice-Type"])
        for m in got:
            named.add(m["From"].addresses[0].addr_spec)
            text = m.get_body(("plain",)).get_content()
            named.update(re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text))
            if m["List-Unsubscribe"]:
                target = re.fullmatch(r"<mailto:([^?>]+)\?subject=([^>]+)>", str(m["List-Unsubscribe"]))
                assert target.group(1) in text and "unsubscribe " + m["X-Civicmail-Notice-Type"] in text
                named.add(target.group(1))
                opt_out = opt_out or (address, target.group(1), target.group(2).replace("%20", " "),
                                      m["X-Civicmail-Notice-Type"])
    assert len(types) == 13 and opt_out is not None and opt_out[1] in named
    assert "traffic-police-apply@civic.example" in named
    with smtplib.SMTP("127.0.0.1", demo.ports["smtp"], timeout=30) as smtp:
        smtp.ehlo("client.example.org")
        assert smtp.mail("someone@example.org")[0] == 250
        for address in sorted(named):
            assert smtp.rcpt(address)[0] == 250, address
    citizen, target, subject, notice_type = opt_out
    with smtplib.SMTP("127.0.0.1", demo.ports["submission"], timeout=30) as smtp:
        smtp.login(citizen, demo.logins[citizen])
        smtp.sendmail(citizen, [target], f"From: <{citizen}>\r\nTo: <{target}>\r\nSubject: {subject}\r\n"
                                         f"Message-ID: <opt-out@example.org>\r\nDate: Mon, 7 Dec 2026 10:00:00 +0800"
                                         f"\r\n\r\n\r\n".encode())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answers = [m for m in demo.inbox(citizen) if "Opted out" in str(m["Subject"])]
        if answers:
            break
        time.sleep(0.5)
    assert answers, f"no answer from {target} in {citizen}'s INBOX"
    assert f"subscribe {notice_type}" in answers[0].get_body(("plain",)).get_content()


def test_clients_are_told_a_host_they_reach(demo):
    """The demo advertises localhost (autoconfig, SRV records), where every listener answers
    with a certificate that names it; production keeps server.hostname (tests/test_cli.py)."""
    assert re.search(r"_imaps\._tcp\.civic\.example\.  SRV  0 1 2993 localhost\.", demo.init_out)
    url = f"http://127.0.0.1:{demo.ports['http']}/mail/config-v1.1.xml"
    with urllib.request.urlopen(url, timeout=30) as response:
        provider = ET.fromstring(response.read()).find("emailProvider")
    servers = [(e.get("type"), e.findtext("hostname"), int(e.findtext("port")), e.findtext("socketType"))
               for e in provider if e.tag.endswith("Server")]
    assert len(servers) == 4 and {host for _, host, _, _ in servers} == {"localhost"}
    address = next(iter(demo.logins))
    for kind, host, port, security in servers:
        if kind == "imap" and security == "SSL":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=demo.tls(), timeout=30)
        elif kind == "imap":
            client = imaplib.IMAP4(host, port, timeout=30)
            client.starttls(demo.tls())
        elif security == "SSL":
            client = smtplib.SMTP_SSL(host, port, context=demo.tls(), timeout=30)
        else:
            client = smtplib.SMTP(host, port, timeout=30)
            client.starttls(context=demo.tls())
        try:
            reply = client.login(address, demo.logins[address])
            assert reply[0] in ("OK", 235), (kind, port, reply)
        finally:
            client.logout() if kind == "imap" else client.quit()


def test_demo_notices_are_signed_and_verify_with_the_root_init_printed(demo, tmp_path):
    """`init --demo` makes the city CA and the demo agencies' signing certificates before its
    drops: a notice fetched over IMAP verifies with `openssl smime -verify` against the root
    certificate whose path init printed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    found = re.search(r"root certificate (\S+)", demo.init_out)
    assert found, demo.init_out
    root = demo.folder / found[1]  # absolute as printed
    assert root.is_file(), root
    for address in demo.logins:
        client = demo.imap(address)
        try:
            assert client.select("INBOX", readonly=True)[0] == "OK"
            typ, data = client.fetch("1", "(BODY.PEEK[])")
        finally:
            client.logout()
        assert typ == "OK"
        raw = next(item[1] for item in data if isinstance(item, tuple))
        assert email.message_from_bytes(raw).get_content_type() == "multipart/signed", address
        (tmp_path / "notice.eml").write_bytes(raw)
        done = subprocess.run([openssl, "smime", "-verify", "-CAfile", str(root), "-in", str(tmp_path / "notice.eml"),
                               "-out", str(tmp_path / "content.eml")], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Verification successful" in done.stderr, (address, done.stderr)
