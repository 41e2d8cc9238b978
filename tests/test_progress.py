"""Progress in a log: whole lines with count, rate and ETA at most every interval, not tqdm's
carriage returns (and not nothing, which is what tqdm's ``disable=None`` shows off a terminal)."""

from __future__ import annotations

import re
import sys

from tqdm.auto import tqdm

from namex_bench import progress as progress_module
from namex_bench.cli import main
from namex_bench.progress import LogProgress, progress

LINE = re.compile(r"^(?P<desc>[\w ]+): +(?P<pct>\d+)% (?P<n>\d+)/(?P<total>\d+) \[\d\d:\d\d<(\d\d:\d\d|\?), .+\]$")


def lines(text: str) -> list[str]:
    assert "\r" not in text
    return [line for line in text.splitlines() if line]


def test_log_progress_prints_a_line_per_interval_with_eta(capsys):
    bar = LogProgress(range(4), desc="train", unit="step", interval=0.0)
    assert list(bar) == [0, 1, 2, 3]
    printed = lines(capsys.readouterr().err)
    assert [LINE.match(line)["n"] for line in printed] == ["1", "2", "3", "4"]
    assert all(LINE.match(line)["desc"] == "train" for line in printed)


def test_log_progress_is_quiet_between_intervals_and_leaves_a_last_line(capsys):
    bar = LogProgress(total=50, desc="quickstart", unit="run", leave=True, interval=3600.0)
    for i in range(50):
        bar.set_postfix_str(f"run {i}")
        bar.update()
    bar.close()
    bar.close()
    printed = lines(capsys.readouterr().err)
    assert [LINE.match(line)["n"] for line in printed] == ["0", "50"]  # the start and the end, once
    assert printed[-1].endswith("run 49]")
    transient = LogProgress(total=3, desc="eval", interval=3600.0)  # leave=False: silent unless slow
    transient.update(3)
    transient.close()
    assert capsys.readouterr().err == ""


def test_progress_is_tqdm_on_a_terminal_lines_in_a_log_and_nothing_when_disabled(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(progress(range(3)), tqdm)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress(range(3)), LogProgress)
    disabled = progress(range(3), enabled=False)
    assert isinstance(disabled, tqdm) and disabled.disable


def test_a_redirected_run_prints_periodic_progress_lines(tmp_path, capsys, monkeypatch):
    from test_runner import write_suite

    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)
    path = write_suite(tmp_path, methods=("smear",), seeds=(0, 1))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--limit", "64", "--no-report"]) == 0
    printed = lines(capsys.readouterr().err)
    suite_lines = [LINE.match(line) for line in printed if line.startswith("tiny:")]
    assert [(m["n"], m["total"]) for m in suite_lines] == [("0", "2"), ("1", "2"), ("2", "2")]
    train_lines = [LINE.match(line) for line in printed if line.startswith("train:")]
    assert train_lines and all(m and m["total"] == "4" for m in train_lines)  # 64 digits, batches of 16
