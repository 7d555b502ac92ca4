"""A real client from Debian: swaks submits an authenticated UTF-8 multipart message with a
Chinese subject and an attachment; the stored bytes are what it sent plus our trace headers."""
from __future__ import annotations

import shutil
import subprocess
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from .conftest import PASSWORD

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (.ci/run installs it)")


def test_swaks_authenticated_utf8_multipart_with_attachment(server, tmp_path):
    p = server.people
    msg = EmailMessage()
    msg["From"] = f"张伟 <{p.alice}>"
    msg["To"] = f"王芳 <{p.bob}>"
    msg["Subject"] = "关于驾驶证换证的问题：请帮忙查看附件"
    msg["Message-ID"] = "<swaks-test@hz.example.cn>"
    msg.set_content("你好，\n\n附件是我的申请表，请查收。\n\n张伟\n", cte="8bit")  # raw UTF-8 (8BITMIME)
    msg.add_attachment(bytes(range(256)) * 8, maintype="application", subtype="octet-stream", filename="申请表.bin")
    sent = msg.as_bytes(policy=SMTP)
    data = tmp_path / "message.eml"
    data.write_bytes(sent[:-2])  # swaks ends the data with its own CRLF before the dot

    # STARTTLS first, as a real client on port 587 (swaks uses Net::SSLeay, installed by .ci/run).
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port("submission")), "--helo", "laptop.example",
         "--tls", "--auth", "PLAIN", "--auth-user", p.alice, "--auth-password", PASSWORD,
         "--from", p.alice, "--to", p.bob, "--data", f"@{data}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "=== TLS started with cipher" in result.stdout
    assert " ~> AUTH PLAIN" in result.stdout  # the credentials went over TLS (swaks marks it ~>)
    assert "235 2.7.0" in result.stdout and "250 2.0.0 Stored as" in result.stdout

    [stored] = server.inbox(p.bob)
    assert "关于驾驶证换证".encode() not in sent and "附件是我的申请表".encode() in sent
    assert stored.endswith(sent)
    trace = stored[:-len(sent)]
    names = [line.split(b":", 1)[0] for line in trace.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")]
    # the message had no Date: submission adds it (RFC 6409 8.3); it has a Message-ID, left alone
    assert names == [b"Received", b"Authentication-Results", b"X-Civicmail-Authenticated", b"Date"]
    assert f"X-Civicmail-Authenticated: citizen={p.alice}".encode() in trace
