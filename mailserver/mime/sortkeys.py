"""What SORT (RFC 5256, RFC 5957) and THREAD (RFC 5256) read of a message, computed once at
delivery with the rest of its cached structure, so that sorting or threading a folder reads a
few short columns instead of parsing every header.

Strings are stored as their i;unicode-casemap keys (``collation.casemap``): SORT compares them
as they are, THREAD merges threads whose base subjects are equal keys.
"""
from __future__ import annotations

import calendar
import email.utils
import re
from typing import NamedTuple

from .collation import casemap
from .envelope import MISSING_HOST, Address, addresses
from .headers import cached_if_short, decode_words, decoded_value, text_of

#: characters of a subject read for its base subject, and kept of every stored key: sorting
#: and threading by the first 256 characters is what a reader can tell apart; the bound keeps a
#: hostile megabyte Subject out of the index
MAX_INPUT_CHARS = 1024
MAX_KEY_CHARS = 256
#: message ids kept of a References field: the first (the thread's root) and the last ones
#: (the nearest ancestors), as RFC 5322 3.6.4 suggests trimming it
MAX_REFERENCES = 100
#: a longer message id is not one (RFC 5322 puts no limit; RFC 5321 lines do)
MAX_MSGID_CHARS = 250
MSG_ID = re.compile(r"<([^<>\s]{1,%d})>" % MAX_MSGID_CHARS)

#: the columns of the content_sort table these fields are stored in, in SortFields order
COLUMNS = ("sort_subject", "sort_reply", "sort_date", "sort_from", "sort_to", "sort_cc", "display_from",
           "display_to", "message_id", "thread_refs")


class SortFields(NamedTuple):
    #: the base subject (RFC 5256 2.1), casemapped ("" when there is none)
    subject: str
    #: a reply or forward: base-subject extraction removed a "Re:", "Fwd:", "(fwd)" or "[fwd: ]"
    reply: bool
    #: the Date field in seconds since the epoch (RFC 5256 2.2), None if absent or unreadable
    #: (SORT then uses the arrival time)
    date: int | None
    #: addr-mailbox of the first From / To / Cc address, casemapped ("" when there is none)
    from_: str
    to: str
    cc: str
    #: RFC 5957: the display name of the first From / To address, else its address, casemapped
    display_from: str
    display_to: str
    #: the Message-ID without its angle brackets, None if absent or not a message id
    message_id: str | None
    #: References (else the first id of In-Reply-To) as ids separated by spaces, oldest first
    thread_refs: str


EMPTY = SortFields("", False, None, "", "", "", "", "", None, "")
WSP = " \t"


# -- base subject (RFC 5256 2.1) ------------------------------------------------------------------

def _skip_wsp(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in WSP:
        i += 1
    return i


def _blob_end(s: str, i: int) -> int:
    """The end of the subj-blob ("[" *BLOBCHAR "]" *WSP) at s[i], or -1."""
    if i >= len(s) or s[i] != "[":
        return -1
    close = s.find("]", i + 1)
    if close < 0 or s.find("[", i + 1, close) >= 0:
        return -1
    return _skip_wsp(s, close + 1)


def _refwd_end(s: str, i: int) -> int:
    """The end of the subj-refwd (("re" / ("fw" ["d"])) *WSP [subj-blob] ":") at s[i], or -1."""
    if s.startswith("RE", i):
        i += 2
    elif s.startswith("FWD", i):
        i += 3
    elif s.startswith("FW", i):
        i += 2
    else:
        return -1
    i = _skip_wsp(s, i)
    blob = _blob_end(s, i)
    if blob >= 0:
        i = blob
    return i + 1 if s.startswith(":", i) else -1


def _leaders_end(s: str, i: int) -> int:
    """Step (3): past every subj-leader ((*subj-blob subj-refwd) / WSP) at s[i]."""
    while True:
        if i < len(s) and s[i] in WSP:
            i += 1
            continue
        j = i
        while True:
            blob = _blob_end(s, j)
            if blob < 0:
                break
            j = blob
        end = _refwd_end(s, j)
        if end < 0:
            return i
        i = end


def _strip_trailers(s: str) -> tuple[str, bool]:
    """Step (2): every trailing subj-trailer ("(fwd)" / WSP) removed."""
    fwd = False
    while True:
        if s.endswith("(FWD)"):
            s, fwd = s[:-5], True
        elif s.endswith((" ", "\t")):
            s = s.rstrip(WSP)
        else:
            return s, fwd


def base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 2.1: the base subject of a decoded Subject value, casemapped, and whether a
    reply or forward marker was removed to find it."""
    s = casemap(" ".join(subject[:MAX_INPUT_CHARS].split()))  # (1) blanks and folding: one space
    reply = False
    while True:
        s, fwd = _strip_trailers(s)  # (2)
        reply = reply or fwd
        i = 0
        while True:  # (5): repeat (3) and (4) until nothing more goes
            j = _leaders_end(s, i)  # (3)
            # leaders are blanks, or blobs ending in a subj-refwd: anything but blanks is a reply
            reply = reply or bool(s[i:j].strip(WSP))
            blob = _blob_end(s, j)  # (4): a leading blob goes if something is left after it
            if blob >= 0 and blob < len(s):
                j = blob
            if j == i:
                break
            i = j
        s = s[i:]
        if s.startswith("[FWD:") and s.endswith("]"):  # (6)
            s, reply = s[5:-1], True
            continue
        return s[:MAX_KEY_CHARS], reply


# -- the fields --------------------------------------------------------------------------------------

@cached_if_short(maxsize=1024, limit=128)  # a drop's notices share one Date value
def sent_date(value: str | None) -> int | None:
    """RFC 5256 2.2: a Date value in seconds since the epoch (UTC), None if unreadable."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        when = calendar.timegm(parsed[:6]) - (parsed[9] or 0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return when if when and abs(when) < 1 << 53 else None  # Dovecot too reads 0 as no date


def _first(found: list[Address] | None) -> Address | None:
    return found[0] if found else None


def key(text: str) -> str:
    """The stored key of a string: casemapped, at most MAX_KEY_CHARS (before and after: a code
    point may decompose into several)."""
    return casemap(text[:MAX_KEY_CHARS])[:MAX_KEY_CHARS]


def _mailbox(address: Address | None) -> str:
    """[IMAP] addr-mailbox of the address (a group's name for a group marker)."""
    if address is None or not address.mailbox:
        return ""
    return key(decode_words(address.mailbox))


def _display(address: Address | None) -> str:
    """RFC 5957: the display name if there is one, else the address (mailbox@host)."""
    if address is None:
        return ""
    name = " ".join(decode_words(address.name).split()) if address.name else ""
    if not name:
        name = address.mailbox or ""
        if name and address.host and address.host != MISSING_HOST:
            name = f"{name}@{address.host}"
    return key(name)


def message_ids(value: str) -> list[str]:
    return MSG_ID.findall(value)


def thread_refs(references: str | None, in_reply_to: str | None) -> str:
    """RFC 5256 REFERENCES step 1: the References ids, or if there are none the first id of
    In-Reply-To; at most MAX_REFERENCES (the first and the latest)."""
    ids = message_ids(references) if references else []
    if not ids and in_reply_to:
        ids = message_ids(in_reply_to)[:1]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    return " ".join(ids)


def sort_fields(values: dict[str, bytes], cache: dict) -> SortFields:
    """The SortFields of a message from its header (``Part.values`` and ``Part.address_cache``)."""
    subject = values.get("subject")
    base, reply = base_subject(decoded_value(subject)) if subject is not None else ("", False)
    date = values.get("date")
    msgid = values.get("message-id")
    found = message_ids(text_of(msgid)) if msgid is not None else []
    refs, irt = values.get("references"), values.get("in-reply-to")
    first_from = _first(addresses(values, cache, "from"))
    first_to = _first(addresses(values, cache, "to"))
    return SortFields(
        subject=base, reply=reply, date=sent_date(text_of(date)) if date is not None else None,
        from_=_mailbox(first_from), to=_mailbox(first_to), cc=_mailbox(_first(addresses(values, cache, "cc"))),
        display_from=_display(first_from), display_to=_display(first_to),
        message_id=found[0] if found else None,
        thread_refs=thread_refs(text_of(refs) if refs is not None else None,
                                text_of(irt) if irt is not None else None))
