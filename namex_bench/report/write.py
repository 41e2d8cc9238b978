"""Write a suite's report from its run records.

``write_report(results_root, suite)`` reads ``results/<suite>/runs/*.json`` and writes::

    results/<suite>/leaderboard.md                        a section per task/model
    results/<suite>/tables/<task>__<model>.csv            leaderboard: formatted + raw columns
    results/<suite>/tables/<task>__<model>.tex            leaderboard: booktabs tabular
    results/<suite>/tables/<task>__<model>__paired.csv    paired comparison with the reference
    results/<suite>/tables/<task>__<model>__paired.tex
    results/<suite>/plots/<task>__<model>.png             primary metric, mean ± 95% CI

and, for a task/model whose records have corruption cells (``cells["corruptions"]``)::

    results/<suite>/tables/<task>__<model>__robustness.csv    clean error, mean CE, rel. CE, per corruption
    results/<suite>/tables/<task>__<model>__robustness.tex
    results/<suite>/plots/<task>__<model>__severity.png       error by severity, a panel per corruption
    results/<suite>/plots/<task>__<model>__mce.png            mean CE, mean ± 95% CI

and, for a compression task, ``plots/<task>__<model>__compression.png`` (score against experts kept).

Every file is a function of the records alone, written atomically, and only when its
bytes change: regenerating an unchanged report rewrites nothing and keeps the mtimes.
The paired files are absent for a task/model without a reference to compare against;
a task/model without a successful run only gets its section in ``leaderboard.md``.
"""

from __future__ import annotations

from pathlib import Path

from ..runner.records import read_records, runs_dir, write_bytes_atomic
from .compression_plot import compression_png
from .leaderboard import sections
from .plots import mean_ce_png, primary_metric_png, severity_png
from .render import (
    file_stem,
    leaderboard_csv,
    leaderboard_latex,
    paired_csv,
    paired_latex,
    render_leaderboard_markdown,
    robustness_csv,
    robustness_latex,
)
from .robustness import robustness_table

__all__ = ["NoRecordsError", "render_leaderboard_markdown", "write_if_changed", "write_report"]


class NoRecordsError(FileNotFoundError):
    """The suite has no run records to report on."""


def suite_records(results_root: Path, suite: str) -> list:
    """The suite's run records; :class:`NoRecordsError` when it has none."""
    records = read_records(results_root, suite)
    if not records:
        raise NoRecordsError(f"no run records for suite {suite!r} in {runs_dir(results_root, suite)}; run the suite first")
    return records


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically (temporary file + rename) unless it already holds them.

    Returns whether the file was written. An unchanged file is not touched, so its
    mtime stays.
    """
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    write_bytes_atomic(path, data)
    return True


def report_files(records: list, reference: str | None = None, *, plots: bool = True) -> dict[str, bytes]:
    """The report's files as ``{path relative to results/<suite>/: bytes}``; ``plots=False`` leaves
    the PNGs out (they are the slow part, and :func:`check_report` does not compare them)."""
    files: dict[str, bytes] = {}
    clash = False  # two task/model pairs gave one name (e.g. a model called "m__robustness")

    def add(name: str, data: bytes) -> None:
        nonlocal clash
        clash = clash or name in files
        files[name] = data

    for section in sections(records, reference):
        board = section.leaderboard
        if board is None:
            continue
        stem = file_stem(section.task, section.model)
        add(f"tables/{stem}.csv", leaderboard_csv(board).encode())
        add(f"tables/{stem}.tex", leaderboard_latex(board).encode())
        paired = section.paired
        if paired is not None and paired.table is not None:
            add(f"tables/{stem}__paired.csv", paired_csv(paired).encode())
            add(f"tables/{stem}__paired.tex", paired_latex(paired).encode())
        if plots:
            add(f"plots/{stem}.png", primary_metric_png(board, paired.reference if paired else None))
        if plots and (png := compression_png(records, section.task, section.model)) is not None:
            add(f"plots/{stem}__compression.png", png)
        rob = robustness_table(records, section.task, section.model, reference)
        if rob is not None:
            add(f"tables/{stem}__robustness.csv", robustness_csv(rob).encode())
            add(f"tables/{stem}__robustness.tex", robustness_latex(rob).encode())
            if plots:
                add(f"plots/{stem}__severity.png", severity_png(rob))
                add(f"plots/{stem}__mce.png", mean_ce_png(rob))
    if clash or len({name.lower() for name in files}) != len(files):
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
    records = suite_records(results_root, suite)
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
    records = suite_records(results_root, suite)
    out = results_root / suite
    stale = []
    for name, data in sorted(report_files(records, reference, plots=False).items()):
        path = out / name
        if not path.is_file() or path.read_bytes() != data:
            stale.append(name)
    return stale


README_BEGIN = "<!-- {suite}-leaderboard:begin (generated by `namex-bench report {suite} --readme README.md`) -->"
README_END = "<!-- {suite}-leaderboard:end -->"


def readme_block(results_root: Path, suite: str, reference: str | None = None) -> str:
    """The suite's leaderboard as a block for a README at the repository root: headings
    two levels down, plot links pointing into ``results/<suite>/plots``."""
    results_root = Path(results_root)
    records = suite_records(results_root, suite)
    text = render_leaderboard_markdown(records, reference, plots_dir=f"{results_root.name}/{suite}/plots")
    lines = ["##" + line if line.startswith("#") else line for line in text.strip().splitlines()]
    return "\n".join([README_BEGIN.format(suite=suite), *lines, README_END.format(suite=suite)])


def update_readme(readme: Path, results_root: Path, suite: str, reference: str | None = None) -> bool:
    """Replace the suite's generated block in ``readme`` (between its begin/end markers);
    ``True`` if the file changed. A README without the markers is an error."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    begin, end = README_BEGIN.format(suite=suite), README_END.format(suite=suite)
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: no generated block for {suite!r}; add the lines {begin!r} and {end!r} where it goes")
    start, stop = text.index(begin), text.index(end) + len(end)
    return write_if_changed(readme, (text[:start] + readme_block(results_root, suite, reference) + text[stop:]).encode())
