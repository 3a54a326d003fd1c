"""Receptive fields: which input pixels each output unit of a convolutional network can see.

Along one axis, a unit's geometry with respect to the input is three numbers (Araujo, Norris
and Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019): the
size ``r`` of its receptive field, the effective stride ``S`` (how far the field moves, in
input pixels, from one unit to the next) and the effective padding ``P``. Output unit ``u``
covers input pixels ``-P + u*S`` to ``-P + u*S + r - 1`` and is centred on
``-P + u*S + (r - 1)/2``. A layer with kernel ``k``, stride ``s``, padding ``p`` and
dilation ``d`` updates them as::

    r <- r + d*(k - 1)*S        S <- S*s        P <- P + p*S

with ``S`` the effective stride *before* the layer. Transposed convolutions have the
fractional stride ``1/s``, so the numbers are kept exact: ints, or ``fractions.Fraction``
where they are not whole.

:func:`receptive_field` and :func:`receptive_field_table` apply the recurrences to any model
that ``torch.fx`` can trace, branches and merges included; :func:`empirical_receptive_field`
measures the same region by back-propagation, and :func:`effective_receptive_field` the
gradient-weighted one of Luo, Li, Urtasun and Zemel (NeurIPS 2016).
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import fx, nn

Pair = tuple[int, int]
Interval = tuple[int, int]
Exact = int | Fraction


def _exact(value: Exact) -> Exact:
    """``value`` as an int when it is whole, so that it prints and indexes like one."""
    value = Fraction(value)
    return value.numerator if value.denominator == 1 else value


# Layers that act on each position (or each channel) alone. Normalisations that pool
# statistics over the feature map (GroupNorm, InstanceNorm, LayerNorm) are deliberately absent:
# every output then depends on every input.
NEUTRAL_LAYERS = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.modules.batchnorm._BatchNorm,
    nn.LocalResponseNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
# Functions and tensor methods that combine their inputs position by position.
POINTWISE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.imul,
    operator.sub,
    operator.truediv,
    torch.add,
    torch.mul,
    torch.sub,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.relu,
    F.leaky_relu,
    F.gelu,
    F.dropout,
    F.dropout2d,
}
POINTWISE_METHODS = {"add", "add_", "mul", "mul_", "sub", "relu", "relu_", "sigmoid", "tanh"}
POINTWISE_METHODS |= {"contiguous", "clone", "float", "double", "to"}


@dataclass(frozen=True)
class AxisGeometry:
    """Receptive-field size ``r``, effective stride ``S`` and effective padding ``P`` on one axis.

    All three are in input pixels and exact: an ``int`` when whole (always, without transposed
    convolutions), else a ``Fraction``. The default is the input itself (r=1, S=1, P=0).
    """

    r: Exact = 1
    S: Exact = 1
    P: Exact = 0

    def __post_init__(self) -> None:
        for name in ("r", "S", "P"):
            object.__setattr__(self, name, _exact(getattr(self, name)))

    def then(
        self, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
    ) -> AxisGeometry:
        """The geometry after one more convolution or pooling layer with these settings."""
        span = dilation * (kernel - 1)
        return self._compose(span, stride, padding)

    def then_transposed(
        self, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
    ) -> AxisGeometry:
        """The geometry after a transposed convolution: a convolution of stride ``1/stride``.

        Its output unit ``u`` reads input units ``(u + padding - dilation*(kernel-1))/stride``
        to ``(u + padding)/stride``; only the whole numbers in that range exist, so the
        region is the hull of the pixels a unit can see. ``output_padding`` only adds units
        at the end and leaves the geometry alone.
        """
        span = Fraction(dilation * (kernel - 1), stride)
        return self._compose(span, Fraction(1, stride), span - Fraction(padding, stride))

    def _compose(self, span: Exact, stride: Exact, padding: Exact) -> AxisGeometry:
        return AxisGeometry(self.r + span * self.S, self.S * stride, self.P + padding * self.S)

    def interval(self, unit: int) -> tuple[Exact, Exact]:
        """First and last input pixel (inclusive) in the receptive field of output ``unit``."""
        start = -self.P + unit * self.S
        return _exact(start), _exact(start + self.r - 1)

    def centre(self, unit: int) -> Exact:
        """Input coordinate of the centre of output ``unit``'s receptive field."""
        return _exact(-self.P + unit * self.S + Fraction(self.r - 1, 2))

    def unit_near(self, pixel: float) -> int:
        """The output unit whose receptive field is centred nearest to input ``pixel``."""
        return round((Fraction(pixel) + self.P - Fraction(self.r - 1, 2)) / self.S)

    def __str__(self) -> str:
        return f"r={self.r}, S={self.S}, P={self.P}"

    def union(self, other: AxisGeometry) -> AxisGeometry:
        """The geometry of a merge (sum, product, concatenation) of two equally strided paths."""
        if self.S != other.S:
            raise ValueError(f"cannot merge paths with effective strides {self.S} and {other.S}")
        P = max(self.P, other.P)
        end = max(self.r - self.P, other.r - other.P)
        return AxisGeometry(end + P, self.S, P)


@dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of a feature map on the height (``h``) and width (``w``) axes.

    ``misaligned`` names the merge nodes on the way where paths with differently centred
    receptive fields were added or concatenated (their union is still reported).
    """

    h: AxisGeometry = AxisGeometry()
    w: AxisGeometry = AxisGeometry()
    misaligned: tuple[str, ...] = ()

    @property
    def r(self) -> tuple[Exact, Exact]:
        """Receptive-field size (height, width) in input pixels."""
        return self.h.r, self.w.r

    @property
    def S(self) -> tuple[Exact, Exact]:
        """Effective stride (height, width) in input pixels."""
        return self.h.S, self.w.S

    @property
    def P(self) -> tuple[Exact, Exact]:
        """Effective padding (height, width) in input pixels."""
        return self.h.P, self.w.P

    def region(self, unit: Pair) -> tuple[tuple[Exact, Exact], tuple[Exact, Exact]]:
        """Input rows and columns ``((top, bottom), (left, right))`` seen by ``unit`` = (i, j)."""
        return self.h.interval(unit[0]), self.w.interval(unit[1])

    def unit_near(self, pixel: tuple[float, float]) -> Pair:
        """The output unit (i, j) whose receptive field is centred nearest to ``pixel`` (y, x)."""
        return self.h.unit_near(pixel[0]), self.w.unit_near(pixel[1])

    def __str__(self) -> str:
        return f"r={_show(self.r)}, S={_show(self.S)}, P={_show(self.P)}"


@dataclass(frozen=True)
class LayerSpec:
    """A layer's (height, width) kernel, stride, padding and dilation, as the table shows them."""

    kernel: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    transposed: bool = False

    def apply(self, geometry: Geometry) -> Geometry:
        """The geometry after this layer, given the geometry of its input."""
        step = AxisGeometry.then_transposed if self.transposed else AxisGeometry.then
        h, w = (
            step(axis, self.kernel[i], self.stride[i], self.padding[i], self.dilation[i])
            for i, axis in enumerate((geometry.h, geometry.w))
        )
        return replace(geometry, h=h, w=w)


@dataclass(frozen=True)
class TableRow:
    """One row of :func:`receptive_field_table`: a layer's settings and the geometry after it.

    ``kernel``, ``stride``, ``padding`` and ``dilation`` are ``None`` for merges and
    geometry-neutral layers; ``note`` flags misaligned merges.
    """

    name: str
    type: str
    kernel: Pair | None
    stride: Pair | None
    padding: Pair | None
    dilation: Pair | None
    r: tuple[Exact, Exact]
    S: tuple[Exact, Exact]
    P: tuple[Exact, Exact]
    note: str = ""


def _pair(value: int | tuple[int, ...], name: str, layer: str) -> Pair:
    if isinstance(value, int):
        return value, value
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    raise TypeError(f"layer {layer!r}: {name}={value!r} is not an int or a pair of ints")


def layer_spec(module: nn.Module, name: str = "") -> LayerSpec | None:
    """The geometry settings of one layer, or ``None`` when it leaves geometry alone.

    Understands ``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d`` and ``AvgPool2d`` (whose
    ``ceil_mode`` changes only how many units there are, not where they look), zero or other
    padding layers, the pointwise layers in ``NEUTRAL_LAYERS``, and modules with a
    ``layer_spec()`` method that states their geometry (such as a crop). Anything else raises a
    ``TypeError`` naming the layer, because guessing could silently give a wrong answer.
    """
    label = name or type(module).__name__
    if isinstance(module, NEUTRAL_LAYERS):
        return None
    if callable(getattr(module, "layer_spec", None)):  # a layer that states its own geometry
        return module.layer_spec()
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        kernel = _pair(module.kernel_size, "kernel_size", label)
        dilation = _pair(module.dilation, "dilation", label)
        if module.padding == "valid":
            padding = (0, 0)
        elif module.padding == "same":  # torch pads the odd pixel on the bottom/right
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        else:
            padding = _pair(module.padding, "padding", label)
        return LayerSpec(
            kernel,
            _pair(module.stride, "stride", label),
            padding,
            dilation,
            transposed=isinstance(module, nn.ConvTranspose2d),
        )
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        kernel = _pair(module.kernel_size, "kernel_size", label)
        stride = _pair(module.stride or module.kernel_size, "stride", label)
        dilation = _pair(getattr(module, "dilation", 1), "dilation", label)
        return LayerSpec(kernel, stride, _pair(module.padding, "padding", label), dilation)
    if isinstance(
        module, nn.ZeroPad2d | nn.ConstantPad2d | nn.ReflectionPad2d | nn.ReplicationPad2d
    ):
        left, _, top, _ = module.padding
        # Padding by (top, left) shifts every later unit; the field itself stays one pixel.
        return LayerSpec((1, 1), (1, 1), (top, left), (1, 1))
    raise TypeError(
        f"receptive_field: layer {label!r} is a {type(module).__name__}, whose effect on "
        "geometry fcnlib does not know; supported are Conv2d, ConvTranspose2d, MaxPool2d, "
        "AvgPool2d, padding layers and pointwise layers (fcnlib.receptive.NEUTRAL_LAYERS). "
        "Pass `until=` to stop before it, or analyse the part of the model before it"
    )


def _show(value: tuple | None) -> str:
    if value is None:
        return "-"
    return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"


def _merge(name: str, inputs: list[Geometry]) -> tuple[Geometry, str]:
    """Union of the inputs' regions, and a note when their centres differ."""
    notes, misaligned = [], sum((g.misaligned for g in inputs), ())
    h, w = inputs[0].h, inputs[0].w
    for other in inputs[1:]:
        for axis, (mine, theirs) in zip("hw", ((h, other.h), (w, other.w)), strict=True):
            if mine.S != theirs.S:
                raise ValueError(
                    f"receptive_field: node {name!r} merges paths with effective strides "
                    f"{mine.S} and {theirs.S} on axis {axis}; their union has no single geometry"
                )
            if mine.centre(0) != theirs.centre(0):
                notes.append(f"{axis}: centres {mine.centre(0)} and {theirs.centre(0)}")
        h, w = h.union(other.h), w.union(other.w)
    if notes:
        misaligned = (*misaligned, name)
        warnings.warn(
            f"receptive_field: paths merging at {name!r} are misaligned ({'; '.join(notes)}); "
            "the union of their regions is reported",
            stacklevel=2,
        )
    note = "misaligned: " + "; ".join(notes) if notes else ""
    return Geometry(h, w, tuple(dict.fromkeys(misaligned))), note


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping modules with a ``layer_spec()`` method and pointwise layers
    (subclasses of ``NEUTRAL_LAYERS`` too, such as timm's batch norm fused with its activation)
    as single calls."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (
            callable(getattr(module, "layer_spec", None))
            or isinstance(module, NEUTRAL_LAYERS)
            or super().is_leaf_module(module, qualified_name)
        )


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace``, except that modules stating their geometry stay single calls.

    A module with a ``layer_spec()`` method (see :func:`layer_spec`) is not traced into, so
    its forward may use the sizes of its inputs, as a crop to a reference map does.
    """
    tracer = _Tracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _walk(model: nn.Module, until: str | None, neutral_rows: bool) -> tuple[Geometry, list]:
    """Trace ``model`` with torch.fx and propagate geometry node by node."""
    if _Tracer().is_leaf_module(model, ""):  # a single torch.nn layer: trace it as a call
        model = nn.Sequential(model)
    try:
        graph = symbolic_trace(model)
    except Exception as error:
        raise TypeError(
            f"receptive_field: torch.fx cannot trace {type(model).__name__} ({error}); "
            "analyse a traceable part of it, e.g. an nn.Sequential of its layers"
        ) from error
    modules = dict(graph.named_modules())
    geometry: dict[fx.Node, Geometry | None] = {}
    rows: list[TableRow] = []

    def row(name, kind, spec, g, note=""):
        fields = (spec.kernel, spec.stride, spec.padding, spec.dilation) if spec else (None,) * 4
        rows.append(TableRow(name, kind, *fields, g.r, g.S, g.P, note))

    stop = _stop_node(graph, until)
    result = None
    for node in graph.graph.nodes:
        inputs = [geometry[a] for a in node.all_input_nodes if geometry[a] is not None]
        label = str(node.target) if node.op == "call_module" else node.name
        if node.op == "placeholder":
            geometry[node] = Geometry() if not geometry else None
        elif node.op == "get_attr":
            geometry[node] = None
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise ValueError(
                    "receptive_field: the model returns several outputs; name one with until="
                )
            result = geometry[node.args[0]]
        elif not inputs:
            geometry[node] = None
        elif node.op == "call_module":
            module = modules[node.target]
            spec = layer_spec(module, label)
            geometry[node] = spec.apply(inputs[0]) if spec else inputs[0]
            if spec or neutral_rows:
                row(label, type(module).__name__, spec, geometry[node])
        elif _pointwise(node):
            if len(inputs) == 1:
                geometry[node] = inputs[0]
            else:
                geometry[node], note = _merge(label, inputs)
                kind = getattr(node.target, "__name__", str(node.target))
                row(label, kind, None, geometry[node], note)
        else:
            raise TypeError(
                f"receptive_field: node {label!r} calls {node.target!r}, whose effect on "
                "geometry fcnlib does not know; pass `until=` to stop before it"
            )
        if node is stop:
            result = geometry[node]
            break
    if result is None:
        raise ValueError("receptive_field: the model's output does not depend on its input")
    return result, rows


def _stop_node(graph: fx.GraphModule, until: str | None) -> fx.Node | None:
    """The last node that is ``until`` or lies inside the submodule named ``until``."""
    if until is None:
        return None
    found = [
        node
        for node in graph.graph.nodes
        if until == node.name
        or (node.op == "call_module" and f"{node.target}.".startswith(f"{until}."))
    ]
    if not found:
        raise ValueError(f"receptive_field: until={until!r} names no layer or node of the model")
    return found[-1]


def _pointwise(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in POINTWISE_METHODS
    if node.target in (torch.cat, torch.concat):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        return dim in (1, -3)  # channels of an (N, C, H, W) tensor
    return node.target in POINTWISE_FUNCTIONS


def receptive_field(model: nn.Module, until: str | None = None) -> Geometry:
    """Geometry of ``model``'s output (or of layer/node ``until``) with respect to its input.

    ``model`` is any module that ``torch.fx`` can trace, taking one (N, C, H, W) tensor.
    ``until`` names a layer (``"features.30"``), a submodule (``"layer4"``: its output) or an
    fx node (``"add_3"``); the walk stops there, so later layers need not be understood. Merges
    of paths (residual additions, concatenation along channels) give the union of the
    regions and are listed in ``misaligned`` (with a warning) when the paths' fields are not
    centred on the same pixel.
    """
    return _walk(model, until, neutral_rows=False)[0]


def receptive_field_table(
    model: nn.Module, until: str | None = None, neutral: bool = False
) -> list[TableRow]:
    """One row per layer that changes geometry (every layer with ``neutral=True``) and merge.

    Each row has the layer's settings and the geometry of its output; print it with
    :func:`format_table`.
    """
    return _walk(model, until, neutral_rows=neutral)[1]


def format_table(rows: Iterable[TableRow]) -> str:
    """The rows as a fixed-width text table; ``3x1`` marks values that differ by axis."""
    header = ("layer", "type", "k", "s", "p", "d", "r", "S", "P", "")
    cells = [header] + [
        (
            row.name,
            row.type,
            *(_show(v) for v in (row.kernel, row.stride, row.padding, row.dilation)),
            *(_show(v) for v in (row.r, row.S, row.P)),
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    align = [str.ljust, str.ljust] + [str.rjust] * 7 + [str.ljust]
    return "\n".join(
        "  ".join(a(c, w) for a, c, w in zip(align, line, widths, strict=True)).rstrip()
        for line in cells
    )


class _DensePool(nn.Module):
    """A max pooling's window as a mean, so every pixel in a window gets a gradient."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool
        spec = layer_spec(pool)
        self.kernel, self.stride, self.padding, self.dilation = (
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.dilation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.pool(x.detach()).shape[-2:]  # ceil_mode decides how many windows there are
        extra = [
            max(0, (n - 1) * s + d * (k - 1) + 1 - (m + 2 * p))
            for n, s, d, k, m, p in zip(
                size,
                self.stride,
                self.dilation,
                self.kernel,
                x.shape[-2:],
                self.padding,
                strict=True,
            )
        ]
        (ph, pw), channels = self.padding, x.shape[1]
        padded = F.pad(x, (pw, pw + extra[1], ph, ph + extra[0]))
        weight = x.new_full((channels, 1, *self.kernel), 1 / math.prod(self.kernel))
        out = F.conv2d(padded, weight, None, self.stride, 0, self.dilation, groups=channels)
        return out[..., : size[0], : size[1]]


def _narrow(module: nn.Module) -> nn.Module | None:
    """A one-channel layer with ``module``'s geometry, or None when channels do not matter."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        settings = {k: getattr(module, k) for k in ("kernel_size", "stride", "padding")}
        settings |= {"dilation": module.dilation, "padding_mode": module.padding_mode}
        if isinstance(module, nn.ConvTranspose2d):
            settings["output_padding"] = module.output_padding
        return type(module)(1, 1, bias=False, **settings)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return type(module)(1)
    return None


def _probe(model: nn.Module, narrow: bool) -> nn.Module:
    """A float64 copy of ``model`` whose every path from input to output carries gradient.

    Convolution weights become 1/fan-in, biases 0, batch norms the identity and max pools
    means, so with a positive input every activation is positive and no gradient vanishes by
    accident (a max pool's gradient reaches only its window's maximum).
    """
    probe = copy.deepcopy(model)
    for name, module in list(probe.named_modules()):
        new = _narrow(module) if narrow else None
        if isinstance(module, nn.MaxPool2d):
            new = _DensePool(module)
        if new is not None:
            if not name:
                return _probe(nn.Sequential(module), narrow)
            parent, _, attribute = name.rpartition(".")
            setattr(probe.get_submodule(parent), attribute, new)
    if any(t.is_meta for t in [*probe.parameters(), *probe.buffers()]):
        probe = probe.to_empty(device="cpu")
    probe = probe.double().eval()
    with torch.no_grad():
        for module in probe.modules():
            tensors = [
                *module.named_parameters(recurse=False),
                *module.named_buffers(recurse=False),
            ]
            for name, tensor in tensors:
                if name == "weight" and isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                    tensor.fill_(1 / tensor[0].numel())
                elif name in ("bias", "running_mean"):
                    tensor.zero_()
                elif tensor.is_floating_point():
                    tensor.fill_(1)
    return probe


def _in_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            return module.in_channels
    raise ValueError("cannot tell the model's input channels: it has no convolution")


def _check_unit(unit: Pair | None, shape: Sequence[int]) -> Pair:
    if unit is None:
        return (shape[0] - 1) // 2, (shape[1] - 1) // 2
    if not all(0 <= u < n for u, n in zip(unit, shape, strict=True)):
        raise ValueError(f"unit={unit} lies outside the output of size {tuple(shape)}")
    return unit


def empirical_receptive_field(
    model: nn.Module, input_size: Pair, unit: Pair | None = None, narrow: bool = True
) -> tuple[Interval, Interval]:
    """Rows and columns ``((top, bottom), (left, right))`` of input pixels that reach ``unit``.

    Measured by back-propagating from output ``unit`` = (i, j) (default: the centre unit) of
    a copy of ``model`` given an (H, W) = ``input_size`` input, with float64 weights made
    positive so that a pixel's gradient is non-zero exactly when some path links it to the
    unit. ``narrow=True`` gives every convolution one channel first, which keeps the
    measurement cheap and leaves geometry unchanged. The model must return an (N, C, H, W)
    map; normalisations other than batch norm are not supported.
    """
    probe = _probe(model, narrow)
    channels = 1 if narrow else _in_channels(model)
    x = torch.ones(1, channels, *input_size, dtype=torch.float64, requires_grad=True)
    y = probe(x)
    if not isinstance(y, torch.Tensor) or y.dim() != 4:
        raise ValueError("empirical_receptive_field: the model must return an (N, C, H, W) map")
    i, j = _check_unit(unit, y.shape[-2:])
    (grad,) = torch.autograd.grad(y[0, :, i, j].sum(), x)
    seen = grad[0].abs().sum(0) > 0
    if not seen.any():
        raise ValueError(f"unit {(i, j)} sees no input pixel")
    rows, cols = seen.any(1).nonzero()[:, 0], seen.any(0).nonzero()[:, 0]
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))


def effective_receptive_field(
    model: nn.Module,
    input_size: Pair,
    unit: Pair | None = None,
    samples: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """The effective receptive field of ``unit`` (default: the centre unit), after Luo et al.

    The mean over ``samples`` standard-normal inputs of |d y[unit] / d x| summed over channels,
    for ``model`` as it is (typically freshly initialised) in eval mode; an (H, W) float64 map
    normalised to sum to 1. ``seed`` fixes the inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    first = next(model.parameters())
    x = torch.randn(samples, _in_channels(model), *input_size, generator=generator)
    x = x.to(first.device, first.dtype).requires_grad_()
    training = model.training
    try:
        y = model.eval()(x)
    finally:
        model.train(training)
    i, j = _check_unit(unit, y.shape[-2:])
    (grad,) = torch.autograd.grad(y[:, :, i, j].sum(), x)
    erf = grad.abs().sum(1).mean(0).double().cpu()
    if not erf.sum() > 0:
        raise ValueError(f"no gradient reaches the input from unit {(i, j)}: are all ReLUs dead?")
    return erf / erf.sum()


def spread(erf: torch.Tensor) -> tuple[float, float]:
    """Standard deviation in pixels of a 2-D map's row and column marginals (its "radius")."""
    values = []
    for axis in (1, 0):
        profile = erf.sum(axis).double()
        profile = profile / profile.sum()
        position = torch.arange(len(profile), dtype=torch.float64)
        mean = (profile * position).sum()
        values.append(float((profile * (position - mean) ** 2).sum().sqrt()))
    return values[0], values[1]
