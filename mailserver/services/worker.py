"""Handling the mail in service INBOXes, each message exactly once (blocking; run in the executor).

A message is claimed by inserting its ``service_processed`` row in the same transaction that
applies its effect (a vote, a subscription, an application) and stores the answers: a crash
leaves either all of it or none, and two processes never handle the same message (the primary
key). Up to GROUP messages share one transaction, each in a savepoint. A handler that fails on a message (a bug, a message it cannot read) records ``failed``
for it, so that one bad message never blocks the rest; a database that is briefly unavailable
leaves the message for the next round. ``retry_failed`` (`civicmail services retry`) makes failed
messages pending again once the cause is fixed.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Collection

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import QuotaExceeded
from ..store.api import NewMessage
from ..store.models import Account, Folder, Message, ServiceAccount, ServiceProcessed
from .applications import handle_application_mail
from .mail import Inbound, is_automatic, parse, verified_sender
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
#: messages per transaction
GROUP = 50
#: the outcome of a message whose handler raised
FAILED = "failed"


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


def pending_messages(store, folder_ids: list[int], since: dict[int, int] | None = None,
                     limit: int = BATCH) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """(message id, folder id) of unhandled messages, oldest first (a later vote replaces an
    earlier), and each folder's HIGHESTMODSEQ in the same snapshot.

    ``since``: per folder, a MODSEQ up to which everything is known to be handled, so a poll
    reads only what is new (the (folder_id, modseq) index) instead of every vote ever received.
    Safe because writers to a folder serialise on its row, so MODSEQs become visible in order.
    """
    if not folder_ids:
        return [], {}
    since = since or {}
    with store.reader() as s:
        found = s.execute(select(Folder.id, Folder.account_id, Folder.highestmodseq)
                          .where(Folder.id.in_(folder_ids))).all()
        marks = {fid: modseq for fid, _, modseq in found}
        if not found:
            return [], marks
        # each folder with its account: the index (account_id, folder_id, modseq), one partition each
        new = or_(*[(Message.account_id == account_id) & (Message.folder_id == fid)
                    & (Message.modseq > since.get(fid, 0)) for fid, account_id, _ in found])
        rows = s.execute(select(Message.id, Message.folder_id)
                         .outerjoin(ServiceProcessed, ServiceProcessed.message_id == Message.id)
                         .where(new, ServiceProcessed.message_id.is_(None)).order_by(Message.id).limit(limit))
        return [tuple(r) for r in rows], marks


def process_pending(reg, inboxes: dict[int, ServiceInbox], since: dict[int, int] | None = None) -> int:
    """Handle every unhandled message in the given INBOXes; the number handled. ``since`` (see
    pending_messages) is advanced when a round finished everything it saw."""
    handled = 0
    since = since if since is not None else {}
    while True:
        batch, marks = pending_messages(reg.store, sorted(inboxes), since)
        progress = 0
        for i in range(0, len(batch), GROUP):
            try:
                progress += process_group(reg, [(mid, inboxes[fid]) for mid, fid in batch[i:i + GROUP]])
            except OperationalError:
                log.warning("store unavailable; messages left for the next round", exc_info=True)
                return handled + progress
        handled += progress
        if len(batch) < BATCH:
            since.update(marks)
            return handled
        if not progress:  # all claimed by another worker: it handles them
            return handled


def _to_raw(mail: EmailMessage | bytes) -> bytes:
    return mail if isinstance(mail, bytes) else mail.as_bytes()


def process_group(reg, items: list[tuple[int, ServiceInbox]]) -> int:
    """Handle several messages in one transaction (one commit, one fsync: group commit), each
    in its own savepoint so that one failing message takes nothing else with it. Returns how
    many this call handled (a message another worker claimed first is skipped)."""
    handled = 0
    folders: list[int] = []
    done: list[tuple[int, ServiceInbox, str]] = []
    with reg.store.session() as s:
        for message_id, inbox in items:
            try:
                with s.begin_nested():
                    outcome, stored = _handle(reg, s, message_id, inbox)
            except IntegrityError:
                continue  # claimed by another worker (the primary key of service_processed)
            except OperationalError:
                raise
            except Exception:  # one bad message must not stop the service: record it and go on
                log.exception("service %s %s: message %d failed", inbox.kind, inbox.ref, message_id)
                try:
                    with s.begin_nested():
                        s.add(ServiceProcessed(message_id=message_id, account_id=inbox.account_id, outcome=FAILED))
                except IntegrityError:
                    continue
                outcome, stored = FAILED, []
            handled += 1
            folders.extend(d.folder_id for d in stored)
            done.append((message_id, inbox, outcome))
    for message_id, inbox, outcome in done:
        log.info("service %s %s: message %d %s", inbox.kind, inbox.ref, message_id, outcome)
    reg.store.mail.changed(folders)
    return handled


def _handle(reg, s, message_id: int, inbox: ServiceInbox) -> tuple[str, list]:
    """Claim, handle and answer one message inside the caller's transaction."""
    s.add(ServiceProcessed(message_id=message_id, account_id=inbox.account_id, outcome="claimed"))
    s.flush()  # the claim: a second handler stops here (primary key)
    mail = reg.store.mail
    raw = mail.raw_in(s, inbox.account_id, message_id)
    if raw is None:  # expunged meanwhile
        s.get(ServiceProcessed, message_id).outcome = "gone"
        return "gone", []
    msg = parse(raw)
    kind, who = verified_sender(msg)
    # RFC 3834: never answer an auto-reply (a vacation responder would loop); an agency's own
    # systems may push application statuses automatically, and those are relayed, not answered
    if is_automatic(msg) and not (inbox.kind == "apply" and kind == "agency"):
        s.get(ServiceProcessed, message_id).outcome = "ignored-automatic"
        return "ignored-automatic", []
    inbound = Inbound(message_id, inbox.account_id, inbox.address, inbox.kind, inbox.ref, raw, msg, kind, who)
    result: Handled = HANDLERS[inbox.kind](reg, s, inbound)
    new = [NewMessage(account_id=m[0], raw=_to_raw(m[1]), folder=m[2] if len(m) > 2 else "INBOX")
           for m in result.mail]
    fitting = []
    for m in new:  # per mailbox: an agency over quota must not cost the citizen the acknowledgement
        try:
            mail.check_quota(s, [m], reg.config.accounts.quota_bytes)
            fitting.append(m)
        except QuotaExceeded:
            result.outcome = result.outcome.removesuffix("-over-quota") + "-over-quota"  # the effect stands
    stored = mail.deliver_in(s, fitting)
    s.get(ServiceProcessed, message_id).outcome = result.outcome[:32]
    return result.outcome, stored


@dataclass(frozen=True)
class FailedMessage:
    message_id: int
    #: the service address it was sent to, and what that service is (topic, survey, apply, ...)
    address: str
    kind: str
    failed_at: dt.datetime


def failed_messages(store) -> list[FailedMessage]:
    """The service mail whose handler failed (the log has each one's traceback), oldest first."""
    with store.reader() as s:
        rows = s.execute(select(ServiceProcessed.message_id, Account.address, ServiceAccount.kind,
                                ServiceProcessed.processed_at)
                         .join(Account, Account.id == ServiceProcessed.account_id)
                         .outerjoin(ServiceAccount, ServiceAccount.account_id == Account.id)
                         .where(ServiceProcessed.outcome == FAILED).order_by(ServiceProcessed.message_id))
        return [FailedMessage(mid, address, kind or "", at) for mid, address, kind, at in rows]


def retry_failed(store, message_ids: Collection[int] | None = None) -> list[int]:
    """Make failed messages (all, or those of ``message_ids``) pending again: their record goes, and
    the worker handles them as new (Mailman's unshunt). Returns the message ids made pending. They
    get a new MODSEQ in the same transaction (``MailStore.touch_in``), past a running worker's watermark,
    and the folder's change reaches it as any delivery does (FolderWatcher, NOTIFY), so it
    handles them within a poll, not at its next full scan."""
    with store.session() as s:
        q = delete(ServiceProcessed).where(ServiceProcessed.outcome == FAILED)
        if message_ids is not None:
            q = q.where(ServiceProcessed.message_id.in_(list(message_ids)))
        retried = sorted((mid, account_id) for mid, account_id in
                         s.execute(q.returning(ServiceProcessed.message_id, ServiceProcessed.account_id)))
        store.mail.touch_in(s, [(account_id, mid) for mid, account_id in retried])
        return [mid for mid, _ in retried]
