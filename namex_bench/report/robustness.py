"""Corruption robustness (ImageNet-C protocol): pure functions from run records to tables.

A record of a corruption task carries the cell table ``cells["corruptions"]``, one row
per corruption and severity: ``{"corruption": c, "severity": s, "top1": ..., "error": E_{c,s}}``
with ``E = 1 − top1``, and the metrics ``clean_error``, ``corruption_error`` (the mean of
the benchmark corruptions' cells), ``corruption_error_all`` (the mean of all cells) and,
on ImageNet, ``mce`` and ``relative_mce`` (AlexNet-normalised, :mod:`namex_bench.metrics.mce`).

With ``B`` the 15 benchmark corruptions (:data:`~namex_bench.metrics.mce.BENCHMARK_CORRUPTIONS`),
``X`` the 4 extra ones, ``E^m_{c,s}(k)`` the error of method ``m`` under corruption ``c`` at
severity ``s`` on seed ``k``, the robustness table of a task/model has one row per method
(in the leaderboard's rank order) and the columns:

* ``clean error`` — ``E^m_clean(k)``, the record's ``clean_error``;
* ``mean CE`` — ``(1/|cells in B|) Σ_{c∈B, s} E^m_{c,s}(k)``, the record's ``corruption_error``
  (computed from the cells when the metric is absent);
* ``mean CE (all)`` — the same over the cells of ``B ∪ X`` (``corruption_error_all``), shown
  when any cell is an extra corruption;
* ``rel. CE vs <ref>`` — when the records (or the caller) name a reference method that has
  corruption cells: the ImageNet-C CE normalisation with the reference in place of AlexNet,
  on matched seeds::

      CE_rel(k) = (1/|B_k|) Σ_{c∈B_k} [ Σ_{s∈S_{c,k}} E^m_{c,s}(k) / Σ_{s∈S_{c,k}} E^ref_{c,s}(k) ]

  where ``B_k`` are the benchmark corruptions both runs of seed ``k`` have (a corruption on
  which the reference makes no error at all, ``Σ_s E^ref_{c,s} = 0``, is left out: its ratio
  is undefined) and ``S_{c,k}`` the severities both have for ``c``; seeds the reference did
  not run are dropped. The reference's own row is 1 on every seed;
* ``mCE``, ``relative mCE`` — the records' ``mce`` / ``relative_mce``, when present;
* one column per corruption present (benchmark order, then the extras):
  ``Ē^m_c = mean_k [ mean_s E^m_{c,s}(k) ]``, printed without a CI.

Every column but the per-corruption ones is summarised over the seeds ``k`` that have
corruption cells as the mean with its 95% interval: the leaderboard's (the hierarchical
bootstrap over seeds and examples) for the columns that are leaderboard metrics with
per-example data, else Student's t over seeds (:func:`~namex_bench.report.statistics.summarise`),
clipped to the column's range (errors in [0, 1], ratios from 0 up); ``n`` counts those seeds. :func:`robustness_table` also returns the severity curves
``mean_k E^m_{c,s}(k)`` for the plots. Nothing here reads files or the clock.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..metrics.mce import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS
from .leaderboard import (
    Leaderboard,
    Record,
    _bounds,
    _by_method,
    _clipped,
    _group,
    _metric_value,
    _unique_field,
    _where,
    leaderboard,
    task_model,
)
from .statistics import format_interval, format_mean_ci, summarise

__all__ = [
    "CORRUPTIONS_TABLE",
    "CORRUPTION_ORDER",
    "RobustnessTable",
    "corruption_cells",
    "has_corruption_cells",
    "relative_ce",
    "robustness_table",
]

CORRUPTIONS_TABLE = "corruptions"
CORRUPTION_ORDER: tuple[str, ...] = (*BENCHMARK_CORRUPTIONS, *EXTRA_CORRUPTIONS)
_BENCHMARK = frozenset(BENCHMARK_CORRUPTIONS)
_EXTRA = frozenset(EXTRA_CORRUPTIONS)

Cells = dict[tuple[str, int], float]  # (corruption, severity) -> top-1 error


# --------------------------------------------------------------------------- cells


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def corruption_cells(record: Record) -> Cells | None:
    """``{(corruption, severity): error}`` from a record's ``cells["corruptions"]``; ``None`` without any.

    A row's ``error`` is used as given (``1 − top1`` when it has no ``error``). An unknown
    corruption name, a severity that is not a positive integer, a missing or non-finite
    error, or two rows for one corruption and severity are errors of the record.
    """
    rows = (record.get("cells") or {}).get(CORRUPTIONS_TABLE)
    if not rows:
        return None
    where = f"{_where(record)}, cells[{CORRUPTIONS_TABLE!r}]"
    cells: Cells = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: rows must be objects, got {row!r}")
        corruption, severity = row.get("corruption"), row.get("severity")
        if corruption not in CORRUPTION_ORDER:
            raise ValueError(f"{where}: unknown corruption {corruption!r}; expected one of {', '.join(CORRUPTION_ORDER)}")
        if isinstance(severity, bool) or not isinstance(severity, int) or severity < 1:
            raise ValueError(f"{where}: severity of {corruption} must be a positive integer, got {severity!r}")
        error = _number(row.get("error"))
        if error is None and "error" not in row and _number(row.get("top1")) is not None:
            error = 1.0 - float(row["top1"])
        if error is None:
            raise ValueError(f"{where}: {corruption} severity {severity} has no finite error, got {row.get('error')!r}")
        if (corruption, severity) in cells:
            raise ValueError(f"{where}: two rows for {corruption} severity {severity}")
        cells[(corruption, severity)] = error
    return cells


def has_corruption_cells(records: Iterable[Record], task: str, model: str) -> bool:
    """Whether any successful run of ``task`` on ``model`` has a ``corruptions`` cell table."""
    return any(corruption_cells(r) is not None for r in _group(records, task, model))


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def relative_ce(method: Cells, reference: Cells) -> float | None:
    """``CE_rel = mean over benchmark corruptions c of Σ_s E^method_{c,s} / Σ_s E^ref_{c,s}`` (one seed).

    Only the cells both have count; a corruption with ``Σ_s E^ref_{c,s} = 0`` is left out.
    ``None`` when no benchmark corruption is left.
    """
    ratios = []
    for corruption in BENCHMARK_CORRUPTIONS:
        common = sorted(s for (c, s) in method.keys() & reference.keys() if c == corruption)
        denominator = sum(reference[(corruption, s)] for s in common)
        if common and denominator > 0:
            ratios.append(sum(method[(corruption, s)] for s in common) / denominator)
    return _mean(ratios)


# --------------------------------------------------------------------------- table


@dataclass(frozen=True, eq=False)
class RobustnessTable:
    """The robustness table of one task on one model.

    ``table`` has one row per method with corruption cells (leaderboard rank order) and
    the columns ``method``; for every ``(key, title)`` of ``summary_columns`` the formatted
    ``title`` (``"mean [low, high]"``) and the raw ``key_mean``, ``key_std``, ``key_ci95`` (the
    t half-width), ``key_low``, ``key_high`` (the interval, clipped to the range); for every
    corruption ``c`` of ``corruptions`` the formatted ``c`` (mean, no CI) and the raw ``c_mean``;
    and ``n`` (seeds with corruption cells).

    ``reference`` is the method the records (or the caller) name as the reference, if any;
    ``relative_to`` is that method when the ``rel. CE`` column could be computed (it has
    corruption cells), else ``None`` and ``note`` says why. ``without_cells`` lists the
    leaderboard's methods that have no corruption cells (and no row). ``curves`` is long:
    ``method``, ``corruption``, ``severity``, ``error_mean`` (over seeds), ``n``.
    """

    task: str
    model: str
    reference: str | None
    relative_to: str | None
    summary_columns: tuple[tuple[str, str], ...]
    corruptions: tuple[str, ...]
    table: pd.DataFrame
    curves: pd.DataFrame
    note: str | None = None
    without_cells: tuple[str, ...] = ()

    @property
    def display_columns(self) -> list[str]:
        """The columns a reader sees: method, the mean ± CI columns, one per corruption, n."""
        return ["method", *(title for _, title in self.summary_columns), *self.corruptions, "n"]

    @property
    def methods(self) -> list[str]:
        """Method labels in the leaderboard's rank order."""
        return list(self.table["method"])

    @property
    def has_extras(self) -> bool:
        return any(c in _EXTRA for c in self.corruptions)


def _metric_or(record: Record, metric: str, fallback: float | None) -> float | None:
    value = _metric_value(record, metric)
    return fallback if value is None else value


_RANGES = {"clean_error": (0.0, 1.0), "corruption_error": (0.0, 1.0), "corruption_error_all": (0.0, 1.0),
           "relative_ce": (0.0, None), "mce": (0.0, None), "relative_mce": (0.0, None)}


def robustness_table(
    records: Iterable[Record], task: str, model: str, reference: str | None = None, *, board: Leaderboard | None = None
) -> RobustnessTable | None:
    """The robustness table of the successful runs of ``task`` on ``model``; ``None`` when none has corruption cells.

    ``reference`` overrides the records' ``"reference"`` as in :func:`~namex_bench.report.leaderboard.paired_table`;
    ``board`` is the task's leaderboard (its order, and its bootstrap intervals where it has them;
    computed from the records alone when not given).
    """
    records = list(records)
    what = f"task {task!r} on model {model!r}"
    group = _group(records, task, model)
    cells_of = {id(r): corruption_cells(r) for r in group}
    if all(c is None for c in cells_of.values()):
        return None
    board = board if board is not None else leaderboard(records, task, model)
    methods = board.methods
    from_board = {key for key, kind in board.intervals.items() if kind == "bootstrap" and key in _RANGES}
    board_rows = board.table.set_index("method")
    if reference is None:
        reference = _unique_field([r for r in records if task_model(r) == (task, model)], "reference", what)

    # {method: {seed: (record, cells)}} for the seeds with cells, in rank order
    by_method = _by_method(group, what)
    runs: dict[str, dict[Hashable, tuple[Record, Cells]]] = {}
    for label in methods:
        seeds = {seed: (r, cells_of[id(r)]) for seed, r in by_method[label].items() if cells_of[id(r)] is not None}
        if seeds:
            runs[label] = seeds
    without_cells = tuple(label for label in methods if label not in runs)

    present = {c for seeds in runs.values() for _, cells in seeds.values() for (c, _) in cells}
    corruptions = tuple(c for c in CORRUPTION_ORDER if c in present)
    has_extras = bool(present & _EXTRA)

    relative_to, note = None, None
    if reference is not None:
        if reference in runs:
            relative_to = reference
        else:
            note = f"No relative CE: the reference method `{reference}` has no corruption cells for {task} on {model}."

    per_seed: dict[str, dict[str, dict[Hashable, float | None]]] = {}
    for label, seeds in runs.items():
        values: dict[str, dict[Hashable, float | None]] = {}
        for seed, (record, cells) in seeds.items():
            benchmark = _mean(e for (c, _), e in cells.items() if c in _BENCHMARK)
            values.setdefault("clean_error", {})[seed] = _metric_value(record, "clean_error")
            values.setdefault("corruption_error", {})[seed] = _metric_or(record, "corruption_error", benchmark)
            values.setdefault("corruption_error_all", {})[seed] = _metric_or(
                record, "corruption_error_all", _mean(cells.values())
            )
            if relative_to is not None:
                ref = runs[relative_to].get(seed)
                values.setdefault("relative_ce", {})[seed] = None if ref is None else relative_ce(cells, ref[1])
            values.setdefault("mce", {})[seed] = _metric_value(record, "mce")
            values.setdefault("relative_mce", {})[seed] = _metric_value(record, "relative_mce")
        per_seed[label] = values

    def any_value(key: str) -> bool:
        return any(v is not None for values in per_seed.values() for v in values.get(key, {}).values())

    summary_columns: list[tuple[str, str]] = [("clean_error", "clean error"), ("corruption_error", "mean CE")]
    if has_extras:
        summary_columns.append(("corruption_error_all", "mean CE (all)"))
    if relative_to is not None:
        summary_columns.append(("relative_ce", f"rel. CE vs {relative_to}"))
    if any_value("mce"):
        summary_columns.append(("mce", "mCE"))
    if any_value("relative_mce"):
        summary_columns.append(("relative_mce", "relative mCE"))

    rows, curve_rows = [], []
    for label, seeds in runs.items():
        row: dict[str, Any] = {"method": label, "n": len(seeds)}
        for key, title in summary_columns:
            s = summarise(v for v in per_seed[label].get(key, {}).values() if v is not None)
            low = high = None
            if key in from_board and len(seeds) == board_rows.loc[label, "n"]:
                low, high = float(board_rows.loc[label, f"{key}_low"]), float(board_rows.loc[label, f"{key}_high"])
            elif s.ci95 is not None:
                low, high = _clipped(s.mean - s.ci95, s.mean + s.ci95, _bounds(group, key) or _RANGES[key])
            row[title] = format_interval(s.mean, low, high)
            row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_ci95"] = s.mean, s.std, s.ci95
            row[f"{key}_low"], row[f"{key}_high"] = low, high
        for corruption in corruptions:
            by_seed = [
                _mean(e for (c, _), e in sorted(cells.items()) if c == corruption) for _, cells in seeds.values()
            ]
            mean = _mean(v for v in by_seed if v is not None)
            row[corruption], row[f"{corruption}_mean"] = format_mean_ci(mean, None), mean
            severities = sorted({s for _, cells in seeds.values() for (c, s) in cells if c == corruption})
            for severity in severities:
                errors = [cells[(corruption, severity)] for _, cells in seeds.values() if (corruption, severity) in cells]
                curve_rows.append(
                    {"method": label, "corruption": corruption, "severity": severity,
                     "error_mean": sum(errors) / len(errors), "n": len(errors)}
                )
        rows.append(row)

    columns = ["method", *(title for _, title in summary_columns), *corruptions, "n"]
    for key, _ in summary_columns:
        columns += [f"{key}_mean", f"{key}_std", f"{key}_ci95", f"{key}_low", f"{key}_high"]
    columns += [f"{c}_mean" for c in corruptions]
    table = pd.DataFrame(rows, columns=columns)
    table["n"] = table["n"].astype("int64")
    for name in columns[len(columns) - 5 * len(summary_columns) - len(corruptions) :]:
        table[name] = pd.to_numeric(table[name], errors="raise").astype("float64")
    curves = pd.DataFrame(curve_rows, columns=["method", "corruption", "severity", "error_mean", "n"])
    curves["severity"] = curves["severity"].astype("int64")
    curves["error_mean"] = curves["error_mean"].astype("float64")
    curves["n"] = curves["n"].astype("int64")
    return RobustnessTable(
        task=task,
        model=model,
        reference=reference,
        relative_to=relative_to,
        summary_columns=tuple(summary_columns),
        corruptions=corruptions,
        table=table.reset_index(drop=True),
        curves=curves,
        note=note,
        without_cells=without_cells,
    )
