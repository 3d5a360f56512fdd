"""What the Shopify-, WooCommerce- and PrestaShop-like stand-ins share (see docs/shop-platforms.md).

* :class:`ShopClock`: the shop's notion of "now". Every change to the shop ticks it at least one second
  past the previous change (so versions of one resource never share an instant), from real time by
  default or from a fixed ``start`` (``clock.set(moment)`` jumps); a change may also be dated
  explicitly (``at=``) to build a past history for a backfill.
* :class:`ShopServer`: a :class:`loyalty.standins.http_server.ProviderServer` (lifecycle, request log,
  :mod:`loyalty.standins.fault` faults on the admin API, ``/__admin``) plus the outgoing webhooks:
  a :class:`Delivery` per event and subscription, sent by :meth:`ShopServer.dispatch` at once in the
  calling thread (default; retries sleep there) or by a background thread (``background=True``, then
  :meth:`ShopServer.wait_deliveries`). Every attempt is a :class:`DeliveryAttempt` in
  :attr:`ShopServer.deliveries`, with the status our side answered.
* Webhook faults, in :attr:`ShopServer.webhook_faults` (a :class:`WebhookFaults`): ``duplicates``
  (each delivery sent N times), ``drop`` (the next N deliveries are never sent, recorded as dropped),
  ``wrong_secret`` (sign with that secret instead); also over HTTP, ``POST /__admin/webhook_faults``.
  Out of order: ``with shop.held(): ...`` keeps the deliveries made inside and sends them on leaving
  in reverse order (or ``held("as_made")``, or ``held(order=[2, 0])``: those, in that order, the
  rest never). A stale retry after a newer update is the same: two updates inside ``held()``.
* Admin-API faults: :meth:`ShopServer.fail_request` makes the Nth API request from now fail (a 500,
  or a time-out held ``hold_seconds``), so a backfill can be shown to resume.
* Helpers: :func:`php_json` (WordPress' ``wp_json_encode`` bytes: ``\\/`` and ``\\uXXXX``),
  :func:`basic_credentials`, :class:`ApiError`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx

from loyalty.standins.fault import Faults, Scope, read_body
from loyalty.standins.http_server import ProviderServer, send_response


class ShopClock:
    """Monotonic shop time (UTC, whole seconds): ``tick()`` for each change, ``set()`` to jump."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(seconds=1)):
        self.step = step
        self._base = start.astimezone(UTC).replace(microsecond=0) if start else None
        self._last = (self._base - step) if self._base else datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def tick(self, at: datetime | None = None) -> datetime:
        """The instant of one change: ``at`` when given, else one step past the last change (or real now)."""
        with self._lock:
            if at is not None:
                return at.astimezone(UTC).replace(microsecond=0)
            now = self._base if self._base else datetime.now(UTC).replace(microsecond=0)
            self._last = max(now, self._last + self.step)
            return self._last

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._base = moment.astimezone(UTC).replace(microsecond=0)
            self._last = self._base - self.step

    def now(self) -> datetime:
        with self._lock:
            return max(self._last, self._base or datetime.now(UTC).replace(microsecond=0))


def php_json(obj: Any) -> bytes:
    """JSON as PHP's ``wp_json_encode`` writes it: compact, ``/`` as ``\\/``, non-ASCII as ``\\uXXXX``."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def basic_credentials(headers: dict[str, str]) -> tuple[str, str] | None:
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


class ApiError(Exception):
    """An answer other than success: raised by a handler, sent as is."""

    def __init__(self, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, list(headers)


@dataclass
class DeliveryAttempt:
    topic: str
    url: str
    event_id: str  # Shopify's X-Shopify-Event-Id; WooCommerce's resource and id ("order:727")
    attempt: int  # 1 for the first try, 2 for the first retry...
    copy: int  # 1, or 2..N for a duplicate made by the ``duplicates`` fault
    headers: dict[str, str]
    body: bytes
    status: int | None  # what our side answered; None: time-out, connection error, or dropped
    error: str | None = None  # "timeout", "connection: ...", "dropped" (the drop fault), "disabled"
    sent_at: float = 0.0
    duration: float = 0.0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Delivery:
    """One event for one subscription: ``build(attempt)`` gives the body and headers of each attempt."""

    topic: str
    url: str
    event_id: str
    build: Callable[[int], tuple[bytes, dict[str, str]]]
    success: Callable[[int | None], bool] = lambda status: status is not None and 200 <= status < 300
    retry_delays: Sequence[float] = ()
    timeout: float = 5.0
    after: Callable[[bool], None] | None = None  # told whether the delivery (all its tries) succeeded
    skip: Callable[[], bool] | None = None  # True: not sent (a disabled WooCommerce webhook)
    coalesce_key: str | None = None  # held deliveries with the same key are sent once
    attempts: int = 0
    copy: int = 1


@dataclass
class WebhookFaults:
    duplicates: int = 1  # each delivery is sent this many times (same event id, same body for Shopify)
    drop: int = 0  # the next N deliveries are never sent (a missed webhook); recorded with error "dropped"
    wrong_secret: str | None = None  # sign with this secret instead of the shop's


_senders = threading.local()


def _webhook_client() -> httpx.Client:
    """The sending thread's HTTP client: made once (``httpx.post`` builds a client and its TLS context on
    every call, about 30 ms of CPU), a new connection for every attempt (no keep-alive, as before)."""
    client = getattr(_senders, "client", None)
    if client is None:
        client = _senders.client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    return client


class ShopServer(ProviderServer):
    """Base of the three stand-ins: the store's clock, the admin API plumbing, the outgoing webhooks."""

    def __init__(self, *, start: datetime | None = None, background: bool = False,
                 faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0):
        self.clock = ShopClock(start)
        self.webhook_faults = WebhookFaults()
        self.background = background
        self._deliveries: list[DeliveryAttempt] = []
        self._held: list[Delivery] | None = None
        self._queue: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._busy = 0
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        super().__init__(faults=faults, host=host, port=port)

    # -- the admin API ---------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
               body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def api(self, scope: Scope, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("utf-8"), keep_blank_values=True)
        try:
            status, out_headers, out = self.handle(scope["method"], scope["path"], query, headers, body)
        except ApiError as err:
            status, out_headers, out = err.status, err.headers, err.body
        await send_response(send, status, out_headers, out)

    def fail_request(self, n: int = 1, kind: str = "error:500") -> None:
        """The Nth admin-API request from now fails: ``"error:500"``, ``"error:503"``, ``"timeout"``
        (held without an answer for ``faults.hold_seconds``), ``"drop"`` (processed, then the
        connection closed), ``"throttle"`` (429). The requests before it are answered normally."""
        self.faults.queue(*(["ok"] * (n - 1)), kind)

    # -- webhooks ---------------------------------------------------------------------------------
    @property
    def deliveries(self) -> list[DeliveryAttempt]:
        """Every delivery attempt (and dropped delivery), in the order they ended."""
        with self._lock:
            return list(self._deliveries)

    def deliveries_of(self, topic: str) -> list[DeliveryAttempt]:
        return [d for d in self.deliveries if d.topic == topic]

    @contextlib.contextmanager
    def held(self, order: Sequence[int] | str = "reversed") -> Iterator[list[Delivery]]:
        """Keep the deliveries made inside; on leaving, send them ``"reversed"``, ``"as_made"`` or in the
        order of the given indices (each index once; the others are never sent: a lost batch member)."""
        with self._lock:
            held: list[Delivery] = []
            self._held = held
        try:
            yield held
        finally:
            with self._lock:
                self._held = None
            if order == "reversed":
                batch = held[::-1]
            elif order == "as_made":
                batch = list(held)
            elif isinstance(order, str):
                raise ValueError(f"held(order={order!r}): use 'reversed', 'as_made' or the indices to send")
            else:
                batch = [held[i] for i in order]
            for delivery in batch:
                self.dispatch(delivery)

    def emit(self, delivery: Delivery) -> None:
        """Send now (or keep it, inside :meth:`held`; a held delivery with the same coalesce key as an
        earlier one is not kept twice, as WooCommerce's Action Scheduler does)."""
        with self._lock:
            if self._held is not None:
                if delivery.coalesce_key is None or all(d.coalesce_key != delivery.coalesce_key for d in self._held):
                    self._held.append(delivery)
                return
        self.dispatch(delivery)

    def dispatch(self, delivery: Delivery) -> None:
        with self._lock:
            copies = max(1, self.webhook_faults.duplicates)
            if self.webhook_faults.drop > 0:
                self.webhook_faults.drop -= 1
                self._deliveries.append(DeliveryAttempt(delivery.topic, delivery.url, delivery.event_id, 0, 1, {},
                                                        b"", None, "dropped", time.time()))
                return
        for copy in range(1, copies + 1):
            job = Delivery(**{**delivery.__dict__, "copy": copy, "attempts": 0})
            if self.background:
                self._schedule(job, 0.0)
            else:
                while (delay := self._attempt(job)) is not None:
                    time.sleep(delay)

    def wait_deliveries(self, timeout: float = 10.0) -> bool:
        """Background mode: wait until every delivery and retry has ended; True if it did in time."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    def stop(self) -> None:
        with self._wake:
            self._queue.clear()
            self._wake.notify_all()
        super().stop()

    def _attempt(self, job: Delivery) -> float | None:
        """One try; the delay before the next one, or None when the delivery is over."""
        if job.skip is not None and job.skip():
            with self._lock:
                self._deliveries.append(DeliveryAttempt(job.topic, job.url, job.event_id, job.attempts + 1, job.copy,
                                                        {}, b"", None, "disabled", time.time()))
            return None
        job.attempts += 1
        body, headers = job.build(job.attempts)
        started, status, error = time.time(), None, None
        try:
            timeout = httpx.Timeout(job.timeout, connect=min(1.0, job.timeout))
            status = _webhook_client().post(job.url, content=body, headers=headers, timeout=timeout,
                                            follow_redirects=False).status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = f"connection: {type(exc).__name__}"
        attempt = DeliveryAttempt(job.topic, job.url, job.event_id, job.attempts, job.copy, headers, body, status,
                                  error, started, time.time() - started)
        with self._lock:
            self._deliveries.append(attempt)
        ok = job.success(status)
        if not ok and job.attempts <= len(job.retry_delays):
            return job.retry_delays[job.attempts - 1]
        if job.after is not None:
            job.after(ok)
        return None

    def _schedule(self, job: Delivery, delay: float) -> None:
        with self._wake:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq), job))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name=f"{self.name}-webhooks", daemon=True)
                self._worker.start()
            self._wake.notify_all()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    if self._stopping.is_set() and not self._queue:
                        self._worker = None
                        return
                    wait = (self._queue[0][0] - time.monotonic()) if self._queue else 0.2
                    self._wake.wait(max(0.005, min(wait, 0.2)))
                _, _, job = heapq.heappop(self._queue)
                self._busy += 1
            try:
                delay = self._attempt(job)
            finally:
                with self._wake:
                    self._busy -= 1
                    self._wake.notify_all()
            if delay is not None:
                self._schedule(job, delay)

    def admin_action(self, method: str, action: str, payload: Any) -> tuple[int, Any] | None:
        """``POST /__admin/webhook_faults {"duplicates": 2, "drop": 1, "wrong_secret": "x"}`` (for scripts)."""
        if action != "webhook_faults":
            return None
        with self._lock:
            if method == "POST":
                self.webhook_faults = WebhookFaults(**{**vars(self.webhook_faults), **payload})
            return 200, vars(self.webhook_faults)

    def reset_state(self) -> None:
        self._deliveries.clear()
        self.webhook_faults = WebhookFaults()


@dataclass
class Page:
    """One page of a list: the items and the totals a page/per_page API states."""

    items: list[Any]
    total: int
    total_pages: int
    extra: dict[str, Any] = field(default_factory=dict)


def paginate(items: list[Any], page: int, per_page: int) -> Page:
    total = len(items)
    return Page(items[(page - 1) * per_page: page * per_page], total, -(-total // per_page) if total else 0)
