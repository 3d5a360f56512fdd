"""Everything a process needs to do work, built once from the settings.

Actors receive ids and plain values; they find the database, the campaigns and the channels
here. Tests install a runtime of their own with :func:`set_runtime`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from campaigns.brand import lacks_postal_address
from campaigns.loader import CampaignSet, load_campaigns
from campaigns.program import Program, load_program
from campaigns.rendering import Renderer
from campaigns.validation import check_postal_address
from core.settings import Settings, get_settings
from models.db import engine_for, make_sessionmaker, migrate
from workers.channels.email import SmtpEmailChannel, return_path_for
from workers.channels.outbox import OutboxEmailChannel, OutboxMailchimpChannel, OutboxSmsChannel
from workers.rate_limit import (
    ConnectionSlots,
    LocalConnectionSlots,
    LocalRateLimiter,
    RateLimiter,
    RedisConnectionSlots,
    RedisRateLimiter,
    mailchimp_slots_key,
    twilio_rate_key,
)

if TYPE_CHECKING:
    from workers.channels.base import Channel
    from workers.channels.mailchimp import MailchimpChannel
    from workers.channels.sms import TwilioApi, TwilioSmsChannel

#: Where Twilio posts message status changes (served by ``loyalty/web.py``).
TWILIO_STATUS_PATH = "/twilio/status"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    campaigns: CampaignSet
    program: Program
    renderer: Renderer
    _sms_limiter: RateLimiter | None = field(default=None, repr=False)
    _mailchimp_slots: ConnectionSlots | None = field(default=None, repr=False)
    _twilio_api: TwilioApi | None = field(default=None, repr=False)
    _limiter_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _refusals: dict[str, str] = field(default_factory=dict, repr=False)  # campaign id -> its sentence

    def refusal(self, campaign_id: str) -> str | None:
        """Why nothing of campaign ``campaign_id`` may be sent, as ``loyalty validate`` says it (a
        marketing email while the brand has no postal address: :func:`campaigns.brand.lacks_postal_address`),
        or None. Such a campaign is not planned, its planned deliveries stay planned, and a support
        send of it is refused with this sentence."""
        campaign = self.campaigns.campaigns.get(campaign_id)
        if campaign is None or not lacks_postal_address(campaign, self.program.brand):
            return None
        sentence = self._refusals.get(campaign_id)
        if sentence is None:  # the definition's line is read once
            path = self.campaigns.paths.get(campaign_id, self.settings.campaigns_dir / f"{campaign_id}.yaml")
            problems = check_postal_address(campaign, path, self.program, self.settings.program_file)
            sentence = self._refusals[campaign_id] = problems[0]
        return sentence

    def refusals(self) -> dict[str, str]:
        """Every loaded campaign that may send nothing (:meth:`refusal`), with its sentence."""
        return {c: sentence for c in sorted(self.campaigns.campaigns) if (sentence := self.refusal(c)) is not None}

    def email_channel(self) -> SmtpEmailChannel | OutboxEmailChannel:
        if self.settings.smtp is not None:
            return SmtpEmailChannel(self.settings.smtp, self.settings.email_from,
                                    return_path=return_path_for(self.settings))
        return OutboxEmailChannel(self.settings.outbox_dir / "email", return_path=return_path_for(self.settings))

    def sms_channel(self) -> TwilioSmsChannel | OutboxSmsChannel:
        twilio = self.settings.twilio
        if twilio is None:
            return OutboxSmsChannel(self.settings.outbox_dir / "sms")
        from workers.channels.sms import TwilioSmsChannel

        return TwilioSmsChannel(twilio, self.sms_limiter(),
                                status_callback_url=self.settings.public_base_url + TWILIO_STATUS_PATH,
                                api=self.twilio_api())

    def twilio_api(self) -> TwilioApi | None:
        """The SDK's client for the configured account, one per process: its connections are shared
        by the threads and kept from one delivery batch to the next (None without Twilio)."""
        twilio = self.settings.twilio
        if twilio is None:
            return None
        with self._limiter_lock:
            if self._twilio_api is None:
                from workers.channels.sms import TwilioApi

                self._twilio_api = TwilioApi(twilio)
            return self._twilio_api

    def sms_limiter(self) -> RateLimiter:
        """Twilio's pace: one per process, shared by its threads; on Redis, by every process and dyno."""
        twilio = self.settings.twilio
        rate = twilio.max_messages_per_second if twilio else 10.0
        key = twilio_rate_key(twilio.account_sid if twilio else "outbox")
        return self._shared("_sms_limiter", lambda client: RedisRateLimiter(client, key, rate),
                            lambda: LocalRateLimiter(rate))

    def mailchimp_channel(self) -> MailchimpChannel | OutboxMailchimpChannel:
        if self.settings.mailchimp is None:
            return OutboxMailchimpChannel(self.settings.outbox_dir / "mailchimp")
        from workers.channels.mailchimp import MailchimpChannel

        return MailchimpChannel(self.settings.mailchimp, self.mailchimp_slots())

    def mailchimp_slots(self) -> ConnectionSlots:
        """Mailchimp's simultaneous connections per API key, shared by the deliveries and the sync:
        one set per process; on Redis, shared by every process and dyno."""
        mailchimp = self.settings.mailchimp
        limit = mailchimp.max_connections if mailchimp else 10
        key = mailchimp_slots_key(mailchimp.api_key if mailchimp else "outbox")
        return self._shared("_mailchimp_slots", lambda client: RedisConnectionSlots(client, key, limit),
                            lambda: LocalConnectionSlots(limit))

    def _shared(self, attribute: str, on_redis: Callable[[Any], Any], in_process: Callable[[], Any]) -> Any:
        """The object kept in ``attribute``, made once: ``on_redis(client)`` when there is a Redis,
        ``in_process()`` otherwise (the embedded default)."""
        with self._limiter_lock:
            if getattr(self, attribute) is None:
                if self.settings.redis_url:
                    from workers.broker import redis_client

                    setattr(self, attribute, on_redis(redis_client(self.settings.redis_url)))
                else:
                    setattr(self, attribute, in_process())
            return getattr(self, attribute)

    def channel(self, name: str) -> Channel[Any]:
        """A new channel object (each delivery batch keeps its own, so threads share nothing but
        the SMS rate limiter, the Twilio client's connections and the Mailchimp connection slots)."""
        if name == "email":
            return self.email_channel()
        if name == "sms":
            return self.sms_channel()
        if name == "mailchimp":
            return self.mailchimp_channel()
        raise LookupError(f"no channel named {name!r} is configured")

    def close(self) -> None:
        if self._twilio_api is not None:
            self._twilio_api.close()
        if isinstance(self._sms_limiter, RedisRateLimiter):
            self._sms_limiter.client.close()
        if isinstance(self._mailchimp_slots, RedisConnectionSlots):
            self._mailchimp_slots.client.close()
        self.engine.dispose()


def build_runtime(settings: Settings, *, pool_size: int = 5, check_keys: bool = True) -> Runtime:
    engine = engine_for(settings, pool_size=pool_size, check_keys=check_keys)
    if settings.embedded:
        migrate(engine)  # on the embedded default, any command creates or migrates the database
    program = load_program(settings.program_file)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        campaigns=load_campaigns(settings.campaigns_dir),
        program=program,
        renderer=Renderer(settings.templates_dir, program),  # the brand and tier names come from the program
    )


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(get_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _lock:
        _runtime = runtime
