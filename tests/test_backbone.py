import functools

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights

from fcnlib import backbone
from fcnlib.sizes import trace


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return torchvision.models.vgg16().eval().double()


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 4),
    kernel=st.integers(1, 4),
    out=st.integers(1, 5),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_transplant_computes_the_linear_layer_at_every_position(channels, kernel, out, extra, seed):
    torch.manual_seed(seed)
    linear = nn.Linear(channels * kernel * kernel, out).double()
    conv = backbone.transplant(linear, channels, kernel)
    x = torch.randn(2, channels, kernel + extra, kernel + extra, dtype=torch.float64)
    dense = conv(x)
    assert dense.shape == (2, out, extra + 1, extra + 1)
    for i in range(extra + 1):
        for j in range(extra + 1):
            window = x[:, :, i : i + kernel, j : j + kernel].flatten(1)
            torch.testing.assert_close(dense[:, :, i, j], linear(window))


def test_transplant_rejects_a_wrong_kernel_size():
    with pytest.raises(ValueError, match="in_channels \\* kernel_size\\*\\*2 = 4608"):
        backbone.transplant(nn.Linear(25088, 10), 512, 3)


def test_convolutionalised_vgg16_gives_the_classifier_logits_at_224(classifier):
    net = backbone.convolutionalise(classifier, pad100=False, include_fc8=True).eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = classifier(x)
        dense = net(x)
    assert dense.shape == (1, 1000, 1, 1)
    torch.testing.assert_close(dense[:, :, 0, 0], logits, rtol=1e-5, atol=0)


def test_convolutionalise_shares_conv_weights_and_leaves_the_classifier_alone(classifier):
    net = backbone.convolutionalise(classifier, pad100=True, ceil_mode=True)
    assert net.conv1_1.weight is classifier.features[0].weight
    assert net.conv1_1.padding == (100, 100) and classifier.features[0].padding == (1, 1)
    assert net.pool5.ceil_mode and not classifier.features[30].ceil_mode
    assert list(dict(net.named_children()))[-7:] == [
        "pool5", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7"
    ]  # fmt: skip
    assert torch.equal(net.fc6.weight.flatten(1), classifier.classifier[0].weight)
    assert torch.equal(net.fc7.bias, classifier.classifier[3].bias)


def test_a_larger_input_gives_a_map_of_logits_of_the_traced_size(classifier):
    net = backbone.convolutionalise(classifier, pad100=False, include_fc8=True).eval()
    x = torch.randn(1, 3, 256, 320, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = net(x)
    last = trace(net, 256, 320)[-1]
    assert dense.shape == (1, 1000, last.height, last.width) == (1, 1000, 2, 4)
    assert not torch.allclose(dense[..., 0, 0], dense[..., -1, -1])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_builds_random_nets_with_caffe_names(batch_norm):
    with torch.device("meta"):
        net = backbone.vgg16(batch_norm=batch_norm, pad100=False)
    names = dict(net.named_children())
    assert ("bn1_1" in names) == batch_norm
    assert names["conv1_1"].padding == (1, 1)
    assert isinstance(names["fc6"], nn.Conv2d) and names["fc6"].kernel_size == (7, 7)
    assert names["fc6"].in_channels == 512 and names["fc6"].out_channels == 4096
    assert names["fc7"].kernel_size == (1, 1) and names["fc7"].out_channels == 4096
    assert isinstance(names["drop7"], nn.Dropout) and "fc8" not in names


@functools.cache
def random_state_dict(batch_norm):
    torch.manual_seed(3)
    build = torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16
    return build().state_dict()


@pytest.mark.parametrize(
    ("weights", "batch_norm", "expected"),
    [
        ("IMAGENET1K_V1", False, VGG16_Weights.IMAGENET1K_V1),
        (VGG16_Weights.IMAGENET1K_V1, False, VGG16_Weights.IMAGENET1K_V1),
        ("DEFAULT", True, VGG16_BN_Weights.IMAGENET1K_V1),
    ],
)
def test_imagenet_weights_are_requested_from_torchvision_and_transplanted(
    monkeypatch, weights, batch_norm, expected
):
    state = random_state_dict(batch_norm)
    requested = []

    def fake_download(self, progress=True, check_hash=False):
        requested.append((self, progress))
        return state

    monkeypatch.setattr(type(expected), "get_state_dict", fake_download)
    net = backbone.vgg16(weights, batch_norm=batch_norm, progress=False)
    assert requested == [(expected, False)]
    assert torch.equal(net.conv1_1.weight, state["features.0.weight"])
    assert torch.equal(net.fc6.weight.flatten(1), state["classifier.0.weight"])
    assert torch.equal(net.fc7.weight.flatten(1), state["classifier.3.weight"])


def test_wrong_weights_are_reported():
    with pytest.raises(ValueError, match=r"IMAGENET1K_V2.*VGG16_Weights's names"):
        backbone.vgg16("IMAGENET1K_V2")
    with pytest.raises(TypeError, match="expected VGG16_BN_Weights"):
        backbone.vgg16(VGG16_Weights.IMAGENET1K_V1, batch_norm=True)


def test_weights_in_cache_looks_in_the_torch_hub_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = VGG16_Weights.IMAGENET1K_V1
    assert not backbone.weights_in_cache(weights)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[-1]).touch()
    assert backbone.weights_in_cache(weights)


@pytest.mark.parametrize("pad100", [True, False])
def test_feature_extractor_returns_pool3_pool4_and_fc7(pad100):
    with torch.device("meta"):
        net = backbone.vgg16(pad100=pad100)
        features = backbone.feature_extractor(net)(torch.empty(2, 3, 250, 333))
    rows = {row.name: row for row in trace(net, 250, 333)}
    assert list(features) == list(backbone.TAP_CHANNELS)
    for name, channels in backbone.TAP_CHANNELS.items():
        row = rows[name]
        assert features[name].shape == (2, channels, row.height, row.width)


def test_feature_extractor_names_unknown_taps():
    with torch.device("meta"):
        net = backbone.vgg16()
    with pytest.raises(ValueError, match="taps \\['pool6'\\]"):
        backbone.feature_extractor(net, ("pool3", "pool6"))


def test_width_scales_every_channel_of_the_backbone():
    net = backbone.vgg16(width=0.125, batch_norm=True)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16] + [32] * 3 + [64] * 6 + [512, 512]
    assert net.fc6.in_channels == 64 and net.fc6.kernel_size == (7, 7)
    assert backbone.tap_channels(0.125) == {"pool3": 32, "pool4": 64, "drop7": 512}
    assert backbone.tap_channels(0.001) == {"pool3": 1, "pool4": 1, "drop7": 4}
    # initialised as torchvision's VGG: Kaiming (fan out) convolutions, N(0, 0.01) fc layers
    assert net.conv2_1.weight.detach().std() == pytest.approx((2 / (16 * 9)) ** 0.5, rel=0.1)
    assert net.fc7.weight.detach().std() == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match=r"needs width=1\.0"):
        backbone.vgg16("IMAGENET1K_V1", width=0.5)
    with pytest.raises(ValueError, match="width must be positive"):
        backbone.vgg16(width=0)
