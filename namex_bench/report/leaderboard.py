"""Leaderboards and paired comparisons: pure functions from run records (and their
per-example arrays) to tables.

Records are grouped by task (``config.task.name``) and model (``config.model.name``);
only records with ``"status": "ok"`` count. The records of a group must share one
precision (``config.precision``: bf16 and float32 results are never ranked together);
each leaderboard says which it is. Within a group:

* :func:`leaderboard` — one row per method (``config.method.label``), in the order of the
  primary metric's mean (the records' ``"primary"``, in the direction of its goal): every
  metric as its mean over seeds with a 95% interval — the hierarchical bootstrap over
  seeds and examples (:mod:`.bootstrap`) where the records have per-example data for it,
  else Student's t over seeds, clipped to the metric's range (the records' ``"bounds"``) —
  and an honest rank: the range of ranks the Holm-corrected pairwise comparisons allow
  (:mod:`.comparison`), ``"1–4"`` when four methods cannot be told apart. ``best`` marks
  only a method significantly better than every other. Training metrics (``train_*``) are
  shown and never ranked or marked.
* :func:`paired_table` — every method against the reference method (the records'
  ``"reference"``, or an override): the difference in the primary metric with its 95%
  interval, its Holm-adjusted p-value, McNemar's exact test per seed (0/1 outcomes),
  and the seeds the method won, tied and lost; :func:`pairwise_table` every pair.
* :func:`sections` — all of these, the power line, notes on missing per-example data and
  the names of the failed runs, for every group.

Nothing here reads files or the clock: the same records give the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import hierarchical_bootstrap
from .comparison import Comparisons, Power, compare, one_point, rng_for
from .per_example import ExampleArrays, MethodScores, method_scores
from .significance import holm
from .statistics import GOALS, format_interval, format_p, summarise

__all__ = [
    "Leaderboard",
    "PairedTable",
    "Section",
    "failed_runs",
    "leaderboard",
    "method_label",
    "ok_records",
    "paired_table",
    "pairwise_table",
    "sections",
    "task_model",
]

Record = Mapping[str, Any]


# --------------------------------------------------------------------------- record fields


def _where(record: Record) -> str:
    return f"run record {record.get('key', '?')} ({record.get('name', 'unnamed')})"


def _config_name(record: Record, part: str, name: str = "name") -> str:
    try:
        value = record["config"][part][name]
    except (KeyError, TypeError):
        raise ValueError(f"{_where(record)} has no config.{part}.{name}") from None
    return str(value)


def task_model(record: Record) -> tuple[str, str]:
    """``(config.task.name, config.model.name)`` of a record."""
    return _config_name(record, "task"), _config_name(record, "model")


def method_label(record: Record) -> str:
    """``config.method.label`` of a record: a method with its options, as the suite names it."""
    return _config_name(record, "method", "label")


def ok_records(records: Iterable[Record]) -> list[Record]:
    """The records of runs that finished (``"status": "ok"``); failed runs never count."""
    return [r for r in records if r.get("status") == "ok"]


def failed_runs(records: Iterable[Record], task: str, model: str) -> tuple[str, ...]:
    """Names of the runs of ``task``/``model`` whose record is not ``"ok"``, sorted."""
    return tuple(
        sorted(str(r.get("name") or r.get("key")) for r in records if r.get("status") != "ok" and task_model(r) == (task, model))
    )


def _metric_value(record: Record, metric: str) -> float | None:
    value = (record.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metric_names(records: Iterable[Record]) -> set[str]:
    names: set[str] = set()
    for r in records:
        names.update(m for m in (r.get("metrics") or {}) if _metric_value(r, m) is not None)
    return names


def _unique_field(records: Iterable[Record], name: str, what: str) -> Any:
    values = {r.get(name) for r in records} - {None}
    if len(values) > 1:
        raise ValueError(f"the records of {what} disagree on {name!r}: {sorted(map(str, values))}")
    return next(iter(values), None)


def _precision(records: Iterable[Record], what: str) -> str:
    """The precision of the records, in words; records of different precisions are an error."""
    from ..device import describe_precision

    configs = {json.dumps((r.get("config") or {}).get("precision"), sort_keys=True) for r in records}
    if len(configs) > 1:
        found = sorted(describe_precision(json.loads(c)) for c in configs)
        raise ValueError(
            f"the records of {what} were computed in different precisions ({'; '.join(found)}): a table never mixes them — "
            "rerun the suite to completion at one precision, or move the other records out of its runs folder"
        )
    return describe_precision(json.loads(next(iter(configs))))


def _goals(records: Iterable[Record], what: str) -> dict[str, str]:
    goals: dict[str, str] = {}
    for r in records:
        for metric, goal in (r.get("goals") or {}).items():
            if goal not in GOALS:
                raise ValueError(f"{_where(r)}: goal of {metric!r} must be one of {GOALS}, got {goal!r}")
            if goals.setdefault(metric, goal) != goal:
                raise ValueError(f"the records of {what} disagree on the goal of {metric!r}: 'max' and 'min'")
    return goals


def _by_method(records: Iterable[Record], what: str) -> dict[str, dict[Hashable, Record]]:
    """``{method label: {seed: record}}``, sorted by label; two ok records of one method and seed are an error."""
    methods: dict[str, dict[Hashable, Record]] = {}
    for r in records:
        seeds = methods.setdefault(method_label(r), {})
        seed = r["config"].get("seed")
        if seed in seeds:
            raise ValueError(
                f"{what}: method {method_label(r)!r} has two successful records for seed {seed!r} "
                f"({seeds[seed].get('key')} and {r.get('key')}); remove the stale one"
            )
        seeds[seed] = r
    return {label: methods[label] for label in sorted(methods)}


def _group(records: Iterable[Record], task: str, model: str) -> list[Record]:
    return [r for r in ok_records(records) if task_model(r) == (task, model)]


def _bounds(records: Iterable[Record], metric: str) -> tuple[float | None, float | None] | None:
    """The metric's range from the records' ``bounds`` (``None`` when no record states it or they disagree)."""
    found = set()
    for r in records:
        value = (r.get("bounds") or {}).get(metric)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            found.add(tuple(None if v is None else float(v) for v in value))
    return next(iter(found)) if len(found) == 1 else None


def is_ranked(records: Iterable[Record]) -> bool:
    """Whether the records' task ranks methods (a task with ``ranked: false`` is a pipeline check)."""
    return all(((r.get("config") or {}).get("task") or {}).get("ranked", True) is not False for r in records)


def is_training_metric(metric: str) -> bool:
    """Metrics of the training run (``train_loss``): shown, never ranked or marked best."""
    return metric.startswith("train_")




# --------------------------------------------------------------------------- leaderboard


@dataclass(frozen=True, eq=False)
class Leaderboard:
    """The leaderboard of one task on one model.

    ``table`` has one row per method, in the order of the primary metric's mean, with the
    columns ``rank`` (``"1"``, ``"2–4"``; empty without a value of the primary metric),
    ``rank_low``/``rank_high``, ``method``, ``best`` (significantly better than every
    other), ``n`` (seeds) and, for every metric ``m`` of ``metrics``: ``m`` (``"mean [low,
    high]"``), ``m_mean``, ``m_std``, ``m_low`` and ``m_high`` (floats, NaN where undefined).
    ``intervals[m]`` says where the intervals of ``m`` come from: ``"bootstrap"``, ``"t"``,
    ``"mixed"`` or ``"none"`` (one seed). ``comparisons`` are the pairwise tests behind the ranks.
    """

    task: str
    model: str
    primary: str
    goals: dict[str, str]
    metrics: tuple[str, ...]
    table: pd.DataFrame
    comparisons: Comparisons
    intervals: dict[str, str] = field(default_factory=dict)
    bounds: dict[str, tuple[float | None, float | None] | None] = field(default_factory=dict)
    precision: str = "not recorded"  # the runs' compute precision, in words (device.describe_precision)
    ranked: bool = True  # False: a pipeline check (the task's `ranked: false`), shown without ranks or bold

    @property
    def goal(self) -> str:
        return self.goals[self.primary]

    @property
    def display_columns(self) -> list[str]:
        """The columns a reader sees: rank, method, the formatted metrics, n."""
        return ["rank", "method", *self.metrics, "n"]

    @property
    def methods(self) -> list[str]:
        """Method labels in table order."""
        return list(self.table["method"])


def _group_setup(records: list[Record], task: str, model: str) -> tuple[str, list[Record], str, dict[str, str], dict[str, dict[Hashable, Record]]]:
    what = f"task {task!r} on model {model!r}"
    group = _group(records, task, model)
    if not group:
        raise ValueError(f"no successful runs of {what}")
    primary = _unique_field(group, "primary", what)
    if primary is None:
        raise ValueError(f"the records of {what} name no primary metric (the 'primary' field)")
    goals = _goals(group, what)
    _precision(group, what)  # records of different precisions are an error
    if primary not in goals:
        raise ValueError(f"the records of {what} give no goal ('max' or 'min') for the primary metric {primary!r}")
    return what, group, primary, goals, _by_method(group, what)


def group_comparisons(records: Iterable[Record], task: str, model: str, arrays: ExampleArrays | None = None) -> Comparisons:
    """The pairwise comparisons of ``task`` on ``model`` on its primary metric (see :mod:`.comparison`)."""
    records = list(records)
    _, group, primary, goals, by_method = _group_setup(records, task, model)
    return compare(by_method, primary, goals[primary], bounds=_bounds(group, primary), arrays=arrays, rng_key=(task, model))


def _clipped(low: float, high: float, bounds: tuple[float | None, float | None] | None) -> tuple[float, float]:
    if bounds is not None:
        if bounds[0] is not None:
            low, high = max(low, bounds[0]), max(high, bounds[0])
        if bounds[1] is not None:
            low, high = min(low, bounds[1]), min(high, bounds[1])
    return low, high


def _interval(seeds: Mapping[Hashable, Record], metric: str, bounds, arrays: ExampleArrays, key: tuple) -> tuple[dict[str, Any], str]:
    """A method's cell for ``metric``: ``{mean, std, low, high}`` and where the interval comes from."""
    values = [v for v in (_metric_value(r, metric) for r in seeds.values()) if v is not None]
    s = summarise(values)
    cell = {"mean": s.mean, "std": s.std, "low": None, "high": None}
    if s.mean is None:
        return cell, "none"
    scores = method_scores(seeds, arrays, metric) if arrays else None
    if isinstance(scores, MethodScores) and len(scores.seeds) == len(values):
        result = hierarchical_bootstrap(scores.scores, weights=scores.weights, link=scores.link, bounds=bounds, rng=rng_for(*key))
        cell.update(low=result.low, high=result.high)
        return cell, "bootstrap"
    if s.ci95 is None:
        return cell, "none"
    cell["low"], cell["high"] = _clipped(s.mean - s.ci95, s.mean + s.ci95, bounds)
    return cell, "t"


def leaderboard(
    records: Iterable[Record], task: str, model: str, *, arrays: ExampleArrays | None = None, comparisons: Comparisons | None = None
) -> Leaderboard:
    """Aggregate the successful runs of ``task`` on ``model`` per method and rank the methods honestly."""
    records = list(records)
    what, group, primary, goals, by_method = _group_setup(records, task, model)
    if comparisons is None:
        comparisons = group_comparisons(records, task, model, arrays)
    metrics = (primary, *sorted(_metric_names(group) - {primary}))
    bounds = {m: _bounds(group, m) for m in metrics}
    ranked = is_ranked(group)
    kinds: dict[str, set[str]] = {m: set() for m in metrics}
    best = comparisons.best()
    rows = []
    for label in comparisons.methods:
        seeds = by_method[label]
        has_primary = any(_metric_value(r, primary) is not None for r in seeds.values())
        low, high = comparisons.ranks[label]
        has_primary = has_primary and ranked
        row: dict[str, Any] = {
            "rank": (str(low) if low == high else f"{low}–{high}") if has_primary else "",
            "rank_low": low if has_primary else None,
            "rank_high": high if has_primary else None,
            "method": label,
            "best": ranked and label == best,
            "n": len(seeds),
        }
        for metric in metrics:
            cell, kind = _interval(seeds, metric, bounds[metric], arrays or {}, (task, model, metric, label))
            kinds[metric].add(kind)
            row[metric] = format_interval(cell["mean"], cell["low"], cell["high"])
            for stat in ("mean", "std", "low", "high"):
                row[f"{metric}_{stat}"] = cell[stat]
        rows.append(row)

    columns = ["rank", "rank_low", "rank_high", "method", "best", "n"]
    for metric in metrics:
        columns += [metric, f"{metric}_mean", f"{metric}_std", f"{metric}_low", f"{metric}_high"]
    table = pd.DataFrame(rows, columns=columns)
    for name in ("rank_low", "rank_high"):
        table[name] = table[name].astype("Int64")
    table["best"] = table["best"].astype(bool)
    table["n"] = table["n"].astype("int64")
    for metric in metrics:
        for stat in ("mean", "std", "low", "high"):
            table[f"{metric}_{stat}"] = pd.to_numeric(table[f"{metric}_{stat}"], errors="raise").astype("float64")
    intervals = {}
    for metric, found in kinds.items():
        found = found - {"none"} or {"none"}
        intervals[metric] = found.pop() if len(found) == 1 else "mixed"
    return Leaderboard(task, model, primary, goals, metrics, table.reset_index(drop=True), comparisons, intervals, bounds, _precision(group, what), ranked)


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True, eq=False)
class PairedTable:
    """Every method of one task/model against the reference, on the primary metric.

    ``table`` is ``None`` when there is nothing to compare against; ``note`` then says why.
    Otherwise it has one row per other method (in leaderboard order) with the columns
    ``method``, ``Δ <primary>`` (``"estimate [low, high]"`` of method − reference), ``p (Holm)``,
    ``McNemar p (Holm)`` (per seed, when the outcomes are 0/1), ``W/T/L`` (seeds won, tied, lost),
    ``n`` (``"seeds × examples"`` or ``"seeds"``), and the raw ``delta_mean``, ``delta_low``,
    ``delta_high``, ``p_value``, ``p_holm``, ``kind`` (``bootstrap``/``t``), ``n_seeds``,
    ``examples``, ``wins``, ``ties``, ``losses``, ``mcnemar`` (``"seed:b:c:p"`` items).
    """

    task: str
    model: str
    reference: str | None
    primary: str
    goal: str
    table: pd.DataFrame | None
    note: str | None = None

    @property
    def delta_column(self) -> str:
        return f"Δ {self.primary}"

    @property
    def has_mcnemar(self) -> bool:
        return self.table is not None and bool((self.table["McNemar p (Holm)"] != "").any())

    @property
    def display_columns(self) -> list[str]:
        columns = ["method", self.delta_column, "p (Holm)"]
        if self.has_mcnemar:
            columns.append("McNemar p (Holm)")
        return [*columns, "W/T/L", "n"]


def _size(n_seeds: int, examples: int | None) -> str:
    return f"{n_seeds} × {examples:,}" if examples is not None else f"{n_seeds} seeds"


def paired_table(
    records: Iterable[Record],
    task: str,
    model: str,
    reference: str | None = None,
    *,
    arrays: ExampleArrays | None = None,
    comparisons: Comparisons | None = None,
) -> PairedTable:
    """Compare every method with the reference on the primary metric (see :class:`PairedTable`).

    ``reference`` overrides the records' ``"reference"``. Without a reference, or when
    the reference has no successful run of this task/model, the table is ``None`` and
    ``note`` says so. McNemar's p-values are Holm-adjusted over every test in the table.
    """
    records = list(records)
    what, _, primary, goals, by_method = _group_setup(records, task, model)
    if reference is None:
        reference = _unique_field([r for r in records if task_model(r) == (task, model)], "reference", what)
    common = dict(task=task, model=model, reference=reference, primary=primary, goal=goals[primary])
    if reference is None:
        return PairedTable(**common, table=None, note="No paired comparison: the suite names no reference method.")
    if reference not in by_method:
        return PairedTable(
            **common,
            table=None,
            note=f"No paired comparison: the reference method `{reference}` has no successful run of {task} on {model}.",
        )
    if len(by_method) == 1:
        return PairedTable(**common, table=None, note=f"No paired comparison: only the reference method `{reference}` ran.")
    if comparisons is None:
        comparisons = group_comparisons(records, task, model, arrays)
    chosen = [comparisons.get(label, reference) for label in comparisons.methods if label != reference]
    flat = [(i, t) for i, c in enumerate(chosen) for t in (c.mcnemar or ())]
    adjusted = holm([p for _, (_, _, _, p) in flat])
    mcnemar: dict[int, list[str]] = {}
    for (i, _), p in zip(flat, adjusted):
        mcnemar.setdefault(i, []).append(format_p(p))
    rows = []
    for i, c in enumerate(chosen):
        rows.append(
            {
                "method": c.first,
                f"Δ {primary}": format_interval(c.estimate, c.low, c.high, signed=True),
                "p (Holm)": format_p(c.p_holm),
                "McNemar p (Holm)": ", ".join(mcnemar.get(i, [])),
                "W/T/L": f"{c.wins}/{c.ties}/{c.losses}",
                "n": _size(len(c.seeds), c.examples),
                "delta_mean": c.estimate,
                "delta_low": c.low,
                "delta_high": c.high,
                "p_value": c.p_value,
                "p_holm": c.p_holm,
                "kind": c.kind,
                "n_seeds": len(c.seeds),
                "examples": c.examples,
                "wins": c.wins,
                "ties": c.ties,
                "losses": c.losses,
                "mcnemar": " ".join(f"{s}:{b}:{cc}:{p:.6g}" for s, b, cc, p in (c.mcnemar or ())),
            }
        )
    table = pd.DataFrame(rows)
    for name in ("delta_mean", "delta_low", "delta_high", "p_value", "p_holm"):
        table[name] = pd.to_numeric(table[name], errors="raise").astype("float64")
    table["examples"] = table["examples"].astype("Int64")
    for name in ("n_seeds", "wins", "ties", "losses"):
        table[name] = table[name].astype("int64")
    return PairedTable(**common, table=table)


def pairwise_table(comparisons: Comparisons) -> pd.DataFrame:
    """Every pair ``first − second`` (in table order) with its interval, p-values and kind."""
    rows = []
    for (a, b), c in comparisons.pairs.items():
        rows.append({"first": a, "second": b, "delta_mean": c.estimate, "delta_low": c.low, "delta_high": c.high,
                     "p_value": c.p_value, "p_holm": c.p_holm, "significant": comparisons.better(a, b) or comparisons.better(b, a),
                     "kind": c.kind, "n_seeds": len(c.seeds), "examples": c.examples})
    columns = ["first", "second", "delta_mean", "delta_low", "delta_high", "p_value", "p_holm", "significant", "kind", "n_seeds", "examples"]
    table = pd.DataFrame(rows, columns=columns)
    for name in ("delta_mean", "delta_low", "delta_high", "p_value", "p_holm"):
        table[name] = pd.to_numeric(table[name], errors="raise").astype("float64")
    table["significant"] = table["significant"].astype(bool)
    table["examples"] = table["examples"].astype("Int64")
    table["n_seeds"] = table["n_seeds"].astype("int64")
    return table


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, eq=False)
class Section:
    """Everything the report says about one task on one model.

    ``leaderboard`` and ``paired`` are ``None`` when no run of the group succeeded.
    ``power`` is the table's power line; ``missing_examples`` names the methods whose
    statistics of the primary metric are seed-level, with the reason.
    """

    task: str
    model: str
    leaderboard: Leaderboard | None
    paired: PairedTable | None
    failed: tuple[str, ...] = field(default_factory=tuple)
    note: str | None = None  # the task's note (its suite's `note:`), from the records
    power: Power | None = None
    missing_examples: tuple[tuple[str, str], ...] = ()


def _reference_mean(board: Leaderboard, reference: str | None) -> float | None:
    table = board.table.set_index("method")
    if reference in table.index:
        return float(table.loc[reference, f"{board.primary}_mean"])
    means = board.table[f"{board.primary}_mean"].dropna()
    return float(np.mean(means)) if len(means) else None


def section(records: list[Record], task: str, model: str, reference: str | None = None, arrays: ExampleArrays | None = None) -> Section:
    """The :class:`Section` of one task/model."""
    failed = failed_runs(records, task, model)
    notes = sorted({n for r in records if task_model(r) == (task, model) and (n := (r.get("config") or {}).get("task", {}).get("note"))})
    note = " ".join(notes) or None
    if not _group(records, task, model):
        return Section(task, model, None, None, failed, note)
    comparisons = group_comparisons(records, task, model, arrays)
    board = leaderboard(records, task, model, arrays=arrays, comparisons=comparisons)
    paired = paired_table(records, task, model, reference, arrays=arrays, comparisons=comparisons)
    point, point_name = one_point(board.bounds.get(board.primary), _reference_mean(board, paired.reference))
    power = comparisons.power(paired.reference if paired.table is not None else None, point, point_name)
    missing = tuple((m, why) for m, why in comparisons.scores.items() if isinstance(why, str))
    return Section(task, model, board, paired, failed, note, power, missing)


def sections(records: Iterable[Record], reference: str | None = None, arrays: ExampleArrays | None = None) -> list[Section]:
    """One :class:`Section` per task/model that has any record, sorted by task then model.

    ``arrays`` holds the per-example arrays of the records that have them
    (``{record key: {set: {field: array}}}``)."""
    records = list(records)
    return [section(records, task, model, reference, arrays) for task, model in sorted({task_model(r) for r in records})]
