"""RFC 5465 NOTIFY: the command as typed values, and its parser.

``NOTIFY NONE`` | ``NOTIFY SET [STATUS] (filter events) ...``; a filter is SELECTED,
SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE mailboxes or MAILBOXES mailboxes; events
are NONE or a list of event names, MessageNew taking a FETCH attribute list under SELECTED.

Broken composition rules are syntax errors (BAD, RFC 5465 5): MessageNew without MessageExpunge
or the reverse, FlagChange or AnnotationChange without both, a mailbox event under SELECTED, a
FETCH list anywhere but after SELECTED's MessageNew, two SELECTED filters. An event name this
server does not know is kept, so that the handler can answer NO [BADEVENT (...)] (RFC 5465 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass

from .codec import astring, encode_mailbox
from .commands import Command, FetchAtt
from .tokens import Atom, ParseError, read_atom, read_mailbox

#: every event of RFC 5465 (and RFC 5464's two), as the RFC spells them
EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName", "SubscriptionChange",
          "MailboxMetadataChange", "ServerMetadataChange")
_CANONICAL = {e.lower(): e for e in EVENTS}
MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"})
SELECTED_FILTERS = ("SELECTED", "SELECTED-DELAYED")
#: filters naming no mailboxes, and those followed by one mailbox or a list of them
PLAIN_FILTERS = ("INBOXES", "PERSONAL", "SUBSCRIBED")
NAMED_FILTERS = ("SUBTREE", "MAILBOXES")


@dataclass(frozen=True)
class EventGroup:
    """One ``(filter [mailboxes] events)`` of NOTIFY SET; ``events`` empty for NONE."""

    filter: str
    events: tuple[str, ...] = ()
    mailboxes: tuple[str, ...] = ()
    #: SELECTED's MessageNew (fetch-att ...): what each new message's FETCH response carries
    fetch: tuple[FetchAtt, ...] = ()

    def wire(self) -> bytes:
        out = [self.filter.encode()]
        if self.filter in NAMED_FILTERS:
            out.append(b"(" + b" ".join(astring(encode_mailbox(m)) for m in self.mailboxes) + b")")
        if not self.events:
            out.append(b"NONE")
        else:
            words = []
            for e in self.events:
                words.append(e.encode())
                if e == "MessageNew" and self.fetch:
                    words.append(b"(" + " ".join(a.request_text() for a in self.fetch).encode() + b")")
            out.append(b"(" + b" ".join(words) + b")")
        return b"(" + b" ".join(out) + b")"


@dataclass(frozen=True)
class Notify(Command):
    """NOTIFY NONE (``groups`` empty, ``none``) or NOTIFY SET [STATUS] groups."""

    none: bool = True
    status: bool = False
    groups: tuple[EventGroup, ...] = ()
    name = "NOTIFY"

    def args_wire(self) -> bytes:
        if self.none:
            return b"NONE"
        return b"SET" + (b" STATUS" if self.status else b"") + b"".join(b" " + g.wire() for g in self.groups)

    @property
    def selected(self) -> EventGroup | None:
        return next((g for g in self.groups if g.filter in SELECTED_FILTERS), None)

    def unsupported(self, supported: frozenset[str]) -> bool:
        return any(e not in supported for g in self.groups for e in g.events)


def _events(tok, selected: bool) -> tuple[tuple[str, ...], tuple[FetchAtt, ...]]:
    from .parser import fetch_atts

    if isinstance(tok, Atom) and tok.text.upper() == "NONE":
        return (), ()
    if not isinstance(tok, list) or not tok:
        raise ParseError("NOTIFY events are NONE or a list")
    events: list[str] = []
    fetch: tuple[FetchAtt, ...] = ()
    for item in tok:
        if isinstance(item, list):
            if not selected or not events or events[-1] != "MessageNew" or fetch:
                raise ParseError("a FETCH list only follows MessageNew under SELECTED")
            fetch = fetch_atts(item)
            continue
        word = read_atom(item)
        event = _CANONICAL.get(word.lower(), word)
        if event not in events:
            events.append(event)
    have = set(events)
    if ("MessageNew" in have) != ("MessageExpunge" in have):
        raise ParseError("MessageNew and MessageExpunge go together")
    if have & {"FlagChange", "AnnotationChange"} and "MessageNew" not in have:
        raise ParseError("FlagChange needs MessageNew and MessageExpunge")
    if selected and have - MESSAGE_EVENTS:
        raise ParseError("only message events under SELECTED")
    return tuple(events), fetch


def _mailboxes(tok) -> tuple[str, ...]:
    """One mailbox, or a list of them (RFC 5465 6.5, 6.6: names, never patterns)."""
    items = tok if isinstance(tok, list) else [tok]
    if not items:
        raise ParseError("an empty mailbox list")
    return tuple(dict.fromkeys(read_mailbox(t) for t in items))


def parse_notify(tag: str, name: str, args: list, limits) -> Notify:
    if not args:
        raise ParseError("NOTIFY needs SET or NONE")
    word = read_atom(args[0]).upper()
    if word == "NONE":
        if len(args) != 1:
            raise ParseError("NOTIFY NONE takes nothing more")
        return Notify(tag)
    if word != "SET":
        raise ParseError("NOTIFY needs SET or NONE")
    rest = args[1:]
    status = bool(rest) and isinstance(rest[0], Atom) and rest[0].text.upper() == "STATUS"
    if status:
        rest = rest[1:]
    if not rest:
        raise ParseError("NOTIFY SET needs an event group")
    groups: list[EventGroup] = []
    for group in rest:
        if not isinstance(group, list) or len(group) < 2:
            raise ParseError("an event group is (filter events)")
        kind = read_atom(group[0]).upper()
        if kind in SELECTED_FILTERS:
            if any(g.filter in SELECTED_FILTERS for g in groups):
                raise ParseError("one SELECTED filter")
            if len(group) != 2:
                raise ParseError("SELECTED takes events only")
            events, fetch = _events(group[1], True)
            groups.append(EventGroup(kind, events, (), fetch))
        elif kind in PLAIN_FILTERS:
            if len(group) != 2:
                raise ParseError(f"{kind} takes events only")
            groups.append(EventGroup(kind, _events(group[1], False)[0]))
        elif kind in NAMED_FILTERS:
            if len(group) != 3:
                raise ParseError(f"{kind} takes mailboxes and events")
            groups.append(EventGroup(kind, _events(group[2], False)[0], _mailboxes(group[1])))
        else:
            raise ParseError("unknown NOTIFY filter")
    return Notify(tag, none=False, status=status, groups=tuple(groups))
