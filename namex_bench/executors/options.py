"""The command line's cluster options: parsed, then laid over a suite's ``cluster:`` defaults."""

from __future__ import annotations

import math
import re
from typing import Any

from ..suite.schema import ClusterDefaults

_MEM = re.compile(r"^(?P<value>\d+(\.\d+)?)\s*(?P<unit>[KMGT]?)B?$", re.IGNORECASE)
_UNIT_GB = {"": 1.0, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}
_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<rest>\d+(?::\d+){0,2})$")


def parse_mem(text: str) -> float:
    """``"64G"``, ``"64GB"``, ``"500M"``, ``"1.5T"`` or a number of GB → GB."""
    match = _MEM.match(text.strip())
    if not match:
        raise ValueError(f"--mem: expected a size such as 64G, 500M or 1.5T, got {text!r}")
    return float(match["value"]) * _UNIT_GB[match["unit"].upper()]


def parse_time(text: str) -> int:
    """A time limit in SLURM's formats — ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S`` — in whole minutes (rounded up)."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"--time: expected minutes or SLURM's [D-]H:M:S, got {text!r}")
    parts = [int(p) for p in match["rest"].split(":")]
    if match["days"] is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
        total_s = ((int(match["days"]) * 24 + hours) * 60 + minutes) * 60 + seconds
    elif len(parts) == 1:
        total_s = parts[0] * 60
    elif len(parts) == 2:  # M:S
        total_s = parts[0] * 60 + parts[1]
    else:  # H:M:S
        total_s = (parts[0] * 60 + parts[1]) * 60 + parts[2]
    if total_s <= 0:
        raise ValueError(f"--time must be positive, got {text!r}")
    return math.ceil(total_s / 60)


def cluster_options(defaults: ClusterDefaults, **overrides: Any) -> ClusterDefaults:
    """``defaults`` with every override that is not ``None``."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return ClusterDefaults.model_validate({**defaults.model_dump(), **given})
