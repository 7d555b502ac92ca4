"""The i;unicode-casemap collation (RFC 5051), which SORT and THREAD compare strings with
(RFC 5256 section 3: I18NLEVEL=1 collation).

RFC 5051 section 2 prepares each string as "titlecased canonicalized UTF-8": for each code
point, (a) its simple titlecase mapping (UnicodeData.txt field 14) if it has one, else itself;
(b) that, fully decomposed; the octets of the result in UTF-8 are then compared. What
``casemap`` does, code point by code point, with Python's Unicode 14 tables:

1. titlecase: ``c.title()``, which is the *full* titlecase mapping; where that is longer than one
   code point (SpecialCasing: "ß" -> "Ss", "ﬀ" -> "Ff") the code point has no simple mapping and
   stays itself, so the result is the simple mapping the RFC names;
2. decompose: ``unicodedata.normalize("NFKD", ...)`` of that one code point (compatibility
   decompositions too, as Dovecot does: fullwidth "Ａ" is "A", "㈱" is "(株)"); each code point of
   the decomposition is titlecased again (step 1), since a compatibility decomposition can yield
   lower-case letters ("ﬀ" -> "ff" -> "FF"), so that the key of a key is itself.

No reordering of combining marks across code points happens (the RFC decomposes each code point
alone). Python compares ``str`` by code point, which is the order of their UTF-8 octets, so the
keys sort as the RFC's octet comparison does. CJK ideographs map to themselves (compatibility
ideographs such as U+F900 to their unified form): Chinese text sorts by code point, as in
Dovecot.
"""
from __future__ import annotations

import unicodedata

#: code points whose key is remembered: enough for every script a city's mail uses; past it,
#: keys are computed each time (no sender can make the table grow without bound)
_CACHE_LIMIT = 65536


def _title(c: str) -> str:
    t = c.title()
    return t if len(t) == 1 else c


def _key_of(c: str) -> str:
    decomposed = unicodedata.normalize("NFKD", _title(c))
    return "".join(_title(d) for d in decomposed)


class _Table(dict):
    """code point -> its key, filled on first use (``str.translate`` looks each one up here)."""

    def __missing__(self, code: int) -> str:
        key = _key_of(chr(code))
        if len(self) < _CACHE_LIMIT:
            self[code] = key
        return key


_TABLE = _Table({c: chr(c).upper() for c in range(0x61, 0x7B)})


def casemap(text: str) -> str:
    """The i;unicode-casemap key of ``text``: equal keys are equal strings under the collation,
    and keys order as the collation does."""
    if text.isascii():
        return text.upper()  # ASCII: titlecase is upper case, nothing decomposes
    return text.translate(_TABLE)
