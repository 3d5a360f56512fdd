"""Mailchimp's limit of simultaneous connections per API key, kept across processes through Redis.

Mailchimp answers 429 to the 11th request in progress with one key. Deliveries (2 processes x 8
threads per dyno) and the bulk sync share the key, so the requests wait for a *connection slot*
(``workers.rate_limit.RedisConnectionSlots``) instead of being refused and retried later.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
import redis

from core.settings import MailchimpTarget
from loyalty.standins.mailchimp_server import DEFAULT_API_KEY, MailchimpServer
from tests.conftest import REDIS_URL, free_port
from workers.channels.base import OutgoingMailchimp, RetryableFailure
from workers.channels.mailchimp import MailchimpChannel
from workers.rate_limit import LocalConnectionSlots, RateLimited, RedisConnectionSlots

LIMIT = 3


@pytest.fixture
def server():
    started = MailchimpServer(max_connections=LIMIT).start()
    started.faults.configure(latency=0.05)  # requests overlap: 12 threads at once
    yield started
    started.stop()


@pytest.fixture
def slots_key():
    client = redis.Redis.from_url(REDIS_URL)
    key = f"loyalty-test-slots-{secrets.token_hex(4)}"
    yield client, key
    client.delete(key)
    client.close()


def target_of(server) -> MailchimpTarget:
    return MailchimpTarget(api_key=DEFAULT_API_KEY, server_prefix=DEFAULT_API_KEY.rpartition("-")[2],
                           list_id=server.default_list_id, api_base_url=server.base_url, timeout=5,
                           max_connections=LIMIT)


def step(number: int) -> OutgoingMailchimp:
    return OutgoingMailchimp(occurrence_key=f"member_day:M{number}:2027-03-02", email=f"fan{number}@members.example",
                             tags=("member-day",), event=None, properties={}, merge_fields={})


def send_from_threads(target, slots_of_thread, *, threads: int = 12, each: int = 4) -> list[Exception]:
    """``threads`` threads, each with a channel of its own, send ``each`` steps; returns the failures."""
    failures: list[Exception] = []

    def work(thread: int) -> None:
        channel = MailchimpChannel(target, slots_of_thread(thread))
        try:
            for n in range(each):
                try:
                    channel.send(step(thread * each + n))
                except RetryableFailure as failure:
                    failures.append(failure)
        finally:
            channel.close()

    started = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(60)
    return failures


def test_two_processes_sharing_the_key_stay_under_mailchimps_connection_limit(server, slots_key):
    client, key = slots_key
    process_a = RedisConnectionSlots(redis.Redis.from_url(REDIS_URL), key, LIMIT)  # each process has its own
    process_b = RedisConnectionSlots(redis.Redis.from_url(REDIS_URL), key, LIMIT)  # client, as two dynos would
    failures = send_from_threads(target_of(server), lambda thread: process_a if thread % 2 else process_b)

    statuses = [r.status for r in server.requests]
    assert failures == []
    assert len(statuses) == 12 * 4 * 2 and set(statuses) <= {200, 204}  # an upsert and a tag call per step
    assert server.max_in_flight <= LIMIT
    assert len(server.members()) == 48
    assert client.zcard(key) == 0  # every slot handed back


def test_without_the_slots_the_same_load_is_refused_with_429(server):
    failures = send_from_threads(target_of(server), lambda thread: None)
    assert 429 in {r.status for r in server.requests}
    assert {f.reason for f in failures} == {"mailchimp_busy"}


def test_a_slot_held_by_a_killed_process_frees_itself_when_its_lease_ends(slots_key):
    client, key = slots_key
    slots = RedisConnectionSlots(client, key, 1, max_wait=0.2)
    dead = slots.held(lease=0.6)  # taken, never handed back: its process died (kept referenced, or
    dead.__enter__()  # collecting the generator would run its ``finally`` and hand it back)
    started = time.monotonic()
    with pytest.raises(RateLimited):
        slots.held(lease=1).__enter__()  # the only slot is the dead holder's
    patient = RedisConnectionSlots(client, key, 1, max_wait=5)
    with patient.held(lease=1):
        waited = time.monotonic() - started
    assert 0.4 < waited < 4  # it waited for the dead holder's lease, not forever


def test_no_free_slot_is_a_retry_later_and_nothing_reaches_mailchimp(server, slots_key):
    client, key = slots_key
    slots = RedisConnectionSlots(client, key, 1, max_wait=0.1)
    other = slots.held(lease=30)  # someone else holds the only slot
    other.__enter__()
    channel = MailchimpChannel(target_of(server), slots)
    try:
        with pytest.raises(RetryableFailure) as refused:
            channel.send(step(1))
    finally:
        channel.close()
    assert refused.value.reason == "mailchimp_busy"
    assert server.total_calls == 0


def test_redis_away_is_a_retry_later_not_a_crash():
    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(RateLimited):
        RedisConnectionSlots(unreachable, "loyalty-test-slots-away", 2).held(lease=1).__enter__()


def test_the_embedded_default_keeps_the_limit_between_its_threads(server):
    shared = LocalConnectionSlots(LIMIT)
    failures = send_from_threads(target_of(server), lambda thread: shared)
    assert failures == []
    assert {r.status for r in server.requests} <= {200, 204}
    assert server.max_in_flight <= LIMIT
