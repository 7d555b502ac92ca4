"""The external mail store (``store.mode = "external"``): mailboxes in a Dovecot or Exchange the
city already runs, reached by LMTP (RFC 2033) at ``lmtp.target``.

LMTP answers a transaction once per accepted recipient after the message (RFC 2033 4.2), so each
mailbox's outcome is its own: ``2xx`` stored, ``4xx`` try again later, ``5xx`` refused for good.
``deliver`` takes a list of messages (each with its recipients, several recipients sharing a
transaction when the message is the same for all) and returns every recipient's reply. The
commands of a transaction are pipelined (RFC 2920: MAIL, every RCPT and DATA in one write, one
round trip), the transactions spread over at most ``lmtp.connections`` connections, each kept
open for the next call. Blocking (smtplib): call it from a thread, never on the event loop.

A server that cannot be reached, or a connection lost mid-transaction, makes the recipients of
that transaction a ``4.4.1`` temporary failure: whether it stored the message is unknown, and the
caller retries with the same Message-ID (the store can drop the copy: Sieve ``duplicate``).
"""
from __future__ import annotations

import logging
import queue
import re
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..config import LMTPConfig, lmtp_unix_path, parse_hostport
from ..errors import StoreUnavailable

log = logging.getLogger("civicmail.store.external")

#: the reply given to recipients whose transaction never got an answer from the server
UNREACHABLE = "4.4.1 the external mail store did not answer"
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_DOT_LINES = re.compile(rb"(?m)^\.")


class ExternalStoreUnavailable(StoreUnavailable):
    """The LMTP server did not answer within lmtp.retry_seconds: what became of the messages
    in flight is unknown."""


@dataclass(frozen=True)
class Outgoing:
    """One message for one or more mailboxes of the external store (one LMTP transaction)."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return not self.ok and not self.permanent

    @property
    def unknown(self) -> bool:
        """No answer from the server: the message may or may not be stored."""
        return self.text == UNREACHABLE

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def _reply(code: int, message: bytes | str) -> Reply:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return Reply(code, " ".join(text.split())[:300])


def wire_data(raw: bytes) -> bytes:
    """The message as DATA carries it: CRLF line ends, leading dots doubled, the final dot line."""
    data = _DOT_LINES.sub(b"..", _LINE_ENDS.sub(b"\r\n", raw))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class _Connection:
    """One LMTP session (smtplib's LMTP client: LHLO, TCP or a unix socket)."""

    def __init__(self, config: LMTPConfig, hostname: str) -> None:
        unix = lmtp_unix_path(config.target)
        if unix is not None:
            client = smtplib.LMTP(unix, local_hostname=hostname, timeout=config.timeout)
        else:
            host, port = parse_hostport(config.target, "lmtp.target")
            client = smtplib.LMTP(host, port, local_hostname=hostname, timeout=config.timeout)
        try:
            code, message = client.ehlo()  # smtplib.LMTP sends LHLO
            if code != 250:
                raise smtplib.SMTPHeloError(code, message)
            if config.starttls:
                context = ssl.create_default_context(cafile=config.cafile or None)
                client.starttls(context=context)
                client.ehlo()
        except BaseException:
            client.close()
            raise
        self.client = client
        #: what the server said to LHLO (its name first)
        self.greeting = (client.ehlo_resp or b"").decode("utf-8", "replace").split("\n")[0]
        self.pipelining = client.has_extn("pipelining")
        self.eightbit = client.has_extn("8bitmime")
        self.smtputf8 = client.has_extn("smtputf8")

    def send(self, message: Outgoing) -> dict[str, Reply]:
        """One transaction: every recipient's reply. smtplib errors and OSError go to the caller
        (the connection is then of no further use)."""
        c = self.client
        options = []
        if self.eightbit and not message.raw.isascii():
            options.append("BODY=8BITMIME")
        if self.smtputf8 and not (message.sender.isascii() and all(r.isascii() for r in message.recipients)):
            options.append("SMTPUTF8")
        mail = f"FROM:<{message.sender}>" + "".join(f" {o}" for o in options)
        rcpts = [f"TO:<{r}>" for r in message.recipients]
        if self.pipelining:  # MAIL, every RCPT and DATA in one write; then their replies in order
            c.send("".join(f"{cmd}\r\n" for cmd in [f"MAIL {mail}", *(f"RCPT {r}" for r in rcpts), "DATA"]))
            mail_reply = c.getreply()
            rcpt_replies = [c.getreply() for _ in rcpts]
            data_reply = c.getreply()
        else:
            c.putcmd("mail", mail)
            mail_reply = c.getreply()
            rcpt_replies = []
            if mail_reply[0] == 250:
                for r in rcpts:
                    c.putcmd("rcpt", r)
                    rcpt_replies.append(c.getreply())
            data_reply = (503, b"5.5.1 no valid recipients")
            if any(code in (250, 251) for code, _ in rcpt_replies):
                c.putcmd("data")
                data_reply = c.getreply()
        replies: dict[str, Reply] = {}
        if mail_reply[0] != 250:
            reply = _reply(*mail_reply)
            self._reset()
            return {r: reply for r in message.recipients}
        accepted = []
        for recipient, (code, text) in zip(message.recipients, rcpt_replies):
            if code in (250, 251):
                accepted.append(recipient)
            else:
                replies[recipient] = _reply(code, text)
        if data_reply[0] != 354:
            reply = _reply(*data_reply)
            for recipient in accepted:
                replies[recipient] = reply
            self._reset()
            return replies
        if not accepted:  # a server that asks for the message with no recipient: end it empty
            c.send(b".\r\n")
            c.getreply()
            return replies
        c.send(wire_data(message.raw))
        for recipient in accepted:  # RFC 2033 4.2: one reply per accepted recipient, in order
            replies[recipient] = _reply(*c.getreply())
        return replies

    def _reset(self) -> None:
        code, _ = self.client.rset()
        if code != 250:
            raise smtplib.SMTPServerDisconnected("RSET refused")

    def close(self) -> None:
        try:
            self.client.quit()
        except (OSError, smtplib.SMTPException):
            self.client.close()


def connect_and_greet(config: LMTPConfig, hostname: str) -> str:
    """Connect, LHLO (STARTTLS if configured), QUIT: the server's greeting line (`civicmail
    check`). Raises what connecting raises."""
    conn = _Connection(config, hostname)
    try:
        return " ".join(conn.greeting.split())
    finally:
        conn.close()


class LmtpStore:
    """The external mail store's LMTP side: ``deliver`` messages, every recipient's reply back.
    At most ``lmtp.connections`` connections, kept open between calls (``close`` ends them)."""

    def __init__(self, config: LMTPConfig, hostname: str) -> None:
        self.config = config
        self.hostname = hostname
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._threads = ThreadPoolExecutor(config.connections, thread_name_prefix="lmtp")

    def deliver(self, messages: list[Outgoing]) -> list[dict[str, Reply]]:
        """Every message's recipients with their reply, in the order of ``messages``. Recipients
        beyond lmtp.max_recipients go in further transactions of the same message."""
        parts: list[tuple[int, Outgoing]] = []
        step = self.config.max_recipients
        for n, m in enumerate(messages):
            for i in range(0, len(m.recipients), step):
                parts.append((n, Outgoing(m.sender, m.recipients[i:i + step], m.raw)))
        results: list[dict[str, Reply]] = [{} for _ in messages]
        if not parts:
            return results
        # contiguous slices, one per connection: each connection sends its messages in turn
        lanes = min(self.config.connections, len(parts))
        size = -(-len(parts) // lanes)
        slices = [parts[i:i + size] for i in range(0, len(parts), size)]
        for done in self._threads.map(self._send_all, slices):
            for n, replies in done:
                results[n].update(replies)
        return results

    def deliver_with_retry(self, messages: list[Outgoing], sleep=time.sleep) -> list[dict[str, Reply]]:
        """``deliver``, the temporary failures tried again with backoff: a recipient with no
        answer at all (``unknown``) for lmtp.retry_seconds, one the server deferred (4xx) for
        lmtp.deferred_retry_seconds (short: one such mailbox must not hold up its batch long).
        What is still temporary then is returned as it is."""
        started = time.monotonic()
        until = {True: started + self.config.retry_seconds, False: started + self.config.deferred_retry_seconds}
        results = self.deliver(messages)
        delay = 0.5
        while True:
            now = time.monotonic()
            todo = [(n, tuple(r for r, reply in replies.items() if reply.temporary and now < until[reply.unknown]))
                    for n, replies in enumerate(results)]
            todo = [(n, rcpts) for n, rcpts in todo if rcpts]
            if not todo:
                return results
            latest = max(until[results[n][r].unknown] for n, rcpts in todo for r in rcpts)
            sleep(max(0.0, min(delay, latest - now)))
            delay = min(delay * 2, 10.0)
            again = self.deliver([Outgoing(messages[n].sender, rcpts, messages[n].raw) for n, rcpts in todo])
            for (n, _), replies in zip(todo, again):
                results[n].update(replies)

    def _send_all(self, part: list[tuple[int, Outgoing]]) -> list[tuple[int, dict[str, Reply]]]:
        """One connection's share, in turn. A server that cannot be reached is tried once per
        share (each attempt may wait lmtp.timeout), not once per message."""
        out = []
        conn: _Connection | None = None
        down = False
        try:
            for n, message in part:
                if conn is None and not down:
                    conn = self._connection()
                    down = conn is None
                if conn is None:
                    out.append((n, {r: Reply(451, UNREACHABLE) for r in message.recipients}))
                    continue
                try:
                    out.append((n, conn.send(message)))
                except (OSError, smtplib.SMTPException) as exc:
                    log.warning("LMTP %s: connection lost (%s): %d recipient(s) to try again", self.config.target,
                                exc.__class__.__name__, len(message.recipients))
                    conn.client.close()
                    conn = None
                    out.append((n, {r: Reply(451, UNREACHABLE) for r in message.recipients}))
        finally:
            if conn is not None:
                self._idle.put(conn)
        return out

    def _connection(self) -> _Connection | None:
        """A kept connection that still answers (the server may have closed it while idle), else
        a new one; None if the server cannot be reached."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            try:
                if conn.client.noop()[0] == 250:
                    return conn
            except (OSError, smtplib.SMTPException):
                pass
            conn.client.close()
        try:
            return _Connection(self.config, self.hostname)
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            log.warning("LMTP %s: cannot connect: %s", self.config.target, exc.__class__.__name__)
            return None

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> "LmtpStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_external(config) -> LmtpStore | None:
    """The external mail store of a Config in external mode; None in local mode."""
    if not config.external_store:
        return None
    return LmtpStore(config.lmtp, config.server.hostname)


# -- mail for people's mailboxes from SMTP and the services, through the queue -----------------

def external_account_ids(session, account_ids: list[int]) -> set[int]:
    """The accounts whose mailbox is in the external store: citizens' and agencies' mailboxes.
    System accounts (service addresses, the drops address) stay in civicmail's store, where the
    services worker and the drop watcher read them."""
    from sqlalchemy import or_, select

    from .models import Account

    found: set[int] = set()
    for i in range(0, len(account_ids), 900):
        found.update(session.scalars(select(Account.id).where(
            Account.id.in_(account_ids[i:i + 900]),
            or_(Account.citizen_id.is_not(None), Account.agency_id.is_not(None)))))
    return found


def divert(session, messages: list) -> list:
    """External mode: queue the messages (mailstore.NewMessage) for external mailboxes, inside
    the caller's transaction, for the outbound runner to deliver by LMTP (one entry per distinct
    message, its mailboxes as recipients: one transaction for an SMTP message to several citizens,
    up to lmtp.max_recipients); return the others, for civicmail's own store. A copy for another folder
    than INBOX (an agency clerk's Sent copy) is not kept: LMTP delivers to the INBOX, and the
    external store keeps its own Sent."""
    import datetime as dt

    from sqlalchemy import select

    from .models import Account, OutboundMessage

    if not messages:
        return []
    external = external_account_ids(session, sorted({m.account_id for m in messages}))
    if not external:
        return messages
    addresses = dict(session.execute(select(Account.id, Account.address).where(Account.id.in_(sorted(external)))).all())
    local, entries = [], {}
    for m in messages:
        if m.account_id not in external:
            local.append(m)
        elif m.folder == "INBOX":
            entries.setdefault((id(m.raw), m.sender), (m, []))[1].append(addresses[m.account_id])
    now = dt.datetime.now(dt.timezone.utc)
    for m, recipients in entries.values():
        session.add(OutboundMessage(sender=m.sender, recipients="\n".join(recipients), raw=m.raw, state="queued",
                                    attempts=0, next_attempt_at=now, account_id=None))
    session.flush()
    return local
