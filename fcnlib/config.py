"""What defines a training run: :class:`TrainConfig`, the named recipes that fill it in, and
the model a configuration names. :mod:`fcnlib.train` runs a configuration; checkpoints store it
(``TrainConfig.to_dict``) so that a trained net can be rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fcnlib import models
from fcnlib.data import DATASETS
from fcnlib.models import BACKBONES, MODEL_NAMES
from fcnlib.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
LOSSES = ("mean", "sum")
AMP_MODES = ("auto", "off", "bf16", "fp16")


def run_name(dataset: str, model: str) -> str:
    """The name of ``model`` trained on ``dataset`` ("camvid-fcn8s"): of its checkpoint in
    ``runs/``, its records in ``results/`` and, shipped, its weights (:mod:`fcnlib.weights`)."""
    return f"{dataset}-{model}"


RECIPES = ("paper", "paper-normalised", "modern", "cpu")
#: The reference implementation's solvers: base_lr for an unnormalised loss, and max_iter.
PAPER_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10}
PAPER_STEPS = {"fcn32s": 100_000, "fcn16s": 100_000, "fcn8s": 100_000, "fcn8s-atonce": 300_000}
#: The "cpu" recipe's steps of batch 8: about 38, 15 and 15 minutes on two AVX2 cores.
CPU_STEPS = {"fcn32s": 1000, "fcn16s": 400, "fcn8s": 400, "fcn8s-atonce": 1800}
#: Its peak rates: the staged nets fine-tune a trained net, more gently than it was trained.
CPU_LR = {"fcn32s": 1e-3, "fcn16s": 5e-4, "fcn8s": 5e-4, "fcn8s-atonce": 1e-3}
#: Options that may differ between a run and its resumption: they do not change the numbers.
RESUMABLE = (
    "steps_per_call",
    "eval_interval",
    "log_interval",
    "checkpoint",
    "checkpoint_interval",
    "num_workers",
    "val_limit",
    "progress",
    "compile",
    "channels_last",
    "device",
)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Lengths are in pixels, intervals in steps.

    A *step* is one optimiser update over ``batch_size`` images, summed over all processes;
    each process feeds them ``micro_batch`` at a time (gradient accumulation), which whole
    images of different sizes (PASCAL VOC without cropping) need. ``loss="sum"`` sums the
    cross-entropy over the pixels of the batch, as the paper's Caffe nets did; ``"mean"``
    divides by the number of labelled pixels.
    """

    model: str = "fcn8s"
    backbone: str = "vgg16"
    width: float = 1.0
    pad100: bool = True
    pretrained: bool = False
    dataset: str = "camvid"
    train_limit: int | None = None
    val_limit: int | None = None
    crop_size: tuple[int, int] | None = (352, 480)
    augment: bool = True
    optimizer: str = "sgd"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 1.0
    loss: str = "mean"
    class_weights: bool = False
    batch_size: int = 1
    micro_batch: int | None = None
    steps: int = 1000
    schedule: str = "constant"
    warmup_steps: int = 0
    poly_power: float = 0.9
    amp: str = "auto"
    channels_last: bool = False
    compile: bool = False
    resident: bool = False
    num_workers: int = 0
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    eval_interval: int = 0
    log_interval: int = 10
    checkpoint: str | None = None
    checkpoint_interval: int = 0
    steps_per_call: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.crop_size, int):
            self.crop_size = (self.crop_size, self.crop_size)
        elif self.crop_size is not None:
            self.crop_size = tuple(self.crop_size)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first option that makes no sense."""
        choices = {
            "model": MODEL_NAMES,
            "backbone": BACKBONES,
            "dataset": tuple(DATASETS),
            "optimizer": OPTIMIZERS,
            "loss": LOSSES,
            "schedule": SCHEDULES,
            "amp": AMP_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        for name in ("lr", "width", "bias_lr_mult", "poly_power"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be positive and finite, got {getattr(self, name)}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be 0 or more and finite, got {self.weight_decay}")
        for name in ("batch_size", "steps", "log_interval", "train_limit", "val_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.crop_size is not None and min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if self.micro_batch is not None and (
            self.micro_batch < 1 or self.batch_size % self.micro_batch
        ):
            raise ValueError(
                f"micro_batch ({self.micro_batch}) must divide batch_size ({self.batch_size})"
            )
        if self.crop_size is None and self.dataset == "voc" and (self.micro_batch or 2) > 1:
            raise ValueError(
                "PASCAL VOC images differ in size: without crop_size, set micro_batch to 1"
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain Python values, as stored in checkpoints."""
        values = dataclasses.asdict(self)
        values["crop_size"] = list(self.crop_size) if self.crop_size else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown configuration keys {unknown}: written by another version of fcnlib"
            )
        return cls(**values)


def recipe(name: str, model: str = "fcn8s", **overrides: Any) -> TrainConfig:
    """The configuration of a named recipe for ``model``, with ``overrides`` applied.

    - ``"paper"``: the reference implementation on PASCAL VOC + SBD. ImageNet VGG16, whole
      images, batch 1, loss summed over pixels, SGD with momentum 0.99, weight decay 5e-4,
      fixed learning rate 1e-10 / 1e-12 / 1e-14 for FCN-32s / 16s / 8s (1e-10 at once),
      biases at twice the rate and without decay, 100,000 steps (300,000 at once).
    - ``"paper-normalised"``: the CVPR paper's equivalent: mean loss, batch 20, momentum 0.9,
      rate 1e-4, the same 100,000 images (5,000 steps).
    - ``"modern"``: from scratch on CamVid crops: VGG16-BN, batch 16, AdamW at 1e-3 with weight
      decay 1e-4, 200 warm-up steps then polynomial decay, median-frequency class weights,
      bf16 autocast and channels-last on a GPU, data held on the GPU.
    - ``"cpu"``: the modern recipe sized for two CPU cores: an eighth of VGG16-BN's channels
      (2.1 million weights, 4 MB in bf16), batch 8 of 352x480 crops, channels-last,
      ``CPU_STEPS`` steps at peak rate ``CPU_LR`` (the staged FCN-32s, 16s and 8s in about
      70 minutes on two AVX2 cores), validating every 200 steps.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {name!r}")
    if model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; got {model!r}")
    paper = dict(
        model=model,
        backbone="vgg16",
        pretrained=True,
        dataset="voc",
        crop_size=None,
        augment=False,
        optimizer="sgd",
        weight_decay=5e-4,
        bias_lr_mult=2.0,
        micro_batch=1,
        schedule="constant",
        eval_interval=4000,
        checkpoint_interval=4000,
    )
    settings = {
        "paper": dict(
            paper,
            lr=PAPER_LR[model],
            momentum=0.99,
            loss="sum",
            batch_size=1,
            steps=PAPER_STEPS[model],
        ),
        "paper-normalised": dict(
            paper,
            lr=1e-4,
            momentum=0.9,
            loss="mean",
            batch_size=20,
            steps=PAPER_STEPS[model] // 20,
            eval_interval=200,
            checkpoint_interval=200,
        ),
        "modern": dict(
            model=model,
            backbone="vgg16_bn",
            dataset="camvid",
            crop_size=(352, 480),
            optimizer="adamw",
            lr=1e-3,
            weight_decay=1e-4,
            loss="mean",
            class_weights=True,
            batch_size=16,
            steps=4000,
            schedule="poly",
            warmup_steps=200,
            amp="auto",
            channels_last=torch.cuda.is_available(),  # on CPUs it slows batch norm down
            resident=True,
            eval_interval=500,
            checkpoint_interval=500,
        ),
    }
    settings["cpu"] = dict(
        settings["modern"],
        width=0.125,
        batch_size=8,
        steps=CPU_STEPS[model],
        lr=CPU_LR[model],
        warmup_steps=50,
        channels_last=True,  # measured: 8 % faster at width 1/8 on 352x480 crops
        eval_interval=200,
        checkpoint_interval=100,
    )
    return TrainConfig(**{**settings[name], **overrides})


#: Overrides of the "modern" recipe for the book's fast mode: a slim net on small CamVid
#: crops that trains for a few seconds on a laptop CPU. It learns little; say so.
FAST_MODE = dict(
    width=0.0625,
    crop_size=(96, 128),
    batch_size=8,
    train_limit=48,
    val_limit=4,
    steps=40,
    lr=3e-3,
    warmup_steps=5,
    class_weights=False,
    eval_interval=20,
    log_interval=5,
)


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The fcnlib model a configuration names, with ImageNet weights if ``config.pretrained``."""
    return models.build(
        config.model,
        num_classes,
        backbone=config.backbone,
        pad100=config.pad100,
        weights="DEFAULT" if config.pretrained else None,
        width=config.width,
    )
