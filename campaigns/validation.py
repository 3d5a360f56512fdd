"""``loyalty validate``: every definition parsed, every template rendered in every locale.

Rendering against a sample member catches an undefined variable or a broken template before a
deploy, not in a customer's inbox.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from campaigns import yaml_source
from campaigns.brand import lacks_postal_address, localized
from campaigns.context import sample_context
from campaigns.loader import load_campaigns
from campaigns.program import Program, load_program
from campaigns.rendering import Renderer, RenderError
from campaigns.schema import CampaignBase
from campaigns.sms_segments import measure, not_gsm7
from campaigns.variants import as_variant
from core.errors import DefinitionError


@dataclass
class ValidationResult:
    checked: dict[str, list[str]] = field(default_factory=dict)  # campaign id → locales rendered
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate_all(campaigns_dir: Path, templates_dir: Path, program_file: Path) -> ValidationResult:
    result = ValidationResult()
    try:
        program = load_program(program_file)
    except DefinitionError as error:
        result.problems.append(str(error))
        return result
    loaded = load_campaigns(campaigns_dir)
    result.problems.extend(str(error) for error in loaded.errors)
    renderer = Renderer(templates_dir, program)
    for campaign in loaded.campaigns.values():
        path = loaded.paths[campaign.id]
        problems = check_tiers(campaign, path, program)
        problems += check_postal_address(campaign, path, program, program_file)
        problems += check_templates(campaign, renderer, path, program, warnings=result.warnings)
        problems += check_variant_templates(campaign, renderer, path, program)
        result.problems.extend(problems)
        if not problems:
            result.checked[campaign.id] = list(campaign.locales)
    locales = sorted({locale for campaign in loaded.campaigns.values() for locale in campaign.locales})
    result.warnings.extend(tier_title_warnings(program, program_file, locales))
    return result


def tier_title_warnings(program: Program, program_file: Path, locales: list[str]) -> list[str]:
    """A tier with titles, but none for a locale some campaign writes in: its members read the
    identifier capitalised ("Gold") in that language."""
    warnings = []
    for index, level in enumerate(program.tiers.levels):
        missing = [locale for locale in locales if level.title and not localized(level.title, locale)]
        if missing:
            line = _line(program_file, ["tiers", "levels", index, "title"])
            warnings.append(f"{_shown(program_file)}, line {line}: tier {level.name!r} has no title for "
                            f"{', '.join(map(repr, missing))}, a locale of the campaigns; its members there read "
                            f"{level.name.replace('_', ' ').title()!r}; add one.")
    return warnings


def check_tiers(campaign: CampaignBase, definition_path: Path, program: Program) -> list[str]:
    """Every tier a campaign names (its audience, a reward by tier) must be one of the program's:
    a misspelled one would silently match no member."""
    named: list[tuple[list[str | int], str]] = [
        (["audience", "tiers", index], tier) for index, tier in enumerate(campaign.audience.tiers or [])]
    for tier in campaign.reward.points_by_tier if campaign.reward is not None else {}:
        named.append((["reward", "points_by_tier", tier], tier))
    for index, variant in enumerate(campaign.experiment.variants if campaign.experiment is not None else []):
        for tier in (variant.reward.points_by_tier if variant.reward is not None else {}):
            named.append((["experiment", "variants", index, "reward", "points_by_tier", tier], tier))
    known = program.tiers.names
    return [
        f"{_shown(definition_path)}, line {_line(definition_path, keys)}: {'.'.join(map(str, keys[:-1]))} names the tier "
        f"{tier!r}, which is not one of the program's tiers ({', '.join(known)}); fix the name."
        for keys, tier in named
        if tier not in known
    ]


def check_postal_address(campaign: CampaignBase, definition_path: Path, program: Program, program_file: Path) -> list[str]:
    """A marketing email must carry the shop's postal address (:func:`campaigns.brand.lacks_postal_address`):
    the sentence saying why such a campaign is refused, the same for ``loyalty validate``, the worker's
    log and ``loyalty send``."""
    if not lacks_postal_address(campaign, program.brand):
        return []
    line = _line(definition_path, ["frequency_cap_exempt"]) or _line(definition_path, ["messages", "email"])
    where = f"{_shown(definition_path)}, line {line}" if line else _shown(definition_path)
    program_shown = _shown(program_file)
    return [f"{where}: {campaign.id!r} is a marketing email (it counts toward the frequency cap), and {program_shown} "
            "has no brand.postal_address to put in its footer, which the law requires in every marketing email "
            f"(US CAN-SPAM); nothing of this campaign is sent until you add the shop's postal address under brand: "
            f"in {program_shown}."]


def check_templates(campaign: CampaignBase, renderer: Renderer, definition_path: Path, program: Program,
                    warnings: list[str] | None = None) -> list[str]:
    """Render every message section in every locale (a winback step may use a channel the campaign's
    own list does not name); an SMS longer than ``max_segments`` is a warning, in ``warnings``."""
    problems: list[str] = []
    context = sample_context(campaign, program)
    messages = campaign.messages
    for locale in campaign.locales:
        checks: list[Callable[[], object]] = []  # each part on its own, so that every broken one is reported
        if messages.email is not None:
            checks.append(partial(renderer.render_subject, campaign, locale, context))
            checks += [partial(renderer.render_template, locale, name, context)
                       for name in (messages.email.text, messages.email.html)]
            checks += [partial(renderer.check_blocks, locale, name) for name in (messages.email.text, messages.email.html)]
        if messages.sms is not None:
            checks.append(partial(_check_sms, campaign, renderer, locale, context, warnings))
        if messages.mailchimp is not None:
            checks.append(partial(renderer.render_properties, campaign, locale, messages.mailchimp.properties, context))
        for check in checks:
            problem = _render_problem(check, campaign, renderer, locale, definition_path)
            if problem is not None and problem not in problems:
                problems.append(problem)
    return problems


def check_variant_templates(campaign: CampaignBase, renderer: Renderer, definition_path: Path,
                            program: Program) -> list[str]:
    """Render what each A/B variant replaces (its subject, its templates) in every locale; a template
    file that does not exist is named with the variant's line."""
    if campaign.experiment is None:
        return []
    problems: list[str] = []
    context = sample_context(campaign, program)
    for index, variant in enumerate(campaign.experiment.variants):
        shown = as_variant(campaign, variant.name)
        where: list[str | int] = ["experiment", "variants", index]
        for locale in campaign.locales:
            checks: list[tuple[list[str | int], str | None, Callable[[], object]]] = []
            if variant.subject is not None and shown.messages.email is not None:
                checks.append(([*where, "subject", locale], None,
                               partial(renderer.render_subject, shown, locale, context)))
            for key in ("email_text", "email_html", "sms_text"):
                relative = getattr(variant, key)
                if relative is not None:
                    checks.append(([*where, key], relative, partial(renderer.render_template, locale, relative, context)))
                    if key != "sms_text":  # text outside every block of an email is dropped, as in the campaign's
                        checks.append(([*where, key], relative, partial(renderer.check_blocks, locale, relative)))
            for keys, relative, check in checks:
                try:
                    check()
                except RenderError as error:
                    line = _line(definition_path, keys)
                    if relative is not None and not (renderer.templates_dir / locale / relative).exists():
                        problem = (f"{_shown(definition_path)}, line {line}: {'.'.join(map(str, keys))} of variant "
                                   f"{variant.name!r} names a template that does not exist for {locale!r} "
                                   f"({_shown(renderer.templates_dir / locale / relative)}); create it or fix the path.")
                    elif relative is None:
                        problem = (f"{_shown(definition_path)}, line {line}: the email subject of variant "
                                   f"{variant.name!r} for {locale!r}: {error.problem}.")
                    else:
                        where_file = f"{_shown(Path(error.path))}, line {error.line}" if error.line else _shown(Path(error.path))
                        problem = (f"{where_file}: {error.problem} (campaign {campaign.id!r}, variant {variant.name!r}, "
                                   f"locale {locale!r}).")
                    if problem not in problems:
                        problems.append(problem)
    return problems


def _check_sms(campaign: CampaignBase, renderer: Renderer, locale: str, context: dict[str, Any],
               warnings: list[str] | None) -> None:
    body = renderer.render_sms(campaign, locale, context)
    if warnings is not None:
        warnings.extend(sms_length_warnings(campaign, locale, body, renderer.templates_dir))


def _render_problem(check: Callable[[], object], campaign: CampaignBase, renderer: Renderer, locale: str,
                    definition_path: Path) -> str | None:
    """Run one rendering ``check``; what is wrong, as one sentence naming the file and line, or None."""
    try:
        check()
    except RenderError as error:
        return _render_error_sentence(error, campaign, renderer, locale, definition_path)
    return None


def _render_error_sentence(error: RenderError, campaign: CampaignBase, renderer: Renderer, locale: str,
                           definition_path: Path) -> str:
    if error.path.startswith(f"{campaign.id} email subject"):
        line = _subject_line(definition_path, locale)
        return f"{_shown(definition_path)}, line {line}: the email subject for {locale!r}: {error.problem}."
    if error.path.startswith(f"{campaign.id} mailchimp property "):
        name = error.path.rsplit(" ", 1)[1]
        line = _line(definition_path, ["messages", "mailchimp", "properties", name])
        return f"{_shown(definition_path)}, line {line}: the mailchimp property {name!r} ({locale!r}): {error.problem}."
    if (key := _missing_template_key(campaign, renderer, locale, error)) is not None:
        line = _line(definition_path, ["messages", *key])
        return (f"{_shown(definition_path)}, line {line}: messages.{'.'.join(key)} names a template "
                f"that does not exist for {locale!r} ({_shown(Path(error.path))}); create it or fix the path.")
    where = f"{_shown(Path(error.path))}, line {error.line}" if error.line else _shown(Path(error.path))
    return f"{where}: {error.problem} (campaign {campaign.id!r}, locale {locale!r})."


def _missing_template_key(campaign: CampaignBase, renderer: Renderer, locale: str,
                          error: RenderError) -> tuple[str, str] | None:
    """For a template file that does not exist: the YAML key naming it (e.g. ("email", "text"))."""
    if Path(error.path).exists():
        return None
    messages = campaign.messages
    named: list[tuple[tuple[str, str], str]] = []
    if messages.email is not None:
        named += [(("email", "text"), messages.email.text), (("email", "html"), messages.email.html)]
    if messages.sms is not None:
        named.append((("sms", "text"), messages.sms.text))
    for key, relative in named:
        if Path(error.path) == renderer.templates_dir / locale / relative:
            return key
    return None


def sms_length_warnings(campaign: CampaignBase, locale: str, body: str, templates_dir: Path) -> list[str]:
    """Warn when the SMS, rendered for the sample member, is longer than the campaign allows."""
    sms = campaign.messages.sms
    if sms is None:  # no SMS message: nothing to measure
        return []
    length, cap = measure(body), sms.max_segments
    if length.segments <= cap:
        return []
    where = _shown(templates_dir / locale / sms.text)
    why = ""
    if length.encoding == "UCS-2":
        why = f"; {', '.join(repr(ch) for ch in not_gsm7(body)[:5])} make(s) the whole message UCS-2 (70 characters a segment)"
    return [f"{where}: the SMS is {length} for the sample member, more than max_segments {cap} of campaign "
            f"{campaign.id!r} ({locale}); such a message is not sent (failed: sms_too_long){why}."]


def _subject_line(definition_path: Path, locale: str) -> int | None:
    return _line(definition_path, ["messages", "email", "subject", locale])


def _line(definition_path: Path, keys: Sequence[str | int]) -> int | None:
    try:
        _, nodes = yaml_source.parse(definition_path.read_text(encoding="utf-8"))
    except (OSError, yaml_source.YamlSyntaxError):
        return None
    return yaml_source.line_of(nodes, keys)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
