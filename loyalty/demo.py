"""``loyalty demo``: the whole product on the embedded default, in one command.

Seeds a realistic member base (time zones around the world, English and French speakers, three
tiers, some without consent, some who changed their birthday last week, Feb 29 birthdays on the
days that celebrate them) with stories that make every campaign kind due today: birthdays, points
about to expire, lapsed customers, fresh tier upgrades and, on a member day, the offer. Orders go
through the real earning rules. Then it runs today's tick through the in-process queue and worker,
and shows what this run sent and why the others were not, what earlier runs had already sent
(seeding is an upsert and the send ledger is idempotent: running it again sends nothing twice), what
became of every birthday member, where each channel's messages went, and how to run the CLI next.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dramatiq
from dramatiq import Worker
from dramatiq.common import join_queue
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from core import calendar
from core.calendar import iso_utc
from core.errors import InputError
from core.settings import Settings
from models.base import utcnow
from models.db import transaction
from models.delivery import Delivery, DeliveryState
from models.member import ContactStatus, Member
from models.order import Order
from services.program_ops import apply_pending_orders

ZONES = [
    ("Pacific/Auckland", "en_NZ"), ("Australia/Sydney", "en_AU"), ("Asia/Tokyo", "en"),
    ("Asia/Kolkata", "en_IN"), ("Europe/Paris", "fr_FR"), ("Europe/London", "en_GB"),
    ("Africa/Abidjan", "fr"), ("America/Montreal", "fr_CA"), ("America/New_York", "en_US"),
    ("America/Chicago", "en_US"), ("America/Los_Angeles", "en_US"), ("Pacific/Honolulu", "en_US"),
]
FIRST_NAMES = ["Alex", "Camille", "Sam", "Léa", "Noah", "Chloé", "Liam", "Inès", "Maya", "Hugo", "Zoé", "Arjun"]
LAST_NAMES = ["Martin", "Bernard", "Smith", "Dubois", "Nguyen", "Tremblay", "Garcia", "Kumar", "Rossi", "Moreau"]
SHOWN_ROWS = 8


def _story(rng: random.Random) -> str:
    roll = rng.random()
    for story, share in (("birthday", 0.18), ("expiring", 0.12), ("lapsed", 0.08), ("long_lapsed", 0.06),
                         ("upgrade", 0.06), ("loyal", 1.0)):
        if roll < share:
            return story
        roll -= share
    return "loyal"


def _orders_for(story: str, external_id: str, now: datetime, rng: random.Random) -> list[tuple[str, datetime, str]]:
    """(order id, placed at, total) for a member's story, relative to ``now``."""
    if story == "expiring":  # earned 335 or 358 days ago: expiring in 30 or 7 days
        return [(f"{external_id}-O1", now - timedelta(days=rng.choice([335, 358]), hours=1), "86.40")]
    if story == "lapsed":
        return [(f"{external_id}-O1", now - timedelta(days=200), "35.00"),
                (f"{external_id}-O2", now - timedelta(days=rng.randint(61, 88)), "52.90")]
    if story == "long_lapsed":
        return [(f"{external_id}-O1", now - timedelta(days=rng.randint(91, 170)), "64.00")]
    if story == "upgrade":  # crossing silver (500) with today's order
        return [(f"{external_id}-O1", now - timedelta(days=40), "320.00"),
                (f"{external_id}-O2", now - timedelta(hours=2), "240.00")]
    return [(f"{external_id}-O{i}", now - timedelta(days=rng.randint(1, 40)), f"{rng.randint(15, 140)}.00")
            for i in range(1, rng.randint(2, 4))]


@dataclass
class Seeded:
    stories: Counter  # how many members of each story
    birthdays: list[str]  # the external ids of the members whose birthday is today (in their zone)


def seed_members(sessions, program, count: int, now: datetime, rng: random.Random, *,
                 leap_rule: str = "feb28") -> Seeded:
    """Upsert ``count`` demo members and their orders; says how many of each story there are."""
    stories: Counter = Counter()
    birthdays: list[str] = []
    with transaction(sessions) as session:
        existing = {m.external_id: m for m in session.scalars(select(Member).where(Member.external_id.like("DEMO%")))}
        known_orders = set(session.scalars(select(Order.order_id).where(Order.order_id.like("DEMO%"))))
        for index in range(count):
            external_id = f"DEMO{index + 1:04d}"
            zone_name, locale = ZONES[index % len(ZONES)]
            story = _story(rng)
            stories[story] += 1
            local_today = calendar.local_datetime(now, zone_name).date()
            if story == "birthday":  # today, in their zone; born on Feb 29 only on a day that celebrates it
                leap_born = rng.random() <= 0.1 and (2, 29) in calendar.celebrated_birthdays(local_today, leap_rule)
                birthday = local_today.replace(year=2000, month=2, day=29) if leap_born else local_today
                birthdays.append(external_id)
            else:
                birthday = local_today - timedelta(days=rng.randint(1, 360))
            joined = now - timedelta(days=rng.randint(400, 2000))
            member = existing.get(external_id) or Member(external_id=external_id, tier="bronze")
            first = FIRST_NAMES[index % len(FIRST_NAMES)]
            last = LAST_NAMES[(index // len(FIRST_NAMES)) % len(LAST_NAMES)]
            member.email, member.email_status = f"{first.lower()}.{last.lower()}.{index + 1}@demo.example", ContactStatus.OK
            member.phone, member.phone_status = f"+3361{index:07d}", ContactStatus.OK
            member.first_name, member.last_name = first, last
            member.locale, member.timezone = locale, zone_name
            member.birth_year = None if rng.random() < 0.3 else 1970 + index % 35
            member.birth_month, member.birth_day = birthday.month, birthday.day
            if (member.birth_month, member.birth_day) == (2, 29):
                member.birth_year = 2000
            member.birthday_updated_at = now - timedelta(days=rng.randint(2, 20)) if rng.random() < 0.06 else joined
            member.email_opt_in = rng.random() > 0.12
            member.sms_opt_in = rng.random() > 0.4
            member.email_consent_at = member.sms_consent_at = joined
            member.email_consent_source = member.sms_consent_source = "demo:signup"
            member.joined_at = joined
            if external_id not in existing:
                session.add(member)
                session.flush()
            for order_id, placed_at, total in _orders_for(story, external_id, now, rng):
                if order_id not in known_orders:
                    session.add(Order(order_id=order_id, member_id=member.id, placed_at=placed_at,
                                      total=Decimal(total), currency="EUR"))
        session.flush()
        while apply_pending_orders(session, program, now=now):
            pass
    return Seeded(stories, birthdays)


def run_tick_through_queue(runtime, at: datetime) -> None:
    """Enqueue today's tick on the in-process broker and let an in-process worker do the work."""
    from workers.actors import evaluate_campaign, maintain_points
    from workers.broker import build_broker, install_broker

    broker = install_broker(build_broker(runtime.settings))
    worker = Worker(broker, worker_threads=1)  # SQLite: one writer at a time
    worker.start()
    try:
        maintain_points.send()
        join_queue(broker.queues["campaigns"])
        for campaign in runtime.campaigns.enabled:
            evaluate_campaign.send(campaign.id, iso_utc(at))
        join_queue(broker.queues["campaigns"])
        # Not the delay queue: an SMS deferred past the member's quiet hours waits there for hours.
        join_queue(broker.queues["deliveries"])
    finally:
        worker.stop()
        dramatiq.set_broker(broker)


def run_demo(settings: Settings, console: Console, *, member_count: int = 240, now: datetime | None = None) -> None:
    if not settings.embedded or settings.redis_url:
        raise InputError("The demo runs only on the embedded default; unset DATABASE_URL and REDIS_URL to run it.")
    from workers.runtime import build_runtime, set_runtime

    runtime = build_runtime(settings)
    set_runtime(runtime)
    now = (now or utcnow()).replace(microsecond=0)  # the queue carries instants to the second
    console.print(f"[bold]Loyalty demo[/] on the embedded default: {settings.database_url.split('///')[-1]}")
    from campaigns.birthday import BirthdayCampaign

    birthday = runtime.campaigns.campaigns.get("birthday")
    seeded = seed_members(runtime.sessions, runtime.program, member_count, now, random.Random(42),
                          leap_rule=birthday.birthday.leap_day_in_common_years
                          if isinstance(birthday, BirthdayCampaign) else "feb28")
    console.print(f"Seeded {member_count} members in {len(ZONES)} time zones (English and French): "
                  + ", ".join(f"{n} {story.replace('_', ' ')}" for story, n in sorted(seeded.stories.items())) + ".")
    for problem in [*map(str, runtime.campaigns.errors), *runtime.refusals().values()]:
        console.print(f"[yellow]warning:[/] skipping a broken campaign: {problem}", highlight=False)

    with runtime.sessions() as session:
        last_before = session.scalar(select(func.max(Delivery.id))) or 0  # what this run adds comes after
    run_tick_through_queue(runtime, now)
    show_today(runtime, console, now, since_id=last_before, birthdays=seeded.birthdays)


def _idle(runtime, campaign_id: str, now: datetime) -> str:
    campaign = runtime.campaigns.campaigns[campaign_id]
    if campaign.kind == "member_day":
        from dateutil.rrule import rrulestr

        upcoming = rrulestr(campaign.member_day.rrule, dtstart=datetime(2000, 1, 1)).after(now.replace(tzinfo=None))
        return f"not a member day; the next is {upcoming:%A %Y-%m-%d}"
    return "nobody due today"


def show_today(runtime, console: Console, now: datetime, *, since_id: int = 0,
               birthdays: Sequence[str] = ()) -> None:
    """What this run's tick did (deliveries after ``since_id``), what earlier runs had already sent
    today, where the messages went, every birthday member's outcome, and how to go on."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(Delivery, Member)
            .join(Member, Member.id == Delivery.member_id)
            .where(Member.external_id.like("DEMO%"), Delivery.planned_at.between(now - timedelta(days=1), now))
            .order_by(Delivery.campaign, Delivery.state, Member.external_id)
        ).all()
    new = [(d, m) for d, m in rows if d.id > since_id]
    earlier = [(d, m) for d, m in rows if d.id <= since_id]
    if new:
        _summary(runtime, console, now, new)
        _samples(console, now, new)
    already = [d for d, _ in earlier if d.state == DeliveryState.SENT]
    if already:
        by_campaign = Counter(d.campaign for d in already)
        first, last = min(d.finished_at or d.send_at for d in already), max(d.finished_at or d.send_at for d in already)
        when = _day_and_time(first) + ("" if last - first < timedelta(minutes=1) else f" to {_day_and_time(last)}")
        console.print(f"{'Nothing new: ' if not new else 'Already sent by an earlier run: '}{len(already)} message(s) "
                      f"already sent on {when} (from the send ledger: "
                      + ", ".join(f"{n} {c}" for c, n in sorted(by_campaign.items())) + "); none was sent again.")
    elif not new:
        console.print("Nothing is due today, and nothing was sent today by an earlier run.")
    _birthdays_accounted(runtime, console, now, birthdays)
    _where_it_went(runtime, console, [d for d, _ in rows if d.state == DeliveryState.SENT])
    gifted = next((m.external_id for d, m in rows if d.campaign == "birthday" and d.state == DeliveryState.SENT), None)
    run = cli_command()
    console.print(f"Next: {run} preview winback --at {iso_utc(now)}   |   {run} validate"
                  + (f"   |   {run} history --member {gifted}" if gifted else ""), highlight=False, soft_wrap=True)
    if run != "loyalty":
        console.print(f"(`loyalty` is not on your PATH: run it as {run}, or `. {Path(run).parent}/activate` first.)",
                      highlight=False, soft_wrap=True)


def _day_and_time(at: datetime) -> str:
    return f"{at:%Y-%m-%d} at {at:%H:%M} UTC"


def _summary(runtime, console: Console, now: datetime, rows: list) -> None:
    summary = Table(title=f"Today's tick at {iso_utc(now)}, per campaign")
    channels = {"email": "by email", "sms": "by SMS"}
    if any(d.channel == "mailchimp" for d, _ in rows):  # with --providers, a journey event on Mailchimp
        channels["mailchimp"] = "by Mailchimp"
    for column in ("campaign", "sent", *channels.values(), "waiting", "held out", "not sent (reason)"):
        summary.add_column(column, justify="left" if column in ("campaign", "not sent (reason)") else "right")
    for campaign in sorted(runtime.campaigns.campaigns):
        mine = [(d, m) for d, m in rows if d.campaign == campaign]
        sent = [d for d, _ in mine if d.state == DeliveryState.SENT]
        waiting = sum(d.state == DeliveryState.PLANNED for d, _ in mine)  # SMS after quiet hours, retries
        reasons = Counter(d.reason for d, _ in mine
                          if d.state not in (DeliveryState.SENT, DeliveryState.HELD_OUT, DeliveryState.PLANNED))
        summary.add_row(
            campaign, str(len(sent)), *(str(sum(d.channel == channel for d in sent)) for channel in channels),
            str(waiting), str(sum(d.state == DeliveryState.HELD_OUT for d, _ in mine)),
            ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) or ("-" if mine else _idle(runtime, campaign, now)),
        )
    console.print(summary)


def _samples(console: Console, now: datetime, rows: list) -> None:
    sample = Table(title="A few of the messages sent")
    for column in ("campaign", "member", "tier", "local time", "locale", "channel", "detail"):
        sample.add_column(column)
    shown: Counter[str] = Counter()
    for delivery, member in rows:
        if delivery.state != DeliveryState.SENT or shown[delivery.campaign] >= 2 or sum(shown.values()) >= SHOWN_ROWS:
            continue
        shown[delivery.campaign] += 1
        local = calendar.local_datetime(now, member.timezone)
        detail = (f"{delivery.reward_points} points" if delivery.reward_points
                  else delivery.coupon_code or delivery.occurrence_key.split(":", 2)[-1])
        sample.add_row(delivery.campaign, member.external_id, member.tier, f"{local:%H:%M}", member.locale,
                       delivery.channel, detail)
    if sample.row_count:
        console.print(sample)


def birthday_outcomes(runtime, now: datetime, birthdays: Sequence[str]) -> Counter:
    """What became of each member whose birthday is today: the state (and reason) of this year's
    gift in the send ledger, or why there is none (not yet the send time in their zone)."""
    campaign = runtime.campaigns.campaigns.get("birthday")
    outcomes: Counter = Counter()
    if campaign is None or not campaign.enabled:
        outcomes["not sent (the birthday campaign is off)"] += len(birthdays)
        return outcomes
    with runtime.sessions() as session:
        zones = dict(session.execute(select(Member.external_id, Member.timezone)
                                     .where(Member.external_id.in_(birthdays))).all())
        keys = {external_id: f"{campaign.id}:{external_id}:{calendar.local_datetime(now, zones[external_id]).year}"
                for external_id in birthdays}
        gifts = {d.occurrence_key: d for d in session.scalars(select(Delivery)
                                                               .where(Delivery.occurrence_key.in_(keys.values())))}
    for external_id in birthdays:
        gift = gifts.get(keys[external_id])
        if gift is not None:
            state = {DeliveryState.PLANNED: "waiting", DeliveryState.HELD_OUT: "held out"}.get(gift.state, gift.state)
            outcomes[f"{state} ({gift.reason})" if gift.reason and gift.state != DeliveryState.HELD_OUT else state] += 1
        elif calendar.local_datetime(now, zones[external_id]).time() < campaign.send_time:
            outcomes[f"not due yet (before {campaign.send_time:%H:%M} in their zone)"] += 1
        else:
            outcomes["not planned"] += 1
    return outcomes


def _birthdays_accounted(runtime, console: Console, now: datetime, birthdays: Sequence[str]) -> None:
    if not birthdays:
        return
    outcomes = birthday_outcomes(runtime, now, birthdays)
    console.print(f"Birthdays today: {len(birthdays)} member(s): "
                  + ", ".join(f"{n} {what}" for what, n in outcomes.most_common()) + ".", highlight=False, soft_wrap=True)


def _where_it_went(runtime, console: Console, sent: list) -> None:
    """Where the messages sent today really are: the outbox folder, or the provider that took them."""
    settings = runtime.settings
    counts = Counter(d.channel for d in sent)
    places = []
    if counts["email"]:
        place = f"in {settings.outbox_dir / 'email'} (one .eml each)" if settings.smtp is None else "through SMTP"
        places.append(f"{counts['email']} email(s) {place}")
    if counts["sms"]:
        place = (f"in {settings.outbox_dir / 'sms'} (one .json each)" if settings.twilio is None
                 else f"to Twilio at {settings.twilio.api_base_url}")
        places.append(f"{counts['sms']} SMS {place}")
    if counts["mailchimp"]:
        place = (f"in {settings.outbox_dir / 'mailchimp'}" if settings.mailchimp is None
                 else f"to Mailchimp at {settings.mailchimp.api_base_url}")
        places.append(f"{counts['mailchimp']} Mailchimp step(s) {place}")
    if places:
        console.print("Sent today: " + "; ".join(places) + ".", highlight=False, soft_wrap=True)


def cli_command() -> str:
    """How to run the CLI from this shell: ``loyalty`` when it is on the PATH, else its path
    (``.venv/bin/loyalty`` after ``make demo``)."""
    script = Path(sys.argv[0]) if Path(sys.argv[0]).name == "loyalty" else Path(sys.executable).with_name("loyalty")
    if not script.exists():
        return f"{sys.executable} -m loyalty"
    on_path = shutil.which("loyalty")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "loyalty"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script.absolute())
