"""The registry of merging methods: built-in ones, entry points, and plugin modules.

    @register_method("my_merge")
    class MyMerge(MergingMethod):
        '''One line that says what it does.'''

Methods outside the package register the same way when their module is imported:
name it in a suite's ``plugins:`` list, or declare it as an entry point of the group
``namex_bench.methods`` in the distribution's metadata (the entry point's value is the
module, or the class itself, which is then registered under the entry point's name).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
from typing import Callable, TypeVar

from .base import MergingMethod

ENTRY_POINT_GROUP = "namex_bench.methods"

_METHODS: dict[str, type[MergingMethod]] = {}
_loaded = {"builtin": False, "entry_points": False}

M = TypeVar("M", bound=type[MergingMethod])


class UnknownMethodError(KeyError):
    """Raised for a method name that no built-in, entry point or plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`MergingMethod` subclass under ``name``."""

    def decorate(cls: M) -> M:
        if not (inspect.isclass(cls) and issubclass(cls, MergingMethod)):
            raise TypeError(f"@register_method({name!r}) must decorate a MergingMethod subclass, got {cls!r}")
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"method names are letters, digits, '_' and '-'; got {name!r}")
        existing = _METHODS.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"method {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
            )
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def _load_builtin() -> None:
    if _loaded["builtin"]:
        return
    _loaded["builtin"] = True
    package = importlib.import_module("namex_bench.methods")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"namex_bench.methods.{info.name}")


def _load_entry_points() -> None:
    """Register the methods of every entry point of the group; a broken one is reported
    (every time, not only the first) after all the others have been loaded."""
    if _loaded["entry_points"]:
        return
    failures = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must not hide the others
            failures.append(f"{ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}")
            continue
        if inspect.isclass(obj) and issubclass(obj, MergingMethod) and obj not in _METHODS.values():
            register_method(ep.name)(obj)
    if failures:
        raise ImportError(f"entry points of group {ENTRY_POINT_GROUP} failed to load: " + "; ".join(failures))
    _loaded["entry_points"] = True


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import plugin modules by name so that the methods they define register."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"plugin module {module!r} could not be imported: {exc}") from exc


def available_methods() -> dict[str, type[MergingMethod]]:
    """Every registered method, built-in and external, by name (sorted)."""
    _load_builtin()
    _load_entry_points()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type[MergingMethod]:
    """The method class registered under ``name``."""
    methods = available_methods()
    try:
        return methods[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown merging method {name!r}; known methods: {', '.join(methods)}"
        ) from None
