"""Model builders, registered by name (``builder:`` in a suite's ``models:``).

A builder has a pydantic schema for its ``params`` (checked when a suite is validated)
and a ``build`` function that returns an :class:`~namex_bench.models.moe_model.MoEModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError


class ModelConfigError(ValueError):
    """Bad model parameters; ``field`` / ``loc`` point inside ``params``."""

    def __init__(self, message: str, field: str | None = None, loc: tuple = ()):
        super().__init__(message)
        self.message, self.field, self.loc = message, field, loc


@dataclass(frozen=True)
class ModelBuilder:
    name: str
    schema: type[BaseModel]
    build: Callable[..., Any]
    description: str

    def validate(self, params: dict[str, Any]) -> BaseModel:
        try:
            return self.schema.model_validate(params)
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ("params", *error["loc"])
            field = ".".join(str(p) for p in loc)
            message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            raise ModelConfigError(message, field, loc) from None


_BUILDERS: dict[str, ModelBuilder] = {}


def register_builder(name: str, schema: type[BaseModel]):
    """Decorator: register ``build(params, method, ...)`` as the builder ``name``."""

    def decorate(fn):
        _BUILDERS[name] = ModelBuilder(name, schema, fn, (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return decorate


def get_builder(name: str) -> ModelBuilder:
    from . import vit_moe  # noqa: F401  (registers the built-in builders)

    try:
        return _BUILDERS[name]
    except KeyError:
        raise ModelConfigError(f"unknown model builder {name!r}; known: {', '.join(sorted(_BUILDERS))}") from None
