"""Checkpoints: atomic writes, weights-only loading, generator states that restore draws."""

import random

import numpy as np
import pytest
import torch

from fcnlib import checkpoint


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    checkpoint.save({"step": 1, "weights": torch.ones(3)}, path)

    def fail_midway(state, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_rng_state_loads_weights_only_and_restores_every_generator(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint.save({"rng": checkpoint.rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(()).item(), np.random.randn())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    checkpoint.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item(), np.random.randn()) == expected


def test_missing_and_damaged_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt does not exist"):
        checkpoint.load(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt cannot be read as tensors and plain values"):
        checkpoint.load(tmp_path / "junk.pt")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"config": object()}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError, match=r"unsafe\.pt cannot be read .* Python objects") as refused:
        checkpoint.load(tmp_path / "unsafe.pt")
    assert "weights_only" not in str(refused.value)  # no advice to load it unsafely
