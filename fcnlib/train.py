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
    PAPER_LR,
    PAPER_STEPS,
    RECIPES,
    RESUMABLE,
    TrainConfig,
    build_model,
    recipe,
)
from fcnlib.data import DATASETS, CamVid, PascalVOC
from fcnlib.predict import evaluate
from fcnlib.records import check_writable
from fcnlib.resident import ResidentDataset, ResidentLoader
from fcnlib.runtime import (
    distributed,
    launched_processes,
    native_bf16,
    parse_device,
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
    source, train_split, val_split = {
        "camvid": (CamVid, "train", "val"),
        "voc": (PascalVOC, "train", "seg11valid"),
    }[config.dataset]
    if config.resident:
        train = ResidentDataset(source(train_split), device, limit=config.train_limit)
    else:
        if config.crop_size is None:
            augment = eval_transforms()
        else:
            augment = train_transforms(
                config.crop_size,
                table.ignore_index,
                scale_range=(0.5, 2.0) if config.augment else None,
                hflip=config.augment,
                jitter=config.augment,
            )
        train = source(train_split, transforms=augment)
        if config.train_limit is not None:
            train = Subset(train, range(min(config.train_limit, len(train))))
    val = source(eval_split or val_split, transforms=eval_transforms())
    return train, val, table


def class_weights(config: TrainConfig) -> torch.Tensor | None:
    """Median-frequency class weights of the training labels, or None if not configured."""
    if not config.class_weights:
        return None
    source = DATASETS[config.dataset]("train")
    weights = median_frequency_weights(class_frequencies(source, limit=config.train_limit))
    return torch.from_numpy(weights).float()


@dataclass
class History:
    """What a run measured: the loss (per labelled pixel) and learning rate of every step,
    the validation scores every ``eval_interval`` steps, and the wall-clock seconds of training
    (validation, checkpoints and callbacks excluded) in all and at each validation."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> History:
        return cls(**values)


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite; the weights were not updated with it."""


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


def run_device(config: TrainConfig) -> torch.device:
    """The device a run uses: ``config.device``, or this process's GPU, or the CPU."""
    if config.device != "auto":
        return parse_device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast type of a run: ``amp="auto"`` means bf16 where :func:`native_bf16`, else
    float32 (None)."""
    amp = config.amp if config.amp != "auto" else ("bf16" if native_bf16(device) else "off")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the trainable parameters.

    One-dimensional parameters (biases, normalisation scales) get ``bias_lr_mult`` times the
    rate and no weight decay, as the reference nets' ``lr_mult: 2, decay_mult: 0`` did.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
        {
            "params": [p for p in params if p.ndim <= 1],
            "weight_decay": 0.0,
            "lr": config.lr * config.bias_lr_mult,
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


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: str) -> None:
    current = config.to_dict()
    changed = [k for k in current if k not in RESUMABLE and saved.get(k) != current[k]]
    if changed:
        key = changed[0]
        raise ValueError(
            f"checkpoint {path} was written with {key}={saved.get(key)!r}, but this run has "
            f"{key}={current[key]!r}: use the same settings to resume, or another checkpoint path"
        )


def fit(
    model: nn.Module,
    train_data: Dataset | ResidentDataset,
    config: TrainConfig,
    table: ClassTable,
    val_data: Dataset | None = None,
    class_weights: torch.Tensor | None = None,
    callback: Callable[[History], None] | None = None,
) -> History:
    """Train ``model`` in place on ``train_data`` as ``config`` says, and return its history.

    ``train_data`` yields ``(image float (3, h, w), mask int64 (h, w))`` pairs, already
    augmented and normalised, or is a :class:`~fcnlib.resident.ResidentDataset`, which the loop
    crops and augments on the device. ``val_data`` (whole images) is scored every
    ``eval_interval`` steps and at the end. If ``config.checkpoint`` names an existing
    checkpoint the run resumes from it. ``callback(history)`` runs every ``log_interval``
    steps and after each validation: draw live curves there.

    Raises :class:`NonFiniteLoss` naming the step where the loss became NaN or infinite, and
    :class:`Interrupted` after saving a checkpoint when SIGINT or SIGTERM arrives.
    """
    if launched_processes() > 1 and not dist.is_initialized():
        raise RuntimeError(
            f"torchrun started {launched_processes()} processes but this one has not joined "
            "their group: train inside `with fcnlib.runtime.process_group():`"
        )
    rank, world = distributed()
    if config.batch_size % world or (config.batch_size // world) % (config.micro_batch or 1):
        raise ValueError(
            f"batch_size {config.batch_size} must split into {world} processes of whole "
            f"micro-batches of {config.micro_batch}"
        )
    steps_per_epoch = len(train_data) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"the training set has {len(train_data)} images, fewer than batch_size "
            f"{config.batch_size}"
        )
    device = run_device(config)
    seed_everything(config.seed, config.deterministic)
    raw_model = model.to(device)
    if config.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(raw_model, config)
    schedule = make_schedule(
        optimizer, config.steps, config.warmup_steps, config.poly_power, config.schedule
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    weight = None if class_weights is None else class_weights.float().to(device)
    history, step = History(), 0
    if config.checkpoint and Path(config.checkpoint).exists():
        state = checkpoint.load(config.checkpoint)
        _check_resumable(state["config"], config, config.checkpoint)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        history, step = History.from_dict(state["history"]), state["step"]
    net = torch.compile(raw_model) if config.compile else raw_model
    model = net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids)
    dtype = amp_dtype(config, device)

    def save() -> None:
        if config.checkpoint and rank == 0:
            state = {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "rng": checkpoint.rng_state(),
                "config": config.to_dict(),
                "num_classes": table.num_classes,
                "dataset": table.name,
                "history": history.to_dict(),
            }
            checkpoint.save(state, config.checkpoint)
        if world > 1:
            dist.barrier()

    mark = time.perf_counter()

    @contextlib.contextmanager
    def clock_stopped() -> Iterator[None]:
        # Validation, checkpoints and plotting are not training: the clock stops for them.
        nonlocal mark
        synchronise(device)
        history.seconds += time.perf_counter() - mark
        try:
            yield
        finally:
            mark = time.perf_counter()

    def validate() -> None:
        # Not through DDP, whose forward expects every process to run it equally often.
        metrics = evaluate(net, val_data, table, device=device, limit=config.val_limit, amp=dtype)
        scores = metrics.compute()
        history.eval_steps.append(step)
        history.eval_seconds.append(history.seconds)
        history.evals.append({k: v for k, v in scores.items() if isinstance(v, float)})

    stop_at = config.steps
    if config.steps_per_call:
        stop_at = min(stop_at, step + config.steps_per_call)
    bar = tqdm(
        total=config.steps, initial=step, disable=not config.progress or rank != 0, desc="train"
    )
    with _StopOnSignal().installed() as stop:
        while step < stop_at:
            epoch, skip = divmod(step, steps_per_epoch)
            for micro_batches in _epoch_batches(train_data, config, epoch, skip, device):
                model.train()
                labelled = sum((m != table.ignore_index).sum() for _, m in micro_batches)
                flags = torch.stack([labelled, torch.tensor(stop.signum, device=device)])
                if world > 1:  # every process learns of a signal and of the global pixel count
                    dist.all_reduce(flags)
                labelled_total, signum = int(flags[0]), int(flags[1])
                if signum:
                    with clock_stopped():
                        save()
                    bar.close()
                    raise Interrupted(step, config.checkpoint, stop.signum or signal.SIGTERM)
                # DDP averages gradients over processes; the scale turns that into the sum over
                # the global batch, divided by its labelled pixels for the mean loss.
                scale = world / max(labelled_total, 1) if config.loss == "mean" else world
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=device)
                for index, (images, masks) in enumerate(micro_batches):
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    last = index == len(micro_batches) - 1
                    no_sync = model.no_sync if world > 1 and not last else contextlib.nullcontext
                    with no_sync():
                        with torch.autocast(device.type, dtype, enabled=dtype is not None):
                            scores = model(images)
                        loss = F.cross_entropy(
                            scores.float(),
                            masks,
                            weight=weight,
                            ignore_index=table.ignore_index,
                            reduction="sum",
                        )
                        scaler.scale(loss * scale).backward()
                    loss_sum += loss.detach()
                if world > 1:
                    dist.all_reduce(loss_sum)
                loss_per_pixel = loss_sum.item() / max(labelled_total, 1)
                if not math.isfinite(loss_per_pixel):
                    bar.close()
                    raise NonFiniteLoss(
                        f"the loss became {loss_per_pixel} at step {step + 1}; the weights of "
                        f"step {step} are kept. Lower the learning rate (it is "
                        f"{schedule.get_last_lr()[0]:.3g}) or check the data"
                    )
                history.steps.append(step + 1)
                history.loss.append(loss_per_pixel)
                history.lr.append(schedule.get_last_lr()[0])
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                step += 1
                bar.update()
                if val_data is not None and (
                    step == config.steps
                    or (config.eval_interval and step % config.eval_interval == 0)
                ):
                    with clock_stopped():
                        validate()
                        bar.set_postfix(
                            loss=f"{loss_per_pixel:.3f}",
                            mIU=f"{history.evals[-1]['mean_iu']:.3f}",
                        )
                        if callback:
                            callback(history)
                elif step % config.log_interval == 0:
                    bar.set_postfix(loss=f"{loss_per_pixel:.3f}")
                    if callback:
                        with clock_stopped():
                            callback(history)
                if step == stop_at or (
                    config.checkpoint_interval and step % config.checkpoint_interval == 0
                ):
                    with clock_stopped():
                        save()
                if step >= stop_at:
                    break
    bar.close()
    return history


def run(
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
    rank, _ = distributed()
    if rank != 0:
        say = lambda text: None  # noqa: E731
    path = Path(config.checkpoint) if config.checkpoint else None
    device = run_device(config)
    resuming = path is not None and path.exists()
    if resuming:
        state = checkpoint.load(path)
        _check_resumable(state["config"], config, str(path))
        if state["step"] >= config.steps:
            say(f"{path} is already trained to step {state['step']}")
            return History.from_dict(state["history"])
        say(f"resuming {path} from step {state['step']} of {config.steps}")
    train_data, val_data, table = load_data(config, device)
    if path is not None and rank == 0:  # before the work, not after it
        check_writable(path, "--checkpoint")
    seed_everything(config.seed)
    model = build_model(config, table.num_classes)
    if init_from is not None and not resuming:  # resuming, fit loads the checkpoint's weights
        coarser, _ = checkpoint.load_trained(init_from)
        fcn_models.init_from(model, coarser)
    return fit(model, train_data, config, table, val_data, class_weights(config))
