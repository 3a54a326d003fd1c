"""Benchmarks: training throughput, inference latency and FLOPs of FCN-8s beside a peer model.

Every timing follows the same discipline: warm-up calls first (allocator, cuDNN autotuning,
compilation), a device synchronisation before each clock read so that queued GPU work is
counted, and the median of repeated calls, which one slow outlier cannot move. The peer,
torchvision's ``fcn_resnet50``, is measured in the same run with the same code, so ratios
between the two mean something even where absolute numbers vary from machine to machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fcnlib import models
from fcnlib.book import execute
from fcnlib.runtime import synchronise

#: Dense peak throughput in TFLOP/s from NVIDIA's data sheets (no sparsity), by name fragment
#: of ``torch.cuda.get_device_name`` and precision. FP32 is the non-tensor-core rate.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 51.2, "bf16": 756.0},
    "H100": {"fp32": 66.9, "bf16": 989.4},  # SXM5
    "H200": {"fp32": 66.9, "bf16": 989.4},
    "A100": {"fp32": 19.5, "bf16": 312.0},
}

#: The measured variants: precision, memory format and compilation, each adding one step.
VARIANTS: dict[str, dict[str, object]] = {
    "fp32": {"precision": "fp32", "channels_last": False, "compile": False},
    "fp32+channels_last": {"precision": "fp32", "channels_last": True, "compile": False},
    "fp32+compile": {"precision": "fp32", "channels_last": False, "compile": True},
    "bf16": {"precision": "bf16", "channels_last": False, "compile": False},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True, "compile": False},
    "bf16+channels_last+compile": {"precision": "bf16", "channels_last": True, "compile": True},
}


def _peer(build: Callable[..., nn.Module]) -> Callable[[float], nn.Module]:
    """A torchvision segmentation model, randomly initialised, returning only its logits; it
    is always built at full width."""
    return lambda width: _OutputOnly(build(weights=None, weights_backbone=None, num_classes=21))


#: The models measured, each built from its channel width and returning (N, 21, H, W)
#: logits: FCN-8s on each backbone (``models.build``), and torchvision's peers at full width.
MODELS: dict[str, Callable[[float], nn.Module]] = {
    "fcn8s-vgg16": lambda width: models.build("fcn8s", 21, backbone="vgg16", width=width),
    "fcn8s-vgg16_bn": lambda width: models.build("fcn8s", 21, backbone="vgg16_bn", width=width),
    "fcn_resnet50": _peer(torchvision.models.segmentation.fcn_resnet50),
    "lraspp_mobilenet_v3_large": _peer(torchvision.models.segmentation.lraspp_mobilenet_v3_large),
}
PEERS = ("fcn_resnet50", "lraspp_mobilenet_v3_large")


def time_call(
    fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10
) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        fn()
    synchronise(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronise(device)
        samples.append(time.perf_counter() - start)
    return samples


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak in TFLOP/s at ``precision``, or None where it is not tabulated."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks[precision]
    return None


def channel_width(name: str, width: float) -> float:
    """The channel width ``name`` is built with: ``width`` for FCN-8s, 1.0 for the peers."""
    return 1.0 if name in PEERS else width


class _OutputOnly(nn.Module):
    """torchvision's segmentation models return a dict; the benchmark wants the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def matmul_peak(device: torch.device, precision: str, size: int = 1024, repeats: int = 5) -> float:
    """This device's measured matrix-multiply rate in TFLOP/s at ``precision`` ("fp32" or
    "bf16"): the median over ``repeats`` products of two ``size`` x ``size`` matrices, after
    warm-up. On a CPU, where no data sheet gives the peak, this stands for it."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    seconds = statistics.median(time_call(lambda: a @ b, device, warmup=2, repeats=repeats))
    return 2 * size**3 / seconds / 1e12


def count_flops(model: nn.Module, inputs: torch.Tensor, train: bool) -> int:
    """FLOPs of one forward (and, with ``train``, backward) pass over ``inputs``."""
    with FlopCounterMode(display=False) as counter:
        output = model(inputs)
        if train:
            output.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


@dataclass
class Result:
    """One measured configuration. Times in milliseconds; FLOPs per image."""

    model: str
    height: int
    width: int
    batch: int
    variant: str
    task: str  # "train" (forward + backward + SGD step) or "infer" (forward, no gradients)
    channel_width: float  # of the backbone: 1.0 is the real network
    median_ms: float
    images_per_s: float
    flops_per_image: int
    achieved_tflops: float
    mfu: float | None  # achieved / peak at the variant's precision, where the peak is known


def measure(
    name: str,
    *,
    size: tuple[int, int],
    batch: int,
    variant: str,
    task: str,
    device: torch.device,
    width: float = 1.0,
    warmup: int = 3,
    repeats: int = 10,
) -> Result:
    """Time one configuration of one model; see ``VARIANTS`` and ``Result``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    if task not in ("train", "infer"):
        raise ValueError(f"task must be 'train' or 'infer', got {task!r}")
    options = VARIANTS[variant]
    memory_format = torch.channels_last if options["channels_last"] else torch.contiguous_format
    if name not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {name!r}")
    width = channel_width(name, width)
    model = MODELS[name](width).to(device, memory_format=memory_format)
    model.train(task == "train")
    inputs = torch.randn(batch, 3, *size, device=device).to(memory_format=memory_format)
    flops = count_flops(model, inputs, train=task == "train")
    step_model = torch.compile(model) if options["compile"] else model
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=options["precision"] == "bf16"
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def train_step() -> None:
        with autocast:
            loss = step_model(inputs).float().mean()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step() -> None:
        with autocast:
            step_model(inputs)

    samples = time_call(
        train_step if task == "train" else infer_step, device, warmup=warmup, repeats=repeats
    )
    seconds = statistics.median(samples)
    achieved = flops / seconds / 1e12
    peak = peak_tflops(device, str(options["precision"]))
    return Result(
        model=name,
        height=size[0],
        width=size[1],
        batch=batch,
        variant=variant,
        task=task,
        channel_width=width,
        median_ms=1000 * seconds,
        images_per_s=batch / seconds,
        flops_per_image=flops // batch,
        achieved_tflops=achieved,
        mfu=None if peak is None else achieved / peak,
    )


def time_notebooks(paths: Iterable[Path], timeout: int = 600) -> dict[str, float]:
    """Seconds each notebook takes to execute in fast mode, in a fresh kernel of this Python."""
    return {Path(path).stem: execute(Path(path), timeout)[1] for path in paths}


def measure_all(
    device: torch.device,
    *,
    sizes: list[tuple[int, int]],
    batches: list[int],
    variants: list[str],
    model_names: Iterable[str] = MODELS,
    width: float = 1.0,
    warmup: int = 3,
    repeats: int = 10,
    progress: Callable[[Result], None] | None = None,
) -> list[dict[str, object]]:
    """Measure every combination of model, size, batch, variant and task, in that nesting."""
    results = []
    for name in model_names:
        for size in sizes:
            for batch in batches:
                for variant in variants:
                    for task in ("train", "infer"):
                        result = measure(
                            name,
                            size=size,
                            batch=batch,
                            variant=variant,
                            task=task,
                            device=device,
                            width=width,
                            warmup=warmup,
                            repeats=repeats,
                        )
                        if progress is not None:
                            progress(result)
                        results.append(asdict(result))
    return results


def format_results(results: list[dict[str, object]], peaks: dict[str, float] | None = None) -> str:
    """A plain-text table of measured results, one line each, under a heading for each input
    size and batch; at most 88 characters wide, so "channels_last" is written NHWC and model
    names are cut to 15 characters. With ``peaks`` (TFLOP/s by precision, e.g.
    :func:`matmul_peak`'s, measured in the same run) each achieved rate is also given as a
    percentage of the fp32 and of the bf16 peak, instead of the MFU."""
    last = f"{'%fp32':>6}{'%bf16':>6}" if peaks else f"{'MFU':>6}"
    header = (
        f"{'model':<15} {'variant':<17} {'task':<5} {'ms':>8} {'img/s':>7} {'GFLOP':>6} "
        f"{'TFLOP/s':>7} {last}"
    )
    lines, group = [], None
    for r in results:
        if (r["height"], r["width"], r["batch"]) != group:
            group = (r["height"], r["width"], r["batch"])
            lines += [f"{r['height']}x{r['width']}, batch {r['batch']}:", header]
        if peaks:
            rate = r["achieved_tflops"]
            tail = f"{100 * rate / peaks['fp32']:>5.0f}%{100 * rate / peaks['bf16']:>5.0f}%"
        else:
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            tail = f"{mfu:>6}"
        variant = str(r["variant"]).replace("channels_last", "NHWC")
        lines.append(
            f"{str(r['model'])[:15]:<15} {variant:<17} {r['task']:<5} {r['median_ms']:>8.1f} "
            f"{r['images_per_s']:>7.2f} {r['flops_per_image'] / 1e9:>6.1f} "
            f"{r['achieved_tflops']:>7.3f} {tail}"
        )
    return "\n".join(lines)


def peer_ratios(results: list[dict[str, object]], peer: str = "fcn_resnet50") -> list[dict]:
    """Images per second of each model over the peer's, for every configuration both ran."""
    key = ("height", "width", "batch", "variant", "task")
    peers = {tuple(r[k] for k in key): r for r in results if r["model"] == peer}
    ratios = []
    for r in results:
        match = peers.get(tuple(r[k] for k in key))
        if r["model"] != peer and match is not None:
            ratio = r["images_per_s"] / match["images_per_s"]
            ratios.append({**{k: r[k] for k in ("model", *key)}, "ratio": ratio})
    return ratios
