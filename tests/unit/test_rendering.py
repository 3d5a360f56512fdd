from pathlib import Path

import pytest

from campaigns.loader import load_campaigns
from campaigns.rendering import Renderer, RenderError, locale_candidates
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_TEMPLATES_DIR

BIRTHDAY = load_campaigns(DEFAULT_CAMPAIGNS_DIR).get("birthday")


def test_locale_fallback_goes_from_region_to_language_to_the_campaign_default():
    renderer = Renderer(DEFAULT_TEMPLATES_DIR)
    assert locale_candidates("fr-CA") == ["fr_CA", "fr"]
    assert renderer.choose_locale(BIRTHDAY, "fr_CA") == "fr"
    assert renderer.choose_locale(BIRTHDAY, "de_DE") == "en"
    assert renderer.choose_locale(BIRTHDAY, "not a locale") == "en"
    assert renderer.choose_locale(BIRTHDAY, None) == "en"


def test_a_template_cannot_reach_python_internals(tmp_path: Path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "evil.txt.j2").write_text("line one\n{{ member.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(RenderError) as error:
        Renderer(tmp_path).render_file("en/evil.txt.j2", {"member": {"first_name": "A"}, "locale": "en"})
    assert error.value.line == 2
    assert "not allowed" in error.value.problem or "unsafe" in error.value.problem


def test_html_is_escaped_but_text_is_not(tmp_path: Path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.html.j2").write_text("<p>{{ name }}</p>")
    (tmp_path / "en" / "t.txt.j2").write_text("{{ name }}")
    renderer = Renderer(tmp_path)
    assert renderer.render_file("en/t.html.j2", {"name": "<b>Tom & Jerry</b>", "locale": "en"}) == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert renderer.render_file("en/t.txt.j2", {"name": "Tom & Jerry", "locale": "en"}) == "Tom & Jerry"


# --- what a member reads: spaces, locales ----------------------------------------------------------

from datetime import date  # noqa: E402
from decimal import Decimal  # noqa: E402

from campaigns.context import sample_context  # noqa: E402
from campaigns.program import load_program  # noqa: E402
from campaigns.sms_segments import measure  # noqa: E402
from core.settings import DEFAULT_PROGRAM_FILE  # noqa: E402

CAMPAIGNS = load_campaigns(DEFAULT_CAMPAIGNS_DIR)
PROGRAM = load_program(DEFAULT_PROGRAM_FILE)


def test_the_french_expiring_points_sms_is_one_gsm7_segment_with_babel_s_no_break_spaces_made_plain():
    campaign = CAMPAIGNS.get("points_expiring")
    context = sample_context(campaign, PROGRAM)
    context["expiring"] = {"points": 1500, "value": Decimal("15.00"), "currency": "EUR", "date": date(2027, 3, 31)}

    body = Renderer(DEFAULT_TEMPLATES_DIR, PROGRAM).render_sms(campaign, "fr", context)  # the shop's name: the brand's

    assert body == "Maison Lumière : 1 500 points (15,00 €) expirent le 31 mars 2027. STOP pour ne plus recevoir."
    assert (measure(body).encoding, measure(body).segments) == ("GSM-7", 1)


def test_an_email_subject_keeps_the_no_break_spaces_of_its_numbers_like_the_body_and_collapses_only_line_breaks():
    campaign = CAMPAIGNS.get("birthday")
    context = sample_context(campaign, PROGRAM)
    context["reward"] = {**context["reward"], "points": 1500}
    context["member"] = {**context["member"], "first_name": "Chloé\n "}

    email = Renderer(DEFAULT_TEMPLATES_DIR).render_email(campaign, "fr", context)

    assert email.subject == "Joyeux anniversaire, Chloé ! 1\u202f500 points pour vous"
    assert "1\u202f500 points" in email.text


def test_dates_and_numbers_are_written_in_the_member_s_own_locale_while_the_template_falls_back():
    campaign = CAMPAIGNS.get("birthday")
    renderer = Renderer(DEFAULT_TEMPLATES_DIR)
    context = sample_context(campaign, PROGRAM)  # the reward expires on 2028-02-28
    assert renderer.choose_locale(campaign, "en_AU") == "en"

    australian = renderer.render_email(campaign, "en", context, member_locale="en_AU").text
    american = renderer.render_email(campaign, "en", context, member_locale="en_US").text
    german = renderer.render_email(campaign, "en", context, member_locale="de_DE").text  # an English text

    assert "valid until 28 February 2028." in australian
    assert "valid until February 28, 2028." in american
    assert "valid until February 28, 2028." in german  # not "28. Februar 2028" inside English sentences
    assert renderer.render_email(campaign, "fr", context, member_locale="fr-CA").text.count("28 février 2028") == 1


# --- any failure of a template is a RenderError at its line ----------------------------------------

@pytest.mark.parametrize(("source", "problem"), [
    ("{{ reward.points | date }}", "the template failed (TypeError: the date filter needs a date, not int)"),
    ("{{ member.first_name | truncate(-1) }}", "the template failed (AssertionError: expected length >= 3, got -1)"),
    ("{% macro down(n) %}{{ down(n - 1) }}{% endmacro %}{{ down(3) }}",
     "the template recurses too deeply (a macro calling itself without end?)"),
])
def test_any_failure_of_a_template_is_one_render_error_at_its_line_and_its_summary_quotes_no_value(tmp_path, source, problem):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.txt.j2").write_text(f"Hello,\n{source}\n")
    context = {"member": {"first_name": "Inès"}, "reward": {"points": 500}}

    with pytest.raises(RenderError) as error:
        Renderer(tmp_path).render_template("en", "t.txt.j2", context)

    assert (error.value.line, error.value.problem) == (2, problem)
    assert error.value.summary.startswith(f"{tmp_path / 'en' / 't.txt.j2'}, line 2: the template ")
    assert "Inès" not in error.value.summary and "500" not in error.value.summary


def test_a_template_nested_too_deeply_to_compile_is_a_render_error_too(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.txt.j2").write_text("{% if true %}" * 1000 + "x" + "{% endif %}" * 1000)

    with pytest.raises(RenderError) as error:
        Renderer(tmp_path).render_template("en", "t.txt.j2", {})

    assert error.value.problem == "the template is nested too deeply to be read; flatten its blocks"
