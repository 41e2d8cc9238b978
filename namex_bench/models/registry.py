"""Model builders, registered by name (``builder:`` in a suite's ``models:``).

A builder has a pydantic schema for its ``params`` (checked when a suite is validated),
a ``build`` function that returns an :class:`~namex_bench.models.moe_model.MoEModel`, and
optionally a ``facts`` function that says, without building, how many MoE layers and experts
the model will have (so that a suite can refuse a method that would be inert on it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..methods.base import MergingMethod, ModelFacts


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
    kind: str  # one of MODEL_KINDS: which task families can use the model
    facts: Callable[[Any, type[MergingMethod]], ModelFacts] | None = None

    def model_facts(self, params: BaseModel, method: type[MergingMethod]) -> ModelFacts:
        """What the model built from ``params`` for ``method`` will be (:class:`ModelFacts`; fields
        the builder cannot know without loading a checkpoint are ``None``)."""
        if self.facts is None:
            return ModelFacts()
        try:
            return self.facts(params, method)
        except Exception:  # a config that only building can check: the run itself checks it
            return ModelFacts()

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


#: Model kinds and what their builders take: ``build(params, method, method_options, ..., seed=None)``
#: with ``...`` = ``num_classes, in_chans, img_size`` (image_classifier), ``num_labels`` (text_classifier),
#: nothing (causal_lm) or ``world`` (planted_regressor). ``seed``: the run's seed, from which every
#: random component of the model is drawn on a stream of its own (``namex_bench.seeding``); ``None``:
#: the global generator.
MODEL_KINDS = ("image_classifier", "text_classifier", "causal_lm", "planted_regressor")


def register_builder(name: str, schema: type[BaseModel], kind: str = "image_classifier", facts=None):
    """Decorator: register ``build(params, method, method_options, ..., seed=None)`` as the builder
    ``name``; ``facts(params, method_class) -> ModelFacts`` optionally describes the model unbuilt."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")

    def decorate(fn):
        _BUILDERS[name] = ModelBuilder(name, schema, fn, (fn.__doc__ or "").strip().splitlines()[0], kind, facts)
        return fn

    return decorate


def get_builder(name: str) -> ModelBuilder:
    from . import gpt_moe, moe_llm, planted_moe, text_moe, vit_moe  # noqa: F401  (register the built-in builders)

    try:
        return _BUILDERS[name]
    except KeyError:
        raise ModelConfigError(f"unknown model builder {name!r}; known: {', '.join(sorted(_BUILDERS))}") from None
