"""Experts: FFN weights stacked along a leading expert axis, and the algebra on them.

An expert is an FFN. Four shapes are supported:

* ``mlp`` — two matrices, ``FFN(x) = W_out · act(W_in x + b_in) + b_out`` (GELU by default);
* ``glu`` — three matrices, ``FFN(x) = W_down · (act(W_gate x + b_gate) ⊙ (W_up x + b_up)) + b_down``
  (SiLU by default, i.e. SwiGLU);
* ``clamped_glu`` — gpt-oss's gated unit, the ``glu`` matrices with ``g = min(W_gate x + b_gate, L)``,
  ``u = clip(W_up x + b_up, −L, L)`` and ``FFN(x) = W_down · (g σ(α g) ⊙ (u + 1)) + b_down``
  (``α = alpha``, ``L = limit``; ``activation`` is not used);
* ``linear`` — one matrix, ``FFN(x) = W x + b`` from ``d_model`` to ``d_hidden`` features (no
  activation): a merged linear map, the unit the CAMEx reference code merges (its T5 FFN is
  two of them, each with its own router).

An FFN runs in two stages: the *input* matrices map ``x`` to the hidden state ``h``
(``act(W_in x + b_in)``; ``act(W_gate x + b_gate) ⊙ (W_up x + b_up)``; ``W x + b``), and the
*output* matrices map ``h`` to ``y`` (``W_out h + b_out``; ``W_down h + b_down``; none for
``linear``). A layer with a router per weight matrix merges the two stages with different
scores (see :meth:`namex_bench.methods.MergingMethod.run_merged`).

Weights follow ``torch.nn.Linear``: a matrix is ``[out, in]``. A set of experts is an
:data:`ExpertParams` — a ``dict`` from parameter name to a tensor whose leading axes
index experts (``[N, ...]``) or merged experts, one per group (``[G, ...]``). Merging
always combines these parameters, never the experts' outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import LOW_PRECISION, at_least_float32, compute_dtype, full_precision

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
    """The shape of one expert FFN (for ``linear``, ``d_hidden`` is the output width)."""

    d_model: int
    d_hidden: int
    kind: Literal["mlp", "glu", "clamped_glu", "linear"] = "mlp"
    activation: str = "gelu"
    bias: bool = True
    alpha: float = 1.702  # clamped_glu only
    limit: float = 7.0  # clamped_glu only

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "glu", "clamped_glu", "linear"):
            raise ValueError(f"expert kind must be 'mlp', 'glu', 'clamped_glu' or 'linear', got {self.kind!r}")
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
        if self.kind == "linear":
            return {"w": (h, d)}
        return {"w_gate": (h, d), "w_up": (h, d), "w_down": (d, h)}

    @property
    def d_out(self) -> int:
        """The width of the FFN's output: ``d_model``, or ``d_hidden`` for a ``linear`` expert."""
        return self.d_hidden if self.kind == "linear" else self.d_model

    @property
    def output_matrices(self) -> tuple[str, ...]:
        """The matrices of the output stage (applied to the hidden state): none for ``linear``."""
        return {"mlp": ("w_out",), "glu": ("w_down",), "clamped_glu": ("w_down",), "linear": ()}[self.kind]

    def stage_params(self, output: bool) -> tuple[str, ...]:
        """The names of the input stage's parameters (``output=False``) or the output stage's, biases included."""
        return tuple(name for name in self.param_shapes if ("w" + name[1:] in self.output_matrices) == output)

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


def gated(gate: Tensor, up: Tensor, spec: ExpertSpec) -> Tensor:
    """The hidden activation of a ``glu`` expert, ``act(gate) ⊙ up``, or of a ``clamped_glu`` one."""
    if spec.kind == "clamped_glu":
        gate, up = gate.clamp(max=spec.limit), up.clamp(-spec.limit, spec.limit)
        return gate * torch.sigmoid(spec.alpha * gate) * (up + 1)
    return ACTIVATIONS[spec.activation](gate) * up


@dataclass(frozen=True)
class MergedExperts:
    """One merged expert per group, ``Ê_g = center + delta_g``, kept apart as its center and delta.

    ``Ê_g = base + Σ_i weights[g, i] · terms_i`` around a ``base`` (the CAMEx family:
    ``terms`` are the curvature-aware domain vectors); or, with ``base=None``,
    ``Ê_g = Σ_i weights[g, i] · terms_i`` with rows of ``weights`` summing to 1 (SMEAR-style:
    ``terms`` are the experts), whose center is the experts' mean. :func:`ffn` applies the
    expert materialised where its matmuls run in the weights' precision, and as center and
    delta separately where they run narrower (bf16/fp16), so that the narrow type rounds
    each group's difference from the center at its own scale, not at the weights' (see
    ``moe/precision.py``). Every part is computed in float32 or wider, once per merge.
    ``weights [1, N]`` is one merged expert shared by every group (e.g. ``namex``'s Nash
    weights in place of the scores): :func:`ffn` broadcasts it over the groups.
    """

    weights: Tensor  # [G, N]
    terms: ExpertParams  # [N, ...]
    base: ExpertParams | None = None  # no expert axis
    mean: ExpertParams | None = None  # base=None: the experts' mean (:func:`experts_mean`), if already at hand

    @cached_property
    def parts(self) -> tuple[ExpertParams, ExpertParams]:
        """``(center, deltas)``, computed once per merge (:meth:`center`, :meth:`deltas`)."""
        center = self.center()
        return center, self.deltas(center)

    def materialise(self) -> ExpertParams:
        """``Ê_g`` for every group: ``name → [G, ...]``, computed once per merge."""
        return self._materialised

    @cached_property
    def _materialised(self) -> ExpertParams:
        return weighted_sum(self.weights, self.terms, offset=self.base)

    def center(self) -> ExpertParams:
        """The point the merge is taken around: the base, or the experts' mean."""
        if self.base is not None:
            return self.base
        return self.mean if self.mean is not None else experts_mean(self.terms)

    def deltas(self, center: ExpertParams | None = None) -> ExpertParams:
        """``Ê_g − center`` for every group: ``name → [G, ...]`` (``center``: :meth:`center`, if already at hand)."""
        merged = weighted_sum(self.weights, self.terms)
        if self.base is not None:
            return merged
        return {name: merged[name] - c for name, c in (center or self.center()).items()}


def experts_mean(params: ExpertParams) -> ExpertParams:
    """``θ̄ = (1/N) Σ_i θ_i`` for every parameter, in float32 or wider: ``[N, ...] → [...]``."""
    return {name: at_least_float32(t).mean(0) for name, t in params.items()}


def ffn(x: Tensor, params: ExpertParams | MergedExperts, spec: ExpertSpec) -> Tensor:
    """Apply one FFN per group: ``x [G, L, d]`` with ``params [G, ...]`` → ``[G, L, d_out]``.

    For an ``mlp`` expert, ``y = act(x W_inᵀ + b_in) W_outᵀ + b_out``; for ``glu``,
    ``y = (act(x W_gateᵀ + b_gate) ⊙ (x W_upᵀ + b_up)) W_downᵀ + b_down``; for ``linear``,
    ``y = x Wᵀ + b``. It is :func:`ffn_output` of :func:`ffn_hidden`.

    :class:`MergedExperts` are applied as one set of weights ``center + delta_g`` when
    the matmuls run in the weights' precision, and as ``x Wᵀ = x W_centerᵀ + x Δ_gᵀ``
    (one shared matmul plus one batched matmul per weight) when they run in bf16/fp16
    (autocast, or a bf16 model): the same function, rounded at the scale of each part.
    """
    params = in_compute_precision(params, x)
    return ffn_output(ffn_hidden(x, params, spec), params, spec)


def _linear_t(inp_t: Tensor, params: ExpertParams | MergedExperts, name: str) -> Tensor:
    """``W inp + b`` per group on transposed inputs ``[G, in, L]`` → ``[G, out, L]``.

    Computed transposed, ``hᵀ = W xᵀ + b``: each group's weights enter the batched
    matmul as they are stored, so their gradients come out contiguous and flow back
    into the merge without a copy of ``G`` weight sets (that copy was 10% of a SMEAR
    layer's forward+backward at B = 8 and 24% at B = 64 on a CPU, ``bench layers``).
    The token-sized transposes are views.
    """
    if isinstance(params, MergedExperts):
        return _center_plus_delta_linear_t(inp_t, params, name)
    weight, bias = _per_group(params["w" + name], inp_t), params.get("b" + name)
    if bias is None:
        return torch.bmm(weight, inp_t)
    return torch.baddbmm(bias.unsqueeze(-1), weight, inp_t)


def _center_plus_delta_linear_t(inp_t: Tensor, merged: MergedExperts, name: str) -> Tensor:
    """:func:`_linear_t` of ``center + delta_g`` in the compute dtype, split:
    ``W_c inp + b_c + Δ_g inp + Δb_g`` (one matmul shared by the groups, one batched)."""
    dtype = compute_dtype(inp_t)
    inp_t = inp_t.to(dtype)
    center, deltas = merged.parts
    out = torch.baddbmm(torch.matmul(center["w" + name].to(dtype), inp_t), _per_group(deltas["w" + name].to(dtype), inp_t), inp_t)
    center_bias, delta_bias = center.get("b" + name), deltas.get("b" + name)
    if center_bias is not None:
        out = out + (center_bias.to(dtype).unsqueeze(-1) + delta_bias.to(dtype).unsqueeze(-1))
    return out


def _per_group(weight: Tensor, inp_t: Tensor) -> Tensor:
    """``weight [G, out, in]`` as it is, or a weight ``[1, out, in]`` shared by every group of
    ``inp_t [G, in, L]`` broadcast to ``[G, out, in]`` (a view: nothing is copied)."""
    return weight.expand(inp_t.shape[0], -1, -1) if weight.shape[0] == 1 else weight


def in_compute_precision(params: ExpertParams | MergedExperts, x: Tensor) -> ExpertParams | MergedExperts:
    """``params`` as the FFN applies them to ``x``: a :class:`MergedExperts` materialised where the
    matmuls run in the weights' precision, kept as center and deltas where they run in bf16/fp16."""
    if isinstance(params, MergedExperts) and compute_dtype(x) not in LOW_PRECISION:
        return params.materialise()
    return params


def ffn_hidden(x: Tensor, params: ExpertParams | MergedExperts, spec: ExpertSpec) -> Tensor:
    """The input stage, per group: ``x [G, L, d]`` → the hidden state ``h [G, L, d_hidden]``
    (``act(x W_inᵀ + b_in)``, ``act(x W_gateᵀ + b_gate) ⊙ (x W_upᵀ + b_up)``, or ``x Wᵀ + b``).
    Reads only the input stage's parameters."""
    params = in_compute_precision(params, x)
    x_t = x.transpose(1, 2)
    if spec.kind == "linear":
        return _linear_t(x_t, params, "").transpose(1, 2)
    act = ACTIVATIONS[spec.activation]
    if spec.kind == "mlp":
        return act(_linear_t(x_t, params, "_in")).transpose(1, 2)
    return gated(_linear_t(x_t, params, "_gate"), _linear_t(x_t, params, "_up"), spec).transpose(1, 2)


def ffn_output(h: Tensor, params: ExpertParams | MergedExperts, spec: ExpertSpec) -> Tensor:
    """The output stage, per group: ``h [G, L, d_hidden]`` → ``y [G, L, d_out]`` (``h W_outᵀ + b_out``,
    ``h W_downᵀ + b_down``; ``h`` itself for ``linear``). Reads only the output stage's parameters."""
    if spec.kind == "linear":
        return h
    params = in_compute_precision(params, h)
    return _linear_t(h.transpose(1, 2), params, "_out" if spec.kind == "mlp" else "_down").transpose(1, 2)


def dense_ffn(x: Tensor, params: ExpertParams, spec: ExpertSpec) -> Tensor:
    """Apply a single expert (no expert axis) to ``x [..., d]``: the same FFN as :func:`ffn`."""
    act = ACTIVATIONS[spec.activation]

    def linear(inp: Tensor, name: str) -> Tensor:
        return F.linear(inp, params["w" + name], params.get("b" + name))

    if spec.kind == "linear":
        return linear(x, "")
    if spec.kind == "mlp":
        return linear(act(linear(x, "_in")), "_out")
    return linear(gated(linear(x, "_gate"), linear(x, "_up"), spec), "_down")


def weighted_sum(weights: Tensor, params: ExpertParams, offset: ExpertParams | None = None) -> ExpertParams:
    """``out_g = offset + Σ_i weights[g, i] · params_i`` for every parameter: ``[G, N] × [N, ...] → [G, ...]``.

    Computed with autocast off, in float32 or wider whatever the parameters' dtype.
    ``offset`` (no leading axis; default 0) is added inside the same matmul (``addmm``),
    not as a further pass over the ``G`` merged weight sets.
    """
    out = {}
    with full_precision(weights):
        for name, p in params.items():
            flat = at_least_float32(p.reshape(p.shape[0], -1))
            w = weights.to(flat.dtype)
            merged = w @ flat if offset is None else torch.addmm(offset[name].reshape(1, -1).to(flat.dtype), w, flat)
            out[name] = merged.reshape(weights.shape[0], *p.shape[1:])
    return out


def merge_around(base: ExpertParams, weights: Tensor, deltas: ExpertParams) -> MergedExperts:
    """``Ê_g = base + Σ_i weights[g, i] · deltas_i``, applied by :func:`ffn` (see :class:`MergedExperts`)."""
    return MergedExperts(weights, deltas, base)


def soft_merge(weights: Tensor, params: ExpertParams, mean: ExpertParams | None = None) -> MergedExperts:
    """``Ē_g = Σ_i weights[g, i] · E_i`` for weights whose rows sum to 1, applied by :func:`ffn`
    around the experts' mean ``θ̄`` (``Ē_g = θ̄ + (Ē_g − θ̄)``, see :class:`MergedExperts`): for
    upcycled experts, copies of one dense FFN plus small differences, that difference is all
    the merge adds. ``mean``: ``θ̄`` (:func:`experts_mean`) if already at hand."""
    return MergedExperts(weights, params, mean=mean)


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


def subset(params: ExpertParams, names: tuple[str, ...]) -> ExpertParams:
    """The named parameters of ``params``."""
    return {name: params[name] for name in names}


def combine(a: ExpertParams, b: ExpertParams, fn: Callable[[Tensor, Tensor], Tensor]) -> ExpertParams:
    """Apply ``fn`` parameter by parameter to two expert sets with the same names."""
    return {name: fn(a[name], b[name]) for name in a}
