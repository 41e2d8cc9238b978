"""The resumable runner: execute a suite's runs, write one record per finished run.

A run whose record exists with status "ok" is skipped, so rerunning a suite resumes
it; a failed run is recorded with its error and run again next time. Each run executes
with the suite's ``runtime`` (threads, deterministic algorithms; :mod:`.runtime`). When a run's
configuration changes (an option, a default of the code), its new record supersedes the
old one, which is moved to ``runs/superseded/`` (a kill between the two steps is healed
on the next start). When the code of a run's method has changed
since its record was written (the record's ``code.method.digest``, ``methods/fingerprint.py``),
the run is done again and its old record moved to ``runs/superseded/<key>.code-<digest>.json``:
stale numbers are never reused silently. Records are written atomically, so stopping the runner at any
moment (Ctrl-C, SIGTERM, SIGKILL) loses no finished run and leaves no partial record.

Before any run starts the results folder is checked to be writable, the temporary
files of writes that were killed are removed, and ``current_runs.json`` lists the
suite's runs as they are now (the report counts only those). Each run is executed
under a lock (``.locks/<key>.lock``), so two processes running the same shard never
both execute one run: the second skips it. Under ``torchrun`` every rank executes
every run together (data parallel) and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..device import autocast_dtype, precision_config, resolve_device
from ..files import check_writable, exclusive_lock, remove_orphaned_temp_files, write_bytes_atomic
from ..methods.fingerprint import method_fingerprint
from ..methods.registry import get_method
from ..progress import progress
from ..suite.expand import RunSpec, Selection, expand, shard
from ..suite.schema import MethodEntry, Suite
from ..tasks import RunContext, distributed, task_runner
from .environment import describe_environment
from .examples import examples_path, write_examples
from .placement import placement
from .record_schema import is_number
from .records import (
    SCHEMA_VERSION,
    DamagedRecord,
    ResultsWriteError,
    finished_keys,
    inside,
    json_bytes,
    load_record,
    read_records,
    record_path,
    results_folder,
    runs_dir,
    supersede,
    write_current_runs,
)
from .runtime import applied


class InvalidMetricError(ValueError):
    """A task returned a metric that is not a finite number; its run is recorded as failed."""


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)  # being executed by another process: left to it
    damaged: list[DamagedRecord] = field(default_factory=list)  # skipped with --skip-damaged


def check_metrics(metrics: dict[str, Any]) -> None:
    """:class:`InvalidMetricError` unless every metric is a finite number."""
    for name, value in metrics.items():
        if not is_number(value):
            what = f"not finite ({value})" if isinstance(value, float) else f"not a number ({value!r})"
            raise InvalidMetricError(f"metric {name!r} is {what}")


def _failed(record: dict, error: dict[str, str], total_s: float) -> dict:
    """``record`` as the record of a failed run: its error, no results."""
    kept = {k: v for k, v in record.items() if k not in ("metrics", "goals", "primary", "cells", "params", "timings", "diagnostics", "bounds", "examples")}
    return {**kept, "status": "failed", "error": error, "timings": {"total_s": total_s}}


def execute(run: RunSpec, suite: Suite, ctx: RunContext, sidecar: Path | None = None) -> dict:
    """Execute one run and return its record (status "failed" with the error if it raised,
    or if a metric it returned is not a finite number).

    Under torchrun every rank returns the same status: a run that raised on any rank failed
    on all, with that rank's error (``distributed.agreed_error``). With ``sidecar``, the
    run's per-example outcomes are written there (atomically, before the record) and the
    record names the file and its sha256."""
    record = {
        "schema": SCHEMA_VERSION,
        "key": run.key,
        "suite": suite.name,
        "name": run.name,
        "config": run.config,
        "reference": run.reference,
        "environment": describe_environment(ctx.device, distributed.world_size()),
        "placement": placement(),
        "code": code_fingerprint(run),
    }
    start = time.perf_counter()
    result, raised = None, None
    try:
        run_ctx = replace(ctx, parallel=run.task.parallel or run.model.parallel)
        result = task_runner(run.task.type)(run.task, run.model, run.method, run.seed, run_ctx)
        check_metrics(result.metrics)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded, and the suite goes on
        raised = exc
    error = distributed.agreed_error(raised)
    if error is not None:
        return _failed(record, error, time.perf_counter() - start)
    record.update(
        status="ok",
        error=None,
        metrics=result.metrics,
        goals={k: v for k, v in result.goals.items() if k in result.metrics},
        primary=result.primary,
        cells=result.cells,
        params=result.params,
        diagnostics=result.diagnostics,
        timings={**result.timings, "total_s": time.perf_counter() - start},
        bounds={k: list(v) for k, v in result.bounds.items() if k in result.metrics},
    )
    if sidecar is not None and result.examples is not None and result.examples.sets:
        record["examples"] = write_examples(sidecar, result.examples.sets, result.examples.metrics)
    return record


def _unencodable(value: Any, where: str = "") -> str | None:
    """Where ``value`` holds something strict JSON cannot (NaN, an infinity, an object), or ``None``."""
    if isinstance(value, dict):
        return next((w for k, v in value.items() if (w := _unencodable(v, f"{where}.{k}" if where else str(k)))), None)
    if isinstance(value, (list, tuple)):
        return next((w for i, v in enumerate(value) if (w := _unencodable(v, f"{where}[{i}]"))), None)
    if isinstance(value, float) and not is_number(value):
        return f"{where} is {value}"
    if value is not None and not isinstance(value, (str, int, float)):
        return f"{where} is a {type(value).__name__}"
    return None


def encode_record(record: dict) -> tuple[dict, bytes]:
    """``(record, its JSON bytes)``; a record that strict JSON cannot hold (a NaN in its cells, an
    object in its metrics) becomes the record of a failed run saying where, so the suite goes on."""
    try:
        return record, json_bytes(record)
    except (ValueError, TypeError) as exc:
        where = _unencodable(record) or str(exc)
        error = {"type": "RecordError", "message": f"the run's results cannot be written as JSON: {where}", "traceback": ""}
        failed = _failed(record, error, record.get("timings", {}).get("total_s", 0.0))
        return failed, json_bytes(failed)


def _write_failure(what: str, path: Path, exc: OSError) -> ResultsWriteError:
    return ResultsWriteError(
        f"cannot write {what} to {path} ({exc.strerror or exc}); every record written before is intact — "
        "free space or fix the folder's permissions, then rerun to resume"
    )


def prepare_results(results_root: Path, folder: str, suite: Suite, runs: list[RunSpec]) -> None:
    """Before any run starts: check that the results folder is writable, remove the temporary
    files of writes that were killed, and write ``current_runs.json`` (every run of the suite)."""
    runs_folder = runs_dir(results_root, folder)
    try:
        check_writable(runs_folder)
        write_current_runs(results_root, folder, suite.name, {r.key: r.name for r in runs})
    except OSError as exc:
        raise ResultsWriteError(
            f"the results folder {runs_folder} is not writable ({exc.strerror or exc}); nothing has run — "
            "fix its permissions or free space, or pass --results DIR"
        ) from None
    for sub in ((), ("runs",), ("runs", "superseded"), ("tables",), ("plots",)):
        for path in remove_orphaned_temp_files(inside(results_root, folder, *sub)):
            tqdm.write(f"removed {path}: the temporary file of a write that was interrupted")


def heal_superseded(results_root: Path, folder: str, runs: list[RunSpec], done: set[str],
                    keys_by_name: dict[str, set[str]]) -> list[Path]:
    """Supersede the older records of runs that already have a successful current record:
    finishes the step a kill interrupted (new record written, old one not yet moved)."""
    stale = {key for run in runs if run.key in done for key in keys_by_name.get(run.name, set()) - {run.key}}
    return supersede(results_root, folder, stale)


RUN_STATES = ("run", "busy", "done")


@contextlib.contextmanager
def claim(results_root: Path, folder: str, key: str, stale_digest: str | None = None) -> Iterator[str]:
    """Hold the run's lock (``<folder>/.locks/<key>.lock``) for the block. Yields ``"run"``, or
    ``"busy"`` when another process is executing it, or ``"done"`` when its record has
    appeared since the records were read (another process finished it) — for a run redone
    because its method's code changed, a record of other code than ``stale_digest``'s."""
    with exclusive_lock(inside(results_root, folder, ".locks", f"{key}.lock"), wait=False) as held:
        if not held:
            yield "busy"
        elif _is_ok_record(record_path(results_root, folder, key), stale_digest):
            yield "done"
        else:
            yield "run"


def _is_ok_record(path: Path, stale_digest: str | None = None) -> bool:
    record = load_record(path) if path.is_file() else None
    if not (isinstance(record, dict) and record["status"] == "ok"):
        return False
    return stale_digest is None or method_digest(record) != stale_digest


def _agreed(state: str, device: torch.device) -> str:
    """Rank 0's ``state``, on every rank (the ranks of a torchrun execute a run together)."""
    if distributed.world_size() == 1:
        return state
    code = torch.tensor([RUN_STATES.index(state) if distributed.is_main() else 0], device=device)
    return RUN_STATES[int(distributed.all_sum(code).item())]


def store(results_root: Path, folder: str, record: dict, older: set[str]) -> dict:
    """Write ``record`` (see :func:`encode_record`); when it is a success, supersede the
    ``older`` records of its run. Returns the record as written."""
    record, data = encode_record(record)
    path = record_path(results_root, folder, record["key"])
    try:
        write_bytes_atomic(path, data)
    except OSError as exc:
        raise _write_failure(f"the record of run {record['name']}", path, exc) from None
    if record["status"] == "ok":
        try:
            moved = supersede(results_root, folder, older - {record["key"]})
        except OSError as exc:
            raise _write_failure("an older record to runs/superseded", path.parent / "superseded", exc) from None
        for moved_path in moved:
            tqdm.write(f"run {record['name']}: its record of an older configuration moved to {moved_path}")
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
    configuration of a run are superseded when it gets a new one); ``damaged``: the records
    skipped as damaged (``skip_damaged``), whose runs are pending; ``stale``: per run key, the
    code digest of a finished record written by other code of its method (:func:`stale_records`),
    whose run is pending again."""

    folder: str
    runs: list[RunSpec]
    pending: list[RunSpec]
    older: dict[str, set[str]]
    damaged: list[DamagedRecord] = field(default_factory=list)
    stale: dict[str, str] = field(default_factory=dict)


def plan_suite(
    suite: Suite,
    results_root: Path,
    *,
    limit: int | None = None,
    shard_spec: tuple[int, int] | None = None,
    selection: Selection | None = None,
    skip_damaged: bool = False,
    precision: dict | None = None,
) -> SuitePlan:
    """Which runs of ``suite`` are to be run: every run (of the shard, of the subset) without
    a record of status "ok" under ``results_root``. Prepares the results folder first
    (:func:`prepare_results`) and heals an interrupted supersede (:func:`heal_superseded`).

    ``skip_damaged``: a damaged record (see ``record_schema.py``) counts as missing, so its
    run is redone (its new record replaces the damaged file), instead of stopping here.
    ``precision``: the runs' resolved precision (part of their keys; this machine's when ``None``)."""
    runs = expand(suite, limit, precision)
    folder = results_folder(suite.name, limit)
    if distributed.is_main():
        prepare_results(results_root, folder, suite, runs)
    distributed.barrier()
    if selection is not None:
        runs = selection.apply(runs)
    if shard_spec is not None:
        runs = shard(runs, *shard_spec)
    damaged: list[DamagedRecord] = []
    existing = read_records(results_root, folder, on_damaged=damaged.append if skip_damaged else None)
    done = finished_keys(existing)
    older: dict[str, set[str]] = {}
    for r in existing:
        older.setdefault(r["name"], set()).add(r["key"])
    distributed.barrier()  # every rank has read the records before rank 0 moves any
    if distributed.is_main():
        for record in damaged:
            print(f"namex-bench: warning: skipping damaged run record {record.path}: {record.problem}", file=sys.stderr)
        heal_superseded(results_root, folder, runs, done, older)
    stale = stale_records(existing, runs)
    for run in runs:
        if run.key in stale and distributed.is_main():
            tqdm.write(f"run {run.name}: the code of method {run.method.name!r} changed since its record was written; running it again")
    pending = [r for r in runs if r.key not in done or r.key in stale]
    return SuitePlan(folder, runs, pending, older, damaged, stale)


def execute_and_record(run: RunSpec, suite: Suite, ctx: RunContext, results_root: Path, plan: SuitePlan) -> tuple[str, dict | None]:
    """Execute one run under its lock and write its record (rank 0 only under ``torchrun``);
    a successful run's records of older configurations are superseded. Every executor runs a
    run through here, so a run executed anywhere writes the same record.

    Returns ``("run", record)``, or ``("busy", None)`` when another process is executing the
    run, ``("done", None)`` when another process has finished it since ``plan`` was made."""
    record = None
    with claim(results_root, plan.folder, run.key, plan.stale.get(run.key)) if distributed.is_main() else contextlib.nullcontext("run") as state:
        state = _agreed(state, ctx.device)
        if state == "run":
            if distributed.is_main() and run.key in plan.stale:  # the record of the method's older code, kept aside
                supersede(results_root, plan.folder, {run.key}, suffix=f".code-{plan.stale[run.key]}")
            with applied(suite.runtime):
                record = execute(run, suite, ctx, examples_path(results_root, plan.folder, run.key) if distributed.is_main() else None)
            if distributed.is_main():
                record = store(results_root, plan.folder, record, plan.older.get(run.name, set()))
    distributed.barrier()
    return state, record


def code_fingerprint(run: RunSpec) -> dict:
    """``{"method": the fingerprint of the run's merging method's code}`` (``methods/fingerprint.py``);
    ``{}`` for a compression run, whose compressor is not a merging method."""
    if not isinstance(run.method, MethodEntry):
        return {}
    return {"method": method_fingerprint(get_method(run.method.name))}


def method_digest(record: dict) -> str:
    """The code digest of the method that wrote ``record`` (``"unknown"`` for a record without one)."""
    return ((record.get("code") or {}).get("method") or {}).get("digest") or "unknown"


def stale_records(records: list[dict], runs: list[RunSpec]) -> dict[str, str]:
    """``{key: the record's code digest}`` of the finished runs whose method's code is not the
    code that wrote their record (a record without a fingerprint counts as stale)."""
    runs = [run for run in runs if isinstance(run.method, MethodEntry)]
    current = {name: method_fingerprint(get_method(name))["digest"] for name in {run.method.name for run in runs}}
    wanted = {run.key: run.method.name for run in runs}
    stale = {}
    for record in records:
        name = wanted.get(record["key"])
        if name is None or record.get("status") != "ok":
            continue
        digest = method_digest(record)
        if digest != current[name]:
            stale[record["key"]] = digest
    return stale


def run_suite(
    suite: Suite,
    results_root: Path,
    *,
    shard_spec: tuple[int, int] | None = None,
    selection: Selection | None = None,
    limit: int | None = None,
    device: str | None = None,
    fail_fast: bool = False,
    skip_damaged: bool = False,
) -> RunSummary:
    """Run every unfinished run of ``suite`` (or of one shard or subset of it), one after another
    (``skip_damaged``: see :func:`plan_suite`)."""
    ctx = run_context(suite, device, limit)
    plan = plan_suite(suite, results_root, limit=limit, shard_spec=shard_spec, selection=selection, skip_damaged=skip_damaged,
                      precision=precision_config(ctx.device, ctx.autocast_dtype))
    summary = RunSummary(total=len(plan.runs), skipped=len(plan.runs) - len(plan.pending), damaged=plan.damaged)
    bar = progress(plan.pending, desc=suite.name, unit="run", leave=True, enabled=distributed.is_main())
    for run in bar:
        bar.set_postfix_str(run.name)
        state, record = execute_and_record(run, suite, ctx, results_root, plan)
        if state == "busy":
            summary.elsewhere.append(run.name)
            tqdm.write(f"run {run.name}: another process is executing it; left to that process")
        elif state == "done":
            summary.skipped += 1
        elif record["status"] == "ok":
            summary.finished.append(run.name)
        else:
            summary.failed.append(run.name)
            tqdm.write(f"run {run.name} failed: {record['error']['type']}: {record['error']['message']}")
            if fail_fast:
                break
    bar.close()
    return summary
