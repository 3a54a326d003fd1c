import json

import pytest
import torch
from torch import nn

from fcnlib import bench


def test_time_call_warms_up_then_times_each_repeat():
    calls = []
    samples = bench.time_call(lambda: calls.append(1), torch.device("cpu"), warmup=4, repeats=7)
    assert len(calls) == 11 and len(samples) == 7
    assert all(s >= 0 for s in samples)


def test_time_call_synchronises_before_every_clock_read(monkeypatch):
    events = []
    monkeypatch.setattr(bench, "synchronise", lambda device: events.append("sync"))
    bench.time_call(lambda: events.append("call"), torch.device("cpu"), warmup=2, repeats=3)
    # One sync after the warm-up, then one after each timed call, before the clock is read.
    assert events == ["call", "call", "sync"] + ["call", "sync"] * 3


def test_time_call_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats >= 1"):
        bench.time_call(lambda: None, torch.device("cpu"), repeats=0)


@pytest.mark.parametrize("train", [False, True])
def test_flops_of_a_convolution_match_the_formula(train):
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 3, 10, 12)
    forward = 2 * 3 * 8 * 3 * 3 * 10 * 12 * 2  # a multiply and an add per weight and position
    # Backward computes the gradient of the weight only (the input needs none): one more pass.
    expected = 2 * forward if train else forward
    assert bench.count_flops(conv, x, train=train) == expected


def test_peak_is_looked_up_by_device_name(monkeypatch):
    assert bench.peak_tflops(torch.device("cpu"), "bf16") is None
    for name, bf16 in [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert bench.peak_tflops(torch.device("cuda"), "bf16") == bf16
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Some Other GPU")
    assert bench.peak_tflops(torch.device("cuda"), "fp32") is None


def test_measure_runs_every_variant_on_the_cpu():
    for variant in ("fp32", "bf16", "bf16+channels_last"):
        for task in ("train", "infer"):
            result = bench.measure(
                "fcn8s-vgg16",
                size=(24, 32),
                batch=2,
                variant=variant,
                task=task,
                device=torch.device("cpu"),
                width=1 / 32,
                warmup=1,
                repeats=2,
            )
            assert result.flops_per_image > 0 and result.images_per_s > 0
            assert result.mfu is None  # no tabulated peak for a CPU
            assert result.median_ms == pytest.approx(1000 * 2 / result.images_per_s)


@pytest.mark.parametrize(
    ("peer", "side", "flops"),
    [("fcn_resnet50", 32, (1e9, 1e12)), ("lraspp_mobilenet_v3_large", 64, (1e7, 1e9))],
)
def test_peers_are_measured_the_same_way_at_their_real_width(peer, side, flops):
    result = bench.measure(
        peer,
        size=(side, side),
        batch=1,
        variant="fp32",
        task="infer",
        device=torch.device("cpu"),
        width=0.125,  # scales FCN-8s only: a peer is always the real net
        warmup=0,
        repeats=1,
    )
    assert result.model == peer and result.channel_width == 1.0
    assert flops[0] < result.flops_per_image < flops[1]


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="variant must be one of"):
        bench.measure(
            "fcn8s-vgg16", size=(8, 8), batch=1, variant="fp16", task="infer", device="cpu"
        )
    with pytest.raises(ValueError, match="model must be one of"):
        bench.measure(
            "fcn8s-resnet", size=(8, 8), batch=1, variant="fp32", task="infer", device="cpu"
        )


def test_command_line_writes_a_report_with_the_environment(tmp_path, capsys):
    from fcnlib.__main__ import main

    out = tmp_path / "bench.json"
    argv = ["bench", "--device", "cpu", "--sizes", "24x32", "--batches", "1", "--variants"]
    argv += ["fp32", "--models", "fcn8s-vgg16", "fcn_resnet50", "--width", "0.03125"]
    assert main([*argv, "--warmup", "0", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    assert set(report["peak_tflops"]) == {"fp32", "bf16"}  # measured in the same run
    assert all(0 < peak < 1e3 for peak in report["peak_tflops"].values())
    assert (
        report["environment"]["command"] == f"python -m fcnlib {' '.join(argv)} --warmup 0 "
        f"--repeats 1 --out {out}"
    )
    rows = [(r["model"], r["task"], r["channel_width"]) for r in report["results"]]
    assert rows == [
        ("fcn8s-vgg16", "train", 0.03125),
        ("fcn8s-vgg16", "infer", 0.03125),
        ("fcn_resnet50", "train", 1.0),
        ("fcn_resnet50", "infer", 1.0),
    ]
    assert "fcn8s-vgg16 24x32 batch 1" in capsys.readouterr().out


def row(model, images_per_s, variant="fp32", task="infer", mfu=None):
    return {
        "model": model,
        "height": 360,
        "width": 480,
        "batch": 1,
        "variant": variant,
        "task": task,
        "median_ms": 1000 / images_per_s,
        "images_per_s": images_per_s,
        "flops_per_image": 2e11,
        "achieved_tflops": 0.2 * images_per_s,
        "mfu": mfu,
    }


def test_peer_ratios_pair_equal_configurations_only():
    results = [
        row("fcn8s-vgg16", 6.0),
        row("fcn_resnet50", 3.0),
        row("fcn8s-vgg16", 10.0, variant="bf16"),  # the peer did not run bf16
        row("fcn8s-vgg16_bn", 1.5, task="infer"),
    ]
    ratios = {(r["model"], r["variant"]): r["ratio"] for r in bench.peer_ratios(results)}
    assert ratios == {("fcn8s-vgg16", "fp32"): 2.0, ("fcn8s-vgg16_bn", "fp32"): 0.5}


def test_results_table_has_one_line_per_result_under_a_heading_per_size():
    results = [row("fcn8s-vgg16", 4.0, mfu=0.512), row("fcn_resnet50", 2.0)]
    results.append({**row("fcn8s-vgg16", 1.0), "height": 720, "width": 960})
    lines = bench.format_results(results).splitlines()
    assert len(lines) == 7 and lines[0] == "360x480, batch 1:" and lines[4].startswith("720x960")
    assert lines[1].split()[:2] == ["model", "variant"]
    assert "250.0" in lines[2] and "51.2%" in lines[2] and lines[3].endswith("-")


def test_results_table_fits_the_books_column():
    results = [
        row(model, 1.0, variant=variant, task=task)
        for model in bench.MODELS
        for variant in bench.VARIANTS
        for task in ("train", "infer")
    ]
    for peaks in (None, {"fp32": 0.1, "bf16": 0.001}):
        table = bench.format_results(results, peaks)
        assert max(len(line) for line in table.splitlines()) <= 88
        assert "bf16+NHWC+compile" in table


def test_results_are_given_as_fractions_of_measured_peaks():
    table = bench.format_results([row("fcn8s-vgg16", 4.0)], peaks={"fp32": 1.6, "bf16": 3.2})
    _, header, line = table.splitlines()
    assert header.split()[-2:] == ["%fp32", "%bf16"]
    assert line.split()[-2:] == ["50%", "25%"]  # 0.8 TFLOP/s achieved
