"""Reliability: no fault stops a suite for good, nothing is written outside the results folder,
and every bad input gets one clear message before compute is spent.

Faults are injected by monkeypatching (a metric that turns NaN, a disk that fills up, a
kill between two steps) on the tiny suite of ``test_runner.py`` (a 2-block ViT-MoE on 64
real MNIST digits, under a second a run); processes are real where the fault is about
processes (orphaned workers).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from test_runner import FOLDER, LIMIT, record_files, records_by_name, run, summary_line, write_suite
from test_suite_validation import TINY, assert_one_clean_error, edit, line_of, validate

from namex_bench.cli import main
from namex_bench.data import mnist5k
from namex_bench.report.write import write_report
from namex_bench.runner import runner as runner_module
from namex_bench.runner.records import read_records, write_json_atomic
from namex_bench.tasks import task_runner

# What this file pins is new; it imports it inside each test, so that on a version without it
# every test fails on its own account rather than the whole file on an import.

RUNS = f"{FOLDER}/runs"


PROGRESS_LINE = re.compile(r"^[\w.-]+: +\d+% \d+/\d+ \[")  # namex_bench/progress.py's lines in a log


def one_error_line(capsys) -> str:
    """The one line of stderr besides progress lines (a suite's run count as it starts)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if not PROGRESS_LINE.match(line)]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def patched_tasks(monkeypatch):
    """Wrap the real task runner: ``before(method, seed, call)`` runs first (it may raise, or send a
    signal), ``after(result, method, seed)`` may alter the result. Returns the ``(method, seed)`` calls."""

    def install(before=None, after=None):
        calls = []

        def runner_for(task_type):
            real = task_runner(task_type)

            def run_task(task, model, method, seed, ctx):
                calls.append((method.display, seed))
                if before is not None:
                    before(method.display, seed, len(calls))
                result = real(task, model, method, seed, ctx)
                if after is not None:
                    after(result, method.display, seed)
                return result

            return run_task

        monkeypatch.setattr(runner_module, "task_runner", runner_for)
        return calls

    return install


# ------------------------------------------------------------------------------ 1. non-finite metrics


def test_a_non_finite_metric_is_a_failed_run_and_the_suite_goes_on(tmp_path, capsys, monkeypatch, patched_tasks):
    path, results = write_suite(tmp_path), tmp_path / "results"

    def nan_top1(result, method, seed):
        if (method, seed) == ("namex_mom", 0):
            result.metrics["top1"] = float("nan")

    patched_tasks(after=nan_top1)
    assert run(path, results) == 1
    out = capsys.readouterr().out
    assert "3 runs finished, 0 already done, 1 failed (of 4)" in summary_line(out)
    failed = records_by_name(results)["namex_mom/vit_tiny/mnist/seed0"]
    assert failed["status"] == "failed" and failed["error"]["type"] == "InvalidMetricError"
    assert "'top1'" in failed["error"]["message"] and "not finite" in failed["error"]["message"]
    assert (results / FOLDER / "leaderboard.md").is_file()

    monkeypatch.undo()  # the fault is gone: the rerun redoes that run only
    assert run(path, results) == 0
    assert "1 runs finished, 3 already done" in summary_line(capsys.readouterr().out)


def test_results_that_json_cannot_hold_make_a_failed_run_saying_where(tmp_path, capsys, patched_tasks):
    path, results = write_suite(tmp_path, methods=("smear",)), tmp_path / "results"

    def damage(result, method, seed):
        if seed == 0:
            result.cells["extra"] = [{"error": 0.5}, {"error": float("inf")}]
        else:
            result.metrics["top5"] = "0.9"  # a metric that is not a number

    patched_tasks(after=damage)
    assert run(path, results) == 1
    by_name = records_by_name(results)
    assert by_name["smear/vit_tiny/mnist/seed0"]["error"]["type"] == "RecordError"
    assert "cells.extra[1].error is inf" in by_name["smear/vit_tiny/mnist/seed0"]["error"]["message"]
    assert "metrics" not in by_name["smear/vit_tiny/mnist/seed0"]
    seed1 = by_name["smear/vit_tiny/mnist/seed1"]["error"]
    assert seed1["type"] == "InvalidMetricError" and "'top5' is not a number ('0.9')" in seed1["message"]


# ------------------------------------------------------------------------------ 2. nothing outside the results folder


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "${HOME}", '""', '"."', "..", "a b"])
def test_a_suite_name_is_a_plain_identifier(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", "/root")
    path = tmp_path / "bad.yaml"
    path.write_text(edit("name: tiny", f"name: {name}"))
    line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
    assert line.startswith(f"namex-bench: error: {path}: name: a suite name is a plain identifier"), line
    assert line.endswith("(line 1)")
    assert main(["run", str(path), "--results", str(tmp_path / "results")]) == 2
    assert not (tmp_path / "results").exists() and not (tmp_path / "x").exists()


def test_every_path_written_is_checked_to_lie_inside_the_results_folder(tmp_path, capsys):
    from namex_bench.runner.records import inside

    results = tmp_path / "results"
    assert inside(results, "tiny", "runs", "k.json") == results / "tiny" / "runs" / "k.json"
    for parts in (("..", "x"), ("/etc", "passwd"), ("tiny", "..", "..", "x"), ()):
        with pytest.raises(ValueError, match="not inside the results folder"):
            inside(results, *parts)
    # `report` takes a folder name, not a path
    (tmp_path / "outside" / "runs").mkdir(parents=True)
    assert main(["report", "../outside", "--results", str(results)]) == 2
    assert "plain identifier" in one_error_line(capsys)
    assert list((tmp_path / "outside").iterdir()) == [tmp_path / "outside" / "runs"]


# ------------------------------------------------------------------------------ 3. damaged records


DAMAGED = {
    "an empty object": (b"{}", "field 'schema' is missing"),
    "a list": (b"[]", "holds a list ([]), not a JSON object"),
    "null": (b"null", "holds null (None), not a JSON object"),
    "binary bytes": (b"\x89PNG\r\n\x1a\n\x00\xff", "is not UTF-8 text"),
    "no name": (None, "field 'name' is missing"),
    "a metric stored as a string": (None, "metric 'top1' is a string ('0.9'), not a number"),
}


def damage(record: dict, case: str) -> bytes:
    if DAMAGED[case][0] is not None:
        return DAMAGED[case][0]
    record = dict(record)
    if case == "no name":
        del record["name"]
    else:
        record["metrics"] = {**record["metrics"], "top1": "0.9"}
    return json.dumps(record).encode()


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory):
    """A finished run of the tiny suite (2 methods × 2 seeds), copied by each test that damages it."""
    root = tmp_path_factory.mktemp("finished")
    path = write_suite(root)
    assert run(path, root / "results", "--no-report") == 0
    return path, root / "results"


def copy_results(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_record_is_one_line_naming_the_file_and_the_way_out(case, finished_suite, tmp_path, capsys, patched_tasks):
    path, source = finished_suite
    results = copy_results(source, tmp_path / "results")
    victim = sorted(record_files(results).values())[0]
    victim.write_bytes(damage(json.loads(victim.read_text()), case))
    capsys.readouterr()

    for argv in (["report", FOLDER, "--results", str(results)], ["report", FOLDER, "--check", "--results", str(results)]):
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert f"run record {victim} is damaged: {DAMAGED[case][1]}" in line, line
        assert "move it away" in line and "--skip-damaged" in line
    calls = patched_tasks()
    assert run(path, results) == 2  # before any run starts
    assert str(victim) in one_error_line(capsys) and calls == []

    # --skip-damaged: the report lists it as a failed run; the run redoes it, and its new record replaces the file
    assert main(["report", FOLDER, "--results", str(results), "--skip-damaged"]) == 0
    board = (results / FOLDER / "leaderboard.md").read_text()
    assert f"1 damaged run record, counted as failed runs:** `runs/{victim.name}`" in board
    capsys.readouterr()
    assert run(path, results, "--skip-damaged") == 0  # redone
    assert "1 runs finished, 3 already done" in summary_line(capsys.readouterr().out)
    assert json.loads(victim.read_text())["status"] == "ok"
    assert main(["report", FOLDER, "--results", str(results)]) == 0
    assert "damaged" not in (results / FOLDER / "leaderboard.md").read_text()


# ------------------------------------------------------------------------------ 4. records of an older configuration


def test_records_of_an_older_configuration_are_not_counted_and_check_says_so(tmp_path, capsys):
    """After a suite change a partial (--shard) rerun leaves records of both configurations;
    the leaderboard counts only the current ones, says so, and `report --check` fails."""
    from namex_bench.runner.records import CURRENT_RUNS

    results = tmp_path / "results"
    old_path = write_suite(tmp_path / "old", lr="1.0e-3")
    assert run(old_path, results) == 0
    old = records_by_name(results)
    new_path = write_suite(tmp_path / "new", lr="2.0e-3")
    assert run(new_path, results, "--shard", "1/2") == 0
    current = json.loads((results / FOLDER / CURRENT_RUNS).read_text())["runs"]
    assert len(current) == 4 and not set(current) & {r["key"] for r in old.values()}
    by_name = records_by_name(results)
    outdated = sorted(n for n, r in by_name.items() if r["key"] not in current)
    assert 0 < len(outdated) < 4  # both shards hold runs of this suite (fixed keys: not flaky)
    capsys.readouterr()

    board = (results / FOLDER / "leaderboard.md").read_text()
    assert f"Generated from {4 - len(outdated)} run record" in board
    assert f"**Not counted: {len(outdated)} run record" in board and f"`{outdated[0]}`" in board
    assert main(["report", FOLDER, "--check", "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "older configuration" in err and "not up to date" in err

    assert run(new_path, results, "--shard", "2/2") == 0  # the other shard: every record is current again
    capsys.readouterr()
    assert main(["report", FOLDER, "--check", "--results", str(results)]) == 0
    assert "Not counted" not in (results / FOLDER / "leaderboard.md").read_text()


# ------------------------------------------------------------------------------ 5. an interrupted supersede


def test_a_kill_between_the_new_record_and_the_supersede_is_healed_on_resume(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    assert run(write_suite(tmp_path / "a", methods=("smear",), seeds=(0,), lr="1.0e-3"), results) == 0
    [old] = record_files(results)
    new_path = write_suite(tmp_path / "b", methods=("smear",), seeds=(0,), lr="2.0e-3")

    def killed(results_root, folder, keys):
        if keys:
            raise KeyboardInterrupt  # the process dies right after the new record is written
        return []

    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "supersede", killed)
        assert run(new_path, results, "--no-report") == 130
    assert len(record_files(results)) == 2  # two successful records of one run
    capsys.readouterr()
    assert main(["report", FOLDER, "--results", str(results)]) == 0  # the old one is not counted
    assert run(new_path, results) == 0  # resume heals it
    [new] = record_files(results)
    assert new != old and (results / RUNS / "superseded" / f"{old}.json").is_file()
    assert "0 runs finished, 1 already done" in summary_line(capsys.readouterr().out)


# ------------------------------------------------------------------------------ 6. write failures


def test_results_that_are_a_file_are_refused_before_any_run(tmp_path, capsys, patched_tasks):
    calls = patched_tasks()
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("a file")
    assert run(write_suite(tmp_path), not_a_folder) == 2
    line = one_error_line(capsys)
    assert "is not writable" in line and "nothing has run" in line and calls == []


def test_a_read_only_results_folder_is_refused_before_any_run(tmp_path, capsys, monkeypatch, patched_tasks):
    calls = patched_tasks()
    results = tmp_path / "results"
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and str(results) in str(dir):
            raise PermissionError(errno.EACCES, "Permission denied (simulated)", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert run(write_suite(tmp_path), results) == 2
    line = one_error_line(capsys)
    assert f"the results folder {results / RUNS} is not writable (Permission denied (simulated))" in line
    assert "nothing has run" in line and calls == []


def test_a_full_disk_after_a_run_is_one_message_and_earlier_records_stay(tmp_path, capsys, monkeypatch):
    path, results = write_suite(tmp_path), tmp_path / "results"
    real_replace, replaced = os.replace, []

    def disk_full_at_the_third_record(src, dst, *args, **kwargs):
        if str(dst).endswith(".json") and "/runs/" in str(dst):
            replaced.append(dst)
            if len(replaced) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", disk_full_at_the_third_record)
    assert run(path, results) == 2
    line = one_error_line(capsys)
    assert "cannot write the record of run namex_mom/vit_tiny/mnist/seed0" in line and "No space left on device" in line
    assert "every record written before is intact" in line and "rerun to resume" in line
    assert sorted(records_by_name(results)) == ["smear/vit_tiny/mnist/seed0", "smear/vit_tiny/mnist/seed1"]
    assert not list(results.rglob("*.tmp"))
    monkeypatch.undo()
    assert run(path, results) == 0
    assert "2 runs finished, 2 already done" in summary_line(capsys.readouterr().out)


# ------------------------------------------------------------------------------ 7. signals and orphaned workers


class SigtermWasNotHandled(Exception):
    pass


def test_sigterm_stops_the_runner_like_ctrl_c(tmp_path, capsys, monkeypatch, patched_tasks):
    """What a scheduler sends: exit status 143, one line, finished runs kept, resumable."""

    def unhandled(signum, frame):  # what happens when the runner installs no handler of its own
        raise SigtermWasNotHandled()

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        path, results = write_suite(tmp_path), tmp_path / "results"

        def sigterm_in_the_second_run(method, seed, call):
            if call == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return False

        patched_tasks(before=sigterm_in_the_second_run)
        assert run(path, results) == 143
        line = one_error_line(capsys)
        assert line.startswith("namex-bench: terminated (SIGTERM); finished runs are kept in") and "rerun to resume" in line
        assert signal.getsignal(signal.SIGTERM) is unhandled  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [r["status"] for r in read_records(results, FOLDER)] == ["ok"]
    monkeypatch.undo()
    assert run(path, results) == 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_corruption_workers_die_with_the_process_that_started_them(tmp_path):
    """kill -9 of the runner mid-computation: its pool workers, the fork server and the resource
    tracker exit too (each worker holds ~600 MB in real runs)."""
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import time
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import forkserver, resource_tracker
        from namex_bench.corruptions.cache import _init_worker, process_context

        pool = ProcessPoolExecutor(max_workers=2, mp_context=process_context(), initializer=_init_worker)
        futures = [pool.submit(time.sleep, 120) for _ in range(4)]
        while len(pool._processes) < 2:
            time.sleep(0.1)
        time.sleep(1)
        helpers = [getattr(forkserver._forkserver, "_forkserver_pid", None),  # None under spawn
                   getattr(resource_tracker._resource_tracker, "_pid", None)]
        print(*pool._processes, *[p for p in helpers if p], flush=True)
        time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    pids: list[int] = []
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) >= 2, pids
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "processes outlived the killed parent"
    finally:
        parent.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------ 8, 9. validation gaps, alias bombs


def _bomb(levels: int) -> str:
    lines = ['x0: &x0 ["a", "a", "a", "a", "a", "a", "a", "a", "a"]']
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def _latin1(tmp_path: Path) -> bytes:
    return edit("a tiny suite for the validation tests", "caf\u00e9 cr\u00e8me").encode("latin-1")


# id -> (suite text, field named or None, fragments, the line's marker or None)
INVALID = {
    "infinite epochs": (edit("epochs: 1", "epochs: .inf"), "tasks[0].train.epochs", ["finite number", "inf"], "epochs: .inf"),
    "epochs beyond the sanity limit": (
        edit("epochs: 1", "epochs: 1e12"), "tasks[0].train.epochs", ["less than or equal to 10000"], "epochs: 1e12"),
    "more steps than a run may take": (
        edit("epochs: 1", "epochs: 9000").replace("batch_size: 16", "batch_size: 1"), "tasks[0].train.epochs",
        ["36,000,000 training steps", "10,000,000"], "epochs: 9000"),
    "warmup beyond the run's steps": (
        edit("lr: 1.0e-3", "lr: 1.0e-3\n      warmup_steps: 251"), "tasks[0].train.warmup_steps",
        ["251 warmup steps", "only 250 steps", "4000 examples"], "warmup_steps: 251"),
    "a negative seed": (edit("seeds: [0, 1]", "seeds: [0, -1]"), "seeds[1]", ["integer from 0 to 4294967295", "-1"], "seeds:"),
    "a seed beyond 2**32 - 1": (edit("seeds: [0, 1]", "seeds: [4294967296]"), "seeds[0]", ["4294967296"], "seeds:"),
    "a boolean as a seed": (edit("seeds: [0, 1]", "seeds: [true, 1]"), "seeds[0]", ["got True"], "seeds:"),
    "a method option out of range": (
        edit("  - name: namex_mom", "  - name: namex_mom\n    options: {nbs_iters: -5}"), "methods[1].options",
        ["nbs_iters must be a positive integer, got -5"], "options: {nbs_iters: -5}"),
    "a beta out of range": (
        edit("lr: 1.0e-3", "lr: 1.0e-3\n      betas: [0.9, 1.5]"), "tasks[0].train.betas[1]", ["less than 1"], "betas:"),
    "a duplicate key": (
        edit("      lr: 1.0e-3", "      lr: 1.0e-3\n      lr: 5.0"), "tasks[0].train.lr",
        [f"duplicate key 'lr' (first on line {line_of(TINY, 'lr: 1.0e-3')})", "keep only the last"], "lr: 5.0"),
    "a relative plugin": (
        edit("reference: smear", "reference: smear\nplugins: ['.x']"), "plugins[0]", ["'.x' is not a module name"], "plugins:"),
    "an empty plugin": (
        edit("reference: smear", "reference: smear\nplugins: ['']"), "plugins[0]", ["'' is not a module name"], "plugins:"),
    "a Latin-1 file": (_latin1, None, ["not UTF-8 text (byte 0xe9", "save the file as UTF-8"], "description:"),
    "an alias bomb": (_bomb(6), "x5", ["expands to more than 100,000 values"], None),
    "a recursive alias": ("a: &a [1, *a]\n", "a[1]", ["refers to a node that contains it"], None),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_validation_gap_is_one_clean_error(case, tmp_path, capsys):
    text, field, fragments, marker = INVALID[case]
    text = text(tmp_path) if callable(text) else text
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
    if field is not None:
        assert line.startswith(f"namex-bench: error: {path}: {field}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    if marker is not None:
        decoded = text.decode("latin-1") if isinstance(text, bytes) else text
        assert line.endswith(f"(line {line_of(decoded, marker)})"), line


def test_an_alias_bomb_is_refused_by_counting_nodes_not_by_expanding_them(tmp_path, capsys, monkeypatch):
    """9 levels of 9 aliases (a 450-byte file) would expand to 387 million values: refused
    after visiting its 90 distinct nodes; the environment walk never sees the tree."""
    from namex_bench.suite import loader

    seen = []
    monkeypatch.setattr(loader, "expand_environment", lambda *args: seen.append(args) or args[0])
    text = "name: bomb\n" + _bomb(9) + "\n"
    assert len(text) < 500
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    line = assert_one_clean_error(*validate(path, capsys)[::2], file=str(path))
    assert "expands to more than" in line and seen == []


def test_a_large_alias_free_suite_stays_within_the_bound(tmp_path, capsys):
    """Under 100 KB of YAML without aliases is far below MAX_YAML_VALUES; anchors the quickstart uses stay legal."""
    seeds = ", ".join(str(i) for i in range(14_000))
    text = edit("seeds: [0, 1]", f"seeds: [{seeds}]")
    assert len(text) < 100_000
    path = tmp_path / "big.yaml"
    path.write_text(text)
    code, out, err = validate(path, capsys)
    assert code == 0, err
    assert "= 28000 runs" in out


# ------------------------------------------------------------------------------ 10. temporary files, caches, permissions, locks


def test_temporary_files_of_interrupted_writes_are_removed_on_the_next_run(tmp_path, capsys):
    from namex_bench import files

    path, results = write_suite(tmp_path, methods=("smear",), seeds=(0,)), tmp_path / "results"
    orphans = [results / RUNS / ".0123456789abcdef.json.k1l2m3.tmp", results / FOLDER / "plots" / ".mnist__vit_tiny.png.a1b2.tmp",
               results / FOLDER / "tables" / ".mnist__vit_tiny.csv.c3d4.tmp", results / FOLDER / ".leaderboard.md.e5f6.tmp"]
    for orphan in orphans:
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"half a file")
    busy = results / RUNS / ".fedcba9876543210.json.n4o5.tmp"  # another process is writing this one
    busy.write_bytes(b"being written")
    with files.exclusive_lock(busy):
        assert run(path, results) == 0
    assert not [o for o in orphans if o.exists()] and busy.exists()
    assert capsys.readouterr().out.count("the temporary file of a write that was interrupted") == len(orphans)


def test_a_writer_whose_temporary_file_was_removed_before_it_locked_it_starts_over(tmp_path, monkeypatch):
    from namex_bench import files

    real_mkstemp, made = tempfile.mkstemp, []

    def mkstemp_then_cleanup_races(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(name)
        if len(made) == 1:
            files.remove_orphaned_temp_files(Path(name).parent)  # not locked yet: taken for an orphan
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_cleanup_races)
    files.write_bytes_atomic(tmp_path / "out.json", b"{}")
    assert (tmp_path / "out.json").read_bytes() == b"{}" and len(made) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_damaged_mnist_cache_is_named_and_rebuilt(tmp_path, monkeypatch):
    images, labels = mnist5k.mnist5k_arrays()
    cache = tmp_path / "mnist_5k.npz"
    monkeypatch.setattr(mnist5k, "_arrays_cache_path", lambda: cache)
    mnist5k.mnist5k_arrays()  # builds the cache here
    whole = cache.read_bytes()
    for damaged in (whole[: len(whole) // 2], whole[:-40] + bytes(40), b"not a zip at all"):
        cache.write_bytes(damaged)
        with pytest.warns(UserWarning, match=f"the MNIST-5k cache {cache} is damaged"):
            again = mnist5k.mnist5k_arrays()
        assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)
        assert cache.read_bytes() == whole  # rebuilt
    np.savez_compressed(cache, images=images[:10], labels=labels[:10])  # sound file, wrong content
    with pytest.warns(UserWarning, match="expected uint8 images of shape"):
        assert len(mnist5k.mnist5k_arrays()[0]) == 5000


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_records_reports_and_extracted_data_get_the_umask_permissions(tmp_path, umask_022):
    from namex_bench.data import archives

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    write_json_atomic(tmp_path / "record.json", {"a": 1})
    assert mode(tmp_path / "record.json") == 0o644
    archives._write_atomic(io.BytesIO(b"member"), tmp_path / "members" / "x.csv")
    assert mode(tmp_path / "members" / "x.csv") == 0o644
    os.umask(0o007)
    write_json_atomic(tmp_path / "shared.json", {"a": 1})
    assert mode(tmp_path / "shared.json") == 0o660


def test_the_report_is_readable_by_colleagues(finished_suite, tmp_path, umask_022):
    results = copy_results(finished_suite[1], tmp_path / "results")
    for written in write_report(results, FOLDER):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644, written


def test_a_run_another_process_is_executing_is_left_to_it(tmp_path, capsys, patched_tasks):
    """Two processes running the same shard: the one that holds a run's lock executes it, the other skips it."""
    from namex_bench import files
    from namex_bench.runner.records import inside
    from namex_bench.suite.expand import expand
    from namex_bench.suite.loader import load_suite

    path, results = write_suite(tmp_path), tmp_path / "results"
    suite, _ = load_suite(str(path))
    busy = next(r for r in expand(suite, int(LIMIT)) if r.name == "namex_mom/vit_tiny/mnist/seed0")
    calls = patched_tasks()
    with files.exclusive_lock(inside(results, FOLDER, ".locks", f"{busy.key}.lock")):  # "another process" holds it
        assert run(path, results, "--no-report") == 0
    assert ("namex_mom", 0) not in calls and len(calls) == 3
    out = capsys.readouterr().out
    assert "3 runs finished, 0 already done, 0 failed, 1 left to another process running them (of 4)" in summary_line(out)
    assert busy.key not in record_files(results)
    assert run(path, results, "--no-report") == 0  # the lock is free again: the run is done now
    assert "1 runs finished, 3 already done" in summary_line(capsys.readouterr().out)
