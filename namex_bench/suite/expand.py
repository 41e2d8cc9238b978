"""Expanding a suite into runs: methods × models × tasks × seeds, each content-addressed."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ..methods.registry import get_method
from ..models.registry import get_builder
from ..runner.records import run_key
from .schema import CompressionRun, CompressionTask, MethodEntry, ModelEntry, Suite


@dataclass(frozen=True)
class RunSpec:
    """One run: what to execute, its resolved configuration and its key."""

    name: str
    key: str
    config: dict[str, Any]
    method: MethodEntry | CompressionRun  # a compression task's run: its compressor and budget
    model: ModelEntry
    task: Any
    seed: int
    reference: str | None = None  # the label paired comparisons of this run's table are against


def resolved_options(method: MethodEntry) -> dict[str, Any]:
    """The method's options with every default filled in (from the ``__init__`` signatures up its MRO)."""
    options: dict[str, Any] = {}
    for cls in reversed(get_method(method.name).__mro__):
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if name not in ("self", "spec", "num_experts") and param.default is not inspect.Parameter.empty:
                options[name] = param.default
    options.update(method.options)
    return options


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a run's key hashes: its configuration without presentation (the task's ``note``)."""
    task = {k: v for k, v in config["task"].items() if k != "note"}
    return {**config, "task": task}


def compression_runs(task: CompressionTask, model: ModelEntry, params: dict[str, Any], seeds: list[int], limit: int | None) -> list[RunSpec]:
    """A compression task's runs on one model: (uncompressed, then compressor × budget) × seeds.
    The method slot of a run's config is its compressor (``uncompressed``: none), ``budget`` its budget."""
    from ..compression.registry import compressor_options

    reference = "uncompressed" if task.uncompressed else None
    task_config = task.model_dump(mode="json", exclude={"models", *CompressionTask.RUN_FIELDS})
    runs = []
    for run in task.runs():
        entry = run.compressor
        method = {"label": run.display, "name": entry.name if entry else "uncompressed", "options": compressor_options(entry.name, entry.options) if entry else {}}
        for seed in seeds:
            config = {"method": method, "budget": run.budget, "model": {"name": model.name, "builder": model.builder, "params": params},
                      "task": task_config, "seed": seed, "limit": limit}
            name = f"{run.display}/{model.name}/{task.name}/seed{seed}"
            runs.append(RunSpec(name, run_key(identity(config)), config, run, model, task, seed, reference))
    return runs


def expand(suite: Suite, limit: int | None = None) -> list[RunSpec]:
    """Every run of the suite, in the order tasks × (the task's) models × methods × seeds
    (a compression task: × its compressors and budgets instead of the merging methods)."""
    runs = []
    for task in suite.tasks:
        for model in suite.task_models(task):
            params = get_builder(model.builder).validate(model.params).model_dump(mode="json")
            if isinstance(task, CompressionTask):
                runs += compression_runs(task, model, params, suite.seeds, limit)
                continue
            for method in suite.methods:
                for seed in suite.seeds:
                    config = {
                        "method": {"label": method.display, "name": method.name, "options": resolved_options(method)},
                        "model": {"name": model.name, "builder": model.builder, "params": params},
                        "task": task.model_dump(mode="json", exclude={"models"}),  # where it runs, not what
                        "seed": seed,
                        "limit": limit,
                    }
                    name = f"{method.display}/{model.name}/{task.name}/seed{seed}"
                    runs.append(RunSpec(name, run_key(identity(config)), config, method, model, task, seed, suite.reference))
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``1 ≤ i ≤ n``."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return i, n


def shard(runs: list[RunSpec], i: int, n: int) -> list[RunSpec]:
    """The runs of shard ``i`` of ``n``: chosen by key, so shards never overlap, together
    cover every run, and a run stays in its shard when the suite gains other runs."""
    return [r for r in runs if int(r.key, 16) % n == i - 1]
