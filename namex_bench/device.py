"""Choosing the device and the precision a run computes in.

``precision`` (a suite's field, ``bench layers --precision``): ``auto`` is bf16 autocast
on GPUs that support it and float32 elsewhere (CPUs, GPUs without bf16); ``bf16`` and
``fp16`` force autocast to that type (on a CPU too: torch's CPU autocast); ``fp32`` turns
it off. Weights, optimiser state and the merge stay float32 in every case.
"""

from __future__ import annotations

from typing import Any

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` → the first CUDA GPU if there is one, else the CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype: bf16 on GPUs that support it (``"auto"``), none on CPU or with ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def precision_config(device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
    """What a run's numbers depend on besides its configuration — part of its record and key:
    ``autocast`` (``"bfloat16"``, ``"float16"`` or ``None``), ``float32_matmul`` (torch's
    float32 matmul precision: ``"highest"`` unless lowered) and, on CUDA, whether float32
    matmuls and convolutions may use TF32."""
    config: dict[str, Any] = {
        "autocast": None if dtype is None else str(dtype).removeprefix("torch."),
        "float32_matmul": torch.get_float32_matmul_precision(),
    }
    if device.type == "cuda":
        config["tf32"] = {"matmul": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn": bool(torch.backends.cudnn.allow_tf32)}
    return config


def describe_precision(config: dict[str, Any] | None) -> str:
    """A precision config in words: ``"bf16 autocast"``, ``"float32"``, ``"float32 (TF32 convolutions)"``, …"""
    if not config:
        return "not recorded"
    words = {"bfloat16": "bf16 autocast", "float16": "fp16 autocast"}.get(config.get("autocast"), "float32")
    notes = []
    if config.get("float32_matmul", "highest") != "highest":
        notes.append(f"float32 matmul precision {config['float32_matmul']}")
    tf32 = config.get("tf32") or {}
    notes += [f"TF32 {what}" for key, what in (("matmul", "matmuls"), ("cudnn", "convolutions")) if tf32.get(key)]
    return words + (f" ({', '.join(notes)})" if notes else "")
