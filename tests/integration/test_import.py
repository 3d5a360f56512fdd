"""`loyalty import`: what lands in PostgreSQL and what the report says, for members, orders and points."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import subprocess
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from campaigns.program import load_program
from core.errors import InputError
from models import AuditEntry, Member, Order, PointEntry
from models.ledger import balance
from services.imports import ImportReport, RowError, import_file
from tests import cli
from tests.conftest import REPO_ROOT, TEST_SECRET

DATA = Path(__file__).resolve().parent.parent / "data" / "import"
MEMBER_HEADER = (
    "external_id,email,phone,first_name,last_name,locale,timezone,birthday,birthday_updated_at,"
    "email_opt_in,sms_opt_in,joined_at,tier"
)
MEMBERS_CSV_ERROR_LINES = [5, 6, 7, 8, 9, 10, 11, 12, 13, 16]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def snapshot(sessions) -> dict[str, list[dict]]:
    """Every row of the data tables, as stored."""
    with sessions() as session:
        return {
            model.__tablename__: [
                dict(row) for row in session.execute(select(model.__table__).order_by(model.__table__.c.id)).mappings()
            ]
            for model in (Member, Order, PointEntry)
        }


def members_by_id(sessions) -> dict[str, Member]:
    with sessions() as session:
        return {m.external_id: m for m in session.scalars(select(Member))}


def audit_entries(sessions) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def seed_members(sessions, *external_ids: str) -> None:
    with sessions() as session, session.begin():
        session.add_all(Member(external_id=e, locale="en", timezone="UTC") for e in external_ids)


def write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def lines_of(report: ImportReport) -> list[int]:
    return [error.line for error in report.errors]


def timed_import(sessions, kind, path, **kwargs) -> tuple[ImportReport, datetime, datetime]:
    before = datetime.now(UTC)
    report = import_file(sessions, kind, path, **kwargs)
    return report, before, datetime.now(UTC)


# --- members --------------------------------------------------------------------------------------

def test_members_csv_lands_the_good_rows_and_reports_each_bad_one_by_line(pg_sessions):
    report, before, after = timed_import(pg_sessions, "members", DATA / "members.csv")

    assert (report.kind, report.path, report.dry_run) == ("members", str(DATA / "members.csv"), False)
    assert (report.rows, report.inserted, report.updated, report.unchanged) == (14, 4, 0, 0)
    assert lines_of(report) == MEMBERS_CSV_ERROR_LINES
    messages = {error.line: error.message for error in report.errors}
    assert messages[7] == "birthday is not a real date; use YYYY-MM-DD or --MM-DD"
    assert messages[16] == "birthday is not a real date (February 29 of a year that is not a leap year); use YYYY-MM-DD or --MM-DD"
    assert messages[5] == "email is not a valid email address; correct it or leave the field empty"
    assert messages[6].startswith("phone has no country code and locale 'en' names no country")
    assert messages[8].startswith("phone is not a valid phone number;")
    assert messages[9] == "external_id is empty; every member needs the shop's id for them"
    assert messages[10] == "locale is not a known locale; use a code like en or fr_FR"
    assert messages[11] == "timezone is not an IANA time zone; use a name like Europe/Paris"
    assert messages[12] == "email_opt_in is not a yes/no value; use true, false, yes, no, 1 or 0"
    assert messages[13].startswith("joined_at is not an ISO 8601 date or date-time")
    _assert_no_contact_details_in(report, DATA / "members.csv")

    members = members_by_id(pg_sessions)
    assert sorted(members) == ["M001", "M002", "M003", "M012"]

    ada = members["M001"]
    assert (ada.email, ada.email_status) == ("Ada.Lovelace@example.com", "ok")
    assert (ada.phone, ada.phone_status) == ("+442079460958", "ok")
    assert (ada.first_name, ada.last_name, ada.locale, ada.timezone, ada.tier) == (
        "Ada", "Lovelace", "en_GB", "Europe/London", "gold")
    assert (ada.birth_year, ada.birth_month, ada.birth_day) == (1985, 12, 10)
    assert ada.joined_at == utc(2023, 3, 1, 9, 30)
    assert ada.birthday_updated_at == ada.joined_at  # first known at import: known since joining
    assert (ada.email_opt_in, ada.email_consent_at, ada.email_consent_source) == (
        True, utc(2023, 3, 1, 9, 30), "import:members.csv")
    assert (ada.sms_opt_in, ada.sms_consent_at, ada.sms_consent_source) == (
        True, utc(2023, 3, 1, 9, 30), "import:members.csv")

    chloe = members["M002"]
    assert chloe.phone == "+33612345678"  # no +: the fr_FR locale's country
    assert chloe.timezone == "Europe/Paris"
    assert (chloe.birth_year, chloe.birth_month, chloe.birth_day) == (None, 2, 29)
    assert chloe.birthday_updated_at == utc(2024, 1, 15)  # as the file says
    assert (chloe.email_opt_in, chloe.email_consent_at) == (True, utc(2022, 6, 1))
    assert (chloe.sms_opt_in, chloe.sms_consent_at, chloe.sms_consent_source) == (False, None, None)
    assert chloe.tier == "bronze"

    bare = members["M003"]
    assert (bare.email, bare.email_status, bare.phone, bare.phone_status) == (None, "missing", None, "missing")
    assert (bare.locale, bare.timezone, bare.tier) == ("en", "UTC", "bronze")
    assert (bare.birth_month, bare.birthday_updated_at, bare.email_opt_in, bare.sms_opt_in) == (None, None, False, False)
    assert before <= bare.joined_at <= after

    leap = members["M012"]
    assert leap.first_name == "Multi\nLine"
    assert (leap.birth_year, leap.birth_month, leap.birth_day) == (2000, 2, 29)
    assert leap.joined_at == utc(2021, 1, 1, 7)  # 08:00+01:00
    assert (leap.email_opt_in, leap.email_consent_at) == (False, None)
    assert (leap.sms_opt_in, leap.sms_consent_at) == (True, utc(2021, 1, 1, 7))


def _assert_no_contact_details_in(report: ImportReport, path: Path) -> None:
    with path.open(encoding="utf-8-sig") as handle:
        if path.suffix == ".csv":
            records = list(csv.DictReader(handle))
        else:
            records = [json.loads(line) for line in handle if line.strip().startswith("{") and line.strip().endswith("}")]
    secrets = {str(r.get(f) or "").strip() for r in records for f in ("email", "phone")} - {""}
    for error in report.errors:
        for secret in secrets:
            assert secret not in error.message, f"line {error.line} repeats a contact detail"


def test_members_jsonl_lands_the_same_members(pg_sessions):
    report = import_file(pg_sessions, "members", DATA / "members.jsonl")

    assert (report.rows, report.inserted, report.updated, report.unchanged) == (10, 4, 0, 0)
    assert [(e.line, e.message) for e in report.errors] == [
        (5, "birthday is not a real date; use YYYY-MM-DD or --MM-DD"),
        (6, "phone is not a valid phone number; write it with its country code, starting with +, or leave the field empty"),
        (8, "the line is not valid JSON (Expecting ',' delimiter at column 44)"),
        (9, "the line is not a JSON object; write one {...} object per line"),
        (10, "first_name is a JSON object; write it as text or a number"),
        (11, "external_id is missing; every member needs the shop's id for them"),
    ]
    assert report.ignored_columns == ["shop_segment"]
    _assert_no_contact_details_in(report, DATA / "members.jsonl")

    members = members_by_id(pg_sessions)
    ada, chloe, leap = members["M001"], members["M002"], members["M012"]
    assert (ada.email, ada.phone, ada.birth_year, ada.sms_opt_in) == ("Ada.Lovelace@example.com", "+442079460958", 1985, True)
    assert ada.email_consent_source == "import:members.jsonl"
    assert (chloe.phone, chloe.birth_month, chloe.birth_day, chloe.birthday_updated_at) == (
        "+33612345678", 2, 29, utc(2024, 1, 15))
    assert (chloe.email_opt_in, chloe.sms_opt_in, chloe.tier) == (True, False, "bronze")
    assert (leap.first_name, leap.sms_consent_at, leap.email_opt_in) == ("Multi\nLine", utc(2021, 1, 1, 7), False)


def test_a_bom_does_not_hide_the_first_column(pg_sessions):
    report = import_file(pg_sessions, "members", DATA / "members_bom.csv")

    assert (report.rows, report.inserted, report.errors) == (2, 2, [])
    members = members_by_id(pg_sessions)
    assert (members["B001"].email, members["B001"].birth_year) == ("bom@example.com", 1990)
    assert (members["B002"].birth_month, members["B002"].birth_day) == (12, 25)


def test_a_file_that_is_not_utf8_is_refused_before_anything_is_written(pg_sessions):
    with pytest.raises(InputError) as caught:
        import_file(pg_sessions, "members", DATA / "members_latin1.csv")

    assert str(caught.value) == (
        f"{DATA / 'members_latin1.csv'}, line 3: the file is not UTF-8 text; "
        'save it as UTF-8 (in Excel, "CSV UTF-8") and import it again.'
    )
    assert members_by_id(pg_sessions) == {}
    assert audit_entries(pg_sessions) == []


def test_a_missing_required_column_is_refused_before_anything_is_written(pg_sessions):
    with pytest.raises(InputError) as caught:
        import_file(pg_sessions, "members", DATA / "members_no_id.csv")

    assert str(caught.value) == (
        f"{DATA / 'members_no_id.csv'}, line 1: the header has no external_id column "
        "(a members file needs external_id); add it and import again."
    )
    assert members_by_id(pg_sessions) == {}


def test_unknown_file_kinds_and_formats_are_refused(pg_sessions, tmp_path):
    sheet = tmp_path / "members.xlsx"
    sheet.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r"members\.xlsx has an extension the import does not know; name a CSV file \.csv"):
        import_file(pg_sessions, "members", sheet)
    with pytest.raises(InputError, match=r"Cannot import 'customers': the kinds of import are members, orders, points\."):
        import_file(pg_sessions, "customers", DATA / "members.csv")
    with pytest.raises(InputError, match=r"nowhere\.csv does not exist"):
        import_file(pg_sessions, "members", tmp_path / "nowhere.csv")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_10_mb_field_is_a_row_error_and_the_other_rows_land(pg_sessions, tmp_path, suffix):
    huge = "x" * (10 * 1024 * 1024)
    path = tmp_path / f"members{suffix}"
    if suffix == ".csv":
        write_csv(path, "external_id,first_name,last_name", "M1,Ann,Small", f"M2,{huge},Huge", "M3,Bob,Small")
    else:
        path.write_text("\n".join(json.dumps(r) for r in [
            {"external_id": "M1", "first_name": "Ann"},
            {"external_id": "M2", "first_name": huge},
            {"external_id": "M3", "first_name": "Bob"},
        ]) + "\n")

    report = import_file(pg_sessions, "members", path)

    assert (report.rows, report.inserted) == (3, 2)
    assert report.errors == [RowError(3 if suffix == ".csv" else 2,
                                      "first_name is 10,485,760 characters long; a field may hold at most 10,000")]
    assert sorted(members_by_id(pg_sessions)) == ["M1", "M3"]


def test_reimporting_changed_members_updates_consent_birthday_and_contact(pg_sessions, tmp_path):
    first = write_csv(
        tmp_path / "first.csv", MEMBER_HEADER,
        "M1,ann@example.com,+33 6 12 34 56 78,Ann,A,fr_FR,Europe/Paris,1990-05-17,,yes,no,2023-01-01,gold",
        "M2,bob@example.com,,Bob,B,en,UTC,--07-04,,no,no,2023-01-02,silver",
        "M3,cy@example.com,,Cy,C,en,UTC,,,yes,yes,2023-01-03,bronze",
    )
    import_file(pg_sessions, "members", first)
    with pg_sessions() as session, session.begin():  # the provider bounced Bob's address since
        session.execute(text("UPDATE members SET email_status = 'invalid' WHERE external_id = 'M2'"))
    stored = members_by_id(pg_sessions)

    second = write_csv(
        tmp_path / "second.csv",
        "external_id,email,phone,birthday,birthday_updated_at,email_opt_in,sms_opt_in",
        "M1,ann@example.com,+33 6 12 34 56 78,1990-05-18,,no,yes",  # opt-ins flipped, birthday fixed
        "M2,bob@example.com,+1 202 555 0143,1985-07-04,2024-02-02T10:00:00Z,no,no",  # year added, phone added
        "M3,cy@example.com,,,,yes,yes",  # nothing new
    )
    report, before, after = timed_import(pg_sessions, "members", second)

    assert (report.rows, report.inserted, report.updated, report.unchanged, report.errors) == (3, 0, 2, 1, [])
    members = members_by_id(pg_sessions)
    ann, bob, cy = members["M1"], members["M2"], members["M3"]

    assert (ann.email_opt_in, ann.email_consent_source, ann.sms_opt_in, ann.sms_consent_source) == (
        False, "import:second.csv", True, "import:second.csv")
    assert before <= ann.email_consent_at <= after and before <= ann.sms_consent_at <= after
    assert (ann.birth_year, ann.birth_month, ann.birth_day) == (1990, 5, 18)
    assert before <= ann.birthday_updated_at <= after  # changed now, so known since now
    assert (ann.tier, ann.first_name, ann.locale) == ("gold", "Ann", "fr_FR")  # columns not in the file stay

    assert bob.birth_year == 1985
    assert bob.birthday_updated_at == utc(2024, 2, 2, 10)  # the file says when it changed
    assert bob.email_status == "invalid"  # same address: the bounce is kept
    assert (bob.phone, bob.phone_status) == ("+12025550143", "ok")
    assert bob.email_consent_at is None and bob.email_consent_source is None

    assert cy.updated_at == stored["M3"].updated_at
    assert before <= ann.updated_at <= after


def test_an_import_does_not_undo_an_opt_out_given_elsewhere(pg_sessions, tmp_path):
    path = write_csv(tmp_path / "shop.csv", "external_id,email,phone,locale,email_opt_in,sms_opt_in",
                     "M1,ann@example.com,+33612345678,fr_FR,yes,yes")
    import_file(pg_sessions, "members", path)
    stop = utc(2025, 3, 3, 3, 3)
    with pg_sessions() as session, session.begin():  # the member texted STOP
        member = session.scalar(select(Member).where(Member.external_id == "M1"))
        member.sms_opt_in, member.sms_consent_at, member.sms_consent_source = False, stop, "sms:STOP"

    report = import_file(pg_sessions, "members", path)

    assert (report.updated, report.unchanged) == (0, 1)
    member = members_by_id(pg_sessions)["M1"]
    assert (member.sms_opt_in, member.sms_consent_at, member.sms_consent_source) == (False, stop, "sms:STOP")
    assert member.email_opt_in is True


@pytest.mark.parametrize(("kind", "header", "rows"), [
    ("members", "external_id,tier", ["M1,silver", "M2,gold", "M1,gold", "M1,gold"]),
    ("orders", "order_id,member_id,placed_at,total,currency",
     ["O1,M1,2024-06-01,10.00,EUR", "O2,M1,2024-06-02,5.00,EUR", "O1,M1,2024-06-01,99.00,EUR", "O1,M1,2024-06-01,10.00,EUR"]),
    ("points", "entry_id,member_id,kind,points,occurred_at",
     ["P1,M1,earn,10,2024-06-01", "P2,M1,earn,5,2024-06-01", "P1,M1,earn,99,2024-06-01", "P1,M1,earn,10,2024-06-01"]),
])
def test_the_same_id_twice_in_a_file_is_reported_with_both_lines_and_the_first_row_wins(pg_sessions, tmp_path, kind, header, rows):
    if kind != "members":
        seed_members(pg_sessions, "M1")
    path = write_csv(tmp_path / "twice.csv", header, *rows)
    report = import_file(pg_sessions, kind, path)

    column, first = header.split(",")[0], rows[0].split(",")[0]
    assert (report.inserted, report.updated, report.unchanged) == (2, 0, 0)
    assert report.errors == [
        RowError(line, f"{column} '{first}' is also on line 2 of this file; an id may appear once in a file, "
                       "so only line 2 is imported: merge the two rows into one")
        for line in (4, 5)
    ]
    table, key, field, value = {
        "members": ("members", "external_id", "tier", "silver"),
        "orders": ("orders", "order_id", "total", Decimal("10.00")),
        "points": ("point_entries", "entry_key", "points", 10),
    }[kind]
    stored = {row[key]: row[field] for row in snapshot(pg_sessions)[table]}
    assert len(stored) == 2 and stored[first] == value  # the first row, not the last


# --- orders ---------------------------------------------------------------------------------------

def test_orders_csv(pg_sessions):
    seed_members(pg_sessions, "M001", "M002")

    report = import_file(pg_sessions, "orders", DATA / "orders.csv")

    assert (report.rows, report.inserted, report.updated, report.unchanged) == (9, 3, 0, 0)
    assert [(e.line, e.message) for e in report.errors] == [
        (5, "member_id 'M404' is not a known member; import the members first"),
        (6, "total is negative; a total is 0 or more"),
        (7, "total has more than 2 decimal places; write it like 19.90"),
        (8, "currency is not a 3-letter currency code like EUR"),
        (9, "status is not one of placed, refunded, cancelled"),
        (10, ("placed_at is not an ISO 8601 date or date-time; "
              "use a form like 2024-05-17 or 2024-05-17T09:30:00+02:00")),
    ]
    with pg_sessions() as session:
        orders = {o.order_id: o for o in session.scalars(select(Order))}
        member_pks = dict(session.execute(select(Member.external_id, Member.id)).all())
    first, second, refund = orders["O-1001"], orders["O-1002"], orders["O-1003"]
    assert (first.member_id, first.placed_at, first.total, first.currency, first.status) == (
        member_pks["M001"], utc(2024, 5, 1, 8, 15), Decimal("59.90"), "EUR", "placed")
    assert (second.total, second.status) == (Decimal("12.00"), "placed")
    assert (refund.member_id, refund.placed_at, refund.total, refund.currency, refund.status) == (
        member_pks["M002"], utc(2024, 6, 13), Decimal("0.00"), "USD", "refunded")


def test_orders_jsonl_and_an_update(pg_sessions, tmp_path):
    seed_members(pg_sessions, "M001", "M002")
    import_file(pg_sessions, "orders", DATA / "orders.csv")
    stored = snapshot(pg_sessions)["orders"]

    report = import_file(pg_sessions, "orders", DATA / "orders.jsonl")  # the same orders, as JSON

    assert (report.rows, report.inserted, report.updated, report.unchanged) == (5, 0, 0, 3)
    assert lines_of(report) == [4, 5]
    assert snapshot(pg_sessions)["orders"] == stored

    refund = tmp_path / "refund.jsonl"
    refund.write_text('{"order_id": "O-1001", "member_id": "M001", "placed_at": "2024-05-01T08:15:00Z", '
                      '"total": 59.90, "currency": "EUR", "status": "refunded"}\n')
    report = import_file(pg_sessions, "orders", refund)

    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 0)
    after = {row["order_id"]: row for row in snapshot(pg_sessions)["orders"]}
    before = {row["order_id"]: row for row in stored}
    assert after["O-1001"]["status"] == "refunded"
    assert after["O-1001"]["updated_at"] > before["O-1001"]["updated_at"]
    assert after["O-1002"] == before["O-1002"]


# --- points ---------------------------------------------------------------------------------------

def test_points_csv_writes_the_ledger_in_file_order(pg_sessions):
    seed_members(pg_sessions, "M001")

    report = import_file(pg_sessions, "points", DATA / "points.csv")

    assert (report.rows, report.inserted, report.updated, report.unchanged) == (12, 6, 0, 0)
    assert [(e.line, e.message) for e in report.errors] == [
        (5, "redeems 500 points but the member has only 150"),
        (8, "points is negative but an earn entry adds points; use an adjust entry to take points away"),
        (9, "member_id 'M404' is not a known member; import the members first"),
        (10, "kind is not one of earn, redeem, expire, adjust"),
        (11, "points is 0; an entry must add or take away points"),
        (12, "points is not a whole number"),
    ]
    with pg_sessions() as session:
        entries = {e.entry_key: e for e in session.scalars(select(PointEntry))}
        member_pk = session.scalar(select(Member.id))
        assert balance(session, member_pk) == 120
    assert {k: (e.kind, e.points, e.remaining) for k, e in entries.items()} == {
        "P-1": ("earn", 100, 0),  # expires first, so consumed first
        "P-2": ("earn", 200, 90),
        "P-3": ("redeem", -150, None),
        "P-5": ("adjust", -20, None),
        "P-6": ("adjust", 30, 30),
        "P-12": ("expire", -40, None),
    }
    assert entries["P-1"].expires_at == utc(2024, 12, 31, 23, 59, 59)
    assert entries["P-2"].expires_at == utc(2025, 3, 1, 12)  # 365 days after it was earned
    assert entries["P-6"].expires_at == utc(2025, 4, 4, 12)
    assert entries["P-3"].expires_at is None
    assert (entries["P-3"].occurred_at, entries["P-3"].source) == (utc(2024, 4, 1, 12), "checkout")


def test_points_jsonl_and_an_entry_that_cannot_change(pg_sessions, tmp_path):
    seed_members(pg_sessions, "M001")

    report = import_file(pg_sessions, "points", DATA / "points.jsonl")

    assert (report.rows, report.inserted, report.unchanged) == (4, 3, 0)
    assert report.errors == [RowError(4, "redeems 500 points but the member has only 150")]
    stored = snapshot(pg_sessions)["point_entries"]

    changed = tmp_path / "changed.csv"
    write_csv(changed, "entry_id,member_id,kind,points,occurred_at,expires_at,source",
              "P-1,M001,earn,120,2024-01-10T12:00:00Z,2024-12-31T23:59:59Z,order O-1",
              "P-2,M001,earn,200,2024-03-01T12:00:00Z,,order O-2")
    report = import_file(pg_sessions, "points", changed)

    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 1)
    assert report.errors == [RowError(2, "entry_id 'P-1' is already in the ledger with other values; "
                                         "ledger entries cannot be changed, so write an adjust entry instead")]
    assert snapshot(pg_sessions)["point_entries"] == stored


# --- whole-import behaviour -----------------------------------------------------------------------

IMPORTS = [
    ("members", "members.csv"),
    ("members", "members.jsonl"),
    ("orders", "orders.csv"),
    ("orders", "orders.jsonl"),
    ("points", "points.csv"),
    ("points", "points.jsonl"),
]


def _prepare(pg_sessions, kind: str) -> None:
    if kind != "members":
        seed_members(pg_sessions, "M001", "M002")


@pytest.mark.parametrize(("kind", "name"), IMPORTS)
def test_importing_the_same_file_twice_changes_nothing(pg_sessions, kind, name):
    _prepare(pg_sessions, kind)
    first = import_file(pg_sessions, kind, DATA / name)
    stored = snapshot(pg_sessions)

    second = import_file(pg_sessions, kind, DATA / name)

    assert first.inserted > 0
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, first.inserted)
    assert lines_of(second) == lines_of(first)
    assert snapshot(pg_sessions) == stored


@pytest.mark.parametrize(("kind", "name"), IMPORTS)
def test_a_dry_run_reports_what_a_real_import_would_and_writes_nothing(pg_sessions, kind, name):
    _prepare(pg_sessions, kind)
    stored = snapshot(pg_sessions)

    dry = import_file(pg_sessions, kind, DATA / name, dry_run=True)

    assert dry.dry_run is True
    assert snapshot(pg_sessions) == stored
    assert audit_entries(pg_sessions) == []
    real = import_file(pg_sessions, kind, DATA / name)
    assert real.dry_run is False
    assert (dry.rows, dry.inserted, dry.updated, dry.unchanged, dry.errors) == (
        real.rows, real.inserted, real.updated, real.unchanged, real.errors)


def test_each_real_import_writes_one_audit_entry(pg_sessions):
    import_file(pg_sessions, "members", DATA / "members.csv", actor="support:alice")
    import_file(pg_sessions, "members", DATA / "members.csv", dry_run=True)

    entries = audit_entries(pg_sessions)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry.actor, entry.action, entry.member_id) == ("support:alice", "import.members", None)
    assert entry.details == {
        "file": "members.csv", "format": "csv", "rows": 14, "inserted": 4, "updated": 0, "unchanged": 0,
        "errors": 10, "error_lines": MEMBERS_CSV_ERROR_LINES,
    }


def test_a_large_file_is_committed_in_chunks_with_progress(pg_sessions, tmp_path):
    count = 2500
    rows = [f"M{i:05d},m{i}@example.com,+4420794{i:05d},en_GB,1980-{i % 12 + 1:02d}-{i % 28 + 1:02d},yes" for i in range(count)]
    rows.append("M00000,m0@example.com,+442079400000,en_GB,1980-01-01,no")  # the first member again, opting out
    path = write_csv(tmp_path / "many.csv", "external_id,email,phone,locale,birthday,email_opt_in", *rows)
    seen: list[int] = []

    report = import_file(pg_sessions, "members", path, progress=seen.append)

    assert seen == [1000, 2000, 2501]
    assert (report.rows, report.inserted, report.updated) == (2501, 2500, 0)
    # an id met two chunks earlier is still known: the later row is refused, the first one stands
    assert report.errors == [RowError(2502, "external_id 'M00000' is also on line 2 of this file; an id may appear "
                                            "once in a file, so only line 2 is imported: merge the two rows into one")]
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Member)) == 2500
        first = session.scalar(select(Member).where(Member.external_id == "M00000"))
        assert (first.email_opt_in, first.email_consent_source) == (True, "import:many.csv")


def test_an_interrupted_import_keeps_its_committed_chunks_and_says_so_in_the_audit_log(pg_sessions, tmp_path):
    rows = [f"M{i:05d},gold" for i in range(2500)]
    path = write_csv(tmp_path / "big.csv", "external_id,tier", *rows)

    def stop_after_two_chunks(done: int) -> None:
        if done == 2000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(pg_sessions, "members", path, progress=stop_after_two_chunks)

    assert len(members_by_id(pg_sessions)) == 2000
    [entry] = audit_entries(pg_sessions)
    assert entry.details == {
        "file": "big.csv", "format": "csv", "rows": 2000, "inserted": 2000, "updated": 0, "unchanged": 0,
        "errors": 0, "error_lines": [], "interrupted": "KeyboardInterrupt",
    }
    report = import_file(pg_sessions, "members", path)  # run again: it picks up where it stopped
    assert (report.inserted, report.unchanged) == (500, 2000)


def test_a_row_the_database_refuses_is_reported_and_the_rest_of_its_chunk_lands(pg_sessions, tmp_path):
    """The parser cannot foresee every refusal (here a trigger); one savepoint per row isolates it."""
    with pg_sessions() as session, session.begin():
        session.execute(text(
            "CREATE OR REPLACE FUNCTION refuse_test_member() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.external_id = 'M-REFUSED' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; "
            "RETURN NEW; END $$"
        ))
        session.execute(text(
            "CREATE TRIGGER refuse_test_member BEFORE INSERT OR UPDATE ON members "
            "FOR EACH ROW EXECUTE FUNCTION refuse_test_member()"
        ))
    seed_members(pg_sessions, "M0")
    try:
        path = write_csv(tmp_path / "refused.csv", "external_id,tier", "M1,gold", "M2,gold", "M-REFUSED,gold", "M3,gold",
                         "M0,silver")
        report = import_file(pg_sessions, "members", path)
    finally:
        with pg_sessions() as session, session.begin():
            session.execute(text("DROP TRIGGER IF EXISTS refuse_test_member ON members"))
            session.execute(text("DROP FUNCTION IF EXISTS refuse_test_member()"))

    assert (report.rows, report.inserted, report.updated) == (5, 3, 1)
    assert report.errors == [RowError(4, "the database refused the row (refused by the test trigger); "
                                         "correct it and import again")]
    assert {k: m.tier for k, m in members_by_id(pg_sessions).items()} == {"M0": "silver", "M1": "gold", "M2": "gold",
                                                                         "M3": "gold"}


def test_imported_times_are_utc_whatever_the_offset(pg_sessions, tmp_path):
    path = write_csv(tmp_path / "zones.csv", "external_id,joined_at,birthday,birthday_updated_at",
                     "M1,2024-03-31T01:30:00-05:00,--03-31,2024-04-01T00:00:00+14:00")
    import_file(pg_sessions, "members", path)

    member = members_by_id(pg_sessions)["M1"]
    assert member.joined_at == utc(2024, 3, 31, 6, 30)
    assert member.birthday_updated_at == utc(2024, 3, 31, 10) == utc(2024, 4, 1) - timedelta(hours=14)


# --- the program's rules, duplicates, the embedded default ----------------------------------------

PROGRAM = load_program(REPO_ROOT / "campaigns" / "program.yaml")  # tiers bronze, silver, gold; points in EUR


def test_a_tier_the_program_does_not_have_is_refused_with_its_line(pg_sessions, tmp_path):
    path = write_csv(tmp_path / "tiers.csv", "external_id,tier", "M1,gold", "M2,platinum", "M3,", "M4,Silver")
    report = import_file(pg_sessions, "members", path, program=PROGRAM)

    assert report.errors == [RowError(3, "tier is not one of the program's tiers (bronze, silver, gold); "
                                         "use one of them or leave the field empty for the lowest")]
    assert {k: m.tier for k, m in members_by_id(pg_sessions).items()} == {"M1": "gold", "M3": "bronze", "M4": "silver"}


def test_orders_in_another_currency_or_in_the_future_are_refused(pg_sessions, tmp_path):
    seed_members(pg_sessions, "M1")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    path = write_csv(tmp_path / "orders.csv", "order_id,member_id,placed_at,total,currency",
                     "O1,M1,2024-06-01T10:00:00Z,10.00,eur", "O2,M1,2024-06-02T10:00:00Z,10.00,USD",
                     f"O3,M1,{tomorrow},10.00,EUR")
    report = import_file(pg_sessions, "orders", path, program=PROGRAM)

    assert report.errors == [
        RowError(3, "currency is USD but the program's points are earned in EUR; convert the order to EUR or leave it out"),
        RowError(4, "placed_at is in the future; import an order once it is placed, "
                    "and write its time with its UTC offset like 2024-05-17T09:30:00+02:00"),
    ]
    assert [row["order_id"] for row in snapshot(pg_sessions)["orders"]] == ["O1"]


def embedded_loyalty(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI (in this process, ``tests/cli.py``) on the embedded default: a SQLite file under ``home``."""
    return cli.loyalty({"LOYALTY_HOME": str(home), "LOYALTY_SECRET": TEST_SECRET, "COLUMNS": "300"}, *args)


def sqlite_counts(home: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(home / "loyalty.db")) as db:
        return (db.execute("SELECT count(*) FROM members").fetchone()[0],
                db.execute("SELECT count(*) FROM audit_log").fetchone()[0])


def test_a_dry_run_writes_nothing_on_the_embedded_sqlite_default_either(tmp_path):
    home = tmp_path / "home"
    path = write_csv(tmp_path / "members.csv", "external_id,tier", *(f"M{i},gold" for i in range(1, 1501)))
    embedded_loyalty(home, "import", "members", str(DATA / "members_bom.csv"))  # something already there
    before = sqlite_counts(home)

    dry = embedded_loyalty(home, "import", "members", str(path), "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert f"Would import 1500 members row(s) from {path}: 1500 new" in dry.stdout
    assert sqlite_counts(home) == before
    real = embedded_loyalty(home, "import", "members", str(path))
    assert real.returncode == 0, real.stderr
    assert sqlite_counts(home) == (before[0] + 1500, before[1] + 1)


def test_the_cli_prints_no_contact_details_and_no_terminal_control_characters(tmp_path):
    home = tmp_path / "home"
    path = write_csv(tmp_path / "members\x1b[2J\x1b]0;owned\x07.csv", "external_id,timezone,tier",
                     "M1,Europe/Paris,gold", "M2,+33 6 12 34 56 78,gold", "M3,UTC,platinum", "M\x1b[31m4,UTC,gold",
                     "M\x1b[31m4,UTC,silver")

    result = embedded_loyalty(home, "import", "members", str(path))

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", output), output
    shown = str(path).replace("\x1b[2J", "").replace("\x1b]0;owned\x07", "")
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"{shown}, line 3: timezone is not an IANA time zone; use a name like Europe/Paris",
        f"{shown}, line 4: tier is not one of the program's tiers (bronze, silver, gold); "
        "use one of them or leave the field empty for the lowest",
        f"{shown}, line 6: external_id 'M\\x1b[31m4' is also on line 5 of this file; an id may appear once in a file, "
        "so only line 5 is imported: merge the two rows into one",
    ]
    assert "6 12 34" not in output
    assert f"Imported 5 members row(s) from {shown}: 2 new, 0 updated, 0 unchanged, 3 rejected." in result.stdout
