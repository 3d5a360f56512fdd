"""`loyalty validate`: a tier a campaign names must be one of the program's (a misspelled one matches no member)."""

from __future__ import annotations

import shutil

from campaigns.validation import validate_all
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE, DEFAULT_TEMPLATES_DIR


def copied_definitions(tmp_path):
    definitions = tmp_path / "definitions"
    shutil.copytree(DEFAULT_CAMPAIGNS_DIR, definitions)
    return definitions


def test_a_misspelled_tier_in_an_audience_is_refused_with_its_file_and_line(tmp_path):
    definitions = copied_definitions(tmp_path)
    member_day = definitions / "member_day.yaml"
    text = member_day.read_text(encoding="utf-8")
    line = text.splitlines().index("  tiers: [silver, gold]") + 1
    member_day.write_text(text.replace("  tiers: [silver, gold]", "  tiers: [silver, glod]"), encoding="utf-8")

    result = validate_all(definitions, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE)

    assert result.problems == [
        f"{member_day}, line {line}: audience.tiers names the tier 'glod', which is not one of "
        "the program's tiers (bronze, silver, gold); fix the name."
    ]
    assert "member_day" not in result.checked
    assert {"birthday", "points_expiring", "tier_upgrade", "winback"} <= set(result.checked)  # the others still checked


def test_a_misspelled_tier_in_a_birthday_reward_is_refused_too(tmp_path):
    definitions = copied_definitions(tmp_path)
    birthday = definitions / "birthday.yaml"
    text = birthday.read_text(encoding="utf-8")
    line = text.splitlines().index("    silver: 250") + 1
    birthday.write_text(text.replace("    silver: 250", "    silvre: 250"), encoding="utf-8")

    result = validate_all(definitions, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE)

    assert result.problems == [
        f"{birthday}, line {line}: reward.points_by_tier names the tier 'silvre', which is not one of "
        "the program's tiers (bronze, silver, gold); fix the name."
    ]


def test_a_definition_in_a_yml_file_is_named_by_its_own_file_and_line(tmp_path):
    definitions = copied_definitions(tmp_path)
    member_day = definitions / "member_day.yml"
    (definitions / "member_day.yaml").rename(member_day)
    text = member_day.read_text(encoding="utf-8")
    line = text.splitlines().index("  tiers: [silver, gold]") + 1
    member_day.write_text(text.replace("  tiers: [silver, gold]", "  tiers: [silver, glod]"), encoding="utf-8")

    result = validate_all(definitions, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE)

    assert result.problems == [  # was "member_day.yaml, line None": a file that does not exist
        f"{member_day}, line {line}: audience.tiers names the tier 'glod', which is not one of "
        "the program's tiers (bronze, silver, gold); fix the name."
    ]
