"""Topics: subscribe and unsubscribe by mail (``topic+subscribe@``, ``topic+unsubscribe@``, or the
bare address with "subscribe"/"订阅" as the subject) and by RFC 8058 one-click.

A topic tied to an optional notice type (``notice_type_id``) is opt-out: everyone receives the
statement unless they opted out, and the opt-out lives in the pipeline's ``notice_opt_out`` table
(the one the ``consent`` stage reads), not in ``subscription``.
"""
from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..errors import NotFound, ValidationError
from ..identity.addresses import statements_address
from ..store.models import Account, NoticeOptOut, NoticeType, ServiceAccount, Subscription, Topic
from . import replies
from .accounts import citizen_account, create_system_account
from .mail import Inbound, compose
from .outcome import Handled

SUBSCRIBE_WORDS = {"subscribe", "join", "订阅"}
UNSUBSCRIBE_WORDS = {"unsubscribe", "leave", "退订", "取消订阅"}


@dataclass(frozen=True)
class TopicView:
    id: str
    name: str
    address: str
    notice_type: str | None
    subscribers: int


def add_topic(reg, topic_id: str, name: str, address: str | None = None, notice_type: str | None = None) -> TopicView:
    if not topic_id or not topic_id.replace("-", "").isalnum() or not topic_id.isascii():
        raise ValidationError(f"topic id {topic_id!r}: letters, digits and '-'")
    if not name.strip():
        raise ValidationError("topic name is empty")
    with reg.store.session() as s:
        if s.get(Topic, topic_id) is not None:
            raise ValidationError(f"topic {topic_id} exists")
        if notice_type is not None:
            nt = s.get(NoticeType, notice_type)
            if nt is None:
                raise NotFound(f"no notice type {notice_type}")
            if nt.mandatory:
                raise ValidationError(f"{notice_type} is mandatory: citizens cannot opt out of it")
        account = create_system_account(s, reg, address or topic_id, "topic", topic_id)
        s.add(Topic(id=topic_id, name=name.strip(), account_id=account.id, notice_type_id=notice_type))
        return TopicView(topic_id, name.strip(), account.address, notice_type, 0)


def list_topics(reg) -> list[TopicView]:
    with reg.store.reader() as s:
        counts = dict(s.execute(select(Subscription.topic_id, func.count()).group_by(Subscription.topic_id)).all())
        rows = s.execute(select(Topic, Account.address).join(Account, Account.id == Topic.account_id)
                         .order_by(Topic.id)).all()
        return [TopicView(t.id, t.name, addr, t.notice_type_id, counts.get(t.id, 0)) for t, addr in rows]


def get_topic(session: Session, topic_id: str) -> tuple[Topic, str]:
    row = session.execute(select(Topic, Account.address).join(Account, Account.id == Topic.account_id)
                          .where(Topic.id == topic_id)).first()
    if row is None:
        raise NotFound(f"no topic {topic_id}")
    return row[0], row[1]


def sub_address(address: str, detail: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local}+{detail}@{domain}"


def is_subscribed(session: Session, topic: Topic, account_id: int) -> bool:
    if topic.notice_type_id:
        return session.get(NoticeOptOut, (account_id, topic.notice_type_id)) is None
    return session.get(Subscription, (topic.id, account_id)) is not None


def set_subscribed(session: Session, topic: Topic, account_id: int, wanted: bool) -> bool:
    """Subscribe or unsubscribe; True if that changed anything."""
    if is_subscribed(session, topic, account_id) == wanted:
        return False
    if topic.notice_type_id:
        set_statement(session, account_id, topic.notice_type_id, wanted)
        return True
    if wanted:
        session.add(Subscription(topic_id=topic.id, account_id=account_id))
    else:
        session.execute(delete(Subscription).where(Subscription.topic_id == topic.id,
                                                   Subscription.account_id == account_id))
    session.flush()
    return True


def set_statement(session: Session, account_id: int, notice_type_id: str, wanted: bool) -> bool:
    """Receive an optional statement again, or opt out of it (the ``consent`` stage's table);
    True if that changed anything."""
    opted_out = session.get(NoticeOptOut, (account_id, notice_type_id)) is not None
    if opted_out != wanted:
        return False
    if wanted:
        session.execute(delete(NoticeOptOut).where(NoticeOptOut.account_id == account_id,
                                                   NoticeOptOut.notice_type_id == notice_type_id))
    else:
        session.add(NoticeOptOut(account_id=account_id, notice_type_id=notice_type_id))
    session.flush()
    return True


# -- one-click (RFC 8058) ---------------------------------------------------------------------
def one_click_token(reg, topic_id: str, account_id: int) -> str:
    digest = reg.keyring.secret_hash("list-unsubscribe", f"{topic_id}\0{account_id}")
    return base64.urlsafe_b64encode(digest[:18]).decode()


def one_click_path(reg, topic_id: str, account_id: int) -> str:
    return f"/unsubscribe/{topic_id}/{account_id}/{one_click_token(reg, topic_id, account_id)}"


def _one_click(session: Session, reg, topic_id: str, account_id: int, token: str) -> Topic | None:
    """The topic of a genuine link (its token is the HMAC, its topic and account exist), else None."""
    if not hmac.compare_digest(token.encode(), one_click_token(reg, topic_id, account_id).encode()):
        return None
    topic = session.get(Topic, topic_id)
    return topic if topic is not None and session.get(Account, account_id) is not None else None


def one_click_topic(reg, topic_id: str, account_id: int, token: str) -> str | None:
    """Blocking. The topic's name if the link is genuine (nothing changes), else None: what the
    page a person opens from the link asks them to confirm."""
    with reg.store.reader() as s:
        topic = _one_click(s, reg, topic_id, account_id, token)
        return topic.name if topic is not None else None


def one_click_unsubscribe(reg, topic_id: str, account_id: int, token: str) -> str | None:
    """Blocking. The topic's name if the link is genuine (the citizen is then unsubscribed,
    idempotently), else None."""
    with reg.store.session() as s:
        topic = _one_click(s, reg, topic_id, account_id, token)
        if topic is None:
            return None
        set_subscribed(s, topic, account_id, False)
        return topic.name


# -- mail --------------------------------------------------------------------------------------
def wanted_action(inbound: Inbound) -> str | None:
    detail = inbound.detail()
    words = {detail} if detail else set(inbound.subject.lower().replace(":", " ").replace("：", " ").split()[:2])
    if words & UNSUBSCRIBE_WORDS:
        return "unsubscribe"
    if words & SUBSCRIBE_WORDS:
        return "subscribe"
    return None


def handle_topic_mail(reg, session: Session, inbound: Inbound) -> Handled:
    if inbound.verified_kind != "citizen":
        return Handled("ignored-unverified")  # nobody may subscribe someone else
    citizen = citizen_account(session, inbound.verified or "")
    if citizen is None:
        return Handled("ignored-not-citizen")
    topic, address = get_topic(session, inbound.ref)
    action = wanted_action(inbound)
    fields = {"topic": topic.name, "subscribe": sub_address(address, "subscribe"),
              "unsubscribe": sub_address(address, "unsubscribe")}
    if action is None:
        subject, text, outcome = replies.TOPIC_HELP_SUBJECT, replies.TOPIC_HELP_TEXT, "help"
    elif action == "subscribe":
        set_subscribed(session, topic, citizen.id, True)
        subject, text, outcome = replies.SUBSCRIBED_SUBJECT, replies.SUBSCRIBED_TEXT, "subscribed"
    else:
        set_subscribed(session, topic, citizen.id, False)
        subject, text, outcome = replies.UNSUBSCRIBED_SUBJECT, replies.UNSUBSCRIBED_TEXT, "unsubscribed"
    answer = compose(sender=address, sender_name=topic.name, to=citizen.address, subject=subject.format(**fields),
                     text=text.format(**fields), domain=reg.domain, in_reply_to=inbound.header_message_id or None,
                     references=inbound.references)
    return Handled(outcome, [(citizen.id, answer)])


def handle_statement_mail(reg, session: Session, inbound: Inbound) -> Handled:
    """``unsubscribe@domain`` with "unsubscribe <notice type>" as the subject: the pipeline's
    List-Unsubscribe mailto for optional statements (delivery/compose.py)."""
    if inbound.verified_kind != "citizen":
        return Handled("ignored-unverified")
    citizen = citizen_account(session, inbound.verified or "")
    if citizen is None:
        return Handled("ignored-not-citizen")
    words = inbound.subject.lower().replace(":", " ").split()
    optional = {t.id: t for t in session.scalars(select(NoticeType).where(NoticeType.mandatory.is_(False)))}
    named = [w for w in words if w in optional]
    action = "subscribe" if set(words) & SUBSCRIBE_WORDS and not set(words) & UNSUBSCRIBE_WORDS else "unsubscribe"
    if not named:
        types = "\n".join(f"  {t.id}  {t.title}" for t in optional.values())
        subject, text, outcome = replies.STATEMENT_HELP_SUBJECT, replies.STATEMENT_HELP_TEXT.format(types=types), "help"
    else:
        nt = optional[named[0]]
        opted_out = session.get(NoticeOptOut, (citizen.id, nt.id)) is not None
        if action == "unsubscribe":
            if not opted_out:
                session.add(NoticeOptOut(account_id=citizen.id, notice_type_id=nt.id))
            subject, text, outcome = replies.STATEMENT_OPTED_OUT_SUBJECT, replies.STATEMENT_OPTED_OUT_TEXT, "opted-out"
        else:
            if opted_out:
                session.execute(delete(NoticeOptOut).where(NoticeOptOut.account_id == citizen.id,
                                                           NoticeOptOut.notice_type_id == nt.id))
            subject, text, outcome = replies.STATEMENT_OPTED_IN_SUBJECT, replies.STATEMENT_OPTED_IN_TEXT, "opted-in"
        fields = {"title": nt.title, "id": nt.id, "address": inbound.address}
        subject, text = subject.format(**fields), text.format(**fields)
    answer = compose(sender=inbound.address, sender_name=reg.config.city.name, to=citizen.address, subject=subject,
                     text=text, domain=reg.domain, in_reply_to=inbound.header_message_id or None,
                     references=inbound.references)
    return Handled(outcome, [(citizen.id, answer)])


def setup_statements(reg) -> str:
    """The ``unsubscribe@domain`` address the pipeline's optional statements point to, made if
    missing (Conflict if another account holds that address)."""
    ensure_statements(reg)
    return statements_address(reg.domain)


def ensure_statements(reg) -> bool:
    """Make the statements address unless it exists; True if made now. `init` and `serve` call it:
    every address a notice names takes mail."""
    return reg.store.create_once(  # several nodes starting at once: see create_once
        lambda s: s.scalar(select(ServiceAccount.account_id).where(ServiceAccount.kind == "statements")) is not None,
        lambda s: create_system_account(s, reg, statements_address(reg.domain), "statements", "optional"))
