"""Checks that data paths exist, which a suite can switch off to be validated without its data.

The schemas of suites and of model parameters call :func:`require_dir` / :func:`require_file`
for every path they hold; inside :func:`without_data_checks` (``namex-bench validate SUITE
--no-data``) these check nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_CHECK_DATA = ContextVar("namex_bench_check_data", default=True)


@contextmanager
def without_data_checks() -> Iterator[None]:
    """Within the block, :func:`require_dir` and :func:`require_file` check nothing."""
    token = _CHECK_DATA.set(False)
    try:
        yield
    finally:
        _CHECK_DATA.reset(token)


def checking_data() -> bool:
    return _CHECK_DATA.get()


def require_dir(path: Path, what: str = "directory") -> None:
    """A ValueError ``"<what> <path> does not exist"`` unless ``path`` is a directory (or data checks are off)."""
    if checking_data() and not Path(path).is_dir():
        raise ValueError(f"{what} {path} does not exist")


def require_file(path: Path, what: str = "file") -> None:
    """A ValueError ``"<what> <path> does not exist"`` unless ``path`` is a file (or data checks are off)."""
    if checking_data() and not Path(path).is_file():
        raise ValueError(f"{what} {path} does not exist")
