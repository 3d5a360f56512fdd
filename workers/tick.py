"""One scheduler tick, run synchronously: apply new orders, expire due points, plan every enabled campaign at an
instant, then deliver everything due by then.

This is what ``loyalty run --at`` and ``loyalty demo`` do in one process; in production the same
steps run as queue actors (``workers/actors.py``). Delivering "everything due" (not only what this
tick planned) is what lets a backfill pick up an SMS deferred past quiet hours or a retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from models.db import transaction
from models.delivery import Delivery, DeliveryState
from services.program_ops import apply_pending_orders, expire_due_lots
from workers.delivery import DeliveryReport, deliver
from workers.planning import PlanResult, plan_campaign, plan_context
from workers.runtime import Runtime


@dataclass
class TickReport:
    at: datetime
    plans: list[PlanResult] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)


def due_delivery_ids(runtime: Runtime, at: datetime, campaign_ids: list[str] | None = None) -> list[int]:
    with runtime.sessions() as session:
        query = select(Delivery.id).where(Delivery.state == DeliveryState.PLANNED, Delivery.send_at <= at)
        if campaign_ids is not None:
            query = query.where(Delivery.campaign.in_(campaign_ids))
        return list(session.scalars(query.order_by(Delivery.id)))


def run_tick(runtime: Runtime, at: datetime, *, campaign_ids: list[str] | None = None) -> TickReport:
    report = TickReport(at)
    while True:
        with transaction(runtime.sessions) as session:
            if not apply_pending_orders(session, runtime.program, now=at):
                break
    while True:
        with transaction(runtime.sessions) as session:
            expired = expire_due_lots(session, now=at)
        if not expired:
            break
    with runtime.sessions() as session:
        ctx = plan_context(session, runtime.campaigns, runtime.program, at)
    for campaign in runtime.campaigns.enabled:
        if campaign_ids is not None and campaign.id not in campaign_ids:
            continue
        if runtime.refusal(campaign.id) is not None:  # sends nothing: not planned (its planned rows wait)
            continue
        with transaction(runtime.sessions) as session:
            report.plans.append(plan_campaign(session, campaign, ctx))
    report.delivery.merge(deliver(runtime, due_delivery_ids(runtime, at, campaign_ids), as_of=at))
    return report
