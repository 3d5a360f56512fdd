"""Run an ASGI app with uvicorn in a background thread, and the plumbing the fake providers share.

:class:`BackgroundServer` is the generic part: ``BackgroundServer(app).start()`` binds 127.0.0.1 on
a free port (the socket is bound before uvicorn starts, so there is no race for the port), serves in
a daemon thread, and ``.url`` is ``http://127.0.0.1:<port>``; ``stop()`` shuts it down. It is also a
context manager.

:class:`ProviderServer` is the base of the fake Twilio and Mailchimp servers: lifecycle, a log of
every request (with the status answered and the fault applied), calls counted per endpoint, requests
in flight (and the most seen at once), fault injection (:mod:`loyalty.standins.fault`) and admin
endpoints that are never subject to auth, faults or limits. ``wait_idle()`` waits until no request is
in progress (a request held by a "timeout" fault ends shortly after its client gives up).

Admin endpoints:

==========================  ==================================================================
``GET  /__admin/faults``     the fault settings, what is queued and what was applied
``POST /__admin/faults``     change them: ``{"drop_rate": 0.1, "queue": ["drop"], "clear": true}``
``POST /__admin/reset``      forget everything recorded, and clear the faults
``GET  /__admin/state``      what the provider accepted (messages, members, events...), as JSON
``GET  /__admin/requests``   the request log
==========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date, datetime
from typing import Any, Self

import uvicorn

from loyalty.standins.fault import (
    APP_STATUS_KEY,
    APPLIED_KEY,
    BEFORE_DROP_KEY,
    RAW_SEND_KEY,
    FaultMiddleware,
    Faults,
    Scope,
    apply_admin_update,
    read_body,
)

ADMIN_PREFIX = "/__admin"


class _PromptServer(uvicorn.Server):
    """uvicorn's server that stops as soon as asked. uvicorn's own looks at ``should_exit`` every
    0.1 s, then waits a fixed 0.1 s for open connections to close: about 0.16 s a stop, and a test
    run stops a stand-in a few hundred times. Here :meth:`wake` ends the wait at once, and open
    connections are waited for in steps of 10 ms (up to the graceful time-out, as uvicorn does);
    the app's lifespan shutdown still runs last."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Called from another thread after ``should_exit`` is set."""
        loop = self._loop
        if loop is not None:  # not yet: the loop's first look at should_exit is still to come
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(self._woken.set)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):  # on_tick also keeps the Date header current
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        grace = self.config.timeout_graceful_shutdown  # None: as long as it takes
        deadline = None if grace is None else time.monotonic() + grace
        while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
            if deadline is not None and time.monotonic() > deadline:
                for task in self.server_state.tasks:
                    task.cancel(msg="graceful shutdown time-out")
                break
            await asyncio.sleep(0.01)
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


class BackgroundServer:
    """uvicorn serving ``app`` on ``host`` in a background thread."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "asgi-server",
        log_level: str = "warning",
        graceful_shutdown_seconds: float = 1.0,
    ):
        self.app = app
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.name = name
        self.log_level = log_level
        self.graceful_shutdown_seconds = graceful_shutdown_seconds
        self._server: _PromptServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> Self:
        if self.running:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it. asyncio would set it itself, but only on sockets whose proto
        # is IPPROTO_TCP (this one's is 0): without it, Nagle and delayed ACKs add ~40 ms to each answer.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self._requested_port or (self.port or 0)))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level=self.log_level,
            access_log=False,
            lifespan="auto",  # an app's shutdown (the web app disposes of its engines) runs at stop()
            interface="asgi3",
            http="h11",
            loop="asyncio",
            timeout_graceful_shutdown=max(1, round(self.graceful_shutdown_seconds)),
        )
        server = _PromptServer(config)
        self._server = server
        self._error = None

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} could not start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start within {timeout} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._server.wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._thread = None
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass
class RequestRecord:
    method: str
    path: str
    query: str
    endpoint: str | None
    status: int | None = None  # what the client got; None when the connection was dropped
    fault: str = "ok"
    app_status: int | None = None  # for "drop": what the provider would have answered
    started_at: float = 0.0
    duration: float = 0.0


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [to_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


async def send_response(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = list(headers) + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def json_body(obj: Any) -> bytes:
    return json.dumps(to_jsonable(obj), separators=(",", ":")).encode()


class ProviderServer:
    """Base of the fake providers. Subclasses implement :meth:`api` and the hooks below."""

    name = "provider"

    def __init__(self, *, faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0):
        self.faults = faults if faults is not None else Faults()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._requests: list[RequestRecord] = []
        self._calls: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._max_in_flight = 0
        self._generation = 0
        self._fault_layer = FaultMiddleware(
            self.api, self.faults, error_response=self.error_response, stopping=self._stopping
        )
        self._server = BackgroundServer(self.asgi, host=host, port=port, name=f"fake-{self.name}")

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        self._stopping.clear()
        self._server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases requests held by a "timeout" fault or latency
        self._server.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without the API's version prefix."""
        return self._server.url

    @property
    def port(self) -> int:
        assert self._server.port is not None
        return self._server.port

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what happened -------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """Every API request received, in arrival order of completion (admin requests excluded)."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> Counter[str]:
        """Requests received per endpoint name, whatever the outcome (401, 429, faults included)."""
        with self._lock:
            return Counter(self._calls)

    @property
    def total_calls(self) -> int:
        with self._lock:
            return sum(self._calls.values())

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    @property
    def max_in_flight(self) -> int:
        """The most API requests that were being handled at the same time."""
        with self._lock:
            return self._max_in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no API request is in progress (e.g. one held by a "timeout" fault whose client
        gave up); True if that happened within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def reset(self, *, keep_faults: bool = False) -> None:
        """Forget everything recorded (and clear the faults, unless ``keep_faults``)."""
        with self._lock:
            self._generation += 1
            self._requests.clear()
            self._calls.clear()
            self._max_in_flight = sum(self._in_flight.values())
            self.reset_state()
        if not keep_faults:
            self.faults.clear()

    # -- hooks ---------------------------------------------------------------------------------
    async def api(self, scope: Scope, receive: Any, send: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_response(self, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        raise NotImplementedError  # pragma: no cover - abstract

    def endpoint_name(self, method: str, path: str) -> str | None:
        return None

    def concurrency_key(self, scope: dict) -> str:
        return "*"

    def refuse(self, scope: dict, key: str, in_flight: int) -> tuple[int, list, bytes] | None:
        """A response to send instead of handling the request (e.g. a concurrency limit), or None."""
        return None

    def is_public(self, path: str) -> bool:
        """Paths served without counting, faults or limits (e.g. a fake S3 download)."""
        return False

    def state(self) -> dict[str, Any]:
        return {}

    def reset_state(self) -> None:
        pass

    def admin_action(self, method: str, action: str, payload: Any) -> tuple[int, Any] | None:
        return None

    # -- ASGI ----------------------------------------------------------------------------------
    async def asgi(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # pragma: no cover - lifespan is off
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            await self._admin(scope, receive, send)
            return
        if self.is_public(path):
            await self.api(scope, receive, send)
            return

        scope[RAW_SEND_KEY] = send
        method = scope["method"]
        endpoint = self.endpoint_name(method, path)
        key = self.concurrency_key(scope)
        record = RequestRecord(
            method=method,
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            endpoint=endpoint,
            started_at=time.time(),
        )
        with self._lock:
            generation = self._generation
            self._calls[endpoint or f"{method} {path}"] += 1
            self._in_flight[key] += 1
            in_flight_for_key = self._in_flight[key]
            self._max_in_flight = max(self._max_in_flight, sum(self._in_flight.values()))

        began = time.monotonic()
        finished = False

        def finish() -> None:
            # Book-keeping happens before the last byte of the answer leaves, so that a client that
            # has its answer always finds the request in the log (and no longer in flight).
            nonlocal finished
            if finished:
                return
            finished = True
            record.duration = time.monotonic() - began
            record.fault = scope.get(APPLIED_KEY, "ok")
            record.app_status = scope.get(APP_STATUS_KEY)
            with self._lock:
                self._in_flight[key] -= 1
                if self._in_flight[key] <= 0:
                    del self._in_flight[key]
                if generation == self._generation:  # not from before a reset()
                    self._requests.append(record)

        scope[BEFORE_DROP_KEY] = finish

        async def logging_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()
            await send(message)

        try:
            refusal = self.refuse(scope, key, in_flight_for_key)
            if refusal is not None:
                await read_body(receive)
                await send_response(logging_send, *refusal)
            else:
                await self._fault_layer(scope, receive, logging_send)
        finally:
            finish()

    async def _admin(self, scope: dict, receive: Any, send: Any) -> None:
        method = scope["method"]
        action = scope["path"][len(ADMIN_PREFIX) :].strip("/")
        raw = await read_body(receive)
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            await self._admin_reply(send, 400, {"error": "the body is not JSON"})
            return
        try:
            if action == "faults" and method == "GET":
                result: tuple[int, Any] = (200, self.faults.to_dict())
            elif action == "faults" and method in ("POST", "PUT", "PATCH"):
                result = (200, apply_admin_update(self.faults, payload))
            elif action == "reset" and method == "POST":
                self.reset(keep_faults=bool(payload.get("keep_faults", False)))
                result = (200, {"reset": True})
            elif action == "state" and method == "GET":
                with self._lock:
                    result = (200, self.state())
            elif action == "requests" and method == "GET":
                result = (200, self.requests)
            else:
                result = self.admin_action(method, action, payload) or (
                    404,
                    {"error": f"no admin endpoint {method} {ADMIN_PREFIX}/{action}"},
                )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            result = (400, {"error": str(exc)})
        await self._admin_reply(send, *result)

    @staticmethod
    async def _admin_reply(send: Any, status: int, obj: Any) -> None:
        await send_response(send, status, [(b"content-type", b"application/json")], json_body(obj))


def run_forever(server: ProviderServer) -> None:  # pragma: no cover - manual/demo helper
    """Start ``server`` and block until Ctrl-C (for poking at it with curl)."""
    server.start()
    print(f"{server.name} listening on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = [
    "ADMIN_PREFIX",
    "BackgroundServer",
    "ProviderServer",
    "RequestRecord",
    "json_body",
    "run_forever",
    "send_response",
    "to_jsonable",
]
