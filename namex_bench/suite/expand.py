"""Expanding a suite into runs: methods × models × tasks × seeds, each content-addressed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..methods import options as method_options
from ..methods.registry import get_method
from ..models.registry import get_builder
from ..runner.records import run_key
from .schema import MethodEntry, ModelEntry, Suite


@dataclass(frozen=True)
class RunSpec:
    """One run: what to execute, its resolved configuration and its key."""

    name: str
    key: str
    config: dict[str, Any]
    method: MethodEntry
    model: ModelEntry
    task: Any
    seed: int


def resolved_options(method: MethodEntry) -> dict[str, Any]:
    """The method's options with every default filled in (from the ``__init__`` signatures up its MRO)."""
    return method_options.resolved_options(get_method(method.name), dict(method.options))


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a run's key hashes: its configuration without presentation (the task's ``note``)."""
    task = {k: v for k, v in config["task"].items() if k != "note"}
    return {**config, "task": task}


def expand(suite: Suite, limit: int | None = None) -> list[RunSpec]:
    """Every run of the suite, in the order tasks × (the task's) models × methods × seeds."""
    runs = []
    for task in suite.tasks:
        for model in suite.task_models(task):
            params = get_builder(model.builder).validate(model.params).model_dump(mode="json")
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
                    runs.append(RunSpec(name, run_key(identity(config)), config, method, model, task, seed))
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
