"""The report: leaderboards, paired comparisons and plots regenerated from run records.

    statistics   mean, std, 95% CI over seeds; paired t-tests; "mean ± ci" formatting
    leaderboard  records -> tables (pandas), grouped by task and model
    robustness   records with corruption cells -> clean error, mean CE, CE relative to the reference, per corruption
    mechanisms   records' diagnostics -> per method, the output change when each of its parts is ablated
    render       tables -> Markdown, CSV, LaTeX text
    plots        leaderboard -> PNG bar chart; robustness -> mean CE bars, error-by-severity panels
    write        results/<suite>/runs/*.json -> results/<suite>/{leaderboard.md, tables/, plots/}
"""

from .leaderboard import Leaderboard, PairedTable, Section, leaderboard, paired_table, sections
from .robustness import RobustnessTable, robustness_table
from .statistics import Paired, Summary, format_mean_ci, format_p, paired_comparison, summarise
from .write import NoRecordsError, render_leaderboard_markdown, write_report

__all__ = [
    "Leaderboard",
    "NoRecordsError",
    "Paired",
    "PairedTable",
    "RobustnessTable",
    "Section",
    "Summary",
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
