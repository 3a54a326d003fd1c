"""Checkpoints that survive a crash mid-write and load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists, dicts,
None): no pickled objects, so loading one cannot run code. The random number generators'
states are stored in that form too (:func:`rng_state`), so that a resumed run draws the same
dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnlib.records import atomic_write


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: readers see the old file or the new, never half.

    The data goes to a temporary file in the same folder, is flushed to the disk (``fsync``),
    and then renamed over ``path`` (``os.replace``, atomic on POSIX and Windows).
    """
    return atomic_write(path, lambda file: torch.save(state, file))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`, with ``weights_only=True``.

    Raises ``FileNotFoundError`` or ``ValueError`` with a message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train one with `fcnlib train`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for damaged or foreign files
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); "
            "it is damaged or not an fcnlib checkpoint"
        ) from error


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators (CPU and every CUDA device).

    Only tensors, lists and numbers, so the dict loads with ``weights_only=True``.
    """
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from a dict made by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
