"""The shared pacer (``RedisRateLimiter``) reserving a few send slots per round trip to Redis: the
account's rate is never exceeded across processes, a process that dies with slots in hand wastes
at most those, and a kept slot gone stale is dropped rather than used late."""

from __future__ import annotations

import secrets
import threading
import time

import pytest
import redis

from tests.conftest import REDIS_URL
from workers.rate_limit import RedisRateLimiter


class CountingRedis(redis.Redis):
    """A client that counts the scripts it sends: the round trips of the pacer using it (the server's
    own command statistics count every client's, and the other test process runs scripts too)."""

    scripts = 0

    def execute_command(self, *args, **options):
        if args and str(args[0]).upper() in ("EVALSHA", "EVAL"):
            self.scripts += 1
        return super().execute_command(*args, **options)


@pytest.fixture
def client():
    client = CountingRedis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def key(client):
    key = f"loyalty:test:rate:{secrets.token_hex(4)}"
    yield key
    client.delete(key)


def _round_trips(client: CountingRedis) -> int:
    return client.scripts


def test_one_round_trip_hands_out_a_few_slots_and_another_process_starts_after_them(client, key):
    rate, permits = 50.0, 4  # slots 20 ms apart
    first = RedisRateLimiter(client, key, rate, permits=permits)
    before = _round_trips(client)
    started = time.monotonic()
    for _ in range(permits):
        first.acquire()
    assert _round_trips(client) - before == 1  # one for the four
    assert time.monotonic() - started >= (permits - 1) / rate  # each its own slot, 20 ms apart
    other = RedisRateLimiter(client, key, rate, permits=1)  # another process on the same account
    assert other.acquire() >= 0.005  # after the four reserved: the rate is shared, not doubled


def test_processes_sharing_the_account_never_exceed_its_rate(client, key):
    rate = 200.0
    limiters = [RedisRateLimiter(client, key, rate) for _ in range(2)]  # default: a few a round trip
    assert limiters[0].permits == 4
    times: list[float] = []
    lock = threading.Lock()

    def send(limiter):
        for _ in range(30):
            limiter.acquire()
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=send, args=(limiter,)) for limiter in limiters for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(times) == 180
    assert max(times) - min(times) >= (len(times) - 1) / rate * 0.97  # a slot each, 5 ms apart


def test_a_dead_process_wastes_at_most_its_kept_slots_and_a_stale_slot_is_not_used_late(client, key):
    rate = 50.0
    dead = RedisRateLimiter(client, key, rate, permits=4)
    dead.acquire()  # then killed with three slots in hand
    alive = RedisRateLimiter(client, key, rate, permits=4)
    started = time.monotonic()
    alive.acquire()
    assert 0.06 <= time.monotonic() - started <= 0.2  # waited out the three wasted slots, no more

    time.sleep(0.2)  # its three kept slots are now 10 intervals old
    before = _round_trips(client)
    assert alive.acquire() == 0
    assert _round_trips(client) - before >= 1  # reserved afresh instead of sending on a stale slot
