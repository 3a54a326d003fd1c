"""Class-pixel statistics of a labelled dataset, and median-frequency class weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from fcnlib.classes import ClassTable
from fcnlib.data import describe


class LabelledDataset(Protocol):
    """What the statistics need: a class table and the label map of each item."""

    table: ClassTable

    def __len__(self) -> int: ...

    def mask(self, index: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class ClassFrequencies:
    """Pixel counts of one dataset, per class and, in the last entry, for the ignored label.

    ``pixels[c]`` counts the pixels labelled ``c``; ``images[c]`` the images in which ``c``
    occurs; ``image_pixels[c]`` all pixels of those images. ``names`` lists the classes and
    then the ignored label.
    """

    names: tuple[str, ...]
    pixels: np.ndarray
    images: np.ndarray
    image_pixels: np.ndarray
    num_images: int

    @property
    def share(self) -> np.ndarray:
        """The fraction of all pixels that each label covers; sums to 1."""
        return self.pixels / self.pixels.sum()

    @property
    def presence_frequency(self) -> np.ndarray:
        """Eigen and Fergus's freq(c): pixels of c over all pixels of the images where c occurs."""
        return self.pixels / np.maximum(self.image_pixels, 1)


def label_histogram(mask: torch.Tensor | np.ndarray, table: ClassTable) -> np.ndarray:
    """Pixels per class of one (H, W) label map: (C + 1,) int64, the ignored label last."""
    labels = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).ravel()
    counts = np.bincount(labels, minlength=256)
    return np.append(counts[: table.num_classes], counts[table.ignore_index]).astype(np.int64)


def class_frequencies(
    dataset: LabelledDataset, limit: int | None = None, progress: bool = False
) -> ClassFrequencies:
    """Count the pixels of each class over the first ``limit`` items (default: all) of a dataset.

    Reads only the labels (``dataset.mask(i)``), one bincount each: a second for CamVid train.
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count < 1:
        raise ValueError(
            f"no labels to count classes in: {describe(dataset)} gives {len(dataset)} images and "
            f"limit={limit}; check the data root, or raise the limit"
        )
    table = dataset.table
    per_image = np.stack(
        [label_histogram(dataset.mask(i), table) for i in tqdm(range(count), disable=not progress)]
    )
    present = per_image > 0
    return ClassFrequencies(
        names=(*table.classes, table.ignore_name),
        pixels=per_image.sum(axis=0),
        images=present.sum(axis=0),
        image_pixels=(present * per_image.sum(axis=1, keepdims=True)).sum(axis=0),
        num_images=count,
    )


def median_frequency_weights(
    frequencies: ClassFrequencies, median_over_ignored: bool = True
) -> np.ndarray:
    """Median-frequency balancing (Eigen and Fergus 2015): weight(c) = median freq / freq(c).

    freq is ``presence_frequency``. Returns (C,) float64 weights for the classes, without the
    ignored label. SegNet took the median over the ignored label too (its published Pavement
    weight, 0.9051, is not 1), hence the default; classes absent from the data get weight 0.
    """
    freq = frequencies.presence_frequency
    pool = freq if median_over_ignored else freq[:-1]
    median = np.median(pool[frequencies.images[: len(pool)] > 0])
    classes = freq[:-1]
    return np.divide(median, classes, out=np.zeros_like(classes), where=classes > 0)
