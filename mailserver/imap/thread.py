"""THREAD (RFC 5256 section 3): ORDEREDSUBJECT and REFERENCES over the fields cached at
delivery, and the thread-list syntax of the answer.

Pure functions over plain values; nothing here recurses (a thread may be 100,000 messages
deep), so no folder can exhaust the stack.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

#: how far up the tree a link is checked for a loop (REFERENCES step 1): a reply chain that
#: arrives out of order deeper than this is cut there rather than cost time quadratic in the
#: folder (in order, the common case, needs no walk at all)
MAX_ANCESTOR_WALK = 1000


class ThreadMessage(NamedTuple):
    """What threading reads of one message."""

    #: the number answered (a sequence number, or a UID for UID THREAD), and the tie-breaker
    number: int
    seq: int
    #: RFC 5256 2.2 sent date (the Date field, else INTERNALDATE), seconds
    sent: int
    #: base subject key, and whether Re:/Fwd: was removed to find it
    subject: str
    reply: bool
    message_id: str | None = None
    #: References (else In-Reply-To), oldest first
    references: Sequence[str] = ()


# -- what both algorithms read ---------------------------------------------------------------------

class _Tree:
    """Containers by index: 0 .. n-1 are the messages (in input order), dummies come after.
    Only containers with children have a list of them (most messages have none)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.parent: list[int] = [-1] * n
        self.children: dict[int, list[int]] = {}

    def dummy(self) -> int:
        self.parent.append(-1)
        return len(self.parent) - 1

    def would_loop(self, parent: int, child: int) -> bool:
        """Linking would make a loop: ``parent`` is ``child`` or one of its descendants (or
        lies deeper than MAX_ANCESTOR_WALK, see there)."""
        if parent == child:
            return True
        if child not in self.children:
            return False  # nothing below the child: nothing to loop through
        node, steps = self.parent[parent], 0
        while node != -1:
            if node == child or steps >= MAX_ANCESTOR_WALK:
                return True
            node, steps = self.parent[node], steps + 1
        return False

    def link(self, parent: int, child: int) -> None:
        self.parent[child] = parent
        kids = self.children.get(parent)
        if kids is None:
            self.children[parent] = [child]
        else:
            kids.append(child)

    def unlink(self, child: int) -> None:
        parent = self.parent[child]
        if parent != -1:
            kids = self.children[parent]
            kids.remove(child)
            if not kids:
                del self.children[parent]
            self.parent[child] = -1


class Columns(NamedTuple):
    """The messages to thread, one list per field, in mailbox order (what ``references_of``
    reads: no object per message)."""

    numbers: list[int]
    #: (sent date, sequence number): the sibling order (RFC 5256 2.2)
    order: list[tuple[int, int]]
    subjects: list[str]
    replies: list[bool]
    message_ids: list[str | None]
    #: References (else In-Reply-To) ids separated by spaces, oldest first
    references: list[str]


def columns(messages: list[ThreadMessage]) -> Columns:
    return Columns([m.number for m in messages], [(m.sent, m.seq) for m in messages], [m.subject for m in messages],
                   [m.reply for m in messages], [m.message_id for m in messages],
                   [" ".join(m.references) for m in messages])


# -- ORDEREDSUBJECT -------------------------------------------------------------------------------

def ordered_subject(messages: list[ThreadMessage]) -> str:
    return ordered_subject_of(columns(messages))


def ordered_subject_of(cols: Columns) -> str:
    """RFC 5256 ORDEREDSUBJECT: messages by base subject then sent date; one thread per base
    subject, its first message the parent of all the others; threads by their first message's
    sent date."""
    subjects, order, numbers = cols.subjects, cols.order, cols.numbers
    ordered = sorted(range(len(numbers)), key=lambda i: (subjects[i], order[i]))
    threads: list[list[int]] = []
    for i in ordered:
        if threads and subjects[threads[-1][0]] == subjects[i]:
            threads[-1].append(i)
        else:
            threads.append([i])
    threads.sort(key=lambda t: order[t[0]])
    out = []
    for t in threads:
        head = numbers[t[0]]
        if len(t) == 1:
            out.append(f"({head})")
        elif len(t) == 2:
            out.append(f"({head} {numbers[t[1]]})")
        else:
            out.append(f"({head} " + "".join(f"({numbers[i]})" for i in t[1:]) + ")")
    return "".join(out)


# -- REFERENCES -----------------------------------------------------------------------------------

def references(messages: list[ThreadMessage]) -> str:
    """RFC 5256 REFERENCES of ThreadMessages (``references_of`` does the work)."""
    return references_of(columns(messages))


def references_of(cols: Columns) -> str:
    """RFC 5256 REFERENCES: threads from Message-ID / References / In-Reply-To, dummy parents
    pruned, threads of one base subject merged, siblings by sent date."""
    n = len(cols.numbers)
    tree = _Tree(n)
    # (1) Each message id names the first message that has it (a later duplicate is a message
    # of its own, as if given a unique id); an id no message has becomes a dummy when referred to.
    by_id: dict[str, int] = {}
    for i, mid in enumerate(cols.message_ids):
        if mid and mid not in by_id:
            by_id[mid] = i
    parent = tree.parent
    for i, refs in enumerate(cols.references):
        if not refs:
            if parent[i] != -1:
                tree.unlink(i)  # (1.B) no references: no parent
            continue
        prev = -1
        for ref in refs.split():  # (1.A) each reference the parent of the next
            node = by_id.get(ref)
            if node is None:
                node = by_id[ref] = tree.dummy()
            if prev != -1 and parent[node] == -1 and not tree.would_loop(prev, node):
                tree.link(prev, node)
            prev = node
        # (1.B) the last reference is the parent; it takes precedence over links made by 1.A
        if parent[i] != prev:
            tree.unlink(i)
            if not tree.would_loop(prev, i):
                tree.link(prev, i)
    roots = _prune(tree)  # (2), (3)
    order = cols.order
    children = tree.children

    def when(node: int) -> tuple[int, int]:
        return order[node] if node < n else order[children[node][0]]

    # (4) the root's children by sent date (a dummy by its first child, its children sorted)
    for node in roots:
        if node >= n:
            children[node].sort(key=when)
    roots.sort(key=when)
    roots = _merge_subjects(tree, roots, cols)
    # (6) every set of siblings by sent date (a dummy, only ever at the root, by its first child)
    for kids in children.values():
        if len(kids) > 1:
            kids.sort(key=when)
    roots.sort(key=when)
    return _render(tree, roots, cols.numbers)


def _prune(tree: _Tree) -> list[int]:
    """(2) the containers without a parent are the root's children; (3) a dummy without
    children goes, one with children gives them to its parent, except at the root, where it
    stays unless it has only one child. Done as: each message under a dummy goes to its nearest
    ancestor that is a message or a dummy at the root."""
    n = tree.n
    parent, children = tree.parent, tree.children
    dummies = range(n, len(parent))
    moves = []
    for i in range(n):
        p = parent[i]
        if p >= n:
            while p >= n and parent[p] != -1:
                p = parent[p]
            moves.append((i, p))
    root_dummies = [d for d in dummies if parent[d] == -1]
    for d in dummies:
        above = parent[d]
        if -1 < above < n:
            tree.unlink(d)
        children.pop(d, None)
        parent[d] = -1
    for i, p in moves:
        tree.link(p, i)
    roots = [i for i in range(n) if parent[i] == -1]
    for d in root_dummies:
        kids = children.get(d)
        if not kids:
            continue
        if len(kids) == 1:  # a dummy at the root with one child: the child is the root's
            only = kids[0]
            tree.unlink(only)
            roots.append(only)
        else:
            roots.append(d)
    return roots


def _merge_subjects(tree: _Tree, roots: list[int], cols: Columns) -> list[int]:
    """(5): threads under the root with the same base subject gathered."""
    n = tree.n
    children = tree.children
    subjects, replies = cols.subjects, cols.replies

    def first(node: int) -> int:
        return node if node < n else children[node][0]  # a dummy at the root has children

    table: dict[str, int] = {}
    for node in roots:  # (5.B) one thread per subject in the table
        subject = subjects[first(node)]
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (held < n and (node >= n or (replies[held] and not replies[node]))):
            table[subject] = node
    kept = list(roots)
    gone: set[int] = set()
    for node in roots:  # (5.C) the others merged into it
        subject = subjects[first(node)]
        held = table.get(subject) if subject else None
        if held is None or held == node:
            continue
        gone.add(node)
        if held >= n and node >= n:
            for k in children.pop(node):
                tree.link(held, k)
        elif held >= n or (replies[node] and not replies[held]):
            tree.link(held, node)
        else:
            made = tree.dummy()
            gone.add(held)
            tree.link(made, held)
            tree.link(made, node)
            kept.append(made)
            table[subject] = made
    return [r for r in kept if r not in gone] if gone else kept


def _render(tree: _Tree, roots: list[int], numbers: list[int]) -> str:
    """The thread-list of each root (RFC 5256 section 4): a chain of only children flat
    ("(1 2 3)"), two or more children each in its own list ("(1 (2)(3))"), a dummy as the
    lists of its children ("((2)(3))")."""
    n = tree.n
    children = tree.children
    out: list[str] = []
    stack: list[int | str] = list(reversed(roots))
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
            continue
        kids = children.get(node)
        if not kids:
            out.append(f"({numbers[node]})")  # most threads: one message
            continue
        out.append("(")
        stack.append(")")
        if node >= n:
            stack.extend(reversed(kids))
            continue
        while True:
            out.append(str(numbers[node]))
            kids = children.get(node)
            if not kids or len(kids) != 1:
                break
            out.append(" ")
            node = kids[0]
        if kids:
            out.append(" ")
            stack.extend(reversed(kids))
    return "".join(out)


ALGORITHMS: dict[str, Callable[[Columns], str]] = {"ORDEREDSUBJECT": ordered_subject_of, "REFERENCES": references_of}
