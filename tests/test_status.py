"""The status grid: rows, marks per seed, and the settings column for cells that would share a row."""

import textwrap

from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.state.cells import CellState, State
from hpc.status import render, variants

GRID = """
name: s
output: {root}/runs
cache: {root}/cache
defaults:
  model: {{name: prithvi_tiny}}
  decoder: {{name: linear}}
  dataset: sen1floods11
  train: {{lr: 1.0e-3}}
axes:
  tuning: [{{method: full}}, {{method: lora}}]
  train: {train}
  seed: [0, 1]
"""


def manifest(tmp_path, train: str):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(GRID.format(root=tmp_path, train=train)))
    return plan(load_grid(path))


def states(m, done=()):
    return {e.index: CellState(State.DONE if e.index in done else State.MISSING) for e in m.active()}


def test_plain_grid_has_no_settings_column(tmp_path):
    m = manifest(tmp_path, "[{precision: fp32}]")
    assert variants({e.index: e.spec for e in m.active()}) == {}
    text = render(m, states(m, done={0}))
    header = text.splitlines()[1].split()
    assert header == ["model", "method", "decoder", "sen1floods11"]
    assert "prithvi_tiny  full    linear   ✓·" in text


def test_cells_differing_in_a_train_setting_get_their_own_rows(tmp_path):
    m = manifest(tmp_path, "[{precision: fp32}, {precision: bf16}]")
    names = variants({e.index: e.spec for e in m.active()})
    assert sorted(set(names.values())) == ['train.precision="bf16"', 'train.precision="fp32"']
    text = render(m, states(m))
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["model", "method", "decoder", "settings"]
    rows = [line for line in lines if line.startswith("prithvi_tiny")]
    assert len(rows) == 4 and all(line.rstrip().endswith("··") for line in rows)  # two seeds per row, not four
    assert sum('train.precision="bf16"' in line for line in rows) == 2


def test_a_setting_left_out_of_the_cell_id_at_its_default_is_shown_as_false(tmp_path):
    m = manifest(tmp_path, "[{activation_checkpointing: false}, {activation_checkpointing: true}]")
    names = set(variants({e.index: e.spec for e in m.active()}).values())
    assert names == {"train.activation_checkpointing=false", "train.activation_checkpointing=true"}


def test_watch_redraws_until_nothing_runs(tmp_path, capsys):
    import threading
    import time

    from results import write_result

    from geopeft.attempts import end_attempt, start_attempt
    from geopeft.io import atomic_write_json
    from hpc.state.manifest import write_manifest
    from hpc.status import watch

    m = manifest(tmp_path, "[{precision: fp32}]")
    write_manifest(m)
    first = m.paths.cell(m.entry(0).cell_id)
    n = start_attempt(first)  # this process: alive, so running
    atomic_write_json(first.progress, {"epoch": 1, "max_epochs": 4, "best_val_miou": 0.5, "epoch_s": 2.0})
    seen: list[str] = []

    def draw(man, current):
        seen.append(render(man, current))
        return seen[-1]

    def finish():
        while len(seen) < 2:
            time.sleep(0.02)
        write_result(first)
        end_attempt(first, n, "success")

    worker = threading.Thread(target=finish)
    worker.start()
    final = watch(m, draw, poll_s=0.05, timeout_s=30)
    worker.join()
    assert final[0].state is State.DONE and len(seen) >= 3
    assert "running [0]" in seen[0] and "epoch 1/4, best val mIoU 50.0, 2.0 s/epoch, at most 6 s left" in seen[0]
    assert "running [0]" not in seen[-1] and "1 done" in seen[-1]
    assert "1 done" in capsys.readouterr().out
