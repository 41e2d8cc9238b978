"""``namex-bench selfcheck``: the pass/fail table a user gets on a new machine (here: the CPU)."""

from __future__ import annotations

import torch

from namex_bench.cli import main
from namex_bench.selfcheck import checks, numerics


def table_rows(out: str) -> dict[str, list[str]]:
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in rows[1:]}


def test_selfcheck_on_the_cpu_prints_a_pass_fail_table(capsys):
    assert main(["selfcheck", "--device", "cpu", "--methods", "smear", "smoe", "--no-suites"]) == 0
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert list(rows) == ["environment", "layers smear bfloat16", "layers smoe bfloat16", "layers smear float16",
                          "layers smoe float16", "bench layers float32", "bench layers bfloat16"]
    assert all(result == "PASS" for result, *_ in rows.values())
    assert "merge" in rows["layers smear bfloat16"][1] and "upcycled" in rows["layers smoe float16"][1]
    assert "precision auto = float32" in rows["environment"][1]
    assert "selfcheck on cpu: 7 passed, 0 failed, 0 skipped" in captured.out
    assert "[PASS] layers smear bfloat16" in captured.err  # progress, as each check finishes


def test_a_check_outside_its_tolerance_fails_and_a_crash_is_a_failed_row(monkeypatch):
    monkeypatch.setitem(numerics.TOLERANCES, "output", 0.0)
    passed, detail = checks.method_layers("smear", torch.bfloat16, torch.device("cpu"))
    assert passed is False and "output" in detail and "> 0 eps" in detail

    def broken():
        raise RuntimeError("no such thing")

    row = checks.timed("broken", broken)
    assert (row.passed, row.result, row.detail) == (False, "FAIL", "RuntimeError: no such thing")


def test_the_tiny_suite_check_runs_the_methods_through_the_runner(tmp_path):
    passed, detail = checks.tiny_suite(torch.device("cpu"), ("smear", "smoe"), "bf16", tmp_path)
    assert passed, detail
    assert detail.startswith("2/2 runs ok in bf16")
