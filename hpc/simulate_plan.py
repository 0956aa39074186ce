"""A grid's whole study (learning-rate search and seeded cells) as the submissions :mod:`hpc.plan.simulate` plays.

Two plans (``geopeft sweep GRID --dry-run --simulate-gpus N --simulate-plan P``):

- ``separate``: what ``geopeft sweep`` tells a grid with a search to do: ``--stage lr``, then, once the whole search
  has ended, ``--stage seeds``, which submits every seeded cell (the searched ones at their chosen rates) at once.
- ``overlapped``: the seeds stage (the cells that need no search) and ``--stage lr`` are submitted together, and
  the seeded cells of each search are submitted the moment all of its rates have ended (what ``make_choices``
  needs). The first half works today as two commands (each submission gets its own ``%P``); submitting each
  search's cells when it ends needs code (README, "How long the paper's study takes").

The cells are what dry runs of the two stages would submit (:func:`hpc.sweep.sweep`; done, running and pending
cells are not played). The cells waiting for a search come from the seeds stage's expansion with a rate chosen for
every search (the rate changes neither a cell's resources nor its run time) and take the manifest indices after
the existing ones, as :func:`hpc.plan.manifests.plan` appends them. Arrays, ``%P`` and lanes are those
:func:`hpc.scheduler.arrays.plan_arrays` plans. A cell runs the paper's time of its (model, PEFT, dataset) row, or of
its
backbone's Full FT row by analogy, else its time limit (:func:`hpc.plan.estimate.time_hint`, as the dry run's
estimate). A submission at time 0 whose dry run has a prepare job waits for it for the profile's
``prepare_time_min``, its time limit: an upper bound (the makespan with the caches already built is printed too);
a submission made after the search finds the caches built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from geopeft.errors import ConfigError, unknown_choice
from geopeft.spec import CellSpec
from hpc.plan.estimate import Labeller, Times, time_hint
from hpc.plan.simulate import Array, Result, Run, Submission, Task, lower_bounds, simulate
from hpc.scheduler.arrays import plan_arrays
from hpc.scheduler.profiles import ClusterProfile, Executor, Resources

if TYPE_CHECKING:
    from hpc.sweep import SweepReport

PLANS = ("separate", "overlapped")
LR, SEEDS, SEARCHED = "lr", "seeds", "seeds of searched cells"
LR_DONE = "the lr stage"
BOUNDS = {"GPUs": "GPUs", "%P": "%P", "chain": "longest chain"}
#: The lower bounds in words (:func:`hpc.plan.simulate.lower_bounds`).
MEANING = {
    "GPUs": "all GPU time / N",
    "%P": "each array's work / its %P, after what it waits for",
    "chain": "prepare job, search and seeded cell with GPUs and %P unlimited",
}
Cells = tuple[tuple[int, CellSpec], ...]  # (manifest index, spec)


class PaperLabels(Protocol):
    """What :mod:`analysis.labels` provides (passed in: hpc imports analysis only in the command line)."""

    def model_label(self, backbone: str, bands: Any = None, metadata: Any = None) -> str: ...  # noqa: D102
    def peft_label(self, method: str) -> str: ...  # noqa: D102
    def dataset_label(self, dataset: str) -> str: ...  # noqa: D102
    def main_decoder(self, backbone: str) -> str: ...  # noqa: D102


def paper_labeller(paper: PaperLabels) -> Labeller:
    """A cell's row in the paper's tables (decoder ablations: ``<model> +<decoder>``), as the dry run's estimate."""

    def labels(s: CellSpec) -> tuple[str, str, str]:
        other = s.decoder.name != paper.main_decoder(s.model.name)
        model = paper.model_label(s.model.name, s.model.bands, s.model.metadata)
        return (
            model + (f" +{s.decoder.name}" if other else ""),
            paper.peft_label(s.tuning.method),
            paper.dataset_label(s.dataset),
        )

    return labels


@dataclass(frozen=True)
class StudyCells:
    """What is left of a grid's study, by stage.

    Args:
        name: the sweep's name.
        root: the sweep directory (``lr_root``: the search's).
        seeds: the seeds stage's cells to submit now (those that need no search, or whose rate is chosen).
        lr: the search's cells to submit.
        waiting: the seeded cells waiting for their search, with the indices they will get.
        searches: search key -> label, for every searched cell (``lr`` and ``waiting``).
        prepare: the stages whose dry run has a cache-prepare job (``lr``, ``seeds``).
    """

    name: str
    root: Path
    lr_root: Path
    seeds: Cells
    lr: Cells
    waiting: Cells
    searches: Mapping[str, str]
    prepare: frozenset[str]


def study_cells(grid: Path, profile: ClusterProfile, reports: Mapping[str, SweepReport]) -> StudyCells:
    """The cells of both stages from their dry runs (``reports``: those already made, by stage)."""
    from hpc.plan.grid import expand, load_grid
    from hpc.plan.lr_search import LrPlan, search_key, search_label
    from hpc.sweep import sweep

    def dry(stage: str) -> SweepReport:
        return reports[stage] if stage in reports else sweep(grid, profile, dry_run=True, stage=stage)

    seeds = dry(SEEDS)
    searched = load_grid(grid).plan
    lr = dry(LR) if searched and searched.settings and (searched.waiting or searched.choices) else None
    prepare = frozenset(
        s for s, r in ((SEEDS, seeds), (LR, lr)) if r and any(x.kind == "prepare" for x in r.submission.scripts)
    )

    def pick(r: SweepReport) -> Cells:
        return tuple((i, r.manifest.entry(i).spec) for i in r.submitted)

    if lr is None or searched is None or searched.settings is None:
        return StudyCells(
            seeds.manifest.name, seeds.manifest.root, seeds.manifest.root, pick(seeds), (), (), {}, prepare
        )
    keys: dict[str, str] = {}
    for e in lr.manifest.active():
        label = search_label(e.spec)
        if search_key(e.spec) not in keys:  # two searches that read alike are told apart
            keys[search_key(e.spec)] = label + (f" ({search_key(e.spec)})" if label in keys.values() else "")
    chosen = {k: {"lr": searched.settings.lrs[0]} for k in keys}  # a rate for every search: all cells expand
    plan = LrPlan(SEEDS, searched.settings, searched.root, str(grid), choices=chosen)
    every = expand(yaml.safe_load(Path(grid).read_bytes()), str(grid), plan)
    known = {e.cell_id for e in seeds.manifest.entries}
    wait = [s for s in every if s.cell_id not in known and search_key(s) in set(keys) - set(searched.choices)]
    first = len(seeds.manifest.entries)
    return StudyCells(
        seeds.manifest.name,
        seeds.manifest.root,
        lr.manifest.root,
        pick(seeds),
        pick(lr),
        tuple(enumerate(wait, first)),
        keys,
        prepare,
    )


def arrays(
    cells: Cells, profile: ClusterProfile, root: Path, stage: str, task: Callable[[CellSpec], Task]
) -> tuple[Array, ...]:
    """The arrays a submission of ``cells`` renders (one per shape and MaxArraySize chunk, ``%P``, lanes)."""
    specs = dict(cells)
    shapes: dict[Resources, list[int]] = {}
    for i in sorted(specs):
        shapes.setdefault(profile.resources_for(specs[i]), []).append(i)
    out = []
    for script in plan_arrays(profile, shapes, "sweep", root):
        name = f"{stage} {script.path.stem.split('-', 2)[-1]}"
        out.append(Array(name, tuple(task(specs[i]) for i in script.indices), script.parallelism, script.after))
    return tuple(out)


def submissions(
    cells: StudyCells, plan: str, profile: ClusterProfile, times: Times, labels: Labeller, prepare_min: float
) -> tuple[Submission, ...]:
    """The submissions of ``plan`` for ``cells`` on ``profile``; prepare jobs take ``prepare_min``."""
    from hpc.plan.lr_search import search_key

    if plan not in PLANS:
        raise unknown_choice("simulated plan", plan, PLANS)
    waiting = {spec.cell_id for _, spec in cells.waiting}

    def task(spec: CellSpec, stage: str) -> Task:
        res = profile.resources_for(spec)
        hint = time_hint(spec, times, labels)
        return Task(
            spec.slug.rsplit("/", 1)[0] + f" lr {spec.train.lr:.3g}" if stage == LR else spec.slug,
            SEARCHED if stage == SEEDS and spec.cell_id in waiting else stage,
            hint[0] if hint else float(res.time_limit_min),
            res.gpus,
            res.time_limit_min,
            profile.signal_lead_s / 60,
            frozenset({LR_DONE, f"the search of {cells.searches[search_key(spec)]}"}) if stage == LR else frozenset(),
        )

    def sub(name: str, group: Cells, stage: str, prepare: bool, after: frozenset[str] = frozenset()) -> Submission:
        root = cells.lr_root if stage == LR else cells.root
        made = arrays(group, profile, root, stage, lambda spec: task(spec, stage))
        return Submission(name, made, prepare_min if prepare and group else 0.0, after)

    seeds_prep, lr_prep = SEEDS in cells.prepare, LR in cells.prepare
    if not cells.lr and not cells.waiting:
        return (sub(SEEDS, cells.seeds, SEEDS, seeds_prep),)
    if plan == "separate":  # --stage lr; when it has ended, --stage seeds (the caches the lr stage built serve it)
        after = frozenset({LR_DONE}) if cells.lr else frozenset()
        together = tuple(sorted(cells.seeds + cells.waiting))
        return sub(LR, cells.lr, LR, lr_prep), sub(SEEDS, together, SEEDS, seeds_prep and not lr_prep, after)
    out = [sub(SEEDS, cells.seeds, SEEDS, seeds_prep), sub(LR, cells.lr, LR, lr_prep)]
    groups: dict[str, list[tuple[int, CellSpec]]] = {}
    for i, spec in cells.waiting:
        groups.setdefault(cells.searches[search_key(spec)], []).append((i, spec))
    for label, group in groups.items():
        after = frozenset({f"the search of {label}"}) if cells.lr else frozenset()
        out.append(sub(f"seeds of {label}", tuple(group), SEARCHED, False, after))
    return tuple(out)


def format_simulation(
    grid: Path,
    profile: ClusterProfile,
    gpus: int,
    plan: str,
    paper: PaperLabels,
    times_csv: Path,
    reports: Mapping[str, SweepReport],
) -> list[str]:
    """What ``--simulate-gpus`` prints: both plans at the profile's %P and at %P = N, then ``plan`` in detail."""
    from hpc.plan.estimate import read_paper_times

    if profile.executor != Executor.SLURM or profile.gpus_per_task < 1:
        raise ConfigError(
            f"cluster profile {profile.name!r} is not a SLURM GPU profile; --simulate-gpus models SLURM arrays of GPU "
            "cells: pass one with --cluster, e.g. hpc/clusters/example-gpu.toml"
        )
    if plan not in PLANS:
        raise unknown_choice("--simulate-plan", plan, PLANS)
    times, labels = read_paper_times(times_csv), paper_labeller(paper)
    cells = study_cells(grid, profile, reports)
    prep = float(profile.prepare_time_min) if cells.prepare else 0.0
    caps = sorted({profile.max_parallel, gpus})
    rows = [f"  {'plan':<11} {'max_parallel':>12} {'makespan':>9} {'GPU util':>9} {'caches built':>13}  bound"]
    details: list[str] = []
    for name in PLANS if cells.lr or cells.waiting else ("separate",):
        for cap in caps:
            capped = replace(profile, max_parallel=cap)
            subs = submissions(cells, name, capped, times, labels, prep)
            result = simulate(subs, gpus)
            built = simulate(submissions(cells, name, capped, times, labels, 0.0), gpus) if prep else result
            worst = bound(lower_bounds(subs, gpus))
            rows.append(
                f"  {name:<11} {cap:>12} {_h(result.makespan_min):>9} {result.utilisation:>9.0%} "
                f"{_h(built.makespan_min) + f' {built.utilisation:.0%}':>13}  {worst[0]} (>= {_h(worst[1])})"
            )
            if name == plan or not (cells.lr or cells.waiting):
                mine = "the profile's" if cap == profile.max_parallel else "= N"
                details += [f"  plan {name}, max_parallel {cap} ({mine}):", *detail(subs, result)]
    hints = Counter(
        h[1] if (h := time_hint(s, times, labels)) else "time limit" for _, s in cells.seeds + cells.lr + cells.waiting
    )
    how = ", ".join(f"{n} {k}" for k, n in sorted(hints.items()))
    lines = [
        f"simulated on {gpus} GPUs (hpc/simulate.py; FIFO without backfill, each submission's %P and lanes; "
        f"cluster profile {profile.name}):",
        f"  run times: the paper's ({times_csv.name}: {how}); "
        + (
            f"prepare job {profile.prepare_time_min} min (the profile's prepare_time_min, an upper bound)"
            if prep
            else "no prepare job in the plan"
        ),
        *rows,
        "  (caches built: makespan and GPU util with the caches built beforehand, no prepare job; bound: see below)",
    ]
    return lines + details


def bound(bounds: Mapping[str, float]) -> tuple[str, float]:
    """The lower bound that binds, in words: the largest (several when they tie), and its minutes."""
    top = max(bounds.values())
    return " = ".join(BOUNDS[k] for k in ("chain", "GPUs", "%P") if bounds[k] >= top - 0.01), top


def detail(subs: Sequence[Submission], result: Result) -> list[str]:
    """Per-stage times, makespan, utilisation, lower bounds and the critical chain of one simulated plan."""
    lines = []
    by: dict[str, list[Run]] = {}
    for run in result.runs:
        by.setdefault(run.task.stage, []).append(run)
    for stage, runs in by.items():
        tasks = len({id(r.task) for r in runs})
        gpu_h = sum(r.task.gpus * (r.end - r.start) for r in runs) / 60
        what = f"{len(runs)} job(s)" if stage == "prepare" else f"{tasks} tasks, {gpu_h:.1f} GPU-h"
        cut = len(runs) - tasks
        lines.append(
            f"    {stage}: {what}, {_h(min(r.start for r in runs))} to {_h(max(r.end for r in runs))}"
            + (f" ({cut} requeues after a time limit)" if cut and stage != "prepare" else "")
        )
    span = result.makespan_min
    lines.append(
        f"    makespan {_h(span)}, GPU utilisation {result.utilisation:.0%} ({result.busy_gpu_min / 60:.1f} busy "
        f"GPU-h of {result.gpus * span / 60:.1f})"
    )
    bounds = lower_bounds(subs, result.gpus)
    lines.append("    lower bounds: " + ", ".join(f"{BOUNDS[k]} ({MEANING[k]}) {_h(v)}" for k, v in bounds.items()))
    lines.append("    critical chain (the run that ends last, and what each run on the way waited for):")
    chain = result.chain()
    k = 0
    while k < len(chain):
        run, n = chain[k], 1
        slot = run.why in ("a %P slot of its array", "a free GPU")
        while slot and k + n < len(chain) and chain[k + n].array == run.array and chain[k + n].why == run.why:
            n += 1
        last = chain[k + n - 1]
        what = f"{n} runs of {run.array} one after another, each on {run.why}; the last {last.task.label}"
        lines.append(
            f"      {_h(run.start)} to {_h(last.end)}  "
            + (what if n > 1 else f"{run.task.label} ({run.array}): {'on ' if slot else ''}{run.why}")
        )
        k += n
    return lines


def _h(minutes: float) -> str:
    return f"{minutes / 60:.2f} h"
