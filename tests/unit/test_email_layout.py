"""The base email layout, the brand settings and the tier names per locale (the browser checks are in
``tests/integration/test_email_layout_in_chromium.py``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from campaigns.context import sample_context
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from campaigns.rendering import Renderer, RenderError
from campaigns.validation import validate_all
from core.errors import DefinitionError

REPO = Path(__file__).resolve().parents[2]
PROGRAM_FILE = REPO / "campaigns" / "program.yaml"
DEFINITIONS = REPO / "campaigns" / "definitions"
TEMPLATES = REPO / "campaigns" / "templates"


def _program_with(tmp_path: Path, old: str, new: str) -> Path:
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "program.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _line_of(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if fragment in line)


@pytest.mark.parametrize(("old", "new", "words"), [
    ('primary: "#7a3e9d"', 'primary: "purple"', "'brand.colors.primary' is wrong: 'purple' is not a colour"),
    ('button_text: "#ffffff"', 'button_text: #ffffff', "'brand.colors.button_text' is wrong: nothing is not a colour; "
     'write it as "#rrggbb" in quotes'),
    ("url: https://shop.example.com ", "url: shop.example.com ", "'brand.url' is wrong: 'shop.example.com' is not a full web address"),
    ("support_email: help@shop.example.com", "support_email: help", "'brand.support_email' is wrong: 'help' is not an email address"),
    ("shop_name: Maison Lumière", "shop_nam: Maison Lumière", "unknown key 'brand.shop_nam'"),
    ("title: {en: Gold, fr: Or}", "title: {en: Gold, fr: ' '}", "the text for 'fr' is empty"),
])
def test_a_bad_brand_value_is_one_sentence_with_the_file_and_line(tmp_path, old, new, words):
    path = _program_with(tmp_path, old, new)
    with pytest.raises(DefinitionError) as error:
        load_program(path)
    message = str(error.value)
    assert words in message
    assert message.startswith(f"{path}, line {_line_of(path, new)}:"), message
    assert "\n" not in message and "Traceback" not in message


def test_validate_refuses_a_marketing_email_campaign_without_a_postal_address(tmp_path):
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    start = text.index("  postal_address: |")
    end = text.index("  support_email:")
    program = tmp_path / "program.yaml"
    program.write_text(text[:start] + text[end:], encoding="utf-8")
    result = validate_all(DEFINITIONS, TEMPLATES, program)
    refused = [problem for problem in result.problems if "postal_address" in problem]
    # winback and member_day count toward the frequency cap: marketing; the cap-exempt ones are not
    assert sorted(re.search(r"'(\w+)' is a marketing email", p).group(1) for p in refused) == ["member_day", "winback"]
    winback = DEFINITIONS / "winback.yaml"
    line = _line_of(winback, "frequency_cap_exempt:")
    assert any(p.startswith(f"campaigns/definitions/winback.yaml, line {line}: ") or
               p.startswith(f"{winback}, line {line}: ") for p in refused), refused
    assert all("add the shop's postal address under brand:" in p for p in refused)
    assert "birthday" in result.checked and "winback" not in result.checked
    assert validate_all(DEFINITIONS, TEMPLATES, PROGRAM_FILE).problems == []


def test_tier_names_and_benefits_are_the_program_s_in_the_member_s_locale(tmp_path):
    program = load_program(PROGRAM_FILE)
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "t.txt.j2").write_text("{{ member.tier | tier_name }}: {{ member.tier | tier_benefits }}")
    renderer = Renderer(tmp_path, program)
    context = {"member": {"tier": "gold"}}
    assert renderer.render_template("fr", "t.txt.j2", context).startswith("Or: les offres de la journée membre")
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.txt.j2").write_text("{{ member.tier | tier_name }}")
    assert renderer.render_template("en", "t.txt.j2", {"member": {"tier": "silver"}}) == "Silver"
    # a locale the program has no title for: the identifier, capitalised; a tier it does not know, too
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "t.txt.j2").write_text("{{ member.tier | tier_name }}")
    assert renderer.render_template("de", "t.txt.j2", {"member": {"tier": "gold"}}) == "Gold"
    assert renderer.render_template("de", "t.txt.j2", {"member": {"tier": "gold_plus"}}) == "Gold Plus"


@pytest.fixture(scope="module")
def shipped():
    program = load_program(PROGRAM_FILE)
    return program, load_campaigns(DEFINITIONS).campaigns, Renderer(TEMPLATES, program)


@pytest.mark.parametrize("campaign_id", ["birthday", "member_day", "points_expiring", "tier_upgrade", "winback"])
@pytest.mark.parametrize("locale", ["en", "fr"])
def test_every_shipped_email_has_the_layout_s_parts_in_both_parts(shipped, campaign_id, locale):
    program, campaigns, renderer = shipped
    campaign = campaigns[campaign_id]
    context = sample_context(campaign, program)
    email = renderer.render_email(campaign, locale, context, member_locale=locale)
    html, text, brand = email.html, email.text, program.brand
    assert html.startswith(f'<!DOCTYPE html><html lang="{locale}"')
    assert '<meta charset="utf-8">' in html and 'name="viewport"' in html
    assert re.search(r"<title>[^<]+</title>", html)
    assert re.search(r'<div class="preheader" style="display: none;[^"]*">[^&<]{10,}', html)
    assert '<img class="logo" style="' in html and f'alt="{brand.shop_name}"' in html
    assert re.search(r'<a class="button-link" style="[^"]*background-color: #7a3e9d;color: #ffffff"', html)
    assert f'href="{context["unsubscribe_url"]}"' in html and f'href="{brand.url}"' in html
    assert "Maison Lumière SAS<br>12 rue des Lilas<br>69002 Lyon, France" in html
    assert "loyalty programme" in html or "programme de fidélité" in html  # why they get it
    for snippet in (context["unsubscribe_url"], brand.url, "Maison Lumière SAS, 12 rue des Lilas, 69002 Lyon, France"):
        assert snippet in text
    assert "{{" not in html + text and "jinjatoken" not in html


def test_the_tier_upgrade_notice_names_the_tier_in_the_locale(shipped):
    program, campaigns, renderer = shipped
    campaign = campaigns["tier_upgrade"]
    context = sample_context(campaign, program)
    french = renderer.render_email(campaign, "fr", context)
    assert "membre <strong>Or</strong>" in french.html and french.subject == "Bienvenue au niveau Or, Alex !"
    assert "You are now a Gold member" in renderer.render_email(campaign, "en", context).text


def _templates_with_css(tmp_path: Path) -> Path:
    (tmp_path / "_layout").mkdir()
    shutil.copy(TEMPLATES / "_layout" / "email.css", tmp_path / "_layout" / "email.css")
    (tmp_path / "en").mkdir()
    return tmp_path


def test_the_css_is_inlined_into_a_template_s_own_elements(tmp_path):
    root = _templates_with_css(tmp_path)
    (root / "en" / "t.html.j2").write_text('{% if x %}<p class="footer-text">{{ x }}</p>{% endif %}\n<a class="footer-link" href="{{ u }}">u</a>')
    html = Renderer(root).render_file("en/t.html.j2", {"x": "<b>", "u": "https://e.example/?a=1&b=2", "locale": "en"})
    assert html == ('<p class="footer-text" style="margin: 0 0 8px;">&lt;b&gt;</p>\n'
                    '<a class="footer-link" href="https://e.example/?a=1&amp;b=2" style="color: #374151;text-decoration: underline;">u</a>')


def test_jinja_between_table_rows_stays_in_place(tmp_path):
    """Text there would be moved out of the table by an HTML parser; the loader hides each tag in a comment."""
    root = _templates_with_css(tmp_path)
    (root / "en" / "t.html.j2").write_text(
        "<table>\n<tr><td>a</td></tr>\n{% for row in rows %}\n<tr><td class='footer-text'>{{ row }}</td></tr>\n"
        "{% endfor %}\n</table>")
    html = Renderer(root).render_file("en/t.html.j2", {"rows": ["b", "c"], "locale": "en"})
    expected = ('<table><tbody><tr><td>a</td></tr>'
                '<tr><td class="footer-text" style="margin: 0 0 8px;">b</td></tr>'
                '<tr><td class="footer-text" style="margin: 0 0 8px;">c</td></tr></tbody></table>')
    assert re.sub(r"\s+", "", html) == re.sub(r"\s+", "", expected)


def test_a_jinja_tag_in_a_tag_s_attribute_list_is_refused_with_its_line(tmp_path):
    root = _templates_with_css(tmp_path)
    (root / "en" / "t.html.j2").write_text("<p>\nok</p>\n<p {% if x %}class='a'{% endif %}>b</p>")
    with pytest.raises(RenderError) as error:
        Renderer(root).render_file("en/t.html.j2", {"x": True, "locale": "en"})
    assert error.value.line == 3
    assert "where HTML cannot keep it" in error.value.problem


def test_a_failing_html_template_is_reported_at_the_line_as_written(tmp_path):
    """Inlining rewrites the source (a doctype line joined, a <tbody> added): lines still match the file."""
    root = _templates_with_css(tmp_path)
    (root / "en" / "t.html.j2").write_text(
        "<!doctype html>\n<html>\n<head>\n<title>t</title>\n</head>\n<body>\n<table>\n<tr><td>\n"
        "<p>{{ member.first_name }}</p>\n<p>{{ missing.value }}</p>\n</td></tr>\n</table>\n</body>\n</html>\n")
    with pytest.raises(RenderError) as error:
        Renderer(root).render_file("en/t.html.j2", {"member": {"first_name": "A"}, "locale": "en"})
    assert error.value.line == 10 and "missing" in error.value.problem
    (root / "en" / "s.html.j2").write_text("<p>a</p>\n<p>{% if %}</p>\n")
    with pytest.raises(RenderError) as error:
        Renderer(root).render_file("en/s.html.j2", {"locale": "en"})
    assert error.value.line == 2 and "syntax" in error.value.problem


def test_validate_names_text_outside_every_block_of_a_template_that_extends_the_layout(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    text = templates / "fr" / "winback" / "email.txt.j2"
    text.write_text(text.read_text(encoding="utf-8") + "P.S. {{ member.first_name }}, à bientôt !\n", encoding="utf-8")
    line = text.read_text(encoding="utf-8").count("\n")
    result = validate_all(DEFINITIONS, templates, PROGRAM_FILE)
    assert result.problems == [
        f"{text}, line {line}: this is outside every {{% block %}}, so it is never shown (the template extends a "
        "layout); move it into a block, such as content (campaign 'winback', locale 'fr')."]


def test_validate_names_text_outside_every_block_of_an_a_b_variant_s_template(tmp_path):
    templates, definitions = tmp_path / "templates", tmp_path / "definitions"
    shutil.copytree(TEMPLATES, templates)
    shutil.copytree(DEFINITIONS, definitions)
    for locale in ("en", "fr"):
        shutil.copy(templates / locale / "birthday" / "email.html.j2", templates / locale / "birthday" / "email_b.html.j2")
    variant = templates / "fr" / "birthday" / "email_b.html.j2"
    variant.write_text(variant.read_text(encoding="utf-8") + "<p>P.S. {{ member.first_name }}</p>\n", encoding="utf-8")
    line = variant.read_text(encoding="utf-8").count("\n")
    birthday = definitions / "birthday.yaml"
    birthday.write_text(birthday.read_text(encoding="utf-8") + (
        "experiment:\n  name: layout\n  variants:\n    - {name: control, share: 0.5}\n"
        "    - {name: b, share: 0.5, email_html: birthday/email_b.html.j2}\n"), encoding="utf-8")
    result = validate_all(definitions, templates, PROGRAM_FILE)
    assert result.problems == [
        f"{variant}, line {line}: this is outside every {{% block %}}, so it is never shown (the template extends a "
        "layout); move it into a block, such as content (campaign 'birthday', variant 'b', locale 'fr')."]


def test_validate_warns_of_a_tier_without_a_title_in_a_campaign_s_locale(tmp_path):
    path = _program_with(tmp_path, "title: {en: Silver, fr: Argent}", "title: {en: Silver}")
    result = validate_all(DEFINITIONS, TEMPLATES, path)
    assert result.problems == []
    assert result.warnings == [
        f"{path}, line {_line_of(path, 'title: {en: Silver}')}: tier 'silver' has no title for 'fr', a locale of the "
        "campaigns; its members there read 'Silver'; add one."]
