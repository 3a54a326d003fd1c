import csv
import json
import os
import re

import pytest
import torch

from fcnlib import records


def test_json_and_csv_are_written_whole(tmp_path):
    records.write_json(tmp_path / "a" / "run.json", {"mean_iu": 0.5, "classes": ["Sky"]})
    assert json.loads((tmp_path / "a" / "run.json").read_text()) == {
        "mean_iu": 0.5,
        "classes": ["Sky"],
    }
    records.write_csv(tmp_path / "h.csv", ["step", "loss"], [(1, 2.5), (2, 1.25)])
    with open(tmp_path / "h.csv") as file:
        assert list(csv.reader(file)) == [["step", "loss"], ["1", "2.5"], ["2", "1.25"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "h.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    records.write_json(path, {"version": 1})

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        records.write_json(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_new_files_get_the_umask_permissions_and_replaced_ones_keep_theirs(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_UMASK", 0o027)  # as read from the process at import
    records.write_json(tmp_path / "new.json", {})
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640
    (tmp_path / "new.json").chmod(0o604)
    records.write_json(tmp_path / "new.json", {"again": True})
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o604


def test_environment_names_the_machine_the_versions_and_the_commit():
    found = records.environment(torch.device("cpu"), ["evaluate", "runs/a b.pt"])
    assert found["device"] == "cpu" and found["torch"] == torch.__version__
    assert found["processor"] and found["cpu_count"] >= 1
    assert re.fullmatch(r"[0-9a-f]{40}", found["git_commit"])
    assert found["command"] == "python -m fcnlib evaluate 'runs/a b.pt'"
    assert records.environment(torch.device("cpu"))["command"] is None


def test_source_version_from_git_or_from_the_variable_in_a_copy(tmp_path, monkeypatch):
    import subprocess

    git = ["git", "-C", str(records.REPO_ROOT)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run([*git, "diff", "HEAD", "--quiet"]).returncode == 1
    assert records.source_version() == (head.stdout.strip(), changed)
    monkeypatch.setattr(records, "REPO_ROOT", tmp_path)  # a copy of the code without .git
    monkeypatch.setenv("FCNLIB_GIT_COMMIT", "0123abc")
    assert records.source_version() == ("0123abc", None)
    monkeypatch.delenv("FCNLIB_GIT_COMMIT")
    assert records.source_version() == (None, None)


def test_history_rows_pair_each_validation_with_its_step_time_and_loss():
    from fcnlib.scoring import history_rows

    history = {
        "steps": [1, 2, 3, 4],
        "loss": [2.0, 1.5, 1.25, 1.0],
        "eval_steps": [2, 4],
        "eval_seconds": [0.5, 1.25],
        "evals": [{"mean_iu": 0.1, "pixel_accuracy": 0.4}, {"mean_iu": 0.2, "pixel_accuracy": 0.5}],
    }
    header, rows = history_rows(history)
    assert header == ["step", "train_seconds", "loss", "mean_iu", "pixel_accuracy"]
    assert rows == [[2, 0.5, 1.5, 0.1, 0.4], [4, 1.25, 1.0, 0.2, 0.5]]


def test_evaluation_record_keeps_absent_classes_as_none():
    from fcnlib import class_table
    from fcnlib.metrics import SegmentationMetrics
    from fcnlib.scoring import evaluation_record

    table = class_table("camvid")
    metrics = SegmentationMetrics(table.num_classes, table.ignore_index)
    metrics.update(torch.tensor([[0, 0, 3]]), torch.tensor([[0, 3, 3]]))
    state = {"config": {"model": "fcn8s", "dataset": "camvid", "batch_size": 4}, "step": 10}
    state["history"] = {"seconds": 2.0}
    record = evaluation_record(state, metrics, table, "test", 1)
    assert record["per_class_iu"]["Sky"] == 0.5 and record["per_class_iu"]["Road"] == 0.5
    assert record["per_class_iu"]["Car"] is None  # in neither labels nor predictions
    assert record["metrics"]["pixel_accuracy"] == pytest.approx(2 / 3)
    assert record["training"]["images_per_second"] == 20.0
    json.dumps(record, allow_nan=False)  # JSON-ready: no tensors, no NaN
