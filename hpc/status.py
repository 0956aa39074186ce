"""``geopeft status``: the grid of cells as a table, from the files alone.

Rows are model × method × decoder, columns are datasets; each entry has one mark per seed.
Failed cells are listed below the grid with their failure class and last error line.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from hpc.manifest import Manifest
from hpc.state import CellState, State
from hpc.sweep import states

MARKS = {State.DONE: "✓", State.FAILED: "✗", State.RUNNING: "▶", State.PENDING: "…", State.MISSING: "·"}


def counts(current: dict[int, CellState]) -> Counter[State]:
    """How many cells are in each state."""
    return Counter(s.state for s in current.values())


def summary_line(current: dict[int, CellState]) -> str:
    """E.g. ``4 cells: 3 done, 1 failed, 0 running, 0 pending, 0 missing``."""
    c = counts(current)
    return f"{len(current)} cells: " + ", ".join(f"{c.get(s, 0)} {s.value}" for s in State)


def render(manifest: Manifest, current: dict[int, CellState]) -> str:
    """The status grid, the failed cells and a summary line."""
    entries = {e.index: e for e in manifest.active()}
    rows: dict[tuple[str, str, str], dict[str, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
    datasets: list[str] = []
    for i, e in entries.items():
        s = e.spec
        if s.dataset not in datasets:
            datasets.append(s.dataset)
        rows[(s.model.label, s.tuning.method, s.decoder.name)][s.dataset].append((s.seed, MARKS[current[i].state]))
    header = ["model", "method", "decoder", *datasets]
    table = [header]
    for key in rows:
        marks = ["".join(m for _, m in sorted(rows[key][d])) or "-" for d in datasets]
        table.append([*key, *marks])
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    lines = [f"sweep {manifest.name}: {manifest.root}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.append("(one mark per seed: " + "  ".join(f"{m} {s.value}" for s, m in MARKS.items()) + ")")
    failed = [(i, current[i]) for i in entries if current[i].state is State.FAILED]
    if failed:
        lines.append("failed:")
        for i, st in failed:
            e = entries[i]
            lines.append(f"  [{i}] {e.cell_id} {e.spec.slug}  {st.reason}: {st.detail} (attempts: {st.attempts})")
    running = [(i, current[i]) for i in entries if current[i].state is State.RUNNING]
    for i, st in running:
        lines.append(f"  running [{i}] {entries[i].spec.slug}: {st.detail}")
    lines.append(summary_line(current))
    return "\n".join(lines)


def wait(manifest: Manifest, *, poll_s: float = 2.0, timeout_s: float = 3600.0) -> dict[int, CellState]:
    """Poll the files until no cell is running or pending (or ``timeout_s`` passed); return the states."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = states(manifest)
        busy = counts(current)
        if not (busy.get(State.RUNNING) or busy.get(State.PENDING)) or time.monotonic() > deadline:
            return current
        time.sleep(poll_s)
