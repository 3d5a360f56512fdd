"""(a) Audience selection per campaign kind, against the best hand-written SQL (the floor).

A floor is written per kind in :data:`FLOORS`: a function of ``(campaign, at, zones)`` that returns
one or more candidate SQL statements selecting the member ids that kind's audience selects (the
fastest correct one is the floor), or ``None`` when nothing is due. The floors compute which zones
are due on their own, from :mod:`zoneinfo`, not with the product's helpers, so that the id check
also checks the product's rules. A kind in ``campaigns.kinds.KINDS`` without a floor is
reported as "no floor yet": add a function here and register it.

What is timed, warm, median of several runs taking turns:

- ours: what planning does to select an audience: the plan context (zones in use), the kind's
  statement as planning gets it (``audience_statement``: built once per campaign on PostgreSQL,
  the instant's values computed and bound), SQLAlchemy's compiled-statement cache and the
  statement's execution in the server as planning runs it (``execute_audience``), wrapped in ``SELECT count(q) FROM (...) q`` so that every
  column is computed (the rows stay in the server, as they do in ``INSERT ... SELECT``; the wrapper
  is built once per statement, as planning builds its ``INSERT`` once);
- the floor: the hand-written statement wrapped the same way, on the same connection.

Before timing, both are run for their member ids, at the measured instant and at a few more
(a leap day, the day after, a DST change), and compared as multisets: a difference raises
:class:`~benchmarks.common.Mismatch` with examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from psycopg import sql
from sqlalchemy import func, select

from benchmarks.common import (
    Bench,
    Mismatch,
    Row,
    alternate,
    audience_query,
    audience_statement,
    median,
    plan_context,
    ratio,
    raw_connection,
    timed,
)
from benchmarks.generate import AT

UTC = UTC
TARGET = 1.5


@dataclass(frozen=True)
class Candidate:
    name: str
    statement: sql.Composable  # selects one column: the member id


Floor = Callable[[object, datetime, list[str]], list[Candidate] | None]


# --- due zones, computed here independently of core/calendar.py ------------------------------

@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(at: datetime, zone: str) -> date:
    return at.astimezone(_zone(zone)).date()


def instant(day: date, at_time: time, zone: str) -> datetime:
    return datetime.combine(day, at_time).replace(tzinfo=_zone(zone)).astimezone(UTC)


def due_today(at: datetime, zones: Iterable[str], send_time: time) -> dict[str, date]:
    """Zones where today's local send time has passed: zone → local date."""
    out = {}
    for zone in zones:
        day = local_day(at, zone)
        if at >= instant(day, send_time, zone):
            out[zone] = day
    return out


def _isleap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def celebrated(day: date, leap_rule: str) -> list[tuple[int, int]]:
    out = [(day.month, day.day)]
    if not _isleap(day.year):
        if leap_rule == "feb28" and (day.month, day.day) == (2, 28):
            out.append((2, 29))
        if leap_rule == "mar1" and (day.month, day.day) == (3, 1):
            out.append((2, 29))
    return out


# --- SQL pieces ------------------------------------------------------------------------------------

L = sql.Literal


def _values(rows: list[tuple]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(L(v) for v in row)) for row in rows)


def _tiers(campaign, alias: str = "m") -> sql.Composable:
    tiers = campaign.audience.tiers
    if tiers is None:
        return sql.SQL("")
    return sql.SQL(" AND {}.tier IN ({})").format(sql.Identifier(alias), sql.SQL(", ").join(L(t) for t in tiers))


def _not_sent(key: sql.Composable) -> sql.Composable:
    return sql.SQL("NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.occurrence_key = {})").format(key)


def _union(parts: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(p) for p in parts)


def _ts(value: datetime) -> sql.Composable:
    return sql.SQL("{}::timestamptz").format(L(value.isoformat()))


# --- the floors ----------------------------------------------------------------------------------

def birthday_floor(campaign, at: datetime, zones: list[str]) -> list[Candidate] | None:
    """Index probes on (timezone, birth_month, birth_day), one per due zone and birthday."""
    due = due_today(at, zones, campaign.send_time)
    if not due:
        return None
    rule = campaign.birthday.leap_day_in_common_years
    by_year: dict[int, list[tuple[str, int, int]]] = {}
    for zone, day in due.items():
        for month, dom in celebrated(day, rule):
            by_year.setdefault(day.year, []).append((zone, month, dom))
    tiers = _tiers(campaign)
    row_in, lateral = [], []
    for year, triples in sorted(by_year.items()):
        key = sql.SQL("'birthday:' || m.external_id || {}").format(L(f":{year}"))
        row_in.append(sql.SQL(
            "SELECT m.id FROM members m WHERE (m.timezone, m.birth_month, m.birth_day) IN ({}){} AND {}"
        ).format(_values(triples), tiers, _not_sent(key)))
        lateral.append(sql.SQL(
            "SELECT m.id FROM (VALUES {}) v(tz, mo, dy) CROSS JOIN LATERAL ("
            "SELECT id, external_id, tier FROM members WHERE timezone = v.tz AND birth_month = v.mo AND birth_day = v.dy) m"
            " WHERE true{} AND {}"
        ).format(_values(triples), tiers, _not_sent(key)))
    return [Candidate("row IN list", _union(row_in)), Candidate("lateral probes", _union(lateral))]


def points_expiring_floor(campaign, at: datetime, zones: list[str]) -> list[Candidate] | None:
    """One range scan of the open-lots partial index per offset, then the member's own zone window."""
    due = due_today(at, zones, campaign.send_time)
    if not due:
        return None
    tiers = _tiers(campaign)
    join_parts, exists_parts = [], []
    for offset in campaign.points_expiring.days_before:
        rows = []
        for zone, day in due.items():
            expiry = day + timedelta(days=offset)
            lo, hi = instant(expiry, time(0), zone), instant(expiry + timedelta(days=1), time(0), zone)
            rows.append((zone, lo.isoformat(), hi.isoformat(), f":{expiry.isoformat()}:{offset}"))
        lowest_ts = min(datetime.fromisoformat(r[1]) for r in rows)
        highest_ts = max(datetime.fromisoformat(r[2]) for r in rows)
        key = sql.SQL("'points_expiring:' || m.external_id || v.suffix")
        values = sql.SQL("(VALUES {}) v(tz, lo, hi, suffix)").format(_values(rows))
        join_parts.append(sql.SQL(
            "SELECT DISTINCT m.id FROM point_entries p JOIN members m ON m.id = p.member_id"
            " JOIN {} ON v.tz = m.timezone"
            " WHERE p.remaining > 0 AND p.expires_at >= {} AND p.expires_at < {}"
            " AND p.expires_at >= v.lo::timestamptz AND p.expires_at < v.hi::timestamptz{} AND {}"
        ).format(values, _ts(lowest_ts), _ts(highest_ts), tiers, _not_sent(key)))
        exists_parts.append(sql.SQL(
            "SELECT m.id FROM members m JOIN {} ON v.tz = m.timezone"
            " WHERE m.id IN (SELECT p.member_id FROM point_entries p WHERE p.remaining > 0"
            " AND p.expires_at >= {} AND p.expires_at < {})"
            " AND EXISTS (SELECT 1 FROM point_entries p WHERE p.member_id = m.id AND p.remaining > 0"
            " AND p.expires_at >= v.lo::timestamptz AND p.expires_at < v.hi::timestamptz){} AND {}"
        ).format(values, _ts(lowest_ts), _ts(highest_ts), tiers, _not_sent(key)))
    return [Candidate("lots range, join", _union(join_parts)), Candidate("lots range, exists", _union(exists_parts))]


def winback_floor(campaign, at: datetime, zones: list[str]) -> list[Candidate] | None:
    """Per due zone, a range of (timezone, last_order_local_date) on its index, per step."""
    due = due_today(at, zones, campaign.send_time)
    if not due:
        return None
    tiers = _tiers(campaign)
    lateral, ors = [], []
    for step in campaign.winback.steps:
        rows = [(zone, (day - timedelta(days=step.to_day)).isoformat(), (day - timedelta(days=step.from_day)).isoformat())
                for zone, day in due.items()]
        key = sql.SQL("'winback:' || m.external_id || ':' || m.last_order_local_date || {}").format(L(f":{step.step}"))
        lateral.append(sql.SQL(
            "SELECT m.id FROM (VALUES {}) v(tz, lo, hi) JOIN members m"
            " ON m.timezone = v.tz AND m.last_order_local_date BETWEEN v.lo AND v.hi WHERE true{} AND {}"
        ).format(_values(rows), tiers, _not_sent(key)))
        condition = sql.SQL(" OR ").join(
            sql.SQL("(m.timezone = {} AND m.last_order_local_date BETWEEN {} AND {})").format(L(z), L(lo), L(hi))
            for z, lo, hi in rows
        )
        ors.append(sql.SQL("SELECT m.id FROM members m WHERE ({}){} AND {}").format(condition, tiers, _not_sent(key)))
    return [Candidate("zone ranges, join", _union(lateral)), Candidate("zone ranges, OR", _union(ors))]


def tier_upgrade_floor(campaign, at: datetime, zones: list[str]) -> list[Candidate] | None:
    """Recent upgrades to the member's current tier, announced once their local send time came."""
    if not zones:
        return None
    rows = []
    for zone in zones:
        day = local_day(at, zone)
        past = at >= instant(day, campaign.send_time, zone)
        rows.append((zone, (day if past else day - timedelta(days=1)).isoformat()))
    since = at - timedelta(days=campaign.tier_upgrade.announce_within_days)
    key = sql.SQL("'tier_upgrade:' || m.external_id || ':' || m.tier || ':' || t.local_date")
    join = sql.SQL(
        "SELECT m.id FROM tier_changes t"
        " JOIN members m ON m.id = t.member_id AND m.tier = t.to_tier AND m.tier_reached_at = t.at"
        " JOIN (VALUES {}) v(tz, last_due) ON v.tz = m.timezone"
        " WHERE t.direction = 'up' AND t.at >= {} AND t.at <= {} AND t.local_date <= v.last_due{} AND {}"
    ).format(_values(rows), _ts(since), _ts(at), _tiers(campaign), _not_sent(key))
    probes = sql.SQL(
        "WITH t AS MATERIALIZED (SELECT member_id, to_tier, at, local_date FROM tier_changes"
        " WHERE direction = 'up' AND at >= {} AND at <= {} ORDER BY member_id)"
        " SELECT m.id FROM t CROSS JOIN LATERAL (SELECT id, external_id, tier, timezone FROM members"
        " WHERE id = t.member_id AND tier = t.to_tier AND tier_reached_at = t.at OFFSET 0) m"
        " JOIN (VALUES {}) v(tz, last_due) ON v.tz = m.timezone"
        " WHERE t.local_date <= v.last_due{} AND {}"
    ).format(_ts(since), _ts(at), _values(rows), _tiers(campaign), _not_sent(key))
    last_due = sql.SQL("CASE m.timezone {} END").format(
        sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(L(z), L(d)) for z, d in rows))
    by_case = sql.SQL(
        "SELECT m.id FROM tier_changes t"
        " JOIN members m ON m.id = t.member_id AND m.tier = t.to_tier AND m.tier_reached_at = t.at"
        " WHERE t.direction = 'up' AND t.at >= {} AND t.at <= {} AND t.local_date <= {}{} AND {}"
    ).format(_ts(since), _ts(at), last_due, _tiers(campaign), _not_sent(key))
    return [Candidate("recent changes, join", join), Candidate("recent changes, member probes", probes),
            Candidate("recent changes, zone CASE", by_case)]


def member_day_floor(campaign, at: datetime, zones: list[str]) -> list[Candidate] | None:
    """Every member of the eligible tiers in the zones where today is the member day."""
    from dateutil.rrule import rrulestr

    rule = rrulestr(campaign.member_day.rrule, dtstart=datetime(2000, 1, 1))
    due = {}
    for zone, day in due_today(at, zones, campaign.send_time).items():
        hit = rule.after(datetime.combine(day, time(0)), inc=True)
        if hit is not None and hit.date() == day:
            due[zone] = day
    if not due:
        return None
    by_day: dict[date, list[str]] = {}
    for zone, day in due.items():
        by_day.setdefault(day, []).append(zone)
    parts = []
    for day, day_zones in sorted(by_day.items()):
        key = sql.SQL("'member_day:' || m.external_id || {}").format(L(f":{day.isoformat()}"))
        parts.append(sql.SQL("SELECT m.id FROM members m WHERE m.timezone IN ({}){} AND {}").format(
            sql.SQL(", ").join(L(z) for z in day_zones), _tiers(campaign), _not_sent(key)))
    return [Candidate("zones and tiers", _union(parts))]


#: kind → its floor. A kind of ``campaigns.kinds.KINDS`` missing here prints "no floor yet".
FLOORS: dict[str, Floor] = {
    "birthday": birthday_floor,
    "points_expiring": points_expiring_floor,
    "winback": winback_floor,
    "tier_upgrade": tier_upgrade_floor,
    "member_day": member_day_floor,
}


# --- measuring -----------------------------------------------------------------------------------

def _zones(session) -> list[str]:
    from workers.planning import zones_in_use

    return zones_in_use(session)


def _execute(session, campaign, statement, params):
    """Run an audience statement as planning runs it (``workers.planning.execute_audience``: planned
    for the instant's values when the kind asks)."""
    from workers.planning import execute_audience

    return execute_audience(session, campaign, statement, params)


def our_ids(session, bench: Bench, campaign, at: datetime) -> list[int] | None:
    statement = audience_statement(campaign, plan_context(session, bench, at))
    if statement is None:
        return None
    query, params = statement
    return list(_execute(session, campaign, select(query.subquery("q").c.member_id), params).scalars())


_COUNTS: dict[int, tuple[object, object]] = {}


def counted(query):
    """``SELECT count(q) FROM (query) q``, built once per statement (planning builds its INSERT once)."""
    cached = _COUNTS.get(id(query))
    if cached is None or cached[0] is not query:
        cached = _COUNTS[id(query)] = (query, select(func.count(query.subquery("q").table_valued())))
    return cached[1]


def floor_ids(session, candidate: Candidate) -> list[int]:
    with raw_connection(session).cursor() as cursor:
        cursor.execute(candidate.statement)
        return [row[0] for row in cursor.fetchall()]


def check_same_ids(kind: str, at: datetime, ours: list[int] | None, floor: list[int] | None, name: str) -> int:
    ours, floor = ours or [], floor or []
    if Counter(ours) != Counter(floor):
        only_ours = sorted((Counter(ours) - Counter(floor)).elements())[:10]
        only_floor = sorted((Counter(floor) - Counter(ours)).elements())[:10]
        raise Mismatch(
            f"{kind} at {at.isoformat()}: our audience has {len(ours)} rows, the floor '{name}' {len(floor)}; "
            f"only ours: {only_ours}, only the floor: {only_floor}"
        )
    return len(ours)


def measure_instant(bench: Bench, kind: str) -> datetime | None:
    """The benchmark instant, or the first day after it at the same hour when something is due."""
    campaign = bench.campaigns_of_kind(kind)[0]
    floor = FLOORS[kind]
    with bench.runtime.sessions() as session:
        zones = _zones(session)
        for days in range(0, 63):
            at = AT + timedelta(days=days)
            if audience_query(campaign, plan_context(session, bench, at)) is not None or floor(campaign, at, zones):
                return at
    return None


def check_instants(at: datetime) -> list[datetime]:
    """Where the ids are compared: the measured instant and a few awkward ones."""
    extra = [
        at + timedelta(days=1),
        AT.replace(hour=9, minute=30),  # morning UTC: Asia and Oceania due, the Americas not yet
        datetime(2028, 2, 29, 18, 0, tzinfo=UTC),  # a leap day
        datetime(2027, 3, 1, 18, 0, tzinfo=UTC),  # the day after Feb 28 in a common year
        datetime(2027, 3, 14, 13, 30, tzinfo=UTC),  # the US spring-forward day
        datetime(2027, 3, 2, 18, 0, tzinfo=UTC),  # the first Tuesday of March
    ]
    return [at, *(e for e in extra if e != at)]


def measure(bench: Bench) -> list[Row]:
    from campaigns.kinds import KINDS

    rows = []
    for kind in KINDS:
        campaigns = bench.campaigns_of_kind(kind)
        if kind not in FLOORS:
            rows.append(Row("a. audience", kind, status="no floor yet", target=f"≤ {TARGET}×",
                            note="add a floor to benchmarks/audience.py FLOORS"))
            continue
        if not campaigns:
            rows.append(Row("a. audience", kind, status="no campaign", target=f"≤ {TARGET}×",
                            note="no enabled definition of this kind"))
            continue
        rows.append(_measure_kind(bench, kind, campaigns[0]))
    return rows


def _measure_kind(bench: Bench, kind: str, campaign) -> Row:
    floor = FLOORS[kind]
    at = measure_instant(bench, kind)
    if at is None:
        return Row("a. audience", kind, status="nothing due", target=f"≤ {TARGET}×", note="within 62 days of the instant")
    with bench.runtime.sessions() as session:
        zones = _zones(session)
        # Correctness first: ours and every candidate select the same members, at several instants.
        audience_rows = 0
        for check_at in check_instants(at):
            ours = our_ids(session, bench, campaign, check_at)
            candidates = floor(campaign, check_at, zones)
            if ours is None and candidates is None:
                continue
            for candidate in candidates or [Candidate("(nothing due)", sql.SQL("SELECT 1 WHERE false"))]:
                count = check_same_ids(kind, check_at, ours, floor_ids(session, candidate) if candidates else [], candidate.name)
                if check_at == at:
                    audience_rows = count
            session.rollback()

        candidates = floor(campaign, at, zones)
        if candidates is None:  # measure_instant chose an instant when something is due
            raise RuntimeError(f"the {kind} floor has nothing due at {at.isoformat()}, the instant measured")
        raw = raw_connection(session)

        def run_ours():
            ctx = plan_context(session, bench, at)
            query, params = audience_statement(campaign, ctx)
            _execute(session, campaign, counted(query), params).scalar()

        def run_floor(candidate: Candidate):
            statement = sql.SQL("SELECT count(q) FROM ({}) q").format(candidate.statement)

            def run():
                with raw.cursor() as cursor:
                    cursor.execute(statement)
                    cursor.fetchone()
            return run

        def run_context():
            plan_context(session, bench, at)

        prebuilt_query, prebuilt_params = audience_statement(campaign, plan_context(session, bench, at))
        prebuilt = counted(prebuilt_query)

        def run_statement():  # ours without the context and the instant's values: the statement itself
            _execute(session, campaign, prebuilt, prebuilt_params).scalar()

        functions = {"ours": run_ours, "context": run_context, "statement": run_statement}
        functions.update({c.name: run_floor(c) for c in candidates})
        warm, _ = timed(run_ours)
        repeats = bench.repeats if warm < 0.5 else max(3, bench.repeats // 2)
        times = alternate(functions, repeats)
        session.rollback()

    medians = {name: median(values) for name, values in times.items()}
    floor_name = min((c.name for c in candidates), key=lambda n: medians[n])
    ours_s, floor_s = medians["ours"], medians[floor_name]
    value = ratio(ours_s, floor_s)
    return Row(
        "a. audience", kind, ours=ours_s * 1000, floor=floor_s * 1000, unit="ms", ratio=value,
        target=f"≤ {TARGET}×", met=value is not None and value <= TARGET,
        note=(f"{audience_rows:,} rows at {at:%Y-%m-%d %H:%M}Z; ours: statement {medians['statement'] * 1000:,.1f} ms"
              f" + building {max(ours_s - medians['statement'], 0) * 1000:,.1f} ms; floor: {floor_name}"),
        details={"at": at.isoformat(), "rows": audience_rows, "floor": floor_name,
                 "medians_ms": {k: v * 1000 for k, v in medians.items()},
                 "plan_context_ms": medians["context"] * 1000,
                 "statement_ms": medians["statement"] * 1000},
    )
