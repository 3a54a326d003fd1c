"""The trained nets that ship with fcnlib, in the spirit of torchvision's model weights.

Each shipped net ``NAME`` is two files in the package's ``trained/`` folder. The book ships
FCN-32s, FCN-16s and FCN-8s over the ImageNet EfficientNet-Lite0 trunk, fine-tuned on CamVid
(``camvid-lite0-fcn32s``, ``-fcn16s``, ``-fcn8s``), and, to compare, the FCN-8s trained from
scratch over an eighth of VGG16-BN (``camvid-fcn8s``):

- ``NAME.safetensors``: the weights in float16 (safetensors holds tensors only, so reading it
  cannot run code);
- ``NAME.json``: the record of the run that made them, as ``fcnlib reproduce`` writes it
  (configuration, training steps and seconds, machine, versions, commit and command), with
  the four metrics and per-class IU measured on the evaluation split *with the float16
  weights*, the run's training history, and the sha256 of the weights file.

:func:`load` checks the checksum and returns a ready model; :func:`export` makes the two
files from a checkpoint. A name works wherever fcnlib takes a checkpoint (:func:`read`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from fcnlib import checkpoint
from fcnlib.checkpoint import load_trained
from fcnlib.models import MODEL_NAMES
from fcnlib.records import atomic_write, file_digest, read_json, write_json

TRAINED_DIR: Path = resources.files("fcnlib") / "trained"  # a Path: fcnlib is installed as files
#: The net ``fcnlib predict`` uses when no checkpoint is given.
DEFAULT = "camvid-lite0-fcn8s"


@dataclass(frozen=True)
class Weights:
    """One shipped net: its ``name``, weights file ``path`` and run ``record`` (module doc)."""

    name: str
    path: Path
    record: dict[str, Any]

    @property
    def mean_iu(self) -> float:
        """Mean IU (a fraction) on the evaluation split, measured with the shipped weights."""
        return self.record["metrics"]["mean_iu"]


def available(folder: Path = TRAINED_DIR) -> dict[str, Weights]:
    """Every net shipped in ``folder``, by name: by dataset and backbone, then coarsest model
    first."""
    found = [
        Weights(path.stem, path.with_suffix(".safetensors"), read_json(path))
        for path in folder.glob("*.json")
    ]
    found.sort(
        key=lambda net: (
            net.record["dataset"],
            net.record["training"]["config"]["backbone"],
            MODEL_NAMES.index(net.record["model"]),
        )
    )
    return {net.name: net for net in found}


def get(name: str, folder: Path = TRAINED_DIR) -> Weights:
    """The shipped net called ``name``; ValueError naming the shipped ones if there is none."""
    shipped = available(folder)
    if name not in shipped:
        raise ValueError(
            f"no trained net called {name!r} ships with fcnlib; shipped: "
            f"{', '.join(shipped) or 'none'}"
        )
    return shipped[name]


def state(name: str, folder: Path = TRAINED_DIR) -> dict[str, Any]:
    """The shipped net ``name`` as a checkpoint-like dict (``model`` in float32, ``config``,
    ``num_classes``, ``dataset``, ``step``, ``history``), after checking its checksum.

    A missing or altered weights file raises ValueError naming it and what to do.
    """
    weights = get(name, folder)
    if not weights.path.is_file():
        raise ValueError(
            f"{weights.path} is missing: reinstall fcnlib, or restore it with `git checkout`"
        )
    data = weights.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != weights.record["sha256"]:
        raise ValueError(
            f"{weights.path} does not match the sha256 in {weights.path.with_suffix('.json')}: "
            "the file is altered or damaged; reinstall fcnlib, or restore it with `git checkout`"
        )
    tensors = load_tensors(data)
    training = weights.record["training"]
    return {
        "model": {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
        "config": training["config"],
        "num_classes": len(weights.record["per_class_iu"]),
        "dataset": weights.record["dataset"],
        "step": training["steps"],
        "history": weights.record["history"],
    }


def read(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A checkpoint file (``fcnlib.checkpoint.load``) or, if no such file exists, the shipped
    net of that name (:func:`state`); a dict is taken as a checkpoint already read."""
    if isinstance(source, dict):
        return source
    if Path(source).exists() or str(source) not in available():
        return checkpoint.load(source)
    return state(str(source))


def load(name: str = DEFAULT, device: torch.device | str = "cpu") -> nn.Module:
    """The shipped net ``name``, checked, in eval mode on ``device``: (N, 3, H, W) normalised
    images to (N, num_classes, H, W) scores."""
    model, _ = load_trained(state(name), device, name=name)
    return model


def export(
    source: str | Path, name: str, record: dict[str, Any], folder: Path = TRAINED_DIR
) -> Weights:
    """Write checkpoint ``source``'s weights as ``folder/NAME.safetensors`` in float16 and
    ``record`` (an ``fcnlib reproduce`` record, to be scored again with those weights by the
    caller) with the history and the file's sha256 as ``NAME.json``; return the shipped net."""
    saved = checkpoint.load(source)
    tensors = {
        key: (value.half() if value.is_floating_point() else value).contiguous()
        for key, value in saved["model"].items()
    }
    path = folder / f"{name}.safetensors"
    atomic_write(path, lambda file: file.write(save_tensors(tensors)))
    full = {**record, "history": saved["history"], "sha256": file_digest(path, "sha256")}
    write_json(path.with_suffix(".json"), full)
    return Weights(name, path, full)


def listing(folder: Path = TRAINED_DIR) -> str:
    """A text table of the shipped nets: name, mean IU on the evaluation split, images scored,
    training minutes (coarser stages included), weights and megabytes."""
    lines = [f"{'name':<20}{'mean IU':>8}{'split':>7}{'images':>7}{'minutes':>8}{'MB':>6}"]
    for name, weights in available(folder).items():
        record = weights.record
        minutes = (record["training"]["seconds"] + record["stage"]["seconds_before"]) / 60
        size = weights.path.stat().st_size / 1e6 if weights.path.is_file() else float("nan")
        lines.append(
            f"{name:<20}{100 * weights.mean_iu:8.1f}{record['split']:>7}{record['images']:>7}"
            f"{minutes:8.1f}{size:6.1f}"
        )
    return "\n".join(lines)
