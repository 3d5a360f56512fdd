"""The member API (GET /api/members/{id}, POST .../redemptions) served by the real web app on PostgreSQL,
with the Shopify-like stand-in as the shop: points become codes the checkout accepts, never overspent,
never lost when the shop fails, one code per idempotency key; every refusal is one JSON sentence."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from core.settings import load_settings
from loyalty.standins.http_server import BackgroundServer
from loyalty.standins.shopify_server import ShopifyServer
from loyalty.web import create_app
from models import ledger
from models.coupons import Coupon, Redemption
from models.member import Member
from models.points import PointEntry
from tests.support.members import add_members, make_member
from tests.support.program import give_lot
from workers.runtime import build_runtime

API_KEY = "k-live-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SOON = datetime.now(UTC) + timedelta(days=40)
LATER = datetime.now(UTC) + timedelta(days=300)


@contextmanager
def serving(settings):
    app = create_app(settings)
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield server.url, http
    finally:
        server.stop()
        app.state.engine.dispose()


@pytest.fixture
def shop():
    server = ShopifyServer().start()
    yield server
    server.stop()


@pytest.fixture
def api(env, pg_engine, pg_sessions, shop):
    variables = {**env, "LOYALTY_API_KEYS": API_KEY, "SHOPIFY_SHOP_DOMAIN": shop.shop_domain,
                 "SHOPIFY_ADMIN_TOKEN": shop.access_token, "SHOPIFY_API_BASE_URL": shop.url}
    settings = load_settings(variables)
    runtime = build_runtime(settings)
    customer = shop.add_customer("ana@example.org", "Ana", "Martin")
    member = str(customer["id"])
    add_members(pg_sessions, make_member(member, email="ana@example.org", tier="silver"))
    give_lot(runtime, member, "lot-soon", 300, datetime.now(UTC) - timedelta(days=300), SOON)
    give_lot(runtime, member, "lot-later", 700, datetime.now(UTC) - timedelta(days=60), LATER)
    try:
        with serving(settings) as (url, http):
            yield http, member, customer["id"], runtime
    finally:
        runtime.close()


def balance(pg_sessions, external_id: str) -> int:
    with pg_sessions() as session:
        return ledger.balance(session, session.scalar(select(Member.id).where(Member.external_id == external_id)))


def test_the_member_shows_balance_worth_tier_and_next_expiry(api):
    http, member, _, _ = api
    answer = http.get(f"/api/members/{member}", headers=AUTH)
    assert answer.status_code == 200
    paris_day = SOON.astimezone(ZoneInfo("Europe/Paris")).date().isoformat()  # the member's time zone
    assert answer.json() == {"id": member, "balance": 1000, "value": "10.00", "currency": "EUR", "tier": "silver",
                             "next_expiry": {"points": 300, "date": paris_day}}


def test_points_become_a_code_the_checkout_accepts_taken_from_the_lots_that_expire_first(api, pg_sessions, shop):
    http, member, customer_id, _ = api
    answer = http.post(f"/api/members/{member}/redemptions", headers=AUTH,
                       json={"points": 400, "idempotency_key": "cart-1"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["points"], body["value"], body["currency"]) == (400, "4.00", "EUR")
    assert balance(pg_sessions, member) == 600
    with pg_sessions() as session:
        remaining = dict(session.execute(select(PointEntry.entry_key, PointEntry.remaining)
                                         .where(PointEntry.remaining.is_not(None))).all())
    assert remaining == {"lot-soon": 0, "lot-later": 600}
    order = shop.checkout(customer_id, body["code"])
    assert order["total_discounts"] == "4.00"
    assert http.get(f"/api/members/{member}", headers=AUTH).json()["balance"] == 600


def test_the_same_key_twice_returns_one_code_and_takes_nothing_more(api, pg_sessions, shop):
    http, member, _, _ = api
    first = http.post(f"/api/members/{member}/redemptions", headers=AUTH, json={"points": 200, "idempotency_key": "k1"})
    again = http.post(f"/api/members/{member}/redemptions", headers=AUTH, json={"points": 200, "idempotency_key": "k1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert balance(pg_sessions, member) == 800 and len(shop.discounts.codes) == 1
    other = http.post(f"/api/members/{member}/redemptions", headers=AUTH, json={"points": 300, "idempotency_key": "k1"})
    assert other.status_code == 409 and other.json() == {"error": "This idempotency_key was used for a redemption of "
                                                         "200 points; send a new key for a different amount."}


def test_fifty_requests_at_once_for_a_member_holding_ten_make_ten_codes(api, pg_sessions, shop):
    http, member, _, _ = api
    url = str(http.base_url)
    statuses: list[int] = []
    lock = threading.Lock()

    def ask(number: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as own:
            status = own.post(f"/api/members/{member}/redemptions", headers=AUTH,
                              json={"points": 100, "idempotency_key": f"burst-{number}"}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [201] * 10 + [409] * 40
    assert balance(pg_sessions, member) == 0
    with pg_sessions() as session:
        assert session.scalar(select(func.count()).select_from(Redemption)) == 10
        assert session.scalar(select(func.count()).select_from(Coupon).where(Coupon.state == "created")) == 10
        assert session.scalar(select(func.sum(PointEntry.points)).where(PointEntry.kind == "redeem")) == -1000
    assert len(shop.discounts.codes) == 10


def test_a_redemption_whose_discount_cannot_be_created_takes_nothing(api, pg_sessions, shop):
    http, member, _, _ = api
    shop.discounts.refuse = True
    answer = http.post(f"/api/members/{member}/redemptions", headers=AUTH, json={"points": 500, "idempotency_key": "x"})
    assert answer.status_code == 503
    assert answer.json() == {"error": "The shop could not create the discount now; no points were taken, try again "
                                      "in a few minutes with the same idempotency_key."}
    assert balance(pg_sessions, member) == 1000 and shop.discounts.codes == {}
    with pg_sessions() as session:
        assert session.scalar(select(Redemption.state)) == "reversed"
        assert session.scalar(select(Coupon.state)) == "cancelled"
    shop.discounts.refuse = False  # the same key again, once the shop is back: now it goes through
    again = http.post(f"/api/members/{member}/redemptions", headers=AUTH, json={"points": 500, "idempotency_key": "x"})
    assert again.status_code == 201 and balance(pg_sessions, member) == 500


def test_a_crash_between_taking_and_creating_is_finished_by_the_sweep(api, pg_sessions, shop):
    """The crash window: the points were taken (pending) but the request died before the shop answered.
    The sweep creates the code if the shop answers, else gives the points back, recorded."""
    from models.db import transaction
    from workers.redemptions import _take, finish_pending

    http, member, _, runtime = api
    with transaction(runtime.sessions) as session:
        row = session.scalar(select(Member).where(Member.external_id == member).with_for_update())
        _take(session, runtime, row, 300, "died", datetime.now(UTC))
    with transaction(runtime.sessions) as session:
        row = session.scalar(select(Member).where(Member.external_id == member).with_for_update())
        _take(session, runtime, row, 200, "died-too", datetime.now(UTC))
    assert balance(pg_sessions, member) == 500
    later = datetime.now(UTC) + timedelta(minutes=10)
    shop.fail_request(2, "error:503")  # the first one's create fails (its lookup answers): given back
    assert finish_pending(runtime, now=later) == {"created": 1, "reversed": 1}
    assert balance(pg_sessions, member) == 800
    assert len(shop.discounts.codes) == 1
    assert finish_pending(runtime, now=later) == {"created": 0, "reversed": 0}


@pytest.mark.parametrize(("path", "body", "headers", "status", "sentence"), [
    ("/api/members/{m}/redemptions", {"points": 1000000, "idempotency_key": "a"}, AUTH, 409,
     "The member has 1000 points, fewer than the 1000000 asked for."),
    ("/api/members/{m}/redemptions", {"points": 150, "idempotency_key": "a"}, AUTH, 400,
     "A redemption takes a multiple of 100 points; 150 is not one."),
    ("/api/members/{m}/redemptions", {"points": 50, "idempotency_key": "a"}, AUTH, 400,
     "A redemption takes at least 100 points; ask for 100 or more."),
    ("/api/members/{m}/redemptions", {"points": "100", "idempotency_key": "a"}, AUTH, 400,
     'Send "points" as a whole number of points, like {"points": 500, "idempotency_key": "..."}.'),
    ("/api/members/{m}/redemptions", {"points": 100}, AUTH, 400,
     'Send an "idempotency_key" of 1 to 200 characters, the same one when you retry this redemption.'),
    ("/api/members/nobody/redemptions", {"points": 100, "idempotency_key": "a"}, AUTH, 404, "No member has this id."),
    ("/api/members/{m}/redemptions", {"points": 100, "idempotency_key": "a"}, {"Authorization": "Bearer wrong"}, 401,
     "Send one of LOYALTY_API_KEYS as Authorization: Bearer KEY."),
    ("/api/members/nobody", None, AUTH, 404, "No member has this id."),
    ("/api/members/{m}", None, {}, 401, "Send one of LOYALTY_API_KEYS as Authorization: Bearer KEY."),
])
def test_each_refusal_is_one_sentence_and_takes_nothing(api, pg_sessions, path, body, headers, status, sentence):
    http, member, _, _ = api
    url = path.format(m=member)
    answer = http.get(url, headers=headers) if body is None else http.post(url, headers=headers, json=body)
    assert (answer.status_code, answer.json()) == (status, {"error": sentence})
    assert balance(pg_sessions, member) == 1000


def test_the_clocks_points_maintenance_settles_a_redemption_left_pending(api, pg_sessions, shop):
    from models.db import transaction
    from workers.actors import maintain_points
    from workers.redemptions import _take
    from workers.runtime import set_runtime

    http, member, customer_id, runtime = api
    with transaction(runtime.sessions) as session:
        row = session.scalar(select(Member).where(Member.external_id == member).with_for_update())
        taken, _ = _take(session, runtime, row, 300, "died", datetime.now(UTC) - timedelta(minutes=10))
        taken.updated_at = datetime.now(UTC) - timedelta(minutes=10)
    set_runtime(runtime)
    try:
        maintain_points()
    finally:
        set_runtime(None)
    with pg_sessions() as session:
        assert session.scalar(select(Redemption.state)) == "created"
        code = session.scalar(select(Redemption.code))
    assert balance(pg_sessions, member) == 700
    shop.checkout(customer_id, code)


def test_the_readmes_member_api_examples_work_as_written(api, pg_sessions):
    """The README's member-API examples, sent as written (the member's id and key swapped in)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### The member API"):readme.index("## Campaign definitions")]
    http, member, _, _ = api
    (body,) = [json.loads(b) for b in re.findall(r"-d '(.*?)'", section, flags=re.S)]
    shown = http.get(f"/api/members/{member}", headers=AUTH).json()
    assert set(shown) == {"id", "balance", "value", "currency", "tier", "next_expiry"}
    answer = http.post(f"/api/members/{member}/redemptions", headers=AUTH, json=body)
    assert answer.status_code == 201 and set(answer.json()) == {"code", "points", "value", "currency", "expires_at"}
    sentences = re.findall(r'^\| (\d{3}) \| `(\{"error": .*\})` \|$', section, flags=re.M)
    assert len(sentences) == 12
    for _status, text in sentences:  # the bodies are JSON as the API sends them
        assert json.loads(text)["error"].endswith(".")


def test_a_member_who_is_not_a_shop_customer_gets_one_sentence_and_keeps_the_points(api, pg_sessions, shop):
    http, _, _, runtime = api
    add_members(pg_sessions, make_member("M-STORE-ONLY", email="walkin@example.org"))
    give_lot(runtime, "M-STORE-ONLY", "lot-walkin", 500, datetime.now(UTC) - timedelta(days=1), LATER)
    answer = http.post("/api/members/M-STORE-ONLY/redemptions", headers=AUTH,
                       json={"points": 200, "idempotency_key": "w-1"})
    assert (answer.status_code, answer.json()) == (409, {"error": "This member is not a customer of the shop, so no "
                                                                  "code can be made for them; no points were taken."})
    assert balance(pg_sessions, "M-STORE-ONLY") == 500 and shop.discounts.codes == {}
