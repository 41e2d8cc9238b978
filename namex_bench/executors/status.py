"""``namex-bench status``: one place to see what of a suite is done, failed, running, queued, pending.

A run is

* **done** — it has a record with status "ok";
* **failed** — its latest record has status "failed" (the error's first line is shown);
  ``namex-bench run`` runs it again;
* **running** — a job is executing it now (a marker in ``running/`` whose process or
  SLURM job is alive);
* **queued** — it is in a submitted job that has not started it yet (``submissions/``,
  checked against ``squeue`` or the local job's process);
* **pending** — none of these: the next ``namex-bench run`` executes or submits it.

The results folder's health: temporary files of interrupted writes, records that are not
valid JSON, records of another configuration (not runs of the suite as it is now: they are
superseded when their run finishes again, or belong to runs the suite no longer has), and
markers left by killed processes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runner.records import results_folder, runs_dir
from ..suite.expand import Selection, expand
from ..suite.schema import Suite

STATES = ("done", "failed", "running", "queued", "pending")


@dataclass
class RunStatus:
    name: str
    key: str
    state: str
    detail: str = ""


@dataclass
class SuiteStatus:
    """``hours_done``: device-hours (run time × processes, from the records) of the done runs;
    ``hours_left``: the same estimated for the others, each at the mean of the done runs of
    its task and model; ``unestimated``: runs whose task and model have no done run yet."""

    folder: str
    runs: list[RunStatus]
    health: list[str] = field(default_factory=list)
    hours_done: float = 0.0
    hours_left: float = 0.0
    unestimated: int = 0

    @property
    def totals(self) -> dict[str, int]:
        counts = Counter(r.state for r in self.runs)
        return {state: counts.get(state, 0) for state in STATES}


def _read_json_files(directory: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[Path]]:
    """``(path, content)`` of every ``*.json`` in ``directory`` that parses, and the paths that do not."""
    good, damaged = [], []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            good.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError):
            damaged.append(path)
    return good, damaged


def slurm_states(job_ids: set[str]) -> dict[str, str] | None:
    """``{"<array job>_<task>" or "<job>": state}`` of the jobs ``squeue`` still knows
    (finished jobs are absent); ``None`` when ``squeue`` is not on this machine."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    roots = sorted({j.split("_")[0] for j in job_ids})
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(roots)], capture_output=True, text=True, timeout=60)
    states = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state
    return states


class JobLiveness:
    """Whether a job (or a process of one) is still alive, asked once per status."""

    def __init__(self, slurm_jobs: set[str]):
        self.host = socket.gethostname()
        self.slurm = slurm_states(slurm_jobs)

    def state(self, entry: dict[str, Any]) -> str | None:
        """The job's state ("RUNNING", "PENDING", …), ``"GONE"`` if it is over, ``None`` if unknowable here."""
        if entry.get("executor") == "slurm":
            if self.slurm is None:
                return None
            return self.slurm.get(str(entry["job_id"]), "GONE")
        if entry.get("host") != self.host:
            return None
        return "RUNNING" if _pid_alive(int(entry["pid"])) else "GONE"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def in_flight(results_root: Path, folder: str) -> dict[str, str]:
    """``{key: "running (…)" or "queued (…)"}`` of the runs a live job is executing or will execute."""
    return _in_flight_and_health(Path(results_root), folder)[0]


def _in_flight_and_health(results_root: Path, folder: str) -> tuple[dict[str, str], list[str]]:
    base = results_root / folder
    markers, damaged_markers = _read_json_files(base / "running")
    submissions, damaged_submissions = _read_json_files(base / "submissions")
    jobs = [(job, sub) for _, sub in submissions for job in sub.get("jobs", [])]
    slurm_ids = {str(m["job_id"]) for _, m in markers if m.get("executor") == "slurm"}
    slurm_ids |= {str(job["job_id"]) for job, sub in jobs if sub.get("executor") == "slurm"}
    liveness = JobLiveness(slurm_ids)
    health = [f"{p}: not valid JSON" for p in damaged_markers + damaged_submissions]
    flying: dict[str, str] = {}
    for path, marker in markers:
        state = liveness.state(marker)
        where = f"job {marker.get('job_id') or 'none'} on {marker.get('host')}"
        if state == "GONE":
            health.append(f"{path}: stale marker of run {marker.get('name')} ({where}: that process is gone; the run is pending again)")
        else:
            flying[marker["key"]] = f"running ({where}{'' if state else ', unverified from this machine'})"
    for job, sub in jobs:
        entry = {"executor": sub.get("executor"), "host": sub.get("host"), "job_id": job["job_id"], "pid": job.get("pid", -1)}
        state = liveness.state(entry)
        if state is None or state == "GONE":
            continue
        for key in job["keys"]:
            flying.setdefault(key, f"queued ({sub.get('executor')} job {job['job_id']}, {state.lower()})")
    return flying, health


def suite_status(suite: Suite, results_root: Path, *, limit: int | None = None, selection: Selection | None = None) -> SuiteStatus:
    """The state of every run of ``suite`` (or of a subset) under ``results_root``, and the folder's health."""
    results_root = Path(results_root)
    folder = results_folder(suite.name, limit)
    all_runs = expand(suite, limit)
    runs = selection.apply(all_runs) if selection is not None else all_runs
    records, damaged = _read_json_files(runs_dir(results_root, folder))
    by_key = {record.get("key", path.stem): record for path, record in records}
    flying, health = _in_flight_and_health(results_root, folder)

    statuses = []
    hours: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        record = by_key.get(run.key)
        if record is not None and record.get("status") == "ok":
            statuses.append(RunStatus(run.name, run.key, "done"))
            world = (record.get("environment") or {}).get("world_size", 1)
            hours.setdefault((run.task.name, run.model.name), []).append(record.get("timings", {}).get("total_s", 0.0) * world / 3600)
        elif run.key in flying:
            state, _, detail = flying[run.key].partition(" ")
            statuses.append(RunStatus(run.name, run.key, state, detail.strip("()")))
        elif record is not None:
            error = record.get("error") or {}
            first_line = f"{error.get('type', 'Error')}: {str(error.get('message', '')).strip()}".splitlines()[0]
            statuses.append(RunStatus(run.name, run.key, "failed", first_line))
        else:
            statuses.append(RunStatus(run.name, run.key, "pending"))

    directory = runs_dir(results_root, folder)
    health += [f"{p}: temporary file of an interrupted write (safe to delete)" for p in sorted(directory.glob(".*.tmp"))] if directory.is_dir() else []
    health += [f"{p}: damaged record (not valid JSON); move it away and rerun that run" for p in damaged]
    current = {r.key for r in all_runs}
    other = sorted(record.get("name", path.stem) for path, record in records if record.get("key", path.stem) not in current)
    if other:
        health.append(
            f"{len(other)} record(s) of another configuration (not runs of the suite as it is now; each is superseded when its run "
            f"finishes again): {', '.join(other[:5])}{', …' if len(other) > 5 else ''}"
        )
    status = SuiteStatus(folder, statuses, health, hours_done=sum(sum(h) for h in hours.values()))
    for run, state in zip(runs, statuses):
        if state.state != "done":
            pair = hours.get((run.task.name, run.model.name))
            status.hours_left += sum(pair) / len(pair) if pair else 0.0
            status.unestimated += not pair
    return status
