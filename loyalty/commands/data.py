"""Data in: ``loyalty import members|orders|points FILE``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.settings import get_settings
from loyalty.cli import cli, console, errors, plain, plain_errors, runtime_for_cli


@cli.command(name="import")
@click.argument("kind", type=click.Choice(["members", "orders", "points"]))
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and report every row without writing anything.")
@click.option("--as", "actor", default=lambda: get_settings().actor,
              help="Who is importing, for the audit log (default: $LOYALTY_ACTOR or $USER).")
def import_(kind: str, path: Path, dry_run: bool, actor: str) -> None:
    """Import members, orders or points from a CSV or JSONL file (idempotent upsert by id).

    A bad row is reported with its line number and reason; the good rows still land.

    Example: loyalty import members members.csv --dry-run
    """
    from rich.progress import BarColumn, Progress, TextColumn

    from services.imports import import_file

    settings = get_settings()
    runtime = runtime_for_cli()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} rows"),
                  console=errors, transient=True) as progress:
        task = progress.add_task(f"Importing {path.name}", total=None)
        report = import_file(
            runtime.sessions, kind, path, dry_run=dry_run, actor=actor,
            default_timezone=settings.default_timezone, default_locale=settings.default_locale,
            progress=lambda n: progress.update(task, completed=n), program=runtime.program,
        )
    for error in report.errors:
        plain_errors.print(f"{path}, line {error.line}: {error.message}", soft_wrap=True)
    if report.ignored_columns:
        plain_errors.print(f"{path}: ignored unknown column(s): {', '.join(report.ignored_columns)}.")
    if kind == "orders" and not dry_run:
        applied = _apply_orders(runtime)
        if applied:
            console.print(f"Applied {applied} order(s) to points, last orders and tiers.")
    verb = "Would import" if dry_run else "Imported"
    plain.print(
        f"{verb} {report.rows} {kind} row(s) from {path}: {report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.errors)} rejected."
    )
    if report.errors:
        sys.exit(1)


def _apply_orders(runtime) -> int:
    """Imported orders earn points, move last-order dates and tiers (once each, however re-imported)."""
    from models.base import utcnow
    from models.db import transaction
    from services.program_ops import apply_pending_orders

    total = 0
    while True:
        with transaction(runtime.sessions) as session:
            applied = apply_pending_orders(session, runtime.program, now=utcnow())
        total += applied
        if not applied:
            return total
