"""Operator commands for Mailchimp: ``loyalty mailchimp sync``."""

from __future__ import annotations

import sys

from core.errors import InputError
from loyalty.cli import cli, console, errors, runtime_for_cli


@cli.group()
def mailchimp() -> None:
    """The Mailchimp audience: members, merge fields, tags and events."""


@mailchimp.command()
def sync() -> None:
    """Upsert the members changed since the last sync into the audience now (500 per call).

    The clock runs the same sync every 15 minutes; this is for a first load or after a fix.
    Members Mailchimp refuses (unsubscribed or cleaned there) are recorded, not retried.

    Example: loyalty mailchimp sync
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from workers.mailchimp_sync import sync_members

    runtime = runtime_for_cli()
    if runtime.settings.mailchimp is None:
        raise InputError("Mailchimp is not configured: set MAILCHIMP_API_KEY, MAILCHIMP_SERVER_PREFIX and "
                         "MAILCHIMP_LIST_ID, then sync again.")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=errors,
                  transient=True) as progress:
        task = progress.add_task("Syncing members to Mailchimp", total=None)
        report = sync_members(runtime, progress=lambda done, total: progress.update(task, completed=done, total=total))
    if report.skipped:
        raise InputError("Another Mailchimp sync is running; try again when it has finished.")
    console.print(
        f"{report.candidates} member(s) changed since their last sync: {report.created} added, {report.updated} "
        f"updated, {report.unchanged} already up to date, {report.refused} refused by Mailchimp, "
        f"{report.errors} with an error, in {report.calls} call(s).", highlight=False, soft_wrap=True)
    for reason, count in sorted(report.reasons.items()):
        console.print(f"  {count} × {reason}", highlight=False, markup=False)
    if report.failed_chunks:
        errors.print(f"{report.failed_chunks} batch(es) of up to 500 members failed after retries; the next sync "
                     "will send them again.", highlight=False)
        sys.exit(1)
