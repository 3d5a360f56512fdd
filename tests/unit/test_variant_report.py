"""The report's lines per A/B variant, from counts: the YAML's order, uplift against the holdout and
the difference with the first variant, each with Newcombe's interval; nothing to compare, no figure."""

from __future__ import annotations

from services.proportions import difference_interval
from services.report import variant_lines


def test_variants_in_the_yamls_order_with_uplift_and_difference():
    line = {"held_out": 100, "held_out_converted": 5}
    variants = {"a_plain": {"sent": 400, "converted": 40}, "z_urgent": {"sent": 380, "converted": 57},
                "gone": {"sent": 20, "converted": 1}}
    first, second, third = variant_lines(line, variants, ["z_urgent", "a_plain"])
    assert [first["variant"], second["variant"], third["variant"]] == ["z_urgent", "a_plain", "gone"]
    assert first["conversion_rate"] == 0.15 and "compared_with" not in first
    uplift = difference_interval(57, 380, 5, 100)
    assert first["uplift_pp"] == 10.0
    assert first["uplift_ci_pp"] == [round(uplift.low * 100, 2), round(uplift.high * 100, 2)]
    versus = difference_interval(40, 400, 57, 380)
    assert second["compared_with"] == "z_urgent" and second["difference_pp"] == -5.0
    assert second["difference_ci_pp"] == [round(versus.low * 100, 2), round(versus.high * 100, 2)]
    assert second["tells_apart"] is versus.tells_apart


def test_without_a_holdout_or_sends_there_is_nothing_to_compare():
    [only, empty] = variant_lines({"held_out": 0, "held_out_converted": 0},
                                  {"a": {"sent": 10, "converted": 2}, "b": {"sent": 0, "converted": 0}})
    assert only["uplift_pp"] is None and only["uplift_ci_pp"] is None
    assert empty["conversion_rate"] is None and empty["difference_pp"] is None and empty["difference_ci_pp"] is None
    assert empty["tells_apart"] is None
