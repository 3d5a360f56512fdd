"""The SMTP channel sends DATA itself (``workers.channels.email._data``): the same bytes as smtplib's
``data()``, whose regular-expression dot-stuffing it replaces, reach a real server intact; and the
Date header, written once a second, is what ``format_datetime`` writes."""

from __future__ import annotations

import email
import email.policy
import smtplib
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from core.settings import SmtpTarget
from tests.support.smtp import SmtpSink
from workers.channels.base import OutgoingEmail
from workers.channels.email import SmtpEmailChannel, dot_stuffed, wire_bytes


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"a", b"=2E", b" ", b"\xc3\xa9"]), max_size=40))
def test_dot_stuffing_is_smtplib_s(pieces):
    data = b"".join(pieces)
    assert dot_stuffed(data) == smtplib._quote_periods(data)  # noqa: SLF001


def test_lines_starting_with_periods_reach_the_server_as_written():
    sink = SmtpSink()
    sink.start()
    channel = SmtpEmailChannel(SmtpTarget("127.0.0.1", sink.port, None, None, "none", 10), "Club <club@example.com>")
    text = ".\n..\n.hidden line\nend.\n. \n"
    html = "<p>\n.a\n</p>\n."
    try:
        for number, (body, markup) in enumerate(((text, html), (".first", ".first"), ("x" * 75 + ".y", "<p>ok</p>"))):
            sent = OutgoingEmail(occurrence_key=f"birthday:M{number}:2027", to=f"m{number}@members.example",
                                 sender="Club <club@example.com>", subject="Periods", text=body, html=markup,
                                 unsubscribe_url="https://club.example.com/u/x")
            channel.send(sent)
            with sink.lock:
                raw = sink.raw[-1]
            message = email.message_from_bytes(raw, policy=email.policy.default)
            plain, rich = (part.get_content().replace("\r\n", "\n") for part in message.iter_parts())
            assert (plain, rich) == (body, markup)
            assert raw.split(b"\r\n\r\n", 1)[1] == wire_bytes(sent).split(b"\r\n\r\n", 1)[1]  # the very bytes
    finally:
        channel.close()
        sink.stop()


def test_the_date_header_is_format_datetime_s():
    start = datetime(2027, 3, 4, 5, 6, 7, 890_123, tzinfo=UTC)
    sent = OutgoingEmail(occurrence_key="birthday:M1:2027", to="m1@members.example", sender="club@example.com",
                         subject="s", text="t", html="h", unsubscribe_url="https://club.example.com/u/x")
    for now in (start, start + timedelta(microseconds=200_000), start + timedelta(seconds=1),
                start.astimezone(timezone(timedelta(hours=-7)))):
        date = email.message_from_bytes(wire_bytes(sent, now=now), policy=email.policy.compat32)["Date"]
        assert date == email.utils.format_datetime(now)
