"""Output-size arithmetic of convolutions and pooling, traced layer by layer through a net.

One spatial dimension of size ``i`` through a layer with kernel ``k``, stride ``s``, padding
``p`` and dilation ``d`` gives ``o = floor((i + 2p - d(k - 1) - 1) / s) + 1`` outputs. With
``ceil_mode`` (pooling only, as in Caffe) the floor becomes a ceiling, except that, as in
PyTorch, a last window that would start in the right padding is dropped. A ceiling can turn a
negative span into one output: a 2x2 pooling of a 1x1 input in ceil mode gives 1x1.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fcnlib.receptive import NEUTRAL_LAYERS, layer_spec


def output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length, in positions, of a convolution or pooling over ``size`` input positions.

    Returns 0 or less when no window fits: when the (dilated) kernel is longer than the padded
    input, except in ``ceil_mode`` where a window that starts inside the input still counts.
    """
    if size < 0 or kernel_size < 1 or stride < 1 or padding < 0 or dilation < 1:
        raise ValueError(
            f"need size >= 0, kernel_size, stride, dilation >= 1 and padding >= 0; got "
            f"size={size}, kernel_size={kernel_size}, stride={stride}, padding={padding}, "
            f"dilation={dilation}"
        )
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if out > 0 and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@dataclass(frozen=True)
class LayerSize:
    """The output of one layer: its name, type, channels and spatial size (pixels)."""

    name: str
    kind: str
    channels: int
    height: int
    width: int


def trace(net: nn.Sequential, height: int, width: int, channels: int = 3) -> list[LayerSize]:
    """The output size of every layer of ``net`` for a (channels, height, width) input.

    ``net`` is a sequence of Conv2d, MaxPool2d, AvgPool2d and size-preserving layers
    (:data:`fcnlib.receptive.NEUTRAL_LAYERS`: ReLU, Dropout, BatchNorm2d, ...), such as
    :func:`fcnlib.backbone.vgg16`. The trace stops after the first layer whose output is empty
    (height or width below 1).
    """
    rows = []
    for name, layer in net.named_children():
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            spec = layer_spec(layer, name)  # the same reading of a layer as receptive_field's
            ceil_mode = getattr(layer, "ceil_mode", False)
            height, width = (
                output_size(*args, ceil_mode)
                for args in zip(
                    (height, width),
                    spec.kernel,
                    spec.stride,
                    spec.padding,
                    spec.dilation,
                    strict=True,
                )
            )
            channels = getattr(layer, "out_channels", channels)
        elif not isinstance(layer, NEUTRAL_LAYERS):
            raise TypeError(
                f"layer {name} is a {type(layer).__name__}, whose output size trace() does not "
                "know: use Conv2d, MaxPool2d, AvgPool2d, ReLU, Dropout or BatchNorm2d"
            )
        rows.append(LayerSize(name, type(layer).__name__, channels, height, width))
        if height < 1 or width < 1:
            break
    return rows


def format_trace(rows: list[LayerSize]) -> str:
    """A text table of a :func:`trace`, one layer a line."""
    lines = [f"{'layer':<8} {'type':<10} {'channels':>8} {'output H x W':>14}"]
    lines += [
        f"{r.name:<8} {r.kind:<10} {r.channels:>8} {f'{r.height} x {r.width}':>14}" for r in rows
    ]
    return "\n".join(lines)


def smallest_input(net: nn.Sequential, layer: str | None = None, limit: int = 4096) -> int:
    """The smallest square input side (pixels) for which ``layer`` (default: the last) has output.

    Searches sides 1..``limit``; raises ValueError when none of them gives output.
    """
    names = [name for name, _ in net.named_children()]
    target = names[-1] if layer is None else layer
    if target not in names:
        raise ValueError(f"layer {target!r} is not in the net; known: {names}")
    for side in range(1, limit + 1):
        row = next((r for r in trace(net, side, side) if r.name == target), None)
        if row is not None and row.height >= 1 and row.width >= 1:
            return side
    raise ValueError(f"no square input up to limit={limit} pixels gives {target} an output")
