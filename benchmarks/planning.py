"""(b) Planning: deliveries written per second by ``plan_campaign`` against a raw INSERT ... SELECT.

Ours is the product's planning as the ``evaluate_campaign`` actor runs it: in one transaction, the
plan context, the kind's audience, ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` and
the ids back in Python, then the commit. The floor is one hand-written
``INSERT ... SELECT ... ON CONFLICT (occurrence_key) DO NOTHING`` of the same rows, sent raw on the
same kind of connection, committed the same way.

Two workloads, each into an empty send ledger (truncated before every pass):

- a sweep: one tick a day at 18:00 UTC for many days from the benchmark instant (180 in a full
  run, 60 with --quick), which writes half a year of birthdays: the throughput figure the target is about;
- one tick, at the benchmark instant: the latency of a single evaluation.

After every pass the ledger is fingerprinted (a hash over every column planning writes): ours and
the floor must write exactly the same rows, or :class:`~benchmarks.common.Mismatch` is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from psycopg import sql

from benchmarks.audience import L, _values, celebrated, due_today, instant
from benchmarks.common import Bench, Mismatch, Row, median, plan_campaign, plan_context
from benchmarks.generate import AT

TARGET = 0.5

FINGERPRINT = """
    SELECT count(*), coalesce(sum(hashtextextended(concat_ws('|', occurrence_key, campaign, member_id, channel, state,
        reason, reward_points, coupon_code, occurrence_date, send_at, attempts, planned_at, updated_at, finished_at,
        payload::text), 0)::numeric), 0)
    FROM deliveries
"""


def _channel_sql(channels: list[str]) -> tuple[sql.Composable, sql.Composable]:
    """(the first usable channel, the reason when there is none), as the product defines them."""
    consent = {"email": "m.email_opt_in", "sms": "m.sms_opt_in"}
    status = {"email": "m.email_status", "sms": "m.phone_status"}
    usable = [sql.SQL("({} AND {} = 'ok')").format(sql.SQL(consent[c]), sql.SQL(status[c])) for c in channels]
    channel = sql.SQL("CASE {} END").format(
        sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(u, L(c)) for u, c in zip(usable, channels, strict=True)))
    any_usable = sql.SQL(" OR ").join(usable)
    any_consent = sql.SQL(" OR ").join(sql.SQL(consent[c]) for c in channels)
    reason = sql.SQL(
        "CASE WHEN {} THEN NULL WHEN {} THEN 'no_usable_address' ELSE 'no_consent' END"
    ).format(any_usable, any_consent)
    return channel, reason


def birthday_insert(campaign, at: datetime, zones: list[str]) -> sql.Composable | None:
    """The birthday tick as one raw INSERT ... SELECT: exact index probes, the row built in SQL."""
    if campaign.holdout or not campaign.frequency_cap_exempt:
        raise NotImplementedError("the birthday planning floor covers campaigns without holdout or cap")
    if set(campaign.channels) != {"email"}:
        raise NotImplementedError("the birthday planning floor covers the email channel")
    due = due_today(at, zones, campaign.send_time)
    if not due:
        return None
    rows = []
    for zone, day in due.items():
        send_at = instant(day, campaign.send_time, zone).isoformat()
        for month, dom in celebrated(day, campaign.birthday.leap_day_in_common_years):
            rows.append((zone, month, dom, f":{day.year}", day.isoformat(), send_at))
    channel, no_channel = _channel_sql(campaign.channels)
    known_since = at - timedelta(days=campaign.birthday.min_days_since_birthday_change)
    reward: sql.Composable
    if campaign.reward is not None and campaign.reward.points_by_tier:
        reward = sql.SQL("CASE m.tier {} END").format(sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}").format(L(t), L(p)) for t, p in campaign.reward.points_by_tier.items()))
    else:
        reward = sql.SQL("NULL::integer")
    tiers: sql.Composable = sql.SQL("")
    if campaign.audience.tiers is not None:
        tiers = sql.SQL(" AND m.tier IN ({})").format(sql.SQL(", ").join(L(t) for t in campaign.audience.tiers))
    return sql.SQL(
        "INSERT INTO deliveries (occurrence_key, campaign, member_id, channel, state, reason, reward_points,"
        " occurrence_date, send_at, attempts, planned_at, updated_at)"
        " SELECT 'birthday:' || m.external_id || v.suffix, {campaign}, m.id, {channel},"
        " CASE WHEN r.reason IS NULL THEN 'planned' ELSE 'skipped' END, r.reason, {reward},"
        " v.local_date, v.send_at::timestamptz, 0, {at}::timestamptz, {at}::timestamptz"
        " FROM (VALUES {values}) v(tz, mo, dy, suffix, local_date, send_at)"
        " CROSS JOIN LATERAL (SELECT * FROM members WHERE timezone = v.tz AND birth_month = v.mo AND birth_day = v.dy) m"
        " CROSS JOIN LATERAL (SELECT CASE WHEN ({no_channel}) IS NOT NULL THEN ({no_channel})"
        " WHEN m.birthday_updated_at > {known_since}::timestamptz THEN 'birthday_recently_changed' END AS reason) r"
        " WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.occurrence_key = 'birthday:' || m.external_id || v.suffix)"
        "{tiers}"
        " ON CONFLICT (occurrence_key) DO NOTHING"
    ).format(
        campaign=L(campaign.id), channel=channel, reward=reward, at=L(at.isoformat()), values=_values(rows),
        no_channel=no_channel, known_since=L(known_since.isoformat()), tiers=tiers,
    )


#: kind → its raw INSERT ... SELECT (the floor). Kinds missing here print "no floor yet".
INSERT_FLOORS: dict[str, Callable] = {"birthday": birthday_insert}
KINDS = ["birthday"]


def _truncate(bench: Bench) -> None:
    with bench.runtime.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE deliveries CASCADE")


def _fingerprint(bench: Bench) -> tuple[int, int]:
    with bench.runtime.engine.connect() as conn:
        count, digest = conn.exec_driver_sql(FINGERPRINT).one()
        return int(count), int(digest)


def _zones(bench: Bench) -> list[str]:
    from workers.planning import zones_in_use

    with bench.runtime.sessions() as session:
        return zones_in_use(session)


def ours_pass(bench: Bench, campaign, instants: list[datetime]) -> tuple[float, int]:
    """Plan each instant as the actor does; returns (seconds, rows written)."""
    import time

    from models.db import transaction

    written = 0
    started = time.perf_counter()
    for at in instants:
        with transaction(bench.runtime.sessions) as session:
            result = plan_campaign(session, campaign, plan_context(session, bench, at))
        written += len(result.planned_ids) + result.skipped + getattr(result, "held_out", 0)
    return time.perf_counter() - started, written


def floor_pass(bench: Bench, statements: list[sql.Composable]) -> tuple[float, int]:
    import time

    written = 0
    raw = bench.runtime.engine.raw_connection()
    try:
        conn = raw.driver_connection
        started = time.perf_counter()
        for statement in statements:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                written += cursor.rowcount
            conn.commit()
        return time.perf_counter() - started, written
    finally:
        raw.close()


def _compare(kind: str, what: str, ours: tuple[int, int], floor: tuple[int, int]) -> None:
    if ours != floor:
        raise Mismatch(
            f"planning {kind}, {what}: ours wrote {ours[0]} rows, the floor {floor[0]}"
            + (" (the same count but different values)" if ours[0] == floor[0] else "")
        )


def sweep_instants(bench: Bench) -> list[datetime]:
    days = 60 if bench.quick else 180
    return [AT + timedelta(days=k) for k in range(days)]


def measure(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    for kind in KINDS:
        campaigns = bench.campaigns_of_kind(kind)
        if kind not in INSERT_FLOORS or not campaigns:
            rows.append(Row("b. planning", kind, status="no floor yet" if campaigns else "no campaign",
                            target=f"≥ {TARGET}×"))
            continue
        rows.extend(_measure_kind(bench, kind, campaigns[0]))
    return rows


def _measure_kind(bench: Bench, kind: str, campaign) -> list[Row]:
    zones = _zones(bench)
    build = INSERT_FLOORS[kind]
    out = []
    passes = 2 if bench.quick else 3
    for label, instants, repeats in (
        (f"{kind}, sweep", sweep_instants(bench), passes),
        (f"{kind}, one tick", [AT], bench.repeats),
    ):
        statements = [s for s in (build(campaign, at, zones) for at in instants) if s is not None]
        ours_times, floor_times = [], []
        written = 0
        for _ in range(repeats):
            _truncate(bench)
            seconds, written = ours_pass(bench, campaign, instants)
            ours_times.append(seconds)
            ours_print = _fingerprint(bench)
            _truncate(bench)
            seconds, floor_written = floor_pass(bench, statements)
            floor_times.append(seconds)
            _compare(kind, label, ours_print, _fingerprint(bench))
            if floor_written != written:
                raise Mismatch(f"planning {label}: ours reported {written} rows, the floor {floor_written}")
        _truncate(bench)
        ours_s, floor_s = median(ours_times), median(floor_times)
        ours_rate = written / ours_s if ours_s else None
        floor_rate = written / floor_s if floor_s else None
        value = (ours_rate / floor_rate) if ours_rate and floor_rate else None
        out.append(Row(
            "b. planning", label, ours=ours_rate, floor=floor_rate, unit="rows/s", ratio=value,
            target=f"≥ {TARGET}×", met=value is not None and value >= TARGET,
            note=f"{written:,} rows in {len(instants)} tick(s); {ours_s * 1000:,.0f} ms vs {floor_s * 1000:,.0f} ms",
            details={"rows": written, "ticks": len(instants), "ours_s": ours_times, "floor_s": floor_times},
        ))
    return out
