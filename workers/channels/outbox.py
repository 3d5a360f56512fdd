"""The outbox: the embedded default's channels write files instead of reaching the network.

One file per occurrence, written atomically under a name derived from the occurrence key, so a
retry rewrites the same file and can never make a second one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from workers.channels.base import OutgoingEmail, OutgoingMailchimp, OutgoingSms


def _safe_name(occurrence_key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in occurrence_key)


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class OutboxEmailChannel:
    name = "email"

    def __init__(self, directory: Path):
        self.directory = directory

    def send(self, email: OutgoingEmail) -> str:
        from workers.channels.email import build_message

        path = self.directory / f"{_safe_name(email.occurrence_key)}.eml"
        write_atomically(path, build_message(email).as_bytes())
        return path.name

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
