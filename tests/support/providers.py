"""What the SMS, Mailchimp and web tests share: campaigns on the new channels, the environment
that points the product at the local provider servers, and a loop that delivers until nothing is
left to deliver (time moved on past each retry's delay)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from loyalty.standins.mailchimp_server import DEFAULT_API_KEY
from loyalty.standins.twilio_server import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_MESSAGING_SERVICE_SID
from models.delivery import Delivery, DeliveryState
from models.member import ContactStatus, Member
from tests.support.members import LONG_AGO

UTC = UTC
#: 14:00 in Paris on the default test birthday (June 15): inside the SMS send hours.
AT = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)

#: The audience's merge fields as the product sends them (MailchimpServer(merge_fields=...)).
MERGE_FIELDS = {"TIER": "text", "POINTS": "number", "EXPPOINTS": "number", "EXPDATE": "date", "BDAY": "birthday",
                "LOCALE": "text"}

SMS_CAMPAIGN = """\
id: sms_gift
kind: birthday
name: Birthday text
send_time: "09:00"
channels: [sms]
locales: [en]
frequency_cap_exempt: true
audience:
  tiers: [silver]
messages:
  sms:
    text: sms_gift/sms.txt.j2
    max_segments: {max_segments}
"""

JOURNEY_CAMPAIGN = """\
id: journey
kind: birthday
name: Birthday journey
send_time: "09:00"
channels: [mailchimp]
locales: [en]
frequency_cap_exempt: true
audience:
  tiers: [gold]
messages:
  mailchimp:
{tags}    event: birthday_gift
    properties:
      first_name: "{{{{ member.first_name }}}}"
      balance: "{{{{ member.points_balance | number }}}}"
"""


def write_campaigns(root: Path, *, sms_text: str = "Happy birthday {{ member.first_name }}! Reply STOP to opt out.",
                    max_segments: int = 2, tags: tuple[str, ...] = ("birthday",)) -> tuple[Path, Path]:
    """A definitions folder with ``sms_gift`` (silver members, SMS) and ``journey`` (gold, Mailchimp),
    and its templates folder."""
    campaigns, templates = root / "campaigns", root / "templates"
    campaigns.mkdir(parents=True, exist_ok=True)
    (templates / "en" / "sms_gift").mkdir(parents=True, exist_ok=True)
    (campaigns / "sms_gift.yaml").write_text(SMS_CAMPAIGN.format(max_segments=max_segments))
    tag_lines = f"    tags: [{', '.join(tags)}]\n" if tags else ""
    (campaigns / "journey.yaml").write_text(JOURNEY_CAMPAIGN.format(tags=tag_lines))
    (templates / "en" / "sms_gift" / "sms.txt.j2").write_text(sms_text)
    return campaigns, templates


def provider_env(env: dict, tmp_path: Path, *, twilio=None, mailchimp=None, **campaign_options) -> dict:
    """``env`` plus the campaigns above, and Twilio and/or Mailchimp pointed at the local servers."""
    campaigns, templates = write_campaigns(tmp_path, **campaign_options)
    out = {**env, "LOYALTY_CAMPAIGNS_DIR": str(campaigns), "LOYALTY_TEMPLATES_DIR": str(templates)}
    if twilio is not None:
        out.update({
            "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
            "TWILIO_MESSAGING_SERVICE_SID": DEFAULT_MESSAGING_SERVICE_SID, "TWILIO_API_BASE_URL": twilio.url,
            "TWILIO_TIMEOUT_SECONDS": "2", "TWILIO_MAX_MESSAGES_PER_SECOND": "1000",
        })
    if mailchimp is not None:
        out.update({
            "MAILCHIMP_API_KEY": DEFAULT_API_KEY, "MAILCHIMP_SERVER_PREFIX": DEFAULT_API_KEY.rpartition("-")[2],
            "MAILCHIMP_LIST_ID": mailchimp.default_list_id, "MAILCHIMP_API_BASE_URL": mailchimp.base_url,
            "MAILCHIMP_TIMEOUT_SECONDS": "2",
        })
    return out


def bulk_members(sessions, rows: list[dict]) -> None:
    """Insert many members at once (``make_member`` is one ORM object each: slow for thousands)."""
    defaults = {
        "locale": "en", "timezone": "Europe/Paris", "birth_month": 6, "birth_day": 15,
        "birthday_updated_at": LONG_AGO, "email_opt_in": True, "sms_opt_in": False, "tier": "bronze",
        "joined_at": LONG_AGO, "first_name": "Test", "last_name": "Member", "created_at": LONG_AGO,
        "updated_at": LONG_AGO, "phone": None, "email": None,
    }
    values = []
    for row in rows:
        value = {**defaults, **row}
        value.setdefault("email_status", ContactStatus.OK if value["email"] else ContactStatus.MISSING)
        value.setdefault("phone_status", ContactStatus.OK if value["phone"] else ContactStatus.MISSING)
        values.append(value)
    with sessions() as session, session.begin():
        for start in range(0, len(values), 2000):
            session.execute(insert(Member), values[start:start + 2000])


def deliver_until_done(runtime, at: datetime = AT, *, threads: int = 8, rounds: int = 12) -> datetime:
    """Plan every campaign at ``at``, then deliver with ``threads`` workers at once, moving time on
    past each retry's delay, until no delivery is planned any more. Returns the last instant."""
    from models.db import transaction
    from workers.delivery import deliver
    from workers.planning import plan_campaign, plan_context

    with runtime.sessions() as session:
        ctx = plan_context(session, runtime.campaigns, runtime.program, at)
    for campaign in runtime.campaigns.enabled:
        with transaction(runtime.sessions) as session:
            plan_campaign(session, campaign, ctx)
    as_of = at
    for _ in range(rounds):
        with runtime.sessions() as session:
            due = list(session.scalars(select(Delivery.id).where(
                Delivery.state == DeliveryState.PLANNED, Delivery.send_at <= as_of).order_by(Delivery.id)))
            left = session.scalar(select(func.min(Delivery.send_at)).where(Delivery.state == DeliveryState.PLANNED))
        if not due and left is None:
            return as_of
        if due:  # small batches, so that a thread held by time-outs does not hold the round back
            size = max(1, min(10, len(due) // (threads * 4)))  # a small round: a few deliveries a batch
            batches = [due[i:i + size] for i in range(0, len(due), size)]
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda ids, at=as_of: deliver(runtime, ids, as_of=at), batches))
        as_of = max(as_of + timedelta(minutes=16), left or as_of)
    raise AssertionError(f"deliveries still planned after {rounds} rounds")
