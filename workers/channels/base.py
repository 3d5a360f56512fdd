"""What every channel implements, and how a failed send is sorted.

A channel sends one prepared message and returns the provider's message id, or raises one of:

- :class:`PermanentFailure`: it will never work (bad address, opted out); recorded, not retried;
- :class:`RetryableFailure`: try again later (time-out before the request went out, 429, 5xx);
- :class:`AmbiguousFailure`: the provider may or may not have it (the connection dropped after
  the message was handed over); recorded as ``unknown`` and never re-sent blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(frozen=True)
class Withdrawal:
    """The provider says the member withdrew their consent for ``channel`` (Twilio's 21610: they
    texted STOP); ``source`` is what the member's consent source becomes (``twilio:21610``)."""

    channel: str
    source: str


class ChannelFailure(Exception):
    """What the failure teaches about the member, written with the delivery's outcome
    (``workers.record.write_what_it_teaches``): ``member_updates``, contact or Mailchimp status
    columns (``{"phone_status": "invalid"}``), and ``withdraws``, a consent withdrawn."""

    def __init__(self, reason: str, detail: str = "", member_updates: dict | None = None, *,
                 withdraws: Withdrawal | None = None):
        self.reason = reason
        self.detail = detail
        self.member_updates = member_updates or {}
        self.withdraws = withdraws
        super().__init__(f"{reason}: {detail}" if detail else reason)

    @property
    def teaches(self) -> bool:
        """Whether it says something about the member to write down."""
        return bool(self.member_updates) or self.withdraws is not None


class PermanentFailure(ChannelFailure):
    pass


class RetryableFailure(ChannelFailure):
    pass


class AmbiguousFailure(ChannelFailure):
    pass


@dataclass(frozen=True)
class OutgoingEmail:
    occurrence_key: str
    to: str
    sender: str
    subject: str
    text: str
    html: str
    unsubscribe_url: str


@dataclass(frozen=True)
class OutgoingSms:
    occurrence_key: str
    to: str  # E.164
    body: str


@dataclass(frozen=True)
class OutgoingMailchimp:
    """A campaign step on Mailchimp: the member upserted (with ``merge_fields``), then ``tags``
    applied and/or the ``event`` posted with ``properties`` (strings; ``occurrence_key`` included)."""

    occurrence_key: str
    email: str
    tags: tuple[str, ...]
    event: str | None
    properties: dict[str, str]
    merge_fields: dict[str, object]


Outgoing = OutgoingEmail | OutgoingSms | OutgoingMailchimp


_Message = TypeVar("_Message", OutgoingEmail, OutgoingSms, OutgoingMailchimp, contravariant=True)


class Channel(Protocol[_Message]):
    """A way out for one kind of message (``Channel[OutgoingEmail]``...)."""

    name: str

    def send(self, message: _Message) -> str | None:
        """Send one message; return the provider's id for it (None when the provider gives none)."""

    def close(self) -> None:
        """Release connections kept between sends."""
