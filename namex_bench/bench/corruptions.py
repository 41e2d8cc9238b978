"""``namex-bench bench corruptions``: images per second per corruption, reference vs engine.

For each corruption, ``images`` photographs (the colour test images bundled with
scikit-image, square crops resized to ``size``²) are corrupted at every severity
(``images × 5`` corruptions per candidate) by

* the reference — ``np.random.seed`` then ``imagecorruptions.corrupt`` (made runnable
  by :mod:`namex_bench.corruptions.compat`), serially, as a user runs it;
* the engine on one core — :func:`namex_bench.corruptions.corrupt`, serially;
* the engine on all cores — the same calls spread over a warm process pool, chunked
  as :class:`~namex_bench.corruptions.CorruptionCache` computes a dataset.

Throughputs are images per second; speed-ups are over the reference. ``identical``
says whether the engine's outputs equal the reference's bit for bit (the reference's
``impulse_noise`` is unseeded, so it is reported as the fraction of values that differ).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from ..corruptions.cache import _init_worker, process_context
from ..corruptions.engine import ALL_CORRUPTIONS, DETERMINISTIC_REFERENCE, SEVERITIES, corrupt, image_seed, reference_corrupt

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def bench_images(n: int, size: int) -> np.ndarray:
    """``[n, size, size, 3]`` uint8: square crops of scikit-image's bundled photographs, resized."""
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = min(h, w) * (1.0 - 0.15 * ((i // len(photos)) % 4)) // 1
        top, left = int((h - side) // 2), int((w - side) // 2)
        crop = Image.fromarray(photo[top : top + int(side), left : left + int(side)])
        out.append(np.asarray(crop.resize((size, size), Image.BICUBIC)))
    return np.stack(out)


def corrupt_items(images: np.ndarray, name: str, severities: list[int], seeds: list[int]) -> np.ndarray:
    """``corrupt(images[i], name, severities[i], seeds[i])`` for each ``i`` (a pool task)."""
    return np.stack([corrupt(x, name, int(s), int(seed)) for x, s, seed in zip(images, severities, seeds)])


def run_corruption_bench(
    size: int = 224,
    images: int = 8,
    names: tuple[str, ...] | list[str] | None = None,
    workers: int | None = None,
) -> tuple[list[dict], str]:
    """Time every corruption; returns one row per corruption and a description of the setup."""
    names = tuple(names or ALL_CORRUPTIONS)
    workers = workers or os.cpu_count() or 1
    photos = bench_images(images, size)
    items = [(i, s) for s in SEVERITIES for i in range(images)]
    batch = np.stack([photos[i] for i, _ in items])
    severities = [s for _, s in items]
    seeds = [image_seed(0, k) for k in range(len(items))]
    chunk = max(1, math.ceil(len(items) / (4 * workers)))

    rows = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=_init_worker) as pool:
        # Warm the workers (imports, OpenCV/scikit-image first calls) before any timing.
        list(pool.map(corrupt_items, [batch[:1]] * workers, ["contrast"] * workers, [[1]] * workers, [[0]] * workers))
        for name in names:
            corrupt(photos[0], name, 1, 0)  # first-call costs out of the timings
            reference_corrupt(photos[0], name, 1, 0)

            start = time.perf_counter()
            reference = [reference_corrupt(x, name, s, seed) for x, s, seed in zip(batch, severities, seeds)]
            t_ref = time.perf_counter() - start

            start = time.perf_counter()
            serial = [corrupt(x, name, s, seed) for x, s, seed in zip(batch, severities, seeds)]
            t_one = time.perf_counter() - start

            start = time.perf_counter()
            futures = [
                pool.submit(corrupt_items, batch[a : a + chunk], name, severities[a : a + chunk], seeds[a : a + chunk])
                for a in range(0, len(items), chunk)
            ]
            parallel = np.concatenate([f.result() for f in futures])
            t_all = time.perf_counter() - start

            reference, serial = np.stack(reference), np.stack(serial)
            if not np.array_equal(serial, parallel):
                raise RuntimeError(f"{name}: the engine's outputs differ between one process and the pool")
            if name in DETERMINISTIC_REFERENCE:
                identical = "yes" if np.array_equal(serial, reference) else f"NO ({np.mean(serial != reference):.1%} differ)"
            else:
                identical = f"seeded ({np.mean(serial != reference):.0%} differ)"
            n = len(items)
            rows.append(
                {
                    "corruption": name,
                    "reference img/s": round(n / t_ref, 1),
                    "engine 1 core": round(n / t_one, 1),
                    f"engine {workers} cores": round(n / t_all, 1),
                    "speed-up 1 core": round(t_ref / t_one, 2),
                    "speed-up all": round(t_ref / t_all, 2),
                    "identical": identical,
                }
            )
    import platform

    setup = (
        f"{images} photographs × severities 1–5 = {len(items)} images of {size}×{size}×3 per corruption; "
        f"reference = np.random.seed + imagecorruptions.corrupt (with namex_bench's compatibility layer), serial; "
        f"engine on 1 core, and over a warm pool of {workers} processes (chunks of {chunk}); "
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    return rows, setup
