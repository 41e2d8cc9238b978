"""Model builders: real backbones (timm, transformers) whose FFNs become MoE layers."""

from .moe_model import ForwardPass, ModelOutput, MoEModel, MoESlot, model_facts, parameter_counts
from .registry import ModelConfigError, get_builder, register_builder

__all__ = ["ForwardPass", "ModelConfigError", "ModelOutput", "MoEModel", "MoESlot", "get_builder", "model_facts", "parameter_counts", "register_builder"]
