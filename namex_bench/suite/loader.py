"""Loading and validating suite files: every field checked before any work starts.

A bad suite raises one :class:`SuiteError` naming the file, the field and (where the
YAML parser knows it) the line. YAML is loaded with the safe loader, and no module
is imported except those named in ``plugins:``. String values may use ``${NAME}`` or
``${NAME:-default}`` to take data paths from the environment (not the suite's ``name``,
which names its results folder).

Before anything is built from the YAML, its node graph is checked: a key given twice in
one mapping is an error (YAML would silently keep the last), and so is a document whose
anchors and aliases expand to more than :data:`MAX_YAML_VALUES` values (a few hundred
bytes of nested aliases can otherwise expand to billions). Numbers must be finite
(``.inf``/``.nan`` cannot be recorded), and the file must be UTF-8.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..data.paths import without_data_checks
from .requirements import ENV_VAR
from .schema import MAX_TRAIN_STEPS, Suite

SUITES_DIR = "suites"

#: The most values (scalars, lists, mappings) a suite's YAML may expand to, aliases expanded.
#: An alias-free 100 KB file holds well under 50,000.
MAX_YAML_VALUES = 100_000

#: A plugin: a module name, dotted Python identifiers (``my_methods``, ``pkg.methods``).
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


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


def expand_environment(data: Any, path: Path, node: yaml.Node | None, loc: tuple = (), *, strict: bool = True) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in string values by environment variables
    (data paths differ between machines); an unset variable without a default is an error
    (``strict``) or left as it is written. The suite's ``name`` is left as it is: it names the
    results folder, the same on every machine."""
    if isinstance(data, dict):
        return {k: v if (loc, k) == ((), "name") else expand_environment(v, path, node, (*loc, k), strict=strict) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_environment(v, path, node, (*loc, i), strict=strict) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def substitute(match: re.Match) -> str:
        value = os.environ.get(match["name"], match["default"])
        if value is None and not strict:
            return match[0]
        if value is None:
            raise SuiteError(path, _field_path(loc), f"environment variable {match['name']} is not set (and has no ${{{match['name']}:-default}})", _line_of(node, loc))
        return value

    return ENV_VAR.sub(substitute, data)


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
        elif part in ("mnist5k", "imagefolder", "hf", "image_classification", "compression"):
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


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise SuiteError(path, None, f"not UTF-8 text ({byte}); save the file as UTF-8", line) from None


def check_node_graph(root: yaml.Node, path: Path) -> None:
    """Refuse duplicate keys, recursive aliases, and documents that expand (aliases followed) to
    more than :data:`MAX_YAML_VALUES` values — on the composed node graph, where an alias is a
    shared node, so the check costs one visit per distinct node whatever the expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, loc: tuple) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        line = node.start_mark.line + 1
        if id(node) in open_nodes:
            raise SuiteError(path, _field_path(loc) or None,
                             "a YAML alias refers to a node that contains it (a recursive structure)", line)
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and key.tag != "tag:yaml.org,2002:merge":
                    if name in first_line:
                        message = f"duplicate key {name!r} (first on line {first_line[name]}): YAML would silently keep only the last"
                        raise SuiteError(path, _field_path((*loc, name)), message, key.start_mark.line + 1)
                    first_line[name] = key.start_mark.line + 1
                total += size(key, loc) + size(value, (*loc, name))
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, (*loc, i)) for i, item in enumerate(node.value))
        if total > MAX_YAML_VALUES:
            message = (f"the YAML expands to more than {MAX_YAML_VALUES:,} values once its aliases are followed "
                       "(nested aliases?); a suite is far smaller")
            raise SuiteError(path, _field_path(loc) or None, message, line)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, ())


def parse_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """``(data, node)``: the document built by the safe loader from its node graph, once that
    graph has passed :func:`check_node_graph`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None, None
        check_node_graph(node, path)
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(node), node
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(path, None, f"invalid YAML: {problem}", mark.line + 1 if mark else None) from None
    except RecursionError:
        raise SuiteError(path, None, "invalid YAML: nested too deeply") from None


def check_finite(data: Any, path: Path, node: yaml.Node | None, loc: tuple = ()) -> None:
    """A suite's numbers are finite: ``.inf`` and ``.nan`` can neither train nor be recorded."""
    if isinstance(data, dict):
        for k, v in data.items():
            check_finite(v, path, node, (*loc, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_finite(v, path, node, (*loc, i))
    elif isinstance(data, float) and not math.isfinite(data):
        raise SuiteError(path, _field_path(loc) or None, f"must be a finite number, got {data}", _line_of(node, loc))


def load_suite(name_or_path: str, *, check_data: bool = True) -> tuple[Suite, Path]:
    """Parse and validate a suite file; imports its ``plugins`` and checks methods and models.

    ``check_data=False`` checks everything but the data: data paths need not exist, and
    ``${NAME}`` variables that are not set stay as they are written."""
    if check_data:
        return _load_suite(name_or_path, strict_environment=True)
    with without_data_checks():
        return _load_suite(name_or_path, strict_environment=False)


def read_suite_data(name_or_path: str) -> tuple[Any, Path]:
    """A suite file's raw YAML data, before validation and ``${NAME}`` substitution."""
    path = find_suite(name_or_path)
    return parse_yaml(_read_text(path), path)[0], path


def _load_suite(name_or_path: str, strict_environment: bool) -> tuple[Suite, Path]:
    path = find_suite(name_or_path)
    data, node = parse_yaml(_read_text(path), path)
    if not isinstance(data, dict):
        raise SuiteError(path, None, "a suite file is a YAML mapping (name:, methods:, models:, tasks:, seeds:, ...)")
    check_finite(data, path, node)
    data = expand_environment(data, path, node, strict=strict_environment)
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
    """What the schema alone cannot know: plugins, method names and options, model builders, and
    combinations of a method and a model under which the method provably computes another one."""
    from ..methods.base import ModelFacts, inert_comparison
    from ..methods.options import MethodOptionError, check_options, resolved_options
    from ..methods.registry import PluginError, UnknownMethodError, get_method, load_plugins
    from ..models.registry import ModelConfigError, get_builder
    from ..moe.experts import ExpertSpec

    for i, module in enumerate(suite.plugins):
        line = _line_of(node, ("plugins", i))
        if not _MODULE_NAME.fullmatch(module):
            message = f"{module!r} is not a module name (dotted Python identifiers, e.g. my_methods)"
            raise SuiteError(path, f"plugins[{i}]", message, line)
        try:
            load_plugins([module])
        except PluginError as exc:
            raise SuiteError(path, f"plugins[{i}]", str(exc), line) from None
    classes, given = [], []
    for i, method in enumerate(suite.methods):
        try:
            cls = get_method(method.name)
        except UnknownMethodError as exc:
            raise SuiteError(path, f"methods[{i}].name", str(exc), _line_of(node, ("methods", i, "name"))) from None
        options_field, options_line = f"methods[{i}].options", _line_of(node, ("methods", i, "options"))
        try:
            options = cls.given_options(method.preset, method.options)
        except KeyError as exc:
            raise SuiteError(path, f"methods[{i}].preset", str(exc.args[0]), _line_of(node, ("methods", i, "preset"))) from None
        try:
            check_options(cls, options)
            cls(ExpertSpec(8, 16), 2, **options)  # a tiny instance checks the values
        except (MethodOptionError, TypeError, ValueError) as exc:
            raise SuiteError(path, options_field, str(exc), options_line) from None
        reduction = cls.reduces_to(resolved_options(cls, options), ModelFacts())
        if reduction:
            raise SuiteError(path, options_field, inert_comparison(method.display, reduction), options_line)
        classes.append(cls)
        given.append(options)
    params = []
    for i, model in enumerate(suite.models):
        try:
            params.append(get_builder(model.builder).validate(model.params))
        except ModelConfigError as exc:
            field = f"models[{i}].{exc.field}" if exc.field else f"models[{i}].builder"
            loc = ("models", i, *exc.loc) if exc.field else ("models", i, "builder")
            raise SuiteError(path, field, exc.message, _line_of(node, loc)) from None
    _check_training_length(suite, path, node)
    for i, task in enumerate(suite.tasks):
        if task.type == "compression":
            _check_compression(task, i, suite, path, node)
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
    used = {m.name for t in suite.tasks for m in suite.task_models(t)}
    for i, model in enumerate(suite.models):  # methods that would compute another one on a model they run on
        for method, cls, options in zip(suite.methods, classes, given):
            reduction = model.name in used and cls.reduces_to(
                resolved_options(cls, options), get_builder(model.builder).model_facts(params[i], cls)
            )
            if reduction:
                raise SuiteError(path, f"models[{i}].params", inert_comparison(method.display, reduction, model.name),
                                 _line_of(node, ("models", i, "params")))
    for i, task in enumerate(suite.tasks):
        for model in suite.task_models(task):
            parallel = task.parallel or model.parallel
            allowed = PARALLEL_TASKS[parallel]
            if task.type not in allowed or (parallel == "device_map" and task.finetune is not None):
                field = "parallel" if task.parallel else "models"
                raise SuiteError(
                    path, f"tasks[{i}].{field}",
                    f"parallel: {parallel} (task {task.name!r}, model {model.name!r}) applies to {' and '.join(allowed)} tasks"
                    + (" without finetune" if parallel == "device_map" else ""),
                    _line_of(node, ("tasks", i, field)),
                )


#: Where each ``parallel:`` mode applies: FSDP shards decoder layers (and needs every rank to
#: evaluate everything, as perplexity and lm-eval do); device_map only places a model for inference.
PARALLEL_TASKS = {
    "ddp": ("image_classification", "text_classification", "language_modeling", "lm_eval", "compression", "planted_merge"),
    "fsdp": ("language_modeling", "lm_eval"),
    "device_map": ("lm_eval",),
}


def _check_training_length(suite: Suite, path: Path, node: yaml.Node) -> None:
    """Where a task's training set size is known before loading it (``train_size()`` of its data),
    its run's steps must be at most ``MAX_TRAIN_STEPS`` and must cover its ``warmup_steps``."""
    for i, task in enumerate(suite.tasks):
        for prefix, owner in (((), task), (("finetune",), getattr(task, "finetune", None))):
            train = getattr(owner, "train", None)
            size = getattr(owner, "data", None) and getattr(owner.data, "train_size", lambda: None)()
            if train is None or not size:
                continue
            batches = max(1, size // train.batch_size)
            steps = math.ceil(train.epochs * batches)
            where = ("tasks", i, *prefix, "train")
            if steps > MAX_TRAIN_STEPS:
                raise SuiteError(path, _field_path((*where, "epochs")),
                                 f"{train.epochs:g} epochs of {batches:,} batches is {steps:,} training steps, more than the "
                                 f"{MAX_TRAIN_STEPS:,} a run may take", _line_of(node, (*where, "epochs")))
            if train.warmup_steps > steps:
                raise SuiteError(path, _field_path((*where, "warmup_steps")),
                                 f"{train.warmup_steps} warmup steps, but the run trains for only {steps} steps "
                                 f"({train.epochs:g} epochs of {batches} batches of {train.batch_size} from {size} examples)",
                                 _line_of(node, (*where, "warmup_steps")))


def _check_compression(task, i: int, suite: Suite, path: Path, node: yaml.Node) -> None:
    """A compression task's compressors exist and take their options; its models are pretrained MoE LLMs."""
    from ..compression.registry import UnknownCompressorError, make_compressor

    for j, entry in enumerate(task.compressors):
        try:
            make_compressor(entry.name, entry.options)
        except UnknownCompressorError as exc:
            raise SuiteError(path, f"tasks[{i}].compressors[{j}].name", str(exc), _line_of(node, ("tasks", i, "compressors", j, "name"))) from None
        except (TypeError, ValueError) as exc:
            field = f"tasks[{i}].compressors[{j}].options"
            raise SuiteError(path, field, f"invalid option for {entry.name!r}: {exc}", _line_of(node, ("tasks", i, "compressors", j, "options"))) from None
    for model in suite.task_models(task):
        if model.builder not in COMPRESSIBLE_BUILDERS:
            field = "models" if task.models else "type"
            raise SuiteError(
                path, f"tasks[{i}].{field}",
                f"task {task.name!r} (compression) compresses pretrained MoE LLMs (builder {', '.join(COMPRESSIBLE_BUILDERS)}), "
                f"but {model.name!r} is built by {model.builder}; list the task's models with `models: [...]`",
                _line_of(node, ("tasks", i, field)),
            )


#: The kind of model (see ``models/registry.py``) each task type runs on.
TASK_MODEL_KINDS = {
    "image_classification": "image_classifier",
    "text_classification": "text_classifier",
    "language_modeling": "causal_lm",
    "lm_eval": "causal_lm",
    "compression": "causal_lm",
    "planted_merge": "planted_regressor",
}
#: The builders whose models are ``transformers`` MoE LLMs a compression task can rewrite.
COMPRESSIBLE_BUILDERS = ("moe_llm",)
