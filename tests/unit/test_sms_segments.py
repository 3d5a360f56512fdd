"""SMS length in segments (GSM-7 or UCS-2), and ``loyalty validate``'s warning above a campaign's cap."""

from __future__ import annotations

import pytest

from campaigns.sms_segments import measure, not_gsm7
from campaigns.validation import validate_all
from core.settings import DEFAULT_PROGRAM_FILE


@pytest.mark.parametrize(
    ("body", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),  # split: 153 a segment
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("[{}]" * 40, "GSM-7", 320, 3),
        ("é" * 160, "GSM-7", 160, 1),  # é, è, à, ù, ì, ò, Ç are in GSM-7...
        ("ç" * 70, "UCS-2", 70, 1),  # ...ç, ê, â are not: the whole message goes UCS-2
        ("ç" * 71, "UCS-2", 71, 2),  # split: 67 a segment
        ("ç" * 134, "UCS-2", 134, 2),
        ("ç" * 135, "UCS-2", 135, 3),
        ("🎂" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 code units
        ("🎂" * 36, "UCS-2", 72, 2),
        ("Your 120 points expire on Mar 31. Reply STOP to opt out.", "GSM-7", 56, 1),
        ("Vos 120 points expirent le 31 mars. Répondez STOP", "GSM-7", 49, 1),
        ("Votre fête, l’occasion", "UCS-2", 22, 1),  # the typographic apostrophe, and ê
    ],
)
def test_length_in_segments(body, encoding, units, segments):
    length = measure(body)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_the_characters_that_force_ucs2_are_named_once_each_in_order():
    assert not_gsm7("Fête à l’été, fête") == ["ê", "’"]
    assert not_gsm7("plain text") == []


def test_validate_warns_when_an_sms_renders_longer_than_its_cap(tmp_path):
    campaigns, templates = tmp_path / "campaigns", tmp_path / "templates"
    (templates / "en" / "long").mkdir(parents=True)
    campaigns.mkdir()
    (templates / "en" / "long" / "sms.txt.j2").write_text("Bonjour {{ member.first_name }}, voilà la fête ! " + "x" * 60)
    (campaigns / "long.yaml").write_text(
        "id: long\nkind: birthday\nname: Long\nsend_time: '09:00'\nchannels: [sms]\nlocales: [en]\n"
        "messages:\n  sms:\n    text: long/sms.txt.j2\n    max_segments: 1\n"
    )
    result = validate_all(campaigns, templates, DEFAULT_PROGRAM_FILE)
    assert result.problems == []
    [warning] = result.warnings
    assert "sms.txt.j2: the SMS is 2 segments (UCS-2, 90 units) for the sample member, more than max_segments 1" in warning
    assert "'ê' make(s) the whole message UCS-2" in warning
    assert "(failed: sms_too_long)" in warning


def test_the_shipped_sms_fit_their_caps():
    from core.settings import DEFAULT_CAMPAIGNS_DIR, DEFAULT_TEMPLATES_DIR

    assert validate_all(DEFAULT_CAMPAIGNS_DIR, DEFAULT_TEMPLATES_DIR, DEFAULT_PROGRAM_FILE).warnings == []
