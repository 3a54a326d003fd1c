"""Checkpoints that survive a crash mid-write and load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists, dicts,
None): no pickled objects, so loading one cannot run code. The random number generators'
states are stored in that form too (:func:`rng_state`), so that a resumed run draws the same
dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import pickle
import random
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fcnlib import models
from fcnlib.config import TrainConfig
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
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder: give a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train one with `fcnlib train`")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises loading with weights_only=False, which could run the file's
        # code: not advice to pass on about a file that may come from anywhere.
        raise ValueError(
            f"checkpoint {path} cannot be read as tensors and plain values: it is damaged, not "
            "an fcnlib checkpoint, or holds Python objects, which fcnlib does not load (loading "
            "them could run code)"
        ) from None
    except Exception as error:  # torch raises several types for damaged or foreign files
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {first}); "
            "it is damaged or not an fcnlib checkpoint"
        ) from None


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


def load_trained(
    source: str | Path | dict[str, Any],
    device: torch.device | str = "cpu",
    name: str | Path | None = None,
) -> tuple[nn.Module, TrainConfig]:
    """The model saved in a checkpoint, in eval mode on ``device``, and its configuration.

    ``source`` is the checkpoint's path, or the checkpoint already read by ``checkpoint.load``
    (``name``, its path or shipped name, then goes into error messages).
    """
    state = source if isinstance(source, dict) else load(source)
    name = (
        f"checkpoint {name or source}" if name or not isinstance(source, dict) else "the checkpoint"
    )
    missing = [key for key in ("config", "model", "num_classes") if key not in state]
    if missing:
        raise ValueError(
            f"{name} is not an fcnlib checkpoint (it has no {', '.join(missing)}): give one "
            "written by `fcnlib train`, or a shipped net's name (`fcnlib weights`)"
        )
    try:
        config = TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} holds settings fcnlib cannot use: {error}") from None
    try:
        options = replace(config, pretrained=False).model_options()
        model = models.build(config.model, state["num_classes"], **options)
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{name}: its weights do not fit its settings ({first})") from None
    return model.to(device).eval(), config
