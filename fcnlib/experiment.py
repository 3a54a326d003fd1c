"""The paper's experiment end to end: FCN-32s, FCN-16s and FCN-8s trained in stages, each
starting from the one before (Section 4.2), and FCN-8s trained at once; every net scored on the
evaluation split, recorded under ``results/`` and set against published numbers.

:func:`reproduce` runs it and ``fcnlib reproduce`` is its command line. Each net is an ordinary
``fcnlib train`` run with its own checkpoint, so an interrupted experiment goes on where it
stopped, and a net already trained is scored again but not retrained. For each net ``MODEL``
on ``DATASET`` the results folder receives

- ``DATASET-MODEL.json``: the four metrics, the IU of every class, the training time and
  throughput, the configuration, the machine, the versions, the commit and the command;
- ``DATASET-MODEL-history.csv``: the validations, with the training seconds at each;
- ``DATASET-MODEL/STEM_predicted.png``: its labels of a few evaluation frames, as palette PNGs.
"""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fcnlib import checkpoint, train, weights
from fcnlib.classes import class_table
from fcnlib.config import checkpoint_path, run_name
from fcnlib.data import DATASETS
from fcnlib.predict import predict, save_labels
from fcnlib.published import VOC_MEAN_IU, published
from fcnlib.records import check_writable, environment, read_json, write_csv, write_json
from fcnlib.runtime import REPO_ROOT, device, distributed, rank_zero
from fcnlib.scoring import evaluation_split, history_rows, score_checkpoint

#: The coarser net each net starts from in staged training; None: from scratch (or ImageNet).
STAGED_FROM: dict[str, str | None] = {
    "fcn32s": None,
    "fcn16s": "fcn32s",
    "fcn8s": "fcn16s",
    "fcn8s-atonce": None,
}

#: The suffix of a net's label PNG of an evaluation frame: STEM_predicted.png.
PREDICTED = "_predicted.png"

#: Column headings of the per-class table.
SHORT = {"fcn32s": "32s", "fcn16s": "16s", "fcn8s": "8s", "fcn8s-atonce": "8s once"}


def display_name(model: str) -> str:
    """How the book names a net: "FCN-32s", "FCN-16s, staged" or "FCN-8s, at once"."""
    if model == "fcn8s-atonce":
        return "FCN-8s, at once"
    return f"FCN-{SHORT[model]}" + (", staged" if STAGED_FROM[model] else "")


@dataclass
class Run:
    """One recorded net: its JSON record, its validations (CSV rows) and its label PNGs."""

    record: dict[str, Any]
    history: list[dict[str, float]]
    predictions: list[Path]

    @property
    def seconds_before(self) -> float:
        """Training seconds of the coarser nets this one started from (0 if from scratch)."""
        return self.record.get("stage", {}).get("seconds_before", 0.0)

    @property
    def minutes(self) -> float:
        """Training minutes in all, the coarser stages included."""
        return (self.seconds_before + self.record["training"]["seconds"]) / 60


def result_paths(
    results: Path, dataset: str, model: str, backbone: str = "vgg16"
) -> tuple[Path, Path, Path]:
    """The record, history and predictions folder of ``model`` over ``backbone`` on
    ``dataset`` in ``results``."""
    stem = results / run_name(dataset, model, backbone)
    return stem.with_suffix(".json"), results / f"{stem.name}-history.csv", stem


def read_history(path: Path) -> list[dict[str, float]]:
    """The validations of a run as its ``-history.csv`` holds them (``history_rows``): one
    dict a validation, with ``step``, ``train_seconds``, ``loss`` and the four metrics."""
    with open(path, newline="") as file:
        return [
            {key: float(value) for key, value in row.items() if value}
            for row in csv.DictReader(file)
        ]


def load_runs(
    dataset: str, results: str | Path | None = None, backbone: str = "vgg16"
) -> dict[str, Run]:
    """The runs over ``backbone`` recorded in ``results`` (default: the repository's
    ``results/``) by model, in the order of :data:`STAGED_FROM`; models without a record are
    left out."""
    results = Path(results) if results is not None else REPO_ROOT / "results"
    runs = {}
    for model in STAGED_FROM:
        record_path, history_path, folder = result_paths(results, dataset, model, backbone)
        if not record_path.is_file():
            continue
        try:
            record = read_json(record_path)
            rows = read_history(history_path) if history_path.is_file() else []
        except ValueError as error:  # bad JSON, or a CSV cell that is not a number
            raise ValueError(f"{record_path} or {history_path} cannot be read: {error}") from error
        runs[model] = Run(record, rows, sorted(folder.glob("*.png")) if folder.is_dir() else [])
    return runs


def published_rows(dataset: str) -> list[tuple[str, float]]:
    """Published mean IU (%) to compare with on ``dataset``, as (who, value) rows."""
    if dataset == "camvid":
        return list(published("camvid").items())
    return [
        (f"{display_name(model)} ({source})", value)
        for model in VOC_MEAN_IU
        for source, value in published("voc", model).items()
    ]


def format_comparison(runs: dict[str, Run], dataset: str, classes: Iterable[str] = ()) -> str:
    """Our recorded runs next to the published numbers, as a text table in percent.

    Minutes are of training only, the coarser stages included for staged nets; images are
    those the score is over (a published score is over the whole split). Each run's
    machine, commit and command follow; with ``classes``, the IU of every class of every run.
    """
    heading = f"mean IU (%) on {dataset} {evaluation_split(dataset)}"
    lines = [f"{heading:<42}{'mean IU':>8}{'minutes':>9}{'images':>8}"]
    for model, run in runs.items():
        mean_iu, images = 100 * run.record["metrics"]["mean_iu"], run.record["images"]
        lines.append(
            f"{'ours: ' + display_name(model):<42}{mean_iu:8.1f}{run.minutes:9.1f}{images:8d}"
        )
    if not runs:
        lines.append("ours: no run recorded in results/ yet")
    for who, value in published_rows(dataset):
        lines.append(f"{who:<42}{value:8.1f}")
    for model, run in runs.items():
        machine = run.record.get("environment", {})
        line = (
            f"{display_name(model)}: {machine.get('device')}, torch {machine.get('torch')}, commit "
            f"{(machine.get('git_commit') or '?')[:7]}: {machine.get('command')}"
        )
        lines.append(textwrap.fill(line, 88, subsequent_indent="    "))
    classes = list(classes)
    if runs and classes:
        lines += ["", f"{'IU (%) of FCN-':<22}" + "".join(f"{SHORT[m]:>10}" for m in runs)]
        for name in classes:
            values = [run.record["per_class_iu"].get(name) for run in runs.values()]
            cells = ["absent" if v is None else f"{100 * v:.1f}" for v in values]
            lines.append(f"{name:<22}" + "".join(f"{cell:>10}" for cell in cells))
    return "\n".join(lines)


def plot_time_to_accuracy(runs: dict[str, Run], dataset: str, ax=None):
    """Validation mean IU against minutes of training for each run, its final score on the
    evaluation split as a star, and the published numbers as dashed lines. Returns ``ax``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for model, run in runs.items():
        minutes = [(run.seconds_before + row["train_seconds"]) / 60 for row in run.history]
        (line,) = ax.plot(minutes, [100 * row["mean_iu"] for row in run.history], "o-", ms=3)
        line.set_label(display_name(model))
        final = 100 * run.record["metrics"]["mean_iu"]
        ax.plot(run.minutes, final, "*", ms=12, color=line.get_color())
    for who, value in published_rows(dataset):
        ax.axhline(value, color="grey", ls="--", lw=0.8)
        ax.annotate(
            who,
            (0, value),
            xycoords=("axes fraction", "data"),
            xytext=(3, 2),
            textcoords="offset points",
            fontsize=7,
            color="dimgrey",
        )
    if runs:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(
            0.5,
            0.2,  # below the published numbers
            "no run recorded in results/ yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="dimgrey",
        )
    ax.set(xlabel="minutes of training", ylabel="mean IU (%)", ylim=(0, 100))
    return ax


def plot_recorded_history(records: dict[str, dict[str, Any]], axes=None, smooth: int = 25):
    """The training loss (a ``smooth``-step running mean) and the validation mean IU of
    recorded runs against minutes of training, coarser stages first, from records that keep
    the whole history (shipped nets, :mod:`fcnlib.weights`), by model. The minutes of a step
    are interpolated between the validations, which record the clock. Returns ``axes``."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    loss_ax, iu_ax = axes
    for model, record in records.items():
        history, before = record["history"], record["stage"]["seconds_before"]
        clock = np.interp(
            history["steps"], [0, *history["eval_steps"]], [0, *history["eval_seconds"]]
        )
        window = min(smooth, len(history["loss"]))
        loss = np.convolve(history["loss"], np.ones(window) / window, mode="valid")
        (line,) = loss_ax.plot(
            (before + clock[window - 1 :]) / 60, loss, lw=1, label=display_name(model)
        )
        minutes = (before + np.asarray(history["eval_seconds"])) / 60
        ious = [100 * scores["mean_iu"] for scores in history["evals"]]
        iu_ax.plot(minutes, ious, "o-", ms=3, color=line.get_color(), label=display_name(model))
    loss_ax.set(xlabel="minutes of training", ylabel="training loss per pixel")
    iu_ax.set(xlabel="minutes of training", ylabel="validation mean IU (%)")
    iu_ax.legend(loc="lower right", fontsize=8)
    return axes


def evaluation_frames(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``total`` images, first and last included."""
    if count <= 0 or total <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total)).round()})


def reproduce(
    recipe_name: str = "modern",
    *,
    models: Iterable[str] = tuple(STAGED_FROM),
    overrides: dict[str, Any] | None = None,
    checkpoint_folder: str | Path = "runs",
    results: str | Path = "results",
    predictions: int = 3,
    limit: int | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    command: list[str] | None = None,
) -> dict[str, Run]:
    """Train, score and record each of ``models`` with recipe ``recipe_name`` (its settings
    changed by ``overrides``), staged nets starting from the coarser net's checkpoint.

    Checkpoints go to ``checkpoint_folder/DATASET-MODEL.pt`` and results to ``results``
    (module docstring); ``limit`` scores the first images only; ``predictions`` label PNGs
    are written per net; ``command`` (``fcnlib``'s arguments) is recorded as the command
    that reproduces the runs.
    Returns the recorded runs, as :func:`load_runs` reads them back (under ``torchrun``, on
    rank 0; every process trains and scores its share, rank 0 alone records).
    """
    rank, say = distributed()[0], rank_zero(say)

    models = [m for m in STAGED_FROM if m in set(models)]
    overrides = dict(overrides or {})
    checkpoint_folder, results = Path(checkpoint_folder), Path(results)
    base = train.recipe(recipe_name, **overrides)
    dataset, backbone = base.dataset, base.backbone
    table = class_table(dataset)
    checkpoints = {
        model: checkpoint_path(checkpoint_folder, dataset, model, backbone) for model in STAGED_FROM
    }
    for model in models:  # before the work, not after it
        coarser = STAGED_FROM[model]
        if coarser not in (None, *models) and not checkpoints[coarser].is_file():
            raise FileNotFoundError(
                f"{model} starts from {coarser}'s checkpoint {checkpoints[coarser]}, which does "
                f"not exist: train {coarser} first (add it to the models)"
            )
        if rank == 0:
            check_writable(checkpoints[model], "--runs")
            check_writable(result_paths(results, dataset, model, backbone)[0], "--results")
    seconds: dict[str, float] = {}  # training seconds of each net trained (or found trained)
    for model in models:
        config = train.recipe(recipe_name, model, **overrides, progress=progress)
        config.checkpoint = str(checkpoints[model])
        coarser = STAGED_FROM[model]
        init_from = checkpoints.get(coarser)
        say(
            f"{display_name(model)}: {config.checkpoint}"
            + (f" from {init_from}" if init_from else "")
        )
        history = train.start_or_resume(config, init_from, say)
        seconds[model] = history.seconds
        # every process scores its share of the images (fcnlib.predict.evaluate)
        net, metrics, record = score_checkpoint(
            config.checkpoint,
            limit=limit,
            device=device(config.device),
            progress=progress and rank == 0,
            command=command,
        )
        if rank != 0:
            continue
        before = 0.0
        while coarser is not None:  # nets trained before this call: read their checkpoints
            if coarser not in seconds:
                state = checkpoint.load(checkpoints[coarser])
                seconds[coarser] = state["history"]["seconds"]
            before += seconds[coarser]
            coarser = STAGED_FROM[coarser]
        record["stage"] = {"from": STAGED_FROM[model], "seconds_before": before}
        record_path, history_path, folder = result_paths(results, dataset, model, backbone)
        write_json(record_path, record)
        write_csv(history_path, *history_rows(history.to_dict()))
        images = DATASETS[dataset](record["split"])
        for index in evaluation_frames(predictions, record["images"]):
            stem = images.pairs[index][0].stem
            # named after the frame, but not as the dataset's own label file is
            save_labels(predict(net, images[index][0]), table, folder / f"{stem}{PREDICTED}")
        mean_iu = 100 * metrics.compute()["mean_iu"]
        say(f"{display_name(model)}: mean IU {mean_iu:.1f} % on {record['split']} -> {record_path}")
    if rank != 0:
        return {}
    recorded = load_runs(dataset, results, backbone)
    return {model: recorded[model] for model in models if model in recorded}


#: What shipping takes from the scores of the float16 weights.
SCORED_KEYS = (
    "training",
    "metrics",
    "mean_iu_interval",
    "per_class_iu",
    "images",
    "image_confusions",
    "imagenet_weights",
)


def ship(
    dataset: str,
    models: list[str],
    checkpoint_folder: str | Path = "runs",
    results: str | Path = "results",
    folder: Path = weights.TRAINED_DIR,
    command: list[str] | None = None,
    say=print,
    *,
    backbone: str = "vgg16",
) -> dict[str, weights.Weights]:
    """Export each of ``models`` over ``backbone`` trained by ``fcnlib reproduce``
    (``runs/NAME.pt`` with its record ``results/NAME.json``, named by :func:`run_name`) into
    ``folder``, then score the float16
    weights on the record's split, all of its images, and record those scores (the float32
    mean IU is kept as ``float32_mean_iu``) and ``command`` (fcnlib's arguments)."""
    shipped = {}
    for model in models:
        name = run_name(dataset, model, backbone)
        record_path = Path(results) / f"{name}.json"
        if not record_path.is_file():
            raise FileNotFoundError(
                f"{record_path} does not exist: record {model} with `fcnlib reproduce` first"
            )
        record = read_json(record_path)
        shipped_net = weights.export(
            checkpoint_path(checkpoint_folder, dataset, model, backbone), name, record, folder
        )
        _, _, scored = score_checkpoint(weights.state(name, folder), record["split"], device="cpu")
        full = {
            **shipped_net.record,
            **{key: scored[key] for key in SCORED_KEYS},
            "float32_mean_iu": record["metrics"]["mean_iu"],
            "shipped_by": environment(torch.device("cpu"), command),
        }
        write_json(shipped_net.path.with_suffix(".json"), full)
        shipped[name] = weights.Weights(name, shipped_net.path, full)
        say(
            f"{name}: {shipped_net.path} ({shipped_net.path.stat().st_size / 1e6:.1f} MB), mean IU "
            f"{100 * full['metrics']['mean_iu']:.2f} % in float16, "
            f"{100 * full['float32_mean_iu']:.2f} % in float32, on {full['images']} images"
        )
    return shipped
