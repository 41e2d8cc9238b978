"""Statistics over seeds: mean, standard deviation, 95% confidence interval, paired tests.

Every number a leaderboard prints comes from here (DESIGN.md, principle 7):

* :func:`summarise` — the mean of ``n`` seeds, the sample standard deviation
  ``s = sqrt(sum (x_i - mean)^2 / (n - 1))`` and the half-width of the 95% confidence
  interval of the mean, ``t_{0.975, n-1} * s / sqrt(n)`` (Student's t).
* :func:`paired_comparison` — a method against a reference over the seeds both ran:
  the mean difference ``d = method - reference``, its 95% CI, the paired t-test's
  two-sided p-value, and how many seeds the method won, tied and lost.
* :func:`format_mean_ci` — ``mean ± ci`` printed with no more digits than the
  interval supports; :func:`format_interval` the same for an interval that need not be
  symmetric (a bootstrap's, or one clipped to the metric's range): ``mean [low, high]``.

Nothing here returns NaN: an undefined quantity (the spread of one seed) is ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "Paired",
    "Summary",
    "format_interval",
    "format_mean_ci",
    "format_p",
    "format_significant",
    "paired_comparison",
    "summarise",
]

GOALS = ("max", "min")


@dataclass(frozen=True)
class Summary:
    """Mean over ``n`` seeds with its sample standard deviation and 95% CI half-width.

    ``std`` and ``ci95`` are ``None`` when ``n < 2``; every field but ``n`` is ``None`` when ``n == 0``.
    """

    n: int
    mean: float | None
    std: float | None
    ci95: float | None


@dataclass(frozen=True)
class Paired:
    """A method minus a reference over ``n`` matched seeds.

    ``mean_diff`` is the mean of ``method - reference`` (raw, whatever the goal), ``ci95``
    the half-width of its 95% CI and ``p_value`` the paired t-test's two-sided p-value
    (both ``None`` when ``n < 2``). A *win* is a seed on which the method is better than
    the reference in the direction of the goal, a *tie* one with exactly equal values.
    """

    n: int
    mean_diff: float | None
    ci95: float | None
    p_value: float | None
    wins: int
    losses: int
    ties: int


def _finite_array(values: Iterable[float], what: str) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a flat sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: values must be finite, got {x.tolist()}")
    return x


def _t_half_width(std: float, n: int) -> float:
    """Half-width of the 95% CI of a mean: ``t_{0.975, n-1} * std / sqrt(n)``."""
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def summarise(values: Iterable[float]) -> Summary:
    """Mean, sample standard deviation (ddof = 1) and 95% CI half-width of ``values``.

    ``ci95 = t_{0.975, n-1} * std / sqrt(n)``. With one value the spread is undefined and
    ``std`` and ``ci95`` are ``None``; with none, ``mean`` is ``None`` as well.
    """
    x = _finite_array(values, "summarise")
    n = int(x.size)
    if n == 0:
        return Summary(0, None, None, None)
    mean = float(np.mean(x))
    if n == 1:
        return Summary(1, mean, None, None)
    std = float(np.std(x, ddof=1))
    return Summary(n, mean, std, _t_half_width(std, n))


def paired_comparison(
    method_values: Mapping[Hashable, float],
    reference_values: Mapping[Hashable, float],
    *,
    goal: str = "max",
) -> Paired:
    """Compare a method with a reference over the seeds present in both mappings.

    Seeds that only one side ran are dropped. With the differences ``d_i = m_i - r_i`` of
    the ``n`` matched seeds: ``mean_diff = mean(d)``, ``ci95 = t_{0.975, n-1} * sd(d) / sqrt(n)``
    and ``p_value`` from :func:`scipy.stats.ttest_rel` (two-sided). When every ``d_i`` is
    the same the t statistic is degenerate: ``ci95`` is 0, and ``p_value`` is 1.0 if the
    differences are all zero and ``None`` otherwise (a constant non-zero difference has
    zero variance: the t-test is undefined, and claiming p → 0 from two seeds would
    overstate the evidence). With fewer than two pairs ``ci95`` and ``p_value`` are ``None``.

    ``goal`` ("max" or "min") says which direction is better and decides wins and losses.
    """
    if goal not in GOALS:
        raise ValueError(f"goal must be one of {GOALS}, got {goal!r}")
    seeds = sorted(set(method_values) & set(reference_values), key=lambda s: (str(type(s)), s))
    m = _finite_array((method_values[s] for s in seeds), "paired_comparison (method)")
    r = _finite_array((reference_values[s] for s in seeds), "paired_comparison (reference)")
    d = m - r
    n = int(d.size)
    sign = 1.0 if goal == "max" else -1.0
    wins = int(np.sum(sign * d > 0))
    losses = int(np.sum(sign * d < 0))
    ties = n - wins - losses
    if n == 0:
        return Paired(0, None, None, None, 0, 0, 0)
    mean_diff = float(np.mean(d))
    if n == 1:
        return Paired(1, mean_diff, None, None, wins, losses, ties)
    if np.all(d == d[0]):
        return Paired(n, mean_diff, 0.0, 1.0 if d[0] == 0 else None, wins, losses, ties)
    with warnings.catch_warnings():  # near-identical pairs: scipy warns about precision, the value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_rel(m, r).pvalue)
    ci95 = _t_half_width(float(np.std(d, ddof=1)), n)
    return Paired(n, mean_diff, ci95, p_value, wins, losses, ties)


# --------------------------------------------------------------------------- formatting


def _exponent(x: float) -> int:
    """The decimal exponent of ``|x|``: 0.00432 -> -3, 91.2 -> 1."""
    return math.floor(math.log10(abs(x)))


def _decimals(x: float, significant: int) -> int:
    """Decimal places that keep ``significant`` significant digits of ``x`` after rounding.

    Negative for rounding left of the decimal point. Rounding can carry into a new
    leading digit (0.0996 -> 0.10), which moves the place one to the left.
    """
    e = _exponent(x)
    places = significant - 1 - e
    if abs(round(x, places)) >= 10.0 ** (e + 1):
        places -= 1
    return places


def _fixed(x: float, places: int) -> str:
    """``x`` rounded to ``places`` decimal places in fixed notation, with no "-0"."""
    text = f"{x:.{places}f}" if places >= 0 else f"{round(x, places):.0f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text


def format_mean_ci(
    mean: float | None,
    ci: float | None,
    *,
    ci_digits: int = 2,
    digits_without_ci: int = 4,
    separator: str = " ± ",
    signed: bool = False,
) -> str:
    """``mean ± ci`` with no more digits than the interval supports.

    The rule:

    * the CI half-width is rounded to ``ci_digits`` significant digits (2 by default,
      1 allowed), and the mean is rounded to the same decimal place:
      ``0.98123 ± 0.00432 -> "0.9812 ± 0.0043"``, ``91.2345 ± 1.2 -> "91.2 ± 1.2"``,
      ``91234.5 ± 123 -> "91230 ± 120"``;
    * without a CI (``ci`` is ``None``, e.g. one seed) the mean alone is printed with
      ``digits_without_ci`` (4) significant digits: ``0.98123 -> "0.9812"``;
    * a CI of 0 (every seed equal) bounds nothing: the mean gets 4 significant
      digits and the interval prints as ``"± 0"``; a CI below ``1e-9 · max(1, |mean|)``
      is floating-point noise between equal seeds and counts as 0;
    * a missing mean (``None``) prints as the empty string;
    * ``signed=True`` (for differences) prefixes a mean that prints non-zero and positive with ``+``.

    Numbers are printed in fixed notation, never with an exponent, and never as "-0".
    The output depends on the arguments only.
    """
    if ci_digits not in (1, 2):
        raise ValueError(f"ci_digits must be 1 or 2, got {ci_digits}")
    if mean is None:
        return ""
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean}")
    if ci is not None and (not math.isfinite(ci) or ci < 0):
        raise ValueError(f"ci must be a finite non-negative half-width, got {ci}")
    if ci is not None and ci < 1e-9 * max(1.0, abs(mean)):
        ci = 0.0
    if ci is None or ci == 0:
        text = format_significant(mean, digits_without_ci)
        suffix = "" if ci is None else f"{separator}0"
    else:
        places = _decimals(ci, ci_digits)
        text, suffix = _fixed(mean, places), f"{separator}{_fixed(ci, places)}"
    if signed and not text.startswith("-") and float(text) != 0.0:
        text = "+" + text
    return text + suffix


def format_interval(estimate: float | None, low: float | None, high: float | None, *, signed: bool = False) -> str:
    """``estimate [low, high]`` rounded like :func:`format_mean_ci`: the half-width ``(high − low)/2``
    to 2 significant digits sets the decimal place of all three numbers.

    ``0.7842 [0.7611, 0.8063]`` → ``"0.784 [0.761, 0.806]"``. Without an interval (``low`` or
    ``high`` ``None``) the estimate alone, 4 significant digits; an interval of width 0 as
    ``"estimate ± 0"``; ``signed=True`` prefixes positive numbers with ``+``.
    """
    if estimate is None:
        return ""
    if low is None or high is None:
        return format_mean_ci(estimate, None, signed=signed)
    for value in (estimate, low, high):
        if not math.isfinite(value):
            raise ValueError(f"interval bounds must be finite, got {(estimate, low, high)}")
    if high < low:
        raise ValueError(f"interval low {low} is above high {high}")
    half = (high - low) / 2
    if half < 1e-9 * max(1.0, abs(estimate)):
        return format_mean_ci(estimate, 0.0, signed=signed)
    places = _decimals(half, 2)

    def text(x: float) -> str:
        t = _fixed(x, places)
        return "+" + t if signed and not t.startswith("-") and float(t) != 0.0 else t

    return f"{text(estimate)} [{text(low)}, {text(high)}]"


def format_significant(x: float, digits: int = 4) -> str:
    """``x`` with ``digits`` significant digits in fixed notation: 0.98123 -> "0.9812", 12345.6 -> "12350"."""
    if x == 0:
        return "0"
    return _fixed(x, _decimals(x, digits))


def format_p(p: float | None) -> str:
    """A p-value with two significant digits; below 0.001 as ``"<0.001"``; ``None`` as ``""``."""
    if p is None:
        return ""
    if p < 0.001:
        return "<0.001"
    return format_significant(p, 2)
