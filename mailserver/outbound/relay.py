"""One delivery attempt through the configured relay (``outbound.relay``), with optional
STARTTLS and AUTH. Blocking (smtplib): call it in the executor."""
from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field

from ..config import OutboundConfig, parse_hostport

#: seconds for each network step of an attempt
TIMEOUT = 60.0


@dataclass
class AttemptResult:
    accepted: list[str] = field(default_factory=list)
    #: recipient -> the reply or error, to retry later
    temporary: dict[str, str] = field(default_factory=dict)
    #: recipient -> the reply, to bounce now
    permanent: dict[str, str] = field(default_factory=dict)


def _reply_text(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def _classify(result: AttemptResult, recipients: list[str], code: int, text: str) -> None:
    for r in recipients:
        (result.permanent if 500 <= code < 600 else result.temporary)[r] = text


def send(config: OutboundConfig, hostname: str, sender: str, recipients: list[str], raw: bytes,
         timeout: float = TIMEOUT) -> AttemptResult:
    result = AttemptResult()
    if not config.relay:
        _classify(result, recipients, 451, "451 4.4.0 no relay configured (outbound.relay)")
        return result
    host, port = parse_hostport(config.relay, "outbound.relay")
    needs_utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
    try:
        with smtplib.SMTP(host, port, local_hostname=hostname, timeout=timeout) as client:
            client.ehlo()
            if config.relay_starttls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if config.relay_username:
                client.login(config.relay_username, config.relay_password)
            options = []
            if needs_utf8:
                options.append("SMTPUTF8")
            if client.has_extn("8bitmime") and not raw.isascii():
                options.append("BODY=8BITMIME")
            refused = client.sendmail(sender, recipients, raw, mail_options=options)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = exc.recipients
    except smtplib.SMTPResponseException as exc:
        _classify(result, recipients, exc.smtp_code, _reply_text(exc.smtp_code, exc.smtp_error))
        return result
    except (OSError, smtplib.SMTPException) as exc:
        _classify(result, recipients, 451, f"451 4.4.1 relay {config.relay} unreachable: {exc.__class__.__name__}")
        return result
    for r in recipients:
        if r in refused:
            code, message = refused[r]
            _classify(result, [r], code, _reply_text(code, message))
        else:
            result.accepted.append(r)
    return result
