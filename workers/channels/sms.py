"""SMS through Twilio's Messaging Service, with every answer sorted.

The real ``twilio`` SDK, pointed at ``TWILIO_API_BASE_URL`` (``client.api.base_url``), always with
a time-out (the SDK's default is none), never retrying by itself: a retry is a delivery put back
in line by ``workers/delivery.py``. Each send first takes a slot from the shared rate limiter.

How an answer is sorted:

=====================================================  =========================================
Twilio says                                            outcome
=====================================================  =========================================
201                                                    sent; the message SID is the provider id
21610 (the member replied STOP)                        failed ``sms_opted_out``; SMS consent
                                                       withdrawn, source ``twilio:21610``
21211 (not a valid number)                             failed ``sms_invalid_number``; phone
                                                       marked ``invalid``
21614 (not a mobile number)                            failed ``sms_not_mobile``; phone marked
                                                       ``unreachable``
429 / 20429, 5xx; no connection could be opened        retried later (bounded backoff)
401 / 403 (credentials)                                retried later, then ``retries_exhausted``
other 4xx                                              failed ``sms_rejected`` (code in detail)
no answer once the request was sent (time-out, a       ``unknown``: Twilio may have the message;
connection dropped mid-answer)                         never re-sent blindly
=====================================================  =========================================

Twilio's error text can quote the number it refused: details keep the code and a text with any
phone number masked.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from core.settings import TwilioTarget
from models.base import utcnow
from models.member import ContactStatus
from workers.channels.base import (
    AmbiguousFailure,
    OutgoingSms,
    PermanentFailure,
    RetryableFailure,
)
from workers.rate_limit import RateLimited, RateLimiter

OPTED_OUT, INVALID_NUMBER, NOT_MOBILE = 21610, 21211, 21614
_NUMBER = re.compile(r"\+?\d[\d ().-]{5,}\d")

# The SDK logs every request and response at INFO (URLs and headers): noise in a worker's log.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


def masked(text: str) -> str:
    return _NUMBER.sub("<number>", text or "")


def failure_for_code(code: int | None, status: int | None, text: str, *,
                     now: datetime | None = None) -> PermanentFailure | RetryableFailure:
    """The failure a Twilio error code means, with what it teaches about the member.

    Shared by the synchronous answer and the status callback (a Messaging Service may accept a
    message and report 21610 or 21614 later)."""
    detail = f"twilio {status or '-'} {code or '-'}: {masked(text)}"[:500]
    if code == OPTED_OUT:
        return PermanentFailure("sms_opted_out", detail, {
            "sms_opt_in": False, "sms_consent_at": now or utcnow(), "sms_consent_source": f"twilio:{OPTED_OUT}"})
    if code == INVALID_NUMBER:
        return PermanentFailure("sms_invalid_number", detail, {"phone_status": ContactStatus.INVALID})
    if code == NOT_MOBILE:
        return PermanentFailure("sms_not_mobile", detail, {"phone_status": ContactStatus.UNREACHABLE})
    if status is not None and (status == 429 or code == 20429 or status >= 500):
        return RetryableFailure("sms_provider_busy" if status == 429 else "sms_provider_error", detail)
    if status in (401, 403):
        return RetryableFailure("sms_auth_failed", detail)
    return PermanentFailure("sms_rejected", detail)


def never_reached(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request cannot have left: no connection was ever opened."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _environment_read_once(http: TwilioHttpClient, base_url: str) -> None:
    """Read what ``requests`` takes from the environment (``HTTPS_PROXY``/``NO_PROXY``,
    ``REQUESTS_CA_BUNDLE``) once, for the API's URL, instead of on every request.

    With ``trust_env`` on, ``requests`` scans the whole environment twice per request for proxies
    (a third of a send's CPU); the SDK's requests all go to ``base_url``, so the settings resolved
    here are the ones each request would resolve."""
    session = http.session
    if session is None:
        return
    resolved = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies = dict(resolved["proxies"])
    session.verify = resolved["verify"]
    session.trust_env = False  # also skips ~/.netrc, which never applies: the SDK always gives its auth


class TwilioSmsChannel:
    name = "sms"

    def __init__(self, target: TwilioTarget, limiter: RateLimiter, *, status_callback_url: str | None = None):
        self.target = target
        self.limiter = limiter
        self.status_callback_url = status_callback_url
        self._http = TwilioHttpClient(timeout=target.timeout)  # the SDK's default time-out is none
        _environment_read_once(self._http, target.api_base_url)
        self.client = Client(target.account_sid, target.auth_token, http_client=self._http)
        self.client.edge = self.client.region = None  # TWILIO_EDGE/REGION would rewrite the host
        self.client.api.base_url = target.api_base_url

    def send(self, sms: OutgoingSms) -> str:
        try:
            self.limiter.acquire()
        except RateLimited as exc:
            raise RetryableFailure("sms_rate_limited", str(exc)) from None
        options = {"to": sms.to, "messaging_service_sid": self.target.messaging_service_sid, "body": sms.body}
        if self.status_callback_url:
            options["status_callback"] = self.status_callback_url
        try:
            message = self.client.messages.create(**options)
        except TwilioRestException as exc:
            raise failure_for_code(exc.code, exc.status, exc.msg) from None
        except requests.exceptions.ReadTimeout:
            raise AmbiguousFailure("sms_no_answer", f"no answer within {self.target.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            if never_reached(exc):
                raise RetryableFailure("sms_provider_unreachable", type(exc).__name__) from None
            raise AmbiguousFailure("sms_connection_lost", type(exc).__name__) from None
        except requests.exceptions.RequestException as exc:
            raise AmbiguousFailure("sms_connection_lost", type(exc).__name__) from None
        return message.sid

    def close(self) -> None:
        if self._http.session is not None:
            self._http.session.close()
