"""The data: members, orders, the points ledger, the send ledger and the audit log."""

from models.audit import AuditEntry
from models.base import Base, utcnow
from models.coupons import Coupon, Redemption
from models.delivery import Delivery, DeliveryState
from models.email_feedback import EmailFeedback
from models.inbox import InboxEntry, ShopVersion
from models.member import ContactStatus, Member
from models.order import Order, OrderStatus
from models.points import EntryKind, PointEntry
from models.shop_cursors import ShopCursor
from models.shop_customers import ShopCustomer
from models.tier import TierChange
from models.webhooks import ProcessedWebhook

__all__ = [
    "AuditEntry",
    "Base",
    "ContactStatus",
    "Coupon",
    "Delivery",
    "DeliveryState",
    "EmailFeedback",
    "EntryKind",
    "InboxEntry",
    "Member",
    "Order",
    "OrderStatus",
    "PointEntry",
    "ProcessedWebhook",
    "Redemption",
    "ShopCursor",
    "ShopCustomer",
    "ShopVersion",
    "TierChange",
    "utcnow",
]
