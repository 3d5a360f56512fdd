"""The one shape every shop payload becomes: a :class:`ShopEvent`.

A platform module never writes anything: it says what a payload means (a member, an order, a refund,
a privacy request), with the fields of the matching ``loyalty import`` row as text, the key that makes
its delivery unique in the inbox, the resource it is about and the instant of the version it carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    MEMBER = "member"  # created or updated: the fields of `loyalty import members`
    MEMBER_DELETED = "member_deleted"  # the shop deleted the customer (not an erasure request)
    ORDER = "order"  # created or updated: the fields of `loyalty import orders`, with `state`
    ORDER_DELETED = "order_deleted"
    # refund_id, order_id, refunded_at, amount (merchandise refunded; empty: all), currency; tax (optional: the
    # taxes of that merchandise, in the amount when the order's prices include taxes, then taken off)
    REFUND = "refund"
    ERASE_MEMBER = "erase_member"  # a privacy request: erase the customer's personal data
    ERASE_SHOP = "erase_shop"  # the shop uninstalled us and asks for its data to go
    EXPORT_MEMBER = "export_member"  # a privacy request: everything held about the customer
    REDEMPTION = "redemption"  # points spent in the shop: the fields of `loyalty import points`


class OrderState(StrEnum):
    """A shop order's financial state, whatever the platform calls it."""

    PENDING = "pending"  # not paid yet: no points
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    VOIDED = "voided"  # authorisation dropped, payment failed: never paid


class InboxState(StrEnum):
    """What became of an event in the inbox (``models/inbox.py`` says what each state means); here, with
    no database around it, so the CLI lists the states without importing the models."""

    RECEIVED = "received"
    APPLIED = "applied"
    WAITING = "waiting"
    REJECTED = "rejected"


class PayloadProblem(ValueError):
    """A payload that cannot mean anything here; the message is one sentence, without personal data."""


@dataclass(frozen=True)
class ShopEvent:
    platform: str  # shopify, woocommerce, prestashop, api
    kind: EventKind
    dedup_key: str  # unique in the inbox: the same delivery twice is stored once
    resource: str  # what it is about ("order:1001"): events of one resource apply in version order
    version_at: datetime | None  # the resource's modification instant; an older one never overwrites a newer
    fields: Mapping[str, str] = field(default_factory=dict)
    #: The external id of the member an order or refund needs: it waits in the inbox until that member exists.
    member_id: str | None = None
    #: An email to find the member by (a guest order), when ``member_id`` is None.
    member_email: str | None = None


#: An ORDER event's field: the order was paid before the state it is in now (refunded, cancelled).
PAID_FIRST = "paid_first"


def paid_first(order: ShopEvent, refunds: list[ShopEvent]) -> list[ShopEvent]:
    """The events of an order the shop shows refunded or cancelled after it was paid, in the order its
    webhooks told it: paid (an order stored here already skips this step; a new one earns what it earned
    while it stood), then its refunds, each taking back its share, then its state, taking back the rest.
    Read whole by a backfill, such an order then ends with the ledger its webhooks would have written."""
    return [replace(order, fields={**order.fields, PAID_FIRST: "true"}), *refunds, order]


def import_status(state: OrderState) -> str | None:
    """The status of ``loyalty import orders`` an order in ``state`` has; None: not yet an order that earns.

    A partially refunded order stays placed: its refunds take back their share of the points.
    """
    from models.order import OrderStatus

    return {
        OrderState.PENDING: None,
        OrderState.PAID: OrderStatus.PLACED,
        OrderState.PARTIALLY_REFUNDED: OrderStatus.PLACED,
        OrderState.REFUNDED: OrderStatus.REFUNDED,
        OrderState.CANCELLED: OrderStatus.CANCELLED,
        OrderState.VOIDED: OrderStatus.CANCELLED,
    }[state]
