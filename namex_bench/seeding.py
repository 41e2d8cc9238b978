"""Paired seeds: every random component drawn from its own stream, keyed on ``(seed, component)``.

Two runs that differ only in their method must get identical non-method parameters
(embeddings, attention, heads, routers, experts, upcycling noise) and the same data order,
augmentation and dropout masks. A shared stream cannot give that: a method that draws one
more tensor (a base expert per layer, say) shifts everything drawn after it. So each
component — ``"backbone"``, ``"head"``, ``"moe3.router"``, ``"moe3.upcycle_noise"``,
``"moe3.forward"`` … — is drawn from a generator seeded by

    component_seed(seed, component) = first 63 bits of sha256(f"{seed}/{component}")

which does not depend on what else was drawn, or in which order. The runner passes every
builder the run's seed; a builder called with ``seed=None`` (the default, for library use after
``torch.manual_seed``) draws from torch's global generator as before, unpaired.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def component_seed(seed: int, component: str) -> int:
    """The seed of ``component``'s own stream for the run seed ``seed`` (a 63-bit integer)."""
    digest = hashlib.sha256(f"{int(seed)}/{component}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def component_generator(seed: int | None, component: str, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded for ``(seed, component)`` (``None`` for ``seed=None``:
    torch's global generator)."""
    return None if seed is None else torch.Generator(device=device).manual_seed(component_seed(seed, component))


@contextmanager
def seeded(seed: int | None, component: str, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's global generators (the CPU's, and ``device``'s when it is a
    GPU) seeded for ``(seed, component)``, and restore them afterwards: the block's draws
    neither depend on nor change the stream outside it. ``seed=None`` runs the block as it is.

    For code that draws from the global generator and takes no ``generator=`` argument:
    ``timm``/``transformers`` initialisation, ``nn.Dropout``, ``torch.randn_like``.
    """
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else None
    gpu = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpu, device_type="cuda"):
        value = component_seed(seed, component)
        torch.random.default_generator.manual_seed(value)
        if gpu:
            with torch.cuda.device(gpu[0]):
                torch.cuda.manual_seed(value)
        yield
