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
from hpc.predict import predict as predict_command

if TYPE_CHECKING:
    pass

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
P = ParamSpec("P")
R = TypeVar("R")

Grid = Annotated[Path, typer.Argument(help="grid file (sweeps/*.yaml) or sweep directory")]
Cluster = Annotated[str, typer.Option("--cluster", "-c", help="cluster profile name or .toml path")]
Stage = Annotated[
    str, typer.Option(help="seeds: every cell at its written or chosen rate; lr: the learning-rate search")
]
SimGpus = Annotated[
    int, typer.Option(help="with --dry-run: play the whole study through a scheduler model of N GPUs (makespan)")
]
SimPlan = Annotated[
    str, typer.Option(help="separate: --stage lr, then --stage seeds; overlapped: both at once (hpc/simulate_plan.py)")
]


def _friendly(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GeopeftError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # a read-only or full output folder, a file that vanished: one line naming it
            if exc.filename is None:
                raise
            what = exc.strerror or type(exc).__name__
            typer.echo(
                f"error: {exc.filename}: {what}; check that the folder exists, is writable and has space", err=True
            )
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
    codec: Annotated[
        str | None,
        typer.Option(help="compression: none (the default; fastest reads), blosc-lz4 (~0.7 of the size), lzf, gzip"),
    ] = None,
) -> None:
    """Build (or verify and reuse) the HDF5 cache of a dataset."""
    from geopeft.cache.build import prepare as build
    from geopeft.cache.schema import DEFAULT_CODEC

    for o in build(dataset, raw, cache, splits_dir=splits, force=force, codec=codec or DEFAULT_CODEC):
        if o.corrupt is not None:
            typer.echo(f"{dataset}/{o.split}: {o.path} was corrupt ({o.corrupt[1]}); moved to {o.corrupt[0]}")
        verb = "built" if o.built else "verified and reused"
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
def models(
    peft: Annotated[str | None, typer.Option(help="show what this tuning method trains in each backbone")] = None,
) -> None:
    """List every backbone with its total parameter count (built on the meta device: no memory spent)."""
    from geopeft.models.catalog import format_backbone_table

    if peft is None:
        typer.echo(format_backbone_table())
        return
    from geopeft.tuning.catalog import format_peft_table

    typer.echo(format_peft_table(peft))


@app.command()
@_friendly
def sweep(
    grid: Grid,
    cluster: Cluster = "local",
    dry_run: bool = False,
    stage: Stage = "seeds",
    simulate_gpus: SimGpus = 0,
    simulate_plan: SimPlan = "separate",
) -> None:
    """Plan the grid and submit every cell not done, running or pending; returns at once."""
    if simulate_gpus and not dry_run:
        raise GeopeftError("--simulate-gpus plays the plan instead of submitting it: add --dry-run")
    from hpc.plan_text import print_estimate, print_report
    from hpc.scheduler.profiles import load_profile
    from hpc.sweep import sweep as submit

    profile = load_profile(cluster)
    report = submit(grid, profile, dry_run=dry_run, stage=stage)
    print_report(report, grid)
    if report.waiting:
        typer.echo(
            f"{len(report.waiting)} cells wait for their learning-rate search: "
            f"geopeft sweep {grid} --stage lr, then --stage seeds"
        )
    if dry_run:
        print_estimate(report, grid, profile, stage)
    if simulate_gpus:
        from analysis import labels as paper
        from analysis.paper import REFERENCE_DIR
        from hpc.simulate_plan import format_simulation

        csv = REFERENCE_DIR / "epoch_and_time.csv"
        typer.echo(
            "\n".join(format_simulation(grid, profile, simulate_gpus, simulate_plan, paper, csv, {stage: report}))
        )


@app.command()
@_friendly
def status(
    grid: Grid,
    wait: Annotated[bool, typer.Option(help="poll until no cell is running or pending")] = False,
    watch: Annotated[bool, typer.Option(help="redraw the grid in place until no cell is running or pending")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls of --wait and --watch")] = 5.0,
    timeout: float = 3600.0,
    stage: Stage = "seeds",
) -> None:
    """Show the grid of cells (done / failed / running / pending / missing) from the files."""
    from geopeft.paths import SweepPaths
    from hpc import status as st
    from hpc.plan.grid import sweep_root
    from hpc.plan.lr_search import is_search_sweep
    from hpc.state.cells import states
    from hpc.state.manifest import read_manifest

    root = SweepPaths(sweep_root(grid)).search.root if stage == "lr" else sweep_root(grid)
    manifest = read_manifest(root)
    render = st.render_search if is_search_sweep(root) else st.render
    if watch:
        st.watch(manifest, render, poll_s=interval, timeout_s=timeout)
        return
    current = st.wait(manifest, poll_s=interval, timeout_s=timeout) if wait else states(manifest)
    typer.echo(render(manifest, current))


@app.command()
@_friendly
def rerun(
    grid: Grid,
    failed: bool = False,
    missing: bool = False,
    cells: Annotated[list[str] | None, typer.Option("--cells", help="cell id (prefix); repeatable")] = None,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", "-c", help="cluster profile name or .toml path (default: the sweep's last one)"),
    ] = None,
    max_attempts: int = 0,
    dry_run: bool = False,
) -> None:
    """Resubmit failed and/or missing cells (or --cells ID ...) of a sweep as an array subset.

    The cells go where the sweep went (the cluster profile it was last submitted with) unless --cluster says
    otherwise; missing caches are rebuilt as `sweep` builds them.
    """
    from hpc.plan.grid import sweep_root
    from hpc.plan_text import print_report
    from hpc.scheduler.profiles import load_profile
    from hpc.sweep import rerun as resubmit

    if not (failed or missing or cells):
        raise GeopeftError("say what to rerun: --failed, --missing or --cells ID")
    which = "incomplete" if failed and missing else ("missing" if missing else "failed")
    report = resubmit(
        sweep_root(grid),
        load_profile(cluster) if cluster else None,
        which=which,
        cells=tuple(cells or ()),
        max_attempts=max_attempts,
        dry_run=dry_run,
        grid_file=grid,
    )
    print_report(report, grid)


@app.command()
@_friendly
def tables(grid: Grid) -> None:
    """Collect result.json files into the tidy table and every table (paper layout, comparisons, LaTeX)."""
    from analysis.tables import write_all
    from hpc.plan.grid import sweep_root

    written = write_all(sweep_root(grid))
    for name, path in written.files.items():
        typer.echo(f"{name}: {path}")
    for note in written.notes:
        typer.echo(f"note: {note}")


@app.command()
@_friendly
def report(
    grid: Grid,
    compile_latex: Annotated[bool, typer.Option("--compile/--no-compile", help="compile the PDF with LaTeX")] = True,
) -> None:
    """Every table and figure of a sweep in one PDF (<sweep>/tables/report.pdf; the .tex without LaTeX)."""
    from analysis.report import build_report
    from hpc.plan.grid import sweep_root

    built = build_report(sweep_root(grid), compile_latex=compile_latex)
    for note in built.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"report source: {built.tex}")
    typer.echo(built.message)


@app.command("run-cell")
@_friendly
def run_cell(grid: Grid, index: int) -> None:
    """Run the cell at a manifest index in this process (what SLURM array tasks run, and a debugging aid)."""
    from geopeft.train.faults import defer_preemption
    from hpc.launch.task import CellTask
    from hpc.plan.grid import sweep_root

    defer_preemption()  # SLURM's USR2 warning before training starts is kept, not fatal

    CellTask(str(sweep_root(grid)))(index)


app.command("predict")(_friendly(predict_command))  # options and cell choice in hpc/predict.py
weights_app = typer.Typer(help="Pretrained weights: the catalogue, fetching files, verifying them.")
app.add_typer(weights_app, name="weights")
Names = Annotated[list[str] | None, typer.Argument(help="catalogue names; default: every name the grid needs")]
GridOpt = Annotated[Path | None, typer.Option("--grid", help="take the weights root (and names) from this grid")]
Root = Annotated[Path | None, typer.Option("--root", help="the weights directory (the grid's `weights`)")]


def _weights_root(root: Path | None, grid: Path | None) -> tuple[Path, list[str]]:
    """The weights root from --root or --grid, and the names the grid needs (none without a grid)."""
    if grid is None:
        if root is None:
            raise GeopeftError("say where the weights lie: --root DIR or --grid GRID")
        return root, []
    from hpc.plan.grid import load_grid
    from hpc.prepare.weights import needed_weights

    loaded = load_grid(grid)
    return root or Path(loaded.env.weights_root), needed_weights(loaded.cells)


@weights_app.callback(invoke_without_command=True)
@_friendly
def weights(ctx: typer.Context, root: Root = None, grid: GridOpt = None) -> None:
    """List the weights catalogue; with --root or --grid, also each file's state (missing, unverified, sha256)."""
    if ctx.invoked_subcommand is not None:
        return
    from hpc.prepare.weights import catalogue, format_catalogue

    where = _weights_root(root, grid)[0] if (root or grid) else None
    typer.echo(format_catalogue(catalogue(where)))
    if where is not None:
        typer.echo(f"weights root: {where}")


@weights_app.command("fetch")
@_friendly
def weights_fetch(
    names: Names = None,
    root: Root = None,
    grid: GridOpt = None,
    url: Annotated[str | None, typer.Option(help="download from here instead (a mirror; file:// works)")] = None,
    sha256: Annotated[str | None, typer.Option(help="the SHA-256 the file must have (pins it)")] = None,
    force: Annotated[bool, typer.Option(help="download again even when the file exists")] = False,
) -> None:
    """Download weights files into the weights root (atomically, hashed, with a .sha256 sidecar)."""
    from hpc.prepare.weights import fetch

    where, needed = _weights_root(root, grid)
    chosen = list(names or needed)
    if not chosen and grid is None:
        raise GeopeftError("name what to fetch (geopeft weights lists the names), or give --grid GRID")
    if not chosen:
        typer.echo(f"{grid}: every cell has weights none; nothing to fetch")
        return
    if (url or sha256) and len(chosen) != 1:
        raise GeopeftError(f"--url and --sha256 apply to one name; got {len(chosen)}: {', '.join(chosen)}")
    for name in chosen:
        got = fetch(name, where, url=url, sha256=sha256, force=force)
        verb = "downloaded" if got.downloaded else "present"
        typer.echo(f"{name}: {verb} {got.path} (sha256 {got.sha256})")


@weights_app.command("verify")
@_friendly
def weights_verify(
    names: Names = None,
    root: Root = None,
    grid: GridOpt = None,
    sha256: Annotated[str | None, typer.Option(help="the SHA-256 the file must have")] = None,
) -> None:
    """Hash weights files, check them against their sidecar (and --sha256), and record the sidecar."""
    from hpc.prepare.weights import verify

    where, needed = _weights_root(root, grid)
    chosen = list(names or needed)
    if not chosen:
        raise GeopeftError("name what to verify, or give a --grid whose cells load weights")
    if sha256 and len(chosen) != 1:
        raise GeopeftError(f"--sha256 applies to one name; got {len(chosen)}: {', '.join(chosen)}")
    for name in chosen:
        typer.echo(f"{name}: sha256 {verify(name, where, sha256=sha256)} (recorded in its .sha256 sidecar)")


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return app(args=argv if argv is not None else sys.argv[1:])
