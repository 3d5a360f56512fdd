"""The program's rules (``campaigns/program.yaml``): earning, tiers, frequency cap, quiet hours,
redemptions, and the brand every email wears (:mod:`campaigns.brand`).

Pure decisions live here too: points for an order, the tier a spend qualifies for, the next
moment outside quiet hours.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator

from campaigns import yaml_source
from campaigns.brand import Brand
from campaigns.loader import explain_validation_error
from campaigns.schema import StrictModel
from core import calendar
from core.errors import DefinitionError


def _sexagesimal(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    return value


class PointsRules(StrictModel):
    per_currency_unit: Annotated[int, Field(ge=0)] = 1
    first_order_bonus: Annotated[int, Field(ge=0)] = 0
    expires_after_days: Annotated[int, Field(ge=1)] = 365
    value_per_point: Annotated[Decimal, Field(ge=0)] = Decimal("0.01")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"

    def for_order_total(self, total: Decimal) -> int:
        return int(total.to_integral_value(rounding=ROUND_FLOOR)) * self.per_currency_unit


class TierLevel(StrictModel):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    min_spend: Annotated[Decimal, Field(ge=0)]
    title: dict[str, str] = {}  # the name members read, per locale ({en: Gold, fr: Or})
    benefits: dict[str, str] = {}

    @field_validator("title", "benefits")
    @classmethod
    def _texts(cls, value: dict[str, str]) -> dict[str, str]:
        for locale, text in value.items():
            if not text.strip():
                raise ValueError(f"the text for {locale!r} is empty; write it or remove that locale")
        return value


class TierRules(StrictModel):
    qualification: str = "spend"
    window_days: Annotated[int, Field(ge=1)] = 365
    levels: Annotated[list[TierLevel], Field(min_length=1)]
    downgrade_grace_days: Annotated[int, Field(ge=0)] = 30
    # Removed (it was accepted and did nothing): named only to refuse it, with this sentence, at its line.
    notify_downgrades: None = Field(None, exclude=True, repr=False)

    @field_validator("notify_downgrades", mode="before")
    @classmethod
    def _no_downgrade_notices(cls, value: object) -> None:
        raise ValueError("notify_downgrades was never acted on (there is no downgrade notice) and is no longer "
                         "accepted; delete that line")

    @field_validator("qualification")
    @classmethod
    def _only_spend(cls, value: str) -> str:
        if value != "spend":
            raise ValueError("only 'spend' qualification is supported")
        return value

    @model_validator(mode="after")
    def _ascending(self) -> TierRules:
        spends = [level.min_spend for level in self.levels]
        if spends != sorted(spends) or len(set(spends)) != len(spends) or spends[0] != 0:
            raise ValueError("tier levels must start at min_spend 0 and rise strictly, lowest first")
        return self

    @property
    def names(self) -> list[str]:
        return [level.name for level in self.levels]

    def rank(self, tier: str) -> int:
        """Position of ``tier`` (0 = lowest); an unknown tier ranks lowest."""
        return self.names.index(tier) if tier in self.names else 0

    def qualifying(self, spend: Decimal) -> str:
        reached = self.levels[0].name
        for level in self.levels:
            if spend >= level.min_spend:
                reached = level.name
        return reached

    def level(self, tier: str) -> TierLevel | None:
        return next((level for level in self.levels if level.name == tier), None)


class FrequencyCap(StrictModel):
    max_messages: Annotated[int, Field(ge=1)] = 2
    window_days: Annotated[int, Field(ge=1)] = 7


class QuietHours(StrictModel):
    start: time = time(21, 0)
    end: time = time(8, 0)

    _sexagesimal_times = field_validator("start", "end", mode="before")(lambda cls, v: _sexagesimal(v))

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, at: datetime, zone_name: str) -> datetime:
        """``at`` itself when outside quiet hours, else the end of the quiet period (UTC)."""
        local = calendar.local_datetime(at, zone_name)
        if not self.contains(local.time().replace(tzinfo=None)):
            return at
        day = local.date() if local.time() < self.end else local.date() + timedelta(days=1)
        return calendar.local_instant(day, self.end, zone_name)


class RedemptionRules(StrictModel):
    """Points members may turn into a discount code (``POST /api/members/{id}/redemptions``)."""

    minimum: Annotated[int, Field(ge=1)] = 100  # the fewest points one redemption takes
    step: Annotated[int, Field(ge=1)] = 100  # a redemption is a multiple of this
    valid_days: Annotated[int, Field(ge=1, le=3650)] = 90  # the code's life

    @model_validator(mode="after")
    def _minimum_on_step(self) -> RedemptionRules:
        if self.minimum % self.step:
            raise ValueError(f"redemption minimum {self.minimum} is not a multiple of step {self.step}; "
                             "make it one (e.g. minimum 100, step 100)")
        return self

    def problem(self, points: int) -> str | None:
        """Why ``points`` cannot be redeemed (one sentence), or None."""
        if points < self.minimum:
            return f"A redemption takes at least {self.minimum} points; ask for {self.minimum} or more."
        if points % self.step:
            return f"A redemption takes a multiple of {self.step} points; {points} is not one."
        return None


class Program(StrictModel):
    points: PointsRules = PointsRules()
    tiers: TierRules
    frequency_cap: FrequencyCap = FrequencyCap()
    quiet_hours: QuietHours = QuietHours()
    redemption: RedemptionRules = RedemptionRules()
    brand: Brand = Brand()


def load_program(path: Path) -> Program:
    shown = str(path)
    try:
        data, nodes = yaml_source.parse(path.read_text(encoding="utf-8").lstrip("\ufeff"))
    except OSError as exc:
        raise DefinitionError(shown, None, f"the program rules cannot be read ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise DefinitionError(shown, None, "the file is not UTF-8 text; save it as UTF-8.") from None
    except yaml_source.YamlSyntaxError as exc:
        raise DefinitionError(shown, exc.line, exc.sentence) from None
    try:
        return Program.model_validate(data or {})
    except ValidationError as exc:
        raise explain_validation_error(shown, nodes, exc) from None
