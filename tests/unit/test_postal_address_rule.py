"""The postal-address rule (US CAN-SPAM): one pure check, which `loyalty validate` and the worker share."""

from __future__ import annotations

import pytest

from campaigns.brand import Brand, lacks_postal_address
from campaigns.loader import load_campaigns
from campaigns.validation import validate_all
from tests.conftest import REPO_ROOT

DEFINITIONS = REPO_ROOT / "campaigns" / "definitions"
TEMPLATES = REPO_ROOT / "campaigns" / "templates"
PROGRAM = REPO_ROOT / "campaigns" / "program.yaml"
NO_ADDRESS, ADDRESS = Brand(), Brand(postal_address="Maison Lumière SAS\n12 rue des Lilas\n69002 Lyon, France")


@pytest.fixture(scope="module")
def shipped():
    return load_campaigns(DEFINITIONS).campaigns


def test_the_marketing_emails_lack_the_address_only_while_the_brand_has_none(shipped):
    assert sorted(c for c, campaign in shipped.items() if lacks_postal_address(campaign, NO_ADDRESS)) == [
        "member_day", "winback"]  # they count toward the cap; birthday, points_expiring, tier_upgrade are exempt
    assert [c for c, campaign in shipped.items() if lacks_postal_address(campaign, ADDRESS)] == []


def test_a_cap_exempt_campaign_or_one_without_an_email_needs_no_address(shipped):
    winback = shipped["winback"]
    exempt = winback.model_copy(update={"frequency_cap_exempt": True})
    texts_only = winback.model_copy(update={"channels": ["sms"],
                                            "messages": winback.messages.model_copy(update={"email": None})})
    assert lacks_postal_address(winback, NO_ADDRESS)
    assert not lacks_postal_address(exempt, NO_ADDRESS)
    assert not lacks_postal_address(texts_only, NO_ADDRESS)


def test_validate_refuses_exactly_the_campaigns_the_check_names(shipped, tmp_path):
    text = PROGRAM.read_text(encoding="utf-8")
    program = tmp_path / "program.yaml"
    program.write_text(text[:text.index("  postal_address: |")] + text[text.index("  support_email:"):], encoding="utf-8")
    refused = validate_all(DEFINITIONS, TEMPLATES, program).problems
    named = sorted(c for c, campaign in shipped.items() if lacks_postal_address(campaign, NO_ADDRESS))
    assert [p.split(": ", 1)[1].split(" ", 1)[0] for p in refused] == [repr(c) for c in named]
    assert all(p.endswith(f"nothing of this campaign is sent until you add the shop's postal address under brand: "
                          f"in {program}.") for p in refused)
