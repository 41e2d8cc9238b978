"""Tests, multiplicity, ranks and power for the comparisons of one table.

* :func:`mcnemar_exact` — McNemar's exact test of two classifiers on the same examples:
  with ``b`` the examples only the first gets right and ``c`` those only the second gets
  right, ``p = min(1, 2 · P[Bin(b + c, ½) ≤ min(b, c)])`` (1 when ``b + c = 0``).
* :func:`holm` — Holm's step-down adjustment: with the ``m`` p-values sorted,
  ``p̃_(j) = max_{k ≤ j} min(1, (m − k + 1) p_(k))``; rejecting ``p̃ < α`` controls the
  family-wise error at ``α``.
* :func:`rank_ranges` — honest ranks: a method's rank is the range
  ``[1 + #{significantly better}, N − #{significantly worse}]``, so it has a rank of its own
  only when it differs significantly from every other method, and equal methods share an
  overlapping range (``"1–4"``).
* :func:`minimum_detectable_difference` and :func:`seeds_to_detect` — the power of a
  comparison with standard error ``SE`` and ``ν`` degrees of freedom, two-sided level ``α``:
  ``MDD = (t_{ν, 1−α/2} + t_{ν, power}) · SE``; the seeds needed are the smallest ``S'`` whose
  projected ``MDD`` is at most the difference to detect.

Pure functions of numbers; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from .bootstrap import VarianceComponents

__all__ = [
    "ALPHA",
    "POWER",
    "holm",
    "mcnemar_exact",
    "minimum_detectable_difference",
    "rank_ranges",
    "seeds_to_detect",
]

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 100_000


def mcnemar_exact(first_correct: np.ndarray, second_correct: np.ndarray) -> tuple[int, int, float]:
    """``(b, c, p)``: McNemar's exact two-sided test on paired 0/1 outcomes (see the module docstring)."""
    x = np.asarray(first_correct)
    y = np.asarray(second_correct)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired outcomes must be two vectors of one length, got shapes {x.shape} and {y.shape}")
    if not (np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError("McNemar's test needs 0/1 outcomes")
    x, y = x.astype(bool), y.astype(bool)
    b, c = int(np.sum(x & ~y)), int(np.sum(~x & y))
    if b + c == 0:
        return b, c, 1.0
    return b, c, float(min(1.0, 2.0 * stats.binom.cdf(min(b, c), b + c, 0.5)))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the input order (``None`` stays ``None`` and does not count in ``m``)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - k) * p))
        adjusted[i] = running
    return adjusted


def rank_ranges(methods: Sequence[str], better: Mapping[tuple[str, str], bool]) -> dict[str, tuple[int, int]]:
    """``{method: (best rank, worst rank)}`` from the significant pairwise outcomes.

    ``better[(a, b)]`` is True when ``a`` is significantly better than ``b`` (missing pairs:
    not significant). A method's range is ``[1 + #methods significantly better than it,
    N − #methods it is significantly better than]``.
    """
    n = len(methods)
    out = {}
    for m in methods:
        beaten_by = sum(bool(better.get((o, m))) for o in methods if o != m)
        beats = sum(bool(better.get((m, o))) for o in methods if o != m)
        out[m] = (1 + beaten_by, n - beats)
    return out


def minimum_detectable_difference(se: float, df: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """``(t_{df, 1−α/2} + t_{df, power}) · se``: the smallest true difference a two-sided level-``α`` test
    detects with probability ``power``."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def seeds_to_detect(
    components: VarianceComponents, difference: float, *, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """The smallest number of seeds (≥ 2, same examples) whose projected minimum detectable difference
    is at most ``difference``; ``None`` when no number of seeds reaches it (the examples' share
    ``σ_b²/n_e`` alone is too large: more examples are needed) or more than 100,000 would."""

    def detects(seeds: int) -> bool:
        variance, df = components.projected(seeds)
        return minimum_detectable_difference(float(np.sqrt(variance)), df, alpha=alpha, power=power) <= difference

    if detects(2):
        return 2
    if not detects(MAX_SEEDS):
        return None
    low, high = 2, MAX_SEEDS  # detects(low) is False, detects(high) is True
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if detects(mid) else (mid, high)
    return high
