"""What the blob store's garbage collector reads (``store/bodies.py``)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


class BlobRelease(Base):
    """A blob key whose content row went (its last message expunged): the collector deletes
    the blob unless another content row holds the same bytes by then."""

    __tablename__ = "blob_release"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    blob_key: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_blob_release_at", "at"),)


class BlobState(Base):
    """One row: ``epoch`` rises with every collection that deleted blobs. A writer reads it
    before putting its blobs and again inside its transaction; if it moved, a collection ran in
    between and the writer puts its blobs again before it commits (``bodies.seal``)."""

    __tablename__ = "blob_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
