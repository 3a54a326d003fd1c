"""The stride-s label oracle: the best mean IU a net predicting one label per s x s cell can reach.

A net with output stride ``s`` and no skips predicts one label per ``s x s`` block of pixels
(before upsampling). The oracle gives each block the best label it could have, taken from
the ground truth itself, upsamples the coarse map back by nearest neighbour and scores it
against the full-resolution labels. Two ways to pick a block's label:

- ``"nearest"``: the labelled pixel nearest the block's centre (subsampling, skipping void);
- ``"majority"``: the most frequent label in the block, void not counted. It maximises the
  number of right pixels in every block, so its pixel accuracy is the highest of any
  one-label-per-block map (not necessarily its mean IU).

Blocks that hang over the bottom or right edge are padded with void. A block holding only
void pixels gets label 0: none of its pixels is counted.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fcnlib.metrics import SegmentationMetrics

METHODS = ("nearest", "majority")


def _blocks(labels: torch.Tensor, stride: int, ignore_index: int) -> torch.Tensor:
    """(H, W) labels -> (ceil(H/s), ceil(W/s), s*s) blocks, padded with ``ignore_index``."""
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

    ``method`` is "nearest" or "majority" (see the module docstring). Labels other than
    ``ignore_index`` must lie in 0..num_classes-1; the result holds no ``ignore_index``.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {tuple(labels.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be a positive number of pixels, got {stride}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
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


def oracle_labels(
    labels: torch.Tensor, stride: int, method: str, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """The full-resolution (H, W) labels a stride-``stride`` oracle predicts for ``labels``."""
    coarse = downsample_labels(labels, stride, method, num_classes, ignore_index)
    return upsample_labels(coarse, stride, tuple(labels.shape))


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
