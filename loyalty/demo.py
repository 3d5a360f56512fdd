"""``loyalty demo``: the whole product on the embedded default, in one command.

Seeds a realistic member base (time zones around the world, English and French speakers, three
tiers, some without consent, some who changed their birthday last week, Feb 29 birthdays) with
stories that make every campaign kind due today: birthdays, points about to expire, lapsed
customers, fresh tier upgrades and, on a member day, the offer. Orders go through the real
earning rules. Then it runs today's tick through the in-process queue and worker, and shows what
was sent and why the others were not. Seeding is an upsert, so running it again sends nothing twice.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import dramatiq
from dramatiq import Worker
from dramatiq.common import join_queue
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from campaigns import calendar
from campaigns.calendar import iso_utc
from loyalty.errors import InputError
from loyalty.settings import Settings
from models.base import utcnow
from models.db import transaction
from models.delivery import Delivery, DeliveryState
from models.member import ContactStatus, Member
from models.order import Order
from models.program_ops import apply_pending_orders

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


def seed_members(sessions, program, count: int, now: datetime, rng: random.Random) -> Counter:
    """Upsert ``count`` demo members and their orders; returns how many of each story."""
    stories: Counter = Counter()
    with transaction(sessions) as session:
        existing = {m.external_id: m for m in session.scalars(select(Member).where(Member.external_id.like("DEMO%")))}
        known_orders = set(session.scalars(select(Order.order_id).where(Order.order_id.like("DEMO%"))))
        for index in range(count):
            external_id = f"DEMO{index + 1:04d}"
            zone_name, locale = ZONES[index % len(ZONES)]
            story = _story(rng)
            stories[story] += 1
            local_today = calendar.local_datetime(now, zone_name).date()
            if story == "birthday":
                birthday = local_today if rng.random() > 0.1 else local_today.replace(year=2000, month=2, day=29)
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
    return stories


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
    stories = seed_members(runtime.sessions, runtime.program, member_count, now, random.Random(42))
    console.print(f"Seeded {member_count} members in {len(ZONES)} time zones (English and French): "
                  + ", ".join(f"{n} {story.replace('_', ' ')}" for story, n in sorted(stories.items())) + ".")
    for problem in runtime.campaigns.errors:
        console.print(f"[yellow]warning:[/] skipping a broken campaign: {problem}", highlight=False)

    run_tick_through_queue(runtime, now)
    show_today(runtime, console, now)


def _idle(runtime, campaign_id: str, now: datetime) -> str:
    campaign = runtime.campaigns.campaigns[campaign_id]
    if campaign.kind == "member_day":
        from dateutil.rrule import rrulestr

        upcoming = rrulestr(campaign.member_day.rrule, dtstart=datetime(2000, 1, 1)).after(now.replace(tzinfo=None))
        return f"not a member day; the next is {upcoming:%A %Y-%m-%d}"
    return "nobody due today"


def show_today(runtime, console: Console, now: datetime) -> None:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Delivery, Member)
            .join(Member, Member.id == Delivery.member_id)
            .where(Member.external_id.like("DEMO%"), Delivery.planned_at >= now - timedelta(days=1))
            .order_by(Delivery.campaign, Delivery.state, Member.external_id)
        ).all()
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

    sample = Table(title="A few of the messages sent")
    for column in ("campaign", "member", "tier", "local time", "locale", "channel", "detail"):
        sample.add_column(column)
    shown = Counter()
    for delivery, member in rows:
        if delivery.state != DeliveryState.SENT or shown[delivery.campaign] >= 2 or sum(shown.values()) >= SHOWN_ROWS:
            continue
        shown[delivery.campaign] += 1
        local = calendar.local_datetime(now, member.timezone)
        detail = (f"{delivery.reward_points} points" if delivery.reward_points
                  else delivery.coupon_code or delivery.occurrence_key.split(":", 2)[-1])
        sample.add_row(delivery.campaign, member.external_id, member.tier, f"{local:%H:%M}", member.locale,
                       delivery.channel, detail)
    console.print(sample)
    console.print(f"Emails: {runtime.settings.outbox_dir / 'email'} (one .eml each); "
                  f"SMS: {runtime.settings.outbox_dir / 'sms'} (one .json each).")
    console.print(f"Try: loyalty preview winback --at {iso_utc(now)}   |   loyalty validate")
