"""Train one cell per setting on synthetic 512² Sen1Floods11 chips and print what each ended with, one line each.

The reproduction of the ZeRO-3 + bf16 crash (issue 18): full fine-tuning under ``deepspeed_zero3`` with bf16
crashed on CUDA ("misaligned address", reported in the neck's MaxPool2d) while LoRA worked. Each ``--cells`` entry is
``METHOD:STRATEGY:PRECISION`` and runs through ``run_cell`` (the same engine, strategy, preprocessing and evaluation
as a sweep's cell) in a fresh process, so that a CUDA error in one cannot poison the next; set
``CUDA_LAUNCH_BLOCKING=1`` to have a kernel error reported at the kernel that raised it. Per cell it prints the
outcome (``ok`` with test mIoU, samples/s and peak memory, or the failure class and the last lines of its
traceback from ``failed.json``). ``--keep DIR`` keeps the cell directories (logs, failed.json) for inspection.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from geopeft.cache.build import prepare
from geopeft.data.synthetic import write_sen1floods11
from geopeft.io import read_json
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec


def spec_for(args: argparse.Namespace, cell: str) -> CellSpec:
    """The cell spec of one ``METHOD:STRATEGY:PRECISION`` entry."""
    method, strategy, precision = cell.split(":")
    return CellSpec(
        model=ModelSpec(args.model),
        tuning=TuningSpec(method),
        decoder=DecoderSpec(args.decoder),
        dataset="sen1floods11",
        train=TrainSpec(
            lr=1e-4,
            batch_size=args.batch,
            max_epochs=args.epochs,
            patience=args.epochs,
            precision=precision,
            strategy=strategy,
        ),
    )


def run_one(args: argparse.Namespace, cell: str) -> None:
    """The child: train ``cell`` with ``run_cell`` in this process (its outcome is read from the cell files)."""
    from geopeft.cell import run_cell

    spec = spec_for(args, cell)
    env = RunEnv(args.cache, num_workers=args.workers, threads=4, device=args.device)
    run_cell(spec, env, SweepPaths(Path(args.root)).cell(spec.cell_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="prithvi_eo_v2_300", help="backbone")
    parser.add_argument("--decoder", default="upernet", help="decoder")
    parser.add_argument(
        "--cells",
        nargs="+",
        default=["full:deepspeed_zero3:bf16", "lora:deepspeed_zero3:bf16", "full:ddp:bf16"],
        help="METHOD:STRATEGY:PRECISION entries",
    )
    parser.add_argument("--size", type=int, default=512, help="chip height and width")
    parser.add_argument("--chips", type=int, default=8, help="train chips")
    parser.add_argument("--batch", type=int, default=4, help="batch size")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per cell")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--keep", help="keep the data and cell directories here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args, args.child)
        return
    with tempfile.TemporaryDirectory(prefix="geopeft-gpu-cells-") as tmp:
        root = Path(args.keep or tmp)
        counts = {"train": args.chips, "val": 2, "test": 2, "bolivia": 2}
        splits = write_sen1floods11(root / "raw", counts=counts, size=args.size)
        prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
        print(f"{args.model} + {args.decoder}, {args.chips} chips of {args.size}², batch {args.batch}", flush=True)
        for cell in args.cells:
            spec = spec_for(args, cell)
            argv = [sys.executable, __file__, "--child", cell, "--root", str(root / "sweep"), "--cache"]
            argv += [str(root / "cache")]
            for key in ("model", "decoder", "size", "chips", "batch", "epochs", "workers", "device"):
                argv += [f"--{key}", str(getattr(args, key))]
            done = subprocess.run(argv, capture_output=True, text=True)
            paths = SweepPaths(root / "sweep").cell(spec.cell_id)
            if paths.result.exists():
                r = read_json(paths.result)
                test, train = r["regions"]["test"], r["train"]
                print(
                    f"{cell:28s} ok: test mIoU {100 * test['miou']:.2f}, {train['samples_per_s']:.1f} samples/s, "
                    f"peak {train['peak_memory_mb']:.0f} MiB, data wait {train['data_wait_fraction']:.3f}"
                )
            elif paths.failed.exists():
                f = read_json(paths.failed)
                print(f"{cell:28s} FAILED ({f['reason']}): {f['error']}")
                print("    " + "\n    ".join(f["traceback"].strip().splitlines()[-8:]))
            else:
                print(f"{cell:28s} ended with exit code {done.returncode} and no record")
                print(json.dumps(done.stderr.strip().splitlines()[-8:], indent=2))


if __name__ == "__main__":
    main()
