"""One registration per command (issue 12, section 3): a command registered in one place is
parsed, state-checked, advertised in CAPABILITY and held to its EXPUNGE rule, over a socket;
replies are typed, so a status cannot disagree with its text."""
from __future__ import annotations

import pytest

from mailserver.imap import registry
from mailserver.imap import responses as R
from mailserver.imap.commands import Simple
from mailserver.imap.parser import no_args
from mailserver.imap.registry import SEL, command
from mailserver.store import mailboxes as mb
from mailserver.store.mailstore import deliver
from mailserver.store.models.mail import DELETED

#: what CAPABILITY lists on a development loopback connection before and after login
#: AUTH=OAUTHBEARER and AUTH=XOAUTH2: the OpenID Connect provider's tokens, offered where PLAIN is
BEFORE_LOGIN = {"IMAP4rev1", "IMAP4rev2", "LITERAL+", "STARTTLS", "AUTH=PLAIN", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2",
                "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"}
AFTER_LOGIN = {"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE",
               "UNSELECT",
               "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "APPENDLIMIT=52428800", "QUOTA",
               "QUOTA=RES-STORAGE", "CONDSTORE", "QRESYNC", "ESEARCH", "STATUS=SIZE", "COMPRESS=DEFLATE",
               "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
               "MULTIAPPEND", "BINARY", "PREVIEW", "OBJECTID", "SAVEDATE", "CREATE-SPECIAL-USE", "CATENATE",
               "UTF8=ACCEPT", "METADATA", "CONTEXT=SEARCH", "CONTEXT=SORT", "NOTIFY", "SEARCHRES", "PARTIAL",
               "UNAUTHENTICATE"}


@pytest.fixture
def xprobe(server):
    """XPROBE, a command of the test's own: selected state, capability X-PROBE, EXPUNGE withheld."""
    calls = []

    @command("XPROBE", SEL, no_args, cap="X-PROBE", expunge=False)
    async def do_xprobe(s, cmd: Simple) -> R.Reply:
        calls.append(cmd)
        s.pending = True  # look at other sessions' changes, as NOOP does
        return R.OK_DONE

    try:
        yield calls
    finally:
        if "XPROBE" in registry.COMMANDS:
            registry.unregister("XPROBE")


def _caps(raw) -> set[str]:
    return set(raw.command("c", "CAPABILITY")[0].decode().split()[2:])


def test_capability_lists_are_derived_from_the_registrations(server):
    raw = server.raw()  # logged in
    try:
        assert _caps(raw) == AFTER_LOGIN
    finally:
        raw.close()
    from .conftest import Raw

    anonymous = Raw(server.port)
    try:
        assert anonymous.greeting.startswith(b"* OK [CAPABILITY ")
        assert _caps(anonymous) == BEFORE_LOGIN
    finally:
        anonymous.close()


def test_a_registered_command_is_parsed_advertised_and_holds_expunge_back(server, xprobe):
    for n in range(3):
        deliver(server.ctx.store, f"Subject: {n}\r\n\r\nbody\r\n".encode(), [server.users[0][1]])
    raw = server.raw()
    try:
        assert _caps(raw) == AFTER_LOGIN | {"X-PROBE"}
        assert raw.command("a", "XPROBE")[-1].startswith(b"a BAD")  # not in the authenticated state
        assert not xprobe
        assert raw.command("s", "SELECT INBOX")[-1].startswith(b"s OK")
        assert raw.command("b", "XPROBE extra")[-1].startswith(b"b BAD")  # its parser takes no arguments
        folder = mb.find_folder(server.ctx.store, server.users[0][1], "INBOX")
        mb.store_flags(server.ctx.store, server.users[0][1], folder.id, [(2, 2)], "+", DELETED, ())
        mb.expunge(server.ctx.store, server.users[0][1], folder.id)  # another writer expunges message 2
        lines = raw.command("x", "XPROBE")
        assert lines[-1] == b"x OK completed\r\n" and len(xprobe) == 1
        assert not any(b"EXPUNGE" in line for line in lines), lines  # withheld, as during FETCH
        assert b"* 2 EXPUNGE\r\n" in raw.command("n", "NOOP")  # told at the next command that may
        registry.unregister("XPROBE")
        assert _caps(raw) == AFTER_LOGIN
        assert raw.command("g", "XPROBE")[-1].startswith(b"g BAD")
    finally:
        raw.close()


def test_a_name_or_a_capability_registered_twice_is_an_error():
    registry.load()
    with pytest.raises(ValueError, match="registered twice"):
        command("FETCH", SEL, no_args, expunge=False)(lambda s, c: None)
    with pytest.raises(ValueError, match="two ways"):
        command("XOTHER", SEL, no_args, cap=registry.Cap("CONDSTORE", registry.ANY), expunge=True)(lambda s, c: None)
    assert "XOTHER" not in registry.COMMANDS


def test_replies_are_typed():
    assert R.NO_NONEXISTENT.tagged("a1") == b"a1 NO [NONEXISTENT] no such mailbox\r\n"
    assert R.OK_DONE.with_code("APPENDUID 7 3").tagged("t") == b"t OK [APPENDUID 7 3] completed\r\n"
    assert R.OK_CLOSED.line() == "OK [CLOSED] previous mailbox closed"
    with pytest.raises(ValueError):
        R.Reply("MAYBE", "not a status")
