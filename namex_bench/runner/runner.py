"""The resumable runner: execute a suite's runs, write one record per finished run.

A run whose record exists with status "ok" is skipped, so rerunning a suite resumes
it; a failed run is recorded with its error and run again next time. When a run's
configuration changes (an option, a default of the code), its new record supersedes the
old one, which is moved to ``runs/superseded/``. Records are
written atomically, so stopping the runner at any moment (Ctrl-C, SIGKILL) loses no
finished run and leaves no partial record. Under ``torchrun`` every rank executes
every run together (data parallel) and only rank 0 writes.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..device import autocast_dtype, resolve_device
from ..suite.expand import RunSpec, expand, shard
from ..suite.schema import Suite
from ..tasks import RunContext, task_runner
from ..tasks import distributed
from .environment import describe_environment
from .records import SCHEMA_VERSION, finished_keys, read_records, record_path, results_folder, supersede, write_json_atomic


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
        "reference": run.reference,
        "environment": describe_environment(ctx.device, distributed.world_size()),
    }
    start = time.perf_counter()
    try:
        result = task_runner(run.task.type)(run.task, run.model, run.method, run.seed, ctx)
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


def run_suite(
    suite: Suite,
    results_root: Path,
    *,
    shard_spec: tuple[int, int] | None = None,
    limit: int | None = None,
    device: str | None = None,
    fail_fast: bool = False,
) -> RunSummary:
    """Run every unfinished run of ``suite`` (or of one shard of it)."""
    torch_device = resolve_device(device or suite.device)
    distributed.init(torch_device)
    torch_device = distributed.local_device(torch_device)
    ctx = RunContext(torch_device, autocast_dtype(torch_device, suite.precision), limit)

    runs = expand(suite, limit)
    if shard_spec is not None:
        runs = shard(runs, *shard_spec)
    folder = results_folder(suite.name, limit)
    existing = read_records(results_root, folder)
    done = finished_keys(existing)
    keys_by_name: dict[str, set[str]] = {}
    for r in existing:
        keys_by_name.setdefault(r["name"], set()).add(r["key"])
    todo = [r for r in runs if r.key not in done]
    summary = RunSummary(total=len(runs), skipped=len(runs) - len(todo))
    bar = tqdm(todo, desc=suite.name, unit="run", disable=None if distributed.is_main() else True)
    for run in bar:
        bar.set_postfix_str(run.name)
        record = execute(run, suite, ctx)
        if distributed.is_main():
            write_json_atomic(record_path(results_root, folder, run.key), record)
            if record["status"] == "ok":
                for path in supersede(results_root, folder, keys_by_name.get(run.name, set()) - {run.key}):
                    tqdm.write(f"run {run.name}: its record of an older configuration moved to {path}")
        distributed.barrier()
        if record["status"] == "ok":
            summary.finished.append(run.name)
        else:
            summary.failed.append(run.name)
            tqdm.write(f"run {run.name} failed: {record['error']['type']}: {record['error']['message']}")
            if fail_fast:
                break
    bar.close()
    return summary
