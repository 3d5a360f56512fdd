"""What the admin-API clients share: one ``httpx`` client with time-outs, retries of 429, 5xx and
transport errors (bounded, with backoff, honouring ``Retry-After``), and errors of one sentence."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

log = structlog.get_logger("loyalty.shop_api")

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
RETRY_WAITS: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds before each retry
MAX_RETRY_AFTER = 60.0


class ShopApiError(Exception):
    """The shop's API cannot be read now; the message is one sentence naming the shop and what to do."""


@dataclass
class Page:
    records: list[dict[str, Any]]
    position: str | None  # where the next page starts; None: this was the last page
    total: int | None = None  # the number of records to read, when the API says it


@dataclass
class Api:
    """One shop's API: ``name`` for messages (``WooCommerce``), ``setting`` for "check this variable"."""

    name: str
    base_url: str
    setting: str  # the variable(s) that hold the key, named in the refusal's sentence
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    waits: Sequence[float] = RETRY_WAITS
    sleep: Callable[[float], None] = time.sleep
    client: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.client = self.client or httpx.Client(base_url=self.base_url, timeout=TIMEOUT, headers=self.headers,
                                                  auth=self.auth, follow_redirects=False)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def request(self, method: str, path: str, *, accept: Sequence[int] = (), **options: Any) -> httpx.Response:
        """The answer to one request, retried while the shop is busy or failing; :class:`ShopApiError`
        when it refuses the key, answers something else than success, or stays unreachable."""
        for attempt in range(len(self.waits) + 1):
            last = attempt == len(self.waits)
            client = self.client
            assert client is not None  # __post_init__ makes one when none is given
            try:
                response = client.request(method, path, **options)
            except httpx.TransportError as error:
                if last:
                    raise ShopApiError(f"{self.name} at {self.base_url} could not be reached "
                                       f"({type(error).__name__}); check the address and try again.") from None
                self._wait(attempt, None, f"transport:{type(error).__name__}")
                continue
            if response.status_code in accept:
                return response
            if response.status_code in (401, 403):
                raise ShopApiError(f"{self.name} refused the key ({response.status_code}); check {self.setting}.")
            if response.status_code == 429 or response.status_code >= 500:
                if last:
                    raise ShopApiError(f"{self.name} at {self.base_url} kept answering {response.status_code} "
                                       f"after {len(self.waits) + 1} tries; run the same command again later, "
                                       "it resumes where it stopped.")
                self._wait(attempt, response.headers.get("retry-after"), str(response.status_code))
                continue
            if response.status_code >= 400:
                raise ShopApiError(f"{self.name} answered {response.status_code} to {method} {path}; "
                                   "check the shop's address and version.")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def json(self, method: str, path: str, **options: Any) -> Any:
        response = self.request(method, path, **options)
        try:
            return response.json()
        except ValueError:
            raise ShopApiError(f"{self.name} answered {method} {path} with something that is not JSON; "
                               "check the shop's address.") from None

    def _wait(self, attempt: int, retry_after: str | None, why: str) -> None:
        wait = self.waits[attempt]
        if retry_after:
            try:
                wait = min(max(float(retry_after), wait), MAX_RETRY_AFTER)
            except ValueError:
                pass
        log.info("shop_api.retry", shop=self.name, attempt=attempt + 1, wait=wait, why=why)
        self.sleep(wait)
