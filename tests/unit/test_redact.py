from loyalty.redact import redact


def test_emails_and_phone_numbers_are_scrubbed_and_the_rest_kept():
    assert redact("recipient refused: 550 5.1.1 <ada.lovelace+x@example.co.uk> unknown") == \
        "recipient refused: 550 5.1.1 <[email]> unknown"
    assert redact("The 'To' number +1 (415) 555-0100 is not a valid phone number.") == \
        "The 'To' number [phone] is not a valid phone number."
    assert redact("21211 from Twilio, code 429 at 2027-06-15T10:00:00Z") == "21211 from Twilio, code 429 at 2027-06-15T10:00:00Z"
    assert redact("expired on 2027-06-15.") == "expired on 2027-06-15."
    assert redact(None) is None
