"""Scores of trained nets as the command line and the records give them: the paper's four
metrics as a table, JSON-ready records of a scored checkpoint, and a training history as rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcnlib import trunks, weights
from fcnlib.checkpoint import load_trained
from fcnlib.classes import ClassTable, class_table
from fcnlib.data import DATASETS
from fcnlib.metrics import SegmentationMetrics, bootstrap_difference
from fcnlib.predict import evaluate
from fcnlib.published import published
from fcnlib.records import environment
from fcnlib.runtime import device as default_device
from fcnlib.transforms import eval_transforms


def format_scores(metrics: SegmentationMetrics, table: ClassTable, model: str | None = None) -> str:
    """The paper's four metrics and the IU of every class as a text table, in percent.

    With ``model`` (e.g. "fcn8s") on PASCAL VOC, the published mean IU of that model follows.
    """
    scores = metrics.compute()
    lines = [f"{'metric':<24}{'ours':>8}"]
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
        lines.append(f"{key.replace('_', ' '):<24}{100 * scores[key]:8.1f}")
    lines.append("")
    lines.append(f"{'class':<24}{'IU':>8}")
    for name, iu in zip(table.classes, scores["per_class_iu"].tolist(), strict=True):
        lines.append(f"{name:<24}{'absent' if np.isnan(iu) else f'{100 * iu:.1f}':>8}")
    if model is not None and table.name.lower().startswith(("voc", "pascal")):
        lines.append("")
        lines.append(f"mean IU of {model} on seg11valid: ours {100 * scores['mean_iu']:.1f}")
        for source, value in published("voc", model).items():
            lines.append(f"  {source:<22}{value:8.1f}")
    return "\n".join(lines)


def evaluation_record(
    state: dict, metrics: SegmentationMetrics, table: ClassTable, split: str, images: int
) -> dict[str, object]:
    """A JSON-ready record of a trained model's scores on ``images`` images of ``split``.

    ``state`` is the checkpoint (``fcnlib.checkpoint.load``) that was scored: the record keeps
    its configuration, its step count and its training time, so that the numbers can be
    reproduced and set against the time they took. Fractions in [0, 1]; None for a class with
    no pixels in either the labels or the predictions. Where the metrics kept each image's
    confusion matrix, the mean IU's bootstrap 95 % interval over the images goes in too, and the
    matrices themselves (``image_confusions``, one flattened C x C list of counts per image, in
    the split's order), from which :func:`paired_difference` compares two records.
    """
    scores = metrics.compute()
    per_class = [float(value) for value in scores["per_class_iu"].tolist()]
    config, history = state["config"], state.get("history", {})
    seconds = history.get("seconds", 0.0)
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "split": split,
        "images": images,
        "metrics": {k: v for k, v in scores.items() if k != "per_class_iu"},
        "mean_iu_interval": list(metrics.interval()) if metrics.per_image else None,
        "image_confusions": (
            metrics.image_confusions().flatten(1).tolist() if metrics.per_image else None
        ),
        "per_class_iu": {
            name: None if np.isnan(value) else value
            for name, value in zip(table.classes, per_class, strict=True)
        },
        "imagenet_weights": (
            trunks.provenance(config["backbone"])
            if config.get("pretrained") and config["backbone"] in trunks.TRUNKS
            else None
        ),
        "training": {
            "steps": state["step"],
            "seconds": seconds,
            "images_per_second": state["step"] * config["batch_size"] / seconds
            if seconds
            else None,
            # amp "off" is float32 on any machine; "auto" is known from the history alone
            "precision": history.get("precision")
            or ("float32" if config.get("amp") == "off" else None),
            "config": config,
        },
    }


def image_confusions(record: dict) -> torch.Tensor:
    """The (N, C, C) per-image confusion matrices a record keeps (:func:`evaluation_record`);
    ValueError naming what is missing for records made without them."""
    rows = record.get("image_confusions")
    if not rows:
        raise ValueError(
            f"the record of {record.get('model')} keeps no per-image confusion matrices: "
            "score it again with `fcnlib evaluate --out`"
        )
    classes = len(record["per_class_iu"])
    return torch.tensor(rows).reshape(len(rows), classes, classes)


def paired_difference(first: dict, second: dict) -> tuple[float, tuple[float, float]]:
    """The mean IU of record ``first`` minus that of ``second``, scored on the same images,
    with its paired bootstrap 95 % interval (:func:`fcnlib.metrics.bootstrap_difference`);
    fractions. ValueError unless both scored the same split and number of images."""
    if (first["split"], first["images"]) != (second["split"], second["images"]):
        raise ValueError(
            f"the records scored {first['images']} images of {first['split']} and "
            f"{second['images']} of {second['split']}: compare nets on the same images"
        )
    return bootstrap_difference(image_confusions(first), image_confusions(second))


def format_mean_iu(record: dict) -> str:
    """A record's mean IU and its 95 % interval, in percent: "62.8 (61.0 to 64.5)"."""
    low, high = record["mean_iu_interval"]
    return f"{100 * record['metrics']['mean_iu']:.1f} ({100 * low:.1f} to {100 * high:.1f})"


def format_difference(first: dict, second: dict) -> str:
    """:func:`paired_difference` of two records in points, with its interval and whether it
    is resolved (the interval leaves out 0): "+5.4 (+4.1 to +6.8), resolved"."""
    difference, (low, high) = paired_difference(first, second)
    verdict = "resolved" if low > 0 or high < 0 else "unresolved"
    return f"{100 * difference:+.1f} ({100 * low:+.1f} to {100 * high:+.1f}), {verdict}"


def history_rows(history: dict) -> tuple[list[str], list[list[object]]]:
    """The validations of a training history (``History.to_dict()``) as CSV header and rows:
    step, training seconds, the loss of that step, then every validation metric."""
    names = sorted(history["evals"][0]) if history["evals"] else []
    loss_at = dict(zip(history["steps"], history["loss"], strict=True))
    rows = [
        [step, seconds, loss_at.get(step), *(scores[name] for name in names)]
        for step, seconds, scores in zip(
            history["eval_steps"], history["eval_seconds"], history["evals"], strict=True
        )
    ]
    return ["step", "train_seconds", "loss", *names], rows


def evaluation_split(dataset: str) -> str:
    """The split a dataset's trained models are scored on: CamVid test, VOC seg11valid."""
    return {"camvid": "test", "voc": "seg11valid"}[dataset]


def score_checkpoint(
    path: str | Path | dict,
    split: str | None = None,
    *,
    limit: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    command: list[str] | None = None,
) -> tuple[nn.Module, SegmentationMetrics, dict[str, object]]:
    """Score checkpoint ``path`` (a file, a shipped net's name or a checkpoint already read; see
    :func:`fcnlib.weights.read`) on the first ``limit`` images (default: all) of ``split``
    (default: :func:`evaluation_split`), as ``fcnlib evaluate`` does.

    Returns the model (in eval mode on ``device``), its metrics and their
    :func:`evaluation_record`, with the machine, versions, commit and ``command``
    (``fcnlib.records.environment``) under ``"environment"``.
    """
    device = torch.device(device) if device is not None else default_device()
    state = weights.read(path)
    model, config = load_trained(state, device, name=None if isinstance(path, dict) else path)
    table = class_table(config.dataset)
    split = split or evaluation_split(config.dataset)
    dataset = DATASETS[config.dataset](split, transforms=eval_transforms(model.normalisation))
    metrics = evaluate(model, dataset, table, device, limit=limit, progress=progress)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    record = evaluation_record(state, metrics, table, split, count)
    return model, metrics, {**record, "environment": environment(device, command)}
