from pathlib import Path

import pytest

from campaigns.loader import load_campaigns
from campaigns.rendering import RenderError, Renderer, locale_candidates
from loyalty.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_TEMPLATES_DIR

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
