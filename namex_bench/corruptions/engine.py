"""The corruption engine: ImageNet-C's 19 corruptions, seed-reproducible, any image size ≥ 28².

``corrupt(image, name, severity, seed)`` is the pip ``imagecorruptions`` 1.1.2
function of that name (Hendrycks & Dietterich 2019), run through the narrow
compatibility layer in :mod:`.compat`, with three things added:

**Reproducibility.** The reference draws from NumPy's *global* legacy generator
(``np.random.normal``, ``randint``, …). The engine seeds it with ``seed`` for the
call — ``np.random.seed(seed)`` — and restores the caller's global state afterwards,
under a lock (threads are serialised; parallelism is by processes, see
:mod:`.cache`). Two corruptions do not draw from that generator alone and are
computed here instead:

* ``impulse_noise`` — ``x' = clip(s&p(x/255, amount=c), 0, 1)·255`` where scikit-image's
  ``random_noise`` draws from its own generator (a fresh, unseeded one in the
  reference); here it gets ``rng=seed``. Same distribution, a different — seeded —
  random stream, so it cannot equal an unseeded reference call bit for bit; it
  equals the reference with ``random_noise``'s ``rng`` pinned to ``seed``.
* ``glass_blur`` — ``G_σ(shuffle(uint8(G_σ(x/255)·255)))/255`` clipped, ×255, with the
  local pixel shuffle: for ``t = 1…T``, for rows ``h = H−δ … δ+1`` and columns
  ``w = W−δ … δ+1`` (descending), draw ``(dx, dy) ∈ [−δ, δ)²`` and set
  ``x[h, w] ← x[h+dy, w+dx]``. (The reference writes a tuple swap, but on an RGB array
  its right-hand side holds views, so the effect is this one-way copy.) The draws
  are the same ``randint`` stream as the reference's; the shuffle is computed once
  on a flat index map (a Python list, not per-pixel NumPy indexing) and applied to
  all channels with one gather — bit-identical to the reference, ~50× faster at 224².

**Grayscale.** An ``H×W`` (or ``H×W×1``) image is stacked to three equal channels
— exactly what ``imagecorruptions.corrupt`` does — and the RGB result is turned back
into one channel:

* the per-channel noises (gaussian, shot, impulse, speckle) keep channel 0, which has
  exactly the reference's per-pixel noise distribution (a weighted mean of three
  independent channels would shrink the noise by a factor ≈ 0.67);
* every other corruption takes the ITU-R 601-2 luma ``L = (19595 R + 38470 G + 7471 B
  + 2¹⁵) >> 16`` (PIL's ``convert("L")``); the weights sum to 2¹⁶, so a result whose
  channels are equal (all blurs, contrast, brightness, fog, snow, elastic,
  pixelate, …) comes back unchanged, and the coloured overlays (frost, spatter) get
  their luminance, as the reference's own grayscale branches compute it.

**Small images.** ``imagecorruptions.corrupt`` refuses sides below 32 pixels, but
every corruption function runs at any size ≥ 28 (MNIST), and the engine calls them
at the image's own resolution, with ImageNet-C's severity constants — no resizing.
What that means below ~64 pixels, all reference behaviour, kept for parity:
``motion_blur`` stops its kernel where a shift would leave the image (at 28² and
severity 5 that drops ~6% of the kernel weight, so the image darkens ~6%; 3% at 32²;
nothing at 64² and above); ``frost`` crops an ``H×W`` window out of its full-size
frost photographs (315–600 pixels high), so a small image sees a magnified patch of
frost; ``fog`` uses a plasma map of the next power of two ≥ the longer side;
``zoom_blur`` and ``snow`` crop their zoomed layers back to ``H×W``. (CIFAR-10-C
used different severity constants and shrank the frost photographs; this engine is
ImageNet-C's definition at every size and does not reproduce CIFAR-10-C.) Sides
below 28 are refused. Larger and non-square images need nothing special.

**Output.** ``uint8``, the input's shape; floats are cast as ``imagecorruptions``
does (``np.uint8``: truncation of the clipped ``[0, 255]`` values).
"""

from __future__ import annotations

import contextlib
import threading
from functools import lru_cache

import numpy as np
from PIL import Image

from .compat import reference_module, reference_package, reference_version

#: The 15 ImageNet-C benchmark corruptions, in Hendrycks & Dietterich's order.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: The 4 held-out ("validation") corruptions.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)
#: Smallest image side the engine accepts (MNIST's 28).
MIN_SIDE = 28
#: Bump when anything the engine computes changes; part of every cache key.
ENGINE_VERSION = "1"

#: Corruptions whose reference draws only from NumPy's global legacy generator: after
#: ``np.random.seed(seed)`` the reference is deterministic, and the engine equals it bit for bit.
DETERMINISTIC_REFERENCE = tuple(n for n in ALL_CORRUPTIONS if n != "impulse_noise")
#: Noise added independently per channel: a grayscale result keeps channel 0.
PER_CHANNEL_NOISE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")

# ImageNet-C severity constants (Hendrycks & Dietterich 2019) of the two corruptions computed here.
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, max_delta δ, iterations T)

_GLOBAL_RNG = threading.RLock()


@contextlib.contextmanager
def global_numpy_seed(seed: int):
    """Run a block with NumPy's global generator seeded by ``seed``; restore the caller's state after."""
    with _GLOBAL_RNG:
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(saved)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1)


@lru_cache(maxsize=64)
def _glass_positions(h: int, w: int, delta: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat index, row and column of the pixels one shuffle pass visits, in the reference's order."""
    rows = np.arange(h - delta, delta, -1)
    cols = np.arange(w - delta, delta, -1)
    r, c = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    return r * w + c, r, c


def glass_shuffle_index(h: int, w: int, delta: int, iterations: int, seed: int) -> np.ndarray:
    """``src`` with ``shuffled.reshape(h·w, C) = x.reshape(h·w, C)[src]``: the glass-blur pixel shuffle.

    Draws ``(dx, dy) = randint(−δ, δ, size=2)`` per visited pixel from
    ``RandomState(seed)`` — the stream ``np.random.seed(seed)`` gives the reference —
    and applies ``x[h, w] ← x[h+dy, w+dx]`` in the reference's order on an index map.
    """
    flat, r, c = _glass_positions(h, w, delta)
    draws = np.random.RandomState(seed).randint(-delta, delta, size=(iterations, len(flat), 2))
    src = list(range(h * w))
    for t in range(iterations):
        dx, dy = draws[t, :, 0], draws[t, :, 1]
        sources = (r + dy) * w + (c + dx)
        for target, source in zip(flat.tolist(), sources.tolist()):
            src[target] = src[source]
    return np.asarray(src, dtype=np.intp)


def glass_blur(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Glass blur of an ``H×W×3`` uint8 image (float result in [0, 255]); see the module docstring."""
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    h, w, ch = rgb.shape
    x = np.uint8(_gaussian(rgb / 255.0, sigma) * 255)
    src = glass_shuffle_index(h, w, delta, iterations, seed)
    x = x.reshape(h * w, ch)[src].reshape(h, w, ch)
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def impulse_noise(rgb: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Salt-and-pepper noise, ``amount = c_s`` of the values set to 0 or 1, from ``default_rng(seed)``."""
    from skimage.util import random_noise

    x = random_noise(rgb / 255.0, mode="s&p", rng=seed, amount=IMPULSE_AMOUNT[severity - 1])
    return np.clip(x, 0, 1) * 255


_COMPUTED_HERE = {"glass_blur": glass_blur, "impulse_noise": impulse_noise}


def _check(image: np.ndarray, name: str, severity: int, seed: int) -> None:
    if name not in ALL_CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(ALL_CORRUPTIONS)}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 numpy array, got {type(image).__name__} {getattr(image, 'dtype', '')}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"expected an H×W, H×W×1 or H×W×3 image, got shape {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image sides must be at least {MIN_SIDE} pixels, got {image.shape[:2]}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer 1–5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``H×W×3`` uint8: grayscale stacked to three equal channels, as ``imagecorruptions.corrupt`` does."""
    if image.ndim == 2:
        return np.stack((image,) * 3, axis=-1)
    if image.shape[2] == 1:
        return np.concatenate((image,) * 3, axis=-1)
    return np.ascontiguousarray(image)


def rgb_to_gray(rgb: np.ndarray, name: str) -> np.ndarray:
    """One channel from a corrupted RGB image: channel 0 for per-channel noise, ITU-R 601-2 luma otherwise."""
    if name in PER_CHANNEL_NOISE:
        return rgb[..., 0].copy()
    x = rgb.astype(np.uint32)
    return ((19595 * x[..., 0] + 38470 * x[..., 1] + 7471 * x[..., 2] + 32768) >> 16).astype(np.uint8)


def _corrupt_rgb(rgb: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    with global_numpy_seed(int(seed)), np.errstate(invalid="ignore"):
        if name in _COMPUTED_HERE:
            out = _COMPUTED_HERE[name](rgb, severity, int(seed))
        else:
            out = getattr(reference_module(), name)(Image.fromarray(rgb), severity)
    out = np.asarray(out)
    if name == "spatter" and np.isnan(out).any():
        # The reference normalises its liquid mask by the mask's maximum; on small images
        # the thresholded mask can be empty (0/0 = NaN, then an undefined uint8 cast). An
        # empty mask means no liquid: those pixels keep the image's own values, computed
        # through the same x/255·255 arithmetic as the rest of the output.
        out = np.where(np.isnan(out), (rgb / 255.0) * 255, out)
    out = np.uint8(out)
    if out.shape != rgb.shape:  # never observed; would mean the reference changed its cropping
        raise RuntimeError(f"{name} severity {severity}: output shape {out.shape} differs from input {rgb.shape}")
    return out


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The ImageNet-C corruption ``name`` at ``severity`` (1–5) of a uint8 image, drawn with ``seed``.

    ``image``: ``H×W``, ``H×W×1`` or ``H×W×3`` uint8, sides ≥ 28. Returns uint8 of the
    same shape. The same arguments give the same bytes on every call and in every
    process; the caller's NumPy global random state is left as it was.
    """
    _check(image, name, severity, seed)
    out = _corrupt_rgb(as_rgb(image), name, severity, seed)
    if image.ndim == 3 and image.shape[2] == 3:
        return out
    gray = rgb_to_gray(out, name)
    return gray if image.ndim == 2 else gray[..., None]


def reference_corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The reference, as a user calls it: ``np.random.seed(seed)``, then ``imagecorruptions.corrupt``.

    Returns its ``H×W×3`` uint8 result (it stacks grayscale to RGB and keeps it so).
    Deterministic for every corruption in :data:`DETERMINISTIC_REFERENCE`; ``impulse_noise``
    draws from an unseeded scikit-image generator. Skips the reference's 32-pixel
    minimum by calling the corruption function directly for smaller images.
    """
    package = reference_package()
    with global_numpy_seed(int(seed)):
        if min(image.shape[:2]) >= 32:
            return package.corrupt(image, severity=severity, corruption_name=name)
        return np.uint8(np.asarray(package.corruption_dict[name](Image.fromarray(as_rgb(image)), severity)))


def engine_fingerprint() -> dict[str, str]:
    """What the engine's output depends on: its version and the versions of the libraries it calls."""
    from importlib.metadata import PackageNotFoundError, version

    import cv2
    import PIL
    import scipy
    import skimage

    try:
        opencv = version("opencv-python")
    except PackageNotFoundError:
        opencv = cv2.__version__
    return {
        "engine": ENGINE_VERSION,
        "imagecorruptions": reference_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "opencv": opencv,
        "pillow": PIL.__version__,
    }


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` of a dataset corrupted with ``seed``: ``SeedSequence([seed, index])``'s first word.

    Every image gets its own random stream (no two images share a noise pattern),
    fixed by the dataset seed and the image's position alone.
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])
