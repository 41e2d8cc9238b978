"""A method's options: the keyword parameters of its ``__init__`` signatures up the class
hierarchy, with their defaults, checked against their annotations.

A method ``class M(MergingMethod)`` with ``def __init__(self, spec, num_experts, gamma: float = 1.0,
**parent_options)`` has the option ``gamma`` and every option of its parents. A suite's
``options:`` are checked here before anything runs: an unknown name gets a "did you mean",
and a value must have its annotated type exactly (pydantic's strict mode: ``"no"`` is not a
``bool``, ``"0.5"`` not a ``float``; an ``int`` is a ``float``). Unannotated options are
not type-checked.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from .base import MergingMethod

#: The leading parameters every method's ``__init__`` takes; they are not options.
NOT_OPTIONS = ("self", "spec", "num_experts")


class MethodOptionError(ValueError):
    """A bad option of a method: ``option`` names it (``None`` when the problem is not one option)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


def option_parameters(cls: type[MergingMethod]) -> dict[str, tuple[inspect.Parameter, Any]]:
    """``name → (parameter, annotation)`` for every option of ``cls`` (the annotation resolved,
    or ``inspect.Parameter.empty``); a subclass's parameter overrides its parent's."""
    found: dict[str, tuple[inspect.Parameter, Any]] = {}
    for klass in reversed(cls.__mro__):
        init = vars(klass).get("__init__")
        if init is None or not issubclass(klass, MergingMethod):
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation that does not resolve: leave that method's options unchecked
            hints = {}
        for name, param in inspect.signature(init).parameters.items():
            if name in NOT_OPTIONS or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            found[name] = (param, hints.get(name, inspect.Parameter.empty))
    return found


def default_options(cls: type[MergingMethod]) -> dict[str, Any]:
    """Every option of ``cls`` that has a default, with it."""
    return {name: p.default for name, (p, _) in option_parameters(cls).items() if p.default is not inspect.Parameter.empty}


def resolved_options(cls: type[MergingMethod], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every default of ``cls`` filled in."""
    return {**default_options(cls), **options}


def check_options(cls: type[MergingMethod], options: dict[str, Any]) -> None:
    """Raise :class:`MethodOptionError` for an option ``cls`` does not have (with a "did you
    mean"), a value that is not of its annotated type, or a required option left out."""
    known = option_parameters(cls)
    method = cls.name or cls.__name__
    for name, value in options.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise MethodOptionError(f"method {method!r} has no option {name!r} ({hint}its options: {', '.join(known) or 'none'})", name)
        annotation = known[name][1]
        if annotation is inspect.Parameter.empty:
            continue
        try:
            TypeAdapter(annotation, config=ConfigDict(strict=True)).validate_python(value)
        except ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise MethodOptionError(
                f"option {name!r} of method {method!r} is {_type_name(annotation)}, got {value!r} ({message[0].lower()}{message[1:]})", name
            ) from None
        except Exception:  # an annotation pydantic cannot check (an arbitrary class): not type-checked
            continue
    missing = [name for name, (p, _) in known.items() if p.default is inspect.Parameter.empty and name not in options]
    if missing:
        raise MethodOptionError(f"method {method!r} needs the option(s) {', '.join(missing)}", missing[0])


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return f"a {getattr(annotation, '__name__', None) or str(annotation).replace('typing.', '')}"
