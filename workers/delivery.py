"""Delivering planned sends: compose a few at a time, then claim, send and record each.

A batch is worked through in chunks of :data:`PREPARE_CHUNK`. For a chunk, one read-only session
loads the deliveries, their members and their balances (a few queries, not a few per message), and
:func:`workers.compose.compose` makes each a message or a typed skip (re-check and render, no
writes). Then each message, one at a time (the writes are :mod:`workers.record`'s):

1. **claim**: ``planned → sending`` in one conditional UPDATE, committed before anything goes out;
   whoever wins the claim is the only one to send it. A killed worker leaves at most the message
   it was sending in ``sending`` (the sweeper later marks it ``unknown``), never a batch of
   untouched rows: nothing is claimed ahead of its send.
2. **coupon**: a message carrying a coupon has its code recorded and, with a shop configured, made
   in the shop (``workers/coupons.py``); a shop that refuses or does not answer puts the message
   back for later like a provider error (``coupon_not_created``), so no message carries a code the
   shop does not know;
3. **send** through the channel;
4. **record** the outcome and the reward in one transaction, guarded by ``state = 'sending'``; the
   reward's ledger key is derived from the occurrence, so it is granted once whatever happens.

The claims and results of a batch go through one database connection (one pool check-out, one
liveness ping; :mod:`workers.delivery_link`): on PostgreSQL a message costs one statement and one
commit: its claim carries the previous message's outcome (with its reward); the batch's last
outcome is committed alone.

Two rules across campaigns are enforced at the claim:

- **quiet hours** for SMS: a message due inside the member's night goes back to ``planned`` for
  the end of it (deferred, never dropped);
- **the frequency cap**: the member's row is locked while their recent marketing messages are
  counted, so two campaigns claiming at once cannot both pass a cap of one more.

A message that ends before its send (skipped by a re-check, a template error) is recorded straight
from ``planned``, guarded by that state, so a row another worker has claimed meanwhile is left alone.
A message of a campaign that may send nothing (:meth:`workers.runtime.Runtime.refusal`: a marketing
email while the brand has no postal address) is neither composed nor written: it stays ``planned``,
the batch says why in one log line (``delivery.kept_planned``), and the sweeper offers it again until the
campaign is fixed.
"""

from __future__ import annotations

import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import bindparam, func, select

from campaigns.template_fields import member_fields
from models.base import utcnow
from models.delivery import Delivery, DeliveryState, Reason
from models.member import Member
from models.points import PointEntry
from workers.channels.base import AmbiguousFailure, PermanentFailure, RetryableFailure
from workers.channels.mailchimp_fields import merge_fields
from workers.compose import Message, Skip, compose
from workers.coupons import create_in_shop
from workers.delivery_link import Link
from workers.record import DeliveryReport, claim, end_unclaimed, finish, retry_delay, retry_later, where
from workers.runtime import Runtime
from workers.shop_api.discounts import NotShopCustomer, shop_for

__all__ = ["PREPARE_CHUNK", "DeliveryReport", "deliver", "retry_delay"]

log = structlog.get_logger("loyalty.delivery")

#: Messages read, re-checked and rendered together. Small, so that what a re-check saw is at most
#: a few seconds old when the message is claimed and sent.
PREPARE_CHUNK = 20

SHOP_DISCOUNTS = "shop:discounts"  # the shop's discount client, kept with the batch's channels


@dataclass(slots=True)
class _Planned:
    """A planned delivery as read for its send (a :class:`campaigns.send_views.DeliveryView`)."""

    id: int
    occurrence_key: str
    campaign: str
    member_id: int
    channel: str | None
    reward_points: int | None
    occurrence_date: str | None
    payload: dict[str, Any] | None
    variant: str | None
    attempts: int

    @property
    def stands_for(self) -> str:
        """As :attr:`models.delivery.Delivery.stands_for`: a support resend's original occurrence, else its own."""
        return (self.payload or {}).get("resend_of") or self.occurrence_key


@dataclass(slots=True)
class _Recipient:
    """A member as read for a chunk's messages (a :class:`campaigns.send_views.MemberView`): the
    personal fields no message of the chunk needs are None, never read nor decrypted."""

    id: int
    external_id: str
    email_status: str
    phone_status: str
    email_opt_in: bool
    sms_opt_in: bool
    mailchimp_status: str | None
    locale: str
    timezone: str
    tier: str
    birth_month: int | None
    birth_day: int | None
    birthday_updated_at: datetime | None
    last_order_local_date: str | None
    balance: int
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(slots=True)
class _Item:
    """One due delivery of a chunk and what :func:`workers.compose.compose` made of it."""

    delivery: _Planned
    member: _Recipient
    composed: Message | Skip


def deliver(runtime: Runtime, delivery_ids: list[int], *, as_of: datetime | None = None,
            stopping: Callable[[], bool] = lambda: False) -> DeliveryReport:
    """Deliver the given planned deliveries that are due at ``as_of`` (now by default).

    When ``stopping()`` turns true, the ids not started yet are left untouched and listed in
    ``report.unstarted`` (the actor enqueues them again)."""
    report = DeliveryReport()
    channels: dict[str, Any] = {}
    link = Link(runtime.engine)
    try:
        for start in range(0, len(delivery_ids), PREPARE_CHUNK):
            if stopping():
                report.unstarted.extend(delivery_ids[start:])
                break
            instant = as_of or utcnow()
            items = _compose_chunk(runtime, delivery_ids[start:start + PREPARE_CHUNK], instant, report)
            for position, item in enumerate(items):
                if stopping():  # nothing of these was written: they are still planned
                    report.unstarted.extend(i.delivery.id for i in items[position:])
                    report.unstarted.extend(delivery_ids[start + PREPARE_CHUNK:])
                    return report
                if isinstance(item.composed, Skip):
                    end_unclaimed(link, item.delivery, item.composed, report)
                elif claim(runtime, link, item.delivery, item.member, instant, report):
                    _send(runtime, link, item.delivery, item.composed, instant, channels, report)
    finally:
        link.drop()
        for channel in channels.values():
            channel.close()
        for campaign, count in sorted(report.kept_planned.items()):
            log.error("delivery.kept_planned", campaign=campaign, deliveries=count, problem=runtime.refusal(campaign))
    return report


_DELIVERIES = Delivery.__table__
_MEMBERS = Member.__table__
_POINTS = PointEntry.__table__
#: What the sender reads of a delivery: its state and due time (is it still to send now?) and
#: what composing, claiming and recording read (``_Planned``).
_READ_DELIVERIES = (
    select(_DELIVERIES.c.state, _DELIVERIES.c.send_at, *(_DELIVERIES.c[f] for f in _Planned.__slots__))
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True))).order_by(_DELIVERIES.c.id)
)
_PERSONAL = ("email", "phone", "first_name", "last_name")  # encrypted at rest (models/personal_data.py)
_PLAIN = tuple(f for f in _Recipient.__slots__ if f not in _PERSONAL and f != "balance")
_read_members: dict[frozenset[str], Any] = {}  # the personal fields left out -> the statement


def _members_statement(unread: frozenset[str]) -> Any:
    """The chunk's members: the plain columns, the personal ones a message needs (decrypted by
    their column type), and the points balance (the sum of the member's ledger entries)."""
    statement = _read_members.get(unread)
    if statement is None:
        balance = (select(func.coalesce(func.sum(_POINTS.c.points), 0))
                   .where(_POINTS.c.member_id == _MEMBERS.c.id).scalar_subquery().label("balance"))
        personal = [f for f in _PERSONAL if f not in unread]
        statement = _read_members[unread] = (
            select(*(_MEMBERS.c[f] for f in (*_PLAIN, *personal)), balance)
            .where(_MEMBERS.c.id.in_(bindparam("ids", expanding=True)))
        )
    return statement


def _compose_chunk(runtime: Runtime, ids: list[int], as_of: datetime, report: DeliveryReport) -> list[_Item]:
    """The chunk's due deliveries, each composed (a message, or a skip), in id order.

    Read as plain rows (two SELECTs through the session's connection, no ORM objects): the
    deliveries, then their members with their balances."""
    with runtime.sessions() as session:  # read-only; closed (connection released) before any send
        connection = session.connection()
        due: list[_Planned] = []
        for row in connection.execute(_READ_DELIVERIES, {"ids": ids}):
            if row.state != DeliveryState.PLANNED:
                continue  # someone else has it, or it is already final: nothing to do
            if row.send_at > as_of:
                report.later[row.id] = row.send_at
                continue
            planned = _Planned(*row[2:])
            if _refused(runtime, planned.campaign):  # left planned, untouched: it goes once the campaign is fixed
                report.kept_planned[planned.campaign] += 1
                continue
            due.append(planned)
        if not due:
            return []
        unread = _unread_member_fields(runtime, due)
        members = {row.id: _Recipient(**row._mapping) for row in connection.execute(
            _members_statement(unread), {"ids": sorted({d.member_id for d in due})})}
        on_mailchimp = [members[d.member_id] for d in due if d.channel == "mailchimp"]
        fields = merge_fields(session, on_mailchimp, as_of) if on_mailchimp else {}
        campaigns = runtime.campaigns.campaigns
        items = []
        for delivery in due:
            member = members[delivery.member_id]
            items.append(_Item(delivery, member, compose(
                runtime, session, campaigns.get(delivery.campaign), member, delivery, as_of,
                balance=member.balance, merge_fields=fields)))
        return items


def _refused(runtime: Runtime, campaign_id: str) -> bool:
    """An enabled campaign that may send nothing (``Runtime.refusal``: a marketing email without the
    brand's postal address); a disabled one ends ``skipped: campaign_disabled`` as before."""
    campaign = runtime.campaigns.campaigns.get(campaign_id)
    return campaign is not None and campaign.enabled and runtime.refusal(campaign_id) is not None


NAMES = frozenset({"first_name", "last_name"})
_names_used: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # renderer -> {(campaign, channel): names}


def _unread_member_fields(runtime: Runtime, due: list[_Planned]) -> frozenset[str]:
    """The personal fields (encrypted at rest) the chunk's messages do not need: the phone without
    an SMS, the email without an email or Mailchimp message, the names when no template of the
    chunk's campaigns and channels can reach them (``campaigns.template_fields``)."""
    channels = {d.channel for d in due}
    unread = set()
    if "sms" not in channels:
        unread.add("phone")
    if not channels & {"email", "mailchimp"}:
        unread.add("email")
    used: set[str] = set()
    for campaign_id, channel in {(d.campaign, d.channel) for d in due}:
        used |= _names_used_by(runtime, campaign_id, channel)
    return frozenset(unread | (NAMES - used))


def _names_used_by(runtime: Runtime, campaign_id: str, channel: str | None) -> frozenset[str]:
    """The names the campaign's templates on that channel (every locale) may read; both when it
    cannot be told (Mailchimp's merge fields, an A/B experiment's templates)."""
    cache = _names_used.setdefault(runtime.renderer, {})
    known = cache.get((campaign_id, channel))
    if known is None:
        known = cache[(campaign_id, channel)] = _templates_names(runtime, campaign_id, channel)
    return known


def _templates_names(runtime: Runtime, campaign_id: str, channel: str | None) -> frozenset[str]:
    campaign = runtime.campaigns.campaigns.get(campaign_id)
    if campaign is None or getattr(campaign, "experiment", None) is not None:
        return NAMES
    messages = campaign.messages
    if channel == "email" and messages.email is not None:
        names = [f"{locale}/{path}" for locale in campaign.locales for path in (messages.email.text, messages.email.html)]
        sources = list(messages.email.subject.values())
    elif channel == "sms" and messages.sms is not None:
        names, sources = [f"{locale}/{messages.sms.text}" for locale in campaign.locales], []
    else:
        return NAMES
    fields = member_fields(runtime.renderer.env, names, sources)
    return NAMES if fields is None else NAMES & fields


def _send(runtime: Runtime, link: Link, delivery: _Planned, message: Message, as_of: datetime,
          channels: dict[str, Any], report: DeliveryReport) -> None:
    """A claimed message: its coupon made in the shop, then sent; its outcome recorded."""
    channel = channels.get(message.channel) or channels.setdefault(message.channel, runtime.channel(message.channel))
    if message.offer is not None:  # the shop knows the code before any message carries it
        problem = create_in_shop(runtime.sessions, _discount_shop(runtime, channels),
                                 replace(message.offer, delivery_id=delivery.id), as_of)
        if isinstance(problem, NotShopCustomer):  # asking again will not help
            finish(link, runtime, delivery, DeliveryState.FAILED, Reason.COUPON_NOT_CREATED, str(problem), as_of, report)
            return
        if problem is not None:
            retry_later(link, runtime, delivery, RetryableFailure(Reason.COUPON_NOT_CREATED, str(problem)), as_of, report)
            return
    try:
        provider_id = channel.send(message.outgoing)
    except PermanentFailure as exc:
        finish(link, runtime, delivery, DeliveryState.FAILED, exc.reason, exc.detail, as_of, report, failure=exc)
    except AmbiguousFailure as exc:
        finish(link, runtime, delivery, DeliveryState.UNKNOWN, exc.reason, exc.detail, as_of, report)
    except RetryableFailure as exc:
        retry_later(link, runtime, delivery, exc, as_of, report)
    except Exception as exc:  # noqa: BLE001 (a fault of ours inside the channel: whether it went out is not known)
        # That message ends as unknown (never re-sent blindly); the others of the batch still go.
        log.error("delivery.send_crashed", delivery_id=delivery.id, campaign=delivery.campaign,
                  channel=delivery.channel, error=type(exc).__name__,
                  stack=[f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)])
        finish(link, runtime, delivery, DeliveryState.UNKNOWN, Reason.SEND_CRASHED, where(exc), as_of, report)
    else:
        finish(link, runtime, delivery, DeliveryState.SENT, None, None, as_of, report,
               provider_id=provider_id, coupon_code=message.coupon_code)


class _NoShop:
    def close(self) -> None:
        pass


def _discount_shop(runtime: Runtime, channels: dict[str, Any]) -> Any:
    """The configured shop's discount client, one per batch (closed with the channels); None without a shop."""
    shop = channels.get(SHOP_DISCOUNTS)
    if shop is None:
        settings = runtime.settings.shop
        shop = channels[SHOP_DISCOUNTS] = shop_for(settings, settings.mapping.default_timezone) or _NoShop()
    return None if isinstance(shop, _NoShop) else shop
