"""Shift-and-stitch (paper §3.2) and its equivalent, the à trous (dilated) net.

A net whose layers downsample by a total factor ``f`` gives one output every ``f`` pixels.
Shift-and-stitch runs it ``f**2`` times, on the input with its first ``y`` rows and ``x``
columns dropped for every offset ``0 <= x, y < f``, and interlaces the outputs into a dense
map. The paper's "filter rarefaction trick" computes the same map in one pass: set every stride
to 1 and dilate each later kernel by the product of the strides before it.

The equality is exact for nets of unpadded layers, which are translation equivariant; pad the
input once beforehand if a net needs padding.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from fcnlib.receptive import NEUTRAL_LAYERS, LayerSpec, layer_spec


def _layer_spec(name: str, layer: nn.Module) -> LayerSpec:
    """The geometry of one layer of a net to stitch, checked to be one that stitching handles:
    an unpadded convolution or pooling without ceil_mode, or a pixel-by-pixel layer (which
    commutes with shifts and dilation: stride 1)."""
    if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
        spec = layer_spec(layer, name)
        if any(spec.padding) or getattr(layer, "ceil_mode", False):
            raise ValueError(
                f"layer {name} pads its input or uses ceil_mode: shift-and-stitch equals the "
                "à trous net only for unpadded layers; pad the input once instead"
            )
        return spec
    if isinstance(layer, NEUTRAL_LAYERS):
        return LayerSpec((1, 1), (1, 1), (0, 0), (1, 1))
    raise TypeError(
        f"layer {name} is a {type(layer).__name__}: use Conv2d, MaxPool2d and pointwise layers"
    )


def total_stride(net: nn.Sequential) -> int:
    """The factor ``f`` by which ``net`` downsamples: the product of its strides (equal in H, W)."""
    factor_h, factor_w = 1, 1
    for name, layer in net.named_children():
        stride_h, stride_w = _layer_spec(name, layer).stride
        factor_h, factor_w = factor_h * stride_h, factor_w * stride_w
    if factor_h != factor_w:
        raise ValueError(f"net downsamples by {factor_h} x {factor_w}: strides must be square")
    return factor_h


def shift_and_stitch(net: nn.Module, x: torch.Tensor, factor: int) -> torch.Tensor:
    """Dense output of ``net`` (output stride ``factor``) on (N, C, H, W) ``x`` by f**2 runs.

    Output pixel ``(f*i + y, f*j + x)`` is output ``(i, j)`` of the run on the input shifted by
    ``(y, x)``, i.e. with its first ``y`` rows and ``x`` columns dropped. The input must be
    large enough for every shifted run to give output (a dense map of ``factor`` pixels or more).
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    runs = {(dy, dx): net(x[..., dy:, dx:]) for dy in range(factor) for dx in range(factor)}
    height = max(factor * (out.shape[-2] - 1) + dy + 1 for (dy, _), out in runs.items())
    width = max(factor * (out.shape[-1] - 1) + dx + 1 for (_, dx), out in runs.items())
    first = runs[0, 0]
    dense = first.new_full((*first.shape[:-2], height, width), math.nan)
    for (dy, dx), out in runs.items():
        dense[..., dy::factor, dx::factor][..., : out.shape[-2], : out.shape[-1]] = out
    return dense


def a_trous(net: nn.Sequential) -> nn.Sequential:
    """A copy of ``net`` with every stride set to 1 and later kernels dilated to match.

    A layer after strides with product ``d`` gets dilation ``d`` times its own, so its taps
    land on the same input pixels as before; its output is then dense, one value a pixel.
    """
    total_stride(net)  # validates the layers
    dense = copy.deepcopy(net)
    dilation_h, dilation_w = 1, 1
    for name, layer in dense.named_children():
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            spec = _layer_spec(name, layer)
            (stride_h, stride_w), own = spec.stride, spec.dilation
            layer.dilation = (own[0] * dilation_h, own[1] * dilation_w)
            layer.stride = (1, 1)
            dilation_h, dilation_w = dilation_h * stride_h, dilation_w * stride_w
    return dense
