"""Real clients from Debian against the server: mbsync (isync) and offlineimap (offlineimap3).
Their results are checked against the server's own state."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from mailserver.store.mailstore import deliver
from mailserver.store.models import Folder, Message
from mailserver.store.models.mail import FLAGGED, SEEN

from .conftest import PASSWORD
from .test_protocol import notice

LOCAL_MESSAGE = b"From: zhang.wei@hz.example.cn\r\nSubject: written offline\r\nMessage-ID: <local1@x>\r\n\r\nhi\r\n"


def _server_state(server, folder: str) -> list[tuple[int, int]]:
    """(uid, flags) of every message in one of user 0's folders."""
    with server.ctx.store.reader() as s:
        fid = s.scalar(select(Folder.id).where(Folder.account_id == server.users[0][1], Folder.name == folder))
        return [tuple(r) for r in s.execute(select(Message.uid, Message.flags).where(Message.folder_id == fid)
                                            .order_by(Message.uid))]


def _maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (folder / sub).glob("*") if p.is_file())


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed (see .ci/run)")
def test_mbsync_pulls_to_maildir_and_pushes_flags(server, tmp_path):
    account = server.users[0][1]
    for i in range(3):
        deliver(server.ctx.store, notice(f"通知 {i}"), [account])
    deliver(server.ctx.store, notice("归档"), [account], folder="Archive")
    mail = tmp_path / "mail"
    mail.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""
IMAPAccount civic
Host 127.0.0.1
Port {server.port}
User {server.users[0][0]}
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore civic-remote
Account civic

MaildirStore civic-local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel civic
Far :civic-remote:
Near :civic-local:
Patterns *
Create Both
SyncState *
Sync All
Expunge Both
""")
    _run(["mbsync", "-c", str(rc), "-a"], tmp_path)
    assert len(_maildir_files(mail / "INBOX")) == 3
    assert len(_maildir_files(mail / "Archive")) == 1
    assert (mail / "Sent").is_dir() and (mail / "Trash").is_dir()

    # Flag one message locally (Maildir info ":2,FS"), write one new message, sync again.
    first = _maildir_files(mail / "INBOX")[0]
    base = first.name.split(":2,")[0]
    first.rename(mail / "INBOX" / "cur" / f"{base}:2,FS")
    (mail / "INBOX" / "new" / "1700000000.local1.host").write_bytes(LOCAL_MESSAGE)
    _run(["mbsync", "-c", str(rc), "-a"], tmp_path)
    state = _server_state(server, "INBOX")
    assert len(state) == 4
    assert sum(1 for _, f in state if f & FLAGGED and f & SEEN) == 1
    assert len(_maildir_files(mail / "INBOX")) == 4


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 is not installed (see .ci/run)")
def test_offlineimap_syncs_both_ways(server, tmp_path):
    account = server.users[0][1]
    for i in range(2):
        deliver(server.ctx.store, notice(f"社保 {i}"), [account])
    mail = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""
[general]
accounts = civic
metadata = {tmp_path / 'meta'}

[Account civic]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {mail}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.port}
remoteuser = {server.users[0][0]}
remotepass = {PASSWORD}
ssl = no
starttls = no
""")
    cmd = ["offlineimap", "-c", str(rc), "-o", "-u", "quiet"]
    _run(cmd, tmp_path)
    assert len(_maildir_files(mail / "INBOX")) == 2
    assert {p.name for p in mail.iterdir()} >= {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}

    # Local -> server: a new message and a flag; server -> local: a new delivery and a flag.
    # offlineimap names carry the UID; the local flag goes on UID 1, the server's \Seen on UID 2 (which
    # file sorts first depends on offlineimap's timestamps, and one message with both flags would
    # end ":2,FS")
    first = next(p for p in _maildir_files(mail / "INBOX") if re.search(r",U=1[,:]", p.name))
    flagged_uid = 1
    first.rename(first.parent.parent / "cur" / (first.name.split(":2,")[0] + ":2,F"))
    (mail / "INBOX" / "new" / "1700000001.local2.host").write_bytes(LOCAL_MESSAGE)
    deliver(server.ctx.store, notice("公积金"), [account])
    with server.ctx.store.session() as s:
        fid = s.scalar(select(Folder.id).where(Folder.account_id == account, Folder.name == "INBOX"))
        s.execute(Message.__table__.update().where(Message.folder_id == fid, Message.uid == 2)
                  .values(flags=SEEN, modseq=999))
    _run(cmd, tmp_path)
    state = _server_state(server, "INBOX")
    assert len(state) == 4
    assert dict(state)[flagged_uid] & FLAGGED
    local = _maildir_files(mail / "INBOX")
    assert len(local) == 4
    assert any(p.name.endswith(":2,S") for p in local)  # the server-side \Seen arrived
