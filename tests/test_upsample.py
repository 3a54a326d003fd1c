import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib.sizes import output_size
from fcnlib.upsample import (
    DUMOULIN_VISIN_CASES,
    bilinear_kernel,
    bilinear_upsampler,
    bilinear_weight,
    conv_matrix,
    output_padding,
    overlap_counts,
    scatter,
    transpose_conv,
    transposed_output_size,
)

FACTORS = (2, 4, 8, 16, 32)


def triangle(size: int) -> np.ndarray:
    """The 1-D profile of surgery.upsample_filt, written out for each tap."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    return np.array([1 - abs(tap - centre) / factor for tap in range(size)])


@pytest.mark.parametrize("size", range(1, 65))
def test_bilinear_kernel_is_the_reference_surgery_filter(size):
    expected = np.outer(triangle(size), triangle(size))
    kernel = bilinear_kernel(size, dtype=torch.float64)
    assert kernel.shape == (size, size)
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=0, atol=1e-15)


def test_bilinear_kernel_known_values():
    np.testing.assert_allclose(bilinear_kernel(1).numpy(), [[1.0]])
    np.testing.assert_allclose(bilinear_kernel(3)[1].numpy(), [0.5, 1.0, 0.5])
    profile = [0.25, 0.75, 0.75, 0.25]
    np.testing.assert_allclose(bilinear_kernel(4).numpy(), np.outer(profile, profile))
    # FCN-32s upsamples with a 64 x 64 kernel: its corner tap is (1/64)^2.
    assert bilinear_kernel(64)[0, 0].item() == pytest.approx(1 / 64**2)
    assert bilinear_kernel(64).dtype == torch.float32


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bilinear_kernel_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="size must be a positive int"):
        bilinear_kernel(size)


def test_bilinear_weight_is_diagonal_in_channels():
    weight = bilinear_weight(3, 4)
    assert weight.shape == (3, 3, 4, 4)
    for source in range(3):
        for target in range(3):
            expected = bilinear_kernel(4) if source == target else torch.zeros(4, 4)
            torch.testing.assert_close(weight[source, target], expected)


@pytest.mark.parametrize("learnable", [False, True])
def test_bilinear_upsampler_layer(learnable):
    layer = bilinear_upsampler(5, 8, learnable=learnable)
    assert layer.kernel_size == (16, 16)
    assert layer.stride == (8, 8)
    assert layer.padding == (0, 0)
    assert layer.bias is None
    assert layer.weight.requires_grad is learnable
    torch.testing.assert_close(layer.weight.detach(), bilinear_weight(5, 16))
    # Without padding the output overhangs by factor/2 on each side, as in the reference FCN.
    assert layer(torch.zeros(1, 5, 3, 4)).shape == (1, 5, 8 * 2 + 16, 8 * 3 + 16)


def test_bilinear_upsampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="factor must be a positive int"):
        bilinear_upsampler(3, 0)
    with pytest.raises(ValueError, match=r"padding must lie in 0\.\.3"):
        bilinear_upsampler(3, 4, padding=4)


@settings(max_examples=30, deadline=None)
@given(
    factor=st.sampled_from(FACTORS),
    height=st.integers(2, 6),
    width=st.integers(2, 6),
    channels=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_bilinear_transposed_conv_equals_interpolate_in_the_interior(
    factor, height, width, channels, seed
):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(2, channels, height, width, generator=generator, dtype=torch.float64) + 0.5
    layer = bilinear_upsampler(channels, factor, padding=factor // 2).double()
    with torch.no_grad():
        ours = layer(x)
    theirs = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == theirs.shape == (2, channels, factor * height, factor * width)
    border = factor // 2
    inner = (..., slice(border, -border), slice(border, -border))
    torch.testing.assert_close(ours[inner], theirs[inner], rtol=0, atol=1e-12)
    # On the border the transposed convolution sees zeros beyond the edge where interpolate
    # repeats the edge pixel: in the corner only the weight (1/2 + 1/(2f))^2 of x[0, 0] arrives.
    corner = (0.5 + 0.5 / factor) ** 2
    torch.testing.assert_close(ours[..., 0, 0], corner * x[..., 0, 0], rtol=0, atol=1e-12)
    assert (ours - theirs).abs().max() > 0.2


@settings(max_examples=30, deadline=None)
@given(
    factor=st.sampled_from(FACTORS[:4]),
    size=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_padding_crops_the_unpadded_output(factor, size, seed):
    x = torch.randn(1, 2, size, size + 1, generator=torch.Generator().manual_seed(seed))
    crop = factor // 2
    with torch.no_grad():
        padded = bilinear_upsampler(2, factor, padding=crop)(x)
        full = bilinear_upsampler(2, factor)(x)
    torch.testing.assert_close(padded, full[..., crop:-crop, crop:-crop])


@st.composite
def convolutions(draw):
    """A random Conv1d or Conv2d (float64) and an input size it fits."""
    dims = draw(st.sampled_from([1, 2]))
    kernel = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.integers(0, kernel - 1))
    groups = draw(st.sampled_from([1, 2]))
    kind = nn.Conv1d if dims == 1 else nn.Conv2d
    torch.manual_seed(draw(st.integers(0, 2**16)))
    conv = kind(
        2 * draw(st.integers(1, 2)) if groups == 2 else draw(st.integers(1, 3)),
        groups * draw(st.integers(1, 2)),
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        dtype=torch.float64,
    )
    smallest = max(1, dilation * (kernel - 1) + 1 - 2 * padding)
    size = tuple(draw(st.integers(smallest, smallest + 5)) for _ in range(dims))
    return conv, size


@settings(max_examples=40, deadline=None)
@given(case=convolutions())
def test_conv_matrix_is_the_jacobian_of_the_convolution(case):
    conv, size = case
    matrix = conv_matrix(conv, size)
    x = torch.randn(1, conv.in_channels, *size, dtype=torch.float64)
    with torch.no_grad():
        y = conv(x)
    jacobian = torch.func.jacrev(conv)(x).reshape(y.numel(), x.numel())
    torch.testing.assert_close(matrix, jacobian.detach())
    bias = 0 if conv.bias is None else conv.bias.detach().repeat_interleave(y[0, 0].numel())
    torch.testing.assert_close(matrix @ x.flatten() + bias, y.flatten())


@settings(max_examples=40, deadline=None)
@given(case=convolutions())
def test_transposed_conv_multiplies_by_the_transpose(case):
    conv, size = case
    matrix = conv_matrix(conv, size)
    transposed = transpose_conv(conv, size)
    x = torch.randn(1, conv.in_channels, *size, dtype=torch.float64)
    y = torch.randn_like(conv(x))
    with torch.no_grad():
        out = transposed(y)
    assert out.shape == x.shape
    torch.testing.assert_close(out.flatten(), matrix.T @ y.flatten())
    # The transposed convolution is the convolution's gradient with respect to its input.
    _, pullback = torch.func.vjp(conv, x)
    torch.testing.assert_close(out, pullback(y)[0].detach())


def test_conv_matrix_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"conv must be an nn\.Conv1d or nn\.Conv2d"):
        conv_matrix(nn.Linear(3, 3), 3)
    with pytest.raises(ValueError, match="input_size must have 2 entries"):
        conv_matrix(nn.Conv2d(1, 1, 3), (5,))
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        transpose_conv(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), 5)


# The output sizes drawn in Dumoulin and Visin (2016), figures 4.1 to 4.7.
PAPER_CONV_OUTPUTS = {"4.1": 2, "4.2": 6, "4.3": 5, "4.4": 7, "4.5": 2, "4.6": 3, "4.7": 3}


@pytest.mark.parametrize("case", DUMOULIN_VISIN_CASES, ids=lambda case: case.figure)
def test_dumoulin_visin_cases(case):
    i, k, s, p = case.input_size, case.kernel_size, case.stride, case.padding
    o = output_size(i, k, s, p)
    assert o == PAPER_CONV_OUTPUTS[case.figure]
    assert nn.Conv2d(1, 1, k, s, p)(torch.zeros(1, 1, i, i)).shape[-1] == o
    a = output_padding(i, k, s, p)
    assert a == (1 if case.figure == "4.7" else 0)
    assert transposed_output_size(o, k, s, p, a) == i
    layer = nn.ConvTranspose2d(1, 1, k, s, p, output_padding=a)
    assert layer(torch.zeros(1, 1, o, o)).shape[-1] == i


@settings(max_examples=50, deadline=None)
@given(
    kernel=st.integers(1, 6),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    data=st.data(),
)
def test_output_sizes_match_pytorch(kernel, stride, dilation, data):
    padding = data.draw(st.integers(0, kernel - 1))
    smallest = max(1, dilation * (kernel - 1) + 1 - 2 * padding)
    size = data.draw(st.integers(smallest, smallest + 12))
    conv = nn.Conv1d(1, 1, kernel, stride, padding, dilation)
    out = output_size(size, kernel, stride, padding, dilation)
    assert conv(torch.zeros(1, 1, size)).shape[-1] == out
    # Every output padding PyTorch accepts gives the size the formula says...
    for extra in range(max(stride, dilation)):
        transposed = nn.ConvTranspose1d(1, 1, kernel, stride, padding, extra, dilation=dilation)
        try:
            expected = transposed(torch.zeros(1, 1, out)).shape[-1]
        except RuntimeError:
            with pytest.raises(ValueError, match="crops all of the transposed output"):
                transposed_output_size(out, kernel, stride, padding, extra, dilation)
            continue
        assert transposed_output_size(out, kernel, stride, padding, extra, dilation) == expected
    # ...and output_padding picks the one that restores the convolution's input size.
    extra = output_padding(size, kernel, stride, padding, dilation)
    assert transposed_output_size(out, kernel, stride, padding, extra, dilation) == size


def test_output_size_errors():
    with pytest.raises(ValueError, match="does not fit input_size 2"):
        output_padding(2, 5, stride=2)
    with pytest.raises(ValueError, match=r"output_padding must lie in 0\.\.1"):
        transposed_output_size(3, 3, stride=2, output_padding=2)


def brute_force_overlaps(input_size: int, kernel_size: int, stride: int) -> np.ndarray:
    """Count, for each output position, the inputs whose kernel footprint covers it."""
    length = stride * (input_size - 1) + kernel_size
    counts = np.zeros(length, dtype=np.int64)
    for source in range(input_size):
        counts[source * stride : source * stride + kernel_size] += 1
    return np.outer(counts, counts)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 8), kernel=st.integers(1, 8), stride=st.integers(1, 5))
def test_overlap_counts_against_brute_force(size, kernel, stride):
    counts = overlap_counts(size, kernel, stride)
    assert counts.dtype == torch.int64
    np.testing.assert_array_equal(counts.numpy(), brute_force_overlaps(size, kernel, stride))


@pytest.mark.parametrize(("kernel", "stride"), [(4, 2), (6, 3), (64, 32), (3, 3)])
def test_overlap_is_even_when_the_stride_divides_the_kernel(kernel, stride):
    counts = overlap_counts(6, kernel, stride)
    # Only the first and last kernel - stride rows and columns see fewer inputs.
    end = counts.shape[0] - (kernel - stride)
    inner = counts[kernel - stride : end, kernel - stride : end]
    assert inner.numel() > 0
    assert torch.all(inner == (kernel // stride) ** 2)


def test_overlap_is_uneven_otherwise():
    counts = overlap_counts(6, 3, 2)
    assert set(counts[2:-2, 2:-2].unique().tolist()) == {1, 2, 4}


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(0, 99)
)
def test_scatter_is_torchs_transposed_convolution(height, width, kernel_size, stride, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(height, width, generator=generator, dtype=torch.float64)
    kernel = torch.randn(kernel_size, kernel_size, generator=generator, dtype=torch.float64)
    expected = F.conv_transpose2d(x[None, None], kernel[None, None], stride=stride)[0, 0]
    torch.testing.assert_close(scatter(x, kernel, stride), expected)
