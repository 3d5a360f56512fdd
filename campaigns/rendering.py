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

Every HTML email extends the base layout (``_layout/email.html.j2``, through the locale's
``<locale>/_layout.html.j2``, which holds its words), styled by ``_layout/email.css``. The CSS is
inlined (``css-inline``) into each HTML template's *source* when the template is loaded, so once
per template and process, not once per message: :class:`InliningLoader`. The brand and the tier
names come from the program (:mod:`campaigns.brand`), given to every template.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import css_inline
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    pass_context,
)
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

from campaigns import brand as brand_rules
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
def _number(ctx: Context, value: int | float | Decimal) -> str:
    if type(value) is int:  # points: the same few values in many messages (Babel: 0.1 ms each)
        return _integer(value, ctx[FORMAT_LOCALE])
    return format_decimal(value, locale=_babel_locale(ctx[FORMAT_LOCALE]))


@functools.lru_cache(maxsize=4096)
def _integer(value: int, locale: str) -> str:
    return format_decimal(value, locale=_babel_locale(locale))


@pass_context
def _date(ctx: Context, value: date | datetime, format: str = "long") -> str:
    if isinstance(value, datetime):
        return format_datetime(value, format=format, locale=_babel_locale(ctx[FORMAT_LOCALE]))
    if not isinstance(value, date):
        raise TypeError(f"the date filter needs a date, not {type(value).__name__}")
    if type(value) is date and type(format) is str:  # the same few days in many messages (Babel: 10 µs each)
        return _day(value, format, ctx[FORMAT_LOCALE])
    return format_date(value, format=format, locale=_babel_locale(ctx[FORMAT_LOCALE]))


@functools.lru_cache(maxsize=4096)
def _day(value: date, format: str, locale: str) -> str:
    return format_date(value, format=format, locale=_babel_locale(locale))


@pass_context
def _money(ctx: Context, value: int | float | Decimal, currency: str) -> str:
    return format_currency(value, currency, locale=_babel_locale(ctx[FORMAT_LOCALE]))


def _tier_filters(program: Any) -> dict[str, Any]:
    """``{{ member.tier | tier_name }}``: "Gold", "Or" (the program's ``title`` in the template's
    locale); ``{{ member.tier | tier_benefits }}``: that tier's benefits, likewise."""

    @pass_context
    def tier_name(ctx: Context, tier: str) -> str:
        return brand_rules.tier_name(program, tier, ctx["locale"])

    @pass_context
    def tier_benefits(ctx: Context, tier: str) -> str:
        return brand_rules.tier_benefits(program, tier, ctx["locale"])

    return {"tier_name": tier_name, "tier_benefits": tier_benefits}


#: The layout's stylesheet, inlined into every HTML template (``campaigns/templates/_layout/email.css``).
LAYOUT_CSS = "_layout/email.css"
_JINJA_CONSTRUCT = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_TOKEN = "jinjatoken{:05d}z"
_TOKEN_FOUND = re.compile(r"jinjatoken(\d{5})z")
_TOKEN_PUT_BACK = re.compile(r"(?:<!--)?jinjatoken(\d{5})z(?:-->)?")
_RAW_TEXT_OPEN = re.compile(r"<(title|style|script|textarea)[\s>]", re.IGNORECASE)  # text there is not parsed


class InliningLoader(FileSystemLoader):
    """A :class:`FileSystemLoader` that inlines ``_layout/email.css`` into each ``.html.j2``
    template's source as it is loaded (Jinja keeps the compiled template: once per process).

    Each Jinja construct (``{{ }}``, ``{% %}``, ``{# #}``) is swapped for a plain word (in an
    attribute's value, a title) or an HTML comment (elsewhere: HTML keeps a comment in place even
    between table rows) while ``css-inline`` parses the HTML, then put back. A construct in a tag's
    attribute list, where HTML cannot keep it, is refused with its line: a template that would
    silently lose its logic is worse.
    Lines of errors are reported in the template as written (the loader keeps the mapping)."""

    #: A loaded template's file is looked at again (has it changed?) at most this often: Jinja asks
    #: on every render of it and of each layout it extends, a ``stat`` each (six an email).
    recheck_seconds = 1.0

    def __init__(self, searchpath: str):
        super().__init__(searchpath)
        self._css: str | None = None
        self.line_maps: dict[str, list[tuple[int, int]]] = {}  # filename → (inlined line, written line)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = self._source(environment, template)
        return source, filename, self._rechecked(uptodate)

    def _rechecked(self, uptodate: Callable[[], bool]) -> Callable[[], bool]:
        """``uptodate``, asked at most once per :attr:`recheck_seconds` (True in between: a
        template edited on disk is read again within that time)."""
        next_check = time.monotonic() + self.recheck_seconds

        def rechecked() -> bool:
            nonlocal next_check
            now = time.monotonic()
            if now < next_check:
                return True
            if not uptodate():
                return False
            next_check = now + self.recheck_seconds
            return True

        return rechecked

    def _source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if not template.endswith(".html.j2"):
            return source, filename, uptodate
        css = self._stylesheet(environment)
        if not css:  # a templates folder without the layout's stylesheet: nothing to inline
            return source, filename, uptodate
        environment.parse(source, template, filename)  # a syntax error, at the line as written
        inlined, line_map = self._inline(source, filename, template, css)
        self.line_maps[filename] = line_map
        return inlined, filename, uptodate

    def written_line(self, filename: str, line: int | None) -> int | None:
        """The line, in the template as written, of ``line`` in the inlined source."""
        pairs = self.line_maps.get(filename)
        if line is None or not pairs:
            return line
        best = None
        for inlined_line, written in pairs:
            if inlined_line == line:
                return written
            if inlined_line < line:
                best = written + (line - inlined_line)
        return best if best is not None else line

    def _stylesheet(self, environment: Environment) -> str:
        if self._css is None:
            try:
                self._css, _, _ = super().get_source(environment, LAYOUT_CSS)
            except TemplateNotFound:
                self._css = ""
        return self._css

    @staticmethod
    def _inline(source: str, filename: str, template: str, css: str) -> tuple[str, list[tuple[int, int]]]:
        constructs: list[str] = []
        written_lines: list[int] = []

        def swap(match: re.Match) -> str:
            constructs.append(match.group(0))
            written_lines.append(source.count("\n", 0, match.start()) + 1)
            token = _TOKEN.format(len(constructs) - 1)
            before = source[:match.start()]
            in_tag = before.rfind("<") > before.rfind(">")  # an attribute's value (or, refused below, its name)
            in_raw_text = bool(_RAW_TEXT_OPEN.search(before[max(before.rfind("</"), 0):]))
            # elsewhere an HTML comment: HTML keeps one in place even between table rows, where text moves
            return token if in_tag or in_raw_text else f"<!--{token}-->"

        tokenised = _JINJA_CONSTRUCT.sub(swap, source)
        try:
            if re.search(r"<html[\s>]", tokenised, re.IGNORECASE):
                inlined = css_inline.CSSInliner(keep_style_tags=True, extra_css=css).inline(tokenised)
            else:
                inlined = css_inline.inline_fragment(tokenised, css)
        except css_inline.InlineError as exc:  # e.g. a stylesheet it cannot read
            raise TemplateSyntaxError(f"the CSS could not be inlined ({exc})", 1, template, filename) from None
        misplaced = _misplaced_construct(inlined, len(constructs))
        if misplaced is not None:
            raise TemplateSyntaxError(
                "a Jinja tag sits where HTML cannot keep it (inside a tag's attribute list, or between table "
                "rows or cells); put it inside an element's text or an attribute's value",
                written_lines[misplaced], template, filename)
        line_map = []
        for match in _TOKEN_FOUND.finditer(inlined):
            line_map.append((inlined.count("\n", 0, match.start()) + 1, written_lines[int(match.group(1))]))
        return _TOKEN_PUT_BACK.sub(lambda m: constructs[int(m.group(1))], inlined), line_map


_TAG = re.compile(r"<[a-zA-Z][^\s/>]*(?:\s+[^\s=>]+(?:=\"[^\"]*\")?)*\s*/?>")
_QUOTED = re.compile(r'="[^"]*"')


def _misplaced_construct(inlined: str, count: int) -> int | None:
    """The first Jinja construct HTML did not keep in place, or None: one lost or doubled, one that
    became an attribute's name, or one that HTML moved (the order changes)."""
    found = [int(n) for n in _TOKEN_FOUND.findall(inlined)]
    if sorted(found) != list(range(count)):
        return next((i for i in range(count) if found.count(i) != 1), 0)
    in_names = [int(n) for tag in _TAG.findall(inlined) for n in _TOKEN_FOUND.findall(_QUOTED.sub("", tag))]
    if in_names:
        return min(in_names)
    in_text = [int(n) for n in _TOKEN_FOUND.findall(_TAG.sub("", inlined.replace("<!--", "").replace("-->", "")))]
    return next((a for a, b in zip(in_text, in_text[1:], strict=False) if a > b), None)


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
    candidates = _locale_candidates(member_locale)
    if candidates and "_" in candidates[0]:
        try:
            if _babel_locale(candidates[0]).language == _babel_locale(template_locale).language:
                return candidates[0]
        except (UnknownLocaleError, ValueError):
            pass
    return template_locale


def locale_candidates(member_locale: str | None) -> list[str]:
    """``fr_CA`` → ``["fr_CA", "fr"]``: the member's locale, then its language."""
    return list(_locale_candidates(member_locale))


@functools.lru_cache(maxsize=1024)
def _locale_candidates(member_locale: str | None) -> tuple[str, ...]:
    """Babel parses the name on each call (``Locale.parse``): a few distinct names, every message."""
    if not member_locale:
        return ()
    normalised = member_locale.replace("-", "_")
    try:
        parsed = Locale.parse(normalised)
    except (UnknownLocaleError, ValueError):
        return ()
    if parsed.territory:
        return (str(parsed), parsed.language)
    return (str(parsed),)


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with two shortcuts that give the same text as Jinja's own sandbox.

    ``member.first_name`` on a plain ``dict`` (every template variable is one) is looked up
    directly: Jinja's sandbox first tries ``getattr`` (an ``AttributeError`` raised and caught for
    each of the 70 or so such lookups of an email), then the key. An exact ``dict`` has no
    attribute outside ``dir(dict)``, so the answer is the same: those names (``items``,
    ``__class__``) still go through the sandbox's own lookup and its safety checks.

    **The brand is written into the templates when they are compiled.** The globals named in
    :attr:`constant_globals` (``brand``: the program's, fixed for the renderer's life) are the
    same for every message, so each ``brand.colors.primary``, ``brand.shop_name``... whose value
    is a string, a number or None becomes that value in the compiled template (:class:`_FoldBrand`),
    and Jinja joins it with the text around it: the layout's header, footer and styles cost one
    string where they cost some thirty lookups and escapes an email. Only where the name is sure
    to be the global: a template that binds it itself (``{% set brand = ... %}``, a loop variable,
    a macro argument, an import) is compiled as written, and from the first such template, or the
    first render given its own ``brand`` (which would hide the global), on, nothing is folded any
    more and the templates compiled so far are compiled again (such a binding reaches the layouts
    a template extends and the templates it includes). Also left as written: a template with an
    ``{% autoescape %}`` block (whose escaping may be decided at render time)."""

    constant_globals: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.folding = True
        self._fold_lock = threading.Lock()

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one plain ``dict``: Jinja's ``ChainMap`` over the environment's
        is copied and iterated on every render (``Template.new_context``: three an email). The
        renderer sets the globals once, before any template is loaded."""
        return {**self.globals, **d} if d else dict(self.globals)

    def stop_folding(self) -> None:
        """Compile every template as written from now on, those compiled so far again."""
        with self._fold_lock:
            self.folding = False
            if self.cache is not None:
                self.cache.clear()

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        if self.folding and self.constant_globals:
            if _binds_any(source, self.constant_globals):
                self.stop_folding()
            elif not any(source.find_all(nodes.EvalContextModifier)):
                source = _FoldBrand(self).visit(source)
        return super()._generate(source, name, filename, defer_init=defer_init)


def _binds_any(tree: nodes.Template, names: frozenset[str]) -> bool:
    """Whether the template gives one of ``names`` a value of its own anywhere (set, for, with,
    macro and call arguments, import)."""
    for node in tree.find_all((nodes.Name, nodes.Import, nodes.FromImport)):
        if isinstance(node, nodes.Name):
            if node.ctx != "load" and node.name in names:
                return True
        elif isinstance(node, nodes.Import):
            if node.target in names:
                return True
        elif isinstance(node, nodes.FromImport) and any(
                (item if isinstance(item, str) else item[-1]) in names for item in node.names):
            return True
    return False


_FOLDED_TYPES = (str, int, float, bool, type(None))


class _FoldBrand(NodeTransformer):
    """Each ``brand.a.b`` (attributes or constant keys of a constant global) whose value is a
    string, a number, a boolean or None, made that value, looked up as the sandbox would."""

    def __init__(self, environment: _Sandbox):
        self.environment = environment

    def _value(self, node: nodes.Node) -> Any:
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name in self.environment.constant_globals:
                return self.environment.globals.get(node.name, missing)
            return missing
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            base = self._value(node.node)
            if base is missing or isinstance(base, Undefined):
                return missing
            try:
                if isinstance(node, nodes.Getattr):
                    value = self.environment.getattr(base, node.attr)
                elif isinstance(node.arg, nodes.Const):
                    value = self.environment.getitem(base, node.arg.value)
                else:
                    return missing
            except Exception:  # noqa: BLE001 (left to fail, or not, at render time as written)
                return missing
            return missing if isinstance(value, Undefined) else value
        return missing

    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Node:  # noqa: N802 (Jinja's visitor names)
        return self._folded(node)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:  # noqa: N802
        return self._folded(node)

    def _folded(self, node: nodes.Getattr | nodes.Getitem) -> nodes.Node:
        value = self._value(node)
        if value is not missing and type(value) in _FOLDED_TYPES:
            return nodes.Const(value, lineno=node.lineno, environment=self.environment)
        return self.generic_visit(node)


class Renderer:
    """``program``: the brand and the tier names every template sees (the defaults without one)."""

    def __init__(self, templates_dir: Path, program: Any = None):
        self.templates_dir = templates_dir
        self._strings: dict[str, Any] = {}  # inline templates (subjects, Mailchimp properties), compiled
        self._strings_folded = True  # compiled with the brand written in (see _Sandbox)
        self._shown: dict[str, str] = {}  # a template's name → its path as errors show it
        self.loader = InliningLoader(str(templates_dir))
        self.env = _Sandbox(
            loader=self.loader,
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name) and name.endswith((".html", ".html.j2")),
            keep_trailing_newline=True,
        )
        self.env.filters.update(number=_number, date=_date, money=_money, **_tier_filters(program))
        constants = brand_rules.template_globals(program)
        self.env.globals.update(constants)
        self.env.constant_globals = frozenset(constants)  # written into the templates (see _Sandbox)

    def choose_locale(self, campaign: CampaignBase, member_locale: str | None) -> str:
        """The member's locale if the campaign has it, else its language, else the campaign's default."""
        for candidate in _locale_candidates(member_locale):
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
        email = campaign.messages.email
        assert email is not None, "the schema guarantees an email section for an email channel"
        source = email.subject[locale]
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

    def check_blocks(self, locale: str, relative: str) -> None:
        """A template that extends a layout shows only its blocks: text (or an ``if``, a ``for``)
        outside every block is silently dropped by Jinja. Raises :class:`RenderError` at its line."""
        name = f"{locale}/{relative}"
        try:
            source, filename, _ = FileSystemLoader.get_source(self.loader, self.env, name)  # as written
            tree = self.env.parse(source, name, filename)
        except (TemplateNotFound, TemplateSyntaxError):
            return  # rendering reports those
        if not any(isinstance(node, nodes.Extends) for node in tree.body):
            return
        for node in tree.body:
            if isinstance(node, nodes.Output):
                shown = [n for n in node.nodes if not (isinstance(n, nodes.TemplateData) and not n.data.strip())]
                line = shown[0].lineno if shown else None
                if shown and isinstance(shown[0], nodes.TemplateData):  # from its first line that is not blank
                    data = shown[0].data
                    line = shown[0].lineno + data[:len(data) - len(data.lstrip())].count("\n")
            else:
                line = node.lineno if isinstance(node, nodes.If | nodes.For | nodes.FilterBlock | nodes.CallBlock) else None
            if line is not None:
                raise RenderError(str(self.templates_dir / name), line,
                                  "this is outside every {% block %}, so it is never shown (the template extends a "
                                  "layout); move it into a block, such as content")

    def _hidden_constants(self, context: dict[str, Any]) -> None:
        """A context giving its own ``brand`` hides the global the templates were compiled with."""
        env = self.env
        if env.folding and not env.constant_globals.isdisjoint(context):
            env.stop_folding()
        if self._strings_folded and not env.folding:  # compiled again, as written
            self._strings.clear()
            self._strings_folded = False

    def render_file(self, name: str, context: dict[str, Any]) -> str:
        self._hidden_constants(context)
        shown = self._shown.get(name) or self._shown.setdefault(name, str(self.templates_dir / name))
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
        self._hidden_constants(context)
        template = self._strings.get(source)  # compiling costs milliseconds: once per source and process
        if template is None:
            try:
                template = self._strings[source] = self.env.from_string(source)
            except TemplateSyntaxError as exc:
                raise RenderError(shown, None, f"template syntax error: {exc.message}") from None
            except Exception as exc:  # noqa: BLE001
                raise _failed(shown, None, exc, compiling=True) from None
        return self._render(template, context, shown)

    def _line(self, exc: BaseException, template: Template) -> int | None:
        """The line of the template as written (an HTML template's CSS was inlined when loaded)."""
        return self.loader.written_line(template.filename or "", _template_line(exc, template))

    def _render(self, template: Template, context: dict[str, Any], shown: str) -> str:
        try:
            return template.render(context)
        except SecurityError as exc:
            raise RenderError(shown, self._line(exc, template), f"the template reaches for something not allowed ({exc})") from None
        except UndefinedError as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise RenderError(shown, self._line(exc, template), f"{message}; define it or remove it from the template") from None
        except Exception as exc:  # noqa: BLE001 (any failure of a template is the template's, reported as such)
            raise _failed(shown, self._line(exc, template), exc) from None


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


def _template_line(exc: BaseException, template: Template) -> int | None:
    """The template line where rendering failed (Jinja rewrites tracebacks to point at templates)."""
    filename = template.filename or "<template>"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename:
            line = frame.lineno
    return line
