"""The outbox: the embedded default's channels write files instead of reaching the network.

One file per occurrence, written atomically under a name derived from the occurrence key, so a
retry rewrites the same file and can never make a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from workers.channels.base import OutgoingEmail, OutgoingMailchimp, OutgoingSms

_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_MAX_NAME = 200  # characters before the extension; file systems allow 255 bytes


def _safe_name(occurrence_key: str) -> str:
    """A file name that is one occurrence key's and no other's, and only a name (no folder, no dot).

    ASCII letters, digits and ``-`` stay, ``:`` becomes ``_``, and every other byte of the key's
    UTF-8 (``_``, ``/``, ``.``, ``%``, any non-ASCII letter) is written ``%XX``: ``birthday:Z/1:2027``
    is ``birthday_Z%2F1_2027`` and ``birthday:Z_1:2027`` is ``birthday_Z%5F1_2027``. A name longer
    than the file system takes is cut and ends with ``~`` and a digest of the whole key.
    """
    name = "".join(
        ch if ch in _KEPT else "_" if ch == ":" else "".join(f"%{byte:02X}" for byte in ch.encode())
        for ch in occurrence_key
    )
    if len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 17]}~{hashlib.sha256(occurrence_key.encode()).hexdigest()[:16]}"
    return name


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class OutboxEmailChannel:
    name = "email"

    def __init__(self, directory: Path, return_path: Callable[[str], str] | None = None):
        self.directory = directory
        self.return_path = return_path  # occurrence key -> bounce address, as SMTP would send it (VERP)

    def send(self, email: OutgoingEmail) -> str:
        from workers.channels.email import build_message, message_id_for

        path = self.directory / f"{_safe_name(email.occurrence_key)}.eml"
        data = build_message(email).as_bytes()
        if self.return_path is not None:  # what the receiving mailbox would write first
            data = f"Return-Path: <{self.return_path(email.occurrence_key)}>\n".encode() + data
        write_atomically(path, data)
        # The provider id is the Message-ID, as SMTP's: a bounce or complaint is traced by it (its token
        # is the Message-ID's digest), so feedback about an outbox email finds its delivery too.
        return message_id_for(email.occurrence_key, email.sender)

    def close(self) -> None:
        pass


class OutboxSmsChannel:
    name = "sms"

    def __init__(self, directory: Path):
        self.directory = directory

    def send(self, sms: OutgoingSms) -> str:
        path = self.directory / f"{_safe_name(sms.occurrence_key)}.json"
        write_atomically(path, json.dumps({"to": sms.to, "body": sms.body}, ensure_ascii=False, indent=1).encode())
        return path.name

    def close(self) -> None:
        pass


class OutboxMailchimpChannel:
    """What would be sent to Mailchimp for one occurrence: the member's merge fields, tags, event."""

    name = "mailchimp"

    def __init__(self, directory: Path):
        self.directory = directory

    def send(self, step: OutgoingMailchimp) -> str:
        path = self.directory / f"{_safe_name(step.occurrence_key)}.json"
        data = {"email": step.email, "merge_fields": step.merge_fields, "tags": list(step.tags), "event": step.event,
                "properties": {**step.properties, "occurrence_key": step.occurrence_key}}
        write_atomically(path, json.dumps(data, ensure_ascii=False, indent=1, default=str).encode())
        return path.name

    def close(self) -> None:
        pass
