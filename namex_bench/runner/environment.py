"""The environment a run executed in, for its record."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import torch

from .runtime import describe_runtime

PACKAGES = ("namex_bench", "torch", "torchvision", "timm", "transformers", "lm_eval", "datasets", "numpy", "imagecorruptions")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None


def project_root() -> Path:
    """The folder that holds the ``namex_bench`` package: the checkout in a development install."""
    return Path(__file__).resolve().parents[2]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=10)


def git_state() -> tuple[str | None, list[str]]:
    """``(commit, changes)``: the project's git commit (``None`` outside a checkout) and its
    uncommitted changes — modified or untracked files (``git status --porcelain`` lines)
    anywhere but under ``results/``, which runs write."""
    try:
        head = _git("rev-parse", "--show-toplevel", "HEAD")
        lines = head.stdout.split()
        if head.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != project_root():
            return None, []  # not a checkout of this project (e.g. installed inside some other repository)
        status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".", ":(exclude)results")
        return lines[1], [line for line in status.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return None, []


def cpu_model() -> str | None:
    """The processor's name (``/proc/cpuinfo``'s model name on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def describe_environment(device: torch.device, world_size: int = 1) -> dict:
    """Packages, device, threads and determinism switches (:func:`describe_runtime`), and the
    project's commit with ``git_dirty`` (uncommitted changes outside ``results/``)."""
    commit, changes = git_state()
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "cpu": cpu_model(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "world_size": world_size,
        "git_commit": commit,
        "git_dirty": bool(changes) if commit is not None else None,
        **describe_runtime(),
    }
    return env
