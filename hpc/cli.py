"""The ``geopeft`` command line: thin wrappers over geopeft, hpc and analysis.

Every expected failure is a :class:`~geopeft.errors.GeopeftError` and is printed as one line,
``error: ...``, with exit code 2; tracebacks are for bugs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from geopeft.errors import GeopeftError

if TYPE_CHECKING:
    from hpc.sweep import SubmitReport

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
P = ParamSpec("P")
R = TypeVar("R")

Grid = Annotated[Path, typer.Argument(help="grid file (sweeps/*.yaml) or sweep directory")]
Cluster = Annotated[str, typer.Option("--cluster", "-c", help="cluster profile name or .toml path")]


def _friendly(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GeopeftError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_friendly
def synth(
    dataset: str,
    out: Annotated[Path, typer.Option(help="directory to write the native files into")],
    seed: int = 0,
    size: Annotated[int, typer.Option(help="chip size in pixels")] = 128,
) -> None:
    """Write a small synthetic dataset in the dataset's native file formats."""
    from geopeft.data.synthetic import get_writer

    splits = get_writer(dataset, where="geopeft synth")(out, size=size, seed=seed)
    typer.echo(f"wrote synthetic {dataset} to {out} (split files in {splits})")


@app.command()
@_friendly
def prepare(
    dataset: str,
    raw: Annotated[Path, typer.Option(help="the dataset's native files, as downloaded")],
    cache: Annotated[Path, typer.Option(help="cache directory (the grid file's `cache`)")],
    splits: Annotated[Path | None, typer.Option(help="split files; default: the paper's")] = None,
    force: bool = False,
) -> None:
    """Build (or verify and reuse) the HDF5 cache of a dataset."""
    from geopeft.cache.build import prepare as build

    for o in build(dataset, raw, cache, splits_dir=splits, force=force):
        verb = "built" if o.built else "reused"
        typer.echo(f"{dataset}/{o.split}: {verb} {o.path} ({o.n} samples, key {o.key[:12]})")


@app.command()
@_friendly
def datasets(
    cache: Annotated[Path | None, typer.Option(help="also show the state of each split's cache here")] = None,
) -> None:
    """List the datasets: splits and regions, bands, classes, GSD, and (with --cache) cache state."""
    from geopeft.cache.build import cache_state
    from geopeft.data.registry import dataset_names, get_dataset

    for name in dataset_names():
        info = get_dataset(name)
        typer.echo(f"{name}: train={info.train_split} val={info.val_split} regions={', '.join(info.regions)}")
        typer.echo(f"  bands ({len(info.bands)}): {', '.join(info.bands)}; gsd {info.gsd:g} m; scale {info.scale:g}")
        typer.echo(f"  classes ({len(info.classes)}): {', '.join(info.classes)}")
        if cache is not None:
            state = cache_state(cache, name)
            cells = [f"{split} {'key ' + key[:12] if key else 'missing'}" for split, key in state.items()]
            typer.echo(f"  cache: {'; '.join(cells)}")


@app.command()
@_friendly
def models() -> None:
    """List every backbone with its total parameter count (built on the meta device: no memory spent)."""
    from geopeft.models.catalog import format_backbone_table

    typer.echo(format_backbone_table())


@app.command()
@_friendly
def sweep(grid: Grid, cluster: Cluster = "local", dry_run: bool = False) -> None:
    """Plan the grid and submit every cell not done, running or pending; returns at once."""
    from hpc.profiles import load_profile
    from hpc.sweep import sweep as submit

    report = submit(grid, load_profile(cluster), dry_run=dry_run)
    _print_report(report, grid)


@app.command()
@_friendly
def status(
    grid: Grid,
    wait: Annotated[bool, typer.Option(help="poll until no cell is running or pending")] = False,
    timeout: float = 3600.0,
) -> None:
    """Show the grid of cells (done / failed / running / pending / missing) from the files."""
    from hpc import status as st
    from hpc.grid import sweep_root
    from hpc.manifest import read_manifest
    from hpc.sweep import states

    manifest = read_manifest(sweep_root(grid))
    current = st.wait(manifest, timeout_s=timeout) if wait else states(manifest)
    typer.echo(st.render(manifest, current))


@app.command()
@_friendly
def rerun(
    grid: Grid,
    failed: bool = False,
    missing: bool = False,
    cells: Annotated[list[str] | None, typer.Option("--cells", help="cell id (prefix); repeatable")] = None,
    cluster: Cluster = "local",
    max_attempts: int = 0,
    dry_run: bool = False,
) -> None:
    """Resubmit failed and/or missing cells (or --cells ID ...) of a sweep as an array subset."""
    from hpc.grid import sweep_root
    from hpc.profiles import load_profile
    from hpc.sweep import rerun as resubmit

    if not (failed or missing or cells):
        raise GeopeftError("say what to rerun: --failed, --missing or --cells ID")
    which = "incomplete" if failed and missing else ("missing" if missing else "failed")
    report = resubmit(
        sweep_root(grid),
        load_profile(cluster),
        which=which,
        cells=tuple(cells or ()),
        max_attempts=max_attempts,
        dry_run=dry_run,
    )
    _print_report(report, grid)


@app.command()
@_friendly
def tables(grid: Grid) -> None:
    """Collect result.json files into a tidy CSV and LaTeX tables."""
    from analysis.tables import write_tables
    from hpc.grid import sweep_root

    for name, path in write_tables(sweep_root(grid)).items():
        typer.echo(f"{name}: {path}")


@app.command("run-cell")
@_friendly
def run_cell(grid: Grid, index: int) -> None:
    """Run the cell at a manifest index in this process (the debugging twin of an array task)."""
    from hpc.grid import sweep_root
    from hpc.task import CellTask

    CellTask(str(sweep_root(grid)))(index)


def _print_report(report: SubmitReport, grid: Path) -> None:
    skipped = ", ".join(f"{n} {s.value}" for s, n in sorted(report.skipped.items())) or "none"
    verb = "would submit" if report.dry_run else "submitted"
    typer.echo(
        f"{report.manifest.name}: {verb} {len(report.submitted)} cells {list(report.submitted)}; skipped {skipped}"
    )
    if report.job_ids:
        typer.echo(f"jobs: {', '.join(report.job_ids)}")
    if report.submitted and not report.dry_run:
        typer.echo(f"follow with: geopeft status {grid}")


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return app(args=argv if argv is not None else sys.argv[1:])
