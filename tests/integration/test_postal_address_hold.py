"""A marketing email without the shop's postal address: refused by `loyalty validate`, and by the worker.

Through a dramatiq worker on the real Redis and the real PostgreSQL: the campaign is not planned,
the deliveries planned before (by a release whose program had the address) stay planned and are not
sent, the log says why in the sentence `loyalty validate` prints, and once the address is back
(a deploy: a new runtime) the sweeper finds them again and they go, once each. A support send is
refused with the same sentence.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from sqlalchemy import select

from campaigns.validation import validate_all
from core.calendar import iso_utc
from core.settings import load_settings
from models.db import transaction
from models.delivery import Delivery
from tests import cli
from tests.conftest import REPO_ROOT
from tests.support.members import add_members, make_member
from tests.support.queue import worker_on_redis
from workers.runtime import build_runtime, set_runtime

PROGRAM = REPO_ROOT / "campaigns" / "program.yaml"
DEFINITIONS = REPO_ROOT / "campaigns" / "definitions"
TEMPLATES = REPO_ROOT / "campaigns" / "templates"
MEMBER_DAY = datetime(2027, 6, 1, 8, 0, tzinfo=UTC)  # Tuesday June 1, 10:00 in Paris: the first Tuesday


def program_without_address(folder):
    text = PROGRAM.read_text(encoding="utf-8")
    start, end = text.index("  postal_address: |"), text.index("  support_email:")
    path = folder / "program.yaml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    return path


@pytest.fixture
def queue(env, redis_namespace):
    with worker_on_redis(env, redis_namespace) as broker:
        yield broker


def settle(broker) -> None:
    broker.join("campaigns", timeout=30_000)
    broker.join("deliveries", timeout=30_000)
    time.sleep(0.1)  # the last message's after-hooks


def member_day_rows(sessions) -> dict[str, tuple[str, str | None]]:
    with sessions() as session:
        return {key: (state, reason) for key, state, reason in session.execute(
            select(Delivery.occurrence_key, Delivery.state, Delivery.reason).where(Delivery.campaign == "member_day"))}


def test_a_marketing_email_without_the_postal_address_waits_planned_and_goes_once_the_address_is_added(
        env, tmp_path, pg_engine, pg_sessions, smtp_sink, queue):
    from workers.actors import deliver_batch, evaluate_campaign
    from workers.planning import plan_campaign, plan_context
    from workers.sweeper import sweep

    add_members(pg_sessions, make_member("SILV", tier="silver"), make_member("GOLD", tier="gold", locale="fr"))
    program = program_without_address(tmp_path)
    (validated,) = [p for p in validate_all(DEFINITIONS, TEMPLATES, program).problems if "'member_day'" in p]
    with_address = build_runtime(load_settings(env))  # the release before, whose program had the address
    without = build_runtime(load_settings({**env, "LOYALTY_PROGRAM_FILE": str(program)}))
    try:
        with transaction(pg_sessions) as session:
            planned = plan_campaign(session, with_address.campaigns.get("member_day"), plan_context(
                session, with_address.campaigns, with_address.program, MEMBER_DAY)).planned_ids
        assert len(planned) == 2

        set_runtime(without)  # the worker now runs on the program without the address
        with structlog.testing.capture_logs() as events:
            evaluate_campaign.send("member_day", iso_utc(MEMBER_DAY))  # the clock's tick
            deliver_batch.send(planned, iso_utc(MEMBER_DAY))  # the deliveries planned before
            settle(queue)
        assert smtp_sink.messages == []
        assert member_day_rows(pg_sessions) == {  # nothing new planned, nothing sent, nothing ended
            "member_day:SILV:2027-06-01": ("planned", None), "member_day:GOLD:2027-06-01": ("planned", None)}
        said = [(e["event"], e["log_level"], e["problem"]) for e in events if e.get("campaign") == "member_day"]
        # the evaluation and the batch are on two queues: either may be taken first
        assert sorted(said) == [("campaign.broken", "error", validated), ("delivery.kept_planned", "error", validated)]
        assert [e["deliveries"] for e in events if e["event"] == "delivery.kept_planned"] == [2]

        set_runtime(with_address)  # the address added, deployed: a new worker
        later = MEMBER_DAY + timedelta(seconds=with_address.settings.stale_after_seconds)
        found = sweep(with_address, later).requeued_ids  # still planned, due and untouched: found again
        assert sorted(found) == sorted(planned)
        deliver_batch.send(found, iso_utc(later))
        settle(queue)
        assert member_day_rows(pg_sessions) == {
            "member_day:SILV:2027-06-01": ("sent", None), "member_day:GOLD:2027-06-01": ("sent", None)}
        assert sorted(m["To"].addresses[0].username for m in smtp_sink.messages) == ["gold", "silv"]
        (french,) = smtp_sink.to("gold@members.example")
        assert "12 rue des Lilas" in french.get_body(("plain",)).get_content()  # the footer has it now
    finally:
        set_runtime(None)
        with_address.close()
        without.close()


def test_a_support_send_of_it_is_refused_with_the_same_sentence(env, tmp_path, pg_engine, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("M0050", tier="silver"))
    program = program_without_address(tmp_path)
    (validated,) = [p for p in validate_all(DEFINITIONS, TEMPLATES, program).problems if "'member_day'" in p]
    for extra in ((), ("--dry-run",)):
        result = cli.loyalty({**env, "COLUMNS": "400", "LOYALTY_PROGRAM_FILE": str(program)}, "send", "member_day",
                             "--member", "M0050", "--reason", "asked for the offer", *extra,
                             drop=(*cli.SERVICE_VARIABLES, "LOYALTY_ACTOR"))
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [f"error: {validated}"]
    with pg_sessions() as session:
        assert session.scalars(select(Delivery.occurrence_key)).all() == []
    assert smtp_sink.messages == []
    shipped = cli.loyalty({**env, "COLUMNS": "400"}, "send", "member_day", "--member", "M0050", "--reason", "asked",
                          "--as", "bob", drop=(*cli.SERVICE_VARIABLES, "LOYALTY_ACTOR"))
    assert shipped.returncode == 0, shipped.stderr
    assert [m["To"].addresses[0].username for m in smtp_sink.messages] == ["m0050"]


def test_preview_and_simulate_show_who_is_due_and_warn_that_the_worker_sends_none_of_it(
        env, tmp_path, pg_engine, pg_sessions):
    add_members(pg_sessions, make_member("M0051", tier="silver"))
    program = program_without_address(tmp_path)
    (validated,) = [p for p in validate_all(DEFINITIONS, TEMPLATES, program).problems if "'member_day'" in p]
    without = {**env, "COLUMNS": "400", "LOYALTY_PROGRAM_FILE": str(program)}
    warning = f"warning: the worker sends nothing of 'member_day' as it stands: {validated}"
    preview = cli.loyalty(without, "preview", "member_day", "--at", iso_utc(MEMBER_DAY), "--json")
    assert preview.returncode == 0, preview.stderr
    assert [json.loads(line)["member"] for line in preview.stdout.splitlines()] == ["M0051"]  # stdout stays JSON
    assert preview.stderr.strip().splitlines() == [warning]
    simulated = cli.loyalty(without, "simulate", "--from", "2027-06-01", "--to", "2027-06-01", "--campaign",
                            "member_day", "--campaign", "birthday", "--json")
    assert simulated.returncode == 0, simulated.stderr
    assert warning in simulated.stderr.splitlines() and "'birthday'" not in simulated.stderr  # exempt: it goes
    with_address = cli.loyalty({**env, "COLUMNS": "400"}, "preview", "member_day", "--at", iso_utc(MEMBER_DAY))
    assert with_address.returncode == 0 and "warning" not in with_address.stderr
