"""``make demo``: the whole workflow on the embedded default, with one real fault injected.

1. write synthetic Sen1Floods11 chips in the native layout (GeoTIFFs, split files, metadata);
2. ``geopeft prepare``: build the HDF5 cache (reused on a second run);
3. ``geopeft sweep sweeps/demo.yaml``: submit the grid through submitit's local executor;
4. SIGKILL one running cell mid-training (a real fault: no chance to write anything);
5. ``geopeft status --wait``: the killed cell shows as failed (``lost``);
6. ``geopeft rerun --failed``: only that cell is resubmitted; it resumes from its last checkpoint;
7. ``geopeft tables``: tidy CSV and LaTeX tables; ``geopeft report``: the PDF report (the .tex without LaTeX).

Run twice, it reuses the cache and the finished cells and says so.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from geopeft.attempts import read_attempts
from geopeft.io import read_json
from hpc.cli import app
from hpc.plan.grid import sweep_root
from hpc.state.cells import State, states
from hpc.state.manifest import read_manifest

GRID = Path("sweeps/demo.yaml")
RAW = Path("data/raw/sen1floods11")
CACHE = Path("data/cache")


def _run(*args: str) -> None:
    print(f"\n$ geopeft {' '.join(args)}", flush=True)
    app(args=list(args), standalone_mode=False)


def _step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def kill_one_running_cell(root: Path, timeout_s: float = 600.0) -> str | None:
    """Wait for a cell that finished at least one epoch, SIGKILL it, and return its slug."""
    manifest = read_manifest(root)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = states(manifest)
        if not any(s.state in (State.RUNNING, State.PENDING) for s in current.values()):
            return None
        for index, st in current.items():
            if st.state is not State.RUNNING:
                continue
            entry = manifest.entry(index)
            paths = manifest.paths.cell(entry.cell_id)
            if not paths.progress.exists() or read_json(paths.progress)["epoch"] < 1:
                continue
            pid = int(read_attempts(paths)[-1]["pid"])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it finished between the check and the kill
                continue
            return f"{entry.spec.slug} (pid {pid}, after epoch {read_json(paths.progress)['epoch']})"
        time.sleep(0.1)
    return None


def main() -> None:
    """Run the demo from the repository root."""
    _step("1/7 synthetic Sen1Floods11 in the native layout (13-band int16 GeoTIFFs, -1/0/1 labels)")
    _run("synth", "sen1floods11", "--out", str(RAW))
    _step("2/7 HDF5 cache, built once and reused while the sources are unchanged")
    _run("prepare", "sen1floods11", "--raw", str(RAW), "--cache", str(CACHE), "--splits", str(RAW / "splits"))
    _step("3/7 the sweep: one array on the local executor; returns at once")
    _run("sweep", str(GRID))
    _step("4/7 a real fault: SIGKILL one cell while it trains")
    root = sweep_root(GRID)
    killed = kill_one_running_cell(root)
    print(f"killed {killed}" if killed else "nothing is running: every cell was already done, nothing to kill")
    _step("5/7 status once nothing is running")
    _run("status", str(GRID), "--wait")
    _step("6/7 rerun only the failed cells (the killed one resumes from its last checkpoint)")
    _run("rerun", str(GRID), "--failed")
    _run("status", str(GRID), "--wait")
    _step("7/7 tables, then the report (one PDF with every table and figure)")
    _run("tables", str(GRID))
    current = states(read_manifest(root))
    if any(s.state is not State.DONE for s in current.values()):
        raise SystemExit("demo: some cells did not finish; see `geopeft status sweeps/demo.yaml`")
    _run("report", str(GRID))


if __name__ == "__main__":
    main()
