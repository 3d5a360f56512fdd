"""Email: the MIME message (pure) and SMTP (the outbox lives in ``workers/channels/outbox.py``)."""

from __future__ import annotations

import binascii
import email.policy
import functools
import hashlib
import re
import smtplib
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, getaddresses, parseaddr

from core.settings import Settings, SmtpTarget
from core.tokens import bounce_address, token_in_address
from workers.channels.base import (
    AmbiguousFailure,
    OutgoingEmail,
    PermanentFailure,
    RetryableFailure,
)


def message_id_for(occurrence_key: str, sender: str) -> str:
    """A stable Message-ID: the same occurrence always carries the same id, on every attempt."""
    digest = hashlib.sha256(occurrence_key.encode()).hexdigest()[:32]
    return f"<{digest}@{_domain_of(sender)}>"


@functools.lru_cache(maxsize=64)
def _domain_of(sender: str) -> str:
    """The sender's domain (parsing an address costs more than the rest of the Message-ID)."""
    addresses = getaddresses([sender])
    return addresses[0][1].rpartition("@")[2] if addresses and "@" in addresses[0][1] else "loyalty.invalid"


@functools.lru_cache(maxsize=64)
def _envelope_of(sender: str) -> str:
    return getaddresses([sender])[0][1]


_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")


def _smtp_path(address: str) -> str:
    """``<address>`` for MAIL FROM / RCPT TO, as ``smtplib.quoteaddr`` writes it."""
    return f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


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
    # compat32 takes a Header object as a value; typeshed says str
    message["Subject"] = (email.subject if email.subject.isascii()  # type: ignore[assignment]
                          else _EncodedWords(email.subject, "utf-8", header_name="Subject"))
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id_for(email.occurrence_key, email.sender)
    message["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    for body, subtype in ((email.text, "plain"), (email.html, "html")):
        # a Charset works (MIMEText hands it to set_payload, which takes one); typeshed says str
        part = MIMEText(body, subtype, _BODY_CHARSET, policy=FILE_POLICY)  # type: ignore[arg-type]
        del part["MIME-Version"]  # said once, at the top
        message.attach(part)
    return message


#: The wire form SMTP sends, written by hand (:func:`wire_bytes`): the same message as
#: :func:`build_message` (headers, parts, encodings; the outbox still writes that one), for about a
#: fourteenth of its CPU (0.2 ms against 2.9 ms an email for a shipped template, measured side by
#: side under load). Every shipped template and locale, and random names and subjects, are parsed
#: back by the standard library's modern parser in ``tests/unit/test_email_wire.py``.
_CRLF = b"\r\n"
_PART_HEADERS = {
    subtype: (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
              "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode()
    for subtype in ("plain", "html")
}
_WORD_BYTES = 45  # UTF-8 bytes in one base64 encoded word: "=?utf-8?b?" + 60 + "?=" is 72 characters


def wire_bytes(email: OutgoingEmail, *, now: datetime | None = None, extra: dict[str, str] | None = None) -> bytes:
    """The message of :func:`build_message` as SMTP takes it (CRLF line ends), assembled by hand;
    ``extra``: more headers (ASCII values, written as given)."""
    headers = [
        b"From: " + _address_bytes(email.sender),
        b"To: " + _address_bytes(email.to),
        b"Subject: " + _header_text(email.subject),
        b"Date: " + _date_header(*_second_and_offset(now or datetime.now(UTC))),
        b"Message-ID: " + message_id_for(email.occurrence_key, email.sender).encode(),
        b"List-Unsubscribe: <" + _ascii_line(email.unsubscribe_url, "the unsubscribe link") + b">",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        b"Auto-Submitted: auto-generated",
    ]
    for name, value in (extra or {}).items():
        headers.append(_ascii_line(name, "a header name") + b": " + _ascii_line(value, f"the {name} header"))
    # Quoted-printable bodies never hold "=" unencoded, so no line of theirs can be "--=_...".
    boundary = b"=_" + hashlib.sha256(email.occurrence_key.encode()).hexdigest()[:28].encode()
    headers.append(b"MIME-Version: 1.0")
    headers.append(b'Content-Type: multipart/alternative; boundary="' + boundary + b'"')
    delimiter = b"--" + boundary + _CRLF
    return b"".join((
        _CRLF.join(headers), _CRLF, _CRLF,
        delimiter, _PART_HEADERS["plain"], _qp(email.text), _CRLF,
        delimiter, _PART_HEADERS["html"], _qp(email.html), _CRLF,
        b"--", boundary, b"--", _CRLF,
    ))


def _second_and_offset(now: datetime) -> tuple[datetime, timedelta | None]:
    return now.replace(microsecond=0), now.utcoffset()


@functools.lru_cache(maxsize=8)
def _date_header(second: datetime, offset: timedelta | None) -> bytes:
    """``format_datetime`` (which writes whole seconds), once a second rather than once an email.
    ``offset`` is part of the key: one instant in two zones is one ``datetime`` key, two texts."""
    return format_datetime(second).encode()


def _qp(body: str) -> bytes:
    """UTF-8, quoted-printable, lines of at most 76 characters ending in CRLF (the line end before
    the next boundary belongs to the boundary)."""
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\n", _CRLF)


def _header_text(text: str) -> bytes:
    """An unstructured header's value: as is when plain ASCII on one line, else RFC 2047 base64
    encoded words (whole characters in each, at most 75 characters a word), one a folded line."""
    if text.isascii() and text.isprintable() and "=?" not in text and len(text) <= 900 and text == text.strip() \
            and "  " not in text:
        return text.encode()
    if not _one_line(text):
        raise ValueError("a header value holds a line break")
    return _encoded_words(text)


def _encoded_words(text: str) -> bytes:
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for character in text:
        length = len(character.encode("utf-8", "surrogatepass"))
        if size + length > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(character)
        size += length
    words.append("".join(chunk))
    return b"\r\n ".join(b"=?utf-8?b?" + binascii.b2a_base64(word.encode("utf-8"), newline=False) + b"?="
                          for word in words)


def _one_line(text: str) -> bool:
    return "\r" not in text and "\n" not in text


def _ascii_line(text: str, what: str) -> bytes:
    if not text.isascii() or not _one_line(text):
        raise ValueError(f"{what} must be ASCII on one line")
    return text.encode()


@functools.lru_cache(maxsize=256)
def _address_bytes(value: str) -> bytes:
    """:func:`_address` as bytes: a name that is not ASCII with its runs of words that are not plain
    ASCII atoms as encoded words (as the modern generator does), an address that is not ASCII as
    raw UTF-8 (RFC 6532)."""
    if not _one_line(value):
        raise ValueError("an address holds a line break")
    if value.isascii():
        return value.encode()
    name, address = parseaddr(value)
    if not address.isascii() or not name:
        return value.encode("utf-8")
    return _phrase(name) + b" <" + address.encode() + b">"


_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+")


def _phrase(name: str) -> bytes:
    """A display name: plain atoms as they are, each run of other words one encoded word (several
    when longer than one holds: readers disagree on the space between two encoded words, so they
    are only ever next to each other inside such a long run)."""
    out: list[bytes] = []
    run: list[str] = []
    for token in name.split(" "):
        if _ATOM.fullmatch(token):
            if run:
                out.append(_encoded_words(" ".join(run)))
                run = []
            out.append(token.encode())
        else:
            run.append(token)
    if run:
        out.append(_encoded_words(" ".join(run)))
    return b" ".join(out)


class _EncodedWords(Header):
    """Non-ASCII header text as RFC 2047 encoded words, on lines of at most 76 characters whatever
    the policy's line length: an encoded word may not be longer than 75."""

    def encode(self, splitchars: str = ";, \t", maxlinelen: int | None = None, linesep: str = "\n") -> str:
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


def return_path_for(settings: Settings) -> Callable[[str], str]:
    """The envelope sender (MAIL FROM, the Return-Path a mailbox shows) of each email: the bounce
    address with the delivery's signed token, ``bounces+TOKEN@domain`` (VERP), so a bounce names the
    delivery it is about (``workers/email_feedback.py``)."""
    local, domain = settings.feedback.verp_base(settings.email_from)
    return lambda occurrence_key: bounce_address(local, domain, settings.secret, occurrence_key)


class SmtpEmailChannel:
    """SMTP with a time-out on every step and one connection reused across a batch.

    Failures before the message body is handed over are retryable (nothing was sent); a failure
    while the server acknowledges the body is ambiguous: the server may have queued it. An address
    that is not ASCII goes with SMTPUTF8 when the server offers it, and is a permanent failure
    (``email_address_needs_smtputf8``) when it does not.
    """

    name = "email"

    def __init__(self, target: SmtpTarget, sender: str, return_path: Callable[[str], str] | None = None):
        self.target = target
        self.sender = sender
        self.return_path = return_path  # occurrence key -> envelope sender (VERP), see return_path_for
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
        envelope_from = self.return_path(email.occurrence_key) if self.return_path else _envelope_of(self.sender)
        extra = None
        if self.return_path:  # Postmark's webhooks carry it back as Metadata (other relays ignore it)
            extra = {"X-PM-Metadata-loyalty-token": token_in_address(envelope_from) or ""}
        try:
            wire = wire_bytes(email, extra=extra)
        except ValueError as exc:  # a line break in a header value: never written, never sent
            raise PermanentFailure("email_not_writable", str(exc)) from None
        connection = self._connect()
        try:
            connection.ehlo_or_helo_if_needed()
            options: tuple[str, ...] = ()
            if needs_smtputf8(envelope_from, email.to):
                if not connection.has_extn("smtputf8"):
                    raise PermanentFailure("email_address_needs_smtputf8",
                                           "the address is not ASCII and the SMTP server does not offer SMTPUTF8")
                options = ("SMTPUTF8",)  # smtplib then writes the commands in UTF-8
            if options:
                connection.command_encoding = "utf-8"  # as smtplib's mail() does for SMTPUTF8
            # smtplib's mail() and rcpt() parse each address again (0.2 ms a message): a plain one
            # is written as it is, anything else goes through smtplib's own quoting.
            connection.putcmd("mail", f"FROM:{_smtp_path(envelope_from)}{''.join(' ' + o for o in options)}")
            code, reply = connection.getreply()
            if code != 250:
                self._reset()
                raise _sorted_failure(code, reply, "sender refused")
            connection.putcmd("rcpt", f"TO:{_smtp_path(email.to)}")
            code, reply = connection.getreply()
            if code not in (250, 251):
                connection.rset()
                raise _sorted_failure(code, reply, "recipient refused")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._reset()
            raise RetryableFailure("smtp_connection_lost", type(exc).__name__) from None
        try:
            code, reply = _data(connection, wire)
        except smtplib.SMTPDataError as exc:
            self._reset()
            raise _sorted_failure(exc.smtp_code, exc.smtp_error, "message refused") from None
        except (TimeoutError, OSError, smtplib.SMTPServerDisconnected) as exc:
            self._reset()
            raise AmbiguousFailure("smtp_no_answer_after_data", type(exc).__name__) from None
        if code != 250:
            raise _sorted_failure(code, reply, "message refused")
        return message_id_for(email.occurrence_key, email.sender)

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


def _data(connection: smtplib.SMTP, wire: bytes) -> tuple[int, bytes]:
    """``connection.data(wire)`` as smtplib does it (DATA, 354, the message, ".", the reply; an
    ``SMTPDataError`` when DATA is refused), with the same bytes sent: its dot-stuffing is a regular
    expression run over the whole message (``smtplib._quote_periods``, a few times the CPU of
    :func:`dot_stuffed` on a shipped email)."""
    connection.putcmd("data")
    code, reply = connection.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    quoted = dot_stuffed(wire)
    if quoted[-2:] != _CRLF:
        quoted += _CRLF
    connection.send(quoted + b"." + _CRLF)
    return connection.getreply()


def dot_stuffed(data: bytes) -> bytes:
    """A period that begins a line doubled (RFC 5321 4.5.2), as ``smtplib._quote_periods`` does:
    one at the very start, and one after each line feed."""
    quoted = data.replace(b"\n.", b"\n..")
    return b"." + quoted if quoted[:1] == b"." else quoted


def _sorted_failure(code: int, reply: bytes | str, what: str) -> RetryableFailure | PermanentFailure:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    detail = f"{what}: {code} {text}"[:500]
    if 400 <= code < 500:
        return RetryableFailure("smtp_temporary_error", detail)
    return PermanentFailure("email_rejected", detail)

