"""SMS through Twilio's Messaging Service, with every answer sorted.

The real ``twilio`` SDK, pointed at ``TWILIO_API_BASE_URL`` (``client.api.base_url``), always with
a time-out (the SDK's default is none), never retrying by itself: a retry is a delivery put back
in line by ``workers/delivery.py``. Each send first takes a slot from the shared rate limiter.

How an answer is sorted (the error codes by ``workers/channels/sms_codes.py``, shared with the
status callback):

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
import threading
import time
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.auth import _basic_auth_str
from requests.utils import get_encoding_from_headers
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as _Urllib3Error
from urllib3.exceptions import ProxyError as _Urllib3ProxyError
from urllib3.exceptions import SSLError as _Urllib3SSLError
from urllib3.util import Timeout

from core.settings import TwilioTarget
from workers.channels.base import AmbiguousFailure, OutgoingSms, RetryableFailure
from workers.channels.sms_codes import failure_for_code
from workers.rate_limit import RateLimited, RateLimiter

# The SDK logs every request and response at INFO (URLs and headers): noise in a worker's log.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


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


#: Connections kept open to the API per process (the worker's threads share them; more threads
#: than this still send, over connections opened for the occasion).
POOL_CONNECTIONS = 32
#: A kept connection idle for longer than this is closed and opened again before it is used: a
#: server closes idle connections after a while (the stand-in's uvicorn after 5 s), and a close
#: that crossed a request on the wire would leave that text unknown. urllib3 already drops a
#: connection the server closed before it is reused; this keeps clear of the moment it closes.
IDLE_LIMIT = 4.0


class _IdleLimited:
    """A urllib3 pool that does not reuse a connection idle for more than :data:`IDLE_LIMIT`: it
    closes it and hands it out closed, as urllib3 does with a connection the server dropped (it
    connects again, and a connection that cannot be opened is one the request never left on)."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        since = getattr(conn, "idle_since", None)
        if since is not None and time.monotonic() - since > IDLE_LIMIT:
            conn.close()
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]


class _IdleLimitedHTTPPool(_IdleLimited, HTTPConnectionPool):
    pass


class _IdleLimitedHTTPSPool(_IdleLimited, HTTPSConnectionPool):
    pass


class _IdleLimitedAdapter(HTTPAdapter):
    """``requests``' adapter whose pools (direct, or through an HTTP proxy) are idle-limited."""

    POOLS = {"http": _IdleLimitedHTTPPool, "https": _IdleLimitedHTTPSPool}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        known = proxy in self.proxy_manager
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not known and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(self.POOLS)
        return manager


class PooledHttpClient(TwilioHttpClient):
    """The SDK's HTTP client (``http_client=``, the SDK's documented way to bring one's own), sending
    the SDK's form requests straight through the ``requests`` session's urllib3 connection pool.

    The SDK's :class:`TwilioHttpClient` builds each request the general way: a ``requests.Request``
    merged with the session's settings and hooks, prepared (headers, cookies, auth, URL re-parsed),
    sent by the session (cookie jar, redirects, hooks), and a ``requests.Response`` built around the
    answer (a send through the channel: 1.0-1.1 ms of CPU, 0.5 ms this way, connections reused
    across batches included). Here the same request is made directly: the SDK's headers,
    the same form body and ``Content-Length``, the Basic ``Authorization`` that ``requests`` writes,
    its default ``Accept-Encoding``, sent with the connection pool, TLS settings and proxy that the
    session's adapter gives for the URL (the environment read once, as above), the adapter's own
    retry policy (none once a connection is open) and time-outs; an answer is read whole. urllib3's
    errors become the ``requests`` exceptions the session would have raised, by the adapter's own
    rules, so the channel sorts them as before (:func:`as_requests_error`). The answer's text is
    decoded with the charset it declares (Twilio's JSON: UTF-8), UTF-8 when it declares none.

    Anything else (a query string, a JSON body, redirects followed) goes the SDK's general way.

    One instance serves every thread of a process: the pool hands each request its own connection
    (``POOL_CONNECTIONS`` kept open), and the connections outlive a delivery batch."""

    def __init__(self, base_url: str, timeout: float, *, connections: int = POOL_CONNECTIONS):
        super().__init__(timeout=timeout)
        session = self.session
        assert session is not None
        self._adapter = _IdleLimitedAdapter(pool_maxsize=connections)
        session.mount("https://", self._adapter)
        session.mount("http://", self._adapter)
        _environment_read_once(self, base_url)
        self._defaults = dict(session.headers)  # requests' own: User-Agent, Accept-Encoding, Accept, Connection
        self._targets: dict[str, tuple[Any, str]] = {}  # url -> (pool, what to ask the pool for)
        self._authorization: tuple[tuple[str, str], str] | None = None
        self._lock = threading.Lock()

    def request(self, method: str, url: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        content_type = (headers or {}).get("Content-Type")
        body = form_body(data) if data else None
        if params or allow_redirects or content_type in ("application/json", "application/scim+json") or body == "":
            return super().request(method, url, params=params, data=data, headers=headers, auth=auth,
                                   timeout=timeout, allow_redirects=allow_redirects)
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        method = method.upper()
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method, "url": url, "params": params, "headers": headers})
        sent = dict(self._defaults)  # the SDK's headers (spelt as requests spells its own) replace them
        sent.update(headers or {})
        if body:
            sent["Content-Length"] = str(len(body))
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif method not in ("GET", "HEAD"):
            sent["Content-Length"] = "0"
        if auth is not None:
            sent["Authorization"] = self._basic(auth)
        pool, target = self._target(url)
        try:
            answer = pool.urlopen(method=method, url=target, body=body, headers=sent, redirect=False,
                                  assert_same_host=False, preload_content=False, decode_content=False,
                                  retries=self._adapter.max_retries, timeout=Timeout(connect=timeout, read=timeout),
                                  chunked=False)
        except (_Urllib3Error, OSError) as exc:
            raise as_requests_error(exc) from exc
        try:
            content = answer.read(decode_content=True)
        except (_Urllib3Error, OSError) as exc:
            raise as_requests_error(exc, reading=True) from exc
        finally:
            answer.release_conn()
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(answer.status, answer)
        encoding = get_encoding_from_headers(answer.headers) or "utf-8"
        return Response(answer.status, str(content, encoding, errors="replace"), answer.headers)

    def _basic(self, auth: tuple[str, str]) -> str:
        known = self._authorization
        if known is None or known[0] != auth:
            known = self._authorization = (auth, _basic_auth_str(*auth))
        return known[1]

    def _target(self, url: str) -> tuple[Any, str]:
        """The pool the session's adapter would use for ``url`` and what to ask it for: the path, or
        the whole URL through a plain HTTP proxy (the adapter's ``request_url``)."""
        known = self._targets.get(url)
        if known is not None:
            return known
        session = self.session
        assert session is not None
        prepared = requests.Request("GET", url).prepare()
        adapter = session.get_adapter(prepared.url or url)
        proxies = session.proxies
        pool = adapter.get_connection_with_tls_context(prepared, session.verify, proxies=proxies,
                                                       cert=session.cert)
        adapter.cert_verify(pool, prepared.url, session.verify, session.cert)
        target = adapter.request_url(prepared, proxies)
        with self._lock:
            if len(self._targets) < 64:  # the message URL; a few others at most
                self._targets[url] = (pool, target)
        return pool, target

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def form_body(data: dict[str, object]) -> str:
    """The form ``requests`` encodes for ``data=`` (``RequestEncodingMixin._encode_params``): each
    value, or each item of a list value, as UTF-8, ``None`` left out."""
    pairs: list[tuple[Any, Any]] = []
    for key, values in data.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            values = [values]
        for value in values:
            if value is not None:
                pairs.append((key.encode("utf-8") if isinstance(key, str) else key,
                              value.encode("utf-8") if isinstance(value, str) else value))
    return urlencode(pairs, doseq=True)


def as_requests_error(exc: BaseException, *, reading: bool = False) -> requests.exceptions.RequestException:
    """The ``requests`` exception the session would have raised for urllib3's ``exc``: the rules of
    ``HTTPAdapter.send`` while asking, of ``Response.iter_content`` while reading the answer."""
    if reading:
        if isinstance(exc, ProtocolError):
            return requests.exceptions.ChunkedEncodingError(exc)
        if isinstance(exc, DecodeError):
            return requests.exceptions.ContentDecodingError(exc)
        if isinstance(exc, ReadTimeoutError):
            return requests.exceptions.ConnectionError(exc)
        if isinstance(exc, _Urllib3SSLError):
            return requests.exceptions.SSLError(exc)
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, (ProtocolError, OSError)):
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, MaxRetryError):
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            return requests.exceptions.ConnectTimeout(exc)
        if isinstance(reason, ResponseError):
            return requests.exceptions.RetryError(exc)
        if isinstance(reason, _Urllib3ProxyError):
            return requests.exceptions.ProxyError(exc)
        if isinstance(reason, _Urllib3SSLError):
            return requests.exceptions.SSLError(exc)
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, _Urllib3ProxyError):
        return requests.exceptions.ProxyError(exc)
    if isinstance(exc, _Urllib3SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, ReadTimeoutError):
        return requests.exceptions.ReadTimeout(exc)
    return requests.exceptions.ConnectionError(exc)


class TwilioApi:
    """The way to Twilio's Messaging API for one account, made once per process and shared by its
    threads and delivery batches: the SDK's ``Client`` over a :class:`PooledHttpClient`, so a batch
    neither builds a client and a session nor opens a connection of its own."""

    def __init__(self, target: TwilioTarget):
        self.target = target
        self.http = PooledHttpClient(target.api_base_url, target.timeout)  # the SDK's default time-out is none
        self.client = Client(target.account_sid, target.auth_token, http_client=self.http)
        self.client.edge = self.client.region = None  # TWILIO_EDGE/REGION would rewrite the host
        self.client.api.base_url = target.api_base_url
        self.messages = self.client.messages  # the SDK builds its domain objects on first use

    def close(self) -> None:
        self.http.close()


class TwilioSmsChannel:
    name = "sms"

    def __init__(self, target: TwilioTarget, limiter: RateLimiter, *, status_callback_url: str | None = None,
                 api: TwilioApi | None = None):
        """``api``: the process's shared way to Twilio (``Runtime.twilio_api``); without one the
        channel makes its own and closes it with itself."""
        self.target = target
        self.limiter = limiter
        self.status_callback_url = status_callback_url
        self._own_api = api is None
        self.api = api if api is not None else TwilioApi(target)
        self._http = self.api.http
        self.client = self.api.client

    def send(self, sms: OutgoingSms) -> str:
        try:
            self.limiter.acquire()
        except RateLimited as exc:
            raise RetryableFailure("sms_rate_limited", str(exc)) from None
        options = {"to": sms.to, "messaging_service_sid": self.target.messaging_service_sid, "body": sms.body}
        if self.status_callback_url:
            options["status_callback"] = self.status_callback_url
        try:
            message = self.api.messages.create(**options)
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
        if self._own_api:
            self.api.close()
