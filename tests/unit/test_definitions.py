"""Campaign definitions: the shipped ones are valid; every broken one is one sentence with its line."""

from pathlib import Path

import pytest

from campaigns import yaml_source
from campaigns.birthday import BirthdayCampaign
from campaigns.loader import load_campaign_file, load_campaigns
from campaigns.validation import validate_all
from core.errors import DefinitionError
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE, DEFAULT_TEMPLATES_DIR

BIRTHDAY = (DEFAULT_CAMPAIGNS_DIR / "birthday.yaml").read_text()


def test_the_shipped_definitions_and_templates_are_valid():
    result = validate_all(DEFAULT_CAMPAIGNS_DIR, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE)
    assert result.problems == []
    assert result.checked["birthday"] == ["en", "fr"]


def test_the_shipped_birthday_says_what_the_program_does():
    campaign = load_campaigns(DEFAULT_CAMPAIGNS_DIR).get("birthday")
    assert isinstance(campaign, BirthdayCampaign)
    assert campaign.send_time.isoformat() == "09:00:00"
    assert campaign.birthday.leap_day_in_common_years == "feb28"
    assert campaign.birthday.min_days_since_birthday_change == 30
    assert campaign.reward.points_by_tier == {"bronze": 100, "silver": 250, "gold": 500}


def write(tmp_path: Path, text: str, name: str = "birthday.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_for(path: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as error:
        load_campaign_file(path)
    return error.value


def test_a_wrong_type_names_the_key_and_its_line(tmp_path):
    path = write(tmp_path, BIRTHDAY.replace("holdout: 0", "holdout: lots"))
    error = error_for(path)
    assert error.line == BIRTHDAY.splitlines().index("holdout: 0") + 1
    assert "'holdout' is wrong: input should be a valid number" in str(error)


def test_an_unknown_kind_lists_the_known_ones(tmp_path):
    error = error_for(write(tmp_path, BIRTHDAY.replace("kind: birthday", "kind: birthdays")))
    assert error.line == 3
    assert "kind 'birthdays' is not a campaign kind; use one of: birthday, member_day, points_expiring, tier_upgrade, winback." in str(error)


def test_a_missing_section_for_a_listed_channel(tmp_path):
    error = error_for(write(tmp_path, BIRTHDAY.replace("channels: [email]", "channels: [email, sms]")))
    assert "channel 'sms' is listed but messages has no 'sms' section" in str(error)


def test_the_file_must_be_named_after_its_id(tmp_path):
    error = error_for(write(tmp_path, BIRTHDAY, name="bday.yaml"))
    assert "name the file birthday.yaml" in str(error)


def test_an_unquoted_time_is_read_as_the_time_meant(tmp_path):
    campaign = load_campaign_file(write(tmp_path, BIRTHDAY.replace('send_time: "09:00"', "send_time: 10:30")))
    assert campaign.send_time.isoformat() == "10:30:00"


def test_a_file_that_is_not_utf8_is_one_sentence(tmp_path):
    path = tmp_path / "birthday.yaml"
    path.write_bytes(BIRTHDAY.replace("Birthday gift", "Cadeau d'anniversaire é").encode("latin-1"))
    assert "the file is not UTF-8 text" in str(error_for(path))


def test_a_broken_file_does_not_hide_the_others(tmp_path):
    write(tmp_path, BIRTHDAY)
    write(tmp_path, "id: [unclosed\n", name="other.yaml")
    loaded = load_campaigns(tmp_path)
    assert list(loaded.campaigns) == ["birthday"]
    assert len(loaded.errors) == 1 and "other.yaml, line 2: the YAML is malformed" in str(loaded.errors[0])


def test_a_key_given_twice_is_refused_at_the_second_one(tmp_path):
    text = BIRTHDAY.replace("holdout: 0\n", "holdout: 0\nenabled: false\n")  # `enabled: true` comes first
    error = error_for(write(tmp_path, text))
    assert error.line == text.splitlines().index("enabled: false") + 1
    first = text.splitlines().index("enabled: true") + 1
    assert error.problem == (f"the key 'enabled' is given twice (first on line {first}); "
                             "keep one of them (YAML would silently use the last).")


def test_the_same_key_in_two_different_mappings_is_fine_and_so_is_overriding_a_merged_key():
    data, _ = yaml_source.parse("base: &b {x: 1, y: 2}\nthis:\n  <<: *b\n  x: 3\nthat: {x: 4}\n")
    assert data["this"] == {"x": 3, "y": 2} and data["that"] == {"x": 4}


def test_a_definition_nested_hundreds_of_levels_deep_is_one_sentence_and_the_others_still_load(tmp_path):
    write(tmp_path, BIRTHDAY)
    deep = "id: deep\nkind: birthday\nextra:\n" + "".join("  " * level + "  k:\n" for level in range(500)) + "  " * 501 + "end\n"
    write(tmp_path, deep, name="deep.yaml")
    loaded = load_campaigns(tmp_path)
    assert list(loaded.campaigns) == ["birthday"]
    [error] = loaded.errors
    assert error.line == 3 + 50  # where the 51st level opens
    assert error.problem == ("the YAML is nested more than 50 levels deep, where a definition needs a few; "
                             "remove the extra nesting.")
