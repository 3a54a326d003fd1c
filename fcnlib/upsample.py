"""Upsampling by transposed convolution: bilinear kernels, conv matrices and output-size arithmetic.

FCN upsamples its coarse class scores with transposed ("backwards") convolutions initialised to
bilinear interpolation, as the reference implementation's ``surgery.upsample_filt`` does. The
helpers here build those layers and the tools the deconvolution chapter uses to explain them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fcnlib.sizes import output_size


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def bilinear_kernel(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (size, size) bilinear interpolation kernel of the reference FCN's net surgery.

    With ``factor = (size + 1) // 2`` and ``centre = factor - 1`` for an odd size or
    ``factor - 0.5`` for an even one, entry (i, j) is
    ``(1 - |i - centre| / factor) * (1 - |j - centre| / factor)``. A transposed convolution
    with this kernel, size ``2 * factor`` and stride ``factor`` interpolates bilinearly.
    """
    _check_positive("size", size)
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = torch.arange(size, dtype=dtype)
    profile = 1 - (taps - centre).abs() / factor
    return profile[:, None] * profile[None, :]


def bilinear_weight(channels: int, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (channels, channels, size, size) ConvTranspose2d weight that upsamples each channel alone.

    The bilinear kernel sits on the channel diagonal (channel c feeds only output channel c) and
    every other entry is zero, as ``surgery.interp`` sets FCN's upsampling layers.
    """
    _check_positive("channels", channels)
    weight = torch.zeros(channels, channels, size, size, dtype=dtype)
    diagonal = torch.arange(channels)
    weight[diagonal, diagonal] = bilinear_kernel(size, dtype)
    return weight


def bilinear_upsampler(
    channels: int, factor: int, learnable: bool = False, padding: int = 0, odd: bool = False
) -> nn.ConvTranspose2d:
    """An upsampling ConvTranspose2d (kernel 2·factor, stride factor, no bias), bilinear at start.

    Maps (N, channels, H, W) to (N, channels, factor·(H - 1) + 2·factor - 2·padding, ...).
    With the default ``padding=0`` the output overhangs the input by factor/2 pixels on every
    side, as in the reference FCN, which crops afterwards; ``padding=factor // 2`` does that crop
    inside the layer and gives exactly factor·H x factor·W for an even factor. With
    ``learnable=False`` the weight is frozen (``requires_grad`` is False), as in the reference
    implementation; with True it is bilinear only at initialisation.

    The even kernel puts each input unit halfway between two output units; ``odd=True`` gives
    the kernel of size 2·factor - 1, which puts input unit i on output unit factor·i +
    factor - 1, for grids whose coarse units fall on fine ones (one unit shorter output).
    """
    _check_positive("factor", factor)
    if padding < 0 or padding >= factor:
        raise ValueError(f"padding must lie in 0..{factor - 1} for factor {factor}, got {padding}")
    size = 2 * factor - odd
    layer = nn.ConvTranspose2d(channels, channels, size, stride=factor, padding=padding, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_weight(channels, size))
    layer.weight.requires_grad_(learnable)
    return layer


def conv_matrix(conv: nn.Conv1d | nn.Conv2d, input_size: int | tuple[int, ...]) -> torch.Tensor:
    """The matrix M of a convolution's linear part for one input size: ``conv(x) - bias = M x``.

    ``input_size`` is the spatial size (L for Conv1d, (H, W) or an int for Conv2d). M has shape
    (out_channels · prod(output size), in_channels · prod(input size)) and acts on inputs
    flattened in PyTorch's (C, H, W) order. Column j is the convolution of the j-th basis
    vector, so M is exact for any stride, padding, dilation and groups.
    """
    if not isinstance(conv, nn.Conv1d | nn.Conv2d):
        raise TypeError(f"conv must be an nn.Conv1d or nn.Conv2d, got {type(conv).__name__}")
    dims = 1 if isinstance(conv, nn.Conv1d) else 2
    size = (input_size,) * dims if isinstance(input_size, int) else tuple(input_size)
    if len(size) != dims:
        raise ValueError(f"input_size must have {dims} entries for {type(conv).__name__}: {size}")
    numel = conv.in_channels * math.prod(size)
    basis = torch.eye(numel, dtype=conv.weight.dtype).reshape(numel, conv.in_channels, *size)
    with torch.no_grad():
        columns = conv(basis) - conv(torch.zeros_like(basis[:1]))
    return columns.reshape(numel, -1).T


def output_padding(
    input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """The ConvTranspose ``output_padding`` that maps a convolution's output back to input_size.

    A strided convolution sends ``stride`` consecutive input sizes to one output size; this is
    the remainder (i + 2p - d(k - 1) - 1) mod s that tells them apart.
    """
    if output_size(input_size, kernel_size, stride, padding, dilation) < 1:
        raise ValueError(
            f"kernel_size {kernel_size} (dilation {dilation}) does not fit input_size "
            f"{input_size} with padding {padding}: pad more or use a smaller kernel"
        )
    return (input_size + 2 * padding - dilation * (kernel_size - 1) - 1) % stride


def transposed_output_size(
    input_size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
) -> int:
    """Output length of a transposed convolution along one axis.

    o = s(i - 1) + d(k - 1) + 1 - 2p + output_padding, which is s(i - 1) + k - 2p + output_padding
    without dilation. ``output_padding`` must be smaller than the stride or the dilation.
    """
    if not 0 <= output_padding < max(stride, dilation):
        raise ValueError(
            f"output_padding must lie in 0..{max(stride, dilation) - 1} for stride {stride} and "
            f"dilation {dilation}, got {output_padding}"
        )
    size = stride * (input_size - 1) + dilation * (kernel_size - 1) + 1 - 2 * padding
    if size + output_padding < 1:
        raise ValueError(
            f"padding {padding} crops all of the transposed output for input_size {input_size} "
            f"and kernel_size {kernel_size}: use less padding"
        )
    return size + output_padding


def transpose_conv(
    conv: nn.Conv1d | nn.Conv2d, input_size: int | tuple[int, ...]
) -> nn.ConvTranspose1d | nn.ConvTranspose2d:
    """The transposed convolution of ``conv`` (same weight, no bias) for inputs of input_size.

    It computes ``y ↦ Mᵀ y`` for M = ``conv_matrix(conv, input_size)``: the gradient of the
    convolution with respect to its input. Its ``output_padding`` is chosen so that it returns
    exactly ``input_size``.
    """
    dims = 1 if isinstance(conv, nn.Conv1d) else 2
    size = (input_size,) * dims if isinstance(input_size, int) else tuple(input_size)
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("transpose_conv needs numeric zero padding: set padding_mode='zeros'")
    extra = tuple(
        output_padding(*arguments)
        for arguments in zip(
            size, conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True
        )
    )
    kind = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
    transposed = kind(
        conv.out_channels,
        conv.in_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        output_padding=extra,
        groups=conv.groups,
        bias=False,
        dilation=conv.dilation,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        transposed.weight.copy_(conv.weight)
    return transposed


def scatter(x: torch.Tensor, kernel: torch.Tensor, stride: int) -> torch.Tensor:
    """A transposed convolution written as what it does: every pixel of the (H, W)
    input ``x`` adds ``x[i, j] * kernel`` to the (k, k) window of the output that
    starts at ``(i * stride, j * stride)``. One channel, no padding; the output is
    (stride (H - 1) + k, stride (W - 1) + k), as ``F.conv_transpose2d`` gives it."""
    _check_positive("stride", stride)
    (height, width), k = x.shape, kernel.shape[0]
    out = x.new_zeros(stride * (height - 1) + k, stride * (width - 1) + k)
    for i in range(height):
        for j in range(width):
            top, left = i * stride, j * stride
            out[top : top + k, left : left + k] += x[i, j] * kernel
    return out


def overlap_counts(input_size: int, kernel_size: int, stride: int) -> torch.Tensor:
    """How many input pixels write to each output pixel of a 2-D transposed convolution.

    The transposed convolution of an all-ones (input_size, input_size) input with an all-ones
    kernel: an int64 (o, o) map with o = stride·(input_size - 1) + kernel_size. Uneven counts in
    the interior are the overlap behind checkerboard artifacts (Odena et al., Distill 2016).
    """
    for name, value in (
        ("input_size", input_size),
        ("kernel_size", kernel_size),
        ("stride", stride),
    ):
        _check_positive(name, value)
    ones = torch.ones(1, 1, input_size, input_size, dtype=torch.float64)
    kernel = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    return F.conv_transpose2d(ones, kernel, stride=stride)[0, 0].round().long()


class ArithmeticCase(NamedTuple):
    """A convolution whose transpose is drawn in Dumoulin and Visin (2016), chapter 4."""

    figure: str
    name: str
    input_size: int
    kernel_size: int
    stride: int
    padding: int


DUMOULIN_VISIN_CASES = (
    ArithmeticCase("4.1", "no padding, unit strides", 4, 3, 1, 0),
    ArithmeticCase("4.2", "zero padding, unit strides", 5, 4, 1, 2),
    ArithmeticCase("4.3", "half padding, unit strides", 5, 3, 1, 1),
    ArithmeticCase("4.4", "full padding, unit strides", 5, 3, 1, 2),
    ArithmeticCase("4.5", "no padding, strides", 5, 3, 2, 0),
    ArithmeticCase("4.6", "padding, strides", 5, 3, 2, 1),
    ArithmeticCase("4.7", "padding, strides (odd)", 6, 3, 2, 1),
)
"""The transposed-convolution cases of "A guide to convolution arithmetic for deep learning"."""
