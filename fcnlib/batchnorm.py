"""Batch-norm statistics: re-estimating the running means and variances that a net's batch
norms normalise with at test time, over inputs of one's choosing (whole frames, or crops)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def recalibrated(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose batch norms' running statistics are re-estimated on
    ``batches`` of (N, 3, H, W) normalised images, in eval mode; ``model`` is not changed.

    Each batch goes forward once with the batch norms normalising by its own statistics, as
    in training, and every other layer in eval mode (no dropout); each running mean and
    (unbiased) variance becomes the equal-weight average over the batches (PyTorch's
    cumulative average, ``momentum=None``).
    """
    copied = copy.deepcopy(model).eval()
    norms = [m for m in copied.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no batch norm to recalibrate")
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    seen = 0
    with torch.no_grad():
        for batch in batches:
            copied(batch)
            seen += 1
    if not seen:
        raise ValueError("no batches to recalibrate on: give at least one (N, 3, H, W) batch")
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return copied.eval()
