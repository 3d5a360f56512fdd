"""The sweeper: the safety net for messages the queue lost (a flushed Redis, a crash before enqueue).

Deliveries still ``planned``, due, and untouched for longer than the threshold are enqueued again (the claim makes a
duplicate message harmless). Enqueuing one touches it (``updated_at``), so a row is enqueued again
at most once per threshold while a long backlog is still being worked through, not on every sweep.
Deliveries stuck in ``sending`` past the threshold belonged to a worker that died mid-send: whether
the provider got them cannot be known, so they are marked ``unknown`` rather than sent a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update

from models.db import transaction
from models.delivery import Delivery, DeliveryState, Reason
from workers.runtime import Runtime

SWEEP_LIMIT = 50_000


@dataclass
class SweepResult:
    requeued_ids: list[int] = field(default_factory=list)
    marked_unknown: int = 0


def sweep(runtime: Runtime, now: datetime) -> SweepResult:
    threshold = now - timedelta(seconds=runtime.settings.stale_after_seconds)
    result = SweepResult()
    with transaction(runtime.sessions) as session:
        result.requeued_ids = list(
            session.scalars(
                select(Delivery.id)
                .where(
                    Delivery.state == DeliveryState.PLANNED,
                    Delivery.send_at <= now,
                    Delivery.updated_at <= threshold,
                )
                .order_by(Delivery.id)
                .limit(SWEEP_LIMIT)
                .with_for_update(skip_locked=True)  # a row being claimed right now is skipped, not waited for
            )
        )
        for start in range(0, len(result.requeued_ids), 5000):
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(result.requeued_ids[start : start + 5000]))
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
        abandoned = session.execute(
            update(Delivery)
            .where(Delivery.state == DeliveryState.SENDING, Delivery.sending_at <= threshold)
            .values(state=DeliveryState.UNKNOWN, reason=Reason.INTERRUPTED, finished_at=now, updated_at=now)
            .returning(Delivery.id)
        )
        result.marked_unknown = len(abandoned.all())
    return result
