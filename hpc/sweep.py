"""``sweep`` and ``rerun``: decide which manifest indices to submit, then submit them as one array.

Both hold the sweep's lock while they plan and submit, so two of them never submit the same cell.
Done, running and pending cells are never submitted again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from geopeft.errors import ConfigError, SubmitError
from geopeft.io import read_jsonl
from geopeft.paths import SweepPaths
from hpc.launch.admission import check_submission, refusals
from hpc.launch.submit import Submission, submit_indices
from hpc.plan.grid import load_grid
from hpc.plan.lr_search import is_search_sweep
from hpc.plan.manifests import plan
from hpc.prepare.caches import RawSource
from hpc.scheduler.locks import exclusive
from hpc.scheduler.profiles import ClusterProfile, Executor, load_profile, record_profile, recorded_profile
from hpc.state.cells import CellState, State, states
from hpc.state.manifest import Manifest, read_manifest, write_manifest

RERUN_CHOICES = ("failed", "missing", "incomplete")


@dataclass(frozen=True)
class SweepReport:
    """What a sweep or rerun did (``submission``: scripts, sbatch lines, prepare job, GPU-hour estimate).

    ``waiting`` names the cells held back until their learning-rate search is done (:mod:`hpc.plan.lr_search`);
    ``blockers`` (dry runs only) what would refuse the real submission: missing caches, weights, partitions.
    """

    manifest: Manifest
    submitted: tuple[int, ...]
    skipped: dict[State, int]
    job_ids: tuple[str, ...]
    dry_run: bool
    submission: Submission = field(default_factory=Submission)
    waiting: tuple[str, ...] = ()
    blockers: tuple[str, ...] = ()


def sweep(
    grid_file: str | Path, profile: ClusterProfile, *, dry_run: bool = False, stage: str = "seeds"
) -> SweepReport:
    """Plan ``grid_file`` into its manifest and submit every cell not done, running or pending.

    ``stage`` is ``seeds`` (every cell at its written or chosen rate) or ``lr`` (the learning-rate search into
    ``<output>/lr-search``; see :mod:`hpc.plan.lr_search`).
    """
    from hpc.plan.lr_search import record
    from hpc.prepare.caches import build_caches, local_builds, prepare_commands
    from hpc.prepare.weights import check_weights

    grid = load_grid(grid_file, stage=stage)
    slurm = profile.executor == Executor.SLURM
    datasets = {c.dataset for c in grid.cells}
    blockers: list[str] = []
    prepare: list[list[str]] = []  # SLURM builds missing caches in a prepare job, a local sweep here
    builds: list[RawSource] = []
    if slurm:
        blockers += refusals(lambda: prepare.extend(prepare_commands(grid)), dry_run)
    else:
        root = grid.env.cache_root
        blockers += refusals(lambda: builds.extend(local_builds(grid, datasets, root, str(grid.path))), dry_run)
    paths = SweepPaths(grid.output)
    with contextlib.nullcontext() if dry_run else exclusive(paths.lock):  # a dry run writes nothing
        existing = read_manifest(paths.root) if paths.manifest.exists() else None
        manifest = plan(grid, existing)
        current = states(manifest)
        todo = [i for i, s in current.items() if s.state in (State.FAILED, State.MISSING)]
        specs = [manifest.entry(i).spec for i in todo]
        blockers += refusals(
            lambda: check_weights(specs, grid.env.weights_root, str(grid.path), grid=grid.path), dry_run
        )
        blockers += refusals(lambda: check_submission(manifest, todo, profile), dry_run)  # before any write
        if not dry_run:
            write_manifest(manifest)
            if grid.plan is not None:
                record(grid.stage, grid.plan.root, grid.plan.settings, grid.plan.new)
            if todo:
                build_caches(builds, grid.env.cache_root)
        report = _submit(manifest, todo, current, profile, "sweep", dry_run, prepare)
        every = (*blockers, *report.submission.blockers)
        return replace(
            report, waiting=tuple(grid.plan.waiting) if grid.plan else (), blockers=tuple(dict.fromkeys(every))
        )


def rerun(
    root: str | Path,
    profile: ClusterProfile | None = None,
    *,
    which: str = "failed",
    cells: tuple[str, ...] = (),
    max_attempts: int = 0,
    dry_run: bool = False,
    grid_file: str | Path | None = None,
) -> SweepReport:
    """Resubmit failed, missing or named cells of an existing sweep as an array subset.

    A rerun goes where the sweep went: without ``profile`` it uses the cluster profile the sweep was last
    submitted with (``<root>/cluster.json``); a SLURM sweep never falls back to this machine. Caches that went
    missing or corrupt since are rebuilt as the sweep builds them (a prepare job the array waits for on SLURM;
    an error with the command to run on the local executor).

    Args:
        root: the sweep directory.
        profile: where to run; None for the recorded profile.
        which: ``failed``, ``missing`` or ``incomplete`` (both); ignored when ``cells`` is given.
        cells: explicit cell ids (a unique prefix is enough) to resubmit whatever their state,
            unless running or pending.
        max_attempts: skip cells that already had this many attempts (0 = no limit).
        dry_run: report without submitting.
        grid_file: the grid whose ``raw`` mapping builds missing caches (default: the manifest's grid file).
    """
    if which not in RERUN_CHOICES:
        raise ConfigError(f"unknown rerun selection {which!r}; allowed: {', '.join(RERUN_CHOICES)}")
    paths = SweepPaths(Path(root))
    with contextlib.nullcontext() if dry_run else exclusive(paths.lock):
        manifest = read_manifest(paths.root)
        profile = profile or submitted_profile(paths)
        current = states(manifest)
        if cells:
            chosen = [_resolve(manifest, c) for c in cells]
            busy = [i for i in chosen if current[i].state in (State.RUNNING, State.PENDING)]
            if busy:
                raise SubmitError(f"cell {manifest.entry(busy[0]).cell_id} is {current[busy[0]].state}; wait for it")
            todo = chosen
        else:
            wanted = {"failed": {State.FAILED}, "missing": {State.MISSING}}.get(which, {State.FAILED, State.MISSING})
            todo = [i for i, s in current.items() if s.state in wanted]
        if max_attempts:
            todo = [i for i in todo if current[i].attempts < max_attempts]
        prepare: list[list[str]] = []
        builds: list[RawSource] = []
        blockers: list[str] = []
        if todo:
            from hpc.prepare.weights import check_weights

            specs = [manifest.entry(i).spec for i in todo]
            blockers += refusals(lambda: check_weights(specs, manifest.env.weights_root, str(paths.root)), dry_run)

            def caches() -> None:
                commands, sources = _rerun_caches(manifest, todo, profile, grid_file)
                prepare.extend(commands)
                builds.extend(sources)

            blockers += refusals(caches, dry_run)
            blockers += refusals(lambda: check_submission(manifest, todo, profile), dry_run)
            if builds and not dry_run:
                from hpc.prepare.caches import build_caches

                build_caches(builds, manifest.env.cache_root)
        report = _submit(manifest, todo, current, profile, "rerun", dry_run, prepare)
        return replace(report, blockers=tuple(dict.fromkeys((*blockers, *report.submission.blockers))))


def submitted_profile(paths: SweepPaths) -> ClusterProfile:
    """The cluster profile the sweep at ``paths`` was last submitted with.

    Raises:
        SubmitError: nothing was recorded and the sweep's submissions went to SLURM (a rerun must not run
            its cells on the login node), so the profile must be named.
    """
    recorded = recorded_profile(paths.cluster)
    if recorded is not None:
        return recorded
    executors = {str(r.get("executor")) for r in read_jsonl(paths.submissions)}
    if executors - {Executor.LOCAL}:
        raise SubmitError(
            f"{paths.root}: this sweep was submitted to {', '.join(sorted(executors - {'local'}))} but its cluster "
            f"profile is not recorded ({paths.cluster}); pass --cluster PROFILE"
        )
    return load_profile("local")


def _rerun_caches(
    manifest: Manifest, todo: list[int], profile: ClusterProfile, grid_file: str | Path | None
) -> tuple[list[list[str]], list[RawSource]]:
    """How the caches the cells at ``todo`` need and lack are built: prepare commands (SLURM) or sources (local).

    The grid (whose ``raw`` says where the native files are) is read only when a cache is missing.
    """
    from hpc.prepare.caches import local_builds, missing_caches, prepare_commands

    datasets = {manifest.entry(i).spec.dataset for i in todo}
    root = manifest.env.cache_root
    if not missing_caches(datasets, root):
        return [], []
    source = Path(grid_file or manifest.grid_file)
    grid = (
        load_grid(source, stage="lr" if is_search_sweep(manifest.paths.root) else "seeds")
        if source.is_file()
        else None
    )
    if profile.executor != Executor.SLURM:
        return [], local_builds(grid, datasets, root, str(manifest.paths.root))
    if grid is None:
        raise SubmitError(
            f"{manifest.paths.root}: the caches of {', '.join(sorted(datasets))} in {root} need rebuilding, "
            f"but the grid file {source} that says where the native files are is gone; rerun with the grid path"
        )
    return prepare_commands(grid, datasets, root), []


def _resolve(manifest: Manifest, prefix: str) -> int:
    matches = [e.index for e in manifest.active() if e.cell_id.startswith(prefix)]
    if len(matches) != 1:
        what = "no cell" if not matches else f"{len(matches)} cells"
        raise ConfigError(f"{manifest.paths.manifest}: {what} with id starting {prefix!r}; see `geopeft status`")
    return matches[0]


def _submit(
    manifest: Manifest,
    todo: list[int],
    current: dict[int, CellState],
    profile: ClusterProfile,
    kind: str,
    dry_run: bool,
    prepare: Sequence[Sequence[str]] = (),
) -> SweepReport:
    skipped: dict[State, int] = {}
    for i, s in current.items():
        if i not in todo:
            skipped[s.state] = skipped.get(s.state, 0) + 1
    done = submit_indices(manifest, sorted(todo), profile, kind, prepare=prepare, dry_run=dry_run, checked=True)
    if todo and not dry_run:
        record_profile(manifest.paths.cluster, profile)
    return SweepReport(manifest, tuple(sorted(todo)), skipped, done.job_ids, dry_run, done)
