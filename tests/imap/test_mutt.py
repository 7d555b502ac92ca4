"""Real clients from Debian against the server: mutt (driven in tmux, as a person would) and
fetchmail. Their results are checked against the server's own state in the store."""
from __future__ import annotations

import email
import os
import shutil
import subprocess
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from sqlalchemy import select

from mailserver.store import bodies
from mailserver.store.mailstore import deliver
from mailserver.store.models import Folder, Message
from mailserver.store.models.mail import DELETED, FLAGGED, SEEN, Content

from .conftest import PASSWORD

WAIT = 20  # seconds, for any one thing to appear on mutt's screen

#: (subject, body) of the messages delivered to user 0's INBOX, in UID order
MAILS = [
    ("驾驶证到期换证提醒", "您的驾驶证将于2026年12月1日到期，请及时办理。"),
    ("社保缴费通知", "本月社保费用已成功扣缴。"),
    ("公积金提取审核结果", "您的公积金提取申请已通过审核。"),
    ("燃气安全检查预约", "工作人员将于下周上门检查燃气管道。"),
]


def _mail(n: int, subject: str, body: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "市民服务中心 <service@hz.example.cn>"
    msg["To"] = "citizen@hz.example.cn"
    msg["Subject"] = subject
    msg["Date"] = f"Fri, 27 Nov 2026 10:0{n}:00 +0800"
    msg["Message-ID"] = f"<mutt{n}.{uuid.uuid4().hex}@hz.example.cn>"
    msg.set_content(body, cte="base64" if n == 0 else "8bit")  # the one read in mutt's pager: base64
    return bytes(msg)


def _deliver_all(server) -> list[bytes]:
    raws = [_mail(n, s, b) for n, (s, b) in enumerate(MAILS)]
    for raw in raws:
        deliver(server.ctx.store, raw, [server.users[0][1]])
    return raws


def _folder(server, folder: str) -> list[tuple[int, int, bytes]]:
    """(uid, flags, raw) of every message in one of user 0's folders, by UID."""
    with server.ctx.store.reader() as s:
        fid = s.scalar(select(Folder.id).where(Folder.account_id == server.users[0][1], Folder.name == folder))
        rows = s.execute(select(Message.uid, Message.flags, Content.raw, Content.blob_key)
                         .join(Content, Content.id == Message.content_id)
                         .where(Message.folder_id == fid).order_by(Message.uid))
        return [(uid, flags, bodies.body(server.ctx.store, raw, key)) for uid, flags, raw, key in rows]


def _subject(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=SMTP)["Subject"])


# --- mutt -------------------------------------------------------------------------------------


class Tmux:
    """One program in a detached tmux session on a private socket (its own tmux server)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"civicmail-{uuid.uuid4().hex[:12]}"
        self.cwd, self.env = cwd, env

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=30, check=check)

    def start(self, command: str) -> None:
        self.tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", command)

    def screen(self) -> str:
        done = self.tmux("capture-pane", "-p", "-t", "t", check=False)
        return done.stdout if done.returncode == 0 else f"(no pane: {done.stderr.strip()})"

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "t", check=False).returncode == 0

    def wait_for(self, *texts: str, absent: str | None = None, what: str = "") -> str:
        """Poll the pane until every text is on it (and ``absent`` is not); fail with the pane."""
        deadline = time.monotonic() + WAIT
        while True:
            screen = self.screen()
            if all(t in screen for t in texts) and (absent is None or absent not in screen):
                return screen
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError(f"mutt: waited {WAIT}s for {what or texts!r}; the screen:\n{screen}")
            time.sleep(0.1)

    def wait_exit(self) -> None:
        deadline = time.monotonic() + WAIT
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"mutt did not quit in {WAIT}s; the screen:\n{self.screen()}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


def _until(done, t: Tmux, what: str) -> None:
    """Poll the server's state (as mutt works on it) until ``done()``; fail with mutt's screen."""
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT}s for {what}; mutt's screen:\n{t.screen()}")
        time.sleep(0.1)


@pytest.fixture
def tmux_env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "TERM": "xterm-256color", "TMUX_TMPDIR": str(tmp_path)}
    return env


def _muttrc(server, tmp_path: Path) -> Path:
    rc = tmp_path / "muttrc"
    rc.write_text(f"""
set imap_user="{server.users[0][0]}"
set imap_pass="{PASSWORD}"
set folder="imap://127.0.0.1:{server.port}/"
set spoolfile="+INBOX"
set record=""
set postponed="+Drafts"
set ssl_starttls=no
set ssl_force_tls=no
set imap_passive=yes
set imap_check_subscribed=no
unset header_cache
unset message_cachedir
set charset="utf-8"
set send_charset="utf-8"
set mailcap_path="/dev/null"
unset implicit_autoview
set confirmappend=no
set confirmcreate=no
set delete=yes
set quit=yes
set move=no
set mark_old=no
unset resolve
unset wait_key
unset beep
set sort=mailbox-order
set index_format="%4C %Z %s"
set pager_index_lines=0
set timeout=5
set mail_check=60
""")
    return rc


@pytest.mark.skipif(shutil.which("mutt") is None or shutil.which("tmux") is None,
                    reason="mutt or tmux is not installed (see .ci/run)")
def test_mutt_reads_flags_deletes_and_copies(server, tmp_path, tmux_env):
    raws = _deliver_all(server)
    rc = _muttrc(server, tmp_path)
    t = Tmux(tmp_path, tmux_env)
    t.start(f"mutt -n -F {rc}")
    try:
        # The index: every Chinese subject, from ENVELOPE / header FETCHes, decoded from RFC 2047.
        screen = t.wait_for(*(s for s, _ in MAILS), what="the index with every subject")
        assert "=INBOX [Msgs:4 New:4" in screen, screen

        # Read the first message: its body is on the screen, then back to the index.
        t.keys("1", "Enter", "Enter")
        t.wait_for(MAILS[0][1], what="the first message's body in the pager")
        t.keys("i")
        t.wait_for(MAILS[3][0], what="the index again")

        # Flag the second and copy it to =Archive; delete the third; the fourth stays untouched.
        t.keys("2", "Enter", "F")
        t.wait_for("Flag:1", what="the second message flagged")
        t.keys("C")
        t.wait_for("Copy to mailbox", what="the copy prompt")
        t.keys("C-u", "=Archive", "Enter")
        t.wait_for(MAILS[0][0], absent="Copy to mailbox", what="the copy prompt answered")
        _until(lambda: len(_folder(server, "Archive")) == 1, t, "the copy in Archive on the server")
        t.keys("3", "Enter", "d")
        t.wait_for("Del:1", what="the third message marked deleted")
        t.keys("$")
        t.wait_for(MAILS[3][0], absent=MAILS[2][0], what="the third message expunged by the sync")
        t.keys("q")
        t.wait_exit()
    finally:
        t.kill()

    inbox = _folder(server, "INBOX")
    by_subject = {_subject(raw): (uid, flags) for uid, flags, raw in inbox}
    assert set(by_subject) == {MAILS[0][0], MAILS[1][0], MAILS[3][0]}, by_subject
    assert by_subject[MAILS[0][0]][1] == SEEN  # read in the pager
    assert by_subject[MAILS[1][0]][1] == FLAGGED  # flagged, not read
    assert by_subject[MAILS[3][0]][1] == 0  # untouched
    assert [raw for _, _, raw in inbox] == [raws[0], raws[1], raws[3]]  # bytes unchanged

    archive = _folder(server, "Archive")
    assert [raw for _, _, raw in archive] == [raws[1]]
    assert archive[0][1] & FLAGGED and not archive[0][1] & DELETED

    # A second session: mutt sees the flags it left (two unread, one of them flagged), changes to
    # =Archive and saves (`s`: copy, then delete and expunge the original) its message to =Trash.
    t = Tmux(tmp_path, tmux_env)
    t.start(f"mutt -n -F {rc}")
    try:
        t.wait_for(MAILS[0][0], MAILS[1][0], MAILS[3][0], "Msgs:3 New:2 Flag:1", what="the INBOX as left")
        t.keys("c")
        t.wait_for("Open mailbox", what="the change-folder prompt")
        t.keys("C-u", "=Archive", "Enter")
        t.wait_for("=Archive", "Msgs:1", MAILS[1][0], what="=Archive with the copied message")
        t.keys("1", "Enter", "s")
        t.wait_for("Save to mailbox", what="the save prompt")
        t.keys("C-u", "=Trash", "Enter")
        t.wait_for("Del:1", what="the saved message marked deleted")
        t.keys("q")
        t.wait_exit()
    finally:
        t.kill()
    assert _folder(server, "Archive") == []
    assert [raw for _, _, raw in _folder(server, "Trash")] == [raws[1]]


# --- fetchmail --------------------------------------------------------------------------------

MDA = """#!/bin/sh
# One message on standard input: store it in the next numbered file.
n=$(ls "$1" | wc -l)
cat > "$1/$(printf %03d "$n").eml"
"""


def _fetchmail(server, tmp_path: Path, keep: bool, tls: str = "imaps", out: str = "fetched"
               ) -> tuple[Path, subprocess.CompletedProcess]:
    """One fetchmail run over IMAP on implicit TLS ("imaps") or STARTTLS on the plain port
    ("starttls"), the certificate unchecked (the fixture's is self-signed); each message is
    handed to an MDA that writes it to the next numbered file in ``tmp_path / out``."""
    out = tmp_path / out
    out.mkdir()
    mda = tmp_path / "mda.sh"
    mda.write_text(MDA)
    mda.chmod(0o755)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""
set no syslog
set no bouncemail
poll 127.0.0.1 protocol IMAP port {server.tls_port if tls == "imaps" else server.port} timeout 30
    user "{server.users[0][0]}" there with password "{PASSWORD}" is "citizen" here
    {"ssl" if tls == "imaps" else "sslproto tls1.2+"} no sslcertck
    folder INBOX
    {"keep" if keep else "no keep"}
    fetchall
    mda "{mda} {out}"
""")
    rc.chmod(0o600)  # fetchmail refuses a run control file that others can read
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "FETCHMAILHOME": str(tmp_path)}
    done = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--invisible", "-v", "-p", "IMAP",
                           # its own lock: as root fetchmail otherwise locks /var/run/fetchmail.pid
                           "--pidfile", str(tmp_path / "fetchmail.pid")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    return out, done


def _check_fetched(out: Path, raws: list[bytes], log: str) -> None:
    files = sorted(out.iterdir())
    assert len(files) == len(raws), log
    for got_file, sent in zip(files, raws):
        got = got_file.read_bytes().replace(b"\r\n", b"\n")
        want = sent.replace(b"\r\n", b"\n")
        got_head, _, got_body = got.partition(b"\n\n")
        want_head, _, want_body = want.partition(b"\n\n")
        assert got_body == want_body, (got_file.name, log)
        got_msg = email.message_from_bytes(got, policy=SMTP)
        want_msg = email.message_from_bytes(want, policy=SMTP)
        for name in ("Message-ID", "Subject", "From", "Date"):
            assert got_msg[name] == want_msg[name], (name, got_file.name, log)
        # every header line the server stored comes back unchanged (fetchmail may add its own)
        assert set(want_head.split(b"\n")) <= set(got_head.split(b"\n")), (got_head, log)


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed (see .ci/run)")
@pytest.mark.parametrize("tls", ["imaps", "starttls"])
def test_fetchmail_retrieves_then_deletes(server, tmp_path, tls):
    raws = _deliver_all(server)
    out, done = _fetchmail(server, tmp_path, keep=False, tls=tls)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    if tls == "starttls":
        assert "IMAP> A0001 STARTTLS" in log and "SSL/TLS: using protocol TLS" in log, log
    _check_fetched(out, raws, log)
    assert _folder(server, "INBOX") == [], log  # deleted and expunged

    # A second run finds nothing: fetchmail's exit code 1 means "no mail".
    out, done = _fetchmail(server, tmp_path, keep=False, tls=tls, out="again")
    assert done.returncode == 1 and list(out.iterdir()) == [], done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed (see .ci/run)")
def test_fetchmail_keep_marks_seen(server, tmp_path):
    raws = _deliver_all(server)
    out, done = _fetchmail(server, tmp_path, keep=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    _check_fetched(out, raws, log)
    inbox = _folder(server, "INBOX")
    assert [raw for _, _, raw in inbox] == raws, log
    assert all(flags == SEEN for _, flags, _ in inbox), (inbox, log)


@pytest.mark.skipif(shutil.which("mutt") is None or shutil.which("tmux") is None,
                    reason="mutt or tmux is not installed (see .ci/run)")
def test_mutt_idle_and_header_cache(server, tmp_path, tmux_env):
    """As most people run mutt: IDLE in the open INBOX shows a new delivery at once, and a second
    session with a header cache fetches only the flags of what it knows (changed meanwhile on the
    server) and the headers of what is new."""
    account = server.users[0][1]
    raws = _deliver_all(server)
    rc = _muttrc(server, tmp_path)
    with rc.open("a") as f:
        f.write(f'set header_cache="{tmp_path / "hcache"}"\nset imap_idle=yes\nset mail_check=1\nset timeout=1\n')
    t = Tmux(tmp_path, tmux_env)
    t.start(f"mutt -n -F {rc}")
    try:
        t.wait_for(*(s for s, _ in MAILS), "Msgs:4", what="the index with every subject")
        deliver(server.ctx.store, _mail(5, "户籍迁移办理进度", "已受理。"), [account])
        t.wait_for("户籍迁移办理进度", "Msgs:5", what="the new delivery, while mutt is in the index")
        t.keys("q")
        t.wait_exit()
    finally:
        t.kill()
    assert (tmp_path / "hcache").exists()  # mutt wrote its header cache

    # Meanwhile another client flags message 1, reads message 2 and expunges message 3 ...
    c = server.client()
    c.select("INBOX")
    c.uid("STORE", "1", "+FLAGS", r"(\Flagged)")
    c.uid("STORE", "2", "+FLAGS", r"(\Seen)")
    c.uid("STORE", "3", "+FLAGS", r"(\Deleted)")
    c.expunge()
    c.logout()
    # ... and one more message arrives.
    deliver(server.ctx.store, _mail(6, "不动产登记证明", "请携带身份证领取。"), [account])

    t = Tmux(tmp_path, tmux_env)
    t.start(f"mutt -n -F {rc}")
    try:
        screen = t.wait_for("不动产登记证明", "Msgs:5", "Flag:1", "New:4", what="the INBOX as changed on the server")
        assert MAILS[2][0] not in screen, screen
        status = {line.split()[-1]: line.split()[1:-1] for line in screen.splitlines() if line[:4].strip().isdigit()}
        assert status[MAILS[0][0]] == ["N", "!"] and status[MAILS[1][0]] == [], screen  # %Z: new, flagged
        t.keys("q")
        t.wait_exit()
    finally:
        t.kill()
    assert [raw for _, _, raw in _folder(server, "INBOX")][:3] == [raws[0], raws[1], raws[3]]


@pytest.mark.skipif(shutil.which("mutt") is None or shutil.which("tmux") is None,
                    reason="mutt or tmux is not installed (see .ci/run)")
def test_mutt_appends_searches_and_files_in_chinese_folders(server, tmp_path, tmux_env):
    """mutt's copy of a sent message (APPEND to =Sent), a server-side body search (UID SEARCH with
    UTF-8 text) and a save to a new Chinese folder two levels deep (CREATE in modified UTF-7),
    which the folder browser then lists (LIST, decoded back)."""
    raws = _deliver_all(server)
    rc = _muttrc(server, tmp_path)
    with rc.open("a") as f:
        f.write(f'set sendmail="/bin/true"\nset record="=Sent"\nset from="{server.users[0][0]}"\n')

    # Batch mode (no terminal): "send" through /bin/true; mutt APPENDs its copy to =Sent.
    done = subprocess.run(["mutt", "-n", "-F", str(rc), "-s", "回复：社保缴费", "office@hz.example.cn"],
                          input="谢谢，已收到。\n".encode(), env=tmux_env, cwd=tmp_path, capture_output=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = _folder(server, "Sent")
    assert len(sent) == 1 and sent[0][1] == SEEN, sent
    msg = email.message_from_bytes(sent[0][2], policy=SMTP)
    assert msg["Subject"] == "回复：社保缴费" and msg.get_content().strip() == "谢谢，已收到。", sent[0][2]

    t = Tmux(tmp_path, tmux_env)
    t.start(f"mutt -n -F {rc}")
    try:
        t.wait_for(*(s for s, _ in MAILS), what="the index with every subject")
        # Limit to a body search (=b: done by the server), a word in the fourth message's body only.
        t.keys("l")
        t.wait_for("Limit to messages matching", what="the limit prompt")
        t.keys("=b 燃气管道", "Enter")
        t.wait_for("Msgs:1/4", MAILS[3][0], absent=MAILS[0][0], what="the index limited to the search")
        # Save it to a folder that does not exist yet.
        t.keys("s")
        t.wait_for("Save to mailbox", what="the save prompt")
        t.keys("C-u", "=通知/交通", "Enter")
        t.wait_for("Del:1", what="the saved message marked deleted")
        _until(lambda: len(_folder(server, "通知/交通")) == 1, t, "the message in 通知/交通 on the server")
        # The folder browser lists the new parent folder by its Chinese name.
        t.keys("c")
        t.wait_for("Open mailbox", what="the change-folder prompt")
        t.keys("C-u", "Tab", "Tab")
        t.wait_for("Directory [imap://", "通知/", "Archive", what="the folder browser")
        t.keys("q")
        t.wait_for("Open mailbox", what="the change-folder prompt again")
        t.keys("C-g")
        t.wait_for("=INBOX", absent="Open mailbox", what="the index again")
        t.keys("q")
        t.wait_exit()
    finally:
        t.kill()
    assert [raw for _, _, raw in _folder(server, "通知/交通")] == [raws[3]]
    assert [raw for _, _, raw in _folder(server, "INBOX")] == raws[:3]  # the saved one expunged on quit
