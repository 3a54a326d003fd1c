"""Running a trained FCN: label maps for images, scores over a dataset, pictures on disk.

Whole images go through the network at their own size; an FCN needs no tiling or resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from fcnlib.classes import ClassTable
from fcnlib.metrics import SegmentationMetrics
from fcnlib.published import published
from fcnlib.transforms import IMAGENET_MEAN, IMAGENET_STD
from fcnlib.viz import overlay


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, amp, enabled=amp is not None)


@torch.no_grad()
def predict(
    model: nn.Module,
    image: torch.Tensor,
    device: torch.device | str | None = None,
    amp: torch.dtype | None = None,
) -> torch.Tensor:
    """The (H, W) int64 label map (on the CPU) of one (3, H, W) uint8 image."""
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"image must be a (3, H, W) uint8 tensor, got {image.dtype} {tuple(image.shape)}"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    with _autocast(device, amp):
        pixels = F.to_dtype(image.to(device), torch.float32, scale=True)
        scores = model(F.normalize(pixels, IMAGENET_MEAN, IMAGENET_STD)[None])
    model.train(was_training)
    return scores[0].argmax(0).cpu()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    table: ClassTable,
    device: torch.device | str | None = None,
    limit: int | None = None,
    amp: torch.dtype | None = None,
    progress: bool = False,
) -> SegmentationMetrics:
    """Score ``model`` on the first ``limit`` items (default: all) of ``dataset``.

    ``dataset`` yields normalised (3, H, W) float images and (H, W) masks (``eval_transforms``);
    each image goes through whole, one at a time, since sizes may differ. The confusion matrix
    stays on the device. Under torch.distributed each process scores every ``world``-th image
    and the matrices are summed, so every process returns the metrics of all of them.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    count = len(dataset) if limit is None else min(limit, len(dataset))
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    loader = DataLoader(Subset(dataset, range(rank, count, world)), batch_size=1)
    metrics = SegmentationMetrics(table.num_classes, table.ignore_index)
    metrics.confusion = torch.zeros(
        (table.num_classes, table.num_classes), dtype=torch.int64, device=device
    )
    was_training = model.training
    model.eval()
    for images, masks in tqdm(loader, disable=not progress, desc="evaluate"):
        with _autocast(device, amp):
            scores = model(images.as_subclass(torch.Tensor).to(device))
        metrics.update(scores.argmax(1), masks.as_subclass(torch.Tensor).to(device))
    model.train(was_training)
    if world > 1:
        dist.all_reduce(metrics.confusion)
    return metrics


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


def save_labels(labels: torch.Tensor, table: ClassTable, path: Path) -> Path:
    """Write an (H, W) label map to ``path`` as a palette PNG and return ``path``.

    Each pixel stores its class id and shows in the class's colour, so the file is both a
    picture and a label map (as VOC's own label files are); ``read_label`` reads it back.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(labels.numpy().astype(np.uint8))  # "L"; the palette makes it "P"
    picture.putpalette(table.palette().ravel().tolist())
    picture.save(path)
    return path


def save_prediction(
    image: torch.Tensor, labels: torch.Tensor, table: ClassTable, folder: Path, stem: str
) -> tuple[Path, Path]:
    """Write ``STEM.png`` (:func:`save_labels`) and ``STEM_overlay.png`` (the class colours
    blended over ``image``) into ``folder``; return their paths."""
    overlay_path = folder / f"{stem}_overlay.png"
    label_path = save_labels(labels, table, folder / f"{stem}.png")
    Image.fromarray(overlay(image, labels, table)).save(overlay_path)
    return label_path, overlay_path


def evaluation_record(
    state: dict, metrics: SegmentationMetrics, table: ClassTable, split: str, images: int
) -> dict[str, object]:
    """A JSON-ready record of a trained model's scores on ``images`` images of ``split``.

    ``state`` is the checkpoint (``fcnlib.checkpoint.load``) that was scored: the record keeps
    its configuration, its step count and its training time, so that the numbers can be
    reproduced and set against the time they took. Fractions in [0, 1]; None for a class with
    no pixels in either the labels or the predictions.
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
        "per_class_iu": {
            name: None if np.isnan(value) else value
            for name, value in zip(table.classes, per_class, strict=True)
        },
        "training": {
            "steps": state["step"],
            "seconds": seconds,
            "images_per_second": state["step"] * config["batch_size"] / seconds
            if seconds
            else None,
            "config": config,
        },
    }


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
    path: str | Path,
    split: str | None = None,
    limit: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    command: list[str] | None = None,
) -> tuple[nn.Module, SegmentationMetrics, dict[str, object]]:
    """Score checkpoint ``path`` on the first ``limit`` images (default: all) of ``split``
    (default: :func:`evaluation_split`), as ``fcnlib evaluate`` does.

    Returns the model (in eval mode on ``device``), its metrics and their
    :func:`evaluation_record`, with the machine, versions, commit and ``command``
    (``fcnlib.records.environment``) under ``"environment"``.
    """
    from fcnlib import checkpoint
    from fcnlib.classes import class_table
    from fcnlib.data import DATASETS
    from fcnlib.records import environment
    from fcnlib.runtime import device as default_device
    from fcnlib.train import load_trained
    from fcnlib.transforms import eval_transforms

    device = torch.device(device) if device is not None else default_device()
    state = checkpoint.load(path)
    model, config = load_trained(state, device)
    table = class_table(config.dataset)
    split = split or evaluation_split(config.dataset)
    dataset = DATASETS[config.dataset](split, transforms=eval_transforms())
    metrics = evaluate(model, dataset, table, device, limit=limit, progress=progress)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    record = evaluation_record(state, metrics, table, split, count)
    return model, metrics, {**record, "environment": environment(device, command)}
