"""VGG16 as a fully convolutional net: torchvision's classifier with fc6 and fc7 made convolutions.

The paper's FCNs start from an ImageNet classifier and *convolutionalise* it: the fully
connected layers fc6 (25088 -> 4096), fc7 (4096 -> 4096) and fc8 (4096 -> 1000) are read as
convolutions with 7x7, 1x1 and 1x1 kernels over the 512-channel pool5 map, by reshaping their
weight matrices (the reference implementation's "transplant"). The result takes inputs of any
size and returns a map of scores instead of one vector.

The backbone is an ``nn.Sequential`` whose children carry the reference's Caffe layer names
(``conv1_1``, ``relu1_1``, ..., ``pool5``, ``fc6``, ``relu6``, ``drop6``, ``fc7``, ``relu7``,
``drop7``), so the skip architectures can tap ``pool3``, ``pool4`` and ``drop7`` by name, e.g.
with :func:`feature_extractor`.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights
from torchvision.models.feature_extraction import create_feature_extractor

from fcnlib.receptive import NEUTRAL_LAYERS

#: Channels of the maps the skip architectures tap, by Caffe layer name.
TAP_CHANNELS = {"pool3": 256, "pool4": 512, "drop7": 4096}

#: The padding of conv1_1 in the reference FCNs: it lets any input reach fc6 (see ``sizes``).
PAD100 = 100


def transplant(linear: nn.Linear, in_channels: int, kernel_size: int) -> nn.Conv2d:
    """The convolution that computes ``linear`` at every position of a (N, in_channels, H, W) map.

    A Linear layer over a flattened (in_channels, k, k) block is a k x k convolution with the
    same numbers: its (out, in_channels * k * k) weight matrix is reshaped to
    (out, in_channels, k, k). Flattening order is channel-major, as torch's ``flatten`` gives.
    """
    expected = in_channels * kernel_size * kernel_size
    if linear.in_features != expected:
        raise ValueError(
            f"linear has {linear.in_features} inputs but in_channels * kernel_size**2 = "
            f"{expected}: pass the channels and kernel size of the map it was flattened from"
        )
    # skip_init: fc6 holds 100 million weights, not worth initialising just to overwrite them.
    conv = nn.utils.skip_init(
        nn.Conv2d,
        in_channels,
        linear.out_features,
        kernel_size,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _caffe_names(features: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """Name torchvision's unnamed VGG feature layers as the reference prototxt does."""
    named, block, index = [], 1, 1
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            named.append((f"conv{block}_{index}", layer))
        elif isinstance(layer, nn.BatchNorm2d):
            named.append((f"bn{block}_{index}", layer))
        elif isinstance(layer, nn.ReLU):
            named.append((f"relu{block}_{index}", layer))
            index += 1
        elif isinstance(layer, nn.MaxPool2d):
            named.append((f"pool{block}", layer))
            block, index = block + 1, 1
        else:
            raise TypeError(f"unexpected layer {layer!r} in VGG features")
    return named


def convolutionalise(
    classifier: torchvision.models.VGG,
    *,
    pad100: bool = True,
    ceil_mode: bool = True,
    include_fc8: bool = False,
) -> nn.Sequential:
    """The fully convolutional net of a torchvision VGG classifier, sharing its conv parameters.

    ``pad100`` pads conv1_1 by 100 pixels as the reference FCNs do, so that inputs of any size
    reach fc6; ``ceil_mode`` rounds pooled sizes up, as Caffe (and hence the reference) does.
    The net ends at ``drop7`` (4096 channels at stride 32), or at ``fc8`` (the classifier's
    1000 ImageNet scores as a 1x1 convolution) with ``include_fc8``. The classifier's
    adaptive average pooling is dropped: it would squash any input back to 7x7. The classifier
    itself is left unchanged; fc6, fc7 and fc8 get reshaped copies of its Linear weights.
    """
    if not isinstance(classifier, torchvision.models.VGG):
        raise TypeError(f"classifier must be a torchvision VGG, got {type(classifier).__name__}")
    # Shallow copies share the parameters but not the padding and rounding, which change here.
    layers = [(name, copy.copy(layer)) for name, layer in _caffe_names(classifier.features)]
    first_conv = layers[0][1]
    first_conv.padding = (PAD100, PAD100) if pad100 else (1, 1)
    for _, layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = ceil_mode
    fc6, relu6, drop6, fc7, relu7, drop7, fc8 = classifier.classifier
    channels = next(m for _, m in reversed(layers) if isinstance(m, nn.Conv2d)).out_channels
    layers += [
        ("fc6", transplant(fc6, channels, 7)),
        ("relu6", relu6),
        ("drop6", drop6),
        ("fc7", transplant(fc7, fc6.out_features, 1)),
        ("relu7", relu7),
        ("drop7", drop7),
    ]
    if include_fc8:
        layers.append(("fc8", transplant(fc8, fc7.out_features, 1)))
    return nn.Sequential(OrderedDict(layers))


def scaled(channels: int, width: float) -> int:
    """``channels`` times ``width``, rounded to the nearest whole channel and at least 1."""
    return max(1, round(channels * width))


def tap_channels(width: float = 1.0) -> dict[str, int]:
    """Channels of the tapped maps (see ``TAP_CHANNELS``) of a backbone of this ``width``."""
    return {name: scaled(channels, width) for name, channels in TAP_CHANNELS.items()}


def _slim_vgg16(width: float, batch_norm: bool) -> torchvision.models.VGG:
    """A randomly initialised torchvision VGG16 with every channel count scaled by ``width``."""
    config = [v if v == "M" else scaled(v, width) for v in torchvision.models.vgg.cfgs["D"]]
    features = torchvision.models.vgg.make_layers(config, batch_norm=batch_norm)
    # VGG's constructor initialises the convolutions of ``features`` but builds a classifier
    # for 512 channels; build that on the meta device (free) and replace it.
    with torch.device("meta"):
        classifier = torchvision.models.VGG(features)
    hidden, channels = scaled(4096, width), config[-2]
    classifier.classifier = nn.Sequential(
        nn.Linear(channels * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(hidden, 1000),
    )
    for layer in classifier.classifier:
        if isinstance(layer, nn.Linear):  # as torchvision's VGG initialises its classifier
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)
    return classifier


def _weights_enum(batch_norm: bool) -> type[VGG16_Weights] | type[VGG16_BN_Weights]:
    return VGG16_BN_Weights if batch_norm else VGG16_Weights


def vgg16(
    weights: VGG16_Weights | VGG16_BN_Weights | str | None = None,
    *,
    batch_norm: bool = False,
    pad100: bool = True,
    ceil_mode: bool = True,
    include_fc8: bool = False,
    progress: bool = True,
    width: float = 1.0,
) -> nn.Sequential:
    """VGG16 (or VGG16-BN with ``batch_norm``) as a fully convolutional net up to drop7.

    ``weights`` is None for random initialisation (torchvision's), or an ImageNet weight enum
    of torchvision (``VGG16_Weights.IMAGENET1K_V1``, ``VGG16_BN_Weights.IMAGENET1K_V1``) or its
    name (``"IMAGENET1K_V1"``, ``"DEFAULT"``); torchvision downloads them into the torch hub
    cache the first time, which needs the internet. Inputs are (N, 3, H, W) images normalised
    with ImageNet's mean and standard deviation; see :func:`convolutionalise` for the rest.

    ``width`` scales the channels of every convolution, fc6 and fc7 (each rounded, at least 1;
    see :func:`scaled`): 1.0 is the real VGG16, 0.125 a slim copy with the same geometry that
    trains in seconds on a CPU. ImageNet weights exist only for ``width=1.0``.
    """
    if not width > 0:
        raise ValueError(f"width must be positive, got {width!r}")
    if width != 1.0:
        if weights is not None:
            raise ValueError(
                f"weights={weights!r} needs width=1.0 (ImageNet weights exist only for the real "
                f"VGG16), got width={width}: pass weights=None for a slim random net"
            )
        classifier = _slim_vgg16(width, batch_norm)
        return convolutionalise(
            classifier, pad100=pad100, ceil_mode=ceil_mode, include_fc8=include_fc8
        )
    enum = _weights_enum(batch_norm)
    if isinstance(weights, str):
        names = list(enum.__members__)
        if weights.removeprefix(f"{enum.__name__}.") not in names:
            raise ValueError(f"weights={weights!r} is not one of {enum.__name__}'s names {names}")
    build = torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16
    classifier = build(weights=enum.verify(weights), progress=progress)
    return convolutionalise(classifier, pad100=pad100, ceil_mode=ceil_mode, include_fc8=include_fc8)


def weights_in_cache(weights: VGG16_Weights | VGG16_BN_Weights) -> bool:
    """True when torchvision would load ``weights`` from the torch hub cache, without a download."""
    filename = os.path.basename(weights.url)
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", filename))


def feature_extractor(
    backbone: nn.Sequential,
    taps: tuple[str, ...] | dict[str, str] = ("pool3", "pool4", "drop7"),
) -> nn.Module:
    """A module returning ``{name: map}`` for the named layers of ``backbone``, sharing its weights.

    The defaults are the maps the skip architectures fuse: pool3 (256 channels, stride 8),
    pool4 (512, stride 16) and drop7, the fc7 output (4096, stride 32). ``taps`` may also map
    layer names (``"blocks.2"``) to the names the maps get (``"pool3"``). Pointwise layers stay
    single calls (as :mod:`fcnlib.receptive` needs them), even where their class is not
    torch's (timm's batch norm fused with its activation).
    """
    nodes = taps if isinstance(taps, dict) else {tap: tap for tap in taps}
    names = dict(backbone.named_modules())
    unknown = [tap for tap in nodes if tap not in names]
    if unknown:
        known = list(dict(backbone.named_children()))
        raise ValueError(f"taps {unknown} are not layers of the backbone; known: {known}")
    leaves = {"leaf_modules": list(NEUTRAL_LAYERS)}
    return create_feature_extractor(backbone, return_nodes=nodes, tracer_kwargs=leaves)
