"""A batch's writes: one database connection, and the few statements each message costs.

Each message is claimed before its send and recorded after it (with its reward, if any). These
statements are built once from the models, with bind parameters.

On PostgreSQL they run as SQL text on a connection in autocommit, each one statement and one round
trip: the claim is one conditional UPDATE, the record and its reward are one statement (an UPDATE
in a data-modifying CTE gating the ledger's INSERT, so the reward is written if and only if the
outcome is). Executed as compiled Core statements in transactions (BEGIN, UPDATE, INSERT, COMMIT)
they cost a worker 1.2 ms of CPU a message; this way 0.4 ms. Elsewhere (SQLite, the embedded
default) they are the same Core statements in transactions.

What needs several statements atomically (the frequency-capped claim, which locks the member while
counting; an outcome that also updates the member) runs in :meth:`Link.transaction`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import structlog
from sqlalchemy import Connection, bindparam, cast, func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, OperationalError

from models.base import utcnow
from models.delivery import Delivery, DeliveryState
from models.ledger import credit_once_insert
from models.member import Member
from models.points import PointEntry

log = structlog.get_logger("loyalty.delivery")

#: Attempts to record an outcome while the database is away (the send already happened).
RECORD_ATTEMPTS = 8

_deliveries = Delivery.__table__
_members = Member.__table__
_points = PointEntry.__table__

CLAIM = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("delivery_id"), _deliveries.c.state == DeliveryState.PLANNED,
           _deliveries.c.send_at <= bindparam("as_of"))
    .values(state=DeliveryState.SENDING, sending_at=bindparam("now"), attempts=_deliveries.c.attempts + 1,
            updated_at=bindparam("now"))
    .returning(_deliveries.c.id)
)
DEFER = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("delivery_id"), _deliveries.c.state == DeliveryState.PLANNED)
    .values(send_at=bindparam("send_at"), updated_at=bindparam("now"))
)
LOCK_MEMBER = select(_members.c.id).where(_members.c.id == bindparam("member_id")).with_for_update(key_share=True)
RECENT_CAPPED = select(func.count()).where(
    _deliveries.c.member_id == bindparam("member_id"),
    _deliveries.c.id != bindparam("delivery_id"),
    _deliveries.c.campaign.in_(bindparam("capped", expanding=True)),
    _deliveries.c.state.in_([DeliveryState.SENT, DeliveryState.SENDING]),
    _deliveries.c.send_at > bindparam("since"),
)


@functools.lru_cache(maxsize=32)
def move_statement(from_state: str, columns: frozenset[str]):
    """``UPDATE deliveries SET <columns> WHERE id = :delivery_id AND state = <from_state> RETURNING id``;
    one statement per set of columns written (a handful in all)."""
    return (
        update(_deliveries)
        .where(_deliveries.c.id == bindparam("delivery_id"), _deliveries.c.state == from_state)
        .values({name: bindparam(f"new_{name}") for name in sorted(columns)})
        .returning(_deliveries.c.id)
    )


def _move_call(delivery_id: int, from_state: str, values: dict) -> tuple:
    """The move's statement and its parameters (each new value as ``new_<column>``)."""
    parameters = {"delivery_id": delivery_id, **{f"new_{name}": value for name, value in values.items()}}
    return move_statement(from_state, frozenset(values)), parameters


@functools.lru_cache(maxsize=32)
def _move_and_credit_statement(from_state: str, columns: frozenset[str], lot_columns: tuple[str, ...]):
    """The move, and the ledger's INSERT of a lot only if the move happened (``lot_<column>``
    parameters), as one statement (PostgreSQL: a data-modifying CTE)."""
    moved = move_statement(from_state, columns).cte("moved")
    values = select(*(cast(bindparam(f"lot_{name}"), _points.c[name].type).label(name) for name in lot_columns))
    return (
        postgresql.insert(_points)
        .from_select(list(lot_columns), values.select_from(moved), include_defaults=False)
        .on_conflict_do_nothing(index_elements=["entry_key"])
    )


@functools.cache
def _postgres_sql(statement) -> tuple[str, dict]:
    """A statement as PostgreSQL (psycopg) SQL text with ``%(name)s`` parameters, compiled once, and
    the values of the parameters it made itself (its literals, such as the states)."""
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    literals = {name for name, bind in compiled.binds.items() if not bind.required}
    return str(compiled), {name: value for name, value in compiled.params.items() if name in literals}


def _text_and_parameters(statement, parameters: dict) -> tuple[str, dict]:
    sql, literals = _postgres_sql(statement)
    return sql, {**literals, **parameters}


class Link:
    """The batch's database connection for claims and results, opened again after a failure."""

    def __init__(self, engine):
        self.engine = engine
        self.autocommit = engine.dialect.name == "postgresql"
        self._connection: Connection | None = None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            connection = self.engine.connect()
            if self.autocommit:  # restored when the connection goes back to the pool
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
        return self._connection

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A real transaction on the link (on PostgreSQL, out of autocommit for its duration)."""
        connection = self.connection
        if self.autocommit:
            connection.execution_options(isolation_level=connection.default_isolation_level)
        try:
            with connection.begin():
                yield connection
        finally:
            if self.autocommit and not connection.closed and not connection.invalidated:
                connection.execution_options(isolation_level="AUTOCOMMIT")

    def drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except (DBAPIError, OSError) as exc:  # already broken: the pool replaces it
                log.debug("delivery.connection_close_failed", error=type(exc).__name__)
        self._connection = None

    def retried(self, work: Callable[[], None]) -> None:
        """Run ``work()`` again on a new connection while the database is away (for a while): what
        it records has already happened and must not be lost."""
        for attempt in range(RECORD_ATTEMPTS):
            try:
                work()
                return
            except OperationalError:
                self.drop()
                if attempt == RECORD_ATTEMPTS - 1:
                    raise
                time.sleep(min(2**attempt * 0.25, 15))

    # --- the statements of a message ---------------------------------------------------------

    def claim(self, delivery_id: int, as_of: datetime, now: datetime,
              gate: Callable[[Connection], bool] | None = None) -> bool:
        """``planned → sending`` if still planned and due; True if this worker won it and ``gate``
        (run in the claim's transaction, e.g. the frequency cap) let it through."""
        parameters = {"delivery_id": delivery_id, "as_of": as_of, "now": now}
        if self.autocommit and gate is None:
            return self._autocommit(CLAIM, parameters) is not None
        with self.transaction() as connection:
            if self._execute(connection, CLAIM, parameters).first() is None:
                return False
            return gate is None or gate(connection)

    def defer(self, delivery_id: int, send_at: datetime) -> None:
        """Put a planned delivery off to ``send_at``, unclaimed."""
        parameters = {"delivery_id": delivery_id, "send_at": send_at, "now": utcnow()}
        if self.autocommit:
            self._autocommit(DEFER, parameters)
            return
        with self.transaction() as connection:
            connection.execute(DEFER, parameters)

    def move(self, delivery_id: int, from_state: str, values: dict, *, credit: dict | None = None,
             then: Callable[[Connection], None] | None = None) -> bool | None:
        """Set ``values`` on the delivery if it is still in ``from_state``; if it was, write the
        ledger lot ``credit`` (its columns) and run ``then(connection)``, all atomically. Returns
        whether it moved, or None when it cannot tell (the move and the credit were one statement)."""
        statement, parameters = _move_call(delivery_id, from_state, values)
        if self.autocommit and then is None:
            if credit is None:
                return self._autocommit(statement, parameters) is not None
            combined = _move_and_credit_statement(from_state, frozenset(values), tuple(credit))
            self._autocommit(combined, {**parameters, **{f"lot_{name}": value for name, value in credit.items()}})
            return None
        with self.transaction() as connection:
            moved = self.move_in(connection, delivery_id, from_state, values)
            if moved and credit is not None:
                connection.execute(credit_once_insert(self.engine.dialect.name, tuple(credit)), credit)
            if moved and then is not None:
                then(connection)
            return moved

    def move_in(self, connection: Connection, delivery_id: int, from_state: str, values: dict) -> bool:
        """:meth:`move` within a transaction of the caller's (``connection`` from :meth:`transaction`)."""
        return self._execute(connection, *_move_call(delivery_id, from_state, values)).first() is not None

    def _autocommit(self, statement, parameters: dict):
        """One statement on its own (PostgreSQL, autocommit): its first row, if it returns rows."""
        connection = self.connection
        result = connection.exec_driver_sql(*_text_and_parameters(statement, parameters))
        row = result.first() if result.returns_rows else None
        connection.commit()  # ends SQLAlchemy's own marker; the database committed already
        return row

    def _execute(self, connection: Connection, statement, parameters: dict):
        if self.autocommit:  # the same text as outside a transaction: compiled once
            return connection.exec_driver_sql(*_text_and_parameters(statement, parameters))
        return connection.execute(statement, parameters)
