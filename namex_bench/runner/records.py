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
      "diagnostics": {"batch": ..., "logit_std": ..., "layers": [...], "ablations": {...}},  # tasks/diagnostics.py
      "bounds": {"top1": [0, 1], "loss": [0, null], ...},  # each metric's range (null: open)
      "examples": {"file": "<key>.examples.npz", "sha256": ..., ...},  # per-example sidecar (runner/examples.py)
      "placement": {"host": "node042", "executor": "slurm" | "local" | null, "job_id": "4242_3" | null},
      "environment": {"python": ..., "packages": {"torch": ..., ...}, "device": ..., "cpu": ...,
                      "git_commit": "<sha>", "git_dirty": false,   # uncommitted changes outside results/
                      "threads": {"torch": 2, "torch_interop": 2, "blas": [...]},
                      "deterministic": {"algorithms": true, "cudnn_deterministic": true, ...},
                      "cpu_capability": "AVX2", ...},
      "code": {"method": {"class": ..., "modules": {...}, "distribution": ..., "version": ..., "digest": ...}}
    }                                  # code: methods/fingerprint.py; a changed digest reruns the run

Every record read is checked (``record_schema.py``): a damaged one is named with what is
wrong. Beside ``runs/``, ``current_runs.json`` lists the key and name of every run of the
suite as it was last run, for the report to tell current records from older ones. Every
path written is checked to lie inside the results folder, under a folder named by a plain
identifier (the suite's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_bytes_atomic
from .record_schema import record_problem

__all__ = [
    "CURRENT_RUNS", "DamagedRecord", "DamagedRecordError", "OutsideResultsError", "ResultsWriteError", "SCHEMA_VERSION",
    "canonical_json", "check_folder_name", "finished_keys", "inside", "json_bytes", "load_record", "read_current_runs",
    "read_records", "record_path", "results_folder", "run_key", "runs_dir", "supersede", "write_bytes_atomic",
    "write_current_runs", "write_json_atomic",
]

SCHEMA_VERSION = 1

#: A suite's name, and so its results folder: letters, digits, ``_`` and ``-`` (no path, no ``.``).
FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}")

#: ``results/<suite>/current_runs.json``: every run of the suite as it was last run (see :func:`write_current_runs`).
CURRENT_RUNS = "current_runs.json"


class ResultsWriteError(Exception):
    """The results folder cannot be written: one line for the user, with the way out."""


class OutsideResultsError(ValueError):
    """A path the runner was about to write lies outside the results folder."""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_key(config: dict[str, Any]) -> str:
    """The content address of a resolved run configuration."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented JSON with sorted keys (NaN and infinities refused: ``ValueError``)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as :func:`json_bytes`, written with :func:`~namex_bench.files.write_bytes_atomic`."""
    write_bytes_atomic(path, json_bytes(obj))


def check_folder_name(name: str, what: str = "suite name") -> str:
    """``name`` if it is a plain identifier (letters, digits, ``_``, ``-``), else ``ValueError``:
    it becomes a folder under the results root, so it must not be a path."""
    if not isinstance(name, str) or not FOLDER_NAME.fullmatch(name):
        raise ValueError(
            f"a {what} is a plain identifier (letters, digits, _ and -, at most 128, e.g. quickstart): "
            f"it names the results folder, so it cannot be {name!r}"
        )
    return name


def results_folder(suite: str, limit: int | None) -> str:
    """The folder of a suite's results under the results root: ``<suite>``, or
    ``<suite>-limit<N>`` for ``--limit`` smoke runs, which never mix with real ones."""
    check_folder_name(suite)
    return suite if limit is None else f"{suite}-limit{limit}"


def inside(results_root: Path, *parts: str) -> Path:
    """``results_root / parts…``, checked to lie inside ``results_root`` (lexically: a symlink
    the user made inside it is followed as they meant); :class:`OutsideResultsError` otherwise."""
    root = os.path.abspath(results_root)
    path = os.path.abspath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root or path == root:
        raise OutsideResultsError(f"refusing to write {path}: it is not inside the results folder {root}")
    return Path(path)


def runs_dir(results_root: Path, suite: str) -> Path:
    return inside(results_root, check_folder_name(suite, "results folder name"), "runs")


def record_path(results_root: Path, suite: str, key: str) -> Path:
    return inside(runs_dir(results_root, suite), f"{key}.json")


@dataclass(frozen=True)
class DamagedRecord:
    """A file in ``runs/`` that is not a sound run record, and what is wrong with it."""

    path: Path
    problem: str

    @property
    def key(self) -> str:
        return self.path.stem


class DamagedRecordError(ValueError):
    """A run record cannot be read; the message names the file, the problem and the way out."""

    def __init__(self, damaged: DamagedRecord):
        self.damaged = damaged
        super().__init__(
            f"run record {damaged.path} is damaged: {damaged.problem}; move it away "
            f"(e.g. `mv {damaged.path} {damaged.path}.damaged`) and rerun to redo that run, "
            f"or pass --skip-damaged to count it as a failed run"
        )


def load_record(path: Path) -> dict[str, Any] | DamagedRecord:
    """The run record in ``path``, checked; a :class:`DamagedRecord` when it is not sound."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return DamagedRecord(path, f"cannot be read ({exc.strerror or exc})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DamagedRecord(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return DamagedRecord(path, f"is not valid JSON ({exc})")
    problem = record_problem(record, path.stem, SCHEMA_VERSION)
    return record if problem is None else DamagedRecord(path, problem)


def read_records(
    results_root: Path, suite: str, on_damaged: Callable[[DamagedRecord], None] | None = None
) -> list[dict[str, Any]]:
    """Every record of a suite, sorted by key (temporary files of interrupted writes are ignored).

    Every record is checked (:func:`~namex_bench.runner.record_schema.record_problem`). A damaged
    one raises :class:`DamagedRecordError` — or, with ``on_damaged``, is passed to it and left out.
    """
    directory = runs_dir(results_root, suite)
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        loaded = load_record(path)
        if isinstance(loaded, DamagedRecord):
            if on_damaged is None:
                raise DamagedRecordError(loaded)
            on_damaged(loaded)
        else:
            records.append(loaded)
    return sorted(records, key=lambda r: r["key"])


def finished_keys(records: Iterable[dict[str, Any]]) -> set[str]:
    """Keys of the runs that finished successfully (their records have status "ok")."""
    return {r["key"] for r in records if r.get("status") == "ok"}


def supersede(results_root: Path, suite: str, keys: set[str], suffix: str = "") -> list[Path]:
    """Move the records with these ``keys`` — older configurations of a run that has just
    got a new record, or records of code that has changed since — to
    ``runs/superseded/<key><suffix>.json`` with their sidecars (``<key>.*``), so that a
    suite's leaderboard never counts a run twice and nothing is deleted. Returns the
    records' new paths, sorted."""
    directory = runs_dir(results_root, suite)
    moved = []
    for key in sorted(keys):
        target = inside(directory, "superseded", f"{key}{suffix}.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(record_path(results_root, suite, key), target)
        except FileNotFoundError:  # another process (a concurrent shard or job) moved it first
            continue
        for path in sorted(directory.glob(f"{key}.*")):  # its sidecars
            os.replace(path, target.parent / f"{key}{suffix}{path.name[len(key):]}")
        moved.append(target)
    return moved


# --------------------------------------------------------------------------- current runs


def write_current_runs(results_root: Path, folder: str, suite: str, runs: dict[str, str]) -> Path:
    """Write ``results/<folder>/current_runs.json``: the key and name of every run of the suite
    as it is now (every shard), so that the report can tell records of an older configuration
    apart without reading the suite file. Rewritten only when it changes."""
    path = inside(results_root, check_folder_name(folder, "results folder name"), CURRENT_RUNS)
    data = json_bytes({"schema": SCHEMA_VERSION, "suite": suite, "runs": dict(sorted(runs.items()))})
    if not (path.is_file() and path.read_bytes() == data):
        write_bytes_atomic(path, data)
    return path


def read_current_runs(results_root: Path, folder: str) -> dict[str, str] | None:
    """``{key: name}`` of the suite's current runs (``current_runs.json``), or ``None`` where the
    suite was last run by a version that did not write it. A damaged file is a ``ValueError``."""
    path = inside(results_root, check_folder_name(folder, "results folder name"), CURRENT_RUNS)
    if not path.is_file():
        return None
    try:
        runs = json.loads(path.read_bytes().decode("utf-8"))["runs"]
        if not isinstance(runs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in runs.items()):
            raise TypeError("runs is not an object of names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{path} is damaged ({type(exc).__name__}: {exc}); remove it — "
            "the next `namex-bench run` of the suite writes it again"
        ) from None
    return runs
