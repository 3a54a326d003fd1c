"""Datasets read from the data root, as (image, mask) pairs of torchvision tv_tensors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from fcnlib.runtime import DATA_ROOT_VARIABLE, data_root

CAMVID_SPLITS = {"train": 367, "val": 101, "test": 233}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

Transforms = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


class CamVid(torch.utils.data.Dataset):
    """CamVid in SegNet's 11-class split: ``split`` is "train" (367), "val" (101) or "test" (233).

    Items are ``(image, mask)``: a (3, 360, 480) uint8 ``tv_tensors.Image`` and a (360, 480)
    int64 ``tv_tensors.Mask`` with labels 0..10 and 11 for void. Images and labels are paired
    by file stem, so JPEG and PNG copies of the images both work.
    """

    def __init__(
        self, split: str = "train", root: Path | None = None, transforms: Transforms | None = None
    ) -> None:
        if split not in CAMVID_SPLITS:
            raise ValueError(f"split must be one of {sorted(CAMVID_SPLITS)}, got {split!r}")
        folder = Path(root) if root is not None else data_root() / "camvid"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"CamVid not found at {folder}: download it with `python -m fcnlib download "
                f"camvid`, or point {DATA_ROOT_VARIABLE} at the folder that holds camvid/"
            )
        self.split, self.root, self.transforms = split, folder, transforms
        images = {p.stem: p for p in (folder / split).iterdir() if p.suffix in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in (folder / f"{split}annot").glob("*.png")}
        unpaired = sorted(images.keys() ^ labels.keys())
        if unpaired:
            raise FileNotFoundError(
                f"{len(unpaired)} CamVid {split} files have no partner in {folder} "
                f"(first: {unpaired[0]}): restore the missing image or label"
            )
        self.pairs = [(images[stem], labels[stem]) for stem in sorted(images)]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        with Image.open(image_path) as file:
            pixels = torch.from_numpy(np.array(file.convert("RGB")))
        image = tv_tensors.Image(pixels.permute(2, 0, 1))
        with Image.open(label_path) as file:
            mask = tv_tensors.Mask(torch.from_numpy(np.array(file)).long())
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask
