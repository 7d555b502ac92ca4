"""Logging for every `civicmail` command: one record, one line, whatever a client sent.

Log lines carry what clients wrote (addresses, HELO names, login names); a CR, LF or ESC in an
address's quoted local part must not start a forged line or drive the operator's terminal. The
formatter escapes every control character (C0, DEL, C1, the Unicode line and paragraph
separators and the bidirectional overrides) in the message, so no log field can carry one, and
indents a traceback's lines, so only a record's first line starts at column 0. What looks like an
ID number (``idnumber.hide_numbers``: a run of 15 or more digits) is hidden in every line, the
traceback's too: a client writes to its ID number as if it were an address, and an exception's
text may quote a cell of a drop.
"""
from __future__ import annotations

import logging
import re
import sys

from .identity.idnumber import hide_numbers

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: C0 controls, DEL, C1 controls (NEL among them), LINE/PARAGRAPH SEPARATOR, bidi controls
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\r``, ``\\x1b``, ``\\u2028``)."""
    return _UNPRINTABLE.sub(_escaped, text)


def loggable(text: str) -> str:
    """``text`` as a log line may carry it: control characters escaped, ID numbers hidden."""
    return hide_numbers(printable(text))


class OneLineFormatter(logging.Formatter):
    """A record's message on one line, control characters escaped; a traceback or stack below it
    escaped line by line and indented."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = loggable(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        # exc_text is not reused: another handler's formatter may have cached it unescaped
        blocks = [self.formatException(record.exc_info)] if record.exc_info else []
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            text += "".join("\n  " + loggable(line) for line in block.split("\n"))
        return text


#: what the other commands print of a warning on the terminal: the message alone (as Python's
#: last-resort handler did), escaped the same way
CLI_FORMAT = "%(message)s"


def setup_logging(level: str, stream=None, fmt: str = FORMAT) -> None:
    """Log to stderr (or ``stream``) at ``level`` through OneLineFormatter. Every command calls it
    (at warning, with CLI_FORMAT; `serve` again at server.log_level with FORMAT), so no log line
    of any command can carry a client's or a file's control characters. Where logging is already
    set up by someone else (a test's capture), only the level changes."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h.formatter, OneLineFormatter)]
    for handler in ours:
        handler.setFormatter(OneLineFormatter(fmt))
    if not ours:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(OneLineFormatter(fmt))
        logging.basicConfig(handlers=[handler])  # does nothing if the root logger has handlers
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("alembic").setLevel(logging.WARNING)
