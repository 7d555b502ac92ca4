"""Every reply text the IMAP server sends, in one place, as typed replies (``Reply``: status,
response code, text), and the error -> reply mapping."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import (AuthenticationFailed, BadUrl, Conflict, LimitExceeded, MessageTooBig, MetadataTooLarge,
                      MetadataTooMany, NotFound, QuotaExceeded,
                      SpecialUseRefused, StorageError, StoreUnavailable, Throttled, Unconvertible, UnknownEncoding, UserError)

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


@dataclass(frozen=True, slots=True)
class Reply:
    """A status response (RFC 3501 7.1): OK, NO or BAD, an optional response code (its text
    without the brackets) and human-readable text. Tagged, it ends a command; untagged, it
    tells the client something (``* OK [HIGHESTMODSEQ 7] highest``)."""

    status: str
    text: str
    code: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("OK", "NO", "BAD"):
            raise ValueError(f"not a status: {self.status}")

    def line(self) -> str:
        """The response after its tag or "*": ``NO [NONEXISTENT] no such mailbox``."""
        if self.code is None:
            return f"{self.status} {self.text}"
        return f"{self.status} [{self.code}] {self.text}"

    def tagged(self, tag: str) -> bytes:
        return f"{tag} {self.line()}\r\n".encode("utf-8")

    def with_code(self, code: str) -> "Reply":
        """The same reply with another response code (APPENDUID, COPYUID, MODIFIED, ...)."""
        return Reply(self.status, self.text, code)


def ok(text: str, code: str | None = None) -> Reply:
    return Reply("OK", text, code)


def no(text: str, code: str | None = None) -> Reply:
    return Reply("NO", text, code)


def bad(text: str, code: str | None = None) -> Reply:
    return Reply("BAD", text, code)


OK_DONE = ok("completed")
#: RFC 5267 4.3.1, with the code NOUPDATE "tag": answered, but not kept up to date
NO_NOUPDATE = no("answered, but this search is not kept up to date")
OK_LOGIN = ok("logged in")
OK_TLS = ok("begin TLS negotiation now")
OK_COMPRESS = ok("DEFLATE active")
OK_SELECT_RW = ok("selected", "READ-WRITE")
OK_SELECT_RO = ok("examined", "READ-ONLY")
OK_IDLE_DONE = ok("IDLE terminated")
#: untagged, RFC 6851: before the EXPUNGEs of a MOVE (with COPYUID)
OK_MOVED = ok("moved")
#: RFC 7162 3.1.3: UNCHANGEDSINCE refused some messages (the code names them)
OK_MODIFIED = ok("conditional STORE failed", "MODIFIED")
CONT_READY = "Ready"
CONT_IDLING = "idling"
CONT_AUTH = ""

BAD_SYNTAX = bad("syntax error")
BAD_STATE = bad("command not allowed now")
BAD_LINE_TOO_LONG = bad("line too long")
BAD_LITERAL_TOO_LARGE = bad("literal too large", "TOOBIG")
BAD_NOT_TLS = bad("STARTTLS not available now")
BAD_AUTH_CANCELLED = bad("authentication cancelled")
BAD_IDLE = bad("expected DONE")
BAD_COMPRESS_MECHANISM = bad("unsupported compression mechanism (DEFLATE is)")
BAD_NO_QRESYNC = bad("QRESYNC is not enabled (ENABLE QRESYNC first)")
BAD_TOO_DEEP = bad("parentheses, NOT and OR nested too deeply", "LIMIT")
BAD_TOO_MANY_KEYS = bad("too many search keys", "LIMIT")

NO_LOGIN_DISABLED = no("log in only after STARTTLS", "PRIVACYREQUIRED")
NO_MECHANISM = no("unsupported authentication mechanism")
NO_AUTH_FAILED = no("authentication failed", "AUTHENTICATIONFAILED")
NO_THROTTLED = no("too many failed logins, try later", "UNAVAILABLE")
NO_NO_MAILBOX = no("this identity has no mailbox", "AUTHENTICATIONFAILED")
#: RFC 8437 UNAUTHENTICATE while imap.max_preauth_connections_per_ip are already waiting to log in
NO_PREAUTH_FULL = no("too many connections from your address are not logged in", "UNAVAILABLE")
NO_TOO_MANY = no("too many connections from this user and address", "LIMIT")
NO_NONEXISTENT = no("no such mailbox", "NONEXISTENT")
NO_TRYCREATE = no("no such mailbox", "TRYCREATE")
NO_EXISTS = no("mailbox exists", "ALREADYEXISTS")
NO_CANNOT = no("not possible for this mailbox", "CANNOT")
NO_QUOTA = no("mailbox is over its quota", "OVERQUOTA")
NO_TOOBIG = no("message too large", "TOOBIG")
#: RFC 4469 5: with the code BADURL and the URL refused; nothing is appended
NO_BADURL = no("CATENATE URL names no message part of yours: nothing appended", "BADURL")
#: more parts in one CATENATE than imap.max_catenate_parts
BAD_TOO_MANY_PARTS = bad("too many CATENATE parts", "LIMIT")
#: RFC 3502 3: an empty message ends a MULTIAPPEND, and nothing of it is stored
NO_EMPTY_MESSAGE = no("empty message: nothing appended")
#: RFC 3516 4.3: BINARY of a part whose transfer encoding is unknown
NO_UNKNOWN_CTE = no("cannot decode this part's Content-Transfer-Encoding", "UNKNOWN-CTE")
#: RFC 3516 4.4 / RFC 5530: NUL octets no transfer encoding can carry (in a header)
NO_UNCONVERTIBLE = no("NUL octets outside a body part", "PARSE")
NO_SERVER = no("internal error, try again", "SERVERBUG")
#: RFC 5530: a temporary failure, not the client's fault (clients keep the password and retry)
NO_UNAVAILABLE = no("mail store temporarily unavailable, try again later", "UNAVAILABLE")
NO_READONLY = no("mailbox is read-only", "READ-ONLY")
NO_BADCHARSET = no("charset not supported", "BADCHARSET (UTF-8 US-ASCII)")
NO_COMPRESSION_ACTIVE = no("DEFLATE is already active", "COMPRESSIONACTIVE")
NO_QUOTAROOT = no("no such quota root")
NO_SETQUOTA = no("quotas are set by the operator", "NOPERM")
#: a name that is not modified UTF-7 (RFC 3501 5.1.3): no mailbox has it, none can be made
NO_BAD_NAME = no("mailbox name is not modified UTF-7", "CANNOT")
#: RFC 9051 7.1: DELETE of a folder with child folders (they must go first)
NO_HASCHILDREN = no("the mailbox has child mailboxes", "HASCHILDREN")
#: past imap.max_keywords or imap.max_keyword_length: nothing changed
NO_KEYWORD_LIMIT = no("too many keywords in this mailbox or message, or one too long: nothing changed", "LIMIT")
NO_FOLDER_LIMIT = no("folder name too long or too deep, or too many folders", "LIMIT")

#: RFC 5464 4.3: a value past imap.metadata_max_size (with the code METADATA MAXSIZE n); nothing stored
NO_METADATA_MAXSIZE = no("METADATA value too large: nothing stored", "METADATA MAXSIZE")
#: RFC 5464 4.3: past imap.metadata_max_entries; nothing stored
NO_METADATA_TOOMANY = no("too many METADATA entries: nothing stored", "METADATA TOOMANY")
#: RFC 5464 4.2.1: GETMETADATA MAXSIZE left values out (with the code METADATA LONGENTRIES n)
OK_METADATA_LONGENTRIES = ok("completed, longer values left out", "METADATA LONGENTRIES")

#: untagged, RFC 7162 3.1.2 (with the code HIGHESTMODSEQ n)
OK_HIGHESTMODSEQ = ok("highest")
#: untagged, RFC 8474 4.2 (with the code MAILBOXID (id))
OK_MAILBOXID = ok("mailbox id")
#: RFC 6154 5.2: CREATE with a special use this server does not give folders
NO_USEATTR = no("special use not supported", "USEATTR")
#: untagged: RFC 7162 3.2.11, where the old mailbox's responses end
OK_CLOSED = ok("previous mailbox closed", "CLOSED")
#: untagged, RFC 5465 5.8: more notifications waited than imap.notify_max_events; NOTIFY is off
OK_NOTIFICATIONOVERFLOW = ok("too many notifications: NOTIFY is off, resynchronise and NOTIFY SET again",
                            "NOTIFICATIONOVERFLOW")
#: RFC 5465 3.1: a NOTIFY SET naming more mailboxes than this server watches for one session
NO_NOTIFY_TOO_MANY = no("too many mailbox names in NOTIFY", "NOTIFICATIONOVERFLOW")
#: RFC 5465 3.1: an event this server does not tell (with the code BADEVENT (supported events))
NO_BADEVENT = no("unsupported NOTIFY event")

SEP = "/"
NAMESPACE = '(("" "/")) NIL NIL'
ID_RESPONSE = '("name" "civicmail" "vendor" "civicmail")'


def error_response(exc: Exception) -> Reply:
    """The reply to an expected error; unexpected ones are logged and become SERVERBUG."""
    if isinstance(exc, QuotaExceeded):
        return NO_QUOTA
    if isinstance(exc, BadUrl):
        return NO_BADURL.with_code(f"BADURL {exc.url}")
    if isinstance(exc, MetadataTooLarge):
        return NO_METADATA_MAXSIZE.with_code(f"METADATA MAXSIZE {exc.limit}")
    if isinstance(exc, MetadataTooMany):
        return NO_METADATA_TOOMANY
    if isinstance(exc, MessageTooBig):
        return NO_TOOBIG
    if isinstance(exc, LimitExceeded):
        return NO_FOLDER_LIMIT
    if isinstance(exc, NotFound):
        return NO_NONEXISTENT
    if isinstance(exc, Conflict):
        return NO_EXISTS
    if isinstance(exc, AuthenticationFailed):
        return NO_AUTH_FAILED
    if isinstance(exc, Throttled):
        return NO_THROTTLED
    if isinstance(exc, UnknownEncoding):
        return NO_UNKNOWN_CTE
    if isinstance(exc, Unconvertible):
        return NO_UNCONVERTIBLE
    if isinstance(exc, SpecialUseRefused):
        return NO_USEATTR
    if isinstance(exc, UserError):
        return NO_CANNOT
    if isinstance(exc, StoreUnavailable):
        return NO_UNAVAILABLE
    if isinstance(exc, StorageError):
        return NO_SERVER
    return NO_SERVER

