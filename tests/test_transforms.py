import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from fcnlib.classes import class_table
from fcnlib.data import CamVid
from fcnlib.resident import ResidentDataset, ResidentLoader, sampling_grid
from fcnlib.transforms import (
    IMAGENET,
    SIGNED,
    RandomScale,
    denormalise,
    eval_transforms,
    train_transforms,
)

CAMVID = class_table("camvid")
IGNORE = CAMVID.ignore_index
MEAN_COLOUR = torch.tensor([round(255 * m) for m in IMAGENET.mean])
BLUE = 128  # every block has this blue; the mean colour's is 104


def block_pair(height: int, width: int, block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """An image of uniform ``block``-pixel squares whose colour encodes the square, and its mask.

    Square (i, j) is coloured (20 + 40 i, 20 + 40 j, 128) and labelled ``label_of(i, j)``.
    """
    rows = torch.arange(height)[:, None] // block
    cols = torch.arange(width)[None, :] // block
    rows, cols = torch.broadcast_tensors(rows, cols)
    image = torch.stack([20 + 40 * rows, 20 + 40 * cols, torch.full_like(rows, BLUE)])
    return tv_tensors.Image(image.to(torch.uint8)), tv_tensors.Mask(label_of(rows, cols))


def label_of(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return (rows * 3 + cols) % CAMVID.num_classes


def assert_aligned(image: torch.Tensor, mask: torch.Tensor) -> None:
    """Every pixel whose colour is exactly a block's carries that block's label, and pixels of
    the padding colour are ignored. Colours blended across a block edge are not judged."""
    pixels = image.long()
    rows, cols = (pixels[0] - 20) / 40, (pixels[1] - 20) / 40
    near = lambda value: (value - value.round()).abs() * 40 <= 2  # noqa: E731
    block = near(rows) & near(cols) & ((pixels[2] - BLUE).abs() <= 2)
    padding = ((pixels - MEAN_COLOUR[:, None, None]).abs() <= 1).all(dim=0)
    expected = label_of(rows.round().long(), cols.round().long())
    assert block.sum() >= 0.1 * (mask != IGNORE).sum(), "too few pixels were judged"
    assert torch.equal(mask[block], expected[block])
    assert (mask[padding] == IGNORE).all()
    assert not (block & (mask == IGNORE)).any()


sizes = st.integers(min_value=8, max_value=40)


@settings(max_examples=40, deadline=None)
@given(height=sizes, width=sizes, crop=sizes, seed=st.integers(0, 2**31 - 1))
def test_train_transforms_keep_image_and_mask_aligned(height, width, crop, seed):
    torch.manual_seed(seed)
    pipeline = train_transforms(crop, IGNORE, IMAGENET, scale_range=(0.5, 2.0), jitter=False)
    image, mask = pipeline(*block_pair(height, width))
    assert image.shape == (3, crop, crop) and image.dtype == torch.float32
    assert mask.shape == (crop, crop) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(range(CAMVID.num_classes)) | {IGNORE}
    assert_aligned(denormalise(image, IMAGENET), mask)


@settings(max_examples=30, deadline=None)
@given(height=sizes, width=sizes, seed=st.integers(0, 2**31 - 1))
def test_random_scale_resamples_masks_by_nearest_neighbour_only(height, width, seed):
    torch.manual_seed(seed)
    image, mask = block_pair(height, width)
    mask = tv_tensors.Mask(torch.randint(0, 12, (height, width)))
    scaled_image, scaled = RandomScale((0.3, 3.0))(image, mask)
    assert scaled.shape == scaled_image.shape[-2:]

    # Nearest-exact takes, for each output row and column, the source under its centre. PyTorch
    # computes the scale and the position in float32; so must the reference, or centres that
    # fall exactly on a source boundary round differently.
    def sources(size_in, size_out):
        scale = torch.tensor(size_in, dtype=torch.float32) / size_out
        centres = (torch.arange(size_out, dtype=torch.float32) + 0.5) * scale
        return centres.floor().long().clamp(max=size_in - 1)

    src_rows, src_cols = sources(height, scaled.shape[0]), sources(width, scaled.shape[1])
    assert torch.equal(scaled, mask[src_rows][:, src_cols])


def test_jitter_changes_the_image_but_never_the_mask():
    torch.manual_seed(0)
    image, mask = block_pair(40, 40)
    pipeline = train_transforms(40, IGNORE, IMAGENET, scale_range=None, hflip=False, jitter=True)
    out_image, out_mask = pipeline(image, mask)
    assert torch.equal(out_mask, mask)
    assert (denormalise(out_image, IMAGENET).int() - image.int()).abs().max() > 5


@pytest.mark.parametrize(
    ("normalisation", "mean", "std"),
    [(IMAGENET, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (SIGNED, (0.5,) * 3, (0.5,) * 3)],
)
def test_eval_transforms_normalise_as_they_are_told(normalisation, mean, std):
    image, mask = block_pair(10, 12)
    out_image, out_mask = eval_transforms(normalisation)(image, mask)
    column = (3, 1, 1)
    expected = (image.float() / 255 - torch.tensor(mean).view(column)) / torch.tensor(std).view(
        column
    )
    torch.testing.assert_close(out_image, expected)
    assert torch.equal(out_mask, mask) and out_mask.dtype == torch.int64
    assert torch.equal(denormalise(out_image, normalisation), image)


def test_random_scale_rejects_a_bad_range():
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((0.0, 2.0))


class BlockDataset:
    """Items of one size from ``block_pair``, flipped differently so that items differ."""

    table = CAMVID

    def __init__(self, count: int, height: int, width: int) -> None:
        self.items = [block_pair(height, width) for _ in range(count)]
        self.items = [
            (im.flip(-1), m.flip(-1)) if i % 2 else (im, m) for i, (im, m) in enumerate(self.items)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]


@settings(max_examples=30, deadline=None)
@given(height=sizes, width=sizes, crop=sizes, seed=st.integers(0, 2**31 - 1))
def test_resident_loader_keeps_image_and_mask_aligned(height, width, crop, seed):
    data = ResidentDataset(BlockDataset(3, height, width))
    loader = ResidentLoader(
        data, 2, IMAGENET, crop_size=crop, generator=torch.Generator().manual_seed(seed)
    )
    batches = list(loader)
    assert [len(images) for images, _ in batches] == [2, 1]
    for images, masks in batches:
        assert images.shape[1:] == (3, crop, crop) and masks.shape[1:] == (crop, crop)
        assert masks.dtype == torch.int64
        for image, mask in zip(images, masks, strict=True):
            assert_aligned(denormalise(image, IMAGENET), mask)


def test_resident_loader_without_augmentation_matches_eval_transforms(camvid_root):
    dataset = CamVid("val")
    data = ResidentDataset(dataset, device="cpu", limit=3)
    assert data.images.shape == (3, 3, 360, 480) and data.images.dtype == torch.uint8
    images, masks = next(iter(ResidentLoader(data, 3, SIGNED, shuffle=False)))
    for index in range(3):
        image, mask = eval_transforms(SIGNED)(*dataset[index])
        torch.testing.assert_close(images[index], image)
        assert torch.equal(masks[index], mask)


def test_identity_grid_reproduces_the_batch():
    image, mask = block_pair(20, 30)
    grid = sampling_grid(
        (20, 30), (20, 30), torch.ones(1), torch.zeros(1, 2), torch.zeros(1, dtype=torch.bool)
    )
    sampled = torch.nn.functional.grid_sample(image[None].float(), grid, align_corners=False)
    torch.testing.assert_close(sampled[0], image.float())
    flipped = sampling_grid(
        (20, 30), (20, 30), torch.ones(1), torch.zeros(1, 2), torch.ones(1, dtype=torch.bool)
    )
    sampled = torch.nn.functional.grid_sample(
        mask[None, None].float(), flipped, mode="nearest", align_corners=False
    )
    assert torch.equal(sampled[0, 0].long(), mask.flip(-1))


def test_resident_dataset_refuses_mixed_sizes():
    class Mixed(BlockDataset):
        def __getitem__(self, index):
            return block_pair(10 + index, 10)

    with pytest.raises(ValueError, match="one shape"):
        ResidentDataset(Mixed(2, 10, 10))
