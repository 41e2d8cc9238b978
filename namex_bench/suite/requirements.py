"""What a suite needs from the machine it runs on: environment variables and data paths.

The schemas check that every data path exists (``data/paths.py``); a suite validated
without those checks (``namex-bench validate SUITE --no-data``) lists with
:func:`environment_variables` and :func:`data_paths` what it will need where it runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ENV_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True)
class EnvironmentVariable:
    name: str
    fields: tuple[str, ...]  # where the suite uses it
    default: str | None  # the ${NAME:-default} value, if any

    @property
    def value(self) -> str | None:
        return os.environ.get(self.name)


def environment_variables(data: Any) -> list[EnvironmentVariable]:
    """The ``${NAME}`` / ``${NAME:-default}`` references in a suite's raw YAML data, by name."""
    found: dict[str, tuple[list[str], str | None]] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif isinstance(node, str):
            for match in ENV_VAR.finditer(node):
                fields, default = found.setdefault(match["name"], ([], match["default"]))
                fields.append(where)
                if default is None and match["default"] is not None:
                    found[match["name"]] = (fields, match["default"])

    walk(data, "")
    return [EnvironmentVariable(name, tuple(fields), default) for name, (fields, default) in sorted(found.items())]


def data_paths(suite: BaseModel) -> list[tuple[str, Path]]:
    """``(field, path)`` of every path in a validated suite — the data folders of its tasks and
    the files its models' ``params`` name (checked by each builder's schema)."""
    from ..data.paths import without_data_checks
    from ..models.registry import get_builder

    found: list[tuple[str, Path]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Path):
            found.append((where, node))
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name), f"{where}.{name}" if where else name)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}")

    walk(suite, "")
    for i, model in enumerate(getattr(suite, "models", [])):
        with without_data_checks():
            walk(get_builder(model.builder).validate(model.params), f"models[{i}].params")
    return found
