"""DistributedDataParallel on the CPU: two gloo processes train as one process on the same batch."""

import contextlib
import json
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from test_train import TABLE, TinySet, tiny_config, tiny_net

from fcnlib.scoring import score_checkpoint
from fcnlib.train import Interrupted, distributed, fit


def config(path: Path | None = None):
    # Masks with void pixels make the two halves of a batch count different pixels: the loop
    # must normalise by the global count for the results to agree.
    return tiny_config(steps=6, batch_size=4, checkpoint=str(path) if path else None)


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """This spawned process in a gloo group of ``world`` processes on ``port``, one thread
    each, for the ``with`` block."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.set_num_threads(1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):
        assert distributed() == (rank, world)
        model = tiny_net(dropout=0.0)
        history = fit(model, TinySet(), config(Path(out) / "ddp.pt"), TABLE, TinySet(4, seed=1))
        if rank == 0:
            torch.save({"model": model.state_dict(), "loss": history.loss}, Path(out) / "out.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_over_the_same_global_batch(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "out.pt", weights_only=True)

    single = tiny_net(dropout=0.0)
    history = fit(single, TinySet(), config(), TABLE)

    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(ddp["loss"]), torch.tensor(history.loss))
    # Rank 0 wrote the checkpoint, which loads with weights_only.
    state = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert state["step"] == 6
    assert len(state["history"]["evals"]) == 1


def reproduce_worker(rank: int, world: int, port: int, out: str, data: str) -> None:
    import os

    from fcnlib.experiment import reproduce

    os.environ["FCNLIB_DATA_ROOT"] = data
    with gloo_group(rank, world, port):
        slim = dict(width=0.0625, crop_size=(64, 64), train_limit=8, batch_size=4, steps=2)
        slim.update(val_limit=1, class_weights=False, device="cpu")
        runs = reproduce(
            "modern",
            models=["fcn32s", "fcn16s"],
            overrides=slim,
            checkpoint_folder=Path(out) / "runs",
            results=Path(out) / "res",
            predictions=1,
            limit=2,
            progress=False,
            say=lambda text: None,
        )
        torch.save(sorted(runs), Path(out) / f"rank{rank}.pt")


def test_reproduce_under_two_processes_records_once(tmp_path, camvid_root):
    data = str(camvid_root.parent)
    mp.spawn(reproduce_worker, args=(2, free_port(), str(tmp_path), data), nprocs=2, join=True)
    assert torch.load(tmp_path / "rank0.pt") == ["fcn16s", "fcn32s"]
    assert torch.load(tmp_path / "rank1.pt") == []  # only rank 0 scores and records
    assert sorted(p.name for p in (tmp_path / "res").glob("*.json")) == [
        "camvid-fcn16s.json",
        "camvid-fcn32s.json",
    ]
    # the two processes scored one image each; one process scoring both agrees
    record = json.loads((tmp_path / "res" / "camvid-fcn16s.json").read_text())
    _, alone, _ = score_checkpoint(tmp_path / "runs" / "camvid-fcn16s.pt", limit=2, device="cpu")
    assert record["metrics"] == pytest.approx(
        {k: v for k, v in alone.compute().items() if k != "per_class_iu"}
    )


def signalled_worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_group(rank, world, port):

        def stop_rank_0_at_step_3(history):
            if rank == 0 and len(history.loss) == 3:
                signal.raise_signal(signal.SIGINT)

        run = config(Path(out) / "ddp.pt")
        try:
            fit(
                tiny_net(),
                TinySet(),
                replace(run, log_interval=1),
                TABLE,
                callback=stop_rank_0_at_step_3,
            )
        except Interrupted as stop:
            (Path(out) / f"rank{rank}.json").write_text(json.dumps([stop.step, stop.signum]))


def test_a_signal_to_one_process_stops_every_process_at_the_same_step(tmp_path):
    mp.spawn(signalled_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    stopped = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The signalled process names its signal; the other learns of one and reports SIGTERM.
    assert stopped == [[3, signal.SIGINT], [3, signal.SIGTERM]]
    assert torch.load(tmp_path / "ddp.pt", weights_only=True)["step"] == 3
