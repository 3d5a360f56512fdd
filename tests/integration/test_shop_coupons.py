"""A campaign's coupon exists in the shop before the message that carries it goes out (issue 14), against
the Shopify-, WooCommerce- and PrestaShop-like stand-ins and the SMTP sink: made once whatever the shop's
faults, never sent when the shop lacks it, and accepted by the stand-in's checkout for that customer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.settings import load_settings
from loyalty.standins.prestashop_server import PrestaShopServer
from loyalty.standins.shop_discounts import CheckoutRefused
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.standins.woocommerce_server import WooCommerceServer
from models.coupons import Coupon
from models.db import transaction
from models.delivery import Delivery
from models.inbox import receive
from tests.support.members import add_members, make_member
from tests.support.program import place_order
from workers.delivery import deliver
from workers.inbox import apply_entry, envelope
from workers.runtime import build_runtime
from workers.tick import run_tick

DAY_90 = datetime(2027, 4, 1, 8, tzinfo=UTC)  # 10:00 in Paris, 90 days after the last order: step 2 by email
STEP_2 = "winback:{}:2027-01-01:2"


def _shop(platform: str):
    if platform == "shopify":
        server = ShopifyServer().start()
        return server, {"SHOPIFY_SHOP_DOMAIN": server.shop_domain, "SHOPIFY_ADMIN_TOKEN": server.access_token,
                        "SHOPIFY_API_BASE_URL": server.url}
    if platform == "woocommerce":
        server = WooCommerceServer().start()
        return server, {"WOOCOMMERCE_URL": server.url, "WOOCOMMERCE_CONSUMER_KEY": server.consumer_key,
                        "WOOCOMMERCE_CONSUMER_SECRET": server.consumer_secret}
    server = PrestaShopServer().start()
    return server, {"PRESTASHOP_URL": server.url, "PRESTASHOP_WEBSERVICE_KEY": server.key}


@pytest.fixture
def shop_runtime(request, env, pg_engine):
    server, variables = _shop(getattr(request, "param", "shopify"))
    runtime = build_runtime(load_settings({**env, **variables}))
    try:
        yield server, runtime
    finally:
        runtime.close()
        server.stop()


def _lapsed_customer(server, runtime, pg_sessions) -> tuple[int, str]:
    """A shop customer who is a member (external id = the shop's id) and last ordered on 2027-01-01."""
    customer = server.add_customer("ana@example.org", "Ana", "Martin")
    external = str(customer["id"])
    add_members(pg_sessions, make_member(external, email="ana@example.org"))
    place_order(runtime, external, "L1", datetime(2027, 1, 1, 15, tzinfo=UTC), "40")
    return customer["id"], external


def _delivery(pg_sessions, external: str) -> Delivery:
    with pg_sessions() as session:
        return session.scalar(select(Delivery).where(Delivery.occurrence_key == STEP_2.format(external)))


def _coupons(pg_sessions) -> list[tuple[str, str, str | None]]:
    with pg_sessions() as session:
        return [(c.code, c.state, c.shop) for c in session.scalars(select(Coupon))]


@pytest.mark.parametrize("shop_runtime", ["shopify", "woocommerce", "prestashop"], indirect=True)
def test_the_winback_code_is_in_the_shop_before_the_email_and_works_at_its_checkout(shop_runtime, pg_sessions,
                                                                                      smtp_sink):
    server, runtime = shop_runtime
    customer_id, external = _lapsed_customer(server, runtime, pg_sessions)
    run_tick(runtime, DAY_90)
    delivery = _delivery(pg_sessions, external)
    assert (delivery.state, delivery.reason) == ("sent", None)
    code = delivery.coupon_code
    (message,) = smtp_sink.messages
    assert code in message.get_body(("plain",)).get_content()
    # Order of arrival: every request to the shop had been answered before the email server took the message.
    assert max(r.started_at + r.duration for r in server.requests) < smtp_sink.arrived[0]
    assert len(server.discounts.codes) == 1 and len(server.discounts.creates) == 1
    assert _coupons(pg_sessions) == [(code, "created", server.name)]
    other = server.add_customer("bob@example.org", "Bob", "Durand")
    with pytest.raises(CheckoutRefused):
        server.checkout(other["id"], code)  # restricted to Ana
    order = server.checkout(customer_id, code)
    with pytest.raises(CheckoutRefused):
        server.checkout(customer_id, code)  # single use
    if server.name != "prestashop":  # the order that used it comes back through the inbox: the code is used
        _apply_order(runtime, server.name, order)
        assert _coupons(pg_sessions) == [(code, "used", server.name)]


def _apply_order(runtime, platform: str, order: dict) -> None:
    topic = "orders/paid" if platform == "shopify" else "order.created"
    key = f"{platform}:{topic}:{order['id']}"
    with transaction(runtime.sessions) as session:
        entry = receive(session, dedup_key=key, platform=platform, topic=topic,
                        body=envelope(json.dumps(order), event_id=str(order["id"]), triggered_at=None))
    pending = [entry]
    while pending:
        pending.extend(apply_entry(pending.pop(0), runtime))


def test_a_shop_that_fails_puts_the_message_back_and_nothing_goes_out_until_it_has_the_code(shop_runtime,
                                                                                            pg_sessions, smtp_sink):
    server, runtime = shop_runtime
    _, external = _lapsed_customer(server, runtime, pg_sessions)
    server.fail_request(2, "error:503")  # the lookup answers "none", the create fails
    run_tick(runtime, DAY_90)
    delivery = _delivery(pg_sessions, external)
    assert (delivery.state, delivery.reason) == ("planned", "coupon_not_created")
    assert smtp_sink.messages == [] and server.discounts.codes == {}
    deliver(runtime, [delivery.id], as_of=delivery.send_at)  # its retry: the shop answers now
    delivery = _delivery(pg_sessions, external)
    assert delivery.state == "sent" and len(smtp_sink.messages) == 1
    assert list(server.discounts.codes.values())[0].code == delivery.coupon_code


def test_a_refusing_shop_ends_the_message_failed_after_its_attempts_without_sending(shop_runtime, pg_sessions,
                                                                                     smtp_sink):
    server, runtime = shop_runtime
    _, external = _lapsed_customer(server, runtime, pg_sessions)
    server.discounts.refuse = True
    run_tick(runtime, DAY_90)
    for _ in range(runtime.settings.max_delivery_attempts):
        delivery = _delivery(pg_sessions, external)
        if delivery.state != "planned":
            break
        deliver(runtime, [delivery.id], as_of=delivery.send_at)
    delivery = _delivery(pg_sessions, external)
    assert (delivery.state, delivery.reason) == ("failed", "retries_exhausted")
    assert "coupon_not_created" in delivery.detail and "ana@" not in delivery.detail
    assert smtp_sink.messages == [] and server.discounts.codes == {}


def test_a_create_whose_answer_is_lost_makes_one_code_and_the_message_carries_it(shop_runtime, pg_sessions,
                                                                                   smtp_sink):
    server, runtime = shop_runtime
    _, external = _lapsed_customer(server, runtime, pg_sessions)
    server.fail_request(2, "drop")  # the shop makes the code, then the connection closes: a time-out to us
    run_tick(runtime, DAY_90)
    delivery = _delivery(pg_sessions, external)
    assert delivery.state == "sent"
    assert len(server.discounts.codes) == 1 and len(server.discounts.creates) == 1
    assert _coupons(pg_sessions) == [(delivery.coupon_code, "created", "shopify")]


def test_a_worker_killed_after_the_shop_made_the_code_leaves_one_code(shop_runtime, pg_sessions, smtp_sink):
    """The crash window: the shop has the code, our side never heard (the coupon row is not ``created``).
    The next worker's creation finds the code instead of making a second one."""
    from workers.coupons import create_in_shop
    from workers.delivery import _discount_shop

    server, runtime = shop_runtime
    _, external = _lapsed_customer(server, runtime, pg_sessions)
    server.fail_request(2, "drop")
    run_tick(runtime, DAY_90)  # sent; now replay the creation as a restarted worker would
    with pg_sessions() as session:
        coupon = session.scalar(select(Coupon))
        session.execute(Coupon.__table__.update().values(state="new", shop=None, shop_id=None))
        session.commit()
    from workers.coupons import Offer

    offer = Offer(code=coupon.code, member_id=coupon.member_id, percent_off=coupon.percent_off, amount_off=None,
                  currency="EUR", expires_at=coupon.expires_at, title="again")
    channels: dict = {}
    assert create_in_shop(runtime.sessions, _discount_shop(runtime, channels), offer) is None
    assert create_in_shop(runtime.sessions, _discount_shop(runtime, channels), offer) is None
    channels["shop:discounts"].close()
    assert len(server.discounts.codes) == 1 and len(server.discounts.creates) == 1
    assert _coupons(pg_sessions) == [(coupon.code, "created", "shopify")]


def test_without_a_shop_the_code_is_recorded_for_the_export(runtime, pg_sessions, smtp_sink):
    add_members(pg_sessions, make_member("LAPSED", email="lapsed@example.org"))
    place_order(runtime, "LAPSED", "L1", datetime(2027, 1, 1, 15, tzinfo=UTC), "40")
    run_tick(runtime, DAY_90)
    delivery = _delivery(pg_sessions, "LAPSED")
    assert delivery.state == "sent"
    assert _coupons(pg_sessions) == [(delivery.coupon_code, "new", None)]


def test_without_a_shop_the_export_writes_the_codes_once_and_history_shows_their_state(env, runtime, pg_sessions,
                                                                                        smtp_sink, tmp_path):
    import csv

    from tests.integration.test_support_commands import loyalty, one_sentence

    add_members(pg_sessions, make_member("LAPSED", email="lapsed@example.org"))
    place_order(runtime, "LAPSED", "L1", datetime(2027, 1, 1, 15, tzinfo=UTC), "40")
    run_tick(runtime, DAY_90)
    code = _delivery(pg_sessions, "LAPSED").coupon_code
    history = loyalty(env, "history", "--member", "LAPSED", "--json")
    assert f"coupon {code} 15% off until 2027-05-01: recorded, not in a shop" in history.stdout, history.stdout[-700:]

    out = tmp_path / "coupons.csv"
    result = loyalty(env, "coupons", "export", "--since", "2020-01-01", "-o", str(out))
    assert result.returncode == 0, result.stderr
    with out.open() as written:
        (row,) = list(csv.DictReader(written))
    # It ends at midnight in Paris (the member's day), written in the shop's time zone (the default: UTC here).
    assert row == {"code": code, "discount_type": "percent", "amount": "15.00", "date_expires": "2027-05-01T22:00:00",
                   "usage_limit": "1", "usage_limit_per_user": "1", "individual_use": "yes",
                   "email_restrictions": "lapsed@example.org", "customer_id": "LAPSED", "currency": "",
                   "source": "campaign"}
    assert _coupons(pg_sessions) == [(code, "exported", None)]
    show = json.loads(loyalty(env, "member", "show", "LAPSED", "--json").stdout)
    assert show["coupons"] == [f"{code} 15% off until 2027-05-01: exported (loyalty coupons export)"]
    data = json.loads(loyalty(env, "member", "export", "LAPSED").stdout)  # a privacy export lists them too
    assert [(c["code"], c["state"], c["percent_off"]) for c in data["coupons"]] == [(code, "exported", "15.00")]
    later = loyalty(env, "coupons", "export", "--since", "2099-01-01")
    assert later.stdout.splitlines() == [",".join(("code", "discount_type", "amount", "date_expires", "usage_limit",
                                                   "usage_limit_per_user", "individual_use", "email_restrictions",
                                                   "customer_id", "currency", "source"))]
    bad = loyalty(env, "coupons", "export", "--since", "yesterday")
    assert bad.returncode != 0 and one_sentence(bad) == ("error: --since 'yesterday' is not a date; "
                                                       "write it like 2026-01-31 or 2026-01-31T12:00:00Z.")


def test_a_member_who_is_not_a_shop_customer_gets_no_message_and_a_reason(shop_runtime, pg_sessions, smtp_sink):
    server, runtime = shop_runtime
    add_members(pg_sessions, make_member("M-STORE-ONLY", email="walkin@example.org"))
    place_order(runtime, "M-STORE-ONLY", "L1", datetime(2027, 1, 1, 15, tzinfo=UTC), "40")
    run_tick(runtime, DAY_90)
    delivery = _delivery(pg_sessions, "M-STORE-ONLY")
    assert (delivery.state, delivery.reason) == ("failed", "coupon_not_created")
    assert delivery.detail == ("The member is not a Shopify customer (their id is not the shop's); a code "
                               "restricted to them cannot be made there.")
    assert smtp_sink.messages == [] and server.discounts.codes == {}


def test_a_worker_killed_while_the_shop_makes_the_code_ends_with_one_code(env, pg_engine, pg_sessions, smtp_sink):
    """`loyalty run` killed (SIGKILL) once the shop stored the code, before its answer: the message is not
    sent, the sweeper marks it unknown (never re-sent blindly), the next tick makes no second code. (A
    creation run again for that code finds it: test_a_worker_killed_after_the_shop_made_the_code_leaves_one_code.)"""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT
    from workers.sweeper import sweep

    server, variables = _shop("shopify")
    runtime = build_runtime(load_settings({**env, **variables}))
    try:
        customer_id, external = _lapsed_customer(server, runtime, pg_sessions)
        clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SMTP_URL")}
        worker = subprocess.Popen([sys.executable, "-m", "loyalty", "run", "--at", DAY_90.isoformat()],
                                  env={**clean, **env, **variables}, cwd=REPO_ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server.discounts.after_create = lambda entry: os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(60) == -signal.SIGKILL
        server.discounts.after_create = None
        assert len(server.discounts.codes) == 1 and smtp_sink.messages == []
        assert _delivery(pg_sessions, external).state == "sending"
        (code,) = [c for c, _, _ in _coupons(pg_sessions)]
        assert _coupons(pg_sessions) == [(code, "new", None)]  # the worker died before it heard

        sweep(runtime, datetime.now(UTC) + timedelta(hours=1))
        assert _delivery(pg_sessions, external).state == "unknown"
        run_tick(runtime, DAY_90 + timedelta(hours=1))  # the restarted worker's next tick
        assert _delivery(pg_sessions, external).state == "unknown" and smtp_sink.messages == []
        assert len(server.discounts.codes) == 1 and len(server.discounts.creates) == 1
    finally:
        runtime.close()
        server.stop()
