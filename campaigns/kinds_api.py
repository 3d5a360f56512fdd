"""What a campaign kind is: one typed :class:`Kind` entry, and what its send-time functions receive.

Each kind module (``campaigns/birthday.py``...) defines its YAML model and its functions and ends
with one ``KIND = Kind(...)``; ``campaigns/kinds.py`` lists those entries, and everything else (the
loader's list of kinds, planning, the sender, one-off sends, ``loyalty validate``) reads them from
there. ``tests/unit/test_kind_contract.py`` checks every entry honours the contract below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, TypeVar, get_args

from sqlalchemy import Select
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext, bind_values
from campaigns.program import Program
from campaigns.schema import CampaignBase
from campaigns.send_views import DeliveryView, MemberView
from models.delivery import Reason
from models.member import Member

C = TypeVar("C", bound=CampaignBase)


@dataclass(frozen=True)
class SendCheck(Generic[C]):
    """One planned delivery, right before sending: the kind may re-check it and add template values.

    ``session`` is open for reads (e.g. the points expiring now); the kind must not write.
    """

    campaign: C
    member: MemberView
    delivery: DeliveryView
    at: datetime
    session: Session
    program: Program
    secret: str = ""  # for values derived from the occurrence, such as coupon codes

    @property
    def occurrence_date(self) -> date:
        """The occurrence's local date (planning and one-off sends give every row one)."""
        if self.delivery.occurrence_date is None:
            raise ValueError(f"{self.delivery.occurrence_key} has no occurrence date")
        return date.fromisoformat(self.delivery.occurrence_date)


@dataclass(frozen=True)
class Occurrence:
    """What a one-off send (``loyalty send``) stands for: the occurrence's local date and the facts a
    scheduled row of the kind would carry in its payload (a win-back step, an announced tier)."""

    date: date
    payload: dict[str, Any] | None = None


def _no_facts(check: SendCheck[Any]) -> None:
    return None


def _still_due(check: SendCheck[Any], facts: Any) -> Reason | None:
    return None


@dataclass(frozen=True)
class Kind(Generic[C]):
    """One campaign kind: everything the rest of the code needs to know about it.

    - ``model``: its YAML model, a :class:`CampaignBase` whose ``kind`` is a one-value ``Literal``
      (the entry's name); its own rules sit in a section named after it;
    - ``due(campaign, ctx)``: the instant's values of its audience (zone-dependent ones as
      :class:`campaigns.audience_sql.ZoneValues`), or ``None`` when nobody can be due at ``ctx.at``;
    - ``shape(campaign, ctx, due)``: who is due, as send-ledger rows started with
      :func:`campaigns.audience_sql.due_rows` (which applies the ledger check and the audience's
      tiers), reading ``due`` only through the bound-parameter helpers of
      :mod:`campaigns.audience_sql`: on PostgreSQL its shape must not depend on the instant, so
      that planning builds it once per campaign and binds each instant's values
      (:meth:`audience` is the two together, built afresh);
    - ``plan_per_instant``: PostgreSQL plans the kind's statement for each instant's values (planning
      runs it without a server-side prepared statement): set when a plan made for any values (a
      generic plan) is much slower, e.g. a range whose width the generic plan cannot know;
    - ``facts(check)``: what the re-check and the template context both need, read once per message
      (say, the points expiring on the occurrence's day); ``None`` by default;
    - ``recheck(check, facts)``: a :class:`Reason` when it is no longer right to send, else ``None``
      (consent, tier and the frequency cap are re-checked for every kind by the sender);
    - ``template_context(check, facts)``: the kind's own template variables;
    - ``sample_context(campaign, program)``: the same variables for a sample member, which
      ``loyalty validate`` renders every template against: it must offer every variable
      ``template_context`` offers;
    - ``one_off_occurrence(campaign, member, today, session)``: the occurrence a support send stands
      for (``today`` is the member's local date), or an :class:`core.errors.InputError` saying why
      there is none.
    """

    model: type[C]
    due: Callable[[C, PlanContext], dict[str, Any] | None]
    shape: Callable[[C, PlanContext, dict[str, Any]], Select[Any]]
    template_context: Callable[[SendCheck[C], Any], dict[str, Any]]
    sample_context: Callable[[C, Program], dict[str, Any]]
    one_off_occurrence: Callable[[C, Member, date, Session], Occurrence]
    recheck: Callable[[SendCheck[C], Any], Reason | None] = _still_due
    facts: Callable[[SendCheck[C]], Any] = _no_facts
    plan_per_instant: bool = False

    def audience(self, campaign: C, ctx: PlanContext) -> Select[Any] | None:
        """Who is due at ``ctx.at``, built afresh with the instant's values bound (``None``: nobody)."""
        due = self.due(campaign, ctx)
        return None if due is None else self.shape(campaign, ctx, due).params(bind_values(due))

    @property
    def name(self) -> str:
        """The ``kind:`` a definition names it by: the model's one ``Literal`` value."""
        (value,) = get_args(self.model.model_fields["kind"].annotation)
        return str(value)
