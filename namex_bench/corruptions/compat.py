"""A narrow compatibility layer that makes the pip ``imagecorruptions`` 1.1.2 run today.

The release (2020) breaks on the current stack in exactly four places; this module
fixes each one from the outside, without copying or editing the package:

* **``pkg_resources``** — ``imagecorruptions.corruptions`` does
  ``from pkg_resources import resource_filename`` at import time to find its frost
  photographs, and ``pkg_resources`` is gone from setuptools ≥ 82. While (and only
  while) the package is imported, a stand-in module whose ``resource_filename``
  resolves the file through :mod:`importlib.resources` sits in ``sys.modules``; it
  is removed again afterwards, so nothing else ever sees it.
* **``scipy.ndimage.interpolation``** — imported for ``map_coordinates``; a
  deprecated alias that SciPy may drop. Should the import fail, ``scipy.ndimage``
  stands in for it during the import, the same way.
* **``multichannel=``** — ``glass_blur`` and ``gaussian_blur`` call
  ``skimage.filters.gaussian(..., multichannel=True)``, a keyword removed from
  scikit-image (renamed ``channel_axis=-1`` in 0.19). The module's ``gaussian`` is
  replaced by a wrapper that renames the keyword and changes nothing else.
* **``np.float_``** — ``plasma_fractal`` (used by ``fog``) allocates
  ``np.float_``, removed in NumPy 2 (it was ``np.float64``). The module's ``np`` is
  replaced by a proxy of NumPy that adds ``float_ = float64``; every other name is
  NumPy's own.

Each fix is applied only where the stack needs it, and each is a pure renaming:
every corruption computes what it computed on the stack it was written for (the
tests compare every corruption of ``imagecorruptions.corrupt`` against the engine
bit for bit). The patches touch only the globals of ``imagecorruptions.corruptions``
— never NumPy, scikit-image or ``sys.modules`` for longer than the import.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import inspect
import os
import sys
import threading
import types
import warnings

import numpy as np

_LOCK = threading.Lock()
_PATCHED_FLAG = "_namex_bench_compat"


def _resource_filename(module_or_package: str, relative: str) -> str:
    """``pkg_resources.resource_filename`` for files installed on disk, via importlib.resources."""
    module = sys.modules.get(module_or_package) or importlib.import_module(module_or_package)
    package = module_or_package if hasattr(module, "__path__") else module_or_package.rpartition(".")[0]
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    path = os.fspath(importlib.resources.files(package).joinpath(*parts))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{package}: resource {relative!r} not found at {path}")
    return path


@contextlib.contextmanager
def _stand_in_modules():
    """Temporarily provide ``pkg_resources`` / ``scipy.ndimage.interpolation`` if the stack lacks them."""
    added: list[str] = []
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.__doc__ = "namex_bench stand-in: resource_filename only, present while imagecorruptions imports"
        shim.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = shim
        added.append("pkg_resources")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import scipy.ndimage.interpolation  # noqa: F401
    except ImportError:
        import scipy.ndimage

        sys.modules["scipy.ndimage.interpolation"] = scipy.ndimage
        added.append("scipy.ndimage.interpolation")
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _gaussian_with_multichannel():
    """``skimage.filters.gaussian`` that also accepts the removed ``multichannel=`` keyword."""
    from skimage.filters import gaussian

    if "multichannel" in inspect.signature(gaussian).parameters:
        return gaussian

    def gaussian_compat(image, *args, multichannel=None, **kwargs):
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return gaussian(image, *args, **kwargs)

    gaussian_compat.__doc__ = "skimage.filters.gaussian; multichannel=True is passed on as channel_axis=-1"
    return gaussian_compat


class _NumpyWithFloat_(types.ModuleType):
    """NumPy as seen by ``imagecorruptions.corruptions``: NumPy itself plus ``float_ = float64``."""

    float_ = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


def reference_module() -> types.ModuleType:
    """``imagecorruptions.corruptions``, imported and made runnable on the current stack (idempotent)."""
    with _LOCK:
        module = sys.modules.get("imagecorruptions.corruptions")
        if module is not None and getattr(module, _PATCHED_FLAG, False):
            return module
        with _stand_in_modules(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import imagecorruptions  # noqa: F401  (the package __init__ builds corruption_dict)
            import imagecorruptions.corruptions as module
        module.gaussian = _gaussian_with_multichannel()
        if not hasattr(np, "float_"):
            module.np = _NumpyWithFloat_("numpy")
        setattr(module, _PATCHED_FLAG, True)
        return module


def reference_package() -> types.ModuleType:
    """The ``imagecorruptions`` package (its ``corrupt``, ``corruption_dict``), after :func:`reference_module`."""
    reference_module()
    return sys.modules["imagecorruptions"]


def reference_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imagecorruptions")
    except PackageNotFoundError:  # pragma: no cover - imported from a source tree
        return "unknown"
