"""Training an FCN: one loop for every model, recipe, device and number of GPUs.

:func:`fit` trains any module that maps (N, 3, H, W) images to (N, C, H, W) scores with
per-pixel cross-entropy. Everything about a run lives in one :class:`TrainConfig`; :func:`recipe`
fills it in for the paper's schedules and for a modern one. The loop is written so that a run
can stop at any step and go on exactly where it was:

- the data order of epoch ``e`` is a function of ``(seed, e)`` alone (``DistributedSampler``),
  and the augmentation of each item a function of ``(seed, e, position)``, so a resumed run skips
  the batches it consumed and draws the same ones after them, with any number of workers;
- a checkpoint (:mod:`fcnlib.checkpoint`) holds the model, optimiser, schedule, gradient scaler,
  step, random number generators and configuration, written atomically every
  ``checkpoint_interval`` steps, at the end, and when SIGINT or SIGTERM arrives.

Under ``torchrun`` the same loop runs in every process with ``DistributedDataParallel``; each
process takes its share of every global batch, and the loss is normalised by the pixel count of
the global batch, so the gradient equals that of one process over the whole batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from fcnlib import checkpoint
from fcnlib import models as fcn_models
from fcnlib.classes import ClassTable, class_table
from fcnlib.config import (  # noqa: F401  (re-exported: the chapters import them from here)
    CPU_LR,
    CPU_STEPS,
    FAST_MODE,
    MAY_CHANGE_ON_RESUME,
    PAPER_LR,
    PAPER_STEPS,
    RECIPES,
    TrainConfig,
    recipe,
)
from fcnlib.data import DATASETS, CamVid, PascalVOC
from fcnlib.predict import evaluate
from fcnlib.records import check_writable
from fcnlib.resident import ResidentDataset, ResidentLoader
from fcnlib.runtime import device as runtime_device
from fcnlib.runtime import (
    distributed,
    launched_processes,
    native_bf16,
    rank_zero,
    seed_everything,
    synchronise,
)
from fcnlib.schedule import make_schedule
from fcnlib.stats import class_frequencies, median_frequency_weights
from fcnlib.transforms import eval_transforms, train_transforms


def load_data(
    config: TrainConfig, device: torch.device | str = "cpu", eval_split: str | None = None
) -> tuple[Dataset | ResidentDataset, Dataset, ClassTable]:
    """The training data, the validation data and the class table that ``config`` names.

    Training data is augmented by ``train_transforms`` (crops of ``crop_size``; no
    augmentation and whole images without it), or held on ``device`` as a
    :class:`~fcnlib.resident.ResidentDataset` if ``config.resident``; the first
    ``train_limit`` images only, if set. Validation data (CamVid val, or VOC seg11valid, or
    ``eval_split``) is normalised whole images.
    """
    table = class_table(config.dataset)
    normalisation = fcn_models.normalisation(config.backbone)
    source, train_split, val_split = {
        "camvid": (CamVid, "train", "val"),
        "voc": (PascalVOC, "train", "seg11valid"),
    }[config.dataset]
    if config.resident:
        train = ResidentDataset(source(train_split), device, limit=config.train_limit)
    else:
        if config.crop_size is None:
            augment = eval_transforms(normalisation)
        else:
            augment = train_transforms(
                config.crop_size,
                table.ignore_index,
                normalisation,
                scale_range=(0.5, 2.0) if config.augment else None,
                hflip=config.augment,
                jitter=config.augment,
            )
        train = source(train_split, transforms=augment)
        if config.train_limit is not None:
            train = Subset(train, range(min(config.train_limit, len(train))))
    val = source(eval_split or val_split, transforms=eval_transforms(normalisation))
    return train, val, table


def class_loss_weights(config: TrainConfig) -> torch.Tensor | None:
    """The loss weight of each class, (C,): median-frequency class weights of the training
    labels if ``config.class_weights``, else None."""
    if not config.class_weights:
        return None
    source = DATASETS[config.dataset]("train")
    weights = median_frequency_weights(class_frequencies(source, limit=config.train_limit))
    return torch.from_numpy(weights).float()


@dataclass
class History:
    """What a run measured: the loss (per labelled pixel) and learning rate of every step,
    the validation scores every ``eval_interval`` steps, the wall-clock seconds of training
    (validation, checkpoints and callbacks excluded) in all and at each validation, and the
    precision the steps computed in ("float32", "bfloat16" or "float16"; ``amp="auto"``
    depends on the machine)."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0
    precision: str = "float32"

    def add_step(self, step: int, loss: float, lr: float) -> None:
        self.steps.append(step)
        self.loss.append(loss)
        self.lr.append(lr)

    def add_validation(self, step: int, scores: dict[str, Any]) -> None:
        """Record the scalar scores of a validation after ``step``, at the seconds so far."""
        self.eval_steps.append(step)
        self.eval_seconds.append(self.seconds)
        self.evals.append({k: v for k, v in scores.items() if isinstance(v, float)})

    def to_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> History:
        return cls(**values)


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite at ``step``; the weights were not updated with it."""

    def __init__(self, loss: float, step: int, lr: float) -> None:
        super().__init__(
            f"the loss became {loss} at step {step}; the weights of step {step - 1} are kept. "
            f"Lower the learning rate (it is {lr:.3g}) or check the data"
        )


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after ``step`` steps; a checkpoint was saved."""

    def __init__(self, step: int, path: str | None, signum: int) -> None:
        saved = f"checkpoint saved to {path}" if path else "no checkpoint path was set"
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; {saved}")
        self.step, self.path, self.signum = step, path, signum


class _StopOnSignal:
    """Turns SIGINT and SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.signum = 0

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self.previous[signum])  # a second signal stops at once

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopOnSignal]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast type of a run: ``amp="auto"`` means bf16 where :func:`native_bf16`, else
    float32 (None)."""
    amp = config.amp if config.amp != "auto" else ("bf16" if native_bf16(device) else "off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters.

    One-dimensional parameters (biases, normalisation scales) get ``bias_lr_mult`` times the
    rate and no weight decay, as the reference nets' ``lr_mult: 2, decay_mult: 0`` did; the
    parameters of ``model.backbone`` (if it has one) ``backbone_lr_mult`` times it besides.
    """
    backbone = getattr(model, "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups = []
    for part in (False, True):  # the head first: its rate is the one a history records
        params = [
            p for p in model.parameters() if p.requires_grad and (id(p) in in_backbone) == part
        ]
        rate = config.lr * (config.backbone_lr_mult if part else 1.0)
        groups += [
            {
                "params": [p for p in params if p.ndim > 1],
                "weight_decay": config.weight_decay,
                "lr": rate,
            },
            {
                "params": [p for p in params if p.ndim <= 1],
                "weight_decay": 0.0,
                "lr": rate * config.bias_lr_mult,
            },
        ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def _item_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the augmentation of the item at ``position`` of epoch ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class _SeededItems(Dataset):
    """Reads ``dataset[index]`` with torch's generator seeded for that item, then restored."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image, mask = self.dataset[index]
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def _epoch_batches(
    data: Dataset | ResidentDataset,
    config: TrainConfig,
    epoch: int,
    skip: int,
    device: torch.device,
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The steps of one epoch after the first ``skip``: lists of (images, masks) micro-batches.

    Each process gets ``batch_size / world`` items a step. From files, global position ``p`` of
    the epoch's permutation goes to process ``p % world``, as ``DistributedSampler`` deals them.
    Held on the device, each process draws its own random crops from all of the data.
    """
    rank, world = distributed()
    per_process = config.batch_size // world
    micro = config.micro_batch or per_process
    steps = len(data) // config.batch_size
    if isinstance(data, ResidentDataset):
        generator = torch.Generator().manual_seed(_item_seed(config.seed, epoch, rank))
        loader = ResidentLoader(
            data,
            batch_size=micro,
            normalisation=fcn_models.normalisation(config.backbone),
            crop_size=config.crop_size,
            scale_range=(0.5, 2.0) if config.augment else (1.0, 1.0),
            hflip=config.augment,
            drop_last=True,
            generator=generator,
        )
        # The crops of consumed steps are drawn again, on the device, and thrown away.
        batches: Iterator = iter(loader)
    else:
        sampler = DistributedSampler(
            data, num_replicas=world, rank=rank, seed=config.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        keys = [
            (i, _item_seed(config.seed, epoch, rank + world * k)) for k, i in enumerate(sampler)
        ]
        keys = keys[skip * per_process : steps * per_process]
        loader = DataLoader(
            _SeededItems(data),
            batch_sampler=[keys[i : i + micro] for i in range(0, len(keys), micro)],
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator(),  # its base seed must not consume the global generator
        )
        batches, steps, skip = iter(loader), steps - skip, 0
    step: list[tuple[torch.Tensor, torch.Tensor]] = []
    for done, (images, masks) in enumerate(batches):
        if done // (per_process // micro) >= steps:
            return
        step.append((images, masks))
        if len(step) == per_process // micro:
            if done // (per_process // micro) >= skip:
                yield [
                    (i.to(device, non_blocking=True), m.to(device, non_blocking=True))
                    for i, m in step
                ]
            step = []


def check_resumable(saved: dict[str, Any], config: TrainConfig, path: str) -> None:
    """Raise ``ValueError`` naming the first setting in which ``config`` differs from the
    settings ``saved`` in checkpoint ``path``, among those that change the numbers."""
    current = config.to_dict()
    changed = [k for k in current if k not in MAY_CHANGE_ON_RESUME and saved.get(k) != current[k]]
    if changed:
        key = changed[0]
        raise ValueError(
            f"checkpoint {path} was written with {key}={saved.get(key)!r}, but this run has "
            f"{key}={current[key]!r}: use the same settings to resume, or another checkpoint path"
        )


@dataclass
class TrainState:
    """A run at one step, and the single list of what its checkpoint holds: saving writes
    :meth:`state_dict`, resuming reads it back with :meth:`load_state_dict`."""

    config: TrainConfig
    table: ClassTable
    model: nn.Module  # the plain module, without torch.compile's or DDP's wrappers
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int = 0
    history: History = field(default_factory=History)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": checkpoint.rng_state(),
            "config": self.config.to_dict(),
            "num_classes": self.table.num_classes,
            "dataset": self.table.name,
            "history": self.history.to_dict(),
        }

    def load_state_dict(self, saved: dict[str, Any], path: str) -> None:
        """Resume from checkpoint ``saved`` (read from ``path``, named in errors)."""
        check_resumable(saved["config"], self.config, path)
        for name in ("model", "optimizer", "schedule", "scaler"):
            getattr(self, name).load_state_dict(saved[name])
        checkpoint.set_rng_state(saved["rng"])
        self.step, self.history = saved["step"], History.from_dict(saved["history"])

    @classmethod
    def start(
        cls,
        model: nn.Module,
        config: TrainConfig,
        table: ClassTable,
        device: torch.device,
        saved: dict[str, Any] | None = None,
    ) -> TrainState:
        """Step 0 of a run of ``model`` on ``device``, or the step where checkpoint ``saved``
        (read from ``config.checkpoint`` if it exists and ``saved`` is None) stopped."""
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        model = model.to(device, memory_format=memory_format)
        if config.fixed_backbone:
            model.backbone.requires_grad_(False)
        optimizer = make_optimizer(model, config)
        schedule = make_schedule(
            optimizer, config.steps, config.warmup_steps, config.poly_power, config.schedule
        )
        scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        state = cls(config, table, model, optimizer, schedule, scaler)
        if saved is None and config.checkpoint and Path(config.checkpoint).exists():
            saved = checkpoint.load(config.checkpoint)
        if saved is not None:
            state.load_state_dict(saved, str(config.checkpoint))
        return state

    def advance(self) -> None:
        """One optimiser and schedule step with the gradients the step accumulated."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        self.step += 1

    def save(self) -> None:
        """Write the checkpoint, if the run has a path for one, on rank 0 (all ranks wait)."""
        if self.config.checkpoint and distributed()[0] == 0:
            checkpoint.save(self.state_dict(), self.config.checkpoint)
        if distributed()[1] > 1:
            dist.barrier()


def _check_split(config: TrainConfig, images: int) -> None:
    """Raise if the processes cannot share the batches of ``config`` over ``images`` images."""
    world = distributed()[1]
    if launched_processes() > 1 and not dist.is_initialized():
        raise RuntimeError(
            f"torchrun started {launched_processes()} processes but this one has not joined "
            "their group: train inside `with fcnlib.runtime.process_group():`"
        )
    if config.batch_size % world or (config.batch_size // world) % (config.micro_batch or 1):
        raise ValueError(
            f"batch_size {config.batch_size} must split into {world} processes of whole "
            f"micro-batches of {config.micro_batch}"
        )
    if images < config.batch_size:
        raise ValueError(
            f"the training set has {images} images, fewer than batch_size {config.batch_size}"
        )


def _due(step: int, interval: int, last: int) -> bool:
    """Whether something done every ``interval`` steps (0: never) and at the end is due."""
    return step == last or bool(interval and step % interval == 0)


def _steps(
    data: Dataset | ResidentDataset, config: TrainConfig, start: int, device: torch.device
) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The micro-batches of every step after the first ``start``, epoch after epoch, their
    images channels-last if ``config.channels_last``."""
    steps_per_epoch = len(data) // config.batch_size
    for step in range(start, config.steps):
        epoch, skip = divmod(step, steps_per_epoch)
        if step == start or skip == 0:
            batches = _epoch_batches(data, config, epoch, skip, device)
        micro_batches = next(batches)
        if config.channels_last:
            micro_batches = [
                (images.contiguous(memory_format=torch.channels_last), masks)
                for images, masks in micro_batches
            ]
        yield micro_batches


def _wrapped(model: nn.Module, config: TrainConfig, device: torch.device, world: int) -> nn.Module:
    """``model`` as the training steps call it: compiled if ``config.compile``, in DDP over
    ``world`` processes when there are several."""
    step_model = torch.compile(model) if config.compile else model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_model = DistributedDataParallel(step_model, device_ids=ids)
    return step_model


def _global_counts(
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    ignore_index: int,
    signum: int,
    device: torch.device,
    world: int,
) -> tuple[int, int]:
    """The labelled pixels of the step's global batch over ``world`` processes (at least 1),
    and a signal number that is non-zero when any process received SIGINT or SIGTERM."""
    labelled = sum((m != ignore_index).sum() for _, m in micro_batches)
    counts = torch.stack([labelled, torch.tensor(signum, device=device)])
    if world > 1:
        dist.all_reduce(counts)
    return max(int(counts[0]), 1), int(counts[1]) and (signum or signal.SIGTERM)


def fit(
    model: nn.Module,
    train_data: Dataset | ResidentDataset,
    config: TrainConfig,
    table: ClassTable,
    val_data: Dataset | None = None,
    *,
    loss_weight: torch.Tensor | None = None,
    callback: Callable[[History], None] | None = None,
    saved: dict[str, Any] | None = None,
) -> History:
    """Train ``model`` in place on ``train_data`` as ``config`` says, and return its history.

    ``train_data`` yields ``(image float (3, h, w), mask int64 (h, w))`` pairs, already
    augmented and normalised, or is a :class:`~fcnlib.resident.ResidentDataset`, which the loop
    crops and augments on the device. ``val_data`` (whole images) is scored every
    ``eval_interval`` steps and at the end. ``loss_weight`` (C,) weights the cross-entropy of
    each class. If ``config.checkpoint`` names an existing checkpoint the run resumes from it
    (``saved``: that checkpoint, already read). ``callback(history)`` runs every
    ``log_interval`` steps and after each validation: draw live curves there, or stop the run.

    Raises :class:`NonFiniteLoss` naming the step where the loss became NaN or infinite, and
    :class:`Interrupted` after saving a checkpoint when SIGINT or SIGTERM arrives.
    """
    _check_split(config, len(train_data))
    rank, world = distributed()
    device = runtime_device(config.device)
    seed_everything(config.seed, config.deterministic)
    state = TrainState.start(model, config, table, device, saved)
    model, optimizer, history = state.model, state.optimizer, state.history
    step_model = _wrapped(model, config, device, world)
    dtype, ignore = amp_dtype(config, device), table.ignore_index
    history.precision = str(dtype or torch.float32).removeprefix("torch.")
    weight = None if loss_weight is None else loss_weight.float().to(device)
    progress = dict(total=config.steps, initial=state.step, desc="train")
    with (
        _StopOnSignal().installed() as stop,
        tqdm(**progress, disable=not config.progress or rank != 0) as bar,
    ):
        tick = time.perf_counter()  # training time: validation and checkpoints do not count
        for micro_batches in _steps(train_data, config, state.step, device):
            # Stop on a signal, at the same step in every process.
            labelled, signum = _global_counts(micro_batches, ignore, stop.signum, device, world)
            if signum:
                state.save()
                raise Interrupted(state.step, config.checkpoint, signum)

            # Forward, backward, update. DDP averages gradients over processes; the scale turns
            # that into the sum over the global batch, over its labelled pixels for "mean".
            model.train()
            if config.fixed_backbone:  # fixed features: batch norms keep their statistics too
                model.backbone.eval()
            scale = world / labelled if config.loss == "mean" else world
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for index, (images, masks) in enumerate(micro_batches):
                last = index == len(micro_batches) - 1
                no_sync = step_model.no_sync if world > 1 and not last else contextlib.nullcontext
                with no_sync():
                    with torch.autocast(device.type, dtype, enabled=dtype is not None):
                        scores = step_model(images)
                    loss = F.cross_entropy(
                        scores.float(), masks, weight, ignore_index=ignore, reduction="sum"
                    )
                    state.scaler.scale(loss * scale).backward()
                loss_sum += loss.detach()
            if world > 1:
                dist.all_reduce(loss_sum)
            loss_per_pixel, lr = loss_sum.item() / labelled, state.schedule.get_last_lr()[0]
            if not math.isfinite(loss_per_pixel):
                raise NonFiniteLoss(loss_per_pixel, state.step + 1, lr)
            history.add_step(state.step + 1, loss_per_pixel, lr)
            state.advance()
            synchronise(device)
            history.seconds += time.perf_counter() - tick
            bar.update()
            bar.set_postfix(loss=f"{loss_per_pixel:.3f}", refresh=False)

            # Validation (not through DDP, whose forward expects every process to run it
            # equally often), and the callback.
            if val_data is not None and _due(state.step, config.eval_interval, config.steps):
                metrics = evaluate(
                    model, val_data, table, device=device, limit=config.val_limit, amp=dtype
                )
                history.add_validation(state.step, metrics.compute())
                bar.set_postfix(
                    loss=f"{loss_per_pixel:.3f}", mIU=f"{history.evals[-1]['mean_iu']:.3f}"
                )
                if callback:
                    callback(history)
            elif callback and state.step % config.log_interval == 0:
                callback(history)

            # Checkpoint.
            if _due(state.step, config.checkpoint_interval, config.steps):
                state.save()
            tick = time.perf_counter()
    return history


def start_or_resume(
    config: TrainConfig,
    init_from: str | Path | None = None,
    say: Callable[[str], None] = print,
) -> History:
    """Train the run ``config`` describes, as ``fcnlib train`` does, and return its history.

    The run's checkpoint (``config.checkpoint``) decides where it starts: absent, from a new
    model (with the weights of the trained coarser net in checkpoint ``init_from``, for staged
    training); present, from where it stopped; trained to ``config.steps`` already, nowhere,
    and its saved history is returned. ``say`` reports on rank 0 only.
    """
    if init_from is not None and not Path(init_from).is_file():
        raise FileNotFoundError(f"--init-from {init_from} does not exist")
    say = rank_zero(say)
    device = runtime_device(config.device)  # a bad --device is named before anything else
    path = Path(config.checkpoint) if config.checkpoint else None
    saved = checkpoint.load(path) if path is not None and path.exists() else None
    if saved is not None:
        check_resumable(saved["config"], config, str(path))
        if saved["step"] >= config.steps:
            say(f"{path} is already trained to step {saved['step']}")
            return History.from_dict(saved["history"])
        say(f"resuming {path} from step {saved['step']} of {config.steps}")
    train_data, val_data, table = load_data(config, device)
    if path is not None and distributed()[0] == 0:  # before the work, not after it
        check_writable(path, "--checkpoint")
    seed_everything(config.seed)  # the initial weights; fit seeds again for the training
    model = fcn_models.build(config.model, table.num_classes, **config.model_options())
    if init_from is not None and saved is None:  # resuming, fit loads the checkpoint's weights
        coarser, _ = checkpoint.load_trained(init_from)
        fcn_models.init_from(model, coarser)
    return fit(
        model,
        train_data,
        config,
        table,
        val_data,
        loss_weight=class_loss_weights(config),
        saved=saved,
    )
