"""The same results on every CPU: the chapters that train and the training tests pass with
native bf16 forced on and with another path through PyTorch's and oneDNN's kernels."""

import os
import subprocess
import sys
from pathlib import Path

from fcnlib.runtime import REPO_ROOT

OTHER_CPU = Path(__file__).parent / "other_cpu"
#: What trains, in a chapter or a test: its numbers are the most sensitive to the arithmetic.
TRAINING = [
    "book/chapters/training.ipynb",
    "book/chapters/deconvolution.ipynb",
    "tests/test_train.py",
    "tests/test_ddp.py",
]


def other_cpu_environment() -> dict[str, str]:
    """This environment, as a CPU with native bf16 and plain (unvectorised) kernels sees it."""
    path = os.pathsep.join(filter(None, [str(OTHER_CPU), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "PYTHONPATH": path,
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    }


def test_the_forced_settings_take_effect():
    probe = "import torch; from fcnlib.runtime import native_bf16; "
    probe += "print(native_bf16(torch.device('cpu')), torch.backends.cpu.get_cpu_capability())"
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env=other_cpu_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown == ["True", "DEFAULT"]


def test_training_and_its_chapters_come_out_the_same_on_another_cpu():
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "-q", "-x", *TRAINING],
        cwd=REPO_ROOT,
        env=other_cpu_environment(),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
