import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fcnlib.metrics import (
    SegmentationMetrics,
    accuracy_by_boundary_distance,
    boundary_distance,
    confusion_matrix,
    scores,
    trimap_accuracy,
)


def loop_metrics(pred, target, num_classes, ignore_index):
    """The paper's §5 definitions, pixel by pixel in plain Python: an independent reference."""
    n = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(pred.flatten().tolist(), target.flatten().tolist(), strict=True):
        if t != ignore_index:
            n[t][p] += 1
    t = [sum(row) for row in n]
    predicted = [sum(n[j][i] for j in range(num_classes)) for i in range(num_classes)]
    total = sum(t)
    accuracies = [n[i][i] / t[i] for i in range(num_classes) if t[i] > 0]
    counted = [i for i in range(num_classes) if t[i] + predicted[i] > 0]
    ius = {i: n[i][i] / (t[i] + predicted[i] - n[i][i]) for i in counted}
    return {
        "pixel_accuracy": sum(n[i][i] for i in range(num_classes)) / total,
        "mean_accuracy": sum(accuracies) / len(accuracies),
        "mean_iu": sum(ius.values()) / len(ius),
        "frequency_weighted_iu": sum(t[i] * ius[i] for i in counted) / total,
        "per_class_iu": [ius.get(i, math.nan) for i in range(num_classes)],
    }


@st.composite
def labelled_pairs(draw):
    num_classes = draw(st.integers(1, 6))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    # Draw from fewer classes than exist, so some are absent from one side or both.
    pred = torch.randint(0, num_classes, shape, generator=generator)
    target = torch.randint(0, num_classes + 1, shape, generator=generator)  # num_classes = void
    target[0, 0, 0] = 0  # at least one counted pixel
    return pred, target, num_classes


@settings(max_examples=50, deadline=None)
@given(labelled_pairs())
def test_metrics_match_a_pixel_loop(pair):
    pred, target, num_classes = pair
    got = scores(confusion_matrix(pred, target, num_classes, ignore_index=num_classes))
    expected = loop_metrics(pred, target, num_classes, ignore_index=num_classes)
    for name in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        assert got[name] == pytest.approx(expected[name], rel=1e-12), name
    assert got["per_class_iu"].tolist() == pytest.approx(expected["per_class_iu"], nan_ok=True)


def test_a_hand_computed_case():
    # Three classes; class 2 is never labelled nor predicted, so it does not count.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 9, 9]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 0]])
    # Counted pixels (target != 9): n = [[2, 1, 0], [1, 2, 0], [0, 0, 0]].
    confusion = confusion_matrix(pred, target, 3, ignore_index=9)
    assert confusion.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    got = scores(confusion)
    assert got["pixel_accuracy"] == pytest.approx(4 / 6)
    assert got["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert got["mean_iu"] == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert got["frequency_weighted_iu"] == pytest.approx((3 * 2 / 4 + 3 * 2 / 4) / 6)
    iu = got["per_class_iu"]
    assert iu[:2].tolist() == [0.5, 0.5] and math.isnan(iu[2])


def test_a_class_predicted_but_never_labelled_counts_zero_in_mean_iu():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    got = scores(confusion_matrix(pred, target, 3))
    assert got["per_class_iu"].tolist() == [0.5, 1.0, 0.0]
    assert got["mean_iu"] == pytest.approx(0.5)
    assert got["mean_accuracy"] == pytest.approx(0.75)  # class 2 has no pixels: left out


@settings(max_examples=20, deadline=None)
@given(st.lists(labelled_pairs(), min_size=1, max_size=3))
def test_the_accumulator_equals_one_matrix_over_all_batches(pairs):
    num_classes = max(c for _, _, c in pairs)
    metrics = SegmentationMetrics(num_classes, ignore_index=num_classes)
    preds, targets = [], []
    for pred, target, classes in pairs:
        # Relabel the batch's void to the common void.
        target = torch.where(target == classes, num_classes, target)
        metrics.update(pred.flatten(), target.flatten())
        preds.append(pred.flatten())
        targets.append(target.flatten())
    whole = confusion_matrix(torch.cat(preds), torch.cat(targets), num_classes, num_classes)
    assert torch.equal(metrics.confusion, whole)
    assert metrics.compute()["mean_iu"] == scores(whole)["mean_iu"]


def test_the_accumulator_takes_scores_and_resets():
    metrics = SegmentationMetrics(2)
    logits = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # (N=1, C=2, H=1, W=2): labels 0, 1
    metrics.update(logits, torch.tensor([[[0, 0]]]))
    assert metrics.confusion.tolist() == [[1, 1], [0, 0]]
    metrics.reset()
    with pytest.raises(RuntimeError, match="call update"):
        metrics.compute()


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(
            torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 2
        )
    with pytest.raises(ValueError, match="found values from 0 to 5"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(torch.zeros(3), torch.zeros(3, dtype=torch.long), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_accumulator_counts_on_the_gpu_as_on_the_cpu():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (2, 30, 40), generator=generator)
    target = torch.randint(0, 5, (2, 30, 40), generator=generator)
    metrics = SegmentationMetrics(4, ignore_index=4)
    metrics.update(pred.cuda(), target.cuda())
    assert metrics.confusion.is_cuda
    assert torch.equal(metrics.confusion.cpu(), confusion_matrix(pred, target, 4, 4))


def test_boundary_distance_of_a_vertical_edge():
    # Columns 0-2 are class 0, columns 3-5 class 1: columns 2 and 3 are the boundary.
    target = torch.tensor([[0, 0, 0, 1, 1, 1]] * 4)
    assert boundary_distance(target)[0].tolist() == [2, 1, 0, 0, 1, 2]
    assert boundary_distance(torch.zeros(3, 3, dtype=torch.long)).isinf().all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16))
def test_boundary_distance_matches_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (5, 7), generator=generator)
    target[:, :3] = 0  # some pixels far from any boundary
    got = boundary_distance(target)
    edge = [
        (y, x)
        for y in range(5)
        for x in range(7)
        if any(
            0 <= y + dy < 5 and 0 <= x + dx < 7 and target[y + dy, x + dx] != target[y, x]
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))
        )
    ]
    for y in range(5):
        for x in range(7):
            nearest = min(math.hypot(y - ey, x - ex) for ey, ex in edge) if edge else math.inf
            assert got[y, x].item() == pytest.approx(nearest)


def test_accuracy_by_boundary_distance_bins_right_and_all_pixels():
    target = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    pred = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 9]])
    target[1, 5] = 9  # ignored
    # Distances by column: 2 1 0 0 1 2 (row 1's void pixel moves its own boundary).
    right, total = accuracy_by_boundary_distance(pred, target, [0, 1, 10], ignore_index=9)
    distance = boundary_distance(target)
    near = (distance < 1) & (target != 9)
    assert total.tolist() == [int(near.sum()), int(((distance >= 1) & (target != 9)).sum())]
    assert right.tolist() == [int((near & (pred == target)).sum()), int(total[1])]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.floats(0.5, 20), min_size=1, max_size=4))
def test_trimap_counts_the_labelled_pixels_within_each_band(seed, widths):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (12, 14), generator=generator).repeat_interleave(2, 1)
    target[0, :5] = 9
    pred = torch.randint(0, 3, target.shape, generator=generator)
    widths = sorted(set(widths))
    right, total = trimap_accuracy(pred, target, widths, ignore_index=9)
    distance = boundary_distance(target)
    for k, width in enumerate(widths):
        band = (distance < width) & (target != 9)
        assert total[k] == band.sum() and right[k] == (band & (pred == target)).sum()


def test_trimap_widths_must_increase():
    with pytest.raises(ValueError, match="widths must be positive and increasing"):
        trimap_accuracy(torch.zeros(2, 2), torch.zeros(2, 2), [4, 2])
