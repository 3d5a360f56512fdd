"""Building members for tests, with the fields that matter spelled out and the rest sensible."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from models.member import ContactStatus, Member

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def make_member(
    external_id: str,
    *,
    timezone_name: str = "Europe/Paris",
    birthday: date | tuple[int, int] | None = (6, 15),
    locale: str = "en",
    tier: str = "bronze",
    email_opt_in: bool = True,
    sms_opt_in: bool = False,
    email: str | None = None,
    phone: str | None = None,
    birthday_updated_at: datetime | None = LONG_AGO,
    first_name: str = "Test",
) -> Member:
    if isinstance(birthday, date):
        year, month, day = birthday.year, birthday.month, birthday.day
    elif birthday is None:
        year = month = day = None
    else:
        year, (month, day) = None, birthday
    email = email if email is not None else f"{external_id.lower()}@members.example"
    return Member(
        external_id=external_id,
        email=email,
        email_status=ContactStatus.OK if email else ContactStatus.MISSING,
        phone=phone,
        phone_status=ContactStatus.OK if phone else ContactStatus.MISSING,
        first_name=first_name,
        last_name="Member",
        locale=locale,
        timezone=timezone_name,
        birth_year=year,
        birth_month=month,
        birth_day=day,
        birthday_updated_at=birthday_updated_at,
        email_opt_in=email_opt_in,
        email_consent_at=LONG_AGO if email_opt_in else None,
        email_consent_source="test" if email_opt_in else None,
        sms_opt_in=sms_opt_in,
        tier=tier,
        joined_at=LONG_AGO,
    )


def add_members(sessions, *members: Member) -> None:
    with sessions() as session, session.begin():
        session.add_all(members)


def days_ago(at: datetime, days: int) -> datetime:
    return at - timedelta(days=days)
