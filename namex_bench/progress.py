"""Progress: tqdm bars on a terminal, periodic whole lines in a log.

On a terminal (stderr is a tty) loops show tqdm bars. When stderr is a file or a pipe
(``namex-bench run … > log 2>&1``, a batch job) tqdm's bars would show nothing
(``disable=None``) or a soup of carriage returns; there a :class:`LogProgress` prints whole
lines — count, elapsed time, rate and ETA — at most once a minute (``LOG_INTERVAL_S``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 60.0
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LogProgress:
    """A line ``desc: 12/56 [03:10<11:00, 15.9s/run, postfix]`` to stderr when at least
    ``interval`` seconds have passed since the last one (checked at each update); with
    ``leave`` also one when it starts and one when it closes. The same calls as tqdm's."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 leave: bool = False, interval: float | None = None):
        self.iterable = iterable
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total  # type: ignore[arg-type]
        self.desc, self.unit, self.leave = desc, unit, leave
        self.interval = LOG_INTERVAL_S if interval is None else interval
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = time.monotonic()
        self.shown_n: int | None = None
        if leave:
            self._line()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._line()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.leave and self.shown_n != self.n:
            self._line()
        self.closed = True

    def _line(self) -> None:
        self.last = time.monotonic()
        self.shown_n = self.n
        meter = tqdm.format_meter(self.n, self.total, self.last - self.start, prefix=self.desc, unit=self.unit,
                                  postfix=self.postfix or None, bar_format=LINE_FORMAT if self.total else None)
        print(meter, file=sys.stderr, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = False, enabled: bool = True) -> Any:
    """A tqdm bar over ``iterable`` (or one updated by hand up to ``total``) on a terminal, a
    :class:`LogProgress` when stderr is not one, nothing shown when not ``enabled`` (e.g. on
    ranks other than 0)."""
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, leave=leave)
