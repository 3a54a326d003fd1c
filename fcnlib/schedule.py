"""Learning-rate schedules: the paper's fixed rate, and polynomial decay after a linear warm-up."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "poly")


def lr_factor(
    step: int, total_steps: int, warmup_steps: int = 0, power: float = 0.9, kind: str = "poly"
) -> float:
    """The multiple of the base learning rate used at optimiser step ``step`` (0-based).

    During the first ``warmup_steps`` steps the factor rises linearly from
    ``1 / (warmup_steps + 1)`` to 1, so that early large gradients of a freshly initialised
    network do not throw it far. After that it is 1 (``kind="constant"``, the paper's
    ``lr_policy: fixed``) or ``(1 - t)**power`` with ``t`` the fraction of the remaining steps
    done (``kind="poly"``, DeepLab's schedule), which reaches 0 at ``total_steps``.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - done) ** power


def make_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 0.9,
    kind: str = "poly",
) -> LambdaLR:
    """A ``LambdaLR`` that applies :func:`lr_factor`; call its ``step()`` after each optimiser step.

    Its ``state_dict()`` holds plain numbers only (the factor is a closure, which torch does not
    store), so a checkpoint with it loads with ``torch.load(weights_only=True)``.
    """
    lr_factor(0, total_steps, warmup_steps, power, kind)  # validate the arguments now
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, power, kind))
