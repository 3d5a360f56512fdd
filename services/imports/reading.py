"""Reading an import file: CSV or JSONL, UTF-8 (with or without a BOM), row by row with line numbers.

A file that cannot be read at all (missing, not UTF-8, no header, a required column missing, a
column whose name is a misspelling of one the import knows, like ``e-mail``) raises
:class:`~core.errors.InputError` *before* anything is written. A row that cannot be read (a
malformed CSV record, a line that is not a JSON object, or nested too deeply to parse) is yielded
with a ``problem`` instead of fields, so it becomes a row error and the rest of the file still
imports.

An unclosed quote in a CSV makes the lines after it one field, up to the next quote or the end of
the file. Those lines are not guessed at: the error names the line that opens the quote and the
lines that were swallowed, so the user can close the quote and import again (re-importing is
idempotent).

Fields are handed on as text: JSON numbers keep their exact digits (``19.90`` stays ``"19.90"``),
``true``/``false`` become ``"true"``/``"false"`` and ``null`` becomes ``""``.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Self, TextIO

from core.errors import InputError
from services.imports.rows import COLUMNS, REQUIRED_COLUMNS

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}

# Large enough to read any field whole (so an over-long one is a row error, not a crash); this
# is the largest value every platform's C long can hold.
_CSV_FIELD_LIMIT = 2**31 - 1
_CHUNK = 1 << 20


@dataclass
class RawRow:
    line: int  # 1-based physical line where the row starts
    fields: dict[str, str] | None  # column name (lower-case) -> text; None when unreadable
    problem: str | None = None


@dataclass
class ImportSource:
    """An opened import file; iterate :meth:`rows` once, then :meth:`close` (or use ``with``)."""

    path: Path
    kind: str
    format: str
    handle: TextIO
    header: list[str] = field(default_factory=list)  # CSV only
    delimiter: str = ","  # CSV only: a comma, or what a header without commas uses (; or tab)
    ignored_columns: set[str] = field(default_factory=set)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.handle.close()

    def rows(self) -> Iterator[RawRow]:
        return self._csv_rows() if self.format == "csv" else self._jsonl_rows()

    def _csv_rows(self) -> Iterator[RawRow]:
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        # strict: an unclosed quote is an error, not a field that swallows the rest of the file.
        reader = csv.reader(self.handle, delimiter=self.delimiter, strict=True)  # its line 1 is line 2
        columns = len(self.header)
        while True:
            start = reader.line_num + 2
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RawRow(start, None, _csv_problem(exc, start, reader.line_num + 1))
                continue
            if not any(value.strip() for value in record):
                continue  # a blank line, or a spreadsheet's empty row (",,,")
            if len(record) != columns:
                end = reader.line_num + 1
                span = (
                    f"; lines {start}..{end} were read as one row, so a quote on line {start} is probably "
                    "never closed where it should be: close it and import again"
                    if end > start else "; check for a missing or extra separator or an unclosed quote"
                )
                yield RawRow(start, None, f"the row has {len(record)} fields but the header names {columns} columns{span}")
                continue
            yield RawRow(start, {name: value for name, value in zip(self.header, record, strict=True) if name})

    def _jsonl_rows(self) -> Iterator[RawRow]:
        known = COLUMNS[self.kind]
        for number, text in enumerate(self.handle, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text.rstrip(), parse_int=str, parse_float=str, parse_constant=str)
            except json.JSONDecodeError as exc:
                yield RawRow(number, None, f"the line is not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            except RecursionError:
                yield RawRow(number, None, "the line nests lists or objects too deeply to be read; "
                                           "write one flat {...} object per line")
                continue
            if not isinstance(obj, dict):
                yield RawRow(number, None, "the line is not a JSON object; write one {...} object per line")
                continue
            fields: dict[str, str] = {}
            problem = None
            names = {str(key).strip().lower() for key in obj}
            for key, value in obj.items():
                name = str(key).strip().lower()
                if name not in known:
                    meant = misspelled(name, self.kind, names)
                    if meant is not None and problem is None:
                        problem = f"the key {name!r} is not one the import knows; write it as {meant}"
                    self.ignored_columns.add(name)
                if value is None:
                    fields[name] = ""
                elif isinstance(value, bool):
                    fields[name] = "true" if value else "false"
                elif isinstance(value, str):
                    fields[name] = value
                elif name in known and problem is None:
                    problem = f"{name} is a JSON {'list' if isinstance(value, list) else 'object'}; write it as text or a number"
            yield RawRow(number, None, problem) if problem else RawRow(number, fields)


def misspelled(name: str, kind: str, present) -> str | None:
    """The column ``name`` was probably meant to be (``e-mail`` -> ``email``), if that one is not
    ``present`` itself; None for a column that is simply extra."""
    if not name or name in COLUMNS[kind]:
        return None
    return _closest(name, tuple(column for column in COLUMNS[kind] if column not in present))


@lru_cache(maxsize=1024)  # a JSONL file repeats its extra keys on every line
def _closest(name: str, missing: tuple[str, ...]) -> str | None:
    squeezed = {"".join(ch for ch in column if ch.isalnum()): column for column in missing}
    key = "".join(ch for ch in name if ch.isalnum())
    if key in squeezed:
        return squeezed[key]
    close = difflib.get_close_matches(name, missing, n=1, cutoff=0.8)
    return close[0] if close else None


def _csv_problem(error: csv.Error, start: int, end: int) -> str:
    reason = str(error)
    swallowed = f"lines {start}..{end} were read as one field and none of them was imported" if end > start else ""
    if "unexpected end of data" in reason:
        if swallowed:
            return (
                f"line {start} opens a quote that is never closed: {swallowed}; "
                "close the quote (or double a quote inside a field) and import the file again"
            )
        return "a quoted field that starts on this line is never closed; add the missing closing quote"
    if "expected after" in reason:
        if swallowed:
            return (
                f"a quote opened on line {start} is closed only on line {end}, where more text follows it: "
                f"{swallowed}; close the quote on line {start} and import the file again"
            )
        return (
            "a closing quote is followed by more text in the same field; "
            "quote the whole field and double any quote inside it"
        )
    return f"the CSV record cannot be read ({reason}); check its quotes and separators"


def open_source(path: Path, kind: str) -> ImportSource:
    """Open ``path`` for a ``kind`` import, or raise InputError saying why it cannot be read."""
    path = Path(path)
    format_ = FORMATS.get(path.suffix.lower())
    if format_ is None:
        raise InputError(
            f"{path} has an extension the import does not know; "
            "name a CSV file .csv or a JSON Lines file .jsonl."
        )
    _check_readable_utf8(path)
    handle = path.open(encoding="utf-8-sig", newline="" if format_ == "csv" else None)
    source = ImportSource(path=path, kind=kind, format=format_, handle=handle)
    if format_ == "csv":
        try:
            source.header, source.delimiter = _read_header(path, kind, handle)
        except BaseException:
            handle.close()
            raise
        source.ignored_columns = {name for name in source.header if name and name not in COLUMNS[kind]}
    return source


def _read_header(path: Path, kind: str, handle: TextIO) -> tuple[list[str], str]:
    first = handle.readline()
    if not first.strip():
        problem = "is empty" if not first else "has an empty first line"
        raise InputError(
            f"{path} {problem}, but a CSV import needs a header on line 1 naming its columns "
            f"({', '.join(COLUMNS[kind])})."
        )
    # Spreadsheets set to a European locale separate columns with semicolons; some exports use tabs.
    delimiter = next((d for d in (",", ";", "\t") if d in first), ",")
    try:
        header = next(csv.reader([first], delimiter=delimiter))
    except csv.Error as exc:
        raise InputError(f"{path}, line 1: the header cannot be read as CSV ({exc}); fix the header line.") from None
    names = [name.strip().lower() for name in header]
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise InputError(f"{path}, line 1: the header names the column {name} twice; keep one of them.")
        seen.add(name)
    for name in names:
        meant = misspelled(name, kind, seen)
        if meant is not None:
            raise InputError(
                f"{path}, line 1: the header names a column {name!r}, which the import does not know; "
                f"it is probably {meant}: rename it and import again."
            )
    missing = [name for name in REQUIRED_COLUMNS[kind] if name not in seen]
    if missing:
        required = REQUIRED_COLUMNS[kind]
        plural = len(missing) > 1
        article = "an" if kind[0] in "aeiou" else "a"
        raise InputError(
            f"{path}, line 1: the header has no {_join(missing)} column{'s' if plural else ''} "
            f"({article} {kind} file needs {_join(required)}); add {'them' if plural else 'it'} and import again."
        )
    return names, delimiter


def _join(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _check_readable_utf8(path: Path) -> None:
    """Refuse a missing, unreadable or non-UTF-8 file before a single row is written."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line = lines_before + chunk[: max(exc.start - pending, 0)].count(b"\n") + 1
                    raise InputError(_not_utf8(path, line)) from None
                lines_before += chunk.count(b"\n")
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise InputError(_not_utf8(path, lines_before + 1)) from None
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; check the file name and folder.") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file; give the path of a .csv or .jsonl file.") from None
    except PermissionError:
        raise InputError(f"{path} cannot be read (permission denied); check the file's permissions.") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror or exc}); check the file and try again.") from None


def _not_utf8(path: Path, line: int) -> str:
    return (
        f"{path}, line {line}: the file is not UTF-8 text; "
        "save it as UTF-8 (in Excel, \"CSV UTF-8\") and import it again."
    )
