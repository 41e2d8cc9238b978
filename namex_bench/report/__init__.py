"""The report: leaderboards, paired comparisons and plots regenerated from run records.

    statistics   mean, std, 95% CI over seeds; paired t-tests; "mean ± ci" formatting
    leaderboard  records -> tables (pandas), grouped by task and model
    render       tables -> Markdown, CSV, LaTeX text
    plots        leaderboard -> PNG bar chart
    write        results/<suite>/runs/*.json -> results/<suite>/{leaderboard.md, tables/, plots/}
"""

from .leaderboard import Leaderboard, PairedTable, Section, leaderboard, paired_table, sections
from .statistics import Paired, Summary, format_mean_ci, format_p, paired_comparison, summarise
from .write import NoRecordsError, render_leaderboard_markdown, write_report

__all__ = [
    "Leaderboard",
    "NoRecordsError",
    "Paired",
    "PairedTable",
    "Section",
    "Summary",
    "format_mean_ci",
    "format_p",
    "leaderboard",
    "paired_comparison",
    "paired_table",
    "render_leaderboard_markdown",
    "sections",
    "summarise",
    "write_report",
]
