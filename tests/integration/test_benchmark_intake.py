"""The intake benchmark keeps working: the real `loyalty web` and the bare Starlette floor each take
every signed delivery once (one inbox entry and one queued message each on our side), and the
measure leaves nothing behind. Its timings are never asserted here."""

from __future__ import annotations

import os

import redis
from rich.console import Console
from sqlalchemy import create_engine, text

from benchmarks import generate
from benchmarks.common import REDIS_URL
from benchmarks.run import run_size, table


def test_the_intake_benchmark_checks_both_sides_did_the_same_work_and_cleans_up():
    database = f"loyalty_bench_intake_{os.getpid()}"
    try:
        rows, _, _ = run_size(2_000, measures=("intake",), quick=True, database=database)
        engine = create_engine(generate.database_url(database, driver="sqlalchemy"))
        with engine.connect() as db:
            left = db.execute(text("SELECT count(*) FROM inbox")).scalar_one()
            floor_table = db.execute(text("SELECT to_regclass('bench_intake_floor')")).scalar_one()
        engine.dispose()
    finally:
        generate.drop_database(database)

    assert [(row.measure, row.item, row.status) for row in rows] == [
        ("f. intake", "p50 latency (Shopify orders/paid)", "ok"),
        ("f. intake", "p99 latency (Shopify orders/paid)", "ok"),
        ("f. intake", "throughput", "ok")], [row.note for row in rows]
    details = rows[0].details
    sent = details["requests"] + details["warmup"]
    assert details["held"] == {"ours": sent, "floor": sent} and details["queued"] == sent
    assert all(row.ours > 0 and row.floor > 0 and row.ratio is not None for row in rows)
    assert left == 0 and floor_table is None  # the inbox entries and the floor's table are gone
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter("bench-intake-*")) == []  # and the queued messages
    finally:
        client.close()

    console = Console(record=True, width=200)
    console.print(table("smoke", rows))
    printed = console.export_text()
    assert "req/s" in printed and "ms" in printed
