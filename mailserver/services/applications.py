"""Applications: a citizen mails ``<agency>-apply@domain``; the agency's mailbox receives the
mail with the verified identity and an application number added by the server; the citizen
gets an acknowledgement with the number; the agency's answers come back in the same thread.

Threading: the copy in the agency's mailbox keeps the citizen's Message-ID and has
``Reply-To: <agency>-apply@domain``, so a clerk's "Reply" (In-Reply-To that Message-ID) comes back
here; it is recorded as the application's status and delivered to the citizen unchanged, so
the citizen's client threads it under the original. ``civicmail application reply`` does the
same from the command line.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import NotFound, ValidationError
from ..identity import idnumber
from ..store.api import NewMessage
from ..store.models import Account, Agency, Application, ApplicationDesk, Citizen
from . import replies
from .accounts import citizen_account, create_system_account
from .mail import TRUSTED_HEADER, Inbound, compose, encoded, reply_subject, rewrite_header
from .outcome import Handled

NUMBER = re.compile(r"\b(\d{4}-\d{6,})\b")
STATUS_LINE = re.compile(r"^\s*(?:status|状态|办理状态|进度)\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
# Headers only the server may write on mail reaching the agency: a citizen's own are dropped.
SERVER_HEADERS = {replies.APPLICATION_HEADER.lower(), replies.APPLICANT_HEADER.lower(),
                  replies.STATUS_HEADER.lower(), replies.SIGNATURE_HEADER.lower(), "reply-to"}


@dataclass(frozen=True)
class ApplicationView:
    number: str
    agency_id: str
    applicant: str
    subject: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


def setup_desk(reg, agency_id: str, address: str | None = None) -> str:
    """Create the agency's application address (default ``<agency>-apply@domain``)."""
    with reg.store.session() as s:
        if s.get(Agency, agency_id) is None:
            raise NotFound(f"no agency {agency_id}")
        existing = s.get(ApplicationDesk, agency_id)
        if existing is not None:
            return s.get(Account, existing.account_id).address
        mailbox = s.scalar(select(Account).where(Account.agency_id == agency_id).order_by(Account.id))
        if mailbox is None:
            raise ValidationError(f"agency {agency_id} has no mailbox to receive applications in (its first sender "
                                  "address must be local)")
        account = create_system_account(s, reg, address or f"{agency_id}-apply", "apply", agency_id)
        s.add(ApplicationDesk(agency_id=agency_id, account_id=account.id, mailbox_account_id=mailbox.id))
        return account.address


def list_applications(reg, agency_id: str | None = None) -> list[ApplicationView]:
    with reg.store.reader() as s:
        q = select(Application, Account.address).join(Account, Account.id == Application.account_id)
        if agency_id:
            q = q.where(Application.agency_id == agency_id)
        return [ApplicationView(a.number, a.agency_id, addr, a.subject, a.status, a.created_at, a.updated_at)
                for a, addr in s.execute(q.order_by(Application.id))]


def _find(session: Session, agency_id: str, inbound: Inbound) -> Application | None:
    numbers = [str(v) for v in inbound.msg.get_all(replies.APPLICATION_HEADER) or []]
    numbers += NUMBER.findall(inbound.subject)
    for number in numbers:
        app = session.scalar(select(Application).where(Application.number == number.strip(),
                                                       Application.agency_id == agency_id))
        if app is not None:
            return app
    refs = inbound.references
    if refs:
        return session.scalar(select(Application).where(Application.agency_id == agency_id,
                                                         Application.root_message_id.in_(refs)))
    return None


def handle_application_mail(reg, session: Session, inbound: Inbound) -> Handled:
    desk = session.get(ApplicationDesk, inbound.ref)
    if desk is None:
        return Handled("ignored-no-desk")
    if inbound.verified_kind == "agency" and inbound.verified == desk.agency_id:
        return _agency_answer(reg, session, desk, inbound)
    if inbound.verified_kind != "citizen":
        return Handled("ignored-unverified")  # only a signed-in real-name mailbox may apply
    citizen_acc = citizen_account(session, inbound.verified or "")
    if citizen_acc is None:
        return Handled("ignored-not-citizen")
    citizen = session.get(Citizen, citizen_acc.citizen_id)
    agency = session.get(Agency, desk.agency_id)
    follow_up = _find(session, desk.agency_id, inbound)
    if follow_up is not None and follow_up.account_id != citizen_acc.id:
        follow_up = None  # someone else's number in the subject: a new application
    root = inbound.header_message_id
    if not root:
        # a Message-ID is what keeps the thread together; give one to mail that came without
        root = f"<application.{secrets.token_hex(8)}@{reg.domain}>"
    app = follow_up
    if app is None:
        app = Application(number=f"pending-{secrets.token_hex(8)}", agency_id=desk.agency_id,
                          account_id=citizen_acc.id, subject=(inbound.subject or "(无主题)")[:500], status="received",
                          root_message_id=root, thread_refs=root)
        session.add(app)
        session.flush()
        app.number = f"{app.created_at.year:04d}-{app.id:06d}"
    masked = idnumber.mask(reg.keyring.decrypt(citizen.id_cipher))
    prepend = [(replies.APPLICATION_HEADER, app.number),
               (replies.APPLICANT_HEADER, encoded(f"{citizen.name} <{citizen_acc.address}>; id={masked}")),
               ("Reply-To", inbound.address)]
    signature = signature_status(session, inbound.raw, citizen_acc.address)
    if signature is not None:
        prepend.append((replies.SIGNATURE_HEADER, signature))
    if not inbound.header_message_id:
        prepend.append(("Message-ID", root))
    copy = rewrite_header(inbound.raw, SERVER_HEADERS, prepend)
    mail: list[tuple] = [(desk.mailbox_account_id, copy)]
    if follow_up is None:
        ack = compose(sender=inbound.address, sender_name=agency.name, to=citizen_acc.address,
                      subject=replies.ACK_SUBJECT.format(number=app.number, subject=app.subject),
                      text=replies.ACK_TEXT.format(agency=agency.name, number=app.number), domain=reg.domain,
                      in_reply_to=root, references=inbound.references,
                      extra={replies.APPLICATION_HEADER: app.number, replies.STATUS_HEADER: "received"})
        app.thread_refs = f"{app.thread_refs} {ack['Message-ID']}"
        mail.append((citizen_acc.id, ack))
    elif inbound.header_message_id:
        app.thread_refs = f"{app.thread_refs} {inbound.header_message_id}"
    app.updated_at = dt.datetime.now(dt.timezone.utc)
    return Handled("application" if follow_up is None else "application-follow-up", mail)


def signature_status(session: Session, raw: bytes, applicant: str) -> str | None:
    """What the agency is told of an application's S/MIME signature: "verified; signer=...;
    serial=..." where the applicant's own city certificate (issued, valid, not revoked) signed
    exactly this content; "not verified (reason)" for any other signature; None if unsigned."""
    from ..identity.smime import BadSignature, split_signed, verify_detached
    from ..registry.ca import citizen_signer
    from cryptography.hazmat.primitives.serialization import Encoding

    parts = split_signed(raw)
    if parts is None:
        return None
    try:
        cert = verify_detached(*parts)
    except BadSignature:
        return "not verified (the signature does not match the content)"
    signer = citizen_signer(session, cert.public_bytes(Encoding.DER))
    if signer is None:
        return "not verified (not a valid certificate of the city CA)"
    if signer[0] != applicant:
        return "not verified (signed with another mailbox's certificate)"
    return f"verified; signer={signer[0]}; serial={signer[1]}"


def _status_of(inbound: Inbound) -> str:
    header = inbound.msg.get(replies.STATUS_HEADER)
    if header:
        return str(header).strip()[:64]
    m = STATUS_LINE.search(inbound.text())
    return m.group(1)[:64] if m else "replied"


def _agency_answer(reg, session: Session, desk: ApplicationDesk, inbound: Inbound) -> Handled:
    """A clerk's reply: record the status, deliver it to the citizen as written (thread intact)."""
    app = _find(session, desk.agency_id, inbound)
    if app is None:
        return Handled("ignored-unknown-application")
    app.status = _status_of(inbound)
    app.updated_at = dt.datetime.now(dt.timezone.utc)
    if inbound.header_message_id:
        app.thread_refs = f"{app.thread_refs} {inbound.header_message_id}"
    relayed = rewrite_header(inbound.raw, SERVER_HEADERS - {"reply-to"} | {TRUSTED_HEADER.lower()},
                             [(replies.APPLICATION_HEADER, app.number), (replies.STATUS_HEADER, encoded(app.status))])
    return Handled("status", [(app.account_id, relayed)])


def status_label(status: str) -> str:
    """The status in the citizen's language: "approved" is 已批准; a clerk's own words as written."""
    return replies.STATUS_LABELS.get(status.strip().lower(), status)


def reply(reg, number: str, status: str, text: str) -> str:
    """Blocking: the agency's status message to the citizen, in the application's thread; a copy
    goes to the agency mailbox's Sent folder. Returns the new Message-ID."""
    status = status.strip()
    if not status or len(status) > 64:
        raise ValidationError("--status: 1 to 64 characters")
    with reg.store.session() as s:
        app = s.scalar(select(Application).where(Application.number == number))
        if app is None:
            raise NotFound(f"no application {number}")
        desk = s.get(ApplicationDesk, app.agency_id)
        agency = s.get(Agency, app.agency_id)
        mailbox = s.get(Account, desk.mailbox_account_id)
        citizen = s.get(Account, app.account_id)
        refs = app.thread_refs.split()
        msg = compose(sender=mailbox.address, sender_name=agency.name, to=citizen.address,
                      subject=reply_subject(f"{app.subject} [{app.number}]") + f" — {status_label(status)}",
                      text=text, domain=reg.domain, in_reply_to=refs[-1], references=refs[:-1],
                      extra={"Reply-To": s.get(Account, desk.account_id).address,
                             replies.APPLICATION_HEADER: app.number, replies.STATUS_HEADER: status},
                      auto=None)  # a clerk's answer, not an automatic one
        raw = msg.as_bytes()
        stored = reg.store.mail.deliver_in(s, [NewMessage(account_id=citizen.id, raw=raw),
                                     NewMessage(account_id=mailbox.id, raw=raw, folder="Sent", flags=1)])
        app.status = status
        app.updated_at = dt.datetime.now(dt.timezone.utc)
        app.thread_refs = f"{app.thread_refs} {msg['Message-ID']}"
    reg.store.mail.changed(d.folder_id for d in stored)
    return str(msg["Message-ID"])
