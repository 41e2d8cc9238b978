"""Executors: a suite's runs submitted as jobs (submitit's local executor here; SLURM through
stand-ins for sbatch/srun/squeue) write the records a serial run writes, never run a
finished run twice, and survive a killed or preempted worker.

The suite is the runner tests' tiny one (a 2-block ViT-MoE of width 16 on 64 MNIST digits)
with three seeds: 6 runs.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import FOLDER, LIMIT, write_suite

from namex_bench.cli import main
from namex_bench.runner.records import read_records

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def metrics_by_key(results: Path) -> dict[str, tuple]:
    return {r["key"]: (r["name"], r["status"], r["metrics"], r["cells"], r["config"]) for r in read_records(results, FOLDER)}


def markers(results: Path) -> list[dict]:
    found = []
    for path in (results / FOLDER / "running").glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            pass  # being written or removed
    return found


@pytest.mark.slow  # end to end, ~40 s or more on 2 cores
def test_local_executor_with_two_workers_gives_the_serial_records_and_survives_killed_and_preempted_workers(tmp_path, capsys):
    suite = write_suite(tmp_path, seeds=(0, 1, 2), runtime="{threads: 1}")  # the serial run below: 1 thread, as each worker
    jobs, serial = tmp_path / "jobs", tmp_path / "serial"
    command = [sys.executable, "-m", "namex_bench.cli", "run", str(suite), "--results", str(jobs), "--limit", LIMIT,
               "--executor", "local", "--max-parallel", "2", "--cpus-per-run", "1", "--no-report"]
    proc = subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Kill the first worker seen executing a run (SIGKILL: like the OOM killer; the client
    # resubmits its run), and preempt the next one (SIGUSR2: what SLURM sends before a
    # preemption or the time limit; submitit checkpoints the job and requeues it).
    killed = preempted = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and preempted is None and time.monotonic() < deadline:
        for marker in markers(jobs):
            if killed is None:
                killed = marker
                os.kill(marker["pid"], signal.SIGKILL)
            elif marker["job_id"] != killed["job_id"] and marker["key"] != killed["key"]:
                preempted = marker
                os.kill(marker["pid"], signal.SIGUSR2)
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert killed is not None and preempted is not None, out
    assert "6 submitted in 6 local job(s)" in out and f"job {killed['job_id']} (" in out and "resubmitted 1 run(s)" in out, out
    assert f"{FOLDER}:   0% 0/6" in out and f"{FOLDER}: 100% 6/6" in out, out  # progress lines while it waits (a log: no tty)

    records = {r["key"]: r for r in read_records(jobs, FOLDER)}
    assert len(records) == 6 and all(r["status"] == "ok" for r in records.values())
    # the killed run was redone by another job; the preempted one by its own job, requeued
    assert records[killed["key"]]["placement"]["job_id"] != killed["job_id"]
    assert records[preempted["key"]]["placement"]["job_id"] == preempted["job_id"]
    log = (jobs / FOLDER / "jobs" / preempted["job_id"] / f"{preempted['job_id']}_0_log.out").read_text()
    assert "Requeued job" in log, log[-2000:]
    assert all(r["placement"]["executor"] == "local" for r in records.values())
    assert not list((jobs / FOLDER / "running").glob("*.json")) and not list(jobs.rglob(".*.tmp"))
    assert not (jobs / FOLDER / "jobs" / "%j").exists()  # only the jobs' own folders

    assert main(["run", str(suite), "--results", str(serial), "--limit", LIMIT, "--no-report"]) == 0
    assert metrics_by_key(jobs) == metrics_by_key(serial)  # bit-identical metrics and cells, same keys and configs

    # a resubmission submits nothing, and starts no job
    before = sorted(p.name for p in (jobs / FOLDER / "jobs").iterdir())
    capsys.readouterr()
    assert main(["run", str(suite), "--results", str(jobs), "--limit", LIMIT, "--executor", "local", "--max-parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "6 already done, 0 already queued or running, 0 submitted in 0 local job(s)" in out
    assert sorted(p.name for p in (jobs / FOLDER / "jobs").iterdir()) == before
    assert "leaderboard:" in out and (jobs / FOLDER / "leaderboard.md").is_file()  # as without --executor: regenerated


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow  # ~30 s on 2 cores
def test_stopping_the_local_executor_stops_its_workers_and_a_rerun_finishes(tmp_path):
    suite = write_suite(tmp_path, seeds=(0, 1, 2), runtime="{threads: 1}")
    results = tmp_path / "jobs"
    command = [sys.executable, "-m", "namex_bench.cli", "run", str(suite), "--results", str(results), "--limit", LIMIT,
               "--executor", "local", "--max-parallel", "2", "--runs-per-job", "3", "--no-report"]
    # started as `nohup namex-bench run … &` from a script starts it: with SIGINT ignored, which its workers inherit
    proc = subprocess.Popen(command, env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 600
    while proc.poll() is None and not markers(results) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = {m["pid"] for m in markers(results)}
    assert workers, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)  # the runner only, as `kill PID` does: it stops its workers itself
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in out and "Traceback" not in out, out
    assert not any(alive(pid) for pid in workers), out  # no worker left running (and writing) after the suite stopped
    logs = "".join(p.read_text() for p in (results / FOLDER / "jobs").rglob("*_log.err"))
    assert "KeyboardInterrupt" in logs  # the workers stopped on SIGINT (their run interrupted as by Ctrl-C), not killed

    assert main(["run", str(suite), "--results", str(results), "--limit", LIMIT, "--executor", "local", "--max-parallel", "2",
                 "--no-report"]) == 0
    records = read_records(results, FOLDER)
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)


def fake_slurm(bin_dir: Path, squeue_states: Path) -> None:
    """``sbatch`` that keeps the script and answers with job 4242, ``srun`` (submitit looks for it),
    and ``squeue`` that prints the states listed in ``squeue_states``."""
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" "{bin_dir}/submitted.sh"\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 0\n",
        "squeue": f'#!/bin/sh\ncat "{squeue_states}" 2>/dev/null\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)


def test_slurm_submission_is_one_job_array_whose_tasks_write_the_records(tmp_path, monkeypatch, capsys):
    suite = write_suite(tmp_path, seeds=(0, 1, 2))
    results = tmp_path / "results"
    bin_dir, states = tmp_path / "bin", tmp_path / "squeue.txt"
    fake_slurm(bin_dir, states)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    # two runs are already done: they are not submitted
    assert main(["run", str(suite), "--results", str(results), "--limit", LIMIT, "--seeds", "0", "--no-report"]) == 0
    capsys.readouterr()
    argv = ["run", str(suite), "--results", str(results), "--limit", LIMIT, "--executor", "slurm", "--partition", "gpu",
            "--gpus-per-run", "1", "--cpus-per-run", "8", "--mem", "64G", "--time", "2:00:00", "--max-parallel", "3",
            "--runs-per-job", "2", "--account", "proj42", "--qos", "high"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 runs, 2 already done, 0 already queued or running, 4 submitted in 2 slurm job(s)" in out, out

    sbatch = (bin_dir / "submitted.sh").read_text()
    logs = results / FOLDER / "jobs"
    for line in ("--array=0-1%2", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=120",
                 "--account=proj42", "--qos=high", "--requeue", "--signal=USR2@90", f"--output={logs}/%A_%a/%A_%a_0_log.out"):
        assert f"#SBATCH {line}" in sbatch, (line, sbatch)
    manifest = json.loads(next((results / FOLDER / "submissions").glob("*.json")).read_text())
    assert [job["job_id"] for job in manifest["jobs"]] == ["4242_0", "4242_1"] and all(len(j["keys"]) == 2 for j in manifest["jobs"])

    # while the array waits in the queue, status says so, and a second submission adds nothing
    states.write_text("4242_0|PENDING\n4242_1|PENDING\n")
    assert main(["status", str(suite), "--results", str(results), "--limit", LIMIT]) == 0
    out = capsys.readouterr().out
    assert "total 6: 2 done, 0 failed, 0 running, 4 queued, 0 pending" in out and "slurm job 4242_1, pending" in out, out
    assert main(argv) == 0
    assert "4 already queued or running, 0 submitted in 0 slurm job(s)" in capsys.readouterr().out

    # array task 0 runs as SLURM would start it: its two runs' records say where they ran
    env = cli_env(SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID="4243", SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID="0",
                  SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
                  SLURMD_NODENAME="node042")
    task = subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", str(logs / "%j")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert task.returncode == 0, task.stdout[-3000:] + task.stderr[-3000:]
    records = {r["key"]: r for r in read_records(results, FOLDER)}
    ran = manifest["jobs"][0]["keys"]
    assert all(records[k]["status"] == "ok" and records[k]["placement"] == {"host": "node042", "executor": "slurm", "job_id": "4242_0"} for k in ran)
    states.write_text("4242_1|RUNNING\n")
    assert main(["status", str(suite), "--results", str(results), "--limit", LIMIT]) == 0
    assert "total 6: 4 done, 0 failed, 0 running, 2 queued, 0 pending" in capsys.readouterr().out


def test_slurm_without_srun_is_one_clear_error(tmp_path, monkeypatch, capsys):
    suite = write_suite(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["run", str(suite), "--results", str(tmp_path / "r"), "--limit", LIMIT, "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "--executor slurm" in err and "srun" in err and "Traceback" not in err


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-0", 1440), ("1-2:30", 1590), ("0-0:0:1", 1)])
def test_time_limits_in_slurm_formats(text, minutes):
    from namex_bench.executors.options import parse_time

    assert parse_time(text) == minutes


@pytest.mark.parametrize(("text", "gb"), [("64G", 64), ("64GB", 64), ("512M", 0.5), ("1.5T", 1536), ("16", 16)])
def test_memory_sizes(text, gb):
    from namex_bench.executors.options import parse_mem

    assert parse_mem(text) == gb


def test_cluster_defaults_come_from_the_suite_and_the_command_line_overrides_them(tmp_path):
    from namex_bench.executors.options import cluster_options
    from namex_bench.suite.loader import load_suite

    path = write_suite(tmp_path)
    path.write_text(path.read_text() + "cluster: {partition: a100, gpus_per_run: 2, time_min: 600, setup: [module load cuda]}\n")
    suite, _ = load_suite(str(path))
    merged = cluster_options(suite.cluster, partition="h100", gpus_per_run=None, mem_gb=80.0)
    assert (merged.partition, merged.gpus_per_run, merged.time_min, merged.mem_gb, merged.setup) == ("h100", 2, 600, 80.0, ["module load cuda"])


def test_status_of_a_half_done_suite_and_its_results_folder(tmp_path, monkeypatch, capsys):
    from namex_bench.runner import runner as runner_module
    from namex_bench.runner.records import write_json_atomic

    suite = write_suite(tmp_path)  # smear, namex_mom × seeds 0, 1
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--limit", LIMIT, "--methods", "smear", "--no-report"]) == 0

    def failing(task_type):
        def fail(*args, **kwargs):
            raise RuntimeError("boom\nsecond line")
        return fail

    monkeypatch.setattr(runner_module, "task_runner", failing)
    assert main(["run", str(suite), "--results", str(results), "--limit", LIMIT, "--methods", "namex_mom", "--seeds", "0", "--no-report"]) == 1
    monkeypatch.undo()

    runs = results / FOLDER / "runs"
    (runs / ".abc.json.tmp").write_text("{")
    done = read_records(results, FOLDER)[0]
    write_json_atomic(runs / "0123456789abcdef.json", {**done, "key": "0123456789abcdef", "name": "smear/vit_tiny/mnist/seed9"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json_atomic(results / FOLDER / "running" / "feedfeedfeedfeed.json",
                      {"name": "x", "key": "feedfeedfeedfeed", "pid": dead.pid, "host": os.uname().nodename, "executor": "local", "job_id": "1"})
    capsys.readouterr()
    assert main(["status", str(suite), "--results", str(results), "--limit", LIMIT]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[2].strip(): (line.split("|")[1].strip(), line.split("|")[4].strip()) for line in out.splitlines() if line.startswith("| ") and "/vit_tiny/" in line}
    assert rows == {
        "smear/vit_tiny/mnist/seed0": ("done", ""), "smear/vit_tiny/mnist/seed1": ("done", ""),
        "namex_mom/vit_tiny/mnist/seed0": ("failed", "RuntimeError: boom"), "namex_mom/vit_tiny/mnist/seed1": ("pending", ""),
    }, out
    assert "total 4: 2 done, 1 failed, 0 running, 0 queued, 1 pending" in out
    assert "≈ " in out and "more for the other 2 at the mean of their task and model" in out
    assert ".abc.json.tmp: temporary file of an interrupted write" in out
    assert "feedfeedfeedfeed.json: stale marker of run x" in out
    assert "1 record(s) of another configuration" in out and "smear/vit_tiny/mnist/seed9" in out
    # a subset of the status
    assert main(["status", str(suite), "--results", str(results), "--limit", LIMIT, "--seeds", "1"]) == 0
    assert "total 2: 1 done, 0 failed, 0 running, 0 queued, 1 pending" in capsys.readouterr().out


def test_subsets_run_only_the_matching_runs_under_the_suite_keys(tmp_path, capsys):
    from namex_bench.suite.expand import expand
    from namex_bench.suite.loader import load_suite

    suite = write_suite(tmp_path, seeds=(0, 1, 2))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--limit", LIMIT, "--methods", "namex_mom", "--seeds", "0,2", "--no-report"]) == 0
    assert "2 runs finished, 0 already done, 0 failed (of 2)" in capsys.readouterr().out
    keys = {r.name: r.key for r in expand(load_suite(str(suite))[0], int(LIMIT))}
    assert {r["name"]: r["key"] for r in read_records(results, FOLDER)} == {
        name: keys[name] for name in ("namex_mom/vit_tiny/mnist/seed0", "namex_mom/vit_tiny/mnist/seed2")
    }
    for bad, message in ((["--methods", "smear,nash"], "--methods: nash not in suite 'tiny'; known: smear, namex_mom"),
                         (["--seeds", "7"], "--seeds: 7 not in suite 'tiny'; known: 0, 1, 2"),
                         (["--tasks", "cifar"], "--tasks: cifar not in suite 'tiny'; known: mnist"),
                         (["--models", "vit"], "--models: vit not in suite 'tiny'; known: vit_tiny")):
        assert main(["run", str(suite), "--results", str(results), "--limit", LIMIT, *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_a_job_launches_a_run_that_needs_several_processes_with_torchrun(tmp_path, monkeypatch):
    """``processes=2`` (``--gpus-per-run 2`` on GPUs): the job starts ``torchrun`` with 2 ranks,
    which execute the run together; rank 0 writes the one record."""
    from namex_bench.executors.job import SuiteJob
    from namex_bench.runner.runner import plan_suite
    from namex_bench.suite.loader import load_suite

    suite, _ = load_suite(str(write_suite(tmp_path, methods=("smear",), seeds=(0,))))
    results = tmp_path / "results"
    (run,) = plan_suite(suite, results, limit=int(LIMIT)).pending
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    SuiteJob(suite, str(results), (run.key,), int(LIMIT), processes=2, threads=1)()
    (record,) = read_records(results, FOLDER)
    assert record["key"] == run.key and record["status"] == "ok" and record["environment"]["world_size"] == 2
    assert not list((results / FOLDER / "jobs").glob("torchrun-*.pkl")) and not list((results / FOLDER / "running").glob("*"))
