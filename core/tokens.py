"""Signed unsubscribe tokens: scoped to one member and one channel, unforgeable without the secret."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

_SALT = "loyalty.unsubscribe.v1"


def unsubscribe_token(secret: str, member_external_id: str, channel: str) -> str:
    return URLSafeSerializer(secret, salt=_SALT).dumps({"m": member_external_id, "c": channel})


def read_unsubscribe_token(secret: str, token: str) -> tuple[str, str] | None:
    """(member external id, channel), or None when the token is forged or malformed."""
    try:
        data = URLSafeSerializer(secret, salt=_SALT).loads(token)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("m"), str) or not isinstance(data.get("c"), str):
        return None
    return data["m"], data["c"]


def unsubscribe_url(base_url: str, secret: str, member_external_id: str, channel: str) -> str:
    return f"{base_url}/unsubscribe/{unsubscribe_token(secret, member_external_id, channel)}"
