"""The shop's inbox under fire: nothing lost, nothing twice.

A Shopify-like store (``loyalty/standins/shopify_server.py``, sending in the background, each webhook
twice, a third of the orders before their customers, one customer in ten never sent at all) delivers
its customers and orders to the real ``loyalty web`` process, which stores each one in the inbox and
hands it to the real worker (``dramatiq workers.main``, queue "events") through Redis. Meanwhile the
worker is killed (kill -9), or the web process is, or Redis is flushed; the clock's ``sweep_inbox``
puts back what the queue lost.

Counted at the end, from the store's side: every webhook it saw answered 2xx (``expected``) must be
applied in the inbox (``accepted``), or wait for a customer the store never sent; and the ledger must
hold exactly what the store's orders earn (campaigns/program.yaml: the floor of the merchandise
subtotal × 1 per order, plus 50 once per customer on the first order). ``missing``: a webhook not
applied, or a credit absent or short; ``duplicates``: a credit written twice, or a member holding
more points than their orders earn.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

import httpx
from sqlalchemy import func, select

from loyalty.standins.shopify_server import ShopifyServer
from tests.conftest import REDIS_URL
from tests.support.chaos import VENV_BIN, ChaosRun, Process, Tally, free_port, spawn, wait_for

CUSTOMERS = 100  # ~320 inbox entries (each webhook sent twice); the Redis-flush scenario takes half
SECRET = "shpss_chaos_secret"
FIRST_ORDER_BONUS = 50  # campaigns/program.yaml: points.first_order_bonus
SWEEP_AFTER = 2  # LOYALTY_INBOX_STALE_AFTER_SECONDS (60 by default): the inbox sweep's threshold and period


# --- the processes ------------------------------------------------------------------------------------

def start_web(run: ChaosRun, name: str, port: int) -> Process:
    """``loyalty web`` as the Procfile runs it, on ``port``, answering /healthz."""
    web = spawn(name, [str(VENV_BIN / "loyalty"), "web", "--host", "127.0.0.1"],
                {**run.env, "PORT": str(port)}, run.tmp_path / f"{name}.log")
    run.processes.append(web)

    def up() -> bool:
        if not web.alive():
            raise AssertionError(f"{name} exited with {web.popen.returncode}:\n{web.log()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, f"{name} to answer", every=0.1)
    return web


def start_clock(run: ChaosRun, name: str) -> Process:
    """``loyalty clock`` as the Procfile runs it (its inbox sweep: SWEEP_AFTER seconds after start, then every
    SWEEP_AFTER seconds)."""
    clock = spawn(name, [str(VENV_BIN / "loyalty"), "clock"], run.env, run.tmp_path / f"{name}.log")
    run.processes.append(clock)
    return clock


def configure(run: ChaosRun, pg_database: str, redis_url: str, namespace: str) -> None:
    run.configure(database_url=pg_database, smtp_url=f"smtp://127.0.0.1:{free_port()}", redis_url=redis_url,
                  namespace=namespace, SHOPIFY_WEBHOOK_SECRET=SECRET,
                  LOYALTY_INBOX_STALE_AFTER_SECONDS=str(SWEEP_AFTER))


# --- the store ------------------------------------------------------------------------------------------

@dataclass
class Store:
    """What the store did: the points each order should earn, the customers that were never sent."""

    shop: ShopifyServer
    order_points: dict[str, int] = field(default_factory=dict)  # order id → points
    customer_of: dict[str, str] = field(default_factory=dict)  # order id → customer id
    never_sent: set[str] = field(default_factory=set)  # customers whose customers/create was never delivered

    def expected_credits(self) -> dict[str, int]:
        """Ledger identity (``order:ID``, ``first_order:CUSTOMER``) → points, for customers that came."""
        credits: dict[str, int] = {}
        for order_id, points in self.order_points.items():
            customer = self.customer_of[order_id]
            if customer in self.never_sent:
                continue
            if points:
                credits[f"order:{order_id}"] = points
            credits[f"first_order:{customer}"] = FIRST_ORDER_BONUS
        return credits


def open_store(web_url: str, **options) -> Store:
    shop = ShopifyServer(f"{web_url}/webhooks/shopify", secret=SECRET, background=True, **options).start()
    shop.webhook_faults.duplicates = 2  # every webhook delivered twice, with the same event id
    return Store(shop)


def trade(store: Store, customers: range) -> None:
    """Customers and their paid orders (one in seven orders twice). One in three pairs is delivered
    in reverse (the orders before their customer); one customer in ten is never delivered at all."""
    shop = store.shop

    def order(customer_id: int, i: int, k: int) -> None:
        tin = f"{9 + (i * 7 + k) % 41}.{(i * 13) % 100:02d}"
        placed = shop.place_order(customer_id, [("Tea tin", 1 + (i + k) % 3, tin), ("Cup", 1, "4.35")],
                                  discount=f"{(i % 4) * 1.25:.2f}", shipping="4.90")
        store.order_points[str(placed["id"])] = int(Decimal(placed["subtotal_price"]).to_integral_value(ROUND_FLOOR))
        store.customer_of[str(placed["id"])] = str(customer_id)

    def customer_and_orders(i: int) -> int:
        customer = shop.add_customer(f"chaos{i:04d}@shop.example", "Chaos", f"Customer{i}", country="FR")
        for k in range(2 if i % 7 == 0 else 1):
            order(customer["id"], i, k)
        return customer["id"]

    for i in customers:
        if i % 10 == 9:  # the customer's webhook is never delivered: their orders wait, rightly
            with shop.held("as_made") as batch:
                store.never_sent.add(str(customer_and_orders(i)))
                assert batch[0].topic == "customers/create"
                del batch[0]  # the orders' webhooks only
        elif i % 3 == 0:
            with shop.held():  # reversed: orders/paid, orders/create, then customers/create
                customer_and_orders(i)
        else:
            customer_and_orders(i)


# --- the database's side --------------------------------------------------------------------------------

def inbox_states(run: ChaosRun) -> Counter:
    from models.inbox import InboxEntry

    with run.sessions() as session:
        return Counter(dict(session.execute(select(InboxEntry.state, func.count()).group_by(InboxEntry.state)).all()))


def inbox(run: ChaosRun) -> dict[str, tuple[str, str | None, str | None]]:
    """dedup key → (state, waiting_for, reason)."""
    from models.inbox import InboxEntry

    with run.sessions() as session:
        return {key: (state, waiting_for, reason) for key, state, waiting_for, reason in session.execute(
            select(InboxEntry.dedup_key, InboxEntry.state, InboxEntry.waiting_for, InboxEntry.reason))}


def credits(run: ChaosRun) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """([(identity, points)] of every earn entry, member external id → balance)."""
    from models.member import Member
    from models.points import PointEntry

    with run.sessions() as session:
        rows = session.execute(
            select(PointEntry.entry_key, PointEntry.source, PointEntry.points, PointEntry.kind)).all()
        balances = dict(session.execute(
            select(Member.external_id, func.coalesce(func.sum(PointEntry.points), 0))
            .join(PointEntry, PointEntry.member_id == Member.id, isouter=True).group_by(Member.external_id)).all())
    earned = []
    for key, source, points, kind in rows:
        if kind != "earn":
            continue
        earned.append((key if key.startswith("first_order:") else (source or key), points))
    return earned, balances


def drain_inbox(run: ChaosRun, *, timeout: float, sweep: bool = True, idle_seconds: float = 1.0,
                sweep_every: float = SWEEP_AFTER) -> tuple[Counter, int]:
    """Wait until no entry is ``received``; while nothing moves, send ``sweep_inbox`` as the clock does
    every SWEEP_AFTER seconds (it enqueues only the entries left received for that long). Returns the final
    count per state, and how many entries were stranded (still received when the workers went idle)."""
    from workers.inbox import sweep_inbox

    deadline = time.monotonic() + timeout
    last, last_change, last_sweep, stranded = None, time.monotonic(), 0.0, 0
    while True:
        states = inbox_states(run)
        if not states["received"]:
            return states, stranded
        now = time.monotonic()
        if states != last:
            last, last_change = states, now
        elif sweep and now - last_change >= idle_seconds and now - last_sweep >= sweep_every:
            stranded = stranded or states["received"]
            sweep_inbox.send()
            last_sweep = now
        if now > deadline:
            raise AssertionError(f"inbox entries still received after {timeout:.0f} s: {dict(states)}")
        time.sleep(0.2)


def swept(*workers: Process) -> int:
    """Entries the inbox sweep enqueued again, from the workers' logs."""
    total = 0
    for worker in workers:
        for line in worker.log().splitlines():
            if '"inbox.swept"' in line:
                total += json.loads(line).get("entries", 0)
    return total


def wait_applied(run: ChaosRun, at_least: int, timeout: float, worker: Process) -> int:
    def enough():
        if not worker.alive():
            raise AssertionError(f"the worker died by itself:\n{worker.log()[-3000:]}")
        done = inbox_states(run)["applied"]
        return done if done >= at_least else 0

    return wait_for(enough, timeout, f"{at_least} inbox entries applied", every=0.1)


# --- the tally --------------------------------------------------------------------------------------------

def intake_tally(name: str, run: ChaosRun, store: Store, started: float, notes: str = "") -> Tally:
    shop = store.shop
    answered = {f"shopify:{d.topic}:{d.headers['X-Shopify-Event-Id']}" for d in shop.deliveries
                if d.status is not None and 200 <= d.status < 300}
    sent = {f"shopify:{d.topic}:{d.headers['X-Shopify-Event-Id']}" for d in shop.deliveries if d.headers}
    entries = inbox(run)
    missing: list[str] = []  # accepted webhooks not applied
    waiting_rightly = 0
    for key in sorted(answered):
        state, waiting_for, reason = entries.get(key, (None, None, None))
        if state == "applied":
            continue
        if state == "waiting" and waiting_for and waiting_for.removeprefix("member:") in store.never_sent:
            waiting_rightly += 1
            continue
        missing.append(f"{key} ({state}, {waiting_for or reason})")

    expected = store.expected_credits()
    earned, balances = credits(run)
    counts = Counter(identity for identity, _ in earned)
    points = {identity: value for identity, value in earned}
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    unexpected = sum(1 for identity in counts if identity not in expected)
    short = [f"credit {identity}: {points.get(identity)} points instead of {value}"
             for identity, value in expected.items() if points.get(identity) != value]
    owed: Counter = Counter()
    for identity, value in expected.items():
        kind, _, ref = identity.partition(":")
        owed[ref if kind == "first_order" else store.customer_of[ref]] += value
    over = [c for c, balance in balances.items() if balance > owed.get(c, 0)]
    duplicates += len(over)
    summary = (f"{len(expected)} credits = {sum(expected.values())} points as the store's orders earn, ledger "
               f"{sum(points.values())}; {waiting_rightly} waiting for customers never sent; "
               f"{len(sent - answered)} webhooks never answered 2xx")
    result = Tally(name, expected=len(answered), accepted=len(answered) - len(missing), duplicates=duplicates,
                   missing=len(missing) + len(short), unknown=0, unexpected=unexpected,
                   missing_examples=missing[:5] + short[:5] + [f"{c} holds more than owed" for c in over[:3]],
                   seconds=time.monotonic() - started, notes=f"{summary}; {notes}" if notes else summary)
    result.report()
    return result


def assert_clean(result: Tally, store: Store, run: ChaosRun) -> None:
    result.assert_clean()
    assert sum(store.order_points.values()) > 0 and store.never_sent
    points = run.runtime.program.points  # what the expected credits assume (campaigns/program.yaml)
    assert (points.per_currency_unit, points.first_order_bonus) == (1, FIRST_ORDER_BONUS)


# --- the scenarios ----------------------------------------------------------------------------------------

def test_kill_9_the_worker_mid_intake_then_a_new_one_applies_every_accepted_webhook_once(
        pg_engine, pg_database, redis_namespace, scenario):
    configure(scenario, pg_database, REDIS_URL, redis_namespace)
    port = free_port()
    start_web(scenario, "web", port)
    first = scenario.worker("worker-1", processes=1, threads=4)
    started = time.monotonic()
    store = open_store(f"http://127.0.0.1:{port}")
    try:
        trade(store, range(CUSTOMERS))
        at_kill = wait_applied(scenario, 100, 120, first)  # of ~320 entries
        first.kill()
        time.sleep(1.0)
        second = scenario.worker("worker-2", processes=1, threads=4)
        assert store.shop.wait_deliveries(120), "the store did not finish its deliveries"
        states, stranded = drain_inbox(scenario, timeout=SWEEP_AFTER + 90)
        result = intake_tally("shop intake: kill -9 the worker mid-intake, then a new one", scenario, store, started,
                              notes=f"killed at {at_kill} applied; {stranded} entries stranded received, the sweep "
                                    f"enqueued {swept(first, second)} again; inbox {dict(states)}")
    finally:
        store.shop.stop()
    assert_clean(result, store, scenario)


def test_kill_9_the_web_process_mid_intake_the_stores_retries_reach_the_new_one(
        pg_engine, pg_database, redis_namespace, scenario):
    configure(scenario, pg_database, REDIS_URL, redis_namespace)
    port = free_port()
    first = start_web(scenario, "web-1", port)
    worker = scenario.worker("worker", processes=1, threads=4)
    started = time.monotonic()
    # Retries 0.25 s doubling (64 s in all, Shopify's 4 hours compressed): the web process is back long before.
    store = open_store(f"http://127.0.0.1:{port}", retry_delays=[0.25 * 2 ** i for i in range(8)])
    try:
        trade(store, range(CUSTOMERS))
        wait_for(lambda: len(store.shop.deliveries) >= CUSTOMERS * 2, 120, "the store to be mid-way")
        at_kill = sum(1 for d in store.shop.deliveries if d.status == 200)
        first.kill()
        start_web(scenario, "web-2", port)  # down for as long as it boots (about 1 s), as a restarted dyno
        assert store.shop.wait_deliveries(120), "the store did not finish its deliveries"
        states, stranded = drain_inbox(scenario, timeout=SWEEP_AFTER + 90)
        refused = sum(1 for d in store.shop.deliveries if d.status is None)
        result = intake_tally("shop intake: kill -9 the web process mid-intake, then a new one", scenario, store,
                              started, notes=f"killed after {at_kill} answers; {refused} attempts failed and were "
                                             f"retried; {stranded} entries stranded received, the sweep enqueued "
                                             f"{swept(worker)} again; inbox {dict(states)}")
    finally:
        store.shop.stop()
    assert refused > 0  # the store did meet the dead process
    assert len({d.headers["X-Shopify-Event-Id"] for d in store.shop.deliveries if d.headers}) == len(
        {d.headers["X-Shopify-Event-Id"] for d in store.shop.deliveries if d.status == 200})  # all answered in the end
    assert_clean(result, store, scenario)


def test_redis_flushed_after_the_intake_the_clocks_sweep_applies_every_stored_entry(
        pg_engine, pg_database, private_redis, scenario):
    configure(scenario, pg_database, private_redis.url, "loyalty-chaos")
    port = free_port()
    start_web(scenario, "web", port)
    started = time.monotonic()
    store = open_store(f"http://127.0.0.1:{port}")
    try:
        trade(store, range(CUSTOMERS // 2))  # no worker yet: every entry's message waits in Redis
        assert store.shop.wait_deliveries(120), "the store did not finish its deliveries"
        stored = inbox_states(scenario)["received"]
        private_redis.restart(down_seconds=0.5)  # killed, then a new, empty server: every message is gone
        clock = start_clock(scenario, "clock")
        worker = scenario.worker("worker", processes=1, threads=4)
        states, _ = drain_inbox(scenario, timeout=SWEEP_AFTER * 2 + 60, sweep=False)  # the clock's sweep alone
        result = intake_tally("shop intake: Redis flushed with every message queued, the clock's sweep", scenario,
                              store, started, notes=f"{stored} entries stored when Redis was flushed; the sweep "
                                                    f"enqueued {swept(worker)} again; inbox {dict(states)}")
    finally:
        store.shop.stop()
    assert clock.alive(), clock.log()[-2000:]
    assert stored > CUSTOMERS // 2 and swept(worker) >= stored  # the flush did lose them, the sweep put them back
    assert_clean(result, store, scenario)
