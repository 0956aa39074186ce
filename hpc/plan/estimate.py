"""What a sweep will cost: array tasks per resource shape and GPU hours from the paper's run times.

The time hint of a cell is the paper's mean wall time of one run of its (model, PEFT method, dataset) row in
``epoch_and_time.csv`` (minutes; GPU unknown). Cells without a row of their own (the decoder and metadata
ablations) take the Full FT time of the same backbone without metadata ("by analogy": the FCN, UperNet and
UNet decoders cost more than that), and cells with neither take the resource shape's time limit. The result
is an expectation, next to the upper bound (time limit × resources) that the sbatch plan prints.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from geopeft.errors import ConfigError
from geopeft.spec import CellSpec
from hpc.scheduler.profiles import ClusterProfile, Resources

#: (model label, PEFT label, dataset label) -> mean minutes per run.
Times = dict[tuple[str, str, str], float]
#: A cell's (model label, PEFT label, dataset label) in the paper's tables.
Labeller = Callable[[CellSpec], tuple[str, str, str]]
FULL_FT = "Full FT"


def read_paper_times(path: Path) -> Times:
    """The ``total_time`` means of ``epoch_and_time.csv`` (3 header rows, then ``model,peft_type,values``)."""
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the paper's run times ({exc}); restore the file") from exc
    metric, datasets = rows[0], rows[2]
    times: Times = {}
    for row in rows[4:]:
        for col in range(2, len(row)):
            if metric[col] == "total_time" and row[col]:
                times[(row[0], row[1], datasets[col])] = float(row[col])
    if not times:
        raise ConfigError(f"{path}: no total_time columns; expected the paper's epoch_and_time.csv")
    return times


def time_hint(spec: CellSpec, times: Times, labels: Labeller) -> tuple[float, str] | None:
    """Minutes one run of ``spec`` took in the paper and how the row was found (``paper`` or ``analogy``)."""
    model, peft, dataset = labels(spec)
    if (model, peft, dataset) in times:
        return times[(model, peft, dataset)], "paper"
    base = model.split(" +", 1)[0].removesuffix(" TL")
    for key in ((base, peft, dataset), (base, FULL_FT, dataset)):
        if key in times:
            return times[key], "analogy"
    return None


def describe(r: Resources) -> str:
    """A resource shape in words, e.g. ``1 node x 1 task x 1 GPU, 360 min``."""
    return (
        f"{r.nodes} node x {r.tasks_per_node} task x {r.gpus_per_task} GPU, {r.cpus_per_task} CPU, "
        f"{r.time_limit_min} min"
    )


@dataclass(frozen=True)
class Estimate:
    """The expected cost of a set of cells.

    Args:
        cells: how many cells.
        shapes: resource shape (in words) -> array tasks.
        run_hours: expected hours of all runs (one run at a time).
        gpu_hours: expected GPU hours (run hours × GPUs of the cell's shape).
        by: how many cells took their time from the paper, by analogy, or from the time limit.
    """

    cells: int
    shapes: dict[str, int]
    run_hours: float
    gpu_hours: float
    by: dict[str, int]


def estimate(specs: Iterable[CellSpec], profile: ClusterProfile, times: Times, labels: Labeller) -> Estimate:
    """Expected hours of ``specs`` on ``profile``'s resource shapes with the paper's time hints."""
    shapes: Counter[str] = Counter()
    by: Counter[str] = Counter()
    run_h = gpu_h = 0.0
    n = 0
    for spec in specs:
        n += 1
        res = profile.resources_for(spec)
        shapes[describe(res)] += 1
        hint = time_hint(spec, times, labels)
        minutes, how = hint if hint else (float(res.time_limit_min), "time limit")
        by[how] += 1
        run_h += minutes / 60
        gpu_h += minutes / 60 * res.gpus
    return Estimate(n, dict(shapes), run_h, gpu_h, dict(by))


def format_estimate(est: Estimate, title: str) -> list[str]:
    """Lines for the dry run: the cells, the array tasks per shape, the expected hours."""
    how = ", ".join(f"{n} {k}" for k, n in sorted(est.by.items()))
    lines = [f"{title}: {est.cells} cells"]
    lines += [f"  array tasks, {shape}: {n}" for shape, n in sorted(est.shapes.items())]
    lines.append(
        f"  expected from the paper's run times (epoch_and_time.csv; {how}): "
        f"{est.run_hours:.1f} run-hours, {est.gpu_hours:.1f} GPU-h"
    )
    return lines
