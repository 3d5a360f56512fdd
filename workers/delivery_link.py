"""A batch's writes: one database connection, and the few statements each message costs.

Each message is claimed before its send and recorded after it (with its reward, if any). These
statements are built once from the models, with bind parameters.

On PostgreSQL they run as SQL text on a connection in autocommit, each one statement and one round
trip: the claim is one conditional UPDATE, the record and its reward are one statement (an UPDATE
in a data-modifying CTE gating the ledger's INSERT, so the reward is written if and only if the
outcome is). Executed as compiled Core statements in transactions (BEGIN, UPDATE, INSERT, COMMIT)
they cost a worker 1.2 ms of CPU a message; this way 0.4 ms. Elsewhere (SQLite, the embedded
default) they are the same Core statements in transactions.

**One commit a message.** An outcome given to :meth:`Link.record` is not written at once: it
travels with the next claim, in the same statement (PostgreSQL: the record's CTEs ahead of the
claim's UPDATE) or the same transaction, so a message costs one statement and one commit. The
last outcome of a batch is written alone by :meth:`Link.flush` (also called by :meth:`Link.drop`
and before any other write of the link). A killed worker still leaves at most one message of the
thread in ``sending``: until the combined commit, the sent message is (its outcome is not written
yet, the next one is not claimed); after it, the next one is. Whatever is not written when the
worker dies is what a kill always left: the message that was being sent, which the sweeper marks
``unknown``.

The SQL text is compiled once per statement, so only statements whose text does not depend on
their values are accepted (no expanding ``IN``, no ``literal_execute``: refused with a
``ValueError``), and the columns' bind processors (``UtcDateTime`` refusing a naive datetime and
normalising to UTC) are applied to the values as ``Connection.execute`` would.

What needs several statements atomically (the frequency-capped claim, which locks the member while
counting; an outcome that also updates the member) runs in :meth:`Link.transaction`.
"""

from __future__ import annotations

import functools
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Executable, Table, Update, bindparam, cast, func, select, update
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

# a mapped class's __table__ is typed FromClause; these are Tables
_deliveries = typing.cast(Table, Delivery.__table__)
_members = typing.cast(Table, Member.__table__)
_points = typing.cast(Table, PointEntry.__table__)

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


@functools.lru_cache(maxsize=64)
def move_statement(from_state: str, columns: frozenset[str], key: str = "delivery_id") -> Update:
    """``UPDATE deliveries SET <columns> WHERE id = :<key> AND state = <from_state> RETURNING id``;
    one statement per set of columns written (a handful in all)."""
    return (
        update(_deliveries)
        .where(_deliveries.c.id == bindparam(key), _deliveries.c.state == from_state)
        .values({name: bindparam(f"new_{name}") for name in sorted(columns)})
        .returning(_deliveries.c.id)
    )


def _move_call(delivery_id: int, from_state: str, values: dict[str, Any]) -> tuple[Executable, dict[str, Any]]:
    """The move's statement and its parameters (each new value as ``new_<column>``)."""
    parameters = {"delivery_id": delivery_id, **{f"new_{name}": value for name, value in values.items()}}
    return move_statement(from_state, frozenset(values)), parameters


@functools.lru_cache(maxsize=32)
def _move_and_credit_statement(from_state: str, columns: frozenset[str], lot_columns: tuple[str, ...]) -> Executable:
    """The move, and the ledger's INSERT of a lot only if the move happened (``lot_<column>``
    parameters), as one statement (PostgreSQL: a data-modifying CTE)."""
    moved = move_statement(from_state, columns).cte("moved")
    values = select(*(cast(bindparam(f"lot_{name}", type_=_points.c[name].type), _points.c[name].type).label(name) for name in lot_columns))
    return (
        postgresql.insert(_points)
        .from_select(list(lot_columns), values.select_from(moved), include_defaults=False)
        .on_conflict_do_nothing(index_elements=["entry_key"])
    )


@functools.lru_cache(maxsize=64)
def _claim_after_record(from_state: str, columns: frozenset[str],
                        lot_columns: tuple[str, ...] | None) -> Executable:
    """One statement: the previous message's outcome (and its reward) as data-modifying CTEs, then
    the next message's claim. Parameters: the claim's, and the record's with ``done_id`` for its
    delivery (``new_<column>``, ``lot_<column>`` as in :func:`_move_and_credit_statement`).

    PostgreSQL runs every data-modifying CTE to completion whether or not the main statement reads
    it, on one snapshot; the two UPDATEs touch two different rows."""
    moved = move_statement(from_state, columns, key="done_id").cte("recorded")
    claim = CLAIM.add_cte(moved)
    if lot_columns is not None:
        values = select(*(cast(bindparam(f"lot_{name}", type_=_points.c[name].type), _points.c[name].type).label(name) for name in lot_columns))
        credited = (
            postgresql.insert(_points)
            .from_select(list(lot_columns), values.select_from(moved), include_defaults=False)
            .on_conflict_do_nothing(index_elements=["entry_key"])
            .cte("credited")
        )
        claim = claim.add_cte(credited)
    return claim


@functools.cache
def _postgres_sql(statement: Any) -> tuple[str, dict[str, Any], dict[str, Callable[[Any], Any]]]:
    """A statement as PostgreSQL (psycopg) SQL text with ``%(name)s`` parameters, compiled once; the
    values of the parameters it made itself (its literals, such as the states), processed; and the
    bind processors of the others, by name.

    Refuses (``ValueError``) a statement whose text would depend on its values (an expanding ``IN``,
    a ``literal_execute`` parameter): compiled once, its text would be wrong."""
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    late = sorted(compiled.bind_names[bind] for bind in (*compiled.post_compile_params, *compiled.literal_execute_params))
    if late:
        raise ValueError(f"the delivery link runs statements compiled once, and this one renders the parameters "
                         f"{', '.join(late)} at execution (an expanding IN or a literal_execute parameter): "
                         f"run it with Connection.execute instead")
    processors = dict(compiled._bind_processors)  # noqa: SLF001 - what Connection.execute applies too
    literals = {}
    params = compiled.params
    for bind, name in compiled.bind_names.items():
        if not bind.required and name in params:
            value = params[name]
            literals[name] = processors[name](value) if name in processors else value
    return str(compiled), literals, processors


def _text_and_parameters(statement: Executable, parameters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sql, literals, processors = _postgres_sql(statement)
    values = dict(literals)
    for name, value in parameters.items():
        process = processors.get(name)
        values[name] = value if process is None else process(value)
    return sql, values


@dataclass(frozen=True)
class _Record:
    """An outcome to write with the next claim (:meth:`Link.record`)."""

    delivery_id: int
    from_state: str
    values: dict[str, Any]
    credit: dict[str, Any] | None

    def with_claim(self, claim_parameters: dict[str, Any]) -> tuple[Executable, dict[str, Any]]:
        """The combined statement (PostgreSQL) and its parameters."""
        statement = _claim_after_record(self.from_state, frozenset(self.values),
                                        tuple(self.credit) if self.credit is not None else None)
        parameters = {**claim_parameters, "done_id": self.delivery_id,
                      **{f"new_{name}": value for name, value in self.values.items()}}
        if self.credit is not None:
            parameters.update({f"lot_{name}": value for name, value in self.credit.items()})
        return statement, parameters

    def write(self, link: Link, connection: Connection) -> None:
        """Within a transaction of the link's: the move, and its reward if it moved."""
        moved = link.move_in(connection, self.delivery_id, self.from_state, self.values)
        if moved and self.credit is not None:
            connection.execute(credit_once_insert(link.engine.dialect.name, tuple(self.credit)), self.credit)


class Link:
    """The batch's database connection for claims and results, opened again after a failure."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.autocommit = engine.dialect.name == "postgresql"
        self._connection: Connection | None = None
        self._pending: _Record | None = None  # an outcome waiting for the next claim's commit

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
        """Write the outcome still waiting (:meth:`flush`), then give the connection back."""
        try:
            self.flush()
        finally:
            self._close()

    def _close(self) -> None:
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
                self._close()
                if attempt == RECORD_ATTEMPTS - 1:
                    raise
                time.sleep(min(2**attempt * 0.25, 15))

    # --- the statements of a message ---------------------------------------------------------

    def claim(self, delivery_id: int, as_of: datetime, now: datetime,
              gate: Callable[[Connection], bool] | None = None) -> bool:
        """``planned → sending`` if still planned and due; True if this worker won it and ``gate``
        (run in the claim's transaction, e.g. the frequency cap) let it through."""
        parameters = {"delivery_id": delivery_id, "as_of": as_of, "now": now}
        pending = self._pending
        if self.autocommit and gate is None:
            if pending is None:
                return self._autocommit(CLAIM, parameters) is not None
            try:  # the previous outcome and this claim: one statement, one commit
                row = self._autocommit(*pending.with_claim(parameters))
            except OperationalError:
                self._close()
                self.flush()  # the outcome alone, retried (a no-op if the statement did commit)
                raise
            self._pending = None
            return row is not None
        with self.transaction() as connection:
            if pending is not None:
                pending.write(self, connection)
            won = self._execute(connection, CLAIM, parameters).first() is not None
            won = won and (gate is None or gate(connection))
        self._pending = None
        return won

    def record(self, delivery_id: int, from_state: str, values: dict[str, Any], *,
               credit: dict[str, Any] | None = None) -> None:
        """:meth:`move` (with its reward ``credit``), written with the next claim's commit or by
        :meth:`flush`, whichever comes first."""
        self.flush()
        self._pending = _Record(delivery_id, from_state, dict(values), credit)

    def flush(self) -> None:
        """Write the outcome waiting for a claim, if any, on its own (retried while the database is
        away: the send it records has happened)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            def write() -> None:
                self.move(pending.delivery_id, pending.from_state, pending.values, credit=pending.credit)

            self.retried(write)

    def defer(self, delivery_id: int, send_at: datetime) -> None:
        """Put a planned delivery off to ``send_at``, unclaimed."""
        self.flush()
        parameters = {"delivery_id": delivery_id, "send_at": send_at, "now": utcnow()}
        if self.autocommit:
            self._autocommit(DEFER, parameters)
            return
        with self.transaction() as connection:
            connection.execute(DEFER, parameters)

    def move(self, delivery_id: int, from_state: str, values: dict[str, Any], *, credit: dict[str, Any] | None = None,
             then: Callable[[Connection], None] | None = None) -> bool | None:
        """Set ``values`` on the delivery if it is still in ``from_state``; if it was, write the
        ledger lot ``credit`` (its columns) and run ``then(connection)``, all atomically. Returns
        whether it moved, or None when it cannot tell (the move and the credit were one statement)."""
        self.flush()
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

    def move_in(self, connection: Connection, delivery_id: int, from_state: str, values: dict[str, Any]) -> bool:
        """:meth:`move` within a transaction of the caller's (``connection`` from :meth:`transaction`)."""
        return self._execute(connection, *_move_call(delivery_id, from_state, values)).first() is not None

    def _autocommit(self, statement: Executable, parameters: dict[str, Any]) -> tuple[Any, ...] | None:
        """One statement on its own (PostgreSQL, autocommit): its first row, if it returns rows.

        Run on the driver's cursor: ``exec_driver_sql`` and ``commit()`` cost 65 µs of CPU more a
        statement (an execution context, a result and its metadata built for one row; measured
        side by side, 167 µs against 101 µs). What they did for us is done here as they do it:
        the connection's ``before_cursor_execute``, ``after_cursor_execute`` and ``commit``
        events are dispatched (what counts statements and commits by SQLAlchemy's events, the
        benchmark's and the tests', counts the same), and a driver error goes through SQLAlchemy's
        own handling (wrapped: ``OperationalError`` when the server is away; the connection
        invalidated on a disconnect, so the link's retries open a new one)."""
        connection = self.connection
        sql, values = _text_and_parameters(statement, parameters)
        driver = connection.connection  # SQLAlchemy's own errors if it cannot reconnect
        events = connection._has_events or connection.engine._has_events  # noqa: SLF001 (as SQLAlchemy checks)
        cursor = None
        try:
            cursor = driver.cursor()
            if events:
                for before in connection.dispatch.before_cursor_execute:
                    sql, values = before(connection, cursor, sql, values, None, False)
            cursor.execute(sql, values)
            if events:
                connection.dispatch.after_cursor_execute(connection, cursor, sql, values, None, False)
            row = cursor.fetchone() if cursor.description is not None else None
        except BaseException as exc:  # noqa: BLE001 (SQLAlchemy's handling decides, and raises)
            connection._handle_dbapi_exception(exc, sql, values, cursor, None)  # noqa: SLF001
        finally:
            if cursor is not None:
                cursor.close()
        if events:
            connection.dispatch.commit(connection)  # the database committed: autocommit
        return row

    def _execute(self, connection: Connection, statement: Executable, parameters: dict[str, Any]) -> Any:
        if self.autocommit:  # the same text as outside a transaction: compiled once
            return connection.exec_driver_sql(*_text_and_parameters(statement, parameters))
        return connection.execute(statement, parameters)
