"""The contract every campaign kind honours, checked over the registry (``campaigns.kinds.KINDS``).

A kind added to the registry is checked here without a line of this file changing: its model is
named by its entry, it ships a definition, its audience has the send-ledger shape and obeys the
audience's tiers, and its ``sample_context`` (what ``loyalty validate`` renders templates against)
offers every variable its ``template_context`` offers at send time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, get_args

import pytest
from sqlalchemy import Select, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext, delivery_columns
from campaigns.context import common_context
from campaigns.kinds import CAMPAIGN_KINDS, KINDS
from campaigns.kinds_api import Kind, Occurrence, SendCheck
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from campaigns.schema import CampaignBase
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE
from models.delivery import Delivery, Reason
from models.member import Member
from models.points import EntryKind, PointEntry

PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
SHIPPED = load_campaigns(DEFAULT_CAMPAIGNS_DIR)
NOW = datetime(2027, 2, 28, 11, 0, tzinfo=UTC)
ZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo"]
LEDGER_COLUMNS = ["occurrence_key", "campaign", "member_id", "member", "channel", "state", "reason", "reward_points",
                  "occurrence_date", "send_at", "payload"]


def paths(value: Any, prefix: str = "") -> set[str]:
    """The variables a template can reach in a context: ``expiring.points``, ``coupon``, ..."""
    if not isinstance(value, dict):
        return {prefix}
    found = {prefix} if prefix else set()
    for key, inner in value.items():
        found |= paths(inner, f"{prefix}.{key}" if prefix else key)
    return found


def missing_in_sample(template: dict[str, Any], sample: dict[str, Any]) -> list[str]:
    """The variables ``template`` offers that ``sample`` does not (a leaf of the sample, such as a
    ``coupon`` that is ``None`` there, does not offer what is below it)."""
    offered = paths(sample)
    return sorted(p for p in paths(template) if p not in offered)


def shipped_campaign(kind: Kind[Any]) -> CampaignBase:
    campaigns = [c for c in SHIPPED.campaigns.values() if c.kind == kind.name]
    assert campaigns, f"the kind {kind.name!r} ships no definition in campaigns/definitions/"
    return campaigns[0]


def a_member(session: Session) -> Member:
    """A gold member in Paris with something for every kind: a birthday today, a last order 100
    days ago, points expiring in ten days."""
    member = Member(external_id="M0001", first_name="Ana", last_name="Lopez", email="ana@example.com",
                    timezone="Europe/Paris", locale="fr", tier="gold", birth_month=2, birth_day=28,
                    last_order_local_date=(NOW.date() - timedelta(days=100)).isoformat(),
                    email_opt_in=True, sms_opt_in=True, phone="+33612345678")
    session.add(member)
    session.flush()
    session.add(PointEntry(member_id=member.id, entry_key="earn:1", kind=EntryKind.EARN, points=420, remaining=420,
                           occurred_at=NOW - timedelta(days=300), expires_at=NOW + timedelta(days=10),
                           source="order:1"))
    session.flush()
    return member


@pytest.mark.parametrize("name", list(KINDS))
def test_an_entry_is_named_by_its_model_and_ships_a_definition(name: str):
    kind = KINDS[name]
    assert get_args(kind.model.model_fields["kind"].annotation) == (name,)
    assert issubclass(kind.model, CampaignBase) and CAMPAIGN_KINDS[name] is kind.model
    assert name in kind.model.model_fields, f"the kind's own rules are a section named {name!r}"
    shipped_campaign(kind)


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_an_audience_has_the_ledger_shape_and_obeys_the_audience_tiers(name: str, dialect: str):
    kind = KINDS[name]
    campaign = shipped_campaign(kind)
    only_gold = campaign.model_copy(update={"audience": campaign.audience.model_copy(update={"tiers": ["gold"]})})
    compiled = []
    for day in range(35):  # a member day is monthly: some instant of five weeks finds each kind due
        at = datetime.combine(NOW.date() + timedelta(days=day), time(23, 0), tzinfo=UTC)
        ctx = PlanContext(at=at, zones=ZONES, program=PROGRAM, capped_campaigns=(campaign.id,), dialect=dialect)
        query = kind.audience(only_gold, ctx)
        if query is None:
            continue
        assert isinstance(query, Select)
        assert [c.name for c in query.selected_columns] == LEDGER_COLUMNS
        compiled.append(str(query.compile(dialect=postgresql.dialect() if dialect == "postgresql" else sqlite.dialect())))
    assert compiled, f"{name}: no instant of five weeks had an audience"
    assert all("members.tier IN" in sql for sql in compiled), f"{name}: the audience's tiers are not applied"
    ctx = PlanContext(at=NOW, zones=ZONES, program=PROGRAM, dialect=dialect)
    assert [c.name for c in delivery_columns(campaign, ctx, key=Member.external_id, dues={})] == LEDGER_COLUMNS


@pytest.mark.parametrize("name", list(KINDS))
def test_the_sample_offers_every_variable_a_message_has(name: str, sqlite_session: Session):
    session = sqlite_session
    kind = KINDS[name]
    campaign = shipped_campaign(kind)
    member = a_member(session)
    today = NOW.date()
    occurrence = kind.one_off_occurrence(campaign, member, today, session)
    assert isinstance(occurrence, Occurrence)
    delivery = Delivery(occurrence_key=f"oneoff:{campaign.id}:{member.external_id}:1", campaign=campaign.id,
                        member_id=member.id, channel=campaign.channels[0], reward_points=250,
                        occurrence_date=occurrence.date.isoformat(), payload=occurrence.payload)
    check = SendCheck(campaign, member, delivery, NOW, session, PROGRAM, secret="s" * 32)
    facts = kind.facts(check)
    statements: list[str] = []
    event.listen(session.get_bind(), "before_cursor_execute", lambda *args: statements.append(args[2]))
    reason = kind.recheck(check, facts)
    assert reason is None or isinstance(reason, Reason)
    template = kind.template_context(check, facts)
    assert statements == [], f"{name}: recheck and template_context read the database; read it once, in facts"
    sample = kind.sample_context(campaign, PROGRAM)
    common = common_context(campaign, member, 250, points_balance=0, unsubscribe_url="u")
    assert not set(template) & set(common), f"{name}: a kind's variable hides a common one"
    assert missing_in_sample(template, sample) == [], (
        f"{name}: template_context offers variables its sample_context lacks, so loyalty validate would pass "
        "templates that fail at send time"
    )


def test_the_contract_catches_a_variable_the_sample_lacks():
    """The check above on a kind whose sample forgot a variable (what it exists to catch)."""
    template = {"expiring": {"points": 3, "date": date(2027, 3, 1), "value": 1}, "coupon": {"code": "X"}}
    assert missing_in_sample(template, {"expiring": {"points": 1, "date": date(2027, 3, 1)}, "coupon": None}) == [
        "coupon.code", "expiring.value"]
    assert missing_in_sample({"coupon": None}, {"coupon": {"code": "X"}}) == []
