"""Choosing a recipe by measurement: variants trained for equal minutes, scored on validation."""

import json

import pytest

from fcnlib.__main__ import main
from fcnlib.records import read_json
from fcnlib.runtime import REPO_ROOT
from fcnlib.sweep import VARIANTS, format_sweep, slug, sweep
from fcnlib.train import recipe

SLIM = dict(width=0.0625, crop_size=(64, 96), train_limit=8, val_limit=1, batch_size=4)
SLIM.update(resident=False, device="cpu")


def slim_sweep(folder, said, variants):
    """Two slim variants for 0.02 minutes each, recorded in ``folder``."""
    return sweep(
        model="fcn32s",
        minutes=0.02,
        variants=variants,
        overrides=SLIM,
        out=folder / "sweep.json",
        checkpoint_folder=folder / "runs",
        pilot=2,
        say=said.append,
    )


def test_each_variant_gets_the_steps_its_measured_speed_allows(camvid_root, tmp_path):
    out, said = tmp_path / "sweep.json", []
    variants = ["recipe", "176x240 crops"]
    record = slim_sweep(tmp_path, said, variants)
    assert json.loads(out.read_text()) == record
    assert list(record["variants"]) == variants
    for name in variants:
        row = record["variants"][name]
        assert row["steps"] == max(1, round(60 * 0.02 / row["seconds_per_step"]))
        assert 0 <= row["val_mean_iu"] <= row["val_pixel_accuracy"] <= 1
        assert row["train_minutes"] > 0
        assert (tmp_path / "runs" / f"{slug(name)}.pt").is_file()
    # The larger crop costs more a step, so it gets fewer steps in the same minutes.
    rows = record["variants"]
    assert rows["176x240 crops"]["seconds_per_step"] > rows["recipe"]["seconds_per_step"]
    assert rows["176x240 crops"]["changes"] == {"crop_size": [176, 240]}
    # Run again: finished variants are kept, not trained again.
    said.clear()
    assert slim_sweep(tmp_path, said, variants) == record and said == []
    table = format_sweep(record).splitlines()
    best = max(rows, key=lambda name: rows[name]["val_mean_iu"])
    assert table[2].startswith(best)


def test_a_sweep_with_other_settings_is_not_mixed_into_a_record(tmp_path):
    out = tmp_path / "sweep.json"
    out.write_text(json.dumps({"recipe": "cpu", "model": "fcn8s", "minutes": 8.0}))
    with pytest.raises(ValueError, match="holds a sweep with other settings"):
        sweep(model="fcn32s", variants=["recipe"], out=out)
    out.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        sweep(model="fcn32s", variants=["recipe"], out=out)


def test_variants_are_named_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["sweep", "--variants", "bigger net"])
    assert refused.value.code == 2
    assert "invalid choice: 'bigger net'" in capsys.readouterr().err


def test_every_variant_changes_only_settings_a_config_has():
    from dataclasses import fields

    from fcnlib.config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    for variant, changes in VARIANTS.items():
        assert set(changes) <= names, variant
    assert VARIANTS["recipe"] == {}


def test_the_cpu_recipe_has_the_change_its_sweep_measured_best():
    record = read_json(REPO_ROOT / "results" / "sweep-cpu.json")
    rows = record["variants"]
    winner = max(rows, key=lambda name: rows[name]["val_mean_iu"])
    assert winner != "recipe"
    config = recipe(record["recipe"], record["model"])
    for name, value in rows[winner]["changes"].items():
        assert json.loads(json.dumps(getattr(config, name))) == value, name
    assert "cpu recipe, crop_size=352x480, 8 training" in format_sweep(record).splitlines()[0]


def test_a_variant_the_recipe_already_has_is_not_trained_again(tmp_path):
    said = []
    record = sweep(
        model="fcn32s",
        variants=["176x240 crops"],
        overrides={**SLIM, "crop_size": (176, 240)},
        out=tmp_path / "sweep.json",
        say=said.append,
    )
    assert record["variants"] == {}
    assert said == ["176x240 crops: the recipe already has it; skipped"]
