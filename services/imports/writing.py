"""Writing parsed rows: upserting members and orders, appending ledger entries, chunk by chunk.

Each kind has an *applier*: ``prepare`` loads, in one query per table, the records a chunk of rows
refers to; ``apply`` writes one row into the session and says whether it was inserted, updated or
unchanged, or raises :class:`~services.imports.rows.RowProblem` *before* writing anything.

A chunk is first written inside one SAVEPOINT and flushed in bulk. Rows were validated before they
got here, so the database refuses a chunk only in odd cases (a concurrent import, a constraint
added later); then the savepoint is rolled back and the chunk is written again with one SAVEPOINT
per row, so the refused row becomes a row error and the good rows of the chunk still land.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models import ledger
from models.member import ContactStatus, Member
from models.order import Order
from models.personal_data import lookup, lookup_columns
from models.points import EntryKind, PointEntry
from services.imports.rows import MemberRow, OrderRow, PointRow, RowProblem, shown

#: Errors about the connection rather than a row (it dropped, the server is shutting down, a
#: statement timed out): they stop the import instead of failing every row that follows.
NOT_ABOUT_A_ROW = (OperationalError, InterfaceError)

INSERTED = "inserted"
UPDATED = "updated"
UNCHANGED = "unchanged"


class Applier(Protocol):
    def prepare(self, session: Session, rows: Sequence[Any]) -> None:
        """Load what ``rows`` refer to and forget anything not yet flushed."""

    def apply(self, session: Session, row: Any) -> str:
        """Take one row into account; returns inserted, updated or unchanged, or raises RowProblem."""

    def flush(self, session: Session) -> None:
        """Send the pending writes to the database."""


@dataclass
class ChunkResult:
    line: int
    outcome: str | None = None  # inserted / updated / unchanged
    problem: str | None = None


def apply_chunk(session: Session, applier: Applier, items: Sequence[tuple[int, Any]]) -> list[ChunkResult]:
    """Write ``(line, parsed row)`` items in file order; returns one result per item."""
    rows = [row for _, row in items]
    applier.prepare(session, rows)
    try:
        with session.begin_nested():
            results = []
            for line, row in items:
                try:
                    results.append(ChunkResult(line, outcome=applier.apply(session, row)))
                except RowProblem as problem:
                    results.append(ChunkResult(line, problem=str(problem)))
            applier.flush(session)
            session.flush()
        return results
    except DBAPIError as error:
        if isinstance(error, NOT_ABOUT_A_ROW) or error.connection_invalidated:
            raise
        # the database refused some row (a constraint, a value, a trigger): find which, row by row

    session.expunge_all()
    applier.prepare(session, rows)
    results = []
    for index, (line, row) in enumerate(items):
        try:
            with session.begin_nested():
                outcome = applier.apply(session, row)
                applier.flush(session)
                session.flush()
            results.append(ChunkResult(line, outcome=outcome))
        except RowProblem as problem:
            results.append(ChunkResult(line, problem=str(problem)))
        except DBAPIError as error:
            if isinstance(error, NOT_ABOUT_A_ROW) or error.connection_invalidated:
                raise
            results.append(ChunkResult(line, problem=database_problem(error)))
            # The rolled-back savepoint took this row's writes with it: reload what is left.
            session.expunge_all()
            applier.prepare(session, rows[index + 1:])
    return results


def database_problem(error: DBAPIError) -> str:
    diag = getattr(error.orig, "diag", None)
    reason = getattr(diag, "message_primary", None) or str(error.orig).splitlines()[0]
    return f"the database refused the row ({reason}); correct it and import again"


def _by_external_id(session: Session, external_ids: Iterable[str]) -> dict[str, int]:
    ids = set(external_ids)
    if not ids:
        return {}
    query = select(Member.external_id, Member.id).where(Member.external_id.in_(ids))
    return {external_id: pk for external_id, pk in session.execute(query)}


def _unknown_member(external_id: str) -> RowProblem:
    return RowProblem(f"member_id {shown(external_id)} is not a known member; import the members first")


class _BulkWrites:
    """Pending inserts and updates of one table, keyed by the shop's id, sent in bulk on flush.

    Plain ``executemany`` statements (no RETURNING): the driver pipelines them, which is many times
    faster than the ORM's one-object-at-a-time bookkeeping for a file of tens of thousands of rows.
    """

    def __init__(self, table: Table, key: str):
        self.table = table
        self.key = key
        self.inserts: list[dict[str, Any]] = []
        self.updates: dict[str, dict[str, Any]] = {}

    def clear(self) -> None:
        self.inserts = []
        self.updates = {}

    def flush(self, session: Session) -> None:
        inserts, updates = self.inserts, self.updates
        self.clear()
        if inserts:
            session.execute(insert(self.table), inserts)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for key_value, changes in updates.items():
            params = {f"new_{name}": value for name, value in changes.items()}
            params["match_key"] = key_value
            by_columns[tuple(sorted(changes))].append(params)
        for columns, params_list in by_columns.items():
            statement = (
                update(self.table)
                .where(self.table.c[self.key] == bindparam("match_key"))
                .values({name: bindparam(f"new_{name}") for name in columns})
            )
            session.execute(statement, params_list)


class _UpsertApplier:
    """Upserts keyed by the shop's id: the chunk's current records are held as plain dicts."""

    table: Table
    key: str

    def __init__(self) -> None:
        self.writes = _BulkWrites(self.table, self.key)
        self.current: dict[str, dict[str, Any]] = {}
        self.new: set[str] = set()  # keys inserted in this chunk (their dict is the pending insert)

    def prepare(self, session: Session, rows: Sequence[Any]) -> None:
        self.writes.clear()
        self.new = set()
        keys = {getattr(row, self.key) for row in rows}
        self.current = {}
        if keys:
            query = select(self.table).where(self.table.c[self.key].in_(keys))
            self.current = {record[self.key]: dict(record) for record in session.execute(query).mappings()}

    def flush(self, session: Session) -> None:
        self.writes.flush(session)

    def _insert(self, key_value: str, values: dict[str, Any]) -> str:
        self.current[key_value] = values
        self.new.add(key_value)
        self.writes.inserts.append(values)
        return INSERTED

    def _update(self, key_value: str, changes: dict[str, Any], now: datetime) -> str:
        if not changes:
            return UNCHANGED
        changes["updated_at"] = now
        self.current[key_value].update(changes)  # a pending insert's dict is updated in place
        if key_value not in self.new:
            self.writes.updates.setdefault(key_value, {}).update(changes)
        return UPDATED


# --- members --------------------------------------------------------------------------------------

_PLAIN_MEMBER_FIELDS = ("first_name", "last_name", "locale", "timezone", "tier")


def new_member_values(row: MemberRow, *, now: datetime, source: str) -> dict[str, Any]:
    """The columns of a member first seen in this import."""
    joined_at = row.joined_at or now
    birthday = row.birthday
    values: dict[str, Any] = {
        "external_id": row.external_id,
        "email": row.email,
        "email_status": ContactStatus.OK if row.email else ContactStatus.MISSING,
        "phone": row.phone,
        "phone_status": ContactStatus.OK if row.phone else ContactStatus.MISSING,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "locale": row.locale,
        "timezone": row.timezone,
        "tier": row.tier,
        "joined_at": joined_at,
        "birth_year": birthday.year if birthday else None,
        "birth_month": birthday.month if birthday else None,
        "birth_day": birthday.day if birthday else None,
        # A birthday first known here counts as known since the shop says, or since joining.
        "birthday_updated_at": (row.birthday_updated_at or joined_at) if birthday else None,
        "created_at": now,
        "updated_at": now,
        **lookup_columns(row.email, row.phone),
    }
    for channel in ("email", "sms"):
        opted_in = getattr(row, f"{channel}_opt_in")
        values[f"{channel}_opt_in"] = opted_in
        values[f"{channel}_consent_at"] = joined_at if opted_in else None
        values[f"{channel}_consent_source"] = source if opted_in else None
    return values


def opted_out_elsewhere(member: Mapping[str, Any], channel: str) -> bool:
    """True when the member's last word on ``channel`` was a refusal given outside any import.

    An unsubscribe link, an SMS STOP or a support action must not be undone by re-importing a
    shop export that still says "opted in".
    """
    source = member[f"{channel}_consent_source"]
    return not member[f"{channel}_opt_in"] and source is not None and not source.startswith("import:")


def member_changes(member: Mapping[str, Any], row: MemberRow, *, now: datetime, source: str) -> dict[str, Any]:
    """The columns of ``member`` (its current values) that ``row`` changes; empty if none.

    Only the columns present in the file are compared. A contact status (say, ``invalid`` after a
    bounce) is reset only when the address itself changes.
    """
    given = row.given
    changes: dict[str, Any] = {}
    if "email" in given and row.email != member["email"]:
        changes["email"] = row.email
        changes["email_status"] = ContactStatus.OK if row.email else ContactStatus.MISSING
        changes["email_lookup"] = lookup("email", row.email)
    if "phone" in given and row.phone != member["phone"]:
        changes["phone"] = row.phone
        changes["phone_status"] = ContactStatus.OK if row.phone else ContactStatus.MISSING
        changes["phone_lookup"] = lookup("phone", row.phone)
    for name in _PLAIN_MEMBER_FIELDS:
        if name in given and getattr(row, name) != member[name]:
            changes[name] = getattr(row, name)
    if "joined_at" in given and row.joined_at is not None and row.joined_at != member["joined_at"]:
        changes["joined_at"] = row.joined_at
    if "birthday" in given:
        birthday = row.birthday
        parts = (birthday.year, birthday.month, birthday.day) if birthday else (None, None, None)
        if parts != (member["birth_year"], member["birth_month"], member["birth_day"]):
            changes["birth_year"], changes["birth_month"], changes["birth_day"] = parts
            changes["birthday_updated_at"] = row.birthday_updated_at or now
        elif birthday and row.birthday_updated_at and row.birthday_updated_at != member["birthday_updated_at"]:
            changes["birthday_updated_at"] = row.birthday_updated_at
    for channel in ("email", "sms"):
        column = f"{channel}_opt_in"
        wanted = getattr(row, column)
        if column not in given or wanted == member[column]:
            continue
        if wanted and opted_out_elsewhere(member, channel):
            continue
        changes[column] = wanted
        changes[f"{channel}_consent_at"] = now
        changes[f"{channel}_consent_source"] = source
    return changes


class MemberApplier(_UpsertApplier):
    table = cast(Table, Member.__table__)  # a mapped class's __table__ is typed FromClause
    key = "external_id"

    def __init__(self, *, now: datetime, source: str):
        super().__init__()
        self.now = now
        self.source = source

    def apply(self, session: Session, row: MemberRow) -> str:
        member = self.current.get(row.external_id)
        if member is None:
            return self._insert(row.external_id, new_member_values(row, now=self.now, source=self.source))
        return self._update(row.external_id, member_changes(member, row, now=self.now, source=self.source), self.now)


# --- orders ---------------------------------------------------------------------------------------

class OrderApplier(_UpsertApplier):
    table = cast(Table, Order.__table__)  # a mapped class's __table__ is typed FromClause
    key = "order_id"

    def __init__(self, *, now: datetime):
        super().__init__()
        self.now = now
        self.members: dict[str, int] = {}

    def prepare(self, session: Session, rows: Sequence[OrderRow]) -> None:
        super().prepare(session, rows)
        self.members = _by_external_id(session, (row.member_id for row in rows))

    def apply(self, session: Session, row: OrderRow) -> str:
        member_pk = self.members.get(row.member_id)
        if member_pk is None:
            raise _unknown_member(row.member_id)
        wanted = {"member_id": member_pk, "placed_at": row.placed_at, "total": row.total, "currency": row.currency}
        order = self.current.get(row.order_id)
        if order is None:
            values = {"order_id": row.order_id, **wanted, "status": row.status,
                      "created_at": self.now, "updated_at": self.now}
            return self._insert(row.order_id, values)
        if "status" in row.given:
            wanted["status"] = row.status
        changes = {name: value for name, value in wanted.items() if order[name] != value}
        return self._update(row.order_id, changes, self.now)


# --- points ---------------------------------------------------------------------------------------

_DEBIT_VERB = {EntryKind.REDEEM: "redeems", EntryKind.EXPIRE: "expires", EntryKind.ADJUST: "takes away"}


@dataclass(frozen=True)
class _Entry:
    member_pk: int
    kind: str
    points: int
    occurred_at: datetime
    expires_at: datetime | None
    source: str | None


class PointApplier:
    """Appends ledger entries in file order: credits as new lots, added to the session and written
    together at the chunk's flush (their keys were checked against the ledger by :meth:`prepare`),
    debits through :func:`models.ledger.record`, whose read of the open lots flushes the credits
    before it, so a redemption sees the lots earned above it in the file.

    Entries are immutable: an ``entry_id`` already in the ledger is unchanged if the row says the
    same, and a row error if it says something else.
    """

    def __init__(self) -> None:
        self.members: dict[str, int] = {}
        self.entries: dict[str, _Entry] = {}

    def prepare(self, session: Session, rows: Sequence[PointRow]) -> None:
        self.members = _by_external_id(session, (row.member_id for row in rows))
        keys = {row.entry_id for row in rows}
        self.entries = {}
        if keys:
            query = select(PointEntry).where(PointEntry.entry_key.in_(keys))
            self.entries = {
                e.entry_key: _Entry(e.member_id, e.kind, e.points, e.occurred_at, e.expires_at, e.source)
                for e in session.scalars(query)
            }

    def flush(self, session: Session) -> None:
        pass  # ledger.record writes each entry at once

    def apply(self, session: Session, row: PointRow) -> str:
        member_pk = self.members.get(row.member_id)
        if member_pk is None:
            raise _unknown_member(row.member_id)
        entry = _Entry(member_pk, row.kind, row.points, row.occurred_at, row.expires_at, row.source)
        stored = self.entries.get(row.entry_id)
        if stored is not None:
            if stored != entry:
                raise RowProblem(
                    f"entry_id {shown(row.entry_id)} is already in the ledger with other values; "
                    "ledger entries cannot be changed, so write an adjust entry instead"
                )
            return UNCHANGED
        if row.points > 0 and row.kind in (EntryKind.EARN, EntryKind.ADJUST):
            session.add(ledger.new_lot(member_id=member_pk, entry_key=row.entry_id, kind=row.kind, points=row.points,
                                       occurred_at=row.occurred_at, expires_at=row.expires_at, source=row.source))
            self.entries[row.entry_id] = entry
            return INSERTED
        try:
            written = ledger.record(
                session, member_id=member_pk, entry_key=row.entry_id, kind=row.kind, points=row.points,
                occurred_at=row.occurred_at, expires_at=row.expires_at, source=row.source,
            )
        except ledger.InsufficientPoints:
            available = session.scalar(
                select(func.coalesce(func.sum(PointEntry.remaining), 0)).where(
                    PointEntry.member_id == member_pk, PointEntry.remaining > 0
                )
            )
            raise RowProblem(
                f"{_DEBIT_VERB[row.kind]} {-row.points} points but the member has only {int(available or 0)}"
            ) from None
        except ValueError as error:  # the parser keeps these out; kept as a row error all the same
            raise RowProblem(f"points cannot be recorded: {error}") from None
        self.entries[row.entry_id] = entry
        return INSERTED if written else UNCHANGED
