"""Confidence intervals for conversion rates and their differences (pure arithmetic, no database).

The report compares two groups' conversion rates (a variant and another variant, a variant and the
holdout) with **Newcombe's hybrid score interval** for a difference of two independent proportions
(R. G. Newcombe, "Interval estimation for the difference between independent proportions:
comparison of eleven methods", Statistics in Medicine 17, 1998, method 10). It is built from each
group's **Wilson score interval** and, unlike the textbook Wald interval (difference ± z times its
standard error), keeps close to its nominal coverage with small groups and rates near 0 or 1,
which is where a campaign's conversions usually are, and never leaves [-1, 1].

An interval that does not contain 0 means the two rates differ at that confidence level; one that
contains 0 means the data cannot tell them apart yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

#: What the report names, next to each interval.
METHOD = "Newcombe hybrid score interval (method 10) for a difference of two proportions"


def z_for(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"a confidence level is between 0 and 1, not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / trials`` (no continuity correction)."""
    _check(successes, trials)
    z = z_for(confidence)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exactly 0 and 1 there, not 1e-17 off
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Difference:
    """``rate_a - rate_b`` and its confidence interval, as fractions (0.05 is 5 points)."""

    difference: float
    low: float
    high: float
    confidence: float

    @property
    def tells_apart(self) -> bool:
        """Whether the interval leaves out 0: the rates differ at this confidence level."""
        return self.low > 0 or self.high < 0


def difference_interval(successes_a: int, trials_a: int, successes_b: int, trials_b: int,
                        confidence: float = 0.95) -> Difference | None:
    """Newcombe's hybrid score interval for ``successes_a / trials_a - successes_b / trials_b``;
    None when a group is empty (there is no rate to compare)."""
    if trials_a == 0 or trials_b == 0:
        return None
    _check(successes_a, trials_a)
    _check(successes_b, trials_b)
    p1, p2 = successes_a / trials_a, successes_b / trials_b
    l1, u1 = wilson_interval(successes_a, trials_a, confidence)
    l2, u2 = wilson_interval(successes_b, trials_b, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Difference(d, max(-1.0, low), min(1.0, high), confidence)


def _check(successes: int, trials: int) -> None:
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes of {trials} trials is not a proportion")
