import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib import models
from fcnlib.receptive import AxisGeometry, Geometry, receptive_field
from fcnlib.upsample import bilinear_weight

# The crop offsets of the reference Caffe nets (shelhamer/fcn.berkeleyvision.org, voc-fcn*).
CAFFE_OFFSETS = {
    "fcn32s": {"final": 19},
    "fcn16s": {"pool4": 5, "final": 27},
    "fcn8s": {"pool4": 5, "pool3": 9, "final": 31},
    "fcn8s-atonce": {"pool4": 5, "pool3": 9, "final": 31},
}
SLIM = 1 / 16  # a backbone with 4 ... 256 channels: the same geometry, fast on a CPU


@functools.cache
def meta_model(name, pad100=True, backbone_name="vgg16"):
    with torch.device("meta"):
        return models.build(name, 21, pad100=pad100, backbone=backbone_name).eval()


def slim_model(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return models.build(name, 5, width=SLIM, **kwargs).eval()


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_crop_offsets_equal_the_caffe_reference_with_pad100(name):
    assert meta_model(name).crop_offsets == CAFFE_OFFSETS[name]


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_without_pad100_the_final_crop_moves_by_the_99_pixels_of_padding_removed(name):
    # conv1_1 pads by 1 instead of 100, so every unit sits 99 input pixels further right; the
    # skips shift with the coarse scores and keep their offsets.
    expected = dict(CAFFE_OFFSETS[name], final=CAFFE_OFFSETS[name]["final"] - 99)
    assert meta_model(name, pad100=False).crop_offsets == expected


@pytest.mark.parametrize("pad100", [True, False])
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_output_pixel_is_centred_on_the_input_pixel_at_the_same_place(name, pad100):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # receptive warns when a sum adds misaligned maps
        geometry = receptive_field(meta_model(name, pad100))
    assert geometry.misaligned == ()
    for axis in (geometry.h, geometry.w):
        assert axis.S == 1
        assert [axis.centre(y) for y in (0, 1, 499)] == [0, 1, 499]


def test_crop_offset_refuses_what_a_crop_cannot_align():
    coarse = Geometry(AxisGeometry(5, 2, 0), AxisGeometry(5, 2, 0))
    with pytest.raises(ValueError, match="effective strides 2 and 1 on axis h"):
        models.crop_offset(coarse, Geometry(), "score")
    half = Geometry(AxisGeometry(4, 2, 0), AxisGeometry(4, 2, 0))  # centred on 1.5
    with pytest.raises(ValueError, match="offsets 1/4 \\(h\\) and 1/4 \\(w\\)"):
        models.crop_offset(half, coarse, "score_pool4c")
    assert models.crop_offset(coarse, Geometry(AxisGeometry(1, 2, -4), AxisGeometry(1, 2, -4))) == 1


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(models.MODEL_NAMES),
    height=st.integers(1, 700),
    width=st.integers(1, 700),
)
def test_any_input_size_gives_logits_of_that_size_and_skips_cover_their_crops(name, height, width):
    model = meta_model(name)
    steps = {
        step.name: step
        for step in model.fusion_trace(torch.empty(2, 3, height, width, device="meta"))
    }
    assert steps["score"].shape == (21, height, width)
    for tap in model.skips:  # the skip scores contain the window they are cropped to
        cropped, crop = steps[f"score_{tap}"], steps[f"score_{tap}c"]
        offset = model.crop_offsets[tap]
        assert cropped.shape[1] >= crop.shape[1] + offset
        assert cropped.shape[2] >= crop.shape[2] + offset


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(models.MODEL_NAMES), extra=st.tuples(*[st.integers(0, 300)] * 2))
def test_without_pad100_inputs_from_the_smallest_valid_size_work(name, extra):
    model = meta_model(name, pad100=False)
    height, width = (model.min_input + e for e in extra)
    assert model(torch.empty(1, 3, height, width, device="meta")).shape == (1, 21, height, width)


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (32, 1), (701, 500)])
@pytest.mark.parametrize("backbone_name", ["vgg16", "vgg16_bn"])
def test_real_forward_of_slim_nets(size, backbone_name):
    model = slim_model("fcn8s", backbone=backbone_name)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, *size))
    assert logits.shape == (1, 5, *size)
    assert torch.isfinite(logits).all()


def test_inputs_too_small_without_pad100_are_refused_with_the_smallest_size():
    model = meta_model("fcn8s", pad100=False)
    assert model.min_input == 193  # 6 x 32 + 1: pool5 must keep 7 units for the 7x7 fc6
    model(torch.empty(1, 3, 193, 193, device="meta"))
    with pytest.raises(ValueError, match=r"192x400 pixels.*smallest valid input is 193x193"):
        model(torch.empty(1, 3, 192, 400, device="meta"))
    with pytest.raises(ValueError, match="must be an \\(N, 3, H, W\\) batch"):
        model(torch.empty(3, 200, 200, device="meta"))


def linearised(model, branch):
    """``model`` made linear with uniform kernels and only the ``branch`` score layer on."""
    for name, layer in list(model.backbone.named_children()):
        if isinstance(layer, nn.MaxPool2d):
            setattr(model.backbone, name, nn.AvgPool2d(2, 2, ceil_mode=True))
        elif isinstance(layer, nn.ReLU):
            setattr(model.backbone, name, nn.Identity())
    with torch.no_grad():
        for name, layer in model.named_modules():
            if isinstance(layer, nn.Conv2d):
                layer.weight.fill_(1 / layer.weight[0].numel())
                layer.bias.zero_()
                if name.startswith("score") and name != branch:
                    layer.weight.zero_()
    return model.double()


@pytest.mark.parametrize("pad100", [True, False])
@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_each_path_is_centred_on_the_output_pixel_empirically(name, pad100):
    # With uniform kernels, average pooling and bilinear upsampling, the gradient of an output
    # pixel with respect to the input is its receptive field weighted by how much each input
    # pixel counts; that weighting has its centroid at the field's centre. A misplaced crop
    # moves the centroid by the stride of the map it crops (8, 16 or 1 pixels).
    size = 560  # wide enough that the fields of the pixels tested stay inside the image
    x = torch.zeros(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    positions = torch.arange(size, dtype=torch.float64)
    for branch in ("score_fr", *(f"score_{tap}" for tap in models.build(name, 1).skips)):
        torch.manual_seed(0)
        model = linearised(models.build(name, 1, pad100=pad100, width=1 / 64).eval(), branch)
        out = model(x)
        for y, x_ in [(270, 281), (301, 263)]:  # different phases of the strides
            (grad,) = torch.autograd.grad(out[0, 0, y, x_], x, retain_graph=True)
            weight = grad[0].sum(0)
            assert weight.min() >= 0 and weight[0].abs().max() == weight[-1].abs().max() == 0
            centroid = [(weight.sum(d) * positions).sum() / weight.sum() for d in (1, 0)]
            torch.testing.assert_close(torch.stack(centroid), torch.tensor([y, x_]).double())


def test_staged_initialisation_copies_everything_and_starts_from_the_coarser_scores():
    coarse = slim_model("fcn32s", seed=1)
    with torch.no_grad():  # as if trained: scores that are not zero
        coarse.score_fr.weight.normal_(0, 0.3)
        coarse.score_fr.bias.normal_()
    x = torch.randn(1, 3, 90, 117, generator=torch.Generator().manual_seed(2))
    mid = models.init_from(slim_model("fcn16s", seed=3), coarse)
    with torch.no_grad():
        mid.upscore2.weight.add_(0.01 * torch.randn_like(mid.upscore2.weight))  # as if trained
    fine = models.init_from(slim_model("fcn8s", seed=4), mid)
    for finer, coarser in ((mid, coarse), (fine, mid)):
        mine = finer.state_dict()
        for key, value in coarser.state_dict().items():
            if not key.startswith(coarser.final_upsample):
                assert torch.equal(mine[key], value), key
        assert not any(finer.score_pool4.weight.flatten()) and not any(finer.score_pool4.bias)
    assert not any(fine.score_pool3.weight.flatten())

    with torch.no_grad():
        scores = coarse.score_fr(coarse.backbone(x)["drop7"])
        bilinear = functools.partial(bilinear_weight, 5, dtype=scores.dtype)
        up2 = F.conv_transpose2d(scores, mid.upscore2.weight, stride=2)
        expected = {
            "fcn32s": F.conv_transpose2d(scores, bilinear(64), stride=32)[..., 19:109, 19:136],
            "fcn16s": F.conv_transpose2d(up2, bilinear(32), stride=16)[..., 27:117, 27:144],
            "fcn8s": F.conv_transpose2d(
                F.conv_transpose2d(up2, bilinear(4), stride=2), bilinear(16), stride=8
            )[..., 31:121, 31:148],
        }
        for model, key in ((coarse, "fcn32s"), (mid, "fcn16s"), (fine, "fcn8s")):
            torch.testing.assert_close(model(x), expected[key])
        agree = (coarse(x).argmax(1) == fine(x).argmax(1)).float().mean()
    assert agree > 0.9  # two bilinear steps instead of one move few labels


def test_staged_initialisation_refuses_the_wrong_order_and_mismatched_nets():
    with torch.device("meta"):
        fcn32s, fcn16s, fcn8s = (models.build(n, 3) for n in ("fcn32s", "fcn16s", "fcn8s"))
        with pytest.raises(ValueError, match="FCN16s is not finer than FCN8s"):
            models.init_from(fcn16s, fcn8s)
        with pytest.raises(ValueError, match="trained in one stage"):
            models.init_from(models.build("fcn8s-atonce", 3), fcn16s)
        with pytest.raises(ValueError, match=r"score_fr\.weight of shape \(3, 4096, 1, 1\) has"):
            models.init_from(models.build("fcn16s", 4), fcn32s)
        assert models.init_from(fcn8s, fcn32s) is fcn8s


def reference_parameter_count(num_classes):
    """Parameters of the reference voc-fcn8s, from the shapes of its Caffe layers."""
    convs, channels = 0, 3
    for out in [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]:
        convs += 3 * 3 * channels * out + out
        channels = out
    fc = 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096
    scores = sum(c * num_classes + num_classes for c in (4096, 512, 256))
    upscores = sum(num_classes * num_classes * k * k for k in (4, 4, 16))  # no bias
    return convs + fc + scores + upscores


def test_fcn8s_has_the_reference_number_of_parameters():
    model = meta_model("fcn8s")
    assert models.parameter_count(model) == reference_parameter_count(21) == 134_489_759
    fixed = 21 * 21 * 16 * 16  # upscore8
    assert models.parameter_count(model, trainable_only=True) == 134_489_759 - fixed


def test_fusion_trace_of_a_500_pixel_image_has_the_papers_shapes():
    steps = meta_model("fcn8s").fusion_trace(torch.empty(1, 3, 500, 500, device="meta"))
    sizes = {step.name: step.shape[1:] for step in steps}
    path = ["score_fr", "upscore2", "upscore_pool4", "upscore8", "score"]
    assert [sizes[name][0] for name in path] == [16, 34, 70, 568, 500]
    assert [s.name for s in steps if s.kind == "sum"] == ["fuse_pool4", "fuse_pool3"]
    fuse = next(s for s in steps if s.name == "fuse_pool3")
    assert fuse.inputs == ("upscore_pool4", "score_pool3c") and fuse.stride == 8
    crops = {s.name: (s.inputs, s.fits, s.note) for s in steps if s.kind == "crop"}
    assert crops == {
        "score_pool4c": (("score_pool4",), "upscore2", "offset 5"),
        "score_pool3c": (("score_pool3",), "upscore_pool4", "offset 9"),
        "score": (("upscore8",), "data", "offset 31"),
    }
    text = models.format_fusion_trace(steps)
    crop = "score_pool4c   crop         21x34x34     16  score_pool4, offset 5 to fit upscore2"
    assert crop in text
    assert max(len(line) for line in text.splitlines()) <= 88  # fits the book's column


def test_at_once_scales_the_skips_by_fixed_constants():
    at_once = slim_model("fcn8s-atonce", seed=5)
    staged = slim_model("fcn8s", seed=6)
    with torch.no_grad():
        for layer in (at_once.score_fr, at_once.score_pool4, at_once.score_pool3):
            layer.weight.normal_()
        staged.load_state_dict(at_once.state_dict())
        staged.score_pool4.weight.mul_(0.01)  # a 1x1 convolution of 0.01 x is one of x
        staged.score_pool3.weight.mul_(0.0001)
        x = torch.randn(1, 3, 64, 80)
        torch.testing.assert_close(at_once(x), staged(x))
    steps = {s.name: s for s in at_once.fusion_trace(x)}
    assert steps["score_pool4"].inputs == ("scale_pool4",) and steps["scale_pool4"].note == "x 0.01"
    for model in (at_once, staged):  # the 2x upsamplings learn, the 8x one is fixed
        upsamplers = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
        assert [m.weight.requires_grad for m in upsamplers] == [True, True, False]


def test_layers_start_as_in_the_reference():
    model = meta_model("fcn16s")
    assert model.upscore2.kernel_size == (4, 4) and model.upscore16.stride == (16, 16)
    model = slim_model("fcn16s")
    for layer in (model.score_fr, model.score_pool4):
        assert layer.kernel_size == (1, 1) and not layer.weight.any() and not layer.bias.any()
    torch.testing.assert_close(model.upscore2.weight, bilinear_weight(5, 4))
    torch.testing.assert_close(model.upscore16.weight, bilinear_weight(5, 32))


def test_build_names_the_models_and_passes_options():
    assert models.MODEL_NAMES == ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
    with pytest.raises(ValueError, match="'fcn4s' is not one of \\['fcn32s', 'fcn16s'"):
        models.build("fcn4s", 21)
    with pytest.raises(ValueError, match="backbone='resnet50' is not one of"):
        models.build("fcn8s", 21, backbone="resnet50")
    model = meta_model("fcn32s", backbone_name="vgg16_bn")
    assert isinstance(model.backbone.bn1_1, nn.BatchNorm2d)


def test_stage_scores_take_fcn8s_apart_where_the_geometry_puts_each_map():
    torch.manual_seed(0)
    fcn32s = models.FCN32s(5, backbone="vgg16_bn", width=0.0625).eval()
    for layer in (fcn32s.score_fr.weight, fcn32s.score_fr.bias):
        torch.nn.init.normal_(layer)
    fcn8s = models.init_from(models.FCN8s(5, backbone="vgg16_bn", width=0.0625), fcn32s).eval()
    torch.nn.init.normal_(fcn8s.score_pool3.weight)
    x = torch.randn(1, 3, 70, 90)
    stages = fcn8s.stage_scores(x)
    assert list(stages) == ["score_fr", "fuse_pool4", "fuse_pool3"]
    assert all(scores.shape == (1, 5, 70, 90) for scores in stages.values())
    with torch.no_grad():
        # score_fr upsampled 32x is FCN-32s's output, whose weights FCN-8s started from
        torch.testing.assert_close(stages["score_fr"], fcn32s(x))
        torch.testing.assert_close(stages["fuse_pool3"], fcn8s(x))
    # pool3's scores, no longer zero, change the finest map
    assert not torch.equal(stages["fuse_pool4"], stages["fuse_pool3"])
    assert list(fcn32s.stage_scores(x)) == ["score_fr"]


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
def test_the_scored_area_is_where_the_net_gives_nonzero_logits(name):
    # An independent check: run a slim net for real and find the pixels whose logits are all 0.
    torch.manual_seed(0)
    for pad100 in (True, False):
        net = models.build(name, 3, pad100=pad100, width=1 / 16).eval()
        for layer in net.modules():  # no zero scores by chance: every bias nonzero
            if isinstance(layer, nn.Conv2d) and layer.bias is not None:
                nn.init.constant_(layer.bias, 0.1)
        upsampled, fraction = net.scored_area(232, 296)
        with torch.no_grad():
            scores = net(torch.rand(1, 3, 232, 296))
        measured = (scores != 0).any(1).double().mean().item()
        assert fraction == pytest.approx(measured)
        assert (fraction == 1.0) == pad100
        assert upsampled[0] >= 232 if pad100 else upsampled[0] < 232


@pytest.mark.parametrize("pad100", [True, False])
def test_fcn8s_written_out_gives_the_scores_of_the_general_class(pad100):
    torch.manual_seed(0)
    net = models.FCN8s(5, pad100=pad100, width=1 / 16).eval()
    for layer in net.modules():  # random scores: zero-initialised ones would hide a mistake
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(layer.weight, std=0.1)
    x = torch.rand(2, 3, 230, 250)
    with torch.no_grad():
        torch.testing.assert_close(models.fcn8s_forward(net, x), net(x), rtol=0, atol=0)
