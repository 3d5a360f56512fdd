"""Mailchimp's Marketing API through the real ``mailchimp_marketing`` SDK, its quirks handled.

The SDK (3.0.x) bites in three ways, each handled here and tested in ``tests/integration/test_mailchimp.py``:

1. It builds every URL as ``host + path`` and then replaces the word ``server`` *anywhere* in it
   by the configured data center, so a base URL (or path) containing "server" is mangled. Our
   client sets ``host`` to the full base URL (``MAILCHIMP_API_BASE_URL`` or
   ``https://<prefix>.api.mailchimp.com/3.0``) and turns the replacement off.
2. It opens a new connection per call (``requests.post``, no session) with a 120 s default
   time-out. Ours sends through one ``requests.Session`` per client (connections reused) with
   ``MAILCHIMP_TIMEOUT_SECONDS``.
3. An error answer with an empty body is *returned* (a ``requests.Response``), not raised; and
   errors are ``application/problem+json``, which it leaves as a string. :func:`call` turns both
   into :class:`MailchimpCallError` with the status, title and detail.

A campaign step (:class:`MailchimpChannel`): upsert the member (``PUT``, ``status_if_new:
subscribed``: never resubscribes anyone), apply the tags, then post the event. The first two are
idempotent, so any failure of theirs may be retried; the event is not, so once it may have reached
Mailchimp (no answer) the delivery ends ``unknown``. The send ledger claims each occurrence once,
and the event carries ``occurrence_key`` among its properties. The delivery's provider id is the
member's ``unique_email_id`` in the audience (Mailchimp's random id, what its search finds), never
the subscriber hash: that is the MD5 of the address, computed for each call and never stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import requests
from mailchimp_marketing.api.lists_api import ListsApi
from mailchimp_marketing.api_client import ApiClient, ApiClientError
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from core.settings import MailchimpTarget
from models.member import MailchimpStatus
from workers.channels.base import (
    AmbiguousFailure,
    ChannelFailure,
    OutgoingMailchimp,
    PermanentFailure,
    RetryableFailure,
)
from workers.rate_limit import ConnectionSlots, RateLimited

#: Answers meaning Mailchimp will not (re)subscribe this address: recorded, never retried.
REFUSAL_TITLES = ("Member In Compliance State", "Forgotten Email Not Subscribed")
REFUSED_STATUSES = ("unsubscribed", "cleaned")
_EMAIL = re.compile(r"[^@\s'\"]+@[^@\s'\"]+\.[A-Za-z]{2,}")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address. Only for the URL of a call: from it
    and a list of candidate addresses the address is found, so it is never stored or logged."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


def masked(text: str) -> str:
    return _EMAIL.sub("<email>", text or "")


class MailchimpCallError(Exception):
    """One failed API call: an HTTP error (``status``), or no answer at all (``network``)."""

    def __init__(self, status: int | None, title: str = "", detail: str = "", network: BaseException | None = None):
        self.status, self.title, self.detail, self.network = status, title, masked(detail), network
        super().__init__(f"{status} {title}: {self.detail}" if status else f"no answer: {type(network).__name__}")

    @property
    def never_reached(self) -> bool:
        """No connection was ever opened: the request cannot have had an effect."""
        if isinstance(self.network, (requests.exceptions.ConnectTimeout, RateLimited)):
            return True
        reason = getattr(self.network.args[0], "reason", None) if self.network and self.network.args else None
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500 or self.status in (401, 403)

    @property
    def refusal(self) -> bool:
        return self.title in REFUSAL_TITLES


class _ApiClient(ApiClient):
    """The SDK's ``ApiClient`` with quirks 1 and 2 above handled."""

    def __init__(self, target: MailchimpTarget, session: requests.Session, slots: ConnectionSlots | None):
        super().__init__({"api_key": target.api_key, "server": target.server_prefix, "timeout": target.timeout})
        self.host = target.api_base_url
        self.server = ""  # falsy: call_api no longer replaces "server" in the URL
        self.session = session
        self.slots = slots

    def request(self, method: str, url: str, query_params: Any = None, headers: dict[str, str] | None = None,
                body: Any = None) -> requests.Response:
        data = json.dumps(body) if method in ("POST", "PUT", "PATCH") else None
        # The time-out bounds each wait on the socket, not the whole request: the lease allows two.
        with self.slots.held(lease=2 * self.timeout + 5) if self.slots else nullcontext():
            return self.session.request(method, url, params=query_params, headers=headers, data=data,
                                        auth=("user", self.api_key), timeout=self.timeout)


def lists_api(target: MailchimpTarget, *, pool_size: int = 1,
              slots: ConnectionSlots | None = None) -> tuple[ListsApi, requests.Session]:
    """The SDK's Lists API on a session of its own (close the session when done); with ``slots``,
    each request waits for a free connection slot first (Mailchimp allows 10 per API key at once)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, pool_block=True)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return ListsApi(_ApiClient(target, session, slots)), session


def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an SDK method; return its data (``None`` for an empty 2xx) or raise MailchimpCallError."""
    try:
        result = method(*args, **kwargs)
    except ApiClientError as exc:
        if exc.status_code is None:  # no HTTP answer: ``text`` is the requests exception
            raise MailchimpCallError(None, network=exc.text if isinstance(exc.text, BaseException) else None) from None
        title, detail = "", str(exc.text)
        try:
            problem = json.loads(exc.text) if isinstance(exc.text, str) else exc.text
            title, detail = problem.get("title", ""), problem.get("detail", "") or detail
            if problem.get("errors"):
                detail += " " + "; ".join(f"{e.get('field')}: {e.get('message')}" for e in problem["errors"][:3])
        except (ValueError, AttributeError, TypeError):
            pass
        raise MailchimpCallError(exc.status_code, title, detail[:400]) from None
    if isinstance(result, requests.Response):  # quirk 3: an empty answer is returned, even an error
        if result.ok:
            return None
        raise MailchimpCallError(result.status_code, result.reason or "", "empty answer")
    return result


def failure_for(error: MailchimpCallError, *, idempotent: bool) -> ChannelFailure:
    if isinstance(error.network, RateLimited):  # no connection slot came free: nothing was sent
        return RetryableFailure("mailchimp_busy", f"no free Mailchimp connection slot ({error.network})")
    if error.status is None:
        if error.never_reached:
            return RetryableFailure("mailchimp_unreachable", type(error.network).__name__)
        if idempotent:  # it may have been applied: applying it again changes nothing
            return RetryableFailure("mailchimp_no_answer", type(error.network).__name__)
        return AmbiguousFailure("mailchimp_no_answer", type(error.network).__name__)
    detail = f"mailchimp {error.status} {error.title}: {error.detail}"[:500]
    if error.refusal:
        return PermanentFailure("mailchimp_refused", detail, {
            "mailchimp_status": MailchimpStatus.REFUSED, "mailchimp_reason": error.title[:200]})
    if error.status in (401, 403):
        return RetryableFailure("mailchimp_auth_failed", detail)
    if error.retryable:
        return RetryableFailure("mailchimp_busy" if error.status == 429 else "mailchimp_error", detail)
    return PermanentFailure("mailchimp_rejected", detail)


class MailchimpChannel:
    name = "mailchimp"

    def __init__(self, target: MailchimpTarget, slots: ConnectionSlots | None = None):
        self.target = target
        self.lists, self._session = lists_api(target, slots=slots)

    def send(self, step: OutgoingMailchimp) -> str | None:
        key = subscriber_hash(step.email)
        list_id = self.target.list_id
        upsert = {"email_address": step.email, "status_if_new": "subscribed", "merge_fields": step.merge_fields}
        member = self._call(self.lists.set_list_member, list_id, key, upsert, idempotent=True) or {}
        status = member.get("status")
        if status in REFUSED_STATUSES:
            raise PermanentFailure("mailchimp_refused", f"the member is {status} in Mailchimp", {
                "mailchimp_status": MailchimpStatus.REFUSED, "mailchimp_reason": f"{status} in Mailchimp"})
        if step.tags:
            tags = {"tags": [{"name": tag, "status": "active"} for tag in step.tags]}
            self._call(self.lists.update_list_member_tags, list_id, key, tags, idempotent=True)
        if step.event:
            event = {"name": step.event, "properties": {**step.properties, "occurrence_key": step.occurrence_key}}
            self._call(self.lists.create_list_member_event, list_id, key, event, idempotent=False)
        unique_id = member.get("unique_email_id")
        return str(unique_id)[:200] if unique_id else None

    @staticmethod
    def _call(method: Callable[..., Any], *args: Any, idempotent: bool) -> Any:
        try:
            return call(method, *args)
        except MailchimpCallError as error:
            raise failure_for(error, idempotent=idempotent) from None

    def close(self) -> None:
        self._session.close()
