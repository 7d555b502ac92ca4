"""The aiosmtpd hooks: each decides with policy.py, looks up with mailboxes.py, stores through
the group committer, and returns a reply from replies.py. Exception text never reaches a client.

One log line per accepted, refused or deferred message (Postfix-style), never content or ID
numbers: ``QID outcome client=IP auth=... from=<...> to=<...> size=N``.
"""
from __future__ import annotations

import ipaddress

import itertools
import logging
import re
import secrets
import time
from base64 import b64decode
from typing import TYPE_CHECKING

from aiosmtpd.smtp import MISSING, AuthResult

from ..errors import AuthenticationFailed, StoreUnavailable, Throttled
from ..identity.addresses import normalise_address
from ..identity.sasl import AuthorizationRefused, bearer_error, split_bearer, split_plain
from ..registry.auth import Principal
from . import headers, policy, replies
from .committer import Outcome, Pending
from .protocol import CivicEnvelope, CivicSession, CivicSMTP

if TYPE_CHECKING:
    from .service import SMTPListener

log = logging.getLogger("civicmail.smtp")
#: an outcome of the log line: "stored", "refused (unknown user)" -> (word, reason)
_OUTCOME = re.compile(r"(\S+)(?: \((.*)\))?\Z")
#: the metrics' outcome for a log line's first word
_ACCEPTED = frozenset(("stored", "queued", "queued+stored"))


#: queue ids: a random prefix per process and a counter (unique without a syscall per message)
_QID_PREFIX = secrets.token_hex(3).upper()
_qid_counter = itertools.count(1)


def new_qid() -> str:
    return f"{_QID_PREFIX}{next(_qid_counter):06X}"


def client_certificate(server: CivicSMTP) -> bytes | None:
    """The DER of the client's TLS certificate, verified up to the city root (only SMTPS asks
    for one: ServerContext.tls_context); else None."""
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def sign_submission(config, agency_id: str, raw: bytes) -> bytes:
    """Blocking (off the loop: hashing is linear in the message, bounded by SIZE): an agency's
    message S/MIME-signed with its city certificate, where it has one (ca.sign_submissions)."""
    from ..identity.ca import AgencySigner
    from ..identity.smime import sign_message

    signer = AgencySigner.load(config.data_path(config.ca.dir), agency_id)
    return raw if signer is None else sign_message(signer.key, signer.cert, signer.chain, raw)


def principal_of(session: CivicSession) -> Principal | None:
    data = session.auth_data if session.authenticated else None
    return data if isinstance(data, Principal) else None


def identity(principal: Principal | None) -> str:
    return policy.trusted_value(principal) if principal else "-"


class Handler:
    def __init__(self, listener: "SMTPListener") -> None:
        self.listener = listener
        self.ctx = listener.ctx
        self.shared = listener.shared
        self.local_domains = frozenset(self.ctx.config.local_domains)  # normalised (normalise_domain)
        smtp = self.ctx.config.smtp
        self.refuse_local_senders = smtp.refuse_local_senders and not self.listener.is_submission
        self.trusted_networks = tuple(ipaddress.ip_network(n, strict=False) for n in smtp.trusted_networks)

    def _guards_local_senders(self, session: CivicSession) -> bool:
        return self.refuse_local_senders and not policy.in_networks(session.client_ip, self.trusted_networks)

    def _log(self, outcome: str, session: CivicSession, envelope: CivicEnvelope, *, rcpts=None, size=None) -> None:
        """The message's log line, and its count in the metrics (every outcome passes here)."""
        word, reason = _OUTCOME.match(outcome).groups()  # type: ignore[union-attr]
        if word in _ACCEPTED:
            word, reason = "accepted", word
        self.ctx.metrics.messages.labels(self.listener.kind, word, reason or "-").inc()
        to = ",".join(f"<{r}>" for r in (rcpts if rcpts is not None else envelope.rcpt_tos))
        log.info("%s %s client=%s port=%s auth=%s from=<%s> to=%s size=%s", envelope.qid or "NOQUEUE", outcome,
                 session.client_ip, self.listener.kind, identity(principal_of(session)),
                 envelope.mail_from if envelope.mail_from != "<>" else "", to, "-" if size is None else size)

    # -- EHLO, AUTH --------------------------------------------------------------------
    async def handle_EHLO(self, server: CivicSMTP, session: CivicSession, envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        out = [r for r in responses[:-1] if self.listener.is_submission or not r.startswith("250-AUTH")]
        if client_certificate(server) is None:  # EXTERNAL only where a city certificate was presented
            out = [" ".join(w for w in r.split(" ") if w != "EXTERNAL") if r.startswith("250-AUTH") else r
                   for r in out]
        return out + ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    async def handle_AUTH(self, server: CivicSMTP, session: CivicSession, envelope, args: list[str]):
        if not self.listener.is_submission:
            return replies.AUTH_NOT_HERE
        return MISSING

    async def _client_response(self, server: CivicSMTP, args: list[str]) -> bytes | AuthResult:
        """The client's SASL message: the initial response ("=": empty, RFC 4954), or its answer
        to an empty 334; an AuthResult (already answered) if it cancelled or sent bad base64."""
        if len(args) == 1:
            blob = await server.challenge_auth("")
            return AuthResult(success=False, handled=True) if blob is MISSING else blob
        try:
            return b"" if args[1] == "=" else b64decode(args[1].encode(), validate=True)
        except ValueError:
            await server.push(replies.AUTH_BAD_BASE64)
            return AuthResult(success=False, handled=True)

    async def auth_PLAIN(self, server: CivicSMTP, args: list[str]) -> AuthResult:
        blob = await self._client_response(server, args)
        if isinstance(blob, AuthResult):
            return blob
        try:
            login, password = split_plain(blob)
        except AuthorizationRefused:
            log.info("auth-refused (authorization identity) client=%s port=%s", server.session.client_ip,
                     self.listener.kind)
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        except ValueError:
            await server.push(replies.AUTH_BAD_PLAIN)
            return AuthResult(success=False, handled=True)
        return await self._authenticate(server, login, password)

    async def auth_EXTERNAL(self, server: CivicSMTP, args: list[str]) -> AuthResult:
        """RFC 4422 appendix A over RFC 4954: the identity is the TLS client certificate's (a
        city certificate, SMTPS only); the client's message is an authorization identity, empty
        ("=") or the certificate's own mailbox."""
        der = client_certificate(server)
        if der is None:
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        blob = await self._client_response(server, args)
        if isinstance(blob, AuthResult):
            return blob
        try:
            authzid = blob.decode("utf-8")
            principal = await self.ctx.certificate_login(server.session.client_ip, der, authzid, self.listener.kind)
        except (UnicodeDecodeError, AuthenticationFailed):
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        except StoreUnavailable:
            return AuthResult(success=False, handled=False, message=replies.AUTH_UNAVAILABLE)
        return AuthResult(success=True, auth_data=principal, message=replies.AUTH_OK)

    async def auth_LOGIN(self, server: CivicSMTP, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await server.challenge_auth(server.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await server.push(replies.AUTH_BAD_BASE64)
                return AuthResult(success=False, handled=True)
        password = await server.challenge_auth(server.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            return await self._authenticate(server, login.decode("utf-8"), password.decode("utf-8"))
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)

    async def auth_OAUTHBEARER(self, server: CivicSMTP, args: list[str]) -> AuthResult:
        return await self._auth_bearer(server, args, "OAUTHBEARER")

    async def auth_XOAUTH2(self, server: CivicSMTP, args: list[str]) -> AuthResult:
        return await self._auth_bearer(server, args, "XOAUTH2")

    async def _auth_bearer(self, server: CivicSMTP, args: list[str], mechanism: str) -> AuthResult:
        """An access token of the OpenID Connect provider with the ``mail`` scope (RFC 7628); a
        failure sends the error challenge (3.2.2) first, and the client's answer gets the 535."""
        blob = await self._client_response(server, args)
        if isinstance(blob, AuthResult):
            return blob
        try:
            login, token = split_bearer(mechanism, blob)
        except ValueError:
            await server.push(replies.AUTH_BAD_BEARER)
            return AuthResult(success=False, handled=True)
        result = await self._authenticate(server, login, token, bearer=True)
        if result.message == replies.AUTH_FAILED:
            if await server.challenge_auth(bearer_error(self.ctx.config.public_url)) is MISSING:
                return AuthResult(success=False, handled=True)
        return result

    async def _authenticate(self, server: CivicSMTP, login: str | None, password: str,
                            bearer: bool = False) -> AuthResult:
        session = server.session
        assert isinstance(session, CivicSession)
        ip = session.client_ip
        try:
            if bearer:
                principal = await self.ctx.login_bearer(ip, login, password, self.listener.kind)
            else:
                principal = await self.ctx.login(ip, login, password, self.listener.kind)
        except Throttled:
            return AuthResult(success=False, handled=False, message=replies.AUTH_THROTTLED)
        except StoreUnavailable:
            log.info("auth-deferred (store unavailable) client=%s port=%s", ip, self.listener.kind)
            return AuthResult(success=False, handled=False, message=replies.AUTH_UNAVAILABLE)
        except AuthenticationFailed:
            return AuthResult(success=False, handled=False, message=replies.AUTH_FAILED)
        except Exception:
            log.exception("authentication error")
            return AuthResult(success=False, handled=False, message=replies.AUTH_UNAVAILABLE)
        return AuthResult(success=True, auth_data=principal, message=replies.AUTH_OK)

    # -- the transaction ----------------------------------------------------------------
    async def handle_MAIL(self, server: CivicSMTP, session: CivicSession, envelope: CivicEnvelope, address: str,
                          mail_options: list[str]) -> str:
        if self.listener.closing:
            return replies.SHUTTING_DOWN
        envelope.qid = new_qid()
        sender = "" if address == "<>" else address
        if not self.shared.ip_rate.allow(session.client_ip):
            self._log("refused (ip rate)", session, envelope, rcpts=[])
            return replies.RATE_LIMITED_IP
        principal = principal_of(session)
        if self.listener.is_submission:
            if principal is None:
                return replies.AUTH_REQUIRED
            refusal = policy.check_envelope_sender(principal, sender)
            if refusal:
                envelope.mail_from = address
                self._log("refused (sender)", session, envelope, rcpts=[])
                envelope.mail_from = None
                return refusal
            if principal.is_agency and not self.shared.agency_rate.allow(principal.agency_id or ""):
                self._log("deferred (agency rate)", session, envelope, rcpts=[])
                return replies.RATE_LIMITED_AGENCY
        elif self._guards_local_senders(session):
            refusal = policy.check_inbound_sender([sender], self.local_domains, replies.LOCAL_SENDER_FORGED)
            if refusal:
                envelope.mail_from = address
                self._log("refused (local sender)", session, envelope, rcpts=[])
                envelope.mail_from = None
                return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(self, server: CivicSMTP, session: CivicSession, envelope: CivicEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.ctx.config.smtp.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        lowered = normalise_address(address)
        if policy.domain_of(lowered) not in self.local_domains:
            refusal = policy.check_remote_recipient(principal_of(session))
            if refusal:
                self._log("refused (relay)", session, envelope, rcpts=[address])
                return refusal
            envelope.remote.append(address)
            envelope.rcpt_tos.append(address)
            return replies.RECIPIENT_OK
        try:
            mailbox = await self.shared.find_mailbox(lowered)
        except StoreUnavailable:  # logged by the outage log: one line, a traceback once per outage
            self._log("deferred (store unavailable)", session, envelope, rcpts=[address])
            return replies.LOOKUP_FAILED
        except Exception:
            log.exception("recipient lookup failed")
            return replies.LOOKUP_FAILED
        if mailbox is None or not mailbox.receives:
            self._log("refused (unknown user)" if mailbox is None else "refused (disabled)", session, envelope,
                      rcpts=[address])
            return replies.UNKNOWN_USER if mailbox is None else replies.MAILBOX_DISABLED
        envelope.local[lowered] = mailbox.account_id
        envelope.rcpt_tos.append(address)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: CivicSMTP, session: CivicSession, envelope: CivicEnvelope) -> str:
        raw = envelope.original_content or b""
        if headers.has_bare_line_ending(raw):
            self._log("refused (bare CR/LF)", session, envelope, size=len(raw))
            return replies.BARE_LINE_ENDING
        principal = principal_of(session)
        raw = headers.strip_internal(raw, self.ctx.config.server.hostname, policy.settable_fields(principal))
        if principal is None and self._guards_local_senders(session):
            header, _ = headers.split_header(raw)
            refusal = policy.check_inbound_sender(headers.from_addresses(header), self.local_domains,
                                                  replies.FROM_LOCAL_FORGED)
            if refusal:
                self._log("refused (local From:)", session, envelope, size=len(raw))
                return refusal
        if principal is not None:
            header, _ = headers.split_header(raw)
            refusal = (policy.check_from_header(principal, headers.from_addresses(header))
                       or policy.check_notice_types(principal, headers.field_values(header, headers.NOTICE_TYPE_HEADER)))
            if refusal:
                self._log("refused (%s)" % refusal[4:9], session, envelope, size=len(raw))
                return refusal
            raw = headers.origin_fields(header, self.ctx.config.city.domain, envelope.qid) + raw
            if principal.is_agency and self.ctx.config.ca.sign_submissions:
                raw = await self.ctx.run(sign_submission, self.ctx.config, principal.agency_id, raw)
        protocol = ("ESMTP" if session.extended_smtp else "SMTP") + ("S" if server.tls_active else "") + \
                   ("A" if principal else "")
        trace = headers.trace_headers(
            qid=envelope.qid, helo=session.host_name or "", client_ip=session.client_ip,
            hostname=self.ctx.config.server.hostname, protocol=protocol, recipients=envelope.rcpt_tos,
            auth_identity=(principal.login if principal else None),
            trusted_value=policy.trusted_value(principal) if principal else None)
        sender = "" if envelope.mail_from == "<>" else (envelope.mail_from or "")
        pending = Pending(raw=trace + raw, account_ids=sorted(set(envelope.local.values())), remote=list(dict.fromkeys(envelope.remote)),
                          sender=sender, sender_account_id=principal.account_id if principal else None)
        started = time.monotonic()
        outcome = await self.shared.committer.submit(pending)
        if outcome is Outcome.STORED:
            self.ctx.metrics.delivery_seconds.labels("smtp").observe(time.monotonic() - started)
            self._log("queued+stored" if pending.remote and pending.account_ids else
                      "queued" if pending.remote else "stored", session, envelope, size=len(pending.raw))
            if pending.remote or self.ctx.config.external_store:  # external: mailboxes' mail is queued for LMTP
                self.shared.outbound_wakeup()
            return replies.STORED.format(qid=envelope.qid)
        if outcome is Outcome.OVER_QUOTA:
            self._log("refused (over quota)", session, envelope, size=len(pending.raw))
            return replies.OVER_QUOTA
        if outcome is Outcome.UNAVAILABLE:
            self._log("deferred (store unavailable)", session, envelope, size=len(pending.raw))
            return replies.STORE_UNAVAILABLE
        self._log("deferred (storage failure)", session, envelope, size=len(pending.raw))
        return replies.STORAGE_FAILED

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %s", error.__class__.__name__, exc_info=error)
        return replies.INTERNAL_ERROR
