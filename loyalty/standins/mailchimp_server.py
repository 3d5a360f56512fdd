"""A local HTTP server that behaves like Mailchimp's Marketing API (``/3.0``).

For our tests, chaos tests and the demo: the real ``mailchimp_marketing`` SDK talks to it unchanged.

Pointing the SDK at it (our product needs the same trick to honour a Mailchimp base URL)
---------------------------------------------------------------------------------------
``mailchimp_marketing.ApiClient`` starts with ``host = "https://server.api.mailchimp.com/3.0"`` and,
for every call, builds ``url = host + path`` then ``url.replace("server", <config server>)``.
``set_config()`` never touches ``host`` (and ``Configuration`` is not used at all), so set the host
on the ``ApiClient`` after ``set_config``::

    import mailchimp_marketing

    client = mailchimp_marketing.Client()
    client.set_config({"api_key": api_key, "server": "us21", "timeout": 10})
    client.api_client.host = "http://127.0.0.1:4011/3.0"     # base URL + "/3.0"
    client.ping.get()

(Every ``"server"`` substring of the final URL is replaced, path included: a list id or tag
containing "server" would be mangled by the real SDK too.)

SDK behaviour worth knowing (``mailchimp_marketing/api_client.py``)
-------------------------------------------------------------------
* Auth is HTTP Basic ``("user", api_key)``; any username works, the key is the password.
* Every failure is ``mailchimp_marketing.api_client.ApiClientError(text, status_code)``. For an HTTP
  error ``text`` is the raw body **string** (errors are ``application/problem+json``, which the SDK
  does not recognise as JSON: ``json.loads(err.text)``); for a network error (refused, dropped,
  time-out) ``text`` is the ``requests`` exception and ``status_code`` is ``None``.
* An error answer with an empty body is not raised at all: the ``requests.Response`` is returned.
  So are 204 answers (tags, events).
* The timeout is ``set_config({"timeout": s})`` (default 120 s); the per-call ``_request_timeout``
  and ``async_req`` keyword arguments are accepted and ignored. Each call is a new connection
  (``requests.post``, no session).

What it implements (all under ``/3.0``, Basic auth)
----------------------------------------------------
* ``GET /ping`` -> ``{"health_status": "Everything's Chimpy!"}``.
* ``PUT /lists/{list_id}/members/{subscriber_hash}`` (upsert; the hash is the MD5 of the lower-cased
  email, or the email itself as the SDK allows), ``GET``/``PATCH`` the same, ``POST .../members``.
  ``status_if_new`` applies to new members only; ``status`` changes existing ones. Refusals:
  "Member In Compliance State" (subscribing an unsubscribed or cleaned member, or an address marked
  with ``mark_compliance``), "Forgotten Email Not Subscribed" (re-adding an address that was
  permanently deleted, see ``forget``), "Invalid Resource" with an ``errors`` list when merge fields
  do not fit the audience's merge tags ("Your merge fields were invalid."), "Member Exists". A hash
  that does not match ``email_address`` is refused too (``strict_subscriber_hash``; the real API would
  create a member under the right hash instead, or answer "Member Exists").
* ``POST .../members/{hash}/tags`` ``{"tags": [{"name", "status": "active"|"inactive"}]}`` -> 204.
* ``POST .../members/{hash}/events`` ``{"name", "properties"}`` -> 204; the name must be 2-30
  letters, digits, ``_`` or ``-``; property values must be strings.
* ``POST /lists/{list_id}`` batch subscribe/unsubscribe: up to 500 ``members`` (each with
  ``email_address`` and ``status``), ``update_existing``; answers ``new_members``, ``updated_members``,
  ``errors`` (``email_address``, ``error``, ``error_code`` ``ERROR_CONTACT_EXISTS``/``ERROR_GENERIC``,
  ``field``, ``field_message``), ``total_created``, ``total_updated``, ``error_count``.
* ``POST /batches`` (operations with ``method``, ``path``, ``body`` as a JSON string, ``operation_id``)
  -> ``status: "pending"``; ``GET /batches/{id}`` runs them and says ``"finished"`` (after
  ``batch_pending_polls`` more polls), with ``response_body_url`` a ``.tar.gz`` of the results.
* Errors are ``application/problem+json``: ``{"type", "title", "status", "detail", "instance"}``:
  401 "API Key Missing"/"API Key Invalid", 404 "Resource Not Found", 405 "Method Not Allowed",
  429 "Too Many Requests" when more than ``max_connections`` (10) requests with one key are in
  progress at once, 500 "Internal Server Error" for faults.

Recording
---------
``members()`` / ``member(email)`` (a :class:`Member` with status, merge fields and tags), ``events``
/ ``events_for(email)``, ``tag_history``, ``batches``; ``calls`` counts requests per SDK method name
(``lists.batch_list_members``, ``lists.set_list_member``, ``batches.start``...), ``total_calls`` all of
them; operations run inside a ``/batches`` job are not HTTP calls and are not counted. ``reset()``
forgets everything (members seeded through the constructor come back). Faults:
:mod:`loyalty.standins.fault` (``server.faults``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import re
import secrets
import tarfile
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

from loyalty.standins.fault import Faults, Scope, read_body
from loyalty.standins.http_server import ProviderServer, send_response

DEFAULT_API_KEY = hashlib.md5(b"loyalty mailchimp key").hexdigest() + "-us21"
DEFAULT_LIST_ID = "a1b2c3d4e5"
DEFAULT_MERGE_FIELDS: dict[str, str] = {
    "FNAME": "text",
    "LNAME": "text",
    "TIER": "text",
    "POINTS": "number",
    "EXPPOINTS": "number",
    "EXPDATE": "date",
    "BIRTHDAY": "birthday",
    "LOCALE": "text",
}
ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
BATCH_SUBSCRIBE_MAX = 500

API_KEY_MISSING = (401, "API Key Missing", "Your request did not include an API key.")
API_KEY_INVALID = (
    401,
    "API Key Invalid",
    "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
)
NOT_FOUND = (404, "Resource Not Found", "The requested resource could not be found.")
METHOD_NOT_ALLOWED = (
    405,
    "Method Not Allowed",
    "The requested method and resource are not compatible. See the Allow header for this resource's available methods.",
)
TOO_MANY_REQUESTS = (429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")
INTERNAL_ERROR = (
    500,
    "Internal Server Error",
    "An unexpected internal error has occurred. Please contact Support for more information.",
)
INVALID_RESOURCE_DETAIL = (
    "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased email address."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _tag_id(name: str) -> int:
    return zlib.crc32(name.encode("utf-8")) % 1_000_000


class MailchimpProblem(Exception):
    """An error answer in Mailchimp's problem+json form."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None):
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors

    @classmethod
    def of(cls, triplet: tuple[int, str, str]) -> MailchimpProblem:
        return cls(*triplet)

    def body(self, instance: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": ERROR_TYPE,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors is not None:
            data["errors"] = self.errors
        return data


def _invalid(detail: str = INVALID_RESOURCE_DETAIL, errors: list[dict[str, str]] | None = None) -> MailchimpProblem:
    return MailchimpProblem(400, "Invalid Resource", detail, errors)


def _compliance(email: str) -> MailchimpProblem:
    return MailchimpProblem(
        400,
        "Member In Compliance State",
        f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.",
    )


def _forgotten(email: str) -> MailchimpProblem:
    return MailchimpProblem(
        400,
        "Forgotten Email Not Subscribed",
        f"{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.",
    )


def _member_exists(email: str) -> MailchimpProblem:
    return MailchimpProblem(
        400, "Member Exists", f"{email} is already a list member. Use PUT to insert or update list members."
    )


@dataclass
class Member:
    list_id: str
    email_address: str
    status: str
    merge_fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    language: str = ""
    vip: bool = False
    email_type: str = "html"
    interests: dict[str, bool] = field(default_factory=dict)
    source: str = "API - Generic"
    timestamp_signup: datetime | None = None
    timestamp_opt: datetime | None = None
    last_changed: datetime | None = None
    unique_email_id: str = field(default_factory=lambda: secrets.token_hex(5))
    contact_id: str = field(default_factory=lambda: secrets.token_hex(16))
    web_id: int = field(default_factory=lambda: secrets.randbelow(900_000_000) + 100_000_000)
    created_by: str = "api"  # "api", "batch" or "seed"

    @property
    def id(self) -> str:
        return subscriber_hash(self.email_address)

    subscriber_hash = id


@dataclass
class MemberEvent:
    list_id: str
    email_address: str
    subscriber_hash: str
    name: str
    properties: dict[str, Any]
    is_syncing: bool
    occurred_at: str | None
    received_at: datetime


@dataclass
class TagUpdate:
    list_id: str
    email_address: str
    tags: list[dict[str, str]]
    is_syncing: bool
    received_at: datetime


@dataclass
class Batch:
    id: str
    operations: list[dict[str, Any]]
    submitted_at: datetime
    status: str = "pending"
    polls: int = 0
    completed_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    errored_operations: int = 0
    archive: bytes = b""


class MailchimpServer(ProviderServer):
    """The fake Mailchimp. ``MailchimpServer(...).start()``, ``.url``/``.base_url``, ``.stop()``."""

    name = "mailchimp"

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        list_ids: Iterable[str] = (DEFAULT_LIST_ID,),
        merge_fields: Mapping[str, str] | None = None,
        required_merge_fields: Iterable[str] = (),
        unknown_merge_fields: str = "reject",
        strict_subscriber_hash: bool = True,
        unsubscribed: Iterable[str] = (),
        cleaned: Iterable[str] = (),
        compliance: Iterable[str] = (),
        forgotten: Iterable[str] = (),
        fake_emails: Iterable[str] = (),
        access_tokens: Iterable[str] = (),
        max_connections: int | None = 10,
        batch_pending_polls: int = 0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        """
        :param list_ids: the audiences that exist; the first is the default for helpers.
        :param merge_fields: merge tag -> type ("text", "number", "date", "birthday", "phone",
            "address", ...), default :data:`DEFAULT_MERGE_FIELDS`.
        :param unknown_merge_fields: "reject" (an "Invalid Resource" error) or "ignore" a merge tag
            the audience does not have.
        :param unsubscribed, cleaned: members seeded with that status in the default list.
        :param compliance: addresses that may not be subscribed (abuse reports, compliance review).
        :param forgotten: addresses permanently deleted ("Forgotten Email Not Subscribed").
        :param fake_emails: addresses Mailchimp's checks call fake ("looks fake or invalid").
        :param access_tokens: OAuth tokens accepted as ``Authorization: Bearer``.
        :param max_connections: requests with one key in progress at once before 429 (None: no limit).
        """
        self.api_key = api_key
        self.list_ids = list(list_ids)
        self.merge_field_types: dict[str, str] = dict(
            merge_fields if merge_fields is not None else DEFAULT_MERGE_FIELDS
        )
        self.required_merge_fields = set(required_merge_fields)
        if unknown_merge_fields not in ("reject", "ignore"):
            raise ValueError("unknown_merge_fields must be 'reject' or 'ignore'")
        self.unknown_merge_fields = unknown_merge_fields
        self.strict_subscriber_hash = strict_subscriber_hash
        self.fake_emails = {e.lower() for e in fake_emails}
        self.access_tokens = set(access_tokens)
        self.max_connections = max_connections
        self.batch_pending_polls = batch_pending_polls
        self._seeds = {
            "unsubscribed": [e for e in unsubscribed],
            "cleaned": [e for e in cleaned],
            "compliance": [e for e in compliance],
            "forgotten": [e for e in forgotten],
        }
        self._members: dict[str, dict[str, Member]] = {}
        self._compliance: set[str] = set()
        self._forgotten: set[str] = set()
        self._events: list[MemberEvent] = []
        self._tag_history: list[TagUpdate] = []
        self._batches: dict[str, Batch] = {}
        super().__init__(faults=faults, host=host, port=port)
        self.reset_state()

    # -- configuration and seeding -------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """What to give the SDK as ``client.api_client.host``: ``http://127.0.0.1:<port>/3.0``."""
        return f"{self.url}/3.0"

    @property
    def default_list_id(self) -> str:
        return self.list_ids[0]

    def client(self, *, timeout: float = 10.0, api_key: str | None = None) -> Any:
        """A real ``mailchimp_marketing.Client`` pointed at this server (see the module docstring)."""
        import mailchimp_marketing

        key = api_key if api_key is not None else self.api_key
        client = mailchimp_marketing.Client()
        client.set_config({"api_key": key, "server": key.rpartition("-")[2] or "us1", "timeout": timeout})
        client.api_client.host = self.base_url
        return client

    def add_member(
        self,
        email: str,
        status: str = "subscribed",
        *,
        list_id: str | None = None,
        merge_fields: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> Member:
        """Put a member on a list as if it had always been there (no call is counted)."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"unknown member status {status!r}")
        with self._lock:
            now = _now()
            member = Member(
                list_id=list_id or self.default_list_id,
                email_address=email,
                status=status,
                merge_fields=dict(merge_fields or {}),
                tags=list(dict.fromkeys(tags)),
                timestamp_signup=now,
                timestamp_opt=now,
                last_changed=now,
                created_by="seed",
            )
            self._members.setdefault(member.list_id, {})[member.id] = member
            return dataclasses.replace(member)

    def mark_compliance(self, *emails: str) -> None:
        """These addresses cannot be subscribed again ("Member In Compliance State")."""
        with self._lock:
            self._compliance.update(e.lower() for e in emails)

    def forget(self, *emails: str) -> None:
        """Permanently delete these addresses (GDPR): they leave every list and cannot be re-added."""
        with self._lock:
            for email in emails:
                self._forgotten.add(email.lower())
                for members in self._members.values():
                    members.pop(subscriber_hash(email), None)

    # -- what was accepted ---------------------------------------------------------------------
    def members(self, list_id: str | None = None) -> dict[str, Member]:
        """Copies of a list's members by lower-cased email."""
        with self._lock:
            members = self._members.get(list_id or self.default_list_id, {})
            return {
                m.email_address.lower(): dataclasses.replace(m, merge_fields=dict(m.merge_fields), tags=list(m.tags))
                for m in members.values()
            }

    def member(self, email: str, list_id: str | None = None) -> Member | None:
        return self.members(list_id).get(email.lower())

    @property
    def events(self) -> list[MemberEvent]:
        with self._lock:
            return [dataclasses.replace(e, properties=dict(e.properties)) for e in self._events]

    def events_for(self, email: str) -> list[MemberEvent]:
        return [e for e in self.events if e.email_address.lower() == email.lower()]

    @property
    def tag_history(self) -> list[TagUpdate]:
        with self._lock:
            return list(self._tag_history)

    @property
    def batches(self) -> list[Batch]:
        with self._lock:
            return [dataclasses.replace(b) for b in self._batches.values()]

    def finish_batches(self) -> None:
        """Run every pending ``/batches`` job now."""
        with self._lock:
            for batch in self._batches.values():
                self._run_batch(batch)

    def reset_state(self) -> None:
        with self._lock:
            self._members = {list_id: {} for list_id in self.list_ids}
            self._compliance = {e.lower() for e in self._seeds["compliance"]}
            self._forgotten = {e.lower() for e in self._seeds["forgotten"]}
            self._events.clear()
            self._tag_history.clear()
            self._batches.clear()
            for email in self._seeds["unsubscribed"]:
                self.add_member(email, "unsubscribed")
            for email in self._seeds["cleaned"]:
                self.add_member(email, "cleaned")

    def state(self) -> dict[str, Any]:
        return {
            "members": {
                list_id: [self._member_json(m) for m in members.values()] for list_id, members in self._members.items()
            },
            "events": [dataclasses.asdict(e) for e in self._events],
            "tag_history": [dataclasses.asdict(t) for t in self._tag_history],
            "batches": [
                {k: v for k, v in dataclasses.asdict(b).items() if k not in ("archive", "operations")}
                for b in self._batches.values()
            ],
            "calls": dict(self._calls),
        }

    def admin_action(self, method: str, action: str, payload: Any) -> tuple[int, Any] | None:
        if method == "POST" and action == "members":
            member = self.add_member(
                payload["email_address"],
                payload.get("status", "subscribed"),
                list_id=payload.get("list_id"),
                merge_fields=payload.get("merge_fields"),
                tags=payload.get("tags", ()),
            )
            return 200, self._member_json(member)
        if method == "POST" and action in ("compliance", "forget"):
            emails = payload.get("emails") or [payload["email_address"]]
            (self.mark_compliance if action == "compliance" else self.forget)(*emails)
            return 200, {"ok": True}
        return None

    # -- HTTP plumbing -------------------------------------------------------------------------
    _ROUTES: ClassVar[list[tuple[re.Pattern[str], dict[str, str]]]] = [
        (re.compile(r"^/ping$"), {"GET": "ping.get"}),
        (re.compile(r"^/lists/(?P<list_id>[^/]+)$"), {"GET": "lists.get_list", "POST": "lists.batch_list_members"}),
        (
            re.compile(r"^/lists/(?P<list_id>[^/]+)/members$"),
            {"POST": "lists.add_list_member", "GET": "lists.get_list_members_info"},
        ),
        (
            re.compile(r"^/lists/(?P<list_id>[^/]+)/members/(?P<member>[^/]+)$"),
            {"GET": "lists.get_list_member", "PUT": "lists.set_list_member", "PATCH": "lists.update_list_member"},
        ),
        (
            re.compile(r"^/lists/(?P<list_id>[^/]+)/members/(?P<member>[^/]+)/tags$"),
            {"GET": "lists.get_list_member_tags", "POST": "lists.update_list_member_tags"},
        ),
        (
            re.compile(r"^/lists/(?P<list_id>[^/]+)/members/(?P<member>[^/]+)/events$"),
            {"GET": "lists.get_list_member_events", "POST": "lists.create_list_member_event"},
        ),
        (re.compile(r"^/batches$"), {"GET": "batches.list", "POST": "batches.start"}),
        (re.compile(r"^/batches/(?P<batch_id>[^/]+)$"), {"GET": "batches.status"}),
    ]
    _RESULTS = re.compile(r"^/__batch_results/(?P<batch_id>[^/]+)\.tar\.gz$")

    @staticmethod
    def _relative(path: str) -> str | None:
        if path == "/3.0" or path.startswith("/3.0/"):
            return path[len("/3.0") :] or "/"
        return None

    def _route(self, method: str, relative: str) -> tuple[str | None, dict[str, str], bool]:
        """(endpoint name, path params, path known)."""
        for pattern, methods in self._ROUTES:
            match = pattern.match(relative)
            if match:
                return methods.get(method), {k: unquote(v) for k, v in match.groupdict().items()}, True
        return None, {}, False

    def endpoint_name(self, method: str, path: str) -> str | None:
        relative = self._relative(path)
        return self._route(method, relative)[0] if relative is not None else None

    def is_public(self, path: str) -> bool:
        return bool(self._RESULTS.match(path))

    def concurrency_key(self, scope: dict) -> str:
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                return value.decode("latin-1")
        return ""

    def refuse(self, scope: dict, key: str, in_flight: int) -> tuple[int, list, bytes] | None:
        if self.max_connections is not None and in_flight > self.max_connections:
            return self._problem_triplet(MailchimpProblem.of(TOO_MANY_REQUESTS))
        return None

    def error_response(self, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if status == 429:
            return self._problem_triplet(MailchimpProblem.of(TOO_MANY_REQUESTS))
        titles = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        problem = MailchimpProblem.of(INTERNAL_ERROR)
        if status in titles:
            problem = MailchimpProblem(status, titles[status], INTERNAL_ERROR[2])
        return self._problem_triplet(problem)

    def _problem_triplet(self, problem: MailchimpProblem) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        instance = str(uuid.uuid4())
        headers = [
            (b"content-type", b"application/problem+json; charset=utf-8"),
            (b"x-request-id", instance.encode()),
            (b"link", b'<https://us21.api.mailchimp.com/schema/3.0/ProblemDetailDocument.json>; rel="describedBy"'),
        ]
        return problem.status, headers, json.dumps(problem.body(instance)).encode()

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "").strip()
        if not auth:
            raise MailchimpProblem.of(API_KEY_MISSING)
        scheme, _, credentials = auth.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                _user, _, key = base64.b64decode(credentials.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise MailchimpProblem.of(API_KEY_INVALID) from None
            if not key:
                raise MailchimpProblem.of(API_KEY_MISSING)
            if key == self.api_key:
                return
        elif scheme in ("bearer", "oauth") and credentials.strip() in self.access_tokens:
            return
        raise MailchimpProblem.of(API_KEY_INVALID)

    async def api(self, scope: Scope, receive: Any, send: Any) -> None:
        raw = await read_body(receive)
        path = scope["path"]
        if self.is_public(path):
            await self._serve_results(path, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            relative = self._relative(path)
            if relative is None:
                raise MailchimpProblem.of(NOT_FOUND)
            self._authenticate(headers)
            body: Any = None
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise MailchimpProblem(
                        400, "JSON Parse Error", "We encountered an unspecified JSON parsing error."
                    ) from None
            with self._lock:
                status, payload = self._execute(scope["method"], relative, query, body)
        except MailchimpProblem as problem:
            await send_response(send, *self._problem_triplet(problem))
            return
        if payload is None:
            await send_response(send, status, [], b"")
        else:
            data = json.dumps(payload).encode()
            await send_response(send, status, [(b"content-type", b"application/json; charset=utf-8")], data)

    async def _serve_results(self, path: str, send: Any) -> None:
        match = self._RESULTS.match(path)
        with self._lock:
            batch = self._batches.get(match.group("batch_id")) if match else None
            archive = batch.archive if batch is not None and batch.status == "finished" else None
        if archive is None:
            await send_response(send, 404, [(b"content-type", b"text/plain")], b"NoSuchKey")
        else:
            await send_response(send, 200, [(b"content-type", b"application/x-gzip")], archive)

    # -- the API itself (called with the lock held) --------------------------------------------
    def _execute(self, method: str, relative: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        endpoint, params, known = self._route(method, relative)
        if not known:
            raise MailchimpProblem.of(NOT_FOUND)
        if endpoint is None:
            raise MailchimpProblem.of(METHOD_NOT_ALLOWED)
        if endpoint == "ping.get":
            return 200, {"health_status": "Everything's Chimpy!"}
        if endpoint.startswith("batches."):
            return self._batches_endpoint(endpoint, params, body)
        list_id = params["list_id"]
        if list_id not in self._members:
            raise MailchimpProblem.of(NOT_FOUND)
        members = self._members[list_id]
        skip_merge = query.get("skip_merge_validation", "").lower() == "true"
        if endpoint == "lists.get_list":
            counts = {s: sum(1 for m in members.values() if m.status == s) for s in MEMBER_STATUSES}
            return 200, {
                "id": list_id,
                "name": f"Audience {list_id}",
                "stats": {
                    "member_count": counts["subscribed"],
                    "unsubscribe_count": counts["unsubscribed"],
                    "cleaned_count": counts["cleaned"],
                },
                "_links": [],
            }
        if endpoint == "lists.batch_list_members":
            return 200, self._batch_subscribe(list_id, self._object(body), query, skip_merge)
        if endpoint == "lists.get_list_members_info":
            rows = [self._member_json(m) for m in members.values()]
            return 200, {"members": rows, "list_id": list_id, "total_items": len(rows), "_links": []}
        if endpoint == "lists.add_list_member":
            data = self._object(body)
            email = str(data.get("email_address") or "")
            if subscriber_hash(email) in members:
                raise _member_exists(email)
            return 200, self._member_json(self._upsert(list_id, subscriber_hash(email), data, skip_merge, via="post"))

        key, path_email = self._identify(params["member"])
        if endpoint == "lists.set_list_member":
            return 200, self._member_json(
                self._upsert(list_id, key, self._object(body), skip_merge, path_email=path_email)
            )
        member = members.get(key)
        if member is None:
            raise MailchimpProblem.of(NOT_FOUND)
        if endpoint == "lists.get_list_member":
            return 200, self._member_json(member)
        if endpoint == "lists.update_list_member":
            return 200, self._member_json(self._upsert(list_id, key, self._object(body), skip_merge, via="patch"))
        if endpoint == "lists.get_list_member_tags":
            tags = [{"id": _tag_id(t), "name": t, "date_added": _iso(member.last_changed)} for t in member.tags]
            return 200, {"tags": tags, "total_items": len(tags), "_links": []}
        if endpoint == "lists.update_list_member_tags":
            self._update_tags(member, self._object(body))
            return 204, None
        if endpoint == "lists.get_list_member_events":
            rows = [
                {"name": e.name, "properties": e.properties, "occurred_at": e.occurred_at or _iso(e.received_at)}
                for e in self._events
                if e.list_id == list_id and e.subscriber_hash == key
            ]
            return 200, {"events": rows, "total_items": len(rows), "_links": []}
        if endpoint == "lists.create_list_member_event":
            self._add_event(member, self._object(body))
            return 204, None
        raise MailchimpProblem.of(METHOD_NOT_ALLOWED)  # pragma: no cover - every route is handled

    @staticmethod
    def _object(body: Any) -> dict[str, Any]:
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise _invalid(
                errors=[{"field": "", "message": "Schema describes object, " + type(body).__name__ + " found instead"}]
            )
        return body

    @staticmethod
    def _identify(member: str) -> tuple[str, str | None]:
        """Path identifier -> (subscriber hash, email if the path gave an email)."""
        if "@" in member:
            return subscriber_hash(member), member.strip()
        return member.lower(), None

    def _email_problem(self, email: str) -> MailchimpProblem | None:
        if not email or not EMAIL.match(email):
            return _invalid("Please provide a valid email address.")
        if email.lower() in self.fake_emails:
            return _invalid(f"{email} looks fake or invalid, please enter a real email address.")
        return None

    def _upsert(
        self,
        list_id: str,
        key: str,
        data: dict[str, Any],
        skip_merge: bool,
        *,
        via: str = "put",
        path_email: str | None = None,
    ) -> Member:
        members = self._members[list_id]
        existing = members.get(key)
        email = str(data.get("email_address") or "").strip() or (path_email or "")
        if existing is None:
            if not email:
                raise _invalid(errors=[{"field": "email_address", "message": "This value should not be blank."}])
            problem = self._email_problem(email)
            if problem:
                raise problem
            if subscriber_hash(email) != key:
                if subscriber_hash(email) in members:
                    raise _member_exists(email)
                if self.strict_subscriber_hash:
                    raise _invalid(
                        errors=[
                            {
                                "field": "email_address",
                                "message": f"The subscriber hash {key} is not the MD5 of the lower-cased email address {email!r} ({subscriber_hash(email)}).",
                            }
                        ]
                    )
                key = subscriber_hash(email)
            if email.lower() in self._forgotten:
                raise _forgotten(email)
            status = data.get("status") if via == "post" else (data.get("status") or data.get("status_if_new"))
            if not status:
                field_name = "status" if via == "post" else "status_if_new"
                raise _invalid(errors=[{"field": field_name, "message": "This value should not be blank."}])
        else:
            if email and subscriber_hash(email) != key:
                # A new address for this member: Mailchimp treats it as an email change.
                problem = self._email_problem(email)
                if problem:
                    raise problem
                if subscriber_hash(email) in members:
                    raise _invalid(
                        errors=[
                            {
                                "field": "email_address",
                                "message": f'{email} is already in this list with a status of "{members[subscriber_hash(email)].status}".',
                            }
                        ]
                    )
            status = data.get("status") or existing.status
        if status not in MEMBER_STATUSES:
            raise _invalid(
                errors=[
                    {
                        "field": "status",
                        "message": f"Value is not one of the allowed values: {', '.join(MEMBER_STATUSES)}",
                    }
                ]
            )
        subscribing = status in ("subscribed", "pending") and (existing is None or existing.status != status)
        if subscribing and (email or "").lower() in self._compliance and status == "subscribed":
            raise _compliance(email)
        if existing is not None and status == "subscribed" and existing.status in ("unsubscribed", "cleaned"):
            raise _compliance(existing.email_address)
        if existing is not None and status == "pending" and existing.status == "cleaned":
            raise _compliance(existing.email_address)
        merge_fields = data.get("merge_fields")
        errors = self._merge_field_errors(merge_fields, new=existing is None, skip=skip_merge)
        if errors:
            raise _invalid("Your merge fields were invalid.", errors)

        now = _now()
        if existing is None:
            member = Member(
                list_id=list_id,
                email_address=email,
                status=status,
                timestamp_signup=now,
                timestamp_opt=now if status == "subscribed" else None,
                created_by="api",
            )
        else:
            member = existing
            if email and subscriber_hash(email) != key:
                del members[key]
                member.email_address = email
            if status != member.status and status == "subscribed":
                member.timestamp_opt = now
            member.status = status
        for tag, value in (merge_fields or {}).items():
            if tag in self.merge_field_types or self.unknown_merge_fields == "reject":
                member.merge_fields[tag] = value
        for attr in ("language", "vip", "email_type"):
            if attr in data:
                setattr(member, attr, data[attr])
        if isinstance(data.get("interests"), dict):
            member.interests.update(data["interests"])
        if via == "post" and isinstance(data.get("tags"), list):  # POST .../members accepts tag names
            for name in data["tags"]:
                if isinstance(name, str) and name not in member.tags:
                    member.tags.append(name)
        member.last_changed = now
        members[member.id] = member
        return member

    def _merge_field_errors(self, merge_fields: Any, *, new: bool, skip: bool) -> list[dict[str, str]]:
        if merge_fields is None:
            merge_fields = {}
        if not isinstance(merge_fields, dict):
            return [
                {
                    "field": "merge_fields",
                    "message": "Schema describes object, " + type(merge_fields).__name__ + " found instead",
                }
            ]
        errors = []
        for tag, value in merge_fields.items():
            kind = self.merge_field_types.get(tag)
            if kind is None:
                if self.unknown_merge_fields == "reject":
                    errors.append({"field": tag, "message": f"The merge field {tag} does not exist in this audience."})
                continue
            message = _merge_value_problem(kind, value)
            if message and not (skip and value in (None, "")):
                errors.append({"field": tag, "message": message})
            elif tag in self.required_merge_fields and value in (None, "") and not skip:
                errors.append({"field": tag, "message": "Please enter a value"})
        if new and not skip:
            for tag in sorted(self.required_merge_fields):
                if tag not in merge_fields:
                    errors.append({"field": tag, "message": "Please enter a value"})
        return errors

    def _update_tags(self, member: Member, data: dict[str, Any]) -> None:
        tags = data.get("tags")
        if not isinstance(tags, list):
            raise _invalid(errors=[{"field": "tags", "message": "This value should not be blank."}])
        errors = []
        for index, tag in enumerate(tags):
            if not isinstance(tag, dict) or not isinstance(tag.get("name"), str) or not tag["name"].strip():
                errors.append({"field": f"tags.item:{index}.name", "message": "This value should not be blank."})
            elif len(tag["name"]) > 100:
                errors.append(
                    {
                        "field": f"tags.item:{index}.name",
                        "message": "This value is too long. It should have 100 characters or less.",
                    }
                )
            elif tag.get("status") not in ("active", "inactive"):
                errors.append(
                    {
                        "field": f"tags.item:{index}.status",
                        "message": "Value is not one of the allowed values: active, inactive",
                    }
                )
        if errors:
            raise _invalid(errors=errors)
        for tag in tags:
            name = tag["name"].strip()
            if tag["status"] == "active" and name not in member.tags:
                member.tags.append(name)
            elif tag["status"] == "inactive" and name in member.tags:
                member.tags.remove(name)
        member.last_changed = _now()
        self._tag_history.append(
            TagUpdate(
                member.list_id,
                member.email_address,
                [dict(t) for t in tags],
                bool(data.get("is_syncing", False)),
                _now(),
            )
        )

    def _add_event(self, member: Member, data: dict[str, Any]) -> None:
        name = data.get("name")
        errors = []
        if not isinstance(name, str) or not EVENT_NAME.match(name):
            errors.append(
                {
                    "field": "name",
                    "message": "Event names must be 2-30 characters long and contain only letters, numbers, underscores and dashes.",
                }
            )
        properties = data.get("properties", {})
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            errors.append(
                {
                    "field": "properties",
                    "message": "Schema describes object, " + type(properties).__name__ + " found instead",
                }
            )
        else:
            for key, value in properties.items():
                if not isinstance(value, str):
                    errors.append(
                        {
                            "field": f"properties.{key}",
                            "message": "Schema describes string, " + type(value).__name__ + " found instead",
                        }
                    )
        occurred_at = data.get("occurred_at")
        if occurred_at is not None:
            try:
                datetime.fromisoformat(str(occurred_at))
            except ValueError:
                errors.append({"field": "occurred_at", "message": "This value is not a valid datetime."})
        if errors:
            raise _invalid(errors=errors)
        self._events.append(
            MemberEvent(
                list_id=member.list_id,
                email_address=member.email_address,
                subscriber_hash=member.id,
                name=name,  # type: ignore[arg-type]
                properties=dict(properties),
                is_syncing=bool(data.get("is_syncing", False)),
                occurred_at=occurred_at,
                received_at=_now(),
            )
        )

    def _batch_subscribe(
        self, list_id: str, data: dict[str, Any], query: dict[str, str], skip_merge: bool
    ) -> dict[str, Any]:
        members_in = data.get("members")
        if not isinstance(members_in, list):
            raise _invalid(errors=[{"field": "members", "message": "This value should not be blank."}])
        if len(members_in) > BATCH_SUBSCRIBE_MAX:
            raise _invalid(
                errors=[
                    {
                        "field": "members",
                        "message": f"Schema describes array, {len(members_in)} items found, maximum {BATCH_SUBSCRIBE_MAX} allowed",
                    }
                ]
            )
        update_existing = bool(data.get("update_existing", False))
        skip_duplicates = query.get("skip_duplicate_check", "").lower() == "true"
        members = self._members[list_id]
        created: list[Member] = []
        updated: list[Member] = []
        errors: list[dict[str, str]] = []
        seen: set[str] = set()

        def fail(email: str, error: str, code: str = "ERROR_GENERIC", field: str = "", field_message: str = "") -> None:
            errors.append(
                {
                    "email_address": email,
                    "error": error,
                    "error_code": code,
                    "field": field,
                    "field_message": field_message,
                }
            )

        for item in members_in:
            if not isinstance(item, dict):
                fail("", "Schema describes object", field="members")
                continue
            email = str(item.get("email_address") or "").strip()
            problem = self._email_problem(email)
            if problem:
                fail(email, problem.detail, field="email_address", field_message=problem.detail)
                continue
            key = subscriber_hash(email)
            if key in seen:
                if not skip_duplicates:
                    fail(email, f"{email} was included more than once in this request.")
                continue
            seen.add(key)
            existing = members.get(key)
            if existing is not None and not update_existing:
                fail(
                    email,
                    f"{email} is already a list member, do you want to update? please provide update_existing:true in the request body",
                    "ERROR_CONTACT_EXISTS",
                )
                continue
            if not item.get("status"):
                fail(
                    email,
                    "Please provide a status for each member.",
                    field="status",
                    field_message="This value should not be blank.",
                )
                continue
            try:
                member = self._upsert(list_id, key, item, skip_merge, via="batch")
            except MailchimpProblem as exc:
                first = (exc.errors or [{}])[0]
                fail(email, exc.detail, field=first.get("field", ""), field_message=first.get("message", ""))
                continue
            if existing is None:
                member.created_by = "batch"
                created.append(member)
            else:
                updated.append(member)
        return {
            "new_members": [self._member_json(m) for m in created],
            "updated_members": [self._member_json(m) for m in updated],
            "errors": errors,
            "total_created": len(created),
            "total_updated": len(updated),
            "error_count": len(errors),
            "_links": [],
        }

    # -- /batches ------------------------------------------------------------------------------
    def _batches_endpoint(self, endpoint: str, params: dict[str, str], body: Any) -> tuple[int, Any]:
        if endpoint == "batches.start":
            data = self._object(body)
            operations = data.get("operations")
            if not isinstance(operations, list) or not operations:
                raise _invalid(errors=[{"field": "operations", "message": "This value should not be blank."}])
            errors = []
            for index, op in enumerate(operations):
                if not isinstance(op, dict) or str(op.get("method", "")).upper() not in (
                    "GET",
                    "POST",
                    "PUT",
                    "PATCH",
                    "DELETE",
                ):
                    errors.append(
                        {
                            "field": f"operations.item:{index}.method",
                            "message": "Value is not one of the allowed values",
                        }
                    )
                elif not isinstance(op.get("path"), str) or not op["path"]:
                    errors.append(
                        {"field": f"operations.item:{index}.path", "message": "This value should not be blank."}
                    )
            if errors:
                raise _invalid(errors=errors)
            batch = Batch(id=secrets.token_hex(5), operations=[dict(op) for op in operations], submitted_at=_now())
            self._batches[batch.id] = batch
            return 200, self._batch_json(batch)
        if endpoint == "batches.list":
            rows = [self._batch_json(b) for b in self._batches.values()]
            return 200, {"batches": rows, "total_items": len(rows), "_links": []}
        found = self._batches.get(params["batch_id"])
        if found is None:
            raise MailchimpProblem.of(NOT_FOUND)
        if found.status != "finished":
            found.polls += 1
            if found.polls > self.batch_pending_polls:
                self._run_batch(found)
            else:
                found.status = "started"
        return 200, self._batch_json(found)

    def _run_batch(self, batch: Batch) -> None:
        if batch.status == "finished":
            return
        results: list[dict[str, Any]] = []
        for op in batch.operations:
            method = str(op["method"]).upper()
            path = "/" + str(op["path"]).lstrip("/")
            if path.startswith("/3.0/"):
                path = path[len("/3.0") :]
            query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (op.get("params") or {}).items()}
            try:
                body = op.get("body")
                if isinstance(body, str):
                    body = json.loads(body) if body.strip() else None
                status, payload = self._execute(method, path, query, body)
                response = json.dumps(payload) if payload is not None else ""
            except MailchimpProblem as problem:
                status, response = problem.status, json.dumps(problem.body(str(uuid.uuid4())))
            except ValueError:
                unparsed = MailchimpProblem(400, "JSON Parse Error", "We encountered an unspecified JSON parsing error.")
                status, response = 400, json.dumps(unparsed.body(str(uuid.uuid4())))
            results.append({"status_code": status, "operation_id": op.get("operation_id"), "response": response})
        batch.results = results
        batch.errored_operations = sum(1 for r in results if r["status_code"] >= 400)
        batch.status = "finished"
        batch.completed_at = _now()
        batch.archive = _tar_gz({f"{batch.id}/{batch.id}.json": json.dumps(results).encode()})

    def _batch_json(self, batch: Batch) -> dict[str, Any]:
        finished = batch.status == "finished"
        return {
            "id": batch.id,
            "status": batch.status,
            "total_operations": len(batch.operations),
            "finished_operations": len(batch.operations) if finished else 0,
            "errored_operations": batch.errored_operations if finished else 0,
            "submitted_at": _iso(batch.submitted_at),
            "completed_at": _iso(batch.completed_at),
            "response_body_url": f"{self.url}/__batch_results/{batch.id}.tar.gz" if finished else "",
            "_links": [],
        }

    def _member_json(self, member: Member) -> dict[str, Any]:
        merge_fields = {tag: "" for tag in self.merge_field_types}
        merge_fields.update(member.merge_fields)
        full_name = " ".join(str(merge_fields.get(t) or "") for t in ("FNAME", "LNAME")).strip()
        return {
            "id": member.id,
            "email_address": member.email_address,
            "unique_email_id": member.unique_email_id,
            "contact_id": member.contact_id,
            "full_name": full_name,
            "web_id": member.web_id,
            "email_type": member.email_type,
            "status": member.status,
            "consents_to_one_to_one_messaging": True,
            "merge_fields": merge_fields,
            "interests": dict(member.interests),
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": "",
            "timestamp_signup": _iso(member.timestamp_signup),
            "ip_opt": "",
            "timestamp_opt": _iso(member.timestamp_opt),
            "member_rating": 2,
            "last_changed": _iso(member.last_changed),
            "language": member.language,
            "vip": member.vip,
            "email_client": "",
            "location": {
                "latitude": 0,
                "longitude": 0,
                "gmtoff": 0,
                "dstoff": 0,
                "country_code": "",
                "timezone": "",
                "region": "",
            },
            "source": member.source,
            "tags_count": len(member.tags),
            "tags": [{"id": _tag_id(t), "name": t} for t in member.tags],
            "list_id": member.list_id,
            "_links": [],
        }


def _merge_value_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` does not fit a merge field of type ``kind`` (None if it does)."""
    if value is None or value == "":
        return None
    if kind == "number":
        if isinstance(value, bool):
            return "Please enter a number"
        if isinstance(value, (int, float)):
            return None
        try:
            float(str(value))
        except ValueError:
            return "Please enter a number"
        return None
    if kind == "date":
        text = str(value)
        for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
            try:
                datetime.strptime(text, fmt)
                return None
            except ValueError:
                continue
        return "Please enter a valid date"
    if kind == "birthday":
        match = re.fullmatch(r"(\d{2})/(\d{2})", str(value))
        if not match:
            return "Please enter a valid birthday (MM/DD)"
        try:
            date(2000, int(match.group(1)), int(match.group(2)))  # 2000: Feb 29 exists
        except ValueError:
            return "Please enter a valid birthday (MM/DD)"
        return None
    if kind == "address":
        if not isinstance(value, dict) or not all(value.get(k) for k in ("addr1", "city", "state", "zip")):
            return "Please enter a complete address"
        return None
    if isinstance(value, (dict, list)):
        return "Please enter a value"
    if len(str(value)) > 255:
        return "Please enter a value no longer than 255 characters"
    return None


def _tar_gz(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_batch_results(archive: bytes) -> list[dict[str, Any]]:
    """The operation results inside a ``response_body_url`` archive (real or fake)."""
    results: list[dict[str, Any]] = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for info in tar.getmembers():
            if info.isfile() and info.name.endswith(".json"):
                handle = tar.extractfile(info)
                if handle is not None:
                    results.extend(json.loads(handle.read()))
    return results


__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_LIST_ID",
    "DEFAULT_MERGE_FIELDS",
    "MailchimpProblem",
    "MailchimpServer",
    "Member",
    "MemberEvent",
    "TagUpdate",
    "read_batch_results",
    "subscriber_hash",
]
