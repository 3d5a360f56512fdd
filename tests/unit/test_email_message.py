import email
import email.policy
import re

from workers.channels.base import OutgoingEmail
from workers.channels.email import WIRE_POLICY, build_message, message_id_for
from workers.delivery import retry_delay

EMAIL = OutgoingEmail(
    occurrence_key="birthday:M1:2027", to="m1@members.example", sender="Club <club@shop.example>",
    subject="Joyeux anniversaire !", text="Bonjour é\n", html="<p>Bonjour é</p>\n",
    unsubscribe_url="https://club.example.com/unsubscribe/" + "x" * 120,
)


def test_the_message_id_is_stable_per_occurrence_and_uses_the_sender_domain():
    assert message_id_for("birthday:M1:2027", EMAIL.sender) == message_id_for("birthday:M1:2027", EMAIL.sender)
    assert message_id_for("birthday:M1:2027", EMAIL.sender) != message_id_for("birthday:M1:2028", EMAIL.sender)
    assert message_id_for("birthday:M1:2027", EMAIL.sender).endswith("@shop.example>")


def test_a_long_unsubscribe_link_stays_one_readable_header_line_on_the_wire():
    wire = build_message(EMAIL).as_bytes(policy=WIRE_POLICY)
    header = next(line for line in wire.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert header == f"List-Unsubscribe: <{EMAIL.unsubscribe_url}>".encode()
    assert b"\n" not in wire.replace(b"\r\n", b"")  # every line ends in CRLF


def test_accented_subjects_names_and_bodies_arrive_intact_through_a_standard_parser():
    sent = OutgoingEmail(
        occurrence_key="birthday:M2:2027", to="m2@members.example", sender="Café Fidélité <club@shop.example>",
        subject="Joyeux anniversaire, Chloé ! 500 points pour vous et une surprise en boutique 🎂",
        text="Bonjour Chloé,\n\nvos 500 points valent 5,00 €.\n", html="<p>Bonjour Chloé,</p>\n<p>5,00 €</p>\n",
        unsubscribe_url="https://club.example.com/unsubscribe/abc.def",
    )
    wire = build_message(sent).as_bytes(policy=WIRE_POLICY)
    assert wire.isascii()  # 7-bit clean: no server needs 8BITMIME or SMTPUTF8 for it
    assert all(len(line) <= 998 for line in wire.split(b"\r\n"))
    assert all(len(word) <= 75 for word in re.findall(rb"=\?utf-8\?[qb]\?[^?]*\?=", wire))
    received = email.message_from_bytes(wire, policy=email.policy.default)
    assert received["Subject"] == sent.subject
    assert received["From"].addresses[0].display_name == "Café Fidélité"
    assert received["From"].addresses[0].addr_spec == "club@shop.example"
    assert received["To"].addresses[0].addr_spec == sent.to
    assert len(received.get_all("MIME-Version")) == 1
    assert received.get_content_type() == "multipart/alternative"
    assert received.get_body(("plain",)).get_content().replace("\r\n", "\n") == sent.text
    assert received.get_body(("html",)).get_content().replace("\r\n", "\n") == sent.html


def test_retries_back_off_within_minutes_not_days():
    delays = [retry_delay(attempt).total_seconds() for attempt in range(1, 9)]
    assert delays[:5] == [30, 60, 120, 240, 480]
    assert max(delays) == 900


def test_a_subject_with_babel_s_narrow_no_break_space_arrives_with_it():
    sent = OutgoingEmail(
        occurrence_key="birthday:M3:2027", to="m3@members.example", sender=EMAIL.sender,
        subject="Joyeux anniversaire, Chloé ! 1\u202f500 points pour vous (15,00\xa0€)", text="1\u202f500\n",
        html="<p>1\u202f500</p>\n", unsubscribe_url=EMAIL.unsubscribe_url,
    )
    received = email.message_from_bytes(build_message(sent).as_bytes(policy=WIRE_POLICY), policy=email.policy.default)
    assert received["Subject"] == sent.subject


def test_an_address_that_is_not_ascii_is_written_as_itself_in_utf8_and_everything_else_stays_7bit():
    sent = OutgoingEmail(
        occurrence_key="birthday:M4:2027", to="inès.x@example.com", sender=EMAIL.sender, subject="Joyeux anniversaire",
        text="Bonjour Inès\n", html="<p>Bonjour Inès</p>\n", unsubscribe_url=EMAIL.unsubscribe_url,
    )
    wire = build_message(sent).as_bytes(policy=WIRE_POLICY)
    assert "\r\nTo: inès.x@example.com\r\n".encode() in wire  # RFC 6532: for an SMTPUTF8 server only
    assert [line for line in wire.split(b"\r\n") if not line.isascii()] == ["To: inès.x@example.com".encode()]
    assert build_message(sent).as_bytes().split(b"\n").count("To: inès.x@example.com".encode()) == 1  # the outbox
