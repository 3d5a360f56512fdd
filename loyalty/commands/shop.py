"""The shop's inbox and privacy requests: ``loyalty inbox``, ``loyalty member erase|export``.

``inbox`` lists what the shop sent (by state: received, applied, waiting, rejected) with the reason,
never the payload; ``inbox retry ID`` puts a rejected or waiting entry back and applies it;
``inbox apply`` applies everything received (the embedded default has no worker process).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from core.errors import InputError
from loyalty.cli import cli, runtime_for_cli
from loyalty.cli import plain as console
from loyalty.commands.support import _echo_json, actor_option, json_option, member
from shops.events import InboxState

STATES = click.Choice([state.value for state in InboxState])


@cli.group(invoke_without_command=True)
@click.option("--state", type=STATES, help="Only the entries in this state.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@json_option
@click.pass_context
def inbox(ctx: click.Context, state: str | None, limit: int, as_json: bool) -> None:
    """What the shop sent (webhooks, API events) and what became of it, newest first.

    Example: loyalty inbox --state rejected
    """
    if ctx.invoked_subcommand is not None:
        return
    from models.inbox import listing

    runtime = runtime_for_cli()
    with runtime.sessions() as session:
        rows: list[dict[str, Any]] = [
            {"id": e.id, "received_at": e.received_at.isoformat(), "platform": e.platform, "topic": e.topic,
             "state": e.state, "reason": e.reason, "member": e.member_ref, "attempts": e.attempts}
            for e in listing(session, state, limit)]
    if as_json:
        for row in rows:
            _echo_json(row)
        return
    if not rows:
        console.print("The inbox is empty" + (f" in state {state}." if state else "."))
        return
    table = Table(title="Inbox")
    for column in ("id", "received", "platform", "topic", "state", "member", "reason"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["id"]), row["received_at"][:19], row["platform"], row["topic"], row["state"],
                      row["member"] or "", row["reason"] or "")
    console.print(table)


@inbox.command("retry")
@click.argument("entry_id", type=int)
def inbox_retry(entry_id: int) -> None:
    """Put a rejected or waiting entry back and apply it now.

    Example: loyalty inbox retry 42
    """
    from models.db import transaction
    from models.inbox import InboxEntry, retry
    from workers.runtime import set_runtime

    runtime = runtime_for_cli()
    set_runtime(runtime)
    with transaction(runtime.sessions) as session:
        if not retry(session, entry_id):
            raise InputError(f"Inbox entry {entry_id} is not rejected or waiting; `loyalty inbox` lists the entries.")
    _apply_with_woken([entry_id])
    with runtime.sessions() as session:
        entry = session.get(InboxEntry, entry_id)
        console.print(f"Entry {entry_id}: {entry.state}" + (f" ({entry.reason})" if entry.reason else "") + ".")


@inbox.command("apply")
def inbox_apply() -> None:
    """Apply every received entry now, in the order received (what the worker does).

    Example: loyalty inbox apply
    """
    from sqlalchemy import select

    from models.inbox import InboxEntry
    from workers.runtime import set_runtime

    runtime = runtime_for_cli()
    set_runtime(runtime)
    with runtime.sessions() as session:
        ids = list(session.scalars(select(InboxEntry.id).where(InboxEntry.state == InboxState.RECEIVED)
                                   .order_by(InboxEntry.id)))
    done = _apply_with_woken(ids)
    console.print(f"{done} inbox entries applied or settled.")


def _apply_with_woken(ids: list[int]) -> int:
    from workers.inbox import apply_entry

    pending, done = list(ids), 0
    while pending:
        pending.extend(apply_entry(pending.pop(0)))
        done += 1
    return done


@member.command("erase")
@click.argument("member_id", metavar="ID|EMAIL|PHONE")
@click.option("--reason", required=True, metavar="TEXT", help="Why (e.g. 'GDPR request, ticket 1234'); audited.")
@actor_option
def member_erase(member_id: str, reason: str, actor: str) -> None:
    """Erase a member's personal data for good; the anonymous points ledger stays for the accounts.

    Example: loyalty member erase M0042 --reason "asked by email, ticket 1234"
    """
    from models.base import utcnow
    from models.db import transaction
    from models.privacy import erase_member
    from services.history import get_member

    runtime = runtime_for_cli()
    with transaction(runtime.sessions) as session:
        found = get_member(session, member_id, runtime.settings.default_locale)
        if found.erased_at is not None:
            raise InputError(f"Member {found.external_id} was already erased on {found.erased_at:%Y-%m-%d}.")
        counts = erase_member(session, found, actor=actor, reason=reason, now=utcnow())
        external_id = found.external_id
    console.print(f"Member {external_id} erased: names, email, phone, birthday and consent are gone; "
                  f"{counts['deliveries_skipped']} planned sends skipped, "
                  f"{counts['inbox_payloads_erased']} shop payloads erased.")


@member.command("export")
@click.argument("member_id", metavar="ID|EMAIL|PHONE")
@click.option("--reason", default="data access request", show_default=True, metavar="TEXT", help="Audited.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file instead of stdout.")
@actor_option
def member_export(member_id: str, reason: str, output: str | None, actor: str) -> None:
    """Everything held about a member, as JSON (a data access request).

    Example: loyalty member export M0042 --output m0042.json
    """
    from models.base import utcnow
    from models.db import transaction
    from models.privacy import export_member
    from services.history import get_member

    runtime = runtime_for_cli()
    with transaction(runtime.sessions) as session:
        data = export_member(session, get_member(session, member_id, runtime.settings.default_locale),
                             actor=actor, reason=reason, now=utcnow())
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        console.print(f"Written to {output}.")
    else:
        click.echo(text)


@cli.group()
def shop() -> None:
    """The shop's admin API: catch up with its history (see the README's "Catching up"), write the tiers
    and balances on its customers ("Tiers and balances in the shop")."""


@shop.command("backfill")
@click.argument("platform", type=click.Choice(["shopify", "woocommerce", "prestashop"]))
@click.option("--since", metavar="DATE", help="Only the orders changed since this day (YYYY-MM-DD, UTC) or instant; "
              "customers are always read whole. Default: the shop's whole history.")
@click.option("--page-size", type=click.IntRange(1, 250), default=100, show_default=True,
              help="Records per request (WooCommerce allows 100 at most).")
def shop_backfill(platform: str, since: str | None, page_size: int) -> None:
    """Read the shop's customers and orders through its admin API into the program, as its webhooks would.

    Resumable: a run that was stopped goes on from the last page it stored. Running it again changes
    nothing that was already applied.

    Example: loyalty shop backfill woocommerce --since 2026-01-01
    """
    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    from loyalty.cli import errors
    from workers.runtime import set_runtime
    from workers.shop_sync import backfill

    start = _since(since)
    runtime = runtime_for_cli()
    set_runtime(runtime)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} read"),
                  console=errors, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def show(resource: str, done: int, total: int | None) -> None:
            if resource not in tasks:
                tasks[resource] = progress.add_task(f"{platform} {resource}", total=total)
            progress.update(tasks[resource], completed=done, total=total)

        report = backfill(runtime, platform, start, page_size=page_size, progress=show)
    read = ", ".join(f"{count} {resource}" for resource, count in report.read.items()) or "nothing new"
    console.print(("Resumed the interrupted backfill: " if report.resumed else "Backfill done: ")
                  + f"read {read}; {report.stored} new inbox entries, {report.applied} applied or settled"
                  + (f", {report.skipped} unreadable records skipped (see the log)" if report.skipped else "") + ".")


@shop.command("sync")
@click.option("--platform", type=click.Choice(["shopify", "woocommerce"]),
              help="Only this shop (default: every one whose admin API is configured).")
def shop_sync(platform: str | None) -> None:
    """Write the members' tier, points and next expiry on their shop customers now (the clock does it
    every 15 minutes): Shopify tags and metafields, WooCommerce meta_data; only what changed.

    Example: loyalty shop sync
    """
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from loyalty.cli import errors
    from workers.shop_loyalty import ShopLoyaltyError, configured, sync_shops

    runtime = runtime_for_cli()
    chosen = [platform] if platform else configured(runtime.settings)
    if platform and platform not in configured(runtime.settings):
        raise InputError(f"{platform} is not configured; set its admin-API variables (see the README's "
                         "\"Catching up\") and sync again.")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=errors,
                  transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def show(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"Writing tiers and points to {name}", total=total)
            progress.update(tasks[name], completed=done, total=total)

        try:
            report = sync_shops(runtime, chosen, progress=show)
        except ShopLoyaltyError as error:
            raise InputError(str(error)) from None
    if report.skipped:
        raise InputError("Another shop sync is running; try again when it has finished.")
    failed = False
    for name, result in report.platforms.items():
        console.print(
            f"{name}: {result.candidates} member(s) changed since their last sync: {result.synced} written"
            + (f" ({result.retagged} with a new tier tag)" if name == "shopify" else "")
            + f", {result.unchanged} already up to date, {result.errors} refused by the shop, "
            f"in {result.calls} request(s); {result.not_in_shop} member(s) are not customers of this shop "
            "(skipped).", highlight=False, soft_wrap=True)
        for reason, count in sorted(result.reasons.items()):
            console.print(f"  {count} × {reason}", highlight=False, markup=False)
        if result.failure:
            failed = True
            errors.print(f"{name}: {result.failure} {result.left} member(s) wait for the next sync.",
                         highlight=False, markup=False)
    if failed:
        sys.exit(1)


def _since(text: str | None):
    if not text:
        return None
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--since {text!r} is not a date; write it like 2026-01-31 or 2026-01-31T12:00:00Z.") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
