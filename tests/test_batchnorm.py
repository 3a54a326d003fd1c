import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcnlib.batchnorm import recalibrated


def two_norms(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(4, 2, 3),
        nn.BatchNorm2d(2),
    )
    for norm in (net[1], net[5]):  # running statistics far from any batch's
        norm.running_mean.fill_(5.0)
        norm.running_var.fill_(9.0)
        nn.init.uniform_(norm.weight, 0.5, 2.0)
        nn.init.uniform_(norm.bias, -1.0, 1.0)
    return net


def by_hand(net: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple]:
    """Each batch norm's average batch mean and unbiased variance, the batch normalised by
    its own statistics on the way, dropout off."""
    sums = {1: [], 5: []}
    for x in batches:
        h = x
        for index, layer in enumerate(net):
            if isinstance(layer, nn.BatchNorm2d):
                mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
                n = h.numel() / h.shape[1]
                sums[index].append((mean, var * n / (n - 1)))
                h = F.batch_norm(h, mean, var, layer.weight, layer.bias, eps=layer.eps)
            elif not isinstance(layer, nn.Dropout):
                h = layer(h)
    return [
        (torch.stack([m for m, _ in s]).mean(0), torch.stack([v for _, v in s]).mean(0))
        for s in sums.values()
    ]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 1000),
    sizes=st.lists(st.tuples(st.integers(1, 3), st.integers(5, 9)), min_size=1, max_size=4),
)
def test_recalibrated_statistics_are_the_batches_average(seed, sizes):
    net = two_norms(seed)
    batches = [torch.randn(n, 3, side, side + 1) * 3 + 1 for n, side in sizes]
    with torch.no_grad():
        expected = by_hand(net, batches)
    fresh = recalibrated(net, batches)
    for norm, (mean, var) in zip((fresh[1], fresh[5]), expected, strict=True):
        torch.testing.assert_close(norm.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.running_var, var, rtol=1e-4, atol=1e-5)
        assert norm.momentum == 0.1 and not norm.training
    assert torch.all(net[1].running_mean == 5.0)  # the original keeps its statistics
    assert not fresh.training


def test_recalibrating_needs_a_batch_norm_and_a_batch():
    with pytest.raises(ValueError, match="Conv2d has no batch norm to recalibrate"):
        recalibrated(nn.Conv2d(3, 3, 1), [torch.zeros(1, 3, 4, 4)])
    with pytest.raises(ValueError, match="no batches to recalibrate on"):
        recalibrated(two_norms(0), [])
