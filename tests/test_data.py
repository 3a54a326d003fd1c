import shutil

import pytest
import torch

from fcnlib.data import CAMVID_SPLITS, CamVid


@pytest.mark.parametrize("split", sorted(CAMVID_SPLITS))
def test_camvid_split_sizes_and_first_item(camvid_root, split):
    dataset = CamVid(split)
    assert len(dataset) == CAMVID_SPLITS[split]
    image, mask = dataset[0]
    assert image.shape == (3, 360, 480) and image.dtype == torch.uint8
    assert mask.shape == (360, 480) and mask.dtype == torch.int64
    assert int(mask.min()) >= 0 and int(mask.max()) <= 11


def test_missing_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m fcnlib download camvid"):
        CamVid("train", root=tmp_path / "nowhere")


def test_unpaired_files_are_reported(camvid_root, tmp_path):
    root = tmp_path / "camvid"
    for folder in ("val", "valannot"):
        shutil.copytree(camvid_root / folder, root / folder)
    next((root / "valannot").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="1 CamVid val files have no partner"):
        CamVid("val", root=root)
