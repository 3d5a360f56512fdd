"""Planning: turn a campaign's audience at an instant into rows of the send ledger.

One ``INSERT ... SELECT ... ON CONFLICT (occurrence_key) DO NOTHING RETURNING`` per campaign and
tick: set-based, and idempotent whatever retries, restarts or second clocks happen. Members in the
campaign's holdout are then marked ``held_out`` in the same transaction, and the others' A/B variant
(``campaigns/variants.py``) recorded. The caller enqueues the returned ids only after the commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Result, Select, Table, bindparam, literal, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from campaigns.audience_sql import PlanContext, bind_values, cap_values, with_frequency_cap
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
    """The distinct zones of the members, read again on every call (a zone a member was just given is
    never missed). On PostgreSQL through the driver's connection (the session's transaction): a
    third of the read's client time was SQLAlchemy's result handling, for 40 one-column rows."""
    driver = _driver(session)
    if driver is None:
        return list(session.scalars(_ZONES_SQL))
    return [row[0] for row in driver.execute(_ZONES_QUERY).fetchall()]


_ZONES_QUERY = _ZONES_SQL.text


def _driver(session: Session) -> Any:
    """The psycopg connection under the session's (``None`` on another database)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return session.connection().connection.driver_connection


@contextmanager
def _unprepared(session: Session) -> Iterator[None]:
    """Statements run in the block are planned by PostgreSQL for their own values: psycopg prepares
    a statement run five times on a connection (the threshold is the connection's), and PostgreSQL
    may then run one plan made for any values (at 100,000 members, points expiring's audience took
    4x as long on that generic plan)."""
    driver = _driver(session)
    threshold = getattr(driver, "prepare_threshold", None)
    if threshold is None:
        yield
        return
    driver.prepare_threshold = None
    try:
        yield
    finally:
        driver.prepare_threshold = threshold


def execute_audience(session: Session, campaign: CampaignBase, statement: Any, params: dict[str, Any]) -> Result[Any]:
    """Run a campaign's audience statement (or one built on it, such as planning's ``INSERT``) as
    planning does: planned for the instant's values when the kind asks (``Kind.plan_per_instant``)."""
    if kind_of(campaign).plan_per_instant:
        with _unprepared(session):
            return session.execute(statement, params)
    return session.execute(statement, params)


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
    """The rows planning writes for ``campaign`` at ``ctx.at``: the kind's audience, capped, built
    afresh with the instant's values bound (what :func:`audience_statement` caches)."""
    kind = kind_of(campaign)
    due = kind.due(campaign, ctx)
    if due is None:
        return None
    return with_frequency_cap(campaign, ctx, kind.shape(campaign, ctx, due)).params(_parameters(campaign, ctx, due))


def _parameters(campaign: CampaignBase, ctx: PlanContext, due: dict[str, Any]) -> dict[str, Any]:
    return {**bind_values(due), **cap_values(campaign, ctx)}


@dataclass
class _Shape:
    campaign: CampaignBase
    query: Select
    insert: Insert | None = None


#: (campaign id, dialect, capped campaigns, cap) → the campaign's audience statement, its values
#: unbound. Building a kind's statement cost more Python than running it (a win-back's 36 ms).
_SHAPES: dict[tuple[Any, ...], _Shape] = {}


def _shape(campaign: CampaignBase, ctx: PlanContext, due: dict[str, Any]) -> _Shape:
    if ctx.dialect != "postgresql":  # SQLite inlines the zones' values: one statement per instant
        return _Shape(campaign, with_frequency_cap(campaign, ctx, kind_of(campaign).shape(campaign, ctx, due)))
    key = (campaign.id, ctx.dialect, ctx.capped_campaigns, ctx.program.frequency_cap.max_messages)
    cached = _SHAPES.get(key)
    if cached is None or (cached.campaign is not campaign and cached.campaign != campaign):
        cached = _Shape(campaign, with_frequency_cap(campaign, ctx, kind_of(campaign).shape(campaign, ctx, due)))
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        _SHAPES[key] = cached
    return cached


def audience_statement(campaign: CampaignBase, ctx: PlanContext) -> tuple[Select, dict[str, Any]] | None:
    """The same rows as :func:`audience_query` as (statement, parameters): on PostgreSQL the
    statement is built once per campaign definition and frequency cap, and each instant only
    computes its values (the due zones' dates, instants and windows, as array parameters)."""
    shape, params = _shaped(campaign, ctx)
    return None if shape is None else (shape.query, params)


def _shaped(campaign: CampaignBase, ctx: PlanContext) -> tuple[_Shape | None, dict[str, Any]]:
    due = kind_of(campaign).due(campaign, ctx)
    if due is None:
        return None, {}
    return _shape(campaign, ctx, due), _parameters(campaign, ctx, due)


def _insert(shape: _Shape, dialect: str) -> Insert:
    if shape.insert is not None:
        return shape.insert
    query = shape.query
    rows = query.with_only_columns(
        *(c for c in query.selected_columns if c.name != "member"),
        literal(0).label("attempts"),
        bindparam("planned_at", type_=UtcDateTime()).label("planned_at"),
        bindparam("planned_at", type_=UtcDateTime()).label("updated_at"),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parsing ambiguity)
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = Delivery.__table__  # Core: the ORM reads an INSERT's parameters as rows to insert
    assert isinstance(table, Table)
    shape.insert = (
        dialect_insert(table)
        .from_select([c.name for c in rows.selected_columns], rows)
        .on_conflict_do_nothing(index_elements=["occurrence_key"])
        .returning(table.c.id, table.c.state)
    )
    return shape.insert


def plan_campaign(session: Session, campaign: CampaignBase, ctx: PlanContext) -> PlanResult:
    """Write the campaign's due deliveries at ``ctx.at``; returns the ids now ``planned``."""
    result = PlanResult(campaign.id)
    shape, params = _shaped(campaign, ctx)
    if shape is None:
        return result
    statement = _insert(shape, session.get_bind().dialect.name)
    rows = cast("Result[int, str]", execute_audience(session, campaign, statement, {**params, "planned_at": ctx.at}))
    for delivery_id, state in rows:  # a Row unpacks (Result.tuples() is deprecated in SQLAlchemy 2.1)
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
    statement = audience_statement(campaign, ctx)
    if statement is None:
        return []
    query, params = statement
    rows = [dict(row._mapping) for row in execute_audience(session, campaign, query.order_by(text("occurrence_key")), params)]
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
