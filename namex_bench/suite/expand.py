"""Expanding a suite into runs: methods × models × tasks × seeds, each content-addressed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..device import autocast_dtype, precision_config, resolve_device
from ..methods import options as method_options
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
    """The method's options with every default filled in (from the ``__init__`` signatures up its
    MRO), then its preset's, then the entry's own."""
    cls = get_method(method.name)
    return method_options.resolved_options(cls, cls.given_options(method.preset, method.options))


#: Task fields (at any depth) added after records existed whose unset value (``None``) means what the
#: run did before them: left out of the key when unset, so that adding them kept every earlier run's key.
UNSET_ADDITIONS = ("augment", "early_stopping")


def _without_unset(value: Any) -> Any:
    """``value`` without the unset fields of :data:`UNSET_ADDITIONS`, at any depth (a compression
    task's ``pretrain`` is an LM training of its own)."""
    if isinstance(value, dict):
        return {k: _without_unset(v) for k, v in value.items() if not (k in UNSET_ADDITIONS and v is None)}
    return value


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a run's key hashes: its configuration without presentation (the task's ``note`` and
    ``ranked``, the method's ``preset`` name — its options are in the resolved ``options``; an unset
    field of :data:`UNSET_ADDITIONS`)."""
    task = _without_unset({k: v for k, v in config["task"].items() if k not in ("note", "ranked")})
    method = {k: v for k, v in config["method"].items() if k != "preset"}
    return {**config, "method": method, "task": task}


def compression_runs(task: CompressionTask, model: ModelEntry, params: dict[str, Any], seeds: list[int], limit: int | None,
                     precision: dict[str, Any]) -> list[RunSpec]:
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
                      "task": task_config, "seed": seed, "limit": limit, "precision": precision}
            name = f"{run.display}/{model.name}/{task.name}/seed{seed}"
            runs.append(RunSpec(name, run_key(identity(config)), config, run, model, task, seed, reference))
    return runs


def machine_precision(suite: Suite) -> dict[str, Any]:
    """The precision config (``device.precision_config``) the suite's runs resolve on this machine."""
    device = resolve_device(suite.device)
    return precision_config(device, autocast_dtype(device, suite.precision))


def expand(suite: Suite, limit: int | None = None, precision: dict[str, Any] | None = None) -> list[RunSpec]:
    """Every run of the suite, in the order tasks × (the task's) models × methods × seeds
    (a compression task: × its compressors and budgets instead of the merging methods).

    ``precision`` — the resolved precision config of the runs (:func:`machine_precision` when
    ``None``) — is part of every run's configuration and key: a run computed in bf16 is
    never taken for its float32 run, nor the other way round.
    """
    precision = machine_precision(suite) if precision is None else precision
    runs = []
    for task in suite.tasks:
        for model in suite.task_models(task):
            params = get_builder(model.builder).validate(model.params).model_dump(mode="json")
            if isinstance(task, CompressionTask):
                runs += compression_runs(task, model, params, suite.seeds, limit, precision)
                continue
            for method in suite.methods:
                for seed in suite.seeds:
                    config = {
                        "method": {
                            "label": method.display, "name": method.name, "preset": method.preset, "options": resolved_options(method),
                        },
                        "model": {"name": model.name, "builder": model.builder, "params": params},
                        "task": task.model_dump(mode="json", exclude={"models", "parallel"}),  # where and how it runs, not what
                        "seed": seed,
                        "limit": limit,
                        "precision": precision,
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


@dataclass(frozen=True)
class Selection:
    """A subset of a suite's runs: only these methods (by label), models, tasks and seeds
    (``None``: all). Keys are unchanged, so a subset's records join the suite's others."""

    methods: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None

    def check(self, suite: Suite) -> Selection:
        """``self``, or a ValueError naming the option and the suite's known values when a
        name (or seed) is not in the suite."""
        known = {
            "methods": [m.display for m in suite.methods],
            "models": [m.name for m in suite.models],
            "tasks": [t.name for t in suite.tasks],
            "seeds": list(suite.seeds),
        }
        for option, names in known.items():
            unknown = [n for n in getattr(self, option) or () if n not in names]
            if unknown:
                raise ValueError(
                    f"--{option}: {', '.join(map(str, unknown))} not in suite {suite.name!r}; known: {', '.join(map(str, names))}"
                )
        return self

    def apply(self, runs: list[RunSpec]) -> list[RunSpec]:
        """The runs that match every given option, in their order."""
        return [
            r for r in runs
            if (self.methods is None or r.method.display in self.methods)
            and (self.models is None or r.model.name in self.models)
            and (self.tasks is None or r.task.name in self.tasks)
            and (self.seeds is None or r.seed in self.seeds)
        ]
