"""Submitting a suite's pending runs as jobs: a SLURM job array, or local worker processes.

The runner decides which runs are pending (:func:`~namex_bench.runner.runner.plan_suite`);
runs that a live job is already executing or will execute are left out too, so submitting
twice never runs anything twice. The pending runs are grouped ``runs_per_job`` at a time
into :class:`~namex_bench.executors.job.SuiteJob` s, which submitit runs

* ``slurm``: as one job array (``sbatch --array=0-{J-1}%{max_parallel}``), each task with
  ``gpus_per_run`` GPUs, ``cpus_per_run`` CPUs, ``mem_gb``, ``time_min``, on ``partition``
  (``account``, ``qos`` and further ``sbatch`` options passed through), signalled 90 s
  before its time limit or on preemption, then checkpointed and requeued; ``--requeue``
  also lets SLURM requeue a task whose node failed. :func:`submit_suite` returns at once;
  ``namex-bench status`` follows the jobs.
* ``local``: as processes of submitit's local executor on this machine, at most
  ``max_parallel`` at a time (each worker its own GPUs when runs use GPUs).
  :func:`submit_suite` waits for them; a job whose process died (killed, out of memory)
  is submitted once more (``retries``) with its runs that have no record yet.

Every job's logs and submitit's files are under ``<results>/<suite>/jobs/<job id>/``, and
each submission is listed in ``<results>/<suite>/submissions/``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import submitit

from ..progress import progress
from ..runner.records import record_path, write_json_atomic
from ..runner.runner import plan_suite
from ..suite.expand import RunSpec, Selection
from ..suite.schema import ClusterDefaults, Suite
from .job import SuiteJob
from .status import in_flight


@dataclass(frozen=True)
class SubmitOptions:
    """How runs are submitted: the suite's ``cluster:`` defaults with the command line's overrides."""

    executor: Literal["local", "slurm"]
    cluster: ClusterDefaults
    retries: int = 1

    @property
    def workers(self) -> int:
        return self.cluster.max_parallel or 1


@dataclass
class Submission:
    """What :func:`submit_suite` did: how many runs it submitted, its jobs (``{job id: run names}``),
    the runs it left out (already done, or in flight in an earlier submission), and for the
    local executor the jobs that died."""

    executor: str
    total: int
    done: int
    in_flight: dict[str, str]
    submitted: int = 0  # runs
    job_count: int = 0  # jobs they were submitted in (resubmissions not counted)
    jobs: dict[str, list[str]] = field(default_factory=dict)  # every job, resubmissions included
    died: list[str] = field(default_factory=list)
    manifest: Path | None = None


def group(runs: list[RunSpec], size: int) -> list[list[RunSpec]]:
    """``runs`` in consecutive groups of ``size`` (the last may be smaller)."""
    return [runs[i : i + size] for i in range(0, len(runs), size)]


def processes(runs: list[RunSpec], gpus_per_run: int) -> int:
    """Processes per run of a job: one per GPU (``torchrun``), except for models spread over
    the GPUs by ``parallel: device_map``, which run in one process."""
    if all((r.task.parallel or r.model.parallel) == "device_map" for r in runs):
        return 1
    return max(1, gpus_per_run)


def submit_suite(
    suite: Suite,
    results_root: Path,
    options: SubmitOptions,
    *,
    limit: int | None = None,
    device: str | None = None,
    shard_spec: tuple[int, int] | None = None,
    selection: Selection | None = None,
) -> Submission:
    """Submit the pending runs of ``suite`` (of a shard, of a subset) through ``options.executor``."""
    results_root = Path(results_root).resolve()
    plan = plan_suite(suite, results_root, limit=limit, shard_spec=shard_spec, selection=selection)
    pending = {r.key for r in plan.pending}
    flying = {k: v for k, v in in_flight(results_root, plan.folder).items() if k in pending}
    todo = [r for r in plan.pending if r.key not in flying]
    cluster = options.cluster
    jobs = [
        SuiteJob(suite, str(results_root), tuple(r.key for r in runs), limit, device, processes=processes(runs, cluster.gpus_per_run), threads=cluster.cpus_per_run,
                 names=tuple(r.name for r in runs))
        for runs in group(todo, cluster.runs_per_job)
    ]
    submission = Submission(options.executor, len(plan.runs), len(plan.runs) - len(plan.pending), flying, len(todo), len(jobs))
    if not jobs:
        return submission
    names = {r.key: r.name for r in plan.runs}
    logs = results_root / plan.folder / "jobs"
    manifest = results_root / plan.folder / "submissions" / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.json"
    if options.executor == "slurm":
        submitted = slurm_executor(logs / "%j", cluster).submit_array(jobs)
        for job, spec in zip(submitted, jobs):
            submission.jobs[job.job_id] = [names[k] for k in spec.keys]
        write_manifest(manifest, "slurm", [(job.job_id, None, spec.keys) for job, spec in zip(submitted, jobs)], cluster)
    else:
        run_local(jobs, logs, options, results_root, plan.folder, manifest, names, submission)
    submission.manifest = manifest
    return submission


def write_manifest(path: Path, executor: str, jobs: list[tuple[str, int | None, tuple[str, ...]]], cluster: ClusterDefaults) -> None:
    """List a submission's jobs and their runs' keys (``namex-bench status`` reads it)."""
    entries = [{"job_id": job_id, "pid": pid, "keys": list(keys)} for job_id, pid, keys in jobs]
    write_json_atomic(path, {
        "executor": executor, "host": socket.gethostname(), "submitted": time.time(),
        "cluster": cluster.model_dump(mode="json"), "jobs": entries,
    })


def slurm_executor(folder: Path, cluster: ClusterDefaults) -> submitit.SlurmExecutor:
    """A submitit SLURM executor asking, per array task, what one run (or group of runs) needs."""
    if submitit.SlurmExecutor.affinity() < 0:
        raise ValueError("--executor slurm: there is no `srun` on this machine; submit from a SLURM login node")
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    parameters = {
        "job_name": "namex-bench",
        "time": cluster.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "array_parallelism": cluster.max_parallel or 256,
        "additional_parameters": {"requeue": True, **cluster.sbatch},
    }
    if cluster.gpus_per_run:
        parameters["gpus_per_node"] = cluster.gpus_per_run
    optional = {"partition": cluster.partition, "account": cluster.account, "qos": cluster.qos, "cpus_per_task": cluster.cpus_per_run,
                "mem": f"{cluster.mem_gb:g}GB" if cluster.mem_gb else None, "setup": list(cluster.setup) or None}
    parameters.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**parameters)
    return executor


def run_local(
    jobs: list[SuiteJob],
    logs: Path,
    options: SubmitOptions,
    results_root: Path,
    folder: str,
    manifest: Path,
    names: dict[str, str],
    submission: Submission,
) -> None:
    """Run ``jobs`` with submitit's local executor, ``options.workers`` at a time; a job whose
    process died is submitted again (``options.retries`` times) with its runs that have no record.
    Progress (a bar, or a line a minute in a log) counts the runs recorded since the submission."""
    cluster = options.cluster
    begun = time.time()
    records = [record_path(results_root, folder, key) for job in jobs for key in job.keys]
    bar = progress(total=len(records), desc=folder, unit="run", leave=True)
    executor = submitit.LocalExecutor(folder=logs / "%j")
    executor.update_parameters(timeout_min=cluster.time_min)
    gpu_slots = _gpu_slots(options.workers, cluster.gpus_per_run)
    queue = deque((job, options.retries) for job in jobs)
    running: list[tuple[submitit.local.local.LocalJob, SuiteJob, int, int, float]] = []  # job, spec, retries, slot, start
    listed: list[tuple[str, int | None, tuple[str, ...]]] = []
    free = list(range(options.workers))
    counted = 0.0
    try:
        while queue or running:
            while queue and free:
                spec, retries = queue.popleft()
                slot = free.pop(0)
                if gpu_slots:
                    executor.update_parameters(gpus_per_node=cluster.gpus_per_run, visible_gpus=gpu_slots[slot])
                started = time.time()
                job = executor.submit(spec)
                running.append((job, spec, retries, slot, started))
                submission.jobs[job.job_id] = [names[k] for k in spec.keys]
                listed.append((job.job_id, int(job.job_id), spec.keys))
                write_manifest(manifest, "local", listed, cluster)
            time.sleep(0.2)
            if time.time() - counted >= 2:  # the records, every 2 s: stat()s of every submitted run
                bar.update(_count_recorded(records, begun) - bar.n)
                counted = time.time()
            for entry in [e for e in running if e[0].done()]:
                running.remove(entry)
                job, spec, retries, slot, started = entry
                free.append(slot)
                retry = _settle(job, spec, retries, started, results_root, folder, submission)
                if retry is not None:
                    queue.append(retry)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the workers too, not only this process
        _stop_workers([entry[0] for entry in running])
        raise
    bar.update(_count_recorded(records, begun) - bar.n)
    bar.close()
    with contextlib.suppress(OSError):  # the empty folder submitit makes of the template itself
        (logs / "%j").rmdir()


def _stop_workers(jobs: list, wait_s: float = 60.0) -> None:
    """Stop the running local jobs: SIGINT to their worker processes (the run in each stops as under
    Ctrl-C, its runner's bookkeeping done; submitit's workers ignore SIGTERM), a wait of up to ``wait_s``
    for them to exit, then SIGKILL to any worker still there (its run unrecorded, redone next time)."""
    import psutil

    workers = [p for p in psutil.Process().children(recursive=True) if _is_worker(p)]
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            worker.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(workers, timeout=wait_s)
    for worker in alive:
        with contextlib.suppress(psutil.Error):
            worker.kill()
    deadline = time.time() + 10
    while any(not job.done() for job in jobs) and time.time() < deadline:  # their submitit controllers exit after them
        time.sleep(0.2)


def _is_worker(process) -> bool:
    """Whether ``process`` is a submitit worker executing a job (not its controller)."""
    import psutil

    try:
        return "submitit.core._submit" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _settle(job, spec: SuiteJob, retries: int, started: float, results_root: Path, folder: str, submission: Submission):
    """A finished local job: nothing when it ended normally; when its process died or raised outside
    its runs, ``(job with its runs that have no record, retries - 1)`` to submit again while retries
    are left (else the death is listed in ``submission``)."""
    try:
        job.result()
        return None
    except Exception as exc:
        unrecorded = tuple(k for k in spec.keys if not _recorded_since(record_path(results_root, folder, k), started))
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        if unrecorded and retries > 0:
            submission.died.append(f"job {job.job_id} ({reason}): resubmitted {len(unrecorded)} run(s)")
            return replace(spec, keys=unrecorded), retries - 1
        submission.died.append(f"job {job.job_id} ({reason}); log: {job.paths.stderr}")
        return None


def _recorded_since(path: Path, since: float) -> bool:
    return path.is_file() and path.stat().st_mtime >= since


def _count_recorded(paths: list[Path], since: float) -> int:
    """How many of ``paths`` are records written since ``since``."""
    return sum(_recorded_since(path, since) for path in paths)


def _gpu_slots(workers: int, gpus_per_run: int) -> list[list[int]]:
    """Disjoint GPU indices for each local worker (empty when runs use no GPU)."""
    if gpus_per_run == 0:
        return []
    import torch

    available = torch.cuda.device_count()
    if workers * gpus_per_run > available:
        raise ValueError(f"--max-parallel {workers} × --gpus-per-run {gpus_per_run} needs {workers * gpus_per_run} GPUs; this machine has {available}")
    return [list(range(i * gpus_per_run, (i + 1) * gpus_per_run)) for i in range(workers)]
