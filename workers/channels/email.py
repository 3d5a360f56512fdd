"""Email: the MIME message (pure) and SMTP (the outbox lives in ``workers/channels/outbox.py``)."""

from __future__ import annotations

import email.policy
import hashlib
import smtplib
import socket
import ssl
from datetime import datetime, timezone
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, getaddresses, parseaddr

from core.settings import SmtpTarget
from workers.channels.base import (
    AmbiguousFailure,
    OutgoingEmail,
    PermanentFailure,
    RetryableFailure,
)


def message_id_for(occurrence_key: str, sender: str) -> str:
    """A stable Message-ID: the same occurrence always carries the same id, on every attempt."""
    digest = hashlib.sha256(occurrence_key.encode()).hexdigest()[:32]
    addresses = getaddresses([sender])
    domain = addresses[0][1].rpartition("@")[2] if addresses and "@" in addresses[0][1] else "loyalty.invalid"
    return f"<{digest}@{domain}>"


#: The message is built with the email package's string-based (``compat32``) API: it writes the
#: headers it is given, where the modern ``EmailMessage`` parses, checks and re-folds every one of
#: them (about 1.5 ms an email against 0.5 ms: the largest part of a worker's CPU per message).
#: What the modern API did for us is done here: non-ASCII text in headers is RFC 2047-encoded,
#: names in addresses are encoded and the addresses are not, bodies are quoted-printable UTF-8.
#: Headers are not folded below 998 characters: a folded List-Unsubscribe URL is unreadable to
#: some mail clients. Lines end in CRLF on the wire.
FILE_POLICY = email.policy.compat32.clone(max_line_length=998)
WIRE_POLICY = FILE_POLICY.clone(linesep="\r\n")

_BODY_CHARSET = Charset("utf-8")
_BODY_CHARSET.body_encoding = QP  # readable in any mail source view, and 7-bit clean on the wire


def build_message(email: OutgoingEmail, *, now: datetime | None = None) -> Message:
    """The multipart (text and HTML) message; ``as_bytes(policy=WIRE_POLICY)`` for SMTP."""
    message = MIMEMultipart("alternative", policy=FILE_POLICY)
    message["From"] = _address(email.sender)
    message["To"] = _address(email.to)
    message["Subject"] = email.subject if email.subject.isascii() else _EncodedWords(email.subject, "utf-8", header_name="Subject")
    message["Date"] = format_datetime(now or datetime.now(timezone.utc))
    message["Message-ID"] = message_id_for(email.occurrence_key, email.sender)
    message["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    for body, subtype in ((email.text, "plain"), (email.html, "html")):
        part = MIMEText(body, subtype, _BODY_CHARSET, policy=FILE_POLICY)
        del part["MIME-Version"]  # said once, at the top
        message.attach(part)
    return message


class _EncodedWords(Header):
    """Non-ASCII header text as RFC 2047 encoded words, on lines of at most 76 characters whatever
    the policy's line length: an encoded word may not be longer than 75."""

    def encode(self, splitchars=";, \t", maxlinelen=None, linesep="\n"):
        return super().encode(splitchars, 76, linesep)


def _address(value: str) -> str:
    """``Name <address>`` with the name RFC 2047-encoded when it is not ASCII (never the address).

    An address that is not ASCII (``inès.x@example.com``) cannot be encoded: the header is written
    as raw UTF-8 (RFC 6532), which only an SMTPUTF8 server may be given (see :func:`needs_smtputf8`).
    The email package writes a header's undecodable bytes as they are, so the UTF-8 bytes are
    handed to it as such (surrogate escapes) instead of text it would turn into an encoded word."""
    if value.isascii():
        return value
    name, address = parseaddr(value)
    if not address.isascii():
        return value.encode("utf-8").decode("ascii", "surrogateescape")
    return formataddr((name, address), charset="utf-8")


def needs_smtputf8(*addresses: str) -> bool:
    """Whether sending to or from these addresses needs the SMTPUTF8 extension (RFC 6531): an
    address with a character outside ASCII, in its local part or its domain."""
    return not all(address.isascii() for address in addresses)


class SmtpEmailChannel:
    """SMTP with a time-out on every step and one connection reused across a batch.

    Failures before the message body is handed over are retryable (nothing was sent); a failure
    while the server acknowledges the body is ambiguous: the server may have queued it. An address
    that is not ASCII goes with SMTPUTF8 when the server offers it, and is a permanent failure
    (``email_address_needs_smtputf8``) when it does not.
    """

    name = "email"

    def __init__(self, target: SmtpTarget, sender: str):
        self.target = target
        self.sender = sender
        self._connection: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None:
            return self._connection
        t = self.target
        try:
            if t.security == "tls":
                connection: smtplib.SMTP = smtplib.SMTP_SSL(t.host, t.port, timeout=t.timeout, context=ssl.create_default_context())
            else:
                connection = smtplib.SMTP(t.host, t.port, timeout=t.timeout)
                if t.security == "starttls":
                    connection.starttls(context=ssl.create_default_context())
            if t.username:
                connection.login(t.username, t.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise RetryableFailure("smtp_auth_failed", f"the SMTP server refused the login ({exc.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryableFailure("smtp_unreachable", f"{type(exc).__name__}: {exc}") from None
        self._connection = connection
        return connection

    def send(self, email: OutgoingEmail) -> str:
        message = build_message(email)
        envelope_from = getaddresses([self.sender])[0][1]
        connection = self._connect()
        try:
            connection.ehlo_or_helo_if_needed()
            options = ()
            if needs_smtputf8(envelope_from, email.to):
                if not connection.has_extn("smtputf8"):
                    raise PermanentFailure("email_address_needs_smtputf8",
                                           "the address is not ASCII and the SMTP server does not offer SMTPUTF8")
                options = ("SMTPUTF8",)  # smtplib then writes the commands in UTF-8
            code, reply = connection.mail(envelope_from, options)
            if code != 250:
                self._reset()
                raise _sorted_failure(code, reply, "sender refused")
            code, reply = connection.rcpt(email.to)
            if code not in (250, 251):
                connection.rset()
                raise _sorted_failure(code, reply, "recipient refused")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._reset()
            raise RetryableFailure("smtp_connection_lost", type(exc).__name__) from None
        try:
            code, reply = connection.data(message.as_bytes(policy=WIRE_POLICY))
        except smtplib.SMTPDataError as exc:
            self._reset()
            raise _sorted_failure(exc.smtp_code, exc.smtp_error, "message refused") from None
        except (OSError, smtplib.SMTPServerDisconnected, socket.timeout) as exc:
            self._reset()
            raise AmbiguousFailure("smtp_no_answer_after_data", type(exc).__name__) from None
        if code != 250:
            raise _sorted_failure(code, reply, "message refused")
        return message["Message-ID"]

    def _reset(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except OSError:
                pass
        self._connection = None

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
        self._connection = None


def _sorted_failure(code: int, reply: bytes | str, what: str):
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    detail = f"{what}: {code} {text}"[:500]
    if 400 <= code < 500:
        return RetryableFailure("smtp_temporary_error", detail)
    return PermanentFailure("email_rejected", detail)

