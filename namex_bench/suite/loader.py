"""Loading and validating suite files: every field checked before any work starts.

A bad suite raises one :class:`SuiteError` naming the file, the field and (where the
YAML parser knows it) the line. YAML is loaded with the safe loader, and no module
is imported except those named in ``plugins:``. String values may use ``${NAME}`` or
``${NAME:-default}`` to take data paths from the environment.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .schema import Suite

SUITES_DIR = "suites"


class SuiteError(Exception):
    """A problem with a suite file: ``file: field: message (line N)``."""

    def __init__(self, file: Path | str, field: str | None, message: str, line: int | None = None):
        self.file, self.field, self.message, self.line = str(file), field, message, line
        where = f"{self.file}: {field}: " if field else f"{self.file}: "
        super().__init__(where + message + (f" (line {line})" if line else ""))


def find_suite(name_or_path: str) -> Path:
    """A suite file: an existing path, or ``suites/<name>.yaml`` (here, then beside the package)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SuiteError(path, None, "no such suite file")
        return path
    candidates = [Path.cwd() / SUITES_DIR, Path(__file__).resolve().parents[2] / SUITES_DIR]
    for directory in candidates:
        for suffix in (".yaml", ".yml"):
            if (directory / f"{name_or_path}{suffix}").is_file():
                return directory / f"{name_or_path}{suffix}"
    known = sorted({p.stem for d in candidates if d.is_dir() for p in d.glob("*.y*ml")})
    raise SuiteError(name_or_path, None, f"no suite of that name; known suites: {', '.join(known) or 'none'}")


_ENV_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def expand_environment(data: Any, path: Path, node: yaml.Node | None, loc: tuple = ()) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in string values by environment variables
    (data paths differ between machines); an unset variable without a default is an error."""
    if isinstance(data, dict):
        return {k: expand_environment(v, path, node, (*loc, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_environment(v, path, node, (*loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def substitute(match: re.Match) -> str:
        value = os.environ.get(match["name"], match["default"])
        if value is None:
            raise SuiteError(path, _field_path(loc), f"environment variable {match['name']} is not set (and has no ${{{match['name']}:-default}})", _line_of(node, loc))
        return value

    return _ENV_VAR.sub(substitute, data)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its deepest existing parent)."""
    line = None if node is None else node.start_mark.line + 1
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                if key is None and depth < len(loc) - 1:
                    continue  # a union tag (e.g. "image_classification") inside the path: no node of its own
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            continue  # pydantic's union tags (e.g. "mnist5k") have no node of their own
        line = node.start_mark.line + 1
    return line


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("mnist5k", "imagefolder", "hf", "image_classification"):
            continue  # discriminated-union tags
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(error: dict[str, Any], known_fields: list[str]) -> str:
    if error["type"] == "extra_forbidden":
        field = str(error["loc"][-1])
        close = difflib.get_close_matches(field, known_fields, n=1)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if error["type"] == "missing":
        return "required field is missing"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def _first_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The error to report: the first, except that a misspelt required field (``seed:`` for
    ``seeds:``) is reported as the unknown field, with its "did you mean", not as the missing one."""
    missing = {tuple(e["loc"][:-1]) for e in errors if e["type"] == "missing"}
    return next((e for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) in missing), errors[0])


def _known_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed next to the last part of ``loc``, for "did you mean" hints."""
    from . import schema

    models = [schema.Suite, schema.MethodEntry, schema.ModelEntry, schema.TrainConfig, schema.EvalConfig,
              schema.ImageClassificationTask, schema.Mnist5kData, schema.ImageFolderData, schema.HFImageData]
    return sorted({name for model in models for name in model.model_fields})


def load_suite(name_or_path: str) -> tuple[Suite, Path]:
    """Parse and validate a suite file; imports its ``plugins`` and checks methods and models."""
    path = find_suite(name_or_path)
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(path, None, f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise SuiteError(path, None, "a suite file is a YAML mapping (name:, methods:, models:, tasks:, seeds:, ...)")
    data = expand_environment(data, path, node)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        error = _first_error(exc.errors())
        loc = tuple(error["loc"])
        message = _message(error, _known_fields(loc))
        field = _field_path(loc)
        if not field and ":" in message:  # whole-suite checks name their field first
            field, message = (s.strip() for s in message.split(":", 1))
            loc = (field.split(".")[0],)
        raise SuiteError(path, field or None, message, _line_of(node, loc)) from None
    _check_semantics(suite, path, node)
    return suite, path


def _check_semantics(suite: Suite, path: Path, node: yaml.Node) -> None:
    """What the schema alone cannot know: plugins, method names and options, model builders."""
    from ..methods.registry import UnknownMethodError, get_method, load_plugins
    from ..models.registry import ModelConfigError, get_builder
    from ..moe.experts import ExpertSpec

    for i, module in enumerate(suite.plugins):
        try:
            load_plugins([module])
        except ImportError as exc:
            raise SuiteError(path, f"plugins[{i}]", str(exc), _line_of(node, ("plugins", i))) from None
    for i, method in enumerate(suite.methods):
        try:
            cls = get_method(method.name)
        except UnknownMethodError as exc:
            raise SuiteError(path, f"methods[{i}].name", str(exc), _line_of(node, ("methods", i, "name"))) from None
        try:
            cls(ExpertSpec(8, 16), 2, **method.options)  # a tiny instance checks names and values
        except TypeError as exc:
            raise SuiteError(path, f"methods[{i}].options", f"invalid option for {method.name!r}: {exc}", _line_of(node, ("methods", i, "options"))) from None
        except ValueError as exc:
            raise SuiteError(path, f"methods[{i}].options", str(exc), _line_of(node, ("methods", i, "options"))) from None
    for i, model in enumerate(suite.models):
        try:
            get_builder(model.builder).validate(model.params)
        except ModelConfigError as exc:
            field = f"models[{i}].{exc.field}" if exc.field else f"models[{i}].builder"
            loc = ("models", i, *exc.loc) if exc.field else ("models", i, "builder")
            raise SuiteError(path, field, exc.message, _line_of(node, loc)) from None
    for i, task in enumerate(suite.tasks):
        needed = TASK_MODEL_KINDS[task.type]
        for model in suite.task_models(task):
            kind = get_builder(model.builder).kind
            if kind != needed:
                field = "models" if task.models else "type"
                raise SuiteError(
                    path, f"tasks[{i}].{field}",
                    f"task {task.name!r} ({task.type}) needs {needed} models, but {model.name!r} (builder {model.builder}) is a {kind}; "
                    "list the task's models with `models: [...]`",
                    _line_of(node, ("tasks", i, field)),
                )


#: The kind of model (see ``models/registry.py``) each task type runs on.
TASK_MODEL_KINDS = {
    "image_classification": "image_classifier",
    "text_classification": "text_classifier",
    "language_modeling": "causal_lm",
    "lm_eval": "causal_lm",
    "planted_merge": "planted_regressor",
}
