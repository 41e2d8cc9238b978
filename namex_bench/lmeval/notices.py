"""lm-eval's expected notices, counted instead of printed, and its progress bars made ours.

Scoring a namex_bench model through lm-eval makes lm-eval log, at every run, notices that
are expected here and say nothing new — ``Overwriting default num_fewshot …`` once per task
and MMLU subject when a suite sets ``num_fewshot``, HFLM's two notices about a pre-built
model (which is how lm-eval gets ours) and ``Combined length of context … Truncating N
tokens from the left`` once per model input (prompt and answer) longer than the model's context. Inside
:func:`counted_notices` these records are dropped and counted (the truncations go into the
run's record); every other record passes. lm-eval's own tqdm bars (one per task and MMLU
subject, which stay on screen and flood a log with carriage returns) are replaced, for the
duration, by :func:`namex_bench.progress.progress`: transient bars on a terminal, a line at
most once a minute in a log.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from ..progress import progress

TRUNCATED = "truncated inputs"


@dataclass(frozen=True)
class Notice:
    logger: str
    label: str
    pattern: re.Pattern[str]


NOTICES = (
    Notice("lm_eval.evaluator", "num_fewshot overrides", re.compile(r"^Overwriting default num_fewshot of ")),
    Notice("lm_eval.models.huggingface", "pre-built model notices", re.compile(r"^`pretrained` model kwarg is not of type `str`")),
    Notice("lm_eval.models.huggingface", "pre-built model notices", re.compile(r"^Passed an already-initialized model through `pretrained`")),
    Notice("lm_eval.models.huggingface", TRUNCATED, re.compile(r"^Combined length of context \(\d+\) and continuation \(\d+\) exceeds")),
)

#: lm-eval modules whose ``tqdm`` is swapped for :func:`lm_eval_bar` inside :func:`counted_notices`.
BAR_MODULES = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.models.huggingface")


class _CountingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for notice in NOTICES:
            if record.name == notice.logger and notice.pattern.search(message):
                self.counts[notice.label] += 1
                return False
        return True


def lm_eval_bar(iterable: Any = None, *, total: int | None = None, desc: str | None = None, disable: bool = False, **_: Any) -> Any:
    """What lm-eval's ``tqdm(...)`` calls get: :func:`~namex_bench.progress.progress` (tqdm's
    other options — ``position``, ``leave`` … — are lm-eval's display choices, not kept)."""
    return progress(iterable, total=total, desc=f"lm-eval: {desc}" if desc else "lm-eval", enabled=not disable)


@contextmanager
def counted_notices() -> Iterator[Counter[str]]:
    """Drop and count lm-eval's expected notices (:data:`NOTICES`) for the duration; yields
    the counts by label, filled as lm-eval logs."""
    import importlib

    counter = _CountingFilter()
    loggers = {logging.getLogger(n.logger) for n in NOTICES}
    with ExitStack() as stack:
        for module in BAR_MODULES:
            stack.enter_context(mock.patch.object(importlib.import_module(module), "tqdm", lm_eval_bar))
        for logger in loggers:
            logger.addFilter(counter)
            stack.callback(logger.removeFilter, counter)
        yield counter.counts


def summary(counts: Counter[str], max_length: int | None) -> str | None:
    """One line for what :func:`counted_notices` kept off the screen, or ``None`` if nothing."""
    if not counts:
        return None
    parts = [f"{n} {label}" for label, n in sorted(counts.items()) if label != TRUNCATED]
    line = "lm-eval: " + (", ".join(parts) + " not shown" if parts else "")
    if counts[TRUNCATED]:
        line += ("; " if parts else "") + f"{counts[TRUNCATED]} inputs cut from the left to the model's {max_length}-token context"
    return line
