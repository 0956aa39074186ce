"""Planning, submitting and status at the scale of a large study: 10,000 cells.

Plans a 10,000-cell grid and submits it through the SLURM path with ``sbatch`` replaced by a counter
(targets: <= 5 s together), then computes the status of 10,000 cell directories from their files
(target: <= 1 s). Prints the figures and the ratio to each target. Run: ``.venv/bin/python bench/plan_scale.py``.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from geopeft.attempts import end_attempt, start_attempt
from geopeft.io import atomic_write_json
from hpc.launch.submit import submit_indices
from hpc.scheduler.profiles import load_profile
from hpc.state.cells import states
from hpc.status import render

N = 10_000
GRID = """
name: scale
output: {root}/runs
cache: {root}/cache
raw: {{sen1floods11: {root}/raw}}
defaults: {{model: {{name: prithvi_tiny}}, train: {{lr: 1.0e-3}}}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: full}}, {{method: lora, options: {{r: 8}}}}]
  seed: {seeds}
"""


class Counter:
    """Stands in for sbatch, sinfo and scontrol; counts the sbatch calls."""

    def __init__(self) -> None:
        self.sbatch = 0

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> str:
        """Answer like the test cluster; sbatch prints the next job id."""
        if argv[0] == "sinfo":
            return "debug\n"
        if argv[0] == "scontrol":
            return "MaxArraySize = 1001\n"
        self.sbatch += 1
        return f"{1000 + self.sbatch}\n"


def main() -> None:
    """Print the timings of planning + submitting and of status for 10,000 cells."""
    import geopeft.data.registry
    import geopeft.models.build
    import geopeft.tuning.registry  # noqa: F401 - the registries (and torch) load before the clock starts
    from hpc.plan.grid import load_grid
    from hpc.plan.manifests import plan
    from hpc.state.manifest import write_manifest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        grid_file = root / "grid.yaml"
        grid_file.write_text(textwrap.dedent(GRID.format(root=root, seeds=list(range(N // 2)))))
        profile = load_profile("slurm-test")
        counter = Counter()

        t0 = time.perf_counter()
        grid = load_grid(grid_file)
        manifest = plan(grid)
        write_manifest(manifest)
        todo = sorted(states(manifest))
        t_plan = time.perf_counter() - t0
        done = submit_indices(manifest, todo, profile, "sweep", prepare=[["prepare", "sen1floods11"]], runner=counter)
        t_submit = time.perf_counter() - t0
        assert len(done.job_ids) == N and counter.sbatch == 1 + (N + 1000) // 1001

        for e in manifest.entries:  # every cell with an attempt log and a result, a tenth of them failed
            cell = manifest.paths.cell(e.cell_id)
            n = start_attempt(cell)
            end_attempt(cell, n, "failed" if e.index % 10 == 0 else "success", "oom" if e.index % 10 == 0 else "")
            if e.index % 10:
                atomic_write_json(cell.result, {"status": "success"})
        t1 = time.perf_counter()
        current = states(manifest)
        text = render(manifest, current)
        t_status = time.perf_counter() - t1
        assert f"{N} cells: {N - N // 10} done, {N // 10} failed" in text

    print(f"cells: {N}; sbatch calls: {counter.sbatch} (1 prepare + {counter.sbatch - 1} arrays of <= 1001)")
    print(f"plan (expand + validate + manifest + states): {t_plan:.2f} s")
    print(f"plan + submit (render, write scripts, record): {t_submit:.2f} s  (target 5 s: {t_submit / 5:.2f} of it)")
    print(f"status of {N} cell directories + render: {t_status:.2f} s  (target 1 s: {t_status:.2f} of it)")
    if t_submit > 5 or t_status > 1:
        sys.exit("plan_scale: over target")


if __name__ == "__main__":
    main()
