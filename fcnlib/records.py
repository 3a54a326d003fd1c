"""Records of runs: what they ran on, and their results written as JSON or CSV, atomically.

A benchmark or a trained model's scores are only worth keeping with the hardware, the library
versions, the code's commit and the command that produced them; :func:`environment` gathers
those. Files are written to a temporary name and renamed, so that a reader never sees half a
file and an interrupted write leaves the old one in place.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import platform
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torchvision

from fcnlib.runtime import REPO_ROOT

# mkstemp creates files readable by their owner only; a record should get the permissions
# any new file gets. The umask can only be read by setting it, so read it once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def processor_name() -> str:
    """The CPU's model name where Linux reports it, else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def source_version() -> tuple[str | None, bool | None]:
    """The commit the code was checked out at, and whether tracked files differ from it.

    From git where the repository's history is at hand; in a copy without it (a folder sent to
    a compute node), the commit from the ``FCNLIB_GIT_COMMIT`` variable, and None for whether
    the code differs, since nothing can tell.
    """

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)

    try:
        head, status = (
            git("rev-parse", "HEAD"),
            git("status", "--porcelain", "--untracked-files=no"),
        )
    except OSError:  # no git program
        head = status = None
    if head is not None and head.returncode == 0 and status.returncode == 0:
        return head.stdout.strip(), bool(status.stdout.strip())
    return os.environ.get("FCNLIB_GIT_COMMIT") or None, None


def environment(device: torch.device, command: Sequence[str] | None = None) -> dict[str, object]:
    """What a run ran on: the device, the CPU, library versions, the commit (and whether the
    code differed from it), and the command line (``fcnlib``'s arguments, ``command``) that
    reproduces it, where there was one."""
    commit, changed = source_version()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "git_commit": commit,
        "git_changed": changed,
        "command": None if command is None else f"python -m fcnlib {shlex.join(command)}",
    }


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``.

    The data is flushed to the disk (``fsync``) before the rename (``os.replace``, atomic on
    POSIX and Windows), and the rename itself is made durable where the system allows, so
    readers see the old file or the new one, never half, even after a crash. A new file gets
    the permissions the umask gives; a replaced one keeps its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
    try:
        os.chmod(temporary, mode)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files of earlier writes of ``path`` whose process has died (a
    ``kill -9`` mid-write leaves one behind); those of live processes are still being written."""
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temporary.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            temporary.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file's contents, by ``algorithm`` (a hashlib name)."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()


def check_writable(path: str | Path, option: str = "") -> Path:
    """Fail now rather than after the work if ``path`` cannot be written: make its folder and
    a temporary file in it. Raises OSError naming ``option`` (e.g. "--out") and ``path``."""
    path, name = Path(path), f"{option} {path}".strip()
    if path.is_dir():
        raise IsADirectoryError(f"{name} is a folder: give the path of a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise OSError(
            f"{name} cannot be written ({error.strerror}): choose a folder you can write to"
        ) from None
    return path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, creating its folder if needed."""
    atomic_write(path, lambda file: file.write(text.encode()))


def write_json(path: Path, record: dict[str, object]) -> None:
    """Write ``record`` as indented, strict JSON (no NaN or infinity, which standard parsers
    refuse), atomically."""
    try:
        text = json.dumps(record, indent=1, allow_nan=False)
    except ValueError as error:
        raise ValueError(
            f"{path} not written: the record holds NaN or infinity ({error})"
        ) from None
    write_text(path, text + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is not one raises ``ValueError`` naming it."""
    try:
        record = json.loads(Path(path).read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): delete it or restore it") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds no JSON object: delete it or restore it")
    return record


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write a CSV file with ``header`` and one line per row, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
