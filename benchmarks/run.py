"""``python -m benchmarks.run``: generate, measure, print the table, write the JSON.

    python -m benchmarks.run                                  # 20,000 members, --quick (make bench)
    python -m benchmarks.run --members 100000 --members 1000000
    python -m benchmarks.run --members 100000 --only audience,planning --reuse

Each size gets a fresh database, ``loyalty_bench_<members>`` (``--reuse`` keeps one generated earlier
with the same size, seed and schema, and puts its send ledger back as generated; drop them with
``dropdb -h 127.0.0.1 -U postgres loyalty_bench_1000000`` when done). The results go to
``benchmarks/results/<date>-<time>.json`` (and to ``--json PATH`` when given). The exit status is 1
when ours and a floor did not do the same work (a correctness check failed), never because a
speed target was missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from benchmarks import BENCH_DATABASE
from benchmarks.common import DatabaseInUse, Mismatch, Row, alone_on
from benchmarks.generate import AT, DEFAULT_SEED, describe, mark_dirty, prepare

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MEASURES = ("audience", "planning", "delivery", "mailchimp", "intake")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import psycopg

        from benchmarks.generate import PG_ROOT

        with psycopg.connect(f"{PG_ROOT}/postgres", connect_timeout=5) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = version[0] if version else None
    except Exception:  # noqa: BLE001
        pass
    try:
        info["redis"] = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                       timeout=5).stdout.split()[2].removeprefix("v=")
    except Exception:  # noqa: BLE001
        pass
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_size(members: int, *, measures=MEASURES, quick: bool = False, reuse: bool = False,
             database: str = BENCH_DATABASE, console: Console | None = None, seed: int = DEFAULT_SEED,
             deliveries: int | None = None) -> tuple[list[Row], dict, dict]:
    """Everything at one size: (rows, memory figures, generation facts)."""
    from benchmarks import audience, delivery, intake, mailchimp, planning
    from benchmarks.common import open_bench

    say = console.print if console else (lambda *a, **k: None)
    say(f"[bold]{members:,} members[/bold]: preparing the database {database} ...")
    last_shown = [0.0]

    def progress(done: int, total: int) -> None:
        if console and (time.monotonic() - last_shown[0] > 5 or done == total):
            last_shown[0] = time.monotonic()
            say(f"  generated {done}/{total} chunks")

    report = prepare(members, database=database, seed=seed, reuse=reuse, progress=progress)
    facts = {"seconds": report.seconds, "rows": report.rows, "reused": report.reused, "phases": report.phases,
             "distribution": describe(database)}
    say(f"  {'reused' if report.reused else 'generated'} in {report.seconds:.1f} s: "
        + ", ".join(f"{k} {v:,}" for k, v in report.rows.items()))

    rows: list[Row] = []
    memory: dict = {}
    bench = open_bench(members, database=database, quick=quick)
    results_dir = RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    steps: list[tuple[str, Callable[[], list[Row] | tuple[list[Row], dict[str, Any]]]]] = [
        ("audience", lambda: audience.measure(bench)),
        ("planning", lambda: planning.measure(bench)),
        ("delivery", lambda: delivery.measure(bench, results_dir, deliveries=deliveries)),
        ("mailchimp", lambda: mailchimp.measure(bench)),
        ("intake", lambda: intake.measure(bench)),
    ]
    try:
        for name, step in steps:
            if name not in measures:
                continue
            say(f"  measuring {name} ...")
            if name not in ("audience", "intake"):
                mark_dirty(database)  # these write to the send ledger (intake removes its own rows)
            started = time.monotonic()
            produced: list[Row] | tuple[list[Row], dict[str, Any]]
            try:
                produced = step()
            except Mismatch as exc:
                produced = [Row(_label(name), "correctness", status="MISMATCH", note=str(exc))]
            except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
                traceback.print_exc()
                produced = [Row(_label(name), "error", status="ERROR", note=f"{type(exc).__name__}: {exc}")]
            if isinstance(produced, tuple):  # delivery's rows, and its memory figures
                produced, memory = produced
            rows.extend(produced)
            say(f"    {name} took {time.monotonic() - started:.0f} s")
    finally:
        bench.close()
    return rows, memory, facts


def _label(name: str) -> str:
    return {"audience": "a. audience", "planning": "b. planning", "delivery": "c. delivery",
            "mailchimp": "e. mailchimp", "intake": "f. intake"}[name]


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit in ("rows/s", "msg/s", "req/s"):
        return f"{value:,.0f} {unit}"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:,.2f} {unit}".strip()


def table(title: str, rows: list[Row]) -> Table:
    out = Table(title=title, title_justify="left", show_lines=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("measure", "left"), ("item", "left"), ("ours", "right"), ("floor", "right"), ("ratio", "right"),
        ("target", "left"), ("met", "center"), ("note", "left"))
    for name, justify in columns:
        out.add_column(name, justify=justify, overflow="fold")
    for row in rows:
        if row.status != "ok":
            met = f"[red]{row.status}[/red]" if row.status in ("MISMATCH", "ERROR") else f"[yellow]{row.status}[/yellow]"
        else:
            met = "[green]yes[/green]" if row.met else ("[red]no[/red]" if row.met is not None else "")
        out.add_row(row.measure, row.item, _number(row.ours, row.unit), _number(row.floor, row.unit),
                    f"{row.ratio:.2f}×" if row.ratio is not None else "", row.target, met, row.note)
    return out


def markdown(sizes: dict[int, list[Row]]) -> str:
    """The same table as Markdown, for the README."""
    lines = ["| members | measure | item | ours | floor | ratio | target | met |",
             "| ---: | --- | --- | ---: | ---: | ---: | --- | --- |"]
    for size, rows in sizes.items():
        for row in rows:
            met = row.status if row.status != "ok" else ("yes" if row.met else ("no" if row.met is not None else ""))
            ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
            lines.append(f"| {size:,} | {row.measure} | {row.item} | {_number(row.ours, row.unit)} | "
                         f"{_number(row.floor, row.unit)} | {ratio} | {row.target} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, action="append", help="member base size; repeat for several")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 2,000 deliveries, 60-day sweep")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--reuse", action="store_true", help="reuse a database generated with the same size")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(MEASURES)}")
    parser.add_argument("--deliveries", type=int, help="messages for the delivery benchmark")
    parser.add_argument("--database", default=BENCH_DATABASE, help="database name prefix (the size is appended)")
    args = parser.parse_args(argv)
    if not args.members:  # `make bench`: a small size that keeps the benchmark working
        args.members, args.quick = [20_000], True
    measures = tuple(m.strip() for m in args.only.split(",")) if args.only else MEASURES
    unknown = set(measures) - set(MEASURES)
    if unknown:
        parser.error(f"unknown measure(s): {', '.join(sorted(unknown))}")

    try:  # the product's own log lines (a sync's summary...) would cut the table: warnings only
        from core.logs import configure_quiet

        configure_quiet()
    except Exception:  # noqa: BLE001 - an older checkout: its default logging is fine
        pass
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a log or a pipe: keep the table's lines whole
    started = datetime.now(UTC)
    info = machine()
    load_start = load_average()
    console.print(f"Benchmark instant {AT.isoformat()}; machine: {info.get('cpus')} cores, "
                  f"{info.get('memory_gb')} GB, PostgreSQL {info.get('postgresql')}, Redis {info.get('redis')}; "
                  f"load average {load_start}")
    by_size: dict[int, list[Row]] = {}
    memory_by_size: dict[int, dict] = {}
    generation: dict[int, dict] = {}
    for members in args.members:
        database = f"{args.database}_{members}"  # one per size, so that --reuse can keep each
        try:
            with alone_on(database):
                rows, memory, facts = run_size(members, measures=measures, quick=args.quick, reuse=args.reuse,
                                               database=database, console=console, deliveries=args.deliveries)
        except DatabaseInUse as exc:
            console.print(str(exc))
            return 2
        by_size[members] = rows
        generation[members] = facts
        if "delivery" in measures:
            memory_by_size[members] = memory
        console.print(table(f"{members:,} members{' (quick)' if args.quick else ''}", rows))

    if memory_by_size:
        from benchmarks.memory import rows as memory_rows

        peaks = memory_rows(memory_by_size)
        for row in peaks:
            size = int(row.item.split()[0].replace(",", ""))
            by_size.setdefault(size, []).append(row)
        console.print(table("d. the worker's peak memory", peaks))

    failed = [r for rows in by_size.values() for r in rows if r.status in ("MISMATCH", "ERROR")]
    result = {
        "date": started.isoformat(),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": info,
        "load_average": {"start": load_start, "end": load_average()},
        "instant": AT.isoformat(),
        "quick": args.quick,
        "generation": {str(k): v for k, v in generation.items()},
        "sizes": {str(size): [r.as_dict() for r in rows] for size, rows in by_size.items()},
        "markdown": markdown(by_size),
        "correct": not failed,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{started:%Y%m%d-%H%M%S}.json"
    for target in [path] + ([args.json] if args.json else []):
        target.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"Results: {path}" + (f" and {args.json}" if args.json else ""))
    if failed:
        console.print(f"[red]{len(failed)} measurement(s) failed their correctness check or crashed.[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
