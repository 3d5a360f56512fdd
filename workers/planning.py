"""Planning: turn a campaign's audience at an instant into rows of the send ledger.

One ``INSERT ... SELECT ... ON CONFLICT (occurrence_key) DO NOTHING RETURNING`` per campaign and
tick: set-based, and idempotent whatever retries, restarts or second clocks happen. Members in the
campaign's holdout are then marked ``held_out`` in the same transaction, and the others' A/B variant
(``campaigns/variants.py``) recorded. The caller enqueues the returned ids only after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, literal, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext, with_frequency_cap
from campaigns.holdout import is_held_out
from campaigns.kinds import kind_of
from campaigns.loader import CampaignSet
from campaigns.program import Program
from campaigns.schema import CampaignBase
from campaigns.variants import variant_name, variant_reward
from models.base import UtcDateTime
from models.delivery import Delivery, DeliveryState, Reason
from models.member import Member

#: Distinct member time zones by walking the (timezone, ...) index: one probe per zone instead of
#: a scan of every member (a "loose index scan", which neither database does by itself).
_ZONES_SQL = text(
    """
    WITH RECURSIVE z(tz) AS (
        SELECT (SELECT min(timezone) FROM members)
        UNION ALL
        SELECT (SELECT min(timezone) FROM members WHERE timezone > z.tz) FROM z WHERE z.tz IS NOT NULL
    )
    SELECT tz FROM z WHERE tz IS NOT NULL
    """
)


def zones_in_use(session: Session) -> list[str]:
    return list(session.scalars(_ZONES_SQL))


@dataclass
class PlanResult:
    campaign: str
    planned_ids: list[int] = field(default_factory=list)
    skipped: int = 0
    held_out: int = 0


def plan_context(session: Session, campaigns: CampaignSet, program: Program, at: datetime) -> PlanContext:
    capped = tuple(sorted(c.id for c in campaigns.campaigns.values() if not c.frequency_cap_exempt))
    return PlanContext(at=at, zones=zones_in_use(session), program=program, capped_campaigns=capped,
                       dialect=session.get_bind().dialect.name)


def audience_query(campaign: CampaignBase, ctx: PlanContext) -> Select | None:
    """The rows planning writes for ``campaign`` at ``ctx.at``: the kind's audience, capped."""
    query = kind_of(campaign).audience(campaign, ctx)
    return with_frequency_cap(campaign, ctx, query) if query is not None else None


def plan_campaign(session: Session, campaign: CampaignBase, ctx: PlanContext) -> PlanResult:
    """Write the campaign's due deliveries at ``ctx.at``; returns the ids now ``planned``."""
    result = PlanResult(campaign.id)
    query = audience_query(campaign, ctx)
    if query is None:
        return result
    rows = query.with_only_columns(
        *(c for c in query.selected_columns if c.name != "member"),
        literal(0).label("attempts"),
        literal(ctx.at, UtcDateTime()).label("planned_at"),
        literal(ctx.at, UtcDateTime()).label("updated_at"),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parsing ambiguity)
    dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(Delivery)
        .from_select([c.name for c in rows.selected_columns], rows)
        .on_conflict_do_nothing(index_elements=["occurrence_key"])
        .returning(Delivery.id, Delivery.state)
    )
    for delivery_id, state in session.execute(statement):
        if state == DeliveryState.PLANNED:
            result.planned_ids.append(delivery_id)
        else:
            result.skipped += 1
    if campaign.holdout and result.planned_ids:
        held = _hold_out(session, campaign, result.planned_ids)
        result.planned_ids = [i for i in result.planned_ids if i not in held]
        result.held_out = len(held)
    if campaign.experiment is not None and result.planned_ids:
        _assign_variants(session, campaign, result.planned_ids)
    result.planned_ids.sort()
    return result


def _assign_variants(session: Session, campaign: CampaignBase, ids: list[int]) -> None:
    """Record each planned delivery's A/B variant (and a variant's own points gift), in the same
    transaction: one UPDATE per variant and gift a chunk, whatever the number of members."""
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        groups: dict[tuple[str | None, bool, int | None], list[int]] = {}
        rows = session.execute(
            select(Delivery.id, Member.external_id, Member.tier).join(Member, Member.id == Delivery.member_id)
            .where(Delivery.id.in_(chunk))
        )
        for delivery_id, external_id, tier in rows:
            name = variant_name(campaign, external_id)
            sets_reward, points = variant_reward(campaign, name, tier)
            groups.setdefault((name, sets_reward, points), []).append(delivery_id)
        for (name, sets_reward, points), members in groups.items():
            values = {"variant": name, **({"reward_points": points} if sets_reward else {})}
            session.execute(update(Delivery).where(Delivery.id.in_(members)).values(**values))


def _hold_out(session: Session, campaign: CampaignBase, ids: list[int]) -> set[int]:
    held: set[int] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        rows = session.execute(
            select(Delivery.id, Member.external_id).join(Member, Member.id == Delivery.member_id).where(Delivery.id.in_(chunk))
        )
        held.update(i for i, external_id in rows if is_held_out(campaign.id, external_id, campaign.holdout))
    for start in range(0, len(held), 5000):
        chunk = sorted(held)[start : start + 5000]
        session.execute(
            update(Delivery).where(Delivery.id.in_(chunk))
            .values(state=DeliveryState.HELD_OUT, reason=Reason.HOLDOUT, finished_at=Delivery.planned_at)
        )
    return held


def preview_campaign(session: Session, campaign: CampaignBase, ctx: PlanContext) -> list[dict]:
    """What :func:`plan_campaign` would write at ``ctx.at``, as plain dicts; writes nothing."""
    query = audience_query(campaign, ctx)
    if query is None:
        return []
    rows = [dict(row._mapping) for row in session.execute(query.order_by(text("occurrence_key")))]
    for row in rows:
        if row["state"] == DeliveryState.PLANNED and is_held_out(campaign.id, row["member"], campaign.holdout):
            row["state"], row["reason"] = DeliveryState.HELD_OUT, Reason.HOLDOUT
    if campaign.experiment is not None:
        _preview_variants(session, campaign, rows)
    return rows


def _preview_variants(session: Session, campaign: CampaignBase, rows: list[dict]) -> None:
    """Each planned row's variant (and a variant's own points gift), as :func:`plan_campaign` records it."""
    planned = [row for row in rows if row["state"] == DeliveryState.PLANNED]
    experiment = campaign.experiment
    rewarding = experiment is not None and any(v.reward is not None for v in experiment.variants)
    tiers: dict[int, str] = {}
    if rewarding:
        ids = sorted({row["member_id"] for row in planned})
        for start in range(0, len(ids), 5000):
            tiers.update(session.execute(select(Member.id, Member.tier).where(Member.id.in_(ids[start:start + 5000]))).all())
    for row in planned:
        row["variant"] = variant_name(campaign, row["member"])
        sets_reward, points = variant_reward(campaign, row["variant"], tiers.get(row["member_id"], ""))
        if sets_reward:
            row["reward_points"] = points
