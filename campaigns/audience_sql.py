"""Building blocks every kind's audience query shares.

A kind decides *who* is due and *which occurrence*; :func:`delivery_columns` adds what every
campaign obeys: consent and channel fallback, the frequency cap, SMS quiet hours, and the shape of
a send-ledger row. Per-zone values (the local date, the send instant) depend on the member's time
zone, so one statement serves every zone: on PostgreSQL they are two array parameters and an
``array_position`` lookup (a statement of a few hundred bytes, whatever the number of zones; a CASE
of 40 branches per value made it 15-25 KB and cost more to build and plan than to run); on SQLite,
a CASE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    exists,
    func,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement, Grouping
from sqlalchemy.sql.selectable import Subquery
from sqlalchemy.sql.type_api import TypeEngine

from campaigns.eligibility import Reason, channel_choice_sql
from campaigns.program import Program
from campaigns.schema import CampaignBase
from core import calendar
from models.base import UtcDateTime
from models.delivery import Delivery, DeliveryState
from models.member import Member


@dataclass(frozen=True)
class PlanContext:
    """What planning knows beyond the campaign: the instant, the zones in use, the program."""

    at: datetime
    zones: Sequence[str]
    program: Program
    capped_campaigns: tuple[str, ...] = ()  # campaigns that count toward the frequency cap
    dialect: str = "postgresql"  # the database the statement is for


@dataclass(frozen=True)
class ZoneDue:
    """In one time zone, at the tick's instant: the occurrence's local date and its send instant."""

    local_date: date
    send_at: datetime


def due_today(send_time: time, at: datetime, zones: Sequence[str]) -> dict[str, ZoneDue]:
    """The zones whose local ``send_time`` today has passed at ``at``, with today's local date there."""
    due = {}
    for zone_name in zones:
        local_day = calendar.local_datetime(at, zone_name).date()
        send_at = calendar.local_instant(local_day, send_time, zone_name)
        if at >= send_at:
            due[zone_name] = ZoneDue(local_day, send_at)
    return due


class ZoneValues(dict):
    """An instant's value per member zone (zone → value), bound by name: on PostgreSQL an array
    parameter ``{name}_values`` read at the member's zone's position in ``due_zones`` (one array of
    zones shared by every :class:`ZoneValues` of an instant, which must all have the same zones), so
    that the statement's shape does not depend on the zones or their values; on SQLite, a CASE."""


#: The key under which a shape build keeps its zone table in the instant's values (not a parameter).
ZONE_TABLE = "_zone_table"


def join_zone_values(ctx: PlanContext, due: dict[str, Any]) -> None:
    """PostgreSQL: read the instant's per-zone values from a table, ``unnest(due_zones,
    {name}_values...)`` (one row a due zone, one column a :class:`ZoneValues`), which
    :func:`due_rows` joins to the member's zone: one hash probe a row gives every per-zone value of
    the row (an ``array_position`` over the zones per value and row cost about 5 us a row: 280 ms
    of a member day's 1.6 s at 1,000,000 members). A kind calls it first in its ``shape`` when its
    rows are many and all in due zones; the table is kept in ``due`` for the rest of the build.
    (Tier upgrades do not: few rows, and PostgreSQL then scans the 40 zones' rows for each.)"""
    if ctx.dialect != "postgresql" or ZONE_TABLE in due:
        return
    names = [name for name, value in due.items() if isinstance(value, ZoneValues)]
    if not names:
        return
    columns = [column("tz", String())]
    arrays = [bindparam("due_zones", type_=postgresql.ARRAY(String()))]
    for name in names:
        sample = next(iter(due[name].values()), None)
        item_type: TypeEngine[Any] = DateTime(timezone=True) if isinstance(sample, datetime) else String()
        columns.append(column(name, item_type))
        arrays.append(bindparam(f"{name}_values", type_=postgresql.ARRAY(item_type)))
    due[ZONE_TABLE] = func.unnest(*arrays).table_valued(*columns).render_derived(name="zone_values")


def zone_value(ctx: PlanContext, due: dict[str, Any], name: str, type_: TypeEngine[Any] | None = None,
               zone: Any = None) -> ColumnElement:
    """The member's zone's value of ``due[name]`` (a :class:`ZoneValues`); NULL for a zone without one.
    ``zone``: the zone column (by default ``members.timezone``; on PostgreSQL, after
    :func:`join_zone_values`, a column of the zone table the kind's statement joins)."""
    if ctx.dialect != "postgresql":
        if zone is None:
            zone = Member.timezone
        values = due.get(name) or {}
        distinct = set(values.values())
        if len(distinct) == 1:
            return literal(distinct.pop(), type_)
        return case({zone_name: literal(value, type_) for zone_name, value in values.items()}, value=zone, else_=null())
    table = due.get(ZONE_TABLE) if zone is None else None
    if table is not None and name in table.c:
        return table.c[name]
    if zone is None:
        zone = Member.timezone
    item_type = DateTime(timezone=True) if isinstance(type_, UtcDateTime) else (type_ or String())
    array = Grouping(bindparam(f"{name}_values", type_=postgresql.ARRAY(item_type)))  # (param::type[])[i]
    return array[func.array_position(bindparam("due_zones", type_=postgresql.ARRAY(String())), zone)]


def param(name: str, type_: TypeEngine[Any] | None = None) -> ColumnElement:
    """An instant's value bound by name (its value comes with the statement's parameters)."""
    return bindparam(name, type_=type_)


def zone_in(ctx: PlanContext, due: dict[str, Any], name: str) -> ColumnElement[bool]:
    """The member's zone is one of ``due[name]`` (a list): ``= ANY(array parameter)`` on PostgreSQL."""
    if ctx.dialect != "postgresql":
        return Member.timezone.in_(due.get(name) or [])
    return Member.timezone == any_(bindparam(name, type_=postgresql.ARRAY(String())))


def bind_values(due: dict[str, Any]) -> dict[str, Any]:
    """The statement parameters of an instant's values: a :class:`ZoneValues` becomes an array in
    the order of ``due_zones`` (a few arrays fewer to send: each costs its conversion)."""
    params: dict[str, Any] = {}
    zones: list[str] | None = None
    for name, value in due.items():
        if name == ZONE_TABLE:
            continue
        if isinstance(value, ZoneValues):
            if zones is None:
                zones = params["due_zones"] = list(value)
            elif len(value) != len(zones) or any(zone not in value for zone in zones):
                raise ValueError(f"{name}: an instant's ZoneValues must all have the same zones")
            params[f"{name}_values"] = [value[zone] for zone in zones]
        else:
            params[name] = value
    return params


def ledger_values(campaign: CampaignBase, ctx: PlanContext, dues: dict[str, ZoneDue], *,
                  channels: Sequence[str] | None = None, prefix: str = "") -> dict[str, Any]:
    """The instant's values :func:`delivery_columns` reads (``prefix`` tells a kind's parts apart)."""
    channels = channels or campaign.channels
    values: dict[str, Any] = {
        f"{prefix}send_at": ZoneValues({z: d.send_at for z, d in dues.items()}),
        f"{prefix}occurrence_date": ZoneValues({z: d.local_date.isoformat() for z, d in dues.items()}),
    }
    if "sms" in channels:  # an SMS due inside the member's quiet hours is planned for their end
        quiet = ctx.program.quiet_hours
        values[f"{prefix}sms_send_at"] = ZoneValues({z: quiet.next_allowed(max(d.send_at, ctx.at), z) for z, d in dues.items()})
    return values


def cap_values(campaign: CampaignBase, ctx: PlanContext) -> dict[str, Any]:
    """The parameters of :func:`with_frequency_cap`."""
    if campaign.frequency_cap_exempt:
        return {}
    return {"cap_since": ctx.at - timedelta(days=ctx.program.frequency_cap.window_days)}


def zone_condition(dues: dict[str, Any], condition_for: Callable[[str, Any], ColumnElement[bool]]) -> ColumnElement:
    return or_(*(and_(Member.timezone == zone, condition_for(zone, due)) for zone, due in dues.items()))


def capped_members(ctx: PlanContext) -> Subquery:
    """The members who have reached the frequency cap at ``ctx.at``: one ``GROUP BY ... HAVING`` over
    the window's range of the ``send_at`` index. The window's start is the parameter ``cap_since``
    (:func:`cap_values`). (A count per member, in a subquery per column and per part of a
    multi-step kind, read the window four times and cost 1.3 s of a 2.5 s win-back at 1,000,000
    members.)"""
    since = param("cap_since", UtcDateTime())
    return (
        select(Delivery.member_id)
        .where(
            Delivery.campaign.in_(ctx.capped_campaigns),
            Delivery.state.in_([DeliveryState.SENT, DeliveryState.SENDING, DeliveryState.PLANNED]),
            Delivery.send_at > since,
        )
        .group_by(Delivery.member_id)
        .having(func.count() >= ctx.program.frequency_cap.max_messages)
        .subquery("capped_members")
    )


def with_frequency_cap(campaign: CampaignBase, ctx: PlanContext, query: Select) -> Select:
    """The kind's audience with the frequency cap applied: a row the kind left planned becomes
    ``skipped`` / ``frequency_cap`` when its member has reached the cap (see :func:`capped_members`).

    The cap is a left join of the kind's rows (all of its parts) to the capped members, so that
    every expression stays parallel-safe: PostgreSQL computes the rows, the join and the two
    ``CASE``s in its parallel workers (a CTE of the capped members, as before, is
    parallel-restricted: the cap and everything above it ran in the leader, after the ``Gather``,
    which also had to pass every row's columns from the workers to the leader)."""
    if campaign.frequency_cap_exempt:
        return query
    due = query.subquery("due")
    capped_rows = capped_members(ctx)
    # The kind's reason first, then the cap's; the state follows the reason as in delivery_columns
    # (PostgreSQL inlines the kind's reason, a nest of CASEs, each time it is named: twice a row here).
    reason = func.coalesce(due.c.reason, case((capped_rows.c.member_id.is_not(None), literal(Reason.FREQUENCY_CAP))))
    replaced = {
        "reason": reason.label("reason"),
        "state": case((reason.is_(None), literal(DeliveryState.PLANNED)), else_=literal(DeliveryState.SKIPPED)).label("state"),
    }
    return select(*(replaced.get(column.name, column) for column in due.c)).select_from(
        due.outerjoin(capped_rows, capped_rows.c.member_id == due.c.member_id))


def delivery_columns(
    campaign: CampaignBase,
    ctx: PlanContext,
    *,
    key: ColumnElement,
    dues: dict[str, Any],
    prefix: str = "",
    kind_reason: ColumnElement | None = None,
    reward: ColumnElement | None = None,
    channels: Sequence[str] | None = None,
    payload: dict | None = None,
    occurrence_date: ColumnElement | None = None,
) -> list[ColumnElement]:
    """The labelled columns of a send-ledger row, ready for ``INSERT ... SELECT`` (the frequency cap
    is applied around the kind's whole statement: :func:`with_frequency_cap`). ``dues`` holds the
    instant's values (:func:`ledger_values`, with the same ``prefix`` and ``channels``), read through
    :func:`zone_value`. ``reward`` defaults to the campaign's ``reward.points_by_tier`` for the
    member's tier."""
    channels = channels or campaign.channels
    if reward is None and campaign.reward is not None:
        reward = case(campaign.reward.points_by_tier, value=Member.tier, else_=None)
    channel, no_channel_reason = channel_choice_sql(channels)
    # The first reason not to send: COALESCE evaluates each CASE once (a CASE testing each for NULL
    # before returning it evaluated them twice). The state follows the reason (with_frequency_cap
    # relies on it).
    reason = func.coalesce(no_channel_reason, kind_reason) if kind_reason is not None else no_channel_reason
    state = case((reason.is_(None), literal(DeliveryState.PLANNED)), else_=literal(DeliveryState.SKIPPED))

    send_at = zone_value(ctx, dues, f"{prefix}send_at", UtcDateTime())
    if "sms" in channels:  # an SMS due inside the member's quiet hours is planned for their end
        sms_send_at = zone_value(ctx, dues, f"{prefix}sms_send_at", UtcDateTime())
        send_at = case((channel == literal("sms"), sms_send_at), else_=send_at)
    return [
        key.label("occurrence_key"),
        literal(campaign.id).label("campaign"),
        Member.id.label("member_id"),
        Member.external_id.label("member"),
        channel.label("channel"),
        state.label("state"),
        reason.label("reason"),
        (reward if reward is not None else cast(null(), Integer)).label("reward_points"),
        (occurrence_date if occurrence_date is not None
         else zone_value(ctx, dues, f"{prefix}occurrence_date")).label("occurrence_date"),
        send_at.label("send_at"),
        (literal(payload, JSON()) if payload is not None else cast(null(), JSON)).label("payload"),
    ]


def not_in_ledger(key: ColumnElement) -> ColumnElement:
    return ~exists().where(Delivery.occurrence_key == key)


def due_rows(campaign: CampaignBase, ctx: PlanContext, *, key: ColumnElement, dues: dict[str, Any],
             **columns: Any) -> Select:
    """How every kind's audience statement starts: the send-ledger row's columns
    (:func:`delivery_columns`, which takes ``columns``), for occurrences not in the ledger yet, of members
    in the campaign's audience tiers. The kind adds who is due: its FROM and joins, its conditions."""
    query = select(*delivery_columns(campaign, ctx, key=key, dues=dues, **columns)).where(not_in_ledger(key))
    if (table := dues.get(ZONE_TABLE)) is not None:  # join_zone_values: the member's zone's row
        query = query.where(table.c.tz == Member.timezone)
    if campaign.audience.tiers is not None:
        query = query.where(Member.tier.in_(campaign.audience.tiers))
    return query
