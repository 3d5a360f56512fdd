"""The email feedback part of the settings: the bounce address (VERP), the relays' webhooks, the
bounce mailbox, the soft-bounce threshold.

Read by :func:`core.settings.load_settings` like every other variable (one sentence naming a
malformed one); see the README's "Bounces and complaints" section for each variable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from urllib.parse import unquote, urlsplit

from core.errors import ConfigurationError

#: The signed delivery token added to the bounce address's local part: 32 + 12 hexadecimal
#: characters (see ``core/tokens.py``), after a ``+``. A local part is at most 64 characters.
TOKEN_LENGTH = 44
MAX_BOUNCE_LOCAL = 64 - 1 - TOKEN_LENGTH
SNS_TOPIC_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")


@dataclass(frozen=True)
class ImapTarget:
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    security: str = "tls"  # "none", "starttls" or "tls"
    mailbox: str = "INBOX"
    timeout: float = 30.0


@dataclass(frozen=True)
class FeedbackSettings:
    bounce_address: str | None = None  # LOYALTY_BOUNCE_ADDRESS; None: the sender's address
    soft_bounce_limit: int = 3  # LOYALTY_SOFT_BOUNCE_LIMIT: soft bounces that make an address undeliverable
    ses_topic_arns: tuple[str, ...] = ()  # SES_SNS_TOPIC_ARNS: the SNS topics whose notifications count
    sendgrid_public_key: str | None = field(default=None, repr=False)  # SENDGRID_WEBHOOK_PUBLIC_KEY (base64 DER)
    postmark_username: str | None = None  # POSTMARK_WEBHOOK_USERNAME
    postmark_password: str | None = field(default=None, repr=False)  # POSTMARK_WEBHOOK_PASSWORD
    imap: ImapTarget | None = None  # LOYALTY_BOUNCE_IMAP_URL: the bounce mailbox
    max_body_bytes: int = 1_000_000  # a relay's notification larger than this is refused (413)

    def verp_base(self, email_from: str) -> tuple[str, str]:
        """(local part, domain) the delivery token is added to: ``local+TOKEN@domain``."""
        address = self.bounce_address or getaddresses([email_from])[0][1]
        local, _, domain = address.rpartition("@")
        return local, domain


def _bounce_address(env: Mapping[str, str]) -> str | None:
    name, example = "LOYALTY_BOUNCE_ADDRESS", "bounces@mail.shop.example"
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    local, at, domain = raw.rpartition("@")
    if (not at or not local or not domain or not raw.isascii() or "+" in local or "<" in raw or " " in raw
            or not re.fullmatch(r"[A-Za-z0-9.-]+", domain) or "." not in domain):
        raise ConfigurationError(
            f"{name} must be a plain ASCII address without a name or '+', like {example}: each email's "
            "bounce address is made from it by adding +<delivery token> to its local part."
        )
    if len(local) > MAX_BOUNCE_LOCAL:
        raise ConfigurationError(
            f"{name} has a local part of {len(local)} characters; use at most {MAX_BOUNCE_LOCAL}, since the "
            f"delivery token ({TOKEN_LENGTH + 1} characters) is added to it and a local part may have 64."
        )
    return raw


def _sendgrid_key(env: Mapping[str, str]) -> str | None:
    name = "SENDGRID_WEBHOOK_PUBLIC_KEY"
    raw = "".join((env.get(name) or "").split())
    if not raw:
        return None
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(base64.b64decode(raw, validate=True))
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("not an elliptic-curve key")
    except ValueError:
        raise ConfigurationError(
            f"{name} is not SendGrid's verification key: copy the base64 public key shown under Settings > "
            "Mail Settings > Event Webhook > Signature Verification."
        ) from None
    return raw


def _topic_arns(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "SES_SNS_TOPIC_ARNS"
    arns = tuple(a.strip() for a in (env.get(name) or "").split(",") if a.strip())
    for position, arn in enumerate(arns, start=1):
        if not SNS_TOPIC_ARN.fullmatch(arn):
            raise ConfigurationError(
                f"{name} has a value in position {position} that is not an SNS topic ARN; set it like "
                "arn:aws:sns:eu-west-1:123456789012:ses-feedback (comma-separated for several)."
            )
    return arns


def _postmark(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    user, password = env.get("POSTMARK_WEBHOOK_USERNAME") or "", env.get("POSTMARK_WEBHOOK_PASSWORD") or ""
    if not user and not password:
        return None, None
    if not user or not password:
        missing, present = (("POSTMARK_WEBHOOK_USERNAME", "POSTMARK_WEBHOOK_PASSWORD") if not user
                            else ("POSTMARK_WEBHOOK_PASSWORD", "POSTMARK_WEBHOOK_USERNAME"))
        raise ConfigurationError(
            f"{missing} is not set although {present} is: set both to the basic-auth user and password of the "
            "webhook URL you give Postmark, or neither."
        )
    if ":" in user:
        raise ConfigurationError("POSTMARK_WEBHOOK_USERNAME may not contain ':' (basic auth separates on it).")
    if len(password) < 16:
        raise ConfigurationError("POSTMARK_WEBHOOK_PASSWORD is too short: use at least 16 random characters.")
    return user, password


def parse_imap_url(raw: str) -> ImapTarget:
    """``imaps://user:pass@host:993/INBOX``, ``imap+starttls://...:143/Bounces``, ``imap://`` (no TLS)."""
    name, example = "LOYALTY_BOUNCE_IMAP_URL", "imaps://bounces%40shop.example:password@imap.shop.example/INBOX"
    parts = urlsplit(raw)
    security = {"imap": "none", "imap+starttls": "starttls", "imaps": "tls"}.get(parts.scheme)
    if security is None:
        raise ConfigurationError(f"{name} uses the scheme {parts.scheme!r}; use imaps://, imap+starttls:// or imap://.")
    try:
        port = parts.port or (993 if security == "tls" else 143)
    except ValueError:
        raise ConfigurationError(f"{name} has a port that is not a number from 1 to 65535; set it like {example}.") from None
    if not parts.hostname or not parts.username or not parts.password:
        raise ConfigurationError(f"{name} needs a host, a user and a password; set it like {example}.")
    return ImapTarget(host=parts.hostname, port=port, username=unquote(parts.username),
                      password=unquote(parts.password), security=security,
                      mailbox=unquote(parts.path.strip("/")) or "INBOX")


def _soft_limit(env: Mapping[str, str]) -> int:
    raw = env.get("LOYALTY_SOFT_BOUNCE_LIMIT") or "3"
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 100):
        raise ConfigurationError(f"LOYALTY_SOFT_BOUNCE_LIMIT must be a whole number from 1 to 100, not {raw!r}.")
    return int(raw)


def parse_feedback_settings(env: Mapping[str, str]) -> FeedbackSettings:
    user, password = _postmark(env)
    imap = parse_imap_url(env["LOYALTY_BOUNCE_IMAP_URL"]) if env.get("LOYALTY_BOUNCE_IMAP_URL") else None
    return FeedbackSettings(
        bounce_address=_bounce_address(env),
        soft_bounce_limit=_soft_limit(env),
        ses_topic_arns=_topic_arns(env),
        sendgrid_public_key=_sendgrid_key(env),
        postmark_username=user,
        postmark_password=password,
        imap=imap,
    )
