"""The trained nets that ship with fcnlib: checked on loading, and as good as their records say."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fcnlib import trunks, weights
from fcnlib.__main__ import main
from fcnlib.experiment import STAGED_FROM, ship
from fcnlib.records import file_digest
from fcnlib.scoring import score_checkpoint

TRANSFER = [f"camvid-lite0-{model}" for model in ("fcn32s", "fcn16s", "fcn8s")]
SHIPPED = [*TRANSFER, "camvid-fcn8s"]  # and the FCN-8s trained from scratch, to compare


@pytest.fixture(scope="module")
def slim_experiment(camvid_root, tmp_path_factory):
    """A slim FCN-32s and FCN-16s trained and recorded by `fcnlib reproduce`, then shipped
    into a temporary folder by `fcnlib weights --ship`."""
    folder = tmp_path_factory.mktemp("ship")
    argv = ["reproduce", "--recipe", "cpu", "--width", "0.0625", "--crop", "96x128"]
    argv += ["--train-limit", "8", "--steps", "2", "--val-limit", "1", "--limit", "2"]
    argv += ["--models", "fcn32s", "fcn16s", "--device", "cpu", "--quiet"]
    argv += ["--runs", str(folder / "runs"), "--results", str(folder / "results")]
    assert main(argv) == 0
    return folder


def test_ship_writes_float16_weights_scored_again(slim_experiment):
    folder, shipped = slim_experiment, slim_experiment / "trained"
    shipped.mkdir()
    nets = ship("camvid", ["fcn32s", "fcn16s"], folder / "runs", folder / "results", shipped)
    assert list(nets) == ["camvid-fcn32s", "camvid-fcn16s"]
    for name, net in nets.items():
        record = json.loads(net.path.with_suffix(".json").read_text())
        assert record["sha256"] == file_digest(net.path, "sha256")
        assert record["images"] == 233  # the whole test split, not reproduce's --limit 2
        assert record["history"]["steps"] == [1, 2]
        trained = torch.load(folder / "runs" / f"{name}.pt", weights_only=True)["model"]
        loaded = weights.state(name, shipped)["model"]
        assert loaded.keys() == trained.keys()
        for key, value in trained.items():
            expected = value.half().float() if value.is_floating_point() else value
            assert torch.equal(loaded[key], expected), key
        _, metrics, _ = score_checkpoint(weights.state(name, shipped), "test", device="cpu")
        assert metrics.compute()["mean_iu"] == pytest.approx(record["metrics"]["mean_iu"])
    assert "camvid-fcn16s" in weights.listing(shipped)


def test_an_altered_or_missing_weights_file_is_refused(slim_experiment, tmp_path):
    source = slim_experiment / "trained"
    if not source.is_dir():
        pytest.skip("needs test_ship_writes_float16_weights_scored_again first")
    folder = tmp_path / "trained"
    shutil.copytree(source, folder)
    path = folder / "camvid-fcn32s.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the sha256"):
        weights.state("camvid-fcn32s", folder)
    path.unlink()
    with pytest.raises(ValueError, match=r"camvid-fcn32s\.safetensors is missing"):
        weights.state("camvid-fcn32s", folder)


def test_an_unknown_name_lists_the_shipped_nets():
    with pytest.raises(ValueError, match=r"no trained net called .camvid-fcn4s.*camvid-fcn8s"):
        weights.get("camvid-fcn4s")
    with pytest.raises(FileNotFoundError, match="checkpoint camvid-fcn4s does not exist"):
        weights.read("camvid-fcn4s")


def test_the_shipped_nets_fit_the_size_limits_and_their_checksums():
    shipped = weights.available()
    assert list(shipped) == SHIPPED  # by backbone, coarsest first
    sizes = [net.path.stat().st_size for net in shipped.values()]
    assert max(sizes) <= 8e6 and sum(sizes) <= 32e6
    for net in shipped.values():
        assert net.record["sha256"] == file_digest(net.path, "sha256")
    assert shipped["camvid-fcn8s"].record["training"]["config"]["width"] == 0.125


def test_the_transfer_nets_record_their_imagenet_weights_and_intervals():
    for name in TRANSFER:
        record = weights.get(name).record
        config = record["training"]["config"]
        assert (config["backbone"], config["pretrained"]) == ("lite0", True)
        assert record["imagenet_weights"] == trunks.provenance("lite0")
        assert record["training"]["precision"] == "float32"
        low, high = record["mean_iu_interval"]
        assert low < record["metrics"]["mean_iu"] < high
        assert len(record["image_confusions"]) == record["images"] == 233


def test_staged_nets_improve_in_the_records():
    shipped = weights.available()
    scores = [shipped[name].mean_iu for name in TRANSFER]
    assert scores == sorted(scores), scores
    for model in ("fcn16s", "fcn8s"):
        stage = shipped[f"camvid-lite0-{model}"].record["stage"]
        assert stage["from"] == STAGED_FROM[model] and stage["seconds_before"] > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_net_reproduces_its_recorded_score_on_every_test_frame(name, camvid_root):
    net = weights.get(name)
    _, metrics, record = score_checkpoint(name, "test", device="cpu")
    assert record["images"] == net.record["images"] == 233
    assert 100 * metrics.compute()["mean_iu"] == pytest.approx(100 * net.mean_iu, abs=0.1)


def test_predict_uses_the_shipped_fcn8s_by_default(camvid_root, tmp_path, capsys):
    image = sorted((camvid_root / "test").iterdir())[0]
    assert main(["predict", str(image), "--out", str(tmp_path), "--device", "cpu"]) == 0
    labels = np.array(Image.open(tmp_path / f"{image.stem}.png"))
    assert labels.shape == (360, 480)
    assert len(np.unique(labels)) >= 4  # a street scene: road, sky, buildings, ...
    assert main(["weights"]) == 0
    assert "camvid-lite0-fcn8s" in capsys.readouterr().out
