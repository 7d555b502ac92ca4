"""Delivery status notifications (RFC 3464): the bounce a sender finds in their INBOX when
mail to another domain could not be delivered."""
from __future__ import annotations

import datetime as dt
import email.utils
import re
import secrets

_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def status_of(reply: str, permanent: bool) -> str:
    m = _ENHANCED.search(reply)
    if m:
        return m.group(1)
    return "5.0.0" if permanent else "4.4.7"


def build_dsn(*, hostname: str, domain: str, sender: str, original: bytes, failures: dict[str, str],
              permanent: bool, arrival: dt.datetime | None = None) -> bytes:
    """A multipart/report (report-type=delivery-status) for the failed recipients."""
    boundary = f"=_dsn_{secrets.token_hex(12)}"
    now = email.utils.format_datetime(email.utils.localtime())
    arrived = email.utils.format_datetime(arrival) if arrival else now
    listing = "\r\n".join(f"  <{r}>: {reason}" for r, reason in failures.items())
    why = "was refused by the receiving server" if permanent else "could not be delivered in time"
    human = (f"This is the mail system at {hostname}.\r\n\r\n"
             f"Your message {why}, for these recipients:\r\n\r\n{listing}\r\n\r\n"
             f"The message's header is attached.\r\n")
    per_recipient = "".join(
        f"\r\nFinal-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {status_of(reason, permanent)}\r\n"
        f"Diagnostic-Code: smtp; {reason}\r\nLast-Attempt-Date: {now}\r\n"
        for r, reason in failures.items())
    header = original.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    parts = [
        f"From: Mail Delivery System <MAILER-DAEMON@{domain}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        f"Message-ID: <{secrets.token_hex(12)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        human,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}\r\nArrival-Date: {arrived}\r\n{per_recipient}",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    text = "\r\n".join(parts).encode("utf-8") + b"\r\n" + header + b"\r\n" + f"--{boundary}--\r\n".encode()
    return text
