"""Records that reproduce: the suite's threads and determinism are applied and recorded,
`namex-bench verify` reruns records with them, and the committed results folder refuses
records from uncommitted code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from test_runner import suite_text

from namex_bench.cli import main
from namex_bench.runner import environment
from namex_bench.runner import runner as runner_module
from namex_bench.runner import verify as verify_module
from namex_bench.runner.records import read_records
from namex_bench.runner.verify import DIFFERS, FAILED, OTHER_STACK, REPRODUCED, verify
from namex_bench.suite.loader import load_suite
from namex_bench.tasks import task_runner

LIMIT = 64
FOLDER = f"tiny-limit{LIMIT}"


def tiny_suite(directory: Path, threads: int = 1, **kwargs) -> Path:
    path = directory / "tiny.yaml"
    path.write_text(suite_text(methods=("smear",), seeds=(0,), **kwargs) + f"runtime: {{threads: {threads}, deterministic: true}}\n")
    return path


@pytest.fixture
def threads_seen(monkeypatch):
    """The torch thread count and determinism switch each task run executes with."""
    seen = []

    def runner_for(task_type):
        real = task_runner(task_type)

        def run_task(*args):
            seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
            return real(*args)

        return run_task

    monkeypatch.setattr(runner_module, "task_runner", runner_for)
    return seen


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny suite run once with `runtime: {threads: 1, deterministic: true}`."""
    folder = tmp_path_factory.mktemp("finished")
    path = tiny_suite(folder)
    assert main(["run", str(path), "--results", str(folder / "results"), "--limit", str(LIMIT), "--no-report"]) == 0
    return path, folder / "results"


def test_runs_execute_with_the_suites_threads_and_record_them(tmp_path, threads_seen):
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    path = tiny_suite(tmp_path, threads=1)
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--limit", str(LIMIT), "--no-report"]) == 0
    assert threads_seen == [(1, True)]
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before  # restored
    env = read_records(tmp_path / "r", FOLDER)[0]["environment"]
    assert env["threads"]["torch"] == 1 and env["deterministic"]["algorithms"] is True
    assert env["deterministic"]["cudnn_deterministic"] is True and env["deterministic"]["cudnn_benchmark"] is False
    assert all(pool["threads"] == 1 for pool in env["threads"]["blas"])  # NumPy's BLAS and OpenMP too
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    commit, changes = environment.git_state()
    assert env["git_commit"] == commit and env["git_dirty"] == (bool(changes) if commit else None)
    assert commit is None or "+" not in env["git_commit"]  # the dirty flag is its own field


def test_the_same_run_twice_with_the_recorded_threads_gives_identical_metrics(finished, threads_seen):
    path, results = finished
    suite, _ = load_suite(str(path))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # this process's setting differs from the record's 1 thread
    try:
        checks = verify(suite, results, limit=LIMIT)
    finally:
        torch.set_num_threads(before)
    assert [c.status for c in checks] == [REPRODUCED], checks
    assert threads_seen == [(1, True)]  # the rerun used the recorded settings, not the process's
    assert "metrics equal" in checks[0].detail and "1 threads" in checks[0].detail


def _tampered(finished, tmp_path, change) -> Path:
    path, results = finished
    copy = tmp_path / "results"
    subprocess.run(["cp", "-r", str(results), str(copy)], check=True)
    record_file = next((copy / FOLDER / "runs").glob("*.json"))
    record = json.loads(record_file.read_text())
    change(record)
    record_file.write_text(json.dumps(record))
    return copy


def test_verify_fails_on_a_metric_that_differs(finished, tmp_path, capsys):
    copy = _tampered(finished, tmp_path, lambda r: r["metrics"].update(top1=r["metrics"]["top1"] + 0.01))
    assert main(["verify", str(finished[0]), "--results", str(copy), "--limit", str(LIMIT)]) == 1
    out = capsys.readouterr().out
    assert DIFFERS in out and "top1" in out and "Δ -0.01" in out
    assert main(["verify", str(finished[0]), "--results", str(copy), "--limit", str(LIMIT), "--tolerance", "0.02"]) == 0


# a CPU kernel level other than this machine's (a record "from another stack")
OTHER_CAPABILITY = "AVX2" if torch.backends.cpu.get_cpu_capability() == "AVX512" else "AVX512"


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["environment"]["packages"].update(torch="2.15.0"), "torch 2.15.0 (here"),
    (lambda r: r["environment"].update(cpu_capability=OTHER_CAPABILITY), f"cpu_capability {OTHER_CAPABILITY} (here"),
    (lambda r: r["environment"].update(cpu="Another CPU"), "cpu Another CPU (here"),
    (lambda r: r["environment"].pop("threads"), "recorded with no thread settings"),
])
def test_verify_says_when_a_record_comes_from_another_stack(finished, tmp_path, capsys, threads_seen, change, reason):
    copy = _tampered(finished, tmp_path, change)
    assert main(["verify", str(finished[0]), "--results", str(copy), "--limit", str(LIMIT)]) == 1
    out = capsys.readouterr().out
    assert OTHER_STACK in out and reason in out
    assert threads_seen == []  # not rerun: it could not be compared
    assert main(["verify", str(finished[0]), "--results", str(copy), "--limit", str(LIMIT), "--skip-other-stacks"]) == 0


def test_verify_fails_for_a_family_without_records(tmp_path):
    path = tiny_suite(tmp_path)
    suite, _ = load_suite(str(path))
    checks = verify(suite, tmp_path / "nothing", limit=LIMIT)
    assert [(c.status, c.name) for c in checks] == [(FAILED, "image_classification")]


def test_verify_picks_the_cheapest_records_per_family():
    def record(key, seconds):
        return {"key": key, "status": "ok", "timings": {"total_s": seconds}}

    class Task:
        def __init__(self, type_):
            self.type = type_

    class Run:
        def __init__(self, key, type_):
            self.key, self.task = key, Task(type_)

    runs = [Run("a", "vision"), Run("b", "vision"), Run("c", "vision"), Run("d", "text")]
    records = [record("a", 9.0), record("b", 3.0), record("c", 3.0), record("d", 5.0), {"key": "x", "status": "ok"}]
    picked = verify_module.cheapest_per_family(runs, records, 2)
    assert [run.key for run, _ in picked] == ["b", "c", "d"]


# ------------------------------------------------------------------ committed results, dirty tree


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout standing in for the project's: one committed file, results/ beside it."""
    root = tmp_path / "checkout"
    (root / "namex_bench").mkdir(parents=True)
    (root / "namex_bench" / "code.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    monkeypatch.setattr(environment, "project_root", lambda: root.resolve())
    return root


def test_git_state_separates_the_commit_from_its_changes_outside_results(checkout):
    commit, changes = environment.git_state()
    assert len(commit) == 40 and changes == []
    (checkout / "results" / "quickstart").mkdir(parents=True)
    (checkout / "results" / "quickstart" / "leaderboard.md").write_text("written by runs\n")
    assert environment.git_state() == (commit, [])
    (checkout / "namex_bench" / "code.py").write_text("x = 2\n")
    (checkout / "namex_bench" / "new_method.py").write_text("y = 1\n")
    assert environment.git_state() == (commit, [" M namex_bench/code.py", "?? namex_bench/new_method.py"])


def test_run_refuses_the_committed_results_from_a_dirty_tree(checkout, tmp_path, capsys, monkeypatch):
    path = tiny_suite(tmp_path)
    (checkout / "namex_bench" / "code.py").write_text("x = 2\n")
    assert main(["run", str(path), "--results", str(checkout / "results"), "--limit", str(LIMIT)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "uncommitted changes (namex_bench/code.py)" in err and "--allow-dirty" in err
    assert not (checkout / "results").exists()
    calls = []
    monkeypatch.setattr(runner_module, "run_suite", lambda *a, **k: calls.append(a) or runner_module.RunSummary())
    assert main(["run", str(path), "--results", str(checkout / "results"), "--limit", str(LIMIT), "--allow-dirty", "--no-report"]) == 0
    assert main(["run", str(path), "--results", str(tmp_path / "elsewhere"), "--limit", str(LIMIT), "--no-report"]) == 0
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "c2"], cwd=checkout, check=True)
    assert main(["run", str(path), "--results", str(checkout / "results"), "--limit", str(LIMIT), "--no-report"]) == 0
    assert len(calls) == 3
