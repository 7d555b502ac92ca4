"""Reading a vote out of a reply, forgivingly: "1A 2C", "1:A", "1. a", one per line, full-width
"１Ａ", Chinese punctuation; quoted lines (">") and everything after a signature separator
("-- ") or a client's quoted-original banner are ignored.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

#: lines after which a client has put the message being replied to, or a signature
_CUT = re.compile(
    r"^(--\s*$|-----\s*original message|_{5,}|on .+ wrote:\s*$|.*在.+写道[:：]?\s*$|发件人[:：]|from:\s.+@)",
    re.IGNORECASE)
# a question number, an optional separator, then a letter (survey) or a digit 1-9 (appraisal)
_ANSWER = re.compile(r"(?<![0-9A-Za-z])(\d{1,3})\s*[:.\-=)、，,]?\s*([A-Za-z]|[1-9])(?![0-9A-Za-z])")


@dataclass
class ParsedVote:
    answers: dict[int, str] = field(default_factory=dict)
    #: tokens that name a question or a choice that does not exist
    unknown: list[str] = field(default_factory=list)


def vote_lines(text: str) -> list[str]:
    """The lines the voter wrote: NFKC (full-width to ASCII), no quotes, nothing after a cut."""
    out = []
    for line in unicodedata.normalize("NFKC", text).splitlines():
        if _CUT.match(line.strip()):
            break
        if line.lstrip().startswith(">"):
            continue
        out.append(line)
    return out


def parse_vote(text: str, choices_per_question: list[list[str]]) -> ParsedVote:
    """Answers keyed by question number (1-based); a later answer to a question replaces an earlier.

    ``choices_per_question``: the valid choice codes of each question ("A".."D", or "1".."5").
    """
    vote = ParsedVote()
    for line in vote_lines(text):
        for m in _ANSWER.finditer(line):
            number, choice = int(m.group(1)), m.group(2).upper()
            if not 1 <= number <= len(choices_per_question):
                if choice.isalpha():  # "4B" on a three-question ballot; "2023" in prose is not a vote
                    vote.unknown.append(f"{number}{choice}")
                continue
            if choice not in choices_per_question[number - 1]:
                vote.unknown.append(f"{number}{choice}")
                continue
            vote.answers[number] = choice
    return vote
