import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fcnlib.data import SBD_DIR, VOC_DIR, seg11valid_ids
from fcnlib.runtime import data_root


def provided(name: str):
    """The folder ``name`` under the data root: CI must have it; elsewhere its tests skip."""
    folder = data_root() / name
    if not folder.is_dir():
        message = f"{name} is not at {folder}: download it or set FCNLIB_DATA_ROOT"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the data: {message}")
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def camvid_root():
    return provided("camvid")


@pytest.fixture(scope="session")
def voc_sample_root():
    return provided("voc-sample")


# Ids of the VOC-layout test tree: each list tests one rule of the FCN split.
VOC_TRAIN_ONLY = ["2008_000008"]  # VOC2012 train, not in SBD train: the reference skips it
SBD_AND_VOC_TRAIN = ["2007_000032"]  # in both: read with the SBD label
SBD_TRAIN = ["2007_000039", "2009_000002"]  # SBD train only
VOC_VAL_NOT_SEG11 = ["2007_000039"]  # VOC2012 val, in SBD train: not evaluated on


def build_voc_tree(root: Path, sample: Path) -> Path:
    """A VOC2012 + SBD tree under ``root`` whose every image is the VOC sample (hard links)."""
    voc, sbd = root / VOC_DIR, root / SBD_DIR
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", sbd / "img", sbd / "cls"):
        folder.mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    labels = np.array(Image.open(sample / "label.png"))
    shutil.copy(sample / "image.jpg", root / "image.jpg")
    shutil.copy(sample / "label.png", root / "label.png")
    savemat(root / "label.mat", {"GTcls": {"Segmentation": np.where(labels == 255, 0, labels)}})

    def add(folder: Path, ids: list[str], source: str, suffix: str) -> None:
        for name in ids:
            os.link(root / source, folder / f"{name}{suffix}")

    val = seg11valid_ids() + VOC_VAL_NOT_SEG11
    train = VOC_TRAIN_ONLY + SBD_AND_VOC_TRAIN
    add(voc / "JPEGImages", val + train, "image.jpg", ".jpg")
    add(voc / "SegmentationClass", val + train, "label.png", ".png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train) + "\n")
    sbd_train = SBD_AND_VOC_TRAIN + SBD_TRAIN
    add(sbd / "img", sbd_train, "image.jpg", ".jpg")
    add(sbd / "cls", sbd_train, "label.mat", ".mat")
    (sbd / "train.txt").write_text("\n".join(sbd_train) + "\n")
    (sbd / "val.txt").write_text("")
    for name in ("image.jpg", "label.png", "label.mat"):
        (root / name).unlink()
    return root


@pytest.fixture
def voc_root(voc_sample_root, tmp_path):
    """A VOC2012 + SBD tree in a temporary folder (:func:`build_voc_tree`)."""
    return build_voc_tree(tmp_path / "voc", voc_sample_root)
