"""Checks every delivered notice must pass: parsed back with the modern API, no defects, and the
same headers and parts as the slow EmailMessage oracle."""
from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from sqlalchemy import select

from mailserver.store.models import Account, Content, Folder, Message, Notice


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def defects(msg: EmailMessage) -> list:
    found = list(msg.defects)
    for part in msg.walk():
        found += list(part.defects)
        for value in part.values():  # header defects are recorded when a header is parsed
            found += list(getattr(value, "defects", ()))
    return found


def same_message(fast: EmailMessage, slow: EmailMessage, ignore: tuple[str, ...] = ()) -> None:
    """Equal decoded headers (names, order-independent) and equal parts (type, charset, content)."""
    def headers(m):
        return sorted((k.lower(), str(v).strip()) for k, v in m.items() if k.lower() not in ignore
                      and k.lower() != "content-type")

    assert headers(fast) == headers(slow), set(headers(fast)) ^ set(headers(slow))
    assert fast.get_content_type() == slow.get_content_type() == "multipart/alternative"
    fp, sp = list(fast.iter_parts()), list(slow.iter_parts())
    assert [p.get_content_type() for p in fp] == [p.get_content_type() for p in sp] == ["text/plain", "text/html"]
    for a, b in zip(fp, sp):
        assert a.get_content_charset() == b.get_content_charset() == "utf-8"
        assert a["Content-Transfer-Encoding"] == b["Content-Transfer-Encoding"]
        assert a.get_content() == b.get_content()


def inbox_messages(store, address: str) -> list[bytes]:
    from mailserver.store import bodies

    with store.reader() as s:
        rows = s.execute(select(Content.raw, Content.blob_key).join(Message, Message.content_id == Content.id)
                         .join(Folder, Folder.id == Message.folder_id)
                         .join(Account, Account.id == Folder.account_id)
                         .where(Account.address == address, Folder.name == "INBOX")
                         .order_by(Message.uid)).all()
    return [bodies.body(store, raw, key) for raw, key in rows]


def count_notices(store) -> int:
    from sqlalchemy import func

    with store.reader() as s:
        return s.scalar(select(func.count(Notice.id)))


def count_inbox_messages(store) -> int:
    from sqlalchemy import func

    with store.reader() as s:
        return s.scalar(select(func.count(Message.id)).join(Folder, Folder.id == Message.folder_id)
                        .where(Folder.name == "INBOX"))
