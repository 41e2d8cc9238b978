"""Every pair of methods of one task/model compared on the primary metric: the family of
tests behind a table's ranks, its bold, its comparisons with the reference and its power line.

For methods A and B on their matched seeds, ``Δ = A − B`` (raw, whatever the goal):

* **per-example** (both have per-example data for the metric on the same examples): the
  hierarchical paired bootstrap of :mod:`.bootstrap` — interval and p-value — and, for
  0/1 outcomes, McNemar's exact test on every seed;
* **seed-level** otherwise (records without sidecars): the paired t-test over seeds,
  its interval clipped to the metric's range.

Holm's adjustment runs over all ``N(N − 1)/2`` pairs of the table; a pair is significant
when its adjusted p is below 0.05. Ranks are the ranges of :func:`~.significance.rank_ranges`.
The bootstrap's generator is seeded from the task, model, metric and pair, so the same
records give the same numbers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .bootstrap import VarianceComponents, hierarchical_bootstrap
from .per_example import ExampleArrays, MethodScores, binary, method_scores, same_examples
from .significance import ALPHA, holm, mcnemar_exact, minimum_detectable_difference, rank_ranges, seeds_to_detect
from .statistics import paired_comparison

__all__ = ["Comparison", "Comparisons", "Power", "compare", "difference_bounds", "rng_for", "one_point"]

Bounds = tuple[float | None, float | None]


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded by the text of ``parts``: the same table always draws the same replicates."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def difference_bounds(bounds: Bounds | None) -> Bounds | None:
    """The range of a difference of two values in ``bounds``: ``(low − high, high − low)``."""
    if bounds is None or bounds[0] is None or bounds[1] is None:
        return None
    width = bounds[1] - bounds[0]
    return (-width, width)


def one_point(bounds: Bounds | None, reference_mean: float | None) -> tuple[float, str]:
    """The difference called "1 point": 0.01 on a metric bounded within [−1, 1], else 1% of the
    reference's mean; with its name."""
    if bounds is not None and bounds[0] is not None and bounds[1] is not None and bounds[1] - bounds[0] <= 2:
        return 0.01, "1 point (0.01)"
    base = abs(reference_mean or 0.0)
    return (0.01 * base, f"1% ({0.01 * base:.3g})") if base > 0 else (0.01, "0.01")


@dataclass(frozen=True)
class Comparison:
    """``first − second`` on the primary metric over ``seeds`` (see the module docstring).

    ``kind`` is ``"bootstrap"`` (per-example) or ``"t"`` (seed-level); ``examples`` the number
    of examples per seed (bootstrap only); ``low``/``high`` the 95% interval; ``p_holm`` the
    Holm-adjusted p-value in the table's family; ``wins``/``ties``/``losses`` count seeds in
    the direction of the goal; ``mcnemar`` is ``((seed, b, c, p), …)`` for 0/1 outcomes;
    ``components`` the variance components of the difference and ``scale`` the factor from
    their (linear) scale to the metric's (``e^μ`` for a perplexity, else 1).
    """

    first: str
    second: str
    seeds: tuple[Hashable, ...]
    kind: str
    estimate: float | None
    low: float | None
    high: float | None
    p_value: float | None
    wins: int
    ties: int
    losses: int
    examples: int | None = None
    p_holm: float | None = None
    mcnemar: tuple[tuple[Hashable, int, int, float], ...] | None = None
    components: VarianceComponents | None = None
    scale: float = 1.0

    def flipped(self) -> Comparison:
        """``second − first``."""
        def neg(x: float | None) -> float | None:
            return None if x is None else -x

        return replace(
            self, first=self.second, second=self.first, estimate=neg(self.estimate), low=neg(self.high), high=neg(self.low),
            wins=self.losses, losses=self.wins,
            mcnemar=None if self.mcnemar is None else tuple((s, c, b, p) for s, b, c, p in self.mcnemar),
        )


@dataclass(frozen=True)
class Power:
    """What the table can detect: the median minimum detectable difference over the comparisons
    it is computed from (80% power, α = 0.05), and the median number of seeds that would detect
    ``point`` (``None``: no number of seeds would at this test-set size, for at least half of them)."""

    mdd: float
    seeds_needed: int | None
    point: float
    point_name: str
    comparisons: int
    kind: str  # "bootstrap" (seed and example variance) or "t" (seed-level)
    seeds: int
    examples: int | None


@dataclass(frozen=True, eq=False)
class Comparisons:
    """All pairs of one table. ``methods`` are in the order of their means (best first)."""

    primary: str
    goal: str
    methods: tuple[str, ...]
    pairs: dict[tuple[str, str], Comparison]
    ranks: dict[str, tuple[int, int]]
    scores: dict[str, MethodScores | str]  # per-example scores of the primary, or why there are none

    def get(self, first: str, second: str) -> Comparison:
        found = self.pairs.get((first, second))
        return found if found is not None else self.pairs[(second, first)].flipped()

    def better(self, first: str, second: str) -> bool:
        """Whether ``first`` is significantly better than ``second`` (Holm-adjusted p < 0.05, in the goal's direction)."""
        c = self.get(first, second)
        if c.p_holm is None or c.p_holm >= ALPHA or c.estimate is None:
            return False
        return c.estimate > 0 if self.goal == "max" else c.estimate < 0

    def best(self) -> str | None:
        """The method significantly better than every other, if there is one."""
        winners = [m for m in self.methods if self.ranks[m] == (1, 1)]
        return winners[0] if len(self.methods) > 1 and len(winners) == 1 else None

    def power(self, reference: str | None, point: float, point_name: str) -> Power | None:
        """The power line of the table, from the comparisons with ``reference`` (all pairs without one)."""
        chosen = [self.get(m, reference) for m in self.methods if m != reference] if reference in self.methods else list(self.pairs.values())
        usable = [c for c in chosen if c.components is not None and c.components.variance > 0]
        if not usable:
            return None
        mdds, seeds = [], []
        for c in usable:
            mdds.append(c.scale * minimum_detectable_difference(math.sqrt(c.components.variance), c.components.df))
            needed = seeds_to_detect(c.components, point / c.scale)
            seeds.append(math.inf if needed is None else needed)
        median_seeds = float(np.median(seeds))
        kinds = {c.kind for c in usable}
        examples = {c.examples for c in usable if c.examples is not None}
        return Power(
            mdd=float(np.median(mdds)),
            seeds_needed=None if math.isinf(median_seeds) else math.ceil(median_seeds),
            point=point,
            point_name=point_name,
            comparisons=len(usable),
            kind="bootstrap" if kinds == {"bootstrap"} else "t" if kinds == {"t"} else "mixed",
            seeds=int(np.median([len(c.seeds) for c in usable])),
            examples=max(examples) if examples else None,
        )


def _metric(record: Mapping[str, Any], metric: str) -> float | None:
    value = (record.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _linear_mean(scores: MethodScores, seeds: tuple[Hashable, ...]) -> float:
    rows = scores.on(seeds)
    w = np.full(rows.shape[1], 1.0 / rows.shape[1]) if scores.weights is None else scores.weights / scores.weights.sum()
    return float((rows @ w).mean())


def _pair(
    a: str, b: str, seeds_a: Mapping[Hashable, Mapping[str, Any]], seeds_b: Mapping[Hashable, Mapping[str, Any]],
    scores: Mapping[str, MethodScores | str], primary: str, goal: str, bounds: Bounds | None, rng_key: tuple,
) -> Comparison:
    values_a = {s: v for s, r in seeds_a.items() if (v := _metric(r, primary)) is not None}
    values_b = {s: v for s, r in seeds_b.items() if (v := _metric(r, primary)) is not None}
    seeds = tuple(sorted(set(values_a) & set(values_b), key=lambda s: (str(type(s)), s)))
    seed_level = paired_comparison(values_a, values_b, goal=goal)
    common = dict(first=a, second=b, seeds=seeds, wins=seed_level.wins, ties=seed_level.ties, losses=seed_level.losses)
    sa, sb = scores.get(a), scores.get(b)
    if seeds and isinstance(sa, MethodScores) and isinstance(sb, MethodScores) and same_examples(sa, sb) and sa.link == sb.link:
        result = hierarchical_bootstrap(
            sa.on(seeds), sb.on(seeds), weights=sa.weights, link=sa.link, bounds=bounds, rng=rng_for(*rng_key, a, b)
        )
        mcnemar = None
        if binary(sa) and binary(sb):
            mcnemar = tuple((s, *mcnemar_exact(x, y)) for s, x, y in zip(seeds, sa.on(seeds), sb.on(seeds)))
        scale = 1.0
        if sa.link == "exp":
            scale = 0.5 * (math.exp(_linear_mean(sa, seeds)) + math.exp(_linear_mean(sb, seeds)))
        return Comparison(**common, kind="bootstrap", estimate=result.estimate, low=result.low, high=result.high,
                          p_value=result.p_value, examples=sa.examples, mcnemar=mcnemar, components=result.components, scale=scale)
    low = high = components = None
    if seed_level.ci95 is not None:
        low, high = seed_level.mean_diff - seed_level.ci95, seed_level.mean_diff + seed_level.ci95
        span = difference_bounds(bounds)
        if span is not None:
            low, high = max(low, span[0]), min(high, span[1])
        d = np.array([values_a[s] - values_b[s] for s in seeds])
        components = VarianceComponents(len(seeds), 1.0, float(np.var(d, ddof=1)), None, None)
    return Comparison(**common, kind="t", estimate=seed_level.mean_diff, low=low, high=high, p_value=seed_level.p_value,
                      components=components)


def compare(
    by_method: Mapping[str, Mapping[Hashable, Mapping[str, Any]]],
    primary: str,
    goal: str,
    *,
    bounds: Bounds | None = None,
    arrays: ExampleArrays | None = None,
    rng_key: tuple = (),
) -> Comparisons:
    """Every pair of ``by_method`` (``{label: {seed: record}}``) on ``primary``, Holm-adjusted, with ranks."""
    arrays = arrays or {}
    scores = {label: method_scores(seeds, arrays, primary) for label, seeds in by_method.items()}
    sign = -1.0 if goal == "max" else 1.0

    def order(label: str) -> tuple:
        values = [v for r in by_method[label].values() if (v := _metric(r, primary)) is not None]
        return (0, sign * float(np.mean(values)), label) if values else (1, 0.0, label)

    methods = tuple(sorted(by_method, key=order))
    pairs = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            pairs[(a, b)] = _pair(a, b, by_method[a], by_method[b], scores, primary, goal, bounds, (*rng_key, primary))
    adjusted = holm([c.p_value for c in pairs.values()])
    pairs = {key: replace(c, p_holm=p) for (key, c), p in zip(pairs.items(), adjusted)}
    table = Comparisons(primary, goal, methods, pairs, {}, scores)
    ranks = rank_ranges(methods, {(x, y): table.better(x, y) for x in methods for y in methods if x != y})
    return replace(table, ranks=ranks)
