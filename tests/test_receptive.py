import math
from collections import OrderedDict
from fractions import Fraction

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib.backbone import vgg16
from fcnlib.receptive import (
    AxisGeometry,
    LayerSpec,
    effective_receptive_field,
    empirical_receptive_field,
    format_table,
    layer_spec,
    receptive_field,
    receptive_field_table,
    spread,
    symbolic_trace,
)


def on_meta(build):
    """Build a model without allocating or initialising weights: geometry needs none."""
    with torch.device("meta"):
        return build()


def inner_unit(geometry):
    """The first output unit whose receptive field starts inside the image, and where it ends."""
    units, ends = [], []
    for axis in (geometry.h, geometry.w):
        unit = math.ceil(axis.P / axis.S)
        units.append(unit)
        ends.append(int(axis.interval(unit)[1]))
    return tuple(units), ends


def analytic_region(geometry, unit):
    return tuple(tuple(int(v) for v in axis) for axis in geometry.region(unit))


# Torchvision's VGG16 (pool3 = features.16, pool4 = 23, pool5 = 30) and the paper's Table 1.
VGG16_POOLS = {"16": (44, 8, 18), "23": (100, 16, 42), "30": (212, 32, 90)}


@pytest.mark.parametrize(("layer", "expected"), VGG16_POOLS.items())
def test_torchvision_vgg16_pools_analytic(layer, expected):
    geometry = receptive_field(on_meta(torchvision.models.vgg16).features, until=layer)
    assert (geometry.r, geometry.S, geometry.P) == tuple((v, v) for v in expected)


def narrow_vgg16():
    """VGG16 up to fc7 with torchvision's geometry and 1 to 64 channels: cheap to measure."""
    return vgg16(pad100=False, ceil_mode=False, width=1 / 64)


def test_narrow_vgg16_copy_has_torchvision_geometry():
    features = on_meta(torchvision.models.vgg16).features
    ours = receptive_field_table(narrow_vgg16())
    theirs = receptive_field_table(features)
    assert len(theirs) == 18 and [r.name for r in ours[16:19]] == ["conv5_3", "pool5", "fc6"]
    for mine, reference in zip(ours[:18], theirs, strict=True):
        assert (mine.kernel, mine.stride, mine.padding, mine.dilation) == (
            reference.kernel,
            reference.stride,
            reference.padding,
            reference.dilation,
        )
        assert (mine.r, mine.S, mine.P) == (reference.r, reference.S, reference.P)


@pytest.mark.parametrize(
    ("layer", "expected"),
    [("pool3", (44, 8, 18)), ("pool5", (212, 32, 90)), ("fc7", (404, 32, 90))],
)
def test_convolutionalised_vgg16_empirically(layer, expected):
    model = narrow_vgg16()
    geometry = receptive_field(model, until=layer)
    assert (geometry.h.r, geometry.h.S, geometry.h.P) == expected  # fc7: paper's Table 1, 404
    unit, ends = inner_unit(geometry)
    trunk = model[: list(dict(model.named_children())).index(layer) + 1]
    size = (ends[0] + 8, ends[1] + 8)
    measured = empirical_receptive_field(trunk, size, unit=unit)
    assert measured == analytic_region(geometry, unit)
    assert measured[0][1] - measured[0][0] + 1 == expected[0]


@pytest.mark.parametrize(
    ("build", "expected"),
    [(torchvision.models.resnet18, (435, 32, 217)), (torchvision.models.resnet50, (427, 32, 213))],
)
def test_torchvision_resnets_analytic_equals_empirical(build, expected):
    model = on_meta(build)
    geometry = receptive_field(model, until="layer4")
    assert geometry.misaligned == ()  # downsampling shortcuts stay centred
    body = nn.Sequential(*list(model.children())[:-2])
    assert receptive_field(body) == geometry
    unit, ends = inner_unit(geometry)
    measured = empirical_receptive_field(body, (ends[0] + 5, ends[1] + 5), unit=unit)
    assert measured == analytic_region(geometry, unit)
    assert (geometry.h.r, geometry.h.S, geometry.h.P) == expected


def test_narrowing_does_not_change_the_measurement():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Conv2d(8, 4, (5, 3), stride=2, dilation=(1, 2)),
    )
    for unit in [(0, 0), (3, 2), (5, 4)]:
        wide = empirical_receptive_field(model, (31, 29), unit=unit, narrow=False)
        assert wide == empirical_receptive_field(model, (31, 29), unit=unit)


conv = st.builds(
    lambda kh, kw, s, d, pad, bias: nn.Conv2d(
        2, 2, (kh, kw), stride=s, padding=(pad % kh, pad % kw), dilation=d, bias=bias
    ),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 4),
    st.booleans(),
)
maxpool = st.builds(
    lambda k, s, d, pad, ceil: nn.MaxPool2d(
        k, s, padding=pad % (k // 2 + 1), dilation=d, ceil_mode=ceil
    ),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(0, 2),
    st.booleans(),
)
avgpool = st.builds(
    lambda k, s, pad, ceil, include: nn.AvgPool2d(
        k, s, padding=pad % (k // 2 + 1), ceil_mode=ceil, count_include_pad=include
    ),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(0, 2),
    st.booleans(),
    st.booleans(),
)
neutral = st.sampled_from([nn.ReLU, nn.Identity, lambda: nn.BatchNorm2d(2), nn.Dropout])
layer = st.one_of(conv, maxpool, avgpool, st.builds(lambda f: f(), neutral))


@settings(max_examples=40, deadline=None)
@given(
    layers=st.lists(layer, min_size=1, max_size=5),
    margin=st.integers(0, 3),
    shift=st.integers(0, 2),
)
def test_random_stacks_analytic_equals_empirical(layers, margin, shift):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), *layers)
    geometry = receptive_field(model)
    unit, ends = inner_unit(geometry)
    unit = (unit[0] + shift, unit[1])
    size = (int(geometry.h.interval(unit[0])[1]) + 1 + margin, ends[1] + 1 + margin)
    measured = empirical_receptive_field(model, size, unit=unit)
    assert measured == analytic_region(geometry, unit)


@settings(max_examples=25, deadline=None)
@given(
    layers=st.lists(layer, min_size=1, max_size=4),
    size=st.integers(12, 30),
    where=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_border_units_see_at_most_the_clipped_analytic_region(layers, size, where):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), *layers)
    try:
        out = model.eval()(torch.zeros(1, 1, size, size)).shape[-2:]
    except RuntimeError:  # the stack shrinks this input to nothing
        return
    unit = tuple(min(int(f * n), n - 1) for f, n in zip(where, out, strict=True))
    geometry = receptive_field(model)
    clipped = [(max(start, 0), min(end, size - 1)) for start, end in geometry.region(unit)]
    try:
        measured = empirical_receptive_field(model, (size, size), unit=unit)
    except ValueError as error:
        # A unit can see nothing at all only if its field lies in the padding, or if the
        # field has holes (a dilated kernel, or a window narrower than its stride) and every
        # tap misses the image.
        specs = [spec for spec in map(layer_spec, model) if spec is not None]
        holes = any(
            (d > 1 and k > 1) or (k - 1) * d + 1 < s
            for spec in specs
            for k, s, d in zip(spec.kernel, spec.stride, spec.dilation, strict=True)
        )
        assert "sees no input pixel" in str(error)
        assert holes or any(start > end for start, end in clipped)
        return
    for (first, last), (start, end) in zip(measured, clipped, strict=True):
        assert start <= first <= last <= end


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 6),
    s=st.integers(1, 4),
    p=st.integers(0, 5),
    out_pad=st.integers(0, 3),
    n=st.integers(3, 9),
    where=st.floats(0, 1),
)
def test_transposed_convolution_has_fractional_stride(k, s, p, out_pad, n, where):
    p, out_pad = p % k, out_pad % s  # torch's limits on padding and output padding
    model = nn.ConvTranspose2d(
        1, 1, (k, 1), stride=(s, 1), padding=(p, 0), output_padding=(out_pad, 0)
    )
    geometry = receptive_field(model)
    assert (Fraction(1, s), 1) == geometry.S
    size = (n - 1) * s - 2 * p + k + out_pad
    if size < 1:
        return
    u = min(int(where * size), size - 1)
    start, end = geometry.h.interval(u)
    first, last = max(math.ceil(start), 0), min(math.floor(end), n - 1)
    if first > last:
        with pytest.raises(ValueError, match="sees no input pixel"):
            empirical_receptive_field(model, (n, 1), unit=(u, 0))
    else:
        assert empirical_receptive_field(model, (n, 1), unit=(u, 0))[0] == (first, last)


def test_downsampling_then_matching_upsampling_is_stride_one():
    down, up = nn.Conv2d(1, 1, 4, stride=4), nn.ConvTranspose2d(1, 1, 8, stride=4, padding=2)
    geometry = receptive_field(nn.Sequential(down, up))
    # up reads 7/4 of a unit of down, 1/4 unit apart: r = 4 + (7/4)*4, P = (5/4)*4
    assert geometry.S == (1, 1) and geometry.r == (11, 11) and geometry.P == (5, 5)
    for u in range(4, 12):  # the hull of the pixels a unit sees lies inside its analytic field
        (top, bottom), _ = empirical_receptive_field(nn.Sequential(down, up), (16, 4), unit=(u, 0))
        start, end = geometry.h.interval(u)
        assert start <= top <= bottom <= end and bottom - top + 1 >= 4


class Residual(nn.Module):
    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x):
        return x + self.branch(x)


def test_aligned_residual_is_the_union():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), Residual(nn.Conv2d(1, 1, 5, padding=2)))
    geometry = receptive_field(model)
    assert geometry.r == (7, 7) and geometry.P == (3, 3) and geometry.misaligned == ()
    rows = receptive_field_table(model)
    assert [row.type for row in rows] == ["Conv2d", "Conv2d", "add"]


def test_misaligned_merge_is_reported_and_measured():
    branch = nn.Sequential(nn.Conv2d(1, 1, 2), nn.ZeroPad2d((0, 1, 0, 1)))  # centre shifts 1/2
    model = Residual(branch)
    with pytest.warns(UserWarning, match="paths merging at 'add' are misaligned"):
        geometry = receptive_field(model)
    assert geometry.misaligned == ("add",) and geometry.r == (2, 2) and geometry.P == (0, 0)
    assert empirical_receptive_field(model, (6, 6), unit=(2, 2)) == analytic_region(
        geometry, (2, 2)
    )
    with pytest.warns(UserWarning):
        assert "misaligned: h: centres 0 and 1/2" in format_table(receptive_field_table(model))


def test_unknown_layers_are_named_not_ignored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3))
    with pytest.raises(TypeError, match=r"layer '1' is a Upsample"):
        receptive_field(model)
    assert receptive_field(model, until="0").r == (3, 3)
    with pytest.raises(TypeError, match="layer 'norm' is a GroupNorm"):
        receptive_field(nn.Sequential(OrderedDict(norm=nn.GroupNorm(2, 4))))
    flatten = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(TypeError, match="Flatten"):
        receptive_field(flatten)
    with pytest.raises(ValueError, match="until='layer9' names no layer"):
        receptive_field(flatten, until="layer9")


def test_functional_ops_that_move_pixels_are_refused():
    class Interpolating(nn.Module):
        def forward(self, x):
            return nn.functional.interpolate(x, scale_factor=2.0)

    with pytest.raises(TypeError, match="node 'interpolate' calls"):
        receptive_field(Interpolating())


def test_table_prints_per_axis_values():
    model = nn.Sequential(nn.Conv2d(1, 1, (3, 1), padding=(1, 0)), nn.ReLU(), nn.MaxPool2d(2))
    text = format_table(receptive_field_table(model))
    assert text.splitlines()[1].split() == [
        "0",
        "Conv2d",
        "3x1",
        "1",
        "1x0",
        "1",
        "3x1",
        "1",
        "1x0",
    ]
    assert len(receptive_field_table(model, neutral=True)) == 3


def test_recurrence_matches_a_three_layer_example_by_hand():
    # Three 3x3 convolutions with strides 2, 2, 1 and padding 1: each adds 2 * (jump so far).
    geometry = AxisGeometry().then(3, 2, 1).then(3, 2, 1).then(3, 1, 1)
    assert (geometry.r, geometry.S, geometry.P) == (1 + 2 * 1 + 2 * 2 + 2 * 4, 4, 1 + 2 + 4)
    assert geometry.unit_near(geometry.centre(5)) == 5
    assert geometry.interval(2) == (1, 15) and geometry.centre(2) == 8


def test_effective_field_of_uniform_stack_is_binomial():
    # n uniform k-tap filters: the ERF is the n-fold convolution of a uniform distribution,
    # whose variance is n * (k^2 - 1) / 12 per axis (Luo et al., section 2.2).
    n, k = 6, 3
    model = nn.Sequential(*[nn.Conv2d(1, 1, k, bias=False) for _ in range(n)])
    for layer in model:
        nn.init.constant_(layer.weight, 1 / k**2)
    erf = effective_receptive_field(model, (n * (k - 1) + 1, n * (k - 1) + 1), samples=4)
    assert erf.shape == (13, 13) and math.isclose(float(erf.sum()), 1.0)
    for sigma in spread(erf):
        assert math.isclose(sigma**2, n * (k**2 - 1) / 12, rel_tol=1e-6)  # float32


def relu_stack(layers: int, channels: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    convs = [nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1) for i in range(layers)]
    return nn.Sequential(*[m for c in convs for m in (c, nn.ReLU())])


def test_effective_field_is_much_smaller_than_the_theoretical_one():
    ratios = []
    for layers in (4, 16):
        model = relu_stack(layers)
        r = int(receptive_field(model).h.r)
        assert r == 2 * layers + 1
        erf = effective_receptive_field(model, (2 * r - 1, 2 * r - 1), samples=8)
        inside = erf[r // 2 : r // 2 + r, r // 2 : r // 2 + r]
        assert math.isclose(float(inside.sum()), 1.0)  # nothing outside the theoretical square
        quarter = r // 4
        centre = erf[r - 1 - quarter : r + quarter, r - 1 - quarter : r + quarter]
        if layers == 16:  # a square of half the side holds most of the mass
            assert float(centre.sum()) > 0.75
        ratios.append(max(spread(erf)) / r)
    # Luo et al.: the ERF grows like sqrt(depth), the theoretical field like depth.
    assert ratios[1] < 0.8 * ratios[0]


class ShiftRight(nn.Module):
    """Drops the first 3 columns with a slice: torch.fx alone could not see its geometry."""

    def layer_spec(self) -> LayerSpec:
        return LayerSpec(kernel=(1, 1), stride=(1, 1), padding=(0, -3), dilation=(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., 3:] if x.shape[-1] > 3 else x


def test_a_layer_can_state_its_own_geometry():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), ShiftRight(), nn.Conv2d(1, 1, 3))
    graph = symbolic_trace(model)
    # The shape-dependent forward stays one call instead of being traced into.
    assert [n.op for n in graph.graph.nodes].count("call_module") == 3
    geometry = receptive_field(model)
    # Dropping 3 columns at stride 2 moves every field 6 pixels right: P falls by 6.
    assert (geometry.h.r, geometry.h.S, geometry.h.P) == (7, 2, 0)
    assert (geometry.w.r, geometry.w.S, geometry.w.P) == (7, 2, -6)
    measured = empirical_receptive_field(model, (15, 21), unit=(1, 1))
    assert measured == geometry.region((1, 1))


def test_after_a_transposed_convolution_r_is_a_bound_that_depends_on_the_phase():
    # conv(3, s2) -> conv(3, s2) -> transposed conv(4, s2): r = 13, but each output is reached
    # by half of the transposed kernel's taps, so the pixels that affect it span 11, on the
    # right of the analytic region for even units and on its left for odd ones.
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, stride=2), nn.ConvTranspose2d(1, 1, 4, 2)
    )
    geometry = receptive_field(net)
    assert (geometry.h.r, geometry.h.S, geometry.h.P) == (13, 2, 6)
    regions = {}
    for unit in range(2, 10):
        (top, bottom), columns = empirical_receptive_field(net, (40, 40), unit=(unit, unit))
        low, high = geometry.h.interval(unit)
        assert low <= top and bottom <= high and columns == (top, bottom)
        assert bottom - top + 1 == 11
        regions[unit] = (top, bottom)
    even, odd = regions[4], regions[5]
    assert even[1] == geometry.h.interval(4)[1] and odd[0] == geometry.h.interval(5)[0]
    for unit in range(2, 8):  # the stride is exact: two units on, the region moves 2 S
        assert regions[unit + 2][0] - regions[unit][0] == 2 * geometry.h.S


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=6
    )
)
def test_the_recurrences_unroll_to_the_closed_form(layers):
    # r = 1 + sum over layers of d (k - 1) times the product of the earlier strides.
    net = nn.Sequential(*(nn.Conv2d(1, 1, k, stride=s, dilation=d) for k, s, d in layers))
    closed = 1 + sum(
        d * (k - 1) * math.prod(s for _, s, _ in layers[:index])
        for index, (k, _, d) in enumerate(layers)
    )
    assert receptive_field(net).h.r == closed
