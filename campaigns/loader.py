"""Load campaign definitions from ``campaigns/definitions/*.yaml``.

A broken file never takes the others down: :func:`load_campaigns` returns the valid campaigns and
one :class:`~core.errors.DefinitionError` per broken file, each a sentence naming the file, the
line and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from campaigns import yaml_source
from campaigns.schema import CampaignBase
from campaigns.variants import problems as variant_problems
from core.errors import DefinitionError, InputError


@dataclass
class CampaignSet:
    campaigns: dict[str, CampaignBase] = field(default_factory=dict)
    errors: list[DefinitionError] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # campaign id -> its file (``.yaml`` or ``.yml``)

    def get(self, campaign_id: str) -> CampaignBase:
        try:
            return self.campaigns[campaign_id]
        except KeyError:
            known = ", ".join(sorted(self.campaigns)) or "none"
            raise InputError(f"There is no valid campaign {campaign_id!r}; the known ones are: {known}.") from None

    @property
    def enabled(self) -> list[CampaignBase]:
        return [c for c in self.campaigns.values() if c.enabled]


def load_campaigns(directory: Path) -> CampaignSet:
    result = CampaignSet()
    if not directory.is_dir():
        result.errors.append(
            DefinitionError(str(directory), None, "the campaigns folder does not exist; set LOYALTY_CAMPAIGNS_DIR.")
        )
        return result
    for path in sorted(directory.glob("*.y*ml")):
        try:
            campaign = load_campaign_file(path)
        except DefinitionError as error:
            result.errors.append(error)
            continue
        if campaign.id in result.campaigns:
            result.errors.append(DefinitionError(str(path), None, f"the id {campaign.id!r} is already used by another file."))
            continue
        result.campaigns[campaign.id] = campaign
        result.paths[campaign.id] = path
    return result


def load_campaign_file(path: Path) -> CampaignBase:
    shown = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DefinitionError(shown, line, "the file is not UTF-8 text; save it as UTF-8.") from None
    except OSError as exc:
        raise DefinitionError(shown, None, f"the file cannot be read ({exc.strerror}).") from None
    try:
        data, nodes = yaml_source.parse(text.lstrip("\ufeff"))
    except yaml_source.YamlSyntaxError as exc:
        raise DefinitionError(shown, exc.line, exc.sentence) from None
    if not isinstance(data, dict):
        raise DefinitionError(shown, 1, "a campaign file must be a mapping of keys (id:, kind:, ...).")

    from campaigns.kinds import CAMPAIGN_KINDS  # here: the kinds' modules import program.py, which imports this one

    kind = data.get("kind")
    model = CAMPAIGN_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(CAMPAIGN_KINDS))
        raise DefinitionError(shown, yaml_source.line_of(nodes, ["kind"]),
                              f"kind {kind!r} is not a campaign kind; use one of: {known}.")
    try:
        campaign = model.model_validate(data)
    except ValidationError as exc:
        raise explain_validation_error(shown, nodes, exc) from None
    for keys, problem in variant_problems(campaign)[:1]:
        raise DefinitionError(shown, yaml_source.line_of(nodes, keys), f"{problem}.")
    if campaign.id != path.stem:
        raise DefinitionError(
            shown, yaml_source.line_of(nodes, ["id"]),
            f"the id {campaign.id!r} differs from the file name; name the file {campaign.id}.yaml.",
        )
    return campaign


def explain_validation_error(shown: str, nodes: Any, exc: ValidationError) -> DefinitionError:
    """Turn pydantic's first error into one sentence at the right line."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = list(first["loc"])
    where = ".".join(str(p) for p in loc) or "the file"
    line = yaml_source.line_of(nodes, loc)
    kind = first["type"]
    message = first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        problem = f"unknown key {where!r}; remove it or correct its spelling"
    elif kind == "missing":
        problem = f"{where!r} is required but missing; add it"
    elif not loc:
        problem = message
    elif kind in ("model_type", "dict_type"):  # pydantic would name its class ("instance of Brand")
        problem = f"{where!r} is wrong: it should be a mapping, its keys indented under it one per line"
    else:
        problem = f"{where!r} is wrong: {message[:1].lower()}{message[1:]}"
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''} in this file)" if more else ""
    return DefinitionError(shown, line, f"{problem}{suffix}.")


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
