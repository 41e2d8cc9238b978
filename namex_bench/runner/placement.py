"""Where a run executed, for its record: the host, and the scheduler's job when there is one.

Read from the environment the job was started with, so it is the same whether the run was
executed by ``namex-bench run`` in a shell, by a submitit job (SLURM or local), or by a rank
that ``torchrun`` started inside such a job.
"""

from __future__ import annotations

import os
import socket


def placement() -> dict[str, str | None]:
    """``{"host", "executor", "job_id"}``: ``executor`` is ``"slurm"`` inside a SLURM job,
    ``"local"`` inside a job of submitit's local executor, else ``None``; ``job_id`` is the
    SLURM job (``<array job>_<task>`` for an array task) or the local job's id."""
    env = os.environ
    if "SLURM_JOB_ID" in env:
        array = env.get("SLURM_ARRAY_JOB_ID")
        job_id = f"{array}_{env['SLURM_ARRAY_TASK_ID']}" if array else env["SLURM_JOB_ID"]
        return {"host": env.get("SLURMD_NODENAME") or socket.gethostname(), "executor": "slurm", "job_id": job_id}
    if "SUBMITIT_LOCAL_JOB_ID" in env:
        return {"host": socket.gethostname(), "executor": "local", "job_id": env["SUBMITIT_LOCAL_JOB_ID"]}
    return {"host": socket.gethostname(), "executor": None, "job_id": None}
