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


# -- ORDEREDSUBJECT -------------------------------------------------------------------------------

def ordered_subject(messages: list[ThreadMessage]) -> str:
    """RFC 5256 ORDEREDSUBJECT: messages by base subject then sent date; one thread per base
    subject, its first message the parent of all the others; threads by their first message's
    sent date."""
    ordered = sorted(messages, key=lambda m: (m.subject, m.sent, m.seq))
    threads: list[list[ThreadMessage]] = []
    for m in ordered:
        if threads and threads[-1][0].subject == m.subject:
            threads[-1].append(m)
        else:
            threads.append([m])
    threads.sort(key=lambda t: (t[0].sent, t[0].seq))
    out = []
    for t in threads:
        head = str(t[0].number)
        if len(t) == 1:
            out.append(f"({head})")
        elif len(t) == 2:
            out.append(f"({head} {t[1].number})")
        else:
            out.append(f"({head} " + "".join(f"({m.number})" for m in t[1:]) + ")")
    return "".join(out)


# -- REFERENCES -----------------------------------------------------------------------------------

class _Tree:
    """Containers by index: a message (``msg`` its index in the input) or a dummy (msg -1)."""

    def __init__(self) -> None:
        self.msg: list[int] = []
        self.parent: list[int] = []
        self.children: list[list[int]] = []

    def new(self, msg: int = -1) -> int:
        self.msg.append(msg)
        self.parent.append(-1)
        self.children.append([])
        return len(self.msg) - 1

    def would_loop(self, parent: int, child: int) -> bool:
        """Linking would make a loop: ``parent`` is ``child`` or one of its descendants (or
        lies deeper than MAX_ANCESTOR_WALK, see there)."""
        if parent == child:
            return True
        if not self.children[child]:
            return False  # nothing below the child: nothing to loop through
        node, steps = self.parent[parent], 0
        while node != -1:
            if node == child or steps >= MAX_ANCESTOR_WALK:
                return True
            node, steps = self.parent[node], steps + 1
        return False

    def link(self, parent: int, child: int) -> None:
        self.parent[child] = parent
        self.children[parent].append(child)

    def unlink(self, child: int) -> None:
        parent = self.parent[child]
        if parent != -1:
            self.children[parent].remove(child)
            self.parent[child] = -1


def references(messages: list[ThreadMessage]) -> str:
    """RFC 5256 REFERENCES: threads from Message-ID / References / In-Reply-To, dummy parents
    pruned, threads of one base subject merged, siblings by sent date."""
    tree = _Tree()
    by_id: dict[str, int] = {}
    # (1) link the messages, in the order of the mailbox
    for i, m in enumerate(messages):
        node = by_id.get(m.message_id) if m.message_id else None
        if node is None or tree.msg[node] != -1:  # none yet, or a duplicate id: a unique one
            node = tree.new(i)
            if m.message_id and m.message_id not in by_id:
                by_id[m.message_id] = node
        else:
            tree.msg[node] = i  # a dummy made by an earlier reference: this message is it
        prev = -1
        for ref in m.references:  # (1.A) each reference the parent of the next
            ref_node = by_id.get(ref)
            if ref_node is None:
                ref_node = by_id[ref] = tree.new()
            if prev != -1 and tree.parent[ref_node] == -1 and not tree.would_loop(prev, ref_node):
                tree.link(prev, ref_node)
            prev = ref_node
        # (1.B) the last reference is the parent; it takes precedence over links made by 1.A
        tree.unlink(node)
        if prev != -1 and not tree.would_loop(prev, node):
            tree.link(prev, node)
    # (2) the messages without a parent are the root's children; (3) prune dummies
    roots = _prune(tree, [n for n in range(len(tree.msg)) if tree.parent[n] == -1])
    sent = [(m.sent, m.seq) for m in messages]

    def when(node: int) -> tuple[int, int]:
        msg = tree.msg[node]
        return sent[msg] if msg != -1 else when(tree.children[node][0])

    # (4) the root's children by sent date (a dummy by its first child, its children sorted)
    for node in roots:
        if tree.msg[node] == -1:
            tree.children[node].sort(key=when)
    roots.sort(key=when)
    roots = _merge_subjects(tree, roots, messages)
    # (6) every set of siblings by sent date, the deepest first (a dummy: by its first child)
    for node in reversed(_preorder(tree, roots)):
        if len(tree.children[node]) > 1:
            tree.children[node].sort(key=when)
    roots.sort(key=when)
    return _render(tree, roots, [m.number for m in messages])


def _preorder(tree: _Tree, roots: list[int]) -> list[int]:
    out: list[int] = []
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(tree.children[node]))
    return out


def _prune(tree: _Tree, roots: list[int]) -> list[int]:
    """(3): a dummy without children goes; one with children gives them to its parent, except
    at the root, where it stays unless it has only one child."""
    for node in reversed(_preorder(tree, roots)):  # children before their parents
        kids = tree.children[node]
        if not any(tree.msg[k] == -1 for k in kids):
            continue
        kept: list[int] = []
        for k in kids:
            if tree.msg[k] == -1:
                kept.extend(tree.children[k])  # already pruned: they hold no dummy
            else:
                kept.append(k)
        for k in kept:
            tree.parent[k] = node
        tree.children[node] = kept
    out: list[int] = []
    for node in roots:
        kids = tree.children[node]
        if tree.msg[node] != -1 or len(kids) > 1:
            out.append(node)
        elif kids:
            tree.parent[kids[0]] = -1
            out.append(kids[0])
    return out


def _merge_subjects(tree: _Tree, roots: list[int], messages: list[ThreadMessage]) -> list[int]:
    """(5): threads under the root with the same base subject gathered."""
    def first(node: int) -> ThreadMessage:
        msg = tree.msg[node]
        return messages[msg if msg != -1 else tree.msg[tree.children[node][0]]]

    def dummy(node: int) -> bool:
        return tree.msg[node] == -1

    table: dict[str, int] = {}
    for node in roots:  # (5.B) one thread per subject in the table
        subject = first(node).subject
        if not subject:
            continue
        held = table.get(subject)
        if held is None or (not dummy(held) and (dummy(node) or (first(held).reply and not first(node).reply))):
            table[subject] = node
    kept = list(roots)
    gone: set[int] = set()
    for node in roots:  # (5.C) the others merged into it
        subject = first(node).subject
        held = table.get(subject) if subject else None
        if held is None or held == node:
            continue
        gone.add(node)
        if dummy(held) and dummy(node):
            for k in tree.children[node]:
                tree.link(held, k)
            tree.children[node] = []
        elif dummy(held) or (messages[tree.msg[node]].reply and not messages[tree.msg[held]].reply):
            tree.link(held, node)
        else:
            made = tree.new()
            gone.add(held)
            tree.link(made, held)
            tree.link(made, node)
            kept.append(made)
            table[subject] = made
    return [n for n in kept if n not in gone]


def _render(tree: _Tree, roots: list[int], numbers: list[int]) -> str:
    """The thread-list of each root (RFC 5256 section 4): a chain of only children flat
    ("(1 2 3)"), two or more children each in its own list ("(1 (2)(3))"), a dummy as the
    lists of its children ("((2)(3))")."""
    out: list[str] = []
    stack: list[int | str] = list(reversed(roots))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        out.append("(")
        stack.append(")")
        node = item
        if tree.msg[node] == -1:
            stack.extend(reversed(tree.children[node]))
            continue
        while True:
            out.append(str(numbers[tree.msg[node]]))
            kids = tree.children[node]
            if len(kids) != 1:
                break
            out.append(" ")
            node = kids[0]
        if kids:
            out.append(" ")
            stack.extend(reversed(kids))
    return "".join(out)


ALGORITHMS: dict[str, Callable[[list[ThreadMessage]], str]] = {"ORDEREDSUBJECT": ordered_subject,
                                                                "REFERENCES": references}
