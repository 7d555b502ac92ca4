"""The mail-store interface: what SMTP, the pipeline, the services worker and IMAP ask of the
place mail is kept, and the typed rows that cross it (issue 13 item 1).

``MailStore`` is a ``typing.Protocol`` in the manner of pymap's backends: a narrow set of
blocking operations (callers run them in a thread: ``ServerContext.run`` and its lanes), each
citing the RFC it serves and saying what it raises. ``sqlstore.SqlMailStore`` implements it over
the SQL schema (SQLite or PostgreSQL); a second implementation (bodies in a blob store, an
external store reached by LMTP) implements the same methods. Nothing above this interface names a
table or a column: rows come back as the dataclasses and named tuples below, and a FETCH asks
for the fields of ``FETCH_FIELDS`` by name.

Two kinds of write:
* the store's own transaction: ``deliver``, ``append``, ``store_flags``, ``expunge``, ``copy``,
  the folder operations. They commit, then tell sessions (``hub``), then return.
* inside the caller's transaction (``txn``: a session on the store's database), for writers
  whose own rows must commit with the mail, exactly once: the SMTP committer (its outbound queue
  entry), the pipeline (notice and drop rows), the services worker (the ``service_processed``
  claim). They call ``deliver_in``, commit, then ``changed`` with the folders written.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, NamedTuple, Protocol, Sequence,
                    runtime_checkable)

from ..errors import UserError
from .models.mail import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

if TYPE_CHECKING:
    from array import array

    from ..config import AccountsConfig
    from ..mime import Analyzed
    from .notify import ChangeHub

__all__ = ["MailStore", "NewMessage", "Delivered", "FolderInfo", "FolderStatus", "Snapshot", "Changes", "Stored",
           "Copied", "Appended", "AppendedMany", "Expunged", "ToAppend", "PreparedAppend", "QuotaUsage", "UidRanges", "CannotDelete",
           "HasChildFolders", "SEP", "FETCH_FIELDS", "SORT_VALUES", "SEEN", "ANSWERED", "FLAGGED", "DELETED", "DRAFT"]

#: the hierarchy separator of folder names (names are Unicode; the IMAP edge encodes them)
SEP = "/"

#: (lo, hi) UID ranges, inclusive; how a sequence set reaches the store
UidRanges = Sequence[tuple[int, int]]

#: what ``fetch`` can return of a message, by name (each a field of the row it returns):
#: ``uid``, ``flags`` (the bits SEEN, ANSWERED, FLAGGED, DELETED, DRAFT), ``keywords`` (space-
#: separated, or None), ``modseq`` (RFC 7162), ``internaldate``, ``savedate`` (RFC 8514),
#: ``size``; of its content, cached at delivery: ``envelope``, ``body``, ``bodystructure``
#: (their IMAP text), ``search_text`` (what SEARCH BODY/TEXT reads), ``preview`` (RFC 8970),
#: ``header_size``, ``content_id`` (the same for copies of one message: RFC 8474 EMAILID);
#: and the bytes: ``raw`` (the message), ``header`` (its header alone).
FETCH_FIELDS = frozenset(("uid", "flags", "keywords", "modseq", "internaldate", "savedate", "size", "envelope",
                          "body", "bodystructure", "search_text", "preview", "header_size", "content_id", "raw",
                          "header"))

#: what ``sort_values`` can return of a message (RFC 5256 SORT and THREAD, cached at delivery):
#: ``arrival`` (INTERNALDATE, seconds since the epoch), ``sent`` (the Date field, else arrival),
#: ``size``, ``subject``, ``reply`` (the subject had a reply or forward marker), ``from``,
#: ``to``, ``cc``, ``display_from``, ``display_to`` (RFC 5957), ``message_id``, ``thread_refs``
SORT_VALUES = frozenset(("arrival", "sent", "size", "subject", "reply", "from", "to", "cc", "display_from",
                         "display_to", "message_id", "thread_refs"))


class CannotDelete(UserError):
    """INBOX, a special-use folder, or a folder with children."""


class HasChildFolders(CannotDelete):
    """DELETE of a folder with children (RFC 9051 7.1: NO [HASCHILDREN])."""


# -- rows written -----------------------------------------------------------------------------------

@dataclass
class NewMessage:
    """One message for one mailbox. Several NewMessages may share one ``raw`` (one content row)."""

    account_id: int
    raw: bytes
    analyzed: "Analyzed | None" = None
    folder: str = "INBOX"
    flags: int = 0
    keywords: str | None = None
    internaldate: dt.datetime | None = None
    #: COPY: an existing content row to point at (its refcount is raised) instead of ``raw``;
    #: ``size`` is then the message's size
    reuse_content_id: int = 0
    size: int = 0
    #: the envelope sender, where there is one (SMTP): the Return-Path an external store records
    sender: str = ""
    #: the body's key in the blob store and the collector's epoch seen before it was put there
    #: (``bodies.stage``, before the write transaction); empty: put inside it
    blob_key: str = ""
    blob_epoch: int | None = None
    #: filled in by the store when it is written
    folder_id: int = 0
    uid: int = 0
    message_id: int = 0
    content_id: int = 0

    @property
    def byte_size(self) -> int:
        return self.size if self.reuse_content_id else len(self.raw)


@dataclass(frozen=True)
class Delivered:
    """Where one NewMessage went."""

    account_id: int
    folder_id: int
    uid: int
    message_id: int


class ToAppend(NamedTuple):
    """One message of an APPEND: its bytes, flag bits, keywords (space-separated) and INTERNALDATE."""

    raw: bytes
    flags: int
    keywords: str | None
    internaldate: dt.datetime | None


class PreparedAppend(NamedTuple):
    """The messages of one APPEND parsed and their bodies put in the blob store
    (``MailStore.prepare_append``), ready for ``append``: that work then stays off the write path,
    where on SQLite every writer of the process waits for it."""

    messages: tuple[NewMessage, ...]


class Appended(NamedTuple):
    uidvalidity: int
    uid: int
    #: the appending session holds the new message as \\Recent (it asked to, and every
    #: earlier message had been claimed already)
    recent: bool


class AppendedMany(NamedTuple):
    uidvalidity: int
    #: the new messages' UIDs, in the order they were given
    uids: list[int]
    #: the appending session holds all of them as \\Recent (see Appended)
    recent: bool
    #: where the store knows it: the folder's change by this write alone, as ``changes_since``
    #: would tell it to a session that had seen HIGHESTMODSEQ ``own.highestmodseq - 1`` (the
    #: write raised it by one: no other write came between); a session with another view looks
    own: "Changes | None" = None


class Expunged(list):
    """``expunge``'s answer: the UIDs removed, ascending (a list); ``own``, where the store knows
    it, the folder's change by this write alone (its HIGHESTMODSEQ, UIDNEXT and \\Recent mark;
    no ``present``: the caller's view without these UIDs) for a session that had seen
    HIGHESTMODSEQ ``own.highestmodseq - 1`` (as ``AppendedMany.own``)."""

    def __init__(self, uids: Iterable[int] = (), own: "Changes | None" = None) -> None:
        super().__init__(uids)
        self.own = own


# -- folders ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FolderInfo:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    message_count: int
    total_size: int


@dataclass(frozen=True)
class FolderStatus:
    info: FolderInfo
    unseen: int
    recent: int
    #: messages flagged \\Deleted (RFC 9051 STATUS DELETED)
    deleted: int = 0


class QuotaUsage(NamedTuple):
    """RFC 2087 STORAGE of one account: bytes held in all its folders, and its limit."""

    used: int
    limit: int


# -- a selected folder ------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """What SELECT returns: the folder's counters and its UIDs in order (sequence number = index + 1)."""

    folder: FolderInfo
    uids: "array"
    #: messages with a UID above this are \\Recent for this session
    recent_above: int
    recent: int
    first_unseen_uid: int | None
    keywords: set[str]

    @property
    def unclaimed(self) -> bool:
        """Messages above the folder's \\Recent mark: a SELECT must claim them (``claim_snapshot``)."""
        return bool(self.uids) and self.uids[-1] > self.recent_above


@dataclass
class Changes:
    highestmodseq: int
    uidnext: int
    #: (uid, flags, keywords, modseq) of messages above the session's last known UID
    new: list[tuple[int, int, str | None, int]]
    #: (uid, flags, keywords, modseq) of known messages whose MODSEQ moved
    changed: list[tuple[int, int, str | None, int]]
    #: every UID now in the folder, only when some were expunged (else None)
    present: "array | None"
    #: messages above this UID are \\Recent for the session that claims them (folder.recent_uid)
    recent_uid: int = 0


@dataclass
class Stored:
    #: (uid, flags, keywords, modseq) of every message addressed and not refused by
    #: UNCHANGEDSINCE, changed or not (a changed one has ``modseq_after``)
    rows: list[tuple[int, int, str | None, int]]
    #: the folder's HIGHESTMODSEQ before and after this write: a session that had seen
    #: ``before`` has now seen ``after`` too (its own change needs no second report)
    modseq_before: int
    modseq_after: int
    #: UIDs left alone because their MODSEQ was above UNCHANGEDSINCE (RFC 7162 3.1.3)
    modified: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Copied:
    uidvalidity: int
    source_uids: list[int]
    dest_uids: list[int]
    dest_folder_id: int


@runtime_checkable
class MailStore(Protocol):
    """Where mail is kept. Every method blocks (run it in a thread); ``txn`` is a transaction on
    the store's database that the caller commits. Errors: NotFound (no such folder), Conflict,
    LimitExceeded, SpecialUseRefused, CannotDelete, QuotaExceeded (``errors.py``, each with its
    IMAP and SMTP reply); a failing database raises what ``outage.is_outage`` recognises."""

    #: told after each commit which folders (and accounts' folder lists) changed
    hub: "ChangeHub"

    # -- delivering (SMTP, the pipeline, the services, DSNs) ------------------------------------
    def deliver(self, raw: bytes, account_ids: Sequence[int], folder: str = "INBOX",
                quota_default: int | None = None, analyzed: "Analyzed | None" = None) -> list[Delivered]:
        """One message into each account's ``folder``, in one transaction of its own; QuotaExceeded
        (nothing stored) if one account would go over (``quota_default`` None: not checked)."""
        ...

    def deliver_in(self, txn: Any, messages: Sequence[NewMessage]) -> list[Delivered]:
        """Write ``messages`` in the caller's transaction (UIDs and MODSEQs allocated there, so a
        rollback leaves no trace). The caller commits, then calls ``changed``. NotFound if a
        folder is missing."""
        ...

    def changed(self, folder_ids: Iterable[int]) -> None:
        """After the caller's commit: tell sessions (this process's; other nodes hear the commit)."""
        ...

    def over_quota(self, txn: Any, items: Sequence[tuple[int, Sequence[int]]], quota_default: int) -> set[int]:
        """Indexes of ``items`` ((bytes, account ids) each) that would take one of their accounts
        over its quota, counting the items before them that fit."""
        ...

    def check_quota(self, txn: Any, messages: Sequence[NewMessage], quota_default: int) -> None:
        """QuotaExceeded if ``messages`` together would take an account over its quota."""
        ...

    def quota(self, account_id: int, quota_default: int) -> QuotaUsage:
        """RFC 2087 GETQUOTA: what the account holds and its limit."""
        ...

    def raw_in(self, txn: Any, account_id: int, message_id: int) -> bytes | None:
        """The bytes of one message of the account by its id, in the caller's transaction (None:
        expunged)."""
        ...

    def touch_in(self, txn: Any, messages: Sequence[tuple[int, int]]) -> list[int]:
        """Give messages ((account id, message id) each) a new MODSEQ without changing them
        (whatever follows folders by MODSEQ looks at them again); the folder ids touched."""
        ...

    # -- folders (RFC 3501 6.3) ----------------------------------------------------------------
    def list_folders(self, account_id: int) -> list[FolderInfo]: ...

    def folder_status(self, account_id: int, names: Iterable[str] | None = None) -> list[FolderStatus]:
        """RFC 3501 6.3.10 STATUS of the named folders (all when None), in name order."""
        ...

    def find_folder(self, account_id: int, name: str) -> FolderInfo:
        """NotFound if there is none."""
        ...

    def create_folder(self, account_id: int, name: str, limits: "AccountsConfig",
                      uses: Iterable[str] = ()) -> FolderInfo:
        """RFC 3501 6.3.3, RFC 6154 5.2 (``uses``); superiors are created too."""
        ...

    def delete_folder(self, account_id: int, name: str) -> None:
        """RFC 3501 6.3.4; CannotDelete, HasChildFolders."""
        ...

    def rename_folder(self, account_id: int, old: str, new: str, limits: "AccountsConfig") -> None:
        """RFC 3501 6.3.5 (INBOX's messages move to the new folder)."""
        ...

    def subscriptions(self, account_id: int) -> list[str]: ...

    def subscribe(self, account_id: int, name: str, limits: "AccountsConfig") -> None: ...

    def unsubscribe(self, account_id: int, name: str) -> None: ...

    # -- a selected folder (RFC 3501 6.4, RFC 7162) -------------------------------------------
    def select(self, account_id: int, name: str, readonly: bool, claim: bool = True) -> Snapshot:
        """RFC 3501 6.3.1/6.3.2; SELECT (not ``readonly``) claims the \\Recent messages unless
        ``claim`` is false (then ``claim_snapshot``)."""
        ...

    def claim_snapshot(self, snap: Snapshot) -> Snapshot: ...

    def claim_recent(self, folder_id: int, up_to_uid: int) -> int:
        """Messages up to ``up_to_uid`` are \\Recent for the caller alone; the previous mark."""
        ...

    def changes_since(self, account_id: int, folder_id: int, modseq: int, known_max_uid: int, known_count: int,
                      force: bool = False) -> Changes | None:
        """What changed after ``modseq`` (RFC 7162); None when the folder is gone."""
        ...

    def vanished_since(self, account_id: int, folder_id: int, modseq: int, ranges: UidRanges | None,
                       still_seen: Sequence[int] = ()) -> list[tuple[int, int]]:
        """RFC 7162 3.2.5/3.2.6 VANISHED: UID ranges expunged after ``modseq``."""
        ...

    def fetch(self, account_id: int, folder_id: int, lo_uid: int, hi_uid: int, limit: int, fields: Sequence[str],
              uids: UidRanges | None = None, changedsince: int | None = None,
              within: tuple[int, int] | None = None) -> list | None:
        """Up to ``limit`` rows (``uid`` and ``fields`` from FETCH_FIELDS, by name) of the
        messages with lo_uid <= UID <= hi_uid (and in ``uids``; MODSEQ above ``changedsince``),
        in UID order. ``within`` (messages, bytes): None instead if the messages between the two
        UIDs are more or bigger than that, read with the rows: a FETCH tells a few small bodies
        from a costly job by it."""
        ...

    def search(self, account_id: int, folder_id: int, lo_uid: int, hi_uid: int, fields: Sequence[str],
               match: Callable[[Any], bool], uids: UidRanges | None = None) -> Iterator:
        """RFC 3501 6.4.4: the rows (as ``fetch`` makes them) for which ``match`` is true, in UID
        order, read in batches (the caller decides what matches: the search keys' semantics are
        IMAP's)."""
        ...

    def sort_values(self, account_id: int, folder_id: int, names: Sequence[str], after_uid: int, hi_uid: int,
                    limit: int) -> list[tuple]:
        """RFC 5256: rows ``(uid, *values)`` of SORT_VALUES ``names``, after_uid < UID <= hi_uid."""
        ...

    def message_raw(self, account_id: int, folder_id: int, uid: int) -> bytes:
        """The bytes of one message (b"" if it is gone)."""
        ...

    def store_flags(self, account_id: int, folder_id: int, uids: UidRanges, mode: str, bits: int, keywords: Sequence[str],
                    unchangedsince: int | None = None) -> Stored:
        """RFC 3501 6.4.6 STORE ("+", "-" or "" to replace), RFC 7162 UNCHANGEDSINCE."""
        ...

    def expunge(self, account_id: int, folder_id: int, uids: UidRanges | None = None) -> list[int]:
        """RFC 3501 6.4.3, RFC 4315 UID EXPUNGE: the \\Deleted messages go; their UIDs (an
        ``Expunged`` where the store can tell its own change)."""
        ...

    def copy(self, account_id: int, folder_id: int, uids: UidRanges, dest: str, move: bool,
             quota_default: int) -> Copied:
        """RFC 3501 6.4.7 COPY, RFC 6851 MOVE; the UIDs for RFC 4315 COPYUID."""
        ...

    def prepare_append(self, account_id: int, folder: str, items: Sequence[ToAppend]) -> PreparedAppend:
        """What ``append`` of these messages can do before its write (parse, blob store)."""
        ...

    def append(self, account_id: int, folder: str, items: Sequence[ToAppend] | PreparedAppend, quota_default: int,
               claim_recent: bool = False) -> AppendedMany:
        """RFC 3501 6.3.11 APPEND, RFC 3502 MULTIAPPEND: all or none; UIDs for APPENDUID.
        ``items`` prepared by ``prepare_append`` (for this account and folder) are stored as they are."""
        ...

    # -- how writes share commits -------------------------------------------------------------
    @property
    def batches_writes(self) -> bool:
        """Whether ``batch`` pays: the writes of a thread share one commit (SQLite's one writer)."""
        ...

    def batch(self, durable: bool = True) -> ContextManager[None]:
        """The writes of this thread inside the block share one commit, made when it ends; their
        changes are told after that commit (nothing is told if it fails). ``durable=False``:
        that commit need not be on disk when the block ends (flag changes: groupcommit.py)."""
        ...
