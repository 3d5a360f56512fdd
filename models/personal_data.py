"""Personal data at rest: names, emails and phone numbers are encrypted; look-ups use keyed hashes.

- **Encryption**: Fernet (AES-128-CBC + HMAC-SHA256) through :class:`EncryptedText`, a column type,
  so every read and write of ``members.email``, ``phone``, ``first_name`` and ``last_name`` goes
  through it, ORM and Core alike. Stored values look like ``enc1:<token>``.
- **Look-ups** (the member who texted STOP, say) use ``email_lookup`` / ``phone_lookup``: an
  HMAC-SHA256 of the normalised value under a separate key, so an index can find a member without
  the database ever holding the value in clear. Audience queries never need either.
- **Keys** come from the environment: ``LOYALTY_DATA_KEYS`` (comma-separated Fernet keys, the first
  encrypts, all decrypt) and ``LOYALTY_LOOKUP_KEY``. Either one, when unset, is derived from
  ``LOYALTY_SECRET`` with HKDF, so a deployment has one secret to start with.
- **Rotation**: put a new key first in ``LOYALTY_DATA_KEYS`` (keep the old ones after it), deploy, run
  ``loyalty keys rotate`` (re-encrypts every member with the new key and recomputes the look-up
  hashes), then drop the old keys. Changing ``LOYALTY_LOOKUP_KEY`` needs the same command.

A value without the ``enc1:`` prefix is read as plain text: rows written before encryption was
switched on stay readable until ``loyalty keys rotate`` encrypts them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text, TypeDecorator

from loyalty.errors import LoyaltyError

PREFIX = "enc1:"


class PersonalDataKeyError(LoyaltyError):
    """Personal data read or written without the right keys."""


def _derive(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"loyalty-worker", info=info).derive(secret.encode())


@dataclass(frozen=True)
class KeyRing:
    fernet: MultiFernet
    lookup_key: bytes

    @classmethod
    def from_settings(cls, secret: str, data_keys: str | None, lookup_key: str | None) -> KeyRing:
        keys = [k.strip() for k in (data_keys or "").split(",") if k.strip()]
        if not keys:
            keys = [base64.urlsafe_b64encode(_derive(secret, b"loyalty data key v1")).decode()]
        fernets = [Fernet(k.encode()) for k in keys]
        lookup = lookup_key.encode() if lookup_key else _derive(secret, b"loyalty lookup key v1")
        return cls(MultiFernet(fernets), lookup)

    def encrypt(self, value: str) -> str:
        return PREFIX + self.fernet.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption: readable until `loyalty keys rotate`
        try:
            return self.fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise PersonalDataKeyError(
                "A member's personal data cannot be decrypted with LOYALTY_DATA_KEYS; put back the key it "
                "was written with (after the new one) and run `loyalty keys rotate`."
            ) from None

    def rotate(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        return PREFIX + self.fernet.rotate(stored[len(PREFIX):].encode()).decode()

    def lookup(self, kind: str, value: str | None) -> str | None:
        if not value:
            return None
        normalised = value.strip().lower() if kind == "email" else value.strip()
        return hmac.new(self.lookup_key, f"{kind}:{normalised}".encode(), hashlib.sha256).hexdigest()


_ring: KeyRing | None = None


def install(ring: KeyRing) -> None:
    """Make ``ring`` the process's keys (done once, from the settings, where engines are built)."""
    global _ring
    _ring = ring


def installed() -> KeyRing:
    if _ring is None:
        raise PersonalDataKeyError("personal data keys are not installed: build engines with models.db.engine_for(settings)")
    return _ring


def lookup(kind: str, value: str | None) -> str | None:
    return installed().lookup(kind, value)


def lookup_columns(email: str | None, phone: str | None) -> dict[str, str | None]:
    """The look-up hashes to store beside an email and a phone."""
    ring = installed()
    return {"email_lookup": ring.lookup("email", email), "phone_lookup": ring.lookup("phone", phone)}


class EncryptedText(TypeDecorator):
    """Text encrypted on the way in and decrypted on the way out; NULL stays NULL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return installed().encrypt(str(value))

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return installed().decrypt(value)


def keep_lookups_current(_mapper, _connection, member) -> None:
    """ORM writes of a member keep the look-up hashes in step with the email and phone."""
    member.email_lookup = lookup("email", member.email)
    member.phone_lookup = lookup("phone", member.phone)
