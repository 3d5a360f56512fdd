"""A real SMTP server (aiosmtpd) that keeps every message it accepted, for tests and the demo."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from email.message import EmailMessage

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.sink.reject:
            return f"550 5.1.1 <{address}>: recipient address rejected: user unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.sink.lock:
            self.sink.raw.append(envelope.original_content or envelope.content)
            self.sink.messages.append(message)
            self.sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.sink.arrived.append(time.time())
        return "250 Message accepted for delivery"


class SmtpSink:
    """``smtputf8``: whether the server offers SMTPUTF8 (RFC 6531: addresses and headers in UTF-8);
    without it, as aiosmtpd's default, a command that is not ASCII is refused."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, smtputf8: bool = False):
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.raw: list[bytes] = []  # each accepted message as it came over the wire
        self.arrived: list[float] = []  # when each was accepted (wall clock, time.time())
        self.reject: set[str] = set()  # recipients refused with a 550 that quotes the address
        self.controller = Controller(_Handler(self), hostname=host, port=port or _free_port(),
                                     enable_SMTPUTF8=smtputf8)

    @property
    def port(self) -> int:
        return self.controller.port

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m, (_, rcpts) in zip(self.messages, self.envelopes, strict=True) if address in rcpts]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
