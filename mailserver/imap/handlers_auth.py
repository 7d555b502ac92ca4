"""Commands of any state and of logging in: CAPABILITY, NOOP, LOGOUT, STARTTLS, LOGIN,
AUTHENTICATE PLAIN (SASL-IR) and EXTERNAL (a city client certificate), ID, ENABLE, NAMESPACE,
IDLE, CHECK, COMPRESS (RFC 4978)."""
from __future__ import annotations

import asyncio
import base64
import logging

from ..errors import AuthenticationFailed, Throttled
from ..identity.sasl import BEARER_MECHANISMS, AuthorizationRefused, bearer_error, split_bearer, split_plain
from ..registry.auth import record_login
from ..store.mailboxes import serialized_writes
from ..store.outage import is_outage
from . import parser as P
from . import responses as R
from .commands import Authenticate, Command, Compress, Enable, Id, Login
from .framing import Closed
from .parser import ParseError, decode_sasl
from .registry import ANY, AUTHED, PRELOGIN, SEL, Cap, command
from .responses import Reply
from .session import LOGOUT, AlreadyAnswered, ImapSession, Logout

log = logging.getLogger("civicmail.imap")

#: listed before login only while TLS can start on this connection
STARTTLS = Cap("STARTTLS", PRELOGIN, lambda s: "STARTTLS" if s.service.tls_available and not s.tls_active else None)
#: before login: AUTH=PLAIN where a password may be sent, LOGINDISABLED (RFC 3501 6.2.3) elsewhere
AUTH_PLAIN = Cap("AUTH=PLAIN", PRELOGIN, lambda s: "AUTH=PLAIN" if s.login_allowed else None)
LOGINDISABLED = Cap("LOGINDISABLED", PRELOGIN, lambda s: None if s.login_allowed else "LOGINDISABLED")
#: the OpenID Connect provider's access tokens (RFC 7628, and Google's XOAUTH2), where PLAIN is
AUTH_BEARER = tuple(Cap(f"AUTH={m}", PRELOGIN, lambda s, m=m: f"AUTH={m}" if s.login_allowed and
                        s.ctx.config.oidc.enabled else None) for m in BEARER_MECHANISMS)


def client_certificate(s: ImapSession) -> bytes | None:
    """The DER of the certificate the client presented in the TLS handshake, which TLS verified
    up to the city root (only IMAPS asks for one: ServerContext.tls_context); else None."""
    if not s.tls_active:
        return None
    ssl_object = s.writer.get_extra_info("ssl_object")
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


#: RFC 4422 appendix A, listed only on a TLS connection with a verified client certificate
AUTH_EXTERNAL = Cap("AUTH=EXTERNAL", PRELOGIN, lambda s: "AUTH=EXTERNAL" if client_certificate(s) else None)


@command("CAPABILITY", ANY, P.no_args, expunge=True)
async def do_capability(s: ImapSession, cmd: Command) -> Reply:
    await s.untagged(f"CAPABILITY {s.capability_text()}")
    return R.OK_DONE


@command("NOOP", ANY, P.no_args, expunge=True)
async def do_noop(s: ImapSession, cmd: Command) -> Reply:
    s.pending = True  # NOOP is how clients poll: always look (RFC 3501 6.1.2)
    return R.OK_DONE


@command("CHECK", SEL, P.no_args, expunge=True)
async def do_check(s: ImapSession, cmd: Command) -> Reply:
    s.pending = True
    return R.OK_DONE


@command("LOGOUT", ANY, P.no_args, expunge=True)
async def do_logout(s: ImapSession, cmd: Command) -> Reply:
    raise Logout()


@command("STARTTLS", PRELOGIN, P.no_args, cap=STARTTLS, expunge=True)
async def do_starttls(s: ImapSession, cmd: Command) -> Reply:
    if s.tls_active or not s.service.tls_available:
        return R.BAD_NOT_TLS
    # The tagged OK goes out in clear, then the handshake; nothing buffered before it survives
    # (RFC 3501 6.2.1: the client must discard what it learned before TLS).
    await s.send(R.OK_TLS.tagged(cmd.tag))
    await s.flush()
    # Anything the client sent after STARTTLS in clear would be read as if it came over TLS
    # (command injection, CVE-2011-0411 in other servers): such a client is disconnected.
    if getattr(s.reader, "_buffer", b""):
        raise Closed()
    await s.writer.start_tls(s.service.tls_context())
    s.tls_active = True
    raise AlreadyAnswered()


@command("COMPRESS", AUTHED, P.compress, cap="COMPRESS=DEFLATE", expunge=True)
async def do_compress(s: ImapSession, cmd: Compress) -> Reply:
    """RFC 4978: the tagged OK goes out uncompressed, then both directions are raw DEFLATE."""
    if s.compressed:
        return R.NO_COMPRESSION_ACTIVE
    if cmd.mechanism != "DEFLATE":
        return R.BAD_COMPRESS_MECHANISM
    await s.send(R.OK_COMPRESS.tagged(cmd.tag))
    await s.flush()
    # The client must wait for the OK before it compresses (RFC 4978 3); bytes already here
    # could be either: as with STARTTLS, such a client is disconnected (the BYE compressed,
    # as everything after the OK is).
    pipelined = bool(getattr(s.reader, "_buffer", b""))
    s.start_compression()
    if pipelined:
        await s.untagged(f"BYE {R.BYE_COMPRESS_PIPELINED}")
        s.state = LOGOUT
    raise AlreadyAnswered()


async def _login(s: ImapSession, login: str, password: str, token: bool = False) -> Reply:
    """Log in with a password, or (``token``) an access token for the address ``login`` names."""
    if not s.login_allowed:
        return R.NO_LOGIN_DISABLED
    try:
        if token:
            principal = await s.ctx.login_bearer(s.peer_ip, login, password, s.service.name)
        else:
            principal = await s.ctx.login(s.peer_ip, login, password, s.service.name)
    except Throttled:
        return R.NO_THROTTLED
    except AuthenticationFailed:
        return R.NO_AUTH_FAILED
    return await _logged_in(s, principal)


async def _logged_in(s: ImapSession, principal) -> Reply:
    if principal.account_id is None:
        return R.NO_NO_MAILBOX
    if not await s.service.admit(s, principal.account_id):
        return R.NO_TOO_MANY
    s.authenticated(principal, principal.account_id)
    if s.service.should_record_login(principal.account_id):
        await s.ctx.run(_record_login, s.ctx.registry, principal.account_id)
    return R.OK_LOGIN.with_code(f"CAPABILITY {s.capability_text()}")


def _record_login(registry, account_id: int) -> None:
    with serialized_writes(registry.store):
        record_login(registry, account_id)


@command("LOGIN", PRELOGIN, P.login, cap=LOGINDISABLED, expunge=True)
async def do_login(s: ImapSession, cmd: Login) -> Reply:
    return await _login(s, cmd.user, cmd.password)


async def _external(s: ImapSession, cmd: Authenticate) -> Reply:
    """RFC 4422 appendix A: the identity is the TLS client certificate's; the client's message
    is an authorization identity, empty or the certificate's own mailbox."""
    der = client_certificate(s)
    if der is None:
        return R.NO_MECHANISM
    text = await _client_response(s, cmd)
    if isinstance(text, Reply):
        return text
    try:
        authzid = decode_sasl(text).decode("utf-8")
    except (ParseError, ValueError):
        return R.BAD_SYNTAX
    try:
        principal = await s.ctx.certificate_login(s.peer_ip, der, authzid, s.service.name)
    except AuthenticationFailed:
        return R.NO_AUTH_FAILED
    return await _logged_in(s, principal)


@command("AUTHENTICATE", PRELOGIN, P.authenticate,
         cap=(Cap("SASL-IR", ANY), AUTH_PLAIN, AUTH_EXTERNAL) + AUTH_BEARER, expunge=True)
async def do_authenticate(s: ImapSession, cmd: Authenticate) -> Reply:
    if cmd.mechanism == "EXTERNAL":
        return await _external(s, cmd)
    if cmd.mechanism in BEARER_MECHANISMS and s.ctx.config.oidc.enabled:
        return await _authenticate_bearer(s, cmd)
    if cmd.mechanism != "PLAIN":
        return R.NO_MECHANISM
    text = await _client_response(s, cmd)
    if isinstance(text, Reply):
        return text
    try:
        authcid, password = split_plain(decode_sasl(text))
    except AuthorizationRefused:
        log.info("auth-refused (authorization identity) client=%s port=%s", s.peer_ip, s.service.name)
        return R.NO_AUTH_FAILED
    except (ParseError, ValueError):
        return R.BAD_SYNTAX
    return await _login(s, authcid, password)


async def _client_response(s: ImapSession, cmd: Authenticate) -> str | Reply:
    """The client's SASL message (base64): the initial response (SASL-IR), or the line after a
    ``+``; a Reply where there is none to check (login not allowed here, or cancelled)."""
    if not s.login_allowed:
        return R.NO_LOGIN_DISABLED
    text = cmd.initial
    if text is None:
        await s.continuation(R.CONT_AUTH)
        text = (await s.read_client_line(s.read_timeout())).decode("ascii", "replace")
    return R.BAD_AUTH_CANCELLED if text == "*" else text


async def _authenticate_bearer(s: ImapSession, cmd: Authenticate) -> Reply:
    """OAUTHBEARER / XOAUTH2: on failure the error challenge of RFC 7628 3.2.2 first, which the
    client acknowledges (with ^A), then NO."""
    text = await _client_response(s, cmd)
    if isinstance(text, Reply):
        return text
    try:
        login, token = split_bearer(cmd.mechanism, decode_sasl(text))
    except (ParseError, ValueError):
        return R.BAD_SYNTAX
    reply = await _login(s, login, token, token=True)
    if reply is R.NO_AUTH_FAILED:
        await s.continuation(base64.b64encode(bearer_error(s.ctx.config.public_url)).decode())
        await s.read_client_line(s.read_timeout())  # the client's ^A (or anything): then the failure
    return reply


@command("ID", ANY, P.id_, cap=Cap("ID", ANY), expunge=True)
async def do_id(s: ImapSession, cmd: Id) -> Reply:
    await s.untagged(f"ID {R.ID_RESPONSE}")
    return R.OK_DONE


#: RFC 6855: UTF-8 mailbox names and quoted strings for a session that enables it
UTF8_ACCEPT = "UTF8=ACCEPT"
IMAP4REV2 = "IMAP4rev2"


@command("ENABLE", AUTHED, P.enable, cap=(Cap("ENABLE", ANY), UTF8_ACCEPT), expunge=True)
async def do_enable(s: ImapSession, cmd: Enable) -> Reply:
    # RFC 5161: ENABLED lists what the client asked for and we have: CONDSTORE and QRESYNC
    # (RFC 7162; QRESYNC implies CONDSTORE), and UTF8=ACCEPT (RFC 6855 3: only in the
    # authenticated state, so a mailbox already selected is never named two ways).
    enabled = []
    for cap in cmd.capabilities:
        if cap in enabled:
            continue
        if cap in ("CONDSTORE", "QRESYNC"):
            enabled.append(cap)
            s.qresync = s.qresync or cap == "QRESYNC"
        elif cap == UTF8_ACCEPT and s.selected is None:
            enabled.append(cap)
            s.utf8 = True
        elif cap == IMAP4REV2.upper() and s.selected is None:
            # RFC 9051: from now on the session speaks IMAP4rev2, whose mailbox names are UTF-8
            # (5.1); like UTF8=ACCEPT, only while no mailbox is selected
            enabled.append(IMAP4REV2)  # as the capability list spells it
            s.rev2 = s.utf8 = True
    await s.untagged(" ".join(["ENABLED"] + enabled))
    if any(cap not in (UTF8_ACCEPT, IMAP4REV2) for cap in enabled):
        await s.enable_condstore()
    return R.OK_DONE


@command("UNAUTHENTICATE", AUTHED, P.no_args, cap="UNAUTHENTICATE", expunge=True)
async def do_unauthenticate(s: ImapSession, cmd: Command) -> Reply:
    """RFC 8437: log out of the account but keep the connection (its TLS and COMPRESS), for a
    client that logs in again, maybe as someone else."""
    if not s.service.readmit_preauth(s):
        return R.NO_PREAUTH_FULL
    s.unauthenticated()
    return R.OK_DONE


@command("NAMESPACE", AUTHED, P.no_args, cap=Cap("NAMESPACE", ANY), expunge=True)
async def do_namespace(s: ImapSession, cmd: Command) -> Reply:
    await s.untagged(f"NAMESPACE {R.NAMESPACE}")
    return R.OK_DONE


@command("IDLE", AUTHED, P.no_args, cap=Cap("IDLE", ANY), expunge=True)
async def do_idle(s: ImapSession, cmd: Command) -> Reply:
    """RFC 2177: changes are sent as they happen until the client says DONE. A client silent
    for imap.idle_timeout is logged out, as outside IDLE (RFC 2177: the server MAY; clients
    re-issue IDLE at least every 29 minutes)."""
    if s.wake is None:
        s.wake = asyncio.Event()
    await s.continuation(R.CONT_IDLING)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s.read_timeout()
    reading = asyncio.ensure_future(s.read_client_line())
    try:
        while True:
            if s.ctx.outage.active:  # woken by the start of an outage (service.py), or idling in one
                await s.ctx.run_store(s.ctx.store.ping)
            await s.push(idle=True)
            await s.flush()
            waiter = asyncio.ensure_future(s.wake.wait())
            done, _ = await asyncio.wait({reading, waiter}, timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                waiter.cancel()
                await s.timed_out()
            if reading in done:
                waiter.cancel()
                line = reading.result()
                if line.upper() != b"DONE":
                    return R.BAD_IDLE
                return R.OK_IDLE_DONE
            s.wake.clear()
    except Closed:
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        # The store is gone: a client told so reconnects later, rather than idling on a session
        # that can tell it nothing (its LOGIN then hears NO [UNAVAILABLE] until the store is back).
        await s.untagged(f"BYE {R.BYE_UNAVAILABLE}")
        s.state = LOGOUT
        raise AlreadyAnswered() from None
    finally:
        if s.notifier is None:
            s.wake = None
        if not reading.done():
            reading.cancel()
