"""Tiers and balances the shop can see (`loyalty shop sync`, the clock's sync) against the Shopify- and
WooCommerce-like stand-ins: what the shop's customer records hold afterwards (tags, metafields,
meta_data), how many requests it took, that nothing unchanged is sent again, that a changed balance is,
and that a failing shop is retried, then left for the next run without marking anyone synced."""

from __future__ import annotations

import math
from contextlib import contextmanager

from sqlalchemy import select

from core.settings import load_settings
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.standins.woocommerce_server import WooCommerceServer
from models.db import transaction
from models.member import Member
from models.shop_customers import ShopCustomer, ShopCustomerState
from schedules.clock import build_scheduler
from tests import cli
from workers.runtime import build_runtime, set_runtime
from workers.shop_loyalty import sync_shops
from workers.shop_sync import backfill

WAITS = (0.01, 0.01)  # two retries, quickly


def shop_env(env, platform: str, url: str) -> dict[str, str]:
    extra = {
        "shopify": {"SHOPIFY_SHOP_DOMAIN": "loyalty-demo.myshopify.com", "SHOPIFY_ADMIN_TOKEN": "shpat_test_token",
                    "SHOPIFY_API_BASE_URL": url},
        "woocommerce": {"WOOCOMMERCE_URL": url, "WOOCOMMERCE_CONSUMER_KEY": "ck_test_key",
                        "WOOCOMMERCE_CONSUMER_SECRET": "cs_test_secret"},
    }[platform]
    return {**env, "LOYALTY_DEFAULT_TIMEZONE": "Europe/Paris", **extra}


@contextmanager
def runtime_of(environment):
    built = build_runtime(load_settings(environment))
    set_runtime(built)
    try:
        yield built
    finally:
        set_runtime(None)
        built.close()


def graphql_requests(shop: ShopifyServer) -> int:
    return sum(1 for r in shop.requests if r.endpoint == "graphql")


def mutations(shop: ShopifyServer, since: int) -> dict[str, int]:
    counted: dict[str, int] = {}
    for name, _ in shop.mutations[since:]:
        counted[name] = counted.get(name, 0) + 1
    return counted


def rows(pg_sessions, platform: str) -> dict[str, ShopCustomer]:
    with pg_sessions() as session:
        found = session.execute(select(Member.external_id, ShopCustomer).join(
            ShopCustomer, ShopCustomer.member_id == Member.id).where(ShopCustomer.platform == platform)).all()
        session.expunge_all()
        return {external_id: row for external_id, row in found}


def test_tier_tags_follow_an_upgrade_in_one_sync_in_the_fewest_requests_and_nothing_unchanged_is_sent(
        env, pg_engine, pg_sessions):
    # a Shopify Plus bucket (1,000 points/s): a standard one (2,000 points, 100/s) answers THROTTLED to
    # a third request of 560 points in a row, and the count would measure the waits, not the batching
    with ShopifyServer(bucket_size=10_000, restore_rate=1_000) as shop:
        customers = [shop.add_customer(f"member{i}@example.com", "Member", str(i)) for i in range(60)]
        environment = shop_env(env, "shopify", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "shopify", page_size=250)
            with transaction(runtime.sessions) as session:  # imported from elsewhere: not a shop customer
                session.add(Member(external_id="CRM-0001", locale="en", timezone="Europe/Paris"))

            first = sync_shops(runtime).platforms["shopify"]
            assert (first.synced, first.not_in_shop, first.failure) == (60, 1, None)
            assert all(shop.tags(c["id"]) == ["loyalty-tier:bronze"] for c in customers)
            assert shop.loyalty_fields(customers[0]["id"]) == {
                "tier": "bronze", "points": "0", "points_value": "0.00", "next_expiry_points": "0"}

            for customer in customers:  # 600 EUR each: silver (500), 600 + 50 first-order points
                shop.place_order(customer["id"], [("Tea chest", 1, "600.00")])
            backfill(runtime, "shopify", page_size=250)
            requests, done = graphql_requests(shop), len(shop.mutations)
            second = sync_shops(runtime).platforms["shopify"]
            assert (second.synced, second.retagged, second.errors) == (60, 60, 0)
            # 25 members per request; 5 metafields each, 25 per metafieldsSet; one tag added and the
            # other tiers' removed per upgraded member
            assert graphql_requests(shop) - requests == math.ceil(60 / 25) == second.calls
            assert mutations(shop, done) == {"metafieldsSet": math.ceil(60 * 5 / 25), "tagsAdd": 60, "tagsRemove": 60}
            for customer in customers:
                assert shop.tags(customer["id"]) == ["loyalty-tier:silver"]
            fields = shop.loyalty_fields(customers[7]["id"])
            assert {k: fields[k] for k in ("tier", "points", "points_value", "next_expiry_points")} == {
                "tier": "silver", "points": "650", "points_value": "6.50", "next_expiry_points": "650"}
            assert len(fields["next_expiry_date"]) == 10

            requests = graphql_requests(shop)
            third = sync_shops(runtime).platforms["shopify"]
            assert graphql_requests(shop) == requests  # nothing changed: no call
            assert (third.synced, third.unchanged) == (0, third.candidates)

            # one member's balance changes: that member alone is sent again, without touching its tags
            shop.place_order(customers[3]["id"], [("Cup", 2, "5.00")])
            backfill(runtime, "shopify", page_size=250)
            done = len(shop.mutations)
            fourth = sync_shops(runtime).platforms["shopify"]
            assert (fourth.synced, fourth.calls) == (1, 1)
            assert mutations(shop, done) == {"metafieldsSet": 1}
            assert shop.loyalty_fields(customers[3]["id"])["points"] == "660"
            assert shop.tags(customers[3]["id"]) == ["loyalty-tier:silver"]


def test_a_failing_shop_is_retried_then_left_for_the_next_run_without_marking_anyone_synced(
        env, pg_engine, pg_sessions):
    with ShopifyServer() as shop:
        customers = [shop.add_customer(f"member{i}@example.com") for i in range(3)]
        environment = shop_env(env, "shopify", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "shopify")
            requests = graphql_requests(shop)
            shop.faults.queue(*["error:503"] * (len(WAITS) + 1))  # the request and each retry
            failed = sync_shops(runtime, waits=WAITS).platforms["shopify"]
            assert graphql_requests(shop) - requests == len(WAITS) + 1
            assert failed.failure and "kept answering 503" in failed.failure
            assert (failed.synced, failed.left) == (0, 3)
            assert rows(pg_sessions, "shopify") == {}
            assert all(shop.tags(c["id"]) == [] for c in customers)

            again = sync_shops(runtime, waits=WAITS).platforms["shopify"]
            assert (again.synced, again.failure) == (3, None)
            assert all(shop.tags(c["id"]) == ["loyalty-tier:bronze"] for c in customers)


def test_a_customer_the_shop_refuses_is_recorded_and_its_neighbours_are_written_on_the_next_run(
        env, pg_engine, pg_sessions):
    with ShopifyServer() as shop:
        customers = [shop.add_customer(f"member{i}@example.com") for i in range(4)]
        environment = shop_env(env, "shopify", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "shopify")
            gone = customers[1]["id"]
            with shop._lock:
                del shop.customers[gone]  # deleted in the shop since
            first = sync_shops(runtime).platforms["shopify"]
            assert first.errors == 1 and first.synced == 0  # one metafieldsSet for the four: atomic
            recorded = rows(pg_sessions, "shopify")
            assert recorded[str(gone)].state == ShopCustomerState.ERROR
            assert "Owner does not exist" in recorded[str(gone)].reason
            assert "@" not in recorded[str(gone)].reason

            second = sync_shops(runtime).platforms["shopify"]
            assert (second.synced, second.errors) == (3, 0)  # the refused one waits until it changes
            assert all(shop.tags(c["id"]) == ["loyalty-tier:bronze"] for c in customers if c["id"] != gone)
            requests = graphql_requests(shop)
            sync_shops(runtime)
            assert graphql_requests(shop) == requests


def test_woocommerce_customers_get_their_meta_data_100_per_batch_and_the_command_says_what_it_did(
        env, pg_engine, pg_sessions):
    with WooCommerceServer() as shop:
        customers = [shop.add_customer(f"member{i}@example.com", "Member", str(i)) for i in range(101)]
        shop.place_order(customers[0]["id"], [("Tea chest", 1, "600.00")])
        environment = shop_env(env, "woocommerce", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "woocommerce")
        result = cli.loyalty(environment, "shop", "sync")
        assert result.returncode == 0, result.stderr
        assert "woocommerce: 101 member(s) changed since their last sync: 101 written" in result.stdout
        assert "in 2 request(s)" in result.stdout
        assert [len(b["update"]) for b in shop.batches] == [100, 1]
        meta = shop.meta(customers[0]["id"])
        assert {k: meta[k] for k in ("loyalty_tier", "loyalty_points", "loyalty_points_value",
                                     "loyalty_next_expiry_points")} == {
            "loyalty_tier": "silver", "loyalty_points": "650", "loyalty_points_value": "6.50",
            "loyalty_next_expiry_points": "650"}
        assert len(meta["loyalty_next_expiry_date"]) == 10
        assert shop.meta(customers[5]["id"])["loyalty_next_expiry_date"] == ""

        again = cli.loyalty(environment, "shop", "sync")
        assert again.returncode == 0, again.stderr
        assert len(shop.batches) == 2  # nothing changed: no call
        assert "0 written, 101 already up to date" in again.stdout


def test_the_clock_syncs_only_when_a_shopify_or_woocommerce_admin_api_is_configured(env):
    def jobs(environment) -> set[str]:
        return {job.id for job in build_scheduler(load_settings(environment), tick_minutes=5).get_jobs()}

    assert "shop.loyalty_sync" not in jobs(env)
    assert "shop.loyalty_sync" in jobs(shop_env(env, "shopify", "http://127.0.0.1:9"))
    assert "shop.loyalty_sync" in jobs(shop_env(env, "woocommerce", "http://127.0.0.1:9"))


def test_loyalty_shop_sync_without_a_shop_to_write_to_says_so_in_one_sentence(env, pg_engine):
    for args, expected in ((("shop", "sync"), "No shop's admin API is configured for writing"),
                           (("shop", "sync", "--platform", "woocommerce"), "woocommerce is not configured")):
        result = cli.loyalty(env, *args)
        assert result.returncode != 0
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


def test_a_key_the_shop_refuses_ends_its_run_with_a_sentence_naming_the_write_access_it_needs(
        env, pg_engine, pg_sessions):
    with WooCommerceServer() as shop:
        shop.add_customer("member@example.com")
        environment = shop_env(env, "woocommerce", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "woocommerce")
        with runtime_of({**environment, "WOOCOMMERCE_CONSUMER_SECRET": "cs_revoked"}) as runtime:
            report = sync_shops(runtime, waits=WAITS).platforms["woocommerce"]
        assert report.failure == ("WooCommerce refused the key (401); check WOOCOMMERCE_CONSUMER_KEY and "
                                  "WOOCOMMERCE_CONSUMER_SECRET (a REST API key with Read/Write access).")
        assert (report.synced, report.left) == (0, 1) and rows(pg_sessions, "woocommerce") == {}


def test_a_throttled_request_waits_for_the_bucket_and_one_sync_runs_at_a_time(env, pg_engine, pg_sessions):
    from sqlalchemy import text

    from workers.shop_loyalty import _LOCK_KEY

    with ShopifyServer() as shop:
        customers = [shop.add_customer(f"member{i}@example.com") for i in range(3)]
        environment = shop_env(env, "shopify", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "shopify")
            with pg_engine.connect() as other:  # another process's sync holds the lock
                other.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
                assert sync_shops(runtime).skipped
                other.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                other.commit()
            waited: list[float] = []
            shop.throttle_next(2)
            report = sync_shops(runtime, sleep=waited.append).platforms["shopify"]
            assert (report.synced, report.calls, len(waited)) == (3, 3, 2)
            assert all(shop.tags(c["id"]) == ["loyalty-tier:bronze"] for c in customers)


def test_a_woocommerce_customer_deleted_since_is_reported_and_the_rest_of_the_batch_written(
        env, pg_engine, pg_sessions):
    with WooCommerceServer() as shop:
        customers = [shop.add_customer(f"member{i}@example.com") for i in range(3)]
        environment = shop_env(env, "woocommerce", shop.url)
        with runtime_of(environment) as runtime:
            backfill(runtime, "woocommerce")
            with shop._lock:
                del shop.customers[customers[0]["id"]]
            report = sync_shops(runtime).platforms["woocommerce"]
            again = sync_shops(runtime).platforms["woocommerce"]
        assert (report.synced, report.errors, report.calls) == (2, 1, 1)
        assert report.reasons == {"woocommerce_rest_invalid_id: Invalid ID.": 1}
        assert rows(pg_sessions, "woocommerce")[str(customers[0]["id"])].state == ShopCustomerState.ERROR
        assert all(shop.meta(c["id"])["loyalty_tier"] == "bronze" for c in customers[1:])
        assert (again.synced, again.errors, len(shop.batches)) == (0, 0, 1)  # tried again when it changes
