"""The transfer recipe: an ImageNet trunk made an FCN and fine-tuned, with the paper's controls."""

import pytest
import torch

from fcnlib import checkpoint, models
from fcnlib.__main__ import main
from fcnlib.config import TRANSFER_STEPS, recipe
from fcnlib.experiment import load_runs
from fcnlib.train import make_optimizer

TINY = ["--crop", "64x96", "--train-limit", "8", "--batch-size", "4", "--steps", "2"]
TINY += ["--val-limit", "1", "--device", "cpu", "--quiet"]


def test_the_recipe_fine_tunes_the_imagenet_trunk_more_gently_than_the_head():
    config = recipe("transfer", "fcn32s")
    assert (config.backbone, config.pretrained, config.amp) == ("lite0", True, "off")
    assert config.steps == TRANSFER_STEPS["fcn32s"]
    net = models.build("fcn32s", 11, backbone="lite0")
    groups = make_optimizer(net, config).param_groups
    trunk = {id(p) for p in net.backbone.parameters()}
    for group in groups:
        inside = {id(p) in trunk for p in group["params"]}
        assert len(inside) == 1  # a group holds trunk or head parameters, not both
        mult = config.backbone_lr_mult if inside == {True} else 1.0
        bias = config.bias_lr_mult if group["params"][0].ndim == 1 else 1.0
        assert group["lr"] == pytest.approx(config.lr * mult * bias)


def test_reproduce_trains_the_staged_transfer_nets(camvid_root, tmp_path):
    argv = ["reproduce", "--recipe", "transfer", "--models", "fcn32s", "fcn16s", *TINY]
    argv += ["--limit", "2", "--predictions", "1"]
    argv += ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert main(argv) == 0
    runs = load_runs("camvid", tmp_path / "results", backbone="lite0")
    assert list(runs) == ["fcn32s", "fcn16s"]
    record = runs["fcn16s"].record
    assert record["training"]["precision"] == "float32"
    low, high = record["mean_iu_interval"]
    assert low <= record["metrics"]["mean_iu"] <= high
    assert (tmp_path / "runs" / "camvid-lite0-fcn16s.pt").is_file()


def test_fixed_features_train_the_score_layer_alone(camvid_root, tmp_path):
    run = tmp_path / "fixed.pt"
    argv = ["train", "--recipe", "transfer", "--model", "fcn32s", "--fixed-backbone", *TINY]
    assert main([*argv, "--checkpoint", str(run)]) == 0
    trained = checkpoint.load(run)["model"]
    start = models.build("fcn32s", 11, backbone="lite0", weights="DEFAULT").state_dict()
    trunk = [key for key in start if key.startswith("backbone.")]
    assert trunk and all(torch.equal(trained[key], start[key]) for key in trunk)  # BN stats too
    assert trained["score_fr.weight"].abs().sum() > 0  # zero at start


def test_a_net_goes_on_training_from_one_like_it():
    torch.manual_seed(0)
    trained = models.build("fcn32s", 3, width=0.0625)
    torch.nn.init.normal_(trained.score_fr.weight)
    again = models.init_from(models.build("fcn32s", 3, width=0.0625), trained)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(image), trained.eval()(image))
