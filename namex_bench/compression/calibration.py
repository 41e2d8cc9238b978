"""The calibration pass: what one-shot compression methods measure at each sparse MoE block.

The model reads calibration windows (``[S, L]`` token ids) in batches; a forward pre-hook on
every sparse block (:mod:`~namex_bench.compression.blocks`) takes the block's input tokens
``x_t`` and accumulates, with the architecture's own routing (``top-k`` experts ``K(t)`` with
weights ``g_j(x_t)``) and its own expert computation ``f_j``:

==================  ===================================================  ====================
``frequency[j]``    ``|{t : j ∈ K(t)}|`` — tokens routed to expert j       MC-SMoE, REAP, all
``gate_sum[j]``     ``Σ_{t: j∈K(t)} g_j(x_t)``                             (reported)
``reap_sum[j]``     ``Σ_{t: j∈K(t)} g_j(x_t) · ‖f_j(x_t)‖₂``               REAP
``logit_gram``      ``Σ_t l_t l_tᵀ`` of the router logits ``l_t ∈ R^N``    M-SMoE's similarity
``output_sum[j]``   ``Σ_{t∈O} f_j(x_t)`` over a random subset ``O`` of      HC-SMoE's features
                    the tokens, every expert on every token of ``O``
==================  ===================================================  ====================

so :attr:`LayerCalibration.reap_saliency` is REAP's ``S_j = (1/|X_j|) Σ_{x∈X_j} g_j(x)‖f_j(x)‖``
over the tokens ``X_j`` routed to ``j``, and :attr:`LayerCalibration.output_mean` HC-SMoE's
``(1/|O|) Σ_{t∈O} f_j(x_t)``.

**Memory is bounded, whatever the number of calibration tokens.** Nothing per token is kept:
the state of a block is ``N·H + N² + 3N`` float64 numbers (Qwen1.5-MoE-A2.7B, ``N = 60``,
``H = 2048``: 1 MB per block, 24 MB for the model). The transient work of one batch is the
block's input ``[T, H]`` (which the model holds anyway) plus expert outputs of at most
``chunk_rows`` rows at a time — ``chunk_rows × H`` outputs and the experts' ``chunk_rows × 2I``
hidden activations (``chunk_rows = 8192`` at that shape: 64 MB + 92 MB in float32). The
references' observers instead hold every expert's output for every token of a batch,
``N × T × H`` (REAP's ``activations`` buffer; 2 × 2048-token sequences of Qwen1.5-MoE:
2 GB per block). Every expert runs on ``output_tokens`` tokens per batch (a seeded random
subset; default 512), the routed experts on every token (as in the model's own forward), so
the cost is about ``1 + output_tokens·N/(T·k)`` forward passes of the MoE layers.
``namex-bench bench calibration`` measures tokens/s and peak memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .blocks import SparseBlock, find_sparse_blocks


@dataclass
class LayerCalibration:
    """What the calibration pass measured at one sparse block (sums; see the module docstring)."""

    name: str
    num_experts: int
    hidden_size: int
    tokens: int = 0
    output_tokens: int = 0
    frequency: Tensor = field(default=None)  # type: ignore[assignment]
    gate_sum: Tensor = field(default=None)  # type: ignore[assignment]
    reap_sum: Tensor = field(default=None)  # type: ignore[assignment]
    logit_gram: Tensor = field(default=None)  # type: ignore[assignment]
    output_sum: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n, h = self.num_experts, self.hidden_size
        z = dict(dtype=torch.float64)
        self.frequency = torch.zeros(n, **z) if self.frequency is None else self.frequency
        self.gate_sum = torch.zeros(n, **z) if self.gate_sum is None else self.gate_sum
        self.reap_sum = torch.zeros(n, **z) if self.reap_sum is None else self.reap_sum
        self.logit_gram = torch.zeros(n, n, **z) if self.logit_gram is None else self.logit_gram
        self.output_sum = torch.zeros(n, h, **z) if self.output_sum is None else self.output_sum

    # ------------------------------------------------------------------ derived

    @property
    def usage(self) -> Tensor:
        """``frequency / tokens``: the fraction of tokens routed to each expert (sums to ``k``)."""
        return self.frequency / max(self.tokens, 1)

    @property
    def reap_saliency(self) -> Tensor:
        """REAP's ``S_j``: the mean of ``g_j(x)·‖f_j(x)‖`` over the tokens routed to ``j`` (0 if none)."""
        return torch.where(self.frequency > 0, self.reap_sum / self.frequency.clamp_min(1), torch.zeros_like(self.reap_sum))

    @property
    def output_mean(self) -> Tensor:
        """HC-SMoE's feature of each expert: its mean output over the sampled tokens, ``[N, H]``."""
        return self.output_sum / max(self.output_tokens, 1)

    @property
    def logit_cosine(self) -> Tensor:
        """Cosine similarity of the router-logit columns over the calibration tokens, ``[N, N]``:
        ``⟨l_i, l_j⟩ / (‖l_i‖ ‖l_j‖)`` with ``l_i = (l_{t,i})_t`` (M-SMoE's router-logit similarity)."""
        norms = self.logit_gram.diagonal().clamp_min(1e-30).sqrt()
        return self.logit_gram / (norms[:, None] * norms[None, :])

    def subset(self, experts: list[int] | Tensor) -> LayerCalibration:
        """The statistics of some of the experts (in the order given)."""
        idx = torch.as_tensor(experts, dtype=torch.long)
        return replace(
            self, num_experts=len(idx), frequency=self.frequency[idx], gate_sum=self.gate_sum[idx], reap_sum=self.reap_sum[idx],
            logit_gram=self.logit_gram[idx][:, idx], output_sum=self.output_sum[idx],
        )

    def to_record(self) -> dict[str, Any]:
        """The per-expert numbers as lists (for a run record)."""
        return {
            "layer": self.name, "experts": self.num_experts, "tokens": self.tokens, "output_tokens": self.output_tokens,
            "frequency": [int(v) for v in self.frequency.tolist()], "reap_saliency": [round(v, 6) for v in self.reap_saliency.tolist()],
        }

    # ------------------------------------------------------------------ accumulation

    @torch.no_grad()
    def update(self, block: SparseBlock, x: Tensor, output_tokens: int | None, generator: torch.Generator, chunk_rows: int) -> None:
        """Add one batch of the block's input tokens ``x [T, H]``."""
        routing = block.route(x)
        t, k = routing.indices.shape
        n = self.num_experts
        experts = routing.indices.reshape(-1)
        gates = routing.weights.reshape(-1).double().cpu()
        rows = torch.arange(t, device=x.device).repeat_interleave(k)
        self.tokens += t
        self.frequency += torch.bincount(experts.cpu(), minlength=n).double()
        self.gate_sum.index_add_(0, experts.cpu(), gates)
        logits = routing.logits.double()
        self.logit_gram += (logits.T @ logits).cpu()
        for start in range(0, len(rows), chunk_rows):
            part = slice(start, start + chunk_rows)
            norms = block.expert_outputs(x[rows[part]], experts[part]).float().norm(dim=-1).double().cpu()
            self.reap_sum.index_add_(0, experts[part].cpu(), gates[part] * norms)
        sample = torch.randperm(t, generator=generator)[: output_tokens or t].to(x.device)
        xs = x[sample]
        per_chunk = max(1, chunk_rows // len(sample))
        for first in range(0, n, per_chunk):
            ids = torch.arange(first, min(n, first + per_chunk), device=x.device)
            out = block.expert_outputs(xs.repeat(len(ids), 1), ids.repeat_interleave(len(sample)))
            self.output_sum[ids.cpu()] += out.view(len(ids), len(sample), -1).double().sum(dim=1).cpu()
        self.output_tokens += len(sample)


@dataclass(frozen=True)
class CalibrationSettings:
    """How the pass runs: ``batch_size`` windows per forward pass; every expert's output on
    ``output_tokens`` random tokens per batch and block (``None``: all of them); at most
    ``chunk_rows`` expert-output rows at a time; ``seed`` for the token subsets."""

    batch_size: int = 8
    output_tokens: int | None = 512
    chunk_rows: int = 8192
    seed: int = 0


def _block_input(args: tuple, kwargs: dict) -> Tensor:
    x = args[0] if args else kwargs["hidden_states"]
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def calibrate(
    model: nn.Module, windows: Tensor, settings: CalibrationSettings = CalibrationSettings(), *, progress: bool = True
) -> list[LayerCalibration]:
    """Run ``model`` (a ``transformers`` MoE causal LM) on the calibration ``windows [S, L]``
    and return one :class:`LayerCalibration` per sparse block, in order.

    The backbone runs without its LM head (``model.base_model``; the head's ``[B, L, V]``
    logits are not needed), in eval mode, on the device of the model's parameters.
    """
    blocks = find_sparse_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no sparse MoE block (a module with routed `experts` and a `gate`/`router`)")
    if windows.dim() != 2 or windows.dtype != torch.long:
        raise ValueError(f"calibration windows must be a LongTensor [samples, length], got {windows.dtype} {tuple(windows.shape)}")
    device = next(model.parameters()).device
    hidden = model.config.hidden_size
    stats = [LayerCalibration(b.name, b.num_experts, hidden) for b in blocks]
    generators = [torch.Generator().manual_seed(settings.seed * 1_000_003 + i) for i in range(len(blocks))]

    def hook_for(i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            stats[i].update(blocks[i], _block_input(args, kwargs), settings.output_tokens, generators[i], settings.chunk_rows)

        return hook

    handles = [b.block.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, b in enumerate(blocks)]
    backbone = getattr(model, "base_model", model)
    was_training = model.training
    model.eval()
    try:
        batches = range(0, len(windows), settings.batch_size)
        for start in tqdm(batches, desc="calibration", unit="batch", leave=False, disable=not progress or None):
            backbone(input_ids=windows[start : start + settings.batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return stats
