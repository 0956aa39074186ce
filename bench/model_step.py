"""Training-step time and peak memory of every backbone × decoder, measured side by side in one run.

For each backbone × decoder the segmentor is built with random weights (``build_segmentor``, default bands,
``--classes`` classes), then ``--warmup`` untimed and ``--steps`` timed training steps run on one random batch:
forward, cross-entropy against random labels, backward, AdamW step (lr 1e-4), ``zero_grad``. Reported per row:

- params / trainable: all parameters and those AdamW updates, in millions (``--freeze-backbone`` leaves
  only the neck and decoder trainable, as linear probing would);
- ms/step and samples/s: the mean over the timed steps (CUDA is synchronised before reading the clock);
- step MiB: how far memory rose above its level just before the first step, over warm-up and timed steps
  (so gradients, AdamW state and activations, not the model). On CUDA that is ``max_memory_allocated`` minus
  ``memory_allocated`` (tensors only, no allocator cache); on CPU it is the peak resident set size (VmHWM,
  reset through ``/proc/self/clear_refs`` after ``malloc_trim``) minus the RSS before, which also counts
  allocator slack, so read the CPU figures as upper bounds;
- peak MiB: CUDA peak allocated, or on CPU the process's peak RSS (torch and the libraries included);
- ×dec and ×bb: ms/step and step MiB relative to the reference decoder (the first of ``--decoders``,
  ``linear`` by default) on the same backbone, and relative to the first backbone with the same decoder.

The defaults are the tiny test backbones × every decoder at 128², a few seconds a row on a laptop CPU.
``--full`` takes the full-size backbones with the linear decoder at 224² instead (slow on a CPU; meant for
a GPU). ``--widths`` picks the decoder widths: ``paper`` (FCN 512, UperNet 256, UNet 512/256/128/64) or
``narrow`` (an eighth of that); by default ``paper`` on CUDA and ``narrow`` on CPU, where the paper's FCN at
128² alone costs seconds a step. Absolute numbers belong to this machine and its load; the ratios are the
comparison. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from geopeft.errors import ConfigError
from geopeft.models import backbone_names, decoder_names, get_backbone
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.spec import DecoderSpec, ModelSpec

#: Decoder options per width preset (``linear`` has no width).
WIDTHS: dict[str, dict[str, dict[str, object]]] = {
    "paper": {"linear": {}, "fcn": {}, "upernet": {}, "unet": {}},
    "narrow": {
        "linear": {},
        "fcn": {"channels": 64},
        "upernet": {"channels": 32},
        "unet": {"channels": (64, 32, 16, 8)},
    },
}
STATUS = Path("/proc/self/status")
MIB = 2**20


@dataclass(frozen=True)
class Row:
    """One measured backbone × decoder."""

    backbone: str
    decoder: str
    params: int
    trainable: int
    ms_per_step: float
    samples_per_s: float
    step_mib: float
    peak_mib: float


def tiny_backbones() -> list[str]:
    """The registered test-size backbones (named ``*tiny*``), in registration order."""
    return [name for name in backbone_names() if "tiny" in name]


def full_backbones() -> list[str]:
    """Every other registered backbone: the full-size models."""
    return [name for name in backbone_names() if "tiny" not in name]


def _kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{STATUS} has no {field} line; this memory measure needs Linux")
    return int(match.group(1))


class Memory:
    """Memory before and at the peak of a stretch of work, on CUDA or as the CPU process's RSS."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.before = 0

    def start(self) -> None:
        """Free what can be freed, reset the peak and remember the current level."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass  # not glibc: RSS still measures, with more allocator slack
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            print("warning: cannot reset the peak RSS; step MiB of later rows may read 0", file=sys.stderr)
        self.before = _kib("VmRSS") * 1024

    def stop(self) -> tuple[float, float]:
        """``(rise above the start, peak)`` in MiB."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _kib("VmHWM") * 1024
        return (peak - self.before) / MIB, peak / MIB


def measure(backbone: str, decoder: str, args: argparse.Namespace, device: torch.device, widths: str) -> Row:
    """Build one segmentor and time its training steps (see the module docstring)."""
    torch.manual_seed(0)
    spec = DecoderSpec(decoder, tuple(WIDTHS[widths][decoder].items()))
    model = build_segmentor(ModelSpec(backbone), spec, num_classes=args.classes, img_size=args.size).to(device)
    model.train()
    if args.freeze_backbone:
        model.backbone.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-4)
    channels = len(resolve_bands(ModelSpec(backbone)))
    x = torch.randn(args.batch, channels, args.size, args.size, device=device)
    y = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    memory = Memory(device)
    memory.start()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    step_mib, peak_mib = memory.stop()
    row = Row(
        backbone,
        decoder,
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() for p in trainable),
        1000 * seconds,
        args.batch / seconds,
        step_mib,
        peak_mib,
    )
    return row  # the model, optimiser and batch are freed with this frame


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference > 0 else "-"


def format_table(rows: list[Row]) -> str:
    """The rows as aligned text with the ×dec / ×bb ratios (reference: first decoder, first backbone)."""
    first_decoder, first_backbone = rows[0].decoder, rows[0].backbone
    by_key = {(r.backbone, r.decoder): r for r in rows}
    header = (
        "backbone", "decoder", "params_M", "train_M", "ms/step", "samples/s", "step_MiB", "peak_MiB",
        "ms×dec", "MiB×dec", "ms×bb", "MiB×bb",
    )  # fmt: skip
    cells = [header]
    for r in rows:
        dec = by_key.get((r.backbone, first_decoder))
        bb = by_key.get((first_backbone, r.decoder))
        cells.append(
            (
                r.backbone,
                r.decoder,
                f"{r.params / 1e6:.2f}",
                f"{r.trainable / 1e6:.2f}",
                f"{r.ms_per_step:.1f}",
                f"{r.samples_per_s:.1f}",
                f"{r.step_mib:.0f}",
                f"{r.peak_mib:.0f}",
                _ratio(r.ms_per_step, dec.ms_per_step) if dec else "-",
                _ratio(r.step_mib, dec.step_mib) if dec else "-",
                _ratio(r.ms_per_step, bb.ms_per_step) if bb else "-",
                _ratio(r.step_mib, bb.step_mib) if bb else "-",
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; names are checked against the registries."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full-size backbones with the linear decoder at 224²")
    parser.add_argument("--backbones", nargs="+", help="backbone names (default: the tiny ones; --full: full-size)")
    parser.add_argument(
        "--decoders", nargs="+", help="decoder names, first = reference (default: all; --full: linear)"
    )
    parser.add_argument("--size", type=int, help="chip height and width (default 128; --full: 224)")
    parser.add_argument("--batch", type=int, default=2, help="batch size (at least 2 with upernet)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument("--classes", type=int, default=2, help="output classes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:i]")
    parser.add_argument("--widths", choices=("auto", *WIDTHS), default="auto", help="decoder widths (see above)")
    parser.add_argument("--freeze-backbone", action="store_true", help="train the neck and decoder only")
    args = parser.parse_args(argv)
    args.backbones = args.backbones or (full_backbones() if args.full else tiny_backbones())
    args.decoders = args.decoders or (
        ["linear"] if args.full else ["linear", *sorted(set(decoder_names()) - {"linear"})]
    )
    args.size = args.size or (224 if args.full else 128)
    if args.batch < 2 and "upernet" in args.decoders:
        parser.error("--batch must be at least 2 with upernet: its 1×1 pyramid-pooling level has batch norm")
    if min(args.steps, args.threads, args.classes) < 1 or args.warmup < 0:
        parser.error("--steps, --threads and --classes must be positive and --warmup not negative")
    try:
        for name in args.backbones:
            get_backbone(name, "--backbones")
        unknown = sorted(set(args.decoders) - set(decoder_names()))
        if unknown:
            raise ConfigError(f"--decoders: unknown {unknown}; allowed: {', '.join(decoder_names())}")
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    widths = args.widths if args.widths != "auto" else ("paper" if device.type == "cuda" else "narrow")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(
        f"{name}; torch {torch.__version__}; {args.size}² chips, batch {args.batch}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, AdamW; decoder widths: {widths}"
        + ("; backbone frozen" if args.freeze_backbone else "")
    )
    rows = []
    for backbone in args.backbones:
        for decoder in args.decoders:
            rows.append(measure(backbone, decoder, args, device, widths))
            print(f"  measured {backbone} + {decoder}", file=sys.stderr, flush=True)
    print(format_table(rows))


if __name__ == "__main__":
    main()
