"""Every reply the SMTP edge sends, in one place, with its enhanced status code (RFC 3463).

aiosmtpd's own replies (syntax errors, "Line too long", ...) carry no enhanced code and some
of them name internals; ``normalize`` rewrites them on their way out (see protocol.py), so a
client sees only the texts below.
"""
from __future__ import annotations

# -- greeting, session ---------------------------------------------------------------------
BYE = "221 2.0.0 Bye"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
SERVER_BUSY = "421 4.7.0 Server busy, try again later"
OK = "250 2.0.0 OK"

# -- AUTH ----------------------------------------------------------------------------------
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_THROTTLED = "454 4.7.0 Too many failed logins, try again later"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required: issue STARTTLS first"
AUTH_NOT_HERE = "503 5.5.1 AUTH is not offered on this port: use submission (587 or 465)"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure"
AUTH_BAD_BASE64 = "501 5.5.2 Cannot decode base64"
AUTH_BAD_PLAIN = "501 5.5.2 Cannot split the PLAIN credentials"
AUTH_BAD_BEARER = "501 5.5.2 Cannot read the bearer token message"

# -- MAIL FROM -----------------------------------------------------------------------------
SENDER_OK = "250 2.1.0 Sender OK"
SENDER_NOT_YOURS = "553 5.7.1 Sender address is not yours: send as the address you logged in with"
SENDER_NOT_AGENCY = "553 5.7.1 Sender address is not one of your agency's registered senders"
SENDER_EMPTY = "553 5.7.1 A null sender is not allowed on submission"
RATE_LIMITED_IP = "450 4.7.1 Too many messages from your address, slow down"
RATE_LIMITED_AGENCY = "450 4.7.1 Your agency's message rate is exceeded, try again in a minute"

# -- RCPT TO -------------------------------------------------------------------------------
RECIPIENT_OK = "250 2.1.5 Recipient OK"
UNKNOWN_USER = "550 5.1.1 No such mailbox here"
MAILBOX_DISABLED = "550 5.2.1 Mailbox disabled"
LOCAL_SENDER_FORGED = ("550 5.7.1 Sender address is in this city's domain: such mail is accepted only "
                       "through authenticated submission")
FROM_LOCAL_FORGED = ("550 5.7.1 From: header is in this city's domain: such mail is accepted only "
                     "through authenticated submission")
RELAY_REFUSED = "554 5.7.1 Relay access denied: this server accepts mail only for its own domains"
AGENCY_REMOTE_REFUSED = "554 5.7.1 Agencies may send only to this city's mailboxes"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
LOOKUP_FAILED = "451 4.3.0 Temporary lookup failure, try again later"
STORE_UNAVAILABLE = "451 4.3.0 Mail store unavailable, try again later"

# -- DATA ----------------------------------------------------------------------------------
DATA_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
DATA_NEEDS_RCPT = "503 5.5.1 Need RCPT command first"
DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
STORED = "250 2.0.0 Stored as {qid}"
BARE_LINE_ENDING = "550 5.6.2 Bare CR or LF in message: lines must end with CRLF"
#: 5.5.2, syntax error (X.5.6 is RFC 4954's for an AUTH exchange line)
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
MESSAGE_TOO_BIG = "552 5.3.4 Message too big"
FROM_NOT_YOURS = "550 5.7.1 From: header must be exactly your own address"
FROM_NOT_AGENCY = "550 5.7.1 From: header must be one of your agency's registered senders"
NOTICE_TYPE_NOT_GRANTED = "550 5.7.1 Your agency is not granted this notice type"
OVER_QUOTA = "552 5.2.2 Mailbox full"
STORAGE_FAILED = "451 4.3.0 Temporary storage failure, try again later"
INTERNAL_ERROR = "451 4.3.0 Temporary server error, try again later"
STARTTLS_READY = "220 2.0.0 Ready to start TLS"

# -- aiosmtpd's replies without an enhanced code: first match (by prefix) wins --------------
_REWRITES: tuple[tuple[str, str], ...] = (
    ("500 Line too long", LINE_TOO_LONG),
    ("552 Error: Too much mail data", MESSAGE_TOO_BIG),
    ("552 Error: message size exceeds", MESSAGE_TOO_BIG),
    ("500 Command line too long", "500 5.5.6 Command line too long"),
    ("500 Error: command", "500 5.5.2 Command not recognized"),
    ("500 Error: bad syntax", "500 5.5.2 Syntax error"),
    ("500 Error: strict ASCII mode", "500 5.6.7 Non-ASCII data without SMTPUTF8"),
    ("500 Error:", "500 5.5.2 Syntax error"),
    ("250 HELP", "250 HELP"),  # the last line of the EHLO reply
    ("250 OK", OK),
    ("221 Bye", BYE),
)
#: an enhanced code for any other reply, by its basic code
_DEFAULT_ENHANCED = {
    "250": "2.0.0", "251": "2.1.5", "252": "2.5.0", "421": "4.3.0", "450": "4.2.0", "451": "4.3.0",
    "452": "4.3.1", "454": "4.7.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "552": "5.3.4",
    "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}


def normalize(reply: str) -> str:
    """Give a reply from aiosmtpd our wording and an enhanced status code.

    The greeting (220), DATA go-ahead (354) and AUTH challenges (334) have none by RFC 2034; lines
    of a multi-line reply (``250-...``) are EHLO keywords and are left alone."""
    if reply.startswith("220 Ready to start TLS"):
        return STARTTLS_READY  # a reply to a command, so it carries a code (Postfix: the same)
    if len(reply) < 4 or reply[3] == "-" or reply[:3] in ("220", "334", "354"):
        return reply
    for prefix, ours in _REWRITES:
        if reply.startswith(prefix):
            return ours
    code, _, text = reply.partition(" ")
    if text[:1].isdigit() and text[1:2] == ".":
        return reply  # has one already
    enhanced = _DEFAULT_ENHANCED.get(code)
    return f"{code} {enhanced} {text}" if enhanced else reply
