"""The brand is written into the templates when they are compiled (``campaigns.rendering._Sandbox``):
every shipped template, in every locale and channel, renders byte for byte as when compiled as
written, for several members and brands; a template or a context that gives ``brand`` a value of
its own is rendered with that value, as before; a template edited on disk is read again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from campaigns.brand import Brand, BrandColors
from campaigns.context import sample_context
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from campaigns.rendering import Renderer
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE, DEFAULT_TEMPLATES_DIR

CAMPAIGNS = load_campaigns(DEFAULT_CAMPAIGNS_DIR).campaigns
SHIPPED_PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
SHIPPED = [(campaign_id, locale) for campaign_id, campaign in sorted(CAMPAIGNS.items()) for locale in campaign.locales]

BRANDS = {
    "shipped": SHIPPED_PROGRAM.brand,
    "bare": Brand(),  # no address, logo, support address nor shop link: the layout's other branches
    "everything, with characters to escape": Brand(
        shop_name="Ben & Jerry's <Épicerie> \"fine\"", url="https://shop.example.com/?a=1&b=2",
        logo_url="https://cdn.example.com/logo.png?v=1&w=2", logo_width=320,
        colors=BrandColors(primary="#123456", button_text="#fff", text="#000000", background="#ABCDEF"),
        postal_address="1 rue de l'Église\n75001 Paris <France>\n\nÉtage 2", support_email="aide&co@shop.example.com"),
}
MEMBERS = [
    {"first_name": "Alex", "last_name": "Martin", "tier": "silver", "points_balance": 1234},
    {"first_name": "Chloé <b>&amp;</b>", "last_name": "O'Brien \"Jr\"", "tier": "gold", "points_balance": 0},
    {"first_name": "李小龍", "last_name": "", "tier": "bronze", "points_balance": 1_234_567},
    {"first_name": "", "last_name": "", "tier": "gold_plus", "points_balance": 7},
]


def renderers(brand: Brand) -> tuple[Renderer, Renderer]:
    """(the renderer as the worker uses it, the same compiling every template as written)."""
    program = SHIPPED_PROGRAM.model_copy(update={"brand": brand})
    as_written = Renderer(DEFAULT_TEMPLATES_DIR, program)
    as_written.env.stop_folding()
    return Renderer(DEFAULT_TEMPLATES_DIR, program), as_written


RENDERERS = {name: renderers(brand) for name, brand in BRANDS.items()}


def test_every_campaign_locale_and_channel_is_covered():
    assert {c for c, _ in SHIPPED} >= {"birthday", "points_expiring", "winback", "tier_upgrade", "member_day"}
    assert {locale for _, locale in SHIPPED} >= {"en", "fr"}
    assert any(c.messages.sms is not None for c in CAMPAIGNS.values())
    assert any(c.messages.email is not None for c in CAMPAIGNS.values())


@pytest.mark.parametrize("brand", list(BRANDS))
@pytest.mark.parametrize(("campaign_id", "locale"), SHIPPED)
def test_every_shipped_template_renders_as_compiled_as_written(brand, campaign_id, locale):
    folded, as_written = RENDERERS[brand]
    campaign = CAMPAIGNS[campaign_id]
    for member in MEMBERS:
        context = sample_context(campaign, SHIPPED_PROGRAM)
        context["member"] = {**context["member"], **member}
        context["unsubscribe_url"] = f"https://club.example.com/u/{member['tier']}?a=1&b=2"
        for member_locale in (locale, f"{locale}_CA", "de", None):
            if campaign.messages.email is not None:
                ours = folded.render_email(campaign, locale, context, member_locale=member_locale)
                assert ours == as_written.render_email(campaign, locale, context, member_locale=member_locale)
                assert BRANDS[brand].shop_name.split()[0] in ours.text  # the brand is really in it
            if campaign.messages.sms is not None:
                assert folded.render_sms(campaign, locale, context, member_locale=member_locale) == \
                    as_written.render_sms(campaign, locale, context, member_locale=member_locale)
            mailchimp = campaign.messages.mailchimp
            if mailchimp is not None and mailchimp.properties:
                assert folded.render_properties(campaign, locale, mailchimp.properties, context) == \
                    as_written.render_properties(campaign, locale, mailchimp.properties, context)
    assert folded.env.folding and not as_written.env.folding  # two different compilations were compared


def test_the_layout_is_compiled_with_the_brand_written_in():
    folded, as_written = RENDERERS["everything, with characters to escape"]
    source, _, _ = folded.loader.get_source(folded.env, "_layout/email.html.j2")
    code = folded.env.compile(source, "_layout/email.html.j2", raw=True)
    assert "'colors'" not in code and "'shop_name'" not in code and "#ABCDEF" in code
    assert "Ben &amp; Jerry&#39;s &lt;Épicerie&gt;" in code  # escaped once, when compiled
    as_written_code = as_written.env.compile(source, "_layout/email.html.j2", raw=True)
    assert "'colors'" in as_written_code


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("binding", [
    "{% set brand = {'shop_name': 'Local'} %}",
    "{% for brand in [{'shop_name': 'Local'}] %}{% include 'en/inner.txt.j2' %}{% endfor %}",
    "{% with brand = {'shop_name': 'Local'} %}{% include 'en/inner.txt.j2' %}{% endwith %}",
    "{% macro m(brand) %}{{ brand.shop_name }}{% endmacro %}{{ m({'shop_name': 'Local'}) }}",
    "{% import 'en/lib.txt.j2' as brand %}{{ brand.shop_name }}",
])
def test_a_template_binding_brand_is_rendered_with_its_own_value(tmp_path, binding):
    """Also through what it includes, and for the templates compiled before it."""
    write(tmp_path, "en/inner.txt.j2", "[{{ brand.shop_name }}]")
    write(tmp_path, "en/lib.txt.j2", "{% set shop_name = 'Local' %}")
    write(tmp_path, "en/plain.txt.j2", "{{ brand.shop_name }}|{% include 'en/inner.txt.j2' %}")
    write(tmp_path, "en/binds.txt.j2", f"{binding}{{% include 'en/inner.txt.j2' %}}")
    program = SHIPPED_PROGRAM.model_copy(update={"brand": Brand(shop_name="Global")})
    renderer, as_written = Renderer(tmp_path, program), Renderer(tmp_path, program)
    as_written.env.stop_folding()
    assert renderer.render_file("en/plain.txt.j2", {}) == "Global|[Global]"  # folded so far
    assert renderer.env.folding
    ours = renderer.render_file("en/binds.txt.j2", {})
    assert ours == as_written.render_file("en/binds.txt.j2", {})
    assert "Local" in ours
    assert not renderer.env.folding
    assert renderer.render_file("en/plain.txt.j2", {}) == "Global|[Global]"


def test_a_child_template_setting_brand_reaches_its_layout_as_before(tmp_path):
    write(tmp_path, "en/layout.txt.j2", "{{ brand.shop_name }}: {% block body %}{% endblock %}")
    write(tmp_path, "en/child.txt.j2",
          "{% extends 'en/layout.txt.j2' %}{% set brand = {'shop_name': 'Child'} %}{% block body %}x{% endblock %}")
    write(tmp_path, "en/other.txt.j2", "{% extends 'en/layout.txt.j2' %}{% block body %}y{% endblock %}")
    program = SHIPPED_PROGRAM.model_copy(update={"brand": Brand(shop_name="Global")})
    renderer, as_written = Renderer(tmp_path, program), Renderer(tmp_path, program)
    as_written.env.stop_folding()
    assert renderer.render_file("en/other.txt.j2", {}) == "Global: y"  # the layout compiled with the brand in
    assert renderer.render_file("en/child.txt.j2", {}) == as_written.render_file("en/child.txt.j2", {}) == "Child: x"


def test_a_context_giving_its_own_brand_is_rendered_with_it(tmp_path):
    write(tmp_path, "en/t.txt.j2", "{{ brand.shop_name }}")
    program = SHIPPED_PROGRAM.model_copy(update={"brand": Brand(shop_name="Global")})
    renderer = Renderer(tmp_path, program)
    subject = "{{ brand.shop_name }}!"
    assert renderer.render_file("en/t.txt.j2", {}) == "Global"
    assert renderer._render_string(subject, {}, "subject") == "Global!"  # noqa: SLF001
    assert renderer.render_file("en/t.txt.j2", {"brand": {"shop_name": "Mine"}}) == "Mine"
    assert renderer._render_string(subject, {"brand": {"shop_name": "Mine"}}, "subject") == "Mine!"  # noqa: SLF001
    assert renderer.render_file("en/t.txt.j2", {}) == "Global"


def test_a_template_edited_on_disk_is_read_again(tmp_path):
    write(tmp_path, "en/t.txt.j2", "before {{ brand.shop_name }}")
    renderer = Renderer(tmp_path)
    renderer.loader.recheck_seconds = 0.2
    assert renderer.render_file("en/t.txt.j2", {}) == "before The Loyalty Club"
    write(tmp_path, "en/t.txt.j2", "after {{ brand.shop_name }}")
    later = time.time() + 5
    os.utime(tmp_path / "en/t.txt.j2", (later, later))
    time.sleep(0.3)
    assert renderer.render_file("en/t.txt.j2", {}) == "after The Loyalty Club"
