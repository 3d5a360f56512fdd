"""The campaign YAML, as typed models: a closed set of kinds, unknown keys rejected.

A definition is data; behaviour lives in the kind's Python module (``campaigns/birthday.py``).
Shared fields sit on :class:`CampaignBase` (here); each kind's model, which adds one section named
after the kind, sits in the kind's module, and ``campaigns.kinds.CAMPAIGN_KINDS`` lists them.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
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


VariantName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class VariantReward(StrictModel):
    """A variant's points gift by tier, instead of the campaign's (its expiry stays the campaign's)."""

    points_by_tier: dict[str, Annotated[int, Field(ge=0)]]

    def points_for(self, tier: str) -> int | None:
        return self.points_by_tier.get(tier)


class Variant(StrictModel):
    """One arm of an A/B test: its share of the audience and what it changes (nothing: the control).
    Whether the campaign has the messages a variant replaces is checked by ``campaigns.variants``."""

    name: VariantName
    share: Annotated[float, Field(gt=0, le=1)]
    subject: dict[LocaleCode, str] | None = None
    email_text: str | None = None
    email_html: str | None = None
    sms_text: str | None = None
    reward: VariantReward | None = None


class Experiment(StrictModel):
    """A/B variants of a campaign. ``name`` is part of the hash that assigns members (see
    ``campaigns/variants.py``): a new name draws them afresh; the same name keeps everyone's variant."""

    name: VariantName
    variants: Annotated[list[Variant], Field(min_length=2, max_length=10)]

    @field_validator("variants")
    @classmethod
    def _shares_make_a_whole(cls, value: list[Variant]) -> list[Variant]:
        names = [v.name for v in value]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValueError(f"the variant name {twice!r} is used twice; give each variant its own name")
        total = sum(v.share for v in value)
        if abs(total - 1) > 1e-9:
            raise ValueError(f"the variants' shares add up to {total:g}, not 1; make them add up to 1 "
                             "(the holdout is taken before, separately)")
        return value

    def get(self, name: str | None) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


class PointsReward(StrictModel):
    """Points granted with a sent message, by the member's tier (a tier not listed gets none)."""

    points_by_tier: dict[str, Annotated[int, Field(ge=0)]]
    expires_after_days: Annotated[int, Field(ge=1)] | None = 365

    def points_for(self, tier: str) -> int | None:
        return self.points_by_tier.get(tier)

    def expiry(self, granted_at: datetime) -> datetime | None:
        """When points granted at ``granted_at`` expire (``None``: never)."""
        return None if self.expires_after_days is None else granted_at + timedelta(days=self.expires_after_days)


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
    reward: PointsReward | None = None
    experiment: Experiment | None = None

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


class Coupon(StrictModel):
    """A unique discount code a message carries (a win-back step's, say)."""

    prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{2,12}$")]
    percent_off: Annotated[int, Field(ge=1, le=100)]
    valid_days: Annotated[int, Field(ge=1)] = 30
