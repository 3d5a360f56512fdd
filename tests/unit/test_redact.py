import pytest

from core.logs import mask_personal_data
from core.redact import redact


def test_emails_and_phone_numbers_are_scrubbed_and_the_rest_kept():
    assert redact("recipient refused: 550 5.1.1 <ada.lovelace+x@example.co.uk> unknown") == \
        "recipient refused: 550 5.1.1 <[email]> unknown"
    assert redact("The 'To' number +1 (415) 555-0100 is not a valid phone number.") == \
        "The 'To' number [phone] is not a valid phone number."
    assert redact("21211 from Twilio, code 429 at 2027-06-15T10:00:00Z") == "21211 from Twilio, code 429 at 2027-06-15T10:00:00Z"
    assert redact("expired on 2027-06-15.") == "expired on 2027-06-15."
    assert redact(None) is None


@pytest.mark.parametrize("number", ["+33 6 12 34 56 78", "(415) 555-0123", "415-555-0123", "415.555.0123",
                                    "06 12 34 56 78", "020 7946 0958", "+14155550123", "+1 (415) 555-0123", "tel:+33612345678"])
def test_formatted_phone_numbers_are_masked(number):
    assert "[phone]" in redact(f"refused {number}, try again")
    assert not any(run in redact(f"refused {number}, try again") for run in ("12 34", "555", "7946", "612345678"))


@pytest.mark.parametrize("text", [
    "2027-06-15 10:00:00+00:00", "2027-06-15T10:00:00.123456Z", "on 15.06.2027", "from 10.0.100.200",
    "id 550e8400-e29b-41d4-a716-446655440000", "member 10023456789", "order #1001-2002", "took 0.123456789 s",
    "550 5.1.1 user unknown",
])
def test_dates_times_addresses_and_ids_are_kept(text):
    assert redact(text) == text


def test_the_log_processor_masks_formatted_phone_numbers_and_addresses_everywhere_in_an_event():
    event = {
        "event": "sms.failed",
        "detail": "The 'To' number (415) 555-0123 is not reachable; nor is +33 6 12 34 56 78",
        "nested": {"to": ["415-555-0123", "ada@example.com"]},
        "member": "10023456789",
        "at": "2027-06-15T10:00:00Z",
        "attempt": 2,
    }
    assert mask_personal_data(None, "info", event) == {
        "event": "sms.failed",
        "detail": "The 'To' number <phone> is not reachable; nor is <phone>",
        "nested": {"to": ["<phone>", "<email>"]},
        "member": "10023456789",
        "at": "2027-06-15T10:00:00Z",
        "attempt": 2,
    }


def test_an_internationalised_address_is_masked_whole():
    assert redact("550 <inès.x@example.com> mailbox unavailable") == "550 <[email]> mailbox unavailable"
    assert redact("to josé@exämple.fr failed") == "to [email] failed"
