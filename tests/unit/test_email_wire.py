"""The hand-assembled wire form of an email (``wire_bytes``) read back by the standard library's
modern parser (``email.policy.default``): every shipped template in every locale, non-ASCII names
and subjects, long subjects, both parts; each header and body must come back as it was given.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from campaigns.context import sample_context
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from campaigns.rendering import Renderer, one_line
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE, DEFAULT_TEMPLATES_DIR
from workers.channels.base import OutgoingEmail
from workers.channels.email import message_id_for, wire_bytes

NOW = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
CAMPAIGNS = load_campaigns(DEFAULT_CAMPAIGNS_DIR).campaigns
PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
RENDERER = Renderer(DEFAULT_TEMPLATES_DIR)
SHIPPED = [(campaign_id, locale) for campaign_id, campaign in sorted(CAMPAIGNS.items())
           if campaign.messages.email is not None for locale in campaign.locales]
NAMES = ["Alex", "Chloé", "Zoë Ødegård-Łukasz", "李小龍", "Ægir 🎂", "O'Brien \"Jr\""]
HEADERS = {"Date": email.utils.format_datetime(NOW), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
           "Auto-Submitted": "auto-generated", "MIME-Version": "1.0"}


def read_back(wire: bytes) -> email.message.EmailMessage:
    if not wire.isascii():  # RFC 6532 headers: the parser reads bytes as ASCII, so give it the text
        return email.message_from_string(wire.decode("utf-8"), policy=email.policy.default)
    return email.message_from_bytes(wire, policy=email.policy.default)


def check(sent: OutgoingEmail, extra: dict[str, str] | None = None, display_name: str | None = None) -> None:
    """The wire form parses without a defect; every header and both bodies come back as given."""
    wire = wire_bytes(sent, now=NOW, extra=extra)
    assert all(len(line) <= 998 for line in wire.split(b"\r\n"))
    assert b"\n" not in wire.replace(b"\r\n", b"")  # CRLF line ends only
    assert all(len(word) <= 75 for word in re.findall(rb"=\?utf-8\?[qb]\?[^?]*\?=", wire))
    if sent.sender.isascii() and sent.to.isascii():
        assert wire.isascii()  # 7-bit: no server needs 8BITMIME
    ours = read_back(wire)
    for message in (ours, *ours.iter_parts()):
        assert message.defects == []
    # Against what was given, not the standard generator's output: compat32 writes a subject
    # "=?utf-8?q?x?=" as is (a reader then decodes it) and breaks a header at "\x1e" (ours encodes).
    assert ours["Subject"] == sent.subject
    (sender,) = ours["From"].addresses
    given_name, given_address = email.utils.parseaddr(sent.sender)
    expected_name = display_name or given_name
    assert sender.addr_spec == given_address
    if sender.display_name != expected_name:
        # The modern parser folds Unicode white space (U+0085, U+2028...) inside a decoded display
        # name; the encoded words themselves must still carry the name exactly.
        raw = email.message_from_string(wire.decode("utf-8"))["From"]  # compat32: the header as written
        assert str(email.header.make_header(email.header.decode_header(raw))) == f"{expected_name} <{given_address}>"
        assert " ".join(sender.display_name.split()) == " ".join(expected_name.split())
    assert len(ours["To"].addresses) == 1
    assert ours["To"].addresses[0].addr_spec == sent.to
    for name, value in HEADERS.items():
        assert ours.get_all(name) == [value], name
    assert ours["Message-ID"] == message_id_for(sent.occurrence_key, sent.sender)
    assert ours["List-Unsubscribe"] == f"<{sent.unsubscribe_url}>"
    for name, value in (extra or {}).items():
        assert ours[name] == value
    assert ours.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ours.iter_parts()] == ["text/plain", "text/html"]
    for subtype, body in (("plain", sent.text), ("html", sent.html)):
        part = ours.get_body((subtype,))
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        got = part.get_content().replace("\r\n", "\n")
        assert got == body.replace("\r\n", "\n").replace("\r", "\n")


def rendered(campaign_id: str, locale: str, first_name: str) -> OutgoingEmail:
    campaign = CAMPAIGNS[campaign_id]
    context = sample_context(campaign, PROGRAM)
    context["member"] = {**context["member"], "first_name": first_name, "last_name": "Dupré"}
    message = RENDERER.render_email(campaign, locale, context, member_locale=locale)
    return OutgoingEmail(occurrence_key=f"{campaign_id}:M1:2027", to="m1@members.example",
                         sender="Café Fidélité <club@shop.example>", subject=message.subject, text=message.text,
                         html=message.html, unsubscribe_url=context["unsubscribe_url"])


def test_every_shipped_template_is_covered():
    assert {campaign_id for campaign_id, _ in SHIPPED} >= {"birthday"}
    assert {locale for _, locale in SHIPPED} >= {"en", "fr"}


@pytest.mark.parametrize(("campaign_id", "locale"), SHIPPED)
@pytest.mark.parametrize("first_name", NAMES)
def test_every_shipped_template_and_locale_round_trips_through_the_modern_parser(campaign_id, locale, first_name):
    sent = rendered(campaign_id, locale, first_name)
    assert first_name.replace("'", "&#39;").replace('"', "&#34;") in sent.html or first_name in sent.html \
        or first_name not in sent.text  # the name reached the message (escaped in HTML)
    check(sent)
    long = one_line(f"{sent.subject} {first_name} — " + "une très longue promesse " * 12)
    check(OutgoingEmail(**{**sent.__dict__, "subject": long}))


@pytest.mark.parametrize("subject", [
    "Happy birthday!", "", "a" * 300, "=?utf-8?q?not_a_word?=", "Joyeux anniversaire, Chloé ! 1\u202f500 points (15,00\xa0€)",
    "🎂" * 40, "x\x01y", "tab\there",
])
def test_odd_subjects_round_trip(subject):
    base = rendered("birthday", "en", "Alex")
    check(OutgoingEmail(**{**base.__dict__, "subject": subject}), extra={"X-PM-Metadata-loyalty-token": "abc.def"})


def test_bodies_without_a_final_line_end_trailing_spaces_and_long_lines_round_trip():
    base = rendered("birthday", "fr", "Chloé")
    text = "no final line end, trailing spaces   \n\ttab line\t\n" + "é" * 200 + "\n.\nFrom here\n= sign"
    check(OutgoingEmail(**{**base.__dict__, "text": text, "html": "<p>" + "x" * 500 + "</p>"}))


def test_a_non_ascii_address_is_written_as_utf_8_and_read_back():
    base = rendered("birthday", "en", "Inès")
    check(OutgoingEmail(**{**base.__dict__, "to": "inès.x@example.com"}))


def test_a_line_break_in_a_header_value_is_refused_never_written():
    base = rendered("birthday", "en", "Alex")
    for field, value in (("subject", "a\r\nBcc: x@evil.example"), ("to", "a@b.example\nBcc: x@evil.example"),
                         ("unsubscribe_url", "https://x.example/\r\nBcc: y")):
        with pytest.raises(ValueError):
            wire_bytes(OutgoingEmail(**{**base.__dict__, field: value}), now=NOW)


def _fits_one_word(name: str) -> str:
    """A sender name cut to what one encoded word holds (45 UTF-8 bytes): a longer run of words that
    are not ASCII atoms takes several encoded words, which the modern parser reads back with a space
    between them inside an address (as with its own generator's output; see the test above).
    Member names, uncut, go in the bodies."""
    while len(name.encode("utf-8")) > 45:
        name = name[:-1]
    return name


def test_a_long_sender_name_round_trips_and_a_long_run_of_non_ascii_words_is_read_as_the_stdlib_reads_its_own():
    name = "Club Fidélité des Grands Magasins Réunis de Lyon"
    base = rendered("birthday", "en", "Alex")
    ours = read_back(wire_bytes(OutgoingEmail(**{**base.__dict__, "sender": f"{name} <club@shop.example>"}), now=NOW))
    stdlib = email.message.EmailMessage()
    stdlib["From"] = email.headerregistry.Address(name, addr_spec="club@shop.example")
    theirs = read_back(stdlib.as_bytes())
    assert ours["From"].addresses[0].addr_spec == "club@shop.example"
    assert ours["From"].addresses[0].display_name == name == theirs["From"].addresses[0].display_name
    run = "Fidélité Réunie Équitable Générale Économique Française"  # one run of 64 bytes: two words
    ours = read_back(wire_bytes(OutgoingEmail(**{**base.__dict__, "sender": f"Club {run} <club@shop.example>"}), now=NOW))
    stdlib.replace_header("From", email.headerregistry.Address(f"Club {run}", addr_spec="club@shop.example"))
    theirs = read_back(stdlib.as_bytes())
    assert ours["From"].addresses[0].display_name.replace(" ", "") == f"Club {run}".replace(" ", "")
    assert theirs["From"].addresses[0].display_name != f"Club {run}"  # the standard library's own round trip


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=120)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=TEXT, subject=TEXT, body=TEXT)
@example(name="\x1b \x850", subject="", body="")  # U+0085 inside the name: the parser folds it (found by CI)
def test_random_names_and_subjects_round_trip(name, subject, body):
    # As LOYALTY_EMAIL_FROM gives it: a quoted name, unencoded (with no Unicode space at its ends,
    # which the parser trims from a display name whatever wrote it).
    display = one_line(_fits_one_word(name)).strip()
    quoted = display.replace("\\", "\\\\").replace('"', '\\"')
    sender = f'"{quoted}" <club@shop.example>' if display else "club@shop.example"
    sent = OutgoingEmail(
        occurrence_key="birthday:M9:2027", to="m9@members.example", sender=sender,
        subject=one_line(subject), text=f"Bonjour {name},\n{body}\n", html=f"<p>Bonjour {name}</p>\n<p>{body}</p>\n",
        unsubscribe_url="https://club.example.com/unsubscribe/abc.def",
    )
    check(sent, display_name=display)


@settings(max_examples=300, deadline=None)
@given(local=st.text(min_size=1, max_size=20), domain=st.text(min_size=1, max_size=20))
def test_the_smtp_path_is_what_smtplib_would_write(local, domain):
    import smtplib

    from workers.channels.email import _smtp_path

    for address in (f"{local}@{domain}", local, "bounces+abc.DEF_1-2@mail.example.com", "inès.x@example.com"):
        assert _smtp_path(address) == smtplib.quoteaddr(address)
