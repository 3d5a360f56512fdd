"""A realistic member base, loaded into a database of its own with COPY.

``prepare(members)`` creates ``loyalty_bench`` fresh, migrates it with :func:`models.db.migrate`
(so the tables and indexes are exactly the product's), and streams rows into it with COPY from two
processes. The distributions are meant to look like a real shop's program, not to be uniform:

- 40 IANA zones weighted like a European shop with customers worldwide, odd offsets included
  (St John's −3:30, Kolkata +5:30, Kathmandu +5:45, Adelaide +9:30, Chatham +12:45);
- birthdays over a leap year with a mild September peak, Feb 29 at a quarter of a day's weight,
  12 % unknown and 30 % without a year; 3 % changed in the last 60 days (not rewarded yet);
- email for 95 % (72 % consent), a phone for 65 % (40 % of those consent to SMS); contact status
  ``ok`` wherever an address exists; names, emails and phones encrypted with the product's keys
  (``models.personal_data``, derived from the benchmark's ``LOYALTY_SECRET``) when the schema has
  the look-up columns, as the product stores them;
- orders over the last two years from four kinds of customer (never ordered, occasional, regular,
  VIP), each with its own pace and lapse; 6 % refunded or cancelled, all already applied to the
  points ledger; the tier follows the spend
  of the last 365 days against ``campaigns/program.yaml``; ``last_order_at`` and its local date;
- about 3 point lots per member (``earn`` entries with ``remaining`` and ``expires_at`` a year
  after earning), a third of them partly or wholly redeemed by one ``redeem`` entry;
- a send ledger with history: the birthday deliveries of 2025 and 2026, today's for every other
  due zone (an earlier tick), and recent marketing sends where such campaigns exist; plus the tier
  history where the table exists.

Only columns the migrated table really has are written, so the generator keeps working while the
schema grows; a new NOT NULL column without a default stops it with a clear message.

Everything is derived from the benchmark instant :data:`AT` and a seed, so a run is reproducible.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import time as _time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from benchmarks import BENCH_DATABASE, BENCH_SECRET

UTC = UTC

#: The benchmark instant: Sunday 28 Feb 2027 at 18:00 UTC. A common year, so Feb 29 birthdays are
#: celebrated today (rule ``feb28``); 09:00 has passed from Anchorage (UTC−9) to Kathmandu (+5:45),
#: about 85 % of the members' zones, while East Asia and Oceania are already in tomorrow's night.
AT = datetime(2027, 2, 28, 18, 0, tzinfo=UTC)

PG_ROOT = os.environ.get("LOYALTY_BENCH_POSTGRES") or os.environ.get("LOYALTY_TEST_POSTGRES") or "postgresql://postgres@127.0.0.1:5432"
GENERATOR_VERSION = "5"
DEFAULT_SEED = 20270228
CHUNK = 10_000

# (zone, weight, [(locale, weight)], phone country code)
ZONES: list[tuple[str, float, list[tuple[str, float]], str]] = [
    ("Europe/Paris", 7.0, [("fr", 0.92), ("en", 0.08)], "33"),
    ("Europe/London", 7.0, [("en", 1.0)], "44"),
    ("Europe/Berlin", 5.0, [("de", 0.9), ("en", 0.1)], "49"),
    ("Europe/Madrid", 3.5, [("es", 0.95), ("en", 0.05)], "34"),
    ("Europe/Rome", 3.0, [("it", 1.0)], "39"),
    ("Europe/Amsterdam", 1.6, [("nl", 0.8), ("en", 0.2)], "31"),
    ("Europe/Brussels", 1.4, [("fr", 0.5), ("nl", 0.5)], "32"),
    ("Europe/Zurich", 1.0, [("de", 0.6), ("fr", 0.3), ("it", 0.1)], "41"),
    ("Europe/Lisbon", 1.0, [("pt", 1.0)], "351"),
    ("Europe/Dublin", 0.8, [("en", 1.0)], "353"),
    ("Europe/Stockholm", 0.8, [("sv", 0.7), ("en", 0.3)], "46"),
    ("Europe/Warsaw", 1.2, [("pl", 1.0)], "48"),
    ("Europe/Athens", 0.6, [("el", 1.0)], "30"),
    ("Europe/Istanbul", 0.9, [("tr", 1.0)], "90"),
    ("America/New_York", 9.0, [("en", 0.9), ("es", 0.1)], "1"),
    ("America/Chicago", 5.0, [("en", 0.85), ("es", 0.15)], "1"),
    ("America/Denver", 1.8, [("en", 1.0)], "1"),
    ("America/Phoenix", 0.8, [("en", 0.9), ("es", 0.1)], "1"),
    ("America/Los_Angeles", 6.0, [("en", 0.8), ("es", 0.2)], "1"),
    ("America/Anchorage", 0.3, [("en", 1.0)], "1"),
    ("Pacific/Honolulu", 0.4, [("en", 1.0)], "1"),
    ("America/Toronto", 2.0, [("en", 0.75), ("fr", 0.25)], "1"),
    ("America/Vancouver", 0.8, [("en", 1.0)], "1"),
    ("America/Halifax", 0.3, [("en", 1.0)], "1"),
    ("America/St_Johns", 0.2, [("en", 1.0)], "1"),
    ("America/Mexico_City", 2.0, [("es", 1.0)], "52"),
    ("America/Bogota", 0.8, [("es", 1.0)], "57"),
    ("America/Sao_Paulo", 2.5, [("pt", 1.0)], "55"),
    ("America/Argentina/Buenos_Aires", 1.0, [("es", 1.0)], "54"),
    ("Africa/Casablanca", 0.6, [("fr", 0.6), ("ar", 0.4)], "212"),
    ("Africa/Johannesburg", 0.6, [("en", 1.0)], "27"),
    ("Asia/Dubai", 0.7, [("en", 0.7), ("ar", 0.3)], "971"),
    ("Asia/Kolkata", 1.5, [("en", 0.8), ("hi", 0.2)], "91"),
    ("Asia/Kathmandu", 0.1, [("en", 1.0)], "977"),
    ("Asia/Singapore", 0.8, [("en", 0.8), ("zh", 0.2)], "65"),
    ("Asia/Tokyo", 1.8, [("ja", 1.0)], "81"),
    ("Australia/Sydney", 1.4, [("en", 1.0)], "61"),
    ("Australia/Adelaide", 0.3, [("en", 1.0)], "61"),
    ("Pacific/Auckland", 0.5, [("en", 1.0)], "64"),
    ("Pacific/Chatham", 0.05, [("en", 1.0)], "64"),
]
assert len(ZONES) == 40 and len({z[0] for z in ZONES}) == 40

FIRST_NAMES = (
    "Alex Camille Charlotte Chloé Emma Gabriel Hugo Inès Jade Jules Léa Louis Lucas Manon Noah Sarah Thomas "
    "Olivia Amelia Isla Ava Oliver George Arthur Noah Leo Mia Sofia Lukas Finn Emilia Hannah Lucía Mateo "
    "Martina Pablo Giulia Francesco Sofía Santiago Yuki Haruto Aarav Priya Wei Mei Ana João Maria Jan Zofia"
).split()
LAST_NAMES = (
    "Martin Bernard Dubois Durand Lefebvre Moreau Smith Jones Taylor Brown Williams Müller Schmidt Schneider "
    "García Fernández López Rossi Russo Ferrari Silva Santos Jansen Janssens Nowak Kowalski Johnson Miller "
    "Davis Rodríguez Hernández Tanaka Suzuki Sato Patel Sharma Chen Wang Lim Andersson Papadopoulos Yılmaz "
    "Nguyen Murphy Kelly Novak Peeters Costa Gomez Walker"
).split()
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "members.example")

NULL = "\\N"
DAY = 86_400
EPOCH0 = datetime(2015, 1, 1, tzinfo=UTC)


def _seconds(at: datetime) -> int:
    return int((at - EPOCH0).total_seconds())


AT_S = _seconds(AT)
_DAYSTR = [(date(2015, 1, 1) + timedelta(days=i)).isoformat() for i in range(6000)]
_TOD = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]


def ts(seconds: int) -> str:
    """A UTC timestamp for COPY, from seconds since 2015-01-01."""
    return f"{_DAYSTR[seconds // DAY]} {_TOD[seconds % DAY]}+00"


def _birthday_weights() -> tuple[list[tuple[int, int]], list[float]]:
    days, weights = [], []
    start = date(2024, 1, 1)  # a leap year: every (month, day) once
    for i in range(366):
        d = start + timedelta(days=i)
        days.append((d.month, d.day))
        weight = 1.0 + 0.08 * math.cos(2 * math.pi * (i - 255) / 366)  # a mild September peak
        weights.append(0.25 if (d.month, d.day) == (2, 29) else weight)
    return days, list(accumulate(weights))


BIRTHDAYS, BIRTHDAY_CUM = _birthday_weights()
ZONE_CUM = list(accumulate(z[1] for z in ZONES))


# --- the rules the history follows (written here on purpose, independent of the product) --------

def celebration_date(year: int, month: int, day: int) -> date:
    """Feb 29 birthdays are celebrated on Feb 28 in common years (the shipped ``feb28`` rule)."""
    if (month, day) == (2, 29) and not _isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def _isleap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def due_zones(at: datetime, zones, send_time: time) -> dict[str, date]:
    """Zones where the local send time has passed at ``at``: zone → local date."""
    due = {}
    for name in zones:
        zone = ZoneInfo(name)
        local_day = at.astimezone(zone).date()
        send_at = datetime.combine(local_day, send_time).replace(tzinfo=zone).astimezone(UTC)
        if at >= send_at:
            due[name] = local_day
    return due


def celebrated_on(day: date) -> list[tuple[int, int]]:
    days = [(day.month, day.day)]
    if (day.month, day.day) == (2, 28) and not _isleap(day.year):
        days.append((2, 29))
    return days


# --- what a run needs to know about the schema and the campaigns -----------------------------------

@dataclass
class Plan:
    """Everything the chunk generators need, picklable for the worker processes."""

    database_url: str
    seed: int
    columns: dict[str, list[str]]  # table → the columns the migrated table has
    tiers: list[tuple[str, float]]  # (name, min spend), lowest first
    birthday_points: dict[str, int]
    send_time: time
    done_today: frozenset[tuple[str, int, int]]  # (zone, month, day) an earlier tick already handled
    marketing_campaigns: tuple[str, ...]  # campaign ids that count toward the frequency cap
    encrypt: bool = False  # personal data encrypted at rest, as the product writes it


@dataclass
class GenerationReport:
    members: int
    database: str
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    reused: bool = False
    phases: dict[str, float] = field(default_factory=dict)


# Per table: the columns this generator writes, in the order of its rows.
MEMBER_COLUMNS = (
    "id", "external_id", "email", "phone", "first_name", "last_name", "email_status", "phone_status",
    "locale", "timezone", "birth_year", "birth_month", "birth_day", "birthday_updated_at",
    "email_opt_in", "email_consent_at", "email_consent_source", "sms_opt_in", "sms_consent_at",
    "sms_consent_source", "tier", "tier_reached_at", "tier_below_since", "last_order_at",
    "last_order_local_date", "joined_at", "created_at", "updated_at", "email_lookup", "phone_lookup",
)
ORDER_COLUMNS = ("order_id", "member_id", "placed_at", "total", "currency", "status", "applied_status", "created_at",
                 "updated_at")
POINT_COLUMNS = ("entry_key", "member_id", "kind", "points", "occurred_at", "expires_at", "remaining", "source", "created_at")
DELIVERY_COLUMNS = (
    "occurrence_key", "campaign", "member_id", "channel", "state", "reason", "reward_points",
    "occurrence_date", "send_at", "attempts", "provider_message_id", "planned_at", "sending_at",
    "finished_at", "updated_at",
)
TIER_CHANGE_COLUMNS = ("member_id", "from_tier", "to_tier", "direction", "at", "local_date", "cause")
WRITTEN = {
    "members": MEMBER_COLUMNS,
    "orders": ORDER_COLUMNS,
    "point_entries": POINT_COLUMNS,
    "deliveries": DELIVERY_COLUMNS,
    "tier_changes": TIER_CHANGE_COLUMNS,
}


class SchemaChanged(RuntimeError):
    pass


Selectors = dict[str, tuple[tuple[str, ...], "itemgetter[Any] | None"]]


def _selectors(plan: Plan) -> Selectors:
    """Per table: the columns to COPY and a getter that picks them out of a generated row."""
    out: Selectors = {}
    for table, written in WRITTEN.items():
        actual = plan.columns.get(table)
        if actual is None:
            out[table] = ((), None)
            continue
        keep = tuple(c for c in written if c in actual)
        idx = [written.index(c) for c in keep]
        out[table] = (keep, itemgetter(*idx))
    return out


# --- one chunk of members, with everything that hangs off them -------------------------------------

_LOCAL_CACHE: dict = {}


def _local_date(seconds: int, zone: str) -> str:
    return datetime.fromtimestamp(EPOCH0.timestamp() + seconds, _zoneinfo(zone)).date().isoformat()


def _zoneinfo(name: str) -> ZoneInfo:
    zone = _LOCAL_CACHE.get(name)
    if zone is None:
        zone = _LOCAL_CACHE[name] = ZoneInfo(name)
    return zone


_SEND_CACHE: dict = {}


def _send_at(zone: str, day: date, send_time: time) -> int:
    key = (zone, day)
    value = _SEND_CACHE.get(key)
    if value is None:
        local = datetime.combine(day, send_time).replace(tzinfo=_zoneinfo(zone))
        value = _SEND_CACHE[key] = _seconds(local.astimezone(UTC))
    return value


def _tier_for(spend: float, tiers: list[tuple[str, float]]) -> int:
    reached = 0
    for i, (_, minimum) in enumerate(tiers):
        if spend >= minimum:
            reached = i
    return reached


def generate_chunk(plan: Plan, start: int, end: int) -> dict[str, list[tuple]]:
    """Rows for members ``start`` to ``end - 1`` and everything that belongs to them."""
    rng = random.Random(plan.seed * 1_000_003 + start)
    r = rng.random
    randint = rng.randint
    gauss = rng.gauss
    expovariate = rng.expovariate
    n = end - start
    zone_of = rng.choices(range(len(ZONES)), cum_weights=ZONE_CUM, k=n)
    birthday_of = rng.choices(range(366), cum_weights=BIRTHDAY_CUM, k=n)
    tiers = plan.tiers
    tier_names = [t[0] for t in tiers]
    bday_points = plan.birthday_points
    send_time = plan.send_time
    done_today = plan.done_today
    marketing = plan.marketing_campaigns
    window_s = AT_S - 365 * DAY
    two_years_s = AT_S - 730 * DAY
    local_today = {z[0]: AT.astimezone(_zoneinfo(z[0])).date() for z in ZONES}

    ring = _key_ring() if plan.encrypt else None
    members, orders, points, deliveries, tier_changes = [], [], [], [], []
    for j in range(n):
        mid = start + j
        ext = f"M{mid:07d}"
        zone, _, locales, cc = ZONES[zone_of[j]]
        locale = locales[0][0] if len(locales) == 1 else _pick(locales, r())
        joined_s = AT_S - int(2190 * DAY * r() ** 1.6) - 3600 - randint(0, 3599)

        # Birthday: 12 % unknown, 30 % of the known ones without a year.
        if r() < 0.12:
            b_month = b_day = None
            b_year = NULL
            bday_updated = NULL
        else:
            b_month, b_day = BIRTHDAYS[birthday_of[j]]
            if r() < 0.3:
                b_year = NULL
            else:
                year = 2007 - int(abs(gauss(0, 1)) * 18) if r() < 0.9 else randint(1940, 2007)
                if (b_month, b_day) == (2, 29) and not _isleap(year):
                    year -= year % 4
                b_year = str(year)
            recent = r() < 0.03
            bday_updated_s = AT_S - randint(1, 60) * DAY - randint(0, DAY - 1) if recent else joined_s
            bday_updated = ts(max(bday_updated_s, joined_s))

        has_email = r() < 0.95
        email = f"{ext.lower()}.{randint(1, 99)}@{EMAIL_DOMAINS[mid % 5]}" if has_email else NULL
        has_phone = r() < 0.65
        phone = f"+{cc}{randint(10**8, 10**9 - 1)}" if has_phone else NULL
        email_opt_in = r() < 0.72
        sms_opt_in = has_phone and r() < 0.40
        consent_source = "signup" if r() < 0.6 else ("checkout" if r() < 0.7 else "import:shop-export.csv")
        email_consent_at = ts(joined_s + randint(0, 600)) if email_opt_in else NULL
        sms_consent_at = ts(joined_s + randint(0, 86_400 * 30)) if sms_opt_in else NULL

        # Orders over the last two years, by kind of customer.
        u = r()
        if u < 0.2:
            n_orders, lapse_mean, log_mu, n_lots = 0, 0, 0.0, (1 if r() < 0.3 else 0)
        elif u < 0.7:
            n_orders, lapse_mean, log_mu, n_lots = randint(1, 2), 200, 3.8, randint(2, 4)
        elif u < 0.95:
            n_orders, lapse_mean, log_mu, n_lots = randint(4, 14), 45, 4.1, randint(3, 6)
        else:
            n_orders, lapse_mean, log_mu, n_lots = randint(12, 40), 15, 4.9, randint(5, 10)
        first_s = max(joined_s, two_years_s)
        last_placed = None
        spend = 0.0
        if n_orders:
            last_s = AT_S - int(min(expovariate(1 / lapse_mean), 700) * DAY) - randint(0, DAY - 1)
            if last_s <= first_s:
                last_s = first_s + int((AT_S - first_s) * r())
            times = sorted(first_s + int((last_s - first_s) * r()) for _ in range(n_orders - 1))
            times.append(last_s)
            for k, placed in enumerate(times):
                total = math.exp(gauss(log_mu, 0.7))
                v = r()
                status = "placed" if v < 0.94 else ("refunded" if v < 0.98 else "cancelled")
                placed_ts = ts(placed)
                orders.append((f"S{mid:07d}-{k:02d}", str(mid), placed_ts, f"{total:.2f}", "EUR", status, status,
                               placed_ts, placed_ts))  # applied: its points are already in the ledger
                if status == "placed":
                    last_placed = placed
                    if placed > window_s:
                        spend += total

        tier_i = _tier_for(spend, tiers)
        tier = tier_names[tier_i]
        if tier_i > 0:
            reached_s = max(joined_s, window_s) + int((AT_S - max(joined_s, window_s)) * r())
            prev_s = reached_s
            for step in range(tier_i, 0, -1):
                local = _local_date(prev_s, zone)
                tier_changes.append((str(mid), tier_names[step - 1], tier_names[step], "up", ts(prev_s), local,
                                     "recalculation" if r() < 0.5 else f"order:S{mid:07d}"))
                prev_s -= randint(1, 90) * DAY
        else:
            reached_s = joined_s
        below_since = ts(AT_S - randint(1, 25) * DAY) if tier_i > 0 and r() < 0.03 else NULL
        last_order_at = ts(last_placed) if last_placed is not None else NULL
        last_order_local = _local_date(last_placed, zone) if last_placed is not None else NULL

        first_name, last_name = FIRST_NAMES[randint(0, len(FIRST_NAMES) - 1)], LAST_NAMES[randint(0, len(LAST_NAMES) - 1)]
        if ring is not None:
            email_lookup = ring.lookup("email", email) if has_email else NULL
            phone_lookup = ring.lookup("phone", phone) if has_phone else NULL
            email = ring.encrypt(email) if has_email else NULL
            phone = ring.encrypt(phone) if has_phone else NULL
            first_name, last_name = _encrypted_name(ring, first_name, mid), _encrypted_name(ring, last_name, mid)
        else:
            email_lookup = phone_lookup = NULL
        members.append((
            str(mid), ext, email, phone, first_name, last_name, "ok" if has_email else "missing",
            "ok" if has_phone else "missing", locale, zone, b_year,
            NULL if b_month is None else str(b_month), NULL if b_day is None else str(b_day), bday_updated,
            "t" if email_opt_in else "f", email_consent_at, consent_source if email_opt_in else NULL,
            "t" if sms_opt_in else "f", sms_consent_at, "checkout" if sms_opt_in else NULL,
            tier, ts(reached_s), below_since, last_order_at, last_order_local,
            ts(joined_s), ts(joined_s), ts(max(joined_s, AT_S - randint(0, 400) * DAY)), email_lookup, phone_lookup,
        ))

        # Point lots: earned in the last year, expiring a year after; a third partly or wholly used.
        consumed = 0
        lot_start = max(joined_s, window_s)
        for k in range(n_lots):
            earned = lot_start + int((AT_S - lot_start) * r())
            amount = int(math.exp(gauss(4.0, 0.8))) + 5
            v = r()
            remaining = amount if v < 0.65 else (randint(1, amount - 1) if v < 0.85 else 0)
            consumed += amount - remaining
            earned_ts = ts(earned)
            points.append((f"E{mid:07d}-{k}", str(mid), "earn", str(amount), earned_ts, ts(earned + 365 * DAY),
                           str(remaining), "order" if n_orders else "signup_bonus", earned_ts))
        if consumed:
            used_s = AT_S - randint(0, 60) * DAY - randint(0, DAY - 1)
            points.append((f"R{mid:07d}", str(mid), "redeem", str(-consumed), ts(used_s), NULL, NULL, "checkout", ts(used_s)))

        # The send ledger's history.
        email_ok = has_email and email_opt_in
        if b_month is not None and b_day is not None:  # both or neither
            channel = "email" if email_ok else NULL
            reason = NULL if email_ok else ("no_usable_address" if email_opt_in else "no_consent")
            reward = str(bday_points.get(tier, 0)) if email_ok and tier in bday_points else NULL
            for year in (2025, 2026, 2027):
                day = celebration_date(year, b_month, b_day)
                send_s = _send_at(zone, day, send_time)
                if send_s < joined_s or send_s < two_years_s or send_s > AT_S:
                    continue  # before joining, older than the history kept here, or still to come
                if day == local_today[zone] and (zone, b_month, b_day) not in done_today:
                    continue  # due now: left for the tick being measured
                send_ts = ts(send_s)
                done_ts = ts(send_s + randint(1, 120))
                state = "sent" if email_ok else "skipped"
                deliveries.append((
                    f"birthday:{ext}:{year}", "birthday", str(mid), channel, state, reason,
                    reward if email_ok else NULL, day.isoformat(), send_ts, "1" if email_ok else "0",
                    f"<{mid:x}.{year}@example.com>" if email_ok else NULL, send_ts,
                    send_ts if email_ok else NULL, done_ts, done_ts,
                ))
        if marketing and email_ok and r() < 0.12:
            campaign = marketing[mid % len(marketing)]
            for k in range(randint(1, 2)):
                send_s = AT_S - randint(1, 7) * DAY + randint(0, DAY - 1)
                day_text = _DAYSTR[send_s // DAY]
                send_ts = ts(send_s)
                deliveries.append((
                    f"{campaign}:{ext}:{day_text}:{k}", campaign, str(mid), "email", "sent", NULL, NULL, day_text,
                    send_ts, "1", f"<{mid:x}.{k}.{campaign}@example.com>", send_ts, send_ts, send_ts, send_ts,
                ))
    return {"members": members, "orders": orders, "point_entries": points, "deliveries": deliveries,
            "tier_changes": tier_changes}


_RING = None


def _key_ring():
    """The product's personal-data keys for the benchmark's secret (``models.personal_data``)."""
    global _RING
    if _RING is None:
        from models.personal_data import KeyRing

        _RING = KeyRing.from_settings(BENCH_SECRET, os.environ.get("LOYALTY_DATA_KEYS"),
                                      os.environ.get("LOYALTY_LOOKUP_KEY"))
    return _RING


_NAME_TOKENS: dict[str, list[str]] = {}


def _encrypted_name(ring, name: str, member_id: int) -> str:
    """One of a few ciphertexts of ``name``: names repeat, and each encryption costs ~50 µs."""
    tokens = _NAME_TOKENS.get(name)
    if tokens is None:
        tokens = _NAME_TOKENS[name] = [ring.encrypt(name) for _ in range(16)]
    return tokens[member_id % 16]


def _encryption_available(columns: dict) -> bool:
    if "email_lookup" not in columns.get("members", {}):
        return False
    try:
        import models.personal_data  # noqa: F401
    except ImportError:
        return False
    return True


def _pick(weighted: list[tuple[str, float]], u: float) -> str:
    acc = 0.0
    for value, weight in weighted:
        acc += weight
        if u < acc:
            return value
    return weighted[-1][0]


# --- loading -----------------------------------------------------------------------------------

_worker_conn: psycopg.Connection | None = None
_worker_plan: Plan | None = None
_worker_selectors: Selectors | None = None


def _worker_init(plan: Plan) -> None:
    global _worker_conn, _worker_plan, _worker_selectors
    _worker_plan = plan
    _worker_selectors = _selectors(plan)
    _worker_conn = psycopg.connect(plan.database_url)
    # A bulk load of rows consistent by construction: no foreign-key trigger per row, no fsync wait.
    _worker_conn.execute("SET session_replication_role = replica")
    _worker_conn.execute("SET synchronous_commit = off")
    _worker_conn.commit()


def _load_chunk(bounds: tuple[int, int]) -> dict[str, int]:
    plan, conn, selectors = _worker_plan, _worker_conn, _worker_selectors
    if plan is None or conn is None or selectors is None:
        raise RuntimeError("a chunk is loaded in a process that _worker_init set up")
    rows = generate_chunk(plan, *bounds)
    counts = {}
    with conn.cursor() as cursor:
        for table, chunk_rows in rows.items():
            columns, getter = selectors[table]
            if getter is None or not chunk_rows:
                counts[table] = 0
                continue
            if len(columns) == 1:
                lines = "\n".join(getter(row) for row in chunk_rows)
            else:
                lines = "\n".join("\t".join(getter(row)) for row in chunk_rows)
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                copy.write(lines + "\n")
            counts[table] = len(chunk_rows)
    conn.commit()
    return counts


def database_url(name: str = BENCH_DATABASE, *, driver: str = "") -> str:
    scheme = "postgresql+psycopg" if driver == "sqlalchemy" else "postgresql"
    return f"{PG_ROOT.replace('postgresql', scheme, 1)}/{name}"


def _table_columns(conn: psycopg.Connection) -> dict[str, dict[str, tuple[bool, bool]]]:
    """table → column → (nullable, has a default)."""
    rows = conn.execute(
        """
        SELECT table_name, column_name, is_nullable = 'YES', column_default IS NOT NULL
        FROM information_schema.columns WHERE table_schema = 'public'
        """
    ).fetchall()
    out: dict[str, dict[str, tuple[bool, bool]]] = {}
    for table, column, nullable, has_default in rows:
        out.setdefault(table, {})[column] = (nullable, has_default)
    return out


def _campaign_facts() -> tuple[dict[str, int], time, tuple[str, ...]]:
    """The shipped birthday campaign's reward and send time, and the capped campaign ids."""
    from campaigns.loader import load_campaigns
    from core.settings import DEFAULT_CAMPAIGNS_DIR

    loaded = load_campaigns(DEFAULT_CAMPAIGNS_DIR)
    points, send_time = {"bronze": 100, "silver": 250, "gold": 500}, time(9, 0)
    capped = []
    for campaign in loaded.campaigns.values():
        if campaign.kind == "birthday":
            reward = getattr(campaign, "reward", None)
            if reward is not None:
                points = dict(reward.points_by_tier)
            send_time = campaign.send_time
        elif not campaign.frequency_cap_exempt:
            capped.append(campaign.id)
    return points, send_time, tuple(sorted(capped))


def _tier_levels() -> list[tuple[str, float]]:
    try:
        from campaigns.program import load_program
        from core.settings import DEFAULT_PROGRAM_FILE

        program = load_program(DEFAULT_PROGRAM_FILE)
        return [(level.name, float(level.min_spend)) for level in program.tiers.levels]
    except Exception:  # the program file is newer than this checkout: the README's three tiers
        return [("bronze", 0.0), ("silver", 500.0), ("gold", 2000.0)]


def create_database(name: str) -> None:
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate_database(name: str) -> str | None:
    from models.db import head_revision, make_engine, migrate

    engine = make_engine(database_url(name, driver="sqlalchemy"))
    try:
        migrate(engine)
        return head_revision(engine)
    finally:
        engine.dispose()


def generate(members: int, *, database: str = BENCH_DATABASE, seed: int = DEFAULT_SEED, processes: int = 2,
             progress=None) -> GenerationReport:
    """Create ``database`` fresh, migrate it and load ``members`` members and their history."""
    started = _time.perf_counter()
    phases: dict[str, float] = {}
    create_database(database)
    head = migrate_database(database)
    phases["create and migrate"] = _time.perf_counter() - started
    url = database_url(database)
    with psycopg.connect(url) as conn:
        schema = _table_columns(conn)
    for table, written in WRITTEN.items():
        for column, (nullable, has_default) in schema.get(table, {}).items():
            if not nullable and not has_default and column not in written:
                raise SchemaChanged(
                    f"{table}.{column} is NOT NULL without a default and benchmarks/generate.py does not "
                    "write it yet: add it to the generator."
                )
    points, send_time, capped = _campaign_facts()
    zones = [z[0] for z in ZONES]
    due = due_zones(AT, zones, send_time)
    earlier = sorted(due)[::2]  # every other due zone was handled by an earlier tick
    done = frozenset((z, m, d) for z in earlier for m, d in celebrated_on(due[z]))
    plan = Plan(
        database_url=url,
        seed=seed,
        columns={t: list(cols) for t, cols in schema.items()},
        tiers=_tier_levels(),
        birthday_points=points,
        send_time=send_time,
        done_today=done,
        marketing_campaigns=capped,
        encrypt=_encryption_available(schema),
    )
    bounds = [(s, min(s + CHUNK, members + 1)) for s in range(1, members + 1, CHUNK)]
    rebuild = _drop_indexes(url)  # built again once the rows are in: much faster than row by row
    load_started = _time.perf_counter()
    totals: dict[str, int] = {}
    if processes > 1 and len(bounds) > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(processes, initializer=_worker_init, initargs=(plan,)) as pool:
            for done_chunks, counts in enumerate(pool.imap_unordered(_load_chunk, bounds), 1):
                for table, count in counts.items():
                    totals[table] = totals.get(table, 0) + count
                if progress:
                    progress(done_chunks, len(bounds))
    else:
        _worker_init(plan)
        try:
            for done_chunks, chunk in enumerate(bounds, 1):
                for table, count in _load_chunk(chunk).items():
                    totals[table] = totals.get(table, 0) + count
                if progress:
                    progress(done_chunks, len(bounds))
        finally:
            if _worker_conn is not None:
                _worker_conn.close()

    index_started = _time.perf_counter()
    phases["generate and COPY"] = index_started - load_started
    _rebuild_indexes(url, rebuild)
    vacuum_started = _time.perf_counter()
    phases["indexes"] = vacuum_started - index_started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('members', 'id'), (SELECT max(id) FROM members))")
        conn.execute("VACUUM (ANALYZE)")
        phases["vacuum analyze"] = _time.perf_counter() - vacuum_started
        # The history is kept aside so that a later run can put the send ledger back as generated.
        conn.execute("CREATE TABLE bench_history AS SELECT * FROM deliveries")
        conn.execute("CREATE TABLE bench_meta (key text PRIMARY KEY, value text NOT NULL)")
        meta = {"members": str(members), "seed": str(seed), "version": GENERATOR_VERSION, "head": head or "",
                "at": AT.isoformat(), "dirty": "0"}
        for key, value in meta.items():
            conn.execute("INSERT INTO bench_meta VALUES (%s, %s)", (key, value))
    return GenerationReport(members, database, _time.perf_counter() - started, totals, phases=phases)


def _drop_indexes(url: str) -> list[str]:
    """Drop the loaded tables' unique constraints and secondary indexes; return how to rebuild them.

    The definitions are read from the catalog, so the rebuilt ones are exactly the migrated ones.
    Primary keys stay (their keys arrive in order); foreign keys stay (not checked during the load);
    partial indexes stay (PostgreSQL prints their predicate in a form that reads back differently).
    """
    tables = list(WRITTEN)
    with psycopg.connect(url, autocommit=True) as conn:
        constraints = conn.execute(
            """
            SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            WHERE c.contype = 'u' AND t.relname = ANY(%s)
            """,
            (tables,),
        ).fetchall()
        indexes = conn.execute(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
              AND i.indexdef NOT LIKE '%% WHERE %%'
            """,
            (tables,),
        ).fetchall()
        rebuild = [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}' for table, name, definition in constraints]
        rebuild += [definition for _, definition in indexes]
        for table, name, _ in constraints:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
    return rebuild


def _rebuild_indexes(url: str, statements: list[str], connections: int = 2) -> None:
    """Build the dropped indexes again, on two connections at once (one per core)."""
    from concurrent.futures import ThreadPoolExecutor

    def build(batch: list[str]) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET maintenance_work_mem = '512MB'")
            conn.execute("SET max_parallel_maintenance_workers = 0")
            for statement in batch:
                conn.execute(statement)

    batches = [statements[i::connections] for i in range(connections)]
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(build, batches))


def read_meta(database: str) -> dict[str, str] | None:
    try:
        with psycopg.connect(database_url(database), connect_timeout=5) as conn:
            return dict(conn.execute("SELECT key, value FROM bench_meta").fetchall())
    except psycopg.Error:
        return None


def mark_dirty(database: str) -> None:
    """The measurements are about to change the send ledger: a reuse must restore it first."""
    with psycopg.connect(database_url(database), autocommit=True) as conn:
        conn.execute("UPDATE bench_meta SET value = '1' WHERE key = 'dirty'")


def restore(database: str) -> None:
    """Put the send ledger and the points ledger back as generated (after an earlier run)."""
    with psycopg.connect(database_url(database), autocommit=True) as conn:
        conn.execute("TRUNCATE deliveries CASCADE")
        conn.execute("INSERT INTO deliveries SELECT * FROM bench_history")
        conn.execute("DELETE FROM point_entries WHERE entry_key LIKE 'reward:%%'")
        columns = _table_columns(conn).get("members", {})
        synced = [c for c in ("mailchimp_status", "mailchimp_reason", "mailchimp_synced_at", "mailchimp_hash") if c in columns]
        if synced:  # the Mailchimp measurement syncs members: forget it
            conn.execute(f"UPDATE members SET {', '.join(f'{c} = NULL' for c in synced)} WHERE mailchimp_synced_at IS NOT NULL")
        conn.execute("VACUUM (ANALYZE) deliveries")
        conn.execute("VACUUM (ANALYZE) point_entries")
        conn.execute("UPDATE bench_meta SET value = '0' WHERE key = 'dirty'")


def prepare(members: int, *, database: str = BENCH_DATABASE, seed: int = DEFAULT_SEED, reuse: bool = False,
            progress=None) -> GenerationReport:
    """A database of ``members`` members ready to measure: generated, or reused when asked and equal."""
    if reuse:
        meta = read_meta(database)
        from models.db import head_revision, make_engine

        engine = make_engine(database_url(database, driver="sqlalchemy"))
        try:
            head = head_revision(engine)
        finally:
            engine.dispose()
        wanted = {"members": str(members), "seed": str(seed), "version": GENERATOR_VERSION, "head": head or ""}
        if meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
            started = _time.perf_counter()
            if meta.get("dirty") == "1":
                restore(database)
            return GenerationReport(members, database, _time.perf_counter() - started, table_counts(database), reused=True)
    return generate(members, database=database, seed=seed, progress=progress)


def table_counts(database: str) -> dict[str, int]:
    with psycopg.connect(database_url(database)) as conn:
        out = {}
        for table in WRITTEN:
            try:
                row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                out[table] = row[0] if row else 0
            except psycopg.errors.UndefinedTable:
                conn.rollback()
        return out


def describe(database: str) -> dict:
    """A few figures that show the distributions landed as meant."""
    with psycopg.connect(database_url(database)) as conn:
        q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        return {
            "zones": q("SELECT count(DISTINCT timezone) FROM members")[0][0],
            "feb29": q("SELECT count(*) FROM members WHERE birth_month = 2 AND birth_day = 29")[0][0],
            "no_birthday": q("SELECT count(*) FROM members WHERE birth_month IS NULL")[0][0],
            "tiers": dict(q("SELECT tier, count(*) FROM members GROUP BY tier ORDER BY 2 DESC")),
            "email_consent": q("SELECT count(*) FROM members WHERE email_opt_in")[0][0],
            "lots_open": q("SELECT count(*) FROM point_entries WHERE remaining > 0")[0][0],
        }


if __name__ == "__main__":  # python -m benchmarks.generate 100000
    import sys

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    report = generate(size, progress=lambda i, n: print(f"\r{i}/{n} chunks", end="", flush=True))
    print(f"\n{report}")
    print(describe(report.database))
