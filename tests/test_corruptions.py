"""The corruption engine: all 19 corruptions × 5 severities run at 28² and 224², reproducibly,
equal to ``imagecorruptions`` bit for bit wherever its reference is deterministic."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import skimage.data
import skimage.util
from PIL import Image

from namex_bench.corruptions import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    DETERMINISTIC_REFERENCE,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    corrupt,
    reference_corrupt,
)
from namex_bench.corruptions.compat import reference_module, reference_package
from namex_bench.corruptions.engine import IMPULSE_AMOUNT, PER_CHANNEL_NOISE, as_rgb, rgb_to_gray

#: Corruptions that draw random numbers (a different seed gives a different image).
RANDOM = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
    "speckle_noise",
    "spatter",
)
#: Corruptions without randomness: the seed changes nothing.
FIXED = tuple(n for n in ALL_CORRUPTIONS if n not in RANDOM)


def photo(height: int, width: int | None = None, gray: bool = False, which: str = "astronaut") -> np.ndarray:
    """A real photograph (scikit-image's bundled test images), resized to ``height × width``."""
    image = Image.fromarray(getattr(skimage.data, which)())
    image = image.convert("L") if gray else image
    return np.asarray(image.resize((width or height, height), Image.BICUBIC))


IMAGES = {
    "28x28 gray": photo(28, gray=True),
    "28x28 rgb": photo(28, which="coffee"),
    "224x224 rgb": photo(224),
}


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_names_follow_hendrycks_order_and_the_reference_package():
    assert len(CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert CORRUPTIONS[:3] == ("gaussian_noise", "shot_noise", "impulse_noise") and CORRUPTIONS[-1] == "jpeg_compression"
    package = reference_package()
    assert list(CORRUPTIONS) == package.get_corruption_names("common")
    assert list(EXTRA_CORRUPTIONS) == package.get_corruption_names("validation")


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_severity_runs_at_28_and_224_and_is_reproducible(name):
    for label, image in IMAGES.items():
        for severity in SEVERITIES:
            first = corrupt(image, name, severity, seed=123)
            again = corrupt(image, name, severity, seed=123)
            assert first.dtype == np.uint8 and first.shape == image.shape, (label, severity)
            assert np.array_equal(first, again), f"{name} severity {severity} on {label} is not reproducible"


def test_other_shapes_non_square_single_channel_and_large():
    for image in (photo(30, 45), photo(57, 31, gray=True)[..., None], photo(300, 260)):
        for name in ALL_CORRUPTIONS:
            out = corrupt(image, name, 3, 0)
            assert out.shape == image.shape and out.dtype == np.uint8


@pytest.mark.parametrize("name", RANDOM)
def test_different_seeds_give_different_images(name):
    image = photo(48)
    assert not np.array_equal(corrupt(image, name, 3, 0), corrupt(image, name, 3, 1))


@pytest.mark.parametrize("name", FIXED)
def test_corruptions_without_randomness_ignore_the_seed(name):
    image = photo(48)
    assert np.array_equal(corrupt(image, name, 3, 0), corrupt(image, name, 3, 1))


def test_the_callers_global_random_state_is_left_alone():
    np.random.seed(99)
    expected = np.random.random(3)
    np.random.seed(99)
    for name in ("gaussian_noise", "glass_blur", "frost", "fog"):
        corrupt(photo(32), name, 2, 5)
    assert np.array_equal(np.random.random(3), expected)


CHILD = """
import hashlib, json, sys
import numpy as np
from PIL import Image
import skimage.data
from namex_bench.corruptions import ALL_CORRUPTIONS, corrupt
image = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((64, 64), Image.BICUBIC))
out = {f"{name}/{s}": hashlib.sha256(corrupt(image, name, s, 2024).tobytes()).hexdigest() for name in ALL_CORRUPTIONS for s in (2, 5)}
json.dump(out, sys.stdout)
"""


def test_same_bytes_in_another_process():
    """Including impulse_noise (scikit-image's generator) and glass_blur (the pixel shuffle)."""
    child = json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)
    image = photo(64)
    here = {f"{name}/{s}": digest(corrupt(image, name, s, 2024)) for name in ALL_CORRUPTIONS for s in (2, 5)}
    assert child == here


def test_invalid_arguments_are_refused():
    image = photo(32)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(image, "rain", 1, 0)
    with pytest.raises(ValueError, match="severity"):
        corrupt(image, "fog", 6, 0)
    with pytest.raises(ValueError, match="at least 28"):
        corrupt(photo(27), "fog", 1, 0)
    with pytest.raises(ValueError, match="seed"):
        corrupt(image, "fog", 1, -1)
    with pytest.raises(TypeError, match="uint8"):
        corrupt(image.astype(np.float32), "fog", 1, 0)


# ----------------------------------------------------------------------------- parity


def assert_parity(image: np.ndarray, name: str, severity: int, seed: int) -> None:
    ours = corrupt(image, name, severity, seed)
    reference = reference_corrupt(image, name, severity, seed)
    if image.ndim == 2:
        reference = rgb_to_gray(reference, name)
    diff = np.abs(ours.astype(int) - reference.astype(int))
    assert diff.max() == 0, f"{name} s{severity} {image.shape}: max |Δ| {diff.max()}, {np.mean(diff > 0):.2%} of values differ"


@pytest.mark.parametrize("name", DETERMINISTIC_REFERENCE)
def test_bit_identical_to_imagecorruptions(name):
    """Same seed through ``np.random.seed`` → the reference's exact bytes, at 28², non-square, gray and 224²."""
    for severity in SEVERITIES:
        assert_parity(IMAGES["28x28 rgb"], name, severity, 7)
        assert_parity(IMAGES["28x28 gray"], name, severity, 8)
        assert_parity(photo(40, 67, which="chelsea"), name, severity, 9)
    for severity in SEVERITIES:  # the reference glass blur costs 0.4–1.3 s a call here: ~4 s in all
        assert_parity(IMAGES["224x224 rgb"], name, severity, 10 + severity)


def test_impulse_noise_equals_the_reference_with_its_generator_pinned(monkeypatch):
    """The reference's only unseeded draw is scikit-image's ``random_noise``; pinned to the seed, it is ours."""
    module = reference_module()
    original = skimage.util.random_noise
    for severity in SEVERITIES:
        for image in (IMAGES["28x28 rgb"], IMAGES["224x224 rgb"]):
            seed = 31 + severity
            with monkeypatch.context() as m:
                m.setattr(skimage.util, "random_noise", partial(original, rng=seed))
                assert module.sk.util.random_noise.keywords == {"rng": seed}
                np.random.seed(seed)
                reference = np.uint8(module.impulse_noise(Image.fromarray(image), severity))
            assert np.array_equal(corrupt(image, "impulse_noise", severity, seed), reference)


def test_impulse_noise_replaces_the_reference_amount_of_values():
    image = IMAGES["224x224 rgb"]
    for severity, amount in zip(SEVERITIES, IMPULSE_AMOUNT):
        out = corrupt(image, "impulse_noise", severity, 3)
        changed = out != image
        noised = (out == 0) | (out == 255)
        assert np.all(noised[changed])  # every changed value is salt or pepper
        interior = (image != 0) & (image != 255)  # a value there is noised iff it was drawn
        assert abs(np.mean(noised[interior]) - amount) < 0.005


def test_grayscale_goes_back_by_channel_0_for_noise_and_luma_otherwise():
    gray = IMAGES["28x28 gray"]
    for name in ALL_CORRUPTIONS:
        rgb = corrupt(as_rgb(gray), name, 3, 4)
        expected = rgb[..., 0] if name in PER_CHANNEL_NOISE else np.asarray(Image.fromarray(rgb).convert("L"))
        assert np.array_equal(corrupt(gray, name, 3, 4), expected), name
    # equal channels come back unchanged
    assert np.array_equal(rgb_to_gray(as_rgb(gray), "fog"), gray)


def test_the_compatibility_layer_stays_inside_imagecorruptions():
    """NumPy, scikit-image and sys.modules are left as they were; only the module's globals change."""
    module = reference_module()
    import skimage.filters

    assert "float_" not in np.__dict__
    assert module.np is np or module.np.float_ is np.float64
    assert module.gaussian is skimage.filters.gaussian or skimage.filters.gaussian.__module__.startswith("skimage")
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        assert "pkg_resources" not in sys.modules  # the stand-in existed only during the import


def test_spatter_with_an_empty_liquid_mask_leaves_the_image_intact():
    """On small images the reference's spatter can normalise an empty mask (0/0 → NaN and an
    undefined uint8 cast, a black image); the engine treats it as no liquid."""
    import warnings

    from namex_bench.data.mnist5k import load_mnist5k

    image = (load_mnist5k("test").tensors[0][224, 0] * 255).round().byte().numpy()  # a digit that triggers it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN cast warning may escape
        out = corrupt(image, "spatter", 1, 224)
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1
