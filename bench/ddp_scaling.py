"""Training throughput of 2 DDP ranks against 1 on this machine (gloo on CPU, nccl on GPUs), measured in one run.

Each configuration starts its ranks as separate processes (``torch.multiprocessing``, a rendezvous on a free
port, one intra-op thread per rank unless ``--threads``), builds the segmentor (``--model``, linear decoder, full
fine-tuning, random weights) and wraps it with the engine's own strategy (:class:`geopeft.train.strategy.Strategy`:
DDP over the process group, AdamW). Every rank then runs ``--warmup`` untimed and ``--steps`` timed optimiser steps
on one random batch of ``--micro`` chips of ``--size``² (forward, cross-entropy, backward with the gradient
all-reduce, AdamW step), with a barrier before the clock starts and after it stops. Weak scaling: each rank keeps
its micro-batch, so 2 ranks train twice the samples per step.

Prints samples/s for 1 and 2 ranks, their ratio (2.0 is perfect scaling; below 1.0 the ranks slow each other down,
as two processes on two shared cores may), and ms/step. The input pipeline, validation and checkpoints are left
out: this is the cost of the gradient all-reduce and of sharing the cores. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import socket
import time

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.spec import DecoderSpec, ModelSpec, TrainSpec
from geopeft.train.distributed import DistEnv, barrier, process_group
from geopeft.train.sampling import BatchLayout
from geopeft.train.strategy import Strategy


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: dict[int, float]) -> None:
    """One rank: build, wrap, warm up, time ``args.steps`` steps; rank 0 stores the seconds taken."""
    torch.set_num_threads(args.threads)
    env = DistEnv(rank=rank, world_size=world, local_rank=rank, master_port=port, launcher="bench")
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    device = env.device(kind)
    with process_group(env, device):
        torch.manual_seed(0)
        model = build_segmentor(
            ModelSpec(args.model), DecoderSpec("linear"), num_classes=2, img_size=args.size, where="bench"
        ).to(device)
        in_chans = len(resolve_bands(ModelSpec(args.model)))
        strategy = Strategy(model, TrainSpec(lr=1e-4), BatchLayout(args.micro * world, world, args.micro), device)
        x = torch.randn(args.micro, in_chans, args.size, args.size, device=device)
        y = torch.randint(0, 2, (args.micro, args.size, args.size), device=device)

        def step() -> None:
            loss = F.cross_entropy(strategy.forward(x, None), y)
            strategy.backward(loss, last=True)
            strategy.step()

        for _ in range(args.warmup):
            step()
        barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        barrier()
        if rank == 0:
            out[world] = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="prithvi_tiny", help="backbone registry name")
    parser.add_argument("--size", type=int, default=64, help="chip height and width")
    parser.add_argument("--micro", type=int, default=4, help="chips per rank per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    args = parser.parse_args()
    seconds = mp.Manager().dict()
    for world in (1, 2):
        mp.spawn(worker, args=(world, free_port(), args, seconds), nprocs=world, join=True)
    rate = {w: args.steps * args.micro * w / seconds[w] for w in (1, 2)}
    print(f"{args.model}, {args.size}x{args.size} chips, micro-batch {args.micro} per rank, {args.steps} steps")
    for w in (1, 2):
        print(f"{w} rank(s): {rate[w]:8.1f} samples/s  {1000 * seconds[w] / args.steps:8.1f} ms/step")
    print(f"2 ranks / 1 rank: {rate[2] / rate[1]:.2f}x samples/s (2.00x = perfect weak scaling)")


if __name__ == "__main__":
    main()
