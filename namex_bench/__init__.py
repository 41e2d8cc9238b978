"""namex_bench: a benchmark and robustness suite for expert merging in sparse MoE models."""

# The MoE layer (moe) uses the method contract (methods), whose modules use moe's
# experts and state: importing moe first resolves that package-level cycle.
from .moe import ExpertSpec, MergeCache, MoELayer, PropagationState, upcycle  # noqa: I001 - moe first (above)
from .methods import MergingMethod, available_methods, get_method, register_method
from .nash import nash_bargaining

__version__ = "0.1.0"

__all__ = [
    "ExpertSpec",
    "MergeCache",
    "MergingMethod",
    "MoELayer",
    "PropagationState",
    "available_methods",
    "get_method",
    "nash_bargaining",
    "register_method",
    "upcycle",
    "__version__",
]
