"""Corruption errors and mCE (Hendrycks & Dietterich, 2019).

With ``E_{c,s}`` the top-1 error under corruption ``c`` at severity ``s`` and ``E_clean``
the clean error:

    CE_c          = Σ_s E_{c,s} / Σ_s E^{ref}_{c,s}
    relative CE_c = Σ_s (E_{c,s} − E_clean) / Σ_s (E^{ref}_{c,s} − E^{ref}_clean)
    mCE           = mean over the benchmark corruptions of CE_c   (likewise relative mCE)

For ImageNet the reference is AlexNet, whose errors averaged over the five severities
are given below (so ``Σ_s E^{AlexNet}_{c,s} = 5 · avg``). Elsewhere there is no AlexNet
reference: the unnormalised mean corruption error is reported, and CE relative to a
reference method of the suite is computed by the report from both methods' records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

# AlexNet's top-1 error on ImageNet-C, averaged over severities 1-5 (Hendrycks & Dietterich, 2019).
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886, "shot_noise": 0.894, "impulse_noise": 0.923, "defocus_blur": 0.820, "glass_blur": 0.826,
    "motion_blur": 0.786, "zoom_blur": 0.798, "snow": 0.867, "frost": 0.827, "fog": 0.819, "brightness": 0.565,
    "contrast": 0.853, "elastic_transform": 0.646, "pixelate": 0.718, "jpeg_compression": 0.607,
}
ALEXNET_CLEAN_ERROR = 0.4348

CellErrors = Mapping[tuple[str, int], float]  # (corruption, severity) → top-1 error


def _by_corruption(errors: CellErrors) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for (corruption, _), error in sorted(errors.items()):
        out.setdefault(corruption, []).append(error)
    return out


def mean_corruption_error(errors: CellErrors, corruptions: Iterable[str] | None = None) -> float:
    """Unnormalised: the mean of ``E_{c,s}`` over the given corruptions (default: all cells)."""
    wanted = set(corruptions) if corruptions is not None else None
    values = [e for (c, _), e in errors.items() if wanted is None or c in wanted]
    if not values:
        raise ValueError("no corruption errors to average")
    return sum(values) / len(values)


def corruption_errors(errors: CellErrors, reference: Mapping[str, float], clean_error: float | None = None,
                      reference_clean: float | None = None) -> dict[str, float]:
    """``CE_c`` for every corruption that ``reference`` covers (``reference[c]`` is the reference's
    error averaged over the same severities); relative CE when both clean errors are given."""
    out = {}
    for corruption, values in _by_corruption(errors).items():
        if corruption not in reference:
            continue
        mean = sum(values) / len(values)
        if clean_error is None:
            out[corruption] = mean / reference[corruption]
        else:
            if reference_clean is None:
                raise ValueError("relative CE needs the reference's clean error too")
            out[corruption] = (mean - clean_error) / (reference[corruption] - reference_clean)
    return out


def mce(errors: CellErrors, reference: Mapping[str, float] = ALEXNET_ERRORS) -> float:
    """mCE: the mean of ``CE_c`` over the corruptions of ``reference`` (all of them must be present)."""
    ce = corruption_errors(errors, reference)
    missing = sorted(set(reference) - set(ce))
    if missing:
        raise ValueError(f"mCE needs every reference corruption; missing: {', '.join(missing)}")
    return sum(ce.values()) / len(ce)


def relative_mce(errors: CellErrors, clean_error: float, reference: Mapping[str, float] = ALEXNET_ERRORS,
                 reference_clean: float = ALEXNET_CLEAN_ERROR) -> float:
    """Relative mCE: the mean of relative ``CE_c`` over the corruptions of ``reference``."""
    ce = corruption_errors(errors, reference, clean_error, reference_clean)
    missing = sorted(set(reference) - set(ce))
    if missing:
        raise ValueError(f"relative mCE needs every reference corruption; missing: {', '.join(missing)}")
    return sum(ce.values()) / len(ce)
