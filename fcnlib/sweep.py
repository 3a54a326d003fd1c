"""Choosing a recipe by measurement: validation mean IU per CPU-minute.

A choice such as the crop size, the class weighting or the input padding changes both how much
a net learns per step and how long a step takes. :func:`sweep` compares choices at equal cost:
each variant of a recipe is timed over a few warm steps, given as many steps as fit in the same
budget of training minutes (its learning-rate schedule spread over them), trained, and scored
on the validation split. The test split is never looked at: it is scored only for the nets that
ship. ``fcnlib sweep`` is its command line; the training chapter shows the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from fcnlib import models, train
from fcnlib.records import check_writable, environment, read_json, write_json
from fcnlib.runtime import device

#: Each variant's changes to the recipe; "recipe" is the recipe itself. A variant that changes
#: nothing in a recipe is skipped; the last three are for the transfer recipe.
VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "no class weights": {"class_weights": False},
    "176x240 crops": {"crop_size": (176, 240)},
    "no 100-pixel padding": {"pad100": False},
    "batch 4": {"batch_size": 4},
    "peak rate 2e-3": {"lr": 2e-3},
    "class weights": {"class_weights": True},
    "352x480 crops": {"crop_size": (352, 480)},
    "trunk at the head's rate": {"backbone_lr_mult": 1.0},
}


def slug(variant: str) -> str:
    """The variant's name as a file name: "176x240 crops" -> "176x240-crops"."""
    return re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")


def seconds_per_step(config: train.TrainConfig, pilot: int = 4) -> float:
    """Seconds of one training step of ``config``: the mean over ``pilot`` steps, timed after
    two untimed ones (which allocate memory and choose kernels)."""
    quick = replace(
        config,
        schedule="constant",
        warmup_steps=0,
        checkpoint=None,
        progress=False,
        eval_interval=0,
        checkpoint_interval=0,
    )
    data, _, table = train.load_data(quick, device(config.device))
    model = models.build(quick.model, table.num_classes, **quick.model_options())
    train.fit(model, data, replace(quick, steps=2), table)
    return train.fit(model, data, replace(quick, steps=pilot), table).seconds / pilot


def sweep(
    recipe_name: str = "cpu",
    *,
    model: str = "fcn32s",
    minutes: float = 8.0,
    variants: Iterable[str] = tuple(VARIANTS),
    overrides: dict[str, Any] | None = None,
    out: str | Path = "results/sweep-cpu.json",
    checkpoint_folder: str | Path = "runs/sweep",
    pilot: int = 4,
    say: Callable[[str], None] = print,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``minutes`` of training with each of ``variants`` of recipe
    ``recipe_name`` (changed first by ``overrides``) and record each one's validation scores.

    The record at ``out`` (JSON) holds the environment and, per variant, its changes, seconds
    per step, steps, training minutes measured, and validation mean IU and pixel accuracy (in
    [0, 1]). It is written after each variant; run again, finished variants are kept and an
    interrupted one resumes from its checkpoint in ``checkpoint_folder``. Returns the record.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    if minutes <= 0:
        raise ValueError(f"--minutes must be positive, got {minutes}")
    out, checkpoint_folder = Path(out), Path(checkpoint_folder)
    check_writable(out, "--out")
    settings = dict(recipe=recipe_name, model=model, minutes=minutes, overrides=overrides or {})
    record = read_json(out) if out.exists() else {}
    if record and {k: record.get(k) for k in settings} != _plain(settings):
        raise ValueError(
            f"{out} holds a sweep with other settings ({', '.join(settings)}): "
            "choose another --out, or delete it to start again"
        )
    record = {**record, **_plain(settings), "variants": record.get("variants", {})}
    baseline = train.recipe(recipe_name, model, **(overrides or {}))
    for variant in variants:
        if variant in record["variants"]:
            continue
        config = train.recipe(recipe_name, model, **{**(overrides or {}), **VARIANTS[variant]})
        if variant != "recipe" and config == baseline:
            say(f"{variant}: the recipe already has it; skipped")
            continue
        each = seconds_per_step(config, pilot)
        steps = max(1, round(60 * minutes / each))
        config = replace(
            config,
            steps=steps,
            warmup_steps=min(config.warmup_steps, steps // 10),
            eval_interval=0,
            checkpoint=str(check_writable(checkpoint_folder / f"{slug(variant)}.pt", "--runs")),
            progress=False,
        )
        say(f"{variant}: {each:.2f} s a step, {steps} steps")
        history = train.start_or_resume(config, say=say)
        scores = history.evals[-1]
        record["variants"][variant] = {
            "changes": _plain(VARIANTS[variant]),
            "seconds_per_step": each,
            "steps": steps,
            "train_minutes": history.seconds / 60,
            "val_mean_iu": scores["mean_iu"],
            "val_pixel_accuracy": scores["pixel_accuracy"],
        }
        record["environment"] = environment(device(config.device), command)
        write_json(out, record)
        say(f"{variant}: validation mean IU {100 * scores['mean_iu']:.1f} % -> {out}")
    return record


def format_sweep(record: dict[str, Any]) -> str:
    """The sweep as a table, best validation mean IU first."""
    rows = sorted(record["variants"].items(), key=lambda item: -item[1]["val_mean_iu"])
    width = max(len("variant"), *(len(name) for name, _ in rows)) + 1
    changed = "".join(f", {k}={_text(v)}" for k, v in record["overrides"].items())
    lines = [
        f"{record['model']}, {record['recipe']} recipe{changed}, {record['minutes']:g} training"
        " minutes each",
        f"{'variant':<{width}}{'s/step':>7}{'steps':>6}{'min':>6}{'val mIU':>9}{'pix acc':>9}",
    ]
    for name, row in rows:
        lines.append(
            f"{name:<{width}}{row['seconds_per_step']:>7.2f}{row['steps']:>6}"
            f"{row['train_minutes']:>6.1f}{100 * row['val_mean_iu']:>9.1f}"
            f"{100 * row['val_pixel_accuracy']:>9.1f}"
        )
    return "\n".join(lines)


def _text(value: Any) -> str:
    """A setting as the command line writes it: [352, 480] -> "352x480"."""
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def _plain(values: Any) -> Any:
    """``values`` as JSON reads it back (tuples become lists)."""
    if isinstance(values, dict):
        return {k: _plain(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)):
        return [_plain(v) for v in values]
    return values
