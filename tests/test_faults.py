"""Bad input and faults: nothing lost or overwritten, one line that says what to do, no NaN."""

import json
import math
import os
import pickle

import pytest
import torch
from PIL import Image

from fcnlib import models
from fcnlib.__main__ import main
from fcnlib.data import CamVid
from fcnlib.predict import evaluate, prediction_paths, save_labels, written_by_fcnlib
from fcnlib.records import atomic_write, check_writable, write_json
from fcnlib.train import TrainConfig

TABLE_ARGS = ["--device", "cpu"]


def one_line_error(argv, capsys) -> str:
    """Run the command line; it must fail with status 2 and one line naming the problem."""
    try:
        status = main(argv)
    except SystemExit as done:  # argparse's own errors
        status = done.code
    errors = capsys.readouterr().err
    assert status == 2, errors
    assert "Traceback" not in errors
    return errors.strip().splitlines()[-1]


@pytest.fixture
def slim_checkpoint(tmp_path):
    """An untrained slim FCN-8s saved as `fcnlib train` saves it."""
    config = TrainConfig(width=0.0625, backbone="vgg16_bn", crop_size=(96, 128))
    model = models.build("fcn8s", 11, backbone="vgg16_bn", width=0.0625)
    path = tmp_path / "slim.pt"
    state = {"config": config.to_dict(), "model": model.state_dict(), "num_classes": 11}
    torch.save({**state, "step": 0, "history": {}, "dataset": "camvid"}, path)
    return path


def photo(path, size=(64, 48)):
    Image.new("RGB", size, (90, 120, 200)).save(path)
    return path


def test_predict_never_writes_over_its_input(tmp_path, slim_checkpoint, capsys):
    street = photo(tmp_path / "street.png")
    before = street.read_bytes()
    argv = ["predict", str(street), "--checkpoint", str(slim_checkpoint), "--out", str(tmp_path)]
    line = one_line_error([*argv, *TABLE_ARGS, "--overwrite"], capsys)
    assert "would replace the input image" in line and "--out" in line
    assert street.read_bytes() == before


def test_predict_refuses_two_images_with_one_stem(tmp_path):
    images = [photo(tmp_path / "x.jpg"), photo(tmp_path / "x.png")]
    with pytest.raises(ValueError, match=r"x\.jpg and .*x\.png would both be written"):
        prediction_paths(images, tmp_path / "out")


def test_predict_replaces_its_own_outputs_but_no_other_file(tmp_path, slim_checkpoint, capsys):
    street, out = photo(tmp_path / "street.jpg"), tmp_path / "out"
    argv = ["predict", str(street), "--checkpoint", str(slim_checkpoint), "--out", str(out)]
    assert main([*argv, *TABLE_ARGS]) == 0
    assert written_by_fcnlib(out / "street.png") and written_by_fcnlib(out / "street_overlay.png")
    assert main([*argv, *TABLE_ARGS]) == 0  # an earlier output of fcnlib: replaced
    photo(out / "street.png")  # the user's own picture, where an output would go
    mine = (out / "street.png").read_bytes()
    line = one_line_error([*argv, *TABLE_ARGS], capsys)
    assert "exists and was not written by fcnlib" in line and "--overwrite" in line
    assert (out / "street.png").read_bytes() == mine
    assert main([*argv, *TABLE_ARGS, "--overwrite"]) == 0
    assert written_by_fcnlib(out / "street.png")


def test_labels_written_by_fcnlib_are_marked(tmp_path):
    path = save_labels(torch.zeros(4, 5, dtype=torch.int64), _camvid(), tmp_path / "l.png")
    assert written_by_fcnlib(path)
    assert not written_by_fcnlib(photo(tmp_path / "other.png"))
    assert not written_by_fcnlib(tmp_path / "missing.png")


def _camvid():
    from fcnlib.classes import class_table

    return class_table("camvid")


def test_an_empty_split_is_an_error_naming_its_folder(tmp_path):
    for folder in ("test", "testannot"):
        (tmp_path / folder).mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'test'} and .* hold no images"):
        CamVid("test", root=tmp_path)
    with pytest.raises(ValueError, match="nothing to score"):
        evaluate(torch.nn.Conv2d(3, 11, 1), [], _camvid())


def test_json_records_are_strict(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinity"):
        write_json(tmp_path / "r.json", {"mean_iu": math.nan})
    assert not (tmp_path / "r.json").exists()
    write_json(tmp_path / "r.json", {"mean_iu": 0.5, "absent": None})
    assert json.loads((tmp_path / "r.json").read_text()) == {"mean_iu": 0.5, "absent": None}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--device", "nonsense"], "--device 'nonsense' is not a device"),
        (["evaluate", "x.pt", "--device", "tpu"], "--device 'tpu' is not a device"),
        (["train", "--width", "inf"], "'inf' is not a positive float"),
        (["train", "--warmup", "-5"], "'-5' is not a non-negative int"),
        (["train", "--eval-interval", "-1"], "'-1' is not a non-negative int"),
        (["train", "--checkpoint-interval", "-1"], "'-1' is not a non-negative int"),
        (["train", "--weight-decay", "-1"], "'-1' is not a non-negative float"),
        (["train", "--weight-decay", "nan"], "'nan' is not a non-negative float"),
        (["reproduce", "--predictions", "-1"], "'-1' is not a non-negative int"),
        (["bench", "--sizes", "none"], "'none' is not a fixed size"),
    ],
)
def test_bad_options_get_one_line_naming_them(argv, message, capsys):
    line = one_line_error(argv, capsys)
    assert message in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", [["train"], ["evaluate", "x.pt"], ["bench"]])
def test_a_gpu_that_is_not_there_gets_one_line(command, capsys):
    line = one_line_error([*command, "--device", "cuda"], capsys)
    assert "this machine has no CUDA GPU; use --device cpu" in line


def test_foreign_and_mismatched_checkpoints_get_one_line(tmp_path, slim_checkpoint, capsys):
    plain = tmp_path / "plain.pt"
    torch.save(models.build("fcn32s", 11, width=0.0625).state_dict(), plain)
    line = one_line_error(["evaluate", str(plain), *TABLE_ARGS], capsys)
    assert f"checkpoint {plain} is not an fcnlib checkpoint" in line
    state = torch.load(slim_checkpoint, weights_only=True)
    state["config"]["width"] = 0.125  # weights of width 1/16 under settings of width 1/8
    mismatched = tmp_path / "mismatched.pt"
    torch.save(state, mismatched)
    line = one_line_error(["evaluate", str(mismatched), *TABLE_ARGS], capsys)
    assert f"checkpoint {mismatched}: its weights do not fit its settings" in line
    state["config"]["colour"] = "blue"  # a setting no version of fcnlib had
    torch.save(state, mismatched)
    line = one_line_error(["evaluate", str(mismatched), *TABLE_ARGS], capsys)
    assert f"checkpoint {mismatched} holds settings fcnlib cannot use" in line
    assert "unknown configuration keys ['colour']" in line


def test_checkpoint_messages_name_the_file_and_never_advise_unsafe_loading(tmp_path, capsys):
    line = one_line_error(["evaluate", str(tmp_path), *TABLE_ARGS], capsys)
    assert f"checkpoint {tmp_path} is a folder" in line
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"config": os.getcwd}))  # a pickle that names a function
    line = one_line_error(["evaluate", str(pickled), *TABLE_ARGS], capsys)
    assert "which fcnlib does not load" in line and "weights_only" not in line


def test_predict_names_folders_and_non_images(tmp_path, slim_checkpoint, capsys):
    argv = ["predict", "--checkpoint", str(slim_checkpoint), "--out", str(tmp_path / "o")]
    line = one_line_error([*argv, str(tmp_path), *TABLE_ARGS], capsys)
    assert f"image {tmp_path} is a folder" in line
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    line = one_line_error([*argv, str(notes), *TABLE_ARGS], capsys)
    assert f"cannot read image {notes}" in line and "give a JPEG or PNG photo" in line
    assert "download the dataset" not in line


def test_outputs_are_checked_before_the_work(camvid_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"--out .* cannot be written"):
        check_writable(blocker / "scores.json", "--out")
    argv = ["train", "--checkpoint", str(blocker / "run.pt"), "--steps", "1", *TABLE_ARGS]
    argv += ["--width", "0.0625", "--train-limit", "8", "--no-class-weights"]
    assert "--checkpoint" in one_line_error(argv, capsys)  # before the first step
    argv = ["bench", "--out", str(blocker / "bench.json"), *TABLE_ARGS]
    assert "--out" in one_line_error(argv, capsys)


def test_a_save_removes_temporaries_that_a_killed_save_left(tmp_path):
    target = tmp_path / "run.pt"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / f".run.pt.{dead}.x1y2.tmp"
    live = tmp_path / f".run.pt.{os.getpid()}.a9b8.tmp"  # a save in progress
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    atomic_write(target, lambda file: file.write(b"whole"))
    assert target.read_bytes() == b"whole"
    assert not stale.exists() and live.exists()
