"""The corrupted-dataset cache: each (dataset, image, corruption, severity, seed) computed once.

A suite evaluates many methods × models × training seeds on the same corrupted test
sets; the corruptions (``glass_blur`` alone costs ~0.7 s per 224² image in the
reference) are computed once and read back by every run. Use one corruption seed
for the whole suite, independent of the training seed, so every run shares it.

Layout (root: ``CorruptionCache(root)``, default ``$NAMEX_BENCH_CACHE/corruptions``)::

    <dataset_id>/<corruption>/s<severity>-seed<seed>-<key>.npy          uint8 [n, H, W(, C)]
    <dataset_id>/<corruption>/s<severity>-seed<seed>-<key>.npy.sha256   "<sha256>  <file name>" (sha256sum -c)
    <dataset_id>/<corruption>/s<severity>-seed<seed>-<key>.npy.lock     advisory lock while it is filled

``key`` is the first 20 hex digits of the sha256 of the canonical JSON of: the
dataset id, the sha256 of the input images (dtype, shape and bytes — a changed
dataset never hits a stale entry), the corruption, severity, seed, and
:func:`engine_fingerprint` (engine version and the versions of imagecorruptions,
NumPy, SciPy, scikit-image, OpenCV and Pillow).

Image ``i`` is corrupted with seed :func:`image_seed` ``(seed, i)``.

Integrity and concurrency: an entry is used only if its sidecar's sha256 matches
the file's bytes and it holds the expected shape and dtype; anything else is
recomputed and rewritten. Files are written to a temporary name in the same folder,
flushed to disk and renamed (``os.replace``): a reader never sees half a file. While
filling an entry a process holds an exclusive ``flock`` on its ``.lock`` file; a
second process asking for the same entry waits, then reads what the first wrote
(where ``flock`` is unavailable both compute, and since the engine is deterministic
both write the same bytes).

Corruption runs in parallel over chunks of images in a
:class:`~concurrent.futures.ProcessPoolExecutor` (``workers`` defaults to
``os.cpu_count()``; ``workers=1`` runs in this process), with a tqdm progress bar.
Workers are started by ``forkserver`` (``spawn`` where there is none), never ``fork``
(see :func:`process_context`); a cache keeps its pool between calls — ``close()`` it,
or use it as a context manager. Workers die with the process that started them (see
:func:`_init_worker`), and an interrupted computation (Ctrl-C, SIGTERM) cancels the
chunks not yet started instead of waiting for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import re
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ..files import atomic_file, exclusive_lock
from ..progress import progress as progress_bar
from .engine import ALL_CORRUPTIONS, SEVERITIES, corrupt, engine_fingerprint, image_seed


def images_sha256(images: np.ndarray) -> str:
    """sha256 of an image array's dtype, shape and C-order bytes."""
    digest = hashlib.sha256(f"{images.dtype.str}|{images.shape}|".encode())
    flat = np.ascontiguousarray(images).reshape(-1)
    step = max(1, (64 << 20) // max(flat.itemsize, 1))
    for start in range(0, flat.size, step):
        digest.update(memoryview(flat[start : start + step]))
    return digest.hexdigest()


def process_context() -> multiprocessing.context.BaseContext:
    """The start method of worker processes: ``forkserver`` where there is one, else ``spawn`` — never ``fork``.

    A process that has run OpenCV holds its thread pool; a child forked from it hangs
    in OpenCV's first call (the pool's condition variables were copied mid-use).
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _exit_with_parent() -> None:
    """In a worker: exit as soon as the process that started the pool is gone, even after a
    ``kill -9`` that gave it no chance to stop its workers.

    A daemon thread waits on :func:`multiprocessing.parent_process`'s sentinel — the process
    that asked for the worker, also under ``forkserver``, where the worker's OS parent is the
    fork server (so a parent-death signal would not do). Once the workers are gone, the fork
    server and the resource tracker, which live while any process holds their pipes, exit too.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait_then_exit() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=wait_then_exit, name="exit-with-parent", daemon=True).start()


def _init_worker() -> None:
    """Worker processes: die with their parent; one OpenCV thread each (the pool is the parallelism)."""
    _exit_with_parent()
    import cv2

    cv2.setNumThreads(1)


def corrupt_images(images: np.ndarray, name: str, severity: int, seeds: list[int]) -> np.ndarray:
    """``corrupt(images[i], name, severity, seeds[i])`` for each ``i``, stacked."""
    return np.stack([corrupt(image, name, severity, int(s)) for image, s in zip(images, seeds)])


def corrupt_dataset(
    images: np.ndarray,
    name: str,
    severity: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
) -> np.ndarray:
    """Every image corrupted (image ``i`` with ``image_seed(seed, i)``), in parallel over chunks.

    ``executor``: a pool to use (and keep); otherwise one of ``workers`` processes is
    started for this call, or none when ``workers == 1`` or there is one image.
    """
    n = len(images)
    seeds = [image_seed(seed, i) for i in range(n)]
    out = np.empty_like(images)
    bar = progress_bar(total=n, desc=f"{name} s{severity}", unit="img", enabled=progress)
    workers = workers or os.cpu_count() or 1
    try:
        if executor is None and (workers == 1 or n <= 1):
            for i in range(n):
                out[i] = corrupt(images[i], name, severity, seeds[i])
                bar.update(1)
            return out
        chunk = max(1, min(64, math.ceil(n / (4 * workers))))
        with contextlib.ExitStack() as stack:
            if executor is None:
                executor = stack.enter_context(
                    ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=_init_worker)
                )
            futures = {
                executor.submit(corrupt_images, images[a : a + chunk], name, severity, seeds[a : a + chunk]): a
                for a in range(0, n, chunk)
            }
            try:
                for future in as_completed(futures):
                    result = future.result()
                    a = futures[future]
                    out[a : a + len(result)] = result
                    bar.update(len(result))
            except BaseException:  # interrupted or failed: drop the chunks not started, do not wait for them
                for future in futures:
                    future.cancel()
                raise
        return out
    finally:
        bar.close()


def _safe_component(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._")
    return cleaned or "dataset"


class CorruptionCache:
    """On-disk, keyed, checksummed store of corrupted datasets (see the module docstring).

    Counters for callers and tests: ``hits`` (entries read back), ``computed``
    (entries computed), ``images_computed``, ``invalid`` (entries found corrupt or
    incomplete and recomputed); ``events`` lists ``(event, file name)`` in order.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            from ..data.archives import cache_root

            root = cache_root() / "corruptions"
        self.root = Path(root)
        self.hits = 0
        self.computed = 0
        self.images_computed = 0
        self.invalid = 0
        self.events: list[tuple[str, str]] = []
        self._executor: ProcessPoolExecutor | None = None
        self._executor_workers = 0

    # ----------------------------------------------------------------- keys and paths
    def key(
        self, dataset_id: str, images: np.ndarray, name: str, severity: int, seed: int, images_hash: str | None = None
    ) -> str:
        spec = {
            "dataset": dataset_id,
            "images_sha256": images_hash or images_sha256(images),
            "corruption": name,
            "severity": int(severity),
            "seed": int(seed),
            "engine": engine_fingerprint(),
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]

    def path(
        self, dataset_id: str, images: np.ndarray, name: str, severity: int, seed: int, images_hash: str | None = None
    ) -> Path:
        key = self.key(dataset_id, images, name, severity, seed, images_hash)
        return self.root / _safe_component(dataset_id) / name / f"s{int(severity)}-seed{int(seed)}-{key}.npy"

    # ----------------------------------------------------------------- public API
    def get_or_compute(
        self,
        dataset_id: str,
        images: np.ndarray,
        name: str,
        severity: int,
        seed: int,
        workers: int | None = None,
        progress: bool = True,
        images_hash: str | None = None,
    ) -> np.ndarray:
        """The corrupted images ``[n, H, W(, C)]`` uint8 — read from the cache, or computed once and stored.

        ``images_hash``: :func:`images_sha256` of ``images`` if the caller already has it
        (it is otherwise computed on every call).
        """
        if name not in ALL_CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(ALL_CORRUPTIONS)}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be an integer 1–5, got {severity!r}")
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"expected uint8 images [n, H, W] or [n, H, W, C], got {images.dtype} {images.shape}")
        path = self.path(dataset_id, images, name, severity, seed, images_hash)
        found = self._load(path, images.shape)
        if found is not None:
            return self._hit(path, found)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(path):
            found = self._load(path, images.shape, record_invalid=False)  # filled while we waited?
            if found is not None:
                return self._hit(path, found)
            executor = self._pool(workers) if (workers or os.cpu_count() or 1) > 1 and len(images) > 1 else None
            out = corrupt_dataset(images, name, severity, seed, workers=workers, progress=progress, executor=executor)
            self._store(path, out)
        self.computed += 1
        self.images_computed += len(out)
        self.events.append(("computed", path.name))
        return out

    def close(self, wait: bool = True) -> None:
        """Shut the worker pool down (it is kept between calls); ``wait=False`` does not wait
        for chunks in progress (the workers finish them and exit)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> CorruptionCache:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(wait=exc_type is None)

    # ----------------------------------------------------------------- internals
    def _hit(self, path: Path, array: np.ndarray) -> np.ndarray:
        self.hits += 1
        self.events.append(("hit", path.name))
        return array

    def _pool(self, workers: int | None) -> ProcessPoolExecutor:
        workers = workers or os.cpu_count() or 1
        if self._executor is None or self._executor_workers != workers:
            self.close()
            self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=_init_worker)
            self._executor_workers = workers
        return self._executor

    @staticmethod
    def _locked(path: Path):
        return exclusive_lock(path.with_name(path.name + ".lock"))

    def _load(self, path: Path, shape: tuple[int, ...], record_invalid: bool = True) -> np.ndarray | None:
        """The stored array if the entry is complete and intact, else ``None`` (counted as invalid if present)."""
        sidecar = path.with_name(path.name + ".sha256")
        if not path.exists():
            return None
        reason = None
        try:
            expected = sidecar.read_text().split()[0] if sidecar.exists() else None
            with open(path, "rb") as f:  # hash and parse the same open file
                digest = hashlib.sha256()
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                if expected is None:
                    reason = "no checksum"
                elif digest.hexdigest() != expected:
                    reason = "checksum mismatch"
                else:
                    f.seek(0)
                    array = np.lib.format.read_array(f, allow_pickle=False)
                    if array.shape != tuple(shape) or array.dtype != np.uint8:
                        reason = f"stored {array.dtype} {array.shape}, expected uint8 {tuple(shape)}"
        except (OSError, ValueError, IndexError) as exc:
            reason = f"unreadable ({exc})"
        if reason is None:
            return array
        if record_invalid:
            self.invalid += 1
            self.events.append((f"invalid: {reason}", path.name))
        return None

    def _store(self, path: Path, array: np.ndarray) -> None:
        """Write the ``.npy`` (hashing it as it streams out), then its sidecar; each atomically."""
        with atomic_file(path) as f:
            writer = _HashingWriter(f)
            np.lib.format.write_array(writer, np.ascontiguousarray(array), allow_pickle=False)
        with atomic_file(path.with_name(path.name + ".sha256")) as f:
            f.write(f"{writer.digest.hexdigest()}  {path.name}\n".encode())


class _HashingWriter:
    """A write-only file object that passes bytes on and keeps their sha256."""

    def __init__(self, f):
        self.f = f
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.f.write(data)
