"""``namex-bench bench calibration``: throughput and peak memory of the compression calibration pass.

A stand-in with Qwen1.5-MoE-A2.7B's MoE layer shape (hidden 2048, 60 routed experts of width
1408, top-4, a shared expert of width 5632; ``--layers`` decoder layers, a small vocabulary,
random weights) reads the same calibration windows three ways, side by side in one process:

* ``forward`` — the backbone alone, no statistics (the floor);
* ``namex_bench`` — :func:`~namex_bench.compression.calibration.calibrate`: running sums only,
  every expert on ``output_tokens`` tokens per batch, expert outputs in chunks of ``chunk_rows``
  rows;
* ``all outputs held`` — what the references' observers do: every expert's output on every token
  of the batch stacked into one ``[N, T, H]`` tensor before the statistics are taken.

The three run interleaved, round by round (median time of ``repeats`` rounds, the largest peak).
Peak memory is the increase over the model's own footprint while a candidate runs: on a GPU
``torch.cuda.max_memory_allocated``, on a CPU the process's resident set sampled every 2 ms.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

import torch

from ..compression.blocks import find_sparse_blocks
from ..compression.calibration import CalibrationSettings, calibrate
from .timing import machine_description, synchronize

#: Qwen1.5-MoE-A2.7B's MoE layer (its config.json).
QWEN15_MOE_LAYER = {
    "hidden_size": 2048, "moe_intermediate_size": 1408, "num_experts": 60, "num_experts_per_tok": 4,
    "shared_expert_intermediate_size": 5632, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 5632,
}


@dataclass
class CalibrationBenchConfig:
    layers: int = 1
    samples: int = 4
    seq_len: int = 512
    batch_size: int = 2
    output_tokens: int = 512
    chunk_rows: int = 8192
    vocab: int = 1024
    repeats: int = 3
    seed: int = 0
    layer: dict = field(default_factory=lambda: dict(QWEN15_MOE_LAYER))  # the MoE layer's shape (tests use a small one)


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator statistics, or the resident set sampled in a thread."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base, self._top, self._running = self._rss(), self._rss(), True

        def sample() -> None:
            while self._running:
                self._top = max(self._top, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._running = False
        self._thread.join()
        self.peak = max(self._top, self._rss()) - self._base


@torch.no_grad()
def hold_all_outputs(model, windows: torch.Tensor, batch_size: int) -> None:
    """The references' observer: per batch and block, ``[N, T, H]`` outputs of every expert on every token."""
    blocks = find_sparse_blocks(model)

    def hook_for(block):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            x = x.reshape(-1, x.shape[-1])
            n = block.num_experts
            outputs = torch.stack([block.expert_outputs(x, torch.full((x.shape[0],), j, device=x.device)) for j in range(n)])
            outputs.norm(dim=-1).sum()  # the statistics would be taken from the held tensor

        return hook

    handles = [b.block.register_forward_pre_hook(hook_for(b), with_kwargs=True) for b in blocks]
    try:
        for start in range(0, len(windows), batch_size):
            model.base_model(input_ids=windows[start : start + batch_size], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


def run_calibration_bench(cfg: CalibrationBenchConfig, device: torch.device, dtype: torch.dtype) -> tuple[list[dict], str]:
    """The table's rows and a one-line description of the setup."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(cfg.seed)
    config = AutoConfig.for_model("qwen2_moe", vocab_size=cfg.vocab, num_hidden_layers=cfg.layers, max_position_embeddings=max(4096, cfg.seq_len),
                                  **cfg.layer)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    windows = torch.randint(0, cfg.vocab, (cfg.samples, cfg.seq_len), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    tokens = cfg.samples * cfg.seq_len
    settings = CalibrationSettings(cfg.batch_size, cfg.output_tokens, cfg.chunk_rows, cfg.seed)

    def forward() -> None:
        with torch.no_grad():
            for start in range(0, len(windows), cfg.batch_size):
                model.base_model(input_ids=windows[start : start + cfg.batch_size], use_cache=False)

    candidates = {
        "forward (no statistics)": forward,
        "namex_bench calibrate": lambda: calibrate(model, windows, settings, progress=False),
        "all outputs held [N, T, H]": lambda: hold_all_outputs(model, windows, cfg.batch_size),
    }
    for fn in candidates.values():  # warm-up
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    peaks = dict.fromkeys(candidates, 0)
    for _ in range(cfg.repeats):  # interleaved rounds: drifts of the machine affect every pass alike
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            with PeakMemory(device) as memory:
                fn()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], memory.peak)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    base = median["forward (no statistics)"]
    rows = [{"pass": name, "tokens/s": round(tokens / median[name], 1), "× forward time": round(median[name] / base, 2),
             "peak memory above the model (MB)": round(peaks[name] / 2**20)} for name in candidates]
    n, h, i = cfg.layer["num_experts"], cfg.layer["hidden_size"], cfg.layer["moe_intermediate_size"]
    per_block = (n * h + n * n + 3 * n) * 8 / 2**20
    setup = (
        f"{machine_description(device)}, {dtype}; MoE layer N = {n} experts, H = {h}, I = {i}, top-{cfg.layer['num_experts_per_tok']}, shared "
        f"expert {cfg.layer['shared_expert_intermediate_size']} (Qwen1.5-MoE-A2.7B's: 60, 2048, 1408, top-4, 5632) × {cfg.layers} layer(s); {cfg.samples} windows × {cfg.seq_len} tokens, batch {cfg.batch_size}; median of {cfg.repeats} interleaved rounds; namex_bench: "
        f"output_tokens = {cfg.output_tokens}, chunk_rows = {cfg.chunk_rows}; its state per block: N·H + N² + 3N float64 = {per_block:.2f} MB; "
        f"held outputs per block and batch: N·T·H = {n * cfg.batch_size * cfg.seq_len * h * torch.finfo(dtype).bits // 8 / 2**20:.0f} MB"
    )
    return rows, setup
