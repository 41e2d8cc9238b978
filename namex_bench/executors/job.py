"""The job an executor runs: some runs of a suite, each through the runner's own entry point.

A :class:`SuiteJob` is what submitit pickles and a worker (a SLURM array task, a local
process) calls. It executes its runs one after another with
:func:`~namex_bench.runner.runner.execute_and_record` — the function ``namex-bench run``
uses — so a run executed anywhere writes the same record. Runs that already have a
successful record when the job (re)starts are skipped: a job requeued after preemption or
a timeout (submitit calls :meth:`SuiteJob.checkpoint`, then resubmits the same job) redoes
only the run it was interrupted in, and the runs after it.

A run that needs several processes (``processes > 1``: one per GPU) is launched with
``torchrun --standalone --nproc_per_node=P`` inside the job; the ranks run this same job
with ``processes = 1`` (``python -m namex_bench.executors.job FILE``) and rank 0 writes.

While a run executes, rank 0 keeps a marker ``<results>/<suite>/running/<key>.json`` (run,
host, pid, job) so that ``namex-bench status`` can say what is running where; it is
removed when the run ends (also when the job is preempted), and a marker left by a killed
process is recognised as stale.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import submitit

from ..device import precision_config
from ..methods.registry import load_plugins
from ..runner.placement import placement
from ..runner.records import results_folder, write_json_atomic
from ..runner.runner import execute_and_record, plan_suite, run_context
from ..suite.schema import Suite
from ..tasks import distributed


def marker_path(results_root: Path, folder: str, key: str) -> Path:
    """Where rank 0 says that the run ``key`` is executing."""
    return Path(results_root) / folder / "running" / f"{key}.json"


@dataclass
class SuiteJob(submitit.helpers.Checkpointable):
    """Execute the runs ``keys`` of ``suite`` (a validated suite, pickled with the job) under
    ``results``; ``processes`` per run (``torchrun`` when > 1), ``threads`` torch threads per
    process (``None``: torch's default). ``names``: the runs' names, by which a run is found
    when the job's machine resolves another precision than the submitting one (a login node
    without GPUs), so that its key differs; the record then has the key of where it ran."""

    suite: Suite
    results: str
    keys: tuple[str, ...]
    limit: int | None = None
    device: str | None = None
    processes: int = 1
    threads: int | None = None
    names: tuple[str, ...] = ()

    def __call__(self) -> dict[str, str]:
        """Run the job; returns ``{run name: status}`` of the runs it executed.

        SIGINT stops the job's run as Ctrl-C stops a serial run (the suite's runner sends it when it is
        stopped), even where the worker inherited SIGINT ignored — as every process started in the
        background of a non-interactive shell (``nohup namex-bench run … &``) does."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.processes > 1 and not distributed.launched():
            return self._torchrun()
        if self.threads is not None:
            torch_threads(self.threads)
        load_plugins(self.suite.plugins)
        ctx = run_context(self.suite, self.device, self.limit)
        results = Path(self.results)
        plan = plan_suite(self.suite, results, limit=self.limit, precision=precision_config(ctx.device, ctx.autocast_dtype))
        by_name = {r.name: r.key for r in plan.runs}
        keys = tuple(by_name.get(name, key) for key, name in zip(self.keys, self.names)) if self.names else self.keys
        known = {r.key for r in plan.runs}
        missing = [k for k in keys if k not in known]
        if missing:
            raise RuntimeError(
                f"runs {', '.join(missing)} are no longer runs of suite {self.suite.name!r} (the code changed since they were "
                "submitted, so their keys did): submit the suite again"
            )
        pending = {r.key: r for r in plan.pending}
        statuses = {}
        for key in keys:
            run = pending.get(key)
            if run is None:
                continue  # finished meanwhile (e.g. before a requeue)
            marker = marker_path(results, plan.folder, key)
            if distributed.is_main():
                write_json_atomic(marker, {"name": run.name, "key": key, "pid": os.getpid(), "started": time.time(), **placement()})
            try:
                state, record = execute_and_record(run, self.suite, ctx, results, plan)
            finally:
                if distributed.is_main():
                    marker.unlink(missing_ok=True)
            statuses[run.name] = record["status"] if record is not None else state
        return statuses

    def _torchrun(self) -> dict[str, str]:
        """Run this job's runs with ``processes`` ranks of ``torchrun`` (one per GPU)."""
        job_file = Path(self.results) / results_folder(self.suite.name, self.limit) / "jobs" / f"torchrun-{os.getpid()}-{time.time_ns()}.pkl"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_bytes(pickle.dumps(replace(self, processes=1)))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.processes}",
            "-m", "namex_bench.executors.job", str(job_file),
        ]
        try:
            subprocess.run(command, check=True)
        finally:
            job_file.unlink(missing_ok=True)
        return {"torchrun": f"{self.processes} processes"}


def torch_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads in this process (the CPUs the scheduler gave a run)."""
    import torch

    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    """``python -m namex_bench.executors.job FILE``: run the pickled :class:`SuiteJob` (a rank of ``torchrun``)."""
    args = sys.argv[1:] if argv is None else argv
    job = pickle.loads(Path(args[0]).read_bytes())
    print(json.dumps(job(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
