"""The command line: help a newcomer can read, one-line errors, and train -> evaluate -> predict."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fcnlib
from fcnlib.__main__ import main


@pytest.mark.parametrize(
    "command",
    ["download", "train", "evaluate", "predict", "reproduce", "sweep", "weights", "bench"],
)
def test_help_explains_and_gives_examples(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"fcnlib {command}" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--crop", "wide"], "'wide' is not a size"),
        (["train", "--lr", "-1"], "'-1' is not a positive float"),
        (["train", "--model", "fcn4s"], "invalid choice: 'fcn4s'"),
        (["evaluate", "missing.pt"], "checkpoint missing.pt does not exist"),
        (["predict", "nowhere.jpg", "--checkpoint", "x.pt"], "image nowhere.jpg does not exist"),
        (["train", "--recipe", "paper", "--micro-batch", "2", "--batch-size", "2"], "micro_batch"),
        (["train", "--recipe", "paper", "--steps", "1"], "download it with `python -m fcnlib"),
        (["reproduce", "--models", "fcn4s"], "invalid choice: 'fcn4s'"),
        (["reproduce", "--steps", "1"], "download it with `python -m fcnlib download camvid`"),
    ],
)
def test_bad_input_gets_one_line_and_exit_status_2(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FCNLIB_DATA_ROOT", str(tmp_path))  # no dataset there
    monkeypatch.chdir(tmp_path)  # nor checkpoints in the default runs/
    try:
        status = main(argv)
    except SystemExit as done:  # argparse's own errors
        status = done.code
    assert status == 2
    errors = capsys.readouterr().err
    assert message in errors
    assert "Traceback" not in errors
    assert errors.strip().splitlines()[-1].startswith(("fcnlib", "usage"))


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("fcnlib")
    script = str(script) if script.exists() else shutil.which("fcnlib")
    result = subprocess.run([script, "predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "palette PNG" in result.stdout


def test_train_evaluate_predict_end_to_end(camvid_root, tmp_path, capsys):
    run = tmp_path / "slim.pt"
    argv = ["train", "--width", "0.0625", "--crop", "96x128", "--train-limit", "8"]
    argv += ["--val-limit", "1", "--batch-size", "4", "--steps", "3", "--no-class-weights"]
    argv += ["--device", "cpu", "--amp", "off", "--checkpoint", str(run), "--quiet"]
    assert main(argv) == 0
    assert "step 3: loss" in capsys.readouterr().out
    state = torch.load(run, weights_only=True)
    assert state["step"] == 3 and state["config"]["width"] == 0.0625

    assert main(argv) == 0  # a finished run is not trained again
    assert "already trained to step 3" in capsys.readouterr().out

    record, history = tmp_path / "results" / "run.json", tmp_path / "results" / "history.csv"
    argv = ["evaluate", str(run), "--limit", "2", "--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(record), "--history", str(history)]) == 0
    report = capsys.readouterr().out
    assert "fcn8s on camvid test, 2 images" in report
    assert "mean iu" in report and "Bicyclist" in report
    saved = json.loads(record.read_text())
    assert (saved["model"], saved["split"], saved["images"]) == ("fcn8s", "test", 2)
    assert f"{100 * saved['metrics']['mean_iu']:.1f}" in report  # the printed scores, recorded
    assert list(saved["per_class_iu"]) == list(fcnlib.class_table("camvid").classes)
    training = saved["training"]
    assert training["steps"] == 3 and training["seconds"] > 0
    assert training["images_per_second"] == pytest.approx(3 * 4 / training["seconds"])
    assert saved["environment"]["device"] == "cpu"
    with open(history) as file:
        rows = list(csv.DictReader(file))
    assert [int(row["step"]) for row in rows] == [3]  # validated once, at the end
    assert 0 < float(rows[0]["train_seconds"]) <= training["seconds"]
    assert float(rows[0]["mean_iu"]) == pytest.approx(state["history"]["evals"][0]["mean_iu"])

    image = next((camvid_root / "test").iterdir())
    out = tmp_path / "predictions"
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(out)]) == 0
    labels = Image.open(out / f"{image.stem}.png")
    assert labels.mode == "P" and labels.size == (480, 360)
    assert np.array(labels).max() < 11  # class ids, not colours
    assert Image.open(out / f"{image.stem}_overlay.png").mode == "RGB"


def test_train_options_are_the_config_fields_with_a_help_text(capsys):
    import dataclasses

    from fcnlib.config import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        if field.name == "checkpoint":  # train's own --checkpoint, with a default path
            continue
        flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
        assert (f"{flag} " in text or f"{flag}," in text) == ("help" in field.metadata), flag
        if field.metadata.get("choices"):  # the choices the config checks are the CLI's
            assert "{" + ",".join(field.metadata["choices"]) + "}" in text, flag
