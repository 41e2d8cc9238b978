"""The report's robustness section: corruption cells -> clean error, mean CE, CE relative to the reference,
per-corruption errors, severity plots; checked against values computed here from the definitions."""

from __future__ import annotations

import io
import os
import shutil
import struct

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from namex_bench.metrics.mce import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS
from namex_bench.report import (
    format_interval,
    format_mean_ci,
    leaderboard,
    render_leaderboard_markdown,
    robustness_table,
    write_report,
)
from namex_bench.report.plots import severity_png
from namex_bench.report.render import robustness_csv, robustness_latex, robustness_markdown
from namex_bench.report.write import check_report, report_files
from namex_bench.runner.records import run_key, write_json_atomic

SUITE = "robust"
MODEL = "vit_moe_tiny"
TASK = "mnist_c"  # has corruption cells
PLAIN = "mnist"  # has none
REFERENCE = "smoe"
# method -> seeds it ran; namex_mom ran seed 3, which the reference never ran: not paired
SEEDS = {"smoe": (0, 1, 2), "camex": (0, 1), "namex_mom": (0, 1, 3)}
BASE = {"smoe": 0.30, "camex": 0.25, "namex_mom": 0.20, "lory": 0.22}
# in the records' order (not the report's): the report orders benchmark first (in ImageNet-C order), then extras
CORRUPTIONS = ("speckle_noise", "contrast", "gaussian_noise", "fog")
ORDERED = ("gaussian_noise", "fog", "contrast", "speckle_noise")
BENCH = ("gaussian_noise", "fog", "contrast")
SEVERITIES = (1, 2, 3, 4, 5)


def error(method, seed, corruption, severity):
    """A deterministic, uneven error surface: ratios to the reference differ by corruption, severity and seed."""
    c = CORRUPTIONS.index(corruption)
    wobble = 0.011 * ((7 * seed + 3 * severity + 5 * c + len(method)) % 4) + 0.006 * seed * (1 + c % 2)
    return round(BASE[method] + 0.035 * severity * (1 + 0.3 * c) + wobble, 6)


def clean_error(method, seed):
    return round(BASE[method] - 0.12 + 0.004 * seed, 6)


def config(task, method, seed):
    return {
        "method": {"label": method, "name": method, "options": {}},
        "model": {"name": MODEL, "builder": "vit_moe", "params": {}},
        "task": {"name": task, "type": "image_classification"},
        "seed": seed,
        "limit": None,
    }


def make_record(task, method, seed, *, corruptions=CORRUPTIONS, extra_metrics=None, reference=REFERENCE):
    cfg = config(task, method, seed)
    clean = clean_error(method, seed)
    metrics = {"top1": 1.0 - clean, "clean_error": clean}
    cells = {}
    if corruptions:
        rows = [
            {"corruption": c, "severity": s, "top1": 1.0 - error(method, seed, c, s), "error": error(method, seed, c, s)}
            for c in corruptions
            for s in SEVERITIES
        ]
        cells["corruptions"] = rows
        metrics["corruption_error"] = float(np.mean([r["error"] for r in rows if r["corruption"] in BENCHMARK_CORRUPTIONS]))
        metrics["corruption_error_all"] = float(np.mean([r["error"] for r in rows]))
    metrics.update(extra_metrics or {})
    return {
        "schema": 1,
        "key": run_key(cfg),
        "suite": SUITE,
        "name": f"{method}/{MODEL}/{task}/seed{seed}",
        "status": "ok",
        "error": None,
        "config": cfg,
        "metrics": metrics,
        "goals": {m: ("max" if m == "top1" else "min") for m in metrics},
        "primary": "top1",
        "reference": reference,
        "cells": cells,
        "timings": {"total_s": 1.0},
        "params": {"total": 10, "active_per_token": 5},
        "environment": {"python": "3.x", "device": "cpu"},
    }


def suite_records(**kwargs):
    records = []
    for method, seeds in SEEDS.items():
        for seed in seeds:
            records.append(make_record(TASK, method, seed, **kwargs))
            records.append(make_record(PLAIN, method, seed, corruptions=()))
    return records


@pytest.fixture
def results_root(tmp_path):
    root = tmp_path / "results"
    for record in suite_records():
        write_json_atomic(root / SUITE / "runs" / f"{record['key']}.json", record)
    return root


def ci95(values):
    x = np.asarray(values, dtype=float)
    return x.mean(), stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))


def interval(mean, ci, low=0.0, high=1.0):
    """``mean [low, high]`` of the t interval clipped to the column's range, as the table prints it."""
    return format_interval(mean, max(low, mean - ci), mean + ci if high is None else min(high, mean + ci))


def relative_ce_by_hand(method, seed):
    ratios = []
    for c in BENCH:
        num = sum(error(method, seed, c, s) for s in SEVERITIES)
        den = sum(error(REFERENCE, seed, c, s) for s in SEVERITIES)
        ratios.append(num / den)
    return sum(ratios) / len(ratios)


# --------------------------------------------------------------------------- tables


def test_relative_ce_matches_the_definition_over_matched_seeds():
    rob = robustness_table(suite_records(), TASK, MODEL)
    assert rob.relative_to == REFERENCE and rob.note is None
    table = rob.table.set_index("method")
    for method in ("camex", "namex_mom"):
        matched = [s for s in SEEDS[method] if s in SEEDS[REFERENCE]]  # namex_mom: seeds 0 and 1, not 3
        values = [relative_ce_by_hand(method, s) for s in matched]
        mean, ci = ci95(values)
        row = table.loc[method]
        assert row["relative_ce_mean"] == pytest.approx(mean, rel=1e-12)
        assert row["relative_ce_ci95"] == pytest.approx(ci, rel=1e-12)
        assert row["rel. CE vs smoe"] == interval(mean, ci, high=None)
        assert 0 < mean < 1  # less error than the reference everywhere
    assert table.loc[REFERENCE, "relative_ce_mean"] == 1.0
    assert table.loc[REFERENCE, "relative_ce_ci95"] == 0.0
    assert table.loc[REFERENCE, "rel. CE vs smoe"] == "1.000 ± 0"


def test_columns_rows_and_per_corruption_errors():
    records = suite_records()
    rob = robustness_table(records, TASK, MODEL)
    assert rob.corruptions == ORDERED  # benchmark corruptions in ImageNet-C order, then the extras
    assert rob.display_columns == ["method", "clean error", "mean CE", "mean CE (all)", "rel. CE vs smoe", *ORDERED, "n"]
    assert rob.methods == leaderboard(records, TASK, MODEL).methods == ["namex_mom", "camex", "smoe"]
    table = rob.table.set_index("method")
    for method, seeds in SEEDS.items():
        row = table.loc[method]
        assert row["n"] == len(seeds)
        mean, ci = ci95([clean_error(method, s) for s in seeds])
        assert row["clean_error_mean"] == pytest.approx(mean, rel=1e-12)
        assert row["clean error"] == interval(mean, ci)
        per_seed = [np.mean([error(method, s, c, v) for c in BENCH for v in SEVERITIES]) for s in seeds]
        mean, ci = ci95(per_seed)
        assert row["corruption_error_mean"] == pytest.approx(mean, rel=1e-12)
        assert row["mean CE"] == interval(mean, ci)
        assert 0 <= row["corruption_error_low"] <= row["corruption_error_high"] <= 1
        per_seed = [np.mean([error(method, s, c, v) for c in CORRUPTIONS for v in SEVERITIES]) for s in seeds]
        assert row["corruption_error_all_mean"] == pytest.approx(np.mean(per_seed), rel=1e-12)
        for c in ORDERED:
            expected = np.mean([np.mean([error(method, s, c, v) for v in SEVERITIES]) for s in seeds])
            assert row[f"{c}_mean"] == pytest.approx(expected, rel=1e-12)
            assert row[c] == format_mean_ci(expected, None)  # no CI: 4 significant digits
            assert "±" not in row[c]
    # the severity curves behind the plot: error at each severity, averaged over seeds
    curves = rob.curves.set_index(["method", "corruption", "severity"])
    for method, seeds in SEEDS.items():
        for c in ORDERED:
            for v in SEVERITIES:
                expected = np.mean([error(method, s, c, v) for s in seeds])
                assert curves.loc[(method, c, v), "error_mean"] == pytest.approx(expected, rel=1e-12)
    assert len(rob.curves) == len(SEEDS) * len(ORDERED) * len(SEVERITIES)


def test_mce_columns_appear_with_the_metrics_and_extras_column_only_with_extras():
    records = suite_records(corruptions=BENCH, extra_metrics={"mce": 0.75, "relative_mce": 0.9})
    rob = robustness_table(records, TASK, MODEL)
    assert rob.display_columns == ["method", "clean error", "mean CE", "rel. CE vs smoe", "mCE", "relative mCE", *BENCH, "n"]
    assert not rob.has_extras
    assert list(rob.table["mCE"]) == ["0.7500 ± 0"] * 3


def test_the_table_only_appears_when_cells_exist(results_root):
    records = suite_records()
    assert robustness_table(records, PLAIN, MODEL) is None
    markdown = render_leaderboard_markdown(records)
    plain = markdown[markdown.index(f"## {PLAIN} / ") : markdown.index(f"## {TASK} / ")]
    corrupt = markdown[markdown.index(f"## {TASK} / ") :]
    assert "Robustness" not in plain and "__severity" not in plain
    assert corrupt.count("### Robustness") == 1
    # appended after the leaderboard, the paired comparison and the primary plot; then caption, table, plot links
    head, tail = corrupt.split("### Robustness")
    assert head.index("rank |") < head.index("Paired comparison") < head.index(f"](plots/{TASK}__{MODEL}.png)")
    assert (
        tail.index("printed without a CI")
        < tail.index("| method")
        < tail.index(f"](plots/{TASK}__{MODEL}__severity.png)")
        < tail.index(f"](plots/{TASK}__{MODEL}__mce.png)")
    )
    names = set(report_files(records))  # with plots: their names are part of the contract
    assert {f"tables/{TASK}__{MODEL}__robustness.csv", f"tables/{TASK}__{MODEL}__robustness.tex",
            f"plots/{TASK}__{MODEL}__severity.png", f"plots/{TASK}__{MODEL}__mce.png"} <= names
    assert not any(n.startswith(f"tables/{PLAIN}__") and "robustness" in n for n in names)
    # records without any corruption cells: the report is what it was, with no trace of robustness
    only_plain = [r for r in records if r["config"]["task"]["name"] == PLAIN]
    assert "Robustness" not in render_leaderboard_markdown(only_plain)
    assert not any("robustness" in n or "severity" in n or "__mce" in n for n in report_files(only_plain, plots=False))


def test_a_reference_without_cells_gives_no_relative_column_but_a_note():
    records = suite_records() + [make_record(TASK, "lory", 0, corruptions=())]
    rob = robustness_table(records, TASK, MODEL, reference="lory")
    assert not any(title.startswith("rel. CE") for _, title in rob.summary_columns)
    assert rob.without_cells == ("lory",) and "lory" not in rob.methods
    markdown = render_leaderboard_markdown(records, reference="lory")
    assert "No relative CE: the reference method `lory` has no corruption cells" in markdown
    assert "No corruption cells (not in the table): `lory`." in markdown
    unnamed = robustness_table(suite_records(reference=None), TASK, MODEL)
    assert unnamed.relative_to is None and unnamed.note is None
    assert "rel. CE" not in " ".join(unnamed.display_columns)


def test_malformed_cells_are_clear_errors():
    record = make_record(TASK, "smoe", 0)
    record["cells"]["corruptions"].append({"corruption": "gaussian_noise", "severity": 1, "top1": 0.5, "error": 0.5})
    with pytest.raises(ValueError, match="two rows for gaussian_noise severity 1"):
        robustness_table([record], TASK, MODEL)
    record = make_record(TASK, "smoe", 0)
    record["cells"]["corruptions"][0]["corruption"] = "rain"
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        robustness_table([record], TASK, MODEL)


def test_csv_and_latex_carry_the_table():
    rob = robustness_table(suite_records(), TASK, MODEL)
    csv = pd.read_csv(io.StringIO(robustness_csv(rob)))
    assert list(csv["method"]) == rob.methods
    assert {"relative_ce_mean", "relative_ce_ci95", "corruption_error_std", "fog_mean", "speckle_noise"} <= set(csv.columns)
    assert csv["fog_mean"].tolist() == pytest.approx(rob.table["fog_mean"].tolist(), rel=1e-9)
    latex = robustness_latex(rob)
    assert r"\toprule" in latex and r"rel. CE vs smoe" in latex and r"speckle\_noise" in latex and r"$\pm$" in latex
    assert latex.count(r"\\") == len(rob.methods) + 1
    markdown = robustness_markdown(rob).splitlines()
    assert markdown[0].startswith("| method") and len(markdown) == 2 + len(rob.methods)


# --------------------------------------------------------------------------- files


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # end to end, ~40 s or more on 2 cores
def test_write_report_files_are_deterministic_and_written_only_when_changed(results_root, tmp_path):
    stem = f"{TASK}__{MODEL}"
    first = write_report(results_root, SUITE)
    out = results_root / SUITE
    names = {p.relative_to(out).as_posix() for p in first}
    new = {f"tables/{stem}__robustness.csv", f"tables/{stem}__robustness.tex", f"plots/{stem}__severity.png",
           f"plots/{stem}__mce.png"}
    assert new <= names
    severity = png_size((out / f"plots/{stem}__severity.png").read_bytes())
    mce = png_size((out / f"plots/{stem}__mce.png").read_bytes())
    assert severity[0] > severity[1] and mce[0] == 640  # 4 panels in a row; the forest plot: a fixed width, a row per method
    content = {p: p.read_bytes() for p in first}
    old = 1_000_000_000
    for p in first:
        os.utime(p, ns=(old, old))
    assert write_report(results_root, SUITE) == first
    for p in first:
        assert p.read_bytes() == content[p], p
        assert p.stat().st_mtime_ns == old, f"{p} was rewritten"
    other = tmp_path / "elsewhere" / "results"
    shutil.copytree(results_root / SUITE / "runs", other / SUITE / "runs")
    for p in write_report(other, SUITE):
        assert p.read_bytes() == content[results_root / p.relative_to(other)], p
    assert check_report(results_root, SUITE) == []
    (out / f"tables/{stem}__robustness.csv").unlink()
    (out / f"plots/{stem}__severity.png").unlink()  # plots are not checked
    assert check_report(results_root, SUITE) == [f"tables/{stem}__robustness.csv"]


def test_severity_plot_with_all_nineteen_corruptions_is_a_png_grid():
    everything = (*BENCHMARK_CORRUPTIONS, *EXTRA_CORRUPTIONS)
    records = []
    for method in ("smoe", "namex_mom"):
        for seed in (0, 1):
            record = make_record(TASK, method, seed, corruptions=())
            record["cells"]["corruptions"] = [
                {"corruption": c, "severity": s, "top1": 1 - (0.2 + 0.02 * i + 0.05 * s), "error": 0.2 + 0.02 * i + 0.05 * s}
                for i, c in enumerate(reversed(everything))
                for s in SEVERITIES
            ]
            records.append(record)
    rob = robustness_table(records, TASK, MODEL)
    assert rob.corruptions == everything
    data = severity_png(rob)
    width, height = png_size(data)
    assert width > height > 400  # 5 columns by 4 rows of panels


def test_file_names_that_clash_are_refused():
    records = suite_records()
    clash = make_record(TASK, "smoe", 0, corruptions=())
    clash["config"]["model"]["name"] = f"{MODEL}__robustness"  # its leaderboard csv is TASK/MODEL's robustness csv
    clash["key"] = run_key(clash["config"])
    with pytest.raises(ValueError, match="same report file names"):
        report_files([*records, clash], plots=False)
