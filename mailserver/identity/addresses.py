"""Mailbox addresses: the default one derived from a registered Chinese name, and checks."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from ..errors import ValidationError

COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 令狐 夏侯 长孙 宇文 司徒 端木 独孤 南宫 轩辕 西门 呼延 百里 东郭 钟离".split()
)
LOCAL_PART = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?\Z")


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "", folded)


@lru_cache(maxsize=65536)  # names repeat: a city has far fewer names than citizens
def base_local_part(name: str) -> str:
    """张伟 -> zhang.wei; 欧阳娜娜 -> ouyang.nana; Zoë Åström -> zoe.astrom."""
    name = name.strip()
    if not name:
        raise ValidationError("name is empty")
    if any("\u4e00" <= ch <= "\u9fff" for ch in name):
        # Imported here: its dictionaries cost ~56 MiB, which only registering citizens needs
        # (not the servers or the pipeline's workers, which import this module too).
        from pypinyin import lazy_pinyin

        han = "".join(ch for ch in name if not ch.isspace() and ch not in "·•.")
        cut = 2 if han[:2] in COMPOUND_SURNAMES and len(han) > 2 else 1
        surname = _ascii("".join(lazy_pinyin(han[:cut])))
        given = _ascii("".join(lazy_pinyin(han[cut:])))
        parts = [p for p in (surname, given) if p]
    else:
        parts = [p for p in (_ascii(w) for w in re.split(r"[\s·.\-_]+", name)) if p]
    local = ".".join(parts)[:60].strip(".")
    return local or "citizen"


#: where optional statements' List-Unsubscribe points (``unsubscribe@domain``, answered by the
#: citizen services; `init` and `serve` make it)
STATEMENTS_LOCAL_PART = "unsubscribe"


def statements_address(domain: str) -> str:
    return f"{STATEMENTS_LOCAL_PART}@{domain}"


def numbered(base: str, n: int) -> str:
    """The n-th holder of a base name: zhang.wei, zhang.wei2, zhang.wei3 ..."""
    return base if n <= 1 else f"{base}{n}"


@lru_cache(maxsize=4096)  # a handful of domains recur (the city's own, its correspondents')
def normalise_domain(domain: str) -> str:
    """The one form of a domain name that every comparison uses (the anti-forgery check, local
    domains, recipients, logins): lower-case, in ASCII (IDNA: 市政.example is xn--7st04n.example,
    full-width letters and dots are folded) and without the trailing dot of a fully qualified
    name, so that ``civic.example.`` is ``civic.example``. What IDNA cannot encode (an empty or
    over-long label, an address literal) is only lower-cased and trimmed."""
    text = domain.strip().lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return text.rstrip(".")


def normalise_address(address: str) -> str:
    """``local@domain`` with the local part lower-cased (mailboxes here are case-insensitive) and
    the domain normalised; a string without ``@`` only lower-cased."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return domain.lower()
    return f"{local.lower()}@{normalise_domain(domain)}"


def normalise_login(login: str) -> str:
    """The one form of a login name, used by the password lookup and the login throttle alike
    (were they to differ, a spelling the throttle does not know would reach a locked account):
    trimmed and lower-cased, an address's domain normalised (`` Wang.Fang@Civic.Example.`` is
    ``wang.fang@civic.example``); an agency id only trimmed and lower-cased."""
    return normalise_address(login)


def normalize_address(address: str, domain: str) -> str:
    """Lower-case; add the city's domain to a bare local part; refuse what is not an address."""
    address = address.strip().lower()
    if "@" not in address:
        address = f"{address}@{domain}"
    local, _, dom = address.rpartition("@")
    if not LOCAL_PART.match(local) or ".." in local:
        raise ValidationError(f"{address!r} is not a valid mailbox address (letters, digits, '.', '-', '_')")
    if not re.match(r"^[a-z0-9.-]+\.[a-z]{2,}$", dom):
        raise ValidationError(f"{address!r}: {dom!r} is not a domain name")
    return address
