"""``namex-bench bench layers``: forward+backward time of one MoE layer per method; with
``--eval``, its evaluation throughput.

Every method's layer and a dense FFN of the same shape (``d → d_hidden → d``) run the
same batch, interleaved round by round; the table gives the median time, the tokens
(``B·T``) per second it stands for, and its ratio to the dense FFN and to the SMEAR layer
(``--eval``: to the SMoE and SMEAR layers, with and without the evaluation cache).
On a GPU (``--device cuda``) the step runs under bf16 autocast where the GPU supports it.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from ..methods.registry import available_methods
from ..moe.eval_cache import MergeCache
from ..moe.experts import ExpertBank, ExpertSpec, dense_ffn
from ..moe.layer import MoELayer
from .timing import machine_description, time_interleaved


@dataclass
class LayerBenchConfig:
    batch: int = 8
    seq_len: int = 256
    d_model: int = 256
    d_hidden: int | None = None  # default 4 · d_model
    experts: int = 8
    kind: str = "mlp"
    methods: tuple[str, ...] = ()  # default: every registered method
    repeats: int = 20
    warmup: int = 3
    seed: int = 0


class DenseFFN(nn.Module):
    """The dense baseline: ``W_out · GELU(W_in x + b_in) + b_out`` (or its SwiGLU form)."""

    def __init__(self, spec: ExpertSpec):
        super().__init__()
        self.spec = spec
        self.bank = ExpertBank(spec, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dense_ffn(x, self.bank.expert(0), self.spec)


def _setup(cfg: LayerBenchConfig, device: torch.device) -> tuple[ExpertSpec, torch.Tensor, dict[str, nn.Module]]:
    """The shape, the batch ``x [B, T, d]``, and the dense FFN and every method's layer on ``device``."""
    torch.manual_seed(cfg.seed)
    spec = ExpertSpec(cfg.d_model, cfg.d_hidden or 4 * cfg.d_model, kind=cfg.kind, activation="gelu" if cfg.kind == "mlp" else "silu")
    methods = cfg.methods or tuple(available_methods())
    x = torch.randn(cfg.batch, cfg.seq_len, cfg.d_model, device=device)
    modules: dict[str, nn.Module] = {"dense FFN": DenseFFN(spec)}
    for name in methods:
        modules[name] = MoELayer(spec, cfg.experts, name)
    return spec, x, {name: m.to(device) for name, m in modules.items()}


def _describe(cfg: LayerBenchConfig, spec: ExpertSpec, device: torch.device, autocast_dtype: torch.dtype | None, what: str) -> str:
    return (
        f"{what}; B={cfg.batch}, T={cfg.seq_len}, d={cfg.d_model}, d_hidden={spec.d_hidden}, N={cfg.experts}, "
        f"{cfg.kind} experts, default pooling/top-k per method, median of {cfg.repeats} interleaved rounds; "
        f"{machine_description(device)}" + (f", autocast {autocast_dtype}" if autocast_dtype else ", float32")
    )


def run_layer_bench(cfg: LayerBenchConfig, device: torch.device, autocast_dtype: torch.dtype | None) -> tuple[list[dict], str]:
    """Time every method; returns one row per candidate and a description of the setup."""
    spec, x, modules = _setup(cfg, device)
    for m in modules.values():
        m.train()

    def step(module: nn.Module):
        def run():
            module.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = module(x)
                y, aux = (out, 0.0) if isinstance(out, torch.Tensor) else (out.y, out.aux_loss)
                loss = y.float().square().mean() + aux
            loss.backward()

        return run

    times = time_interleaved({n: step(m) for n, m in modules.items()}, device, cfg.repeats, cfg.warmup)
    dense, smear = times["dense FFN"], times.get("smear")
    rows = []
    for name, t in times.items():
        rows.append(
            {
                "layer": name,
                "fwd+bwd ms": round(t * 1e3, 3),
                "tokens/s": round(cfg.batch * cfg.seq_len / t),
                "× dense": round(t / dense, 3),
                "× smear": round(t / smear, 3) if smear else None,
            }
        )
    return rows, _describe(cfg, spec, device, autocast_dtype, "forward + backward")


def run_layer_eval_bench(cfg: LayerBenchConfig, device: torch.device, autocast_dtype: torch.dtype | None) -> tuple[list[dict], str]:
    """Evaluation throughput of every method (``bench layers --eval``): the forward pass alone, in
    eval mode, without autograd, inside a :class:`~namex_bench.moe.eval_cache.MergeCache` as the
    task runners evaluate — and, interleaved with it, the same pass without the cache. One row per
    candidate: tokens/s, its ratio to ``smoe``'s and to ``smear``'s (above 1: faster), and the
    speed-up the cache gives."""
    spec, x, modules = _setup(cfg, device)
    uncached = {name: copy.deepcopy(m).eval() for name, m in modules.items()}  # the same layers, without the cache

    def forward(module: nn.Module):
        def run():
            with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                module(x)

        return run

    candidates = {}
    for name, module in modules.items():
        candidates[name] = forward(module.eval())
        candidates[f"{name}, uncached"] = forward(uncached[name])
    with ExitStack() as stack:  # the caches stay entered over every round, as over an evaluation
        for module in modules.values():
            stack.enter_context(MergeCache(module))
        times = time_interleaved(candidates, device, cfg.repeats, cfg.warmup)
    rows = []
    tokens = cfg.batch * cfg.seq_len
    for name in modules:
        t, without = times[name], times[f"{name}, uncached"]
        rows.append(
            {
                "layer": name,
                "eval ms": round(t * 1e3, 3),
                "tokens/s": round(tokens / t),
                "tokens/s vs smoe": round(times["smoe"] / t, 3) if "smoe" in modules else None,
                "tokens/s vs smear": round(times["smear"] / t, 3) if "smear" in modules else None,
                "uncached ms": round(without * 1e3, 3),
                "cache speed-up": round(without / t, 3),
            }
        )
    return rows, _describe(cfg, spec, device, autocast_dtype, "evaluation: forward only, eval mode, no grad, parameter-only parts cached")
