"""COMPRESS=DEFLATE (RFC 4978): raw DEFLATE in both directions after ``COMPRESS DEFLATE``.

Outgoing, the session compresses each batch it writes and ends it with ``Z_SYNC_FLUSH``, so the
client can decode everything it has been sent (``session.flush``). Incoming, ``InflatingReader``
stands in for the ``asyncio.StreamReader`` the framer reads from: it offers the same two calls
(``readuntil``, ``readexactly``) with the same errors, and inflates on demand, never more than the
caller still needs (and at most 256 KiB at a time). A "zip bomb" therefore meets the same line and literal limits as
plain text: an over-long line is inflated and thrown away in bounded pieces, a literal over
``imap.max_literal_size`` is refused by the framer before a byte of it is inflated. No task and
no second buffer per session: what is still compressed stays in the socket's StreamReader (which
pauses the socket as usual) or in zlib's ``unconsumed_tail``.

Memory: zlib's defaults cost 256 KiB for deflate alone; our deflate uses a 4 KiB window and
memLevel 5 (about 38 KiB); inflate must accept any window the client uses (``wbits=-15``,
a 32 KiB window, about 40 KiB). Measured with 1,000 sessions in IDLE: 43 KiB of RSS more per
session than without COMPRESS (zlib's default deflate: 106 KiB more, before most of its pages are
touched). The 4 KiB window compresses IMAP's output as well as the 32 KiB one (7.1% against 7.2%
for fifty different Chinese multipart notices). Sessions that never COMPRESS create none of this.
"""
from __future__ import annotations

import asyncio
import zlib

from .framing import Closed

#: our deflate: level 6 (zlib's default), a 4 KiB window, memLevel 5 (see the module text)
DEFLATE_LEVEL = 6
DEFLATE_WBITS = -12
DEFLATE_MEMLEVEL = 5
#: the client's deflate may use any window up to 32 KiB (RFC 1951)
INFLATE_WBITS = -15
#: compressed bytes taken from the socket's reader at once
_READ_CHUNK = 16384
#: decompressed bytes made at most by one step (a literal is filled in steps of this size)
_STEP = 256 * 1024


def deflater():
    return zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL)


def deflate(compressor, data: bytes) -> bytes:
    """``data`` compressed and flushed to a byte boundary, so the client can decode all of it."""
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


class InflatingReader:
    """The ``StreamReader`` calls the framer uses, over a raw-DEFLATE stream from ``raw``."""

    __slots__ = ("_raw", "_inflate", "_buffer", "_limit", "_eof")

    def __init__(self, raw: asyncio.StreamReader, limit: int) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(INFLATE_WBITS)
        #: inflated bytes not read yet (named as StreamReader's: STARTTLS's injection check reads it)
        self._buffer = bytearray()
        self._limit = limit
        self._eof = False

    async def _fill(self, want: int) -> None:
        """Inflate up to ``want`` more bytes into the buffer; at least one, or set ``_eof``.

        No state lives across the ``await``: a cancelled read (IDLE's) loses nothing."""
        inflate = self._inflate
        want = max(1, min(want, _STEP))
        while not self._eof:
            data = inflate.unconsumed_tail
            if not data:
                data = await self._raw.read(_READ_CHUNK)
                if not data:
                    self._eof = True
                    return
            try:
                out = inflate.decompress(data, want)
            except zlib.error:
                raise Closed() from None  # not DEFLATE: nothing more can be understood
            if inflate.eof:
                self._eof = True  # the client ended its stream (RFC 4978 has no way back)
            if out:
                self._buffer += out
                return

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """As ``StreamReader.readuntil`` (one-byte separators): LimitOverrunError with what may
        be discarded once more than ``limit`` bytes have no separator, IncompleteReadError at
        the end."""
        buf = self._buffer
        offset = 0
        while True:
            i = buf.find(separator, offset)
            if i >= 0:
                if i > self._limit:
                    raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", i)
                line = bytes(buf[:i + 1])
                del buf[:i + 1]
                return line
            offset = len(buf)
            if offset > self._limit:
                raise asyncio.LimitOverrunError("Separator is not found, and chunk exceed the limit", offset)
            if self._eof:
                partial = bytes(buf)
                buf.clear()
                raise asyncio.IncompleteReadError(partial, None)
            await self._fill(self._limit + 1 - offset)

    async def readexactly(self, n: int) -> bytes:
        buf = self._buffer
        while len(buf) < n:
            if self._eof:
                partial = bytes(buf)
                buf.clear()
                raise asyncio.IncompleteReadError(partial, n)
            await self._fill(n - len(buf))
        data = bytes(buf[:n])
        del buf[:n]
        return data
