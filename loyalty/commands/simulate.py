"""``loyalty simulate``: per day, what each campaign would send; and the preview's extra summary.

Simulation evaluates each campaign exactly as the planner would (the same audience query, through
:func:`workers.planning.preview_campaign`), at a few instants chosen so that every zone is seen on
every day of the range between its local send time and the end of its local day. Nothing is
written, so a real run differs in two ways: the frequency cap counts only messages already in the
send ledger, not the simulated ones; and an occurrence that becomes due only late in a day (say,
a tier reached in the evening) is seen at the end of that day, as the next tick would see it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from core import calendar
from core.errors import InputError
from loyalty.cli import cli, errors, runtime_for_cli
from loyalty.cli import plain as console
from loyalty.commands.report import parse_day

MAX_DAYS = 366
END_OF_DAY = time(23, 59)


@dataclass
class DayFigures:
    send: int = 0
    channels: Counter = field(default_factory=Counter)
    held_out: int = 0
    skipped: Counter = field(default_factory=Counter)
    reward_points: int = 0
    variants: Counter = field(default_factory=Counter)  # the A/B split of what would be sent

    def add(self, row: dict) -> None:
        if row["state"] == "planned":
            self.send += 1
            self.channels[row.get("channel") or "-"] += 1
            if row.get("variant"):
                self.variants[row["variant"]] += 1
            self.reward_points += row.get("reward_points") or 0
        elif row["state"] == "held_out":
            self.held_out += 1
        else:
            self.skipped[row.get("reason") or row["state"]] += 1


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def evaluation_instants(campaign, zones: list[str], days: list[date]) -> list[datetime]:
    """Few instants that, together, see every occurrence of ``campaign`` due on one of ``days``.

    In a zone, a day's occurrences are due from the local send time to the end of the local day.
    Picking the earliest-ending window's end, skipping every window that contains it, and so on
    (the classic greedy interval stabbing) touches each window with the fewest evaluations: two or
    three a day for zones all around the world, instead of one per zone.
    """
    windows = sorted(
        ((calendar.local_instant(day, campaign.send_time, zone), calendar.local_instant(day, END_OF_DAY, zone))
         for zone in zones for day in days),
        key=lambda window: window[1],
    )
    instants: list[datetime] = []
    for start, end in windows:
        if not instants or start > instants[-1]:
            instants.append(end)
    return instants


def simulate_campaigns(runtime, campaigns, first: date, last: date, *, advance=lambda: None, total=lambda n: None):
    """{(day, campaign id): DayFigures} for every day and campaign; reads only."""
    from workers.planning import plan_context, preview_campaign, zones_in_use

    days = days_between(first, last)
    figures = {(day, c.id): DayFigures() for day in days for c in campaigns}
    with runtime.sessions() as session:
        zones = zones_in_use(session)
        plans = [(c, evaluation_instants(c, zones, days)) for c in campaigns]
        total(sum(len(instants) for _, instants in plans))
        member_zones: dict[int, str] = {}
        for campaign, instants in plans:
            seen: set[str] = set()
            for at in instants:
                ctx = plan_context(session, runtime.campaigns, runtime.program, at)
                rows = [r for r in preview_campaign(session, campaign, ctx) if r["occurrence_key"] not in seen]
                _learn_zones(session, member_zones, {r["member_id"] for r in rows})
                for row in rows:
                    seen.add(row["occurrence_key"])
                    # The day it goes out, in the member's zone (an expiry reminder's occurrence date is
                    # the expiry's, and an SMS may wait for the end of quiet hours).
                    day = calendar.local_datetime(row["send_at"], member_zones[row["member_id"]]).date()
                    if (day, campaign.id) in figures:
                        figures[(day, campaign.id)].add(row)
                advance()
    return figures


def _learn_zones(session, zones: dict[int, str], member_ids: set[int]) -> None:
    from sqlalchemy import select

    from models.member import Member

    missing = sorted(member_ids - zones.keys())
    for start in range(0, len(missing), 5000):
        chunk = missing[start : start + 5000]
        zones.update(session.execute(select(Member.id, Member.timezone).where(Member.id.in_(chunk))).all())


@cli.command()
@click.option("--from", "start", required=True, metavar="DATE", help="First day (YYYY-MM-DD, in each member's own zone).")
@click.option("--to", "end", required=True, metavar="DATE", help="Last day, included.")
@click.option("--campaign", "campaign_ids", multiple=True, metavar="ID",
              help="Only this campaign (repeatable); default: every campaign, enabled or not.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (a day and a campaign), for scripts.")
def simulate(start: str, end: str, campaign_ids: tuple[str, ...], as_json: bool) -> None:
    """Per day, what each campaign would send between two dates; writes and sends nothing.

    Disabled campaigns are simulated too, so a new campaign can be checked before it is enabled.

    Example: loyalty simulate --from 2027-06-01 --to 2027-06-30 --campaign birthday
    """
    first, last = parse_day("--from", start), parse_day("--to", end)
    if last < first:
        raise InputError(f"--to {last.isoformat()} is before --from {first.isoformat()}; swap them.")
    if (last - first).days + 1 > MAX_DAYS:
        raise InputError(f"A simulation covers at most {MAX_DAYS} days; split {first} to {last} into shorter ranges.")
    runtime = runtime_for_cli()
    ids = list(campaign_ids) or sorted(runtime.campaigns.campaigns)
    campaigns = [runtime.campaigns.get(campaign_id) for campaign_id in dict.fromkeys(ids)]
    if not campaigns:
        raise InputError("There is no valid campaign to simulate; run loyalty validate to see why.")
    from loyalty.commands.campaigns import warn_if_refused

    warn_if_refused(runtime, [c.id for c in campaigns])

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=errors,
                  transient=True) as progress:
        task = progress.add_task(f"Simulating {first} to {last}", total=None)
        figures = simulate_campaigns(runtime, campaigns, first, last, advance=lambda: progress.advance(task),
                                     total=lambda n: progress.update(task, total=n))
    if as_json:
        for (day, campaign_id), f in sorted(figures.items()):
            click.echo(json.dumps({
                "date": day.isoformat(), "campaign": campaign_id, "send": f.send, "channels": dict(f.channels),
                "held_out": f.held_out, "skipped": dict(f.skipped), "reward_points": f.reward_points,
                **({"variants": dict(f.variants)} if f.variants else {}),
            }))
        return
    _print_simulation(campaigns, figures, first, last)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counter.items())) or "-"


def _print_simulation(campaigns, figures: dict, first: date, last: date) -> None:
    table = Table(title=f"What would be sent, {first} to {last} (nothing was written)", title_justify="left")
    table.add_column("date", no_wrap=True)
    table.add_column("campaign", overflow="fold")
    table.add_column("would send")
    table.add_column("held out", justify="right")
    table.add_column("skipped", overflow="fold")
    table.add_column("points", justify="right")
    for (day, campaign_id), f in sorted(figures.items()):
        if f.send or f.held_out or f.skipped:
            send = f"{f.send} ({_counts(f.channels)})" if f.send else "0"
            table.add_row(day.isoformat(), campaign_id, send, str(f.held_out), _counts(f.skipped), f"{f.reward_points:,}")
    console.print(table if table.row_count else "No campaign would send anything on these days.")
    for campaign in campaigns:
        rows = [f for (_, cid), f in figures.items() if cid == campaign.id]
        skipped: Counter[str] = sum((f.skipped for f in rows), Counter())
        state = "" if campaign.enabled else " (disabled)"
        console.print(f"{campaign.id}{state}: {sum(f.send for f in rows)} would be sent, "
                      f"{sum(f.held_out for f in rows)} held out, {sum(skipped.values())} skipped"
                      + (f" ({_counts(skipped)})" if skipped else "") + ".")
        if campaign.experiment is not None:
            print_split(campaign, sum((f.variants for f in rows), Counter()))


def print_split(campaign, split: Counter, out: Console = console) -> None:
    """The A/B split of what would be sent, next to the shares the YAML asks for."""
    total = sum(split.values())
    parts = [f"{v.name} {split[v.name]} ({split[v.name] / total:.1%}, share {v.share:.0%})" if total
             else f"{v.name} 0 (share {v.share:.0%})" for v in campaign.experiment.variants]
    out.print(f"{campaign.id}: experiment {campaign.experiment.name}: " + ", ".join(parts) + ".", soft_wrap=True)


def print_preview_summary(out: Console, runtime, campaign, rows: list[dict], at: datetime, *, samples: int = 3) -> None:
    """The preview's summary: sends per channel, skips by reason, and a few rendered messages.

    ``rows`` are :func:`workers.planning.preview_campaign`'s. Call it after the preview table.
    """
    from models.delivery import Delivery
    from models.member import Member
    from workers.one_off import render_for

    by_channel = Table(title=f"{campaign.id}: by channel", title_justify="left")
    for column in ("channel", "would send", "held out"):
        by_channel.add_column(column, justify="left" if column == "channel" else "right")
    planned = Counter(r.get("channel") for r in rows if r["state"] == "planned")
    held = Counter(r.get("channel") for r in rows if r["state"] == "held_out")
    for channel in sorted(set(planned) | set(held), key=str):
        by_channel.add_row(Text(channel or "-"), str(planned[channel]), str(held[channel]))
    skipped = Counter(r.get("reason") or r["state"] for r in rows if r["state"] not in ("planned", "held_out"))
    reasons = Table(title=f"{campaign.id}: not sent, by reason", title_justify="left")
    reasons.add_column("reason")
    reasons.add_column("members", justify="right")
    for reason, count in skipped.most_common():
        reasons.add_row(Text(reason), str(count))
    for shown in (by_channel, reasons):
        if shown.row_count:
            out.print(shown)
    if campaign.experiment is not None:
        print_split(campaign, Counter(r["variant"] for r in rows if r["state"] == "planned" and r.get("variant")), out)

    picked = [r for r in rows if r["state"] == "planned"][:samples]
    if not picked:
        return
    from loyalty.samples import member_sample

    folder = runtime.settings.home / "samples" / f"preview-{campaign.id}-{at.strftime('%Y%m%dT%H%M%SZ')}"
    copies = []
    sample_table = Table(title=f"{campaign.id}: sample messages", title_justify="left")
    for column in ("member", "channel", "locale", "message"):
        sample_table.add_column(column, overflow="fold")
    fields = ("occurrence_key", "campaign", "member_id", "channel", "reward_points", "occurrence_date", "payload",
              "variant")
    with runtime.sessions() as session:
        for row in picked:
            member = session.get(Member, row["member_id"])
            delivery = Delivery(**{name: row[name] for name in fields if name in row})
            rendered = render_for(runtime, session, campaign, member, delivery, at)
            if rendered.state != "planned":
                ending = f"would end {rendered.state} ({rendered.reason})"
                sample_table.add_row(Text(row["member"]), Text(rendered.channel), rendered.locale, Text(ending))
                continue
            first_line = next((line for line in rendered.text.splitlines() if line.strip()), "")
            message = rendered.subject if rendered.subject is not None else first_line
            sample_table.add_row(*(Text(cell) for cell in (row["member"], rendered.channel, rendered.locale, message)))
            if rendered.channel in ("email", "sms"):
                copies.append(member_sample(folder, campaign.id, row["member"], variant=row.get("variant"),
                                            locale=rendered.locale, channel=rendered.channel, subject=rendered.subject,
                                            text=rendered.text, html=rendered.html))
    out.print(sample_table)
    for copy in copies:  # one line each, never wrapped, so a terminal makes them clickable
        out.print(Text(f"Rendered copy: {copy.path.resolve().as_uri()}"), soft_wrap=True)
