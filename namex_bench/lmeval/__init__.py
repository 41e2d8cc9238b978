"""MMLU and ARC through lm-eval, from the Hugging Face hub or from the offline archive.

:func:`evaluate_lm_eval` wraps a namex_bench causal LM (a merged MoE LLM included) as
lm-eval's ``HFLM`` and runs lm-eval's own ``mmlu``, ``arc_easy`` and ``arc_challenge``
tasks; ``source`` picks their data: ``"hub"`` (lm-eval's tasks as installed) or
``"offline"`` (the same task configs on the pinned archive's files,
:mod:`namex_bench.lmeval.offline`). lm-eval does all the scoring.
"""

from .evaluate import LMEvalResult, evaluate_lm_eval, flatten_results
from .model import lm_eval_model
from .offline import offline_task_manager
from .tasks import SOURCES, TASKS, check_task_names, hub_task_manager, task_manager

__all__ = [
    "LMEvalResult", "SOURCES", "TASKS", "check_task_names", "evaluate_lm_eval", "flatten_results",
    "hub_task_manager", "lm_eval_model", "offline_task_manager", "task_manager",
]
