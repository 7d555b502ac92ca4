"""The IMAP commands, each registered once with everything the rest of the server derives from it.

A handler module registers a command with its name, the states it is allowed in, its parser,
the capabilities it implements and whether untagged EXPUNGE may be sent while it is answered::

    @command("MOVE", SEL, P.copy, cap="MOVE", expunge=True)
    @command("UID MOVE", SEL, P.copy, expunge=True)
    async def do_move(session, cmd) -> Reply: ...

From the registry come the parser's dispatch (``parser.parse``), the state check and the
EXPUNGE rule (``session.execute``), and the CAPABILITY list (``capabilities``): adding a command
is its registration, in a module named in ``HANDLER_MODULES``. A name registered twice, or one
capability defined two ways, is an error at import, not a silent gap.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Union

if TYPE_CHECKING:
    from ..config import IMAPConfig
    from .commands import Command
    from .responses import Reply

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
ANY = frozenset({NOT_AUTH, AUTH, SELECTED})
AUTHED = frozenset({AUTH, SELECTED})
SEL = frozenset({SELECTED})
PRELOGIN = frozenset({NOT_AUTH})

#: the modules whose import registers the commands (in this order: it orders CAPABILITY)
HANDLER_MODULES = ("handlers_auth", "handlers_mailbox", "handlers_message", "handlers_sort", "handlers_metadata",
                   "handlers_notify")

#: ``parse(tag, name, args, limits)``: the tokens after the command name (after "UID FETCH" for
#: UID FETCH) to the typed command; raises tokens.ParseError on bad input
Parse = Callable[[str, str, list, "IMAPConfig"], "Command"]
Handler = Callable[[Any, Any], Awaitable["Reply"]]


@dataclass(frozen=True)
class Cap:
    """A capability (RFC 3501 7.2.1) and when it is listed."""

    name: str
    #: the states in which it is listed (the list may change at login, RFC 3501 6.2.3)
    states: frozenset[str] = AUTHED
    #: ``show(session)``: the text to list for this session, or None to leave it out
    #: (STARTTLS only while TLS can start; APPENDLIMIT=n with the configured n)
    show: Callable[[Any], str | None] | None = None

    def text(self, session) -> str | None:
        if session.state not in self.states:
            return None
        return self.name if self.show is None else self.show(session)


@dataclass(frozen=True)
class Spec:
    """One registered command."""

    #: as the client sends it, upper-case: "FETCH", "UID FETCH"
    name: str
    states: frozenset[str]
    parse: Parse
    handler: Handler
    #: capabilities this command implements (listed while any registered command has them)
    caps: tuple[Cap, ...]
    #: whether untagged EXPUNGE may be sent while it is answered (RFC 3501 7.4.1: not during
    #: FETCH, STORE or SEARCH, whose responses carry sequence numbers; their UID forms may)
    expunge: bool


COMMANDS: dict[str, Spec] = {}
#: capabilities of the protocol engine itself (RFC 7888 literals in the framer), listed first
#: and IMAP4rev2 (RFC 9051), which a session chooses with ENABLE IMAP4rev2 (handlers_auth)
_BASE_CAPS = (Cap("IMAP4rev1", ANY), Cap("IMAP4rev2", ANY), Cap("LITERAL+", ANY))
#: every capability, in order of registration
_CAPS: dict[str, Cap] = {c.name: c for c in _BASE_CAPS}

CapLike = Union[str, Cap]


def command(name: str, states: frozenset[str], parse: Parse, *, expunge: bool,
            cap: CapLike | tuple[CapLike, ...] = ()):
    """Register the decorated handler as ``name`` (see ``Spec``). ``cap``: capability names
    (listed after login) or ``Cap`` values; ``expunge`` has no default, so that no command
    forgets to say."""
    caps = tuple(c if isinstance(c, Cap) else Cap(c) for c in ((cap,) if isinstance(cap, (str, Cap)) else cap))

    def register(fn: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"IMAP command {name} registered twice")
        for c in caps:
            known = _CAPS.setdefault(c.name, c)
            if known != c:
                raise ValueError(f"capability {c.name} defined two ways")
        COMMANDS[name] = Spec(name, states, parse, fn, caps, expunge)
        return fn
    return register


def unregister(name: str) -> None:
    """Remove a command, and the capabilities that no other command implements (for tests
    that register one of their own)."""
    spec = COMMANDS.pop(name)
    kept = {c.name for other in COMMANDS.values() for c in other.caps} | {c.name for c in _BASE_CAPS}
    for c in spec.caps:
        if c.name not in kept:
            del _CAPS[c.name]


_loaded = False


def load() -> dict[str, Spec]:
    """The registry, with every handler module imported."""
    global _loaded
    if not _loaded:
        for module in HANDLER_MODULES:
            importlib.import_module(f"{__package__}.{module}")
        _loaded = True
    return COMMANDS


def capabilities(session) -> str:
    """The CAPABILITY list for ``session`` now (its state, TLS, whether it may log in)."""
    return " ".join(t for t in (c.text(session) for c in _CAPS.values()) if t)
