"""The report: leaderboards, paired comparisons and plots regenerated from run records and
their per-example sidecars.

    statistics    mean, std, t intervals over seeds; paired t-tests; "mean ± ci" / "mean [low, high]" formatting
    bootstrap     the hierarchical paired bootstrap over seeds and examples (variance components)
    significance  McNemar's exact test, Holm's correction, honest rank ranges, power
    aggregate     across tasks (rliable's): normalised scores, IQM, stratified bootstrap, P(A > B), profiles
    per_example   records + per-example arrays -> [seeds, examples] scores (checked against the records)
    comparison    every pair of methods of a table on its primary metric, Holm-adjusted, with ranks and power
    leaderboard   records -> tables (pandas), grouped by task and model
    robustness    records with corruption cells -> clean error, mean CE, CE relative to the reference, per corruption
    mechanisms    records' diagnostics -> per method, the output change when each of its parts is ablated
    across_tasks  sections -> IQM and probability of improvement per method across the suite's tasks
    render        tables -> Markdown, CSV, LaTeX text
    plots         forest plots of estimates and differences with intervals; error by severity; profiles
    write         results/<suite>/runs/*.json (+ *.examples.npz) -> results/<suite>/{leaderboard.md, tables/, plots/}
"""

from .leaderboard import Leaderboard, PairedTable, Section, leaderboard, paired_table, sections
from .robustness import RobustnessTable, robustness_table
from .statistics import Paired, Summary, format_interval, format_mean_ci, format_p, paired_comparison, summarise
from .write import NoRecordsError, render_leaderboard_markdown, write_report

__all__ = [
    "Leaderboard",
    "NoRecordsError",
    "Paired",
    "PairedTable",
    "RobustnessTable",
    "Section",
    "Summary",
    "format_interval",
    "format_mean_ci",
    "format_p",
    "leaderboard",
    "paired_comparison",
    "paired_table",
    "render_leaderboard_markdown",
    "robustness_table",
    "sections",
    "summarise",
    "write_report",
]
