"""Joint image and mask transforms built from torchvision.transforms.v2.

The geometric transforms move image and mask together; photometric ones touch only the image.
Masks are only ever resampled by nearest neighbour, so no transform invents a label, and pixels
that a crop adds beyond the image are labelled with the ignored value.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


class Normalisation(NamedTuple):
    """Per-channel (R, G, B) mean and standard deviation of the [0, 1] images a net expects:
    a fact of the net's ImageNet weights, which every pipeline takes from the net
    (``FCN.normalisation``) or from its backbone (:func:`fcnlib.models.normalisation`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: ImageNet's statistics, as torchvision's VGG16 weights expect them.
IMAGENET = Normalisation((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Scaling to [-1, 1], as Google's EfficientNet-Lite weights expect it.
SIGNED = Normalisation((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from ``scale_range``.

    Images are resampled bilinearly (antialiased), masks by "nearest-exact", which samples the
    source pixel under each output pixel's centre, the same point the bilinear filter centres on.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list) -> dict:
        height, width = next(
            F.get_size(x) for x in flat_inputs if isinstance(x, tv_tensors.Image | tv_tensors.Mask)
        )
        scale = torch.empty(()).uniform_(*self.scale_range).item()
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        if isinstance(inpt, tv_tensors.Mask):
            mode = v2.InterpolationMode.NEAREST_EXACT
            return F.resize(inpt, params["size"], interpolation=mode)
        return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.BILINEAR)


def _to_float_and_normalise(normalisation: Normalisation) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
        v2.Normalize(mean=list(normalisation.mean), std=list(normalisation.std)),
    ]


def train_transforms(
    crop_size: int | tuple[int, int],
    ignore_index: int,
    normalisation: Normalisation,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: bool = True,
    jitter: bool = True,
) -> v2.Compose:
    """The training pipeline for ``(Image uint8, Mask)`` pairs.

    Colour jitter (image only), a random scale in ``scale_range`` (``None``: none), a random
    ``crop_size`` crop (pixels; smaller images are padded, the image with the mean colour, the
    mask with ``ignore_index``), a random horizontal flip, then conversion to float and
    ``normalisation``. Returns (3, h, w) float32 images and (h, w) int64 masks.
    """
    steps: list[v2.Transform] = []
    if jitter:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02))
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    mean_colour = tuple(round(255 * m) for m in normalisation.mean)
    fill = {tv_tensors.Image: mean_colour, tv_tensors.Mask: ignore_index}
    steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _to_float_and_normalise(normalisation))


def eval_transforms(normalisation: Normalisation) -> v2.Compose:
    """The evaluation pipeline: whole images converted to float and normalised as
    ``normalisation`` says, masks as int64."""
    return v2.Compose(_to_float_and_normalise(normalisation))


def denormalise(image: torch.Tensor, normalisation: Normalisation) -> torch.Tensor:
    """Undo ``normalisation``: (..., 3, H, W) float to uint8 in 0..255, for showing images."""
    shape = (3, 1, 1)
    mean_t = torch.tensor(normalisation.mean, device=image.device).view(shape)
    std_t = torch.tensor(normalisation.std, device=image.device).view(shape)
    pixels = (image.detach() * std_t + mean_t) * 255
    return pixels.round().clamp(0, 255).to(torch.uint8)
