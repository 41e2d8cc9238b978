"""Tasks: how a run trains and evaluates, by task type (``type:`` in a suite's ``tasks:``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .base import RunContext, TaskResult

# task type → "module:function", imported on first use (tasks pull in heavy libraries)
TASK_RUNNERS: dict[str, str] = {
    "image_classification": "namex_bench.tasks.image_classification:run_image_classification",
    "text_classification": "namex_bench.tasks.text_classification:run_text_classification",
    "language_modeling": "namex_bench.tasks.language_modeling:run_language_modeling",
    "lm_eval": "namex_bench.tasks.lm_eval_task:run_lm_eval",
    "compression": "namex_bench.tasks.compression:run_compression",
    "planted_merge": "namex_bench.tasks.planted:run_planted_merge",
}


def task_runner(task_type: str) -> Callable[..., TaskResult]:
    """The function that executes runs of ``task_type``."""
    try:
        module, function = TASK_RUNNERS[task_type].split(":")
    except KeyError:
        raise ValueError(f"unknown task type {task_type!r}; known: {', '.join(TASK_RUNNERS)}") from None
    return getattr(importlib.import_module(module), function)


__all__ = ["TASK_RUNNERS", "RunContext", "TaskResult", "task_runner"]
