"""The one place that knows the on-disk layout of a sweep and its cells (submitit ``JobPaths`` style).

::

    <root>/manifest.json            index -> cell id -> spec, plus the run environment
    <root>/submissions.jsonl        one line per submitted array (job ids, indices, executor)
    <root>/.lock                    held while a sweep or rerun submits
    <root>/.slots/                  the local executor's cap on cells running at once
    <root>/code/<hash>/             the code snapshot each submission runs
    <root>/lr-search/               the learning-rate search stage, a sweep of its own (search.json marks it)
    <root>/lr_choices.json          the rate chosen for each searched cell
    <root>/cluster.json             the cluster profile of the last submission (what ``rerun`` uses)
    <root>/submitit/%j/             submitit's scripts, pickles and logs (``<job>_0_log.out``) of every job
    <root>/slurm/*.sbatch           a copy of the script of every SLURM job submitted (what was submitted)
    <root>/slurm/logs/              prepare-<job>.ok, the marker of a cache-prepare job that succeeded
    <root>/tables/                  collected results, LaTeX tables
    <root>/cells/<cell_id>/spec.json, attempts.jsonl, progress.json, metrics.jsonl, lease/<generation>.json,
                           ckpt/{best,last}.pt, result.json | failed.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepPaths:
    """Paths of one sweep directory."""

    root: Path

    @property
    def manifest(self) -> Path:
        """Index -> cell id -> spec."""
        return self.root / "manifest.json"

    @property
    def submissions(self) -> Path:
        """Log of submitted arrays."""
        return self.root / "submissions.jsonl"

    @property
    def lock(self) -> Path:
        """Lock file held while submitting."""
        return self.root / ".lock"

    @property
    def cluster(self) -> Path:
        """The cluster profile the sweep was last submitted with (``rerun`` uses it unless told otherwise)."""
        return self.root / "cluster.json"

    @property
    def code_dir(self) -> Path:
        """The code snapshots of the submissions (``<hash>/`` each, :mod:`hpc.launch.snapshot`)."""
        return self.root / "code"

    @property
    def slots(self) -> Path:
        """The slot files that cap the cells running at once on the local executor."""
        return self.root / ".slots"

    @property
    def search(self) -> SweepPaths:
        """The sweep of the learning-rate search stage (``--stage lr``) of this sweep."""
        return SweepPaths(self.root / "lr-search")

    @property
    def search_settings(self) -> Path:
        """In a search sweep: the ``lr_search`` block it was submitted with (what marks a search sweep)."""
        return self.root / "search.json"

    @property
    def lr_choices(self) -> Path:
        """The learning rate chosen for each searched cell (recorded once, never changed)."""
        return self.root / "lr_choices.json"

    @property
    def submitit_dir(self) -> Path:
        """Submitit folder; ``%j`` is replaced by the job id."""
        return self.root / "submitit" / "%j"

    @property
    def slurm_dir(self) -> Path:
        """A copy of every sbatch script submitted (kept: they record what was submitted)."""
        return self.root / "slurm"

    @property
    def slurm_logs(self) -> Path:
        """The logs of the SLURM jobs."""
        return self.slurm_dir / "logs"

    def prepare_log(self, job_id: str) -> Path:
        """The log of cache-prepare job ``job_id`` (submitit's, stdout and stderr together)."""
        return self.job_log(job_id)

    def job_log(self, job_id: str) -> Path:
        """The log of SLURM job ``job_id`` (``<array>_<task>`` for an array task) as submitit writes it."""
        return self.root / "submitit" / job_id / f"{job_id}_0_log.out"

    def prepare_ok(self, job_id: str) -> Path:
        """Written by cache-prepare job ``job_id`` as its last step, when every cache was built or verified."""
        return self.slurm_logs / f"prepare-{job_id}.ok"

    @property
    def tables_dir(self) -> Path:
        """Output of ``geopeft tables``."""
        return self.root / "tables"

    @property
    def cells_dir(self) -> Path:
        """Parent of every cell directory."""
        return self.root / "cells"

    def cell(self, cell_id: str) -> CellPaths:
        """Paths of one cell of this sweep."""
        return CellPaths(self.cells_dir / cell_id)


@dataclass(frozen=True)
class CellPaths:
    """Paths inside one cell directory."""

    dir: Path

    @property
    def spec(self) -> Path:
        """The resolved cell spec."""
        return self.dir / "spec.json"

    @property
    def result(self) -> Path:
        """Written once, atomically, when the cell succeeds."""
        return self.dir / "result.json"

    @property
    def failed(self) -> Path:
        """Written atomically when an attempt fails with an exception."""
        return self.dir / "failed.json"

    @property
    def attempts(self) -> Path:
        """One JSON line per attempt start and end."""
        return self.dir / "attempts.jsonl"

    @property
    def progress(self) -> Path:
        """Heartbeat rewritten every epoch (epoch, time)."""
        return self.dir / "progress.json"

    @property
    def lease_dir(self) -> Path:
        """The cell's lease generations (:mod:`geopeft.lease`): one live owner at a time."""
        return self.dir / "lease"

    @property
    def metrics_log(self) -> Path:
        """One JSON line per epoch."""
        return self.dir / "metrics.jsonl"

    @property
    def ckpt_dir(self) -> Path:
        """Checkpoints."""
        return self.dir / "ckpt"

    @property
    def best_ckpt(self) -> Path:
        """Best-validation-loss weights."""
        return self.ckpt_dir / "best.pt"

    @property
    def last_ckpt(self) -> Path:
        """Full training state after the last finished epoch, for resume."""
        return self.ckpt_dir / "last.pt"
