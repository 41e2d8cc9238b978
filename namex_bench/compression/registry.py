"""The registry of compression methods: built-in ones, entry points, and plugin modules.

    @register_compressor("my_prune")
    class MyPrune(CompressionMethod):
        '''One line that says what it does.'''

The conventions are the merging methods' (``namex_bench/methods/registry.py``): every module
of ``namex_bench/compression/methods/`` is imported on first use; a method outside the
package registers when its module is imported (a suite's ``plugins:``) or through an entry
point of the group ``namex_bench.compressors``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from .base import CompressionMethod

ENTRY_POINT_GROUP = "namex_bench.compressors"

_COMPRESSORS: dict[str, type[CompressionMethod]] = {}
_loaded = {"builtin": False, "entry_points": False}

C = TypeVar("C", bound=type[CompressionMethod])


class UnknownCompressorError(KeyError):
    """A compression method name that nothing registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_compressor(name: str) -> Callable[[C], C]:
    """Class decorator: register a :class:`CompressionMethod` subclass under ``name``."""

    def decorate(cls: C) -> C:
        if not (inspect.isclass(cls) and issubclass(cls, CompressionMethod)):
            raise TypeError(f"@register_compressor({name!r}) must decorate a CompressionMethod subclass, got {cls!r}")
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"compression method names are letters, digits, '_' and '-'; got {name!r}")
        existing = _COMPRESSORS.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"compression method {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _COMPRESSORS[name] = cls
        return cls

    return decorate


def _load() -> None:
    if not _loaded["builtin"]:
        _loaded["builtin"] = True
        package = importlib.import_module("namex_bench.compression.methods")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"namex_bench.compression.methods.{info.name}")
    if not _loaded["entry_points"]:
        failures = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others
                failures.append(f"{ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}")
                continue
            if inspect.isclass(obj) and issubclass(obj, CompressionMethod) and obj not in _COMPRESSORS.values():
                register_compressor(ep.name)(obj)
        if failures:
            raise ImportError(f"entry points of group {ENTRY_POINT_GROUP} failed to load: " + "; ".join(failures))
        _loaded["entry_points"] = True


def available_compressors() -> dict[str, type[CompressionMethod]]:
    """Every registered compression method, by name (sorted)."""
    _load()
    return dict(sorted(_COMPRESSORS.items()))


def get_compressor(name: str) -> type[CompressionMethod]:
    """The compression method registered under ``name``."""
    known = available_compressors()
    try:
        return known[name]
    except KeyError:
        raise UnknownCompressorError(f"unknown compression method {name!r}; known: {', '.join(known)}") from None


def make_compressor(name: str, options: dict[str, Any] | None = None) -> CompressionMethod:
    """An instance of the method ``name`` with ``options`` (``TypeError``/``ValueError`` for bad ones)."""
    return get_compressor(name)(**(options or {}))


def compressor_options(name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's options with every default filled in (from its ``__init__`` signature)."""
    signature = inspect.signature(get_compressor(name).__init__)
    resolved = {p.name: p.default for p in signature.parameters.values() if p.name != "self" and p.default is not inspect.Parameter.empty}
    resolved.update(options or {})
    return resolved
