"""Fault injection shared by the fake provider servers (Twilio, Mailchimp).

A :class:`Faults` object says how the next requests should misbehave; the servers consult it for
every API request (never for their ``/__admin/...`` endpoints). It can be changed at any time from
the test thread (plain attribute assignment, :meth:`Faults.configure`, :meth:`Faults.queue`) or over
HTTP through each server's admin endpoint (``GET``/``POST /__admin/faults``), e.g. from a chaos script
or the demo::

    faults = Faults(seed=7, error_rate=0.1, throttle_rate=0.05, latency=(0.01, 0.2))
    faults.drop_rate = 0.02          # "accepted, then the connection dropped"
    faults.queue("drop", "ok", "error:503")   # exactly these, for the next three requests

What each kind of fault does to one request:

``error``    answered at once with ``error_status`` (500 by default) and the provider's own error
             body; the request is NOT processed (nothing recorded).
``throttle`` answered at once with 429 and the provider's own "too many requests" body; not processed.
``timeout``  held without an answer and without being processed, for ``hold_seconds`` or until the
             client gives up (closes its socket) or the server stops; then the connection is closed.
             Use a client timeout shorter than ``hold_seconds``.
``drop``     processed and recorded as usual, then the connection is closed without sending any of the
             response: the client sees a connection error (``requests.exceptions.ConnectionError``) for
             a request that did take effect. This is the "may or may not have been delivered" case.
``latency``  (independent of the above) every request first waits ``latency`` seconds, or a uniform
             random time in ``(low, high)``.

Rates are probabilities in [0, 1] drawn from a seeded ``random.Random``: the same sequence of requests
gets the same faults run after run (one draw per request, plus one per request for a latency range).
Requests made concurrently arrive in a nondeterministic order, so for exact scenarios prefer
:meth:`Faults.queue`, which scripts the next matching requests and takes precedence over the rates.
``only`` (a regular expression searched in ``"METHOD /path"``) limits faults to some requests, e.g.
``only=r"POST .*/Messages\\.json$"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = ("ok", "error", "throttle", "timeout", "drop")

# Keys the servers put in the ASGI scope so that layers can talk to each other.
RAW_SEND_KEY = "fault.raw_send"  # the server's own ``send`` (uvicorn's), before any wrapping
APPLIED_KEY = "fault.applied"  # the kind of fault applied to this request ("ok" if none)
APP_STATUS_KEY = "fault.app_status"  # for "drop": the status the app would have answered
BEFORE_DROP_KEY = "fault.before_drop"  # a callable run just before a connection is dropped

ErrorResponder = Callable[[int], "tuple[int, list[tuple[bytes, bytes]], bytes]"]


@dataclass(frozen=True)
class FaultDecision:
    kind: str = "ok"
    latency: float = 0.0
    status: int | None = None  # for "error": the HTTP status to answer


class Faults:
    """Thread-safe, seeded fault configuration. See the module docstring."""

    _RATES = ("error_rate", "throttle_rate", "timeout_rate", "drop_rate")
    _FIELDS = (
        "seed",
        "error_rate",
        "error_status",
        "throttle_rate",
        "timeout_rate",
        "drop_rate",
        "latency",
        "hold_seconds",
        "only",
    )

    def __init__(
        self,
        seed: int = 1234,
        *,
        error_rate: float = 0.0,
        error_status: int = 500,
        throttle_rate: float = 0.0,
        timeout_rate: float = 0.0,
        drop_rate: float = 0.0,
        latency: float | tuple[float, float] | None = None,
        hold_seconds: float = 30.0,
        only: str | None = None,
    ):
        self._lock = threading.RLock()
        self._script: deque[FaultDecision] = deque()
        self.applied: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []  # (method, path, kind) of every fault applied
        self.seed = seed
        self._rng = random.Random(seed)
        self.error_rate = error_rate
        self.error_status = error_status
        self.throttle_rate = throttle_rate
        self.timeout_rate = timeout_rate
        self.drop_rate = drop_rate
        self.latency = latency
        self.hold_seconds = hold_seconds
        self.only = only

    # -- configuration -------------------------------------------------------------------------
    def configure(self, **changes: Any) -> Faults:
        """Change several settings at once; ``seed=`` also restarts the random sequence."""
        unknown = set(changes) - set(self._FIELDS)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            previous = {name: getattr(self, name) for name in changes}
            for name, value in changes.items():
                if name == "latency" and isinstance(value, list):
                    value = tuple(value)
                object.__setattr__(self, name, value)  # validated together, below
            try:
                self._validate()
            except ValueError:
                for name, value in previous.items():
                    object.__setattr__(self, name, value)
                raise
            if "seed" in changes:
                self._rng = random.Random(self.seed)
        return self

    def reseed(self, seed: int | None = None) -> None:
        with self._lock:
            if seed is not None:
                self.seed = seed
            self._rng = random.Random(self.seed)

    def clear(self) -> None:
        """No faults any more (rates to zero, no latency, empty script); the seed is kept and restarted."""
        with self._lock:
            self.error_rate = self.throttle_rate = self.timeout_rate = self.drop_rate = 0.0
            self.error_status = 500
            self.latency = None
            self.hold_seconds = 30.0
            self.only = None
            self._script.clear()
            self.applied.clear()
            self.log.clear()
            self._rng = random.Random(self.seed)

    reset = clear

    def queue(self, *actions: str) -> Faults:
        """Script the next matching requests: ``"ok"``, ``"error"``, ``"error:503"``, ``"throttle"``,
        ``"timeout"``, ``"drop"``, optionally with a latency suffix ``"@0.5"`` (e.g. ``"ok@0.3"``)."""
        decisions = [self._parse_action(a) for a in actions]
        with self._lock:
            self._script.extend(decisions)
        return self

    @property
    def pending(self) -> int:
        """How many scripted actions are still waiting for a request."""
        with self._lock:
            return len(self._script)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            data = {name: getattr(self, name) for name in self._FIELDS}
            data["latency"] = list(self.latency) if isinstance(self.latency, tuple) else self.latency
            data["queued"] = [self._format_action(d) for d in self._script]
            data["applied"] = dict(self.applied)
            return data

    # -- decisions -----------------------------------------------------------------------------
    def decide(self, method: str, path: str) -> FaultDecision:
        """The fault for one request (thread-safe, consumes the script first)."""
        with self._lock:
            if self.only and not re.search(self.only, f"{method} {path}"):
                return FaultDecision()
            if self._script:
                decision = self._script.popleft()
            else:
                draw = self._rng.random()
                kind = "ok"
                edge = 0.0
                for name, rate in (
                    ("error", self.error_rate),
                    ("throttle", self.throttle_rate),
                    ("timeout", self.timeout_rate),
                    ("drop", self.drop_rate),
                ):
                    edge += rate
                    if draw < edge:
                        kind = name
                        break
                decision = FaultDecision(kind, self._draw_latency(), self.error_status if kind == "error" else None)
            if decision.kind != "ok":
                self.applied[decision.kind] += 1
                self.log.append((method, path, decision.kind))
            return decision

    def _draw_latency(self) -> float:
        latency = self.latency
        if latency is None:
            return 0.0
        if isinstance(latency, (tuple, list)):
            low, high = latency
            return self._rng.uniform(float(low), float(high))
        return float(latency)

    def _validate(self) -> None:
        for name in self._RATES:
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        total = self.error_rate + self.throttle_rate + self.timeout_rate + self.drop_rate
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total}, more than 1")

    def _parse_action(self, action: str) -> FaultDecision:
        text, _, delay = action.partition("@")
        kind, _, status = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {action!r}; expected one of {', '.join(FAULT_KINDS)}")
        return FaultDecision(
            kind,
            float(delay) if delay else 0.0,
            int(status) if status else (self.error_status if kind == "error" else None),
        )

    @staticmethod
    def _format_action(decision: FaultDecision) -> str:
        text = decision.kind
        if decision.kind == "error" and decision.status:
            text += f":{decision.status}"
        if decision.latency:
            text += f"@{decision.latency}"
        return text

    def __setattr__(self, name: str, value: Any) -> None:  # keep runtime changes sane
        if name in self._RATES and "drop_rate" in self.__dict__:
            previous = self.__dict__[name]
            super().__setattr__(name, value)
            try:
                self._validate()
            except ValueError:
                super().__setattr__(name, previous)
                raise
            return
        if name == "latency" and isinstance(value, list):
            value = tuple(value)
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return f"Faults({self.to_dict()!r})"


def apply_admin_update(faults: Faults, payload: dict[str, Any]) -> dict[str, Any]:
    """Body of ``POST /__admin/faults``: ``{"clear": true, "queue": [...], <setting>: value, ...}``."""
    payload = dict(payload)
    if payload.pop("clear", False) or payload.pop("reset", False):
        faults.clear()
    actions = payload.pop("queue", None) or []
    payload.pop("applied", None)
    payload.pop("queued", None)
    faults.configure(**payload)
    if actions:
        faults.queue(*actions)
    return faults.to_dict()


# -- ASGI plumbing ---------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_receive(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out the already-read body once, then defers to the real one."""
    sent = False

    async def _receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return _receive


def abort_connection(send: Send) -> bool:
    """Close the client's connection without writing anything more on it.

    Works with uvicorn (h11 and httptools): its ``send`` is a bound method of the request cycle,
    which knows the transport. Marking the cycle disconnected keeps uvicorn from answering a 500
    afterwards. Returns False when the server is not one we know how to reach into.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None:
        return False
    cycle.disconnected = True
    transport.close()
    return True


async def interruptible_sleep(seconds: float, stopping: threading.Event | None) -> None:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (stopping is not None and stopping.is_set()):
            return
        await asyncio.sleep(min(left, 0.05))


class FaultMiddleware:
    """ASGI middleware applying :class:`Faults` to every request of the wrapped app."""

    def __init__(
        self,
        app: ASGIApp,
        faults: Faults,
        *,
        error_response: ErrorResponder,
        stopping: threading.Event | None = None,
    ):
        self.app = app
        self.faults = faults
        self.error_response = error_response
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        decision = self.faults.decide(scope["method"], scope["path"])
        scope[APPLIED_KEY] = decision.kind
        body = await read_body(receive)
        if decision.latency:
            await interruptible_sleep(decision.latency, self.stopping)

        if decision.kind in ("error", "throttle"):
            status = 429 if decision.kind == "throttle" else (decision.status or 500)
            await self._respond(send, *self.error_response(status))
        elif decision.kind == "timeout":
            await self._hold(receive)
            await self._drop(scope, send)
        elif decision.kind == "drop":
            captured: list[dict] = []

            async def capture(message: dict) -> None:
                captured.append(message)

            await self.app(scope, replay_receive(body, receive), capture)
            for message in captured:
                if message["type"] == "http.response.start":
                    scope[APP_STATUS_KEY] = message["status"]
            await self._drop(scope, send)
        else:
            await self.app(scope, replay_receive(body, receive), send)

    async def _hold(self, receive: Receive) -> None:
        """Wait for hold_seconds, the client hanging up, or the server stopping, whichever is first."""
        disconnected = asyncio.ensure_future(receive())
        deadline = time.monotonic() + float(self.faults.hold_seconds)
        try:
            while not disconnected.done():
                if time.monotonic() >= deadline or (self.stopping is not None and self.stopping.is_set()):
                    break
                await asyncio.wait({disconnected}, timeout=0.05)
        finally:
            if not disconnected.done():
                disconnected.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await disconnected

    @staticmethod
    async def _drop(scope: Scope, send: Send) -> None:
        before = scope.get(BEFORE_DROP_KEY)
        if before is not None:
            before()
        raw_send = scope.get(RAW_SEND_KEY, send)
        if abort_connection(raw_send) or (raw_send is not send and abort_connection(send)):
            return
        # Not a server we can reach into: start an answer we never finish, and fail, so that the
        # server closes the connection (the client sees a broken response instead of a refusal).
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
        raise ConnectionAbortedError("fault injection: connection dropped")

    @staticmethod
    async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers = list(headers) + [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
