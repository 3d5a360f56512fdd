"""The shop's inbox: every webhook or API event we answered 2xx to, kept until it is applied.

A delivery is written here, raw body encrypted like other personal data, in the transaction that
answers the shop; a worker then applies it (``workers/inbox.py``). Its ``dedup_key`` is unique, so
the same delivery sent three times is one row. States:

- ``received``: not applied yet (a worker is on it, or the sweeper will enqueue it again);
- ``applied``: its effects are in (``reason`` may say it changed nothing: an older version, a
  pending order);
- ``waiting``: it needs a member (or an order) that has not arrived; it is applied when that
  member arrives (``waiting_for``), since shops fire customer and order webhooks in no order;
- ``rejected``: it cannot apply (``reason``: one sentence without personal data), visible in
  ``loyalty inbox --state rejected`` and retried with ``loyalty inbox retry ID``.

``shop_versions`` keeps, per resource (``order:1001``), the newest version applied, so an older
delivery (a retry carries the payload of when the event happened) never overwrites newer state.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, BigIntKey, UtcDateTime, utcnow
from models.db import rows_changed
from models.personal_data import EncryptedText
from shops.events import InboxState


class InboxEntry(Base):
    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    platform: Mapped[str] = mapped_column(String(16))  # shopify, woocommerce, prestashop, api
    topic: Mapped[str] = mapped_column(String(64))  # orders/create, order.updated, order_placed...
    body: Mapped[str] = mapped_column(EncryptedText)  # the payload as received (personal data: encrypted)
    state: Mapped[str] = mapped_column(String(16), default=InboxState.RECEIVED)
    reason: Mapped[str | None] = mapped_column(String(300))  # why waiting, rejected, or applied without effect
    waiting_for: Mapped[str | None] = mapped_column(String(80))  # "member:115310" / "order:1001"
    member_ref: Mapped[str | None] = mapped_column(String(64))  # the member it is about, once known (erasure)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_inbox_open", "state", "id", postgresql_where=text("state IN ('received', 'waiting')"),
              sqlite_where=text("state IN ('received', 'waiting')")),
        Index("ix_inbox_waiting_for", "waiting_for"),
        Index("ix_inbox_member_ref", "member_ref"),
    )


class ShopVersion(Base):
    """The newest version of a shop resource applied here."""

    __tablename__ = "shop_versions"

    resource: Mapped[str] = mapped_column(String(120), primary_key=True)  # shopify:order:1001
    version_at: Mapped[datetime] = mapped_column(UtcDateTime)


def receive(session: Session, *, dedup_key: str, platform: str, topic: str, body: str) -> int | None:
    """Store one delivery; its id, or None when the same delivery is already stored. The caller commits."""
    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {"dedup_key": dedup_key, "platform": platform, "topic": topic, "body": body,
              "state": InboxState.RECEIVED, "attempts": 0, "received_at": utcnow(), "updated_at": utcnow()}
    statement = builder(InboxEntry).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    return session.execute(statement.returning(InboxEntry.id)).scalar()


def claim_version(session: Session, resource: str, version_at: datetime | None) -> bool:
    """True when ``version_at`` is not older than the newest applied for ``resource`` (and record it).

    An event without a version (a deletion, an API event without one) always applies. Holds the
    resource's row lock until the caller commits, so two versions applied at once are serialised.
    """
    if version_at is None:
        return True
    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = builder(ShopVersion).values(resource=resource, version_at=version_at)
    statement = statement.on_conflict_do_update(
        index_elements=["resource"], set_={"version_at": statement.excluded.version_at},
        where=ShopVersion.version_at <= statement.excluded.version_at,
    )
    return bool(session.execute(statement.returning(ShopVersion.resource)).scalar())


def claim_once(session: Session, resource: str) -> bool:
    """True the first time ``resource`` (a refund's id, say) is claimed; False ever after."""
    dialect = session.get_bind().dialect.name
    builder = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = builder(ShopVersion).values(resource=resource, version_at=utcnow())
    statement = statement.on_conflict_do_nothing(index_elements=["resource"])
    return bool(session.execute(statement.returning(ShopVersion.resource)).scalar())


def settle(session: Session, entry_id: int, state: InboxState, reason: str | None = None,
           waiting_for: str | None = None, member_ref: str | None = None) -> None:
    values = {"state": state, "reason": reason[:300] if reason else None, "waiting_for": waiting_for,
              "updated_at": utcnow(), "attempts": InboxEntry.attempts + 1}
    if member_ref:
        values["member_ref"] = member_ref[:64]
    session.execute(update(InboxEntry).where(InboxEntry.id == entry_id).values(**values))


#: The first key of the inbox's transaction locks (``pg_advisory_xact_lock(int, int)``; "INBX").
_LOCK_CLASS = 0x494E_4258


def hold(session: Session, waiting_for: str) -> None:
    """Lock ``waiting_for`` (``member:ID``) until the caller commits. Taken by an entry about to wait
    for it (then it looks again) and by :func:`wake`: without it, an order applied while its customer
    is being applied in another transaction sees no customer and waits, while the customer's wake,
    not seeing that uncommitted wait, wakes nothing, and the order waits for ever. SQLite: one writer
    at a time already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:class, hashtext(:key))"),
                        {"class": _LOCK_CLASS, "key": waiting_for})


def wake(session: Session, waiting_for: str) -> list[int]:
    """The entries waiting for ``waiting_for`` (``member:ID``) go back to ``received``; their ids."""
    hold(session, waiting_for)
    return list(session.scalars(
        update(InboxEntry)
        .where(InboxEntry.state == InboxState.WAITING, InboxEntry.waiting_for == waiting_for)
        .values(state=InboxState.RECEIVED, updated_at=utcnow())
        .returning(InboxEntry.id)
    ))


def retry(session: Session, entry_id: int) -> bool:
    """A rejected or waiting entry back to ``received``; False when there is no such entry to retry."""
    return bool(rows_changed(session.execute(
        update(InboxEntry)
        .where(InboxEntry.id == entry_id, InboxEntry.state.in_([InboxState.REJECTED, InboxState.WAITING]))
        .values(state=InboxState.RECEIVED, updated_at=utcnow())
    )))


def stale_received(session: Session, older_than: datetime, limit: int = 1000) -> list[int]:
    """Entries still ``received`` since before ``older_than``: their message was lost (a flushed Redis)."""
    return list(session.scalars(
        select(InboxEntry.id)
        .where(InboxEntry.state == InboxState.RECEIVED, InboxEntry.updated_at < older_than)
        .order_by(InboxEntry.id).limit(limit)
    ))


def erase_bodies(session: Session, member_ref: str) -> int:
    """Replace the stored payloads about a member (a privacy request); the rows stay as a record."""
    return rows_changed(session.execute(
        update(InboxEntry).where(InboxEntry.member_ref == member_ref).values(body=ERASED_BODY, updated_at=utcnow())
    ))


ERASED_BODY = '{"erased": true}'


def listing(session: Session, state: str | None = None, limit: int = 200) -> list[InboxEntry]:
    query = select(InboxEntry).order_by(InboxEntry.id.desc()).limit(limit)
    if state:
        query = query.where(InboxEntry.state == state)
    return list(session.scalars(query))


