"""The shop's webhooks and our events API, end to end: a Shopify-like and a WooCommerce-like server
send to the real web app (its signatures, retries, duplicates, out-of-order deliveries), and what
lands in PostgreSQL is checked. Without Redis the web process applies each stored entry right away."""

from __future__ import annotations

import json
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import func, select

from core.settings import load_settings
from loyalty.standins.http_server import BackgroundServer
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.standins.woocommerce_server import WooCommerceServer
from loyalty.web import create_app
from models.inbox import InboxEntry, InboxState
from models.member import Member
from models.order import Order
from models.points import PointEntry
from workers.runtime import set_runtime

API_KEY = "k-live-0123456789abcdef"


@pytest.fixture
def shop_env(env):
    return {**env, "LOYALTY_EMAIL_FROM": "Club <club@shop.example>",
            "SHOPIFY_WEBHOOK_SECRET": "shpss_test_secret", "WOOCOMMERCE_WEBHOOK_SECRET": "wc_webhook_secret",
            "LOYALTY_API_KEYS": f"k-old-0123456789abcdef,{API_KEY}"}


@contextmanager
def serving(settings):
    app = create_app(settings)
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield server.url, http
    finally:
        server.stop()
        app.state.engine.dispose()
        set_runtime(None)


@pytest.fixture
def web(shop_env, pg_engine):
    with serving(load_settings(shop_env)) as served:
        yield served


def count(pg_sessions, model, *where) -> int:
    with pg_sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def balance(pg_sessions, external_id: str) -> int:
    with pg_sessions() as session:
        return session.scalar(select(func.coalesce(func.sum(PointEntry.points), 0))
                              .join(Member, Member.id == PointEntry.member_id)
                              .where(Member.external_id == str(external_id)))


def test_a_forged_shopify_webhook_is_refused_and_changes_nothing(web, pg_sessions):
    url, _ = web
    with ShopifyServer(f"{url}/webhooks/shopify") as shop:
        shop.webhook_faults.wrong_secret = "not-the-secret-at-all"
        shop.add_customer("ada@example.com", "Ada", "Lovelace")
        assert {d.status for d in shop.deliveries} == {401}
    assert count(pg_sessions, InboxEntry) == 0 and count(pg_sessions, Member) == 0


def test_the_same_shopify_webhook_three_times_applies_once(web, pg_sessions):
    url, _ = web
    with ShopifyServer(f"{url}/webhooks/shopify") as shop:
        shop.webhook_faults.duplicates = 3  # every delivery sent three times
        customer = shop.add_customer("ada@example.com", "Ada", "Lovelace")
        shop.place_order(customer["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
        assert len(shop.deliveries_of("orders/paid")) == 3 and {d.status for d in shop.deliveries} == {200}
    assert count(pg_sessions, InboxEntry, InboxEntry.topic == "orders/paid") == 1
    assert balance(pg_sessions, customer["id"]) == 90 + 50  # 90.00 after discount, no shipping; the bonus


def test_an_order_delivered_before_its_customer_is_applied_when_the_customer_arrives(web, pg_sessions):
    url, _ = web
    with ShopifyServer(f"{url}/webhooks/shopify") as shop:
        with shop.held(order="reversed"):  # the order's webhooks arrive first
            customer = shop.add_customer("ada@example.com", "Ada", "Lovelace")
            shop.place_order(customer["id"], [("Tea tin", 1, "80.00")])
    assert balance(pg_sessions, customer["id"]) == 80 + 50
    assert count(pg_sessions, InboxEntry, InboxEntry.state != InboxState.APPLIED) == 0


def test_a_partial_refund_takes_back_its_share(web, pg_sessions):
    url, _ = web
    with ShopifyServer(f"{url}/webhooks/shopify") as shop:
        customer = shop.add_customer("ada@example.com", "Ada", "Lovelace")
        order = shop.place_order(customer["id"], [("Tea tin", 1, "60.00"), ("Teapot", 1, "40.00")])
        shop.refund(order["id"], {order["line_items"][1]["id"]: 1})  # the teapot: 40 of 100
    assert balance(pg_sessions, customer["id"]) == 100 + 50 - 40
    with pg_sessions() as session:
        stored = session.scalars(select(Order).where(Order.order_id == str(order["id"]))).one()
        assert str(stored.refunded_amount) == "40.00"


def test_an_unknown_topic_and_a_missing_signature_are_refused_before_anything_is_stored(web, pg_sessions):
    _, http = web
    unsigned = http.post("/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"})
    assert unsigned.status_code == 401 and "SHOPIFY_WEBHOOK_SECRET" in unsigned.json()["error"]
    from shops.signatures import body_signature

    body = b'{"id": 1}'
    other = http.post("/webhooks/shopify", content=body, headers={
        "X-Shopify-Topic": "products/create", "X-Shopify-Hmac-Sha256": body_signature(body, "shpss_test_secret"),
        "X-Shopify-Event-Id": "e1"})
    assert other.status_code == 400 and "not one the loyalty program subscribes to" in other.json()["error"]
    assert count(pg_sessions, InboxEntry) == 0


def test_a_body_over_the_limit_is_refused_with_413(web, pg_sessions):
    _, http = web
    answer = http.post("/webhooks/shopify", content=b"x" * 1_100_000, headers={"X-Shopify-Topic": "orders/create"})
    assert answer.status_code == 413
    assert count(pg_sessions, InboxEntry) == 0


def test_woocommerce_ping_order_and_refund(web, pg_sessions):
    url, _ = web
    with WooCommerceServer() as shop:
        hooks = [shop.subscribe(f"{url}/webhooks/woocommerce", topic)
                 for topic in ("customer.created", "order.created", "order.updated")]
        assert [hook.ping_status for hook in hooks] == [200, 200, 200]  # the unsigned creation ping
        customer = shop.add_customer("ada@example.com", "Ada", "Lovelace", country="FR")
        order = shop.place_order(customer["id"], [("Tea tin", 2, "50.00")], status="processing")
        shop.refund(order["id"], "60.00")  # half of the order's 120.00 (taxes included in the total)
        assert {d.status for d in shop.deliveries} == {200}
    assert balance(pg_sessions, customer["id"]) == 100 + 50 - 50


def test_the_events_api_takes_a_signed_list_once_and_refuses_a_bad_one_whole(web, pg_sessions):
    _, http = web
    auth = {"Authorization": f"Bearer {API_KEY}"}
    events = [
        {"event": "member_updated", "idempotency_key": "m-1",
         "member": {"external_id": "S1", "email": "s1@example.com", "email_opt_in": "true"}},
        {"event": "order_placed", "idempotency_key": "o-1",
         "order": {"order_id": "A-1", "member_id": "S1", "placed_at": "2026-11-01T10:00:00Z",
                   "total": "42.50", "currency": "EUR"}},
    ]
    assert http.post("/api/events", json=events).status_code == 401
    first = http.post("/api/events", json=events, headers=auth)
    assert first.status_code == 202 and first.json() == {"accepted": 2, "duplicates": 0}
    again = http.post("/api/events", json=events, headers=auth)
    assert again.json() == {"accepted": 0, "duplicates": 2}
    assert balance(pg_sessions, "S1") == 42 + 50

    bad = [{"event": "order_placed", "idempotency_key": "o-2", "order": {"order_id": "A-2", "member_id": "S1",
                                                                        "placed_at": "2026-11-02T10:00:00Z",
                                                                        "total": "10", "currency": "EUR"}},
           {"event": "order_shipped", "idempotency_key": "x"}]
    refused = http.post("/api/events", json=bad, headers=auth)
    assert refused.status_code == 400
    assert refused.json() == {"error": "Nothing was accepted: event 2 has the event 'order_shipped'; use one of "
                                       "member_updated, order_placed, order_refunded, points_redeemed."}
    assert count(pg_sessions, InboxEntry) == 2

    refund = {"event": "order_refunded", "idempotency_key": "r-1",
              "refund": {"order_id": "A-1", "amount": "21.25", "refunded_at": "2026-11-03T10:00:00Z"}}
    assert http.post("/api/events", json=refund, headers=auth).status_code == 202
    assert balance(pg_sessions, "S1") == 42 + 50 - 21


def test_the_readmes_curl_examples_are_accepted_and_applied(web, pg_sessions):
    """The README's events-API examples, posted as written: the manual stays true."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### PrestaShop, and any other shop"):readme.index("### PrestaShop's Webservice")]
    bodies = [json.loads(body) for body in re.findall(r"-d '(.*?)'", section, flags=re.S)]
    assert [b["event"] for b in bodies] == ["member_updated", "order_placed", "order_refunded", "points_redeemed"]
    _, http = web
    for body in bodies:
        answer = http.post("/api/events", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        assert answer.status_code == 202, answer.text
    with pg_sessions() as session:
        states = dict(session.execute(select(InboxEntry.topic, InboxEntry.state)).all())
    assert set(states.values()) == {"applied"}, states
    assert balance(pg_sessions, "42") == 90 + 50 - 45 - 50


def test_the_web_process_on_a_fresh_embedded_default_creates_its_database_and_takes_webhooks(tmp_path):
    """`loyalty web` with no DATABASE_URL: its SQLite file is created on start, as every command does."""
    from shops.signatures import body_signature

    settings = load_settings({"LOYALTY_HOME": str(tmp_path / "home"), "SHOPIFY_WEBHOOK_SECRET": "shpss_test_secret"})
    body = json.dumps({"id": 7, "email": "eve@example.com", "first_name": "Eve",
                       "created_at": "2026-11-01T10:00:00Z", "updated_at": "2026-11-01T10:00:00Z"}).encode()
    with serving(settings) as (_, http):
        answer = http.post("/webhooks/shopify", content=body, headers={
            "X-Shopify-Topic": "customers/create", "X-Shopify-Event-Id": "e1",
            "X-Shopify-Hmac-Sha256": body_signature(body, "shpss_test_secret")})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"accepted": 1, "duplicates": 0}
    from models.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            assert session.scalars(select(Member.first_name).where(Member.external_id == "7")).one() == "Eve"
    finally:
        engine.dispose()
