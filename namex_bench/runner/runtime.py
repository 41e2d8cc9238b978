"""Thread counts and determinism: set from a suite's ``runtime`` before its runs, restored
after them, and described in every record.

The same run gives the same numbers only on the same stack (torch, CPU kernels) with the
same thread count: on a CPU the intra-op threads split reductions and matrix products
differently, and five epochs of training turn the last bits into a different model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from ..suite.schema import Runtime

#: cuBLAS's workspace setting that makes its results deterministic (CUDA ≥ 10.2), set when unset.
CUBLAS_DETERMINISTIC = ":4096:8"


def blas_threads() -> list[dict[str, Any]]:
    """The BLAS and OpenMP thread pools loaded in this process (threadpoolctl): library,
    API and threads, sorted."""
    from threadpoolctl import threadpool_info

    pools = [
        {"library": os.path.basename(p.get("filepath", "")), "api": p.get("internal_api"), "threads": p.get("num_threads")}
        for p in threadpool_info()
    ]
    return sorted(pools, key=lambda p: (str(p["api"]), p["library"]))


def describe_runtime() -> dict[str, Any]:
    """What decides a run's numbers besides its config and packages: threads, determinism
    switches, the CPU kernels torch dispatches to (``ATEN_CPU_CAPABILITY`` lowers them)."""
    cudnn = torch.backends.cudnn
    return {
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(), "blas": blas_threads()},
        "deterministic": {
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": cudnn.deterministic,
            "cudnn_benchmark": cudnn.benchmark,
            "cudnn_allow_tf32": cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


@contextmanager
def applied(runtime: Runtime) -> Iterator[None]:
    """``runtime``'s threads and determinism for the duration; the previous settings after.

    ``threads``: ``torch.set_num_threads`` and, through threadpoolctl, every BLAS/OpenMP pool
    (NumPy's and SciPy's too). ``deterministic``: ``torch.use_deterministic_algorithms(True,
    warn_only=True)`` (an op without a deterministic implementation warns), cuDNN deterministic
    without benchmarking, and ``CUBLAS_WORKSPACE_CONFIG`` when unset."""
    from threadpoolctl import threadpool_limits

    cudnn = torch.backends.cudnn
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic, cudnn.benchmark)
    with ExitStack() as stack:
        if runtime.threads is not None:
            stack.enter_context(threadpool_limits(limits=runtime.threads))
            torch.set_num_threads(runtime.threads)
        if runtime.deterministic and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
            stack.callback(os.environ.pop, "CUBLAS_WORKSPACE_CONFIG", None)
        torch.use_deterministic_algorithms(runtime.deterministic, warn_only=True)
        cudnn.deterministic = runtime.deterministic
        if runtime.deterministic:
            cudnn.benchmark = False
        try:
            yield
        finally:
            threads, algorithms, warn_only, cudnn.deterministic, cudnn.benchmark = saved
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
