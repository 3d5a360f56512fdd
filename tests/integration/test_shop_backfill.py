"""`loyalty shop backfill` and the clock's poll against the Shopify-, WooCommerce- and PrestaShop-like
stand-ins: what lands in PostgreSQL (members, orders, balances), that a second run changes nothing, that
a run stopped by a failing or killed request resumes from its cursor and ends with the same ledger as
one uninterrupted run, and that the poll catches an order whose webhook was lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select, text

from core.settings import load_settings
from loyalty.standins.http_server import BackgroundServer
from loyalty.standins.prestashop_server import PrestaShopServer
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.standins.woocommerce_server import WooCommerceServer
from loyalty.web import create_app
from models.base import Base
from models.inbox import InboxEntry, InboxState
from models.member import Member
from models.order import Order
from models.points import PointEntry
from models.shop_cursors import ShopCursor
from tests import cli
from tests.conftest import REPO_ROOT
from workers.broker import install_broker
from workers.runtime import build_runtime, set_runtime
from workers.shop_sync import ShopSyncError, backfill, open_client, poll, poll_shops


def shop_env(env, platform: str, url: str) -> dict[str, str]:
    extra = {
        "shopify": {"SHOPIFY_SHOP_DOMAIN": "loyalty-demo.myshopify.com", "SHOPIFY_ADMIN_TOKEN": "shpat_test_token",
                    "SHOPIFY_API_BASE_URL": url},
        "woocommerce": {"WOOCOMMERCE_URL": url, "WOOCOMMERCE_CONSUMER_KEY": "ck_test",
                        "WOOCOMMERCE_CONSUMER_SECRET": "cs_test"},
        "prestashop": {"PRESTASHOP_URL": url, "PRESTASHOP_WEBSERVICE_KEY": "PSWSKEY0123456789ABCDEFGHIJKLMNO"},
    }[platform]
    return {**env, "LOYALTY_DEFAULT_TIMEZONE": "Europe/Paris", "WOOCOMMERCE_WEBHOOK_SECRET": "wc_webhook_secret",
            **extra}


@contextmanager
def runtime_of(environment):
    built = build_runtime(load_settings(environment))
    set_runtime(built)
    try:
        yield built
    finally:
        set_runtime(None)
        built.close()


def loyalty(environment: dict, *args: str) -> subprocess.CompletedProcess:
    """The command in this process (``tests/cli.py``); the killed run below is a real process."""
    return cli.loyalty(environment, *args)


def ledger(pg_sessions) -> dict[str, object]:
    """What a user checks: each member's entries (kind, points, key) and each order's state."""
    with pg_sessions() as session:
        entries = sorted(session.execute(
            select(Member.external_id, PointEntry.kind, PointEntry.points, PointEntry.entry_key)
            .join(Member, Member.id == PointEntry.member_id)).all())
        orders = sorted(session.execute(
            select(Order.order_id, Member.external_id, Order.status, Order.total, Order.refunded_amount)
            .join(Member, Member.id == Order.member_id)).all())
        members = sorted(session.scalars(select(Member.external_id)))
    return {"members": members, "entries": entries, "orders": orders}


def balances(pg_sessions) -> dict[str, int]:
    with pg_sessions() as session:
        return dict(session.execute(
            select(Member.external_id, func.coalesce(func.sum(PointEntry.points), 0))
            .join(PointEntry, PointEntry.member_id == Member.id, isouter=True).group_by(Member.external_id)).all())


def empty(pg_engine) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with pg_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def count(pg_sessions, model, *where) -> int:
    with pg_sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


# -- the shops' histories ---------------------------------------------------------------------------
def shopify_history(shop: ShopifyServer) -> dict[str, int]:
    """Three customers; five orders, one partly refunded (the teapot, 40 of 100), one wholly; a guest order."""
    ada = shop.add_customer("ada@example.com", "Ada", "Lovelace")
    bob = shop.add_customer("bob@example.com", "Bob", "Martin")
    cyd = shop.add_customer("cyd@example.com", "Cyd", "Charisse")
    shop.place_order(ada["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")  # 90
    mixed = shop.place_order(ada["id"], [("Tea tin", 1, "60.00"), ("Teapot", 1, "40.00")])  # 100
    shop.refund(mixed["id"], {mixed["line_items"][1]["id"]: 1})  # -40
    whole = shop.place_order(bob["id"], [("Kettle", 1, "30.00")])
    shop.refund(whole["id"])  # all of it
    shop.place_order(cyd["id"], [("Cup", 4, "5.00")])  # 20
    shop.place_order(None, [("Cup", 1, "5.00")], email="guest@example.com")
    return {str(ada["id"]): 90 + 100 + 50 - 40, str(bob["id"]): 0, str(cyd["id"]): 20 + 50}


def woocommerce_history(shop: WooCommerceServer) -> dict[str, int]:
    ada = shop.add_customer("ada@example.com", "Ada", "Lovelace")
    bob = shop.add_customer("bob@example.com", "Bob", "Martin")
    cyd = shop.add_customer("cyd@example.com", "Cyd", "Charisse")
    shop.place_order(ada["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")  # 90
    mixed = shop.place_order(ada["id"], [("Tea tin", 1, "60.00"), ("Teapot", 1, "40.00")])  # 100, 120 paid
    shop.refund(mixed["id"], "48.00")  # 40% of what was paid: 40 of the merchandise
    whole = shop.place_order(bob["id"], [("Kettle", 1, "30.00")])
    shop.refund(whole["id"])
    shop.place_order(cyd["id"], [("Cup", 4, "5.00")])
    shop.place_order(cyd["id"], [("Cup", 9, "5.00")], status="pending")  # not paid: no points
    return {str(ada["id"]): 90 + 100 + 50 - 40, str(bob["id"]): 0, str(cyd["id"]): 20 + 50}


def prestashop_history(shop: PrestaShopServer) -> dict[str, int]:
    ada = shop.add_customer("ada@example.com", "Ada", "Lovelace", newsletter=True)
    bob = shop.add_customer("bob@example.com", "Bob", "Martin")
    cyd = shop.add_customer("cyd@example.com", "Cyd", "Charisse")
    shop.place_order(ada["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")  # 90
    mixed = shop.place_order(ada["id"], [("Tea tin", 1, "60.00"), ("Teapot", 1, "40.00")])  # 100
    shop.refund(mixed["id"], "40.00")  # a credit slip for the teapot
    whole = shop.place_order(bob["id"], [("Kettle", 1, "30.00")])
    shop.refund(whole["id"])  # all of it: the order becomes Refunded
    shop.place_order(cyd["id"], [("Cup", 4, "5.00")])
    return {str(ada["id"]): 90 + 100 + 50 - 40, str(bob["id"]): 0, str(cyd["id"]): 20 + 50}


SHOPS = {
    "shopify": (ShopifyServer, shopify_history),
    "woocommerce": (lambda: WooCommerceServer(consumer_key="ck_test", consumer_secret="cs_test"), woocommerce_history),
    "prestashop": (PrestaShopServer, prestashop_history),
}


@pytest.mark.parametrize("platform", list(SHOPS))
def test_a_backfill_brings_the_shops_history_and_a_second_one_changes_nothing(platform, env, pg_engine, pg_sessions):
    make, history = SHOPS[platform]
    with make() as shop:
        expected = history(shop)
        environment = shop_env(env, platform, shop.url)
        first = loyalty(environment, "shop", "backfill", platform, "--page-size", "2")
        assert first.returncode == 0, first.stderr
        assert "Backfill done" in first.stdout and "new inbox entries" in first.stdout
        assert balances(pg_sessions) == expected
        assert count(pg_sessions, InboxEntry, InboxEntry.state.in_([InboxState.WAITING, InboxState.REJECTED])) == 0
        before, entries = ledger(pg_sessions), count(pg_sessions, InboxEntry)
        second = loyalty(environment, "shop", "backfill", platform, "--page-size", "2")
        assert second.returncode == 0, second.stderr
        assert "0 new inbox entries" in second.stdout
        assert ledger(pg_sessions) == before and count(pg_sessions, InboxEntry) == entries
    with pg_sessions() as session:
        refunded = session.scalars(select(Order).where(Order.refunded_amount > 0).order_by(Order.id)).all()
        # A Shopify or WooCommerce order read already refunded is told as its webhooks told it: paid, then
        # its refund (the kettle's 30.00, its points taken back by that refund), then refunded. PrestaShop's
        # credit slips are read after the orders: the order is refunded whole when its slip comes.
        expected_refunded = ["40.00"] if platform == "prestashop" else ["40.00", "30.00"]
        assert [str(o.refunded_amount) for o in refunded] == expected_refunded


@pytest.mark.parametrize("platform", list(SHOPS))
def test_a_backfill_stopped_by_a_failing_request_says_so_and_resumes_from_its_cursor(platform, env, pg_engine,
                                                                                       pg_sessions):
    make, history = SHOPS[platform]
    with make() as shop:
        expected = history(shop)
        environment = shop_env(env, platform, shop.url)
        calls = shop.total_calls
        with runtime_of(environment) as runtime:
            backfill(runtime, platform, page_size=2)
        uninterrupted, whole_run = ledger(pg_sessions), shop.total_calls - calls
        assert balances(pg_sessions) == expected
        empty(pg_engine)

        shop.fail_request(4, "error:500")  # the 4th request, and every retry of it, fails
        shop.faults.queue(*["error:500"] * 3)
        calls = shop.total_calls
        with runtime_of(environment) as runtime:
            client = open_client(runtime.settings, platform, 2, waits=(0.01, 0.01, 0.01))
            with pytest.raises(ShopSyncError) as stopped:
                backfill(runtime, platform, page_size=2, client=client)
        assert str(stopped.value).count(". ") == 0 and "kept answering 500" in str(stopped.value)
        assert "resumes where it stopped" in str(stopped.value)
        assert ledger(pg_sessions) != uninterrupted
        with pg_sessions() as session:
            assert session.scalars(select(ShopCursor).where(ShopCursor.finished_at.is_(None))).first() is not None

        calls = shop.total_calls
        resumed = loyalty(environment, "shop", "backfill", platform, "--page-size", "2")
        assert resumed.returncode == 0, resumed.stderr
        assert "Resumed" in resumed.stdout
        assert ledger(pg_sessions) == uninterrupted
        # it did not read again the three pages it had stored (PrestaShop reads its currencies and
        # languages again): fewer requests than a whole run
        assert shop.total_calls - calls == whole_run - 3 + (2 if platform == "prestashop" else 0)


def test_a_backfill_killed_halfway_resumes_and_ends_with_the_same_ledger(env, pg_engine, pg_sessions):
    with WooCommerceServer(consumer_key="ck_test", consumer_secret="cs_test") as shop:
        customers = [shop.add_customer(f"member{i}@example.com", f"M{i}", "Test") for i in range(6)]
        for i, customer in enumerate(customers):
            shop.place_order(customer["id"], [("Tea tin", 1 + i % 3, "20.00")])
            order = shop.place_order(customer["id"], [("Cup", 2, "15.00"), ("Pot", 1, "40.00")])
            if i % 2:
                shop.refund(order["id"], "12.00")
        environment = shop_env(env, "woocommerce", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "woocommerce", page_size=2)
        uninterrupted = ledger(pg_sessions)
        empty(pg_engine)

        shop.faults.queue(*["ok@0.4"] * 40)  # a slow shop: time to kill the run between pages
        start = shop.total_calls
        clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SMTP_URL")}
        running = subprocess.Popen([sys.executable, "-m", "loyalty.cli", "shop", "backfill", "woocommerce",
                                    "--page-size", "2"], env={**clean, **environment}, cwd=REPO_ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # killed: nothing to read
        deadline = time.monotonic() + 60
        while shop.total_calls - start < 6 and time.monotonic() < deadline:  # customers read, orders started
            time.sleep(0.05)
        os.kill(running.pid, signal.SIGKILL)
        running.wait(10)
        assert running.returncode == -signal.SIGKILL
        with pg_sessions() as session:
            cursor = session.get(ShopCursor, ("woocommerce", "backfill:orders"))
        assert cursor is not None and cursor.finished_at is None and cursor.position is not None
        assert ledger(pg_sessions) != uninterrupted

        shop.faults.clear()
        killed_at = time.time()
        resumed = loyalty(environment, "shop", "backfill", "woocommerce", "--page-size", "2")
        assert resumed.returncode == 0, resumed.stderr
        assert "Resumed" in resumed.stdout
        assert ledger(pg_sessions) == uninterrupted
        # from the page after the last one stored, not from the start
        first = next(r for r in shop.requests if r.started_at > killed_at)
        assert first.path.endswith("/orders") and f"page={cursor.position}&" in first.query + "&"


def test_the_backfill_says_in_one_sentence_what_stops_it(env, pg_engine):
    not_configured = loyalty(env, "shop", "backfill", "woocommerce")
    assert not_configured.returncode != 0 and "Traceback" not in not_configured.stderr
    assert "woocommerce is not configured; set WOOCOMMERCE_URL" in not_configured.stderr
    with ShopifyServer(access_token="another-token") as shop:
        refused = loyalty(shop_env(env, "shopify", shop.url), "shop", "backfill", "shopify")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "Shopify refused the key (401); check SHOPIFY_ADMIN_TOKEN" in refused.stderr
    with PrestaShopServer() as shop:
        url = shop.url
    # A shop that stays unreachable is asked again on the client's schedule (0.5 to 8 s, 15.5 s in all),
    # here on a short one; the command prints the same ShopSyncError's sentence as the refusal above.
    waited: list[float] = []
    with runtime_of(shop_env(env, "prestashop", url)) as runtime:
        client = open_client(runtime.settings, "prestashop", waits=(0.01, 0.02, 0.04), sleep=waited.append)
        with pytest.raises(ShopSyncError) as unreachable:
            backfill(runtime, "prestashop", client=client)
    assert waited == [0.01, 0.02, 0.04]  # three more tries before giving up
    assert str(unreachable.value).startswith(f"PrestaShop at {url}") and "could not be reached" in str(unreachable.value)
    bad_date = loyalty(env, "shop", "backfill", "shopify", "--since", "yesterday")
    assert "--since 'yesterday' is not a date" in bad_date.stderr


def test_a_shopify_backfill_waits_out_the_query_cost_throttle(env, pg_engine, pg_sessions):
    with ShopifyServer() as shop:
        expected = shopify_history(shop)
        shop.throttle_next(2)
        with runtime_of(shop_env(env, "shopify", shop.url)) as runtime:
            report = backfill(runtime, "shopify", page_size=2)
    assert balances(pg_sessions) == expected and report.read["customers"] == 3


def test_a_busy_or_failing_shop_is_asked_again_with_backoff_and_the_backfill_goes_through(env, pg_engine, pg_sessions):
    with WooCommerceServer(consumer_key="ck_test", consumer_secret="cs_test") as shop:
        expected = woocommerce_history(shop)
        shop.faults.queue("throttle", "error:503", "ok", "timeout")
        shop.faults.configure(hold_seconds=2.0)
        with runtime_of(shop_env(env, "woocommerce", shop.url)) as runtime:
            client = open_client(runtime.settings, "woocommerce", 2, waits=(0.05, 0.05, 0.05),
                                 client=httpx.Client(base_url=shop.url, auth=("ck_test", "cs_test"),
                                                     timeout=httpx.Timeout(0.5, connect=1.0)))
            backfill(runtime, "woocommerce", page_size=2, client=client)
        statuses = [r.status for r in shop.requests[:5]]
    assert statuses[:3] == [429, 503, 200] and balances(pg_sessions) == expected


def test_one_records_bad_data_does_not_stop_the_backfill(env, pg_engine, pg_sessions):
    with PrestaShopServer() as shop:
        expected = prestashop_history(shop)
        odd = shop.place_order(1, [("Tea tin", 1, "10.00")], id_currency=9)  # a currency the shop does not have
        shop.tables["customers"][2]["date_upd"] = ""  # a record without its version: cannot be keyed
        result = loyalty(shop_env(env, "prestashop", shop.url), "shop", "backfill", "prestashop", "--page-size", "2")
    assert result.returncode == 0, result.stderr
    assert "1 unreadable records skipped" in result.stdout
    assert balances(pg_sessions) == {k: v for k, v in expected.items() if k != "2"}
    with pg_sessions() as session:
        rejected = session.scalars(select(InboxEntry).where(InboxEntry.state == InboxState.REJECTED)).all()
    assert [(e.topic, e.reason) for e in rejected] == [
        ("orders", "the order's id_currency '9' is not a currency of the shop")]
    assert str(odd["id"]) in rejected[0].dedup_key


def test_a_backfill_since_a_date_reads_only_the_orders_changed_since(env, pg_engine, pg_sessions):
    from datetime import UTC, datetime

    with ShopifyServer() as shop:
        ada = shop.add_customer("ada@example.com", "Ada", "Lovelace", at=datetime(2026, 1, 5, tzinfo=UTC))
        shop.place_order(ada["id"], [("Tea tin", 1, "30.00")], at=datetime(2026, 2, 1, tzinfo=UTC))
        shop.place_order(ada["id"], [("Teapot", 1, "40.00")], at=datetime(2026, 6, 1, tzinfo=UTC))
        result = loyalty(shop_env(env, "shopify", shop.url), "shop", "backfill", "shopify", "--since", "2026-03-01")
    assert result.returncode == 0, result.stderr
    with pg_sessions() as session:
        assert session.scalars(select(Order.total)).all() == [40]
        assert session.scalars(select(Member.external_id)).all() == [str(ada["id"])]


# -- the poll ---------------------------------------------------------------------------------------
@contextmanager
def serving(settings):
    app = create_app(settings)
    server = BackgroundServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()
        app.state.engine.dispose()
        set_runtime(None)


def test_the_poll_after_a_missed_woocommerce_webhook_applies_the_order(env, pg_engine, pg_sessions):
    with WooCommerceServer(consumer_key="ck_test", consumer_secret="cs_test") as shop:
        environment = shop_env(env, "woocommerce", shop.url)
        with serving(load_settings(environment)) as url:
            for topic in ("order.created", "order.updated", "customer.created", "customer.updated"):
                shop.subscribe(f"{url}/webhooks/woocommerce", topic)
            ada = shop.add_customer("ada@example.com", "Ada", "Lovelace")
            shop.place_order(ada["id"], [("Tea tin", 1, "30.00")])
            assert balances(pg_sessions) == {str(ada["id"]): 30 + 50}
            shop.webhook_faults.drop = 1  # the next webhook never leaves the shop
            missed = shop.place_order(ada["id"], [("Teapot", 1, "40.00")])
            assert [d.error for d in shop.deliveries][-1] == "dropped"
            assert balances(pg_sessions) == {str(ada["id"]): 80}

        with runtime_of(environment) as runtime:
            broker = install_broker(StubBroker())
            worker = Worker(broker, worker_threads=1, worker_timeout=100)  # stops in 0.1 s, not 1.3
            worker.start()
            try:
                poll_shops()  # what the clock enqueues: the poll, then each new entry through the queue
                broker.join("events", timeout=30_000)
            finally:
                worker.stop()
            with pg_sessions() as session:
                stored = session.scalars(select(InboxEntry.dedup_key).order_by(InboxEntry.id)).all()
            assert stored[-1] == f"woocommerce:order:{missed['id']}:{missed['date_modified_gmt']}Z"
            handed: list[int] = []
            report = poll(runtime, "woocommerce", handed.extend)  # the overlap reads it again: still one entry
            assert report is not None and report.read["orders"] == 2 and handed == []
    assert balances(pg_sessions) == {str(ada["id"]): 80 + 40}
    with pg_sessions() as session:
        assert session.scalars(select(Order.order_id).order_by(Order.order_id)).all()[-1] == str(missed["id"])


def test_one_poll_at_a_time_and_the_clock_polls_only_a_configured_woocommerce_or_prestashop(env, pg_engine):
    from schedules.clock import build_scheduler

    environment = shop_env(env, "woocommerce", "https://shop.example")
    with runtime_of(environment) as runtime:
        with runtime.engine.connect() as other:  # another poll holds the lock
            other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": 0x5348_504C})
            assert poll(runtime, "woocommerce", lambda ids: None) is None
            other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": 0x5348_504C})
    jobs = {job.id: job for job in build_scheduler(load_settings({**environment, "LOYALTY_SHOP_POLL_MINUTES": "7"}),
                                                   tick_minutes=5).get_jobs()}
    assert jobs["shop.poll"].trigger.interval.total_seconds() == 7 * 60
    assert "shop.poll" not in {job.id for job in build_scheduler(load_settings(env), tick_minutes=5).get_jobs()}


def test_a_shopify_backfill_after_the_webhooks_changes_nothing(env, pg_engine, pg_sessions):
    with ShopifyServer() as shop:
        environment = {**shop_env(env, "shopify", shop.url), "SHOPIFY_WEBHOOK_SECRET": "shpss_test_secret"}
        with serving(load_settings(environment)) as url:
            shop.subscribe(f"{url}/webhooks/shopify")
            shopify_history(shop)
        by_webhooks = ledger(pg_sessions)
        assert len(by_webhooks["members"]) == 3 and len(by_webhooks["orders"]) == 4
        result = loyalty(environment, "shop", "backfill", "shopify")
        assert result.returncode == 0, result.stderr
    assert ledger(pg_sessions) == by_webhooks


# -- refunds: what they take back, through the webhooks and through the backfill alike ---------------
def through_webhooks_then_the_backfill(env, pg_engine, pg_sessions, history, platform: str = "shopify"
                                       ) -> dict[str, object]:
    """The same store history twice: applied live from its webhooks, then (the database emptied) read
    whole by a backfill. What each way ends with: the balances and the ledger."""
    make, _ = SHOPS[platform]
    with make() as shop:
        environment = {**shop_env(env, platform, shop.url), "SHOPIFY_WEBHOOK_SECRET": "shpss_test_secret"}
        with serving(load_settings(environment)) as url:
            if platform == "shopify":
                shop.subscribe(f"{url}/webhooks/shopify")
            else:
                for topic in ("order.created", "order.updated", "customer.created", "customer.updated"):
                    shop.subscribe(f"{url}/webhooks/woocommerce", topic)
            expected = history(shop)
        webhooks = {"balances": balances(pg_sessions), "ledger": ledger(pg_sessions)}
        empty(pg_engine)
        result = loyalty(environment, "shop", "backfill", platform)
        assert result.returncode == 0, result.stderr
    assert count(pg_sessions, InboxEntry, InboxEntry.state.in_([InboxState.WAITING, InboxState.REJECTED])) == 0
    return {"expected": expected, "webhooks": webhooks,
            "backfill": {"balances": balances(pg_sessions), "ledger": ledger(pg_sessions)}}


def taken_back(run_ledger: dict, order_id: int) -> int:
    """The points the refunds of one order took back (``refund:ORDER`` and ``refund:ORDER:REFUND``)."""
    return sum(points for _, _, points, key in run_ledger["entries"]
               if key == f"refund:{order_id}" or key.startswith(f"refund:{order_id}:"))


def test_tax_inclusive_refunds_take_back_the_merchandise_without_tax_through_webhooks_and_backfill(
        env, pg_engine, pg_sessions):
    orders: dict[str, int] = {}

    def history(shop: ShopifyServer) -> dict[str, int]:
        """Prices include 20 % VAT (taxes_included): a box at 60.00 is 50.00 of merchandise and earns 50."""
        vera = shop.add_customer("vera@example.com", "Vera", "Lindqvist")
        two = shop.place_order(vera["id"], [("Tea box", 1, "60.00"), ("Tea box XL", 1, "60.00")], shipping="6.00",
                               taxes_included=True)  # 100 + the first-order bonus
        shop.refund(two["id"], {two["line_items"][0]["id"]: 1})  # one box: 50 of the 100, not 60
        shop.refund(two["id"], {}, shipping=True)  # the shipping alone: it earned nothing
        one = shop.place_order(vera["id"], [("Tea box", 1, "60.00")], taxes_included=True)  # 50
        shop.refund(one["id"])  # all of it: exactly the 50 it earned
        orders.update(two=two["id"], one=one["id"])
        return {str(vera["id"]): 100 + 50 - 50 + 50 - 50}

    run = through_webhooks_then_the_backfill(env, pg_engine, pg_sessions, history)
    for way in ("webhooks", "backfill"):
        assert run[way]["balances"] == run["expected"], way
        assert taken_back(run[way]["ledger"], orders["two"]) == -50, way
        assert taken_back(run[way]["ledger"], orders["one"]) == -50, way
    assert run["backfill"]["ledger"] == run["webhooks"]["ledger"]


@pytest.mark.parametrize("platform", ["shopify", "woocommerce"])
def test_a_first_order_refunded_or_cancelled_whole_ends_with_the_same_ledger_through_webhooks_and_backfill(
        platform, env, pg_engine, pg_sessions):
    def history(shop) -> dict[str, int]:
        """A first order given back whole earns no first-order bonus: the first order that stands does."""
        bob = shop.add_customer("bob@example.com", "Bob", "Martin")
        kettle = shop.place_order(bob["id"], [("Kettle", 1, "30.00")])
        shop.refund(kettle["id"])  # the whole first order
        shop.place_order(bob["id"], [("Cup", 4, "5.00")])  # 20, and now the bonus
        cyd = shop.add_customer("cyd@example.com", "Cyd", "Charisse")
        teapot = shop.place_order(cyd["id"], [("Teapot", 1, "40.00")])
        if platform == "shopify":
            shop.cancel_order(teapot["id"])  # paid, then cancelled
        else:
            shop.set_status(teapot["id"], "cancelled")
        shop.place_order(cyd["id"], [("Tea tin", 1, "25.00")])
        dee = shop.add_customer("dee@example.com", "Dee", "Dee")
        tins = shop.place_order(dee["id"], [("Tea tin", 2, "15.00")])
        shop.place_order(dee["id"], [("Cup", 2, "5.00")])
        if platform == "shopify":  # one tin, then the other: the first order is given back whole after
            shop.refund(tins["id"], {tins["line_items"][0]["id"]: 1})  # the second was placed, which then
        else:  # earns the bonus
            shop.refund(tins["id"], "18.00")  # one tin of two, its tax included
        shop.refund(tins["id"])
        return {str(bob["id"]): 20 + 50, str(cyd["id"]): 25 + 50, str(dee["id"]): 10 + 50}

    run = through_webhooks_then_the_backfill(env, pg_engine, pg_sessions, history, platform)
    assert run["webhooks"]["balances"] == run["expected"]
    assert run["backfill"]["balances"] == run["expected"]
    assert run["backfill"]["ledger"] == run["webhooks"]["ledger"]


def test_an_order_stored_before_its_tax_mode_was_kept_learns_it_from_a_backfill_before_its_refund(
        env, pg_engine, pg_sessions):
    """Migration 0016 gives the orders already stored prices without tax (false): in a tax-inclusive
    shop a refund would take back the taxes too. The order read again (`loyalty shop backfill` after
    the upgrade, as the README says) tells it: a version equal to the one applied applies again."""
    with ShopifyServer() as shop:
        environment = {**shop_env(env, "shopify", shop.url), "SHOPIFY_WEBHOOK_SECRET": "shpss_test_secret"}
        with serving(load_settings(environment)) as url:
            shop.subscribe(f"{url}/webhooks/shopify")
            vera = shop.add_customer("vera@example.com", "Vera", "Lindqvist")
            boxes = shop.place_order(vera["id"], [("Tea box", 2, "60.00")], taxes_included=True)  # earns 100
            with pg_sessions() as session, session.begin():  # as the upgrade left an order stored before it
                session.execute(text("UPDATE orders SET prices_include_tax = false"))
            result = loyalty(environment, "shop", "backfill", "shopify")
            assert result.returncode == 0, result.stderr
            with pg_sessions() as session:
                assert session.scalars(select(Order.prices_include_tax)).all() == [True]
            shop.refund(boxes["id"], {boxes["line_items"][0]["id"]: 1})  # one box: 50 of merchandise, not 60
    assert taken_back(ledger(pg_sessions), boxes["id"]) == -50
