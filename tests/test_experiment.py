import csv
import json

import matplotlib
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fcnlib
from fcnlib import checkpoint
from fcnlib.__main__ import main
from fcnlib.checkpoint import load_trained
from fcnlib.data import CamVid, read_label
from fcnlib.experiment import (
    STAGED_FROM,
    display_name,
    evaluation_frames,
    format_comparison,
    load_runs,
    plot_recorded_history,
    plot_time_to_accuracy,
    published_rows,
)
from fcnlib.predict import predict
from fcnlib.published import format_paper, published

matplotlib.use("Agg")

SLIM = ["--width", "0.0625", "--crop", "96x128", "--train-limit", "8", "--batch-size", "4"]
SLIM += ["--steps", "4", "--eval-interval", "2", "--val-limit", "1", "--no-class-weights"]
SLIM += ["--device", "cpu", "--amp", "off", "--limit", "3", "--predictions", "2", "--quiet"]


@pytest.fixture(scope="module")
def experiment(camvid_root, tmp_path_factory):
    """A slim CamVid experiment of every net, run once through the command line."""
    folder = tmp_path_factory.mktemp("experiment")
    argv = ["reproduce", *SLIM, "--runs", str(folder / "runs"), "--results", str(folder / "res")]
    return folder, argv


def run_cli(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


def test_reproduce_trains_in_stages_scores_and_records_every_net(experiment, capsys):
    folder, argv = experiment
    code, out = run_cli(argv, capsys)
    assert code == 0, out.err
    runs = load_runs("camvid", folder / "res")
    assert list(runs) == list(STAGED_FROM)
    trained = {m: checkpoint.load(folder / "runs" / f"camvid-{m}.pt") for m in STAGED_FROM}
    seconds = {m: state["history"]["seconds"] for m, state in trained.items()}
    test = CamVid("test")
    for model, run in runs.items():
        record = run.record
        assert (record["model"], record["split"], record["images"]) == (model, "test", 3)
        assert record["training"]["steps"] == 4 and record["training"]["seconds"] > 0
        assert record["environment"]["command"].startswith("python -m fcnlib reproduce")
        assert list(record["per_class_iu"]) == list(fcnlib.class_table("camvid").classes)
        assert record["stage"]["from"] == STAGED_FROM[model]
        # the clock of a staged net starts where its coarser nets' training ended
        before = {"fcn16s": seconds["fcn32s"], "fcn8s": seconds["fcn32s"] + seconds["fcn16s"]}
        assert record["stage"]["seconds_before"] == pytest.approx(before.get(model, 0.0))
        evals = trained[model]["history"]
        assert [row["step"] for row in run.history] == [2, 4] == evals["eval_steps"]
        assert [row["mean_iu"] for row in run.history] == pytest.approx(
            [e["mean_iu"] for e in evals["evals"]]
        )
        # the first and the last of the three scored frames
        stems = [test.pairs[i][0].stem for i in (0, 2)]
        assert [p.name for p in run.predictions] == [f"{stem}_predicted.png" for stem in stems]
        labels = read_label(run.predictions[-1], fcnlib.class_table("camvid"))
        net, _ = load_trained(folder / "runs" / f"camvid-{model}.pt")
        assert torch.equal(labels.as_subclass(torch.Tensor), predict(net, test[2][0]))
        # the table printed at the end holds every net's recorded score
        assert f"{100 * record['metrics']['mean_iu']:8.1f}" in out.out
    assert f"{'FCN-8s (ImageNet VGG16)':<42}    57.0" in out.out
    assert "Bicyclist" in out.out
    assert f"FCN-8s, at once: cpu, torch {torch.__version__}, commit " in out.out

    code, again = run_cli(argv, capsys)  # finished nets are scored again, not retrained
    assert code == 0 and again.out.count("already trained to step 4") == 4
    for model in STAGED_FROM:
        state = checkpoint.load(folder / "runs" / f"camvid-{model}.pt")
        assert torch.equal(
            state["model"]["score_fr.weight"], trained[model]["model"]["score_fr.weight"]
        )

    # FCN-8s alone: its coarser nets' training time comes from their checkpoints
    code, alone = run_cli([*argv, "--models", "fcn8s"], capsys)
    assert code == 0, alone.err
    record = load_runs("camvid", folder / "res")["fcn8s"].record
    assert record["stage"]["seconds_before"] == pytest.approx(seconds["fcn32s"] + seconds["fcn16s"])


def test_the_papers_setting_on_voc_prints_the_papers_numbers(
    voc_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("FCNLIB_DATA_ROOT", str(voc_root))
    argv = ["reproduce", "--recipe", "paper-normalised", "--models", "fcn32s", "fcn16s"]
    argv += ["--no-pretrained", "--width", "0.0625", "--batch-size", "2", "--steps", "1"]
    argv += ["--val-limit", "1", "--limit", "2", "--predictions", "1", "--device", "cpu"]
    argv += ["--quiet", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")]
    code, out = run_cli(argv, capsys)
    assert code == 0, out.err
    runs = load_runs("voc", tmp_path / "res")
    assert list(runs) == ["fcn32s", "fcn16s"]
    assert {run.record["split"] for run in runs.values()} == {"seg11valid"}
    assert runs["fcn16s"].record["training"]["config"]["momentum"] == 0.9  # the recipe's
    for model, run in runs.items():
        assert f"ours: {display_name(model)}" in out.out
        assert f"{100 * run.record['metrics']['mean_iu']:8.1f}" in out.out
    for who, value in published_rows("voc"):
        assert f"{who:<42}{value:8.1f}" in out.out


def test_a_staged_net_needs_its_coarser_checkpoint(camvid_root, tmp_path, capsys):
    argv = ["reproduce", *SLIM, "--models", "fcn16s", "--runs", str(tmp_path / "runs")]
    code, out = run_cli([*argv, "--results", str(tmp_path / "res")], capsys)
    assert code == 2
    assert "fcn16s starts from fcn32s's checkpoint" in out.err and "camvid-fcn32s.pt" in out.err
    assert not (tmp_path / "res").exists()


def test_comparison_without_runs_names_every_published_number():
    table = format_comparison({}, "voc")
    assert "ours: no run recorded in results/ yet" in table
    rows = published_rows("voc")
    assert [value for _, value in rows] == [59.4, 63.6, 62.4, 65.0, 62.7, 65.5, 65.4]
    for who, value in rows:
        assert f"{who:<42}{value:8.1f}" in table
    assert published("camvid")["ENet (from scratch)"] == 51.3
    with pytest.raises(ValueError, match="dataset must be camvid or voc; got 'cityscapes'"):
        published("cityscapes")
    with pytest.raises(ValueError, match="model must be one of fcn32s"):
        published("voc", "fcn4s")


def test_the_papers_table_holds_every_published_voc_number_once():
    lines = format_paper().splitlines()
    assert lines[3].split() == ["seg11valid", "fcn8s", "62.7", "65.5"]
    assert lines[4].split() == ["seg11valid", "fcn8s-atonce", "-", "65.4"]  # PAMI only
    assert lines[5].split() == ["VOC", "2012", "test", "fcn8s", "62.2", "67.2"]
    assert "features fixed: 45.4, fine-tuned: 59.4" in lines[6]
    assert lines[7].endswith("fcn32s 3, fcn16s 1, fcn8s 1")
    assert max(map(len, lines)) <= 88  # fits the book's column


def test_damaged_records_are_named(tmp_path):
    (tmp_path / "camvid-fcn8s.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"camvid-fcn8s\.json"):
        load_runs("camvid", tmp_path)
    assert load_runs("voc", tmp_path) == {}


def test_time_to_accuracy_puts_staged_nets_after_their_coarser_nets(tmp_path):
    record = {
        "metrics": {"mean_iu": 0.5},
        "training": {"seconds": 120.0},
        "stage": {"from": "fcn32s", "seconds_before": 60.0},
    }
    (tmp_path / "camvid-fcn16s.json").write_text(json.dumps(record))
    with open(tmp_path / "camvid-fcn16s-history.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerows([["step", "train_seconds", "mean_iu"], [10, 30.0, 0.2], [20, 120.0, 0.4]])
    runs = load_runs("camvid", tmp_path)
    assert runs["fcn16s"].minutes == 3.0
    ax = plot_time_to_accuracy(runs, "camvid")
    curve, star = ax.lines[:2]
    assert list(curve.get_xdata()) == [1.5, 3.0] and list(curve.get_ydata()) == [20.0, 40.0]
    assert list(star.get_xdata()) == [3.0] and list(star.get_ydata()) == [50.0]
    anchors = [line.get_ydata()[0] for line in ax.lines[2:]]
    assert anchors == list(published("camvid").values())
    empty = plot_time_to_accuracy({}, "camvid")
    assert [text.get_text() for text in empty.texts][-1] == "no run recorded in results/ yet"


@given(st.integers(-2, 12), st.integers(0, 300))
def test_evaluation_frames_spread_over_the_split(count, total):
    frames = evaluation_frames(count, total)
    assert len(frames) == max(0, min(count, total))
    assert all(0 <= i < total for i in frames) and frames == sorted(set(frames))
    if len(frames) >= 2:
        assert frames[0] == 0 and frames[-1] == total - 1
        assert np.diff(frames).max() - np.diff(frames).min() <= 1


def test_recorded_history_puts_each_step_at_its_minute_after_the_coarser_stages():
    history = {
        "steps": [1, 2, 3, 4],
        "loss": [4.0, 3.0, 2.0, 1.0],
        "eval_steps": [2, 4],
        "eval_seconds": [30.0, 90.0],
        "evals": [{"mean_iu": 0.1}, {"mean_iu": 0.3}],
    }
    record = {"history": history, "stage": {"seconds_before": 60.0}}
    loss_ax, iu_ax = plot_recorded_history({"fcn16s": record}, smooth=2)
    minutes, loss = loss_ax.lines[0].get_data()
    # step 2 is validated at 30 s, step 3 half-way to 90 s; 60 s of FCN-32s come first
    np.testing.assert_allclose(minutes, [1.5, 2.0, 2.5])
    np.testing.assert_allclose(loss, [3.5, 2.5, 1.5])
    minutes, ious = iu_ax.lines[0].get_data()
    np.testing.assert_allclose(minutes, [1.5, 2.5])
    np.testing.assert_allclose(ious, [10.0, 30.0])
