"""The report's intervals: Wilson for a rate, Newcombe's hybrid score for a difference of two rates,
checked against the published figures (Newcombe 1998, Table II, method 10)."""

from __future__ import annotations

import pytest

from services.proportions import difference_interval, wilson_interval, z_for


@pytest.mark.parametrize(("a", "n", "b", "m", "low", "high"), [
    (56, 70, 48, 80, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775),
    (0, 10, 0, 10, -0.2775, 0.2775),
    (10, 10, 0, 20, 0.6791, 1.0000),
    (10, 10, 0, 10, 0.6075, 1.0000),
])
def test_newcombes_published_intervals(a, n, b, m, low, high):
    result = difference_interval(a, n, b, m)
    assert result.difference == pytest.approx(a / n - b / m)
    assert (round(result.low, 4), round(result.high, 4)) == (low, high)


def test_the_interval_is_the_mirror_image_when_the_groups_swap():
    ab, ba = difference_interval(56, 70, 48, 80), difference_interval(48, 80, 56, 70)
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low))


def test_an_empty_group_has_no_interval_and_a_non_proportion_is_refused():
    assert difference_interval(3, 10, 0, 0) is None
    with pytest.raises(ValueError, match="11 successes of 10 trials is not a proportion"):
        difference_interval(11, 10, 1, 10)


def test_wilson_interval_and_the_quantile():
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    low, high = wilson_interval(81, 263)  # Newcombe 1998 (single proportion), method 3: 0.2553-0.3662
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 10)[0] == 0.0


def test_whether_the_interval_tells_the_rates_apart():
    assert difference_interval(56, 70, 48, 80).tells_apart
    assert not difference_interval(5, 56, 0, 29).tells_apart
    narrower = difference_interval(56, 70, 48, 80, confidence=0.9)
    wider = difference_interval(56, 70, 48, 80, confidence=0.99)
    assert wider.low < narrower.low and wider.high > narrower.high
