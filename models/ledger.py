"""Writing to the points ledger: earning lots, consuming them oldest-expiry first, reading balances.

Every write carries a unique ``entry_key``; writing the same key twice is a no-op that returns
``False``, which is how a retried reward or a re-imported file never counts twice. Consuming locks
the member's open lots (``FOR UPDATE`` on PostgreSQL) so two writers cannot spend the same points.
"""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import Executable, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.base import utcnow
from models.points import EntryKind, PointEntry, allocate_oldest_first


class InsufficientPoints(ValueError):
    """A debit larger than the member's available points; the balance never goes negative."""


def entry_exists(session: Session, entry_key: str) -> bool:
    return session.scalar(select(PointEntry.id).where(PointEntry.entry_key == entry_key)) is not None


def balance(session: Session, member_id: int) -> int:
    total = session.scalar(select(func.coalesce(func.sum(PointEntry.points), 0)).where(PointEntry.member_id == member_id))
    return int(total or 0)


def credit(
    session: Session,
    *,
    member_id: int,
    entry_key: str,
    kind: str,
    points: int,
    occurred_at: datetime,
    expires_at: datetime | None,
    source: str | None,
) -> bool:
    """Add a lot of ``points`` (> 0). Returns False if ``entry_key`` was already written."""
    if points <= 0:
        raise ValueError("a credit must be of a positive number of points")
    if entry_exists(session, entry_key):
        return False
    session.add(new_lot(member_id=member_id, entry_key=entry_key, kind=kind, points=points,
                        occurred_at=occurred_at, expires_at=expires_at, source=source))
    session.flush()
    return True


def _lot_values(*, member_id: int, entry_key: str, kind: str, points: int, occurred_at: datetime,
                expires_at: datetime | None, source: str | None) -> dict:
    """The columns of a new lot of ``points`` (> 0), its whole amount still to consume."""
    if points <= 0:
        raise ValueError("a credit must be of a positive number of points")
    return {"entry_key": entry_key, "member_id": member_id, "kind": kind, "points": points,
            "occurred_at": occurred_at, "expires_at": expires_at, "remaining": points, "source": source}


def new_lot(**lot) -> PointEntry:
    """A lot not yet added to a session (arguments as :func:`credit`'s): for a writer that has already
    made sure ``entry_key`` is new (the importer, which reads a chunk's keys at once) and flushes many
    together."""
    return PointEntry(**_lot_values(**lot))


def lot_values(**lot) -> dict:
    """The columns of a new lot (arguments as :func:`credit`'s), ``created_at`` included, for a
    writer with statements of its own: the delivery path writes a reward together with its outcome
    (``credit_once_insert``, or one statement of its own on PostgreSQL)."""
    return {**_lot_values(**lot), "created_at": utcnow()}


@functools.lru_cache(maxsize=8)
def credit_once_insert(dialect_name: str, columns: tuple[str, ...]) -> Executable:
    """``INSERT ... ON CONFLICT (entry_key) DO NOTHING`` of a lot's ``columns``, one parameter each;
    built once per dialect (a reward is written per message sent)."""
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return (insert(PointEntry).values({name: bindparam(name) for name in columns})
            .on_conflict_do_nothing(index_elements=["entry_key"]))


def balances(session: Session, member_ids) -> dict[int, int]:
    """Several members' balances in one query (members without entries are absent: 0)."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    rows = session.execute(select(PointEntry.member_id, func.coalesce(func.sum(PointEntry.points), 0))
                           .where(PointEntry.member_id.in_(ids)).group_by(PointEntry.member_id))
    return {member_id: int(total) for member_id, total in rows}


def debit(
    session: Session,
    *,
    member_id: int,
    entry_key: str,
    kind: str,
    points: int,
    occurred_at: datetime,
    source: str | None,
) -> bool:
    """Take ``points`` (> 0) from the lots that expire first. Returns False if already written.

    Raises :class:`InsufficientPoints` when the member's open lots hold less than ``points``.
    """
    if points <= 0:
        raise ValueError("a debit must be of a positive number of points")
    if entry_exists(session, entry_key):
        return False
    lots_query = (
        select(PointEntry.id, PointEntry.remaining)
        .where(PointEntry.member_id == member_id, PointEntry.remaining > 0)
        .order_by(PointEntry.expires_at.is_(None), PointEntry.expires_at, PointEntry.occurred_at, PointEntry.id)
        .with_for_update()
    )
    lots = [(row.id, row.remaining) for row in session.execute(lots_query)]
    try:
        taken = allocate_oldest_first(lots, points)
    except ValueError:
        available = sum(remaining for _, remaining in lots)
        raise InsufficientPoints(f"it takes {points} points but only {available} are available") from None
    for lot_id, take in taken:
        session.execute(update(PointEntry).where(PointEntry.id == lot_id).values(remaining=PointEntry.remaining - take))
    session.add(
        PointEntry(
            entry_key=entry_key,
            member_id=member_id,
            kind=kind,
            points=-points,
            occurred_at=occurred_at,
            source=source,
        )
    )
    session.flush()
    return True


def record(
    session: Session,
    *,
    member_id: int,
    entry_key: str,
    kind: str,
    points: int,
    occurred_at: datetime,
    expires_at: datetime | None = None,
    source: str | None = None,
) -> bool:
    """Write one signed entry of any kind: positive amounts credit a lot, negative ones debit."""
    if kind not in EntryKind.ALL:
        raise ValueError(f"unknown entry kind {kind!r}")
    if points > 0:
        if kind not in (EntryKind.EARN, EntryKind.ADJUST):
            raise ValueError(f"a {kind} entry cannot add points")
        return credit(session, member_id=member_id, entry_key=entry_key, kind=kind, points=points,
                      occurred_at=occurred_at, expires_at=expires_at, source=source)
    if points < 0:
        if kind == EntryKind.EARN:
            raise ValueError("an earn entry cannot take points away")
        return debit(session, member_id=member_id, entry_key=entry_key, kind=kind, points=-points,
                     occurred_at=occurred_at, source=source)
    raise ValueError("an entry of zero points means nothing")
