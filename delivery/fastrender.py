"""A notice template flattened once per drop into constant text and the row's fields.

Most notice templates (``templates/<type>/``) are a layout with blocks whose only per-row parts
are ``{{ field }}`` and ``{{ field|cn_date }}``; the agency, the notice and the city are the same
in every notice of a drop. Jinja renders such a template by building a context and running two
generators (child and layout) per notice; this module reads the template's syntax tree once
instead, resolves ``extends`` and the blocks, evaluates everything that does not depend on the
row (through the sandbox, as Jinja would), and keeps a list of text pieces and row fields. A
notice is then a join of those pieces and its fields, formatted exactly as Jinja's generated code
formats them (``str``, or ``markupsafe.escape`` where the template autoescapes).

Anything else (``if``, ``for``, ``set``, calls, arithmetic, ``super()``, a name the row does not
have, a filter not known to be pure) makes the template ``Unsupported`` and it is rendered by
Jinja as before. ``tests/delivery/test_fastrender.py`` holds every template of every notice type
equal to Jinja's output.
"""
from __future__ import annotations

from typing import Any, Callable

from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

#: filters a flattened template may apply to a row field: pure functions of the value
ROW_FILTERS = frozenset({"cn_date", "yuan"})


class Unsupported(Exception):
    """The template has a construct this module does not flatten (Jinja renders it)."""


class Flat:
    """A template as pieces: text (str) and row fields (name, filter or None)."""

    __slots__ = ("pieces", "autoescape", "fields")

    def __init__(self, pieces: list, autoescape: bool) -> None:
        self.pieces = pieces
        self.autoescape = autoescape
        #: the row fields it reads
        self.fields = frozenset(p[0] for p in pieces if not isinstance(p, str))

    def render(self, values: dict) -> str:
        """The template's output for a row (``values`` holds every field in ``fields``)."""
        fmt = escape if self.autoescape else str
        return "".join([p if p.__class__ is str else
                        fmt(values[p[0]] if p[1] is None else p[1](values[p[0]])) for p in self.pieces])


def flatten(env: SandboxedEnvironment, name: str, constants: dict[str, Any], fields: frozenset[str]) -> Flat:
    """Template ``name`` as a ``Flat``, with ``constants`` (the names every notice of the drop
    shares) evaluated now; ``fields``: the row's names. Unsupported if it cannot be flattened."""
    autoescape = env.autoescape(name) if callable(env.autoescape) else bool(env.autoescape)
    body = _resolved_body(env, name, {})
    pieces: list = []
    _collect(env, body, constants, fields, autoescape, pieces)
    merged: list = []
    for p in pieces:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    return Flat(merged, autoescape)


def _parse(env: SandboxedEnvironment, name: str) -> nodes.Template:
    source, filename, _ = env.loader.get_source(env, name)
    return env.parse(source, name, filename)


def _resolved_body(env: SandboxedEnvironment, name: str, overrides: dict[str, list], depth: int = 0) -> list:
    """The body that renders for template ``name`` with child blocks ``overrides`` (the nearest
    child's block wins, as in Jinja)."""
    if depth > 10:
        raise Unsupported("extends too deep")
    body = _parse(env, name).body
    blocks = {b.name: b.body for b in _blocks(body)}
    if body and isinstance(body[0], nodes.Extends):
        parent = body[0].template
        if not isinstance(parent, nodes.Const) or not isinstance(parent.value, str):
            raise Unsupported("dynamic extends")
        for node in body[1:]:
            # After ``extends`` Jinja renders only the parent: text outside blocks is never output.
            if isinstance(node, nodes.Extends) or not isinstance(node, (nodes.Block, nodes.Output)):
                raise Unsupported(f"{type(node).__name__} beside extends")
        return _resolved_body(env, parent.value, {**blocks, **overrides}, depth + 1)
    if any(isinstance(n, nodes.Extends) or any(True for _ in n.find_all(nodes.Extends)) for n in body):
        raise Unsupported("extends not first")
    return _substitute(body, overrides)


def _blocks(body: list) -> list[nodes.Block]:
    found = []
    for node in body:
        if isinstance(node, nodes.Block):
            found.append(node)
        found.extend(node.find_all(nodes.Block))
    return found


def _substitute(body: list, overrides: dict[str, list]) -> list:
    out = []
    for node in body:
        if isinstance(node, nodes.Block):
            if node.required or node.scoped:
                raise Unsupported("required or scoped block")
            out.extend(_substitute(overrides.get(node.name, node.body), overrides))
        else:
            out.append(node)
    return out


def _collect(env: SandboxedEnvironment, body: list, constants: dict, fields: frozenset[str], autoescape: bool,
             pieces: list) -> None:
    for node in body:
        if not isinstance(node, nodes.Output):
            raise Unsupported(type(node).__name__)
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                pieces.append(child.data)
            else:
                pieces.append(_expression(env, child, constants, fields, autoescape))


def _format(value: Any, autoescape: bool) -> str:
    return str(escape(value)) if autoescape else str(value)


def _expression(env: SandboxedEnvironment, node: nodes.Expr, constants: dict, fields: frozenset[str],
                autoescape: bool):
    """Text for an expression of constants only; (field, filter) for a row field."""
    if isinstance(node, nodes.Const):
        return _format(node.value, autoescape)
    if isinstance(node, nodes.Name) and node.name in constants:
        return _format(constants[node.name], autoescape)
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name in constants:
        value = env.getattr(constants[node.node.name], node.attr)  # the sandbox's own check
        if isinstance(value, env.undefined):
            raise Unsupported(f"{node.node.name}.{node.attr} undefined")
        return _format(value, autoescape)
    if isinstance(node, nodes.Name) and node.name in fields:
        return (node.name, None)
    if (isinstance(node, nodes.Filter) and node.name in ROW_FILTERS and node.name in env.filters
            and isinstance(node.node, nodes.Name) and node.node.name in fields and node.node.name not in constants
            and not (node.args or node.kwargs or node.dyn_args or node.dyn_kwargs)):
        fn: Callable = env.filters[node.name]
        return (node.node.name, fn)
    raise Unsupported(type(node).__name__)
