"""Leaderboards and paired comparisons: pure functions from run records to tables.

Records are grouped by task (``config.task.name``) and model (``config.model.name``);
only records with ``"status": "ok"`` count. The records of a group must share one
precision (``config.precision``: bf16 and float32 results are never ranked together);
each leaderboard says which it is. Within a group:

* :func:`leaderboard` — one row per method (``config.method.label``): every metric of
  ``metrics`` aggregated over seeds (mean ± 95% CI, and the raw mean, std and CI), the
  number of seeds ``n``, and a rank by the mean of the task's primary metric (the
  records' ``"primary"``) in the direction of its goal (``goals[primary]``, "max" or
  "min"). Equal means are ordered by method label; rank 1 is marked ``best``.
* :func:`paired_table` — every method against the reference method (the records'
  ``"reference"``, or an override) over matched seeds: the mean difference of the
  primary metric with its 95% CI, the paired t-test's p-value, wins/ties/losses.
* :func:`sections` — both, plus the names of the failed runs, for every group.

Nothing here reads files or the clock: the same records give the same tables.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .statistics import GOALS, format_mean_ci, format_p, paired_comparison, summarise

__all__ = [
    "Leaderboard",
    "PairedTable",
    "Section",
    "failed_runs",
    "leaderboard",
    "method_label",
    "ok_records",
    "paired_table",
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


# --------------------------------------------------------------------------- leaderboard


@dataclass(frozen=True, eq=False)
class Leaderboard:
    """The leaderboard of one task on one model.

    ``table`` has one row per method, best first, with the columns ``rank`` (None when
    the method has no value of the primary metric), ``method``, ``best``, ``n`` (seeds)
    and, for every metric ``m`` of ``metrics``: ``m`` (``"mean ± ci"``), ``m_mean``,
    ``m_std`` and ``m_ci95`` (floats, NaN where undefined).
    """

    task: str
    model: str
    primary: str
    goals: dict[str, str]
    metrics: tuple[str, ...]
    table: pd.DataFrame
    precision: str = "not recorded"  # the runs' compute precision, in words (device.describe_precision)

    @property
    def goal(self) -> str:
        return self.goals[self.primary]

    @property
    def display_columns(self) -> list[str]:
        """The columns a reader sees: rank, method, the formatted metrics, n."""
        return ["rank", "method", *self.metrics, "n"]

    @property
    def methods(self) -> list[str]:
        """Method labels in rank order."""
        return list(self.table["method"])


def leaderboard(records: Iterable[Record], task: str, model: str) -> Leaderboard:
    """Aggregate the successful runs of ``task`` on ``model`` per method and rank the methods."""
    what = f"task {task!r} on model {model!r}"
    group = _group(records, task, model)
    if not group:
        raise ValueError(f"no successful runs of {what}")
    primary = _unique_field(group, "primary", what)
    if primary is None:
        raise ValueError(f"the records of {what} name no primary metric (the 'primary' field)")
    goals = _goals(group, what)
    precision = _precision(group, what)
    if primary not in goals:
        raise ValueError(f"the records of {what} give no goal ('max' or 'min') for the primary metric {primary!r}")
    metrics = (primary, *sorted(_metric_names(group) - {primary}))
    rows = []
    for label, seeds in _by_method(group, what).items():
        row: dict[str, Any] = {"method": label, "n": len(seeds)}
        for metric in metrics:
            values = [v for v in (_metric_value(r, metric) for r in seeds.values()) if v is not None]
            s = summarise(values)
            row[metric] = format_mean_ci(s.mean, s.ci95)
            row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_ci95"] = s.mean, s.std, s.ci95
        rows.append(row)

    sign = -1.0 if goals[primary] == "max" else 1.0
    rows.sort(
        key=lambda row: (0, sign * row[f"{primary}_mean"], row["method"])
        if row[f"{primary}_mean"] is not None
        else (1, 0.0, row["method"])
    )
    for position, row in enumerate(rows, start=1):
        row["rank"] = position if row[f"{primary}_mean"] is not None else None
        row["best"] = row["rank"] == 1

    columns = ["rank", "method", "best", "n"]
    for metric in metrics:
        columns += [metric, f"{metric}_mean", f"{metric}_std", f"{metric}_ci95"]
    table = pd.DataFrame(rows, columns=columns)
    table["rank"] = table["rank"].astype("Int64")
    table["best"] = table["best"].astype(bool)
    table["n"] = table["n"].astype("int64")
    for metric in metrics:
        for stat in ("mean", "std", "ci95"):
            table[f"{metric}_{stat}"] = pd.to_numeric(table[f"{metric}_{stat}"], errors="raise").astype("float64")
    return Leaderboard(task, model, primary, goals, metrics, table.reset_index(drop=True), precision)


# --------------------------------------------------------------------------- paired comparison


@dataclass(frozen=True, eq=False)
class PairedTable:
    """Every method of one task/model against the reference, on the primary metric.

    ``table`` is ``None`` when there is nothing to compare against; ``note`` then says why.
    Otherwise it has one row per other method (in leaderboard order) with the columns
    ``method``, ``Δ <primary>`` (``"mean ± ci"`` of method − reference), ``p``, ``W/T/L``
    (wins/ties/losses), ``n pairs``, and the raw ``delta_mean``, ``delta_ci95``,
    ``p_value``, ``wins``, ``ties``, ``losses``.
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
    def display_columns(self) -> list[str]:
        return ["method", self.delta_column, "p", "W/T/L", "n pairs"]


def paired_table(records: Iterable[Record], task: str, model: str, reference: str | None = None) -> PairedTable:
    """Compare every method with the reference over matched seeds on the primary metric.

    ``reference`` overrides the records' ``"reference"``. Without a reference, or when
    the reference has no successful run of this task/model, the table is ``None`` and
    ``note`` says so.
    """
    records = list(records)
    what = f"task {task!r} on model {model!r}"
    board = leaderboard(records, task, model)
    group = _group(records, task, model)
    if reference is None:
        reference = _unique_field([r for r in records if task_model(r) == (task, model)], "reference", what)
    common = dict(task=task, model=model, reference=reference, primary=board.primary, goal=board.goal)
    if reference is None:
        return PairedTable(**common, table=None, note="No paired comparison: the suite names no reference method.")
    by_method = _by_method(group, what)
    if reference not in by_method:
        return PairedTable(
            **common,
            table=None,
            note=f"No paired comparison: the reference method `{reference}` has no successful run of {task} on {model}.",
        )

    def values(label: str) -> dict[Hashable, float]:
        found = ((seed, _metric_value(r, board.primary)) for seed, r in by_method[label].items())
        return {seed: v for seed, v in found if v is not None}

    if len(by_method) == 1:
        return PairedTable(**common, table=None, note=f"No paired comparison: only the reference method `{reference}` ran.")
    reference_values = values(reference)
    rows = []
    for label in board.methods:
        if label == reference:
            continue
        p = paired_comparison(values(label), reference_values, goal=board.goal)
        rows.append(
            {
                "method": label,
                f"Δ {board.primary}": format_mean_ci(p.mean_diff, p.ci95, signed=True),
                "p": format_p(p.p_value),
                "W/T/L": f"{p.wins}/{p.ties}/{p.losses}",
                "n pairs": p.n,
                "delta_mean": p.mean_diff,
                "delta_ci95": p.ci95,
                "p_value": p.p_value,
                "wins": p.wins,
                "ties": p.ties,
                "losses": p.losses,
            }
        )
    raw = ["delta_mean", "delta_ci95", "p_value", "wins", "ties", "losses"]
    columns = ["method", f"Δ {board.primary}", "p", "W/T/L", "n pairs", *raw]
    table = pd.DataFrame(rows, columns=columns)
    for name in ("delta_mean", "delta_ci95", "p_value"):
        table[name] = pd.to_numeric(table[name], errors="raise").astype("float64")
    for name in ("n pairs", "wins", "ties", "losses"):
        table[name] = table[name].astype("int64")
    return PairedTable(**common, table=table)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, eq=False)
class Section:
    """Everything the report says about one task on one model.

    ``leaderboard`` and ``paired`` are ``None`` when no run of the group succeeded.
    """

    task: str
    model: str
    leaderboard: Leaderboard | None
    paired: PairedTable | None
    failed: tuple[str, ...] = field(default_factory=tuple)
    note: str | None = None  # the task's note (its suite's `note:`), from the records


def sections(records: Iterable[Record], reference: str | None = None) -> list[Section]:
    """One :class:`Section` per task/model that has any record, sorted by task then model."""
    records = list(records)
    keys = sorted({task_model(r) for r in records})
    ok_keys = {task_model(r) for r in ok_records(records)}
    out = []
    for task, model in keys:
        failed = failed_runs(records, task, model)
        notes = sorted({n for r in records if task_model(r) == (task, model) and (n := (r.get("config") or {}).get("task", {}).get("note"))})
        note = " ".join(notes) or None
        if (task, model) in ok_keys:
            out.append(
                Section(task, model, leaderboard(records, task, model), paired_table(records, task, model, reference), failed, note)
            )
        else:
            out.append(Section(task, model, None, None, failed, note))
    return out
