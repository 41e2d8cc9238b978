"""Experts: FFN weights stacked along a leading expert axis, and the algebra on them.

An expert is an FFN. Two shapes are supported:

* ``mlp`` — two matrices, ``FFN(x) = W_out · act(W_in x + b_in) + b_out`` (GELU by default);
* ``glu`` — three matrices, ``FFN(x) = W_down · (act(W_gate x + b_gate) ⊙ (W_up x + b_up)) + b_down``
  (SiLU by default, i.e. SwiGLU).

Weights follow ``torch.nn.Linear``: a matrix is ``[out, in]``. A set of experts is an
:data:`ExpertParams` — a ``dict`` from parameter name to a tensor whose leading axes
index experts (``[N, ...]``) or merged experts, one per group (``[G, ...]``). Merging
always combines these parameters, never the experts' outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ExpertParams = dict[str, Tensor]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "identity": lambda x: x,  # linear experts (the planted task)
}


@dataclass(frozen=True)
class ExpertSpec:
    """The shape of one expert FFN."""

    d_model: int
    d_hidden: int
    kind: Literal["mlp", "glu"] = "mlp"
    activation: str = "gelu"
    bias: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "glu"):
            raise ValueError(f"expert kind must be 'mlp' or 'glu', got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; known: {', '.join(sorted(ACTIVATIONS))}"
            )
        if self.d_model <= 0 or self.d_hidden <= 0:
            raise ValueError(f"expert sizes must be positive, got {self.d_model} and {self.d_hidden}")

    @property
    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """Name → ``(out, in)`` of every weight matrix of one expert."""
        d, h = self.d_model, self.d_hidden
        if self.kind == "mlp":
            return {"w_in": (h, d), "w_out": (d, h)}
        return {"w_gate": (h, d), "w_up": (h, d), "w_down": (d, h)}

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every parameter (matrices, then biases) of one expert."""
        shapes: dict[str, tuple[int, ...]] = dict(self.matrix_shapes)
        if self.bias:
            for name, (out, _) in self.matrix_shapes.items():
                shapes["b" + name[1:]] = (out,)
        return shapes

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes.values())


class ExpertBank(nn.Module):
    """``num_experts`` experts of one :class:`ExpertSpec`, stored as stacked parameters."""

    def __init__(self, spec: ExpertSpec, num_experts: int, init_std: float | None = None):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        self.spec = spec
        self.num_experts = num_experts
        for name, shape in spec.param_shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(num_experts, *shape)))
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float | None = None) -> None:
        """Matrices ~ N(0, std²) with ``std = 1/sqrt(in)`` unless given; biases 0."""
        with torch.no_grad():
            for name, (_, fan_in) in self.spec.matrix_shapes.items():
                getattr(self, name).normal_(0.0, init_std or fan_in**-0.5)
            for name in self.spec.param_shapes:
                if name.startswith("b"):
                    getattr(self, name).zero_()

    def params(self) -> ExpertParams:
        """The stacked parameters, ``name → [N, ...]``."""
        return {name: getattr(self, name) for name in self.spec.param_shapes}

    def expert(self, index: int) -> ExpertParams:
        return {name: p[index] for name, p in self.params().items()}

    def load_dense(self, dense: ExpertParams) -> None:
        """Copy one expert's parameters (no expert axis) into every expert."""
        check_params(self.spec, dense, leading=0, what="dense FFN")
        with torch.no_grad():
            for name, value in dense.items():
                getattr(self, name).copy_(value.expand_as(getattr(self, name)))

    def extra_repr(self) -> str:
        s = self.spec
        return f"num_experts={self.num_experts}, d_model={s.d_model}, d_hidden={s.d_hidden}, kind={s.kind}, activation={s.activation}, bias={s.bias}"


def check_params(spec: ExpertSpec, params: ExpertParams, leading: int, what: str) -> None:
    """Raise ``ValueError`` unless ``params`` has exactly ``spec``'s parameters after ``leading`` axes."""
    if set(params) != set(spec.param_shapes):
        raise ValueError(f"{what}: parameters {sorted(params)} do not match the expert's {sorted(spec.param_shapes)}")
    for name, shape in spec.param_shapes.items():
        got = tuple(params[name].shape)
        if len(got) != leading + len(shape) or got[leading:] != shape:
            raise ValueError(f"{what}: parameter {name!r} has shape {got}, expected (*{leading} axes, {', '.join(map(str, shape))})")


def ffn(x: Tensor, params: ExpertParams, spec: ExpertSpec) -> Tensor:
    """Apply one FFN per group: ``x [G, L, d]`` with ``params [G, ...]`` → ``[G, L, d]``.

    For an ``mlp`` expert, ``y = act(x W_inᵀ + b_in) W_outᵀ + b_out``; for ``glu``,
    ``y = (act(x W_gateᵀ + b_gate) ⊙ (x W_upᵀ + b_up)) W_downᵀ + b_down``.

    Computed transposed, ``hᵀ = W xᵀ + b``: each group's weights enter the batched
    matmul as they are stored, so their gradients come out contiguous and flow back
    into the merge without a copy of ``G`` weight sets (that copy was 10% of a SMEAR
    layer's forward+backward at B = 8 and 24% at B = 64 on a CPU, ``bench layers``).
    The token-sized transposes are views.
    """
    act = ACTIVATIONS[spec.activation]

    def linear_t(inp_t: Tensor, name: str) -> Tensor:
        weight, bias = params["w" + name], params.get("b" + name)
        if bias is None:
            return torch.bmm(weight, inp_t)
        return torch.baddbmm(bias.unsqueeze(-1), weight, inp_t)

    x_t = x.transpose(1, 2)
    if spec.kind == "mlp":
        return linear_t(act(linear_t(x_t, "_in")), "_out").transpose(1, 2)
    return linear_t(act(linear_t(x_t, "_gate")) * linear_t(x_t, "_up"), "_down").transpose(1, 2)


def dense_ffn(x: Tensor, params: ExpertParams, spec: ExpertSpec) -> Tensor:
    """Apply a single expert (no expert axis) to ``x [..., d]``: the same FFN as :func:`ffn`."""
    act = ACTIVATIONS[spec.activation]

    def linear(inp: Tensor, name: str) -> Tensor:
        return F.linear(inp, params["w" + name], params.get("b" + name))

    if spec.kind == "mlp":
        return linear(act(linear(x, "_in")), "_out")
    return linear(act(linear(x, "_gate")) * linear(x, "_up"), "_down")


def weighted_sum(weights: Tensor, params: ExpertParams, offset: ExpertParams | None = None) -> ExpertParams:
    """``out_g = offset + Σ_i weights[g, i] · params_i`` for every parameter: ``[G, N] × [N, ...] → [G, ...]``.

    ``offset`` (no leading axis; default 0) is added inside the same matmul (``addmm``),
    not as a further pass over the ``G`` merged weight sets.
    """
    out = {}
    for name, p in params.items():
        flat = p.reshape(p.shape[0], -1)
        w = weights.to(flat.dtype)
        merged = w @ flat if offset is None else torch.addmm(offset[name].reshape(1, -1).to(flat.dtype), w, flat)
        out[name] = merged.reshape(weights.shape[0], *p.shape[1:])
    return out


def gram(params: ExpertParams) -> Tensor:
    """``G_ij = ⟨θ_i, θ_j⟩`` with each expert's parameters flattened into one vector: ``[N, N]``.

    Summed parameter by parameter, so the concatenated vectors are never built.
    """
    total = None
    for p in params.values():
        flat = p.reshape(p.shape[0], -1)
        g = flat @ flat.T
        total = g if total is None else total + g
    return total


def combine(a: ExpertParams, b: ExpertParams, fn: Callable[[Tensor, Tensor], Tensor]) -> ExpertParams:
    """Apply ``fn`` parameter by parameter to two expert sets with the same names."""
    return {name: fn(a[name], b[name]) for name in a}
