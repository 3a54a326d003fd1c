"""DistributedDataParallel on the CPU: two gloo processes train as one process on the same batch."""

import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from test_train import TABLE, TinySet, tiny_config, tiny_net

from fcnlib.train import distributed, fit


def config(path: Path | None = None):
    # Masks with void pixels make the two halves of a batch count different pixels: the loop
    # must normalise by the global count for the results to agree.
    return tiny_config(steps=6, batch_size=4, checkpoint=str(path) if path else None)


def worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        assert distributed() == (rank, world)
        torch.set_num_threads(1)
        model = tiny_net(dropout=0.0)
        history = fit(model, TinySet(), config(Path(out) / "ddp.pt"), TABLE, TinySet(4, seed=1))
        if rank == 0:
            torch.save({"model": model.state_dict(), "loss": history.loss}, Path(out) / "out.pt")
    finally:
        dist.destroy_process_group()


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
