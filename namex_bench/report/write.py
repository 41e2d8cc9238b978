"""Write a suite's report from its run records.

``write_report(results_root, suite)`` reads ``results/<suite>/runs/*.json`` and writes::

    results/<suite>/leaderboard.md                        a section per task/model
    results/<suite>/tables/<task>__<model>.csv            leaderboard: formatted + raw columns
    results/<suite>/tables/<task>__<model>.tex            leaderboard: booktabs tabular
    results/<suite>/tables/<task>__<model>__paired.csv    paired comparison with the reference
    results/<suite>/tables/<task>__<model>__paired.tex
    results/<suite>/plots/<task>__<model>.png             primary metric, mean ± 95% CI

Every file is a function of the records alone, written atomically, and only when its
bytes change: regenerating an unchanged report rewrites nothing and keeps the mtimes.
The paired files are absent for a task/model without a reference to compare against;
a task/model without a successful run only gets its section in ``leaderboard.md``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..runner.records import read_records, runs_dir
from .leaderboard import sections
from .plots import primary_metric_png
from .render import (
    file_stem,
    leaderboard_csv,
    leaderboard_latex,
    paired_csv,
    paired_latex,
    render_leaderboard_markdown,
)

__all__ = ["NoRecordsError", "render_leaderboard_markdown", "write_if_changed", "write_report"]


class NoRecordsError(FileNotFoundError):
    """The suite has no run records to report on."""


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically (temporary file + rename) unless it already holds them.

    Returns whether the file was written. An unchanged file is not touched, so its
    mtime stays.
    """
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def report_files(records: list, reference: str | None = None) -> dict[str, bytes]:
    """The report's files as ``{path relative to results/<suite>/: bytes}``."""
    files: dict[str, bytes] = {}
    for section in sections(records, reference):
        board = section.leaderboard
        if board is None:
            continue
        stem = file_stem(section.task, section.model)
        files[f"tables/{stem}.csv"] = leaderboard_csv(board).encode()
        files[f"tables/{stem}.tex"] = leaderboard_latex(board).encode()
        paired = section.paired
        if paired is not None and paired.table is not None:
            files[f"tables/{stem}__paired.csv"] = paired_csv(paired).encode()
            files[f"tables/{stem}__paired.tex"] = paired_latex(paired).encode()
        files[f"plots/{stem}.png"] = primary_metric_png(board, paired.reference if paired else None)
    if len({name.lower() for name in files}) != len(files):
        raise ValueError("two task/model pairs map to the same report file names; rename a task or model")
    files["leaderboard.md"] = render_leaderboard_markdown(records, reference, plots_dir="plots").encode()
    return files


def write_report(results_root: Path, suite: str, reference: str | None = None) -> list[Path]:
    """Regenerate ``results/<suite>/``'s leaderboard, tables and plots from its run records.

    ``reference`` overrides the method the records name as the reference of paired
    comparisons. Returns the paths of the report's files (written or already up to
    date), sorted. Raises :class:`NoRecordsError` (a ``FileNotFoundError``) when the
    suite has no records.
    """
    results_root = Path(results_root)
    records = read_records(results_root, suite)
    if not records:
        raise NoRecordsError(f"no run records for suite {suite!r} in {runs_dir(results_root, suite)}; run the suite first")
    out = results_root / suite
    files = report_files(records, reference)
    # leaderboard.md last: it never links to a plot that is not there yet
    for name in sorted(files, key=lambda n: (n == "leaderboard.md", n)):
        write_if_changed(out / name, files[name])
    return sorted(out / name for name in files)


def check_report(results_root: Path, suite: str, reference: str | None = None) -> list[str]:
    """The report files of ``results/<suite>/`` that are missing or differ from what the
    records give now (an empty list: the committed report is up to date).

    Tables and ``leaderboard.md`` are compared byte for byte; plots are left out, since
    their bytes depend on the matplotlib and FreeType build that drew them.
    """
    results_root = Path(results_root)
    records = read_records(results_root, suite)
    if not records:
        raise NoRecordsError(f"no run records for suite {suite!r} in {runs_dir(results_root, suite)}; run the suite first")
    out = results_root / suite
    stale = []
    for name, data in sorted(report_files(records, reference).items()):
        if name.startswith("plots/"):
            continue
        path = out / name
        if not path.is_file() or path.read_bytes() != data:
            stale.append(name)
    return stale
