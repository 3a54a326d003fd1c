"""Running a trained FCN: label maps for images, scores over a dataset, pictures on disk.

Whole images go through the network at their own size; an FCN needs no tiling or resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, PngImagePlugin
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from fcnlib.classes import ClassTable
from fcnlib.data import describe
from fcnlib.metrics import SegmentationMetrics
from fcnlib.records import atomic_write
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
    """The (H, W) int64 label map (on the CPU) of one (3, H, W) uint8 image, normalised as
    the model says (``model.normalisation``)."""
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"image must be a (3, H, W) uint8 tensor, got {image.dtype} {tuple(image.shape)}"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    with _autocast(device, amp):
        pixels = F.to_dtype(image.to(device), torch.float32, scale=True)
        mean, std = model.normalisation
        scores = model(F.normalize(pixels, mean, std)[None])
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
    stays on the device; in a single process each image's own matrix is kept too
    (``image_confusions()``, for bootstrap intervals). Under torch.distributed each process
    scores every ``world``-th image and the matrices are summed, so every process returns the
    metrics of all of them.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count < 1:
        raise ValueError(f"nothing to score: {describe(dataset)} holds no images")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    loader = DataLoader(Subset(dataset, range(rank, count, world)), batch_size=1)
    metrics = SegmentationMetrics(table.num_classes, table.ignore_index, per_image=world == 1)
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


#: The PNG text chunk fcnlib marks its pictures with, so that it knows them again.
SOFTWARE = ("Software", "fcnlib")


def _save_png(picture: Image.Image, path: Path) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(*SOFTWARE)
    atomic_write(path, lambda file: picture.save(file, format="PNG", pnginfo=info))
    return path


def written_by_fcnlib(path: Path) -> bool:
    """True if ``path`` is a PNG that fcnlib wrote (:data:`SOFTWARE` in its text chunks)."""
    try:
        with Image.open(path) as picture:
            return picture.info.get(SOFTWARE[0]) == SOFTWARE[1]
    except (OSError, SyntaxError):
        return False


def save_labels(labels: torch.Tensor, table: ClassTable, path: Path) -> Path:
    """Write an (H, W) label map to ``path`` as a palette PNG, atomically; return ``path``.

    Each pixel stores its class id and shows in the class's colour, so the file is both a
    picture and a label map (as VOC's own label files are); ``read_label`` reads it back.
    """
    picture = Image.fromarray(labels.numpy().astype(np.uint8))  # "L"; the palette makes it "P"
    picture.putpalette(table.palette().ravel().tolist())
    return _save_png(picture, path)


def prediction_paths(
    images: list[Path], folder: Path, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """Where :func:`save_prediction` writes each image's ``STEM.png`` and ``STEM_overlay.png``
    in ``folder``, checked before anything is written.

    Raises ValueError if two images share a stem, if an output would replace one of the
    images, or (unless ``overwrite``) if an output path holds a file fcnlib did not write.
    """
    inputs = {path.resolve(): path for path in images}
    paths, claimed = [], {}
    for image in images:
        outputs = (folder / f"{image.stem}.png", folder / f"{image.stem}_overlay.png")
        for output in outputs:
            resolved = output.resolve()
            if resolved in inputs:
                raise ValueError(
                    f"{output} would replace the input image {inputs[resolved]}: write the "
                    "predictions into another folder with --out"
                )
            if resolved in claimed:
                raise ValueError(
                    f"{claimed[resolved]} and {image} would both be written to {output}: "
                    "predict them into separate folders with --out"
                )
            claimed[resolved] = image
            if output.exists() and not overwrite and not written_by_fcnlib(output):
                raise ValueError(
                    f"{output} exists and was not written by fcnlib: move it, choose another "
                    "--out folder, or pass --overwrite to replace it"
                )
        paths.append(outputs)
    return paths


def save_prediction(
    image: torch.Tensor, labels: torch.Tensor, table: ClassTable, paths: tuple[Path, Path]
) -> tuple[Path, Path]:
    """Write the label map (:func:`save_labels`) and the class colours blended over ``image``
    to ``paths`` (see :func:`prediction_paths`); return them."""
    label_path, overlay_path = paths
    save_labels(labels, table, label_path)
    _save_png(Image.fromarray(overlay(image, labels, table)), overlay_path)
    return label_path, overlay_path
