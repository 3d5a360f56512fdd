"""Message rendering: sandboxed Jinja2, the member's locale with fallback, Babel for numbers and dates.

Templates live in ``campaigns/templates/<locale>/<path>``; email subjects sit inline in the YAML.
An undefined variable is an error (``StrictUndefined``), never an empty string in a customer's
inbox, and a template cannot reach Python internals (the sandbox). Every failure of a template,
whatever raised it (a filter given the wrong type, a recursive macro), comes back as
:class:`RenderError` naming the file and line.

The template is chosen by the locale fallback (``en_AU`` → ``en``), but numbers and dates are
written in the member's own locale when it is a variant of the template's language (``en_AU``:
"5 January 2027"). An SMS has its Unicode spaces (Babel's U+00A0 and U+202F in French numbers)
made plain spaces, so it stays GSM-7; an email keeps them.
"""

from __future__ import annotations

import functools
import re
import traceback
import unicodedata
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
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
)
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from campaigns.schema import CampaignBase


class RenderError(Exception):
    """``problem`` says what went wrong, for the marketer (``loyalty validate`` renders a sample
    member); ``summary`` says where and what kind of error, never a value the template was given,
    for a delivery's recorded reason (a member's data must not end up in it)."""

    def __init__(self, path: str, line: int | None, problem: str, *, kind: str | None = None):
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        self.summary = f"{where}: {kind}" if kind else f"{where}: {problem}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@functools.lru_cache(maxsize=64)
def _babel_locale(name: str) -> Locale:
    """Babel parses a locale name on every call it is given one: a message formats several values."""
    return Locale.parse(name)


#: The context key holding the locale the filters format in (not a template variable to document).
FORMAT_LOCALE = "_format_locale"


@pass_context
def _number(ctx, value: int | float | Decimal) -> str:
    return format_decimal(value, locale=_babel_locale(ctx[FORMAT_LOCALE]))


@pass_context
def _date(ctx, value: date | datetime, format: str = "long") -> str:
    if isinstance(value, datetime):
        return format_datetime(value, format=format, locale=_babel_locale(ctx[FORMAT_LOCALE]))
    if not isinstance(value, date):
        raise TypeError(f"the date filter needs a date, not {type(value).__name__}")
    return format_date(value, format=format, locale=_babel_locale(ctx[FORMAT_LOCALE]))


@pass_context
def _money(ctx, value: int | float | Decimal, currency: str) -> str:
    return format_currency(value, currency, locale=_babel_locale(ctx[FORMAT_LOCALE]))


_ASCII_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")


def one_line(text: str) -> str:
    """Runs of ASCII whitespace (newlines included) made one space, trimmed. A no-break space is
    kept: it is what Babel writes inside a French number, and the body keeps it too."""
    return _ASCII_WHITESPACE.sub(" ", text).strip(" ")


def plain_spaces(text: str) -> str:
    """Every Unicode space (no-break U+00A0, narrow no-break U+202F, thin...) made a plain space:
    one of them outside GSM-7 makes a whole SMS UCS-2, twice the segments."""
    return "".join(" " if ch != " " and unicodedata.category(ch) == "Zs" else ch for ch in text)


@functools.lru_cache(maxsize=256)
def format_locale(template_locale: str, member_locale: str | None) -> str:
    """The locale numbers and dates are written in: the member's own when it is a regional variant
    of the template's language (``en_AU`` on an ``en`` template), else the template's."""
    candidates = locale_candidates(member_locale)
    if candidates and "_" in candidates[0]:
        try:
            if _babel_locale(candidates[0]).language == _babel_locale(template_locale).language:
                return candidates[0]
        except (UnknownLocaleError, ValueError):
            pass
    return template_locale


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

    def render_email(self, campaign: CampaignBase, locale: str, context: dict[str, Any], *,
                     member_locale: str | None = None) -> RenderedEmail:
        """``locale``: the template's (:meth:`choose_locale`); ``member_locale``: the member's, for
        numbers and dates."""
        email = campaign.messages.email
        assert email is not None, "the schema guarantees an email section for an email channel"
        context = _with_locales(context, locale, member_locale)
        return RenderedEmail(
            subject=self._subject(campaign, locale, context),
            text=self.render_file(f"{locale}/{email.text}", context),
            html=self.render_file(f"{locale}/{email.html}", context),
        )

    def render_subject(self, campaign: CampaignBase, locale: str, context: dict[str, Any], *,
                       member_locale: str | None = None) -> str:
        """The email subject, on one line (ASCII whitespace collapsed; no-break spaces kept)."""
        return self._subject(campaign, locale, _with_locales(context, locale, member_locale))

    def _subject(self, campaign: CampaignBase, locale: str, context: dict[str, Any]) -> str:
        source = campaign.messages.email.subject[locale]
        return one_line(self._render_string(source, context, f"{campaign.id} email subject ({locale})"))

    def render_template(self, locale: str, relative: str, context: dict[str, Any], *,
                        member_locale: str | None = None) -> str:
        """``campaigns/templates/<locale>/<relative>``, rendered."""
        return self.render_file(f"{locale}/{relative}", _with_locales(context, locale, member_locale))

    def render_sms(self, campaign: CampaignBase, locale: str, context: dict[str, Any], *,
                   member_locale: str | None = None) -> str:
        sms = campaign.messages.sms
        assert sms is not None
        return plain_spaces(self.render_template(locale, sms.text, context, member_locale=member_locale)).strip()

    def render_properties(self, campaign: CampaignBase, locale: str, templates: dict[str, str],
                          context: dict[str, Any], *, member_locale: str | None = None) -> dict[str, str]:
        """Each value of a ``mailchimp`` step's ``properties``, rendered (one line, trimmed)."""
        context = _with_locales(context, locale, member_locale)
        return {name: one_line(self._render_string(source, context, f"{campaign.id} mailchimp property {name}"))
                for name, source in templates.items()}

    def render_file(self, name: str, context: dict[str, Any]) -> str:
        shown = str(self.templates_dir / name)
        try:
            template = self.env.get_template(name)
        except TemplateNotFound:
            raise RenderError(shown, None, "the template file does not exist; create it or fix the path in the YAML") from None
        except TemplateSyntaxError as exc:
            raise RenderError(shown, exc.lineno, f"template syntax error: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 (a template nested too deeply to compile: RecursionError)
            raise _failed(shown, None, exc, compiling=True) from None
        return self._render(template, context, shown)

    def _render_string(self, source: str, context: dict[str, Any], shown: str) -> str:
        template = self._strings.get(source)  # compiling costs milliseconds: once per source and process
        if template is None:
            try:
                template = self._strings[source] = self.env.from_string(source)
            except TemplateSyntaxError as exc:
                raise RenderError(shown, None, f"template syntax error: {exc.message}") from None
            except Exception as exc:  # noqa: BLE001
                raise _failed(shown, None, exc, compiling=True) from None
        return self._render(template, context, shown)

    def _render(self, template, context: dict[str, Any], shown: str) -> str:
        try:
            return template.render(context)
        except SecurityError as exc:
            raise RenderError(shown, _template_line(exc, template), f"the template reaches for something not allowed ({exc})") from None
        except UndefinedError as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise RenderError(shown, _template_line(exc, template), f"{message}; define it or remove it from the template") from None
        except Exception as exc:  # noqa: BLE001: any failure of a template is the template's, reported as such
            raise _failed(shown, _template_line(exc, template), exc) from None


def _with_locales(context: dict[str, Any], locale: str, member_locale: str | None) -> dict[str, Any]:
    return {**context, "locale": locale, FORMAT_LOCALE: format_locale(locale, member_locale)}


def _failed(shown: str, line: int | None, exc: Exception, *, compiling: bool = False) -> RenderError:
    """A template that raised (a filter given the wrong type, ``truncate(-1)``, a recursive macro),
    or could not be compiled (blocks nested hundreds deep)."""
    kind = type(exc).__name__
    if isinstance(exc, RecursionError) and compiling:
        problem = "the template is nested too deeply to be read; flatten its blocks"
    elif isinstance(exc, RecursionError):
        problem = "the template recurses too deeply (a macro calling itself without end?)"
    else:
        message = getattr(exc, "message", None) or str(exc) or "no message"
        problem = f"the template failed ({kind}: {message})"
    return RenderError(shown, line, problem, kind=f"the template failed ({kind})")


def _template_line(exc: BaseException, template) -> int | None:
    """The template line where rendering failed (Jinja rewrites tracebacks to point at templates)."""
    filename = template.filename or "<template>"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line
