"""The campaign YAML, as typed models: a closed set of kinds, unknown keys rejected.

A definition is data; behaviour lives in the kind's Python module (``campaigns/birthday.py``).
Shared fields sit on :class:`CampaignBase`; each kind adds one section named after itself.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Channel = Literal["email", "sms", "mailchimp"]
CampaignId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
LocaleCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}([_-][A-Za-z]{2,4})?$")]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailMessages(StrictModel):
    """Subject lines inline per locale; bodies in ``campaigns/templates/<locale>/<path>``."""

    subject: dict[LocaleCode, str]
    text: str
    html: str


class SmsMessages(StrictModel):
    text: str
    max_segments: Annotated[int, Field(ge=1, le=10)] = 2


MailchimpTag = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")]
MailchimpEventName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{2,30}$")]
MailchimpPropertyName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,29}$")]


class MailchimpMessages(StrictModel):
    """A step on the ``mailchimp`` channel: tags applied to the member and/or an event posted for them
    (the trigger of a Mailchimp customer journey), once per occurrence. Property values are
    templates, rendered with the same variables as a message; the sender adds ``occurrence_key``."""

    tags: list[MailchimpTag] = []
    event: MailchimpEventName | None = None
    properties: dict[MailchimpPropertyName, str] = {}

    @model_validator(mode="after")
    def _does_something(self) -> MailchimpMessages:
        if not self.tags and self.event is None:
            raise ValueError("a mailchimp step needs tags, an event, or both")
        if self.properties and self.event is None:
            raise ValueError("properties belong to an event: name the event")
        if "occurrence_key" in self.properties:
            raise ValueError("the property occurrence_key is added by the sender; choose another name")
        return self


class Messages(StrictModel):
    email: EmailMessages | None = None
    sms: SmsMessages | None = None
    mailchimp: MailchimpMessages | None = None


class Audience(StrictModel):
    """Who may hear of this campaign at all; ``None`` means every tier."""

    tiers: list[str] | None = None


class CampaignBase(StrictModel):
    id: CampaignId
    kind: str
    name: str
    description: str = ""
    enabled: bool = True
    send_time: time = Field(description="The member's local time of day to send at.")
    channels: Annotated[list[Channel], Field(min_length=1)]
    locales: Annotated[list[LocaleCode], Field(min_length=1)]
    frequency_cap_exempt: bool = False
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    audience: Audience = Audience()
    messages: Messages

    @field_validator("send_time", mode="before")
    @classmethod
    def _sexagesimal_time(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted 10:00 as the base-60 integer 600; take it as the time meant.
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return time(value // 60, value % 60)
        return value

    @field_validator("channels")
    @classmethod
    def _distinct_channels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value

    @model_validator(mode="after")
    def _messages_cover_channels_and_locales(self) -> CampaignBase:
        for channel in self.channels:
            if getattr(self.messages, channel) is None:
                raise ValueError(f"channel {channel!r} is listed but messages has no {channel!r} section")
        if self.messages.email is not None:
            missing = [loc for loc in self.locales if loc not in self.messages.email.subject]
            if missing:
                raise ValueError(f"messages.email.subject has no text for locale {missing[0]!r}")
        return self

    @property
    def default_locale(self) -> str:
        return self.locales[0]


class BirthdayRules(StrictModel):
    leap_day_in_common_years: Literal["feb28", "mar1"] = Field(
        "feb28", description="When members born on Feb 29 celebrate in years without one."
    )
    min_days_since_birthday_change: Annotated[int, Field(ge=0)] = Field(
        30, description="A birthday added or changed more recently than this is not rewarded."
    )


class PointsReward(StrictModel):
    points_by_tier: dict[str, Annotated[int, Field(ge=0)]]
    expires_after_days: Annotated[int, Field(ge=1)] | None = 365

    def points_for(self, tier: str) -> int | None:
        return self.points_by_tier.get(tier)


class BirthdayCampaign(CampaignBase):
    kind: Literal["birthday"]
    birthday: BirthdayRules = BirthdayRules()
    reward: PointsReward | None = None


class PointsExpiringRules(StrictModel):
    days_before: Annotated[list[Annotated[int, Field(ge=1, le=365)]], Field(min_length=1)] = [30, 7]

    @field_validator("days_before")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("an offset is listed twice")
        return sorted(value, reverse=True)


class PointsExpiringCampaign(CampaignBase):
    kind: Literal["points_expiring"]
    points_expiring: PointsExpiringRules = PointsExpiringRules()


class Coupon(StrictModel):
    prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{2,12}$")]
    percent_off: Annotated[int, Field(ge=1, le=100)]
    valid_days: Annotated[int, Field(ge=1)] = 30


class WinbackStep(StrictModel):
    step: Annotated[int, Field(ge=1)]
    from_day: Annotated[int, Field(ge=1)]
    to_day: Annotated[int, Field(ge=1)]
    channels: Annotated[list[Channel], Field(min_length=1)] | None = None
    coupon: Coupon | None = None

    @model_validator(mode="after")
    def _window(self) -> WinbackStep:
        if self.to_day < self.from_day:
            raise ValueError(f"step {self.step}: to_day must not be before from_day")
        return self


class WinbackRules(StrictModel):
    steps: Annotated[list[WinbackStep], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_overlap(self) -> WinbackRules:
        ordered = sorted(self.steps, key=lambda s: s.from_day)
        for before, after in zip(ordered, ordered[1:]):
            if after.from_day <= before.to_day:
                raise ValueError(f"steps {before.step} and {after.step} overlap; a member is in one step at a time")
        if len({s.step for s in self.steps}) != len(self.steps):
            raise ValueError("two steps have the same number")
        return self


class WinbackCampaign(CampaignBase):
    kind: Literal["winback"]
    winback: WinbackRules

    @model_validator(mode="after")
    def _step_channels_have_messages(self) -> WinbackCampaign:
        for step in self.winback.steps:
            for channel in step.channels or []:
                if getattr(self.messages, channel) is None:
                    raise ValueError(f"step {step.step} uses {channel!r} but messages has no {channel!r} section")
        return self


class TierUpgradeRules(StrictModel):
    announce_within_days: Annotated[int, Field(ge=1)] = Field(
        7, description="An upgrade older than this (say, after an outage) is no longer announced."
    )


class TierUpgradeCampaign(CampaignBase):
    kind: Literal["tier_upgrade"]
    tier_upgrade: TierUpgradeRules = TierUpgradeRules()


class MemberDayRules(StrictModel):
    rrule: str = Field(description="An iCalendar RRULE, e.g. FREQ=MONTHLY;BYDAY=1TU")

    @field_validator("rrule")
    @classmethod
    def _parses(cls, value: str) -> str:
        from dateutil.rrule import rrulestr

        try:
            rrulestr(value, dtstart=datetime(2000, 1, 1))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"is not a valid iCalendar RRULE ({exc})") from None
        return value


class MemberDayCampaign(CampaignBase):
    kind: Literal["member_day"]
    member_day: MemberDayRules


#: Every kind a definition may name, by its ``kind`` value.
CAMPAIGN_KINDS: dict[str, type[CampaignBase]] = {
    "birthday": BirthdayCampaign,
    "points_expiring": PointsExpiringCampaign,
    "winback": WinbackCampaign,
    "tier_upgrade": TierUpgradeCampaign,
    "member_day": MemberDayCampaign,
}
