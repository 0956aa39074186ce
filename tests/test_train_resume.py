"""Faults in one process: SIGUSR2 and SIGKILL mid-epoch resume to the uninterrupted metrics; OOM retries."""

import json
import os
import subprocess
import sys

import pytest

from geopeft.cache.build import prepare
from geopeft.cell import run_cell
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import CellFailed
from geopeft.io import read_json, read_jsonl
from geopeft.paths import SweepPaths
from geopeft.spec import CellSpec, DecoderSpec, ModelSpec, RunEnv, TrainSpec, TuningSpec
from geopeft.train import checkpoint, faults

pytestmark = pytest.mark.slow

# LoRA dropout draws from torch's global RNG, so an exact resume also needs the RNG states restored.
SPEC = CellSpec(
    model=ModelSpec("prithvi_tiny"),
    tuning=TuningSpec("lora", {"r": 2, "alpha": 2, "dropout": 0.2}),
    decoder=DecoderSpec("linear"),
    dataset="sen1floods11",
    train=TrainSpec(lr=2e-3, batch_size=4, max_epochs=3),  # 12 train samples: 3 steps per epoch
    seed=5,
)
LAUNCH = """
import json, sys
from pathlib import Path
from geopeft.cell import run_cell
from geopeft.paths import CellPaths
from geopeft.spec import CellSpec, RunEnv
run_cell(CellSpec.from_dict(json.loads(sys.argv[1])), RunEnv(**json.loads(sys.argv[2])), CellPaths(Path(sys.argv[3])))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    splits = write_sen1floods11(root / "raw", counts={"train": 12, "val": 3, "test": 3, "bolivia": 2}, size=32)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return RunEnv(str(root / "cache"), threads=1)


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    paths = SweepPaths(tmp_path_factory.mktemp("reference")).cell(SPEC.cell_id)
    run_cell(SPEC, env, paths, log=lambda _: None)
    return paths


TIMING = ("epoch_s", "samples", "partial")  # of the attempt that trained the epoch, not of the training


def same_run(paths, reference):
    """The resumed cell ends with the uninterrupted one's metrics, and its log holds each epoch once."""
    got, want = read_json(paths.result), read_json(reference.result)
    assert got["regions"] == want["regions"]
    assert got["train"]["best_epoch"] == want["train"]["best_epoch"]
    assert got["train"]["epochs_run"] == want["train"]["epochs_run"] == 3
    log, ref = read_jsonl(paths.metrics_log), read_jsonl(reference.metrics_log)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in log] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in ref
    ]
    # every attempt's time counts: the sum of the attempts, each of them positive
    times = got["train"]["attempt_times_s"]
    assert len(times) == 2 and all(t > 0 for t in times) and got["train"]["wall_time_s"] == pytest.approx(sum(times))
    assert got["train"]["time_per_epoch_s"] > 0 and got["train"]["samples_per_s"] > 0


def test_sigusr2_mid_epoch_checkpoints_then_resumes_to_the_same_metrics(env, reference, tmp_path, monkeypatch):
    paths = SweepPaths(tmp_path).cell(SPEC.cell_id)
    monkeypatch.setenv(faults.FAULT_AT, "USR2@2:1")  # arrives before step 1 of epoch 2; the loop stops after it
    # Inside a SLURM job whose requeue is refused: failed.json keeps both the preemption and why it stays failed.
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text("#!/bin/sh\necho 'Requeue of JobId=77 not allowed' >&2\nexit 1\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    with pytest.raises(CellFailed, match="scontrol requeue 77 failed"):
        run_cell(SPEC, env, paths, log=lambda _: None)
    failed = read_json(paths.failed)
    assert failed["reason"] == "preempted" and "SIGUSR2" in failed["error"] and "not allowed" in failed["error"]
    monkeypatch.delenv("SLURM_JOB_ID")
    state = checkpoint.load(paths.last_ckpt)
    assert (state["epoch"], state["step"], state["partial"][1]) == (1, 2, 8)
    monkeypatch.delenv(faults.FAULT_AT)
    run_cell(SPEC, env, paths, log=lambda _: None)
    same_run(paths, reference)
    assert read_json(paths.result)["train"]["resumed_from_epoch"] == 1
    ends = [a for a in read_jsonl(paths.attempts) if a["event"] == "end"]
    assert [(a["status"], a["reason"]) for a in ends] == [("failed", "preempted"), ("success", "")]


def test_sigkill_mid_epoch_resumes_from_the_last_epoch_to_the_same_metrics(env, reference, tmp_path):
    paths = SweepPaths(tmp_path).cell(SPEC.cell_id)
    args = [json.dumps(SPEC.to_dict()), json.dumps(env.to_dict()), str(paths.dir)]
    killed = subprocess.run(
        [sys.executable, "-c", LAUNCH, *args],
        env={**os.environ, faults.FAULT_AT: "KILL@3:1"},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert checkpoint.load(paths.last_ckpt)["epoch"] == 2 and not paths.result.exists()
    epochs_s = [r["epoch_s"] for r in read_jsonl(paths.metrics_log)]
    run_cell(SPEC, env, paths, log=lambda _: None)
    same_run(paths, reference)
    assert read_json(paths.result)["train"]["resumed_from_epoch"] == 2
    # the killed attempt has no end line: its time runs to the heartbeat of its last finished epoch
    assert read_json(paths.result)["train"]["attempt_times_s"][0] >= sum(epochs_s)


def test_out_of_memory_retries_with_half_the_micro_batch(env, reference, tmp_path, monkeypatch):
    paths = SweepPaths(tmp_path).cell(SPEC.cell_id)
    monkeypatch.setenv(faults.OOM_ABOVE, "1")  # micro-batches 4 and 2 fail, 1 (x4 accumulation) fits
    lines = []
    run_cell(SPEC, env, paths, log=lines.append)
    attempts = read_jsonl(paths.attempts)
    assert [(a["event"], a["attempt"], a.get("reason")) for a in attempts] == [
        ("start", 1, None), ("end", 1, "oom"), ("start", 2, None), ("end", 2, "oom"), ("start", 3, None),
        ("end", 3, ""),
    ]  # fmt: skip
    assert read_json(paths.ckpt_dir / "layout.json")["micro_batch"] == 1
    assert any("micro-batch 1 x 4 accumulation steps" in line for line in lines)
    got, want = read_json(paths.result), read_json(reference.result)
    assert got["train"]["epochs_run"] == 3 and got["regions"]["test"]["n"] == 3
    # The same effective batch: the same updates up to the per-micro-batch averaging of the loss.
    assert got["regions"]["test"]["miou"] == pytest.approx(want["regions"]["test"]["miou"], abs=0.05)


def test_non_finite_loss_fails_the_cell_with_class_nan(env, tmp_path):
    spec = CellSpec.from_dict({**SPEC.to_dict(), "train": {**SPEC.to_dict()["train"], "lr": 1e30}})
    paths = SweepPaths(tmp_path).cell(spec.cell_id)
    with pytest.raises(CellFailed, match="loss is"):
        run_cell(spec, env, paths, log=lambda _: None)
    assert read_json(paths.failed)["reason"] == "nan"
