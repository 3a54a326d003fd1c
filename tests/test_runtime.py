import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fcnlib
from fcnlib.runtime import REPO_ROOT


def test_mode_variable_overrides_the_default(monkeypatch):
    monkeypatch.setenv("FCNLIB_MODE", "full")
    assert fcnlib.mode() == "full" and not fcnlib.is_fast()
    monkeypatch.setenv("FCNLIB_MODE", " FAST ")
    assert fcnlib.mode() == "fast" and fcnlib.is_fast()


def test_mode_defaults_to_the_hardware(monkeypatch):
    monkeypatch.delenv("FCNLIB_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fcnlib.mode() == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fcnlib.mode() == "fast"


def test_bad_mode_names_the_variable(monkeypatch):
    monkeypatch.setenv("FCNLIB_MODE", "quick")
    try:
        fcnlib.mode()
    except ValueError as error:
        assert "FCNLIB_MODE='quick'" in str(error) and "'fast' or 'full'" in str(error)
    else:
        raise AssertionError("an unknown mode was accepted")


def test_data_root_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("FCNLIB_DATA_ROOT", raising=False)
    assert fcnlib.data_root() == REPO_ROOT / "data"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FCNLIB_DATA_ROOT", "somewhere")
    assert fcnlib.data_root() == tmp_path / "somewhere"


def test_device_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fcnlib.device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # as torchrun's rank 1 sets
    assert fcnlib.device() == fcnlib.device("auto") == torch.device("cuda", 1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_seeding_repeats_every_generator(seed):
    import random

    import numpy as np

    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    fcnlib.seed_everything(seed)
    first = draw()
    fcnlib.seed_everything(seed)
    assert draw() == first


def test_a_bare_import_reaches_every_module():
    import subprocess
    import sys

    probe = "import fcnlib; print(fcnlib.weights.DEFAULT, fcnlib.trunks.TAP_STRIDES['pool3'])"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert shown.stdout.split() == ["camvid-lite0-fcn8s", "8"], shown.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        fcnlib.nonsense  # noqa: B018
