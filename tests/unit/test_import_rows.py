"""Import parsing without a database: text in, typed values or one readable sentence out."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import InputError
from services.imports.reading import open_source
from services.imports.rows import (
    Birthday,
    RowProblem,
    parse_birthday,
    parse_member,
    parse_order,
    parse_point,
    shown,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "import"
TODAY = date(2026, 6, 1)


def member(**fields: str):
    return parse_member({"external_id": "M1", **fields}, default_locale="en", default_timezone="UTC", today=TODAY)


def problem(parse, *args, **kwargs) -> str:
    with pytest.raises(RowProblem) as caught:
        parse(*args, **kwargs)
    return str(caught.value)


# --- members --------------------------------------------------------------------------------------

def test_a_member_with_only_an_id_gets_the_defaults():
    row = member()
    assert row.external_id == "M1"
    assert row.given == frozenset({"external_id"})
    assert (row.email, row.phone, row.first_name, row.last_name, row.birthday) == (None, None, None, None, None)
    assert (row.locale, row.timezone, row.tier) == ("en", "UTC", "bronze")
    assert (row.email_opt_in, row.sms_opt_in, row.joined_at) == (False, False, None)


def test_defaults_for_locale_and_timezone_come_from_the_caller():
    row = parse_member({"external_id": "M1", "locale": "", "timezone": " "},
                       default_locale="fr_FR", default_timezone="Europe/Paris", today=TODAY)
    assert (row.locale, row.timezone) == ("fr_FR", "Europe/Paris")
    assert row.given == frozenset({"external_id", "locale", "timezone"})


def test_external_id_is_required():
    assert problem(member, external_id="  ") == "external_id is empty; every member needs the shop's id for them"
    assert problem(parse_member, {"email": "a@example.com"}).startswith("external_id is missing;")


def test_email_is_normalised_and_an_empty_one_is_none():
    assert member(email="  Ada.Lovelace@Example.COM ").email == "Ada.Lovelace@example.com"
    assert member(email="").email is None


@pytest.mark.parametrize("email", ["ada@@example.com", "no-at-sign.example.com", "ada@example", "ada lovelace@example.com"])
def test_a_bad_email_names_the_field_but_not_the_value(email):
    message = problem(member, email=email)
    assert message == "email is not a valid email address; correct it or leave the field empty"
    assert email not in message


def test_phone_numbers_become_e164():
    assert member(phone="+44 20 7946 0958").phone == "+442079460958"
    assert member(phone="06 12 34 56 78", locale="fr_FR").phone == "+33612345678"
    assert member(phone="0151 23456789", locale="de-DE").phone == "+4915123456789"
    assert member(phone="").phone is None


def test_a_phone_without_country_code_needs_a_locale_with_a_country():
    message = problem(member, phone="7946 0958", locale="en")
    assert message == (
        "phone has no country code and locale 'en' names no country; write it with its country code, starting with +"
    )
    assert "7946" not in message


@pytest.mark.parametrize("phone", ["+1 555 0100", "+33 1", "+call me", "+44 7700 900123"])
def test_an_invalid_phone_is_a_row_error_without_the_number(phone):
    message = problem(member, phone=phone)
    assert message.startswith("phone is not a valid phone number")
    assert phone not in message and phone.replace(" ", "") not in message


def test_locale_and_timezone_are_checked_and_spelled_canonically():
    assert member(locale="fr-FR").locale == "fr_FR"
    assert member(locale="pt_BR").locale == "pt_BR"
    assert member(timezone="europe/paris").timezone == "Europe/Paris"
    assert problem(member, locale="xx") == "locale is not a known locale; use a code like en or fr_FR"
    assert problem(member, locale="en_ZZ").startswith("locale is not a known locale")
    assert problem(member, timezone="Mars/Base") == (
        "timezone is not an IANA time zone; use a name like Europe/Paris"
    )
    assert problem(member, timezone="localtime").startswith("timezone is not an IANA time zone")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1985-12-10", Birthday(month=12, day=10, year=1985)),
        ("--12-10", Birthday(month=12, day=10)),
        ("--02-29", Birthday(month=2, day=29)),
        ("2000-02-29", Birthday(month=2, day=29, year=2000)),
        (" 1990-01-01 ", Birthday(month=1, day=1, year=1990)),
    ],
)
def test_birthdays(text, expected):
    assert parse_birthday(text, TODAY) == expected
    assert member(birthday=text).birthday == expected


def test_feb_30_is_not_a_birthday():
    assert problem(parse_birthday, "2027-02-30", date(2030, 1, 1)) == (
        "birthday is not a real date; use YYYY-MM-DD or --MM-DD"
    )
    assert problem(parse_birthday, "--02-30", TODAY) == "birthday is not a real date; use YYYY-MM-DD or --MM-DD"


def test_feb_29_needs_a_leap_year_when_a_year_is_given():
    assert problem(parse_birthday, "2001-02-29", TODAY) == (
        "birthday is not a real date (February 29 of a year that is not a leap year); use YYYY-MM-DD or --MM-DD"
    )


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("10/12/1985", "birthday is not a date"),
        ("1985-12", "birthday is not a date"),
        ("---12-10", "birthday is not a date"),
        ("1985-13-01", "birthday is not a real date"),
        ("2026-06-02", "birthday is in the future"),
        ("1815-12-10", "birthday is before 1900"),
    ],
)
def test_bad_birthdays(text, start):
    assert problem(parse_birthday, text, TODAY).startswith(start)


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("TRUE", True), ("Yes", True), ("1", True),
    ("false", False), ("No", False), ("0", False), ("", False),
])
def test_opt_ins(text, value):
    row = member(email_opt_in=text, sms_opt_in=text)
    assert (row.email_opt_in, row.sms_opt_in) == (value, value)


def test_a_bad_opt_in():
    assert problem(member, sms_opt_in="maybe") == (
        "sms_opt_in is not a yes/no value; use true, false, yes, no, 1 or 0"
    )


def test_joined_at_and_birthday_updated_at_are_utc():
    assert member(joined_at="2024-05-17").joined_at == datetime(2024, 5, 17, tzinfo=UTC)
    assert member(joined_at="2024-05-17T09:30:00").joined_at == datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
    assert member(joined_at="2024-05-17T09:30:00+02:00").joined_at == datetime(2024, 5, 17, 7, 30, tzinfo=UTC)
    assert member(birthday_updated_at="2024-05-17T09:30:00Z").birthday_updated_at == datetime(2024, 5, 17, 9, 30, tzinfo=UTC)
    assert problem(member, joined_at="yesterday").startswith("joined_at is not an ISO 8601 date or date-time")


def test_tier_and_names():
    row = member(tier=" gold ", first_name=" Ada ", last_name="")
    assert (row.tier, row.first_name, row.last_name) == ("gold", "Ada", None)
    assert member(tier="").tier == "bronze"
    assert problem(member, tier="x" * 33) == "tier is longer than 32 characters"


PROGRAM_TIERS = ["bronze", "silver", "gold"]


def test_a_tier_must_be_one_of_the_programs():
    def tiered(tier: str):
        return parse_member({"external_id": "M1", "tier": tier}, today=TODAY, tiers=PROGRAM_TIERS)

    assert problem(tiered, "platinum") == (
        "tier is not one of the program's tiers (bronze, silver, gold); use one of them or leave the field empty for the lowest")
    assert tiered(" Gold ").tier == "gold"  # spelled as the program spells it
    assert tiered("").tier == "bronze"  # the program's lowest
    assert parse_member({"external_id": "M1"}, today=TODAY, tiers=["basic", "plus"]).tier == "basic"
    assert problem(member, first_name="x" * 201) == "first_name is longer than 200 characters"


def test_a_field_over_10000_characters_is_a_row_error():
    assert problem(member, last_name="x" * 10_001) == (
        "last_name is 10,001 characters long; a field may hold at most 10,000"
    )
    message = problem(member, email="x" * 20_000 + "@example.com")
    assert message.startswith("email is 20,012 characters long")
    assert "xxxx" not in message


# --- orders ---------------------------------------------------------------------------------------

def order(**fields: str):
    base = {"order_id": "O1", "member_id": "M1", "placed_at": "2024-06-01T10:00:00Z", "total": "19.90", "currency": "eur"}
    return parse_order({**base, **fields})


def test_an_order():
    row = order()
    assert (row.order_id, row.member_id, row.total, row.currency, row.status) == ("O1", "M1", Decimal("19.90"), "EUR", "placed")
    assert row.placed_at == datetime(2024, 6, 1, 10, tzinfo=UTC)
    assert "status" not in row.given
    assert order(status="Refunded", total="12").status == "refunded"
    assert order(total="12").total == Decimal("12.00")
    assert order(total="0").total == Decimal("0.00")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"total": "-3"}, "total is negative; a total is 0 or more"),
        ({"total": "12,50"}, "total is not a number; write it like 19.90"),
        ({"total": "NaN"}, "total is not a number; write it like 19.90"),
        ({"total": "1.999"}, "total has more than 2 decimal places; write it like 19.90"),
        ({"total": "10000000000"}, "total is too large; the most is 9,999,999,999.99"),
        ({"total": ""}, "total is empty; write the order total like 19.90"),
        ({"currency": "EURO"}, "currency is not a 3-letter currency code like EUR"),
        ({"currency": "€"}, "currency is not a 3-letter currency code like EUR"),
        ({"status": "shipped"}, "status is not one of placed, refunded, cancelled"),
        ({"placed_at": ""}, "placed_at is empty; give an ISO 8601 date or date-time like 2024-05-17T09:30:00Z"),
        ({"member_id": ""}, "member_id is empty; give the external_id of the member who placed the order"),
    ],
)
def test_bad_orders(fields, message):
    assert problem(order, **fields) == message


NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_an_order_in_another_currency_than_the_programs_is_refused():
    def priced(currency: str):
        return parse_order({"order_id": "O1", "member_id": "M1", "placed_at": "2024-06-01T10:00:00Z", "total": "19.90",
                            "currency": currency}, currency="EUR", now=NOW)

    assert problem(priced, "usd") == (
        "currency is USD but the program's points are earned in EUR; convert the order to EUR or leave it out")
    assert priced("eur").currency == "EUR"


def test_an_order_dated_in_the_future_is_refused():
    def placed(at: str):
        return parse_order({"order_id": "O1", "member_id": "M1", "placed_at": at, "total": "19.90", "currency": "EUR"},
                           currency="EUR", now=NOW)

    assert problem(placed, "2026-06-02T12:00:00Z") == (
        "placed_at is in the future; import an order once it is placed, "
        "and write its time with its UTC offset like 2024-05-17T09:30:00+02:00")
    assert problem(placed, "2026-06-01T14:00:00").startswith("placed_at is in the future")  # Paris time without offset
    assert placed("2026-06-01T12:04:00Z").placed_at == datetime(2026, 6, 1, 12, 4, tzinfo=UTC)  # a shop's clock a bit fast
    assert placed("2026-06-01T13:00:00+02:00").placed_at == datetime(2026, 6, 1, 11, tzinfo=UTC)


PHONE = "+33 6 12 34 56 78"


@pytest.mark.parametrize("column", ["locale", "timezone", "birthday", "birthday_updated_at", "email_opt_in",
                                    "sms_opt_in", "joined_at", "tier", "email"])
def test_a_member_row_error_never_repeats_the_value(column):
    """A shifted column puts a phone number where a time zone should be: the message names the column only."""
    message = problem(parse_member, {"external_id": "M1", column: PHONE}, today=TODAY, tiers=PROGRAM_TIERS)
    assert message.startswith(f"{column} ")
    assert "12 34" not in message and "33" not in message


@pytest.mark.parametrize("column", ["placed_at", "total", "currency", "status"])
def test_an_order_row_error_never_repeats_the_value(column):
    fields = {"order_id": "O1", "member_id": "M1", "placed_at": "2024-06-01", "total": "1", "currency": "EUR", column: PHONE}
    message = problem(parse_order, fields, currency="EUR", now=NOW)
    assert message.startswith(f"{column} ") and "12 34" not in message


@pytest.mark.parametrize("column", ["kind", "points", "occurred_at", "expires_at"])
def test_a_points_row_error_never_repeats_the_value(column):
    fields = {"entry_id": "P1", "member_id": "M1", "kind": "earn", "points": "5", "occurred_at": "2024-06-01", column: PHONE}
    message = problem(parse_point, fields)
    assert message.startswith(f"{column} ") and "12 34" not in message


def test_an_id_is_quoted_with_contact_details_masked():
    assert shown("M-404") == "'M-404'"
    assert shown("ada@example.com") == "'[email]'"
    assert shown("+33 6 12 34 56 78") == "'[phone]'"


# --- points ---------------------------------------------------------------------------------------

def entry(**fields: str):
    base = {"entry_id": "P1", "member_id": "M1", "kind": "earn", "points": "100", "occurred_at": "2024-03-01T12:00:00Z"}
    return parse_point({**base, **fields})


def test_an_earn_entry_expires_after_365_days_by_default():
    row = entry()
    assert (row.kind, row.points, row.source) == ("earn", 100, None)
    assert row.expires_at == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert entry(expires_at="2024-12-31T23:59:59Z").expires_at == datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_redeem_and_expire_take_points_whatever_the_sign():
    for kind in ("redeem", "expire"):
        assert entry(kind=kind, points="150").points == -150
        assert entry(kind=kind, points="-150").points == -150
        assert entry(kind=kind, points="150", expires_at="2030-01-01").expires_at is None


def test_adjust_goes_either_way():
    assert entry(kind="adjust", points="+30").points == 30
    assert entry(kind="adjust", points="+30").expires_at == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert entry(kind="ADJUST", points="-20").points == -20
    assert entry(kind="adjust", points="-20").expires_at is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"points": "-5"}, "points is negative but an earn entry adds points; use an adjust entry to take points away"),
        ({"points": "0"}, "points is 0; an entry must add or take away points"),
        ({"points": "1.5"}, "points is not a whole number"),
        ({"points": "99999999999"}, "points is too large; the most is 2,147,483,647"),
        ({"kind": "bonus"}, "kind is not one of earn, redeem, expire, adjust"),
        ({"expires_at": "2024-03-01T12:00:00Z"}, "expires_at is not after occurred_at; points must expire after they are earned"),
        ({"occurred_at": "soon"}, "occurred_at is not an ISO 8601 date or date-time; use a form like 2024-05-17 or 2024-05-17T09:30:00+02:00"),
        ({"entry_id": ""}, "entry_id is empty; every entry needs the shop's id for it"),
    ],
)
def test_bad_entries(fields, message):
    assert problem(entry, **fields) == message


# --- reading files --------------------------------------------------------------------------------

def read(path: Path, kind: str = "members"):
    with open_source(path, kind) as source:
        return list(source.rows()), source


def test_csv_line_numbers_follow_the_file_even_across_quoted_newlines():
    rows, source = read(DATA / "members.csv")
    assert [row.line for row in rows] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16]
    assert rows[-2].fields["first_name"] == "Multi\nLine"
    assert source.ignored_columns == set()


def test_a_bom_is_not_part_of_the_first_column():
    rows, source = read(DATA / "members_bom.csv")
    assert source.header == ["external_id", "email", "birthday"]
    assert [(row.line, row.fields["external_id"]) for row in rows] == [(2, "B001"), (3, "B002")]


def test_a_file_that_is_not_utf8_names_the_line():
    with pytest.raises(InputError) as caught:
        open_source(DATA / "members_latin1.csv", "members")
    assert str(caught.value) == (
        f"{DATA / 'members_latin1.csv'}, line 3: the file is not UTF-8 text; "
        'save it as UTF-8 (in Excel, "CSV UTF-8") and import it again.'
    )


def test_a_missing_required_column_is_refused():
    with pytest.raises(InputError) as caught:
        open_source(DATA / "members_no_id.csv", "members")
    assert str(caught.value) == (
        f"{DATA / 'members_no_id.csv'}, line 1: the header has no external_id column "
        "(a members file needs external_id); add it and import again."
    )
    with pytest.raises(InputError) as caught:
        open_source(DATA / "points.csv", "orders")
    assert str(caught.value) == (
        f"{DATA / 'points.csv'}, line 1: the header has no order_id, placed_at, total and currency columns "
        "(an orders file needs order_id, member_id, placed_at, total and currency); add them and import again."
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty, but a CSV import needs a header on line 1 naming its columns"),
        (b"\nM1\n", "has an empty first line, but a CSV import needs a header on line 1"),
        (b"external_id,email,EMAIL\nM1,a@example.com,b@example.com\n", "line 1: the header names the column email twice"),
    ],
)
def test_unusable_csv_headers(tmp_path, content, message):
    path = tmp_path / "members.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        open_source(path, "members")


def test_only_csv_and_jsonl_are_read(tmp_path):
    path = tmp_path / "members.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(InputError) as caught:
        open_source(path, "members")
    assert str(caught.value) == (
        f"{path} has an extension the import does not know; name a CSV file .csv or a JSON Lines file .jsonl."
    )


def test_a_missing_file_or_a_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"members\.csv does not exist; check the file name and folder\."):
        open_source(tmp_path / "members.csv", "members")
    folder = tmp_path / "exports.csv"
    folder.mkdir()
    with pytest.raises(InputError, match=r"exports\.csv is a folder, not a file"):
        open_source(folder, "members")


def test_csv_rows_with_the_wrong_number_of_fields_and_blank_rows(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("External_ID , Email,segment\nM1,a@example.com,vip\n\n,,\nM2,b@example.com\nM3,c@example.com,x,y\n")
    rows, source = read(path)
    assert [(row.line, row.fields) for row in rows[:1]] == [(2, {"external_id": "M1", "email": "a@example.com", "segment": "vip"})]
    assert [(row.line, row.problem) for row in rows[1:]] == [
        (5, "the row has 2 fields but the header names 3 columns; check for a missing or extra separator or an unclosed quote"),
        (6, "the row has 4 fields but the header names 3 columns; check for a missing or extra separator or an unclosed quote"),
    ]
    assert source.ignored_columns == {"segment"}


def test_jsonl_values_become_text_and_bad_lines_are_row_problems():
    rows, source = read(DATA / "members.jsonl")
    by_line = {row.line: row for row in rows}
    assert 3 not in by_line  # a blank line is not a row
    assert by_line[1].fields["email_opt_in"] == "true"
    assert by_line[1].fields["sms_opt_in"] == "1"
    assert by_line[2].fields["tier"] == ""
    assert by_line[7].fields["first_name"] == "Multi\nLine"
    assert by_line[8].problem == "the line is not valid JSON (Expecting ',' delimiter at column 44)"
    assert by_line[9].problem == "the line is not a JSON object; write one {...} object per line"
    assert by_line[10].problem == "first_name is a JSON object; write it as text or a number"
    assert source.ignored_columns == {"shop_segment"}


def test_jsonl_numbers_keep_their_digits(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text('{"order_id": 17, "total": 19.90, "status": null}\n')
    rows, _ = read(path, "orders")
    assert rows[0].fields == {"order_id": "17", "total": "19.90", "status": ""}


def test_broken_csv_quoting_is_a_row_problem_and_reading_goes_on(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text('external_id,first_name\nM1,"Bob"by,\nM2,Cy\nM3,"Ann\nM4,Dee\n')
    rows, _ = read(path)
    assert [(row.line, row.fields, row.problem) for row in rows] == [
        (2, None, ("a closing quote is followed by more text in the same field; "
                   "quote the whole field and double any quote inside it")),
        (3, {"external_id": "M2", "first_name": "Cy"}, None),
        (4, None, ("line 4 opens a quote that is never closed: lines 4..5 were read as one field and none of them "
                   "was imported; close the quote (or double a quote inside a field) and import the file again")),
    ]


def test_an_unclosed_quote_names_every_line_it_swallowed(tmp_path):
    path = tmp_path / "members.csv"
    good = [f"M{i},Ann" for i in range(4, 50_002)]  # 49,998 good rows after the unclosed quote
    path.write_text("\n".join(["external_id,first_name", "M1,Ann", 'M2,"Bob', *good]) + "\n")
    rows, _ = read(path)
    assert [(row.line, row.fields, row.problem) for row in rows] == [
        (2, {"external_id": "M1", "first_name": "Ann"}, None),
        (3, None, ("line 3 opens a quote that is never closed: lines 3..50001 were read as one field and none of "
                   "them was imported; close the quote (or double a quote inside a field) and import the file again")),
    ]


def test_a_quote_closed_many_lines_later_names_the_lines_in_between(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text('external_id,first_name\nM1,"Bob\nM2,Cy\nM3,"Ann"\nM4,Dee\n')
    rows, _ = read(path)
    assert [(row.line, row.fields, row.problem) for row in rows] == [
        (2, None, ("a quote opened on line 2 is closed only on line 4, where more text follows it: lines 2..4 were "
                   "read as one field and none of them was imported; close the quote on line 2 and import the file again")),
        (5, {"external_id": "M4", "first_name": "Dee"}, None),
    ]


def test_a_jsonl_line_nested_too_deeply_is_that_lines_error(tmp_path):
    path = tmp_path / "members.jsonl"
    deep = '{"external_id": "M2", "tier": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text('{"external_id": "M1"}\n' + deep + '\n{"external_id": "M3"}\n')
    rows, _ = read(path)
    assert [(row.line, row.fields, row.problem) for row in rows] == [
        (1, {"external_id": "M1"}, None),
        (2, None, "the line nests lists or objects too deeply to be read; write one flat {...} object per line"),
        (3, {"external_id": "M3"}, None),
    ]


@pytest.mark.parametrize(("column", "meant"), [("e-mail", "email"), ("First Name", "first_name"), ("emial", "email"),
                                               ("sms opt-in", "sms_opt_in")])
def test_a_misspelled_column_makes_the_file_an_error(tmp_path, column, meant):
    path = tmp_path / "members.csv"
    path.write_text(f"external_id,{column},tier\nM1,x,gold\n")
    with pytest.raises(InputError) as caught:
        read(path)
    assert str(caught.value) == (
        f"{path}, line 1: the header names a column {column.lower()!r}, which the import does not know; "
        f"it is probably {meant}: rename it and import again."
    )


def test_an_extra_column_that_misspells_nothing_is_only_noted(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("external_id,email,notes,e_mail_2\nM1,,VIP,\n")  # email is there: e_mail_2 is an extra
    rows, source = read(path)
    assert rows[0].fields["external_id"] == "M1"
    assert source.ignored_columns == {"notes", "e_mail_2"}


def test_a_misspelled_key_in_a_jsonl_line_is_that_lines_error(tmp_path):
    path = tmp_path / "members.jsonl"
    path.write_text('{"external_id": "M1", "e-mail": "x"}\n{"external_id": "M2", "email": "", "vip": true}\n')
    rows, _ = read(path)
    assert [(row.line, row.fields, row.problem) for row in rows] == [
        (1, None, "the key 'e-mail' is not one the import knows; write it as email"),
        (2, {"external_id": "M2", "email": "", "vip": "true"}, None),
    ]


def test_a_nul_character_is_a_row_problem():
    assert problem(member, first_name="Ann\x00") == "first_name contains a NUL character; remove it"


def test_a_semicolon_separated_export_is_read_too(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("external_id;first_name;tier\nM1;Ann;gold\nM2;\"Smith; Jr\";\n", encoding="utf-8")
    rows, source = read(path)
    assert source.delimiter == ";"
    assert [row.fields for row in rows] == [
        {"external_id": "M1", "first_name": "Ann", "tier": "gold"},
        {"external_id": "M2", "first_name": "Smith; Jr", "tier": ""},
    ]


def test_a_bom_before_jsonl_is_skipped(tmp_path):
    path = tmp_path / "members.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"external_id": "M1"}\r\n{"external_id": "M2"}\r\n')
    rows, _ = read(path)
    assert [(row.line, row.fields) for row in rows] == [(1, {"external_id": "M1"}), (2, {"external_id": "M2"})]
