"""The REFERENCES algorithm (RFC 5256 section 3) written as the RFC reads, step by step on a
tree of containers (prune in post-order, one container per message found by id): slow, kept as
the oracle that ``mailserver.imap.thread.references`` is held to."""
from __future__ import annotations

from mailserver.imap.thread import ThreadMessage


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
        """"before making message A the parent of B, make sure that A is not a descendent of
        B": every descendant of the child, looked at (no shortcut, no bound)."""
        below, seen = [child], set()
        while below:
            node = below.pop()
            if node == parent:
                return True
            seen.add(node)
            below.extend(k for k in self.children[node] if k not in seen)
        return False

    def link(self, parent: int, child: int) -> None:
        self.parent[child] = parent
        self.children[parent] = self.children[parent] + [child]

    def unlink(self, child: int) -> None:
        if self.parent[child] != -1:
            siblings = self.children[self.parent[child]]
            self.children[self.parent[child]] = [k for k in siblings if k != child]
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
        # "If both messages are dummies, append the current message's children to the children
        # of the message in the subject table ... and then delete the current message."
        rule = "both dummies" if dummy(held) and dummy(node) else "table dummy" if dummy(held) else \
            "current reply" if first(node).reply and not first(held).reply else "new dummy"
        if rule == "both dummies":
            moving, tree.children[node] = tree.children[node], []
            for k in moving:
                tree.link(held, k)
        elif rule in ("table dummy", "current reply"):  # the current message a child of the table's
            tree.link(held, node)
        else:  # "create a new dummy message and make both ... children of the dummy"
            gone.add(held)
            table[subject] = tree.new()
            for k in (held, node):
                tree.link(table[subject], k)
            kept.append(table[subject])
    return [n for n in kept if n not in gone]


def _render(tree: _Tree, roots: list[int], numbers: list[int]) -> str:
    """thread-list = "(" (thread-members / thread-nested) ")"; thread-members = nz-number
    *(SP nz-number) [SP thread-nested]; thread-nested = 2*thread-list (RFC 5256 section 4)."""
    def thread_list(node: int) -> str:
        if tree.msg[node] == -1:
            return "(" + "".join(thread_list(k) for k in tree.children[node]) + ")"
        members = [str(numbers[tree.msg[node]])]
        while len(tree.children[node]) == 1:
            node = tree.children[node][0]
            members.append(str(numbers[tree.msg[node]]))
        nested = "".join(thread_list(k) for k in tree.children[node])
        return "(" + " ".join(members + ([nested] if nested else [])) + ")"

    return "".join(thread_list(r) for r in roots)
