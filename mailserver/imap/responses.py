"""Every reply text the IMAP server sends, in one place, and the error -> response mapping."""
from __future__ import annotations

from ..errors import (AuthenticationFailed, Conflict, LimitExceeded, NotFound, QuotaExceeded, StorageError,
                      StoreUnavailable, Throttled, UserError)

GREETING = "civicmail IMAP4rev1 ready"
BYE_LOGOUT = "civicmail logging out"
BYE_IDLE_TIMEOUT = "idle for too long, logging out"
BYE_SHUTDOWN = "server shutting down"
BYE_TOO_MANY = "too many connections from this user and address"
BYE_PREAUTH_TOO_MANY = "[UNAVAILABLE] too many connections from your address, try again later"
BYE_SERVER_BUSY = "[UNAVAILABLE] server busy, try again later"
BYE_LOGIN_TIMEOUT = "no login in time, closing"
BYE_LITERAL = "literal too large, closing"
BYE_FOLDER_GONE = "the selected folder was deleted"
BYE_COMPRESS_PIPELINED = "commands sent before COMPRESS was answered, closing"
BYE_UNAVAILABLE = "[UNAVAILABLE] mail store unavailable, reconnect later"

OK_DONE = "completed"
OK_LOGIN = "logged in"
OK_TLS = "begin TLS negotiation now"
OK_COMPRESS = "DEFLATE active"
OK_SELECT_RW = "[READ-WRITE] selected"
OK_SELECT_RO = "[READ-ONLY] examined"
OK_IDLE_DONE = "IDLE terminated"
CONT_READY = "Ready"
CONT_IDLING = "idling"
CONT_AUTH = ""

BAD_SYNTAX = "syntax error"
BAD_STATE = "command not allowed now"
BAD_LINE_TOO_LONG = "line too long"
BAD_LITERAL_TOO_LARGE = "[TOOBIG] literal too large"
BAD_NOT_TLS = "STARTTLS not available now"
BAD_MECHANISM = "unsupported authentication mechanism"
BAD_AUTH_CANCELLED = "authentication cancelled"
BAD_IDLE = "expected DONE"
BAD_COMPRESS_MECHANISM = "unsupported compression mechanism (DEFLATE is)"
BAD_NO_QRESYNC = "QRESYNC is not enabled (ENABLE QRESYNC first)"
BAD_TOO_DEEP = "[LIMIT] parentheses, NOT and OR nested too deeply"
BAD_TOO_MANY_KEYS = "[LIMIT] too many search keys"

NO_LOGIN_DISABLED = "[PRIVACYREQUIRED] log in only after STARTTLS"
NO_AUTH_FAILED = "[AUTHENTICATIONFAILED] authentication failed"
NO_THROTTLED = "[UNAVAILABLE] too many failed logins, try later"
NO_NO_MAILBOX = "[AUTHENTICATIONFAILED] this identity has no mailbox"
NO_NONEXISTENT = "[NONEXISTENT] no such mailbox"
NO_TRYCREATE = "[TRYCREATE] no such mailbox"
NO_EXISTS = "[ALREADYEXISTS] mailbox exists"
NO_CANNOT = "[CANNOT] not possible for this mailbox"
NO_QUOTA = "[OVERQUOTA] mailbox is over its quota"
NO_TOOBIG = "[TOOBIG] message too large"
NO_SERVER = "[SERVERBUG] internal error, try again"
#: RFC 5530: a temporary failure, not the client's fault (clients keep the password and retry)
NO_UNAVAILABLE = "[UNAVAILABLE] mail store temporarily unavailable, try again later"
NO_READONLY = "[READ-ONLY] mailbox is read-only"
NO_BADCHARSET = "[BADCHARSET (UTF-8 US-ASCII)] charset not supported"
NO_COMPRESSION_ACTIVE = "[COMPRESSIONACTIVE] DEFLATE is already active"
NO_QUOTAROOT = "no such quota root"
NO_SETQUOTA = "[NOPERM] quotas are set by the operator"
NO_INUSE = "[INUSE] mailbox in use"
NO_FOLDER_LIMIT = "[LIMIT] folder name too long or too deep, or too many folders"
NO_EXPUNGED = "some messages were expunged"
OK_MODIFIED = "[MODIFIED {}] conditional STORE failed"
OK_CLOSED = "[CLOSED] previous mailbox closed"

#: RFC 5256, RFC 5957, RFC 5267 (ESORT; CONTEXT=SORT is not offered)
SORT_CAPABILITIES = ("SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES")

SEP = "/"
NAMESPACE = '(("" "/")) NIL NIL'
ID_RESPONSE = '("name" "civicmail" "vendor" "civicmail")'


def error_response(exc: Exception) -> tuple[str, str]:
    """(status, text) for an expected error; unexpected ones are logged and become SERVERBUG."""
    if isinstance(exc, QuotaExceeded):
        return "NO", NO_QUOTA
    if isinstance(exc, LimitExceeded):
        return "NO", NO_FOLDER_LIMIT
    if isinstance(exc, NotFound):
        return "NO", NO_NONEXISTENT
    if isinstance(exc, Conflict):
        return "NO", NO_EXISTS
    if isinstance(exc, AuthenticationFailed):
        return "NO", NO_AUTH_FAILED
    if isinstance(exc, Throttled):
        return "NO", NO_THROTTLED
    if isinstance(exc, UserError):
        return "NO", NO_CANNOT
    if isinstance(exc, StoreUnavailable):
        return "NO", NO_UNAVAILABLE
    if isinstance(exc, StorageError):
        return "NO", NO_SERVER
    return "NO", NO_SERVER


def capabilities(tls_active: bool, can_starttls: bool, login_allowed: bool, authenticated: bool,
                 append_limit: int) -> str:
    caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
    if not authenticated:
        if can_starttls and not tls_active:
            caps.append("STARTTLS")
        if login_allowed:
            caps.append("AUTH=PLAIN")
        else:
            caps.append("LOGINDISABLED")
    else:
        caps += ["UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS",
                 f"APPENDLIMIT={append_limit}", "QUOTA", "QUOTA=RES-STORAGE", "CONDSTORE", "QRESYNC",
                 "ESEARCH", "STATUS=SIZE", "COMPRESS=DEFLATE", *SORT_CAPABILITIES]
    return " ".join(caps)
