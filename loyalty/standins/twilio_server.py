"""A local HTTP server that behaves like Twilio's Programmable Messaging REST API (2010-04-01).

For our tests, chaos tests and the demo: the real ``twilio`` SDK talks to it unchanged.

Pointing the SDK at it (our product needs the same trick to honour ``TWILIO_API_BASE_URL``)
------------------------------------------------------------------------------------------
The SDK builds every URL from its domain object's ``base_url`` (``"https://api.twilio.com"`` for
``client.api``, which ``client.messages`` uses) at request time, so overriding it is enough::

    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=10))
    client.api.base_url = "http://127.0.0.1:4010"        # what TWILIO_API_BASE_URL says
    client.messages.create(to="+14155550100", messaging_service_sid="MG...", body="Hi")

Two caveats, both from ``twilio.base.client_base.ClientBase``:

* ``TWILIO_EDGE`` / ``TWILIO_REGION`` (constructor args or environment variables) make the SDK rewrite
  the host as ``product.edge.region.twilio.com``; with a base URL like ``127.0.0.1:4010`` that mangles
  the address. Leave them unset (or set ``client.edge = client.region = None``) when overriding.
* ``TwilioHttpClient``'s default timeout is ``None``: requests then wait forever. Always pass one.

A more general alternative, for every Twilio domain at once (``client.messaging``, ``client.lookups``
...), is an HTTP client that rewrites the scheme and host of each URL: :class:`BaseUrlHttpClient`
below (``Client(sid, token, http_client=BaseUrlHttpClient("http://127.0.0.1:4010", timeout=10))``).

What it implements
------------------
* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded ``To``, ``Body``,
  ``MessagingServiceSid`` or ``From``, ``StatusCallback``...), HTTP Basic auth with the account SID
  and auth token (or an API key SID and secret). Answers ``201`` with a Message resource: ``sid`` "SM"
  + 32 hex, ``status`` "accepted" via a Messaging Service (then, as Twilio documents, ``from`` is null
  and ``num_segments`` "0" until a sender is assigned) or "queued" with ``From``.
* ``GET .../Messages/{Sid}.json`` (fetch) and ``GET .../Messages.json`` (list, ``To=`` filter).
* Errors with Twilio's JSON body ``{"code", "message", "more_info", "status"}``:

  ====== ===== ===============================================================================
  status code  when
  ====== ===== ===============================================================================
  401    20003 wrong or missing credentials (also a ``WWW-Authenticate`` header)
  404    20404 unknown path, other account's SID, unknown message
  405    20004 method not allowed
  429    20429 more messages per second than ``rate_limit_per_second`` (token bucket), more
               concurrent requests than ``max_concurrent_requests``, or a "throttle" fault
  400    21604 ``To`` missing
  400    21211 ``To`` not E.164 ("The 'To' number 12345 is not a valid phone number.")
  400    21603 neither ``From`` nor ``MessagingServiceSid``
  400    21705 ``MessagingServiceSid`` not shaped like ``MG`` + 32 hex
  400    21701 ``MessagingServiceSid`` unknown ("The Messaging Service does not exist")
  400    21606 ``From`` not one of ``from_numbers`` (when that is set)
  400    21602 no ``Body`` (nor ``MediaUrl``/``ContentSid``)
  400    21617 ``Body`` longer than 1600 characters
  400    21609 ``StatusCallback`` not an http(s) URL
  400    21614 ``To`` in ``landlines`` ("'To' number is not a valid mobile number")
  400    21610 ``To`` in ``unsubscribed`` ("Attempt to send to unsubscribed recipient")
  5xx    20500 "error" faults
  ====== ===== ===============================================================================

  With a Messaging Service the real Twilio does not refuse opted-out or landline numbers at once:
  it accepts the message and it fails later (``error_code`` 21610/21614 in the status callback and on
  fetch). ``messaging_service_defers_errors=True`` reproduces that; the default answers 400 at once.
  Twilio's real 429 is about concurrent API requests (messages above the sender's rate are queued,
  not refused); the token bucket is here so that our pacing can be tested.

Recording
---------
``server.accepted`` lists every message answered 201 (a :class:`SentMessage`: to, body, messaging
service, sid, every form parameter, the request headers and any idempotency-ish header), including
those whose answer a "drop" fault then threw away. ``server.calls`` counts requests per endpoint
(``messages.create``, ``messages.fetch``, ``messages.list``), ``server.requests`` logs them all,
``server.reset()`` forgets everything. Faults: see :mod:`loyalty.standins.fault` (``server.faults``).

``status_callback_payload(sid, status)`` gives the form fields Twilio POSTs to a StatusCallback and
``send_status_callback(sid, status)`` POSTs them, signed like Twilio (``X-Twilio-Signature``, see
:func:`twilio_signature`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from loyalty.standins.fault import Faults, Scope, read_body
from loyalty.standins.http_server import ProviderServer, send_response

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + hashlib.md5(b"loyalty test account").hexdigest()
DEFAULT_AUTH_TOKEN = hashlib.md5(b"loyalty test auth token").hexdigest()
DEFAULT_MESSAGING_SERVICE_SID = "MG" + hashlib.md5(b"loyalty messaging service").hexdigest()
DEFAULT_SENDER = "+15005550006"  # Twilio's "valid, available" magic test number

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
IDEMPOTENCY_HEADERS = ("idempotency-key", "i-twilio-idempotency-token", "x-idempotency-key", "x-request-id")
MESSAGE_STATUSES = (
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "canceled",
)
MAX_BODY = 1600
PRICE_PER_SEGMENT = 0.0079

# GSM 03.38: the basic set (1 septet each) and the extension table (2 septets: escape + char).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")

ERROR_MESSAGES = {
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The From phone number {from_} is not a valid, SMS-capable inbound phone number or short code for your account.",
    21609: "The StatusCallback URL {url} is not a valid URL.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21701: "The Messaging Service does not exist",
    21705: "The Messaging Service Sid {sid} is invalid.",
}


def sms_segments(body: str) -> tuple[str, int]:
    """The encoding Twilio would use for ``body`` and how many SMS segments it makes.

    GSM-7: 160 septets in one segment, 153 per segment when concatenated (extension characters such
    as ``€[]{}`` count twice). Anything outside GSM-7 makes the whole body UCS-2: 70 UTF-16 code units
    in one segment, 67 per segment when concatenated (an emoji counts twice).
    """
    if not body:
        return "GSM-7", 0
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in body):
        septets = sum(2 if ch in GSM7_EXTENDED else 1 for ch in body)
        return "GSM-7", 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return "UCS-2", 1 if units <= 70 else math.ceil(units / 67)


def twilio_signature(auth_token: str, url: str, params: Any = None) -> str:
    """``X-Twilio-Signature`` for a request Twilio makes to ``url`` with form ``params``.

    Exactly what ``twilio.request_validator.RequestValidator(auth_token).compute_signature(url,
    params)`` computes: the full URL, then each parameter name (sorted, deduplicated) followed by each
    of its values (sorted, deduplicated), HMAC-SHA1 with the auth token, base64. ``params`` may be a
    mapping of name to a value or a list of values, or an iterable of ``(name, value)`` pairs. For a
    JSON body, Twilio signs the URL (with ``bodySHA256``) and no parameters: pass ``params=None``.
    """
    values: dict[str, list[str]] = {}
    if params:
        pairs: Iterable[tuple[str, Any]]
        if hasattr(params, "multi_items"):  # starlette's FormData / MultiDict
            pairs = params.multi_items()
        elif isinstance(params, Mapping):
            pairs = params.items()
        else:
            pairs = params
        for name, value in pairs:
            if isinstance(value, (list, tuple)):
                values.setdefault(name, []).extend(str(v) for v in value)
            else:
                values.setdefault(name, []).append(str(value))
    text = url
    for name in sorted(values):
        for value in sorted(set(values[name])):
            text += name + value
    digest = hmac.new(auth_token.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("utf-8").strip()


def _twilio_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC))  # "Thu, 24 Aug 2023 05:01:45 +0000"


@dataclass
class SentMessage:
    """A message the fake Twilio accepted (answered 201 for)."""

    sid: str
    account_sid: str
    to: str
    body: str | None
    messaging_service_sid: str | None
    from_: str | None  # the From the request gave, if any
    status_callback: str | None
    status: str
    num_segments: int
    encoding: str
    params: dict[str, list[str]]  # every form parameter as sent (multi-valued)
    headers: dict[str, str]  # request headers, lower-cased names, without Authorization
    idempotency_key: str | None
    date_created: datetime
    sender: str | None = None  # the number the message is (or will be) sent from
    error_code: int | None = None
    date_updated: datetime | None = None
    date_sent: datetime | None = None

    def param(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[-1] if values else None


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; thread-safe."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def refill(self) -> None:
        with self._lock:
            self._tokens = self.burst
            self._stamp = time.monotonic()


class TwilioError(Exception):
    def __init__(self, status: int, code: int, **fmt: Any):
        self.status = status
        self.code = code
        self.message = ERROR_MESSAGES.get(code, "Error").format(**fmt)
        super().__init__(self.message)


class TwilioServer(ProviderServer):
    """The fake Twilio. ``TwilioServer(...).start()``, ``.url``, ``.stop()`` (or ``with``)."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        messaging_services: Mapping[str, str] | Iterable[str] | None = None,
        from_numbers: Iterable[str] | None = None,
        unsubscribed: Iterable[str] = (),
        landlines: Iterable[str] = (),
        api_keys: Mapping[str, str] | None = None,
        rate_limit_per_second: float | None = None,
        rate_limit_burst: float | None = None,
        max_concurrent_requests: int | None = None,
        messaging_service_defers_errors: bool = False,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        """
        :param messaging_services: Messaging Service SIDs that exist (a mapping gives each one's sender
            number); default: :data:`DEFAULT_MESSAGING_SERVICE_SID` sending from :data:`DEFAULT_SENDER`.
        :param from_numbers: the account's own numbers, allowed as ``From``; ``None`` allows any E.164.
        :param unsubscribed: numbers that replied STOP (21610). ``landlines``: numbers that cannot get
            SMS (21614). Both are sets you may change at run time (or use ``opt_out``/``opt_in``).
        :param api_keys: API key SID to secret, accepted as Basic auth for this account.
        :param rate_limit_per_second: message creations allowed per second (token bucket of
            ``rate_limit_burst``, default the rate); above it, 429 / 20429.
        :param max_concurrent_requests: API requests handled at once; above it, 429 / 20429.
        """
        if messaging_services is None:
            messaging_services = {DEFAULT_MESSAGING_SERVICE_SID: DEFAULT_SENDER}
        elif not isinstance(messaging_services, Mapping):
            messaging_services = {sid: DEFAULT_SENDER for sid in messaging_services}
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messaging_services: dict[str, str] = dict(messaging_services)
        self.from_numbers: set[str] | None = set(from_numbers) if from_numbers is not None else None
        self.unsubscribed: set[str] = set(unsubscribed)
        self.landlines: set[str] = set(landlines)
        self.api_keys: dict[str, str] = dict(api_keys or {})
        self.messaging_service_defers_errors = messaging_service_defers_errors
        self.max_concurrent_requests = max_concurrent_requests
        self.bucket = TokenBucket(rate_limit_per_second, rate_limit_burst) if rate_limit_per_second else None
        self._messages: dict[str, SentMessage] = {}
        self._order: list[str] = []
        super().__init__(faults=faults, host=host, port=port)

    # -- configuration helpers -----------------------------------------------------------------
    def opt_out(self, *numbers: str) -> None:
        """As if these numbers had replied STOP."""
        with self._lock:
            self.unsubscribed.update(numbers)

    def opt_in(self, *numbers: str) -> None:
        """As if these numbers had replied START."""
        with self._lock:
            self.unsubscribed.difference_update(numbers)

    def set_rate_limit(self, per_second: float | None, burst: float | None = None) -> None:
        self.bucket = TokenBucket(per_second, burst) if per_second else None

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``client.api.base_url`` (same as ``url``)."""
        return self.url

    @property
    def messages_url(self) -> str:
        return f"{self.url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    def client(self, *, timeout: float = 10.0) -> Any:
        """A real ``twilio.rest.Client`` pointed at this server (see the module docstring)."""
        from twilio.http.http_client import TwilioHttpClient
        from twilio.rest import Client

        client = Client(self.account_sid, self.auth_token, http_client=TwilioHttpClient(timeout=timeout))
        client.edge = client.region = None
        client.api.base_url = self.url
        return client

    # -- what was accepted ---------------------------------------------------------------------
    @property
    def accepted(self) -> list[SentMessage]:
        """Copies of every accepted message, in order."""
        with self._lock:
            return [dataclasses.replace(self._messages[sid]) for sid in self._order]

    def accepted_to(self, number: str) -> list[SentMessage]:
        return [m for m in self.accepted if m.to == number]

    def message(self, sid: str) -> SentMessage:
        with self._lock:
            return dataclasses.replace(self._messages[sid])

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> SentMessage:
        """Move a message on (e.g. "sent", "delivered", "undelivered" with an error code)."""
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"unknown message status {status!r}")
        with self._lock:
            msg = self._messages[sid]
            self._advance(msg, status, error_code)
            return dataclasses.replace(msg)

    def deliver_all(self) -> None:
        with self._lock:
            for msg in self._messages.values():
                if msg.status in ("accepted", "queued", "sending", "sent"):
                    self._advance(msg, "delivered")

    def _advance(self, msg: SentMessage, status: str, error_code: int | None = None) -> None:
        now = datetime.now(UTC)
        msg.status = status
        msg.error_code = error_code
        msg.date_updated = now
        if status not in ("accepted", "scheduled"):
            msg.sender = msg.sender or self.messaging_services.get(msg.messaging_service_sid or "") or msg.from_
        if status in ("sent", "delivered", "undelivered", "read") and msg.date_sent is None:
            msg.date_sent = now

    def reset_state(self) -> None:
        self._messages.clear()
        self._order.clear()
        if self.bucket is not None:
            self.bucket.refill()

    def state(self) -> dict[str, Any]:
        return {
            "accepted": [self._resource(self._messages[sid]) for sid in self._order],
            "calls": dict(self._calls),
            "unsubscribed": sorted(self.unsubscribed),
            "landlines": sorted(self.landlines),
        }

    def admin_action(self, method: str, action: str, payload: Any) -> tuple[int, Any] | None:
        if method == "POST" and action in ("opt-out", "opt-in", "landlines"):
            numbers = payload.get("numbers") or [payload["number"]]
            if action == "opt-out":
                self.opt_out(*numbers)
            elif action == "opt-in":
                self.opt_in(*numbers)
            else:
                with self._lock:
                    self.landlines.update(numbers)
            return 200, {"unsubscribed": sorted(self.unsubscribed), "landlines": sorted(self.landlines)}
        if method == "POST" and action == "status":
            msg = self.set_status(payload["sid"], payload["status"], payload.get("error_code"))
            return 200, self._resource(msg)
        return None

    # -- status callbacks ----------------------------------------------------------------------
    def status_callback_payload(self, sid: str, status: str | None = None) -> dict[str, str]:
        """The form fields Twilio POSTs to the StatusCallback URL for message ``sid``."""
        with self._lock:
            msg = self._messages[sid]
            status = status or msg.status
            payload = {
                "SmsSid": msg.sid,
                "SmsStatus": status,
                "MessageStatus": status,
                "To": msg.to,
                "MessageSid": msg.sid,
                "AccountSid": msg.account_sid,
                "From": msg.sender or self.messaging_services.get(msg.messaging_service_sid or "") or msg.from_ or "",
                "ApiVersion": API_VERSION,
            }
            if msg.messaging_service_sid:
                payload["MessagingServiceSid"] = msg.messaging_service_sid
            if status in ("failed", "undelivered") and msg.error_code:
                payload["ErrorCode"] = str(msg.error_code)
            return payload

    def send_status_callback(
        self, sid: str, status: str, url: str | None = None, *, error_code: int | None = None, timeout: float = 5.0
    ) -> Any:
        """Set the message's status and POST the callback to ``url`` (default: its StatusCallback),
        form-encoded and signed like Twilio. Returns the ``httpx.Response``."""
        import httpx

        self.set_status(sid, status, error_code)
        with self._lock:
            target = url or self._messages[sid].status_callback
        if not target:
            raise ValueError(f"message {sid} has no StatusCallback and no url was given")
        payload = self.status_callback_payload(sid, status)
        headers = {
            "X-Twilio-Signature": twilio_signature(self.auth_token, target, payload),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "User-Agent": "TwilioProxy/1.1",
        }
        return httpx.post(target, data=payload, headers=headers, timeout=timeout)

    # -- HTTP ----------------------------------------------------------------------------------
    _CREATE = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
    _FETCH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")

    def endpoint_name(self, method: str, path: str) -> str | None:
        if self._CREATE.match(path):
            return {"POST": "messages.create", "GET": "messages.list"}.get(method)
        if self._FETCH.match(path):
            return {"GET": "messages.fetch"}.get(method)
        return None

    def refuse(self, scope: dict, key: str, in_flight: int) -> tuple[int, list, bytes] | None:
        if self.max_concurrent_requests is not None and in_flight > self.max_concurrent_requests:
            return self._error_triplet(TwilioError(429, 20429))
        return None

    def error_response(self, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if status == 429:
            return self._error_triplet(TwilioError(429, 20429))
        code = 20503 if status == 503 else 20500
        err = TwilioError(status, code)
        if status not in (500, 503):
            err.message = "Internal Server Error"
        return self._error_triplet(err)

    def _headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"twilio-request-id", ("RQ" + secrets.token_hex(16)).encode()),
        ]

    def _error_triplet(self, err: TwilioError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = {
            "code": err.code,
            "message": err.message,
            "more_info": f"https://www.twilio.com/docs/errors/{err.code}",
            "status": err.status,
        }
        headers = self._headers()
        if err.code == 20003:
            body["detail"] = "Your AccountSid or AuthToken was incorrect."
            headers.append((b"www-authenticate", b'Basic realm="Twilio API"'))
        return err.status, headers, json.dumps(body).encode()

    async def api(self, scope: Scope, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        method = scope["method"]
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            status, payload = self._handle(method, path, scope.get("query_string", b""), headers, body)
            await send_response(send, status, self._headers(), json.dumps(payload).encode())
        except TwilioError as err:
            await send_response(send, *self._error_triplet(err))

    def _handle(
        self, method: str, path: str, query: bytes, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        create = self._CREATE.match(path)
        fetch = self._FETCH.match(path)
        if not (create or fetch):
            raise TwilioError(404, 20404, path=path)
        self._authenticate(headers)
        account = (create or fetch).group("account")  # type: ignore[union-attr]
        if account != self.account_sid:
            raise TwilioError(404, 20404, path=path)
        if create and method == "POST":
            content_type = headers.get("content-type", "")
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True) if "json" not in content_type else []
            return 201, self._create_message(form, headers)
        if create and method == "GET":
            return 200, self._list_messages(path, query)
        if fetch and method == "GET":
            with self._lock:
                msg = self._messages.get(fetch.group("sid"))
                if msg is None:
                    raise TwilioError(404, 20404, path=path)
                return 200, self._resource(msg)
        raise TwilioError(405, 20004)

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        scheme, _, encoded = auth.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise TwilioError(401, 20003) from None
            if user == self.account_sid and hmac.compare_digest(password, self.auth_token):
                return
            if user in self.api_keys and hmac.compare_digest(password, self.api_keys[user]):
                return
        raise TwilioError(401, 20003)

    def _create_message(self, form: list[tuple[str, str]], headers: dict[str, str]) -> dict[str, Any]:
        params: dict[str, list[str]] = {}
        for name, value in form:
            params.setdefault(name, []).append(value)

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[-1] if values else None

        to = (one("To") or "").strip()
        body = one("Body")
        from_ = one("From") or None
        service = one("MessagingServiceSid") or None
        callback = one("StatusCallback") or None
        media = params.get("MediaUrl") or []

        if self.bucket is not None and not self.bucket.take():
            raise TwilioError(429, 20429)
        if not to:
            raise TwilioError(400, 21604)
        if not E164.match(to):
            raise TwilioError(400, 21211, to=to)
        if not from_ and not service:
            raise TwilioError(400, 21603)
        if service:
            if not MESSAGING_SERVICE_SID.match(service):
                raise TwilioError(400, 21705, sid=service)
            if service not in self.messaging_services:
                raise TwilioError(400, 21701, sid=service)
        if from_ and not service:
            known = self.from_numbers
            if (known is not None and from_ not in known) or (known is None and not E164.match(from_)):
                raise TwilioError(400, 21606, from_=from_)
        if not body and not media and not one("ContentSid"):
            raise TwilioError(400, 21602)
        if body and len(body) > MAX_BODY:
            raise TwilioError(400, 21617)
        if callback:
            parts = urlsplit(callback)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise TwilioError(400, 21609, url=callback)

        deferred: int | None = None
        with self._lock:
            if to in self.landlines:
                deferred = 21614
            elif to in self.unsubscribed:
                deferred = 21610
        if deferred is not None and not (service and self.messaging_service_defers_errors):
            raise TwilioError(400, deferred)

        encoding, segments = sms_segments(body or "")
        if not body and media:
            segments = 1
        now = datetime.now(UTC)
        idempotency_key = next((headers[h] for h in IDEMPOTENCY_HEADERS if h in headers), None)
        msg = SentMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            body=body,
            messaging_service_sid=service,
            from_=from_,
            status_callback=callback,
            status="accepted" if service else "queued",
            num_segments=segments,
            encoding=encoding,
            params=params,
            headers={k: v for k, v in headers.items() if k != "authorization"},
            idempotency_key=idempotency_key,
            date_created=now,
            date_updated=now,
            sender=from_ if from_ else None,
        )
        with self._lock:
            self._messages[msg.sid] = msg
            self._order.append(msg.sid)
            resource = self._resource(msg)
            if deferred is not None:  # accepted now, failed a moment later (Messaging Service)
                self._advance(msg, "failed", deferred)
        return resource

    def _list_messages(self, path: str, query: bytes) -> dict[str, Any]:
        args = dict(parse_qsl(query.decode("utf-8")))
        page_size = int(args.get("PageSize", 50))
        with self._lock:
            rows = [self._messages[sid] for sid in reversed(self._order)]
            if "To" in args:
                rows = [m for m in rows if m.to == args["To"]]
            if "From" in args:
                rows = [m for m in rows if m.sender == args["From"] or m.from_ == args["From"]]
            items = [self._resource(m) for m in rows[:page_size]]
        uri = f"{path}?PageSize={page_size}&Page=0"
        return {
            "messages": items,
            "end": max(len(items) - 1, 0),
            "first_page_uri": uri,
            "next_page_uri": None,
            "page": 0,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": 0,
            "uri": uri,
        }

    def _resource(self, msg: SentMessage) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{msg.account_sid}/Messages/{msg.sid}.json"
        pending = msg.status in ("accepted", "scheduled")
        sent = msg.status in ("sent", "delivered", "undelivered", "read")
        return {
            "account_sid": msg.account_sid,
            "api_version": API_VERSION,
            "body": msg.body,
            "date_created": _twilio_date(msg.date_created),
            "date_sent": _twilio_date(msg.date_sent) if msg.date_sent else None,
            "date_updated": _twilio_date(msg.date_updated or msg.date_created),
            "direction": "outbound-api",
            "error_code": msg.error_code,
            "error_message": ERROR_MESSAGES.get(msg.error_code) if msg.error_code else None,
            "from": None if pending and not msg.from_ else (msg.sender or msg.from_),
            "messaging_service_sid": msg.messaging_service_sid,
            "num_media": str(len(msg.params.get("MediaUrl", []))),
            "num_segments": "0" if pending and msg.messaging_service_sid else str(msg.num_segments),
            "price": f"-{PRICE_PER_SEGMENT * msg.num_segments:.5f}" if sent else None,
            "price_unit": "USD",
            "sid": msg.sid,
            "status": msg.status,
            "subresource_uris": {
                "media": uri.replace(".json", "/Media.json"),
                "feedback": uri.replace(".json", "/Feedback.json"),
            },
            "to": msg.to,
            "uri": uri,
        }


class _BaseUrlMixin:
    """Rewrites the scheme and host of every Twilio URL to ``base_url`` (keeps path and query)."""

    base_url: str

    def _rewrite(self, url: str) -> str:
        target = urlsplit(self.base_url)
        parts = urlsplit(url)
        prefix = target.path.rstrip("/")
        return urlunsplit((target.scheme, target.netloc, prefix + parts.path, parts.query, parts.fragment))


def _make_base_url_http_client() -> type:
    from twilio.http.http_client import TwilioHttpClient

    class BaseUrlHttpClient(_BaseUrlMixin, TwilioHttpClient):
        """A ``TwilioHttpClient`` sending every request to ``base_url`` instead of ``*.twilio.com``."""

        def __init__(self, base_url: str, **kwargs: Any):
            super().__init__(**kwargs)
            self.base_url = base_url

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            return super().request(method, self._rewrite(url), *args, **kwargs)

    return BaseUrlHttpClient


BaseUrlHttpClient = _make_base_url_http_client()


__all__ = [
    "API_VERSION",
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "DEFAULT_MESSAGING_SERVICE_SID",
    "DEFAULT_SENDER",
    "BaseUrlHttpClient",
    "SentMessage",
    "TwilioServer",
    "sms_segments",
    "twilio_signature",
]
