import pytest

from core.errors import ConfigurationError
from core.settings import load_settings

#: What a production deployment (DATABASE_URL set) needs at least.
PRODUCTION = {
    "DATABASE_URL": "postgres://u:p@db.example:5432/app",
    "LOYALTY_SECRET": "x" * 32,
    "LOYALTY_PUBLIC_URL": "https://loyalty.shop.example",
    "LOYALTY_EMAIL_FROM": "Club <club@shop.example>",
}


def test_nothing_set_means_the_embedded_default(tmp_path):
    settings = load_settings({"LOYALTY_HOME": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path / 'loyalty.db'}"
    assert settings.redis_url is None and settings.smtp is None
    assert settings.outbox_dir == tmp_path / "outbox"


def test_heroku_postgres_url_is_accepted_and_uses_psycopg():
    settings = load_settings(PRODUCTION)
    assert settings.database_url == "postgresql+psycopg://u:p@db.example:5432/app"
    assert not settings.embedded


def test_a_database_without_a_secret_is_refused_naming_the_variable():
    with pytest.raises(ConfigurationError, match="^LOYALTY_SECRET is not set"):
        load_settings({"DATABASE_URL": "postgresql://db/app"})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_URL": "mysql://db/app"}, "DATABASE_URL uses the scheme 'mysql'"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL uses the scheme 'http'"),
        ({"SMTP_URL": "imap://mail"}, "SMTP_URL uses the scheme 'imap'"),
        ({"SMTP_URL": "smtp://mail:notaport"}, "SMTP_URL has a port that is not a number"),
        ({"LOYALTY_DEFAULT_TIMEZONE": "Mars/Olympus"}, "LOYALTY_DEFAULT_TIMEZONE 'Mars/Olympus' is not an IANA time zone"),
        ({"LOYALTY_DEFAULT_LOCALE": "xx_YY_ZZ"}, "LOYALTY_DEFAULT_LOCALE 'xx_YY_ZZ' is not a known locale"),
        ({"LOYALTY_DELIVERY_BATCH_SIZE": "lots"}, "LOYALTY_DELIVERY_BATCH_SIZE must be a whole number"),
    ],
)
def test_each_bad_variable_is_named_in_the_error(env, message):
    with pytest.raises(ConfigurationError) as error:
        load_settings(env)
    assert str(error.value).startswith(message)


def test_smtp_url_forms():
    plain = load_settings({"SMTP_URL": "smtp://127.0.0.1:2525"}).smtp
    assert (plain.host, plain.port, plain.security) == ("127.0.0.1", 2525, "none")
    starttls = load_settings({"SMTP_URL": "smtp+starttls://user%40x:p%40ss@mail.example"}).smtp
    assert (starttls.port, starttls.security, starttls.username, starttls.password) == (587, "starttls", "user@x", "p@ss")
    assert load_settings({"SMTP_URL": "smtps://mail.example"}).smtp.port == 465


def test_rediss_builds_a_tls_client_that_accepts_heroku_s_self_signed_certificate():
    import ssl

    from workers.broker import redis_client

    client = redis_client("rediss://:secret@redis.example:6380/0")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["ssl_cert_reqs"] in (None, ssl.CERT_NONE, "none")


def _refusal(env) -> str:
    with pytest.raises(ConfigurationError) as error:
        load_settings(env)
    return str(error.value)


def _one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and message.count(". ") == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"LOYALTY_PUBLIC_URL": ""}, "LOYALTY_PUBLIC_URL is not set"),
        ({"LOYALTY_PUBLIC_URL": "http://loyalty.shop.example"}, "LOYALTY_PUBLIC_URL must be an https URL"),
        ({"LOYALTY_PUBLIC_URL": "/unsubscribe"}, "LOYALTY_PUBLIC_URL is not an absolute http(s) URL"),
        ({"LOYALTY_PUBLIC_URL": "loyalty.shop.example"}, "LOYALTY_PUBLIC_URL is not an absolute http(s) URL"),
        ({"LOYALTY_EMAIL_FROM": ""}, "LOYALTY_EMAIL_FROM is not set"),
        ({"LOYALTY_EMAIL_FROM": "Club"}, "LOYALTY_EMAIL_FROM is not a valid sender address"),
        ({"LOYALTY_EMAIL_FROM": "club@"}, "LOYALTY_EMAIL_FROM is not a valid sender address"),
        ({"LOYALTY_EMAIL_FROM": "club@shop.example, all@shop.example"}, "LOYALTY_EMAIL_FROM is not a valid sender address"),
        ({"LOYALTY_EMAIL_FROM": "club@shop.example\r\nBcc: all@victims.example"}, "LOYALTY_EMAIL_FROM contains a line break"),
        ({"LOYALTY_SECRET": " " * 40}, "LOYALTY_SECRET is only spaces"),
        ({"LOYALTY_LOOKUP_KEY": "k"}, "LOYALTY_LOOKUP_KEY is too short"),
        ({"LOYALTY_TICK_MINUTES": "abc"}, "LOYALTY_TICK_MINUTES must be a whole number"),
        ({"LOYALTY_TICK_MINUTES": "0"}, "LOYALTY_TICK_MINUTES must be greater than zero"),
        ({"LOYALTY_LOG_LEVEL": "loud"}, "LOYALTY_LOG_LEVEL 'loud' is not a level"),
        ({"LOYALTY_QUEUE_NAMESPACE": "my queue"}, "LOYALTY_QUEUE_NAMESPACE must be"),
        ({"LOYALTY_QUEUE_NAMESPACE": "*"}, "LOYALTY_QUEUE_NAMESPACE must be"),
        ({"LOYALTY_ACTOR": "alice\x1b[31m"}, "LOYALTY_ACTOR must be a name"),
        ({"LOYALTY_ACTOR": "   "}, "LOYALTY_ACTOR must be a name"),
        ({"PORT": "http"}, "PORT must be a number from 1 to 65535"),
        ({"PORT": "0"}, "PORT must be a number from 1 to 65535"),
        ({"PORT": "70000"}, "PORT must be a number from 1 to 65535"),
        ({"SMTP_URL": "smtp://mail.example:25?timeout=0"}, "SMTP_URL has the timeout '0'"),
        ({"SMTP_URL": "smtp://mail.example:25?timeout=-5"}, "SMTP_URL has the timeout '-5'"),
        ({"SMTP_URL": "smtp://mail.example:25?timeout=nan"}, "SMTP_URL has the timeout 'nan'"),
        ({"SMTP_URL": "smtp://mail.example:25?timeout=inf"}, "SMTP_URL has the timeout 'inf'"),
        ({"SMTP_URL": "smtp://u:secret@mail.example:abc"}, "SMTP_URL has a port that is not a number"),
        ({"DATABASE_URL": "postgres://u:secret@db.example:port/app"}, "DATABASE_URL has a port that is not a number"),
        ({"REDIS_URL": "redis://:secret@cache.example:abc/0"}, "REDIS_URL has a port that is not a number"),
        ({"REDIS_URL": "redis://:secret@cache.example:6379/zero"}, "REDIS_URL names the database 'zero'"),
    ],
)
def test_a_production_variable_that_is_missing_or_malformed_is_one_sentence_naming_it(change, message):
    refusal = _refusal({**PRODUCTION, **change})
    assert refusal.startswith(message)
    assert _one_sentence(refusal)
    assert "secret@" not in refusal  # a URL's password is never echoed


def test_without_a_database_the_development_defaults_stand_but_what_is_set_is_checked(tmp_path):
    settings = load_settings({"LOYALTY_HOME": str(tmp_path)})
    assert (settings.public_base_url, settings.email_from) == ("http://127.0.0.1:8000", "Loyalty Club <club@example.com>")
    assert _refusal({"LOYALTY_EMAIL_FROM": "nobody"}).startswith("LOYALTY_EMAIL_FROM is not a valid sender address")
    assert _refusal({"LOYALTY_LOG_LEVEL": "LOUD"}).startswith("LOYALTY_LOG_LEVEL 'LOUD' is not a level")


def test_the_settings_carry_every_variable_the_processes_read():
    settings = load_settings({
        **PRODUCTION, "LOYALTY_TICK_MINUTES": "2", "LOYALTY_LOG_LEVEL": "WARNING", "LOYALTY_QUEUE_NAMESPACE": "shop-1.q",
        "LOYALTY_ACTOR": "alice", "PORT": "5000", "SMTP_URL": "smtps://mail.example?timeout=2.5",
        "REDIS_URL": "rediss://:p@cache.example:6380/2", "LOYALTY_LOOKUP_KEY": "l" * 32,
    })
    assert (settings.tick_minutes, settings.log_level, settings.queue_namespace, settings.actor, settings.port) == (
        2, "warning", "shop-1.q", "alice", 5000)
    assert settings.smtp.timeout == 2.5 and settings.redis_url.endswith("/2") and settings.lookup_key == "l" * 32
    assert load_settings({**PRODUCTION, "USER": "bob"}).actor == "bob"


def test_a_loopback_public_url_may_be_http_for_a_web_process_called_on_the_same_machine():
    assert load_settings({**PRODUCTION, "LOYALTY_PUBLIC_URL": "http://127.0.0.1:8123/"}).public_base_url == "http://127.0.0.1:8123"


def test_the_inbox_sweep_threshold_is_a_minute_unless_set_and_is_the_clock_s_period_for_it():
    from schedules.clock import build_scheduler

    assert load_settings(PRODUCTION).inbox_stale_after_seconds == 60
    settings = load_settings({**PRODUCTION, "LOYALTY_INBOX_STALE_AFTER_SECONDS": "5"})
    assert settings.inbox_stale_after_seconds == 5
    job = build_scheduler(settings, tick_minutes=5).get_job("inbox.sweep")
    assert job.trigger.interval.total_seconds() == 5
    with pytest.raises(ConfigurationError, match="LOYALTY_INBOX_STALE_AFTER_SECONDS must be greater than zero"):
        load_settings({**PRODUCTION, "LOYALTY_INBOX_STALE_AFTER_SECONDS": "0"})
