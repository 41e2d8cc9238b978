"""C4 documents, the calibration text of the expert-compression references.

REAP, HC-SMoE and MC-SMoE calibrate on the English C4 training set's first shard,
``en/c4-train.00000-of-01024.json.gz`` of the hub dataset ``allenai/c4`` (356,317 documents,
one JSON object per line with a ``text`` field). :func:`load_c4` reads that shard through
``datasets`` (it needs the hub or the ``datasets`` cache), or a local copy: the shard's file
itself (``.json`` / ``.json.gz`` lines with ``text``) or a ``save_to_disk`` folder of it.
"""

from __future__ import annotations

from pathlib import Path

from .archives import DataUnavailableError

C4_HUB_ID = "allenai/c4"
C4_SHARD = "en/c4-train.00000-of-01024.json.gz"


def load_c4(path: str | Path | None = None) -> list[str]:
    """The documents of C4's first English training shard (or of the local copy ``path``), in file order."""
    import datasets

    if path is not None:
        path = Path(path)
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            loaded = loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded
        elif path.is_file():
            loaded = datasets.load_dataset("json", data_files=str(path), split="train")
        else:
            raise FileNotFoundError(f"C4 copy {path} does not exist")
        if "text" not in loaded.column_names:
            raise ValueError(f"{path}: the C4 copy has no `text` column (it has {', '.join(loaded.column_names)})")
        return list(loaded["text"])
    try:
        loaded = datasets.load_dataset(C4_HUB_ID, data_files={"train": C4_SHARD}, split="train")
    except (ConnectionError, OSError) as exc:
        raise DataUnavailableError(
            f"C4 ({C4_HUB_ID}, {C4_SHARD}) could not be loaded from the hub: {type(exc).__name__}: {exc}\n"
            "It needs network access to huggingface.co (or a datasets cache that already holds it), or `path:` to a local copy "
            "of that file. Offline calibration texts: shakespeare, kjv"
        ) from exc
    return list(loaded["text"])
