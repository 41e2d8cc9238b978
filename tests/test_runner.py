"""The runner: complete records, resumable and shardable runs, atomic writes, failures recorded.

Every test runs a tiny suite in process (a 3-block ViT-MoE of width 16 on 64 real
MNIST digits, one epoch of 4 steps: well under a second a run) through
``namex_bench.cli.main``, with its results in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from namex_bench.cli import main
from namex_bench.methods import registry
from namex_bench.runner import records as records_module
from namex_bench.runner import runner as runner_module
from namex_bench.runner.records import finished_keys, read_records, run_key, write_json_atomic
from namex_bench.suite.expand import expand, identity, parse_shard, resolved_options, shard
from namex_bench.suite.loader import load_suite
from namex_bench.suite.schema import MethodEntry
from namex_bench.tasks import task_runner

LIMIT = "64"
MODEL = "{patch_size: 14, embed_dim: 16, depth: 3, num_heads: 2, mlp_ratio: 2.0, moe_blocks: every, num_experts: 2}"


def suite_text(name="tiny", methods=("smear", "namex_mom"), seeds=(0, 1), lr="1.0e-3", plugins=(), device="cpu",
               method_options=None, model=MODEL, runtime=None):
    method_options = method_options or {}
    lines = [f"name: {name}", f"seeds: [{', '.join(map(str, seeds))}]", f"device: {device}", f"reference: {methods[0]}"]
    if runtime:
        lines.append(f"runtime: {runtime}")
    if plugins:
        lines.append(f"plugins: [{', '.join(plugins)}]")
    lines.append("methods:")
    for method in methods:
        lines.append(f"  - name: {method}")
        if method in method_options:
            lines.append(f"    options: {method_options[method]}")
    lines += [
        "models:",
        "  - name: vit_tiny",
        "    builder: vit_moe",
        f"    params: {model}",
        "tasks:",
        "  - name: mnist",
        "    type: image_classification",
        "    data: {source: mnist5k}",
        f"    train: {{epochs: 1, batch_size: 16, lr: {lr}}}",
    ]
    return "\n".join(lines) + "\n"


def write_suite(directory: Path, filename="tiny.yaml", **kwargs) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(suite_text(**kwargs))
    return path


def run(path: Path, results: Path, *extra: str) -> int:
    return main(["run", str(path), "--results", str(results), "--limit", LIMIT, *extra])


# --limit smoke runs keep their records in <suite>-limit<N>
FOLDER = f"tiny-limit{LIMIT}"


def records_by_name(results: Path, suite=FOLDER) -> dict[str, dict]:
    return {r["name"]: r for r in read_records(results, suite)}


def record_files(results: Path, suite=FOLDER) -> dict[str, Path]:
    return {p.stem: p for p in (results / suite / "runs").glob("*.json")}


def summary_line(out: str, suite="tiny") -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{suite}: "))


@pytest.fixture
def failing_task_runner(monkeypatch):
    """Make the runs for which ``fails(method, seed)`` holds raise ``exc`` (a factory)."""

    def install(fails, exc=lambda: RuntimeError("boom on purpose")):
        calls = []

        def runner_for(task_type):
            real = task_runner(task_type)

            def run_task(task, model, method, seed, ctx):
                calls.append((method.display, seed))
                if fails(method.display, seed, len(calls)):
                    raise exc()
                return real(task, model, method, seed, ctx)

            return run_task

        monkeypatch.setattr(runner_module, "task_runner", runner_for)
        return calls

    return install


# ------------------------------------------------------------------------------ end to end


def test_run_writes_one_complete_record_per_run_and_the_report(tmp_path, capsys):
    path = write_suite(tmp_path)
    results = tmp_path / "results"
    assert run(path, results) == 0
    out = capsys.readouterr().out
    assert "4 runs finished, 0 already done, 0 failed (of 4)" in summary_line(out)

    suite, _ = load_suite(str(path))
    expected = {r.key: r for r in expand(suite, int(LIMIT))}
    files = record_files(results)
    assert set(files) == set(expected)
    namex_defaults = resolved_options(MethodEntry(name="namex_mom"))
    assert "momentum_radius" in namex_defaults
    for key, file in files.items():
        record = json.loads(file.read_text())
        spec = expected[key]
        assert record["schema"] == 1 and record["key"] == key == run_key(identity(record["config"]))
        assert record["status"] == "ok" and record["error"] is None
        assert record["suite"] == "tiny" and record["name"] == spec.name and record["reference"] == "smear"
        config = record["config"]
        assert config == spec.config
        assert config["limit"] == 64 and config["seed"] == spec.seed
        # resolved: the method's option defaults and the builder's parameter defaults are in the config
        if config["method"]["name"] == "namex_mom":
            assert config["method"]["options"] == namex_defaults
        params = config["model"]["params"]
        assert params["embed_dim"] == 16 and {"top_k", "pooling", "aux_loss", "aux_loss_coef", "drop_rate"} <= set(params)
        assert config["task"]["train"]["epochs"] == 1 and "warmup_steps" in config["task"]["train"]
        assert config["task"]["eval"]["batch_size"] > 0
        env = record["environment"]
        assert env["python"] == sys.version.split()[0]
        assert torch.__version__.startswith(env["packages"]["torch"])
        assert env["device"].startswith("cpu") and env["world_size"] == 1 and "git_commit" in env
        timings = record["timings"]
        assert timings["train_steps"] == 4  # 64 examples, batches of 16, one epoch
        assert all(timings[k] >= 0 for k in ("train_s", "eval_s", "step_s", "total_s"))
        assert timings["total_s"] >= timings["train_s"] + timings["eval_s"]
        assert record["params"]["total"] >= record["params"]["active_per_token"] > 0
        metrics = record["metrics"]
        assert set(metrics) == {"top1", "top5", "loss", "train_loss", "clean_error"}
        assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and metrics["loss"] > 0
        assert record["goals"] == {"top1": "max", "top5": "max", "loss": "min", "train_loss": "min", "clean_error": "min"}
        assert record["primary"] == "top1"

    report = results / FOLDER
    for name in ("leaderboard.md", "tables/mnist__vit_tiny.csv", "tables/mnist__vit_tiny.tex",
                 "tables/mnist__vit_tiny__paired.csv", "plots/mnist__vit_tiny.png"):
        assert (report / name).is_file(), name
    board = (report / "leaderboard.md").read_text()
    assert "smear" in board and "namex_mom" in board


def test_resumed_suite_runs_only_the_missing_run_and_gives_the_same_report(tmp_path, capsys):
    path = write_suite(tmp_path)
    complete, resumed = tmp_path / "complete", tmp_path / "resumed"
    assert run(path, complete) == 0
    assert run(path, resumed) == 0
    capsys.readouterr()
    # training is seeded: the same run gives the same metrics, bit for bit
    assert {n: r["metrics"] for n, r in records_by_name(complete).items()} == {
        n: r["metrics"] for n, r in records_by_name(resumed).items()
    }

    files = record_files(resumed)
    victim = sorted(files)[1]
    deleted = json.loads(files[victim].read_text())
    files[victim].unlink()
    others = {k: os.stat(p).st_mtime_ns for k, p in files.items() if k != victim}
    assert run(path, resumed) == 0
    assert "1 runs finished, 3 already done, 0 failed (of 4)" in summary_line(capsys.readouterr().out)
    assert {k: os.stat(p).st_mtime_ns for k, p in record_files(resumed).items() if k != victim} == others
    assert json.loads(files[victim].read_text())["metrics"] == deleted["metrics"]
    assert (resumed / FOLDER / "leaderboard.md").read_bytes() == (complete / FOLDER / "leaderboard.md").read_bytes()

    # nothing left to do: nothing runs, nothing is rewritten
    mtimes = {k: os.stat(p).st_mtime_ns for k, p in record_files(resumed).items()}
    assert run(path, resumed) == 0
    assert "0 runs finished, 4 already done" in summary_line(capsys.readouterr().out)
    assert {k: os.stat(p).st_mtime_ns for k, p in record_files(resumed).items()} == mtimes


def test_interrupted_suite_keeps_finished_runs_and_resumes(tmp_path, capsys, monkeypatch, failing_task_runner):
    path = write_suite(tmp_path)
    results = tmp_path / "results"
    failing_task_runner(lambda method, seed, call: call == 2, exc=KeyboardInterrupt)  # Ctrl-C in the 2nd run
    assert run(path, results) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    [record] = read_records(results, FOLDER)
    assert record["status"] == "ok" and record["name"] == "smear/vit_tiny/mnist/seed0"
    assert not list(results.rglob("*.tmp"))

    monkeypatch.undo()  # the next invocation is not interrupted
    assert run(path, results) == 0
    assert "3 runs finished, 1 already done, 0 failed (of 4)" in summary_line(capsys.readouterr().out)
    assert {r["status"] for r in read_records(results, FOLDER)} == {"ok"} and len(read_records(results, FOLDER)) == 4


def test_failed_run_is_recorded_and_the_suite_goes_on(tmp_path, capsys, monkeypatch, failing_task_runner):
    path = write_suite(tmp_path)
    results = tmp_path / "results"
    failing_task_runner(lambda method, seed, call: (method, seed) == ("namex_mom", 0))
    assert run(path, results) == 1
    out = capsys.readouterr().out
    assert "3 runs finished, 0 already done, 1 failed (of 4)" in summary_line(out)
    assert "failed: namex_mom/vit_tiny/mnist/seed0" in out
    by_name = records_by_name(results)
    failed = by_name["namex_mom/vit_tiny/mnist/seed0"]
    assert failed["status"] == "failed" and "metrics" not in failed
    assert failed["error"]["type"] == "RuntimeError" and failed["error"]["message"] == "boom on purpose"
    assert "Traceback" in failed["error"]["traceback"] and "boom on purpose" in failed["error"]["traceback"]
    assert failed["config"]["seed"] == 0 and "total_s" in failed["timings"]
    assert [r["status"] for n, r in sorted(by_name.items()) if n != failed["name"]] == ["ok"] * 3
    assert failed["key"] not in finished_keys(read_records(results, FOLDER))
    assert "namex_mom/vit_tiny/mnist/seed0" in (results / FOLDER / "leaderboard.md").read_text()  # listed as failed

    monkeypatch.undo()  # the failure is gone: the next invocation retries the failed run only
    assert run(path, results) == 0
    assert "1 runs finished, 3 already done, 0 failed (of 4)" in summary_line(capsys.readouterr().out)
    assert records_by_name(results)["namex_mom/vit_tiny/mnist/seed0"]["status"] == "ok"


def test_fail_fast_stops_after_the_first_failed_run(tmp_path, capsys, monkeypatch, failing_task_runner):
    path = write_suite(tmp_path)
    results = tmp_path / "results"
    calls = failing_task_runner(lambda method, seed, call: (method, seed) == ("namex_mom", 0))
    assert run(path, results, "--fail-fast", "--no-report") == 1
    # runs go methods × seeds: smear/0, smear/1, namex_mom/0 (fails), and namex_mom/1 never starts
    assert calls == [("smear", 0), ("smear", 1), ("namex_mom", 0)]
    assert sorted((r["name"], r["status"]) for r in read_records(results, FOLDER)) == [
        ("namex_mom/vit_tiny/mnist/seed0", "failed"),
        ("smear/vit_tiny/mnist/seed0", "ok"),
        ("smear/vit_tiny/mnist/seed1", "ok"),
    ]
    capsys.readouterr()
    monkeypatch.undo()
    assert run(path, results, "--fail-fast", "--no-report") == 0
    assert "2 runs finished, 2 already done, 0 failed (of 4)" in summary_line(capsys.readouterr().out)


def test_non_finite_loss_is_a_failed_run(tmp_path, capsys):
    path = write_suite(tmp_path, name="nan", methods=("smear",), seeds=(0,), lr="1.0e+30")
    results = tmp_path / "results"
    assert run(path, results) == 1
    assert "0 runs finished, 0 already done, 1 failed (of 1)" in summary_line(capsys.readouterr().out, "nan")
    [record] = read_records(results, f"nan-limit{LIMIT}")
    assert record["status"] == "failed" and record["error"]["type"] == "NonFiniteLossError"
    assert re.search(r"non-finite training loss \((nan|inf|-inf)\) at step \d+ of 4", record["error"]["message"])
    assert (results / f"nan-limit{LIMIT}" / "leaderboard.md").is_file()  # the report lists it, and ranks nothing


# ------------------------------------------------------------------------------ shards


def test_shards_partition_the_runs(tmp_path):
    suite, _ = load_suite(str(write_suite(tmp_path, methods=("smear", "namex_mom", "smoe"), seeds=(0, 1, 2))))
    runs = expand(suite)
    keys = [r.key for r in runs]
    assert len(set(keys)) == len(runs) == 9
    for n in (2, 3):
        shards = [shard(runs, i, n) for i in range(1, n + 1)]
        assert sorted(k for s in shards for k in (r.key for r in s)) == sorted(keys)  # union, no duplicates
        for i, part in enumerate(shards):
            assert [r.key for r in part] == [k for k in keys if k in {r.key for r in part}]  # suite order kept
            for other in shards[i + 1:]:
                assert not {r.key for r in part} & {r.key for r in other}
    # a run stays in its shard when the suite gains runs
    bigger, _ = load_suite(str(write_suite(tmp_path, "bigger.yaml", methods=("smear", "namex_mom", "smoe", "camex"), seeds=(0, 1, 2, 3))))
    for i in (1, 2, 3):
        assert {r.key for r in shard(runs, i, 3)} <= {r.key for r in shard(expand(bigger), i, 3)}
    assert parse_shard("2/3") == (2, 3)


@pytest.mark.parametrize("bad", ["3/2", "0/2", "x", "1/2/3", "1-2", "/"])
def test_bad_shard_is_one_clean_error(bad, tmp_path, capsys):
    results = tmp_path / "results"
    code = run(write_suite(tmp_path), results, "--shard", bad)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("namex-bench: error: --shard")
    assert not results.exists()  # nothing ran


def test_sharded_runs_together_give_the_unsharded_records(tmp_path, capsys):
    path = write_suite(tmp_path, methods=("smear", "smoe"), seeds=(0, 1, 2))
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert run(path, whole, "--no-report") == 0
    assert run(path, sharded, "--shard", "1/2", "--no-report") == 0
    first = set(record_files(sharded))
    capsys.readouterr()
    assert run(path, sharded, "--shard", "2/2", "--no-report") == 0
    # the second shard runs exactly the runs the first did not
    assert f"{6 - len(first)} runs finished, 0 already done" in summary_line(capsys.readouterr().out)
    assert set(record_files(sharded)) == set(record_files(whole)) and len(record_files(whole)) == 6


# ------------------------------------------------------------------------------ records


def test_write_json_atomic_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "abc.json"
    write_json_atomic(path, {"version": 1})
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    for target, name in [(os, "replace"), (os, "fsync"), (records_module.json, "dumps")]:
        with monkeypatch.context() as patch:
            patch.setattr(target, name, boom)
            with pytest.raises(OSError, match="simulated"):
                write_json_atomic(path, {"version": 2, "padding": "x" * 100_000})
        assert path.read_bytes() == old
        assert sorted(p.name for p in path.parent.iterdir()) == ["abc.json"]  # no partial or temporary file
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        write_json_atomic(path, {"version": 3, "loss": float("nan")})
    assert path.read_bytes() == old and len(list(path.parent.iterdir())) == 1

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of the write
        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
            write_json_atomic(path, {"version": 4})
    assert path.read_bytes() == old and len(list(path.parent.iterdir())) == 1

    write_json_atomic(path, {"version": 5})
    assert json.loads(path.read_text()) == {"version": 5}


def test_readers_ignore_temporary_files(tmp_path):
    runs = tmp_path / "tiny" / "runs"
    config = {"method": {"label": "smear", "name": "smear"}, "model": {"name": "m"}, "task": {"name": "t"}, "seed": 0}
    record = {"schema": 1, "key": "00ff", "suite": "tiny", "name": "smear/m/t/seed0", "status": "ok", "config": config,
              "metrics": {"top1": 0.5}, "goals": {"top1": "max"}, "primary": "top1"}
    write_json_atomic(runs / "00ff.json", record)
    (runs / ".11ee.json.x1y2.tmp").write_text('{"key": "11ee", "status": "o')  # an interrupted write
    (runs / "22dd.json.tmp").write_text("{")
    assert read_records(tmp_path, "tiny") == [record]
    assert finished_keys(read_records(tmp_path, "tiny")) == {"00ff"}
    assert read_records(tmp_path, "no_such_suite") == []


# ------------------------------------------------------------------------------ keys


def keys_of(path: Path, limit: int | None = None) -> dict[str, str]:
    suite, _ = load_suite(str(path))
    return {r.name: r.key for r in expand(suite, limit)}


def test_run_key_is_a_function_of_the_resolved_config(tmp_path):
    base = keys_of(write_suite(tmp_path / "a"))
    assert len(set(base.values())) == len(base) == 4  # every seed and method has its own key
    # the same suite in another file (another name, description, device) has the same keys
    same = tmp_path / "b" / "other.yaml"
    same.parent.mkdir()
    same.write_text(suite_text(name="renamed", device="auto").replace("seeds:", "description: elsewhere\nseeds:"))
    assert keys_of(same) == base
    # an option given explicitly at its default value is the same run
    radius = resolved_options(MethodEntry(name="namex_mom"))["momentum_radius"]
    explicit = keys_of(write_suite(tmp_path / "c", method_options={"namex_mom": f"{{momentum_radius: {radius}}}"}))
    assert explicit == base

    def changed(**kwargs) -> set[str]:
        keys = keys_of(write_suite(tmp_path / "d", **kwargs))
        return {name for name in base if keys.get(name) != base[name]}

    assert changed(method_options={"namex_mom": "{momentum_radius: 0.5}"}) == {
        "namex_mom/vit_tiny/mnist/seed0", "namex_mom/vit_tiny/mnist/seed1"}
    assert changed(lr="2.0e-3") == set(base)
    assert changed(model=MODEL.replace("depth: 3", "depth: 4")) == set(base)
    assert changed(seeds=(0, 2)) == {"smear/vit_tiny/mnist/seed1", "namex_mom/vit_tiny/mnist/seed1"}  # seed 0 kept its key
    assert changed(methods=("smear", "namex_mom", "smoe")) == set()  # other runs do not enter a run's key
    limited = keys_of(write_suite(tmp_path / "e"), 64)
    assert not set(limited.values()) & set(base.values()) and keys_of(write_suite(tmp_path / "e"), 64) == limited
    assert keys_of(write_suite(tmp_path / "e"), 32) != limited


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, auto resolves to another device and precision: other runs")
def test_device_override_does_not_change_the_keys(tmp_path, capsys):
    path = write_suite(tmp_path, methods=("smear",), seeds=(0,), device="auto")
    results = tmp_path / "results"
    assert run(path, results, "--device", "cpu", "--no-report") == 0
    capsys.readouterr()
    assert run(path, results, "--no-report") == 0  # "auto" is the CPU here, in the same precision: the run is already done
    assert "0 runs finished, 1 already done" in summary_line(capsys.readouterr().out)


# ------------------------------------------------------------------------------ plugins


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    name = "namex_bench_test_plugin_methods"
    (tmp_path / f"{name}.py").write_text(
        "from namex_bench.methods.registry import register_method\n"
        "from namex_bench.methods.smear import SMEAR\n\n\n"
        '@register_method("smear_plugin")\n'
        "class SmearPlugin(SMEAR):\n"
        '    """SMEAR, registered from a plugin module named in a suite."""\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    registry._METHODS.pop("smear_plugin", None)
    sys.modules.pop(name, None)


def test_method_from_a_plugin_module_runs_and_is_ranked(tmp_path, capsys, plugin_module):
    path = write_suite(tmp_path / "suite", methods=("smear", "smear_plugin"), seeds=(0,), plugins=(plugin_module,))
    results = tmp_path / "results"
    assert run(path, results) == 0
    by_name = records_by_name(results)
    assert {r["status"] for r in by_name.values()} == {"ok"}
    plugin = by_name["smear_plugin/vit_tiny/mnist/seed0"]
    assert plugin["config"]["method"]["name"] == "smear_plugin"
    # the same math as SMEAR, seeded alike: the same numbers
    assert plugin["metrics"] == by_name["smear/vit_tiny/mnist/seed0"]["metrics"]
    assert re.search(r"^\|.*\bsmear_plugin\b", (results / FOLDER / "leaderboard.md").read_text(), re.M)


def test_smoke_runs_never_mix_with_real_runs(tmp_path):
    """--limit records go to <suite>-limit<N>, so a later full run's leaderboard has no duplicates."""
    from namex_bench.runner.records import results_folder

    assert results_folder("tiny", None) == "tiny" and results_folder("tiny", 64) == "tiny-limit64"
    path = write_suite(tmp_path, methods=("smear",), seeds=(0,))
    results = tmp_path / "results"
    assert run(path, results) == 0
    assert not (results / "tiny").exists() and len(record_files(results)) == 1


def test_empty_shard_is_a_clean_error(tmp_path, capsys):
    path = write_suite(tmp_path)
    assert run(path, tmp_path / "results", "--shard", "") == 2
    assert "--shard must look like i/n" in capsys.readouterr().err


def test_corrupt_record_is_named_in_the_error(tmp_path):
    runs = tmp_path / "tiny" / "runs"
    runs.mkdir(parents=True)
    (runs / "0123456789abcdef.json").write_text("{not json")
    with pytest.raises(ValueError, match="0123456789abcdef.json"):
        read_records(tmp_path, "tiny")


def test_a_changed_configuration_supersedes_the_old_record(tmp_path, capsys):
    """Rerunning after a configuration change keeps one record per run in runs/ (the old one
    moves to runs/superseded/), so the report never sees the same method and seed twice."""
    results = tmp_path / "results"
    assert run(write_suite(tmp_path / "a", methods=("smear",), seeds=(0,), lr="1.0e-3"), results) == 0
    [old] = record_files(results)
    assert run(write_suite(tmp_path / "a", methods=("smear",), seeds=(0,), lr="2.0e-3"), results) == 0
    [new] = record_files(results)
    assert new != old
    assert (results / FOLDER / "runs" / "superseded" / f"{old}.json").is_file()
    assert "moved to" in capsys.readouterr().out
    assert (results / FOLDER / "leaderboard.md").is_file()


def test_committed_quickstart_records_are_the_suites_current_runs():
    """If code or suite changes alter a run's resolved configuration, the committed records no
    longer match and `namex-bench run quickstart` would redo them: regenerate results/quickstart."""
    root = Path(__file__).resolve().parents[1]
    suite, _ = load_suite(str(root / "suites" / "quickstart.yaml"))
    expected = {r.key for r in expand(suite)}
    committed = {p.stem for p in (root / "results" / "quickstart" / "runs").glob("*.json")}
    assert committed == expected, "results/quickstart is stale: rerun `namex-bench run quickstart` into a fresh folder and commit it"
