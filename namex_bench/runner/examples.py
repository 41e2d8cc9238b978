"""The per-example sidecar of a run record: ``runs/<key>.examples.npz``.

A NumPy ``.npz`` archive with one array per evaluation set and field, named
``<set>/<field>`` (``test/correct``, ``corruptions/fog/3/correct``, ``lm_eval/arc_easy/acc``).
Its bytes are a function of the arrays alone (entries sorted, fixed timestamps, deflate),
so rerunning a run that reproduces its outcomes reproduces the file. It is written
atomically before the record, and the record holds::

    "examples": {"file": "<key>.examples.npz", "sha256": "…",
                 "sets": {"test": 1000, …},                      # examples per set
                 "metrics": {"top1": {"sets": ["test"], "score": "correct", "link": "identity"}, …}}

A record without ``examples`` (written before sidecars existed, or by a task without
per-example outcomes) is still a complete record; its statistics are seed-level only.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .records import runs_dir, write_bytes_atomic

__all__ = ["SUFFIX", "ExamplesError", "decode_examples", "encode_examples", "examples_path", "read_examples", "write_examples"]

SUFFIX = ".examples.npz"
_EPOCH = (1980, 1, 1, 0, 0, 0)


class ExamplesError(ValueError):
    """A sidecar is missing, damaged, or not the one its record names."""


def examples_path(results_root: Path, suite: str, key: str) -> Path:
    return runs_dir(results_root, suite) / f"{key}{SUFFIX}"


def encode_examples(sets: dict[str, dict[str, np.ndarray]]) -> bytes:
    """The ``.npz`` bytes of ``{set: {field: array}}``: deterministic (sorted entries, fixed times)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(f"{s}/{f}" for s, fields in sets.items() for f in fields):
            set_name, _, field_name = name.rpartition("/")
            array = np.ascontiguousarray(sets[set_name][field_name])
            if array.dtype.hasobject:
                raise ValueError(f"{name}: object arrays cannot be stored (use numbers or fixed-width strings)")
            data = io.BytesIO()
            np.lib.format.write_array(data, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data.getvalue())
    return buffer.getvalue()


def decode_examples(data: bytes) -> dict[str, dict[str, np.ndarray]]:
    """``{set: {field: array}}`` from ``.npz`` bytes."""
    sets: dict[str, dict[str, np.ndarray]] = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        for name in archive.files:
            set_name, _, field_name = name.rpartition("/")
            sets.setdefault(set_name, {})[field_name] = archive[name]
    return sets


def write_examples(path: Path, sets: dict[str, dict[str, np.ndarray]], metrics: dict[str, Any]) -> dict[str, Any]:
    """Write the sidecar atomically; return the record's ``examples`` field."""
    data = encode_examples(sets)
    write_bytes_atomic(path, data)
    return {
        "file": Path(path).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sets": {name: int(len(fields["id"])) for name, fields in sorted(sets.items())},
        "metrics": metrics,
    }


def read_examples(directory: Path, record: dict[str, Any]) -> dict[str, dict[str, np.ndarray]] | None:
    """The sidecar a record names, checked against its sha256; ``None`` when the record names none.

    :class:`ExamplesError` (naming the file) when it is missing, damaged or another run's.
    """
    spec = record.get("examples")
    if not spec:
        return None
    try:
        path = Path(directory) / str(spec["file"])
        expected = str(spec["sha256"])
    except (KeyError, TypeError):
        raise ExamplesError(f"run record {record.get('key')}: its `examples` field names no file and sha256") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExamplesError(f"{path}: cannot read the per-example sidecar ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise ExamplesError(f"{path}: sha256 differs from its record's; the sidecar is damaged or another run's")
    try:
        return decode_examples(data)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ExamplesError(f"{path}: not a readable .npz archive ({exc})") from None
