"""The callable each array task runs: the cell at one manifest index.

It is small and pickled by submitit; the heavy imports (torch, peft) happen inside ``__call__`` on
the compute node. With several tasks per job (``srun``, one per GPU) every task calls it and the cell
takes its ranks from SLURM's variables; only rank 0 writes files.

SIGUSR2 (``--signal=USR2@N``, SLURM's warning before the time limit) has one owner at a time. While the cell
trains, :class:`geopeft.train.faults.Preemption` owns it: the ranks stop together at an optimiser step, rank 0
writes ``ckpt/last.pt`` and the attempt ends as ``preempted``, after which the cell runs ``scontrol requeue`` on
this array task itself. Before and after training submitit's own handler is in place; as a ``Checkpointable``
this task is then resubmitted with the same index. Either way the cell resumes from ``ckpt/last.pt``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import submitit

from hpc.locks import slot
from hpc.manifest import read_manifest


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

        manifest = read_manifest(self.root)
        entry = manifest.entry(index)
        paths = manifest.paths.cell(entry.cell_id)
        cap = slot(Path(self.root) / ".slots", self.max_parallel) if self.max_parallel else contextlib.nullcontext()
        with cap:
            run_cell(entry.spec, manifest.env, paths)
        return entry.cell_id
