"""Message rendering: sandboxed Jinja2, the member's locale with fallback, Babel for numbers and dates.

Templates live in ``campaigns/templates/<locale>/<path>``; email subjects sit inline in the YAML.
An undefined variable is an error (``StrictUndefined``), never an empty string in a customer's
inbox, and a template cannot reach Python internals (the sandbox). Errors come back as
:class:`RenderError` naming the file and line.
"""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    pass_context,
)
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from campaigns.schema import CampaignBase


class RenderError(Exception):
    def __init__(self, path: str, line: int | None, problem: str):
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"{path}, line {line}: {problem}" if line else f"{path}: {problem}")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@functools.lru_cache(maxsize=64)
def _babel_locale(name: str) -> Locale:
    """Babel parses a locale name on every call it is given one: a message formats several values."""
    return Locale.parse(name)


@pass_context
def _number(ctx, value: int | float | Decimal) -> str:
    return format_decimal(value, locale=_babel_locale(ctx["locale"]))


@pass_context
def _date(ctx, value: date | datetime, format: str = "long") -> str:
    if isinstance(value, datetime):
        return format_datetime(value, format=format, locale=_babel_locale(ctx["locale"]))
    return format_date(value, format=format, locale=_babel_locale(ctx["locale"]))


@pass_context
def _money(ctx, value: int | float | Decimal, currency: str) -> str:
    return format_currency(value, currency, locale=_babel_locale(ctx["locale"]))


def locale_candidates(member_locale: str | None) -> list[str]:
    """``fr_CA`` → ``["fr_CA", "fr"]``: the member's locale, then its language."""
    if not member_locale:
        return []
    normalised = member_locale.replace("-", "_")
    try:
        parsed = Locale.parse(normalised)
    except (UnknownLocaleError, ValueError):
        return []
    candidates = [str(parsed)]
    if parsed.territory:
        candidates.append(parsed.language)
    return candidates


class Renderer:
    def __init__(self, templates_dir: Path):
        self.templates_dir = templates_dir
        self._strings: dict[str, Any] = {}  # inline templates (subjects, Mailchimp properties), compiled
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name) and name.endswith((".html", ".html.j2")),
            keep_trailing_newline=True,
        )
        self.env.filters.update(number=_number, date=_date, money=_money)

    def choose_locale(self, campaign: CampaignBase, member_locale: str | None) -> str:
        """The member's locale if the campaign has it, else its language, else the campaign's default."""
        for candidate in locale_candidates(member_locale):
            if candidate in campaign.locales:
                return candidate
        return campaign.default_locale

    def render_email(self, campaign: CampaignBase, locale: str, context: dict[str, Any]) -> RenderedEmail:
        email = campaign.messages.email
        assert email is not None, "the schema guarantees an email section for an email channel"
        context = {**context, "locale": locale}
        subject = self._render_string(email.subject[locale], context, f"{campaign.id} email subject ({locale})")
        return RenderedEmail(
            subject=" ".join(subject.split()),
            text=self.render_file(f"{locale}/{email.text}", context),
            html=self.render_file(f"{locale}/{email.html}", context),
        )

    def render_sms(self, campaign: CampaignBase, locale: str, context: dict[str, Any]) -> str:
        sms = campaign.messages.sms
        assert sms is not None
        return self.render_file(f"{locale}/{sms.text}", {**context, "locale": locale}).strip()

    def render_properties(self, campaign: CampaignBase, locale: str, templates: dict[str, str],
                          context: dict[str, Any]) -> dict[str, str]:
        """Each value of a ``mailchimp`` step's ``properties``, rendered (one line, trimmed)."""
        context = {**context, "locale": locale}
        return {name: " ".join(self._render_string(source, context, f"{campaign.id} mailchimp property {name}").split())
                for name, source in templates.items()}

    def render_file(self, name: str, context: dict[str, Any]) -> str:
        shown = str(self.templates_dir / name)
        try:
            template = self.env.get_template(name)
        except TemplateNotFound:
            raise RenderError(shown, None, "the template file does not exist; create it or fix the path in the YAML") from None
        except TemplateSyntaxError as exc:
            raise RenderError(shown, exc.lineno, f"template syntax error: {exc.message}") from None
        return self._render(template, context, shown)

    def _render_string(self, source: str, context: dict[str, Any], shown: str) -> str:
        template = self._strings.get(source)  # compiling costs milliseconds: once per source and process
        if template is None:
            try:
                template = self._strings[source] = self.env.from_string(source)
            except TemplateSyntaxError as exc:
                raise RenderError(shown, None, f"template syntax error: {exc.message}") from None
        return self._render(template, context, shown)

    def _render(self, template, context: dict[str, Any], shown: str) -> str:
        try:
            return template.render(context)
        except SecurityError as exc:
            raise RenderError(shown, _template_line(exc, template), f"the template reaches for something not allowed ({exc})") from None
        except TemplateError as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise RenderError(shown, _template_line(exc, template), f"{message}; define it or remove it from the template") from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(shown, _template_line(exc, template), f"the template failed: {exc}") from None


def _template_line(exc: BaseException, template) -> int | None:
    """The template line where rendering failed (Jinja rewrites tracebacks to point at templates)."""
    filename = template.filename or "<template>"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line
