import pytest

from loyalty.errors import ConfigurationError
from loyalty.settings import load_settings


def test_nothing_set_means_the_embedded_default(tmp_path):
    settings = load_settings({"LOYALTY_HOME": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path / 'loyalty.db'}"
    assert settings.redis_url is None and settings.smtp is None
    assert settings.outbox_dir == tmp_path / "outbox"


def test_heroku_postgres_url_is_accepted_and_uses_psycopg():
    settings = load_settings({"DATABASE_URL": "postgres://u:p@db.example:5432/app", "LOYALTY_SECRET": "x" * 32})
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
        ({"SMTP_URL": "smtp://mail:notaport"}, "SMTP_URL has a bad port"),
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
