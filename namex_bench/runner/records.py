"""Run records: one JSON file per finished run, written atomically; the source of truth.

A record (``results/<suite>/runs/<key>.json``)::

    {
      "schema": 1,
      "key": "3f2a…",                  # sha256 of the canonical JSON of "config" (first 16 hex)
      "suite": "quickstart",
      "name": "namex_mom/vit_moe_tiny/mnist/seed0",
      "status": "ok" | "failed",
      "error": null | {"type": "...", "message": "...", "traceback": "..."},
      "config": {                      # the fully resolved run configuration
        "method": {"label": "namex_mom", "name": "namex_mom", "options": {...}},
        "model": {"name": "vit_moe_tiny", "builder": "vit_moe", "params": {...}},
        "task": {"name": "mnist", "type": "image_classification", ...},
        "seed": 0,
        "limit": null                  # --limit (smoke runs shrink every split to it)
      },
      "metrics": {"top1": 0.981, ...}, # headline scalars of the task
      "goals": {"top1": "max", "loss": "min", ...},   # which direction is better, per metric
      "primary": "top1",               # the metric that ranks methods
      "reference": "smear" | null,     # the suite's reference method (paired comparisons)
      "cells": {"<table>": [{"<key>": ..., "<metric>": ...}, ...]},  # per-cell results
      "timings": {"train_s": ..., "eval_s": ..., "step_s": ..., "total_s": ...},
      "params": {"total": ..., "active_per_token": ...},
      "bounds": {"top1": [0, 1], "loss": [0, null], ...},  # each metric's range (null: open)
      "examples": {"file": "<key>.examples.npz", "sha256": ..., ...},  # per-example sidecar (runner/examples.py)
      "environment": {"python": ..., "torch": ..., "device": ..., "git_commit": ..., ...}
    }
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_key(config: dict[str, Any]) -> str:
    """The content address of a resolved run configuration."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file in the same directory, are flushed and fsync'ed,
    then renamed over ``path`` (atomic on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys, written with :func:`write_bytes_atomic`."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def results_folder(suite: str, limit: int | None) -> str:
    """The folder of a suite's results under the results root: ``<suite>``, or
    ``<suite>-limit<N>`` for ``--limit`` smoke runs, which never mix with real ones."""
    return suite if limit is None else f"{suite}-limit{limit}"


def runs_dir(results_root: Path, suite: str) -> Path:
    return Path(results_root) / suite / "runs"


def record_path(results_root: Path, suite: str, key: str) -> Path:
    return runs_dir(results_root, suite) / f"{key}.json"


def read_records(results_root: Path, suite: str) -> list[dict[str, Any]]:
    """Every record of a suite, sorted by key (temporary files of interrupted writes are ignored)."""
    directory = runs_dir(results_root, suite)
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            with open(path, encoding="utf-8") as f:
                records.append(json.load(f))
        except json.JSONDecodeError as exc:
            raise ValueError(f"run record {path} is not valid JSON ({exc}); move it away and rerun that run") from None
    return sorted(records, key=lambda r: r["key"])


def finished_keys(records: Iterable[dict[str, Any]]) -> set[str]:
    """Keys of the runs that finished successfully (their records have status "ok")."""
    return {r["key"] for r in records if r.get("status") == "ok"}


def supersede(results_root: Path, suite: str, keys: set[str]) -> list[Path]:
    """Move the records with these ``keys`` — older configurations of a run that has just
    got a new record — to ``runs/superseded/`` with their sidecars (``<key>.*``), so that a
    suite's leaderboard never counts a run twice and nothing is deleted. Returns the
    records' new paths, sorted."""
    directory = runs_dir(results_root, suite)
    moved = []
    for key in sorted(keys):
        target = directory / "superseded" / f"{key}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        for path in sorted(directory.glob(f"{key}.*")):
            os.replace(path, target.parent / path.name)
        moved.append(target)
    return moved
