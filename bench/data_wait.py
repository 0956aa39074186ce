"""How long a cell's training steps wait for data, with 0, 1 and 2 DataLoader workers, side by side.

Writes synthetic Sen1Floods11 chips (real GeoTIFF layout), builds the cache, then trains the same cell (``--model``
+ ``--decoder``, default ``prithvi_tiny`` + linear, full fine-tuning, a few epochs) once per worker count with
``run_cell``, each in a fresh cell directory, and prints the ``data_wait_fraction`` of its ``result.json`` (the share
of the training steps' time spent waiting for the loader's next batch), its samples/s and the ratios to 0 workers.
With 0 workers the main process reads every batch itself, so the fraction is the reading cost; workers read ahead
while the model trains. On a GPU (``--device cuda``) the model step is short and the fraction shows whether the
loader keeps up. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.synthetic import write_sen1floods11
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=32, help="train chips")
    parser.add_argument("--size", type=int, default=256, help="chip height and width")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to compare")
    parser.add_argument("--model", default="prithvi_tiny", help="backbone")
    parser.add_argument("--decoder", default="linear", help="decoder")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="geopeft-bench-") as tmp:
        root = Path(tmp)
        counts = {"train": args.chips, "val": 4, "test": 2, "bolivia": 2}
        splits = write_sen1floods11(root / "raw", counts=counts, size=args.size)
        prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
        rows = []
        for workers in args.workers:
            spec = CellSpec(
                model=ModelSpec(args.model),
                tuning=TuningSpec("full"),
                decoder=DecoderSpec(args.decoder),
                dataset="sen1floods11",
                train=TrainSpec(
                    lr=1e-4,
                    batch_size=args.batch,
                    max_epochs=args.epochs,
                    patience=args.epochs,
                    precision=args.precision,
                ),
            )
            env = RunEnv(str(root / "cache"), num_workers=workers, threads=args.threads, device=args.device)
            paths = SweepPaths(root / f"workers-{workers}").cell(spec.cell_id)
            result = run_cell(spec, env, paths, log=lambda _: None)
            if result is None:
                raise SystemExit(f"{paths.dir} is owned by another process")
            rows.append((workers, result.train.data_wait_fraction, result.train.samples_per_s, result.train.device))
    device = rows[0][3]
    print(
        f"{args.model} + {args.decoder}, {args.chips} chips of {args.size}x{args.size}x13 int16, batch {args.batch}, "
        f"{args.precision}, {device}"
    )
    print(f"torch threads {args.threads} ({torch.get_num_threads()} here)")
    print("workers  data_wait_fraction  samples/s  samples/s vs 0 workers")
    for workers, wait, speed, _ in rows:
        print(f"{workers:7d} {wait:19.3f} {speed:10.1f} {speed / rows[0][2]:24.2f}")


if __name__ == "__main__":
    main()
