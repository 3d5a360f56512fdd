"""Importing members, orders and points from CSV or JSONL files (``loyalty import KIND FILE``).

Idempotent: members and orders are upserted by the shop's id and ledger entries are written once
per ``entry_id``, so importing the same file twice changes nothing the second time. A bad row is
reported with its line number and the reason, and the good rows still land. An id already met in
the same file is such a row: the first row with that id is imported, the later ones are refused
(which of two differing rows is right is for the user to say). Given the program, a member's tier
must be one of its tiers and an order must be in its currency; an imported order must not be dated
in the future (a live ``order_placed`` event is the shop telling us an order was just placed: its
time is taken as the shop gives it, since refusing it would drop a real order). A file that cannot be
read at all raises :class:`~core.errors.InputError` before anything is written.

The work is split in three: :mod:`~services.imports.reading` turns the file into rows of text,
:mod:`~services.imports.rows` turns text into typed values (pure, no database) and
:mod:`~services.imports.writing` writes them, committing every :data:`CHUNK_SIZE` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel import Locale, UnknownLocaleError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import InputError
from models.audit import AuditAction, AuditEntry
from models.base import utcnow
from services.imports import rows as parsing
from services.imports.reading import FORMATS, RawRow, open_source
from services.imports.writing import (
    INSERTED,
    UNCHANGED,
    UPDATED,
    Applier,
    MemberApplier,
    OrderApplier,
    PointApplier,
    apply_chunk,
)

if TYPE_CHECKING:
    from campaigns.program import Program

__all__ = ["CHUNK_SIZE", "KINDS", "ImportReport", "RowError", "apply_record", "import_file"]

KINDS = ("members", "orders", "points")
#: The column holding each kind's id: the same id twice in one file is refused after its first row.
ID_COLUMNS = {"members": "external_id", "orders": "order_id", "points": "entry_id"}
CHUNK_SIZE = 1000


@dataclass
class RowError:
    line: int  # 1-based line in the file (CSV: the header is line 1; a record starts on this line)
    message: str  # one sentence naming the field and what is wrong; never an email or phone value


@dataclass
class ImportReport:
    kind: str
    path: str
    rows: int  # data rows read (blank lines are not rows): inserted + updated + unchanged + errors
    inserted: int
    updated: int
    unchanged: int
    errors: list[RowError]
    dry_run: bool
    ignored_columns: list[str] = field(default_factory=list)  # columns the import does not know


def import_file(
    sessions: sessionmaker[Session],
    kind: str,
    path: Path,
    *,
    dry_run: bool = False,
    actor: str = "import",
    default_timezone: str = "UTC",
    default_locale: str = "en",
    progress: Callable[[int], None] | None = None,
    program: Program | None = None,
) -> ImportReport:
    """Import one file of ``kind`` (members, orders or points); see the module docstring.

    ``progress`` is called with the number of rows done so far after every chunk. With ``dry_run``
    every row is written and checked as usual, then everything is rolled back, so the report is
    the one a real import would give. One audit entry records a real import. With ``program``,
    tiers and the currency are checked against it.
    """
    if kind not in KINDS:
        raise InputError(f"Cannot import {kind!r}: the kinds of import are {', '.join(KINDS)}.")
    default_timezone, default_locale = _checked_defaults(default_timezone, default_locale)
    path = Path(path)
    now = utcnow()
    report = ImportReport(kind=kind, path=str(path), rows=0, inserted=0, updated=0, unchanged=0,
                          errors=[], dry_run=dry_run)
    parse = _parser(kind, default_locale=default_locale, default_timezone=default_timezone, now=now, program=program,
                    latest_order=now)
    applier = _applier(kind, now=now, source=f"import:{path.name}"[:64])

    committed: ImportReport | None = None  # the counts of the chunks committed so far
    first_lines: dict[str, int] = {}  # id -> the line it was first met on
    with open_source(path, kind) as source, sessions() as session:
        try:
            for chunk in _chunks(source.rows()):
                _import_chunk(session, applier, parse, chunk, report, first_lines)
                if dry_run:
                    session.flush()
                else:
                    session.commit()
                    committed = replace(report, errors=list(report.errors))
                session.expunge_all()  # keep memory flat over a large file
                if progress is not None:
                    progress(report.rows)
            report.errors.sort(key=lambda error: error.line)
            report.ignored_columns = sorted(name for name in source.ignored_columns if name)
            if dry_run:
                session.rollback()
            else:
                session.add(_audit_entry(report, actor, path))
                session.commit()
        except BaseException as error:
            session.rollback()
            if committed is not None:  # some chunks are in: the audit log says so, if the database listens
                _audit_interrupted(session, committed, actor, path, error)
            raise
    return report


def apply_record(
    session: Session,
    kind: str,
    fields: dict[str, Any],
    *,
    source: str,
    default_timezone: str = "UTC",
    default_locale: str = "en",
    program: Program | None = None,
) -> str:
    """Apply one record given as fields (a live event from the shop) exactly as an import row.

    Returns ``inserted``, ``updated`` or ``unchanged``; raises :class:`parsing.RowProblem` with
    the same one sentence an import would report. The caller commits.
    """
    now = utcnow()
    text_fields = {str(k).lower(): "" if v is None else str(v) for k, v in fields.items()}
    parse = _parser(kind, default_locale=default_locale, default_timezone=default_timezone, now=now, program=program)
    row = parse(text_fields)
    (result,) = apply_chunk(session, _applier(kind, now=now, source=source[:64]), [(1, row)])
    if result.problem is not None:
        raise parsing.RowProblem(result.problem)
    assert result.outcome is not None  # apply_chunk gives each row an outcome or a problem
    return result.outcome


def _import_chunk(
    session: Session,
    applier: Applier,
    parse: Callable[[dict[str, str]], Any],
    chunk: list[RawRow],
    report: ImportReport,
    first_lines: dict[str, int],
) -> None:
    report.rows += len(chunk)
    id_column = ID_COLUMNS[report.kind]
    items = []
    for raw in chunk:
        if raw.problem is not None:
            report.errors.append(RowError(raw.line, raw.problem))
            continue
        fields = raw.fields
        assert fields is not None  # the reader gives a row its fields or its problem
        key = (fields.get(id_column) or "").strip()
        if key:
            first = first_lines.setdefault(key, raw.line)
            if first != raw.line:
                report.errors.append(RowError(raw.line, (
                    f"{id_column} {parsing.shown(key)} is also on line {first} of this file; an id may appear "
                    f"once in a file, so only line {first} is imported: merge the two rows into one"
                )))
                continue
        try:
            items.append((raw.line, parse(fields)))
        except parsing.RowProblem as problem:
            report.errors.append(RowError(raw.line, str(problem)))
    if not items:
        return
    for result in apply_chunk(session, applier, items):
        if result.problem is not None:
            report.errors.append(RowError(result.line, result.problem))
        elif result.outcome == INSERTED:
            report.inserted += 1
        elif result.outcome == UPDATED:
            report.updated += 1
        else:
            assert result.outcome == UNCHANGED
            report.unchanged += 1


def _checked_defaults(default_timezone: str, default_locale: str) -> tuple[str, str]:
    try:
        zone = parsing.parse_timezone(default_timezone)
    except parsing.RowProblem:
        raise InputError(
            f"The default time zone {default_timezone!r} is not an IANA time zone; use a name like Europe/Paris."
        ) from None
    try:
        locale = str(Locale.parse(default_locale.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        raise InputError(f"The default locale {default_locale!r} is not a known locale; use a code like en or fr_FR.") from None
    return zone, locale


def _parser(
    kind: str,
    *,
    default_locale: str,
    default_timezone: str,
    now: datetime,
    program: Program | None,
    latest_order: datetime | None = None,
) -> Callable[[dict[str, str]], Any]:
    if kind == "members":
        today = now.date()
        tiers = program.tiers.names if program is not None else None
        return lambda fields: parsing.parse_member(
            fields, default_locale=default_locale, default_timezone=default_timezone, today=today, tiers=tiers
        )
    if kind == "orders":
        currency = program.points.currency if program is not None else None
        return lambda fields: parsing.parse_order(fields, currency=currency, now=latest_order)
    return parsing.parse_point


def _applier(kind: str, *, now: datetime, source: str) -> Applier:
    if kind == "members":
        return MemberApplier(now=now, source=source)
    if kind == "orders":
        return OrderApplier(now=now)
    return PointApplier()


def _chunks(raw_rows: Iterator[RawRow]) -> Iterator[list[RawRow]]:
    chunk: list[RawRow] = []
    for raw in raw_rows:
        chunk.append(raw)
        if len(chunk) >= CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _audit_interrupted(session: Session, report: ImportReport, actor: str, path: Path, error: BaseException) -> None:
    entry = _audit_entry(report, actor, path)
    entry.details = {**entry.details, "interrupted": type(error).__name__}
    try:
        session.add(entry)
        session.commit()
    except Exception:  # noqa: BLE001 - the original error is the one to report
        session.rollback()


def _audit_entry(report: ImportReport, actor: str, path: Path) -> AuditEntry:
    return AuditEntry(
        at=utcnow(),
        actor=actor[:120],
        action=AuditAction.imported(report.kind),
        details={
            "file": path.name,
            "format": FORMATS[path.suffix.lower()],
            "rows": report.rows,
            "inserted": report.inserted,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "errors": len(report.errors),
            "error_lines": [error.line for error in report.errors[:100]],
        },
    )
