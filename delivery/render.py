"""Stage `render`: subject, text and HTML of one notice from its row, in a Jinja2 sandbox.

``StrictUndefined``: a field a template names but the row lacks fails the row; it never renders
blank. HTML is autoescaped (a name like ``<b>`` arrives as text); the subject and text are not.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple
from decimal import Decimal
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, select_autoescape
from markupsafe import Markup
from jinja2.sandbox import SandboxedEnvironment

from mailserver.errors import ValidationError
from mailserver.identity.addresses import statements_address

from .catalog import NoticeDefinition
from .fastrender import Flat, Unsupported, flatten
from .reasons import RENDER_FAILED


@dataclass(frozen=True)
class AgencyInfo:
    """Who a notice comes from: the registry's agency and its contact details
    (``templates/agencies.toml``)."""

    id: str
    name: str
    sender: str
    phone: str = ""
    address: str = ""
    hours: str = ""
    website: str = ""
    #: its application address (`application setup`), which application notices name; "" if none
    apply_address: str = ""


class Rendered(NamedTuple):
    subject: str
    text: str
    html: str


CONTACT_TEXT, CONTACT_HTML = "_layout/contact.txt", "_layout/contact.html"


class RenderError(ValidationError):
    """A template could not render this row (a field missing, a template fault)."""


def cn_date(value) -> str:
    """2026年3月5日: how official letters write a date."""
    if isinstance(value, dt.date):
        return f"{value.year}年{value.month}月{value.day}日"
    return str(value)


def yuan(value) -> str:
    """1,234.50: yuan with two decimals and thousands separators."""
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    return str(value)


def make_environment(templates_dir: Path) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        keep_trailing_newline=True,
        # Templates do not change during a run; without this every render of a template that
        # extends or includes another stats the file (two stat calls per notice).
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["cn_date"] = cn_date
    env.filters["yuan"] = yuan
    return env


def _render(template: Template, ctx: dict) -> str:
    """``template.render(ctx)`` without its per-call copy of the environment's globals (a
    ChainMap walked for every notice): the globals are merged into ``ctx`` once per row by
    ``Renderer.context``, and the context is made from ``ctx`` as it stands."""
    env = template.environment
    return env.concat(template.root_render_func(template.new_context(ctx, shared=True)))


class Renderer:
    """The three compiled templates of one notice type (compiled once per process)."""

    def __init__(self, templates_dir: Path, definition: NoticeDefinition, agency: AgencyInfo, city: str,
                 domain: str) -> None:
        env = make_environment(templates_dir)
        self.definition = definition
        self.agency = agency
        self.city = city
        self.constants = {
            "agency": agency,
            "notice": {"id": definition.id, "title": definition.title, "kind": definition.kind,
                       "mandatory": definition.mandatory},
            "city": city,
            # what the text says an optional statement's reader may mail to opt out (List-Unsubscribe)
            "opt_out": {"address": statements_address(domain), "subject": definition.opt_out_subject},
        }
        #: what Template.render would add to every context (range, dict, ...: Jinja's globals)
        self.globals = dict(env.globals)
        try:
            base = definition.folder.name
            self.subject = env.get_template(f"{base}/subject")
            self.text = env.get_template(f"{base}/body.txt")
            self.html = env.get_template(f"{base}/body.html")
            # The agency's contact block is the same in every notice of a drop: rendered once.
            self.constants["contact_text"] = env.get_template(CONTACT_TEXT).render(self.constants)
            self.constants["contact_html"] = Markup(env.get_template(CONTACT_HTML).render(self.constants))
        except TemplateError as exc:
            raise RenderError(f"templates of {definition.id}: {exc}") from None
        # Each template flattened once (fastrender): its notices are joins of text and fields.
        # A template it cannot flatten is rendered by Jinja.
        self.fields = frozenset(f.name for f in definition.all_fields)
        self.flat_subject, self.flat_text, self.flat_html = (
            self._flatten(env, f"{base}/{name}") for name in ("subject", "body.txt", "body.html"))

    def _flatten(self, env: SandboxedEnvironment, name: str) -> Flat | None:
        try:
            return flatten(env, name, self.constants, self.fields - self.constants.keys())
        except (Unsupported, TemplateError):
            return None

    def context(self, values: dict, address: str | None) -> dict:
        ctx = dict(self.globals)
        ctx.update(values)
        ctx.update(self.constants)
        ctx["citizen"] = {"name": values.get("name"), "address": address or ""}
        return ctx

    def render(self, values: dict, address: str | None) -> Rendered:
        ctx: dict | None = None
        try:
            flat = self.fields <= values.keys()  # (a row always has every field: validate_row)
            if flat and self.flat_subject is not None:
                subject = self.flat_subject.render(values)
            else:
                ctx = self.context(values, address)
                subject = _render(self.subject, ctx)
            if flat and self.flat_text is not None:
                text = self.flat_text.render(values)
            else:
                ctx = ctx or self.context(values, address)
                text = _render(self.text, ctx)
            if flat and self.flat_html is not None:
                html = self.flat_html.render(values)
            else:
                html = _render(self.html, ctx or self.context(values, address))
            return Rendered(" ".join(subject.split()), text, html)
        except TemplateError as exc:  # StrictUndefined, sandbox refusals, template faults
            raise RenderError(RENDER_FAILED.format(detail=exc.message)) from None

    def render_text(self, values: dict) -> tuple[str, str]:
        """Subject and text only (the paper-mail fallback)."""
        ctx = self.context(values, None)
        try:
            return " ".join(self.subject.render(ctx).split()), self.text.render(ctx)
        except TemplateError as exc:
            raise RenderError(RENDER_FAILED.format(detail=exc.message)) from None
