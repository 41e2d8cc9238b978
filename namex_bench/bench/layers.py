"""``namex-bench bench layers``: forward+backward time of one MoE layer per method.

Every method's layer and a dense FFN of the same shape (``d → d_hidden → d``) run the
same batch, interleaved round by round; the table gives the median time, the tokens
(``B·T``) per second it stands for, and its ratio to the dense FFN and to the SMEAR layer.
On a GPU (``--device cuda``) the step runs under bf16 autocast where the GPU supports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..methods.registry import available_methods
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


def run_layer_bench(cfg: LayerBenchConfig, device: torch.device, autocast_dtype: torch.dtype | None) -> tuple[list[dict], str]:
    """Time every method; returns one row per candidate and a description of the setup."""
    torch.manual_seed(cfg.seed)
    spec = ExpertSpec(cfg.d_model, cfg.d_hidden or 4 * cfg.d_model, kind=cfg.kind, activation="gelu" if cfg.kind == "mlp" else "silu")
    methods = cfg.methods or tuple(available_methods())
    x = torch.randn(cfg.batch, cfg.seq_len, cfg.d_model, device=device)
    modules: dict[str, nn.Module] = {"dense FFN": DenseFFN(spec)}
    for name in methods:
        modules[name] = MoELayer(spec, cfg.experts, name)
    for m in modules.values():
        m.to(device).train()

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
    setup = (
        f"B={cfg.batch}, T={cfg.seq_len}, d={cfg.d_model}, d_hidden={spec.d_hidden}, N={cfg.experts}, "
        f"{cfg.kind} experts, default pooling/top-k per method, median of {cfg.repeats} interleaved rounds; "
        f"{machine_description(device)}" + (f", autocast {autocast_dtype}" if autocast_dtype else ", float32")
    )
    return rows, setup
