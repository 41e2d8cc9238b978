"""The namex-bench command line: listing, benchmarks on tiny shapes, and clean errors."""

from __future__ import annotations

import json

import pytest

from namex_bench.cli import main
from namex_bench.methods.registry import available_methods


def test_list_methods_prints_every_method_with_description(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in available_methods().items():
        line = next(line for line in out.splitlines() if line.startswith(f"| {name} "))
        assert cls.description() in line


def test_bench_layers_runs_and_reports_ratios(capsys, tmp_path):
    path = tmp_path / "layers.json"
    code = main(["bench", "layers", "--batch", "2", "--seq-len", "8", "--d-model", "16", "--experts", "4",
                 "--repeats", "2", "--warmup", "0", "--device", "cpu", "--json", str(path)])
    assert code == 0
    rows = {row["layer"]: row for row in json.loads(path.read_text())["rows"]}
    assert set(rows) == {"dense FFN", *available_methods()}
    assert rows["dense FFN"]["× dense"] == 1.0 and rows["smear"]["× smear"] == 1.0
    assert all(row["fwd+bwd ms"] > 0 for row in rows.values())


def test_bench_layers_eval_reports_throughput_relative_to_smoe_and_smear(capsys, tmp_path):
    path = tmp_path / "eval.json"
    code = main(["bench", "layers", "--eval", "--batch", "2", "--seq-len", "8", "--d-model", "16", "--experts", "4",
                 "--repeats", "2", "--warmup", "1", "--device", "cpu", "--json", str(path)])
    assert code == 0
    table = json.loads(path.read_text())
    rows = {row["layer"]: row for row in table["rows"]}
    assert set(rows) == {"dense FFN", *available_methods()} and "no grad" in table["setup"]
    assert rows["smoe"]["tokens/s vs smoe"] == 1.0 and rows["smear"]["tokens/s vs smear"] == 1.0
    assert all(row["eval ms"] > 0 and row["uncached ms"] > 0 and row["cache speed-up"] > 0 for row in rows.values())


def test_bench_nbs_agrees_with_reference(capsys, tmp_path):
    pytest.importorskip("cvxpy")
    path = tmp_path / "nbs.json"
    assert main(["bench", "nbs", "--sizes", "3", "5", "--problems", "2", "--dim", "16", "--device", "cpu", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [row["N"] for row in rows] == [3, 5]
    assert all(float(row["agreement"]) <= 1e-6 for row in rows)


def test_unknown_method_is_one_clear_error(capsys):
    assert main(["bench", "layers", "--methods", "nope", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("namex-bench: error: --methods: unknown merging method 'nope'")
    assert "Traceback" not in err and "namex" in err


def test_bad_device_is_one_clear_error(capsys):
    assert main(["bench", "layers", "--device", "tpu:7"]) == 2
    assert "invalid device" in capsys.readouterr().err


def test_bad_argument_exits_nonzero():
    with pytest.raises(SystemExit) as exc:
        main(["bench", "layers", "--experts", "0"])
    assert exc.value.code == 2
