"""Image corruptions (ImageNet-C): the seed-reproducible engine and the corrupted-dataset cache.

``engine``  ``corrupt(image, name, severity, seed)`` — the pip ``imagecorruptions``
            functions through a narrow compatibility layer (``compat``), seeded.
``cache``   ``CorruptionCache(root).get_or_compute(dataset_id, images, name, severity, seed)``
            — each corrupted dataset computed once (in parallel), stored checksummed.
"""

from .cache import CorruptionCache, corrupt_dataset, images_sha256
from .engine import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    DETERMINISTIC_REFERENCE,
    ENGINE_VERSION,
    EXTRA_CORRUPTIONS,
    MIN_SIDE,
    SEVERITIES,
    corrupt,
    engine_fingerprint,
    image_seed,
    reference_corrupt,
)

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "CorruptionCache",
    "DETERMINISTIC_REFERENCE",
    "ENGINE_VERSION",
    "EXTRA_CORRUPTIONS",
    "MIN_SIDE",
    "SEVERITIES",
    "corrupt",
    "corrupt_dataset",
    "engine_fingerprint",
    "image_seed",
    "images_sha256",
    "reference_corrupt",
]
