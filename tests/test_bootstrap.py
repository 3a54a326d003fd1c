"""Bootstrap intervals of the mean IU over test images (fcnlib.metrics)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnlib.metrics import (
    SegmentationMetrics,
    bootstrap_difference,
    bootstrap_interval,
    confusion_matrix,
    scores,
)
from fcnlib.scoring import format_difference, format_mean_iu, paired_difference


def matrices(count: int, classes: int = 3):
    return st.lists(
        st.lists(st.integers(0, 50), min_size=classes * classes, max_size=classes * classes),
        min_size=count,
        max_size=count,
    ).map(lambda rows: torch.tensor(rows).reshape(count, classes, classes) + torch.eye(classes))


@settings(max_examples=30, deadline=None)
@given(matrices(6), st.integers(0, 10))
def test_the_interval_is_ordered_and_repeats_with_its_seed(confusions, seed):
    low, high = bootstrap_interval(confusions, samples=200, seed=seed)
    assert 0 <= low <= high <= 1
    assert bootstrap_interval(confusions, samples=200, seed=seed) == (low, high)


@settings(max_examples=20, deadline=None)
@given(matrices(1), st.integers(1, 8))
def test_identical_images_leave_no_doubt(one, copies):
    # Every resample sums copies of one matrix, and the mean IU ignores the scale.
    confusions = one.repeat(copies, 1, 1)
    low, high = bootstrap_interval(confusions, samples=100)
    assert low == pytest.approx(high) == pytest.approx(scores(one[0])["mean_iu"])


@settings(max_examples=20, deadline=None)
@given(matrices(5), matrices(5))
def test_a_paired_difference_is_antisymmetric_and_zero_against_itself(first, second):
    difference, (low, high) = bootstrap_difference(first, second, samples=200)
    reverse, (r_low, r_high) = bootstrap_difference(second, first, samples=200)
    assert difference == pytest.approx(-reverse)
    assert (low, high) == pytest.approx((-r_high, -r_low))
    assert bootstrap_difference(first, first, samples=50) == (0.0, (0.0, 0.0))
    a, b = scores(first.sum(0))["mean_iu"], scores(second.sum(0))["mean_iu"]
    assert difference == pytest.approx(a - b)


def test_two_images_by_hand():
    # Image A: class 0 right (IU 1 for class 0 alone); image B: half of class 1 taken for 0.
    a = torch.tensor([[4, 0], [0, 0]])
    b = torch.tensor([[0, 0], [2, 2]])
    # Resamples are AA (mean IU 1), BB (IU of 0: 0, of 1: 2/4 -> 0.25) and AB or BA
    # (IU of 0: 4/6, of 1: 2/4 -> 7/12); the 95 % interval runs from BB's value to AA's.
    low, high = bootstrap_interval(torch.stack([a, b]), samples=4000)
    assert (low, high) == pytest.approx((0.25, 1.0))
    assert scores(a + b)["mean_iu"] == pytest.approx(7 / 12)


def test_metrics_keep_each_image_for_intervals():
    metrics = SegmentationMetrics(2, ignore_index=255, per_image=True)
    first, second = torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 0], [1, 255]])
    metrics.update(first, first)
    metrics.update(torch.zeros(2, 2, dtype=torch.long), second)
    stack = metrics.image_confusions()
    assert stack.shape == (2, 2, 2)
    assert torch.equal(stack.sum(0), metrics.confusion)
    assert torch.equal(stack[1], confusion_matrix(torch.zeros(2, 2).long(), second, 2, 255))
    low, high = metrics.interval()
    assert low <= metrics.compute()["mean_iu"] <= high
    with pytest.raises(RuntimeError, match="per_image=True"):
        SegmentationMetrics(2).image_confusions()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one confusion matrix per image"):
        bootstrap_difference(torch.ones(3, 2, 2), torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(torch.ones(3, 2, 2), level=95)


def record(confusions: torch.Tensor, split: str = "test") -> dict:
    """A scored record as fcnlib.scoring.evaluation_record keeps it, for two classes."""
    return {
        "model": "fcn8s",
        "split": split,
        "images": len(confusions),
        "per_class_iu": {"a": None, "b": None},
        "image_confusions": confusions.flatten(1).tolist(),
    }


def test_records_are_compared_image_by_image():
    first = torch.tensor([[[4, 0], [0, 0]], [[0, 0], [2, 2]], [[3, 1], [1, 3]]])
    second = first.flip(-1)
    expected = bootstrap_difference(first, second)
    assert paired_difference(record(first), record(second)) == expected
    with pytest.raises(ValueError, match="compare nets on the same images"):
        paired_difference(record(first), record(first, split="val"))
    with pytest.raises(ValueError, match="keeps no per-image confusion matrices"):
        paired_difference(record(first), {**record(second), "image_confusions": None})


def test_records_print_with_their_intervals():
    first = torch.tensor([[[4, 0], [0, 0]], [[0, 0], [2, 2]], [[3, 1], [1, 3]]])
    same = format_difference(record(first), record(first))
    assert same == "+0.0 (+0.0 to +0.0), unresolved"
    scored = {"metrics": {"mean_iu": 0.628}, "mean_iu_interval": [0.61, 0.645]}
    assert format_mean_iu(scored) == "62.8 (61.0 to 64.5)"
