"""The MoE layer: experts, router, pooling units, auxiliary losses, cross-layer state, upcycling."""

from .eval_cache import MergeCache
from .experts import ExpertBank, ExpertParams, ExpertSpec
from .layer import MoELayer, MoEOutput
from .router import Router, Routing
from .state import PropagationState
from .upcycle import dense_ffn_params, upcycle

__all__ = [
    "ExpertBank",
    "ExpertParams",
    "ExpertSpec",
    "MergeCache",
    "MoELayer",
    "MoEOutput",
    "PropagationState",
    "Router",
    "Routing",
    "dense_ffn_params",
    "upcycle",
]
