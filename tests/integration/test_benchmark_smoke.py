"""The benchmark keeps working: generator, audience and planning at 2,000 members, in this process.

Only the benchmark's correctness checks are asserted (ours and each floor select the same members
and write the same rows); its timings are never asserted here.
"""

from __future__ import annotations

import os

from rich.console import Console

from benchmarks import generate
from benchmarks.run import run_size, table
from campaigns.kinds import KINDS


def test_the_benchmark_at_2000_members_agrees_with_its_floors_and_reports_every_kind():
    database = f"loyalty_bench_test_{os.getpid()}"
    try:
        rows, _, facts = run_size(2_000, measures=("audience", "planning"), quick=True, database=database)
    finally:
        generate.drop_database(database)

    assert facts["rows"]["members"] == 2_000
    assert facts["distribution"]["zones"] == 40
    broken = [(row.measure, row.item, row.note) for row in rows if row.status in ("MISMATCH", "ERROR")]
    assert broken == []

    audience = [row for row in rows if row.measure == "a. audience"]
    assert [row.item for row in audience] == list(KINDS)  # one row per kind, in the registry's order
    for row in audience:
        if row.status == "ok":  # measured: the same ids as the floor were checked before timing
            assert row.ratio is not None and row.details["floor"]
    assert any(row.status == "ok" and row.details["rows"] > 0 for row in audience)

    planning = [row for row in rows if row.measure == "b. planning"]
    assert planning and all(row.status == "ok" and row.details["rows"] > 0 for row in planning)

    console = Console(record=True, width=200)
    console.print(table("smoke", rows))
    printed = console.export_text()
    for kind in KINDS:
        assert kind in printed
