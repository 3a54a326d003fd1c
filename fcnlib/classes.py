"""Class tables of the datasets: names, colours and the ignored label, read from the package's
``meta/`` folder (package data, so that an installed wheel has them too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

#: Dataset metadata: class tables, split lists, label checksums. fcnlib is installed as files
#: (editable or from a wheel), so this is a ``pathlib.Path``.
META_DIR = resources.files("fcnlib") / "meta"


@dataclass(frozen=True)
class ClassTable:
    """The label set of one dataset.

    ``colours[i]`` is the RGB colour of class ``i``; pixels labelled ``ignore_index`` count
    neither in the loss nor in the metrics.
    """

    name: str
    classes: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    ignore_index: int
    ignore_name: str
    ignore_colour: tuple[int, int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette(self) -> np.ndarray:
        """A (256, 3) uint8 lookup table from label value to colour (black where unused)."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: self.num_classes] = self.colours
        table[self.ignore_index] = self.ignore_colour
        return table


@cache
def class_table(dataset: str) -> ClassTable:
    """The class table of ``dataset`` ("camvid" or "voc")."""
    path = META_DIR / f"{dataset}.json"
    if not path.is_file():
        known = sorted(
            p.name.removesuffix(".json") for p in META_DIR.iterdir() if p.name.endswith(".json")
        )
        raise ValueError(f"no class table for dataset {dataset!r} in {META_DIR}; known: {known}")
    meta = json.loads(path.read_text())
    return ClassTable(
        name=meta["name"],
        classes=tuple(meta["classes"]),
        colours=tuple(tuple(c) for c in meta["colours"]),
        ignore_index=meta["ignore_index"],
        ignore_name=meta["ignore_name"],
        ignore_colour=tuple(meta["ignore_colour"]),
    )
