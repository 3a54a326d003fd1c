"""Datasets read from the data root, as (image, mask) pairs of torchvision tv_tensors.

``CamVid`` is SegNet's 11-class split of CamVid; ``PascalVOC`` is PASCAL VOC 2012 with the
extra SBD annotations, split as the FCN paper uses it. Every item is checked on reading: a file
that cannot be decoded, an image and label of different sizes, or a label value outside the
classes (other than the ignored value) raises an error that names the file. Nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.datasets import SBDataset, VOCSegmentation

from fcnlib.classes import META_DIR, ClassTable, class_table
from fcnlib.runtime import DATA_ROOT_VARIABLE, data_root

CAMVID_SPLITS = {"train": 367, "val": 101, "test": 233}
VOC_SPLITS = ("train", "seg11valid")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOC_DIR = Path("VOCdevkit") / "VOC2012"
SBD_DIR = Path("benchmark_RELEASE") / "dataset"

Transforms = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[torch.Tensor, torch.Tensor]]


def read_image(
    path: Path, remedy: str = "the file is damaged or truncated: download the dataset again"
) -> tv_tensors.Image:
    """Decode an image file into a (3, H, W) uint8 ``tv_tensors.Image``; an OSError naming the
    file and ``remedy`` (what to do) if it cannot be decoded."""
    try:
        with Image.open(path) as file:
            pixels = np.array(file.convert("RGB"))
    # PIL reports damaged files as OSError (truncated data) or SyntaxError (broken PNG chunks).
    except (OSError, SyntaxError) as error:
        raise OSError(f"cannot read image {path}: {error}; {remedy}") from error
    return tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1))


def _read_label_array(path: Path) -> np.ndarray:
    if path.suffix == ".mat":  # SBD stores its labels in MATLAB files
        from scipy.io import loadmat

        return np.asarray(loadmat(path)["GTcls"][0]["Segmentation"][0])
    with Image.open(path) as file:
        if file.mode not in ("L", "P"):
            raise ValueError(
                f"label {path} is a {file.mode!r} image, not an 8-bit single-channel or palette "
                "PNG: labels hold class ids, not colours"
            )
        return np.array(file)


def read_label(path: Path, table: ClassTable) -> tv_tensors.Mask:
    """Read a label file (8-bit or palette PNG, or SBD ``.mat``) into an (H, W) int64 Mask.

    Values must be class ids ``0 .. table.num_classes - 1`` or ``table.ignore_index``.
    """
    try:
        labels = _read_label_array(path)
    except (OSError, SyntaxError) as error:
        raise OSError(
            f"cannot read label {path}: {error}. The file is damaged or truncated: "
            "download the dataset again"
        ) from error
    counts = np.bincount(labels.ravel(), minlength=256)
    counts[: table.num_classes] = 0
    counts[table.ignore_index] = 0
    if counts.any():
        bad = np.flatnonzero(counts).tolist()
        raise ValueError(
            f"label {path} holds values {bad}, outside the {table.name} classes "
            f"0..{table.num_classes - 1} and the ignored value {table.ignore_index}: "
            "the label file is not from this dataset or is damaged; download it again"
        )
    return tv_tensors.Mask(torch.from_numpy(labels.astype(np.int64)))


class SegmentationFiles(torch.utils.data.Dataset):
    """(image, label) file pairs read as ``(Image uint8 (3, H, W), Mask int64 (H, W))`` items.

    ``transforms``, when given, is called as ``transforms(image, mask)`` on every item.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        table: ClassTable,
        transforms: Transforms | None = None,
    ) -> None:
        missing = [path for pair in pairs for path in pair if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} {table.name} files are missing (first: {missing[0]}): "
                "download the dataset again"
            )
        self.pairs, self.table, self.transforms = list(pairs), table, transforms

    def __len__(self) -> int:
        return len(self.pairs)

    def mask(self, index: int) -> tv_tensors.Mask:
        """The checked label map of item ``index``, untransformed; reads no image."""
        return read_label(self.pairs[index][1], self.table)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, label_path = self.pairs[index]
        image, mask = read_image(image_path), self.mask(index)
        if image.shape[-2:] != mask.shape:
            raise ValueError(
                f"image {image_path} is {tuple(image.shape[-2:])} but its label {label_path} is "
                f"{tuple(mask.shape)} (height, width): the pair does not match; download the "
                "dataset again"
            )
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask


def describe(dataset: torch.utils.data.Dataset) -> str:
    """How messages name a dataset: its split and folder where it has them (through Subsets)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    split, root = getattr(dataset, "split", None), getattr(dataset, "root", None)
    if split is None or root is None:
        return f"the {type(dataset).__name__} dataset"
    return f"the {split} split in {root}"


def _missing_root(dataset: str, folder: Path, command: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{dataset} not found at {folder}: download it with `python -m fcnlib download "
        f"{command}`, or point {DATA_ROOT_VARIABLE} at the folder that holds it"
    )


class CamVid(SegmentationFiles):
    """CamVid in SegNet's 11-class split: ``split`` is "train" (367), "val" (101) or "test" (233).

    Items are ``(image, mask)``: a (3, 360, 480) uint8 ``tv_tensors.Image`` and a (360, 480)
    int64 ``tv_tensors.Mask`` with labels 0..10 and 11 for void. Images and labels are paired
    by file stem, so JPEG and PNG copies of the images both work. ``root`` is the ``camvid``
    folder itself (default: ``camvid/`` under the data root).
    """

    def __init__(
        self, split: str = "train", root: Path | None = None, transforms: Transforms | None = None
    ) -> None:
        if split not in CAMVID_SPLITS:
            raise ValueError(f"split must be one of {sorted(CAMVID_SPLITS)}, got {split!r}")
        folder = Path(root) if root is not None else data_root() / "camvid"
        if not (folder / split).is_dir() or not (folder / f"{split}annot").is_dir():
            raise _missing_root(f"CamVid {split} split", folder, "camvid")
        images = {p.stem: p for p in (folder / split).iterdir() if p.suffix in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in (folder / f"{split}annot").glob("*.png")}
        if not images and not labels:
            raise FileNotFoundError(
                f"CamVid {split} split: {folder / split} and {folder / f'{split}annot'} hold no "
                f"images: download it again with `python -m fcnlib download camvid`"
            )
        unpaired = sorted(images.keys() ^ labels.keys())
        if unpaired:
            raise FileNotFoundError(
                f"{len(unpaired)} CamVid {split} files have no partner in {folder} "
                f"(first: {unpaired[0]}): restore the missing image or label"
            )
        pairs = [(images[stem], labels[stem]) for stem in sorted(images)]
        super().__init__(pairs, class_table("camvid"), transforms)
        self.split, self.root = split, folder


def seg11valid_ids() -> list[str]:
    """The 736 VOC2011 validation ids not in SBD train: the FCN paper's 'seg11valid' split."""
    return (META_DIR / "seg11valid.txt").read_text().split()


class PascalVOC(SegmentationFiles):
    """PASCAL VOC 2012 with SBD as the FCN paper uses it; 21 classes, 255 ignored.

    ``split="seg11valid"``: the 736 VOC2011 validation images not in SBD train, labelled by VOC.
    ``split="train"``: SBD train, 8,498 images with SBD's labels, as the reference
    implementation trains (it holds no seg11valid image; a copy that does is refused). ``root``
    holds ``VOCdevkit/VOC2012`` and, for training, ``benchmark_RELEASE/dataset`` (default: the
    data root). Items are a (3, H, W) uint8 Image and an (H, W) int64 Mask; VOC images are at
    most 500 x 500.
    """

    def __init__(
        self,
        split: str = "seg11valid",
        root: Path | None = None,
        transforms: Transforms | None = None,
    ) -> None:
        if split not in VOC_SPLITS:
            raise ValueError(f"split must be one of {list(VOC_SPLITS)}, got {split!r}")
        root = Path(root) if root is not None else data_root()
        if not (root / VOC_DIR).is_dir():
            raise _missing_root("PASCAL VOC 2012", root / VOC_DIR, "voc")
        valid = set(seg11valid_ids())
        if split == "seg11valid":
            pairs = self._voc_pairs(root, "val", keep=lambda stem: stem in valid)
            if len(pairs) != len(valid):
                raise FileNotFoundError(
                    f"VOC2012 val in {root / VOC_DIR} lists {len(pairs)} of the {len(valid)} "
                    "seg11valid images: download VOC 2012 again"
                )
        else:
            if not (root / SBD_DIR).is_dir():
                raise _missing_root("SBD (the extra VOC annotations)", root / SBD_DIR, "voc")
            sbd = SBDataset(root / SBD_DIR, image_set="train", mode="segmentation")
            pairs = [(Path(i), Path(m)) for i, m in zip(sbd.images, sbd.masks, strict=True)]
            overlap = sorted(image.stem for image, _ in pairs if image.stem in valid)
            if overlap:
                raise ValueError(
                    f"SBD train in {root / SBD_DIR} holds {len(overlap)} seg11valid images "
                    f"({', '.join(overlap[:3])}): download SBD again"
                )
        super().__init__(pairs, class_table("voc"), transforms)
        self.split, self.root = split, root

    @staticmethod
    def _voc_pairs(
        root: Path, image_set: str, keep: Callable[[str], bool]
    ) -> list[tuple[Path, Path]]:
        voc = VOCSegmentation(root, year="2012", image_set=image_set)
        pairs = [(Path(i), Path(m)) for i, m in zip(voc.images, voc.masks, strict=True)]
        return [(image, label) for image, label in pairs if keep(image.stem)]


#: The dataset classes by the names configurations and records use.
DATASETS: dict[str, type[SegmentationFiles]] = {"camvid": CamVid, "voc": PascalVOC}
