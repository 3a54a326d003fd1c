import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnlib.data import CamVid
from fcnlib.metrics import confusion_matrix, scores
from fcnlib.oracle import (
    block_fractions,
    downsample_labels,
    grid_crop,
    oracle_labels,
    oracle_scores,
    upsample_labels,
)

VOID = 9


@st.composite
def label_maps(draw, max_side=20):
    num_classes = draw(st.integers(1, 5))
    height, width = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    labels = torch.randint(0, num_classes + 1, (height, width), generator=generator)
    labels[labels == num_classes] = VOID
    return labels, num_classes


def loop_majority(labels, stride, num_classes):
    """Majority vote block by block in plain Python, ties to the smallest label, void skipped."""
    height, width = labels.shape
    rows = []
    for top in range(0, height, stride):
        row = []
        for left in range(0, width, stride):
            block = labels[top : top + stride, left : left + stride].flatten().tolist()
            counts = [block.count(c) for c in range(num_classes)]
            row.append(counts.index(max(counts)))
        rows.append(row)
    return torch.tensor(rows)


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.integers(1, 7))
def test_majority_matches_a_block_loop(case, stride):
    labels, num_classes = case
    coarse = downsample_labels(labels, stride, "majority", num_classes, VOID)
    assert torch.equal(coarse, loop_majority(labels, stride, num_classes))


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.integers(1, 7), st.sampled_from(["nearest", "majority"]))
def test_oracle_labels_are_blockwise_constant_valid_and_full_size(case, stride, method):
    labels, num_classes = case
    full = oracle_labels(labels, stride, method, num_classes, VOID)
    assert full.shape == labels.shape
    assert int(full.min()) >= 0 and int(full.max()) < num_classes
    height, width = labels.shape
    for top in range(0, height, stride):
        for left in range(0, width, stride):
            block = full[top : top + stride, left : left + stride]
            assert (block == block[0, 0]).all()
            truth = labels[top : top + stride, left : left + stride]
            if method == "nearest" and (truth != VOID).any():
                assert (truth == block[0, 0]).any()  # it is one of the block's labels


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.sampled_from(["nearest", "majority"]))
def test_stride_one_is_perfect(case, method):
    labels, num_classes = case
    labels[0, 0] = 0
    full = oracle_labels(labels, 1, method, num_classes, VOID)
    got = scores(confusion_matrix(full, labels, num_classes, VOID))
    assert got["mean_iu"] == 1.0 and got["pixel_accuracy"] == 1.0


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.integers(2, 7))
def test_majority_is_never_less_pixel_accurate_than_nearest(case, stride):
    # Majority maximises the right pixels of every block, so of the whole map.
    labels, num_classes = case
    labels[0, 0] = 0
    accuracy = {
        method: scores(
            confusion_matrix(
                oracle_labels(labels, stride, method, num_classes, VOID), labels, num_classes, VOID
            )
        )["pixel_accuracy"]
        for method in ("nearest", "majority")
    }
    assert accuracy["majority"] >= accuracy["nearest"]


def test_a_constructed_case_with_a_known_answer():
    # One 3 x 3 block: eight 0s around a 1. Nearest picks the centre, majority the 0s.
    labels = torch.zeros(3, 3, dtype=torch.long)
    labels[1, 1] = 1
    results = oracle_scores([labels], [3], num_classes=2, ignore_index=VOID)
    # Nearest predicts 1 everywhere: IU(0) = 0 / 9, IU(1) = 1 / 9.
    assert results["nearest", 3]["mean_iu"] == pytest.approx(1 / 18)
    # Majority predicts 0 everywhere: IU(0) = 8 / 9, IU(1) = 0 / 1.
    assert results["majority", 3]["mean_iu"] == pytest.approx(4 / 9)


def test_nearest_skips_a_void_centre_and_void_only_blocks_get_label_zero():
    labels = torch.tensor([[2, 1, 2], [2, VOID, 2], [2, 2, 2]])
    assert downsample_labels(labels, 3, "nearest", 3, VOID).tolist() == [[1]]
    void = torch.full((4, 4), VOID)
    for method in ("nearest", "majority"):
        assert downsample_labels(void, 4, method, 3, VOID).tolist() == [[0]]


def test_partial_blocks_at_the_edges():
    labels = torch.arange(5).repeat(5, 1) % 3  # columns 0 1 2 0 1
    coarse = downsample_labels(labels, 4, "majority", 3, VOID)
    assert coarse.tolist() == [[0, 1], [0, 1]]  # the last column block holds only 1s
    assert upsample_labels(coarse, 4, (5, 5))[:, 4].tolist() == [1] * 5


def test_bad_arguments_are_reported():
    labels = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="method must be one of"):
        downsample_labels(labels, 2, "bilinear", 2, VOID)
    with pytest.raises(ValueError, match="stride must be"):
        downsample_labels(labels, 0, "nearest", 2, VOID)
    with pytest.raises(ValueError, match="cannot cover"):
        upsample_labels(torch.zeros(2, 2, dtype=torch.long), 2, (5, 4))


def test_camvid_oracle_loses_accuracy_at_stride_32(camvid_root):
    _, labels = CamVid("test")[0]
    results = oracle_scores([labels], [1, 32], num_classes=11, ignore_index=11)
    assert results["majority", 1]["mean_iu"] == 1.0
    assert 0.0 < results["majority", 32]["mean_iu"] < 1.0


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.integers(1, 7))
def test_block_fractions_are_average_pooled_one_hot_labels(case, stride):
    # An independent reference: average pooling of the one-hot labels, void masked out.
    labels, num_classes = case
    fractions = block_fractions(labels, stride, num_classes, VOID)
    valid = labels != VOID
    one_hot = torch.nn.functional.one_hot(torch.where(valid, labels, 0), num_classes)
    one_hot = (one_hot * valid[..., None]).permute(2, 0, 1).double()
    pad = (0, -labels.shape[1] % stride, 0, -labels.shape[0] % stride)
    summed = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(one_hot, pad)[None], stride, divisor_override=1
    )[0]
    expected = summed / summed.sum(0, keepdim=True).clamp(min=1)
    torch.testing.assert_close(fractions, expected)


@settings(max_examples=40, deadline=None)
@given(label_maps(), st.integers(1, 7))
def test_bilinear_baseline_keeps_uniform_regions_and_is_perfect_at_stride_one(case, stride):
    labels, num_classes = case
    labels[0, 0] = 0
    assert torch.equal(
        oracle_labels(labels, 1, "bilinear", num_classes, VOID)[labels != VOID],
        labels[labels != VOID],
    )
    uniform = torch.full(labels.shape, num_classes - 1)
    assert (oracle_labels(uniform, stride, "bilinear", num_classes, VOID) == num_classes - 1).all()


def test_bilinear_boundaries_fall_between_block_centres():
    # Two 4x4 blocks, class 0 then class 1: majority switches at the block edge (column 4),
    # and so does the bilinear map, halfway between the centres 1.5 and 5.5; a block of 3
    # zeros and a 1-column of ones moves the bilinear boundary, not the majority one.
    labels = torch.tensor([[0] * 4 + [1] * 4] * 4)
    bilinear = oracle_labels(labels, 4, "bilinear", 2, VOID)
    assert bilinear[0].tolist() == [0] * 4 + [1] * 4
    labels[:, 3] = 1  # the first block is now 3/4 class 0
    bilinear = oracle_labels(labels, 4, "bilinear", 2, VOID)
    majority = oracle_labels(labels, 4, "majority", 2, VOID)
    assert majority[0].tolist() == [0] * 4 + [1] * 4
    assert bilinear[0].tolist() == [0] * 3 + [1] * 5  # closer to the true boundary at 3


def test_grid_crop_keeps_the_centre_in_whole_blocks():
    labels = torch.arange(360 * 480).reshape(360, 480)
    cropped = grid_crop(labels, 32)
    assert cropped.shape == (352, 480) and cropped[0, 0] == labels[4, 0]
    assert grid_crop(labels, 7).shape == (357, 476)
