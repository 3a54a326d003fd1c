"""The training loop: it learns, resumes bit for bit, stops cleanly on signals and on NaN."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from fcnlib import checkpoint, models
from fcnlib.classes import class_table
from fcnlib.runtime import process_group
from fcnlib.schedule import lr_factor, make_schedule
from fcnlib.train import (
    CPU_STEPS,
    PAPER_LR,
    Interrupted,
    NonFiniteLoss,
    TrainConfig,
    amp_dtype,
    fit,
    make_optimizer,
    recipe,
)

TABLE = class_table("camvid")


class TinySet(torch.utils.data.Dataset):
    """Random 24 x 32 images whose labels are a function of the pixel colours, some void.

    Each read flips the pair at random with torch's generator, as augmentation does, so the
    tests see whether the loop's data is repeatable.
    """

    def __init__(self, count: int = 12, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(count, 3, 24, 32, generator=generator)
        self.masks = (self.images[:, 0] > 0).long() + 2 * (self.images[:, 1] > 0.5).long()
        for index, mask in enumerate(self.masks):  # a different number of void rows in each
            mask[: index % 5] = TABLE.ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.rand(()) < 0.5:
            return self.images[index].flip(-1), self.masks[index].flip(-1)
        return self.images[index], self.masks[index]


def tiny_net(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    """Per-pixel scores from a 3 x 3 convolution; dropout makes the loop use torch's RNG."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Dropout2d(dropout),
        nn.Conv2d(16, TABLE.num_classes, 1),
    )


def tiny_config(**changes) -> TrainConfig:
    settings = dict(
        crop_size=None, lr=0.1, momentum=0.9, batch_size=4, steps=40, progress=False, seed=3
    )
    return TrainConfig(**{**settings, **changes})


def test_training_reduces_the_loss_and_validates():
    config = tiny_config(eval_interval=20)
    history = fit(tiny_net(), TinySet(), config, TABLE, val_data=TinySet(4, seed=1))
    assert len(history.loss) == config.steps
    first, last = sum(history.loss[:5]) / 5, sum(history.loss[-5:]) / 5
    assert last < 0.5 * first
    assert history.eval_steps == [20, 40]
    # Training time is recorded at each validation and in all, validation itself excluded.
    assert 0 < history.eval_seconds[0] < history.eval_seconds[1] <= history.seconds
    assert history.evals[-1]["mean_iu"] > history.evals[0]["mean_iu"]


@pytest.mark.parametrize(
    "changes",
    [
        dict(amp="bf16", channels_last=True),
        dict(optimizer="adamw", lr=0.01, schedule="poly", warmup_steps=5, class_weights=True),
        dict(micro_batch=1, loss="sum", lr=3e-5),
        dict(amp="fp16"),
    ],
    ids=["bf16-channels-last", "adamw-poly-warmup", "accumulation-sum-loss", "fp16-scaler"],
)
def test_training_options_learn_on_the_cpu(changes):
    weights = torch.linspace(0.5, 2.0, TABLE.num_classes) if changes.get("class_weights") else None
    history = fit(tiny_net(), TinySet(), tiny_config(**changes), TABLE, loss_weight=weights)
    assert all(math.isfinite(loss) for loss in history.loss)
    assert sum(history.loss[-5:]) < 0.7 * sum(history.loss[:5])


def test_accumulation_gives_the_gradient_of_the_whole_batch():
    # Micro-batches of 1 and a whole batch of 4 see the same images with the same augmentation
    # and normalise by the same pixel count, so the updates agree up to rounding.
    whole = tiny_net(dropout=0.0)
    fit(whole, TinySet(), tiny_config(steps=6), TABLE)
    parts = tiny_net(dropout=0.0)
    fit(parts, TinySet(), tiny_config(steps=6, micro_batch=1), TABLE)
    for a, b in zip(whole.parameters(), parts.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compiled_model_trains_alike_and_saves_plain_weights(tmp_path):
    # torch.compile takes some 15 s on a CPU even for this net: one test covers it.
    plain = fit(tiny_net(dropout=0.0), TinySet(), tiny_config(steps=4), TABLE)
    path = tmp_path / "compiled.pt"
    config = tiny_config(steps=4, compile=True, checkpoint=str(path))
    compiled = fit(tiny_net(dropout=0.0), TinySet(), config, TABLE)
    assert compiled.loss == pytest.approx(plain.loss, rel=1e-4)
    state = torch.load(path, weights_only=True)
    assert list(state["model"]) == list(tiny_net().state_dict())  # no "_orig_mod." prefix


def resumable_config(path: Path, **changes) -> TrainConfig:
    # 12 images in batches of 4: 3 steps an epoch, so a resumed run crosses epoch boundaries.
    settings = dict(
        steps=10,
        checkpoint=str(path),
        schedule="poly",
        warmup_steps=3,
        log_interval=1,
        deterministic=True,
    )
    return tiny_config(**{**settings, **changes})


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), f"{name} differs"


def stop_after(step: int):
    """A callback that interrupts the run after ``step`` steps (SIGINT, as Ctrl-C does)."""

    def callback(history):
        if history.steps[-1] == step:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def fit_until(step: int, model, data, config):
    """Run ``fit`` and stop it after ``step`` steps; return the checkpoint it saved."""
    with pytest.raises(Interrupted, match=f"after step {step}"):
        fit(model, data, config, TABLE, callback=stop_after(step))
    return checkpoint.load(config.checkpoint)


def test_a_run_stopped_after_k_steps_resumes_bit_for_bit(tmp_path):
    reference = tiny_net()
    full = fit(reference, TinySet(), resumable_config(tmp_path / "a.pt"), TABLE)
    path = tmp_path / "b.pt"
    first = fit_until(4, tiny_net(), TinySet(), resumable_config(path))
    assert len(first["history"]["loss"]) == 4 and first["step"] == 4
    resumed = tiny_net(seed=99)  # other initial weights: the checkpoint must replace them all
    second = fit(resumed, TinySet(), resumable_config(path), TABLE)
    assert_same_weights(reference, resumed)
    assert second.loss == full.loss
    assert second.lr == full.lr


def test_sigint_saves_a_checkpoint_and_the_run_resumes_exactly(tmp_path):
    path = tmp_path / "run.pt"
    reference = tiny_net()
    fit(reference, TinySet(), resumable_config(tmp_path / "reference.pt"), TABLE)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup
    with pytest.raises(Interrupted, match="SIGINT after step 5") as stopped:
        fit(tiny_net(), TinySet(), resumable_config(path), TABLE, callback=stop_after(5))
    assert stopped.value.step == 5 and stopped.value.path == str(path)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is restored
    resumed = tiny_net(seed=7)
    fit(resumed, TinySet(), resumable_config(path), TABLE)
    assert_same_weights(reference, resumed)


def test_resident_data_resumes_bit_for_bit(camvid_root, tmp_path):
    from fcnlib.data import CamVid
    from fcnlib.resident import ResidentDataset

    data = ResidentDataset(CamVid("train", root=camvid_root), limit=4)
    config = dict(crop_size=(32, 48), batch_size=2, steps=5, resident=True)
    reference = tiny_net()
    fit(reference, data, resumable_config(tmp_path / "a.pt", **config), TABLE)
    path = tmp_path / "b.pt"
    fit_until(3, tiny_net(), data, resumable_config(path, **config))
    resumed = tiny_net(seed=5)
    fit(resumed, data, resumable_config(path, **config), TABLE)
    assert_same_weights(reference, resumed)


def test_resuming_with_other_settings_names_the_setting(tmp_path):
    path = tmp_path / "run.pt"
    fit_until(2, tiny_net(), TinySet(), resumable_config(path))
    with pytest.raises(ValueError, match=r"written with lr=0\.1, but this run has lr=0\.2"):
        fit(tiny_net(), TinySet(), resumable_config(path, lr=0.2), TABLE)


class PoisonedAtCall(nn.Module):
    """A tiny net whose scores turn to NaN on the ``bad``-th forward pass."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.net, self.calls, self.bad = tiny_net(dropout=0.0), 0, bad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        scores = self.net(x)
        return scores * math.nan if self.calls == self.bad else scores


def test_a_non_finite_loss_stops_the_run_naming_the_step():
    model = PoisonedAtCall(bad=3)
    with pytest.raises(
        NonFiniteLoss, match=r"the loss became nan at step 3; the weights of step 2"
    ):
        fit(model, TinySet(), tiny_config(), TABLE)
    assert all(torch.isfinite(p).all() for p in model.parameters())


SIGTERM_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_train import TABLE, TinySet, resumable_config, tiny_net
from fcnlib.train import Interrupted, fit

def slow(history):
    print("step", history.steps[-1], flush=True)
    time.sleep(0.05)

try:
    fit(tiny_net(), TinySet(), resumable_config({path!r}, steps=100000), TABLE, callback=slow)
except Interrupted as stop:
    print(stop, flush=True)
    sys.exit(128 + stop.signum)
"""


def test_sigterm_from_outside_saves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    script = SIGTERM_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path))
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if line.startswith("step 3"):
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output
    state = torch.load(path, weights_only=True)
    assert state["step"] >= 3
    assert set(state) >= {"model", "optimizer", "schedule", "scaler", "rng", "config", "step"}
    assert TrainConfig.from_dict(state["config"]).steps == 100000


def test_schedule_without_warmup_is_torchs_polynomial_decay():
    params = [nn.Parameter(torch.zeros(1))]
    ours = make_schedule(torch.optim.SGD(params, lr=0.5), total_steps=20, power=0.9)
    theirs = torch.optim.lr_scheduler.PolynomialLR(
        torch.optim.SGD(params, lr=0.5), total_iters=20, power=0.9
    )
    for _ in range(20):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], rel=1e-12)
        ours.optimizer.step(), theirs.optimizer.step()
        ours.step(), theirs.step()


def test_warmup_rises_linearly_to_the_base_rate():
    factors = [lr_factor(step, 100, warmup_steps=4, kind="constant") for step in range(6)]
    assert factors == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert lr_factor(4, 100, warmup_steps=4, kind="poly") == 1.0
    assert lr_factor(100, 100, warmup_steps=4, kind="poly") == 0.0


def test_paper_recipes():
    assert PAPER_LR == {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-atonce": 1e-10}
    paper = recipe("paper", "fcn16s")
    assert (paper.lr, paper.momentum, paper.batch_size, paper.loss) == (1e-12, 0.99, 1, "sum")
    normalised = recipe("paper-normalised", "fcn8s")
    assert (normalised.lr, normalised.momentum, normalised.batch_size) == (1e-4, 0.9, 20)
    assert normalised.loss == "mean" and normalised.micro_batch == 1
    # Twenty images a step, so the same number of images as the paper's 100,000 steps.
    assert normalised.steps * normalised.batch_size == paper.steps
    modern = recipe("modern", "fcn8s", steps=10)
    assert (modern.backbone, modern.optimizer, modern.schedule, modern.steps) == (
        "vgg16_bn",
        "adamw",
        "poly",
        10,
    )


def test_the_cpu_recipe_is_the_modern_one_sized_for_two_cores():
    modern = recipe("modern", "fcn16s")
    cpu = {model: recipe("cpu", model) for model in CPU_STEPS}
    assert (cpu["fcn16s"].width, cpu["fcn16s"].batch_size) == (0.125, 8)
    for name in ("backbone", "optimizer", "schedule", "class_weights", "dataset"):
        assert getattr(cpu["fcn16s"], name) == getattr(modern, name), name
    # The staged nets start from a trained net and fine-tune it more gently.
    assert cpu["fcn16s"].lr == cpu["fcn8s"].lr < cpu["fcn32s"].lr == cpu["fcn8s-atonce"].lr
    assert [cpu[model].steps for model in CPU_STEPS] == list(CPU_STEPS.values())
    assert recipe("cpu", "fcn8s", steps=3, width=0.0625).steps == 3  # overrides win


def test_a_config_builds_the_net_it_names():
    config = TrainConfig(model="fcn16s", backbone="vgg16", width=0.0625, pad100=False)
    net = models.build(config.model, 11, **config.model_options())
    assert type(net) is models.FCN16s
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert (first.out_channels, first.padding) == (4, (1, 1))  # a sixteenth of 64; no pad100
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert TrainConfig(pretrained=True).model_options()["weights"] == "DEFAULT"
    assert TrainConfig().model_options()["weights"] is None


def test_amp_auto_is_bf16_only_where_the_device_multiplies_it_natively(monkeypatch):
    auto, cpu = TrainConfig(amp="auto"), torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert amp_dtype(auto, cpu) is None  # AVX2: emulated bf16 is slower than float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert amp_dtype(auto, cpu) is torch.bfloat16
    assert amp_dtype(auto, torch.device("cuda")) is torch.bfloat16
    assert amp_dtype(TrainConfig(amp="off"), torch.device("cuda")) is None


def test_biases_get_twice_the_rate_and_no_decay_in_the_paper_recipe():
    optimizer = make_optimizer(tiny_net(), recipe("paper", "fcn32s"))
    # the head's weights and biases, then the backbone's (none in a net without one)
    weights, biases, backbone_weights, backbone_biases = optimizer.param_groups
    assert (weights["lr"], weights["weight_decay"]) == (1e-10, 5e-4)
    assert (biases["lr"], biases["weight_decay"]) == (2e-10, 0.0)
    assert all(p.ndim == 1 for p in biases["params"])
    assert backbone_weights["params"] == backbone_biases["params"] == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(model="fcn4s"), "model must be one of fcn32s, fcn16s, fcn8s, fcn8s-atonce"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(momentum=1.0), r"momentum must lie in \[0, 1\)"),
        (dict(batch_size=4, micro_batch=3), "micro_batch \\(3\\) must divide batch_size \\(4\\)"),
        (dict(dataset="voc", crop_size=None, batch_size=2), "set micro_batch to 1"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_config_round_trips_through_a_weights_only_checkpoint(tmp_path):
    config = recipe("modern", "fcn8s-atonce", crop_size=(96, 128))
    checkpoint.save({"config": config.to_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["config"]
    assert TrainConfig.from_dict(loaded) == config
    assert dataclasses.replace(config, crop_size=[96, 128]).crop_size == (96, 128)


def test_a_set_smaller_than_a_batch_is_refused():
    with pytest.raises(ValueError, match="the training set has 3 images, fewer than batch_size 4"):
        fit(tiny_net(), TinySet(3), tiny_config(), TABLE)


def test_training_under_torchrun_needs_the_process_group(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it, but no group was joined
    with pytest.raises(RuntimeError, match=r"with fcnlib\.runtime\.process_group\(\)"):
        fit(tiny_net(), TinySet(), tiny_config(steps=1), TABLE)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with process_group():  # one process: nothing to join, nothing to leave
        assert not torch.distributed.is_initialized()
