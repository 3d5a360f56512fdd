"""(f) Webhook intake: how fast the ``web`` process answers a signed Shopify webhook, and how many a second.

Ours: the real ``loyalty web`` (uvicorn, one process, as the Procfile runs it) on the benchmark
database with Redis configured, so each delivery is what production does: the size limit, the
``X-Shopify-Hmac-Sha256`` check off the event loop, an encrypted INSERT into the inbox in the
transaction that answers 200, and the ``apply_inbox_entry`` message sent to Redis after the commit
(no worker consumes it here: only the intake is measured). The floor: a bare Starlette app served by
uvicorn with the same settings, doing the same HMAC check off the loop and one INSERT of the body into
a plain table (``bench_intake_floor``, unique on the webhook id), through a SQLAlchemy pool of the
same size.

Both receive the same ``orders/paid`` body (a Shopify order as the local stand-in builds it), each
delivery with its own ``X-Shopify-Event-Id``, from one client process (httpx, ``CONNECTIONS``
keep-alive connections, each sending its next request when the last is answered), in alternating
rounds after a warm-up. Reported: p50 and p99 latency as the client sees it, and requests per
second; the ratios are ours / floor. Correctness first: every answer must be 200, and each side must
hold exactly one row per delivery (ours: one inbox entry and one queued message each). What the
run wrote (inbox entries, the floor table, the Redis queue) is removed afterwards.

``python -m benchmarks.intake --floor PORT DATABASE_URL SECRET`` serves the floor (used by the benchmark).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import REDIS_URL, Bench, Mismatch, Row, ratio, worker_env
from benchmarks.generate import database_url

SECRET = "shpss_benchmark_secret_0123456789"
TOPIC = "orders/paid"
CONNECTIONS = 4  # concurrent client connections, as a shop's webhook senders keep a few open
FLOOR_TABLE = "bench_intake_floor"
TIMEOUT_MS = 5_000  # Shopify gives up on an answer after 5 seconds
SERVER_SETTINGS: dict[str, Any] = {"log_config": None, "access_log": False}  # what `loyalty web` passes to uvicorn


def sizes(quick: bool) -> tuple[int, int, int]:
    """(warm-up requests, rounds, requests per round) for each side."""
    return (50, 2, 200) if quick else (300, 5, 2_000)


# --- the floor -----------------------------------------------------------------------------------

def floor_app(url: str, secret: str):
    """A bare Starlette endpoint: the HMAC check off the loop, one INSERT, 200."""
    from sqlalchemy import create_engine, text
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    engine = create_engine(url, pool_size=5)  # the web app's pool size
    key = secret.encode()
    insert = text(f"INSERT INTO {FLOOR_TABLE} (webhook_id, body) VALUES (:id, :body) ON CONFLICT DO NOTHING")

    def valid(body: bytes, signature: str | None) -> bool:
        expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        return signature is not None and hmac.compare_digest(expected, signature)

    def store(webhook_id: str, body: bytes) -> None:
        with engine.begin() as connection:
            connection.execute(insert, {"id": webhook_id, "body": body.decode("utf-8")})

    async def webhook(request: Request):
        body = await request.body()
        if not await run_in_threadpool(valid, body, request.headers.get("x-shopify-hmac-sha256")):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        await run_in_threadpool(store, request.headers["x-shopify-event-id"], body)
        return JSONResponse({"accepted": 1})

    async def healthz(request: Request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/webhooks/shopify", webhook, methods=["POST"]), Route("/healthz", healthz)])


def serve_floor(port: int, url: str, secret: str) -> None:
    import uvicorn

    uvicorn.run(floor_app(url, secret), host="127.0.0.1", port=port, **SERVER_SETTINGS)


# --- the run -------------------------------------------------------------------------------------

def order_body() -> bytes:
    """An ``orders/paid`` body as Shopify sends it (the local stand-in's order), compact JSON."""
    from loyalty.standins.shopify_server import ShopifyServer

    shop = ShopifyServer()  # never started: only its store is used, no webhook is sent
    customer = shop.add_customer("bench.buyer@example.com", "Bench", "Buyer", phone="+33612345678")
    order = shop.place_order(customer["id"], [("Tea tin", 2, "50.00"), ("Teapot", 1, "65.00")],
                             discount="10.00", shipping="7.00")
    return json.dumps(order, separators=(",", ":")).encode()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    import httpx

    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env={**os.environ, **env}, cwd=Path(__file__).resolve().parent.parent,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[2:4]} exited with {process.returncode}: {log_path.read_text()[-800:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command[2:4]} did not answer within 60 s: {log_path.read_text()[-800:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _send(url: str, body: bytes, ids: list[str]) -> tuple[list[float], dict[int, int], float]:
    """POST one delivery per id over ``CONNECTIONS`` connections: (latencies in s, statuses, seconds)."""
    import httpx

    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pending = iter(ids)
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=TIMEOUT_MS / 1000) as client:
        async def sender() -> None:
            for event_id in pending:
                headers = {"Content-Type": "application/json", "X-Shopify-Topic": TOPIC,
                           "X-Shopify-Hmac-Sha256": signature, "X-Shopify-Event-Id": event_id,
                           "X-Shopify-Webhook-Id": event_id, "X-Shopify-Shop-Domain": "bench.myshopify.com",
                           "X-Shopify-Triggered-At": "2026-12-01T10:00:00.000Z"}
                started = time.perf_counter()
                try:
                    status = (await client.post("/webhooks/shopify", content=body, headers=headers)).status_code
                except httpx.HTTPError:
                    status = 0  # a time-out or a closed connection: Shopify would retry it
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(CONNECTIONS)))
        return latencies, statuses, time.perf_counter() - started


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _count(bench: Bench, sql: str, **params) -> int:
    from sqlalchemy import text

    with bench.runtime.sessions() as session:
        return session.execute(text(sql), params).scalar_one()


def _queued(namespace: str) -> int:
    """Messages waiting in the namespace's Redis queues (dramatiq keeps each queue's in ``<queue>.msgs``)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(client.hlen(key) for key in client.scan_iter(f"{namespace}:*.msgs"))
    finally:
        client.close()


def _clean_redis(namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{namespace}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def measure(bench: Bench) -> list[Row]:
    from sqlalchemy import text

    warmup, rounds, per_round = sizes(bench.quick)
    run = uuid.uuid4().hex[:12]
    prefix = f"bench-intake-{run}-"
    namespace = f"bench-intake-{run}"
    logs = Path(tempfile.gettempdir())
    body = order_body()
    with bench.runtime.sessions() as session, session.begin():
        session.execute(text(f"DROP TABLE IF EXISTS {FLOOR_TABLE}"))
        session.execute(text(f"CREATE TABLE {FLOOR_TABLE} (id bigserial PRIMARY KEY, webhook_id text UNIQUE NOT NULL, "
                             "body text NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"))
    ours_port, floor_port = _free_port(), _free_port()
    env = worker_env(bench.database, REDIS_URL=REDIS_URL, LOYALTY_QUEUE_NAMESPACE=namespace,
                     SHOPIFY_WEBHOOK_SECRET=SECRET, LOYALTY_LOG_LEVEL="warning")
    processes = []
    try:
        processes.append(_start([sys.executable, "-m", "loyalty.cli", "web", "--host", "127.0.0.1",
                                 "--port", str(ours_port)], env, ours_port, logs / f"{namespace}-ours.log"))
        processes.append(_start([sys.executable, "-m", "benchmarks.intake", "--floor", str(floor_port),
                                 database_url(bench.database, driver="sqlalchemy"), SECRET],
                                env, floor_port, logs / f"{namespace}-floor.log"))
        urls = {"ours": f"http://127.0.0.1:{ours_port}", "floor": f"http://127.0.0.1:{floor_port}"}
        latencies: dict[str, list[float]] = {"ours": [], "floor": []}
        seconds = {"ours": 0.0, "floor": 0.0}
        statuses: dict[str, dict[int, int]] = {"ours": {}, "floor": {}}
        sequence = iter(range(10**9))
        for url in urls.values():  # warm-up: connections, pools, code paths
            asyncio.run(_send(url, body, [f"{prefix}{next(sequence)}" for _ in range(warmup)]))
        for _ in range(rounds):
            for name, url in urls.items():
                ids = [f"{prefix}{next(sequence)}" for _ in range(per_round)]
                got, answered, took = asyncio.run(_send(url, body, ids))
                latencies[name].extend(got)
                seconds[name] += took
                for status, n in answered.items():
                    statuses[name][status] = statuses[name].get(status, 0) + n
        sent = rounds * per_round + warmup
        held = {
            "ours": _count(bench, "SELECT count(*) FROM inbox WHERE dedup_key LIKE :p",
                           p=f"shopify:{TOPIC}:{prefix}%"),
            "floor": _count(bench, f"SELECT count(*) FROM {FLOOR_TABLE} WHERE webhook_id LIKE :p", p=f"{prefix}%"),
        }
        queued = _queued(namespace)
    finally:
        for process in processes:
            _stop(process)
        for side in ("ours", "floor"):  # kept only when a server did not start (the error quotes it)
            if len(processes) == 2:
                (logs / f"{namespace}-{side}.log").unlink(missing_ok=True)
        _clean_redis(namespace)
        with bench.runtime.sessions() as session, session.begin():
            session.execute(text("DELETE FROM inbox WHERE dedup_key LIKE :p"), {"p": f"shopify:{TOPIC}:{prefix}%"})
            session.execute(text(f"DROP TABLE IF EXISTS {FLOOR_TABLE}"))

    for name in ("ours", "floor"):
        if statuses[name] != {200: rounds * per_round}:
            raise Mismatch(f"intake: {name} answered {statuses[name]} to {rounds * per_round} signed deliveries")
        if held[name] != sent:
            raise Mismatch(f"intake: {name} holds {held[name]} rows for {sent} deliveries")
    if queued != sent:
        raise Mismatch(f"intake: ours queued {queued} messages for {sent} stored deliveries")

    p50 = {name: _percentile(values, 0.50) * 1000 for name, values in latencies.items()}
    p99 = {name: _percentile(values, 0.99) * 1000 for name, values in latencies.items()}
    rate = {name: rounds * per_round / seconds[name] for name in seconds}
    note = (f"{rounds * per_round:,} signed {TOPIC} webhooks of {len(body):,} bytes each side, {CONNECTIONS} "
            f"connections, {rounds} alternating rounds after {warmup} warm-up")
    details = {"requests": rounds * per_round, "warmup": warmup, "rounds": rounds, "connections": CONNECTIONS,
               "body_bytes": len(body), "seconds": seconds, "held": held, "queued": queued}
    return [
        Row("f. intake", "p50 latency (Shopify orders/paid)", ours=p50["ours"], floor=p50["floor"], unit="ms",
            ratio=ratio(p50["ours"], p50["floor"]), note=note, details=details),
        Row("f. intake", "p99 latency (Shopify orders/paid)", ours=p99["ours"], floor=p99["floor"], unit="ms",
            ratio=ratio(p99["ours"], p99["floor"]), target=f"< {TIMEOUT_MS:,} ms (Shopify's time-out)",
            met=p99["ours"] < TIMEOUT_MS, note="verify + encrypted INSERT into the inbox + enqueue, against "
                                                "HMAC + one plain INSERT"),
        Row("f. intake", "throughput", ours=rate["ours"], floor=rate["floor"], unit="req/s",
            ratio=ratio(rate["ours"], rate["floor"]), note="higher is better: the ratio is ours / floor"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--floor":
        serve_floor(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"usage: python -m benchmarks.intake --floor PORT DATABASE_URL SECRET ({__doc__.splitlines()[0]})")
