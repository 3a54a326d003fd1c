import functools

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib.backbone import vgg16
from fcnlib.sizes import format_trace, output_size, smallest_input, trace


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_output_size_matches_conv2d(size, kernel, stride, padding, dilation):
    expected = output_size(size, kernel, stride, padding, dilation)
    conv = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    x = torch.zeros(1, 1, size, 3 + 2 * (kernel - 1) * dilation)
    if expected < 1:
        with pytest.raises(RuntimeError):
            conv(x)
    else:
        assert conv(x).shape[-2] == expected


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    padding=st.integers(0, 2),
    ceil_mode=st.booleans(),
    kind=st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]),
)
def test_output_size_matches_pooling_in_both_rounding_modes(
    size, kernel, stride, padding, ceil_mode, kind
):
    assume(2 * padding <= kernel)  # PyTorch's rule for pooling
    expected = output_size(size, kernel, stride, padding, 1, ceil_mode)
    pool = kind(kernel, stride, padding, ceil_mode=ceil_mode)
    x = torch.zeros(1, 1, size, kernel)
    if expected < 1:
        with pytest.raises(RuntimeError):
            pool(x)
    else:
        assert pool(x).shape[-2] == expected


def test_ceil_mode_drops_a_window_that_would_start_in_the_padding():
    # ceil((5 + 2 - 2) / 2) + 1 = 4 windows, but the 4th would start at 6 >= 5 + 1: 3 remain.
    assert output_size(5, 2, 2, padding=1, ceil_mode=True) == 3
    assert nn.MaxPool2d(2, 2, 1, ceil_mode=True)(torch.zeros(1, 1, 5, 5)).shape[-1] == 3


def test_ceil_mode_pools_an_input_smaller_than_the_kernel():
    # span 1 - 2 = -1: floor(-1 / 2) + 1 = 0 windows, ceil(-1 / 2) + 1 = 1 window
    assert output_size(1, 2, 2) == 0 and output_size(1, 2, 2, ceil_mode=True) == 1
    assert nn.MaxPool2d(2, 2, ceil_mode=True)(torch.zeros(1, 1, 1, 1)).shape[-1] == 1


def test_output_size_rejects_nonsense():
    with pytest.raises(ValueError, match="stride=0"):
        output_size(10, 3, stride=0)


@functools.cache
def meta_vgg16(pad100, ceil_mode, batch_norm=False):
    with torch.device("meta"):
        return vgg16(pad100=pad100, ceil_mode=ceil_mode, batch_norm=batch_norm).eval()


def run_shapes(net, height, width):
    """Each layer's output (name, H, W) from running the net on the meta device, up to the first
    layer that refuses its input; and whether one did."""
    shapes = []
    x = torch.empty(1, 3, height, width, device="meta")
    for name, layer in net.named_children():
        try:
            x = layer(x)
        except RuntimeError:
            return shapes, True
        shapes.append((name, x.shape[-2], x.shape[-1]))
    return shapes, False


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    pad100=st.booleans(),
    ceil_mode=st.booleans(),
    batch_norm=st.booleans(),
)
def test_trace_matches_running_vgg16(height, width, pad100, ceil_mode, batch_norm):
    net = meta_vgg16(pad100, ceil_mode, batch_norm)
    rows = trace(net, height, width)
    shapes, refused = run_shapes(net, height, width)
    empty = rows[-1].height < 1 or rows[-1].width < 1
    assert refused == empty
    if empty:
        rows = rows[:-1]
    assert [(r.name, r.height, r.width) for r in rows] == shapes


def test_trace_knows_the_vgg16_channels_and_table_format():
    rows = trace(meta_vgg16(True, True), 500, 500)
    by_name = {row.name: row for row in rows}
    assert (by_name["pool3"].channels, by_name["pool4"].channels) == (256, 512)
    # The reference FCN-32s on a 500 x 500 PASCAL image: fc7 is 16 x 16 (its crop offset 19).
    assert (by_name["drop7"].height, by_name["drop7"].width) == (16, 16)
    table = format_trace(rows)
    assert table.splitlines()[1].split() == ["conv1_1", "Conv2d", "64", "698", "x", "698"]


# 224 = 7 * 32 is VGG's own input; rounding up lets 6 * 32 + 1 through; conv1_1 with a padding
# of 100 turns a side of i into i + 198, so 1 pixel (ceil) or 224 - 198 = 26 (floor) suffices.
@pytest.mark.parametrize(
    ("pad100", "ceil_mode", "expected"),
    [(False, False, 224), (False, True, 193), (True, True, 1), (True, False, 26)],
)
def test_smallest_input_that_reaches_fc7(pad100, ceil_mode, expected):
    net = meta_vgg16(pad100, ceil_mode)
    side = smallest_input(net)
    assert side == expected
    assert trace(net, side, side)[-1].height == 1
    if side > 1:
        assert trace(net, side - 1, side - 1)[-1].height < 1


def test_trace_and_smallest_input_report_what_they_cannot_handle():
    with pytest.raises(TypeError, match="layer 1 is a Flatten"):
        trace(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Flatten()), 8, 8)
    with pytest.raises(ValueError, match="no square input up to limit=10"):
        smallest_input(nn.Sequential(nn.Conv2d(3, 3, 11)), limit=10)
    with pytest.raises(ValueError, match="'fc9' is not in the net"):
        smallest_input(meta_vgg16(True, True), "fc9")
