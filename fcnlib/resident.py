"""A dataset held decoded on the device, augmented there in batches.

``ResidentDataset`` decodes a split once into uint8 tensors on a device (CamVid train is
367 x 3 x 360 x 480 bytes, about 190 MB, plus 63 MB of labels), so training never waits on
image decoding. ``ResidentLoader`` draws batches from it and applies random scale, crop and
flip on the device with one ``grid_sample`` per batch: images bilinearly, masks by nearest
neighbour on the same sampling grid, so both stay aligned by construction.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from fcnlib.classes import ClassTable
from fcnlib.data import SegmentationFiles, describe
from fcnlib.transforms import Normalisation


class ResidentDataset:
    """The first ``limit`` items (default: all) of a dataset, decoded into tensors on ``device``.

    ``images`` is (N, 3, H, W) uint8 and ``masks`` (N, H, W) uint8; all items must share one
    size. The source yields ``(Image uint8, Mask)`` pairs, untransformed.
    """

    def __init__(
        self,
        dataset: SegmentationFiles,
        device: torch.device | str = "cpu",
        limit: int | None = None,
        progress: bool = False,
    ) -> None:
        count = len(dataset) if limit is None else min(limit, len(dataset))
        if count < 1:
            raise ValueError(
                f"nothing to hold: {describe(dataset)} gives "
                f"{len(dataset)} images and limit={limit}"
            )
        first_image, _ = dataset[0]
        self.images = torch.empty((count, *first_image.shape), dtype=torch.uint8, device=device)
        self.masks = torch.empty((count, *first_image.shape[-2:]), dtype=torch.uint8, device=device)
        for index in tqdm(range(count), disable=not progress, desc="decoding"):
            image, mask = dataset[index]
            if image.shape != first_image.shape or image.dtype != torch.uint8:
                raise ValueError(
                    f"item {index} is a {image.dtype} image of shape {tuple(image.shape)}, but a "
                    f"resident dataset needs uint8 images of one shape {tuple(first_image.shape)}"
                )
            self.images[index] = image
            self.masks[index] = mask
        self.table: ClassTable = dataset.table

    def __len__(self) -> int:
        return len(self.images)


def sampling_grid(
    image_size: tuple[int, int],
    crop_size: tuple[int, int],
    scale: torch.Tensor,
    offset: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    """The ``grid_sample`` grid (B, h, w, 2) that scales, crops and flips a batch.

    Item ``b`` is scaled by ``scale[b]``; the crop's top-left corner sits at ``offset[b]``
    (y, x) in scaled pixels (negative or beyond the edge: the crop overhangs, which pads);
    ``flip[b]`` mirrors it left to right. Pixel centres map to pixel centres
    (``align_corners=False``).
    """
    height, width = image_size
    crop_h, crop_w = crop_size
    device = scale.device
    rows = torch.arange(crop_h, device=device) + 0.5
    cols = torch.arange(crop_w, device=device) + 0.5
    y = (offset[:, 0, None] + rows) / (scale[:, None] * height) * 2 - 1
    x = (offset[:, 1, None] + cols) / (scale[:, None] * width) * 2 - 1
    x = torch.where(flip[:, None], -x, x)
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)


class ResidentLoader:
    """Batches ``(images float32 (B, 3, h, w) normalised, masks int64 (B, h, w))`` on the device,
    the images normalised as ``normalisation`` says.

    With ``crop_size`` the batch is augmented: a random scale in ``scale_range`` per image, a
    random ``crop_size`` (pixels) crop, padded with the mean colour and the ignored label where
    it overhangs, and a random horizontal flip if ``hflip``. Without it, whole images come
    normalised and unchanged. ``generator`` (a CPU ``torch.Generator``) makes the order and the
    augmentation repeatable. Downscaling samples bilinearly without antialiasing.
    """

    def __init__(
        self,
        data: ResidentDataset,
        batch_size: int,
        normalisation: Normalisation,
        crop_size: int | tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        hflip: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle, self.drop_last = (
            data,
            batch_size,
            shuffle,
            drop_last,
        )
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
        self.scale_range, self.hflip = scale_range, hflip
        self.generator = generator if generator is not None else torch.Generator()
        device = data.images.device
        self.mean = torch.tensor(normalisation.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(normalisation.std, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        full, rest = divmod(len(self.data), self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.data)
        order = (
            torch.randperm(count, generator=self.generator) if self.shuffle else torch.arange(count)
        )
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size].to(self.data.images.device)
            yield self._batch(self.data.images[index], self.data.masks[index])

    def _batch(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = (images.float() - self.mean) / self.std
        if self.crop_size is None:
            return normalised, masks.long()
        grid = self._random_grid(len(images), tuple(images.shape[-2:])).to(images.device)
        # Padding with zeros pads the image with the mean colour (0 after normalisation) and,
        # since labels are shifted up by one, the mask with 0 - 1, replaced by the ignored label.
        out_images = F.grid_sample(normalised, grid, mode="bilinear", align_corners=False)
        shifted = (masks[:, None].float() + 1).to(out_images.dtype)
        out_masks = F.grid_sample(shifted, grid, mode="nearest", align_corners=False)
        out_masks = out_masks[:, 0].long() - 1
        out_masks[out_masks < 0] = self.data.table.ignore_index
        return out_images, out_masks

    def _random_grid(self, batch: int, image_size: tuple[int, int]) -> torch.Tensor:
        low, high = self.scale_range
        scale = torch.empty(batch).uniform_(low, high, generator=self.generator)
        scaled = torch.tensor(image_size)[None] * scale[:, None]
        slack = scaled - torch.tensor(self.crop_size)[None]
        # A crop smaller than the scaled image lies inside it; a larger one overhangs it on a
        # random side: the offset lies between 0 and the slack, whatever its sign.
        offset = slack * torch.rand(batch, 2, generator=self.generator)
        flip = torch.rand(batch, generator=self.generator) < (0.5 if self.hflip else 0.0)
        return sampling_grid(image_size, self.crop_size, scale, offset, flip)
