import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib.sizes import trace
from fcnlib.stitch import a_trous, shift_and_stitch, total_stride


def small_net(kernel, pool, second_pool, seed):
    """conv - maxpool(pool) - conv, optionally - maxpool(2) - conv: unpadded, in float64."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(2, 3, kernel), nn.ReLU(), nn.MaxPool2d(pool), nn.Conv2d(3, 2, kernel)]
    if second_pool:
        layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 2)]
    return nn.Sequential(*layers).double()


@settings(max_examples=30, deadline=None)
@given(
    kernel=st.integers(1, 3),
    pool=st.integers(2, 3),
    second_pool=st.booleans(),
    height=st.integers(8, 30),
    width=st.integers(8, 30),
    seed=st.integers(0, 2**16),
)
def test_shift_and_stitch_equals_the_a_trous_net(kernel, pool, second_pool, height, width, seed):
    net = small_net(kernel, pool, second_pool, seed)
    factor = total_stride(net)
    assert factor == pool * (2 if second_pool else 1)
    dense_net = a_trous(net)
    # Every one of the factor**2 shifted runs must have output: the dense map needs factor.
    last = trace(dense_net, height, width, channels=2)[-1]
    assume(min(last.height, last.width) >= factor)
    x = torch.randn(2, 2, height, width, dtype=torch.float64)
    with torch.no_grad():
        dense = dense_net(x)
        stitched = shift_and_stitch(net, x, factor)
        coarse = net(x)
    assert stitched.shape == dense.shape
    torch.testing.assert_close(stitched, dense, atol=1e-5, rtol=0)
    # The plain net's outputs are every factor-th pixel of the dense map.
    torch.testing.assert_close(coarse, dense[..., ::factor, ::factor], atol=1e-5, rtol=0)


def test_a_trous_dilates_later_layers_and_leaves_the_net_alone():
    net = small_net(3, 2, True, 0)
    dense = a_trous(net)
    assert [getattr(layer, "dilation", None) for layer in dense] == [
        (1, 1), None, (1, 1), (2, 2), None, (2, 2), (4, 4)
    ]  # fmt: skip
    assert all(getattr(layer, "stride", (1, 1)) == (1, 1) for layer in dense)
    assert net[2].stride == 2 and net[3].dilation == (1, 1)


def test_padded_layers_are_refused():
    with pytest.raises(ValueError, match="layer 0 pads its input"):
        total_stride(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)))
    with pytest.raises(TypeError, match="layer 1 is a Upsample"):
        a_trous(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2)))
