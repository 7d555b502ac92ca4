"""`civicmail bulletin publish TOPIC FILE.md`: every subscriber gets the bulletin exactly once.

The bulletin is identified by (topic, SHA-256 of the file): publishing the same file again (a
rerun after a crash, a double click) only delivers to subscribers who do not have it yet;
``bulletin_delivery`` rows are written in the same transaction as the messages.
"""
from __future__ import annotations

import hashlib
import html as html_mod
from dataclasses import dataclass

from sqlalchemy import func, select

from ..errors import ValidationError
from ..store.api import NewMessage
from ..store.models import Account, Bulletin, BulletinDelivery, Subscription
from . import markdown, replies
from .mail import compose
from .topics import get_topic, one_click_path, sub_address

BATCH = 500
# Per-recipient parts of the header, filled in on the composed bytes (composing once is ~100x
# cheaper than once per subscriber); ASCII tokens the header encoder leaves alone.
RCPT_MARK = "rcpt.placeholder@invalid"
PATH_MARK = "/one-click-path-placeholder"


@dataclass(frozen=True)
class Published:
    bulletin_id: int
    subject: str
    delivered: int
    already: int


def base_url(config) -> str:
    return config.public_url


def publish(reg, topic_id: str, source: str) -> Published:
    """Blocking: store the bulletin in every subscriber's INBOX that does not have it yet."""
    if not source.strip():
        raise ValidationError("the bulletin is empty")
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    subject, body = markdown.title_and_body(source)
    if not subject:
        raise ValidationError("the bulletin needs a title (its first line)")
    with reg.store.session() as s:
        topic, address = get_topic(s, topic_id)
        if topic.notice_type_id:
            raise ValidationError(f"topic {topic_id} is the opt-out list of {topic.notice_type_id}: "
                                  "those statements come from the pipeline")
        bulletin = s.scalar(select(Bulletin).where(Bulletin.topic_id == topic_id, Bulletin.sha256 == digest))
        if bulletin is None:
            bulletin = Bulletin(topic_id=topic_id, sha256=digest, subject=subject[:500])
            s.add(bulletin)
            s.flush()
        bulletin_id = bulletin.id
    template = _compose(reg, topic.id, topic.name, address, subject, body, bulletin_id, digest)
    with reg.store.reader() as s:
        already = s.scalar(select(func.count()).select_from(BulletinDelivery)
                           .where(BulletinDelivery.bulletin_id == bulletin_id)) or 0
    delivered = last = 0
    while True:
        with reg.store.session() as s:
            # a cursor over subscribers (the subscription key's order), skipping those who have
            # it by the delivery key: each batch costs the same however many came before
            pending = s.execute(
                select(Account.id, Account.address).join(Subscription, Subscription.account_id == Account.id)
                .outerjoin(BulletinDelivery, (BulletinDelivery.bulletin_id == bulletin_id)
                           & (BulletinDelivery.account_id == Account.id))
                .where(Subscription.topic_id == topic_id, Subscription.account_id > last, Account.state != "disabled",
                       BulletinDelivery.account_id.is_(None))
                .order_by(Subscription.account_id).limit(BATCH)).all()
            if not pending:
                break
            last = pending[-1][0]
            s.execute(BulletinDelivery.__table__.insert(),
                      [{"bulletin_id": bulletin_id, "account_id": aid} for aid, _ in pending])
            messages = [NewMessage(account_id=aid, raw=_personal(template, reg, topic_id, aid, addr))
                        for aid, addr in pending]
            stored = reg.store.mail.deliver_in(s, messages)
        reg.store.mail.changed(d.folder_id for d in stored)
        delivered += len(pending)
    return Published(bulletin_id, subject, delivered, already)


def _compose(reg, topic_id: str, topic_name: str, address: str, subject: str, body: str, bulletin_id: int,
             digest: str) -> bytes:
    unsubscribe = sub_address(address, "unsubscribe")
    fields = {"topic": topic_name, "unsubscribe": unsubscribe}
    text = markdown.to_text(body) + replies.BULLETIN_FOOTER_TEXT.format(**fields)
    page = markdown.to_html(body).replace(
        "\n</body>", "\n" + replies.BULLETIN_FOOTER_HTML.format(topic=html_mod.escape(topic_name),
                                                               unsubscribe=html_mod.escape(unsubscribe)) + "\n</body>")
    domain = reg.domain
    url = base_url(reg.config) + PATH_MARK
    msg = compose(sender=address, sender_name=topic_name, to=RCPT_MARK, subject=subject, text=text, html=page,
                  domain=domain, auto="auto-generated",
                  extra={"List-Id": f"{topic_name} <{topic_id}.{domain}>",
                         "List-Unsubscribe": f"<{url}>, <mailto:{unsubscribe}>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                         "List-Subscribe": f"<mailto:{sub_address(address, 'subscribe')}>",
                         "Precedence": "bulk"})
    msg.replace_header("Message-ID", f"<bulletin.{bulletin_id}.{digest[:12]}@{domain}>")
    return msg.as_bytes()


def _personal(template: bytes, reg, topic_id: str, account_id: int, address: str) -> bytes:
    end = template.index(b"\r\n\r\n")
    head = template[:end].replace(RCPT_MARK.encode(), address.encode()) \
        .replace(PATH_MARK.encode(), one_click_path(reg, topic_id, account_id).encode())
    return head + template[end:]
