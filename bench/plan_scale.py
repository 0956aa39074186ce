"""Planning, submitting and status at the scale of a large study: 10,000 cells.

Plans a 10,000-cell grid and submits it through the SLURM path (submitit's executor, with a stand-in ``sbatch``
first on PATH that counts the submissions and never reaches a cluster; targets: <= 5 s together), then computes
the status of 10,000 cell directories from their files, each result read and checked (target: <= 1 s). Prints the
figures and the ratio to each target. Run: ``.venv/bin/python bench/plan_scale.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from geopeft.attempts import end_attempt, start_attempt
from geopeft.io import atomic_write_json
from geopeft.result import CellResult, RegionMetrics, TrainSummary
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


#: A valid result.json (status reads and checks every one); its numbers do not matter here.
RESULT = CellResult(
    cell_id="",
    slug="",
    spec={},
    regions={"test": RegionMetrics(0.5, (0.5, 0.5), 0.9, 0.3, 4, 2)},
    train=TrainSummary(1, 2, 3.0, 1.5, 10.0, 100.0, "cpu", 1, 0.1, attempt_times_s=(3.0,)),
    params={"trainable": 1, "total": 2},
    provenance={},
)
#: Stands in for sbatch: counts the submissions and answers like SLURM.
SBATCH = """#!/bin/sh
n=$(( $(cat "$(dirname "$0")/count" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$(dirname "$0")/count"
echo "Submitted batch job $((1000 + n))"
"""


def answer(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Stands in for sinfo and scontrol: the test cluster's answers."""
    if argv[0] == "sinfo":
        return "vm|2|22057|(null)\n" if "--Node" in argv else "debug\n"
    return "MaxArraySize = 1001\n"


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
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "sbatch").write_text(SBATCH)
        (bin_dir / "sbatch").chmod(0o755)
        os.environ["PATH"] = f"{bin_dir}:{os.environ['PATH']}"

        t0 = time.perf_counter()
        grid = load_grid(grid_file)
        manifest = plan(grid)
        write_manifest(manifest)
        todo = sorted(states(manifest))
        t_plan = time.perf_counter() - t0
        done = submit_indices(manifest, todo, profile, "sweep", prepare=[["prepare", "sen1floods11"]], runner=answer)
        t_submit = time.perf_counter() - t0
        sbatch_calls = int((bin_dir / "count").read_text())
        assert len(done.job_ids) == N and sbatch_calls == 1 + (N + 1000) // 1001

        for e in manifest.entries:  # every cell with an attempt log and a result, a tenth of them failed
            cell = manifest.paths.cell(e.cell_id)
            n = start_attempt(cell)
            end_attempt(cell, n, "failed" if e.index % 10 == 0 else "success", "oom" if e.index % 10 == 0 else "")
            if e.index % 10:
                atomic_write_json(cell.result, RESULT.to_dict() | {"cell_id": e.cell_id, "slug": e.spec.slug})
        t1 = time.perf_counter()
        current = states(manifest)
        text = render(manifest, current)
        t_status = time.perf_counter() - t1
        assert f"{N} cells: {N - N // 10} done, {N // 10} failed" in text

    print(f"cells: {N}; sbatch calls: {sbatch_calls} (1 prepare + {sbatch_calls - 1} arrays of <= 1001)")
    print(f"plan (expand + validate + manifest + states): {t_plan:.2f} s")
    print(f"plan + submit (submitit: scripts, pickles, record): {t_submit:.2f} s  (target 5 s: {t_submit / 5:.2f})")
    print(f"status of {N} cell directories + render: {t_status:.2f} s  (target 1 s: {t_status:.2f} of it)")
    if t_submit > 5 or t_status > 1:
        sys.exit("plan_scale: over target")


if __name__ == "__main__":
    main()
