"""A method's layer stack in low precision against float32: outputs, merges, gradients.

The stack is ``depth`` MoE layers of one method run as a model runs them (the
propagation state passed up, ``h ← h + y``), on **random** experts (independent
initialisations) or on **upcycled** ones (copies of a dense FFN plus noise of
``relative_difference`` times the weights' scale, the base expert an exact copy — the
case of fine-tuning a pretrained model, where a merge's whole signal is that small
difference). The same stack, inputs and loss run once in float32 and once under
autocast; every figure is a relative error against the float32 pass:

* ``output`` — ``‖h_lp − h_32‖ / ‖h_32‖`` of the stack's output;
* ``merge`` — each layer's merged expert as its FFN applies it, minus the point the merge
  is taken around (the base expert, or the experts' mean): ``‖δ_lp − δ_32‖ / ‖δ_32‖``
  with ``δ_lp`` rounded to the compute type (the worst layer; methods that do not merge,
  or hand their FFN plain weights, have none);
* ``router``, ``experts``, ``base``, ``method`` — the gradients of each group of
  parameters, ``‖g_lp − g_32‖ / ‖g_32‖`` (the worst layer); for the base expert and the method's own
  parameters (curvature) the denominator is at least the experts' gradient norm, since
  their exact gradient can be zero (with identity curvature the base cancels from the
  merge, and in bf16 it then gets rounding noise instead of 0).

Errors are reported in units of the compute type's machine epsilon
(``torch.finfo(dtype).eps``: 2⁻⁷ for bf16, 2⁻¹⁰ for fp16). The stated tolerances
(:data:`TOLERANCES`) hold for a pass whose discrete routing decisions — each group's top-k
experts and top-1 expert — are those of the float32 pass; where an input lies within
rounding of a tie the low-precision pass may route it elsewhere, a discontinuity of
top-k routing rather than an error of the arithmetic, which :attr:`PrecisionErrors.routing_changes`
counts. One documented exception: methods that route tokens and add up expert *outputs*
(``smoe``) get a router gradient that is a difference of expert outputs computed in the
low precision; for upcycled experts 1% apart that difference keeps ~1/100 of their
magnitude, so its rounding is ~100× larger relative to it (:data:`OUTPUT_SPACE_ROUTER_TOLERANCE`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..methods.registry import get_method
from ..moe.experts import ExpertParams, ExpertSpec, MergedExperts
from ..moe.layer import MoELayer
from ..moe.router import Routing
from ..moe.upcycle import upcycle

EXPERT_SETS = ("random", "upcycled")
GRADIENT_GROUPS = ("router", "experts", "base", "method")
# Tolerances in units of eps (measured on a CPU, bf16 and fp16, 6 seeds: ≤ 0.4 ε for the
# merge, ≤ 0.6 ε for outputs, ≤ 1.5 ε for gradients).
TOLERANCES = {"output": 2.0, "merge": 1.0, "router": 3.0, "experts": 3.0, "base": 3.0, "method": 3.0}
OUTPUT_SPACE_ROUTER_TOLERANCE = 16.0  # smoe's router on upcycled experts (module docstring); measured ≤ 8.4 ε


@dataclass(frozen=True)
class StackShape:
    """The stack's size: ``depth`` MoE layers of ``num_experts`` GELU experts ``d_model → d_hidden``,
    run on ``batch`` sequences of ``seq_len`` tokens."""

    d_model: int = 32
    d_hidden: int = 64
    num_experts: int = 4
    depth: int = 3
    batch: int = 4
    seq_len: int = 8


def method_stack(method: str, experts: str, shape: StackShape = StackShape(), relative_difference: float = 0.01,
                 seed: int = 0, device: torch.device | str = "cpu") -> list[MoELayer]:
    """``shape.depth`` MoE layers of ``method`` with its default options, float32.

    ``experts="random"``: every expert (and base) drawn independently; ``"upcycled"``: each
    layer upcycled from its own random dense FFN with ``noise_std = relative_difference``.
    Routers are drawn with std ``d^-1/2`` so that routing is decisive, not uniform.
    """
    if experts not in EXPERT_SETS:
        raise ValueError(f"experts must be one of {EXPERT_SETS}, got {experts!r}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    spec = ExpertSpec(shape.d_model, shape.d_hidden)
    get_method(method)  # one clear error for an unknown name
    layers = []
    for index in range(shape.depth):
        if experts == "random":
            layer = MoELayer(spec, shape.num_experts, method, moe_index=index)
        else:
            dense = nn.Sequential(nn.Linear(shape.d_model, shape.d_hidden), nn.GELU(), nn.Linear(shape.d_hidden, shape.d_model))
            layer = upcycle(dense, shape.num_experts, method, noise_std=relative_difference, generator=generator, moe_index=index)
        with torch.no_grad():
            layer.router.gate.weight.copy_(torch.randn(layer.router.gate.weight.shape, generator=generator) * shape.d_model**-0.5)
        layers.append(layer.to(device))
    return layers


@dataclass
class StackPass:
    """One forward+backward of a stack: its output, each parameter's gradient, and the merged
    experts each layer handed its FFN (in layer order)."""

    output: Tensor
    grads: dict[str, Tensor]
    merged: list[ExpertParams | MergedExperts] = field(default_factory=list)
    decisions: list[Tensor] = field(default_factory=list)  # per layer: routing_decisions()


def routing_decisions(routing: Routing) -> Tensor:
    """``[G, N + 1]``: the top-k selection of every group, and its top-1 expert (which the
    Switch loss counts): the discrete decisions a low-precision pass may take differently."""
    return torch.cat([routing.scores.detach() > 0, routing.probs.detach().argmax(-1, keepdim=True)], dim=-1).long()


@contextmanager
def recording(layers: list[MoELayer]) -> Iterator[tuple[list[ExpertParams | MergedExperts], list[Tensor]]]:
    """Record, layer by layer, the merged expert each method hands to ``apply_merged`` and the
    experts each group is routed to (diagnostics: an instance attribute on the method and a
    forward hook on the router, both removed when the block ends)."""
    merged: list[ExpertParams | MergedExperts] = []
    decisions: list[Tensor] = []
    hooks = [layer.router.register_forward_hook(lambda _m, _i, routing: decisions.append(routing_decisions(routing))) for layer in layers]
    for layer in layers:
        apply = layer.method.apply_merged

        def recorder(tokens, params, apply=apply):
            merged.append(params)
            return apply(tokens, params)

        layer.method.apply_merged = recorder
    try:
        yield merged, decisions
    finally:
        for layer, hook in zip(layers, hooks):
            hook.remove()
            del layer.method.apply_merged


def run_stack(layers: list[MoELayer], x: Tensor, probe: Tensor, autocast_dtype: torch.dtype | None) -> StackPass:
    """Forward the stack on ``x [B, T, d]`` (autocast to ``autocast_dtype``, or float32), then
    backward the loss ``mean(h · probe) + Σ aux``; gradients are collected, then cleared."""
    for layer in layers:
        layer.zero_grad(set_to_none=True)
    with recording(layers) as (merged, decisions), torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        h, state, aux = x, None, 0.0
        for layer in layers:
            out = layer(h, state)
            h, state, aux = h + out.y, out.state, aux + out.aux_loss.float()
        loss = (h.float() * probe).mean() + aux
    loss.backward()
    grads = {f"{i}.{name}": p.grad.detach().clone() for i, layer in enumerate(layers) for name, p in layer.named_parameters() if p.grad is not None}
    for layer in layers:
        layer.zero_grad(set_to_none=True)
    return StackPass(h.detach().float(), grads, merged, decisions)


def _relative(a: Tensor, b: Tensor, floor: float = 0.0) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / max(float(b.norm()), floor, 1e-30))


def _group(name: str) -> str:
    return name.split(".")[1]


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.sqrt(sum(t.float().square().sum() for t in tensors))) if tensors else 0.0


def merge_error(low: list, full: list, dtype: torch.dtype) -> float | None:
    """The worst layer's ``‖δ_lp − δ_32‖ / ‖δ_32‖`` of the merged experts' differences from their centers."""
    errors = []
    for lp, fp in zip(low, full):
        if not (isinstance(lp, MergedExperts) and isinstance(fp, MergedExperts)):
            return None
        applied = torch.cat([d.detach().to(dtype).float().flatten() for d in lp.deltas().values()])
        exact = torch.cat([d.detach().float().flatten() for d in fp.deltas().values()])
        errors.append(_relative(applied, exact))
    return max(errors) if errors else None


def gradient_errors(low: dict[str, Tensor], full: dict[str, Tensor]) -> dict[str, float]:
    """Per group of parameters (router, experts, base, method): the worst layer's relative error
    of the group's gradients; base and method relative to at least that layer's experts' gradient norm."""
    errors: dict[str, float] = {}
    for layer in sorted({name.split(".")[0] for name in full}):
        names = [name for name in full if name.split(".")[0] == layer]
        experts_norm = _norm([full[n] for n in names if _group(n) == "experts"])
        for group in GRADIENT_GROUPS:
            members = [n for n in names if _group(n) == group]
            if not members:
                continue
            diff = _norm([low[n].float() - full[n].float() if n in low else full[n].float() for n in members])
            floor = experts_norm if group in ("base", "method") else 0.0
            errors[group] = max(errors.get(group, 0.0), diff / max(_norm([full[n] for n in members]), floor, 1e-30))
    return errors


@dataclass
class PrecisionErrors:
    """Relative errors of a low-precision pass against float32 (see the module docstring), in
    units of ``eps``; ``finite``: every output and gradient of the low-precision pass is finite."""

    method: str
    experts: str
    dtype: torch.dtype
    seed: int
    output: float
    merge: float | None
    gradients: dict[str, float]
    finite: bool
    routing_changes: int  # groups (tokens for smoe) whose top-k or top-1 experts differ from float32's, over all layers

    @property
    def eps(self) -> float:
        return torch.finfo(self.dtype).eps

    def in_eps(self) -> dict[str, float | None]:
        """Every error divided by the dtype's epsilon."""
        row: dict[str, float | None] = {"output": self.output / self.eps, "merge": None if self.merge is None else self.merge / self.eps}
        row.update({group: value / self.eps for group, value in self.gradients.items()})
        return row


def precision_errors(method: str, experts: str, dtype: torch.dtype, *, shape: StackShape = StackShape(),
                     relative_difference: float = 0.01, seed: int = 0, device: torch.device | str = "cpu") -> PrecisionErrors:
    """Run ``method``'s stack in float32 and under ``dtype`` autocast; compare (module docstring)."""
    device = torch.device(device)
    layers = method_stack(method, experts, shape, relative_difference, seed, device)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(shape.batch, shape.seq_len, shape.d_model, generator=generator).to(device)
    probe = torch.randn(shape.batch, shape.seq_len, shape.d_model, generator=generator).to(device)
    full = run_stack(layers, x, probe, None)
    low = run_stack(layers, x, probe, dtype)
    finite = bool(torch.isfinite(low.output).all()) and all(bool(torch.isfinite(g).all()) for g in low.grads.values())
    return PrecisionErrors(
        method, experts, dtype, seed, _relative(low.output, full.output), merge_error(low.merged, full.merged, dtype),
        gradient_errors(low.grads, full.grads), finite,
        sum(int((a != b).any(-1).sum()) for a, b in zip(low.decisions, full.decisions)),
    )


def comparable_errors(method: str, experts: str, dtype: torch.dtype, *, seeds: int = 5, device: torch.device | str = "cpu") -> PrecisionErrors:
    """:func:`precision_errors` for the first of ``seeds`` seeds whose low-precision pass routes
    exactly as the float32 pass (the last seed's if none does): where the tolerances apply."""
    for seed in range(seeds):
        errors = precision_errors(method, experts, dtype, seed=seed, device=device)
        if errors.routing_changes == 0:
            break
    return errors


def tolerance(method: str, experts: str, quantity: str) -> float:
    """The stated tolerance, in units of eps, of one quantity of :class:`PrecisionErrors`."""
    adds_outputs = get_method(method).pooling_units[0] == "token"
    if quantity == "router" and experts == "upcycled" and adds_outputs:
        return OUTPUT_SPACE_ROUTER_TOLERANCE
    return TOLERANCES[quantity]


def violations(errors: PrecisionErrors) -> list[str]:
    """What is outside the stated tolerances (empty when all is within them); a pass that
    routes differently from float32 is checked for finiteness only."""
    found = [] if errors.finite else ["non-finite outputs or gradients"]
    if errors.routing_changes:
        return found
    for quantity, value in errors.in_eps().items():
        limit = tolerance(errors.method, errors.experts, quantity)
        if value is not None and not value <= limit:
            found.append(f"{quantity} {value:.2g} eps > {limit:g} eps")
    return found
