"""Every rank evaluates rank 0's BatchNorm statistics: Strategy.sync_model broadcasts the buffers (2 gloo ranks)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from geopeft.spec import TrainSpec
from geopeft.train.sampling import BatchLayout
from geopeft.train.strategy import Strategy

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4))
        strategy = Strategy(model, TrainSpec(lr=1e-3, batch_size=4), BatchLayout(4, 2, 2), torch.device("cpu"))
        with torch.no_grad():
            model[1].running_mean.fill_(float(rank + 1))  # as if each rank had seen its own batches
            model[1].running_var.fill_(float(10 * (rank + 1)))
        strategy.sync_model()
        torch.save({n: b.clone() for n, b in model.named_buffers()}, f"{out}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_sync_model_gives_every_rank_rank_zeros_buffers(tmp_path):
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    names = [n for n in ranks[0] if n.endswith(("running_mean", "running_var"))]
    assert names and all(torch.equal(ranks[0][n], ranks[1][n]) for n in ranks[0])
    assert all(float(ranks[1][n].unique()) in (1.0, 10.0) for n in names)  # rank 0's values, not rank 1's
