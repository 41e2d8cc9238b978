"""The resumable runner: execute a suite's runs, write one record per finished run.

A run whose record exists with status "ok" is skipped, so rerunning a suite resumes
it; a failed run is recorded with its error and run again next time. Each run executes
with the suite's ``runtime`` (threads, deterministic algorithms; :mod:`.runtime`). When a run's
configuration changes (an option, a default of the code), its new record supersedes the
old one, which is moved to ``runs/superseded/``. Records are
written atomically, so stopping the runner at any moment (Ctrl-C, SIGKILL) loses no
finished run and leaves no partial record. Under ``torchrun`` every rank executes
every run together (data parallel) and only rank 0 writes.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..device import autocast_dtype, resolve_device
from ..progress import progress
from ..suite.expand import RunSpec, Selection, expand, shard
from ..suite.schema import Suite
from ..tasks import RunContext, task_runner
from ..tasks import distributed
from .environment import describe_environment
from .placement import placement
from .records import SCHEMA_VERSION, finished_keys, read_records, record_path, results_folder, supersede, write_json_atomic
from .runtime import applied


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def execute(run: RunSpec, suite: Suite, ctx: RunContext) -> dict:
    """Execute one run and return its record (status "failed" with the error if it raised)."""
    record = {
        "schema": SCHEMA_VERSION,
        "key": run.key,
        "suite": suite.name,
        "name": run.name,
        "config": run.config,
        "reference": suite.reference,
        "environment": describe_environment(ctx.device, distributed.world_size()),
        "placement": placement(),
    }
    start = time.perf_counter()
    try:
        run_ctx = replace(ctx, parallel=run.task.parallel or run.model.parallel)
        result = task_runner(run.task.type)(run.task, run.model, run.method, run.seed, run_ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the suite goes on
        record.update(status="failed", error={"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()})
        record["timings"] = {"total_s": time.perf_counter() - start}
        return record
    record.update(
        status="ok",
        error=None,
        metrics=result.metrics,
        goals={k: v for k, v in result.goals.items() if k in result.metrics},
        primary=result.primary,
        cells=result.cells,
        params=result.params,
        timings={**result.timings, "total_s": time.perf_counter() - start},
    )
    return record


def run_context(suite: Suite, device: str | None = None, limit: int | None = None) -> RunContext:
    """Where and how this process executes the suite's runs: the device (``device`` overrides
    the suite's), joined to the process group under ``torchrun``, and the autocast dtype."""
    torch_device = resolve_device(device or suite.device)
    distributed.init(torch_device)
    torch_device = distributed.local_device(torch_device)
    return RunContext(torch_device, autocast_dtype(torch_device, suite.precision), limit)


@dataclass
class SuitePlan:
    """The runs of a suite (or of one shard or subset of it) and which of them are pending.

    ``older``: per run name, the keys of every record on disk (records of an older
    configuration of a run are superseded when it gets a new one)."""

    folder: str
    runs: list[RunSpec]
    pending: list[RunSpec]
    older: dict[str, set[str]]


def plan_suite(
    suite: Suite,
    results_root: Path,
    *,
    limit: int | None = None,
    shard_spec: tuple[int, int] | None = None,
    selection: Selection | None = None,
) -> SuitePlan:
    """Which runs of ``suite`` are to be run: every run (of the shard, of the subset) without
    a record of status "ok" under ``results_root``."""
    runs = expand(suite, limit)
    if selection is not None:
        runs = selection.apply(runs)
    if shard_spec is not None:
        runs = shard(runs, *shard_spec)
    folder = results_folder(suite.name, limit)
    existing = read_records(results_root, folder)
    done = finished_keys(existing)
    older: dict[str, set[str]] = {}
    for r in existing:
        older.setdefault(r["name"], set()).add(r["key"])
    return SuitePlan(folder, runs, [r for r in runs if r.key not in done], older)


def execute_and_record(run: RunSpec, suite: Suite, ctx: RunContext, results_root: Path, plan: SuitePlan) -> dict:
    """Execute one run and write its record (rank 0 only under ``torchrun``); a successful
    run's records of older configurations are superseded. Every executor runs a run through
    here, so a run executed anywhere writes the same record. Returns the record."""
    with applied(suite.runtime):
        record = execute(run, suite, ctx)
    if distributed.is_main():
        write_json_atomic(record_path(results_root, plan.folder, run.key), record)
        if record["status"] == "ok":
            for path in supersede(results_root, plan.folder, plan.older.get(run.name, set()) - {run.key}):
                tqdm.write(f"run {run.name}: its record of an older configuration moved to {path}")
    distributed.barrier()
    return record


def run_suite(
    suite: Suite,
    results_root: Path,
    *,
    shard_spec: tuple[int, int] | None = None,
    selection: Selection | None = None,
    limit: int | None = None,
    device: str | None = None,
    fail_fast: bool = False,
) -> RunSummary:
    """Run every unfinished run of ``suite`` (or of one shard or subset of it), one after another."""
    ctx = run_context(suite, device, limit)
    plan = plan_suite(suite, results_root, limit=limit, shard_spec=shard_spec, selection=selection)
    summary = RunSummary(total=len(plan.runs), skipped=len(plan.runs) - len(plan.pending))
    bar = progress(plan.pending, desc=suite.name, unit="run", leave=True, enabled=distributed.is_main())
    for run in bar:
        bar.set_postfix_str(run.name)
        record = execute_and_record(run, suite, ctx, results_root, plan)
        if record["status"] == "ok":
            summary.finished.append(run.name)
        else:
            summary.failed.append(run.name)
            tqdm.write(f"run {run.name} failed: {record['error']['type']}: {record['error']['message']}")
            if fail_fast:
                break
    bar.close()
    return summary
