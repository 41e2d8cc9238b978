"""Writers of the report's tables: Markdown (tabulate, GitHub flavour), CSV (pandas), LaTeX (booktabs).

Each function returns text; nothing here touches the file system. The same table
always renders to the same string: floats in CSV use one fixed format
(:data:`CSV_FLOAT_FORMAT`), line ends are ``"\\n"``, and no cell holds a path, a time
or anything else of the machine that rendered it.

A method significantly better than every other is marked: a ``best`` column in CSV, its
name and primary cell in ``**bold**`` in Markdown and ``\\textbf{}`` in LaTeX (no other
cell: the mark is about the primary metric, and training metrics are never marked).

A task/model with corruption cells also gets a robustness table
(:mod:`.robustness`), rendered here in the same three formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from tabulate import Line, TableFormat, tabulate

from .across_tasks import AcrossTasks, across_tasks
from .comparison import Comparisons, Power
from .leaderboard import Leaderboard, PairedTable, Section, is_training_metric, pairwise_table, sections
from .mechanisms import mechanism_section_markdown
from .per_example import ExampleArrays
from .robustness import RobustnessTable, robustness_table
from .statistics import format_interval, format_significant

__all__ = [
    "CSV_FLOAT_FORMAT",
    "across_tasks_csv",
    "across_tasks_markdown",
    "file_stem",
    "latex_escape",
    "leaderboard_csv",
    "leaderboard_latex",
    "leaderboard_markdown",
    "paired_csv",
    "paired_latex",
    "paired_markdown",
    "pairwise_csv",
    "pairwise_markdown",
    "power_line",
    "render_leaderboard_markdown",
    "robustness_csv",
    "robustness_latex",
    "robustness_markdown",
    "robustness_section_markdown",
    "section_markdown",
    "suite_statistics",
]

CSV_FLOAT_FORMAT = "%.10g"

_NUMERIC_DISPLAY_COLUMNS = {"rank", "n", "p (Holm)", "tasks"}

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
    "×": r"$\times$",
    "–": "--",
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


def _bold_cells(board: Leaderboard) -> list[set[str]]:
    """Per row, the columns printed in bold: the best method's name and primary cell."""
    return [{"method", board.primary} if best else set() for best in board.table["best"]]


# --------------------------------------------------------------------------- Markdown


def _markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


def _markdown_table(rows: list[list[str]], columns: Sequence[str], bold: Sequence[set[str]] = ()) -> str:
    bold = list(bold) or [set()] * len(rows)
    cells = [
        [f"**{_markdown_escape(c)}**" if name in b and c else _markdown_escape(c) for name, c in zip(columns, row)]
        for row, b in zip(rows, bold)
    ]
    return tabulate(
        cells,
        headers=[_markdown_escape(c) for c in columns],
        tablefmt="github",
        disable_numparse=True,
        colalign=_align(columns),
    )


def leaderboard_markdown(board: Leaderboard) -> str:
    """The leaderboard as a GitHub Markdown table, a significantly best method's name and primary cell in bold."""
    return _markdown_table(_display_rows(board.table, board.display_columns), board.display_columns, _bold_cells(board))


def paired_markdown(paired: PairedTable) -> str:
    """The paired comparison as a GitHub Markdown table, or its note when there is no table."""
    if paired.table is None:
        return paired.note or ""
    return _markdown_table(_display_rows(paired.table, paired.display_columns), paired.display_columns)


def pairwise_markdown(comparisons: Comparisons) -> str:
    """Every pair's difference ``row − column`` in the primary metric (rounded to its interval),
    ``✱`` where Holm's correction over the table's pairs leaves it significant."""
    methods = list(comparisons.methods)
    rows = []
    for a in methods:
        row = [a]
        for b in methods:
            if a == b:
                row.append("—")
                continue
            c = comparisons.get(a, b)
            text = format_interval(c.estimate, c.low, c.high, signed=True).split(" ")[0] if c.estimate is not None else ""
            row.append(text + (" ✱" if comparisons.better(a, b) or comparisons.better(b, a) else ""))
        rows.append(row)
    return _markdown_table(rows, ["row − column", *methods])


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def power_line(power: Power | None, primary: str, reference: str | None) -> str:
    """One sentence: the smallest difference the table detects, and the seeds that would detect 1 point."""
    if power is None:
        return f"Power: not estimable (fewer than two matched seeds and no per-example data for `{primary}`)."
    basis = (
        f"{_count(power.seeds, 'seed')} × {power.examples:,} examples, seed and example variance as observed"
        if power.kind == "bootstrap" and power.examples is not None
        else f"{_count(power.seeds, 'seed')}, seed-level variance (no per-example data)"
        if power.kind == "t"
        else f"{_count(power.seeds, 'seed')}, per-example where the data exist, seed-level otherwise"
    )
    among = f"the {_count(power.comparisons, 'comparison')} with `{reference}`" if reference else f"the {_count(power.comparisons, 'pair')}"
    mdd = format_significant(power.mdd, 2)
    if power.seeds_needed is None:
        seeds = f"no number of seeds detects {power.point_name} with these examples: it needs more examples"
    else:
        seeds = f"detecting {power.point_name} would take about {_count(power.seeds_needed, 'seed')}"
    return (
        f"Power: with {basis}, a true difference in `{primary}` of {mdd} or more is detected with 80% power "
        f"at α = 0.05 (median over {among}); {seeds}."
    )


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
        + ". These are means over seeds with their 95% intervals (as in the leaderboard: the hierarchical bootstrap "
        "where per-example data exist, else t over seeds), inside [0, 1] for errors; n is the number of seeds with corruption cells. "
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


def _interval_words(board: Leaderboard) -> str:
    groups: dict[str, list[str]] = {}
    for metric in board.metrics:
        groups.setdefault(board.intervals.get(metric, "none"), []).append(f"`{metric}`")
    examples = None
    scores = board.comparisons.scores.get(board.methods[0]) if board.methods else None
    if scores is not None and not isinstance(scores, str):
        examples = scores.examples
    parts = []
    if groups.get("bootstrap"):
        size = f" ({examples:,} examples of the primary metric per seed)" if examples else ""
        parts.append(f"for {', '.join(groups['bootstrap'])} the hierarchical bootstrap over seeds and examples{size}")
    if groups.get("t"):
        parts.append(f"for {', '.join(groups['t'])} Student's t over seeds")
    if groups.get("mixed"):
        parts.append(f"for {', '.join(groups['mixed'])} the bootstrap where per-example data exist, else t over seeds")
    text = "; ".join(parts) if parts else "none (one seed each)"
    return f"Cells are the mean over seeds with its 95% interval, inside the metric's range: {text}."


def _leaderboard_caption(board: Leaderboard) -> str:
    if not board.ranked:
        return (f"**Not ranked**: a pipeline check whose numbers cannot tell the methods apart (see the note above); "
                f"ordered by the mean of `{board.primary}`, without ranks, bold or comparisons. {_interval_words(board)} "
                f"n is the number of seeds. Precision: {board.precision}.")
    best = board.comparisons.best()
    training = [f"`{m}`" for m in board.metrics if is_training_metric(m)]
    goals = ", ".join(f"`{m}` {'↑' if board.goals[m] == 'max' else '↓'}" for m in board.metrics if m in board.goals)
    words = [
        f"Ordered by the mean of `{board.primary}` ({_goal_words(board.goal)})." + (f" Goals: {goals}." if goals else ""),
        _interval_words(board),
        f"rank is the range of ranks that Holm-corrected pairwise comparisons of `{board.primary}` allow: "
        "methods that cannot be told apart share it.",
        f"Bold: `{best}` is significantly better than every other method." if best
        else "No method is significantly better than every other, so none is bold.",
    ]
    if training:
        words.append(f"{', '.join(training)} (training) is shown, never ranked.")
    words.append(f"n is the number of seeds. Precision: {board.precision}.")
    return " ".join(words)


def _paired_caption(paired: PairedTable, pairs: int) -> str:
    kinds = set(paired.table["kind"])
    how = (
        "the hierarchical paired bootstrap over the same seeds and examples" if kinds == {"bootstrap"}
        else "the paired t-test over seeds (no per-example data)" if kinds == {"t"}
        else "the hierarchical paired bootstrap where both methods have per-example data, else the paired t-test over seeds"
    )
    text = (
        f"Paired comparison with `{paired.reference}` on `{paired.primary}`: Δ is method − reference with its 95% interval "
        f"from {how}; p (Holm) is its p-value, Holm-adjusted over all {_count(pairs, 'pair')} of the table."
    )
    if paired.has_mcnemar:
        tests = sum(len(m.split()) for m in paired.table["mcnemar"])
        text += (f" McNemar p (Holm): McNemar's exact test of the 0/1 outcomes on each seed (in seed order), "
                 f"Holm-adjusted over the table's {_count(tests, 'test')}.")
    return text + f" W/T/L counts the seeds the method won, tied and lost ({_goal_words(paired.goal)}); n is seeds × examples."


def _missing_line(section: Section) -> list[str]:
    if not section.missing_examples or section.leaderboard is None:
        return []
    by_reason: dict[str, list[str]] = {}
    for method, reason in section.missing_examples:
        by_reason.setdefault(reason, []).append(f"`{method}`")
    parts = "; ".join(f"{', '.join(methods)}: {reason}" for reason, methods in sorted(by_reason.items()))
    return [
        f"Per-example data is missing or unusable for `{section.leaderboard.primary}` ({parts}): "
        "the statistics involving these methods are seed-level (t over seeds).",
        "",
    ]


def section_markdown(section: Section, plots_dir: str | None = "plots", robustness: RobustnessTable | None = None) -> str:
    """One task/model: the leaderboard, the paired comparisons and the power line, the failed runs,
    the plot link, then the robustness subsection when ``robustness`` is given."""
    lines = [f"## {section.task} / {section.model}", ""]
    if section.note:
        lines += [f"> {section.note}", ""]
    board = section.leaderboard
    if board is None:
        lines += ["No run of this task on this model succeeded.", ""]
    else:
        lines += [_leaderboard_caption(board), "", leaderboard_markdown(board), ""]
        lines += _missing_line(section)
    if board is not None and board.ranked:
        paired = section.paired
        pairs = len(board.comparisons.pairs)
        if paired is not None and paired.table is not None:
            lines += [_paired_caption(paired, pairs), "", paired_markdown(paired), ""]
        elif paired is not None:
            lines += [paired_markdown(paired), ""]
        if len(board.comparisons.methods) > 2:
            lines += [
                f"All pairs: Δ `{board.primary}` (row − column), rounded to its interval; ✱ marks a difference that stays "
                f"significant after Holm's correction over the {_count(pairs, 'pair')}.",
                "",
                pairwise_markdown(board.comparisons),
                "",
            ]
        lines += [power_line(section.power, board.primary, paired.reference if paired is not None and paired.table is not None else None), ""]
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


def across_tasks_markdown(agg: AcrossTasks, plots_dir: str | None = "plots") -> str:
    """The "Across tasks" section: IQM and probability of improvement per method, and the plots."""
    lines = [
        "## Across tasks",
        "",
        f"Each run's primary metric divided by `{agg.reference}`'s mean on its task (the inverse where lower is better): "
        f"1 is as good as `{agg.reference}`, above 1 better. IQM is the interquartile mean of a method's normalised runs over "
        f"the {_count(len(agg.tasks), 'task')} ({', '.join(agg.tasks)}); P(> {agg.reference}) the probability that a run of the "
        f"method beats a run of `{agg.reference}` on a random task (ties count ½). Intervals: 95% stratified bootstrap "
        "(runs resampled within each task), as Agarwal et al. (2021) recommend.",
        "",
        _markdown_table(_display_rows(agg.table, agg.display_columns), agg.display_columns),
        "",
    ]
    if plots_dir is not None:
        lines += [
            f"![IQM and probability of improvement across tasks]({plots_dir}/across_tasks.png)",
            "",
            f"![performance profile across tasks]({plots_dir}/across_tasks__profile.png)",
            "",
        ]
    return "\n".join(lines)


def suite_statistics(
    records: list[Mapping[str, Any]], reference: str | None = None, arrays: ExampleArrays | None = None
) -> tuple[list[Section], AcrossTasks | None]:
    """The sections of every task/model and the aggregates across tasks (``None`` with fewer than two)."""
    all_sections = sections(records, reference, arrays)
    reference_name = next((s.paired.reference for s in all_sections if s.paired is not None and s.paired.reference), reference)
    return all_sections, across_tasks(records, all_sections, reference_name)


def render_leaderboard_markdown(
    records: Iterable[Mapping[str, Any]],
    reference: str | None = None,
    *,
    plots_dir: str | None = "plots",
    arrays: ExampleArrays | None = None,
    notes: Sequence[str] = (),
    computed: tuple[Sequence[Section], AcrossTasks | None] | None = None,
) -> str:
    """The whole leaderboard document of a suite's records: a section per task/model, then the
    aggregates across tasks.

    ``reference`` overrides the records' reference method; ``plots_dir`` is the folder
    the plot links point into, relative to the document (``None``: no plot links);
    ``arrays`` the records' per-example arrays (``{record key: {set: {field: array}}}``);
    ``notes`` lines printed under the title (e.g. sidecars that could not be read);
    ``computed`` the sections and aggregates of these records when the caller has them
    (:func:`suite_statistics`).
    """
    records = list(records)
    suites = sorted({str(r.get("suite")) for r in records if r.get("suite")})
    ok = sum(r.get("status") == "ok" for r in records)
    title = f"# Leaderboard: {', '.join(suites)}" if suites else "# Leaderboard"
    with_examples = sum(1 for r in records if r.get("status") == "ok" and r.get("examples"))
    head = [
        title,
        "",
        f"Generated from {len(records)} run record{'s' if len(records) != 1 else ''} ({ok} successful, "
        f"{with_examples} with per-example data); regenerate it from the records rather than editing it. "
        "How to read the tables: see the README.",
        "",
    ]
    from .compression_plot import compression_markdown

    head += [line for note in notes for line in (note, "")]
    all_sections, agg = computed if computed is not None else suite_statistics(records, reference, arrays)
    body = [
        section_markdown(s, plots_dir, robustness_table(records, s.task, s.model, reference, board=s.leaderboard)
                         if s.leaderboard else None)
        + mechanism_section_markdown(records, s.task, s.model)
        + compression_markdown(records, s.task, s.model, plots_dir)
        for s in all_sections
    ]
    if agg is not None:
        body.append(across_tasks_markdown(agg, plots_dir))
    return "\n".join(head + body).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- CSV


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n", float_format=CSV_FLOAT_FORMAT, na_rep="")


def leaderboard_csv(board: Leaderboard) -> str:
    """Every column of the leaderboard: formatted cells, rank range, ``best``, and raw mean/std/low/high per metric."""
    return _csv(board.table)


def paired_csv(paired: PairedTable) -> str:
    """Every column of the paired comparison (formatted and raw); empty when there is no table."""
    return "" if paired.table is None else _csv(paired.table)


def pairwise_csv(comparisons: Comparisons) -> str:
    """Every pair of the table: difference, interval, raw and Holm-adjusted p, significance, kind."""
    return _csv(pairwise_table(comparisons))


def robustness_csv(rob: RobustnessTable) -> str:
    """Every column of the robustness table: formatted cells, raw mean/std/ci95/low/high per column, raw mean per corruption."""
    return _csv(rob.table)


def across_tasks_csv(agg: AcrossTasks) -> tuple[str, str]:
    """The cross-task table (per method) and every ordered pair's probability of improvement."""
    return _csv(agg.table), _csv(agg.pairs)


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


def _latex_table(rows: list[list[str]], columns: Sequence[str], bold: Sequence[set[str]] = ()) -> str:
    bold = list(bold) or [set()] * len(rows)
    cells = [
        [f"\\textbf{{{latex_escape(c)}}}" if name in b and c else latex_escape(c) for name, c in zip(columns, row)]
        for row, b in zip(rows, bold)
    ]
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
    """The leaderboard as a booktabs ``tabular``, a significantly best method's name and primary cell in ``\\textbf{}``."""
    return _latex_table(_display_rows(board.table, board.display_columns), board.display_columns, _bold_cells(board))


def paired_latex(paired: PairedTable) -> str:
    """The paired comparison as a booktabs ``tabular``; empty when there is no table."""
    if paired.table is None:
        return ""
    return _latex_table(_display_rows(paired.table, paired.display_columns), paired.display_columns)


def robustness_latex(rob: RobustnessTable) -> str:
    """The robustness table as a booktabs ``tabular``."""
    return _latex_table(_display_rows(rob.table, rob.display_columns), rob.display_columns)
