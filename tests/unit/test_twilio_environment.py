"""The Twilio channel reads the environment's proxy and CA settings once, at construction, and
every request then uses what ``requests`` would have resolved from the environment for it."""

from __future__ import annotations

import pytest
import requests

from core.settings import TwilioTarget
from workers.channels.sms import TwilioSmsChannel
from workers.rate_limit import LocalRateLimiter

BASE = "https://api.twilio.com"
MESSAGE_URL = f"{BASE}/2010-04-01/Accounts/AC{'0' * 32}/Messages.json"
SETTINGS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
            "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def channel(base: str = BASE) -> TwilioSmsChannel:
    target = TwilioTarget(account_sid="AC" + "0" * 32, auth_token="x" * 32, messaging_service_sid="MG" + "0" * 32,
                          api_base_url=base, max_messages_per_second=10, timeout=2)
    return TwilioSmsChannel(target, LocalRateLimiter(10))


def per_request(url: str) -> dict:
    """What the SDK's session resolved from the environment on every request before."""
    session = requests.Session()
    try:
        return session.merge_environment_settings(url, {}, None, None, None)
    finally:
        session.close()


def resolved_now(sms: TwilioSmsChannel, url: str) -> dict:
    """What the channel's session resolves for a request now (the SDK's own call)."""
    return sms._http.session.merge_environment_settings(url, sms._http.proxy, None, None, None)


@pytest.fixture
def clean_env(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env", [
    {},
    {"HTTPS_PROXY": "http://proxy.example:3128"},
    {"https_proxy": "http://proxy.example:3128", "http_proxy": "http://other.example:8080"},
    {"ALL_PROXY": "socks5://proxy.example:1080"},
    {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": "api.twilio.com"},
    {"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": ".twilio.com,localhost"},
    {"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
    {"CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
])
def test_the_environment_read_once_is_what_each_request_resolved(clean_env, env):
    for name, value in env.items():
        clean_env.setenv(name, value)
    sms = channel()
    try:
        expected = per_request(MESSAGE_URL)
        got = resolved_now(sms, MESSAGE_URL)
        assert got["proxies"] == expected["proxies"]
        assert got["verify"] == expected["verify"]
        assert got["cert"] == expected["cert"]
        assert sms._http.session.trust_env is False  # the environment is not scanned again per request
    finally:
        sms.close()


def test_a_proxy_set_for_the_api_is_used_and_a_bypass_is_kept(clean_env):
    clean_env.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    sms = channel()
    try:
        assert resolved_now(sms, MESSAGE_URL)["proxies"].get("https") == "http://proxy.example:3128"
    finally:
        sms.close()
    clean_env.setenv("NO_PROXY", "api.twilio.com")
    sms = channel()
    try:
        assert not resolved_now(sms, MESSAGE_URL)["proxies"].get("https")
    finally:
        sms.close()


def test_a_local_stand_in_is_not_proxied(clean_env):
    clean_env.setenv("HTTP_PROXY", "http://proxy.example:3128")
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    sms = channel("http://127.0.0.1:8123")
    try:
        assert resolved_now(sms, "http://127.0.0.1:8123/2010-04-01/x") == per_request("http://127.0.0.1:8123/2010-04-01/x")
        assert not resolved_now(sms, "http://127.0.0.1:8123/2010-04-01/x")["proxies"].get("http")
    finally:
        sms.close()
