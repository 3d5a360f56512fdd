"""Marketer commands: validate definitions, preview an audience, run a tick."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click
from rich.table import Table

from core.calendar import iso_utc
from core.settings import get_settings
from loyalty.cli import cli, console, errors, instant_option, runtime_for_cli

if TYPE_CHECKING:
    from workers.runtime import Runtime


@cli.command()
def validate() -> None:
    """Check every campaign definition and render every template in every locale.

    Exits with 1 when anything is wrong, so CI can block a bad deploy.

    Example: loyalty validate
    """
    settings = get_settings()  # a malformed variable is one sentence before the templates' imports
    from campaigns.validation import validate_all

    result = validate_all(settings.campaigns_dir, settings.templates_dir, settings.program_file)
    for campaign_id, locales in sorted(result.checked.items()):
        console.print(f"[green]ok[/]    {campaign_id} ({', '.join(locales)})")
    for warning in result.warnings:
        console.print(f"[yellow]warn[/]  {warning}", highlight=False)
    for problem in result.problems:
        errors.print(f"[red]error[/] {problem}", highlight=False, soft_wrap=True)
    if result.problems:
        errors.print(f"{len(result.problems)} problem(s) found; nothing was changed.")
        sys.exit(1)
    console.print(f"All {len(result.checked)} campaign(s) are valid.")


@cli.command()
@click.argument("campaign")
@click.option("--at", "at", metavar="TIME", help="The instant to evaluate (ISO 8601, UTC if no offset); default now.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, for scripts.")
def preview(campaign: str, at: str | None, as_json: bool) -> None:
    """List who is due what from CAMPAIGN at an instant; writes and sends nothing.

    Example: loyalty preview birthday --at 2027-02-28T10:00:00Z --json
    """
    from workers.one_off import expected_outcomes
    from workers.planning import plan_context, preview_campaign

    instant = instant_option(at)
    runtime = runtime_for_cli()
    definition = runtime.campaigns.get(campaign)
    warn_if_refused(runtime, [definition.id])
    with runtime.sessions() as session:
        rows = preview_campaign(session, definition, plan_context(session, runtime.campaigns, runtime.program, instant))
        expected_outcomes(runtime, session, definition, rows, instant)  # an SMS the sender would refuse, as it ends
    lines = [_preview_line(row) for row in rows]
    if as_json:
        for line in lines:
            click.echo(json.dumps(line, ensure_ascii=False))
        return
    table = Table(title=f"{campaign} at {iso_utc(instant)}")
    tested = definition.experiment is not None
    for column in ("member", "status", "channel", "reason", *(["variant"] if tested else []), "reward",
                   "send at (UTC)", "occurrence key"):
        table.add_column(column)
    for line in lines:
        reward = ", ".join(f"{v} {k}" for k, v in line["reward"].items()) or "-"
        variant = [line.get("variant") or "-"] if tested else []
        table.add_row(line["member"], line["status"], line["channel"] or "-", line.get("reason") or "-", *variant, reward,
                      line["send_at"], line["occurrence_key"])
    console.print(table)
    counts = Counter(line["status"] if line["status"] not in ("skipped", "failed") else f"{line['status']} ({line['reason']})"
                     for line in lines)
    console.print(", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "Nobody is due at that instant.")
    if rows:
        from loyalty.commands.simulate import print_preview_summary  # per channel, skips by reason, samples

        print_preview_summary(console, runtime, definition, rows, instant)


def warn_if_refused(runtime: Runtime, campaign_ids: Iterable[str]) -> None:
    """On stderr (a --json reader keeps clean lines): a campaign shown as due whose messages the worker
    will not send now (``Runtime.refusal``: a marketing email while the brand has no postal address)."""
    for campaign_id in campaign_ids:
        if (problem := runtime.refusal(campaign_id)) is not None:
            errors.print(f"[yellow]warning:[/] the worker sends nothing of {campaign_id!r} as it stands: {problem}",
                         highlight=False, soft_wrap=True)


def _preview_line(row: dict) -> dict:
    line = {
        "member": row["member"],
        "campaign": row["campaign"],
        "channel": row["channel"],
        "occurrence_key": row["occurrence_key"],
        "send_at": iso_utc(row["send_at"]),
        "reward": {"points": row["reward_points"]} if row["reward_points"] else {},
        "status": row["state"],
    }
    if row["reason"]:
        line["reason"] = row["reason"]
    if row.get("variant"):
        line["variant"] = row["variant"]
    return line


@cli.command()
@click.option("--at", "at", metavar="TIME", help="The tick's instant (ISO 8601, UTC if no offset); default now.")
@click.option("--campaign", "campaign_ids", multiple=True, help="Only this campaign (repeatable).")
def run(at: str | None, campaign_ids: tuple[str, ...]) -> None:
    """Run one scheduler tick synchronously: plan every enabled campaign, then deliver.

    For backfills and tests; running the same tick twice sends nothing twice.

    Example: loyalty run --at 2027-02-28T10:00:00Z
    """
    from workers.tick import run_tick

    instant = instant_option(at)
    runtime = runtime_for_cli()
    for campaign_id in campaign_ids:
        runtime.campaigns.get(campaign_id)
    _warn_broken_definitions(runtime)
    report = run_tick(runtime, instant, campaign_ids=list(campaign_ids) or None)
    table = Table(title=f"Tick at {iso_utc(instant)}")
    for column in ("campaign", "planned", "skipped at planning"):
        table.add_column(column, justify="right" if column != "campaign" else "left")
    for plan in report.plans:
        table.add_row(plan.campaign, str(len(plan.planned_ids)), str(plan.skipped))
    console.print(table)
    outcomes = report.delivery.outcomes
    console.print(
        "Delivered: " + (", ".join(f"{n} {state}" for state, n in sorted(outcomes.items())) or "nothing new")
        + (f"; {len(report.delivery.later)} waiting for a later time" if report.delivery.later else "")
        + (f"; {sum(report.delivery.kept_planned.values())} kept planned, not sent (see the warning above)"
           if report.delivery.kept_planned else "")
    )
    if report.delivery.reasons:
        console.print("Reasons: " + ", ".join(f"{n} {r}" for r, n in sorted(report.delivery.reasons.items())))


def _warn_broken_definitions(runtime) -> None:
    for problem in [*map(str, runtime.campaigns.errors), *runtime.refusals().values()]:
        errors.print(f"[yellow]warning:[/] skipping a broken campaign: {problem}", highlight=False, soft_wrap=True)
