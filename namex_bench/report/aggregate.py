"""Aggregates across tasks, as Agarwal et al. (2021, "Deep RL at the edge of the statistical
precipice") recommend — written on NumPy/SciPy (the ``rliable`` package is archived and no
longer imports with today's ``arch`` and ``pandas``).

A method's data are its runs' scores per task: ``per_task[m]`` is the vector of its seeds'
scores on task ``m`` (any number of seeds per task).

* :func:`normalised_scores` — a task's scores on a common scale: ``x / r̄`` when higher is
  better and ``r̄ / x`` when lower is better, ``r̄`` the reference method's mean on the task
  (1 = as good as the reference, above 1 = better).
* :func:`iqm` — the interquartile mean of all runs of all tasks: the mean of the middle 50%
  (as ``scipy.stats.trim_mean(·, 0.25)``), robust to outlying tasks and less noisy than the median.
* :func:`stratified_bootstrap` — percentile intervals of any such aggregate: each
  replicate resamples the runs of every task with replacement, task by task.
* :func:`probability_of_improvement` — ``P(X > Y) = (1/M) Σ_m (1/(N_m K_m)) Σ_i Σ_j S(x_mi, y_mj)``
  with ``S(x, y) = 1`` if ``x > y``, ½ if equal, 0 otherwise: the probability that a random
  run of X beats a random run of Y on a random task (Mann–Whitney per task). Its interval
  resamples the runs of both methods within each task.
* :func:`performance_profile` — the run-score distribution ``F(τ) = fraction of runs (all
  tasks) with a score above τ``, with stratified-bootstrap bands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "iqm",
    "normalised_scores",
    "performance_profile",
    "probability_of_improvement",
    "stratified_bootstrap",
]

PerTask = Sequence[np.ndarray]
REPLICATES = 2000


def _per_task(per_task: PerTask, what: str) -> list[np.ndarray]:
    """Each task's runs as a float64 array ``[n_m]`` (lists are flattened), or ``[R, n_m]`` when
    given so: a batch of ``R`` resamples, which every statistic here maps to ``[R]`` values."""
    out = [np.asarray(x, dtype=np.float64) for x in per_task]
    out = [x if x.ndim == 2 else x.ravel() for x in out]
    if not out or any(x.shape[-1] == 0 for x in out):
        raise ValueError(f"{what}: every task needs at least one run")
    if not all(np.all(np.isfinite(x)) for x in out):
        raise ValueError(f"{what}: scores must be finite")
    return out


def _value(result: np.ndarray) -> float | np.ndarray:
    return float(result) if np.ndim(result) == 0 else result


def normalised_scores(scores: np.ndarray, reference_mean: float, goal: str) -> np.ndarray:
    """``x / r̄`` (goal ``"max"``) or ``r̄ / x`` (goal ``"min"``): 1 = the reference's mean, higher = better."""
    x = np.asarray(scores, dtype=np.float64)
    if goal == "max":
        if reference_mean == 0:
            raise ValueError("cannot normalise by a reference mean of 0")
        return x / reference_mean
    if goal == "min":
        if np.any(x == 0):
            raise ValueError("cannot normalise a score of 0 when lower is better")
        return reference_mean / x
    raise ValueError(f"goal must be 'max' or 'min', got {goal!r}")


def iqm(per_task: PerTask) -> float | np.ndarray:
    """The interquartile mean of every run of every task: the mean of the sorted values
    ``v_(k) … v_(n−k−1)`` with ``k = ⌊n/4⌋`` (``scipy.stats.trim_mean(·, 0.25)``). Per row for
    ``[R, n_m]`` batches."""
    values = np.sort(np.concatenate(_per_task(per_task, "iqm"), axis=-1), axis=-1)
    n = values.shape[-1]
    cut = int(0.25 * n)
    return _value(values[..., cut : n - cut].mean(axis=-1))


def _resample(per_task: list[np.ndarray], rng: np.random.Generator, replicates: int) -> list[np.ndarray]:
    """``replicates`` resamples of each task's runs with replacement: ``[R, n_m]`` per task."""
    return [x[rng.integers(0, x.size, (replicates, x.size))] for x in per_task]


def stratified_bootstrap(
    statistic: Callable[..., float | np.ndarray],
    *methods: PerTask,
    replicates: int = REPLICATES,
    rng: np.random.Generator | int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``statistic(*methods)`` and its percentile interval, each replicate
    resampling every method's runs within every task (strata = tasks). ``statistic`` takes every
    method's per-task runs and must map a batch of resamples (``[R, n_m]`` per task, as the
    statistics of this module do) to ``[R]`` values: the ``R`` replicates are one call."""
    data = [_per_task(m, "stratified_bootstrap") for m in methods]
    if any(x.ndim != 1 for m in data for x in m):
        raise ValueError("stratified_bootstrap: each task's runs must be one-dimensional")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    estimate = float(statistic(*data))
    boot = np.asarray(statistic(*(_resample(m, rng, replicates) for m in data)), dtype=np.float64)
    if boot.shape != (replicates,):
        raise ValueError(f"stratified_bootstrap: the statistic gave shape {boot.shape} for {replicates} replicates")
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return estimate, float(low), float(high)


def probability_of_improvement(x_per_task: PerTask, y_per_task: PerTask) -> float | np.ndarray:
    """``P(X > Y)`` averaged over tasks (ties count ½); both methods must have the same tasks.
    Per row for ``[R, n_m]`` batches."""
    xs, ys = _per_task(x_per_task, "probability_of_improvement"), _per_task(y_per_task, "probability_of_improvement")
    if len(xs) != len(ys):
        raise ValueError(f"probability_of_improvement: {len(xs)} tasks against {len(ys)}")
    per_task = []
    for x, y in zip(xs, ys):
        pairs_x, pairs_y = x[..., :, None], y[..., None, :]
        per_task.append((pairs_x > pairs_y).mean(axis=(-2, -1)) + 0.5 * (pairs_x == pairs_y).mean(axis=(-2, -1)))
    return _value(np.mean(per_task, axis=0))


def performance_profile(
    per_task: PerTask,
    thresholds: np.ndarray,
    *,
    replicates: int = REPLICATES,
    rng: np.random.Generator | int = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fraction, low, high)`` at each threshold τ: the fraction of runs (every task's runs
    weighted equally by task) scoring above τ, with stratified-bootstrap percentile bands."""
    data = _per_task(per_task, "performance_profile")
    taus = np.asarray(thresholds, dtype=np.float64)

    def profile(tasks: list[np.ndarray]) -> np.ndarray:
        return np.mean([(x[..., :, None] > taus).mean(axis=-2) for x in tasks], axis=0)

    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    boot = profile(_resample(data, rng, replicates))
    tail = (1.0 - confidence) / 2
    return profile(data), np.quantile(boot, tail, axis=0), np.quantile(boot, 1.0 - tail, axis=0)
