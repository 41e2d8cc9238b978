"""What a run record must hold to be read: checked on every read, so that a damaged file is
named with what is wrong instead of failing somewhere downstream (see ``records.py`` for the layout).

:func:`record_problem` returns ``None`` for a sound record, else one phrase saying what
is wrong (``"field 'metrics.top1' is a string ('0.9'), not a number"``).
"""

from __future__ import annotations

import math
from typing import Any

STATUSES = ("ok", "failed")
GOALS = ("max", "min")

_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}


def _kind(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (a boolean is not a number here)."""
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Problem(Exception):
    pass


def _field(record: dict, path: str, expected: type | tuple[type, ...], *, optional: bool = False) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            if optional:
                return None
            raise _Problem(f"field {path!r} is missing")
        value = value[part]
    if optional and value is None:
        return None
    ok = _is_int(value) if expected is int else isinstance(value, expected) and not isinstance(value, bool)
    if not ok:
        names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise _Problem(f"field {path!r} is {_kind(value)} ({_show(value)}), not {names}")
    return value


def _check(record: Any, key: str | None, max_schema: int) -> None:
    if not isinstance(record, dict):
        raise _Problem(f"holds {_kind(record)} ({_show(record)}), not a JSON object")
    schema = _field(record, "schema", int)
    if not 1 <= schema <= max_schema:
        raise _Problem(f"schema {schema} is not one this version reads (1 to {max_schema})")
    record_key = _field(record, "key", str)
    if key is not None and record_key != key:
        raise _Problem(f"its key {_show(record_key)} is not its file name's ({key})")
    _field(record, "suite", str)
    if not _field(record, "name", str):
        raise _Problem("field 'name' is empty")
    status = _field(record, "status", str)
    if status not in STATUSES:
        raise _Problem(f"status {_show(status)} is not one of {', '.join(STATUSES)}")
    for path in ("config.method.label", "config.method.name", "config.model.name", "config.task.name"):
        _field(record, path, str)
    _field(record, "config.seed", int)
    _field(record, "reference", str, optional=True)
    for path in ("cells", "timings", "params", "environment"):
        _field(record, path, dict, optional=True)
    if status == "failed":
        _field(record, "error.type", str)
        _field(record, "error.message", str)
    metrics = _field(record, "metrics", dict, optional=status == "failed") or {}
    for name, value in metrics.items():
        if not is_number(value):
            what = "not finite" if isinstance(value, float) else f"{_kind(value)} ({_show(value)}), not a number"
            raise _Problem(f"metric {name!r} is {what}")
    if status == "ok":
        goals = _field(record, "goals", dict)
        for name, goal in goals.items():
            if goal not in GOALS:
                raise _Problem(f"the goal of metric {name!r} is {_show(goal)}, not 'max' or 'min'")
        _field(record, "primary", str)


def record_problem(record: Any, key: str | None = None, max_schema: int = 1) -> str | None:
    """``None`` if ``record`` is a sound run record (stored under ``key``), else what is wrong with it."""
    try:
        _check(record, key, max_schema)
    except _Problem as problem:
        return str(problem)
    return None
