"""Training step time and peak memory of each fine-tuning method against full fine-tuning, side by side.

For one backbone, decoder, batch and chip size, each method runs in a fresh child process (same seed, same
random input): build the segmentor, apply the method, then ``--warmup`` and ``--steps`` AdamW training
steps (forward, cross-entropy, backward, step), as the trainer does. Reported per method:

- trainable parameters;
- step time: median of the timed steps (CUDA synchronised on GPU);
- peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the whole child (weights, gradients,
  optimiser state and activations); on CPU the peak RSS delta, ``ru_maxrss`` at the end minus the RSS
  before the model was built (weights, gradients, optimiser state, activations and allocator overhead; the
  children run with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` unless ``--malloc default``, so freed tensors
  leave the RSS; the price is a fresh mapping per large allocation, which slows CPU steps);
- both as ratios to full fine-tuning without checkpointing (``/full``) and, with ``--checkpointing both``, to
  full fine-tuning in the same mode (``/full same``).

``--checkpointing on|both`` also runs every method with ``train.activation_checkpointing`` (rows
``METHOD+ckpt``): the ViT blocks keep only their inputs and recompute the rest in the backward pass
(:mod:`geopeft.train.memory`). Without it a PEFT method saves only the gradients and AdamW moments of the
frozen weights, and its activations are those of full fine-tuning.

A method that does not apply to the backbone (LoRA on a ResNet) is listed as ``n/a``. The paper reports
LoRA at about 0.7x the memory of full fine-tuning; the target here is <= 0.65x on ``prithvi_eo_v2_300``
at batch 8, 512² on a GPU. On a CPU, e.g. ``--backbone prithvi_eo_v2_300 --batch 1 --size 224 --decoder
linear`` (UperNet's pooled BatchNorm needs a batch of at least 2).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geopeft.errors import ConfigError
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.spec import DecoderSpec, ModelSpec, TuningSpec
from geopeft.train.memory import checkpoint_blocks
from geopeft.tuning import apply_tuning

METHODS = ("full", "linear_probe", "lora", "vpt")
CKPT = "+ckpt"  # suffix of a row measured with activation checkpointing


def _rss_mib() -> float:
    """Current resident set size of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(args: argparse.Namespace, row: str) -> dict[str, Any]:
    """Build, tune (and checkpoint, for a ``+ckpt`` row) and train one model in this process; the measurements."""
    method = row.removesuffix(CKPT)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model_spec = ModelSpec(args.backbone)
    image = torch.randn(args.batch, len(resolve_bands(model_spec)), args.size, args.size, device=device)
    target = torch.randint(0, 2, (args.batch, args.size, args.size), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = _rss_mib()
    model = build_segmentor(model_spec, DecoderSpec(args.decoder), num_classes=2, img_size=args.size)
    try:
        report = apply_tuning(model, TuningSpec(method))
        if row.endswith(CKPT):
            checkpoint_blocks(model)
    except ConfigError as exc:
        return {"method": row, "error": str(exc)}
    model.to(device).train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = nn.functional.cross_entropy(model(image), target)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss
    return {"method": row, "trainable": report.trainable, "step_s": statistics.median(times), "peak_mib": peak}


def _child(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Run :func:`measure` for ``method`` in a fresh interpreter (so that peak memory starts from zero)."""
    argv = [sys.executable, __file__, "--worker", method]
    for key in ("backbone", "decoder", "batch", "size", "steps", "warmup", "device", "threads"):
        argv += [f"--{key}", str(getattr(args, key))]
    argv += ["--bf16"] if args.bf16 else []
    # glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, so peak RSS would also count
    # memory freed long before, e.g. the fused qkv weights LoRA replaces; a fixed 64 KiB threshold returns every
    # freed tensor to the system, and peak RSS follows the live tensors.
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "65536"} if args.malloc == "fixed" else {})}
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    if out.returncode:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"method": method, "error": f"child failed: {tail[0]}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="prithvi_tiny", help="backbone registry name")
    parser.add_argument("--decoder", default="upernet", help="decoder registry name (the paper's main: upernet)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated; full is always run first")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224, help="chip height and width")
    parser.add_argument("--steps", type=int, default=5, help="timed steps; the median counts")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (the paper's mixed precision)")
    parser.add_argument("--checkpointing", choices=("off", "on", "both"), default="off", help="activation ckpt")
    parser.add_argument(
        "--malloc",
        choices=("fixed", "default"),
        default="fixed",
        help="glibc mmap threshold of the children: fixed = peak RSS follows live tensors (CPU steps slower)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args, args.worker)))
        return
    methods = ["full", *(m for m in args.methods.split(",") if m and m != "full")]
    suffixes = {"off": [""], "on": [CKPT], "both": ["", CKPT]}[args.checkpointing]
    results = [_child(args, m + suffix) for suffix in suffixes for m in methods]
    fulls = {r["method"]: r for r in results if r["method"].removesuffix(CKPT) == "full"}
    full = results[0]
    if any("error" in f for f in fulls.values()):
        raise SystemExit(f"full fine-tuning failed, no baseline: {[f.get('error') for f in fulls.values()]}")
    what = "CUDA peak allocated" if args.device.startswith("cuda") else "peak RSS delta"
    if not args.device.startswith("cuda") and args.malloc == "fixed":
        what += " (fixed mmap threshold: every large allocation is fresh pages, so CPU step times are inflated)"
    print(
        f"{args.backbone} + {args.decoder}, batch {args.batch}, {args.size}x{args.size}, {args.device}"
        f"{' bf16' if args.bf16 else ''}, median of {args.steps} steps; memory = {what}"
    )
    head = f"{'method':18s} {'trainable':>12s} {'step_ms':>9s} {'time/full':>9s} {'peak_MiB':>9s} {'mem/full':>8s}"
    print(head + (f" {'mem/full same':>13s}" if len(fulls) > 1 else ""))
    for r in results:
        if "error" in r:
            print(f"{r['method']:18s} {'n/a':>12s}  ({r['error']})")
            continue
        same = fulls["full" + CKPT if r["method"].endswith(CKPT) else "full"]
        print(
            f"{r['method']:18s} {r['trainable']:12,d} {1000 * r['step_s']:9.1f} {r['step_s'] / full['step_s']:9.2f} "
            f"{r['peak_mib']:9.0f} {r['peak_mib'] / full['peak_mib']:8.2f}"
            + (f" {r['peak_mib'] / same['peak_mib']:13.2f}" if len(fulls) > 1 else "")
        )


if __name__ == "__main__":
    main()
