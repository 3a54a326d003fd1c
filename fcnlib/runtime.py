"""Where fcnlib runs: the notebooks' fast/full mode, the data root, the device and seeding."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

MODE_VARIABLE = "FCNLIB_MODE"
DATA_ROOT_VARIABLE = "FCNLIB_DATA_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[1]

Mode = Literal["fast", "full"]


def mode() -> Mode:
    """The scale the notebooks run at: ``"fast"`` or ``"full"``.

    Fast mode uses small data and few iterations so that each chapter takes seconds on a
    laptop CPU; full mode uses the real data and schedules. ``FCNLIB_MODE`` overrides the
    default, which is ``"full"`` when a CUDA device is present and ``"fast"`` otherwise.
    """
    value = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if not value:
        return "full" if torch.cuda.is_available() else "fast"
    if value not in ("fast", "full"):
        raise ValueError(
            f"{MODE_VARIABLE}={value!r} is not a mode: set it to 'fast' or 'full', or unset it"
        )
    return value  # type: ignore[return-value]


def is_fast() -> bool:
    """True in fast mode: the one line a notebook needs is ``FAST = fcnlib.is_fast()``."""
    return mode() == "fast"


def data_root() -> Path:
    """The folder that holds the datasets (``camvid/``, ``VOCdevkit/``, ...), as an absolute path.

    ``FCNLIB_DATA_ROOT`` overrides the default, the repository's ``data/`` folder.
    """
    value = os.environ.get(DATA_ROOT_VARIABLE)
    root = Path(value).expanduser() if value else REPO_ROOT / "data"
    return root.resolve()


def device(name: str | None = None) -> torch.device:
    """The device ``name`` names ("cpu", "cuda", "cuda:1", ...), checked to exist here; for
    None or "auto", this process's CUDA device when there is one (under ``torchrun``, the one
    the process chose), else the CPU.

    Raises ValueError saying what to write instead, for names torch does not know and for a
    GPU this machine does not have.
    """
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device: write cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(
                f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif chosen.type != "cpu":
        raise ValueError(f"--device {name}: fcnlib runs on cpu or cuda devices")
    return chosen


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices) so that a run repeats.

    With ``deterministic=True`` torch also refuses nondeterministic kernels, which makes GPU
    runs bit-for-bit repeatable at some cost in speed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def synchronise(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def distributed() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_zero(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` in the process of rank 0; in the others, a function that says nothing, so that
    a message printed by every process of a run appears once."""
    return say if distributed()[0] == 0 else _say_nothing


def _say_nothing(text: str) -> None:
    pass


def launched_processes() -> int:
    """The number of processes ``torchrun`` started for this job (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join the process group that ``torchrun`` describes in the environment, if any, for the
    ``with`` block, and leave it at the end: whoever opens the block owns the group. A group
    already joined (by an enclosing block, or by the caller) is used and left alone.

    NCCL on GPUs (one per process, by ``LOCAL_RANK``), gloo on CPUs.
    """
    joins = launched_processes() > 1 and not dist.is_initialized()
    if joins:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        if joins:
            dist.destroy_process_group()


def native_bf16(device: torch.device) -> bool:
    """True where ``device`` multiplies bf16 in hardware: a GPU, or a CPU with AVX512-BF16 or
    AMX. Elsewhere (AVX2 CPUs) bf16 is emulated, several times slower than float32."""
    if device.type != "cpu":
        return True
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
