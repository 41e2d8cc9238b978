"""Writers of the report's tables: Markdown (tabulate, GitHub flavour), CSV (pandas), LaTeX (booktabs).

Each function returns text; nothing here touches the file system. The same table
always renders to the same string: floats in CSV use one fixed format
(:data:`CSV_FLOAT_FORMAT`), line ends are ``"\\n"``, and no cell holds a path, a time
or anything else of the machine that rendered it.

The best row of a leaderboard is marked: a ``best`` column in CSV, ``**bold**`` in
Markdown and ``\\textbf{}`` in LaTeX.

A task/model with corruption cells also gets a robustness table
(:mod:`.robustness`), rendered here in the same three formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from tabulate import Line, TableFormat, tabulate

from .leaderboard import Leaderboard, PairedTable, Section, sections
from .robustness import RobustnessTable, robustness_table

__all__ = [
    "CSV_FLOAT_FORMAT",
    "file_stem",
    "latex_escape",
    "leaderboard_csv",
    "leaderboard_latex",
    "leaderboard_markdown",
    "paired_csv",
    "paired_latex",
    "paired_markdown",
    "render_leaderboard_markdown",
    "robustness_csv",
    "robustness_latex",
    "robustness_markdown",
    "robustness_section_markdown",
    "section_markdown",
]

CSV_FLOAT_FORMAT = "%.10g"

_NUMERIC_DISPLAY_COLUMNS = {"rank", "n", "n pairs", "p"}

_LATEX_ESCAPES = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
}


def file_stem(task: str, model: str) -> str:
    """``<task>__<model>`` with every character but letters, digits, ``.``, ``_`` and ``-`` made ``-``."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]", "-", part) for part in (task, model))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``_ % & $ # { } ~ ^ \\ < >``); ``±`` and ``Δ`` become math."""
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def _display_rows(table: pd.DataFrame, columns: Sequence[str]) -> list[list[str]]:
    return [[_cell(v) for v in row] for row in table[list(columns)].itertuples(index=False, name=None)]


def _align(columns: Sequence[str]) -> list[str]:
    return ["right" if c in _NUMERIC_DISPLAY_COLUMNS or c.startswith("Δ") else "left" for c in columns]


# --------------------------------------------------------------------------- Markdown


def _markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


def _markdown_table(rows: list[list[str]], columns: Sequence[str], bold: Sequence[bool] = ()) -> str:
    bold = list(bold) or [False] * len(rows)
    cells = [
        [f"**{_markdown_escape(c)}**" if b and c else _markdown_escape(c) for c in row] for row, b in zip(rows, bold)
    ]
    return tabulate(
        cells,
        headers=[_markdown_escape(c) for c in columns],
        tablefmt="github",
        disable_numparse=True,
        colalign=_align(columns),
    )


def leaderboard_markdown(board: Leaderboard) -> str:
    """The leaderboard as a GitHub Markdown table, the best row in bold."""
    return _markdown_table(_display_rows(board.table, board.display_columns), board.display_columns, list(board.table["best"]))


def paired_markdown(paired: PairedTable) -> str:
    """The paired comparison as a GitHub Markdown table, or its note when there is no table."""
    if paired.table is None:
        return paired.note or ""
    return _markdown_table(_display_rows(paired.table, paired.display_columns), paired.display_columns)


def _goal_words(goal: str) -> str:
    return "higher is better" if goal == "max" else "lower is better"


def robustness_markdown(rob: RobustnessTable) -> str:
    """The robustness table as a GitHub Markdown table."""
    return _markdown_table(_display_rows(rob.table, rob.display_columns), rob.display_columns)


def _robustness_caption(rob: RobustnessTable) -> str:
    explained = {
        "clean_error": "`clean error` is the top-1 error on clean data",
        "corruption_error": "`mean CE` the mean error over the benchmark corruptions' cells (corruption × severity)",
        "corruption_error_all": "`mean CE (all)` the same over every corruption, the extras included",
        "relative_ce": f"`rel. CE vs {rob.relative_to}` the mean over benchmark corruptions of "
        f"Σ_severity error / Σ_severity error of `{rob.relative_to}` on the same seed (1 = as robust as the reference)",
        "mce": "`mCE` AlexNet-normalised",
        "relative_mce": "`relative mCE` AlexNet-normalised, relative to the clean error",
    }
    parts = [explained[key] for key, _ in rob.summary_columns]
    return (
        "Top-1 error under corruption (lower is better). "
        + "; ".join(parts)
        + ". These are mean ± 95% CI over seeds; n is the number of seeds with corruption cells. "
        "Each corruption's column is its error averaged over severities, then over seeds, printed without a CI "
        "to keep the table readable (the CSV has every raw column)."
    )


def robustness_section_markdown(rob: RobustnessTable, plots_dir: str | None = "plots") -> str:
    """The "Robustness" subsection of a task/model: caption, table, notes, plot links."""
    lines = ["### Robustness", "", _robustness_caption(rob), "", robustness_markdown(rob), ""]
    if rob.note:
        lines += [rob.note, ""]
    if rob.without_cells:
        lines += ["No corruption cells (not in the table): " + ", ".join(f"`{m}`" for m in rob.without_cells) + ".", ""]
    if plots_dir is not None:
        stem = file_stem(rob.task, rob.model)
        lines += [
            f"![top-1 error by severity on {rob.task} / {rob.model}]({plots_dir}/{stem}__severity.png)",
            "",
            f"![mean CE on {rob.task} / {rob.model}]({plots_dir}/{stem}__mce.png)",
            "",
        ]
    return "\n".join(lines)


def section_markdown(section: Section, plots_dir: str | None = "plots", robustness: RobustnessTable | None = None) -> str:
    """One task/model: the leaderboard, the paired comparison, the failed runs, the plot link,
    then the robustness subsection when ``robustness`` is given."""
    lines = [f"## {section.task} / {section.model}", ""]
    if section.note:
        lines += [f"> {section.note}", ""]
    board = section.leaderboard
    if board is None:
        lines += ["No run of this task on this model succeeded.", ""]
    else:
        goals = ", ".join(f"`{m}` {'↑' if board.goals[m] == 'max' else '↓'}" for m in board.metrics if m in board.goals)
        lines += [
            f"Ranked by the mean of `{board.primary}` ({_goal_words(board.goal)}). "
            f"Cells are mean ± 95% CI over seeds (t distribution); n is the number of seeds."
            + (f" Goals: {goals}." if goals else ""),
            "",
            leaderboard_markdown(board),
            "",
        ]
        paired = section.paired
        if paired is not None and paired.table is not None:
            lines += [
                f"Paired comparison with `{paired.reference}` over matched seeds: Δ is method − reference in "
                f"`{paired.primary}` (mean ± 95% CI), p from a paired t-test, W/T/L counts the seeds the method "
                f"won, tied and lost ({_goal_words(paired.goal)}).",
                "",
                paired_markdown(paired),
                "",
            ]
        elif paired is not None:
            lines += [paired_markdown(paired), ""]
    if section.failed:
        count = len(section.failed)
        lines += [f"{count} run{'s' if count != 1 else ''} failed and {'are' if count != 1 else 'is'} not counted: "
                  + ", ".join(f"`{name}`" for name in section.failed) + ".", ""]
    if board is not None and plots_dir is not None:
        stem = file_stem(section.task, section.model)
        lines += [f"![{board.primary} on {section.task} / {section.model}]({plots_dir}/{stem}.png)", ""]
    if robustness is not None:
        lines += [robustness_section_markdown(robustness, plots_dir)]
    return "\n".join(lines)


def render_leaderboard_markdown(
    records: Iterable[Mapping[str, Any]], reference: str | None = None, *, plots_dir: str | None = "plots"
) -> str:
    """The whole leaderboard document of a suite's records: a section per task/model.

    ``reference`` overrides the records' reference method; ``plots_dir`` is the folder
    the plot links point into, relative to the document (``None``: no plot links).
    """
    records = list(records)
    suites = sorted({str(r.get("suite")) for r in records if r.get("suite")})
    ok = sum(r.get("status") == "ok" for r in records)
    title = f"# Leaderboard: {', '.join(suites)}" if suites else "# Leaderboard"
    head = [
        title,
        "",
        f"Generated from {len(records)} run record{'s' if len(records) != 1 else ''} ({ok} successful); "
        "regenerate it from the records rather than editing it.",
        "",
    ]
    from .compression_plot import compression_markdown

    body = [
        section_markdown(s, plots_dir, robustness_table(records, s.task, s.model, reference) if s.leaderboard else None)
        + compression_markdown(records, s.task, s.model, plots_dir)
        for s in sections(records, reference)
    ]
    return "\n".join(head + body).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- CSV


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT_FORMAT, na_rep="")


def leaderboard_csv(board: Leaderboard) -> str:
    """Every column of the leaderboard: formatted cells, ``best``, and raw mean/std/ci95 per metric."""
    return _csv(board.table)


def paired_csv(paired: PairedTable) -> str:
    """Every column of the paired comparison (formatted and raw); empty when there is no table."""
    return "" if paired.table is None else _csv(paired.table)


def robustness_csv(rob: RobustnessTable) -> str:
    """Every column of the robustness table: formatted cells, raw mean/std/ci95 per column, raw mean per corruption."""
    return _csv(rob.table)


# --------------------------------------------------------------------------- LaTeX


def _raw_latex_row(cell_values: list[str], colwidths: list[int], colaligns: list[str]) -> str:
    return "&".join(cell_values) + "\\\\"


def _begin_booktabs(colwidths: list[int], colaligns: list[str]) -> str:
    spec = "".join({"right": "r", "center": "c", "decimal": "r"}.get(a, "l") for a in colaligns)
    return f"\\begin{{tabular}}{{{spec}}}\n\\toprule"


# tabulate's "latex_booktabs" layout, with rows written as given: cells are escaped (and bolded) here,
# so that ``\textbf{}`` and ``$\pm$`` survive.
_BOOKTABS = TableFormat(
    lineabove=_begin_booktabs,
    linebelowheader=Line("\\midrule", "", "", ""),
    linebetweenrows=None,
    linebelow=Line("\\bottomrule\n\\end{tabular}", "", "", ""),
    headerrow=_raw_latex_row,
    datarow=_raw_latex_row,
    padding=1,
    with_header_hide=None,
)


def _latex_table(rows: list[list[str]], columns: Sequence[str], bold: Sequence[bool] = ()) -> str:
    bold = list(bold) or [False] * len(rows)
    cells = [[f"\\textbf{{{latex_escape(c)}}}" if b and c else latex_escape(c) for c in row] for row, b in zip(rows, bold)]
    return (
        tabulate(
            cells,
            headers=[latex_escape(c) for c in columns],
            tablefmt=_BOOKTABS,
            disable_numparse=True,
            colalign=_align(columns),
        )
        + "\n"
    )


def leaderboard_latex(board: Leaderboard) -> str:
    """The leaderboard as a booktabs ``tabular``, the best row in ``\\textbf{}``."""
    return _latex_table(_display_rows(board.table, board.display_columns), board.display_columns, list(board.table["best"]))


def paired_latex(paired: PairedTable) -> str:
    """The paired comparison as a booktabs ``tabular``; empty when there is no table."""
    if paired.table is None:
        return ""
    return _latex_table(_display_rows(paired.table, paired.display_columns), paired.display_columns)


def robustness_latex(rob: RobustnessTable) -> str:
    """The robustness table as a booktabs ``tabular``."""
    return _latex_table(_display_rows(rob.table, rob.display_columns), rob.display_columns)
