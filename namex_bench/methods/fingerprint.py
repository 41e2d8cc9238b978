"""The fingerprint of a method's code, kept in every run record.

A run's key hashes its configuration, not the code that computed it: after a method's code
changes, the key is the same and its old record would be reused. So each record holds

    {"class": "namex_bench.methods.namex_mom.NAMExMom",
     "modules": {"namex_bench.methods.namex_mom": "<hash>", "namex_bench.methods.namex": "<hash>", …},
     "distribution": "namex-bench", "version": "0.1.0",
     "digest": "<hash of the modules' hashes>"}

with a hash of every module that defines a class in the method's MRO (``MergingMethod`` and
its subclasses; a plugin's own modules included), and the runner reruns a finished run whose
``digest`` differs from the code's now. A module's hash is that of its syntax tree without
docstrings (``ast.dump``), so comments, docstrings and formatting change nothing; the
distribution's version is recorded but not hashed. Helpers a method calls in other modules
(the MoE layer, the Nash solver) are not part of it: the record's ``environment.git_commit``
names that code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import inspect
import sys
from typing import Any

from .base import MergingMethod


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _source_digest(source: str) -> str:
    try:
        text = ast.dump(_without_docstrings(ast.parse(source)))
    except SyntaxError:
        text = source
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_digest(module_name: str) -> str | None:
    """The hash of a loaded module's code (docstrings, comments and layout aside), or ``None``
    when its source cannot be read."""
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else None
    except (OSError, TypeError):
        source = None
    return None if source is None else _source_digest(source)


@functools.cache
def _distribution(top_level: str) -> tuple[str | None, str | None]:
    names = importlib.metadata.packages_distributions().get(top_level) or []
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def method_fingerprint(cls: type[MergingMethod]) -> dict[str, Any]:
    """The fingerprint of ``cls``'s code (see the module docstring)."""
    modules = {klass.__module__: module_digest(klass.__module__) for klass in cls.__mro__ if issubclass(klass, MergingMethod)}
    distribution, version = _distribution(cls.__module__.split(".")[0])
    digest = hashlib.sha256(repr(sorted(modules.items())).encode()).hexdigest()[:16]
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "modules": dict(sorted(modules.items())),
        "distribution": distribution,
        "version": version,
        "digest": digest,
    }
