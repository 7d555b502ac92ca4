"""Hand-written messages for the mime tests (CRLF unless the name says otherwise)."""
from __future__ import annotations

import mailbox
import subprocess
import sys
from pathlib import Path

NESTED = (
    b"From: =?UTF-8?B?5Lqk6K2m5pSv6Zif?= <notice@traffic.gov.cn>\r\n"
    b"To: =?UTF-8?B?5byg5Lyf?= <zhang.wei@city.cn>\r\n"
    b"Subject: =?UTF-8?B?6am+6am26K+B5o2i6K+B5o+Q6YaS?=\r\n"
    b"Date: Mon, 4 Mar 2024 09:30:00 +0800\r\n"
    b"Message-ID: <n1@traffic.gov.cn>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative;\r\n boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"5oKo55qE6am+6am26K+B5bCG5LqO5LiL5pyI5Yiw5pyf44CC\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>=E6=82=A8=E7=9A=84<b>=E9=A9=BE=E9=A9=B6=E8=AF=81</b>&amp;</p>\r\n"
    b"--inner--\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name*0*=UTF-8''%E6%8D%A2%E8%AF%81; name*1*=%E9%A1%BB%E7%9F%A5.pdf\r\n"
    b"Content-Disposition: attachment;\r\n filename*=UTF-8''%E6%8D%A2%E8%AF%81%E9%A1%BB%E7%9F%A5.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-ID: <att1@traffic.gov.cn>\r\n"
    b"Content-Description: =?UTF-8?B?6aG755+l?=\r\n"
    b"Content-Language: zh-CN\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer--\r\n"
)

FORWARDED = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: Fwd: minutes\r\n"
    b"Date: Tue, 5 Mar 2024 10:00:00 +0000\r\n"
    b"Message-ID: <outer@example.com>\r\n"
    b"Content-Type: multipart/mixed; boundary=b1\r\n"
    b"\r\n"
    b"--b1\r\n"
    b"\r\n"
    b"See below.\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: inline\r\n"
    b"\r\n"
    b"From: Carol <carol@example.net>\r\n"
    b"Subject: minutes\r\n"
    b"Date: Mon, 4 Mar 2024 08:00:00 +0000\r\n"
    b"Message-ID: <inner@example.net>\r\n"
    b"In-Reply-To: <agenda@example.net>\r\n"
    b"\r\n"
    b"Line one.\r\n"
    b"Line two.\r\n"
    b"--b1--\r\n"
)

GROUP = (
    b"From: \"Office, City\" <office@city.cn> (the office)\r\n"
    b"Sender: clerk@city.cn (Clerk)\r\n"
    b"Reply-To:\r\n"
    b"To: Council: \"Li, Na\" <li.na@city.cn>,\r\n wang.fang@city.cn;, undisclosed-recipients:;\r\n"
    b"Cc: <@relay.example:route@example.org>, nodomain\r\n"
    b"Subject: group test\r\n"
    b"\r\n"
    b"body\r\n"
)

#: no Content-Type, Date, Subject, From...; the body's last line has no line break
MISSING = b"X-Nothing: here\r\n\r\nJust text, no headers that matter.\r\nSecond line"

BARE_LF = b"Subject: lf\nContent-Type: multipart/alternative; boundary=z\n\n--z\nContent-Type: text/plain\n\nab\ncd\n--z--\n"

DIGEST = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nfirst\r\n--d--\r\n"

#: raw UTF-8 in headers (no RFC 2047), as some clients send with SMTPUTF8
EIGHTBIT = "Subject: 公积金对账单\r\nFrom: 王芳 <wang.fang@city.cn>\r\n\r\nbody\r\n".encode()

#: GB18030 everywhere: an RFC 2047 subject in GB2312 split across two words, a base64 body
GB18030 = (
    b"From: =?GB2312?B?uau7/b3w?= <fund@housing.gov.cn>\r\n"
    b"To: citizen@city.cn\r\n"
    b"Subject: =?GB2312?B?uau7/b3w?= =?GB2312?B?ttTVy7Wl?= 2024\r\n"
    b"Content-Type: text/plain; charset=\"GB18030\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"ytDD8dPKz+Sy4srU1f3OxKO6uau7/b3wttTVy7Wl\r\n"
)


GEN_MBOX = Path("/work/shared/corpus/gen_mbox.py")


def load_corpus(directory: Path, count: int, seed: int) -> list[bytes]:
    """The corpus messages as stored: mbox bytes with LF turned into CRLF."""
    out = directory / f"corpus-{count}-{seed}.mbox"
    subprocess.run([sys.executable, str(GEN_MBOX), str(out), str(count), str(seed)], check=True,
                   stdout=subprocess.DEVNULL, cwd=directory)
    box = mailbox.mbox(out)
    try:
        return [box.get_bytes(key).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for key in box.keys()]
    finally:
        box.close()
