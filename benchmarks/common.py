"""What every measurement shares: the product's runtime on the benchmark database, timing, results.

The calls into the product go through the few functions here (``plan_context``, ``audience_query``,
``plan_campaign``), so that when their signatures move, one file follows.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from benchmarks import BENCH_DATABASE, BENCH_SECRET
from benchmarks.generate import database_url

REDIS_URL = os.environ.get("LOYALTY_BENCH_REDIS", "redis://127.0.0.1:6379/0")


class Mismatch(AssertionError):
    """Ours and the floor did not do the same work: the ratio would mean nothing."""


def compare_accepted(what: str, accepted: list[str], sent: dict[int, str | None]) -> dict[str, int]:
    """What a provider server accepted (each message's id, in order) against the ledger's ``sent``
    rows (delivery id -> the provider's id the ledger recorded): the same set, each once, or a
    :class:`Mismatch` that says which deliveries differ. Returns the counts compared."""
    counted: dict[str, int] = {}
    for message_id in accepted:
        counted[message_id] = counted.get(message_id, 0) + 1
    recorded = {provider_id: delivery for delivery, provider_id in sent.items() if provider_id}
    missing = sorted(delivery for provider_id, delivery in recorded.items() if provider_id not in counted)
    unrecorded = sorted(delivery for delivery, provider_id in sent.items() if not provider_id)
    extra = sorted(message_id for message_id in counted if message_id not in recorded)
    twice = sorted(message_id for message_id, times in counted.items() if times > 1)
    if missing or unrecorded or extra or twice:
        def some(items: list) -> str:
            return ", ".join(str(i) for i in items[:8]) + (", ..." if len(items) > 8 else "")

        problems = []
        if missing:
            problems.append(f"{len(missing):,} the ledger says sent never reached the server (deliveries {some(missing)})")
        if unrecorded:
            problems.append(f"{len(unrecorded):,} sent without the provider's id recorded (deliveries {some(unrecorded)})")
        if extra:
            problems.append(f"{len(extra):,} accepted that the ledger does not say sent ({some(extra)})")
        if twice:
            problems.append(f"{len(twice):,} accepted more than once ({some(twice)})")
        raise Mismatch(f"{what}: the ledger says {len(sent):,} sent, the server accepted {len(accepted):,} "
                       f"messages: " + "; ".join(problems))
    return {"ledger_sent": len(sent), "server_accepted": len(accepted)}


class DatabaseInUse(RuntimeError):
    """Another benchmark run is measuring on this database."""


@contextmanager
def alone_on(database: str) -> Iterator[None]:
    """Held for a run on ``database``: a PostgreSQL advisory lock named after it (on the server's
    ``postgres`` database, so it outlives a regenerated benchmark database). A run starting a
    channel or restoring a reused database empties the send ledger, so a second run on the same
    database at once would wipe the first one's deliveries mid-measure (its count then disagrees
    with its ledger, or it waits for rows that are gone): the second one refuses instead."""
    import psycopg

    from benchmarks.generate import PG_ROOT

    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"loyalty-bench:{database}",)).fetchone()
        if not row or not row[0]:
            raise DatabaseInUse(f"another benchmark run is measuring on the database {database}; wait for it to "
                                f"end, or give this run a database of its own with --database")
        yield  # closing the connection releases the lock


@dataclass
class Row:
    """One line of the results table."""

    measure: str  # "a. audience", "b. planning", ...
    item: str  # the kind, or what exactly is measured
    ours: float | None = None
    floor: float | None = None
    unit: str = ""
    ratio: float | None = None  # ours / floor for times; ours / floor for rates too (higher is better)
    target: str = ""
    met: bool | None = None
    note: str = ""
    status: str = "ok"  # ok, MISMATCH, no floor yet, not available yet, ...
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Bench:
    """The product's runtime on the benchmark database, and how hard to measure."""

    database: str
    runtime: Any
    quick: bool
    members: int

    @property
    def repeats(self) -> int:
        return 5 if self.quick else 11

    @property
    def url(self) -> str:
        return database_url(self.database)

    def campaigns_of_kind(self, kind: str) -> list:
        return [c for c in self.runtime.campaigns.campaigns.values() if c.kind == kind and c.enabled]

    def close(self) -> None:
        self.runtime.close()


def worker_env(database: str, **extra: str) -> dict[str, str]:
    """The environment of a product process pointed at the benchmark database."""
    home = os.path.join(tempfile.gettempdir(), "loyalty-bench-home")  # the benchmark never uses its outbox
    env = {
        "DATABASE_URL": database_url(database),
        "LOYALTY_SECRET": BENCH_SECRET,
        "LOYALTY_HOME": home,
        "LOYALTY_PUBLIC_URL": "https://club.example.com",
        "LOYALTY_EMAIL_FROM": "Loyalty Club <club@example.com>",
    }
    for name in ("LOYALTY_DATA_KEYS", "LOYALTY_LOOKUP_KEY"):  # the generator encrypted with the same keys
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(extra)
    return env


def open_bench(members: int, *, database: str = BENCH_DATABASE, quick: bool = False) -> Bench:
    from core.settings import load_settings
    from workers.runtime import build_runtime

    runtime = build_runtime(load_settings(worker_env(database)), pool_size=4)
    return Bench(database=database, runtime=runtime, quick=quick, members=members)


# --- the product's entry points ----------------------------------------------------------------

def plan_context(session, bench: Bench, at: datetime):
    from workers.planning import plan_context as _plan_context

    return _plan_context(session, bench.runtime.campaigns, bench.runtime.program, at)


def audience_query(campaign, ctx):
    from workers.planning import audience_query as _audience_query

    return _audience_query(campaign, ctx)


def audience_statement(campaign, ctx):
    """(statement, parameters) as planning runs it: the campaign's cached shape and the instant's values."""
    from workers.planning import audience_statement as _audience_statement

    return _audience_statement(campaign, ctx)


def plan_campaign(session, campaign, ctx):
    from workers.planning import plan_campaign as _plan_campaign

    return _plan_campaign(session, campaign, ctx)


def raw_connection(session):
    """The psycopg connection under a SQLAlchemy session (same server session, same settings)."""
    return session.connection().connection.driver_connection


# --- timing --------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def median(values: list[float]) -> float:
    return statistics.median(values)


def alternate(functions: dict[str, Callable[[], Any]], repeats: int, *, warmup: int = 1) -> dict[str, list[float]]:
    """Run each function ``warmup`` times, then ``repeats`` rounds taking turns; seconds per run."""
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            seconds, _ = timed(fn)
            times[name].append(seconds)
    return times


def ratio(ours: float | None, floor: float | None) -> float | None:
    if ours is None or floor is None or floor == 0:
        return None
    return ours / floor
