"""Merging methods: one file each, registered by name.

Every module of this package is imported when the registry is first read, so a new
built-in method is one new file here and nothing else.
"""

from .base import BaseExpert, MergeInputs, MergeOutput, MergingMethod, Preset
from .registry import available_methods, get_method, load_plugins, register_method

__all__ = [
    "BaseExpert",
    "MergeInputs",
    "MergeOutput",
    "MergingMethod",
    "Preset",
    "available_methods",
    "get_method",
    "load_plugins",
    "register_method",
]
