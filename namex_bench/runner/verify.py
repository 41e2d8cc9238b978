"""Do a suite's records reproduce on this checkout? Rerun some and compare their metrics.

``namex-bench verify SUITE`` takes, per task family (task type), the ``per_family``
cheapest finished records among the suite's current runs (by recorded wall time), reruns
each with the settings its record holds — thread count, deterministic algorithms — and
compares every metric with a tolerance of ``tolerance`` (0: bit for bit, the noise floor of
one stack with one thread count; see the README's "Reproducibility").

A rerun is compared only on the stack that made the record: the same torch version, the
same device (for a CPU, the same processor and kernels: ``cpu``, ``cpu_capability``), and a
record that holds its thread settings. A record from another stack is reported as such, not rerun, and counts as
a failure unless ``skip_other_stacks``: numbers from another torch or other kernels differ by
about a seed's spread after a few epochs of training, which says nothing about the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..device import autocast_dtype
from ..suite.expand import RunSpec, expand
from ..suite.schema import Runtime, Suite
from ..tasks import RunContext
from .environment import describe_environment
from .records import read_records, results_folder
from .runner import execute
from .runtime import applied

REPRODUCED, DIFFERS, OTHER_STACK, FAILED = "reproduced", "differs", "other stack", "failed"


@dataclass
class Check:
    """One rerun record: ``status`` is one of ``reproduced``, ``differs``, ``other stack``,
    ``failed`` (the rerun raised); ``detail`` says why, in a line."""

    name: str
    key: str
    status: str
    detail: str


def stack(env: dict[str, Any]) -> dict[str, Any]:
    """What must match for a rerun to give the same bits: torch, the device, for a CPU the
    processor and the kernels torch dispatches to."""
    device = env.get("device") or ""
    on_cpu = device.startswith("cpu")
    return {
        "torch": (env.get("packages") or {}).get("torch"),
        "device": "cpu" if on_cpu else device,
        "cpu": env.get("cpu") if on_cpu else None,  # BLAS (MKL, oneDNN) picks its kernels by processor
        "cpu_capability": env.get("cpu_capability") if on_cpu else None,
    }


def recorded_runtime(env: dict[str, Any]) -> Runtime | None:
    """The thread count and determinism a record was made with (``None`` for records made
    before records held them)."""
    threads = (env.get("threads") or {}).get("torch")
    deterministic = (env.get("deterministic") or {}).get("algorithms")
    if threads is None or deterministic is None:
        return None
    return Runtime(threads=threads, deterministic=deterministic)


def cheapest_per_family(runs: list[RunSpec], records: list[dict[str, Any]], per_family: int) -> list[tuple[RunSpec, dict]]:
    """Per task type, the ``per_family`` runs whose finished records took the least wall time
    (ties broken by key), in the suite's order of task types."""
    by_key = {r["key"]: r for r in records if r.get("status") == "ok"}
    families: dict[str, list[tuple[RunSpec, dict]]] = {}
    for run in runs:
        families.setdefault(run.task.type, [])
        if run.key in by_key:
            families[run.task.type].append((run, by_key[run.key]))
    chosen = []
    for candidates in families.values():
        candidates.sort(key=lambda pair: (pair[1].get("timings", {}).get("total_s", float("inf")), pair[0].key))
        chosen += candidates[:per_family]
    return chosen


def compare_metrics(recorded: dict[str, float], rerun: dict[str, float], tolerance: float) -> list[str]:
    """The differences beyond ``tolerance`` (absolute), one phrase each; empty when they agree."""
    differences = []
    for name in sorted(set(recorded) | set(rerun)):
        if name not in rerun or name not in recorded:
            differences.append(f"{name} {'missing in the rerun' if name not in rerun else 'not in the record'}")
        elif abs(rerun[name] - recorded[name]) > tolerance:
            differences.append(f"{name} {recorded[name]!r} → {rerun[name]!r} (Δ {rerun[name] - recorded[name]:+.3g})")
    return differences


def _describe(env: dict[str, Any], runtime: Runtime) -> str:
    s = stack(env)
    kernels = f" ({s['cpu']}, {s['cpu_capability']})" if s["cpu_capability"] else ""
    return f"torch {s['torch']}, {s['device']}{kernels}, {runtime.threads} threads, deterministic {'on' if runtime.deterministic else 'off'}"


def verify_one(run: RunSpec, record: dict[str, Any], suite: Suite, tolerance: float) -> Check:
    env = record.get("environment") or {}
    runtime = recorded_runtime(env)
    device = torch.device("cuda" if stack(env)["device"] != "cpu" and torch.cuda.is_available() else "cpu")
    recorded, here = stack(env), stack(describe_environment(device))
    reasons = [f"{k} {recorded[k] or 'unrecorded'} (here {here[k]})" for k in recorded if recorded[k] != here[k]]
    if runtime is None:
        reasons.append("no thread settings (made before records held them)")
    if reasons:
        return Check(run.name, run.key, OTHER_STACK, f"recorded with {', '.join(reasons)}: not comparable bit for bit")
    ctx = RunContext(device, autocast_dtype(device, suite.precision), run.config["limit"])
    with applied(runtime):
        rerun = execute(run, suite, ctx)
    if rerun["status"] != "ok":
        return Check(run.name, run.key, FAILED, f"the rerun failed: {rerun['error']['type']}: {rerun['error']['message']}")
    differences = compare_metrics(record["metrics"], rerun["metrics"], tolerance)
    how = _describe(env, runtime)
    if differences:
        return Check(run.name, run.key, DIFFERS, f"{'; '.join(differences)} ({how})")
    return Check(run.name, run.key, REPRODUCED, f"{len(record['metrics'])} metrics {'equal' if tolerance == 0 else f'within {tolerance:g}'} ({how})")


def verify(suite: Suite, results_root: Path, *, per_family: int = 1, limit: int | None = None, tolerance: float = 0.0) -> list[Check]:
    """Rerun the cheapest ``per_family`` records of each task family of ``suite`` found under
    ``results_root`` and compare them (see the module's docstring). A family without a
    finished record gets a ``failed`` check."""
    runs = expand(suite, limit)
    records = read_records(results_root, results_folder(suite.name, limit))
    chosen = cheapest_per_family(runs, records, per_family)
    checks = []
    for family in dict.fromkeys(run.task.type for run in runs):
        if not any(run.task.type == family for run, _ in chosen):
            checks.append(Check(family, "", FAILED, f"no finished record of a {family} run of suite {suite.name} under {results_root}"))
    for run, record in chosen:
        checks.append(verify_one(run, record, suite, tolerance))
    return checks
