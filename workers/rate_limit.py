"""Pacing sends under a provider's rate, and capping requests in progress at once, shared by every
worker process (dynos included).

Both limiters hand out *send slots* one ``1 / rate`` seconds apart (a GCRA, or "virtual
scheduling" leaky bucket): a caller reserves the next free slot and sleeps until it. So however
many processes and threads send at once, requests leave at most ``rate`` per second, evenly
spaced, with no burst that the provider could count as one too many.

- :class:`RedisRateLimiter`: the slot schedule lives in one Redis key per account, advanced by
  a Lua script that reads Redis's own clock, so dynos with drifting clocks still agree.
- :class:`LocalRateLimiter`: the same in one process, for the embedded default (no Redis).

A reservation further away than ``max_wait`` is not made: the caller is told to retry later
instead of holding a worker thread for minutes.

*Connection slots* cap how many requests are in progress at once (Mailchimp answers 429 beyond 10
simultaneous connections per API key, counted across every process that uses the key):

- :class:`RedisConnectionSlots`: the holders are members of one sorted set, scored by when their
  lease ends, so a slot held by a killed process frees itself when its lease (the request's
  time-out and a margin) is over;
- :class:`LocalConnectionSlots`: a semaphore, for the embedded default.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    import redis  # imported by whoever made the client: the embedded default never needs it (about 40 ms)

log = structlog.get_logger("loyalty.rate_limit")


class RateLimited(Exception):
    """The next slot is more than ``max_wait`` seconds away."""

    def __init__(self, wait: float):
        self.wait = wait
        super().__init__(f"the next send slot is {wait:.1f} s away")


class RateLimiter(Protocol):
    def acquire(self) -> float:
        """Wait for a send slot; returns the seconds waited. Raises :class:`RateLimited`."""


# KEYS[1]: the account's key. ARGV: interval (µs), max wait (µs), slots wanted. Reserves that many
# consecutive slots and returns the wait in µs until the first, or -1 when it would exceed the max
# wait (nothing is reserved then).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local wait = slot - now
if wait > tonumber(ARGV[2]) then return -1 end
local following = slot + interval * tonumber(ARGV[3] or '1')
redis.call('SET', KEYS[1], string.format('%d', following), 'PX', math.floor((following - now) / 1000) + 1000)
return wait
"""

#: The slots one round trip to Redis reserves: as many as the rate spends in this long (at most
#: :data:`MOST_PERMITS`), so a process killed with some unused wastes at most that much of the
#: account's rate (it is never exceeded, only briefly under-used), and at a few messages a second
#: each send still costs its own round trip.
PERMIT_HORIZON = 0.02
MOST_PERMITS = 8


class RedisRateLimiter:
    """At most ``rate`` acquisitions a second across every process sharing ``key`` on Redis.

    One round trip reserves up to ``permits`` consecutive slots (by default what the rate spends in
    :data:`PERMIT_HORIZON`); the ones after the first are kept in the process, at their times on
    its monotonic clock (placed from the moment Redis's answer arrived, so never earlier than Redis
    scheduled them), and handed to the next callers. A kept slot more than one interval in the past
    is dropped, not used late: a late slot would bunch with the next process's.

    How many a round trip reserves follows the demand: halved (down to one) each time kept slots go
    stale unused, doubled (up to ``permits``) each time Redis answers with a wait (the schedule is
    busy: the rate is what holds the senders back). Below the rate, sends then take a slot each
    instead of reserving ``permits`` and dropping all but one, which pushed the shared schedule
    ahead by ``permits`` intervals a send and made the other senders wait for slots nobody used."""

    def __init__(self, client: redis.Redis, key: str, rate: float, *, max_wait: float = 30.0,
                 permits: int | None = None):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.client = client
        self.key = key
        self.interval_us = max(int(1_000_000 / rate), 1)
        self.max_wait_us = int(max_wait * 1_000_000)
        self.permits = permits or max(1, min(MOST_PERMITS, int(rate * PERMIT_HORIZON)))
        self._wanted = self.permits  # what the next round trip reserves (see the class's docstring)
        self._reserve = client.register_script(_RESERVE)
        self._kept: list[float] = []  # monotonic times of reserved slots not handed out yet, soonest last
        self._lock = threading.Lock()

    def acquire(self) -> float:
        slot = self._take_kept()
        if slot is None:
            slot = self._reserve_slots()
        wait = max(slot - time.monotonic(), 0.0)
        if wait > 0:
            time.sleep(wait)
        return wait

    def _take_kept(self) -> float | None:
        interval = self.interval_us / 1_000_000
        with self._lock:
            now = time.monotonic()
            stale = False
            while self._kept:
                slot = self._kept.pop()
                if slot >= now - interval:
                    return slot
                stale = True
            if stale:
                self._wanted = max(1, self._wanted // 2)
        return None

    def _reserve_slots(self) -> float:
        wanted = self._wanted
        wait_us = int(self._reserve(keys=[self.key], args=[self.interval_us, self.max_wait_us, wanted]))
        answered = time.monotonic()
        if wait_us < 0:
            raise RateLimited(self.max_wait_us / 1_000_000)
        first = answered + wait_us / 1_000_000
        interval = self.interval_us / 1_000_000
        with self._lock:
            if wait_us > 0:
                self._wanted = min(self.permits, self._wanted * 2)
            if wanted > 1:
                self._kept.extend(first + n * interval for n in range(wanted - 1, 0, -1))
                self._kept.sort(reverse=True)
        return first


class LocalRateLimiter:
    """The same schedule for the threads of one process (the embedded default has no Redis)."""

    def __init__(self, rate: float, *, max_wait: float = 30.0):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.max_wait = max_wait
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            wait = slot - now
            if wait > self.max_wait:
                raise RateLimited(wait)
            self._next = slot + self.interval
        if wait > 0:
            time.sleep(wait)
        return wait


def twilio_rate_key(account_sid: str) -> str:
    """One schedule per Twilio account, whatever deployment or queue namespace sends through it."""
    return f"loyalty:rate:twilio:{account_sid}"


class ConnectionSlots(Protocol):
    def held(self, lease: float) -> AbstractContextManager[None]:
        """A context in which the caller holds one slot (for at most ``lease`` seconds). Raises
        :class:`RateLimited` when none frees up within the slots' ``max_wait``."""


# KEYS[1]: the holders (a sorted set: token -> end of its lease, in µs of Redis's clock).
# ARGV: token, limit, lease (µs). Returns 1 when the token now holds a slot, 0 when all are taken.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[3]) / 1000) + 1000)
return 1
"""

_tokens = itertools.count()


class RedisConnectionSlots:
    """At most ``limit`` holders at once across every process sharing ``key`` on Redis."""

    POLL_FIRST, POLL_MOST = 0.005, 0.1  # seconds between attempts, doubling, with jitter

    def __init__(self, client: redis.Redis, key: str, limit: int, *, max_wait: float = 30.0):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.client = client
        self.key = key
        self.limit = limit
        self.max_wait = max_wait
        self._take = client.register_script(_TAKE_SLOT)

    @contextmanager
    def held(self, lease: float) -> Iterator[None]:
        from redis import RedisError  # already imported: self.client is a redis.Redis

        token = f"{os.getpid()}:{threading.get_ident()}:{next(_tokens)}"
        deadline = time.monotonic() + self.max_wait
        pause = self.POLL_FIRST
        while True:
            try:
                if self._take(keys=[self.key], args=[token, self.limit, int(lease * 1_000_000)]):
                    break
            except RedisError:  # Redis away: nothing was sent, the caller tries again later
                raise RateLimited(self.max_wait) from None
            if time.monotonic() + pause > deadline:
                raise RateLimited(self.max_wait)
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, self.POLL_MOST)
        try:
            yield
        finally:
            try:
                self.client.zrem(self.key, token)
            except RedisError as exc:  # the lease frees the slot anyway
                log.warning("slots.release_failed", key=self.key, error=type(exc).__name__)


class LocalConnectionSlots:
    """The same for the threads of one process (the embedded default has no Redis)."""

    def __init__(self, limit: int, *, max_wait: float = 30.0):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_wait = max_wait
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextmanager
    def held(self, lease: float) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.max_wait):
            raise RateLimited(self.max_wait)
        try:
            yield
        finally:
            self._semaphore.release()


def mailchimp_slots_key(api_key: str) -> str:
    """One set of slots per Mailchimp API key (Mailchimp counts connections per key); the key itself
    is not written to Redis, a digest of it is."""
    return f"loyalty:slots:mailchimp:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"
