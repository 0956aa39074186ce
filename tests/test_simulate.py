"""The scheduler model (``hpc.plan.simulate``) on cases checked by hand, and the paper's study played through it."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analysis import labels as paper_labels
from analysis.paper import REFERENCE_DIR
from geopeft.errors import ConfigError
from hpc.cli import app
from hpc.plan.estimate import read_paper_times
from hpc.plan.simulate import Array, Submission, Task, lower_bounds, simulate
from hpc.scheduler.profiles import load_profile
from hpc.simulate_plan import LR, SEARCHED, SEEDS, paper_labeller, study_cells, submissions

ROOT = Path(__file__).resolve().parents[1]
HOUR = 60.0


def tasks(n: int, minutes: float = HOUR, **kw: object) -> tuple[Task, ...]:
    return tuple(Task(f"t{i}", "s", minutes, **kw) for i in range(n))  # type: ignore[arg-type]


def one(array: Array, **kw: object) -> list[Submission]:
    return [Submission("sub", (array,), **kw)]  # type: ignore[arg-type]


def test_three_hour_cells_on_two_gpus_take_two_hours_at_three_quarters() -> None:
    result = simulate(one(Array("a", tasks(3), cap=3)), gpus=2)
    assert result.makespan_min == 2 * HOUR
    assert result.utilisation == pytest.approx(0.75)  # 3 GPU-h busy of 2 GPUs x 2 h
    assert [(r.start, r.end) for r in result.runs] == [(0, HOUR), (0, HOUR), (HOUR, 2 * HOUR)]
    assert result.runs[2].why == "a free GPU" and [r.task.label for r in result.chain()] == ["t0", "t2"]


def test_a_percent_p_of_one_runs_the_array_one_task_at_a_time() -> None:
    result = simulate(one(Array("a", tasks(3), cap=1)), gpus=8)
    assert result.makespan_min == 3 * HOUR
    assert result.utilisation == pytest.approx(3 / 24)
    assert [r.why for r in result.chain()][1:] == ["a %P slot of its array"] * 2
    assert lower_bounds(one(Array("a", tasks(3), cap=1)), 8) == {"GPUs": 3 * HOUR / 8, "%P": 3 * HOUR, "chain": HOUR}


def test_the_lr_stage_and_its_prepare_job_delay_the_seeded_cells() -> None:
    rates = (Task("rate 1", LR, 20, tags=frozenset({"lr"})), Task("rate 2", LR, 30, tags=frozenset({"lr"})))
    lr = Submission("lr", (Array("lr", rates, cap=2),), prepare_min=10)
    seeds = Submission("seeds", (Array("seeds", tasks(2), cap=2),), after=frozenset({"lr"}))
    result = simulate([lr, seeds], gpus=4)
    assert result.makespan_min == 10 + 30 + HOUR
    chain = result.chain()
    assert [r.task.label for r in chain] == ["prepare job", "rate 2", "t0"]
    assert [r.why for r in chain] == [
        "submitted at time 0",
        "after the prepare job (afterok)",
        "submitted when lr ended",
    ]
    assert result.runs[0].task.gpus == 0  # the prepare job holds no GPU
    assert result.busy_gpu_min == 20 + 30 + 2 * HOUR
    assert lower_bounds([lr, seeds], 4)["chain"] == 100


def test_each_search_releases_its_own_seeded_cells() -> None:
    a = Task("a lr", LR, 30, tags=frozenset({"search a"}))
    b = Task("b lr", LR, 120, tags=frozenset({"search b"}))
    lr = Submission("lr", (Array("lr", (a, b), cap=2),))
    after_a = Submission("seeds a", (Array("sa", tasks(1), cap=1),), after=frozenset({"search a"}))
    after_b = Submission("seeds b", (Array("sb", tasks(1), cap=1),), after=frozenset({"search b"}))
    result = simulate([lr, after_a, after_b], gpus=4)
    starts = {r.array: r.start for r in result.runs}
    assert starts["sa"] == 30 and starts["sb"] == 120  # a's cells do not wait for b's search
    assert result.makespan_min == 180


def test_an_afterany_lane_waits_for_the_whole_array_before_it() -> None:
    first = Array("first", tasks(2, 30), cap=1)
    second = Array("second", tasks(1), cap=1, after=0)
    result = simulate([Submission("sub", (first, second))], gpus=4)
    run = next(r for r in result.runs if r.array == "second")
    assert (run.start, run.why) == (60, "after array first (afterany)")
    assert result.makespan_min == 120


def test_a_run_longer_than_its_limit_is_requeued_and_resumes() -> None:
    task = Task("long", "s", 150, limit_min=60, lead_min=10)
    assert task.segments() == (60, 60, 50)  # each cut run advances it by limit - lead = 50 minutes
    result = simulate(one(Array("a", (task,), cap=1)), gpus=1)
    assert [(r.start, r.end) for r in result.runs] == [(0, 60), (60, 120), (120, 170)]
    assert [r.why for r in result.runs][1:] == ["requeued after its time limit"] * 2


def test_fifo_without_backfill_a_task_that_does_not_fit_blocks_those_behind_it() -> None:
    small = Array("small", tasks(1), cap=1)
    big = Array("big", (Task("big", "s", HOUR, gpus=2),), cap=1)
    late = Array("late", tasks(1), cap=1)
    result = simulate([Submission("sub", (small, big, late))], gpus=2)
    assert {r.array: r.start for r in result.runs} == {"small": 0, "big": HOUR, "late": 2 * HOUR}


def test_impossible_plans_are_refused() -> None:
    with pytest.raises(ConfigError, match="needs 8 GPUs; the simulated cluster has 4"):
        simulate(one(Array("a", (Task("x", "s", 1, gpus=8),), cap=1)), gpus=4)
    waits_for_itself = Submission("s", (Array("a", tasks(1, tags=frozenset({"x"})), cap=1),), after=frozenset({"x"}))
    with pytest.raises(ConfigError, match="never runs array"):
        simulate([waits_for_itself], gpus=1)
    with pytest.raises(ConfigError, match="wait for each other"):
        lower_bounds([waits_for_itself], 1)


def test_the_paper_study_on_256_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the grid's output, cache and weights resolve here: nothing done, caches missing
    profile = load_profile("example-gpu")
    cells = study_cells(ROOT / "sweeps" / "paper.yaml", profile, {})
    assert (len(cells.seeds), len(cells.lr), len(cells.waiting)) == (1010, 400, 125)
    assert cells.prepare == {LR, SEEDS}
    times = read_paper_times(REFERENCE_DIR / "epoch_and_time.csv")
    labels = paper_labeller(paper_labels)
    makespans = {}
    for plan in ("separate", "overlapped"):
        subs = submissions(cells, plan, profile, times, labels, prepare_min=profile.prepare_time_min)
        result = simulate(subs, gpus=256)
        assert math.isfinite(result.makespan_min) and 0 < result.utilisation <= 1
        assert len({id(r.task) for r in result.runs if r.task.stage != "prepare"}) == 1010 + 400 + 125
        assert result.makespan_min >= max(lower_bounds(subs, 256).values()) - 1e-6
        searched = [r for r in result.runs if r.task.stage == SEARCHED]
        lr_end = max(r.end for r in result.runs if r.task.stage == LR)
        assert len(searched) == 125 and (plan == "overlapped" or min(r.start for r in searched) >= lr_end)
        makespans[plan] = result.makespan_min
    assert makespans["overlapped"] <= makespans["separate"]


GRID = """
name: t
output: {out}
cache: {out}/cache
lr_search: {{lrs: [1.0e-4, 1.0e-3, 1.0e-2], seed: 0}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 4}}
axes:
  tuning: [{{method: full}}, {{method: lora}}]
  dataset: [sen1floods11]
  seed: [0, 1]
overrides:
  - where: {{tuning.method: lora}}
    set: {{train.lr: search}}
"""


def test_the_command_prints_both_plans(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(GRID.format(out=tmp_path / "runs")))
    runner = CliRunner()
    args = ["sweep", str(grid), "--cluster", "example-gpu", "--simulate-gpus", "2"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "add --dry-run" in refused.output
    result = runner.invoke(app, [*args, "--dry-run", "--simulate-plan", "overlapped"])
    assert result.exit_code == 0, result.output
    out = result.output[result.output.index("simulated on 2 GPUs") :]
    assert "time limit" in out and "no prepare job" in out  # no paper row for prithvi_tiny; no raw files to prepare
    assert "  separate " in out and "  overlapped " in out and "plan overlapped, max_parallel 2 (= N)" in out
    assert "seeds of searched cells: 2 tasks" in out and "lr: 3 tasks" in out and "critical chain" in out
    local = runner.invoke(app, ["sweep", str(grid), "--dry-run", "--simulate-gpus", "2"])
    assert local.exit_code == 2 and "not a SLURM GPU profile" in local.output
