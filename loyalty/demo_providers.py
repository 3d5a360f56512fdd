"""``loyalty demo --providers``: the demo with local Twilio and Mailchimp servers instead of the outbox.

Both servers (``loyalty/standins/twilio_server.py`` and ``mailchimp_server.py``, the ones the tests
use) run inside the demo process on free ports; the runtime is pointed at them exactly as
``TWILIO_API_BASE_URL`` and ``MAILCHIMP_API_BASE_URL`` would, through the real SDKs. The shipped
campaigns are used as they are, except that the tier-upgrade notice goes out as a Mailchimp event
(the trigger of a "welcome to your new tier" journey), falling back to email. After the tick, the
Mailchimp bulk sync runs. Emails still go to the outbox folder.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import yaml
from rich.console import Console

from core.settings import MailchimpTarget, Settings, TwilioTarget

JOURNEY_CAMPAIGN = "tier_upgrade"
JOURNEY_STEP = {"tags": ["tier-upgrade"], "event": "tier_upgrade",
                "properties": {"tier": "{{ tier.name }}", "first_name": "{{ member.first_name }}"}}
MERGE_FIELDS = {"TIER": "text", "POINTS": "number", "EXPPOINTS": "number", "EXPDATE": "date", "BDAY": "birthday",
                "LOCALE": "text"}


def demo_campaigns(settings: Settings) -> Path:
    """A copy of the definitions in which the tier-upgrade notice is a Mailchimp journey step."""
    target = settings.home / "demo-providers" / "campaigns"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(settings.campaigns_dir, target)
    path = target / f"{JOURNEY_CAMPAIGN}.yaml"
    if path.exists():
        definition = yaml.safe_load(path.read_text(encoding="utf-8"))
        definition["channels"] = ["mailchimp", *[c for c in definition["channels"] if c != "mailchimp"]]
        definition["messages"]["mailchimp"] = JOURNEY_STEP
        path.write_text(yaml.safe_dump(definition, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


def run_demo_with_providers(settings: Settings, console: Console, *, member_count: int, now: datetime | None) -> None:
    from loyalty.demo import run_demo
    from loyalty.standins.mailchimp_server import DEFAULT_API_KEY, MailchimpServer
    from loyalty.standins.twilio_server import TwilioServer
    from workers.mailchimp_sync import sync_members
    from workers.runtime import get_runtime

    twilio = TwilioServer().start()
    mailchimp = MailchimpServer(merge_fields=MERGE_FIELDS).start()
    try:
        settings = replace(
            settings,
            campaigns_dir=demo_campaigns(settings),
            twilio=TwilioTarget(twilio.account_sid, twilio.auth_token, next(iter(twilio.messaging_services)),
                                api_base_url=twilio.url, max_messages_per_second=50.0, timeout=5.0),
            mailchimp=MailchimpTarget(DEFAULT_API_KEY, DEFAULT_API_KEY.rpartition("-")[2], mailchimp.default_list_id,
                                      api_base_url=mailchimp.base_url, timeout=5.0),
        )
        console.print(f"Local Twilio at {twilio.url}, local Mailchimp at {mailchimp.base_url}; "
                      f"{JOURNEY_CAMPAIGN} is a Mailchimp journey step here.", highlight=False)
        run_demo(settings, console, member_count=member_count, now=now)
        report = sync_members(get_runtime(), retry_waits=(0.5, 1.0))
        members = mailchimp.members()
        events = mailchimp.events
        console.print(
            f"[bold]Twilio[/] accepted {len(twilio.accepted)} SMS through the Messaging Service "
            f"({twilio.calls['messages.create']} API calls).\n"
            f"[bold]Mailchimp[/]: {len(events)} journey event(s) ({', '.join(sorted({e.name for e in events})) or 'none'}), "
            f"{len(members)} member(s) in the audience after the bulk sync "
            f"({report.created} added, {report.updated} updated, in {report.calls} batch call(s)).",
            highlight=False,
        )
        for message in twilio.accepted[:3]:
            console.print(f"  SMS {message.sid}: {message.body}", highlight=False, markup=False)
    finally:
        twilio.stop()
        mailchimp.stop()
