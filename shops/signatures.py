"""The signatures the shops put on their webhooks, and the bearer keys of our own JSON API.

Shopify and WooCommerce both sign a webhook with the base64 of the HMAC-SHA256 of the raw body under
a shared secret (``X-Shopify-Hmac-Sha256``, ``X-WC-Webhook-Signature``). The body must be checked as
received, before any parsing: a re-serialised JSON document does not give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def body_signature(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(secret, body)): what Shopify and WooCommerce send for ``body``."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode("ascii")


def valid_body_signature(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """True when ``header`` is the signature of ``body`` under one of ``secrets`` (rotation: old and new).

    Compared in constant time; a missing or empty header, or no secret configured, is never valid.
    """
    if not header:
        return False
    given = header.strip().encode("ascii", "replace")
    valid = False
    for secret in secrets:
        if secret:
            valid |= hmac.compare_digest(body_signature(body, secret).encode("ascii"), given)
    return valid


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header, or None when the header is not that."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def valid_bearer(authorization: str | None, keys: Iterable[str]) -> bool:
    """True when the header carries one of ``keys`` (``LOYALTY_API_KEYS``: several, so keys rotate)."""
    given = bearer_key(authorization)
    if given is None:
        return False
    valid = False
    for key in keys:
        if key:
            valid |= hmac.compare_digest(key.encode(), given.encode())
    return valid
