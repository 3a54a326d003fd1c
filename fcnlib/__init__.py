"""fcnlib: Fully Convolutional Networks for semantic segmentation, the book's companion package."""

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
