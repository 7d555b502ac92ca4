"""RFC 4469 CATENATE: a message joined from literals and from IMAP URLs (RFC 5092) of messages
and parts the same user already holds, so a client forwards an attachment without downloading it.

A URL part is the same bytes as ``BODY[section]<partial>`` of that message (``mime.fetch_section``,
the FETCH code path). Only URLs to this user's own folders resolve: another user, a folder or
message that does not exist, a UIDVALIDITY that is not the folder's, URLAUTH: ``BadUrl``
(NO [BADURL url]), and nothing is appended.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

from .. import mime
from ..errors import BadUrl, MessageTooBig, NotFound
from ..mime.sections import find_part
from ..mime.structure import parse_message
from .codec import canonical_mailbox
from .commands import CatPart, FetchAtt
from .parser import ParseError, parse_fetch_att

#: imap://[user[;AUTH=mech]@]host[:port], then the path; or a path alone: "/mailbox[;UIDVALIDITY=n]/",
#: or nothing (relative to the selected mailbox); then ";UID=n[/;SECTION=s][/;PARTIAL=o[.n]]"
_URL = re.compile(
    r"(?:imap://(?P<server>[^/]*))?"
    r"(?:/(?P<mailbox>[^;]*?)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?/)?"
    r";UID=(?P<uid>[1-9][0-9]{0,9})"
    r"(?:/;SECTION=(?P<section>[^/;]+))?"
    r"(?:/;PARTIAL=(?P<start>[0-9]{1,10})(?:\.(?P<count>[1-9][0-9]{0,9}))?)?\Z", re.IGNORECASE)
#: what BADURL may echo as it is (RFC 5092 characters, no "]" that would end the response code)
_SAFE = "/;=:@.,-_~!$&'()*+%"


@dataclass(frozen=True)
class MessageUrl:
    """A parsed IMAP URL to a message or part: ``mailbox`` None is the selected one."""

    user: str | None
    mailbox: str | None
    uidvalidity: int | None
    uid: int
    section: FetchAtt


def echo(url: str) -> str:
    """``url`` as BADURL repeats it: %-escaped where it is not a URL's text."""
    return quote(url, safe=_SAFE)


def parse_url(url: str) -> MessageUrl:
    """The parts of ``url``; BadUrl if it is not an IMAP URL to a message (or names URLAUTH,
    anonymous access, or a section FETCH would not take)."""
    m = _URL.match(url)
    if not m:
        raise BadUrl(echo(url))
    user = None
    if m.group("server") is not None:
        userinfo, at, _host = m.group("server").rpartition("@")
        user = unquote(re.split(";AUTH=", userinfo, flags=re.IGNORECASE)[0]) if at else ""
    section = unquote(m.group("section") or "")
    try:
        att = parse_fetch_att(f"BODY.PEEK[{section}]")
    except (ParseError, ValueError):
        raise BadUrl(echo(url)) from None
    if m.group("start") is not None:  # RFC 5092: no length is to the end
        att = replace(att, partial=(int(m.group("start")), int(m.group("count") or sys.maxsize)))
    mailbox = m.group("mailbox")
    return MessageUrl(user, None if mailbox is None else canonical_mailbox(unquote(mailbox)),
                      int(m.group("uidvalidity")) if m.group("uidvalidity") else None, int(m.group("uid")), att)


def _resolve(store, account_id: int, login: str, selected: str | None, url: str) -> bytes:
    parsed = parse_url(url)
    if parsed.user is not None and parsed.user.casefold() != login.casefold():
        raise BadUrl(echo(url))  # another user's, or anonymous: never this user's to join
    name = parsed.mailbox if parsed.mailbox is not None else selected
    if not name:
        raise BadUrl(echo(url))  # relative to a selected mailbox, and none is
    try:
        folder = store.find_folder(account_id, name)
    except NotFound:
        raise BadUrl(echo(url)) from None
    if parsed.uidvalidity is not None and parsed.uidvalidity != folder.uidvalidity:
        raise BadUrl(echo(url))
    raw = store.message_raw(account_id, folder.id, parsed.uid)
    if not raw:
        raise BadUrl(echo(url))
    att = parsed.section
    if att.part and find_part(parse_message(raw), att.part) is None:
        raise BadUrl(echo(url))  # RFC 4469 5: a part that does not exist is a bad URL
    data = mime.fetch_section(raw, att.part, att.text, att.fields)
    if att.partial:
        start, count = att.partial
        data = data[start:start + count]
    return data


def assemble(store, account_id: int, login: str, selected: str | None, parts: tuple[CatPart, ...],
             limit: int) -> bytes:
    """The message the parts make, in order (in a thread: URLs read the store and parse
    messages). MessageTooBig as soon as it would pass ``limit`` bytes, so no more than that
    and one stored message is held; BadUrl for the first URL that does not resolve."""
    out = bytearray()
    for part in parts:
        data = part.text if part.url is None else _resolve(store, account_id, login, selected, part.url)
        assert data is not None
        if len(out) + len(data) > limit:
            raise MessageTooBig("CATENATE message too large")
        out += data
    return bytes(out)
