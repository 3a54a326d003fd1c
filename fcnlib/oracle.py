"""Stride-s label baselines: what a coarse map drawn from the ground truth itself scores.

A net with output stride ``s`` has one score vector per ``s x s`` block of pixels. These
baselines fill that coarse map from the labels, upsample it to the image and score it against
the full-resolution labels, which shows what the stride alone costs. Three ways:

- ``"nearest"``: each block's label is the labelled pixel nearest its centre (subsampling,
  skipping void), upsampled by nearest neighbour;
- ``"majority"``: each block's label is its most frequent one, void not counted, upsampled by
  nearest neighbour. It maximises the right pixels of every block, so its pixel accuracy is
  the highest of any one-label-per-block map (not necessarily its mean IU);
- ``"bilinear"``: each block holds the fraction of each class among its labelled pixels, and
  these fractions are upsampled bilinearly, as an FCN upsamples its scores, before the argmax.
  Boundaries then fall between block centres, not on block edges, so this map is not one
  label per block and often scores *above* majority: no one-label-per-block map is an upper
  bound for a net that upsamples its scores.

Blocks that hang over the bottom or right edge are padded with void (:func:`grid_crop` cuts
the labels to whole blocks instead). A block holding only void pixels gets label 0 (or, for
bilinear, fractions of 0): none of its pixels is counted.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.nn import functional as F

from fcnlib.data import CamVid
from fcnlib.metrics import SegmentationMetrics

#: One label per block, upsampled by nearest neighbour.
BLOCK_METHODS = ("nearest", "majority")
METHODS = (*BLOCK_METHODS, "bilinear")
#: CamVid test frames the book's baseline tables score in fast mode (all of them in full mode).
FAST_FRAMES = 20


def _blocks(labels: torch.Tensor, stride: int, ignore_index: int) -> torch.Tensor:
    """(H, W) labels -> (ceil(H/s), ceil(W/s), s*s) blocks, padded with ``ignore_index``;
    the one place every baseline checks its labels and stride."""
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {tuple(labels.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be a positive number of pixels, got {stride}")
    height, width = labels.shape
    rows, cols = -(-height // stride), -(-width // stride)
    padded = labels.new_full((rows * stride, cols * stride), ignore_index)
    padded[:height, :width] = labels
    blocks = padded.reshape(rows, stride, cols, stride).permute(0, 2, 1, 3)
    return blocks.reshape(rows, cols, stride * stride)


def _centre_order(stride: int, device: torch.device) -> torch.Tensor:
    """Positions in an s x s block, flattened, sorted by distance to the block's centre."""
    offsets = torch.arange(stride, device=device, dtype=torch.float64) - (stride - 1) / 2
    distance = offsets[:, None] ** 2 + offsets[None, :] ** 2
    return torch.sort(distance.flatten(), stable=True).indices


def downsample_labels(
    labels: torch.Tensor, stride: int, method: str, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """Reduce (H, W) labels to one label per ``stride x stride`` block: (ceil(H/s), ceil(W/s)).

    ``method`` is one of ``BLOCK_METHODS`` (see the module docstring). Labels other than
    ``ignore_index`` must lie in 0..num_classes-1; the result holds no ``ignore_index``.
    """
    if method not in BLOCK_METHODS:
        raise ValueError(f"method must be one of {BLOCK_METHODS}, got {method!r}")
    blocks = _blocks(labels.long(), stride, ignore_index)
    valid = blocks != ignore_index
    if method == "nearest":
        order = _centre_order(stride, labels.device)
        ordered, ordered_valid = blocks[..., order], valid[..., order]
        first = ordered_valid.to(torch.uint8).argmax(-1, keepdim=True)  # first valid, else 0
        chosen = ordered.gather(-1, first).squeeze(-1)
    else:
        rows, cols, _ = blocks.shape
        block_id = torch.arange(rows * cols, device=labels.device).reshape(rows, cols, 1)
        index = (block_id * num_classes + blocks)[valid]
        counts = torch.bincount(index, minlength=rows * cols * num_classes)
        chosen = counts.reshape(rows, cols, num_classes).argmax(-1)
    return torch.where(valid.any(-1), chosen, 0)


def upsample_labels(coarse: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour upsampling to (H, W) = ``size``: every pixel takes its block's label."""
    height, width = size
    full = coarse.repeat_interleave(stride, 0).repeat_interleave(stride, 1)
    if full.shape[0] < height or full.shape[1] < width:
        raise ValueError(f"coarse map {tuple(coarse.shape)} at stride {stride} cannot cover {size}")
    return full[:height, :width]


def block_fractions(
    labels: torch.Tensor, stride: int, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """The fraction of each class among the labelled pixels of every ``stride x stride``
    block of (H, W) ``labels``: (num_classes, ceil(H/s), ceil(W/s)), summing to 1 in each
    block that holds a labelled pixel and to 0 in the others."""
    blocks = _blocks(labels.long(), stride, ignore_index)
    blocks = torch.where(blocks == ignore_index, num_classes, blocks)  # void: a slot dropped
    counts = F.one_hot(blocks, num_classes + 1)[..., :num_classes].sum(-2).double()
    return (counts / counts.sum(-1, keepdim=True).clamp(min=1)).permute(2, 0, 1)


def oracle_labels(
    labels: torch.Tensor, stride: int, method: str, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """The full-resolution (H, W) labels the stride-``stride`` baseline ``method`` (one of
    ``METHODS``) draws from ``labels``."""
    if method != "bilinear":
        coarse = downsample_labels(labels, stride, method, num_classes, ignore_index)
        return upsample_labels(coarse, stride, tuple(labels.shape))
    fractions = block_fractions(labels, stride, num_classes, ignore_index)
    # align_corners=False puts each block's value at the block's centre, as an FCN's scores
    # sit at their units' receptive-field centres.
    smooth = F.interpolate(fractions[None], scale_factor=stride, mode="bilinear")[0]
    return smooth[:, : labels.shape[0], : labels.shape[1]].argmax(0)


def grid_crop(labels: torch.Tensor, stride: int) -> torch.Tensor:
    """The centre of (H, W) ``labels`` that whole ``stride x stride`` blocks tile: a 360x480
    CamVid frame at stride 32 keeps rows 4..355, all 480 columns."""
    height, width = labels.shape
    top, left = height % stride // 2, width % stride // 2
    return labels[top : top + height - height % stride, left : left + width - width % stride]


def camvid_test_masks(fast: bool, stride: int = 32) -> list[torch.Tensor]:
    """The CamVid test labels the book's baseline tables score: the first ``FAST_FRAMES``
    frames in fast mode, all of them otherwise, each cut by :func:`grid_crop` to whole
    ``stride``-pixel blocks (also whole blocks of every stride dividing ``stride``)."""
    test = CamVid("test")
    count = min(FAST_FRAMES, len(test)) if fast else len(test)
    return [grid_crop(test[i][1].as_subclass(torch.Tensor), stride) for i in range(count)]


def oracle_scores(
    masks: Iterable[torch.Tensor],
    strides: Iterable[int],
    num_classes: int,
    ignore_index: int,
    methods: Iterable[str] = METHODS,
) -> dict[tuple[str, int], dict[str, float | torch.Tensor]]:
    """The paper's metrics of the oracle, ``{(method, stride): metrics}``, over (H, W) ``masks``."""
    strides, methods = tuple(strides), tuple(methods)
    meters = {
        (method, stride): SegmentationMetrics(num_classes, ignore_index)
        for method in methods
        for stride in strides
    }
    for mask in masks:
        for (method, stride), meter in meters.items():
            meter.update(oracle_labels(mask, stride, method, num_classes, ignore_index), mask)
    return {key: meter.compute() for key, meter in meters.items()}
