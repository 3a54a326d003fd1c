import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fcnlib.classes import class_table
from fcnlib.data import (
    CAMVID_SPLITS,
    SBD_DIR,
    VOC_DIR,
    CamVid,
    PascalVOC,
    read_image,
    read_label,
    seg11valid_ids,
)
from fcnlib.stats import class_frequencies, median_frequency_weights


@pytest.mark.parametrize("split", sorted(CAMVID_SPLITS))
def test_camvid_split_sizes_and_first_item(camvid_root, split):
    dataset = CamVid(split)
    assert len(dataset) == CAMVID_SPLITS[split]
    image, mask = dataset[0]
    assert image.shape == (3, 360, 480) and image.dtype == torch.uint8
    assert mask.shape == (360, 480) and mask.dtype == torch.int64
    assert int(mask.min()) >= 0 and int(mask.max()) <= 11


def test_camvid_labels_use_every_class_and_void(camvid_root):
    dataset = CamVid("val")
    seen = torch.zeros(12, dtype=torch.bool)
    for index in range(0, len(dataset), 10):
        seen |= torch.bincount(dataset.mask(index).flatten(), minlength=12) > 0
    assert seen.all(), "the val split shows every class and void within 11 frames"


def test_seg11valid_is_the_papers_736_ids():
    ids = seg11valid_ids()
    assert len(ids) == len(set(ids)) == 736
    assert ids == sorted(ids) and ids[0] == "2007_000033" and ids[-1] == "2011_003271"


def test_missing_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m fcnlib download camvid"):
        CamVid("train", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="python -m fcnlib download voc"):
        PascalVOC("seg11valid", root=tmp_path / "nowhere")


def test_unpaired_files_are_reported(camvid_root, tmp_path):
    root = tmp_path / "camvid"
    for folder in ("val", "valannot"):
        shutil.copytree(camvid_root / folder, root / folder)
    next((root / "valannot").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="1 CamVid val files have no partner"):
        CamVid("val", root=root)


@pytest.fixture
def small_camvid(camvid_root, tmp_path):
    """A CamVid copy with a val split of three frames, to damage in tests."""
    root = tmp_path / "camvid"
    names = sorted(p.stem for p in (camvid_root / "valannot").iterdir())[:3]
    for name in names:
        for folder, suffix in (("val", ".jpg"), ("valannot", ".png")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(camvid_root / folder / f"{name}{suffix}", root / folder)
    return root


def test_image_and_label_of_different_sizes_name_both_files(small_camvid):
    label = sorted((small_camvid / "valannot").iterdir())[1]
    Image.open(label).crop((0, 0, 240, 180)).save(label)
    dataset = CamVid("val", root=small_camvid)
    image_path = dataset.pairs[1][0]
    with pytest.raises(ValueError, match="is \\(360, 480\\) but its label") as error:
        dataset[1]
    assert str(image_path) in str(error.value) and str(label) in str(error.value)
    dataset[0]  # the other items still read


def test_truncated_image_is_named(small_camvid):
    image = sorted((small_camvid / "val").iterdir())[0]
    image.write_bytes(image.read_bytes()[:5000])
    with pytest.raises(OSError, match="download the dataset again") as error:
        CamVid("val", root=small_camvid)[0]
    assert str(image) in str(error.value)
    with pytest.raises(OSError, match="cannot read image"):
        read_image(small_camvid / "valannot" / "missing.png")


def test_label_values_outside_the_classes_are_named(small_camvid):
    label = sorted((small_camvid / "valannot").iterdir())[2]
    values = np.array(Image.open(label))
    values[:2, :2] = [[12, 200], [11, 5]]  # 11 (void) is allowed, 12 and 200 are not
    Image.fromarray(values).save(label)
    with pytest.raises(ValueError, match=r"holds values \[12, 200\], outside") as error:
        CamVid("val", root=small_camvid)[2]
    assert str(label) in str(error.value)


def test_colour_labels_are_refused(small_camvid):
    label = sorted((small_camvid / "valannot").iterdir())[0]
    Image.open(label).convert("RGB").save(label)
    with pytest.raises(ValueError, match="not an 8-bit single-channel or palette PNG"):
        read_label(label, class_table("camvid"))


def test_voc_sample_is_a_palette_label_with_ignored_boundaries(voc_sample_root):
    mask = read_label(voc_sample_root / "label.png", class_table("voc"))
    assert sorted(torch.unique(mask).tolist()) == [0, 2, 15, 255]
    assert read_image(voc_sample_root / "image.jpg").shape[-2:] == mask.shape


def test_voc_seg11valid_split(voc_root):
    dataset = PascalVOC("seg11valid", root=voc_root)
    assert len(dataset) == 736
    assert [image.stem for image, _ in dataset.pairs] == seg11valid_ids()
    image, mask = dataset[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    assert mask.dtype == torch.int64 and image.shape[-2:] == mask.shape
    assert set(torch.unique(mask).tolist()) == {0, 2, 15, 255}


def test_voc_train_split_is_sbd_train_alone_as_in_the_reference(voc_root):
    dataset = PascalVOC("train", root=voc_root)
    sources = {image.stem: label.suffix for image, label in dataset.pairs}
    # SBD's labels, also for 2007_000032, which VOC train labels too; 2008_000008 (VOC only)
    # is not read
    assert sources == {"2007_000032": ".mat", "2007_000039": ".mat", "2009_000002": ".mat"}
    _, mask = dataset[0]
    assert set(torch.unique(mask).tolist()) == {0, 2, 15}  # SBD labels have no boundary
    sbd = voc_root / SBD_DIR
    leaked = seg11valid_ids()[0]
    for folder, suffix in (("img", ".jpg"), ("cls", ".mat")):
        os.link(sbd / folder / f"2007_000032{suffix}", sbd / folder / f"{leaked}{suffix}")
    (sbd / "train.txt").write_text((sbd / "train.txt").read_text() + leaked + "\n")
    with pytest.raises(ValueError, match=f"holds 1 seg11valid images \\({leaked}\\)"):
        PascalVOC("train", root=voc_root)


def test_voc_with_missing_files_or_ids(voc_root):
    (voc_root / VOC_DIR / "JPEGImages" / "2007_000033.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 PASCAL VOC files are missing .*_000033.jpg"):
        PascalVOC("seg11valid", root=voc_root)
    split = voc_root / VOC_DIR / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("\n".join(split.read_text().split()[1:]))
    with pytest.raises(FileNotFoundError, match="lists 735 of the 736 seg11valid"):
        PascalVOC("seg11valid", root=voc_root)
    shutil.rmtree(voc_root / SBD_DIR)
    with pytest.raises(FileNotFoundError, match=r"SBD .* `python -m fcnlib download voc`"):
        PascalVOC("train", root=voc_root)


def test_bad_split_names():
    with pytest.raises(ValueError, match="split must be one of"):
        CamVid("trainval")
    with pytest.raises(ValueError, match="split must be one of"):
        PascalVOC("val")


class Masks:
    """A dataset of given CamVid label maps, for the statistics."""

    table = class_table("camvid")

    def __init__(self, *masks):
        self.masks = [torch.tensor(m) for m in masks]

    def __len__(self):
        return len(self.masks)

    def mask(self, index):
        return self.masks[index]


def test_class_frequencies_and_weights_by_hand():
    freqs = class_frequencies(Masks([[0, 0], [1, 11]], [[1, 1], [1, 1]]))
    assert freqs.pixels.tolist() == [2, 5] + [0] * 9 + [1]
    assert freqs.images.tolist() == [1, 2] + [0] * 9 + [1]
    assert freqs.image_pixels.tolist() == [4, 8] + [0] * 9 + [4]
    np.testing.assert_allclose(freqs.share[[0, 1, 11]], [2 / 8, 5 / 8, 1 / 8])
    # freq = 2/4, 5/8 and, for void, 1/4: the median of the three is 1/2.
    np.testing.assert_allclose(median_frequency_weights(freqs), [1.0, 0.8] + [0] * 9)
    # Without void the median is that of 1/2 and 5/8.
    np.testing.assert_allclose(median_frequency_weights(freqs, False), [1.125, 0.9] + [0] * 9)


def test_camvid_train_pixel_counts_match_an_independent_count(camvid_root):
    # Pixels and images per label (0-10, then void) of SegNet-Tutorial's CamVid/trainannot as
    # counted in alexgkendall/caffe-segnet issue #37.
    freqs = class_frequencies(CamVid("train"))
    assert freqs.pixels.tolist() == [
        10682767, 14750079, 623349, 20076880, 2845085, 6166762,
        743859, 714595, 3719877, 405385, 184967, 2503995,
    ]  # fmt: skip
    assert freqs.images.tolist() == [366, 365, 366, 367, 349, 319, 351, 173, 360, 317, 201, 367]
    assert freqs.num_images == 367 and freqs.pixels.sum() == 367 * 360 * 480


def test_median_frequency_weights_of_camvid_train(camvid_root):
    weights = median_frequency_weights(class_frequencies(CamVid("train")))
    # Eigen and Fergus's definition with the median over the 12 labels, as recomputed from the
    # same labels in alexgkendall/SegNet-Tutorial issue #101 (mitalbert's script).
    recomputed = [0.2565, 0.1853, 4.3963, 0.1369, 0.9185, 0.3873, 3.5331, 1.8127, 0.7246, 5.8550]
    np.testing.assert_allclose(weights, [*recomputed, 8.1365], atol=5e-5)
    # SegNet's published weights: no definition reproduces its SignSymbol weight (9.6446, from
    # labels other than the released ones); the other ten agree in order and within 11 %.
    published = np.array([0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823,
                          6.2478, 7.3614])  # fmt: skip
    others = np.arange(11) != CamVid("train").table.classes.index("SignSymbol")
    assert np.array_equal(np.argsort(weights[others]), np.argsort(published[others]))
    assert np.abs(weights[others] / published[others] - 1).max() < 0.11
