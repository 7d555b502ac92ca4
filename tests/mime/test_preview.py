"""The preview's reading of lines (``preview._reader_text``), which stops once it has its 256
characters, held against reading every line as it was done before (the oracle here)."""
from __future__ import annotations

from hypothesis import example, given, settings, strategies as st

from mailserver.mime import make_preview
from mailserver.mime.preview import MAX_CHARS, _reader_text


def every_line_read(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.rstrip() == "--":
            break  # a signature follows
        if not line.lstrip().startswith(">"):
            lines.append(line)
    return " ".join(" ".join(lines).split())[:MAX_CHARS]


#: lines of words, blanks of several kinds, quoted lines, signatures and line breaks of every kind
_pieces = st.sampled_from(["word", "长句子", " ", "  ", "\t", "\u3000", "\xa0", "> quoted", ">", "--", "-- ", "\r\n",
                           "\n", "\r", "\x0b", "\x1c", "\u2028", "x" * 120, " " * 300, "a\u0301"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_pieces, max_size=120).map("".join))
@example("a line of a notice, 64 bytes long, to make the message 4 KB....\r\n" * 62)
@example(("x" * 255 + "\n") + "y\n")
@example(("x" * 254 + "\n") + "y\n" + "z\n")
@example(" " * 10_000 + "\nlast")
@example("> quoted\n" * 500 + "the reply\n-- \nsignature")
def test_reading_lines_until_the_preview_is_full_gives_what_reading_every_line_gave(text):
    assert _reader_text(text) == every_line_read(text)


def test_a_long_message_has_a_preview_of_its_first_256_characters():
    raw = (b"From: a@example.cn\r\nSubject: s\r\n\r\n" + b"> an earlier message\r\n"
           + b"".join(b"line %d of the notice\r\n" % i for i in range(2000)))
    preview = make_preview(raw)
    assert len(preview) == MAX_CHARS
    assert preview.startswith("line 0 of the notice line 1 of the notice")
    assert "earlier" not in preview
