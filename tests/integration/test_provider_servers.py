"""The fake Twilio and Mailchimp servers, driven by the REAL SDKs, behave like the providers.

How the SDKs are pointed at the local servers (the product does the same to honour its base URLs):

* twilio (9.x): ``client = Client(sid, token, http_client=TwilioHttpClient(timeout=10))`` then
  ``client.api.base_url = "http://127.0.0.1:<port>"``. Every URL is built from the domain's
  ``base_url`` at request time (``twilio.base.domain.Domain.absolute_url``). Keep ``edge``/``region``
  (and the ``TWILIO_EDGE``/``TWILIO_REGION`` variables) unset: they rewrite the host name. Always give
  ``TwilioHttpClient`` a timeout, its default is none. Alternative for all Twilio domains at once:
  ``Client(sid, token, http_client=BaseUrlHttpClient(base_url, timeout=10))``.
* mailchimp-marketing (3.0.80): ``client = mailchimp_marketing.Client()``,
  ``client.set_config({"api_key": key, "server": "us21", "timeout": 10})`` then
  ``client.api_client.host = "http://127.0.0.1:<port>/3.0"`` (``set_config`` never resets ``host``;
  the SDK only replaces the word "server" in it). Errors come as ``ApiClientError`` whose ``text``
  is the problem+json body as a string, or the ``requests`` exception for network failures.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

import httpx
import mailchimp_marketing
import pytest
import requests
from mailchimp_marketing.api_client import ApiClientError
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import Response
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client as TwilioClient

from loyalty.standins.fault import Faults
from loyalty.standins.http_server import BackgroundServer
from loyalty.standins.mailchimp_server import (
    MailchimpServer,
    read_batch_results,
    subscriber_hash,
)
from loyalty.standins.twilio_server import (
    DEFAULT_MESSAGING_SERVICE_SID,
    DEFAULT_SENDER,
    BaseUrlHttpClient,
    TwilioServer,
    sms_segments,
    twilio_signature,
)

MS = DEFAULT_MESSAGING_SERVICE_SID
MEMBER = "+14155550100"
OPTED_OUT = "+14155550199"
LANDLINE = "+14155550188"
OWN_NUMBER = "+15005550006"


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twilio_server():
    server = TwilioServer(unsubscribed=[OPTED_OUT], landlines=[LANDLINE], from_numbers=[OWN_NUMBER]).start()
    yield server
    server.stop()


@pytest.fixture
def twilio(twilio_server):
    """The module's fake Twilio, with nothing recorded and its defaults back."""
    twilio_server.reset()
    twilio_server.set_rate_limit(None)
    twilio_server.messaging_service_defers_errors = False
    twilio_server.unsubscribed = {OPTED_OUT}
    yield twilio_server
    twilio_server.reset()


@pytest.fixture
def twilio_client(twilio):
    client = TwilioClient(twilio.account_sid, twilio.auth_token, http_client=TwilioHttpClient(timeout=5))
    client.api.base_url = twilio.url  # <- the whole trick
    yield client
    client.http_client.session.close()


@pytest.fixture(scope="module")
def mailchimp_server():
    server = MailchimpServer(unsubscribed=["left@example.com"], cleaned=["bounced@example.com"]).start()
    yield server
    server.stop()


@pytest.fixture
def mailchimp(mailchimp_server):
    mailchimp_server.reset()
    yield mailchimp_server
    mailchimp_server.reset()


@pytest.fixture
def mc(mailchimp):
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": mailchimp.api_key, "server": "us21", "timeout": 5})
    client.api_client.host = mailchimp.base_url  # <- the whole trick
    return client


def problem(err: ApiClientError) -> dict:
    """The problem+json body of a Mailchimp error (the SDK leaves it as a string)."""
    assert isinstance(err.text, str), err.text
    return json.loads(err.text)


# -- Twilio: success -------------------------------------------------------------------------------


def test_twilio_message_via_messaging_service_is_accepted_like_twilio(twilio, twilio_client):
    message = twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="Your points expire soon")

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "accepted"
    assert message.messaging_service_sid == MS
    assert message.from_ is None and message.num_segments == "0"  # no sender assigned yet
    assert message.to == MEMBER and message.body == "Your points expire soon"
    assert message.direction == "outbound-api" and message.api_version == "2010-04-01"
    assert message.date_created is not None and message.date_created.tzinfo is not None
    assert message.uri == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages/{message.sid}.json"

    [sent] = twilio.accepted
    assert (sent.sid, sent.to, sent.body, sent.messaging_service_sid) == (message.sid, MEMBER, message.body, MS)
    assert sent.num_segments == 1 and sent.encoding == "GSM-7"
    assert twilio.calls["messages.create"] == 1

    twilio.set_status(message.sid, "delivered")
    fetched = twilio_client.messages(message.sid).fetch()
    assert fetched.status == "delivered"
    assert fetched.from_ == DEFAULT_SENDER and fetched.num_segments == "1"
    assert fetched.price.startswith("-") and fetched.date_sent is not None
    assert twilio.calls["messages.fetch"] == 1


def test_twilio_message_from_a_number_is_queued_with_its_segments(twilio, twilio_client):
    body = "é" * 161  # GSM-7, 161 septets: two segments of 153
    message = twilio_client.messages.create(to=MEMBER, from_=OWN_NUMBER, body=body)
    assert message.status == "queued"
    assert message.from_ == OWN_NUMBER
    assert message.num_segments == "2"


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 2),
        ("ç" * 70, "UCS-2", 1),  # ç is not GSM-7 (Ç is): the whole body is UCS-2
        ("ç" * 71, "UCS-2", 2),
        ("ç" * 134, "UCS-2", 2),
        ("ç" * 135, "UCS-2", 3),
        ("🎂" * 35, "UCS-2", 1),  # an emoji is two UTF-16 code units
        ("🎂" * 36, "UCS-2", 2),
    ],
)
def test_sms_segments(body, encoding, segments):
    assert sms_segments(body) == (encoding, segments)


def test_twilio_records_params_and_idempotency_headers(twilio, twilio_client):
    twilio_client.messages.create(
        to=MEMBER,
        messaging_service_sid=MS,
        body="hi",
        status_callback="https://club.example.com/twilio/status",
        attempt=2,
    )
    # The SDK's low-level request lets us add a header, e.g. an idempotency key of ours.
    response = twilio_client.request(
        "POST",
        twilio.messages_url,
        data={"To": MEMBER, "MessagingServiceSid": MS, "Body": "again"},
        headers={"Idempotency-Key": "occurrence-42"},
    )
    assert response.status_code == 201

    first, second = twilio.accepted
    assert first.status_callback == "https://club.example.com/twilio/status"
    assert first.param("Attempt") == "2"
    assert "authorization" not in first.headers and first.headers["user-agent"].startswith("twilio-python/")
    assert second.idempotency_key == "occurrence-42"
    assert len(twilio.accepted_to(MEMBER)) == 2


def test_twilio_base_url_http_client_alternative(twilio):
    client = TwilioClient(twilio.account_sid, twilio.auth_token, http_client=BaseUrlHttpClient(twilio.url, timeout=5))
    try:
        message = client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hello")
        assert [m.sid for m in client.messages.list(to=MEMBER)] == [message.sid]
    finally:
        client.http_client.session.close()


# -- Twilio: errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        ({"to": ""}, 400, 21604, "A 'To' phone number is required."),
        ({"to": "12345"}, 400, 21211, "The 'To' number 12345 is not a valid phone number."),
        ({"to": "+1 415 555 0100"}, 400, 21211, "The 'To' number +1 415 555 0100 is not a valid phone number."),
        ({"body": None}, 400, 21602, "Message body is required."),
        ({"body": "x" * 1601}, 400, 21617, "The concatenated message body exceeds the 1600 character limit."),
        ({"to": OPTED_OUT}, 400, 21610, "Attempt to send to unsubscribed recipient"),
        ({"to": LANDLINE}, 400, 21614, "'To' number is not a valid mobile number"),
        ({"messaging_service_sid": "MG" + "0" * 32}, 400, 21701, "The Messaging Service does not exist"),
        ({"messaging_service_sid": "MG123"}, 400, 21705, "The Messaging Service Sid MG123 is invalid."),
        ({"messaging_service_sid": None}, 400, 21603, "A 'From' phone number is required."),
        ({"messaging_service_sid": None, "from_": "+15551234567"}, 400, 21606, "is not a valid, SMS-capable"),
        ({"status_callback": "ftp://example.com/x"}, 400, 21609, "is not a valid URL"),
    ],
)
def test_twilio_refusals(twilio, twilio_client, kwargs, status, code, message):
    args = {"to": MEMBER, "messaging_service_sid": MS, "body": "Hello", **kwargs}
    args = {k: v for k, v in args.items() if v is not None}
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(**args)
    assert caught.value.status == status
    assert caught.value.code == code
    assert message in caught.value.msg
    assert caught.value.msg.startswith("Unable to create record: ")
    assert twilio.accepted == []


def test_twilio_error_body_and_auth(twilio):
    bad = TwilioClient(twilio.account_sid, "not-the-token", http_client=TwilioHttpClient(timeout=5))
    bad.api.base_url = twilio.url
    try:
        with pytest.raises(TwilioRestException) as caught:
            bad.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")
    finally:
        bad.http_client.session.close()
    assert (caught.value.status, caught.value.code) == (401, 20003)

    raw = httpx.post(
        twilio.messages_url,
        data={"To": "nope", "Body": "x", "MessagingServiceSid": MS},
        auth=(twilio.account_sid, twilio.auth_token),
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "code": 21211,
        "message": "The 'To' number nope is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }
    unauthenticated = httpx.post(twilio.messages_url, data={"To": MEMBER})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["code"] == 20003
    assert unauthenticated.headers["www-authenticate"].startswith("Basic")
    other_account = httpx.post(
        twilio.messages_url.replace(twilio.account_sid, "AC" + "1" * 32),
        data={"To": MEMBER},
        auth=(twilio.account_sid, twilio.auth_token),
    )
    assert (other_account.status_code, other_account.json()["code"]) == (404, 20404)
    assert twilio.accepted == []


def test_twilio_unknown_message_is_404(twilio, twilio_client):
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages("SM" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_twilio_messaging_service_can_defer_opt_out_errors(twilio, twilio_client):
    twilio.messaging_service_defers_errors = True
    message = twilio_client.messages.create(to=OPTED_OUT, messaging_service_sid=MS, body="hi")
    assert message.status == "accepted"  # the real API accepts, then the message fails
    fetched = twilio_client.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == ("failed", 21610)
    payload = twilio.status_callback_payload(message.sid)
    assert payload["MessageStatus"] == "failed" and payload["ErrorCode"] == "21610"


def test_twilio_rate_limit_is_a_token_bucket(twilio, twilio_client):
    twilio.set_rate_limit(1, burst=3)  # 3 at once, then one a second
    outcomes = []
    for _ in range(6):
        try:
            twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="paced?")
            outcomes.append(201)
        except TwilioRestException as exc:
            assert exc.code == 20429 and "Too Many Requests" in exc.msg
            outcomes.append(exc.status)
    assert outcomes == [201, 201, 201, 429, 429, 429]
    time.sleep(1.05)  # one token back
    twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="paced")
    assert len(twilio.accepted) == 4


def test_twilio_opt_out_at_run_time(twilio, twilio_client):
    twilio.opt_out(MEMBER)
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")
    assert caught.value.code == 21610
    twilio.opt_in(MEMBER)
    twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")


# -- Twilio: faults --------------------------------------------------------------------------------


def test_twilio_fault_500_and_429_are_not_processed(twilio, twilio_client):
    twilio.faults.queue("error", "throttle", "error:503")
    for status, code in ((500, 20500), (429, 20429), (503, 20503)):
        with pytest.raises(TwilioRestException) as caught:
            twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")
        assert (caught.value.status, caught.value.code) == (status, code)
    assert twilio.accepted == []
    twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")
    assert len(twilio.accepted) == 1
    assert [r.fault for r in twilio.requests] == ["error", "throttle", "error", "ok"]


def test_twilio_dropped_connection_after_accepting(twilio, twilio_client):
    twilio.faults.queue("drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="did it go?")
    [sent] = twilio.accepted  # it went
    assert sent.body == "did it go?"
    [record] = twilio.requests
    assert (record.status, record.fault, record.app_status) == (None, "drop", 201)
    # The connection pool recovers: the next call works.
    twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="next")


def test_twilio_timeout_and_latency(twilio):
    client = twilio.client(timeout=0.3)
    try:
        twilio.faults.configure(hold_seconds=5)
        twilio.faults.queue("timeout")
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            client.messages.create(to=MEMBER, messaging_service_sid=MS, body="slow")
        assert time.monotonic() - started < 2
        assert twilio.accepted == []  # held, never processed

        twilio.faults.latency = 0.2
        started = time.monotonic()
        client.messages.create(to=MEMBER, messaging_service_sid=MS, body="late")
        assert time.monotonic() - started >= 0.2
    finally:
        client.http_client.session.close()
    assert twilio.wait_idle(2)  # the held request ends when the client hangs up
    assert twilio.requests[0].fault == "timeout"


def test_seeded_faults_are_reproducible(twilio, twilio_client):
    def run() -> list[str]:
        twilio.reset()
        twilio.faults.configure(seed=99, error_rate=0.25, throttle_rate=0.1, drop_rate=0.15)
        outcomes = []
        for _ in range(20):
            try:
                twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="chaos")
                outcomes.append("201")
            except TwilioRestException as exc:
                outcomes.append(str(exc.status))
            except requests.exceptions.ConnectionError:
                outcomes.append("dropped")
        return outcomes

    first, second = run(), run()
    assert first == second
    assert {"201", "500", "429", "dropped"} <= set(first)
    assert len(twilio.accepted) == first.count("201") + first.count("dropped")

    a, b = Faults(seed=5, error_rate=0.5, latency=(0.0, 1.0)), Faults(seed=5, error_rate=0.5, latency=(0.0, 1.0))
    assert [a.decide("POST", "/x") for _ in range(50)] == [b.decide("POST", "/x") for _ in range(50)]


def test_faults_are_configurable_over_http(twilio, twilio_client):
    admin = f"{twilio.url}/__admin/faults"
    settings = httpx.post(admin, json={"queue": ["error:503", "ok@0.1"], "only": r"POST .*/Messages\.json$"}).json()
    assert settings["queued"] == ["error:503", "ok@0.1"]
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")
    assert caught.value.status == 503
    message = twilio_client.messages.create(to=MEMBER, messaging_service_sid=MS, body="hi")
    assert httpx.get(admin).json()["applied"] == {"error": 1}
    state = httpx.get(f"{twilio.url}/__admin/state").json()
    assert [m["sid"] for m in state["accepted"]] == [message.sid]
    with pytest.raises(ValueError, match="add up"):
        twilio.faults.configure(error_rate=0.7, drop_rate=0.7)
    assert httpx.post(admin, json={"drop_rate": 2}).status_code == 400
    assert httpx.post(f"{twilio.url}/__admin/reset").json() == {"reset": True}
    assert twilio.accepted == [] and twilio.faults.to_dict()["only"] is None


# -- Twilio: signatures and status callbacks -------------------------------------------------------


def test_twilio_signature_matches_the_sdk_validator():
    token = "12345678901234567890123456789012"
    url = "https://club.example.com:8443/twilio/status?campaign=birthday"
    params = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+14155550100", "Body": "ça va €"}
    validator = RequestValidator(token)
    signature = twilio_signature(token, url, params)
    assert signature == validator.compute_signature(url, params)
    assert validator.validate(url, params, signature)
    assert not validator.validate(url, {**params, "MessageStatus": "failed"}, signature)

    multi = ImmutableMultiDict([("MediaUrl", "https://b"), ("MediaUrl", "https://a"), ("To", "+1")])
    assert twilio_signature(token, url, multi) == validator.compute_signature(url, multi)
    assert twilio_signature(token, url, list(multi.multi_items())) == validator.compute_signature(url, multi)
    assert twilio_signature(token, url) == validator.compute_signature(url, {})


def test_twilio_status_callback_is_posted_and_signed(twilio, twilio_client):
    received: list[tuple[str, dict, str, bool]] = []
    validator = RequestValidator(twilio.auth_token)

    async def app(scope, receive, send):
        # (Starlette's request.form() needs python-multipart, which is not installed: parse by hand.)
        request = Request(scope, receive)
        form = ImmutableMultiDict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        signature = request.headers.get("x-twilio-signature", "")
        received.append(
            (str(request.url), dict(form), signature, validator.validate(str(request.url), form, signature))
        )
        await Response(status_code=204)(scope, receive, send)

    with BackgroundServer(app) as web:
        callback = f"{web.url}/twilio/status"
        message = twilio_client.messages.create(
            to=MEMBER, messaging_service_sid=MS, body="hi", status_callback=callback
        )
        response = twilio.send_status_callback(message.sid, "delivered")
    assert response.status_code == 204
    [(url, form, _signature, valid)] = received
    assert url == callback and valid
    assert form["MessageSid"] == message.sid and form["MessageStatus"] == "delivered"
    assert form["MessagingServiceSid"] == MS and form["AccountSid"] == twilio.account_sid
    assert twilio.message(message.sid).status == "delivered"


# -- Mailchimp: members ----------------------------------------------------------------------------


def test_mailchimp_ping_and_auth(mailchimp, mc):
    assert mc.ping.get() == {"health_status": "Everything's Chimpy!"}
    # Basic auth: any user name, the API key as the password (what the SDK sends).
    assert httpx.get(f"{mailchimp.base_url}/ping", auth=("anything", mailchimp.api_key)).status_code == 200

    wrong = mailchimp.client(api_key="0" * 32 + "-us21")
    with pytest.raises(ApiClientError) as caught:
        wrong.ping.get()
    assert caught.value.status_code == 401
    body = problem(caught.value)
    assert body["title"] == "API Key Invalid" and body["status"] == 401
    assert body["type"].startswith("https://mailchimp.com/developer/")
    assert body["detail"] and body["instance"]

    missing = httpx.get(f"{mailchimp.base_url}/ping")
    assert missing.status_code == 401 and missing.json()["title"] == "API Key Missing"
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert (
        httpx.get(f"{mailchimp.base_url}/nowhere", auth=("u", mailchimp.api_key)).json()["title"]
        == "Resource Not Found"
    )


def test_mailchimp_upsert_member(mailchimp, mc):
    list_id = mailchimp.default_list_id
    email = "Ann.Lee@Example.com"
    created = mc.lists.set_list_member(
        list_id,
        subscriber_hash(email),
        {
            "email_address": email,
            "status_if_new": "subscribed",
            "merge_fields": {"FNAME": "Ann", "TIER": "silver", "POINTS": 120},
        },
    )
    assert created["id"] == subscriber_hash(email) and created["status"] == "subscribed"
    assert created["merge_fields"]["TIER"] == "silver" and created["list_id"] == list_id

    updated = mc.lists.set_list_member(
        list_id,
        subscriber_hash(email),
        {
            "email_address": email,
            "status_if_new": "subscribed",
            "merge_fields": {"TIER": "gold", "EXPPOINTS": 40, "EXPDATE": "2025-03-31", "BIRTHDAY": "02/29"},
        },
    )
    assert updated["merge_fields"]["FNAME"] == "Ann" and updated["merge_fields"]["TIER"] == "gold"
    assert mc.lists.get_list_member(list_id, subscriber_hash(email))["merge_fields"]["EXPDATE"] == "2025-03-31"

    member = mailchimp.member(email)
    assert member.status == "subscribed" and member.merge_fields["POINTS"] == 120
    assert mailchimp.calls["lists.set_list_member"] == 2 and mailchimp.calls["lists.get_list_member"] == 1


def test_mailchimp_status_if_new_leaves_an_unsubscribed_member_alone(mailchimp, mc):
    list_id = mailchimp.default_list_id
    result = mc.lists.set_list_member(
        list_id,
        subscriber_hash("left@example.com"),
        {"email_address": "left@example.com", "status_if_new": "subscribed", "merge_fields": {"POINTS": 5}},
    )
    assert result["status"] == "unsubscribed" and result["merge_fields"]["POINTS"] == 5


@pytest.mark.parametrize(
    ("email", "setup", "title", "detail"),
    [
        (
            "left@example.com",
            None,
            "Member In Compliance State",
            "is in a compliance state due to unsubscribe, bounce, or compliance review",
        ),
        ("bounced@example.com", None, "Member In Compliance State", "cannot be subscribed"),
        ("abuse@example.com", "compliance", "Member In Compliance State", "abuse@example.com is in a compliance state"),
        (
            "gdpr@example.com",
            "forget",
            "Forgotten Email Not Subscribed",
            "was permanently deleted and cannot be re-imported",
        ),
    ],
)
def test_mailchimp_compliance_states(mailchimp, mc, email, setup, title, detail):
    if setup == "compliance":
        mailchimp.mark_compliance(email)
    elif setup == "forget":
        mailchimp.forget(email)
    with pytest.raises(ApiClientError) as caught:
        mc.lists.set_list_member(
            mailchimp.default_list_id,
            subscriber_hash(email),
            {"email_address": email, "status": "subscribed", "status_if_new": "subscribed"},
        )
    assert caught.value.status_code == 400
    body = problem(caught.value)
    assert body["title"] == title and detail in body["detail"] and email in body["detail"]


def test_mailchimp_invalid_merge_fields(mailchimp, mc):
    with pytest.raises(ApiClientError) as caught:
        mc.lists.set_list_member(
            mailchimp.default_list_id,
            subscriber_hash("x@example.com"),
            {
                "email_address": "x@example.com",
                "status_if_new": "subscribed",
                "merge_fields": {"POINTS": "lots", "BIRTHDAY": "1990-02-30", "NOPE": "?"},
            },
        )
    body = problem(caught.value)
    assert (body["status"], body["title"], body["detail"]) == (
        400,
        "Invalid Resource",
        "Your merge fields were invalid.",
    )
    assert sorted(e["field"] for e in body["errors"]) == ["BIRTHDAY", "NOPE", "POINTS"]
    assert mailchimp.member("x@example.com") is None


def test_mailchimp_subscriber_hash_must_match_the_email(mailchimp, mc):
    with pytest.raises(ApiClientError) as caught:
        mc.lists.set_list_member(  # hashing without lower-casing: a classic bug
            mailchimp.default_list_id,
            "d41d8cd98f00b204e9800998ecf8427e",
            {"email_address": "Mixed@Example.com", "status_if_new": "subscribed"},
        )
    assert problem(caught.value)["title"] == "Invalid Resource"
    # The SDK documents that the email itself is accepted in place of the hash.
    assert mc.lists.set_list_member(
        mailchimp.default_list_id,
        "mixed@example.com",
        {"email_address": "Mixed@Example.com", "status_if_new": "subscribed"},
    )["id"] == subscriber_hash("mixed@example.com")
    with pytest.raises(ApiClientError) as caught:
        mc.lists.set_list_member(
            "no-such-list", "mixed@example.com", {"email_address": "mixed@example.com", "status_if_new": "subscribed"}
        )
    assert (caught.value.status_code, problem(caught.value)["title"]) == (404, "Resource Not Found")


def test_mailchimp_tags_and_events(mailchimp, mc):
    list_id = mailchimp.default_list_id
    email = "bob@example.com"
    key = subscriber_hash(email)
    mailchimp.add_member(email, tags=["newsletter"])

    answer = mc.lists.update_list_member_tags(
        list_id,
        key,
        {"tags": [{"name": "birthday-2025", "status": "active"}, {"name": "newsletter", "status": "inactive"}]},
    )
    assert isinstance(answer, requests.Response) and answer.status_code == 204  # the SDK returns the raw response
    assert mailchimp.member(email).tags == ["birthday-2025"]

    answer = mc.lists.create_list_member_event(
        list_id, key, {"name": "points_expiring", "properties": {"points": "120", "expires_on": "2025-03-31"}}
    )
    assert answer.status_code == 204
    [event] = mailchimp.events_for(email)
    assert (event.name, event.properties) == ("points_expiring", {"points": "120", "expires_on": "2025-03-31"})

    for name in ("x", "has space", "a" * 31, "émoji"):
        with pytest.raises(ApiClientError) as caught:
            mc.lists.create_list_member_event(list_id, key, {"name": name})
        assert problem(caught.value)["title"] == "Invalid Resource"
    with pytest.raises(ApiClientError) as caught:
        mc.lists.create_list_member_event(list_id, key, {"name": "ok_name", "properties": {"points": 120}})
    assert problem(caught.value)["errors"][0]["field"] == "properties.points"
    with pytest.raises(ApiClientError) as caught:
        mc.lists.update_list_member_tags(
            list_id, subscriber_hash("ghost@example.com"), {"tags": [{"name": "t", "status": "active"}]}
        )
    assert caught.value.status_code == 404
    assert len(mailchimp.events) == 1


# -- Mailchimp: bulk -------------------------------------------------------------------------------


def test_mailchimp_batch_subscribe_10000_members_in_20_calls(mailchimp, mc):
    list_id = mailchimp.default_list_id
    people = [
        {
            "email_address": f"member{i}@example.com",
            "status": "subscribed",
            "merge_fields": {"POINTS": i, "TIER": "bronze"},
        }
        for i in range(10_000)
    ]
    created = 0
    for start in range(0, len(people), 500):
        result = mc.lists.batch_list_members(list_id, {"members": people[start : start + 500], "update_existing": True})
        created += result["total_created"]
        assert result["error_count"] == 0 and result["total_updated"] == 0
    assert created == 10_000
    assert len(mailchimp.members()) == 10_000 + 2  # plus the two seeded ones
    assert mailchimp.member("member9999@example.com").merge_fields["POINTS"] == 9999
    assert mailchimp.total_calls == 20 and mailchimp.calls["lists.batch_list_members"] == 20


def test_mailchimp_batch_subscribe_reports_per_member_errors(mailchimp, mc):
    list_id = mailchimp.default_list_id
    mailchimp.add_member("known@example.com", merge_fields={"TIER": "silver"})
    members = [
        {"email_address": "new@example.com", "status": "subscribed"},
        {"email_address": "known@example.com", "status": "subscribed", "merge_fields": {"TIER": "gold"}},
        {"email_address": "left@example.com", "status": "subscribed"},
        {"email_address": "not-an-email", "status": "subscribed"},
        {"email_address": "bad@example.com", "status": "subscribed", "merge_fields": {"POINTS": "many"}},
    ]
    result = mc.lists.batch_list_members(list_id, {"members": members, "update_existing": True})
    assert (result["total_created"], result["total_updated"], result["error_count"]) == (1, 1, 3)
    assert [m["email_address"] for m in result["new_members"]] == ["new@example.com"]
    assert [m["email_address"] for m in result["updated_members"]] == ["known@example.com"]
    errors = {e["email_address"]: e for e in result["errors"]}
    assert "compliance state" in errors["left@example.com"]["error"]
    assert errors["bad@example.com"]["field"] == "POINTS"
    assert all(e["error_code"] == "ERROR_GENERIC" for e in result["errors"])
    assert mailchimp.member("known@example.com").merge_fields["TIER"] == "gold"

    again = mc.lists.batch_list_members(list_id, {"members": members[:2], "update_existing": False})
    assert again["error_count"] == 2
    assert {e["error_code"] for e in again["errors"]} == {"ERROR_CONTACT_EXISTS"}

    with pytest.raises(ApiClientError) as caught:
        mc.lists.batch_list_members(list_id, {"members": [members[0]] * 501})
    assert problem(caught.value)["title"] == "Invalid Resource"


def test_mailchimp_batches_endpoint(mailchimp, mc):
    list_id = mailchimp.default_list_id
    operations = [
        {
            "method": "PUT",
            "path": f"/lists/{list_id}/members/{subscriber_hash(f'b{i}@example.com')}",
            "operation_id": f"upsert-{i}",
            "body": json.dumps(
                {"email_address": f"b{i}@example.com", "status_if_new": "subscribed", "merge_fields": {"POINTS": i}}
            ),
        }
        for i in range(3)
    ]
    operations.append(
        {
            "method": "POST",
            "path": f"/lists/{list_id}/members/{subscriber_hash('b0@example.com')}/events",
            "operation_id": "event-0",
            "body": json.dumps({"name": "tier_upgrade", "properties": {"tier": "gold"}}),
        }
    )
    operations.append(
        {
            "method": "PUT",
            "path": f"/lists/{list_id}/members/{subscriber_hash('left@example.com')}",
            "operation_id": "resubscribe",
            "body": json.dumps({"email_address": "left@example.com", "status": "subscribed"}),
        }
    )
    started = mc.batches.start({"operations": operations})
    assert started["status"] == "pending" and started["total_operations"] == 5
    assert mailchimp.member("b0@example.com") is None  # not run yet

    status = mc.batches.status(started["id"])
    assert status["status"] == "finished"
    assert (status["finished_operations"], status["errored_operations"]) == (5, 1)
    results = {
        r["operation_id"]: r for r in read_batch_results(requests.get(status["response_body_url"], timeout=5).content)
    }
    assert results["upsert-2"]["status_code"] == 200 and results["event-0"]["status_code"] == 204
    assert json.loads(results["resubscribe"]["response"])["title"] == "Member In Compliance State"
    assert mailchimp.member("b2@example.com").merge_fields["POINTS"] == 2
    assert mailchimp.events_for("b0@example.com")[0].name == "tier_upgrade"
    assert mailchimp.calls == {"batches.start": 1, "batches.status": 1}  # operations are not calls


# -- Mailchimp: limits and faults ------------------------------------------------------------------


def test_mailchimp_eleventh_simultaneous_request_is_429(mailchimp):
    mailchimp.faults.latency = 0.8  # every request holds its connection for a while
    barrier = threading.Barrier(11)
    clients = [mailchimp.client() for _ in range(11)]

    def ping(client):
        barrier.wait()
        try:
            client.ping.get()
            return 200
        except ApiClientError as exc:
            assert problem(exc)["title"] == "Too Many Requests"
            return exc.status_code

    with ThreadPoolExecutor(11) as pool:
        outcomes = list(pool.map(ping, clients))
    assert sorted(outcomes) == [200] * 10 + [429]
    assert mailchimp.max_in_flight == 11

    mailchimp.faults.latency = None
    assert mailchimp.client().ping.get()["health_status"]  # connections freed


def test_mailchimp_faults(mailchimp, mc):
    list_id = mailchimp.default_list_id
    email = "carol@example.com"
    body = {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"POINTS": 1}}

    mailchimp.faults.queue("error", "throttle")
    for status, title in ((500, "Internal Server Error"), (429, "Too Many Requests")):
        with pytest.raises(ApiClientError) as caught:
            mc.lists.set_list_member(list_id, subscriber_hash(email), body)
        assert caught.value.status_code == status and problem(caught.value)["title"] == title
    assert mailchimp.member(email) is None

    mailchimp.faults.queue("drop")
    with pytest.raises(ApiClientError) as caught:
        mc.lists.set_list_member(list_id, subscriber_hash(email), body)
    assert caught.value.status_code is None
    assert isinstance(caught.value.text, requests.exceptions.ConnectionError)
    assert mailchimp.member(email).merge_fields == {"POINTS": 1}  # it was applied all the same

    slow = mailchimp_marketing.Client()
    slow.set_config({"api_key": mailchimp.api_key, "server": "us21", "timeout": 0.3})
    slow.api_client.host = mailchimp.base_url
    mailchimp.faults.configure(hold_seconds=5)
    mailchimp.faults.queue("timeout")
    started = time.monotonic()
    with pytest.raises(ApiClientError) as caught:
        slow.lists.set_list_member(
            list_id, subscriber_hash("dave@example.com"), {**body, "email_address": "dave@example.com"}
        )
    assert isinstance(caught.value.text, requests.exceptions.ReadTimeout) and caught.value.status_code is None
    assert time.monotonic() - started < 2
    assert mailchimp.member("dave@example.com") is None
    assert mailchimp.wait_idle(2)
    assert [r.fault for r in mailchimp.requests] == ["error", "throttle", "drop", "timeout"]


# -- the helpers themselves ------------------------------------------------------------------------


def test_background_server_lifecycle():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"pong"})

    server = BackgroundServer(app)
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url).text == "pong"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url)
    server.start()  # restartable, on the same port
    try:
        assert httpx.get(server.url).text == "pong"
    finally:
        server.stop()


def test_stopping_releases_held_requests():
    server = TwilioServer(faults=Faults(hold_seconds=30)).start()
    client = server.client(timeout=20)
    server.faults.queue("timeout")
    errors: list[BaseException] = []

    def call():
        try:
            client.messages.create(to=MEMBER, messaging_service_sid=MS, body="held")
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while server.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    caller.join(5)
    client.http_client.session.close()
    assert time.monotonic() - started < 3
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], requests.exceptions.ConnectionError)


def test_twilio_dates_are_rfc_2822(twilio):
    response = httpx.post(
        twilio.messages_url,
        data={"To": MEMBER, "Body": "x", "MessagingServiceSid": MS},
        auth=(twilio.account_sid, twilio.auth_token),
    )
    assert response.status_code == 201
    created = response.json()["date_created"]
    assert created.endswith("+0000") and parsedate_to_datetime(created).tzinfo is not None
