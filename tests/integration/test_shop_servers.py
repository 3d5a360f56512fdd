"""The Shopify-, WooCommerce- and PrestaShop-like stand-ins behave like the platforms (docs/shop-platforms.md):
their webhooks verify and parse with our own ``shops`` mapping, their admin APIs page every record exactly
once with the platforms' auth, and their faults happen as configured."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from loyalty.standins.fault import read_body
from loyalty.standins.http_server import BackgroundServer, send_response
from loyalty.standins.prestashop_server import PrestaShopServer
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.standins.woocommerce_server import WooCommerceServer
from shops import prestashop, shopify, shopify_graphql, woocommerce
from shops.common import ShopMapping
from shops.events import EventKind
from shops.signatures import valid_body_signature

MAPPING = ShopMapping(default_timezone="Europe/Paris")
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class Receiver:
    """Our side, reduced to recording: each request's headers and body; answers scripted statuses, then 200."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.delays: list[float] = []
        self.lock = threading.Lock()
        self.server = BackgroundServer(self.app)

    async def app(self, scope, receive, send) -> None:  # noqa: ANN001
        body = await read_body(receive)
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            delay = self.delays.pop(0) if self.delays else 0.0
        await asyncio.sleep(delay)
        with self.lock:
            self.got.append(({k.decode().lower(): v.decode() for k, v in scope["headers"]}, body))
        await send_response(send, status, [], b"")

    def topics(self, header: str) -> list[str]:
        return [h[header] for h, _ in self.got]


@pytest.fixture
def receiver():
    r = Receiver()
    with r.server:
        r.url = r.server.url + "/webhooks"
        yield r


# -- Shopify ---------------------------------------------------------------------------------------


@pytest.fixture
def shop(receiver):
    with ShopifyServer(receiver.url, start=START) as server:
        yield server


def shopify_events(headers: dict[str, str], body: bytes) -> list:
    triggered = datetime.fromisoformat(headers["x-shopify-triggered-at"].replace("Z", "+00:00"))
    topic, event_id = headers["x-shopify-topic"], headers["x-shopify-event-id"]
    return shopify.parse(topic, event_id, triggered, json.loads(body), MAPPING)


def test_shopify_webhooks_carry_the_platform_headers_verify_and_parse(shop, receiver):
    ana = shop.add_customer("ana@example.org", "Zoé", "Martin", phone="+33612345678", birthday="1990-12-10")
    order = shop.place_order(ana["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
    shop.refund(order["id"], {order["line_items"][0]["id"]: 1})
    shop.update_customer(ana["id"], email_consent="unsubscribed")
    shop.request_redact(ana["id"])
    assert receiver.topics("x-shopify-topic") == ["customers/create", "orders/create", "orders/paid",
                                                  "refunds/create", "orders/updated", "customers/update",
                                                  "customers/redact"]
    events = []
    for headers, body in receiver.got:
        assert valid_body_signature(body, headers["x-shopify-hmac-sha256"], ["shpss_test_secret"])
        assert not valid_body_signature(body, headers["x-shopify-hmac-sha256"], ["another secret"])
        assert headers["x-shopify-shop-domain"] == "loyalty-demo.myshopify.com"
        assert headers["x-shopify-api-version"] == "2026-01" and headers["x-shopify-webhook-id"]
        events.append(shopify_events(headers, body))
    assert len({h["x-shopify-event-id"] for h, _ in receiver.got}) == 7
    member, placed, refund = events[0][0], events[1][0], events[3][0]
    assert member.fields["first_name"] == "Zoé" and member.fields["birthday"] == "1990-12-10"
    assert member.fields["email_opt_in"] == "true" and member.fields["timezone"] == "Europe/Paris"
    assert placed.fields["total"] == "90.00" and placed.fields["state"] == "paid" and placed.member_id == str(ana["id"])
    assert refund.kind is EventKind.REFUND and refund.fields["amount"] == "45.00"
    updated = events[4]
    assert updated[0].fields["state"] == "partially_refunded" and updated[1].fields["amount"] == "45.00"
    assert events[5][0].fields["email_opt_in"] == "false"
    assert events[6][0].kind is EventKind.ERASE_MEMBER
    assert all(d.status == 200 and d.attempt == 1 for d in shop.deliveries)


def test_shopify_tax_inclusive_guest_order_earns_on_merchandise_without_tax(shop, receiver):
    shop.place_order(None, [("Tea box", 2, "60.00")], email="guest@example.org", taxes_included=True,
                     financial_status="pending")
    [(headers, body)] = receiver.got
    [event] = shopify_events(headers, body)
    assert event.fields["total"] == "100.00" and event.fields["state"] == "pending"
    assert event.member_id is None and event.member_email == "guest@example.org"


def test_shopify_tax_inclusive_refunds_mean_the_same_by_webhook_and_by_graphql(shop, receiver):
    """A refund's line subtotals include the taxes when the order's prices do: the webhook and the node
    the backfill reads both carry them apart; the shipping refunded alone has no line (nothing earned)."""
    ana = shop.add_customer("ana@example.org", "Ana")
    order = shop.place_order(ana["id"], [("Tea box", 1, "60.00"), ("Tea box XL", 1, "60.00")], shipping="6.00",
                             taxes_included=True)
    shop.refund(order["id"], {order["line_items"][0]["id"]: 1})
    shop.refund(order["id"], {}, shipping=True)
    created = [shopify_events(h, body)[0] for h, body in receiver.got if h["x-shopify-topic"] == "refunds/create"]
    assert [(e.fields["amount"], e.fields["tax"]) for e in created] == [("60.00", "10.00"), ("0.00", "0.00")]
    assert json.loads(receiver.got[-2][1])["refund_shipping_lines"][0]["subtotal_amount_set"]["shop_money"][
        "amount"] == "6.00"
    node = graphql(shop, PAGE % "orders", {"first": 1}).json()["data"]["orders"]["edges"][0]["node"]
    assert node["displayFinancialStatus"] == "PARTIALLY_REFUNDED"  # the second box is not refunded
    placed, box, shipping = shopify.order_events(shopify_graphql.order_payload(node), "k", None, MAPPING)
    assert placed.fields["total"] == "100.00" and placed.fields["taxes_included"] == "true"
    assert [(e.fields["refund_id"], e.fields["amount"], e.fields["tax"]) for e in (box, shipping)] == [
        (e.fields["refund_id"], e.fields["amount"], e.fields["tax"]) for e in created]


def test_shopify_payment_cancellation_and_privacy_topics_parse(shop, receiver):
    ana = shop.add_customer("ana@example.org", "Ana")
    order = shop.place_order(ana["id"], financial_status="pending")
    shop.mark_paid(order["id"])
    shop.cancel_order(order["id"])
    shop.request_data(ana["id"])
    shop.redact_shop()
    events = {h["x-shopify-topic"]: shopify_events(h, body)[0] for h, body in receiver.got}
    assert events["orders/create"].fields["state"] == "pending" and events["orders/paid"].fields["state"] == "paid"
    assert events["orders/cancelled"].fields["state"] == "cancelled"
    assert events["customers/data_request"].kind is EventKind.EXPORT_MEMBER
    assert events["customers/data_request"].member_id == str(ana["id"])
    assert events["shop/redact"].kind is EventKind.ERASE_SHOP


def test_shopify_retries_a_failed_delivery_with_the_same_event_until_it_succeeds(shop, receiver):
    receiver.statuses = [500, 503]
    shop.add_customer("ana@example.org", "Ana")
    attempts = shop.deliveries
    assert [(a.attempt, a.status) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert len({(a.headers["X-Shopify-Event-Id"], a.headers["X-Shopify-Webhook-Id"],
                 a.headers["X-Shopify-Triggered-At"], a.body) for a in attempts}) == 1


def test_shopify_gives_up_after_eight_retries_and_counts_a_slow_answer_as_failed(receiver):
    with ShopifyServer(receiver.url, retry_delays=[0.001] * 8, webhook_timeout=0.3) as server:
        receiver.statuses = [500] * 20
        server.add_customer("ana@example.org")
        assert [a.attempt for a in server.deliveries] == list(range(1, 10))
        receiver.statuses, receiver.delays = [], [1.0]
        server.update_customer(min(server.customers), first_name="Ana")
        late = server.deliveries_of("customers/update")
        assert [(a.error, a.status) for a in late] == [("timeout", None), (None, 200)]


def test_shopify_faults_duplicate_reorder_drop_and_forge(shop, receiver):
    shop.webhook_faults.duplicates = 3
    ana = shop.add_customer("ana@example.org")
    assert receiver.topics("x-shopify-topic") == ["customers/create"] * 3
    assert len({h["x-shopify-event-id"] for h, _ in receiver.got}) == 1
    shop.webhook_faults.duplicates = 1
    receiver.got.clear()
    with shop.held():  # the order's webhooks overtake the customer's
        bob = shop.add_customer("bob@example.org")
        shop.place_order(bob["id"])
    assert receiver.topics("x-shopify-topic") == ["orders/paid", "orders/create", "customers/create"]
    receiver.got.clear()
    shop.webhook_faults.drop = 1
    shop.update_customer(ana["id"], first_name="Ana")
    assert receiver.got == [] and shop.deliveries[-1].error == "dropped"
    assert httpx.post(f"{shop.url}/__admin/webhook_faults", json={"wrong_secret": "forged"}).status_code == 200
    shop.update_customer(ana["id"], first_name="Anna")
    [(headers, body)] = receiver.got
    assert not valid_body_signature(body, headers["x-shopify-hmac-sha256"], ["shpss_test_secret"])


def test_shopify_background_delivery_and_two_subscriptions(receiver):
    with ShopifyServer(start=START, background=True) as server:
        server.subscribe(receiver.url, ["orders/create"], name="loyalty-a")
        server.subscribe(receiver.url, ["orders/create"], name="loyalty-b")
        receiver.statuses = [500]
        server.place_order(None, email="guest@example.org")
        assert server.wait_deliveries(5)
    assert sorted(receiver.topics("x-shopify-name")) == ["loyalty-a", "loyalty-a", "loyalty-b"]
    assert len({h["x-shopify-event-id"] for h, _ in receiver.got}) == 1
    assert len({h["x-shopify-webhook-id"] for h, _ in receiver.got}) == 2


def test_shopify_retries_reach_a_web_process_that_was_down_when_the_event_fired(receiver):
    with ShopifyServer(receiver.url, background=True, retry_delays=[0.2] * 8) as server:
        receiver.server.stop()
        server.add_customer("ana@example.org")
        time.sleep(0.3)
        receiver.server.start()  # the same port
        assert server.wait_deliveries(5)
    attempts = server.deliveries
    assert attempts[0].error.startswith("connection") and attempts[-1].status == 200
    assert len(receiver.got) == 1


PAGE = """query Page($first: Int!, $after: String, $q: String) {
  %s(first: $first, after: $after, query: $q, sortKey: UPDATED_AT) {
    edges { cursor node { id legacyResourceId updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""


def graphql(server: ShopifyServer, query: str, variables: dict | None = None, token: str = "shpat_test_token"):
    return httpx.post(f"{server.url}/admin/api/2026-01/graphql.json",
                      json={"query": query, "variables": variables or {}},
                      headers={"X-Shopify-Access-Token": token}, timeout=5)


def test_shopify_graphql_pages_every_record_once_and_filters_by_updated_at(receiver):
    with ShopifyServer(start=START) as server:  # no subscription: nothing is sent
        customers = [server.add_customer(f"c{i}@example.org", at=START + timedelta(days=i))["id"] for i in range(7)]
        orders = [server.place_order(customers[i % 7], at=START + timedelta(days=i, hours=1))["id"] for i in range(12)]
        for root, expected in (("customers", customers), ("orders", orders)):
            seen, after, pages = [], None, 0
            while True:
                answer = graphql(server, PAGE % root, {"first": 5, "after": after}).json()
                conn = answer["data"][root]
                seen += [int(e["node"]["legacyResourceId"]) for e in conn["edges"]]
                assert answer["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 2000
                pages += 1
                if not conn["pageInfo"]["hasNextPage"]:
                    break
                after = conn["pageInfo"]["endCursor"]
            assert seen == expected and pages == -(-len(expected) // 5)
        since = "updated_at:>='2026-11-05T00:00:00Z' AND updated_at:<'2026-11-08T00:00:00Z'"
        window = graphql(server, PAGE % "orders", {"first": 250, "q": since}).json()["data"]["orders"]
        assert [int(e["node"]["legacyResourceId"]) for e in window["edges"]] == orders[4:7]
        inline = graphql(server, '{ customers(first: 2, reverse: true) { edges { node { id } } } }').json()
        assert [e["node"]["id"] for e in inline["data"]["customers"]["edges"]] == [
            f"gid://shopify/Customer/{c}" for c in customers[:-3:-1]]
        node = graphql(server, PAGE % "orders", {"first": 1}).json()["data"]["orders"]["edges"][0]["node"]
        assert node["displayFinancialStatus"] == "PAID" and node["subtotalPriceSet"]["shopMoney"]["amount"] == "100.00"
        assert node["customer"]["legacyResourceId"] == str(customers[0])


def test_shopify_graphql_auth_throttling_and_a_failed_request_to_resume_from(receiver):
    with ShopifyServer(start=START) as server:
        for i in range(6):
            server.add_customer(f"c{i}@example.org")
        assert graphql(server, PAGE % "customers", {"first": 2}, token="wrong").status_code == 401
        server.throttle_next()
        throttled = graphql(server, PAGE % "customers", {"first": 2})
        assert throttled.status_code == 200 and throttled.json()["errors"][0]["extensions"]["code"] == "THROTTLED"
        assert "cost" in throttled.json()["extensions"]
        first = graphql(server, PAGE % "customers", {"first": 2}).json()["data"]["customers"]
        server.fail_request(2)  # the second request from now fails; the first is answered
        cursor = first["pageInfo"]["endCursor"]
        second = graphql(server, PAGE % "customers", {"first": 2, "after": cursor}).json()["data"]["customers"]
        rest = {"first": 2, "after": second["pageInfo"]["endCursor"]}
        assert graphql(server, PAGE % "customers", rest).status_code == 500
        third = graphql(server, PAGE % "customers", rest).json()
        ids = [e["node"]["id"] for page in (first, second, third["data"]["customers"]) for e in page["edges"]]
        assert len(ids) == len(set(ids)) == 6 and not third["data"]["customers"]["pageInfo"]["hasNextPage"]
        too_many = graphql(server, PAGE % "customers", {"first": 251}).json()
        assert "between 1 and 250" in too_many["errors"][0]["message"]
        unknown = graphql(server, "{ products(first: 1) { edges { node { id } } } }").json()
        assert unknown["errors"][0]["extensions"]["code"] == "undefinedField"
        server.read_all_orders = False  # without the scope, orders older than 60 days are invisible
        server.place_order(None, email="old@example.org", at=server.clock.now() - timedelta(days=61))
        recent = server.place_order(None, email="new@example.org", at=server.clock.now() - timedelta(days=59))
        visible = graphql(server, PAGE % "orders", {"first": 250}).json()["data"]["orders"]["edges"]
        assert [int(e["node"]["legacyResourceId"]) for e in visible] == [recent["id"]]
        tiny = ShopifyServer(bucket_size=10, restore_rate=1).start()
        try:
            costly = graphql(tiny, PAGE % "orders", {"first": 50}).json()
            assert costly["errors"][0]["extensions"]["code"] == "THROTTLED"
        finally:
            tiny.stop()


# -- WooCommerce -----------------------------------------------------------------------------------


@pytest.fixture
def woo(receiver):
    with WooCommerceServer(receiver.url, start=START) as server:
        receiver.pings = list(receiver.got)
        receiver.got.clear()
        yield server


def test_woocommerce_pings_each_new_webhook_unsigned(woo, receiver):
    assert [body for _, body in receiver.pings] == [f"webhook_id={h.id}".encode() for h in woo.webhooks]
    assert all("x-wc-webhook-signature" not in h and h["content-type"].startswith("application/x-www-form-urlencoded")
               for h, _ in receiver.pings)
    assert {h.ping_status for h in woo.webhooks} == {200} and len(woo.webhooks) == 6


def test_woocommerce_webhooks_are_php_json_signed_over_the_bytes_and_parse(woo, receiver):
    ada = woo.add_customer("ada@example.com", "Zoé", "Lovelace", phone="06 12 34 56 78",
                           meta={"birthday": "--12-10", "loyalty_email_opt_in": "yes", "site": "https://a/b"})
    order = woo.place_order(ada["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
    woo.refund(order["id"], "57.50", reason="one tin dented")
    woo.place_order(None, email="guest@example.org")
    assert receiver.topics("x-wc-webhook-topic") == ["customer.created", "order.created", "order.updated",
                                                     "order.created"]
    parsed = []
    for headers, body in receiver.got:
        assert valid_body_signature(body, headers["x-wc-webhook-signature"], ["wc_webhook_secret"])
        assert headers["x-wc-webhook-source"] == "https://shop.example/" and headers["x-wc-webhook-id"].isdigit()
        assert headers["x-wc-webhook-resource"] + "." + headers["x-wc-webhook-event"] == headers["x-wc-webhook-topic"]
        assert not any(byte > 127 for byte in body)
        parsed.append(woocommerce.parse(headers["x-wc-webhook-topic"], json.loads(body), MAPPING))
    assert b"Zo\\u00e9" in receiver.got[0][1] and b"https:\\/\\/a\\/b" in receiver.got[0][1]
    member = parsed[0][0]
    assert member.fields["first_name"] == "Zoé" and member.fields["phone"] == "+33612345678"
    assert member.fields["email_opt_in"] == "yes"
    assert parsed[1][0].fields["total"] == "90.00" and parsed[1][0].fields["state"] == "paid"
    placed, refund = parsed[2]
    # 57.50 of an order of 115.00 gives back half of its 90.00 of merchandise
    assert placed.fields["state"] == "partially_refunded" and refund.fields["amount"] == "45.00"
    assert parsed[3][0].member_id is None and parsed[3][0].member_email == "guest@example.org"


def test_woocommerce_sends_the_state_at_delivery_time_coalesced(woo, receiver):
    order = woo.place_order(None, email="guest@example.org", status="pending")
    receiver.got.clear()
    with woo.held("as_made"):
        woo.set_status(order["id"], "processing")
        woo.set_status(order["id"], "completed")
    [(headers, body)] = receiver.got
    assert json.loads(body)["status"] == "completed"
    woo.delete_order(order["id"])
    assert json.loads(receiver.got[-1][1]) == {"id": order["id"]}
    assert woocommerce.parse("order.deleted", {"id": order["id"]}, MAPPING)[0].kind is EventKind.ORDER_DELETED


def test_woocommerce_never_retries_and_disables_a_webhook_on_the_seventh_failure_in_a_row(woo, receiver):
    ada = woo.add_customer("ada@example.com")
    receiver.statuses = [500] * 20
    for i in range(9):
        woo.update_customer(ada["id"], first_name=f"Ada{i}")
    updates = woo.deliveries_of("customer.updated")
    assert [a.status for a in updates] == [500] * 7 + [None, None]
    assert [a.error for a in updates[7:]] == ["disabled", "disabled"] and all(a.attempt == 1 for a in updates)
    hook = next(h for h in woo.webhooks if h.topic == "customer.updated")
    assert hook.status == "disabled"
    receiver.statuses = [500, 302]
    order = woo.place_order(ada["id"])
    woo.set_status(order["id"], "completed")
    assert next(h for h in woo.webhooks if h.topic == "order.updated").failure_count == 0  # 302 is a success


def wc_get(server: WooCommerceServer, resource: str, auth=("ck_test_key", "cs_test_secret"), **params):
    return httpx.get(f"{server.url}/wp-json/wc/v3/{resource}", params=params, auth=auth, timeout=5)


def test_woocommerce_rest_pages_with_totals_and_the_poll_catches_a_dropped_webhook(woo, receiver):
    customers = [woo.add_customer(f"c{i}@example.com", at=START + timedelta(days=i))["id"] for i in range(3)]
    orders = [woo.place_order(customers[i % 3], at=START + timedelta(days=i, hours=2))["id"] for i in range(23)]
    seen, page = [], 1
    while True:
        answer = wc_get(woo, "orders", page=page, per_page=10, orderby="id", order="asc")
        assert answer.headers["x-wp-total"] == "23" and answer.headers["x-wp-totalpages"] == "3"
        seen += [o["id"] for o in answer.json()]
        if 'rel="next"' not in answer.headers.get("link", ""):
            break
        page += 1
    assert seen == orders and page == 3
    assert [c["id"] for c in wc_get(woo, "customers", orderby="id").json()] == customers
    assert wc_get(woo, "orders", per_page=101).json()["code"] == "rest_invalid_param"
    assert wc_get(woo, "orders", auth=("ck_test_key", "wrong")).status_code == 401
    assert httpx.get(f"{woo.url}/wp-json/wc/v3/orders", params={"consumer_key": "ck_test_key",
                     "consumer_secret": "cs_test_secret"}).status_code == 200
    # orders[19] was changed at 2026-11-20 11:00 UTC, 12:00 in Paris: the bound 11:30 is read in the
    # site's zone unless dates_are_gmt.
    late = START + timedelta(days=19)
    gmt = wc_get(woo, "orders", modified_after="2026-11-20T11:30:00", dates_are_gmt="true", per_page=100).json()
    local = wc_get(woo, "orders", modified_after="2026-11-20T11:30:00", per_page=100).json()
    assert {o["id"] for o in gmt} == set(orders[20:]) and {o["id"] for o in local} == set(orders[19:])
    woo.webhook_faults.drop = 1
    receiver.got.clear()
    missed = woo.set_status(orders[0], "completed", at=late + timedelta(days=30))
    assert receiver.got == [] and woo.deliveries[-1].error == "dropped"
    polled = wc_get(woo, "orders", modified_after="2026-12-01T00:00:00", dates_are_gmt="true").json()
    assert [o["id"] for o in polled] == [missed["id"]]
    assert woocommerce.parse("order.updated", polled[0], MAPPING)[0].fields["state"] == "paid"
    woo.refund(orders[1], "10.00", reason="late")
    with pytest.raises(ValueError, match="left to refund"):
        woo.refund(orders[1], "1000.00")
    [refund] = wc_get(woo, f"orders/{orders[1]}/refunds").json()
    assert refund["amount"] == "10.00" and refund["reason"] == "late" and refund["date_created_gmt"]
    assert wc_get(woo, "orders/99999").json()["code"] == "woocommerce_rest_order_invalid_id"


def test_woocommerce_rest_fails_the_nth_request_as_configured(woo):
    for i in range(5):
        woo.add_customer(f"c{i}@example.com")
    woo.fail_request(2, "error:500")
    first = wc_get(woo, "customers", per_page=2, orderby="id")
    assert wc_get(woo, "customers", per_page=2, page=2, orderby="id").status_code == 500
    second = wc_get(woo, "customers", per_page=2, page=2, orderby="id")
    woo.faults.configure(hold_seconds=2)
    woo.fail_request(1, "timeout")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{woo.url}/wp-json/wc/v3/customers", auth=("ck_test_key", "cs_test_secret"), timeout=0.3)
    third = wc_get(woo, "customers", per_page=2, page=3, orderby="id")
    ids = [c["id"] for r in (first, second, third) for c in r.json()]
    assert ids == sorted(woo.customers) and [r.fault for r in woo.requests][:3] == ["ok", "error", "ok"]


# -- PrestaShop ------------------------------------------------------------------------------------


def ps_get(server: PrestaShopServer, resource: str, key: str = "PSWSKEY0123456789ABCDEFGHIJKLMNO", **params):
    params.setdefault("output_format", "JSON")
    return httpx.get(f"{server.url}/api/{resource}", params=params, auth=(key, ""), timeout=5)


def ps_facts(server: PrestaShopServer) -> prestashop.ShopFacts:
    currencies = ps_get(server, "currencies", display="full").json()["currencies"]
    languages = ps_get(server, "languages", display="full").json()["languages"]
    return prestashop.ShopFacts(timezone="Europe/Paris", currencies={str(c["id"]): c["iso_code"] for c in currencies},
                                languages={str(lang["id"]): lang["iso_code"] for lang in languages})


def test_prestashop_webservice_resources_parse_with_our_mapping():
    with PrestaShopServer(start=START) as ps:
        ada = ps.add_customer("ada@example.com", "Ada", "Lovelace", birthday="1990-12-10", newsletter=True, id_lang=2)
        order = ps.place_order(ada["id"], [("Tea tin", 2, "50.00")], discount="10.00", shipping="7.00")
        ps.refund(order["id"], "45.00")
        ps.place_order(ada["id"], [("Tea box", 1, "20.00")], state=1)
        facts = ps_facts(ps)
        [customer] = ps_get(ps, "customers", display="full").json()["customers"]
        member = prestashop.member_event(customer, MAPPING, facts)
        assert member.fields["birthday"] == "1990-12-10" and member.fields["locale"] == "fr"
        assert member.fields["email_opt_in"] == "true" and member.version_at == START
        one = ps_get(ps, f"orders/{order['id']}").json()["order"]
        placed = prestashop.order_event(one, MAPPING, facts)
        assert (placed.fields["total"], placed.fields["currency"], placed.fields["state"]) == ("90.00", "EUR", "paid")
        [slip] = ps_get(ps, "order_slip", display="full").json()["order_slips"]
        assert prestashop.refund_event(slip, facts).fields["amount"] == "45.00"
        states = [prestashop.order_event(o, MAPPING, facts).fields["state"]
                  for o in ps_get(ps, "orders", display="full").json()["orders"]]
        assert states == ["paid", "pending"]
        states_table = ps_get(ps, "order_states", display="full", **{"filter[paid]": "[1]"}).json()["order_states"]
        assert {s["id"] for s in states_table} == {2, 3, 4, 5, 7, 11}
        ps.refund(order["id"])  # the rest: the order becomes Refunded
        history = ps_get(ps, "order_histories", display="full", **{"filter[id_order]": f"[{order['id']}]"}).json()
        assert [h["id_order_state"] for h in history["order_histories"]] == ["2", "7"]
        refunded = ps_get(ps, f"orders/{order['id']}").json()["order"]
        assert prestashop.order_event(refunded, MAPPING, facts).fields["state"] == "refunded"


def test_prestashop_auth_and_list_options():
    with PrestaShopServer(start=START) as ps:
        ps.add_customer("ada@example.com")
        denied = ps_get(ps, "customers", key="wrong")
        assert denied.status_code == 401 and "authentication key as the login" in denied.headers["www-authenticate"]
        by_query = httpx.get(f"{ps.url}/api/customers", params={"ws_key": ps.key, "output_format": "JSON"})
        assert by_query.status_code == 200
        assert ps_get(ps, "customers").json() == {"customers": [{"id": 1}]}
        assert ps_get(ps, "customers", display="[id,date_upd]").json()["customers"][0].keys() == {"id", "date_upd"}
        assert ps_get(ps, "customers", **{"filter[email]": "[ADA@example.com]"}).json() == {"customers": [{"id": 1}]}
        assert ps_get(ps, "customers", **{"filter[email]": "[nobody@example.com]"}).json() == []
        assert ps_get(ps, "customers", **{"filter[date_upd]": "[2026-01-01 00:00:00,2027-01-01 00:00:00]"}).json() == []


def test_prestashop_pages_a_date_window_once_each_and_resumes_after_a_failure():
    with PrestaShopServer(start=START) as ps:
        ada = ps.add_customer("ada@example.com")
        ids = [ps.place_order(ada["id"], at=START + timedelta(hours=i))["id"] for i in range(1, 12)]
        ps.set_state(ids[0], 4, at=START + timedelta(hours=30))  # moves to the end of a date_upd sort
        window = {"display": "[id,date_upd]", "date": "1", "sort": "[date_upd_ASC,id_ASC]",
                  "filter[date_upd]": "[2026-11-01 11:00:00,2026-11-02 20:00:00]"}  # Paris time
        ps.fail_request(3)
        seen, offset = [], 0
        while True:
            answer = ps_get(ps, "orders", limit=f"{offset},4", **window)
            if answer.status_code == 500:
                continue  # the same page again
            rows = answer.json()["orders"] if answer.json() else []
            seen += [r["id"] for r in rows]
            if len(rows) < 4:
                break
            offset += 4
        assert seen == ids[1:] + ids[:1]
        assert [r.status for r in ps.requests].count(500) == 1
        assert ps_get(ps, "orders", limit="2").json()["orders"] == [{"id": ids[0]}, {"id": ids[1]}]
        assert ps_get(ps, "orders", limit="two").status_code == 400


def test_shop_clock_dates_changes_one_second_apart():
    with WooCommerceServer(start=START) as server:
        a, b = server.add_customer("a@example.com"), server.add_customer("b@example.com")
    assert a["date_created_gmt"] == "2026-11-01T09:00:00" and b["date_created_gmt"] == "2026-11-01T09:00:01"
