"""A throwaway Dovecot (Debian's dovecot-lmtpd and dovecot-imapd, as bin/bench-dovecot starts it):
its own configuration, base and state directories under a temporary folder, an LMTP listener and
an IMAP listener on free loopback ports, the mailboxes (Maildir) of the users it is given, and
nothing else. The external mail store of the external-mode tests (store.mode = "external")."""
from __future__ import annotations

import os
import pwd
import grp
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serverkit import on_free_ports

PASSWORD = "dovecot-password-1"


def dovecot_missing() -> str | None:
    """None if Dovecot's LMTP and IMAP servers are installed, else why the test cannot run."""
    if shutil.which("dovecot") is None:
        return "dovecot is not installed (Debian: dovecot-lmtpd dovecot-imapd; .ci/run installs them)"
    for part in ("lmtp", "imap"):
        if not any(Path(d, part).exists() for d in ("/usr/lib/dovecot", "/usr/libexec/dovecot")):
            return f"dovecot's {part} server is not installed (Debian: dovecot-{part}d)"
    return None


@dataclass
class Dovecot:
    dir: Path
    lmtp_port: int
    imap_port: int
    pid: int

    @property
    def lmtp_target(self) -> str:
        return f"127.0.0.1:{self.lmtp_port}"

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_user(self, address: str) -> None:
        """A mailbox more (Dovecot reads its passwd file again when its mtime changes)."""
        time.sleep(1.1)  # a new mtime second even if the file was written a moment ago
        with open(self.dir / "passwd", "a") as fh:
            fh.write(f"{address}:{{PLAIN}}{PASSWORD}::::::\n")

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(self.pid, 0)
                time.sleep(0.05)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


#: README's rule for the external store: a second copy of a notice (same Message-ID) is dropped
DEDUPE_SIEVE = """require ["duplicate"];
if header :contains "Auto-Submitted" "auto-generated" { if duplicate { discard; stop; } }
"""


def sieve_missing() -> str | None:
    if shutil.which("sievec") is None or not Path("/usr/lib/dovecot/modules/lib90_sieve_plugin.so").exists():
        return "Dovecot's Sieve (Pigeonhole) is not installed (Debian: dovecot-sieve; .ci/run installs it)"
    return None


def start_dovecot(users: list[str], dedupe: bool = False, tls: tuple[Path, Path] | None = None,
                  deferring: tuple[str, ...] = ()) -> Dovecot:
    """Start Dovecot for ``users`` (addresses; password PASSWORD). Any other recipient is
    refused at RCPT (550 5.1.1 user doesn't exist), as a real store refuses an unknown mailbox;
    those in ``deferring`` too, but for now (451).
    ``tls``: (certificate, key) for STARTTLS. Its folder is a new one in the system's temporary directory, not pytest's (whose parents
    only root may enter, and Dovecot's auth process reads its passwd file as user dovecot)."""
    where = Path(tempfile.mkdtemp(prefix="civicmail-dovecot-"))
    where.chmod(0o755)
    (where / "run").mkdir()
    mail = where / "mail"
    mail.mkdir()
    if os.geteuid() == 0:  # Dovecot's processes run as nobody, as Debian's own set-up has them
        user, group = "nobody", "nogroup"
        os.chown(mail, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
        as_user = ""
    else:  # a non-root instance: every process as the user running the tests
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        as_user = (f"default_login_user = {user}\ndefault_internal_user = {user}\n"
                   f"default_internal_group = {group}\n")
    # a mailbox in ``deferring`` has a relative home directory, which Dovecot refuses when it
    # looks the user up: its RCPT gets 451 (temporary), as from a store whose user database fails
    (where / "passwd").write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}::::{'relative/home' if u in deferring else ''}"
                                          f"::\n" for u in users))
    sieve = ""
    ssl = "ssl = no"
    if tls is not None:  # STARTTLS on LMTP (and IMAP) with this certificate and key (PEM)
        shutil.copy(tls[0], where / "cert.pem")
        shutil.copy(tls[1], where / "key.pem")
        ssl = f"ssl = yes\nssl_cert = <{where}/cert.pem\nssl_key = <{where}/key.pem"
    if dedupe:  # README's Sieve rule before every user's own, compiled here (Dovecot only reads it)
        (where / "dedupe.sieve").write_text(DEDUPE_SIEVE)
        subprocess.run(["sievec", str(where / "dedupe.sieve")], check=True, capture_output=True, timeout=30)
        sieve = (f"protocol lmtp {{\n  mail_plugins = $mail_plugins sieve\n}}\n"
                 f"plugin {{\n  sieve_before = {where}/dedupe.sieve\n}}\n")

    def start(lmtp_port: int, imap_port: int) -> Dovecot:
        (where / "dovecot.conf").write_text(f"""{as_user}protocols = imap lmtp
listen = 127.0.0.1
base_dir = {where}/run
state_dir = {where}/run
log_path = {where}/dovecot.log
disable_plaintext_auth = no
{ssl}
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = {where}/passwd
}}
userdb {{
  driver = passwd-file
  args = {where}/passwd
  default_fields = uid={user} gid={group} home={mail}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
{sieve}""")
        # readable by Dovecot's unprivileged processes whatever umask an earlier test left behind
        for path in where.iterdir():
            if path.is_file() and path.suffix != ".pem":
                path.chmod(0o644)
        # Its master binds every listener before it forks into the background (no pipes, which
        # the master would hold open): a taken port is its exit status 89 and "listen(...)
        # failed: Address already in use" in start.log, which on_free_ports starts again after
        with open(where / "start.log", "wb") as out:
            done = subprocess.run(["dovecot", "-c", str(where / "dovecot.conf")], stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"dovecot did not start (exit {done.returncode}):\n"
                               f"{(where / 'start.log').read_text(errors='replace')}")
        deadline = time.monotonic() + 15
        pid_file = where / "run" / "master.pid"
        while not pid_file.exists() or not pid_file.read_text().strip():  # written by the forked master
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot wrote no pid:\n{(where / 'start.log').read_text(errors='replace')}")
            time.sleep(0.05)
        return Dovecot(where, lmtp_port, imap_port, int(pid_file.read_text().split()[0]))

    try:
        return on_free_ports(start, 2)
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise


def dovecot_or_skip() -> None:
    reason = dovecot_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it (.ci/run)
        pytest.skip(reason)
