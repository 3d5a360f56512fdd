"""The merge fields a member has in the Mailchimp audience, for the bulk sync and campaign steps alike.

``TIER``, ``POINTS`` (balance), ``EXPPOINTS`` and ``EXPDATE`` (the points of the next expiry and its
local date, ``YYYY-MM-DD``), ``BDAY`` (``MM/DD``) and ``LOCALE``. Read for a whole list of members
in two queries. Used by ``workers/mailchimp_sync.py`` (the audience), delivery and one-off sends (a
campaign step's upsert), and the shop's loyalty fields, so none of them imports another's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.send_views import MemberView
from core import calendar
from models import ledger
from models.points import PointEntry


def merge_fields(session: Session, members: Sequence[MemberView], now: datetime) -> dict[int, dict[str, object]]:
    """The merge fields of each member, by member id (two queries for the whole list)."""
    ids = [m.id for m in members]
    balances = ledger.balances(session, ids)
    lots: dict[int, list[tuple[datetime, int]]] = {}
    if ids:
        for member_id, expires_at, remaining in session.execute(
            select(PointEntry.member_id, PointEntry.expires_at, PointEntry.remaining)
            .where(PointEntry.member_id.in_(ids), PointEntry.remaining > 0, PointEntry.expires_at > now)
            .order_by(PointEntry.expires_at)
        ):
            assert expires_at is not None and remaining is not None  # the WHERE above
            lots.setdefault(member_id, []).append((expires_at, remaining))
    fields: dict[int, dict[str, object]] = {}
    for member in members:
        exp_points, exp_date = 0, ""
        member_lots = lots.get(member.id, [])
        if member_lots:
            first = calendar.local_datetime(member_lots[0][0], member.timezone).date()
            exp_date = first.isoformat()
            exp_points = sum(r for at, r in member_lots if calendar.local_datetime(at, member.timezone).date() == first)
        birthday = f"{member.birth_month:02d}/{member.birth_day:02d}" if member.birth_month and member.birth_day else ""
        fields[member.id] = {
            "TIER": member.tier, "POINTS": int(balances.get(member.id, 0)), "EXPPOINTS": exp_points,
            "EXPDATE": exp_date, "BDAY": birthday, "LOCALE": member.locale or "",
        }
    return fields
