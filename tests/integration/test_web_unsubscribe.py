"""The unsubscribe link: one click (RFC 8058) and the page for people, in the member's language, its
form posting to LOYALTY_PUBLIC_URL whatever Host the request names."""

from __future__ import annotations

import re
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import select

from core.settings import load_settings
from core.tokens import unsubscribe_token
from loyalty.standins.http_server import BackgroundServer
from loyalty.web import create_app
from models.audit import AuditEntry
from models.member import Member
from tests.conftest import TEST_SECRET
from tests.support.members import add_members, make_member

PUBLIC = "https://club.example.com"  # the env fixture's LOYALTY_PUBLIC_URL


@contextmanager
def serving(env: dict):
    app = create_app(load_settings(env))
    server = BackgroundServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http
    finally:
        server.stop()
        app.state.engine.dispose()


@pytest.fixture
def client(env, pg_engine):
    with serving(env) as http:
        yield http


def link(external_id: str, channel: str = "email") -> str:
    return f"/unsubscribe/{unsubscribe_token(TEST_SECRET, external_id, channel)}"


def form_action(page: str) -> str:
    found = re.search(r'<form method="post" action="([^"]*)"', page)
    assert found, page
    return found.group(1).replace("&amp;", "&")


def opted_in(sessions, external_id: str) -> tuple[bool, bool, str | None]:
    with sessions() as session:
        member = session.scalars(select(Member).where(Member.external_id == external_id)).one()
    return member.email_opt_in, member.sms_opt_in, member.email_consent_source


def test_the_form_posts_to_the_public_url_whatever_host_the_request_names(client, pg_sessions):
    add_members(pg_sessions, make_member("M1"))
    page = client.get(link("M1"), headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example",
                                           "X-Forwarded-Proto": "http"})
    assert page.status_code == 200
    assert form_action(page.text) == PUBLIC + link("M1")
    assert "evil.example" not in page.text
    assert opted_in(pg_sessions, "M1")[0] is True  # a GET never unsubscribes: link scanners follow links


def test_the_page_and_its_confirmation_are_in_the_member_s_language(client, pg_sessions):
    add_members(pg_sessions, make_member("FR1", locale="fr_FR"), make_member("EN1", locale="en_GB"))
    french = client.get(link("FR1"))
    assert '<html lang="fr">' in french.text
    assert "Ne plus recevoir nos e-mails" in french.text and "Me désabonner" in french.text
    assert "Unsubscribe" not in french.text

    done = client.post(form_action(french.text).removeprefix(PUBLIC))  # the button, as a browser posts it
    assert done.status_code == 200
    assert "Vous êtes désabonné·e" in done.text and '<html lang="fr">' in done.text
    assert opted_in(pg_sessions, "FR1") == (False, False, "unsubscribe:page")

    english = client.get(link("EN1", "sms"))
    assert '<html lang="en">' in english.text and "Stop receiving our text messages?" in english.text


def test_a_language_without_a_page_falls_back_to_the_default_locale_then_english(env, pg_engine, pg_sessions):
    add_members(pg_sessions, make_member("DE1", locale="de_DE"))
    with serving({**env, "LOYALTY_DEFAULT_LOCALE": "fr"}) as client:
        assert "Ne plus recevoir nos e-mails" in client.get(link("DE1")).text
        assert "Ce lien de désabonnement n’est pas valide." in client.get("/unsubscribe/forged").text
    with serving({**env, "LOYALTY_DEFAULT_LOCALE": "it"}) as client:
        assert "Stop receiving our emails?" in client.get(link("DE1")).text


def test_one_click_unsubscribes_with_its_source_and_an_audit_entry(client, pg_sessions):
    add_members(pg_sessions, make_member("M1", sms_opt_in=True))
    answer = client.post(link("M1"), content=b"List-Unsubscribe=One-Click",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200
    assert opted_in(pg_sessions, "M1") == (False, True, "unsubscribe:one-click")  # that channel only
    with pg_sessions() as session:
        audit = session.scalars(select(AuditEntry)).one()
    assert (audit.actor, audit.action, audit.reason) == ("member", "optout.email", "unsubscribe link (one-click)")
    assert client.post(link("M1"), content=b"List-Unsubscribe=One-Click").status_code == 200  # again: no change
    with pg_sessions() as session:
        assert len(session.scalars(select(AuditEntry)).all()) == 1


def test_a_forged_link_or_a_member_no_longer_known_gets_the_invalid_page(client, pg_sessions):
    add_members(pg_sessions, make_member("M1"))
    token = unsubscribe_token(TEST_SECRET, "M1", "email")
    for path in (f"/unsubscribe/{token[:-2]}xx", link("GONE"), f"/unsubscribe/{unsubscribe_token('another-secret-0123456', 'M1', 'email')}"):
        for method in ("GET", "POST"):
            answer = client.request(method, path)
            assert answer.status_code == 404 and "This unsubscribe link is not valid." in answer.text, (method, path)
    assert opted_in(pg_sessions, "M1")[0] is True


def test_a_proof_s_dummy_link_says_it_is_a_proof_and_unsubscribes_nobody(client, pg_sessions):
    add_members(pg_sessions, make_member("M1"))
    for answer in (client.get("/unsubscribe/proof"), client.post("/unsubscribe/proof", content=b"List-Unsubscribe=One-Click")):
        assert answer.status_code == 200
        assert "unsubscribe link of a proof: nobody was unsubscribed" in answer.text
    assert opted_in(pg_sessions, "M1")[0] is True
