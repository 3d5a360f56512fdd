"""The SMS channel's HTTP client (``PooledHttpClient``, given to the real ``twilio`` SDK) sends what
the SDK's own ``TwilioHttpClient`` sends, gets the same answers and raises the same ``requests``
exceptions for each way a request can fail; one per process serves every thread and batch."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from core.settings import TwilioTarget
from loyalty.standins.twilio_server import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DEFAULT_MESSAGING_SERVICE_SID,
    TwilioServer,
)
from workers.channels.base import AmbiguousFailure, OutgoingSms, RetryableFailure
from workers.channels.sms import PooledHttpClient, TwilioApi, TwilioSmsChannel, form_body, never_reached
from workers.rate_limit import LocalRateLimiter

PHONE = "+33612345678"
CALLBACK = "https://club.example.com/twilio/status"


@pytest.fixture(scope="module")
def server():
    server = TwilioServer(unsubscribed=["+33600000001"]).start()
    yield server
    server.stop()


@pytest.fixture
def twilio(server):
    server.reset()
    server.faults.configure(hold_seconds=3)  # longer than the clients' 1 s
    yield server
    server.reset()


def sdk_client(http, base_url: str, token: str = DEFAULT_AUTH_TOKEN) -> Client:
    client = Client(DEFAULT_ACCOUNT_SID, token, http_client=http)
    client.edge = client.region = None
    client.api.base_url = base_url
    return client


def clients(base_url: str, token: str = DEFAULT_AUTH_TOKEN):
    """The SDK's own client and ours, both reading the environment once like the channel does."""
    sdk_http = TwilioHttpClient(timeout=1)
    sdk_http.session.trust_env = False
    ours = PooledHttpClient(base_url, 1)
    return [("sdk", sdk_client(sdk_http, base_url, token), sdk_http), ("ours", sdk_client(ours, base_url, token), ours)]


def create(client: Client, to: str = PHONE, body: str = "Joyeux anniversaire Zoë ! 250 points vous attendent 🎂"):
    return client.messages.create(to=to, messaging_service_sid=DEFAULT_MESSAGING_SERVICE_SID, body=body,
                                  status_callback=CALLBACK)


def test_the_request_on_the_wire_is_the_one_the_sdk_sends(twilio):
    recorded = {}
    for name, client, http in clients(twilio.url):
        try:
            message = create(client)
        finally:
            http.session.close()
        sent = twilio.accepted[-1]
        assert message.sid == sent.sid and message.status == "accepted" and message.to == PHONE
        recorded[name] = (sent.params, sent.body, sent.headers)
    assert recorded["ours"] == recorded["sdk"]  # every form field and header, the non-ASCII body as sent
    params, body, headers = recorded["ours"]
    assert body == "Joyeux anniversaire Zoë ! 250 points vous attendent 🎂"
    assert params["StatusCallback"] == [CALLBACK]
    assert headers["user-agent"].startswith("twilio-python/") and headers["x-twilio-client"].startswith("python-")


def test_refusals_are_the_sdk_s_exceptions_with_the_same_code(twilio):
    for to, status, code in (("+33600000001", 400, 21610), ("12345", 400, 21211)):
        raised = {}
        for name, client, http in clients(twilio.url):
            try:
                with pytest.raises(TwilioRestException) as caught:
                    create(client, to=to)
            finally:
                http.session.close()
            raised[name] = (caught.value.status, caught.value.code, caught.value.msg)
        assert raised["ours"] == raised["sdk"]
        assert raised["ours"][:2] == (status, code)
    raised = {}
    for name, client, http in clients(twilio.url, token="not-the-token"):
        try:
            with pytest.raises(TwilioRestException) as caught:
                create(client)
        finally:
            http.session.close()
        raised[name] = (caught.value.status, caught.value.code)
    assert raised["ours"] == raised["sdk"] == (401, 20003)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure(client: Client) -> BaseException:
    with pytest.raises(requests.exceptions.RequestException) as caught:
        create(client)
    return caught.value


def test_each_way_of_failing_raises_what_the_sdk_s_client_raises(twilio):
    """No server at all (the request never left), no answer in time, the connection dropped after the
    message was taken: the same exception class, and the same verdict on whether it could have left."""
    seen = {}
    for name, client, http in clients(f"http://127.0.0.1:{closed_port()}"):
        try:
            exc = failure(client)
        finally:
            http.session.close()
        seen[name] = (type(exc), never_reached(exc) if isinstance(exc, requests.exceptions.ConnectionError) else None)
    assert seen["ours"] == seen["sdk"] == (requests.exceptions.ConnectionError, True)

    for fault, expected in (("timeout", requests.exceptions.ReadTimeout), ("drop", requests.exceptions.ConnectionError)):
        seen = {}
        for name, client, http in clients(twilio.url):
            twilio.faults.queue(fault)
            try:
                exc = failure(client)
            finally:
                http.session.close()
            reached = never_reached(exc) if isinstance(exc, requests.exceptions.ConnectionError) else None
            seen[name] = (type(exc), reached)
        assert seen["ours"] == seen["sdk"]
        assert seen["ours"][0] is expected and seen["ours"][1] in (None, False)  # it may have left: never "not sent"
    twilio.wait_idle()


def test_the_channel_sorts_them_as_before(twilio):
    target = TwilioTarget(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_MESSAGING_SERVICE_SID, twilio.url, 1000, 1)
    channel = TwilioSmsChannel(target, LocalRateLimiter(1000), status_callback_url=CALLBACK)
    sms = OutgoingSms("k", PHONE, "Hi")
    try:
        twilio.faults.queue("timeout")
        with pytest.raises(AmbiguousFailure) as unknown:
            channel.send(sms)
        assert unknown.value.reason == "sms_no_answer"
        twilio.faults.queue("drop")
        with pytest.raises(AmbiguousFailure) as lost:
            channel.send(sms)
        assert lost.value.reason == "sms_connection_lost"
        assert channel.send(sms).startswith("SM")  # the pool opened a new connection for the next one
    finally:
        channel.close()
    unreachable = TwilioSmsChannel(TwilioTarget(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_MESSAGING_SERVICE_SID,
                                                f"http://127.0.0.1:{closed_port()}", 1000, 1), LocalRateLimiter(1000))
    try:
        with pytest.raises(RetryableFailure) as retried:
            unreachable.send(sms)
        assert retried.value.reason == "sms_provider_unreachable"
    finally:
        unreachable.close()
    twilio.wait_idle()


def test_one_client_serves_every_thread_and_batch(twilio):
    target = TwilioTarget(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, DEFAULT_MESSAGING_SERVICE_SID, twilio.url, 10_000, 5)
    api = TwilioApi(target)
    limiter = LocalRateLimiter(10_000)
    sids: list[str] = []
    lock = threading.Lock()

    def batches(thread: int) -> None:
        for batch in range(5):  # a channel per batch, as deliver() makes them
            channel = TwilioSmsChannel(target, limiter, api=api)
            try:
                for n in range(10):
                    sid = channel.send(OutgoingSms(f"{thread}-{batch}-{n}", f"+337{thread:02d}{batch:02d}{n:04d}", "Hi"))
                    with lock:
                        sids.append(sid)
            finally:
                channel.close()  # leaves the shared client's connections open

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(batches, range(8)))
    finally:
        api.close()
    assert len(sids) == len(set(sids)) == 400
    assert {m.sid for m in twilio.accepted} == set(sids)
    assert sorted(m.to for m in twilio.accepted) == sorted(
        f"+337{t:02d}{b:02d}{n:04d}" for t in range(8) for b in range(5) for n in range(10))


values = st.one_of(st.text(), st.integers(), st.none(), st.lists(st.one_of(st.text(), st.integers(), st.none()), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1), values, max_size=6))
def test_the_form_is_the_one_requests_encodes(data):
    prepared = requests.Request("POST", "https://api.twilio.com/x", data=data).prepare()
    assert form_body(data) == (prepared.body or "")  # requests sends no body for an empty form


def local_port_of_kept_connection(http: PooledHttpClient, url: str) -> int:
    pool, _ = http._target(url)
    [conn] = [c for c in pool.pool.queue if c is not None]  # one thread: one connection kept between requests
    return conn.sock.getsockname()[1]


def test_a_kept_connection_is_reused_and_one_idle_too_long_is_opened_again(twilio, monkeypatch):
    """The stand-in (uvicorn) closes a connection idle for 5 s; the client never reuses one idle for
    longer than IDLE_LIMIT, so it never sends on a connection the server may be closing."""
    import workers.channels.sms as sms

    monkeypatch.setattr(sms, "IDLE_LIMIT", 0.3)
    http = PooledHttpClient(twilio.url, 1)
    client = sdk_client(http, twilio.url)
    url = f"{twilio.url}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    try:
        create(client)
        first = local_port_of_kept_connection(http, url)
        create(client)
        assert local_port_of_kept_connection(http, url) == first  # reused at once
        time.sleep(0.5)
        create(client)
        assert local_port_of_kept_connection(http, url) != first  # idle too long: a new connection
    finally:
        http.close()
    assert len(twilio.accepted) == 3
