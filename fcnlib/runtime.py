"""Where fcnlib runs: the notebooks' fast/full mode, the data root, the device and seeding."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch

MODE_VARIABLE = "FCNLIB_MODE"
DATA_ROOT_VARIABLE = "FCNLIB_DATA_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[1]

Mode = Literal["fast", "full"]


def mode() -> Mode:
    """The scale the notebooks run at: ``"fast"`` or ``"full"``.

    Fast mode uses small data and few iterations so that each chapter takes seconds on a
    laptop CPU; full mode uses the real data and schedules. ``FCNLIB_MODE`` overrides the
    default, which is ``"full"`` when a CUDA device is present and ``"fast"`` otherwise.
    """
    value = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "fast"
    if value not in ("fast", "full"):
        raise ValueError(
            f"{MODE_VARIABLE}={value!r} is not a mode: set it to 'fast' or 'full', or unset it"
        )
    return value  # type: ignore[return-value]


def is_fast() -> bool:
    """True in fast mode: the one line a notebook needs is ``FAST = fcnlib.is_fast()``."""
    return mode() == "fast"


def data_root() -> Path:
    """The folder that holds the datasets (``camvid/``, ``VOCdevkit/``, ...), as an absolute path.

    ``FCNLIB_DATA_ROOT`` overrides the default, the repository's ``data/`` folder.
    """
    value = os.environ.get(DATA_ROOT_VARIABLE)
    root = Path(value).expanduser() if value else REPO_ROOT / "data"
    return root.resolve()


def device() -> torch.device:
    """The first CUDA device when one is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) so that a run repeats.

    With ``deterministic=True`` torch also refuses nondeterministic kernels, which makes GPU
    runs bit-for-bit repeatable at some cost in speed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def synchronise(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
