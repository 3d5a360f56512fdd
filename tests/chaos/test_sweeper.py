"""The sweeper, the safety net the chaos scenarios lean on, on its own: what it puts back in line,
what it marks unknown, and that it does not enqueue the same backlog again on every sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from models.db import transaction
from models.delivery import Delivery
from tests.support.members import add_members, make_member
from workers.planning import plan_campaign, plan_context
from workers.sweeper import sweep

AT = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)  # 14:00 in Paris, on the members' birthday


def planned(runtime, count: int) -> list[int]:
    add_members(runtime.sessions, *(make_member(f"S{i:02d}") for i in range(count)))
    with transaction(runtime.sessions) as session:
        ids = plan_campaign(session, runtime.campaigns.get("birthday"),
                            plan_context(session, runtime.campaigns, runtime.program, AT)).planned_ids
    assert len(ids) == count
    return ids


def set_rows(runtime, ids: list[int], **values) -> None:
    with transaction(runtime.sessions) as session:
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(**values))


def states(runtime) -> dict[int, tuple[str, str | None]]:
    with runtime.sessions() as session:
        return {row.id: (row.state, row.reason) for row in session.execute(select(Delivery.id, Delivery.state,
                                                                                  Delivery.reason))}


def test_a_lost_delivery_is_put_back_once_per_threshold_not_on_every_sweep(runtime):
    ids = planned(runtime, 4)
    threshold = timedelta(seconds=runtime.settings.stale_after_seconds)
    now = AT + threshold + timedelta(seconds=1)  # planned at AT, untouched since

    assert sweep(runtime, now).requeued_ids == ids
    assert sweep(runtime, now + timedelta(minutes=5)).requeued_ids == []  # the backlog is in the queue already
    assert sweep(runtime, now + threshold + timedelta(seconds=1)).requeued_ids == ids  # still not done: again
    assert set(states(runtime).values()) == {("planned", None)}


def test_only_due_deliveries_are_put_back(runtime):
    due, later = planned(runtime, 2)
    threshold = timedelta(seconds=runtime.settings.stale_after_seconds)
    now = AT + threshold + timedelta(seconds=1)
    set_rows(runtime, [later], send_at=now + timedelta(minutes=1))  # a retry waiting for its time
    assert sweep(runtime, now).requeued_ids == [due]


def test_a_send_abandoned_by_a_dead_worker_is_marked_unknown_never_sent_again(runtime):
    abandoned, in_hand, waiting = planned(runtime, 3)
    threshold = timedelta(seconds=runtime.settings.stale_after_seconds)
    now = AT + timedelta(hours=1)
    set_rows(runtime, [abandoned], state="sending", sending_at=now - threshold - timedelta(seconds=1), updated_at=now)
    set_rows(runtime, [in_hand], state="sending", sending_at=now - timedelta(seconds=5), updated_at=now)
    set_rows(runtime, [waiting], updated_at=now)

    result = sweep(runtime, now)

    assert (result.requeued_ids, result.marked_unknown) == ([], 1)
    assert states(runtime) == {abandoned: ("unknown", "interrupted_while_sending"), in_hand: ("sending", None),
                               waiting: ("planned", None)}
