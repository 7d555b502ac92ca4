"""Drops by mail: an agency mails a CSV (or JSON Lines, XLSX) attachment to ``drops@<domain>``.

The pipeline never speaks SMTP: SMTP delivers the message into the drop account's INBOX like
any other, and this watcher reads that INBOX through the store. Only messages whose trusted
header ``X-Civicmail-Authenticated: agency=<id>`` (added by SMTP submission to authenticated
mail, stripped from everything else) names an agency are run. The notice type comes from an
``X-Civicmail-Notice-Type`` header, else from the subject (a notice-type id written in it).
The summary goes back as a message into the agency's own mailbox, again through the store.

Whatever fails on one message (a file name no file may have, a workbook openpyxl chokes on, a
subject no reply can carry) is answered with the reason and the watcher's position moves past it
(``shunt``): a bad message never holds up the drops mailed after it.

With several nodes, one at a time reads the drop mailbox: the one holding its lease
(``maildrop``, delivery.lease_seconds, renewed while it works). The watcher's position (the last
UID run) is kept with the lease in the database and moved only by the holder, so a mailed drop is
run once whichever node's watcher sees it; if the holder dies, another node claims the lease once
it passed and goes on from the position.
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from sqlalchemy import select

from mailserver.registry import Registry
from mailserver.registry.folders import create_default_folders
from mailserver.store import leases
from mailserver.store.models import Account, Folder

from . import reasons
from .catalog import load_catalog
from .read import FORMATS
from .runner import run_drop
from .shunt import set_aside_reason, store_unavailable

log = logging.getLogger("civicmail.delivery.maildrop")
DROP_LOCAL_PART = "drops"
TRUSTED_HEADER = "X-Civicmail-Authenticated"
TYPE_HEADER = "X-Civicmail-Notice-Type"
#: the watcher's lease, and its position, in the database
WATCHER = "maildrop"
#: above every UID (RFC 3501: UIDs are 32-bit)
MAX_UID = 0xFFFFFFFF
#: where each node kept its position before the lease (read once, to carry it over; then removed)
STATE_FILE = "maildrop-state.json"
ATTACHMENT_SUFFIXES = tuple("." + f for f in FORMATS)
#: longest file name stem and subject kept from a mailed drop (they go into files and the reply)
NAME_CHARS, SUBJECT_CHARS = 100, 200


def drop_address(reg: Registry) -> str:
    return f"{DROP_LOCAL_PART}@{reg.domain}"


def ensure_drop_mailbox(reg: Registry) -> bool:
    """The system account mailed drops arrive in (no password: nobody logs in to it). True if made
    (`init`, and `serve` as its watcher starts; several nodes starting at once: ``create_once``)."""
    address = drop_address(reg)

    def create(s) -> None:
        account = Account(address=address, state="active", password_hash=None)
        s.add(account)
        s.flush()
        create_default_folders(s, [account.id])

    return reg.store.create_once(lambda s: s.scalar(select(Account.id).where(Account.address == address)) is not None,
                                 create)


@dataclass(frozen=True)
class MailDropResult:
    uid: int
    agency: str | None
    summary: str


def _state(reg: Registry) -> dict:
    stored = leases.position(reg.store, WATCHER)
    if stored:
        return json.loads(stored)
    try:  # a node upgraded from the file it kept its position in
        return json.loads(reg.config.data_path(STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {"uidvalidity": None, "last_uid": 0}


def _save_state(reg: Registry, state: dict) -> bool:
    """Move the position; False if this node no longer holds the watcher's lease."""
    if not leases.move_position(reg.store, WATCHER, json.dumps(state)):
        return False
    reg.config.data_path(STATE_FILE).unlink(missing_ok=True)
    return True


def _new_messages(reg: Registry, state: dict) -> tuple[int | None, list[tuple[int, bytes]]]:
    with reg.store.reader() as s:
        row = s.execute(select(Folder.account_id, Folder.id, Folder.uidvalidity)
                        .join(Account, Account.id == Folder.account_id)
                        .where(Account.address == drop_address(reg), Folder.name == "INBOX")).first()
        if row is None:
            return None, []
        account_id, folder_id, uidvalidity = row
    last = state["last_uid"] if state.get("uidvalidity") == uidvalidity else 0
    rows = reg.store.mail.fetch(account_id, folder_id, last + 1, MAX_UID, 20, ("raw",))
    return uidvalidity, [(row.uid, bytes(row.raw)) for row in rows]


def trusted_agency(msg: EmailMessage) -> str | None:
    values = msg.get_all(TRUSTED_HEADER) or []
    if len(values) != 1:  # none, or a forged second one: not trusted
        return None
    m = re.fullmatch(r"\s*agency=([a-z][a-z0-9-]{1,62})\s*", str(values[0]))
    return m.group(1) if m else None


def notice_type_of(msg: EmailMessage, known: set[str]) -> str | None:
    named = str(msg.get(TYPE_HEADER, "") or "").strip().lower()
    if named:
        return named
    subject = str(msg.get("Subject", "") or "").lower()
    hits = [t for t in sorted(known, key=len, reverse=True) if re.search(rf"(?<![a-z-]){re.escape(t)}(?![a-z-])", subject)]
    return hits[0] if hits else None


def attachment_name(raw_name: str) -> str:
    """An attachment's file name as a file may be named: its last path component, without
    control characters (RFC 2231 can encode a NUL) or leading dots, the stem shortened."""
    name = "".join(c for c in re.split(r"[/\\]", raw_name)[-1] if c.isprintable()).strip().lstrip(".")
    stem, suffix = os.path.splitext(name)
    return (stem[:NAME_CHARS] or "drop") + suffix.lower()


def one_line(text: str) -> str:
    """A header value from a mailed one, on one line (an encoded CR/LF decodes into a line break
    that no header may carry)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:SUBJECT_CHARS]


def process_new_mail(reg: Registry) -> list[MailDropResult]:
    """Run the drops that arrived since the last call, if this node holds the watcher's lease
    (nothing otherwise: another node's watcher runs them). Blocking: the service calls it in a
    thread. The position moves past every message, whatever became of it, unless the store is away."""
    seconds = reg.config.delivery.lease_seconds
    if not leases.claim(reg.store, WATCHER, seconds):
        return []
    state = _state(reg)
    uidvalidity, messages = _new_messages(reg, state)
    results: list[MailDropResult] = []
    if not messages:
        return results
    known = set(load_catalog(reg.config.templates_dir))
    with leases.Heartbeat(lambda: leases.renew(reg.store, WATCHER, seconds), seconds, "drop mailbox") as beat:
        for uid, raw in messages:
            if beat.lost.is_set():
                break
            try:
                results.append(_process_one(reg, uid, raw, known))
            except Exception as exc:
                if store_unavailable(exc):
                    raise  # the message is read again in the next round
                results.append(_set_aside(reg, uid, raw, exc))
            if not _save_state(reg, {"uidvalidity": uidvalidity, "last_uid": uid}):
                log.warning("drop mailbox: the watcher's lease passed to another node after message %d", uid)
                break
    return results


def _set_aside(reg: Registry, uid: int, raw: bytes, exc: Exception) -> MailDropResult:
    """A message that failed outside any one attachment: the agency is told why, if it can be."""
    summary = reasons.MAIL_FAILED.format(error=set_aside_reason(log, f"drop mailbox: message {uid}", exc))
    agency = None
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        agency = trusted_agency(msg)
        if agency is not None:
            _reply(reg, agency, msg, summary)
    except Exception as again:  # the reason stays in the log; the position moves on all the same
        if store_unavailable(again):
            raise
        log.error("drop mailbox: message %d: no answer could be sent", uid, exc_info=again)
    return MailDropResult(uid, agency, summary)


def _process_one(reg: Registry, uid: int, raw: bytes, known: set[str]) -> MailDropResult:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    agency = trusted_agency(msg)
    if agency is None:
        log.info("drop mailbox: message %d not from an authenticated agency: ignored", uid)
        return MailDropResult(uid, None, "ignored: not from an authenticated agency")
    notice_type = notice_type_of(msg, known)
    lines = []
    attachments = [p for p in msg.iter_attachments()
                   if (p.get_filename() or "").lower().endswith(ATTACHMENT_SUFFIXES)]
    if notice_type is None:
        lines.append(reasons.MAIL_NO_NOTICE_TYPE)
    elif not attachments:
        lines.append(reasons.MAIL_NO_ATTACHMENT)
    for part in attachments if notice_type else []:
        name = attachment_name(part.get_filename())
        with tempfile.TemporaryDirectory(prefix="civicmail-maildrop-") as tmp:
            path = Path(tmp) / name
            try:
                path.write_bytes(part.get_payload(decode=True) or b"")  # as sent: the reader detects the encoding
                result = run_drop(reg, path, agency, notice_type, source="mail")
            except Exception as exc:
                if store_unavailable(exc):
                    raise
                error = set_aside_reason(log, f"drop mailbox: message {uid}, {name}", exc)
                lines.append(reasons.MAIL_NOT_RUN.format(name=name, error=error))
                continue
        counts = result.summary.counts_text()
        # the serve log's line for it, as a spooled drop has (delivery/spool.py)
        log.info("mail %s/%s/%s (message %d): drop %s: %s", agency, notice_type, name, uid, result.drop_id, counts)
        lines.append(f"{name}: drop {result.drop_id} ({notice_type}): {counts}")
        lines.append(f"    civicmail drop status {result.drop_id}   /   civicmail drop report {result.drop_id}")
    summary = "\n".join(lines)
    _reply(reg, agency, msg, summary)
    return MailDropResult(uid, agency, summary)


def _reply(reg: Registry, agency: str, original: EmailMessage, summary: str) -> None:
    with reg.store.reader() as s:
        mailbox = s.execute(select(Account.id, Account.address).where(Account.agency_id == agency)
                            .order_by(Account.id)).first()
    if mailbox is None:
        log.warning("drop mailbox: agency %s has no mailbox for the summary", agency)
        return
    reply = EmailMessage(policy=policy.SMTP)
    reply["From"] = drop_address(reg)
    reply["To"] = mailbox.address
    reply["Subject"] = "回复 / Re: " + (one_line(str(original.get("Subject", "") or "")) or "drop")
    reply["Date"] = email.utils.formatdate(localtime=True)
    reply["Message-ID"] = email.utils.make_msgid(domain=reg.domain)
    original_id = str(original.get("Message-ID", "") or "").strip()
    if original_id and original_id.isascii():
        reply["In-Reply-To"] = original_id
        reply["References"] = original_id
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content(reasons.MAIL_SUMMARY_HEAD + "\n\n" + summary + "\n")
    reg.store.mail.deliver(reply.as_bytes(), [mailbox.id])
