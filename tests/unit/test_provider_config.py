"""Twilio and Mailchimp settings (each error names its variable) and the ``mailchimp`` campaign step."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from campaigns.schema import MailchimpMessages
from core.errors import ConfigurationError
from core.settings import load_settings

TWILIO = {"TWILIO_ACCOUNT_SID": "AC" + "a1" * 16, "TWILIO_AUTH_TOKEN": "f" * 32,
          "TWILIO_MESSAGING_SERVICE_SID": "MG" + "b2" * 16}
MAILCHIMP = {"MAILCHIMP_API_KEY": "0" * 32 + "-us21", "MAILCHIMP_SERVER_PREFIX": "us21", "MAILCHIMP_LIST_ID": "a1b2c3d4e5"}


def test_nothing_set_means_the_outbox_for_both():
    settings = load_settings({})
    assert settings.twilio is None and settings.mailchimp is None


def test_twilio_with_its_defaults():
    twilio = load_settings(TWILIO).twilio
    assert twilio.api_base_url == "https://api.twilio.com"
    assert (twilio.max_messages_per_second, twilio.timeout) == (10.0, 10.0)
    assert "auth_token" not in repr(twilio) and "f" * 32 not in repr(twilio)  # secrets stay out of logs


def test_twilio_pointed_at_a_local_server():
    twilio = load_settings({**TWILIO, "TWILIO_API_BASE_URL": "http://127.0.0.1:4010/", "TWILIO_TIMEOUT_SECONDS": "2.5",
                            "TWILIO_MAX_MESSAGES_PER_SECOND": "0.5"}).twilio
    assert (twilio.api_base_url, twilio.timeout, twilio.max_messages_per_second) == ("http://127.0.0.1:4010", 2.5, 0.5)


def test_mailchimp_with_its_defaults_and_a_local_server():
    mailchimp = load_settings(MAILCHIMP).mailchimp
    assert mailchimp.api_base_url == "https://us21.api.mailchimp.com/3.0" and mailchimp.timeout == 10.0
    assert mailchimp.max_connections == 10  # Mailchimp's own limit per API key
    assert load_settings({**MAILCHIMP, "MAILCHIMP_MAX_CONNECTIONS": "4"}).mailchimp.max_connections == 4
    assert "0" * 32 not in repr(mailchimp)
    local = load_settings({**MAILCHIMP, "MAILCHIMP_API_BASE_URL": "http://127.0.0.1:4011/3.0"}).mailchimp
    assert local.api_base_url == "http://127.0.0.1:4011/3.0"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TWILIO_ACCOUNT_SID": TWILIO["TWILIO_ACCOUNT_SID"]},
         "TWILIO_AUTH_TOKEN is not set although TWILIO_ACCOUNT_SID is: set all of TWILIO_ACCOUNT_SID, "
         "TWILIO_AUTH_TOKEN, TWILIO_MESSAGING_SERVICE_SID to send SMS through Twilio"),
        ({**TWILIO, "TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_ACCOUNT_SID must be AC followed by 32 hexadecimal"),
        ({**TWILIO, "TWILIO_MESSAGING_SERVICE_SID": "PN" + "0" * 32},
         "TWILIO_MESSAGING_SERVICE_SID must be MG followed by 32 hexadecimal"),
        ({**TWILIO, "TWILIO_API_BASE_URL": "api.twilio.com"}, "TWILIO_API_BASE_URL 'api.twilio.com' is not an http(s) base URL"),
        ({**TWILIO, "TWILIO_MAX_MESSAGES_PER_SECOND": "fast"}, "TWILIO_MAX_MESSAGES_PER_SECOND must be a number"),
        ({**TWILIO, "TWILIO_MAX_MESSAGES_PER_SECOND": "0"}, "TWILIO_MAX_MESSAGES_PER_SECOND must be greater than zero"),
        ({**TWILIO, "TWILIO_TIMEOUT_SECONDS": "-1"}, "TWILIO_TIMEOUT_SECONDS must be greater than zero"),
        ({"MAILCHIMP_LIST_ID": "a1b2"}, "MAILCHIMP_API_KEY is not set although MAILCHIMP_LIST_ID is"),
        ({**MAILCHIMP, "MAILCHIMP_SERVER_PREFIX": "eu"}, "MAILCHIMP_SERVER_PREFIX 'eu' is not a Mailchimp data center"),
        ({**MAILCHIMP, "MAILCHIMP_SERVER_PREFIX": "us6"},
         "MAILCHIMP_SERVER_PREFIX 'us6' is not the data center MAILCHIMP_API_KEY belongs to ('us21')"),
        ({**MAILCHIMP, "MAILCHIMP_LIST_ID": "my list"}, "MAILCHIMP_LIST_ID must be the audience id"),
        ({**MAILCHIMP, "MAILCHIMP_API_BASE_URL": "ftp://x/3.0"}, "MAILCHIMP_API_BASE_URL 'ftp://x/3.0' is not an http(s)"),
        ({**MAILCHIMP, "MAILCHIMP_TIMEOUT_SECONDS": "soon"}, "MAILCHIMP_TIMEOUT_SECONDS must be a number"),
        ({**MAILCHIMP, "MAILCHIMP_MAX_CONNECTIONS": "2.5"}, "MAILCHIMP_MAX_CONNECTIONS must be a whole number"),
        ({**MAILCHIMP, "MAILCHIMP_MAX_CONNECTIONS": "0"}, "MAILCHIMP_MAX_CONNECTIONS must be greater than zero"),
    ],
)
def test_each_bad_variable_is_named_in_the_error(env, message):
    with pytest.raises(ConfigurationError) as error:
        load_settings(env)
    assert str(error.value).startswith(message)


def test_a_mailchimp_step():
    step = MailchimpMessages(tags=["Birthday 2027"], event="birthday_gift", properties={"points": "{{ reward.points }}"})
    assert step.tags == ["Birthday 2027"] and step.event == "birthday_gift"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, "a mailchimp step needs tags, an event, or both"),
        ({"tags": ["x"], "properties": {"a": "b"}}, "properties belong to an event"),
        ({"event": "has space"}, "String should match pattern"),
        ({"event": "x"}, "String should match pattern"),
        ({"event": "e" * 31}, "String should match pattern"),
        ({"event": "ok_event", "properties": {"occurrence_key": "x"}}, "the property occurrence_key is added by the sender"),
        ({"tags": [" padded"]}, "String should match pattern"),
        ({"tags": ["t" * 101]}, "at most 100 characters"),
    ],
)
def test_a_mailchimp_step_is_checked(fields, message):
    with pytest.raises(ValidationError, match=message):
        MailchimpMessages(**fields)
