"""The paper's four segmentation metrics (§5), computed from a confusion matrix.

With ``n[i, j]`` the number of pixels of class ``i`` predicted as class ``j`` and
``t[i] = sum_j n[i, j]`` the number of pixels of class ``i``:

- pixel accuracy ``sum_i n[i, i] / sum_i t[i]``
- mean accuracy ``mean_i n[i, i] / t[i]``
- mean IU ``mean_i n[i, i] / (t[i] + sum_j n[j, i] - n[i, i])``
- frequency weighted IU ``sum_i t[i] IU[i] / sum_i t[i]``

As in the reference implementation's ``score.py``, a class whose ratio is 0/0 (absent from
both the labels and the predictions, or, for accuracy, from the labels) is left out of the
mean rather than counted as 0 or 1.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """The (num_classes, num_classes) int64 count of pixels by (true class, predicted class).

    ``pred`` and ``target`` are integer label tensors of the same shape, on any device; pixels
    whose target is ``ignore_index`` are not counted. Sum the matrices of several batches to
    accumulate. Predictions must lie in 0..num_classes-1 wherever the target is counted.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise TypeError("pred and target must be integer labels; take pred.argmax(1) of scores")
    if ignore_index is not None:
        pred, target = pred[target != ignore_index], target[target != ignore_index]
    pred, target = pred.flatten().long(), target.flatten().long()
    if target.numel():
        low, high = torch.aminmax(torch.cat([pred, target]))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must lie in 0..{num_classes - 1} (or be ignore_index={ignore_index} in "
                f"the target); found values from {int(low)} to {int(high)}"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator in float64, NaN where both are 0 (the class does not count)."""
    return numerator.double() / denominator.double()


def per_class_iu(confusion: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each class, float64; NaN for classes absent from both sides.
    Of a (C, C) matrix, or of each matrix of a (..., C, C) stack."""
    true_positives = confusion.diagonal(dim1=-2, dim2=-1)
    union = confusion.sum(-1) + confusion.sum(-2) - true_positives
    return _ratio(true_positives, union)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Fraction of each class's pixels predicted right, float64; NaN for absent classes."""
    return _ratio(confusion.diagonal(), confusion.sum(1))


def scores(confusion: torch.Tensor) -> dict[str, float | torch.Tensor]:
    """The paper's metrics of a confusion matrix (rows true class, columns predicted class).

    Returns ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu`` and ``frequency_weighted_iu`` as
    floats in [0, 1] (NaN when nothing was counted), and ``per_class_iu`` as a float64 tensor.
    """
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {tuple(confusion.shape)}")
    confusion = confusion.double()
    total = confusion.sum()
    class_pixels = confusion.sum(1)
    iu = per_class_iu(confusion)
    present = class_pixels > 0
    return {
        "pixel_accuracy": float(_ratio(confusion.diagonal().sum(), total)),
        "mean_accuracy": float(per_class_accuracy(confusion).nanmean()),
        "mean_iu": float(iu.nanmean()),
        "frequency_weighted_iu": float(_ratio((class_pixels * iu)[present].sum(), total)),
        "per_class_iu": iu,
    }


def _mean_iu(confusions: torch.Tensor) -> torch.Tensor:
    """The mean IU of each of a stack of (..., C, C) confusion matrices, float64 (...)."""
    return per_class_iu(confusions).nanmean(-1)


def _resampled_mean_iu(
    confusions: list[torch.Tensor], samples: int, seed: int
) -> tuple[torch.Tensor, list[float]]:
    """The mean IU of ``samples`` bootstrap resamples of the images, the same resamples for
    each stack in ``confusions`` ((N, C, C) each, one matrix per image): (len, samples)."""
    count = len(confusions[0])
    if count < 1 or any(len(stack) != count for stack in confusions):
        raise ValueError("give one confusion matrix per image, the same images for every net")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(count, (samples, count), generator=generator)
    weights = torch.zeros(samples, count, dtype=torch.float64)
    weights.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
    values = []
    for stack in confusions:
        flat = stack.cpu().double().reshape(count, -1)
        values.append(_mean_iu((weights @ flat).reshape(samples, *stack.shape[1:])))
    estimates = [float(_mean_iu(stack.cpu().sum(0))) for stack in confusions]
    return torch.stack(values), estimates


def _percentiles(values: torch.Tensor, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie between 0 and 1, got {level}")
    tail = (1 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype))
    return float(low), float(high)


def bootstrap_interval(
    confusions: torch.Tensor, level: float = 0.95, samples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap ``level`` interval of the mean IU over the images of a test set.

    ``confusions`` (N, C, C) holds one confusion matrix per image; each of ``samples``
    resamples draws N images with replacement and scores their summed matrix, and the interval
    runs between the resamples' (1 - level)/2 and (1 + level)/2 quantiles. Fractions in [0, 1].
    """
    values, _ = _resampled_mean_iu([confusions], samples, seed)
    return _percentiles(values[0], level)


def bootstrap_difference(
    first: torch.Tensor,
    second: torch.Tensor,
    level: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """The mean IU of ``first`` minus that of ``second`` (per-image confusion matrices of two
    nets on the same N images, (N, C, C) each), and its paired bootstrap ``level`` interval:
    each resample draws the same images for both nets. An interval that contains 0 leaves
    the difference unresolved."""
    values, (a, b) = _resampled_mean_iu([first, second], samples, seed)
    return a - b, _percentiles(values[0] - values[1], level)


class SegmentationMetrics:
    """Accumulates a confusion matrix over batches and reports the paper's metrics.

    Call ``update(pred, target)`` once per batch, then ``compute()["mean_iu"]``. ``update``
    takes label maps, or scores with a class dimension at 1 (N, C, H, W), which it reduces by
    argmax; the matrix lives on the device of the first batch. With ``per_image`` each batch's
    own matrix is kept too (on the CPU), for intervals over images: ``image_confusions()``.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = None, per_image: bool = False
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion: torch.Tensor | None = None
        self.per_image: list[torch.Tensor] | None = [] if per_image else None

    def reset(self) -> None:
        """Forget all batches seen so far."""
        self.confusion = None
        if self.per_image is not None:
            self.per_image = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch: ``pred`` labels shaped like ``target``, or (N, C, ...) scores."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(1)
        batch = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.confusion = batch if self.confusion is None else self.confusion + batch
        if self.per_image is not None:
            self.per_image.append(batch.cpu())

    def image_confusions(self) -> torch.Tensor:
        """(N, C, C): the matrix of each of the N batches counted (one image each, when
        :func:`fcnlib.predict.evaluate` counts), for :func:`bootstrap_interval`."""
        if not self.per_image:
            raise RuntimeError("no per-image matrices: count with per_image=True")
        return torch.stack(self.per_image)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The bootstrap ``level`` interval of the mean IU over the images counted."""
        return bootstrap_interval(self.image_confusions(), level)

    def compute(self) -> dict[str, float | torch.Tensor]:
        """The metrics of everything counted so far (see :func:`scores`)."""
        if self.confusion is None:
            raise RuntimeError("no batch counted yet: call update(pred, target) first")
        return scores(self.confusion)


def boundary_distance(target: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (pixels, float32) from each pixel of an (H, W) label map to a boundary.

    A pixel lies on a boundary (distance 0) when one of its four neighbours has another label;
    the ignored label counts as a label of its own, so the void band VOC draws around objects
    is bounded too. A map with a single label has no boundary: every distance is infinite.
    """
    from scipy.ndimage import distance_transform_edt

    labels = target.cpu().numpy()
    if labels.ndim != 2:
        raise ValueError(f"target must be an (H, W) label map, got shape {tuple(labels.shape)}")
    edge = np.zeros(labels.shape, dtype=bool)
    vertical, horizontal = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if not edge.any():
        return torch.full(labels.shape, float("inf"))
    return torch.from_numpy(distance_transform_edt(~edge).astype(np.float32))


def accuracy_by_boundary_distance(
    pred: torch.Tensor, target: torch.Tensor, edges: list[float], ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of right and of all labelled pixels of one (H, W) map, binned by boundary distance.

    Bin ``k`` holds the pixels whose :func:`boundary_distance` ``d`` satisfies
    ``edges[k] <= d < edges[k + 1]``; pixels beyond the last edge are not counted. Returns two
    int64 tensors of ``len(edges) - 1`` counts on the CPU; sum them over images and divide.
    """
    distance = boundary_distance(target)
    pred, target = pred.cpu(), target.cpu()
    counted = target != ignore_index if ignore_index is not None else torch.ones_like(distance) > 0
    bins = torch.bucketize(distance, torch.tensor(edges, dtype=torch.float32), right=True) - 1
    inside = counted & (bins >= 0) & (bins < len(edges) - 1)
    size = len(edges) - 1
    total = torch.bincount(bins[inside], minlength=size)
    right = torch.bincount(bins[inside & (pred == target)], minlength=size)
    return right, total


def trimap_accuracy(
    pred: torch.Tensor, target: torch.Tensor, widths: list[float], ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of right and of all labelled pixels within ``widths[k]`` pixels of a label
    boundary (:func:`boundary_distance` below ``widths[k]``), for each band width: the trimap
    measure of Kohli et al. (2009) that the DeepLab papers use. Two int64 tensors of
    ``len(widths)`` counts; sum them over images and divide."""
    if list(widths) != sorted(widths) or not widths or widths[0] <= 0:
        raise ValueError(f"widths must be positive and increasing, got {widths}")
    right, total = accuracy_by_boundary_distance(pred, target, [0, *widths], ignore_index)
    return right.cumsum(0), total.cumsum(0)
