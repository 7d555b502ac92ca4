"""A tiny Markdown subset for bulletins: headings, paragraphs, lists, links, **bold**.

(No Markdown library is installed and bulletins need little.) ``to_text`` gives the plain
part (links as "text <url>"), ``to_html`` a simple HTML part; everything is escaped.
"""
from __future__ import annotations

import html
import re

_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")


def title_and_body(source: str) -> tuple[str, str]:
    """The first heading (or first line) is the subject; the rest is the body."""
    lines = source.replace("\r\n", "\n").strip().split("\n")
    first = lines[0] if lines else ""
    m = _HEADING.match(first)
    return (m.group(2) if m else first.strip()), "\n".join(lines[1:]).strip("\n")


def _blocks(source: str) -> list[tuple[str, list[str]]]:
    """(kind, lines): kind is h1..h6, ul, ol or p."""
    blocks: list[tuple[str, list[str]]] = []
    for line in source.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            blocks.append(("", []))
            continue
        if m := _HEADING.match(line):
            blocks.append((f"h{len(m.group(1))}", [m.group(2)]))
            continue
        for kind, pattern in (("ul", _BULLET), ("ol", _NUMBERED)):
            if m := pattern.match(line):
                if blocks and blocks[-1][0] == kind:
                    blocks[-1][1].append(m.group(1))
                else:
                    blocks.append((kind, [m.group(1)]))
                break
        else:
            if blocks and blocks[-1][0] == "p":
                blocks[-1][1].append(line.strip())
            else:
                blocks.append(("p", [line.strip()]))
    return [b for b in blocks if b[0]]


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _LINK.finditer(text):
        out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(text[pos:m.start()])))
        url = m.group(2)
        if not re.match(r"(?i)^(https?:|mailto:)", url):
            url = "#"  # no javascript: and friends
        out.append(f'<a href="{html.escape(url)}">{html.escape(m.group(1))}</a>')
        pos = m.end()
    out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(text[pos:])))
    return "".join(out)


def _inline_text(text: str) -> str:
    return _BOLD.sub(r"\1", _LINK.sub(r"\1 <\2>", text))


def to_html(source: str) -> str:
    parts = []
    for kind, lines in _blocks(source):
        if kind in ("ul", "ol"):
            items = "".join(f"<li>{_inline_html(i)}</li>" for i in lines)
            parts.append(f"<{kind}>{items}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{'<br>'.join(_inline_html(line) for line in lines)}</p>")
        else:
            parts.append(f"<{kind}>{_inline_html(lines[0])}</{kind}>")
    return "<!DOCTYPE html>\n<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"


def to_text(source: str) -> str:
    parts = []
    for kind, lines in _blocks(source):
        if kind == "ul":
            parts.append("\n".join(f"  • {_inline_text(i)}" for i in lines))
        elif kind == "ol":
            parts.append("\n".join(f"  {n}. {_inline_text(i)}" for n, i in enumerate(lines, 1)))
        elif kind == "p":
            parts.append("\n".join(_inline_text(line) for line in lines))
        else:
            heading = _inline_text(lines[0])
            parts.append(heading + ("\n" + "=" * min(len(heading) * 2, 60) if kind in ("h1", "h2") else ""))
    return "\n\n".join(parts) + "\n"
