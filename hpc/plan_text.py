"""What ``geopeft sweep`` and ``geopeft rerun`` print: the cells, the sbatch lines, the estimate, the blockers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from hpc.scheduler.profiles import ClusterProfile
    from hpc.sweep import SweepReport

SHOWN = 50  # cells and job ids listed in a report; more are counted


def print_report(report: SweepReport, grid: Path) -> None:
    """The cells submitted or skipped, job ids, sbatch lines (with directives in a dry run), estimate, blockers."""
    skipped = ", ".join(f"{n} {s.value}" for s, n in sorted(report.skipped.items())) or "none"
    verb = "would submit" if report.dry_run else "submitted"
    typer.echo(
        f"{report.manifest.name}: {verb} {len(report.submitted)} cells {list(report.submitted)}; skipped {skipped}"
    )
    if report.dry_run:
        for i in report.submitted[:SHOWN]:
            entry = report.manifest.entry(i)
            typer.echo(f"  run [{i}] {entry.cell_id} {entry.spec.slug}")
        if len(report.submitted) > SHOWN:
            typer.echo(f"  ... and {len(report.submitted) - SHOWN} more")
    if report.job_ids:
        more = f" ... ({len(report.job_ids)} in all)" if len(report.job_ids) > SHOWN else ""
        typer.echo(f"jobs: {', '.join(report.job_ids[:SHOWN])}{more}")
    done = report.submission
    if done.prepare_job:
        typer.echo(f"cache-prepare job {done.prepare_job}; the arrays start after it succeeds (afterok)")
    for script, line in zip(done.scripts, done.commands, strict=True):
        typer.echo(f"$ {line}" + (f"  # indices {list(script.indices)[:SHOWN]}" if script.indices else ""))
        if report.dry_run:
            typer.echo("\n".join(f"    {d}" for d in script.directives))
    if done.scripts:
        typer.echo(
            f"estimate (upper bound, time limit x resources): {done.gpu_hours:.1f} GPU-h, {done.cpu_hours:.1f} CPU-h"
        )
    if report.blockers:
        typer.echo(f"what blocks a real submission ({len(report.blockers)}):")
        for blocker in report.blockers:
            typer.echo(f"  - {blocker}")
    if report.submitted and not report.dry_run:
        typer.echo(f"follow with: geopeft status {grid}")


def print_estimate(report: SweepReport, grid: Path, profile: ClusterProfile, stage: str) -> None:
    """Array tasks per shape and expected hours (the paper's run times) of this stage and of a pending search."""
    from analysis import labels as paper
    from analysis.paper import REFERENCE_DIR
    from hpc.plan.estimate import estimate, format_estimate, read_paper_times
    from hpc.plan.grid import load_grid
    from hpc.simulate_plan import paper_labeller

    times = read_paper_times(REFERENCE_DIR / "epoch_and_time.csv")
    labels = paper_labeller(paper)  # the ablations (another decoder) have no paper row of their own

    specs = [report.manifest.entry(i).spec for i in report.submitted]
    for line in format_estimate(estimate(specs, profile, times, labels), f"stage {stage}, to submit"):
        typer.echo(line)
    if report.waiting and stage == "seeds":
        search = load_grid(grid, stage="lr")
        lr = estimate(search.cells, profile, times, labels)
        for line in format_estimate(lr, f"stage lr (then {len(report.waiting)} waiting seeded cells)"):
            typer.echo(line)
