"""Handling the mail in service INBOXes, each message exactly once (blocking; run in the executor).

A message is claimed by inserting its ``service_processed`` row in the same transaction that
applies its effect (a vote, a subscription, an application) and stores the answers: a crash
leaves either all of it or none, and two processes never handle the same message (the primary
key). A handler that fails on a message (a bug, a message it cannot read) records ``failed``
for it, so that one bad message never blocks the rest; a database that is briefly unavailable
leaves the message for the next round.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import QuotaExceeded
from ..store.mailstore import NewMessage, check_quota, insert_messages
from ..store.models import Account, Content, Folder, Message, ServiceAccount, ServiceProcessed
from ..store.notify import hub
from .applications import handle_application_mail
from .mail import Inbound, parse, verified_sender
from .outcome import Handled
from .surveys import handle_vote
from .topics import handle_statement_mail, handle_topic_mail

log = logging.getLogger("civicmail.services")

HANDLERS = {
    "topic": handle_topic_mail,
    "survey": handle_vote,
    "apply": handle_application_mail,
    "statements": handle_statement_mail,
}
BATCH = 200


@dataclass(frozen=True)
class ServiceInbox:
    folder_id: int
    account_id: int
    address: str
    kind: str
    ref: str


def service_inboxes(store) -> dict[int, ServiceInbox]:
    """The INBOX of every service account, by folder id."""
    with store.reader() as s:
        rows = s.execute(select(Folder.id, Account.id, Account.address, ServiceAccount.kind, ServiceAccount.ref)
                         .join(Account, Account.id == ServiceAccount.account_id)
                         .join(Folder, (Folder.account_id == Account.id) & (Folder.name == "INBOX")))
        return {fid: ServiceInbox(fid, aid, addr, kind, ref) for fid, aid, addr, kind, ref in rows}


def pending_messages(store, folder_ids: list[int], limit: int = BATCH) -> list[tuple[int, int]]:
    """(message id, folder id) of unhandled messages, oldest first (a later vote replaces an earlier)."""
    if not folder_ids:
        return []
    done = select(ServiceProcessed.message_id)
    with store.reader() as s:
        return [tuple(r) for r in s.execute(
            select(Message.id, Message.folder_id).where(Message.folder_id.in_(folder_ids), Message.id.not_in(done))
            .order_by(Message.id).limit(limit))]


def process_pending(reg, inboxes: dict[int, ServiceInbox]) -> int:
    """Handle every unhandled message in the given INBOXes; the number handled."""
    handled = 0
    while True:
        batch = pending_messages(reg.store, sorted(inboxes))
        progress = 0
        for message_id, folder_id in batch:
            try:
                if process_one(reg, message_id, inboxes[folder_id]):
                    progress += 1
            except OperationalError:
                log.warning("store unavailable; message %d left for the next round", message_id, exc_info=True)
                return handled + progress
        handled += progress
        if len(batch) < BATCH or not progress:
            return handled


def _to_raw(mail: EmailMessage | bytes) -> bytes:
    return mail if isinstance(mail, bytes) else mail.as_bytes()


def process_one(reg, message_id: int, inbox: ServiceInbox) -> bool:
    """True if this call handled the message (False: someone else did, or it is gone)."""
    store = reg.store
    try:
        with store.session() as s:
            s.add(ServiceProcessed(message_id=message_id, account_id=inbox.account_id, outcome="claimed"))
            s.flush()  # the claim: a second handler stops here (primary key)
            raw = s.scalar(select(Content.raw).join(Message, Message.content_id == Content.id)
                           .where(Message.id == message_id))
            if raw is None:
                s.get(ServiceProcessed, message_id).outcome = "gone"
                return True
            msg = parse(raw)
            kind, who = verified_sender(msg)
            inbound = Inbound(message_id, inbox.account_id, inbox.address, inbox.kind, inbox.ref, raw, msg, kind, who)
            result: Handled = HANDLERS[inbox.kind](reg, s, inbound)
            new = [NewMessage(account_id=m[0], raw=_to_raw(m[1]), folder=m[2] if len(m) > 2 else "INBOX")
                   for m in result.mail]
            try:
                check_quota(s, new, reg.config.accounts.quota_bytes)
            except QuotaExceeded:
                new, result.outcome = [], result.outcome + "-unanswered"  # the effect stands; no reply
            stored = insert_messages(s, new)
            s.get(ServiceProcessed, message_id).outcome = result.outcome[:32]
    except IntegrityError:
        return False
    except OperationalError:
        raise
    except Exception:  # one bad message must not stop the service: record it and go on
        log.exception("service %s %s: message %d failed", inbox.kind, inbox.ref, message_id)
        try:
            with store.session() as s:
                if s.get(ServiceProcessed, message_id) is None:
                    s.add(ServiceProcessed(message_id=message_id, account_id=inbox.account_id, outcome="failed"))
        except IntegrityError:
            pass
        return True
    log.info("service %s %s: message %d %s", inbox.kind, inbox.ref, message_id, result.outcome)
    hub.changed(d.folder_id for d in stored)
    return True
