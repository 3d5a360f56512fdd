"""Signed tokens: unsubscribe links (one member, one channel) and bounce addresses (one delivery),
unforgeable without the secret."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

from itsdangerous import BadSignature, Signer, URLSafeSerializer

_SALT = "loyalty.unsubscribe.v1"


@functools.lru_cache(maxsize=8)
def _unsubscribe_signing(secret: str) -> tuple[URLSafeSerializer, Signer]:
    """The serializer and its signer, made once per secret (``URLSafeSerializer`` runs its JSON
    encoder to probe itself each time it is made: a third of a token's cost, once per message)."""
    serializer = URLSafeSerializer(secret, salt=_SALT)
    return serializer, serializer.make_signer()


def unsubscribe_token(secret: str, member_external_id: str, channel: str) -> str:
    """What ``URLSafeSerializer(secret, salt=_SALT).dumps(...)`` writes, with its parts kept."""
    serializer, signer = _unsubscribe_signing(secret)
    return signer.sign(serializer.dump_payload({"m": member_external_id, "c": channel})).decode("utf-8")


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


# -- bounce addresses (VERP) -------------------------------------------------------------------------

_BOUNCE_SALT = b"loyalty.bounce.v1:"
_BOUNCE_TOKEN = re.compile(r"[0-9a-f]{44}")


def occurrence_digest(occurrence_key: str) -> str:
    """32 hexadecimal characters naming one occurrence: the part before ``@`` of its Message-ID."""
    return hashlib.sha256(occurrence_key.encode()).hexdigest()[:32]


def bounce_token(secret: str, occurrence_key: str) -> str:
    """The delivery's digest and 48 bits of a signature over it (44 lower-case hexadecimal
    characters): a mailbox that lower-cases local parts keeps it valid."""
    digest = occurrence_digest(occurrence_key)
    return digest + _bounce_signature(secret, digest)


def read_bounce_token(secret: str, token: str) -> str | None:
    """The occurrence digest a bounce token names, or None when it is forged or malformed."""
    token = token.strip().lower()
    if not _BOUNCE_TOKEN.fullmatch(token):
        return None
    digest, signature = token[:32], token[32:]
    return digest if hmac.compare_digest(signature, _bounce_signature(secret, digest)) else None


def _bounce_signature(secret: str, digest: str) -> str:
    return hmac.new(secret.encode(), _BOUNCE_SALT + digest.encode(), hashlib.sha256).hexdigest()[:12]


def bounce_address(local: str, domain: str, secret: str, occurrence_key: str) -> str:
    """The envelope sender of one email: ``local+TOKEN@domain``."""
    return f"{local}+{bounce_token(secret, occurrence_key)}@{domain}"


def token_in_address(address: str) -> str | None:
    """The ``+TOKEN`` of a bounce address (whatever its base), or None."""
    local = address.strip().strip("<>").rpartition("@")[0]
    _, plus, token = local.rpartition("+")
    return token if plus and token else None
