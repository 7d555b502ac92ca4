"""One typed error tree. Each protocol edge maps these to its own reply in one place;
exception text written here is meant for operators and clerks, never internals."""
from __future__ import annotations


class CivicmailError(Exception):
    """Base of every error civicmail raises on purpose."""


class ConfigError(CivicmailError):
    """The configuration is wrong; the message names the key."""


class UserError(CivicmailError):
    """An operator or client asked for something that cannot be done; the message says why."""


class ValidationError(UserError):
    """A value failed validation (an ID number, an address, a field of a drop row)."""


class NotFound(UserError):
    """The thing asked for does not exist."""


class Conflict(UserError):
    """The thing would clash with one that exists (a duplicate ID number or address)."""


class AuthenticationFailed(CivicmailError):
    """Wrong credentials, or an account that may not log in. Deliberately vague."""


class Throttled(CivicmailError):
    """Too many attempts; try again later."""


class StorageError(CivicmailError):
    """The store could not complete a write; nothing was half-written (the transaction rolled back)."""


class LimitExceeded(UserError):
    """A per-account or per-command limit (folders, their names, a search's size) would be passed;
    the message names the limit."""


class UnknownEncoding(UserError):
    """RFC 3516 4.3: a part's Content-Transfer-Encoding is one the server cannot decode."""


class Unconvertible(UserError):
    """RFC 3516 4.4: NUL octets where no transfer encoding can carry them (in a header, or in a
    part that claims to be base64 or quoted-printable already)."""


class BadUrl(UserError):
    """RFC 4469 5: a CATENATE URL that names no message part this user can read (another user,
    a folder or message that does not exist, a stale UIDVALIDITY); ``url`` is the one refused."""

    def __init__(self, url: str) -> None:
        super().__init__("bad URL")
        self.url = url


class MessageTooBig(UserError):
    """A message built by the server (RFC 4469 CATENATE) would pass the largest APPEND."""


class QuotaExceeded(UserError):
    """The mailbox is over its quota."""


class StoreUnavailable(StorageError):
    """The database did not answer in time, or the connection to it failed: try again later
    (SMTP ``451 4.3.0``, IMAP ``NO [UNAVAILABLE]``, RFC 5530). A write that raised this was not
    committed, and will not be (mailserver/store/outage.py)."""


class SpecialUseRefused(UserError):
    """A special-use attribute (RFC 6154) that a folder cannot be given here (IMAP ``NO [USEATTR]``)."""


class MetadataTooLarge(UserError):
    """RFC 5464 4.3: a METADATA value past imap.metadata_max_size (IMAP ``NO [METADATA MAXSIZE n]``);
    nothing of the command was stored. ``limit``: the largest value the server takes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a METADATA value has at most {limit} bytes")
        self.limit = limit


class MetadataTooMany(UserError):
    """RFC 5464 4.3: more METADATA entries than imap.metadata_max_entries per account (IMAP
    ``NO [METADATA TOOMANY]``); nothing of the command was stored."""
