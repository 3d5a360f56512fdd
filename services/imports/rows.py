"""Pure row parsing: the text of one imported row becomes typed values, or one sentence saying why not.

Nothing here touches the database, so every rule can be tested on its own. Each ``parse_*`` function
takes the row's fields (column name -> text, as read from CSV or JSONL) and returns a typed row, or
raises :class:`RowProblem` whose message names the field and says what is wrong and what to write
instead. A message never repeats the field's value: a shifted column puts a phone number in the
time zone column, a name in the locale column. Only an id (the shop's, not personal) is quoted,
masked by :func:`core.redact.redact` should it hold an address or a number.

A column that is absent from the file is *not given*: the writer leaves that attribute of an
existing record alone (a new record gets the default). A column that is present but empty means
"empty", with the default the import rules give it (no email, opt-in false, tier bronze...).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email

from core.redact import redact
from models.order import OrderStatus
from models.points import EntryKind

#: The longest field an import accepts; a longer one is a row error, not a crash.
MAX_FIELD_LENGTH = 10_000

MEMBER_COLUMNS = (
    "external_id", "email", "phone", "first_name", "last_name", "locale", "timezone", "birthday",
    "birthday_updated_at", "email_opt_in", "sms_opt_in", "joined_at", "tier",
)
ORDER_COLUMNS = ("order_id", "member_id", "placed_at", "total", "currency", "status")
POINT_COLUMNS = ("entry_id", "member_id", "kind", "points", "occurred_at", "expires_at", "source")

COLUMNS = {"members": MEMBER_COLUMNS, "orders": ORDER_COLUMNS, "points": POINT_COLUMNS}
REQUIRED_COLUMNS = {
    "members": ("external_id",),
    "orders": ("order_id", "member_id", "placed_at", "total", "currency"),
    "points": ("entry_id", "member_id", "kind", "points", "occurred_at"),
}

DEFAULT_TIER = "bronze"
DEFAULT_LOT_LIFETIME = timedelta(days=365)
MAX_TOTAL = Decimal("9999999999.99")  # Numeric(12, 2)
MAX_POINTS = 2**31 - 1  # a PostgreSQL integer
#: How far ahead of our clock an order may be dated (the shop's clock may run a little fast).
CLOCK_SKEW = timedelta(minutes=5)

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
_BIRTHDAY = re.compile(r"^(?:(\d{4})-|--)(\d{2})-(\d{2})$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_INTEGER = re.compile(r"^[+-]?\d+$")


class RowProblem(ValueError):
    """One row cannot be imported; the message is the sentence the user reads."""


@dataclass(frozen=True)
class Birthday:
    month: int
    day: int
    year: int | None = None


@dataclass(frozen=True)
class MemberRow:
    external_id: str
    given: frozenset[str]  # the member columns present in the row
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str = "en"
    timezone: str = "UTC"
    birthday: Birthday | None = None
    birthday_updated_at: datetime | None = None
    email_opt_in: bool = False
    sms_opt_in: bool = False
    joined_at: datetime | None = None  # None: now, for a new member
    tier: str = DEFAULT_TIER


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    member_id: str  # the member's external id
    placed_at: datetime
    total: Decimal
    currency: str
    status: str
    given: frozenset[str]


@dataclass(frozen=True)
class PointRow:
    entry_id: str
    member_id: str  # the member's external id
    kind: str
    points: int  # signed as the ledger stores it
    occurred_at: datetime
    expires_at: datetime | None  # lots (positive entries) only
    source: str | None


# --- shared field rules -------------------------------------------------------------------------

def shown(value: str, limit: int = 40) -> str:
    """An id quoted for a message: cut short so a garbage field cannot flood the report, and with
    anything that looks like an email address or a phone number masked."""
    value = redact(value.strip()) or ""
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def check_fields(fields: Mapping[str, str]) -> None:
    """Refuse what no column can hold: an over-long field, or a NUL character (PostgreSQL refuses it)."""
    for name, value in fields.items():
        if len(value) > MAX_FIELD_LENGTH:
            raise RowProblem(
                f"{name or 'an unnamed column'} is {len(value):,} characters long; "
                f"a field may hold at most {MAX_FIELD_LENGTH:,}"
            )
        if "\x00" in value:
            raise RowProblem(f"{name or 'an unnamed column'} contains a NUL character; remove it")


def _text(fields: Mapping[str, str], name: str) -> str:
    return (fields.get(name) or "").strip()


def _required(fields: Mapping[str, str], name: str, max_length: int, what: str) -> str:
    value = _text(fields, name)
    if not value:
        raise RowProblem(f"{name} is {'empty' if name in fields else 'missing'}; {what}")
    return _limited(name, value, max_length)


def _limited(name: str, value: str, max_length: int) -> str:
    if len(value) > max_length:
        raise RowProblem(f"{name} is longer than {max_length} characters")
    return value


def _optional(fields: Mapping[str, str], name: str, max_length: int) -> str | None:
    value = _text(fields, name)
    return _limited(name, value, max_length) if value else None


def parse_instant(name: str, text: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RowProblem(
            f"{name} is not an ISO 8601 date or date-time; "
            "use a form like 2024-05-17 or 2024-05-17T09:30:00+02:00"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _optional_instant(fields: Mapping[str, str], name: str) -> datetime | None:
    value = _text(fields, name)
    return parse_instant(name, value) if value else None


def _required_instant(fields: Mapping[str, str], name: str) -> datetime:
    value = _text(fields, name)
    if not value:
        raise RowProblem(f"{name} is empty; give an ISO 8601 date or date-time like 2024-05-17T09:30:00Z")
    return parse_instant(name, value)


def parse_flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RowProblem(f"{name} is not a yes/no value; use true, false, yes, no, 1 or 0")


def parse_birthday(text: str, today: date) -> Birthday:
    """``YYYY-MM-DD``, or ``--MM-DD`` when the year is unknown (Feb 29 is allowed without a year)."""
    value = text.strip()
    hint = "use YYYY-MM-DD or --MM-DD"
    match = _BIRTHDAY.match(value)
    if not match:
        raise RowProblem(f"birthday is not a date; {hint}")
    year = int(match.group(1)) if match.group(1) else None
    month, day = int(match.group(2)), int(match.group(3))
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year or 2000, month)[1]:
        if year is not None and (month, day) == (2, 29):
            raise RowProblem(f"birthday is not a real date (February 29 of a year that is not a leap year); {hint}")
        raise RowProblem(f"birthday is not a real date; {hint}")
    if year is not None:
        if date(year, month, day) > today:
            raise RowProblem(f"birthday is in the future; {hint}")
        if year < 1900:
            raise RowProblem(f"birthday is before 1900; {hint}, leaving the year out if unknown")
    return Birthday(month=month, day=day, year=year)


#: Names a zone database may hold that are no place's time: the host's own, and tzdata's placeholder.
_NOT_A_PLACE = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1)
def _zones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones() if name not in _NOT_A_PLACE}


def parse_timezone(text: str) -> str:
    """An IANA zone name, spelled as the database spells it (``europe/paris`` -> ``Europe/Paris``)."""
    name = _zones_by_lower_name().get(text.strip().lower())
    if name is None:
        raise RowProblem("timezone is not an IANA time zone; use a name like Europe/Paris")
    ZoneInfo(name)
    return name


@lru_cache(maxsize=256)
def _locale(text: str) -> Locale | None:
    identifier = text.replace("-", "_")
    try:
        locale = Locale.parse(identifier)
    except (UnknownLocaleError, ValueError, TypeError):
        return None
    parts = identifier.split("_")
    # Babel quietly swaps an unknown territory for a likely one (en_ZZ -> en_US); refuse that.
    if len(parts) > 1 and len(parts[-1]) == 2 and parts[-1].upper() != (locale.territory or ""):
        return None
    return locale


def parse_locale(text: str) -> str:
    locale = _locale(text.strip())
    if locale is None or len(str(locale)) > 16:
        raise RowProblem("locale is not a known locale; use a code like en or fr_FR")
    return str(locale)


def locale_region(locale: str) -> str | None:
    parsed = _locale(locale)
    return parsed.territory if parsed is not None else None


def parse_email(text: str) -> str | None:
    """The normalised address, or None when empty. The message never repeats the address."""
    value = text.strip()
    if not value:
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        raise RowProblem("email is not a valid email address; correct it or leave the field empty") from None


def parse_phone(text: str, locale: str) -> str | None:
    """The number in E.164, or None when empty; a number without ``+`` uses the locale's country."""
    value = text.strip()
    if not value:
        return None
    region = None
    if not value.startswith("+"):
        region = locale_region(locale)
        if region is None:
            raise RowProblem(
                f"phone has no country code and locale {locale!r} names no country; "
                "write it with its country code, starting with +"
            )
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        where = f" for {region}" if region else ""
        raise RowProblem(
            f"phone is not a valid phone number{where}; write it with its country code, starting with +, "
            "or leave the field empty"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --- the three kinds ------------------------------------------------------------------------------

def parse_member(
    fields: Mapping[str, str],
    *,
    default_locale: str = "en",
    default_timezone: str = "UTC",
    today: date | None = None,
    tiers: Sequence[str] | None = None,
) -> MemberRow:
    """``tiers``: the program's tier names, lowest first; a tier not among them is refused."""
    check_fields(fields)
    given = frozenset(name for name in MEMBER_COLUMNS if name in fields)
    today = today or datetime.now(UTC).date()
    external_id = _required(fields, "external_id", 64, "every member needs the shop's id for them")
    locale_text = _text(fields, "locale")
    locale = parse_locale(locale_text) if locale_text else default_locale
    zone_text = _text(fields, "timezone")
    birthday_text = _text(fields, "birthday")
    return MemberRow(
        external_id=external_id,
        given=given,
        email=parse_email(_text(fields, "email")),
        phone=parse_phone(_text(fields, "phone"), locale),
        first_name=_optional(fields, "first_name", 200),
        last_name=_optional(fields, "last_name", 200),
        locale=locale,
        timezone=parse_timezone(zone_text) if zone_text else default_timezone,
        birthday=parse_birthday(birthday_text, today) if birthday_text else None,
        birthday_updated_at=_optional_instant(fields, "birthday_updated_at"),
        email_opt_in=parse_flag("email_opt_in", _text(fields, "email_opt_in")),
        sms_opt_in=parse_flag("sms_opt_in", _text(fields, "sms_opt_in")),
        joined_at=_optional_instant(fields, "joined_at"),
        tier=parse_tier(_text(fields, "tier"), tiers),
    )


def parse_tier(text: str, tiers: Sequence[str] | None) -> str:
    """One of the program's ``tiers`` (any case), or the lowest when empty."""
    if tiers is None:
        return _limited("tier", text, 32) or DEFAULT_TIER
    if not text:
        return tiers[0]
    by_lower = {name.lower(): name for name in tiers}
    tier = by_lower.get(text.lower())
    if tier is None:
        raise RowProblem(
            f"tier is not one of the program's tiers ({', '.join(tiers)}); "
            "use one of them or leave the field empty for the lowest"
        )
    return tier


def parse_total(text: str) -> Decimal:
    value = text.strip()
    try:
        total = Decimal(value)
    except InvalidOperation:
        total = None
    if total is None or not total.is_finite():
        raise RowProblem("total is not a number; write it like 19.90")
    if total < 0:
        raise RowProblem("total is negative; a total is 0 or more")
    if total != total.quantize(Decimal("0.01")):
        raise RowProblem("total has more than 2 decimal places; write it like 19.90")
    if total > MAX_TOTAL:
        raise RowProblem(f"total is too large; the most is {MAX_TOTAL:,}")
    return total.quantize(Decimal("0.01"))


def parse_order(fields: Mapping[str, str], *, currency: str | None = None, now: datetime | None = None) -> OrderRow:
    """``currency``: the program's, the only one an order may be in; ``now``: no order is placed later."""
    check_fields(fields)
    given = frozenset(name for name in ORDER_COLUMNS if name in fields)
    order_id = _required(fields, "order_id", 64, "every order needs the shop's id for it")
    member_id = _required(fields, "member_id", 64, "give the external_id of the member who placed the order")
    placed_at = _required_instant(fields, "placed_at")
    if now is not None and placed_at > now + CLOCK_SKEW:
        raise RowProblem(
            "placed_at is in the future; import an order once it is placed, "
            "and write its time with its UTC offset like 2024-05-17T09:30:00+02:00"
        )
    total_text = _text(fields, "total")
    if not total_text:
        raise RowProblem("total is empty; write the order total like 19.90")
    total = parse_total(total_text)
    code = _text(fields, "currency")
    if not _CURRENCY.match(code):
        raise RowProblem("currency is not a 3-letter currency code like EUR")
    code = code.upper()
    if currency is not None and code != currency:
        raise RowProblem(
            f"currency is {code} but the program's points are earned in {currency}; "
            f"convert the order to {currency} or leave it out"
        )
    status = _text(fields, "status").lower() or OrderStatus.PLACED
    if status not in OrderStatus.ALL:
        raise RowProblem(f"status is not one of {', '.join(OrderStatus.ALL)}")
    return OrderRow(order_id, member_id, placed_at, total, code, status, given)


def parse_points(text: str) -> int:
    value = text.strip()
    if not _INTEGER.match(value):
        raise RowProblem("points is not a whole number")
    points = int(value)
    if points == 0:
        raise RowProblem("points is 0; an entry must add or take away points")
    if abs(points) > MAX_POINTS:
        raise RowProblem(f"points is too large; the most is {MAX_POINTS:,}")
    return points


def parse_point(fields: Mapping[str, str]) -> PointRow:
    check_fields(fields)
    entry_id = _required(fields, "entry_id", 200, "every entry needs the shop's id for it")
    member_id = _required(fields, "member_id", 64, "give the external_id of the member")
    kind = _text(fields, "kind").lower()
    if kind not in EntryKind.ALL:
        raise RowProblem(f"kind is not one of {', '.join(EntryKind.ALL)}")
    points_text = _text(fields, "points")
    if not points_text:
        raise RowProblem("points is empty; write a whole number of points")
    points = parse_points(points_text)
    if kind == EntryKind.EARN and points < 0:
        raise RowProblem("points is negative but an earn entry adds points; use an adjust entry to take points away")
    if kind in (EntryKind.REDEEM, EntryKind.EXPIRE):
        points = -abs(points)
    occurred_at = _required_instant(fields, "occurred_at")
    expires_at = _optional_instant(fields, "expires_at")
    if points > 0:
        if expires_at is None:
            expires_at = occurred_at + DEFAULT_LOT_LIFETIME
        elif expires_at <= occurred_at:
            raise RowProblem("expires_at is not after occurred_at; points must expire after they are earned")
    else:
        expires_at = None  # only lots expire; a debit has nothing to expire
    source = _optional(fields, "source", 120)
    return PointRow(entry_id, member_id, kind, points, occurred_at, expires_at, source)
