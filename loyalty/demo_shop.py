"""``loyalty demo --shop shopify|woocommerce``: a shop's webhooks becoming members, points, tiers and messages.

A Shopify-like or WooCommerce-like store (``loyalty/standins/shopify_server.py`` and
``woocommerce_server.py``, the ones the tests use) and the real web app (``loyalty.web.create_app``,
served by uvicorn) run inside the demo process on free ports, on the embedded default; the store's
webhooks are subscribed to the app, which verifies each, stores it in the inbox and applies it in the
request (the embedded default has no worker process). The store then gets a handful of customers and
orders: one order delivered before its customer, one partial refund, one order delivered three
times, a guest order nobody can claim. The demo shows the members, their points and tiers, the
inbox's states, then runs today's tick and shows the messages it sent.

The store starts from the same ids every time, so a second run replays the same history with new
webhook ids: every entry is new to the inbox, and nothing is applied or sent twice.
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from core import calendar
from core.calendar import iso_utc
from core.errors import InputError
from core.settings import Settings
from models.base import utcnow
from models.delivery import Delivery, DeliveryState
from models.inbox import InboxEntry
from models.member import Member
from models.order import Order
from models.points import PointEntry
from shops.common import country_timezone

# Countries with a single time zone (the member's zone comes from their address): the customers live
# in the one where it is closest to mid-afternoon now, so today's notices are due when the tick runs.
COUNTRIES = ("JP", "IN", "AE", "FR", "GR", "IS", "UY", "CO", "CR", "SG", "TH", "BD", "TO", "FJ")


@dataclass
class Story:
    key: str  # which customer of the script
    customer_id: int | None  # the shop's id (the member's external id)
    text: str  # what happened to them in the shop


def afternoon_country(now: datetime) -> str:
    """The country of :data:`COUNTRIES` where the local time is closest to 14:00."""
    def distance(code: str) -> float:
        local = calendar.local_datetime(now, country_timezone(code, "UTC"))
        return abs(local.hour + local.minute / 60 - 14)
    return min(COUNTRIES, key=distance)


def _support(module: str):
    """A module of ``loyalty.standins`` (the stand-ins the tests use too), or one sentence."""
    import importlib

    try:
        return importlib.import_module(f"loyalty.standins.{module}")
    except ImportError as error:
        raise InputError(f"--shop needs {error.name}, which is not installed; install the package's dependencies "
                         "again with pip install -e . (make demo does).") from None


class ShopifyPlay:
    """The Shopify-like store: customers with their locale and email consent, paid orders, refunds by line."""

    title, path, variable = "Shopify", "/webhooks/shopify", "SHOPIFY_WEBHOOK_SECRET"

    def __init__(self) -> None:
        self.shop = _support("shopify_server").ShopifyServer()

    def with_secret(self, shop_settings):
        return replace(shop_settings, shopify_secrets=(self.shop.secret,))

    def with_admin(self, shop_settings):
        """The store's admin API (after it started): coupons are made there before their message goes out."""
        from core.shop_settings import ShopifyAdmin

        return replace(shop_settings, shopify=ShopifyAdmin(self.shop.shop_domain, self.shop.access_token,
                                                           self.shop.api_version, self.shop.url))

    def subscribe(self, url: str) -> None:
        self.shop.subscribe(url)

    def customer(self, email: str, first: str, last: str, country: str, locale: str) -> int:
        return self.shop.add_customer(email, first, last, country=country, locale=locale,
                                      email_consent="subscribed")["id"]

    def order(self, customer_id: int | None, items, **options) -> dict:
        return self.shop.place_order(customer_id, items, **options)

    def refund_line(self, order: dict, index: int) -> None:
        self.shop.refund(order["id"], {order["line_items"][index]["id"]: order["line_items"][index]["quantity"]})


class WooCommercePlay:
    """The WooCommerce-like store: consent and locale in meta_data, orders ``processing`` (paid), refunds
    by amount (taxes included, as WooCommerce refunds)."""

    title, path, variable = "WooCommerce", "/webhooks/woocommerce", "WOOCOMMERCE_WEBHOOK_SECRET"

    def __init__(self) -> None:
        self.shop = _support("woocommerce_server").WooCommerceServer()

    def with_secret(self, shop_settings):
        return replace(shop_settings, woocommerce_secrets=(self.shop.secret,))

    def with_admin(self, shop_settings):
        from core.shop_settings import WooCommerceAdmin

        return replace(shop_settings, woocommerce=WooCommerceAdmin(self.shop.url, self.shop.consumer_key,
                                                                   self.shop.consumer_secret))

    def subscribe(self, url: str) -> None:
        for topic in ("customer.created", "customer.updated", "order.created", "order.updated", "order.deleted"):
            self.shop.subscribe(url, topic)

    def customer(self, email: str, first: str, last: str, country: str, locale: str) -> int:
        return self.shop.add_customer(email, first, last, country=country,
                                      meta={"loyalty_email_opt_in": "yes", "locale": locale})["id"]

    def order(self, customer_id: int | None, items, **options) -> dict:
        return self.shop.place_order(customer_id, items, status="processing", **options)

    def refund_line(self, order: dict, index: int) -> None:
        line = order["line_items"][index]
        self.shop.refund(order["id"], Decimal(line["total"]) + Decimal(line["total_tax"]), reason="returned")


PLAYS: dict[str, type[ShopifyPlay] | type[WooCommercePlay]] = {"shopify": ShopifyPlay,
                                                              "woocommerce": WooCommercePlay}


def play_the_shop(play, country: str) -> list[Story]:
    """The script: what the store's customers do, each showing one way a webhook can arrive."""
    shop, stories = play.shop, []
    ana = play.customer("ana.martin@shop.example", "Ana", "Martin", country, "en")
    play.order(ana, [("Cast-iron teapot", 1, "380.00"), ("Tea tin", 4, "40.00")], shipping="9.00")
    stories.append(Story("ana", ana, "one order of 540.00 (+ shipping and VAT): silver"))

    with shop.held(order="reversed"):  # shops fire customer and order webhooks together, in no order
        ben = play.customer("ben.okafor@shop.example", "Ben", "Okafor", country, "en")
        play.order(ben, [("Tea tin", 2, "40.00")])
    stories.append(Story("ben", ben, "order of 80.00 delivered before his customer record"))

    chloe = play.customer("chloe.dubois@shop.example", "Chloé", "Dubois", country, "fr")
    order = play.order(chloe, [("Tea tin", 1, "60.00"), ("Teapot", 1, "40.00")])
    play.refund_line(order, 1)
    stories.append(Story("chloe", chloe, "order of 100.00, then the teapot (40.00) refunded"))

    dev = play.customer("dev.patel@shop.example", "Dev", "Patel", country, "en")
    shop.webhook_faults.duplicates = 3
    try:
        play.order(dev, [("Matcha set", 1, "120.00")], discount="20.00")
    finally:
        shop.webhook_faults.duplicates = 0
    stories.append(Story("dev", dev, "order of 120.00 - 20.00 off, each webhook delivered 3 times"))

    play.order(None, [("Tea tin", 1, "40.00")], email="walk-in@shop.example")
    stories.append(Story("guest", None, "a guest order, with an email no member has"))

    eve = play.customer("eve.laurent@shop.example", "Eve", "Laurent", country, "en")
    play.order(eve, [("Tea tin", 1, "40.00")], at=utcnow() - timedelta(days=100))
    stories.append(Story("eve", eve, "one order of 40.00, 100 days ago: the win-back's coupon is due"))
    return stories


def run_shop_demo(settings: Settings, console: Console, shop_name: str) -> None:
    if shop_name not in PLAYS:
        raise InputError(f"--shop {shop_name!r} is not a shop the demo can play; use shopify or woocommerce.")
    if not settings.embedded or settings.redis_url:
        raise InputError("The demo runs only on the embedded default; unset DATABASE_URL and REDIS_URL to run it.")
    play = PLAYS[shop_name]()
    with play.shop:  # up until the tick's coupon is made in the store and used at its checkout
        _play(settings, console, play)


def _play(settings: Settings, console: Console, play) -> None:
    BackgroundServer = _support("http_server").BackgroundServer
    from loyalty.demo import _where_it_went, cli_command, run_tick_through_queue
    from loyalty.web import create_app
    from workers.runtime import build_runtime, set_runtime

    with ExitStack() as stack:
        shop = play.shop
        settings = replace(settings, shop=play.with_admin(play.with_secret(settings.shop)))
        runtime = build_runtime(settings)
        set_runtime(runtime)
        app = create_app(settings)
        stack.callback(app.state.engine.dispose)
        web = BackgroundServer(app, name="loyalty-web").start()
        stack.callback(web.stop)
        play.subscribe(f"{web.url}{play.path}")
        console.print(f"[bold]Loyalty demo with a {play.title} store[/] on the embedded default: "
                      f"{settings.database_url.split('///')[-1]}", highlight=False)
        console.print(f"Local {play.title}-like store at {shop.url}, sending its webhooks to the web app at "
                      f"{web.url}{play.path} (signed with {play.variable}).", highlight=False)
        with runtime.sessions() as session:
            last_entry = session.scalar(select(func.max(InboxEntry.id))) or 0
            last_delivery = session.scalar(select(func.max(Delivery.id))) or 0
            before = _balances(session, None)
        country = afternoon_country(utcnow())
        stories = play_the_shop(play, country)
        attempts = shop.deliveries
    # The tick runs after the story: the store dates each change at least a second after the last one,
    # so a quick story can end a few seconds ahead of the clock on the wall (the upgrade's order with it).
    now = max(utcnow(), shop.clock.now()).replace(microsecond=0)
    answered = Counter(str(a.status or a.error) for a in attempts)
    console.print(f"The store fired {sum(a.attempt == 1 and a.copy == 1 for a in attempts)} webhook(s) "
                  f"({len(attempts)} deliveries with the duplicates); the web app answered "
                  + ", ".join(f"{n} × {status}" for status, n in sorted(answered.items())) + ".", highlight=False)
    _members_table(runtime, console, stories, before, country)
    rules, tiers = runtime.program.points, runtime.program.tiers
    console.print(f"Points: {rules.per_currency_unit} per {rules.currency} of merchandise after discounts "
                  f"(not shipping nor taxes), {rules.first_order_bonus} more on a first order; tiers by spend over "
                  f"{tiers.window_days} days (" + ", ".join(f"{t.name} from {t.min_spend}" for t in tiers.levels[1:])
                  + ").", highlight=False)
    _inbox_table(runtime, console, last_entry, len(attempts))
    run_tick_through_queue(runtime, now)
    sent = _messages(runtime, console, now, stories, last_delivery)
    _where_it_went(runtime, console, sent)
    _coupon_at_checkout(runtime, console, play, stories, sent)
    run = cli_command()
    console.print(f"Next: {run} inbox   |   {run} member show {stories[0].customer_id}   |   "
                  f"{run} history --member {stories[0].customer_id}", highlight=False, soft_wrap=True)


def _coupon_at_checkout(runtime, console: Console, play, stories: list[Story], sent: list[Delivery]) -> None:
    """The win-back's code, made in the store before its message went out, used at the store's checkout
    (its order's webhooks are held back: the points shown above stay what the database holds)."""
    eve = next(s for s in stories if s.key == "eve")
    with runtime.sessions() as session:
        member_id = session.scalar(select(Member.id).where(Member.external_id == str(eve.customer_id)))
    delivery = next((d for d in sent if d.member_id == member_id and d.coupon_code), None)
    if delivery is None:
        return
    code = delivery.coupon_code
    known = play.shop.discounts.find(code) is not None
    with play.shop.held(order=[]):
        order = play.shop.checkout(eve.customer_id, code, [("Tea tin", 1, "60.00")])
    off = order.get("total_discounts") or order.get("discount_total")
    console.print(f"Eve's win-back code {code} was in the store before her {delivery.channel} went out "
                  f"({'made through its admin API' if known else 'not found in the store'}); the store's checkout "
                  f"accepted it for her: {off} off an order of 60.00.", highlight=False)


def _balances(session, ids: list[str] | None) -> dict[str, int]:
    query = (select(Member.external_id, func.coalesce(func.sum(PointEntry.points), 0))
             .join(PointEntry, PointEntry.member_id == Member.id, isouter=True).group_by(Member.external_id))
    if ids is not None:
        query = query.where(Member.external_id.in_(ids))
    return dict(session.execute(query).all())


def stories_members(stories: list[Story]) -> list[str]:
    return [str(s.customer_id) for s in stories if s.customer_id is not None]


def _members_table(runtime, console: Console, stories: list[Story], before: dict[str, int], country: str) -> None:
    ids = stories_members(stories)
    with runtime.sessions() as session:
        members = {m.external_id: m for m in session.scalars(select(Member).where(Member.external_id.in_(ids)))}
        balances = _balances(session, ids)
        orders = dict(session.execute(select(Member.external_id, func.count(Order.id))
                                      .join(Order, Order.member_id == Member.id)
                                      .where(Member.external_id.in_(ids)).group_by(Member.external_id)).all())
    table = Table(title=f"The store's customers (address in {country}: {country_timezone(country, 'UTC')})")
    for column in ("customer", "what happened in the shop", "member", "orders", "points", "this run", "tier"):
        table.add_column(column, justify="right" if column in ("orders", "points", "this run") else "left")
    for story in stories:
        if story.customer_id is None:
            table.add_row("guest", story.text, "-", "-", "-", "-", "-")
            continue
        key = str(story.customer_id)
        member = members.get(key)
        points = balances.get(key, 0)
        gained = points - before.get(key, 0)
        table.add_row(f"{member.first_name} {member.last_name}" if member else story.key, story.text,
                      key if member else "not created", str(orders.get(key, 0)), str(points),
                      f"{gained:+d}", member.tier if member else "-")
    console.print(table)


def _inbox_table(runtime, console: Console, since_id: int, deliveries: int) -> None:
    with runtime.sessions() as session:
        rows = session.execute(select(InboxEntry.topic, InboxEntry.state, InboxEntry.reason, InboxEntry.attempts)
                               .where(InboxEntry.id > since_id).order_by(InboxEntry.id)).all()
    table = Table(title=f"The inbox: {len(rows)} entries stored by this run, one per webhook "
                        f"({deliveries - len(rows)} duplicate deliveries answered 200 and not stored again)")
    for column in ("topic", "entries", "state", "note"):
        table.add_column(column, justify="right" if column == "entries" else "left")
    grouped = Counter((topic, state, reason or ("applied after waiting" if attempts > 1 else "-"))
                      for topic, state, reason, attempts in rows)
    for (topic, state, note), n in sorted(grouped.items()):
        table.add_row(topic, str(n), state, note)
    console.print(table)


def _messages(runtime, console: Console, now: datetime, stories: list[Story], since_id: int) -> list[Delivery]:
    """The tick's deliveries to the store's customers (this run's, and what earlier runs sent); this run's sent."""
    ids = stories_members(stories)
    with runtime.sessions() as session:
        rows = session.execute(
            select(Delivery, Member).join(Member, Member.id == Delivery.member_id)
            .where(Member.external_id.in_(ids), Delivery.planned_at >= now - timedelta(days=1))
            .order_by(Delivery.id)).all()
        others = session.scalar(select(func.count()).select_from(Delivery).join(Member, Member.id == Delivery.member_id)
                                .where(Delivery.id > since_id, Member.external_id.not_in(ids),
                                       Delivery.state == DeliveryState.SENT))
    new = [(d, m) for d, m in rows if d.id > since_id]
    table = Table(title=f"Today's tick at {iso_utc(now)}: the messages to the store's customers")
    for column in ("campaign", "member", "tier", "channel", "state", "detail"):
        table.add_column(column)
    for delivery, member in new:
        state = delivery.state + (f" ({delivery.reason})" if delivery.reason else "")
        table.add_row(delivery.campaign, f"{member.first_name} {member.last_name}", member.tier, delivery.channel,
                      state, delivery.occurrence_key)
    if new:
        console.print(table)
    already = [d for d, _ in rows if d.id <= since_id and d.state == DeliveryState.SENT]
    if already:
        console.print(f"Already sent by an earlier run: {len(already)} message(s) to the store's customers "
                      f"({', '.join(f'{n} {c}' for c, n in sorted(Counter(d.campaign for d in already).items()))}); "
                      "none was sent again.", highlight=False)
    elif not new:
        console.print("The tick had nothing for the store's customers today.")
    if others:
        console.print(f"The tick also sent {others} message(s) to this database's other members (see loyalty history).",
                      highlight=False)
    return [d for d, _ in new if d.state == DeliveryState.SENT]
