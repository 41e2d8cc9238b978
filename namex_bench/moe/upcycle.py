"""Upcycling: turn a dense FFN into an MoE layer whose experts start as its copies.

Right after upcycling (no noise) every expert and the base expert equal the dense
FFN, so every merging method computes exactly the dense FFN's output — in a stack of
upcycled layers too, under every method's default options (expert propagation keeps
each layer's dense FFN as its anchor: ``ep_camex``'s ``propagation="offset"``).

Dense FFNs understood (by their parts, whatever their class):

* ``fc1, act, fc2`` — timm ``Mlp`` (norm must be identity);
* ``fc1_g, fc1_x, act, fc2`` — timm ``SwiGLU`` (a ``glu`` expert);
* ``c_fc, act, c_proj`` — GPT-2's MLP (``Conv1D`` weights, stored transposed);
* ``intermediate.dense, intermediate.intermediate_act_fn, output.dense`` — a BERT-family
  layer (the residual and LayerNorm of ``output`` stay outside the MoE layer);
* ``gate_proj, up_proj, down_proj, act_fn`` — LLaMA/Qwen/Mistral-style gated MLPs;
* ``wi, wo, act`` and ``wi_0, wi_1, wo, act`` — T5's dense and gated FFNs;
* ``nn.Sequential(Linear, activation, Linear)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .experts import ACTIVATIONS, ExpertParams, ExpertSpec
from .layer import MoELayer


def identify_activation(act: Callable[[Tensor], Tensor]) -> str:
    """The name in :data:`ACTIVATIONS` of the function ``act`` computes (checked numerically)."""
    probe = torch.linspace(-6, 6, 241)
    with torch.no_grad():
        got = act(probe)
        for name, fn in ACTIVATIONS.items():
            if torch.allclose(got, fn(probe), atol=1e-5, rtol=0):
                return name
    raise ValueError(f"activation {act!r} is none of the supported ones: {', '.join(ACTIVATIONS)}")


def _linear(layer: nn.Module, transposed: bool = False) -> tuple[Tensor, Tensor | None]:
    weight = layer.weight.detach()
    bias = None if getattr(layer, "bias", None) is None else layer.bias.detach()
    return (weight.T if transposed else weight), bias


def _pack(kind: str, activation: str, parts: dict[str, tuple[Tensor, Tensor | None]]) -> tuple[ExpertSpec, ExpertParams]:
    has_bias = {b is not None for _, b in parts.values()}
    if len(has_bias) != 1:
        raise ValueError("dense FFN: either every projection has a bias or none does")
    bias = has_bias.pop()
    first = next(iter(parts.values()))[0]
    spec = ExpertSpec(d_model=first.shape[1], d_hidden=first.shape[0], kind=kind, activation=activation, bias=bias)
    params: ExpertParams = {}
    for name, (w, b) in parts.items():
        params["w_" + name] = w.clone()
        if bias:
            params["b_" + name] = b.clone()
    return spec, params


def dense_ffn_params(module: nn.Module) -> tuple[ExpertSpec, ExpertParams]:
    """The :class:`ExpertSpec` and parameters (no expert axis) of a dense FFN module."""
    has = lambda *names: all(hasattr(module, n) for n in names)  # noqa: E731
    if isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(module[0], nn.Linear) and isinstance(module[2], nn.Linear):
        return _pack("mlp", identify_activation(module[1]), {"in": _linear(module[0]), "out": _linear(module[2])})
    if has("fc1_g", "fc1_x", "fc2", "act"):
        _require_identity_norm(module)
        return _pack("glu", identify_activation(module.act), {"gate": _linear(module.fc1_g), "up": _linear(module.fc1_x), "down": _linear(module.fc2)})
    if has("fc1", "fc2", "act"):
        _require_identity_norm(module)
        if not isinstance(module.fc1, nn.Linear):
            raise ValueError(f"dense FFN {type(module).__name__}: fc1 is a {type(module.fc1).__name__}, not a Linear (conv MLPs are not supported)")
        return _pack("mlp", identify_activation(module.act), {"in": _linear(module.fc1), "out": _linear(module.fc2)})
    if has("c_fc", "c_proj", "act"):
        return _pack("mlp", identify_activation(module.act), {"in": _linear(module.c_fc, transposed=True), "out": _linear(module.c_proj, transposed=True)})
    if has("intermediate", "output") and hasattr(module.intermediate, "dense") and hasattr(module.output, "dense"):
        act = identify_activation(module.intermediate.intermediate_act_fn)
        return _pack("mlp", act, {"in": _linear(module.intermediate.dense), "out": _linear(module.output.dense)})
    if has("gate_proj", "up_proj", "down_proj", "act_fn"):
        return _pack("glu", identify_activation(module.act_fn), {"gate": _linear(module.gate_proj), "up": _linear(module.up_proj), "down": _linear(module.down_proj)})
    if has("wi_0", "wi_1", "wo", "act"):
        return _pack("glu", identify_activation(module.act), {"gate": _linear(module.wi_0), "up": _linear(module.wi_1), "down": _linear(module.wo)})
    if has("wi", "wo", "act"):
        return _pack("mlp", identify_activation(module.act), {"in": _linear(module.wi), "out": _linear(module.wo)})
    raise TypeError(
        f"cannot upcycle a {type(module).__name__}: not a known dense FFN "
        "(timm Mlp/SwiGLU, GPT-2 MLP, BERT layer, LLaMA-style MLP, T5 FFN, or Sequential(Linear, act, Linear))"
    )


def _require_identity_norm(module: nn.Module) -> None:
    norm = getattr(module, "norm", None)
    if norm is not None and not isinstance(norm, nn.Identity):
        raise ValueError(f"dense FFN {type(module).__name__} has a hidden-layer norm ({type(norm).__name__}); experts have none")


def upcycle(
    module: nn.Module,
    num_experts: int,
    method: str = "smear",
    *,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    **layer_options: Any,
) -> MoELayer:
    """An :class:`MoELayer` whose experts (and base expert) are copies of ``module``.

    ``noise_std`` adds ``N(0, (noise_std · std(W))²)`` to each expert's copy of every
    weight ``W`` (the base expert stays an exact copy), so that experts can diverge.
    ``layer_options`` go to :class:`MoELayer` (``top_k``, ``pooling``, ``method_options``, …).
    """
    spec, dense = dense_ffn_params(module)
    layer = MoELayer(spec, num_experts, method, **layer_options)
    reference = next(module.parameters())
    layer.to(device=reference.device, dtype=reference.dtype)
    layer.init_from_dense(dense)
    if noise_std > 0:
        with torch.no_grad():
            for name, p in layer.experts.params().items():
                scale = dense[name].float().std() if name.startswith("w") else 0.0
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device)
                p.add_((noise_std * scale * noise).to(p.dtype))
    return layer
