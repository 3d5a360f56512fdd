"""``loyalty report``: the program's figures, as tables, one JSON object, or an HTML page."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import overload

import click
from rich.table import Table

from core.errors import InputError
from loyalty.cli import cli, runtime_for_cli
from loyalty.cli import plain as console


@overload
def parse_day(option: str, value: str) -> date: ...


@overload
def parse_day(option: str, value: str | None) -> date | None: ...


def parse_day(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option} {value!r} is not a date; write it like 2027-06-01.") from None


def period_for(start: date | None, end: date | None):
    """Whole UTC days, both ends included."""
    from services.report import Period

    if start and end and end < start:
        raise InputError(f"--to {end.isoformat()} is before --from {start.isoformat()}; swap them.")
    begin = datetime.combine(start, time(0), UTC) if start else None
    finish = datetime.combine(end + timedelta(days=1), time(0), UTC) if end else None
    return Period(begin, finish)


def period_words(start: date | None, end: date | None) -> str:
    if not start and not end:
        return "all time"
    return f"{start.isoformat() if start else 'the beginning'} to {end.isoformat() if end else 'now'} (UTC days)"


@cli.command()
@click.option("--from", "start", metavar="DATE", help="First day (YYYY-MM-DD, UTC); default: the beginning.")
@click.option("--to", "end", metavar="DATE", help="Last day, included (YYYY-MM-DD, UTC); default: now.")
@click.option("--conversion-days", default=7, show_default=True, type=click.IntRange(1, 365),
              help="An order this many days after a message counts as a conversion.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many top earners to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every figure, for scripts.")
@click.option("--html", "html_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML page with charts to FILE.")
def report(start: str | None, end: str | None, conversion_days: int, top: int, as_json: bool, html_path: Path | None) -> None:
    """Points issued, redeemed, expired and outstanding; top earners; tiers; sends, conversions and uplift.

    Example: loyalty report --from 2027-06-01 --to 2027-06-30 --html report.html
    """
    from services.report import program_report

    first, last = parse_day("--from", start), parse_day("--to", end)
    period = period_for(first, last)
    runtime = runtime_for_cli()
    program = getattr(runtime, "program", None)
    tiers = list(getattr(getattr(program, "tiers", None), "names", []) or [])
    campaigns = getattr(getattr(runtime, "campaigns", None), "campaigns", {})
    variant_order = {c.id: [v.name for v in c.experiment.variants] for c in campaigns.values() if c.experiment}
    with runtime.sessions() as session:
        data = program_report(session, period, conversion_days=conversion_days, top=top, tier_order=tiers,
                              variant_order=variant_order)
    data["period"]["words"] = period_words(first, last)
    points_rules = getattr(program, "points", None)
    if points_rules is not None:
        worth = Decimal(data["points"]["outstanding"]) * points_rules.value_per_point
        data["points"]["outstanding_value"] = {"amount": str(worth.quantize(Decimal("0.01"))), "currency": points_rules.currency}

    if html_path is not None:
        from loyalty.report_html import render_report

        data["samples"] = _samples_beside(html_path, runtime, list(campaigns.values()))
        try:
            html_path.write_text(render_report(data), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"Cannot write {html_path} ({exc.strerror}); choose a folder you can write to.") from None
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    _print_tables(data)
    if html_path is not None:
        console.print(f"The HTML page is in {html_path}.")


def _samples_beside(html_path: Path, runtime, campaigns: list) -> list[dict]:
    """Each campaign's message for the sample member, written next to the HTML page (in
    ``<page>-samples/``), as the page links them (relative links: the folder travels with the page)."""
    from loyalty.samples import campaign_samples

    renderer, program = getattr(runtime, "renderer", None), getattr(runtime, "program", None)
    if renderer is None or program is None or not campaigns:
        return []
    folder = html_path.parent / f"{html_path.stem}-samples"
    copies = campaign_samples(sorted(campaigns, key=lambda c: c.id), renderer, program, folder)
    return [{"campaign": c.campaign, "variant": c.variant, "locale": c.locale, "channel": c.channel, "title": c.title,
             "href": f"{folder.name}/{c.path.name}", "text_href": f"{folder.name}/{c.text_path.name}" if c.text_path else None}
            for c in copies]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _table(title: str, *columns: str, text: int = 1) -> Table:
    """A table whose first ``text`` columns are words (left) and the others numbers (right)."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < text else "right")
    return table


def _print_tables(data: dict) -> None:
    console.print(f"Program report, {data['period']['words']}")
    points, rates = data["points"], data["rates"]
    table = _table("Points", "figure", "points")
    for label, key in (("issued", "issued"), ("redeemed", "redeemed"), ("expired", "expired"),
                       ("adjusted down", "adjusted_down"), ("outstanding", "outstanding")):
        table.add_row(label, f"{points[key]:,}")
    if "outstanding_value" in points:
        value = points["outstanding_value"]
        table.add_row("outstanding, worth", f"{value['amount']} {value['currency']}")
    table.add_row("redemption rate", percent(rates["redemption_rate"]))
    table.add_row("adoption rate", f"{percent(rates['adoption_rate'])} ({rates['redeemers']} of {rates['earners']} earners)")
    console.print(table)

    sources = _table("Points issued by source", "source", "points", "entries")
    for row in data["points_by_source"]:
        sources.add_row(row["source"], f"{row['points']:,}", str(row["entries"]))
    earners = _table("Top earners", "member", "tier", "earned", "balance", text=2)
    for row in data["top_earners"]:
        earners.add_row(row["member"], row["tier"], f"{row['earned']:,}", f"{row['balance']:,}")
    total = sum(data["members_by_tier"].values())
    tiers = _table("Members by tier (today)", "tier", "members", "share")
    for tier, count in data["members_by_tier"].items():
        tiers.add_row(tier, str(count), percent(count / total if total else None))
    for shown in (sources, earners, tiers):
        console.print(shown)
    _print_campaigns(data)


def _print_campaigns(data: dict) -> None:
    campaigns = data["campaigns"]
    if not campaigns:
        console.print("No campaign planned anything in this period.")
        return
    counted = ("planned", "sent", "skipped", "failed", "unknown", "held_out", "pending")
    sends = _table("Campaign sends", "campaign", *(key.replace("_", " ") for key in counted))
    for c in campaigns:
        sends.add_row(c["campaign"], *(str(c[key]) for key in counted))
    console.print(sends)
    reasons = _table("Skipped, by reason", "campaign", "reason", "deliveries", text=2)
    for c in campaigns:
        for reason, count in c["skipped_by_reason"].items():
            reasons.add_row(c["campaign"], reason, str(count))
    if reasons.row_count:
        console.print(reasons)
    days = data["conversion_days"]
    conversions = _table(f"Conversions (an order within {days} days)", "campaign", "sent", "converted", "rate",
                         "held out", "converted ", "rate ", "uplift")
    for c in campaigns:
        uplift = "-" if c["uplift_pp"] is None else f"{c['uplift_pp']:+.1f} pp"
        conversions.add_row(c["campaign"], str(c["sent"]), str(c["converted"]), percent(c["conversion_rate"]),
                            str(c["held_out"]), str(c["held_out_converted"]), percent(c["held_out_conversion_rate"]), uplift)
    console.print(conversions)
    _print_variants(data)
    _print_email_feedback(data)


def interval(ci: list[float] | None) -> str:
    return "-" if ci is None else f"{ci[0]:+.1f} to {ci[1]:+.1f} pp"


def _print_variants(data: dict) -> None:
    tested = [c for c in data["campaigns"] if c.get("variants")]
    if not tested:
        return
    test = data["variant_test"]
    table = _table(f"A/B variants (an order within {data['conversion_days']} days)", "campaign", "variant", "sent",
                   "converted", "rate", "uplift vs holdout", f"{test['confidence']:.0%} interval", "vs first variant",
                   f"{test['confidence']:.0%} interval ", text=2)
    for c in tested:
        for v in c["variants"]:
            uplift = "-" if v["uplift_pp"] is None else f"{v['uplift_pp']:+.1f} pp"
            versus = "-" if v.get("difference_pp") is None else f"{v['difference_pp']:+.1f} pp vs {v['compared_with']}"
            table.add_row(c["campaign"], v["variant"], str(v["sent"]), str(v["converted"]), percent(v["conversion_rate"]),
                          uplift, interval(v["uplift_ci_pp"]), versus, interval(v.get("difference_ci_pp")))
    console.print(table)
    console.print(f"Intervals: {test['interval']}, {test['confidence']:.0%}; one that contains 0 cannot tell the "
                  "two rates apart yet.", soft_wrap=True)


def _print_email_feedback(data: dict) -> None:
    """Bounce and complaint rates of each campaign's emails; a warning past 0.1% complaints."""
    feedback = data.get("email_feedback") or {}
    untraced = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in (feedback.get("untraced") or {}).items())
    if not any(c["bounced"] or c["complaints"] for c in feedback.get("campaigns") or []):
        if feedback.get("campaigns"):
            console.print("Email bounces and complaints: none traced to this period's emails.")
        if untraced:  # as the HTML page says it: notices the relays sent that name no email of ours
            console.print(f"Email bounces and complaints not traced to an email: {untraced}.", soft_wrap=True)
        return
    table = _table("Email bounces and complaints", "campaign", "emails sent", "bounced", "of which hard",
                   "bounce rate", "complaints", "complaint rate")
    for c in feedback["campaigns"]:
        rate = "-" if c["complaint_rate"] is None else f"{c['complaint_rate'] * 100:.2f}%"
        table.add_row(c["campaign"], str(c["emails_sent"]), str(c["bounced"]), str(c["hard_bounced"]),
                      percent(c["bounce_rate"]), str(c["complaints"]), rate)
    console.print(table)
    if untraced:
        console.print(f"Not traced to an email: {untraced}.", soft_wrap=True)
    for warning in feedback.get("warnings", []):
        console.print(f"warning: {warning}", soft_wrap=True)
