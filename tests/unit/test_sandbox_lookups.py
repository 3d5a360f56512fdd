"""The renderer's sandbox looks ``a.b`` up on a plain dict directly (every template variable is
one): each shipped template renders exactly as with Jinja's own sandbox lookup, and what the
sandbox refuses or leaves undefined is still refused or undefined."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from jinja2 import Undefined
from jinja2.sandbox import SandboxedEnvironment

from campaigns.context import sample_context
from campaigns.loader import load_campaigns
from campaigns.program import load_program
from campaigns.rendering import Renderer, RenderError
from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_PROGRAM_FILE, DEFAULT_TEMPLATES_DIR

CAMPAIGNS = load_campaigns(DEFAULT_CAMPAIGNS_DIR).campaigns
PROGRAM = load_program(DEFAULT_PROGRAM_FILE)
SHIPPED = [(campaign_id, locale) for campaign_id, campaign in sorted(CAMPAIGNS.items()) for locale in campaign.locales]
NAMES = ["Alex", "Chloé <b>&amp;</b>", "李小龍", ""]


def jinja_own(templates_dir: Path) -> Renderer:
    """A renderer whose sandbox looks attributes up with Jinja's ``SandboxedEnvironment.getattr``."""
    renderer = Renderer(templates_dir, PROGRAM)
    renderer.env.getattr = types.MethodType(SandboxedEnvironment.getattr, renderer.env)
    return renderer


OURS, THEIRS = Renderer(DEFAULT_TEMPLATES_DIR, PROGRAM), jinja_own(DEFAULT_TEMPLATES_DIR)


def test_every_campaign_and_locale_is_covered():
    assert {c for c, _ in SHIPPED} >= {"birthday", "points_expiring", "winback", "tier_upgrade", "member_day"}
    assert {locale for _, locale in SHIPPED} >= {"en", "fr"}


@pytest.mark.parametrize(("campaign_id", "locale"), SHIPPED)
@pytest.mark.parametrize("first_name", NAMES)
def test_every_shipped_template_renders_as_with_jinja_s_own_lookup(campaign_id, locale, first_name):
    campaign = CAMPAIGNS[campaign_id]
    context = sample_context(campaign, PROGRAM)
    context["member"] = {**context["member"], "first_name": first_name}
    for member_locale in (locale, f"{locale}_CA", None):
        if campaign.messages.email is not None:
            assert OURS.render_email(campaign, locale, context, member_locale=member_locale) == \
                THEIRS.render_email(campaign, locale, context, member_locale=member_locale)
        if campaign.messages.sms is not None:
            assert OURS.render_sms(campaign, locale, context, member_locale=member_locale) == \
                THEIRS.render_sms(campaign, locale, context, member_locale=member_locale)
        mailchimp = campaign.messages.mailchimp
        if mailchimp is not None and mailchimp.properties:
            assert OURS.render_properties(campaign, locale, mailchimp.properties, context) == \
                THEIRS.render_properties(campaign, locale, mailchimp.properties, context)


LOOKUPS = [
    "{{ d.name }}",  # a key
    "{{ d._hidden }}",  # a key starting with an underscore: a dict's key is still given
    "{{ d.items is defined }}|{{ d['items'] }}",  # a dict method wins over a key of the same name
    "{{ d.get('name') }}",
    "{{ d.keys() | list | length }}",
    "{{ d.nested.inner }}",
    "{{ d.missing is defined }}",
    "{{ d.missing | default('none') }}",
    "{{ d.__class__ is defined }}",
    "{{ d.__class__.__name__ is defined }}",
    "{{ d.update is defined }}",
    "{{ (d.update is callable) }}",
    "{{ o.name }}|{{ o.missing is defined }}",  # a dict subclass: Jinja's own path
    "{{ d.n.real }}",  # an int's attribute after a dict's key
    "{{ d.3 is defined }}",
]


def render(renderer: Renderer, source: str) -> str:
    class Sub(dict):
        pass

    d = {"name": "Zoé", "_hidden": "h", "items": "a key", "nested": {"inner": 1}, "n": 5, 3: "three"}
    try:
        return renderer.env.from_string(source).render(d=d, o=Sub(name="sub"))
    except Exception as exc:  # noqa: BLE001 (the same refusal, word for word)
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("source", LOOKUPS)
def test_each_kind_of_lookup_answers_as_jinja_s_own(source):
    ours, theirs = render(OURS, source), render(THEIRS, source)
    assert ours == theirs


@pytest.mark.parametrize("attribute", ["name", "missing", "items", "__class__", "_hidden", 3, ("a",)])
def test_the_lookup_itself_answers_as_jinja_s_own_whatever_the_attribute(attribute):
    d = {"name": "Zoé", "_hidden": "h", 3: "three", ("a",): "tuple"}
    answers = []
    for env in (OURS.env, THEIRS.env):
        try:
            value = env.getattr(d, attribute)
            answers.append(("undefined", value._undefined_name, value._undefined_hint)
                           if isinstance(value, Undefined) else ("value", value))
        except Exception as exc:  # noqa: BLE001
            answers.append((type(exc).__name__, str(exc)))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("source", ["{{ d.missing }}", "{{ d.nested.missing }}", "{{ d.missing.deeper }}"])
def test_a_missing_key_is_still_an_error_naming_it(tmp_path, source):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.txt.j2").write_text(source)
    context = {"d": {"nested": {}}}
    with pytest.raises(RenderError) as ours:
        Renderer(tmp_path, PROGRAM).render_template("en", "t.txt.j2", context)
    with pytest.raises(RenderError) as theirs:
        jinja_own(tmp_path).render_template("en", "t.txt.j2", context)
    assert ours.value.problem == theirs.value.problem
    assert "missing" in ours.value.problem


@pytest.mark.parametrize("source", [
    "{{ d.__class__.__mro__ }}",
    "{{ d.items.__globals__ }}",
    "{{ d.get.__self__.__class__.__subclasses__() }}",
    "{{ d.update({'x': 1}) }}{{ d.x }}",
])
def test_what_the_sandbox_refuses_is_still_refused(tmp_path, source):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "t.txt.j2").write_text(source)
    outcomes = []
    for renderer in (Renderer(tmp_path, PROGRAM), jinja_own(tmp_path)):
        try:
            outcomes.append(("ok", renderer.render_template("en", "t.txt.j2", {"d": {"a": 1}})))
        except RenderError as exc:
            outcomes.append(("refused", exc.problem))
    assert outcomes[0] == outcomes[1]
