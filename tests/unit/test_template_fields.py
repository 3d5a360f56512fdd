"""Which member fields a campaign's templates may reach (``campaigns.template_fields``)."""

from __future__ import annotations

from jinja2 import DictLoader
from jinja2.sandbox import SandboxedEnvironment

from campaigns.template_fields import member_fields


def env(**templates: str) -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=DictLoader(templates))


def test_fields_named_directly_through_layouts_and_subjects():
    templates = env(**{
        "_layout.j2": "{{ member.tier }} {% block content %}{% endblock %} {{ unsubscribe_url }}",
        "en/mail.j2": '{% extends "_layout.j2" %}{% block content %}{{ member["points_balance"] }}{% endblock %}',
    })
    assert member_fields(templates, ["en/mail.j2"], ["Hello {{ member.first_name }}"]) == {
        "tier", "points_balance", "first_name"}
    assert member_fields(templates, ["en/mail.j2"]) == {"tier", "points_balance"}  # no name: none read


def test_a_member_used_whole_or_a_template_chosen_at_render_time_means_every_field():
    assert member_fields(env(a="{{ member | tojson }}"), ["a"]) is None
    assert member_fields(env(a="{% set m = member %}{{ m.first_name }}"), ["a"]) is None
    assert member_fields(env(a="{% for k in member %}{{ k }}{% endfor %}"), ["a"]) is None
    assert member_fields(env(a="{% include name %}"), ["a"]) is None
    assert member_fields(env(a="{% include 'b' %}", b="{{ member }}"), ["a"]) is None
    assert member_fields(env(a="{{ member.tier"), ["a"]) is None  # broken: rendering reports it
    assert member_fields(env(), ["missing"]) is None


def test_a_macro_parameter_named_member_is_its_own_and_its_call_passes_the_whole():
    source = "{% macro hi(member) %}{{ member.first_name }}{% endmacro %}"
    assert member_fields(env(a=source), ["a"]) == {"first_name"}
    assert member_fields(env(a=source + "{{ hi(member) }}"), ["a"]) is None
