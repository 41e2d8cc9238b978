"""The registry of merging methods: built-in ones, entry points, and plugin modules.

    @register_method("my_merge")
    class MyMerge(MergingMethod):
        '''One line that says what it does.'''

Methods outside the package register the same way when their module is imported:
name it in a suite's ``plugins:`` list, or declare it as an entry point of the group
``namex_bench.methods`` in the distribution's metadata (the entry point's value is the
module, or the class itself, which is then registered under the entry point's name).
An entry point that fails to load is remembered, not raised: only a suite that uses its
method fails, with the reason (``get_method``), and ``namex-bench list methods`` names it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from .base import MergingMethod

ENTRY_POINT_GROUP = "namex_bench.methods"

_METHODS: dict[str, type[MergingMethod]] = {}
_BROKEN: dict[str, str] = {}  # entry point name -> why it did not load
_loaded = {"builtin": False, "entry_points": False}

M = TypeVar("M", bound=type[MergingMethod])


class UnknownMethodError(KeyError):
    """Raised for a method name that no built-in, entry point or plugin registered (or whose
    entry point failed to load)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class PluginError(ImportError):
    """A plugin module named in a suite could not be imported (whatever it raised)."""


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
    """Register the methods of every entry point of the group. One that fails to load (whatever
    it raises) is recorded in :func:`broken_entry_points` and blocks nothing else."""
    if _loaded["entry_points"]:
        return
    _loaded["entry_points"] = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        where = f"{ep.value}" + (f", from {dist.name} {dist.version}" if dist is not None else "")
        try:
            obj = ep.load()
            if inspect.isclass(obj) and issubclass(obj, MergingMethod) and obj not in _METHODS.values():
                register_method(ep.name)(obj)
        except Exception as exc:  # a broken third-party plugin must not hide the others
            _BROKEN[ep.name] = f"entry point {ep.name!r} ({where}) failed to load: {type(exc).__name__}: {exc}"


def broken_entry_points() -> dict[str, str]:
    """Entry points of the group that failed to load: name → why."""
    _load_entry_points()
    return dict(_BROKEN)


def load_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import plugin modules by name so that the methods they define register; a module that
    cannot be found or raises anything while imported is one :class:`PluginError`."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            missing_itself = exc.name in (module, module.split(".")[0])
            hint = " (plugin modules must be importable: install their package, or put their folder on PYTHONPATH)" if missing_itself else ""
            raise PluginError(f"plugin module {module!r} could not be imported: {exc}{hint}") from None
        except Exception as exc:
            raise PluginError(f"plugin module {module!r} raised {type(exc).__name__} while imported: {exc}") from None


def available_methods() -> dict[str, type[MergingMethod]]:
    """Every registered method, built-in and external, by name (sorted)."""
    _load_builtin()
    _load_entry_points()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> type[MergingMethod]:
    """The method class registered under ``name``."""
    methods = available_methods()
    if name in methods:
        return methods[name]
    if name in _BROKEN:
        raise UnknownMethodError(f"merging method {name!r} is not available: {_BROKEN[name]}")
    close = difflib.get_close_matches(name, list(methods), n=1)
    message = f"unknown merging method {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    message += f"; known methods: {', '.join(methods)}"
    if _BROKEN:
        message += f"; entry points that failed to load: {', '.join(_BROKEN)}"
    raise UnknownMethodError(message)
