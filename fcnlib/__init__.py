"""fcnlib: Fully Convolutional Networks for semantic segmentation, the book's companion package.

Its modules load on first use, so that ``import fcnlib`` stays quick and
``fcnlib.weights.load("camvid-lite0-fcn8s")`` works after it alone.
"""

import importlib
import pkgutil

from fcnlib.classes import ClassTable, class_table
from fcnlib.runtime import data_root, device, is_fast, mode, seed_everything

__all__ = [
    "ClassTable",
    "class_table",
    "data_root",
    "device",
    "is_fast",
    "mode",
    "seed_everything",
]

_MODULES = {info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")}


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"fcnlib.{name}")
    raise AttributeError(f"module 'fcnlib' has no attribute {name!r}")
