"""The callables submitit runs: the cell at one manifest index, and the cache-prepare job.

They are small and pickled by submitit; the heavy imports (torch, peft) happen inside ``__call__`` on the compute
node, which imports this module from the submission's code snapshot (``PYTHONPATH``, :mod:`hpc.launch.snapshot`).

With several tasks per job (submitit's ``srun``, one process per GPU) every task calls :class:`CellTask`; before
the cell starts, submitit's ``TorchDistributedEnvironment`` exports the rendezvous (``MASTER_ADDR``, a
``MASTER_PORT`` drawn from the job id, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) from the SLURM variables, and the
cell takes its ranks from them; only rank 0 writes files.

SIGUSR2 (``--signal=USR2@lead``, SLURM's warning before the time limit) has one owner at a time. While the cell
trains, :class:`geopeft.train.faults.Preemption` owns it: the ranks stop together at an optimiser step and rank 0
writes ``ckpt/last.pt``; the attempt ends as ``preempted``, and rank 0 requeues the array task through submitit, as
a ``Checkpointable``: :meth:`CellTask.checkpoint` gives the same call again, submitit pickles it for the task and
runs ``scontrol requeue``. Before and after training submitit's own USR2 handler is in place and does the same.
Either way the requeued task resumes from ``ckpt/last.pt``. submitit lets a task ignore SIGTERM; a cell does not:
``scancel`` and ``scontrol requeue`` end it at once, as they end any job.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import submitit
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import DelayedSubmission, UncompletedJobError

from geopeft.errors import CellFailed
from geopeft.paths import SweepPaths
from hpc.scheduler.locks import slot
from hpc.state.manifest import read_manifest


class CellTask(submitit.helpers.Checkpointable):
    """Run the cell at a manifest index of the sweep in ``root``.

    Args:
        root: the sweep directory (holds manifest.json).
        max_parallel: cap on cells running at once through file slots; 0 leaves it to the scheduler.
    """

    def __init__(self, root: str, max_parallel: int = 0) -> None:
        self.root = root
        self.max_parallel = max_parallel

    def __call__(self, index: int) -> str:
        """Train and test the cell; return its cell id."""
        from geopeft.cell import run_cell
        from geopeft.train.faults import requeue

        manifest = read_manifest(self.root)
        entry = manifest.entry(index)
        paths = manifest.paths.cell(entry.cell_id)
        on_slurm = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
        if on_slurm:  # submitit ignores SIGTERM; scancel and scontrol requeue must end a cell as they end a job
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if on_slurm and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        slots = manifest.paths.slots
        cap = slot(slots, self.max_parallel) if self.max_parallel else contextlib.nullcontext()
        with cap:
            run_cell(entry.spec, manifest.env, paths, requeue=(lambda: self.requeue(index)) if on_slurm else requeue)
        return entry.cell_id

    def requeue(self, index: int) -> str:
        """Requeue this array task through submitit, as its USR2 handler would: the job id requeued.

        submitit calls :meth:`checkpoint` (the same call, resumed from the cell's directory), writes it where the
        task reads its call, and runs ``scontrol requeue``; the cell then returns instead of exiting at once, so its
        lease and records are closed first.

        Raises:
            CellFailed: submitit refused (too many requeues) or ``scontrol requeue`` failed (class ``preempted``).
        """
        env = submitit.JobEnvironment()
        current = DelayedSubmission.load(env.paths.submitted_pickle)
        try:
            _Requeuer(env, env.paths, current).checkpoint_and_try_requeue(signal.SIGUSR2)
        except (UncompletedJobError, OSError, RuntimeError) as exc:
            raise CellFailed(
                f"requeue of job {env.job_id} through submitit failed ({exc}); rerun the cell with geopeft rerun "
                "--failed",
                reason="preempted",
            ) from exc
        return str(env.job_id)


class _Requeuer(SignalHandler):
    """submitit's preemption handler, without its exit: the cell ends its attempt itself."""

    def _exit(self) -> None:
        """Return to the cell (submitit's handler would ``sys.exit`` here)."""


class PrepareTask:
    """The cache-prepare job: build (or verify and reuse) each dataset's cache, then leave the success marker.

    The sweep's arrays wait for this job (``afterok``); status reads the marker ``slurm/logs/prepare-<job>.ok``
    to tell a prepare job that succeeded from one that failed once it has left the queue.

    Args:
        root: the sweep directory.
        commands: ``geopeft prepare`` argument lists (``prepare DATASET --raw DIR --cache DIR [--splits DIR]``).
    """

    def __init__(self, root: str, commands: Sequence[Sequence[str]]) -> None:
        self.root = root
        self.commands = [list(c) for c in commands]

    def __call__(self) -> None:
        """Build every cache in this process, then write the marker."""
        from geopeft.cache.build import prepare

        for argv in self.commands:
            options = dict(zip(argv[2::2], argv[3::2], strict=True))  # prepare DATASET --raw DIR --cache DIR ...
            splits = options.get("--splits")
            prepare(argv[1], options["--raw"], options["--cache"], splits_dir=splits, progress=False)
        job = os.environ.get("SLURM_JOB_ID", "")
        marker = SweepPaths(Path(self.root)).prepare_ok(job)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
