"""What LIST and LSUB list (RFC 3501 6.3.8, 6.3.9), with LIST-EXTENDED (RFC 5258) and SPECIAL-USE
(RFC 6154): the names, their attributes and CHILDINFO, from the account's folders and its
subscription list (a list of its own: a subscribed name may have no folder). Pure: the handler
runs it in a store thread, since its cost grows with the names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..store import api
from .commands import ListCmd
from .listmatch import SEP, ListPatterns, parents


@dataclass(frozen=True)
class Listed:
    name: str
    attrs: tuple[str, ...]
    #: RFC 5258 CHILDINFO: the selection options some descendant meets
    childinfo: tuple[str, ...] = ()
    #: a folder has the name (LIST-STATUS reports on it)
    exists: bool = True


def list_line(verb: str, attrs, wire_name: str) -> str:
    """An untagged LIST (or LSUB) response without its extended data."""
    return f'{verb} ({" ".join(attrs)}) "{SEP}" {wire_name}'


def ancestors(name: str) -> Iterator[str]:
    """"a/b" and "a" for "a/b/c"."""
    cut = name.rfind(SEP)
    while cut > 0:
        yield name[:cut]
        cut = name.rfind(SEP, 0, cut)


def wants_subscriptions(cmd: ListCmd) -> bool:
    return cmd.lsub or "SUBSCRIBED" in cmd.select_opts or "SUBSCRIBED" in cmd.return_opts


def listing(store, account_id: int, cmd: ListCmd) -> list[Listed]:
    """The lines of one LIST or LSUB, in name order (blocking: in a store thread)."""
    patterns = ListPatterns(cmd.reference, cmd.patterns)
    subscribed = set(store.subscriptions(account_id)) if wants_subscriptions(cmd) else set()
    if cmd.lsub:
        return lsub(patterns, subscribed)
    return list_extended(cmd, patterns, {f.name: f for f in store.list_folders(account_id)}, subscribed)


def lsub(patterns: ListPatterns, subscribed: set[str]) -> list[Listed]:
    """The subscribed names that match; and (RFC 3501 6.3.9) a parent that matches, is not
    subscribed and has a subscribed child that does not match (foo for foo/bar and "%"),
    with \\Noselect."""
    out: dict[str, tuple[str, ...]] = {}
    for name in subscribed:
        if patterns.matches(name):
            out[name] = ()
            continue
        for parent in ancestors(name):
            if parent not in subscribed and patterns.matches(parent):
                out[parent] = ("\\Noselect",)
    return [Listed(name, out[name]) for name in sorted(out)]


def list_extended(cmd: ListCmd, patterns: ListPatterns, folders: dict[str, api.FolderInfo],
                  subscribed: set[str]) -> list[Listed]:
    """LIST: the folders that match, or with (SUBSCRIBED) the subscribed names that match,
    those without a folder as \\NonExistent; (SPECIAL-USE) keeps the special-use folders;
    RECURSIVEMATCH adds CHILDINFO ("SUBSCRIBED") to a matching name with a subscribed
    descendant, listing it even if it is not subscribed itself (RFC 5258 3.1, 3.5)."""
    only_subscribed = "SUBSCRIBED" in cmd.select_opts
    only_special = "SPECIAL-USE" in cmd.select_opts
    show_subscribed = only_subscribed or "SUBSCRIBED" in cmd.return_opts
    names = set(folders) | subscribed if only_subscribed else set(folders)
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in cmd.select_opts:  # the parser let it in only with SUBSCRIBED
        for name in subscribed:
            childinfo.update(ancestors(name))
        names |= childinfo
    with_children = parents(folders)
    out = []
    for name in sorted(names):
        if not patterns.matches(name):
            continue
        folder = folders.get(name)
        selected = (name in subscribed or not only_subscribed) and (
            not only_special or (folder is not None and folder.special_use))
        if not selected and name not in childinfo:
            continue
        if folder is None:
            attrs = ["\\NonExistent"]
        else:
            attrs = ["\\HasChildren" if name in with_children else "\\HasNoChildren"]
            if folder.special_use:
                attrs.append(folder.special_use)
        if show_subscribed and name in subscribed:
            attrs.append("\\Subscribed")
        out.append(Listed(name, tuple(attrs), ("SUBSCRIBED",) if name in childinfo else (), folder is not None))
    return out
