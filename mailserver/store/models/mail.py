"""Mailboxes: folders, messages and the content they point to."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, ForeignKeyConstraint, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from ...config import FOLDER_NAME_COLUMN
from ...mime.sortkeys import MAX_KEY_CHARS, MAX_MSGID_CHARS
from .base import Base, BigId, utcnow

#: column widths of the SORT keys and message ids (characters)
SORT_KEY_COLUMN = MAX_KEY_CHARS
MSGID_COLUMN = MAX_MSGID_CHARS

# System flags as bits of Message.flags; keywords go in Message.keywords (space-separated).
SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = 1, 2, 4, 8, 16
FLAG_BITS = {"\\Seen": SEEN, "\\Answered": ANSWERED, "\\Flagged": FLAGGED, "\\Deleted": DELETED, "\\Draft": DRAFT}

#: (name, special-use attribute) of the folders every account has
DEFAULT_FOLDERS = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


class Folder(Base):
    __tablename__ = "folder"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    #: full hierarchical name with "/" as the separator; INBOX is always "INBOX"
    name: Mapped[str] = mapped_column(String(FOLDER_NAME_COLUMN))
    special_use: Mapped[str | None] = mapped_column(String(16))
    uidvalidity: Mapped[int] = mapped_column(BigId)
    uidnext: Mapped[int] = mapped_column(BigId, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigId, default=1)
    #: sum of the sizes of the messages in the folder (for QUOTA)
    total_size: Mapped[int] = mapped_column(BigId, default=0)
    message_count: Mapped[int] = mapped_column(BigId, default=0)
    #: highest UID some session has already seen as \Recent (RFC 3501: one session gets each)
    recent_uid: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    #: on the INBOX row only: the highest UIDVALIDITY this account ever gave a folder, so that a
    #: deleted and recreated folder never reuses one (RFC 3501 2.3.1.1)
    uidvalidity_mark: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    #: expunges at or below this MODSEQ may have left no tombstone (they happened before
    #: tombstones were kept): QRESYNC from an older MODSEQ reports every UID not present
    tombstone_floor: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_folder_account_name"),
                      # what ``message``'s foreign key (account_id, folder_id) refers to (migration 0027)
                      UniqueConstraint("account_id", "id", name="uq_folder_account_id_id"))


class MailboxSubscription(Base):
    """A name on an account's IMAP subscription list (RFC 3501 6.3.6): a list of its own, not a
    mark on the folder, since a name may be subscribed while no folder has it (deleted, or not
    yet made) and DELETE must not unsubscribe it. RENAME moves the subscriptions of the folder
    and of its children along."""

    __tablename__ = "mailbox_subscription"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True,
                                            autoincrement=False)
    name: Mapped[str] = mapped_column(String(FOLDER_NAME_COLUMN), primary_key=True)


#: characters of a METADATA entry name (RFC 5464 3.2), "/private/..." or "/shared/..."
ANNOTATION_NAME_COLUMN = 1024


class Annotation(Base):
    """An RFC 5464 METADATA entry of an account: on the server (``folder_id`` NULL) or on one of
    its folders. The name keeps its "/private" or "/shared" root: with no shared mailboxes
    here, both are the account's own. A folder's entries go with it on DELETE and stay with its
    id on RENAME. At most one row per (account, folder, name): the writers hold the account's
    INBOX row while they write (``store/annotations.py``)."""

    __tablename__ = "annotation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    #: lower case (entry names are case-insensitive)
    name: Mapped[str] = mapped_column(String(ANNOTATION_NAME_COLUMN))
    value: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_annotation_account_folder_name", "account_id", "folder_id", "name"),
                      Index("ix_annotation_folder", "folder_id"))


class Content(Base):
    """The raw RFC 5322 bytes of a message, stored once however many mailboxes hold it,
    with the structure IMAP FETCH needs, computed at delivery so that FETCH never re-parses."""

    __tablename__ = "content"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: the bytes, when they are kept in the database (``blobs.backend = "database"``, or not yet
    #: moved out by ``civicmail blobs migrate``); NULL when they are in the blob store
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: the SHA-256 (hex) of the bytes in the blob store (``store/blobs.py``); NULL: see ``raw``
    blob_key: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    #: bytes up to and including the blank line that ends the header
    header_size: Mapped[int] = mapped_column(Integer)
    #: IMAP ENVELOPE, BODY and BODYSTRUCTURE, serialised as the server sends them
    envelope: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    bodystructure: Mapped[str | None] = mapped_column(Text)
    #: decoded text of subject, addresses and text parts, for SEARCH (lower-cased)
    search_text: Mapped[str | None] = mapped_column(Text)
    #: RFC 8970 PREVIEW text (None: made before previews were cached; FETCH makes one)
    preview: Mapped[str | None] = mapped_column(Text)
    refcount: Mapped[int] = mapped_column(Integer, default=1)

    # the bodies still in the database, for their move to the blob store and its progress: empty
    # once they are all out, so neither scans the table
    __table_args__ = (Index("ix_content_in_database", "id", sqlite_where=text("raw IS NOT NULL"),
                            postgresql_where=text("raw IS NOT NULL")),)


class ContentSort(Base):
    """What SORT and THREAD read of a content row (``mime.sortkeys``; strings as i;unicode-casemap
    keys), computed with it at delivery. A narrow table of its own: sorting a folder reads these
    few short values per message, never the content rows (whose bytes would have to be read past,
    or their overflow pages followed, to reach columns stored after them)."""

    __tablename__ = "content_sort"

    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), primary_key=True,
                                            autoincrement=False)
    #: the base subject (RFC 5256 2.1) and whether a Re:/Fwd: marker was removed to find it
    sort_subject: Mapped[str] = mapped_column(String(SORT_KEY_COLUMN))
    sort_reply: Mapped[bool] = mapped_column(Boolean)
    #: the Date field in seconds since the epoch, NULL if absent or unreadable
    sort_date: Mapped[int | None] = mapped_column(BigId)
    #: addr-mailbox of the first From / To / Cc address; RFC 5957 display names of From / To
    sort_from: Mapped[str] = mapped_column(String(SORT_KEY_COLUMN))
    sort_to: Mapped[str] = mapped_column(String(SORT_KEY_COLUMN))
    sort_cc: Mapped[str] = mapped_column(String(SORT_KEY_COLUMN))
    display_from: Mapped[str] = mapped_column(String(SORT_KEY_COLUMN))
    display_to: Mapped[str] = mapped_column(String(SORT_KEY_COLUMN))
    #: Message-ID, and References (else In-Reply-To) as ids separated by spaces
    message_id: Mapped[str | None] = mapped_column(String(MSGID_COLUMN))
    thread_refs: Mapped[str] = mapped_column(Text)


class Message(Base):
    """One message in one folder. ``account_id`` is its folder's account (migration 0027; the
    foreign key ``(account_id, folder_id)`` holds them together), and every hot statement names
    it: on PostgreSQL the table is hash-partitioned by it (migration 0028: primary key
    ``(account_id, id)``, every index in its partition), so a statement with the account reads
    one partition; SQLite keeps one table (docs/scale.md, "Hash partitioning")."""

    __tablename__ = "message"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(BigId)
    folder_id: Mapped[int] = mapped_column(BigId)
    uid: Mapped[int] = mapped_column(BigId)
    modseq: Mapped[int] = mapped_column(BigId, default=1)
    flags: Mapped[int] = mapped_column(Integer, default=0)
    keywords: Mapped[str | None] = mapped_column(String(1000))
    internaldate: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: RFC 8514 SAVEDATE: when the message was saved into this folder (delivery, APPEND, COPY,
    #: MOVE); messages older than migration 0011 have their INTERNALDATE
    savedate: Mapped[dt.datetime | None] = mapped_column(default=utcnow)
    size: Mapped[int] = mapped_column(Integer)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id"), index=True)

    __table_args__ = (
        ForeignKeyConstraint(["account_id", "folder_id"], ["folder.account_id", "folder.id"], ondelete="CASCADE",
                             name="fk_message_account_folder_folder"),
        UniqueConstraint("account_id", "folder_id", "uid", name="uq_message_account_folder_uid"),
        # what changed since the MODSEQ a session last saw (cross-session updates)
        Index("ix_message_account_folder_modseq", "account_id", "folder_id", "modseq"),
    )


class Expunged(Base):
    """A tombstone: a message left a folder (EXPUNGE, UID EXPUNGE, CLOSE, MOVE, RENAME of INBOX)
    at this MODSEQ, the folder's HIGHESTMODSEQ that the removal assigned. QRESYNC (RFC 7162
    3.2) reads it to tell a reconnecting client which of the UIDs it knew are gone. The primary
    key is the index of "folder_id, modseq > n"."""

    __tablename__ = "expunged"

    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"), primary_key=True,
                                           autoincrement=False)
    modseq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    uid: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    #: when; tombstones older than imap.expunge_history_days are pruned (store/tombstones.py)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_expunged_at", "at"),)
