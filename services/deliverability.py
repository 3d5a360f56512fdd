"""The report's bounce and complaint figures per campaign (``loyalty report``), one aggregate query.

Over the email deliveries sent that were planned in the period (as the report's other campaign
figures): *bounced*, the deliveries a bounce (hard or soft) was traced to, of which *hard*; and
*complaints*, those a spam complaint was traced to; each rate over the emails sent. A campaign whose
complaint rate passes :data:`COMPLAINT_WARNING_RATE` (0.1%, what Gmail and Yahoo recommend bulk
senders stay under; they refuse mail above 0.3%) gets a warning. Notices no delivery could be traced
to (a relay's notice about an address without our token or Message-ID) are counted apart, by when
they were received.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, exists, func, literal, select
from sqlalchemy.orm import Session

from models.delivery import Delivery, DeliveryState
from models.email_feedback import EmailFeedback, FeedbackKind

COMPLAINT_WARNING_RATE = 0.001


def _count(condition) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def email_feedback_figures(session: Session, period) -> dict[str, Any]:
    """``period``: a ``services.report.Period``."""
    d, f = Delivery, EmailFeedback
    name = case((d.occurrence_key.like("oneoff:%"), d.campaign + literal(" (one-off)")), else_=d.campaign).label("name")

    def traced(*kinds: str):
        return exists().where(f.delivery_id == d.id, f.kind.in_(kinds))

    rows = session.execute(
        select(name, func.count().label("sent"), _count(traced(*FeedbackKind.BOUNCES)).label("bounced"),
               _count(traced(FeedbackKind.HARD_BOUNCE)).label("hard"),
               _count(traced(FeedbackKind.COMPLAINT)).label("complaints"))
        .where(d.channel == "email", d.state == DeliveryState.SENT, *period.where(d.planned_at))
        .group_by(name).order_by(name)
    ).all()
    campaigns, warnings = [], []
    for row in rows:
        sent = int(row.sent)
        line = {"campaign": row.name, "emails_sent": sent, "bounced": int(row.bounced), "hard_bounced": int(row.hard),
                "complaints": int(row.complaints), "bounce_rate": _rate(int(row.bounced), sent),
                "complaint_rate": _rate(int(row.complaints), sent)}
        campaigns.append(line)
        if line["complaint_rate"] is not None and line["complaint_rate"] > COMPLAINT_WARNING_RATE:
            warnings.append(
                f"{row.name}: {line['complaints']} spam complaint(s) for {sent} email(s) sent "
                f"({line['complaint_rate'] * 100:.2f}%), above the 0.1% Gmail and Yahoo ask bulk senders to stay "
                "under (they refuse mail past 0.3%); send it less often or to fewer members.")
    untraced = dict(session.execute(
        select(f.kind, func.count()).where(f.delivery_id.is_(None), *period.where(f.received_at)).group_by(f.kind)
    ).all())
    return {"campaigns": campaigns, "untraced": {kind: int(n) for kind, n in sorted(untraced.items())},
            "complaint_warning_rate": COMPLAINT_WARNING_RATE, "warnings": warnings}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None
