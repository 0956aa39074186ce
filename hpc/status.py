"""``geopeft status``: the grid of cells as a table, from the files alone.

Rows are model × method × decoder, columns are datasets; each entry has one mark per seed. Cells that would share
a row, dataset and seed (a grid that varies the precision, the learning rate or the bands of one model × method ×
decoder) get a ``settings`` column naming what tells them apart, e.g. ``train.precision=bf16``.
Failed cells are listed below the grid with their failure class and last error line.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from geopeft.spec import CellSpec
from geopeft.text import aligned
from hpc.plan.lr_search import recorded_choices, search_label, val_score
from hpc.state.cells import CellState, State, states
from hpc.state.manifest import Manifest

MARKS = {State.DONE: "✓", State.FAILED: "✗", State.RUNNING: "▶", State.PENDING: "…", State.MISSING: "·"}


def counts(current: dict[int, CellState]) -> Counter[State]:
    """How many cells are in each state."""
    return Counter(s.state for s in current.values())


def summary_line(current: dict[int, CellState]) -> str:
    """E.g. ``4 cells: 3 done, 1 failed, 0 running, 0 pending, 0 missing``."""
    c = counts(current)
    return f"{len(current)} cells: " + ", ".join(f"{c.get(s, 0)} {s.value}" for s in State)


def _flat(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted key → JSON value of every leaf of a spec dict."""
    for key, value in d.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", json.dumps(value, sort_keys=True)


def variants(specs: Mapping[int, CellSpec]) -> dict[int, str]:
    """For cells that share model label, method, decoder, dataset and seed: the settings that tell them apart.

    Only such groups are flattened (none in most grids), so the status of 10,000 cells stays fast.
    """

    def row(s: CellSpec) -> tuple[str, str, str]:
        return (s.model.label, s.tuning.method, s.decoder.name)

    seen: Counter[tuple[str, str, str, str, int]] = Counter((*row(s), s.dataset, s.seed) for s in specs.values())
    crowded = {key[:3] for key, n in seen.items() if n > 1}
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, s in specs.items():
        if row(s) in crowded:
            groups[row(s)].append(i)
    out: dict[int, str] = {}
    for members in groups.values():
        # Flatten each distinct (model, tuning, decoder, train) once: a group is mostly seeds and datasets. Every
        # train field is shown, also those to_dict leaves out at their default (activation_checkpointing).
        parts = {i: (specs[i].model, specs[i].tuning, specs[i].decoder, specs[i].train) for i in members}
        first = {part: i for i, part in reversed(parts.items())}
        kinds = {
            part: dict(_flat({**specs[i].to_dict(), "train": asdict(specs[i].train)})) for part, i in first.items()
        }
        keys = sorted({k for f in kinds.values() for k in f} - {"dataset", "seed"})
        differ = [k for k in keys if len({f.get(k) for f in kinds.values()}) > 1]
        names = {part: " ".join(f"{k}={f.get(k, '-')}" for k in differ) for part, f in kinds.items()}
        out.update({i: names[parts[i]] for i in members})
    return out


def render(manifest: Manifest, current: dict[int, CellState]) -> str:
    """The status grid, the failed cells and a summary line."""
    entries = {e.index: e for e in manifest.active()}
    settings = variants({i: e.spec for i, e in entries.items()})
    rows: dict[tuple[str, ...], dict[str, list[tuple[int, str]]]] = defaultdict(lambda: defaultdict(list))
    datasets: list[str] = []
    for i, e in entries.items():
        s = e.spec
        if s.dataset not in datasets:
            datasets.append(s.dataset)
        key = (s.model.label, s.tuning.method, s.decoder.name, *((settings.get(i, ""),) if settings else ()))
        rows[key][s.dataset].append((s.seed, MARKS[current[i].state]))
    header = ["model", "method", "decoder", *(["settings"] if settings else []), *datasets]
    table = [header]
    for key in rows:
        marks = ["".join(m for _, m in sorted(rows[key][d])) or "-" for d in datasets]
        table.append([*key, *marks])
    lines = [f"sweep {manifest.name}: {manifest.root}", *aligned(table)]
    lines.append("(one mark per seed: " + "  ".join(f"{m} {s.value}" for s, m in MARKS.items()) + ")")
    failed = [(i, current[i]) for i in entries if current[i].state is State.FAILED]
    if failed:
        lines.append("failed:")
        for i, st in failed:
            e = entries[i]
            why = f"failed ({st.reason})" + (f": {st.detail}" if st.detail else "")
            lines.append(f"  [{i}] {e.cell_id} {e.spec.slug}  {why} (attempts: {st.attempts})")
    running = [(i, current[i]) for i in entries if current[i].state is State.RUNNING]
    for i, st in running:
        lines.append(f"  running [{i}] {entries[i].spec.slug}: {st.detail}")
    lines.append(summary_line(current))
    return "\n".join(lines)


def busy(current: dict[int, CellState]) -> bool:
    """Whether any cell is running or pending."""
    c = counts(current)
    return bool(c.get(State.RUNNING) or c.get(State.PENDING))


def wait(
    manifest: Manifest,
    *,
    poll_s: float = 2.0,
    timeout_s: float = 3600.0,
    on_poll: Callable[[dict[int, CellState]], None] | None = None,
) -> dict[int, CellState]:
    """Poll the files until no cell is running or pending (or ``timeout_s`` passed); return the states.

    ``on_poll`` sees the states of every poll (``geopeft status --watch`` redraws the grid with it).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        current = states(manifest)
        if on_poll is not None:
            on_poll(current)
        if not busy(current) or time.monotonic() > deadline:
            return current
        time.sleep(poll_s)


def watch(
    manifest: Manifest,
    draw: Callable[[Manifest, dict[int, CellState]], str],
    *,
    poll_s: float = 5.0,
    timeout_s: float = 7 * 24 * 3600.0,
) -> dict[int, CellState]:
    """Redraw the status grid in place (rich) every ``poll_s`` until nothing is running or pending."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    with Live(Text(""), console=console, auto_refresh=False, transient=False) as live:

        def redraw(current: dict[int, CellState]) -> None:
            stamp = time.strftime("%H:%M:%S")
            footer = f"\n[{stamp}] refreshing every {poll_s:g} s until nothing runs; Ctrl-C stops watching"
            live.update(Text(draw(manifest, current) + (footer if busy(current) else "")), refresh=True)

        return wait(manifest, poll_s=poll_s, timeout_s=timeout_s, on_poll=redraw)


def render_search(manifest: Any, current: Mapping[int, Any]) -> str:
    """The lr stage as a table: one row per searched cell, one column per rate, a mark and val mIoU each.

    The recorded choice of a row (from ``<main sweep>/lr_choices.json``) is starred.
    """
    chosen = {c["cell_id"] for c in recorded_choices(manifest.root.parent).values()}
    rows: dict[str, dict[float, str]] = {}
    rates: set[float] = set()
    for e in manifest.active():
        score = val_score(manifest.paths.cell(e.cell_id))
        mark = MARKS[current[e.index].state] + (f" {100 * score[0]:.1f}" if score else "")
        rows.setdefault(search_label(e.spec), {})[e.spec.train.lr] = mark + ("*" if e.cell_id in chosen else "")
        rates.add(e.spec.train.lr)
    columns = sorted(rates)
    table = [["cell", *(f"{lr:.2e}" for lr in columns)]]
    table += [[label, *(marks.get(lr, "-") for lr in columns)] for label, marks in rows.items()]
    lines = [f"lr search {manifest.name}: {manifest.root}", *aligned(table)]
    lines.append("(mark and val mIoU at the best-val-loss epoch per rate; * = the recorded choice)")
    lines.append(summary_line(dict(current)))
    return "\n".join(lines)
