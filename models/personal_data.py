"""Personal data at rest: names, emails and phone numbers are encrypted; look-ups use keyed hashes.

- **Encryption**: Fernet (AES-128-CBC + HMAC-SHA256) through :class:`EncryptedText`, a column type,
  so every read and write of ``members.email``, ``phone``, ``first_name`` and ``last_name`` goes
  through it, ORM and Core alike. Stored values look like ``enc1:<token>``.
- **Look-ups** (the member who texted STOP, say) use ``email_lookup`` / ``phone_lookup``: an
  HMAC-SHA256 of the normalised value under a separate key, so an index can find a member without
  the database ever holding the value in clear. Audience queries never need either.
- **Keys** come from the environment: ``LOYALTY_DATA_KEYS`` (comma-separated Fernet keys, the first
  encrypts, all decrypt) and ``LOYALTY_LOOKUP_KEY``. Either one, when unset, is derived from
  ``LOYALTY_SECRET`` with HKDF, so a deployment has one secret to start with; then changing the
  secret changes them too. :func:`check_stored_members` tells, at every process's start, which
  variable no longer matches the stored rows.
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
from sqlalchemy import Connection, Text, TypeDecorator, text

from core.errors import LoyaltyError

PREFIX = "enc1:"


class PersonalDataKeyError(LoyaltyError):
    """Personal data read or written without the right keys."""


def _derive(secret: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"loyalty-worker", info=info).derive(secret.encode())


def derived_data_key(secret: str) -> str:
    """The Fernet key used while ``LOYALTY_DATA_KEYS`` is unset: derived from ``LOYALTY_SECRET``."""
    return base64.urlsafe_b64encode(_derive(secret, b"loyalty data key v1")).decode()


#: What to say when stored members do not match the keys, by which variable the keys came from.
_SECRET_CHANGED = (
    "LOYALTY_SECRET changed and LOYALTY_DATA_KEYS/LOYALTY_LOOKUP_KEY are derived from it (they are not set), "
    "so the stored members' {what}; put the previous LOYALTY_SECRET back (unsubscribe links already sent are "
    "signed with it too), or set the variable they were made with."
)
_DATA_KEYS_CHANGED = (
    "LOYALTY_DATA_KEYS changed: the stored members' personal data was encrypted with a key it no longer holds; "
    "put that key back after the new one and run `loyalty keys rotate`."
)
_LOOKUP_KEY_CHANGED = (
    "LOYALTY_LOOKUP_KEY changed: the stored look-up hashes (how an inbound STOP finds its member) were made "
    "with another key; run `loyalty keys rotate` to recompute them, or put the previous key back."
)


@dataclass(frozen=True)
class KeyRing:
    fernet: MultiFernet
    lookup_key: bytes
    data_keys_derived: bool = False  # LOYALTY_DATA_KEYS unset: derived from LOYALTY_SECRET
    lookup_key_derived: bool = False  # LOYALTY_LOOKUP_KEY unset: derived from LOYALTY_SECRET

    @classmethod
    def from_settings(cls, secret: str, data_keys: str | None, lookup_key: str | None) -> KeyRing:
        keys = [k.strip() for k in (data_keys or "").split(",") if k.strip()]
        derived = not keys
        if derived:
            keys = [derived_data_key(secret)]
        fernets = [Fernet(k.encode()) for k in keys]
        lookup = lookup_key.encode() if lookup_key else _derive(secret, b"loyalty lookup key v1")
        return cls(MultiFernet(fernets), lookup, data_keys_derived=derived, lookup_key_derived=not lookup_key)

    def data_keys_changed(self) -> str:
        return _SECRET_CHANGED.format(what="personal data does not decrypt") if self.data_keys_derived \
            else _DATA_KEYS_CHANGED

    def lookup_key_changed(self) -> str:
        return _SECRET_CHANGED.format(what="look-up hashes (how an inbound STOP finds its member) do not match") \
            if self.lookup_key_derived else _LOOKUP_KEY_CHANGED

    def encrypt(self, value: str) -> str:
        return PREFIX + self.fernet.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption: readable until `loyalty keys rotate`
        try:
            return self.fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise PersonalDataKeyError(self.data_keys_changed()) from None

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


def check_stored_members(connection: Connection, ring: KeyRing) -> None:
    """Refuse to start, naming the variable, when stored members do not match ``ring``: the oldest
    and the newest member with an email or a phone (two reads of the primary key's index) must
    decrypt, and their look-up hashes must be those of their decrypted values."""
    columns = "email, email_lookup, phone, phone_lookup"
    rows = [
        connection.execute(text(
            f"SELECT {columns} FROM members WHERE email IS NOT NULL OR phone IS NOT NULL ORDER BY id {order} LIMIT 1"
        )).first()
        for order in ("ASC", "DESC")
    ]
    for row in filter(None, rows):
        for kind, stored, stored_lookup in (("email", row.email, row.email_lookup), ("phone", row.phone, row.phone_lookup)):
            if stored is None:
                continue
            value = ring.decrypt(stored)  # PersonalDataKeyError naming the variable
            if stored_lookup is not None and not hmac.compare_digest(ring.lookup(kind, value) or "", stored_lookup):
                raise PersonalDataKeyError(ring.lookup_key_changed())


def keep_lookups_current(_mapper, _connection, member) -> None:
    """ORM writes of a member keep the look-up hashes in step with the email and phone."""
    member.email_lookup = lookup("email", member.email)
    member.phone_lookup = lookup("phone", member.phone)
