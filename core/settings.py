"""Configuration, read once from the environment (12-factor) and validated.

Every problem names the variable and says what to do. With nothing set, the product runs on its
*embedded default*: a SQLite file, dramatiq's in-process broker and an outbox folder in place of
the network, all under ``LOYALTY_HOME`` (``./.loyalty`` by default).

Tests and tools build a ``Settings`` from any mapping with :func:`load_settings`, so nothing reads
``os.environ`` at import time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from functools import lru_cache
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from core.errors import ConfigurationError
from core.feedback_settings import FeedbackSettings, parse_feedback_settings
from core.shop_settings import ShopSettings, parse_shop_settings

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAMPAIGNS_DIR = PACKAGE_ROOT / "campaigns" / "definitions"
DEFAULT_TEMPLATES_DIR = PACKAGE_ROOT / "campaigns" / "templates"
DEFAULT_PROGRAM_FILE = PACKAGE_ROOT / "campaigns" / "program.yaml"
EMBEDDED_SECRET = "embedded-default-secret-do-not-use-in-production"
EMBEDDED_EMAIL_FROM = "Loyalty Club <club@example.com>"
EMBEDDED_PUBLIC_URL = "http://127.0.0.1:8000"
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    security: str  # "none", "starttls" or "tls"
    timeout: float


@dataclass(frozen=True)
class TwilioTarget:
    """Twilio's Messaging API: the account, the Messaging Service every SMS goes through, pacing."""

    account_sid: str
    auth_token: str = field(repr=False)
    messaging_service_sid: str
    api_base_url: str  # https://api.twilio.com, or a local stand-in
    max_messages_per_second: float
    timeout: float


@dataclass(frozen=True)
class MailchimpTarget:
    """Mailchimp's Marketing API: the key, its data center, the audience (list) members go to."""

    api_key: str = field(repr=False)
    server_prefix: str
    list_id: str
    api_base_url: str  # https://<prefix>.api.mailchimp.com/3.0, or a local stand-in
    timeout: float
    max_connections: int = 10  # requests in progress at once with this key, across every process


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None
    smtp: SmtpTarget | None
    secret: str
    default_timezone: str
    default_locale: str
    email_from: str
    public_base_url: str
    home: Path
    campaigns_dir: Path
    templates_dir: Path
    program_file: Path
    outbox_dir: Path
    delivery_batch_size: int
    stale_after_seconds: int
    max_delivery_attempts: int
    data_keys: str | None = None  # LOYALTY_DATA_KEYS; None: derived from the secret
    lookup_key: str | None = None  # LOYALTY_LOOKUP_KEY; None: derived from the secret
    twilio: TwilioTarget | None = None  # None: SMS go to the outbox folder
    mailchimp: MailchimpTarget | None = None  # None: Mailchimp steps go to the outbox folder
    shop: ShopSettings = field(default_factory=ShopSettings)  # the shop's webhooks, API keys, data mapping
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)  # bounces and complaints
    tick_minutes: int = 5  # LOYALTY_TICK_MINUTES: the clock's period
    inbox_stale_after_seconds: int = 60  # LOYALTY_INBOX_STALE_AFTER_SECONDS: the inbox sweep's threshold and period
    log_level: str = "info"  # LOYALTY_LOG_LEVEL: debug, info, warning or error
    queue_namespace: str = "loyalty"  # LOYALTY_QUEUE_NAMESPACE: the Redis key prefix of the queues
    actor: str = "cli"  # LOYALTY_ACTOR, else $USER: who runs a CLI command, for the audit log
    port: int = 8000  # PORT: where the web process listens

    @property
    def embedded(self) -> bool:
        """True when no server is configured: SQLite, in-process queue, outbox channel."""
        return self.database_url.startswith("sqlite")


def _check_port(name: str, raw: str, example: str) -> None:
    """A port in the URL, when there is one, is a number from 1 to 65535 (never echoing the URL,
    which may carry a password)."""
    parts = urlsplit(raw)
    if "," in parts.netloc:  # libpq's several hosts: host1:5432,host2:5432
        return
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigurationError(f"{name} has a port that is not a number from 1 to 65535; set it like {example}.")


def normalise_database_url(raw: str) -> str:
    """Accept Heroku's ``postgres://`` and plain ``postgresql://``; use the psycopg 3 driver."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ConfigurationError(
            "DATABASE_URL is not a URL: set it like postgresql://user@host:5432/dbname."
        )
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        _check_port("DATABASE_URL", raw, "postgresql://user@host:5432/dbname")
        return f"postgresql+psycopg://{rest}"
    if scheme.startswith("sqlite"):
        return raw
    raise ConfigurationError(
        f"DATABASE_URL uses the scheme {scheme!r}; use postgresql:// (or postgres://), or unset it "
        "for the embedded SQLite default."
    )


def parse_redis_url(raw: str) -> str:
    scheme = raw.partition("://")[0]
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"REDIS_URL uses the scheme {scheme!r}; use redis:// or rediss:// (TLS), or unset it for "
            "the in-process queue."
        )
    if scheme != "unix":
        example = "redis://:password@host:6379/0"
        _check_port("REDIS_URL", raw, example)
        database = urlsplit(raw).path.strip("/")
        if database and not database.isdigit():
            raise ConfigurationError(
                f"REDIS_URL names the database {database!r}, which is not a number; set it like {example}."
            )
    return raw


def parse_smtp_url(raw: str) -> SmtpTarget:
    """``smtp://host:25`` (no TLS), ``smtp+starttls://user:pass@host:587``, ``smtps://user:pass@host:465``."""
    parts = urlsplit(raw)
    security = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}.get(parts.scheme)
    if security is None:
        raise ConfigurationError(
            f"SMTP_URL uses the scheme {parts.scheme!r}; use smtp://, smtp+starttls:// or smtps://."
        )
    if not parts.hostname:
        raise ConfigurationError("SMTP_URL has no host: set it like smtp+starttls://user:pass@host:587.")
    default_port = {"none": 25, "starttls": 587, "tls": 465}[security]
    _check_port("SMTP_URL", raw, "smtp+starttls://user:pass@host:587")
    port = parts.port or default_port
    raw_timeout = parse_qs(parts.query).get("timeout", ["30"])[0]
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(
            f"SMTP_URL has the timeout {raw_timeout!r}; it must be a number of seconds greater than zero, like ?timeout=30."
        )
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        security=security,
        timeout=timeout,
    )


def _positive_int(env: Mapping[str, str], name: str, default: int, *, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}.") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be greater than zero, not {value}.")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum}, not {value}.")
    return value


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}.") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be greater than zero, not {raw}.")
    return value


def _base_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(f"{name} {raw!r} is not an http(s) base URL; set it like {default}.")
    return raw.rstrip("/")


def _all_or_none(env: Mapping[str, str], names: tuple[str, ...], what: str) -> bool:
    """True when every variable is set, False when none is; an error naming the missing one else."""
    present = [name for name in names if env.get(name)]
    if not present:
        return False
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigurationError(
            f"{missing[0]} is not set although {present[0]} is: set all of {', '.join(names)} to {what}, "
            "or none of them to use the outbox folder."
        )
    return True


def parse_twilio(env: Mapping[str, str]) -> TwilioTarget | None:
    names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_MESSAGING_SERVICE_SID")
    if not _all_or_none(env, names, "send SMS through Twilio"):
        return None
    for name, prefix in (("TWILIO_ACCOUNT_SID", "AC"), ("TWILIO_MESSAGING_SERVICE_SID", "MG")):
        if not re.fullmatch(prefix + r"[0-9a-fA-F]{32}", env[name]):
            raise ConfigurationError(
                f"{name} must be {prefix} followed by 32 hexadecimal characters; copy it from the Twilio console."
            )
    return TwilioTarget(
        account_sid=env["TWILIO_ACCOUNT_SID"],
        auth_token=env["TWILIO_AUTH_TOKEN"],
        messaging_service_sid=env["TWILIO_MESSAGING_SERVICE_SID"],
        api_base_url=_base_url(env, "TWILIO_API_BASE_URL", "https://api.twilio.com"),
        max_messages_per_second=_positive_number(env, "TWILIO_MAX_MESSAGES_PER_SECOND", 10.0),
        timeout=_positive_number(env, "TWILIO_TIMEOUT_SECONDS", 10.0),
    )


def parse_mailchimp(env: Mapping[str, str]) -> MailchimpTarget | None:
    names = ("MAILCHIMP_API_KEY", "MAILCHIMP_SERVER_PREFIX", "MAILCHIMP_LIST_ID")
    if not _all_or_none(env, names, "sync members and send campaign steps to Mailchimp"):
        return None
    prefix = env["MAILCHIMP_SERVER_PREFIX"]
    if not re.fullmatch(r"[a-z]{2,4}[0-9]{1,3}", prefix):
        raise ConfigurationError(
            f"MAILCHIMP_SERVER_PREFIX {prefix!r} is not a Mailchimp data center; it looks like us21 "
            "(the end of the API key, after the dash)."
        )
    key_center = env["MAILCHIMP_API_KEY"].rpartition("-")[2] if "-" in env["MAILCHIMP_API_KEY"] else None
    if key_center is not None and key_center != prefix:
        raise ConfigurationError(
            f"MAILCHIMP_SERVER_PREFIX {prefix!r} is not the data center MAILCHIMP_API_KEY belongs to "
            f"({key_center!r}); set it to {key_center}."
        )
    list_id = env["MAILCHIMP_LIST_ID"]
    if not re.fullmatch(r"[0-9A-Za-z]{1,32}", list_id):
        raise ConfigurationError(
            "MAILCHIMP_LIST_ID must be the audience id (letters and digits, like a1b2c3d4e5): "
            "Audience > Settings > Audience name and defaults."
        )
    return MailchimpTarget(
        api_key=env["MAILCHIMP_API_KEY"],
        server_prefix=prefix,
        list_id=list_id,
        api_base_url=_base_url(env, "MAILCHIMP_API_BASE_URL", f"https://{prefix}.api.mailchimp.com/3.0"),
        timeout=_positive_number(env, "MAILCHIMP_TIMEOUT_SECONDS", 10.0),
        max_connections=_positive_int(env, "MAILCHIMP_MAX_CONNECTIONS", 10),
    )


def _check_timezone(name: str, value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{name} {value!r} is not an IANA time zone; use a name like Europe/Paris."
        ) from None
    return value


def _check_locale(name: str, value: str) -> str:
    try:
        Locale.parse(value)
    except (UnknownLocaleError, ValueError):
        raise ConfigurationError(f"{name} {value!r} is not a known locale; use a code like en or fr.") from None
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _public_url(env: Mapping[str, str], production: bool) -> str:
    """LOYALTY_PUBLIC_URL: required with DATABASE_URL, absolute and https (http only on a loopback
    address, for a web process run and called on the same machine)."""
    name, example = "LOYALTY_PUBLIC_URL", "https://loyalty.shop.example"
    raw = env.get(name) or ""
    if not raw:
        if production:
            raise ConfigurationError(
                f"{name} is not set: it is the web process's public address, put into every unsubscribe link and "
                f"checked against Twilio's signatures, so set it to an https URL like {example} whenever "
                "DATABASE_URL is set."
            )
        return EMBEDDED_PUBLIC_URL
    parts = urlsplit(raw)
    try:
        _ = parts.port  # raises ValueError when the port is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(f"{name} is not an absolute http(s) URL without query; set it like {example}.")
    if parts.scheme != "https" and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{name} must be an https URL (links sent to members and Twilio's callbacks go to it); set it like {example}."
        )
    return raw.rstrip("/")


def _email_from(env: Mapping[str, str], production: bool) -> str:
    """LOYALTY_EMAIL_FROM: required with DATABASE_URL; one valid address, optionally with a name."""
    name = "LOYALTY_EMAIL_FROM"
    raw = env.get(name) or ""
    example = "Club <club@shop.example>"
    if not raw:
        if production:
            raise ConfigurationError(
                f"{name} is not set: it is the sender of every email, so set it like {example} whenever "
                "DATABASE_URL is set."
            )
        return EMBEDDED_EMAIL_FROM
    if "\r" in raw or "\n" in raw:
        raise ConfigurationError(f"{name} contains a line break; set it on one line, like {example}.")
    from email_validator import EmailNotValidError, validate_email  # about 15 ms: only when a sender is set

    addresses = getaddresses([raw])
    try:
        if len(addresses) != 1 or "@" not in addresses[0][1]:
            raise EmailNotValidError("not one address")
        validate_email(addresses[0][1], check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise ConfigurationError(f"{name} is not a valid sender address; set it like {example}.") from None
    return raw


def _secret(env: Mapping[str, str], production: bool) -> str:
    secret = env.get("LOYALTY_SECRET") or ""
    if not secret:
        if production:
            raise ConfigurationError(
                "LOYALTY_SECRET is not set: it signs unsubscribe links, so set it to a long random "
                "string (for example `openssl rand -hex 32`) whenever DATABASE_URL is set."
            )
        return EMBEDDED_SECRET
    if not secret.strip():
        raise ConfigurationError(
            "LOYALTY_SECRET is only spaces: set it to a long random string (for example `openssl rand -hex 32`)."
        )
    if len(secret.strip()) < MIN_KEY_LENGTH:
        raise ConfigurationError(f"LOYALTY_SECRET is too short: use at least {MIN_KEY_LENGTH} random characters.")
    return secret


def _lookup_key(env: Mapping[str, str]) -> str | None:
    raw = env.get("LOYALTY_LOOKUP_KEY") or ""
    if not raw:
        return None
    if len(raw.strip()) < MIN_KEY_LENGTH:
        raise ConfigurationError(
            f"LOYALTY_LOOKUP_KEY is too short: use at least {MIN_KEY_LENGTH} random characters "
            "(for example `openssl rand -hex 32`), or unset it to derive it from LOYALTY_SECRET."
        )
    return raw


def _log_level(env: Mapping[str, str]) -> str:
    raw = env.get("LOYALTY_LOG_LEVEL") or "info"
    if raw.lower() not in LOG_LEVELS:
        raise ConfigurationError(f"LOYALTY_LOG_LEVEL {raw!r} is not a level; use one of {', '.join(LOG_LEVELS)}.")
    return raw.lower()


def _queue_namespace(env: Mapping[str, str]) -> str:
    raw = env.get("LOYALTY_QUEUE_NAMESPACE") or "loyalty"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", raw):
        raise ConfigurationError(
            "LOYALTY_QUEUE_NAMESPACE must be 1 to 64 letters, digits, dots, dashes or underscores, "
            "starting with a letter or digit (like loyalty)."
        )
    return raw


def _usable_actor(raw: str) -> bool:
    return bool(raw.strip()) and len(raw) <= 100 and raw.isprintable()


def _actor(env: Mapping[str, str]) -> str:
    """LOYALTY_ACTOR, else the login name ($USER, when it is a usable name), else ``cli``."""
    raw = env.get("LOYALTY_ACTOR") or ""
    if not raw:
        user = env.get("USER") or ""
        return user.strip() if _usable_actor(user) else "cli"
    if not _usable_actor(raw):
        raise ConfigurationError(
            "LOYALTY_ACTOR must be a name of 1 to 100 printable characters (who acts, for the audit log), like alice."
        )
    return raw.strip()


def _port(env: Mapping[str, str]) -> int:
    raw = env.get("PORT") or "8000"
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise ConfigurationError(f"PORT must be a number from 1 to 65535, not {raw!r}.")
    return int(raw)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate the settings from ``env`` (``os.environ`` when omitted)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("LOYALTY_HOME") or ".loyalty").resolve()

    raw_db = env.get("DATABASE_URL")
    database_url = normalise_database_url(raw_db) if raw_db else f"sqlite:///{home / 'loyalty.db'}"
    redis_url = parse_redis_url(env["REDIS_URL"]) if env.get("REDIS_URL") else None
    smtp = parse_smtp_url(env["SMTP_URL"]) if env.get("SMTP_URL") else None
    production = bool(raw_db)  # a database of its own: no development default may stand in

    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        smtp=smtp,
        secret=_secret(env, production),
        default_timezone=_check_timezone(
            "LOYALTY_DEFAULT_TIMEZONE", env.get("LOYALTY_DEFAULT_TIMEZONE") or "UTC"
        ),
        default_locale=_check_locale("LOYALTY_DEFAULT_LOCALE", env.get("LOYALTY_DEFAULT_LOCALE") or "en"),
        email_from=_email_from(env, production),
        public_base_url=_public_url(env, production),
        home=home,
        campaigns_dir=Path(env.get("LOYALTY_CAMPAIGNS_DIR") or DEFAULT_CAMPAIGNS_DIR),
        templates_dir=Path(env.get("LOYALTY_TEMPLATES_DIR") or DEFAULT_TEMPLATES_DIR),
        program_file=Path(env.get("LOYALTY_PROGRAM_FILE") or DEFAULT_PROGRAM_FILE),
        outbox_dir=Path(env.get("LOYALTY_OUTBOX_DIR") or home / "outbox"),
        delivery_batch_size=_positive_int(env, "LOYALTY_DELIVERY_BATCH_SIZE", 100),
        stale_after_seconds=_positive_int(env, "LOYALTY_STALE_AFTER_SECONDS", 600),
        max_delivery_attempts=_positive_int(env, "LOYALTY_MAX_DELIVERY_ATTEMPTS", 6),
        data_keys=_check_data_keys(env.get("LOYALTY_DATA_KEYS")),
        lookup_key=_lookup_key(env),
        twilio=parse_twilio(env),
        mailchimp=parse_mailchimp(env),
        tick_minutes=_positive_int(env, "LOYALTY_TICK_MINUTES", 5, maximum=1440),
        inbox_stale_after_seconds=_positive_int(env, "LOYALTY_INBOX_STALE_AFTER_SECONDS", 60, maximum=86400),
        log_level=_log_level(env),
        queue_namespace=_queue_namespace(env),
        actor=_actor(env),
        port=_port(env),
        shop=parse_shop_settings(env, env.get("LOYALTY_DEFAULT_TIMEZONE") or "UTC"),
        feedback=parse_feedback_settings(env),
    )


def _check_data_keys(raw: str | None) -> str | None:
    if not raw:
        return None
    from cryptography.fernet import Fernet

    for position, key in enumerate((k.strip() for k in raw.split(",")), start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ConfigurationError(
                f"LOYALTY_DATA_KEYS has a malformed key in position {position}; each key must be a Fernet key "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
            ) from None
    return raw


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return load_settings()
