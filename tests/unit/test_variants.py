"""A/B variants: deterministic assignment within its share, independent of the holdout; the YAML's
variants checked with one sentence naming the file and line; what a variant changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.holdout import is_held_out
from campaigns.loader import load_campaign_file
from campaigns.schema import CampaignBase
from campaigns.validation import validate_all
from campaigns.variants import as_variant, choose_variant, variant_name, variant_position, variant_reward
from core.errors import DefinitionError
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE, DEFAULT_TEMPLATES_DIR

BIRTHDAY = (DEFAULT_CAMPAIGNS_DIR / "birthday.yaml").read_text()
WINBACK = (DEFAULT_CAMPAIGNS_DIR / "winback.yaml").read_text()

EXPERIMENT = """
experiment:
  name: gift_size
  variants:
    - name: control
      share: 0.3
    - name: bigger
      share: 0.7
      subject:
        en: "A bigger gift, {{ member.first_name }}: {{ reward.points | number }} points"
        fr: "Un plus gros cadeau, {{ member.first_name }} : {{ reward.points | number }} points"
      reward:
        points_by_tier: {bronze: 200, silver: 500, gold: 1000}
"""


def write(tmp_path: Path, text: str, name: str = "birthday.yaml") -> Path:
    folder = tmp_path / "definitions"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def birthday_with(tmp_path: Path, experiment: str = EXPERIMENT) -> CampaignBase:
    return load_campaign_file(write(tmp_path, BIRTHDAY + experiment))


def error_for(path: Path) -> DefinitionError:
    with pytest.raises(DefinitionError) as error:
        load_campaign_file(path)
    return error.value


def shown(path: Path) -> str:
    """A path as the messages show it: relative to the working folder when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


IDS = [f"M{n:06d}" for n in range(100_000)]


def test_assignment_is_stable_and_within_one_percent_of_each_share_over_100000_ids(tmp_path):
    campaign = birthday_with(tmp_path)
    first = [variant_name(campaign, member) for member in IDS]
    assert first == [variant_name(campaign, member) for member in IDS]  # same answer every time
    reloaded = birthday_with(tmp_path)  # a second process reading the same file
    assert [variant_name(reloaded, member) for member in IDS[:1000]] == first[:1000]
    for variant, share in (("control", 0.3), ("bigger", 0.7)):
        assert abs(first.count(variant) / len(IDS) - share) <= 0.01, (variant, first.count(variant))


def test_the_documented_hash_decides(tmp_path):
    import hashlib

    campaign = birthday_with(tmp_path)
    digest = hashlib.sha256(b"birthday:gift_size:M0042").digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    assert variant_position("birthday", "gift_size", "M0042") == position
    assert variant_name(campaign, "M0042") == ("control" if position < 0.3 else "bigger")


def test_assignment_is_independent_of_the_holdout(tmp_path):
    """Held-out members and the others are split over the variants in the same shares; each variant
    has the campaign's holdout share of its members held out."""
    campaign = birthday_with(tmp_path)
    held = [is_held_out("birthday", member, 0.2) for member in IDS]
    names = [variant_name(campaign, member) for member in IDS]
    held_names = [n for n, h in zip(names, held, strict=True) if h]
    kept_names = [n for n, h in zip(names, held, strict=True) if not h]
    assert abs(held_names.count("bigger") / len(held_names) - 0.7) <= 0.01
    assert abs(kept_names.count("bigger") / len(kept_names) - 0.7) <= 0.01
    for variant in ("control", "bigger"):
        in_variant = [h for n, h in zip(names, held, strict=True) if n == variant]
        assert abs(sum(in_variant) / len(in_variant) - 0.2) <= 0.01


def test_a_new_experiment_name_draws_members_afresh(tmp_path):
    before = birthday_with(tmp_path)
    after = birthday_with(tmp_path, EXPERIMENT.replace("name: gift_size", "name: gift_size_2"))
    moved = sum(variant_name(before, m) != variant_name(after, m) for m in IDS[:10_000])
    assert 3_800 <= moved <= 4_600  # 2 × 0.3 × 0.7 = 42% change variant by chance


def test_a_campaign_without_an_experiment_has_no_variant():
    campaign = load_campaign_file(DEFAULT_CAMPAIGNS_DIR / "birthday.yaml")
    assert choose_variant(campaign, "M0042") is None
    assert as_variant(campaign, None) is campaign
    assert as_variant(campaign, "bigger") is campaign


def test_a_variant_replaces_what_it_names_and_keeps_the_rest(tmp_path):
    campaign = birthday_with(tmp_path)
    bigger = as_variant(campaign, "bigger")
    assert bigger.messages.email.subject["en"].startswith("A bigger gift")
    assert bigger.messages.email.html == campaign.messages.email.html
    assert bigger.reward.points_by_tier == {"bronze": 200, "silver": 500, "gold": 1000}
    assert bigger.reward.expires_after_days == campaign.reward.expires_after_days
    assert as_variant(campaign, "control") == campaign
    assert as_variant(campaign, "gone") is campaign  # planned before the variant was removed
    assert variant_reward(campaign, "bigger", "gold") == (True, 1000)
    assert variant_reward(campaign, "control", "gold") == (False, None)


def test_shares_that_do_not_add_up_to_one_are_one_sentence_with_the_line(tmp_path):
    path = write(tmp_path, BIRTHDAY + EXPERIMENT.replace("share: 0.7", "share: 0.6"))
    error = error_for(path)
    lines = (BIRTHDAY + EXPERIMENT).splitlines()
    assert error.line == lines.index("  variants:") + 1
    assert str(error) == (f"{path}, line {error.line}: 'experiment.variants' is wrong: the variants' shares add up "
                          "to 0.9, not 1; make them add up to 1 (the holdout is taken before, separately).")


def test_a_variant_name_given_twice_is_refused(tmp_path):
    error = error_for(write(tmp_path, BIRTHDAY + EXPERIMENT.replace("name: bigger", "name: control")))
    assert "the variant name 'control' is used twice; give each variant its own name." in str(error)


def test_a_subject_missing_a_locale_names_the_variant_and_its_line(tmp_path):
    text = BIRTHDAY + EXPERIMENT.replace('        fr: "Un plus gros cadeau, {{ member.first_name }} : {{ reward.points | number }} points"\n', "")
    path = write(tmp_path, text)
    error = error_for(path)
    assert error.line == text.splitlines().index("      subject:") + 1
    assert str(error).endswith("variant 'bigger' has no subject for locale 'fr'; give one for every locale the "
                               "campaign lists.")


def test_a_reward_on_a_campaign_that_grants_none_is_refused(tmp_path):
    experiment = EXPERIMENT.replace("name: gift_size", "name: winback_gift").replace(
        "      subject:", "      subject_unused:").split("      subject_unused:")[0] + (
        "      reward:\n        points_by_tier: {gold: 10}\n")
    text = WINBACK + experiment
    error = error_for(write(tmp_path, text, "winback.yaml"))
    assert error.line == text.splitlines().index("      reward:") + 1
    assert "variant 'bigger' sets a reward, but the campaign grants none (a winback campaign without a reward: " \
           "section); remove it or give the campaign one." in str(error)


def test_an_sms_template_for_a_campaign_without_sms_is_refused(tmp_path):
    text = BIRTHDAY + EXPERIMENT + "      sms_text: birthday/sms.txt.j2\n"
    error = error_for(write(tmp_path, text))
    assert error.line == len(text.splitlines())
    assert "variant 'bigger' sets sms_text, but the campaign has no sms message; remove it or add messages.sms." in str(error)


def test_an_unknown_template_is_named_by_loyalty_validate_with_the_variant_line(tmp_path):
    text = BIRTHDAY + EXPERIMENT + "      email_html: birthday/email_bigger.html.j2\n"
    path = write(tmp_path, text)
    result = validate_all(path.parent, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE)
    line = len(text.splitlines())
    expected = (f"{path}, line {line}: experiment.variants.1.email_html of variant 'bigger' names a template that "
                f"does not exist for 'en' ({shown(DEFAULT_TEMPLATES_DIR / 'en' / 'birthday/email_bigger.html.j2')}); "
                "create it or fix the path.")
    assert expected in result.problems
    assert "birthday" not in result.checked


def test_a_variant_template_that_exists_validates_and_a_broken_subject_is_named(tmp_path):
    templates = tmp_path / "templates"
    import shutil

    shutil.copytree(DEFAULT_TEMPLATES_DIR, templates)
    for locale in ("en", "fr"):
        (templates / locale / "birthday" / "email_bigger.html.j2").write_text("<p>{{ reward.points | number }}</p>\n")
    path = write(tmp_path, BIRTHDAY + EXPERIMENT + "      email_html: birthday/email_bigger.html.j2\n")
    assert validate_all(path.parent, templates, DEFAULT_PROGRAM_FILE).problems == []

    broken = BIRTHDAY + EXPERIMENT.replace("A bigger gift, {{ member.first_name }}", "A bigger gift, {{ member.nickname }}")
    path = write(tmp_path, broken)
    problems = validate_all(path.parent, templates, DEFAULT_PROGRAM_FILE).problems
    line = broken.splitlines().index('        en: "A bigger gift, {{ member.nickname }}: {{ reward.points | number }} points"') + 1
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}, line {line}: the email subject of variant 'bigger' for 'en': ")
    assert "nickname" in problems[0]


def test_a_variant_reward_naming_an_unknown_tier_is_refused_by_validate(tmp_path):
    path = write(tmp_path, BIRTHDAY + EXPERIMENT.replace("gold: 1000", "platinum: 1000"))
    problems = validate_all(path.parent, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE).problems
    assert len(problems) == 1 and "names the tier 'platinum', which is not one of the program's tiers" in problems[0]
    assert "experiment.variants.1.reward.points_by_tier" in problems[0]
