"""Twilio's webhook signature over a form: right, and linear in the number of fields."""

from __future__ import annotations

import time

from loyalty.standins.twilio_server import twilio_signature
from workers.channels.sms_feedback import signature_is_valid

TOKEN = "0123456789abcdef0123456789abcdef"
URL = "https://club.example.com/twilio/status"


def test_a_signature_is_checked_over_every_value_of_repeated_fields():
    fields = [("MessageSid", "SM1"), ("MediaUrl", "https://b.example"), ("MediaUrl", "https://a.example")]
    signature = twilio_signature(TOKEN, URL, {"MessageSid": "SM1", "MediaUrl": ["https://b.example", "https://a.example"]})
    assert signature_is_valid(TOKEN, URL, fields, signature)
    assert not signature_is_valid(TOKEN, URL, fields[:2], signature)  # a value dropped
    assert not signature_is_valid(TOKEN, URL, fields, None)


def test_twenty_thousand_fields_are_checked_in_a_fraction_of_a_second():
    # Looked up through a multidict, each name's values cost a scan of every field: 14 s for these.
    fields = [(f"f{i}", "x") for i in range(20_000)]
    signature = twilio_signature(TOKEN, URL, dict(fields))
    started = time.perf_counter()
    assert signature_is_valid(TOKEN, URL, fields, signature)
    assert time.perf_counter() - started < 2.0
