"""Write a suite's report from its run records.

``write_report(results_root, suite)`` reads ``results/<suite>/runs/*.json`` and writes::

    results/<suite>/leaderboard.md                        a section per task/model
    results/<suite>/tables/<task>__<model>.csv            leaderboard: formatted + raw columns
    results/<suite>/tables/<task>__<model>.tex            leaderboard: booktabs tabular
    results/<suite>/tables/<task>__<model>__paired.csv    paired comparison with the reference
    results/<suite>/tables/<task>__<model>__paired.tex
    results/<suite>/tables/<task>__<model>__pairwise.csv  every pair of methods
    results/<suite>/plots/<task>__<model>.png             primary metric and Δ vs the reference, with intervals

and, for a task/model whose records have corruption cells (``cells["corruptions"]``)::

    results/<suite>/tables/<task>__<model>__robustness.csv    clean error, mean CE, rel. CE, per corruption
    results/<suite>/tables/<task>__<model>__robustness.tex
    results/<suite>/plots/<task>__<model>__severity.png       error by severity, a panel per corruption
    results/<suite>/plots/<task>__<model>__mce.png            mean CE, mean ± 95% CI

for a compression task, ``plots/<task>__<model>__compression.png`` (score against experts kept),
and, with two or more tasks whose reference ran::

    results/<suite>/tables/across_tasks.csv               IQM and P(> reference) per method
    results/<suite>/tables/across_tasks__pairs.csv        P(A > B) for every ordered pair
    results/<suite>/plots/across_tasks.png                both, with intervals
    results/<suite>/plots/across_tasks__profile.png       performance profiles

Every file is a function of the records and their per-example sidecars alone (read
here, checked against the sha256 each record holds; a sidecar that cannot be used is
named in the leaderboard and its record's statistics are seed-level), written
atomically, and only when its bytes change: regenerating an unchanged report rewrites
nothing and keeps the mtimes.
The paired files are absent for a task/model without a reference to compare against;
a task/model without a successful run only gets its section in ``leaderboard.md``.

Which records count (:func:`report_inputs`): every record is checked as it is read, and
a damaged one stops the report with its file named — or, with ``skip_damaged``, is
listed in ``leaderboard.md`` as a failed run. Where the runner has written
``results/<suite>/current_runs.json`` (the key of every run of the suite as last run),
records of any other key — an older configuration left behind by a partial rerun, or a
run that has left the suite — are not counted, and ``leaderboard.md`` says so at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..runner.examples import ExamplesError, read_examples
from ..runner.records import DamagedRecord, inside, read_current_runs, read_records, runs_dir, write_bytes_atomic
from .compression_plot import compression_png
from .plots import across_tasks_png, mean_ce_png, primary_metric_png, profile_png, severity_png
from .render import (
    across_tasks_csv,
    file_stem,
    leaderboard_csv,
    leaderboard_latex,
    paired_csv,
    paired_latex,
    pairwise_csv,
    render_leaderboard_markdown,
    robustness_csv,
    robustness_latex,
    suite_statistics,
)
from .robustness import robustness_table

__all__ = ["NoRecordsError", "render_leaderboard_markdown", "write_if_changed", "write_report"]


class NoRecordsError(FileNotFoundError):
    """The suite has no run records to report on."""


@dataclass(frozen=True)
class ReportInputs:
    """The records a report counts, and the ones it must tell its reader it does not count."""

    records: list  # sound records of the suite's current runs
    outdated: list  # sound records of runs the suite no longer has in that configuration
    damaged: tuple[DamagedRecord, ...] = ()

    def outdated_summary(self) -> str:
        names = sorted({str(r["name"]) for r in self.outdated})
        shown = ", ".join(f"`{n}`" for n in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        count = len(self.outdated)
        return f"{count} run record{'s are' if count != 1 else ' is'} of an older configuration of the suite ({shown})"

    def notices(self) -> list[str]:
        """Paragraphs for the top of ``leaderboard.md`` (none when every record counts)."""
        out = []
        if self.outdated:
            out.append(f"**Not counted: {self.outdated_summary()}.** Rerun the suite (every shard) to replace them.")
        if self.damaged:
            listed = "; ".join(f"`runs/{d.path.name}` ({d.problem})" for d in self.damaged)
            out.append(f"**{len(self.damaged)} damaged run record{'s' if len(self.damaged) != 1 else ''}, counted as failed "
                       f"runs:** {listed}. Move them away, or rerun the suite to redo them.")
        return out


def report_inputs(results_root: Path, suite: str, skip_damaged: bool = False) -> ReportInputs:
    """The suite's records, split into those that count and the outdated ones (see the module
    docstring). :class:`NoRecordsError` when the suite has none; a damaged record raises
    :class:`~namex_bench.runner.records.DamagedRecordError` unless ``skip_damaged``."""
    damaged: list[DamagedRecord] = []
    records = read_records(results_root, suite, on_damaged=damaged.append if skip_damaged else None)
    if not records and not damaged:
        raise NoRecordsError(f"no run records for suite {suite!r} in {runs_dir(results_root, suite)}; run the suite first")
    current = read_current_runs(results_root, suite)
    if current is None:
        return ReportInputs(records, [], tuple(damaged))
    return ReportInputs([r for r in records if r["key"] in current], [r for r in records if r["key"] not in current],
                        tuple(damaged))


def suite_examples(results_root: Path, suite: str, records: list) -> tuple[dict, list[str]]:
    """The per-example arrays of the suite's successful records that name a sidecar
    (``{record key: {set: {field: array}}}``), and one line per sidecar that could not be used."""
    directory = runs_dir(results_root, suite)
    arrays, notes = {}, []
    for record in records:
        if record.get("status") != "ok" or not record.get("examples"):
            continue
        try:
            found = read_examples(directory, record)
        except ExamplesError as exc:
            notes.append(f"Per-example data not used for `{record.get('name', record.get('key'))}`: {exc}.")
            continue
        if found is not None:
            arrays[str(record["key"])] = found
    return arrays, [n.replace(str(directory), "runs") for n in notes]


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


def report_files(
    records: list, reference: str | None = None, *, plots: bool = True, arrays: dict | None = None, notes: Sequence[str] = ()
) -> dict[str, bytes]:
    """The report's files as ``{path relative to results/<suite>/: bytes}``; ``plots=False`` leaves
    the PNGs out (they are the slow part, and :func:`check_report` does not compare them).
    ``arrays``: the records' per-example arrays; ``notes``: paragraphs for the top of
    ``leaderboard.md`` (records not counted, sidecars that could not be used)."""
    files: dict[str, bytes] = {}
    clash = False  # two task/model pairs gave one name (e.g. a model called "m__robustness")

    def add(name: str, data: bytes) -> None:
        nonlocal clash
        clash = clash or name in files
        files[name] = data

    all_sections, agg = suite_statistics(records, reference, arrays)
    for section in all_sections:
        board = section.leaderboard
        if board is None:
            continue
        stem = file_stem(section.task, section.model)
        add(f"tables/{stem}.csv", leaderboard_csv(board).encode())
        add(f"tables/{stem}.tex", leaderboard_latex(board).encode())
        add(f"tables/{stem}__pairwise.csv", pairwise_csv(board.comparisons).encode())
        paired = section.paired
        if paired is not None and paired.table is not None:
            add(f"tables/{stem}__paired.csv", paired_csv(paired).encode())
            add(f"tables/{stem}__paired.tex", paired_latex(paired).encode())
        if plots:
            add(f"plots/{stem}.png", primary_metric_png(board, paired if paired is not None and paired.table is not None else None))
        if plots and (png := compression_png(records, section.task, section.model)) is not None:
            add(f"plots/{stem}__compression.png", png)
        rob = robustness_table(records, section.task, section.model, reference, board=board)
        if rob is not None:
            add(f"tables/{stem}__robustness.csv", robustness_csv(rob).encode())
            add(f"tables/{stem}__robustness.tex", robustness_latex(rob).encode())
            if plots:
                add(f"plots/{stem}__severity.png", severity_png(rob))
                add(f"plots/{stem}__mce.png", mean_ce_png(rob))
    if agg is not None:
        table, pairs = across_tasks_csv(agg)
        add("tables/across_tasks.csv", table.encode())
        add("tables/across_tasks__pairs.csv", pairs.encode())
        if plots:
            add("plots/across_tasks.png", across_tasks_png(agg))
            add("plots/across_tasks__profile.png", profile_png(agg))
    if clash or len({name.lower() for name in files}) != len(files):
        raise ValueError("two task/model pairs map to the same report file names; rename a task or model")
    files["leaderboard.md"] = render_leaderboard_markdown(
        records, reference, plots_dir="plots", notes=notes, computed=(all_sections, agg)
    ).encode()
    return files


def write_report(results_root: Path, suite: str, reference: str | None = None, *, skip_damaged: bool = False) -> list[Path]:
    """Regenerate ``results/<suite>/``'s leaderboard, tables and plots from its run records.

    ``reference`` overrides the method the records name as the reference of paired
    comparisons. Returns the paths of the report's files (written or already up to
    date), sorted. Raises :class:`NoRecordsError` (a ``FileNotFoundError``) when the
    suite has no records.
    """
    results_root = Path(results_root)
    inputs = report_inputs(results_root, suite, skip_damaged)
    arrays, notes = suite_examples(results_root, suite, inputs.records)
    notes = inputs.notices() + notes
    files = report_files(inputs.records, reference, arrays=arrays, notes=notes)
    # leaderboard.md last: it never links to a plot that is not there yet
    for name in sorted(files, key=lambda n: (n == "leaderboard.md", n)):
        write_if_changed(inside(results_root, suite, name), files[name])
    return sorted(inside(results_root, suite, name) for name in files)


def check_report(results_root: Path, suite: str, reference: str | None = None, *, skip_damaged: bool = False) -> list[str]:
    """The report files of ``results/<suite>/`` that are missing or differ from what the
    records give now (an empty list: the committed report is up to date).

    Tables and ``leaderboard.md`` are compared byte for byte; plots are left out, since
    their bytes depend on the matplotlib and FreeType build that drew them.
    """
    results_root = Path(results_root)
    inputs = report_inputs(results_root, suite, skip_damaged)
    arrays, notes = suite_examples(results_root, suite, inputs.records)
    notes = inputs.notices() + notes
    out = results_root / suite
    stale = []
    for name, data in sorted(report_files(inputs.records, reference, plots=False, arrays=arrays, notes=notes).items()):
        path = out / name
        if not path.is_file() or path.read_bytes() != data:
            stale.append(name)
    return stale


README_BEGIN = "<!-- {suite}-leaderboard:begin (generated by `namex-bench report {suite} --readme README.md`) -->"
README_END = "<!-- {suite}-leaderboard:end -->"


def readme_block(results_root: Path, suite: str, reference: str | None = None, *, skip_damaged: bool = False) -> str:
    """The suite's leaderboard as a block for a README at the repository root: headings
    two levels down, plot links pointing into ``results/<suite>/plots``."""
    results_root = Path(results_root)
    inputs = report_inputs(results_root, suite, skip_damaged)
    arrays, notes = suite_examples(results_root, suite, inputs.records)
    notes = inputs.notices() + notes
    text = render_leaderboard_markdown(inputs.records, reference, plots_dir=f"{results_root.name}/{suite}/plots", arrays=arrays, notes=notes)
    lines = ["##" + line if line.startswith("#") else line for line in text.strip().splitlines()]
    return "\n".join([README_BEGIN.format(suite=suite), *lines, README_END.format(suite=suite)])


def update_readme(
    readme: Path, results_root: Path, suite: str, reference: str | None = None, *, skip_damaged: bool = False
) -> bool:
    """Replace the suite's generated block in ``readme`` (between its begin/end markers);
    ``True`` if the file changed. A README without the markers is an error."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    begin, end = README_BEGIN.format(suite=suite), README_END.format(suite=suite)
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: no generated block for {suite!r}; add the lines {begin!r} and {end!r} where it goes")
    start, stop = text.index(begin), text.index(end) + len(end)
    block = readme_block(results_root, suite, reference, skip_damaged=skip_damaged)
    return write_if_changed(readme, (text[:start] + block + text[stop:]).encode())
