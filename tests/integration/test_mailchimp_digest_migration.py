"""Migration 0009: the unkeyed MD5 digests an older version stored for Mailchimp are cleared."""

from __future__ import annotations

import hashlib
import os

import psycopg
import pytest
from alembic import command
from sqlalchemy import text

from models.db import alembic_config, make_engine, migrate
from tests.conftest import PG_ROOT

EMAIL = "old@members.example"
OLD_HASH = hashlib.md5(EMAIL.encode()).hexdigest()  # what an older version stored as a Mailchimp delivery's id


@pytest.fixture(params=["sqlite", "postgresql"])
def database_at_0008(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loyalty.db'}"
        return
    name = f"loyalty_test_migration_{os.getpid()}"
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ROOT}/{name}".replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(f"{PG_ROOT}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_old_md5_digests_and_mailchimp_provider_ids_are_cleared_and_the_rest_kept(database_at_0008):
    engine = make_engine(database_at_0008)
    try:
        command.upgrade(alembic_config(engine), "0008")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO members (id, external_id, email_status, phone_status, locale, timezone, email_opt_in,"
                " sms_opt_in, tier, joined_at, created_at, updated_at, mailchimp_status, mailchimp_hash)"
                " VALUES (1, 'OLD', 'ok', 'ok', 'en', 'UTC', true, true, 'gold', '2026-01-01 00:00:00+00',"
                " '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', 'subscribed', :digest)"), {"digest": OLD_HASH})
            for n, (channel, provider_id) in enumerate([("mailchimp", OLD_HASH), ("sms", "SM0123456789")]):
                connection.execute(text(
                    "INSERT INTO deliveries (id, occurrence_key, campaign, member_id, channel, state, send_at, attempts,"
                    " planned_at, updated_at, provider_message_id)"
                    " VALUES (:id, :key, 'journey', 1, :channel, 'sent', '2026-06-01 00:00:00+00', 1,"
                    " '2026-06-01 00:00:00+00', '2026-06-01 00:00:00+00', :provider_id)"),
                    {"id": n + 1, "key": f"journey:OLD:{n}", "channel": channel, "provider_id": provider_id})

        assert migrate(engine) is True
        with engine.connect() as connection:
            assert connection.execute(text("SELECT mailchimp_status, mailchimp_hash FROM members")).all() == [
                ("subscribed", None)]  # the next sync sends this member once more, then digests it keyed
            assert connection.execute(text(
                "SELECT channel, state, provider_message_id FROM deliveries ORDER BY id")).all() == [
                ("mailchimp", "sent", None), ("sms", "sent", "SM0123456789")]
    finally:
        engine.dispose()
