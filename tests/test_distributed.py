"""Two processes on CPU (gloo), launched like production: ``geopeft run-cell GRID 0`` under torchrun, or twice
with SLURM's variables set by hand (srun's one task per rank). DDP and DeepSpeed ZeRO-2/3, exact sharded evaluation,
SIGUSR2 preemption with requeue, and checkpoints that resume under another strategy and world size.
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.cell import run_cell
from geopeft.data.normalisation import InputNorm
from geopeft.data.registry import get_dataset
from geopeft.data.synthetic import write_sen1floods11
from geopeft.io import read_json
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.paths import SweepPaths
from geopeft.spec import RunEnv
from geopeft.train import checkpoint, faults
from geopeft.train.engine import evaluate
from geopeft.train.loaders import eval_loader
from geopeft.train.preprocess import BatchPreprocess
from geopeft.tuning.registry import apply_tuning, load_trainable_state_dict
from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.state.manifest import write_manifest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

GEOPEFT = str(Path(sys.executable).parent / "geopeft")
GRID = """
name: dist
output: {out}
cache: {cache}
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 2.0e-3, batch_size: 4, max_epochs: 2, strategy: {strategy}{extra}}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: lora, options: {{r: 2, alpha: 2}}}}]
"""
SLURM = {"SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_ID": "4242"}
ARRAY = {"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    counts = {"train": 12, "val": 3, "test": 4, "bolivia": 3}  # 3 steps per epoch; odd splits shard unevenly
    splits = write_sen1floods11(root / "raw", counts=counts, size=32)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    fake = root / "bin" / "scontrol"  # records what a requeue asks of SLURM
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {root / "scontrol.log"}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return root


def sweep(root, name, strategy, extra=""):
    grid = root / f"{name}.yaml"
    text = GRID.format(out=root / name, cache=root / "cache", strategy=strategy, extra=extra)
    grid.write_text(textwrap.dedent(text))
    manifest = plan(load_grid(grid))
    write_manifest(manifest)
    entry = manifest.entry(0)
    return grid, entry.spec, manifest.paths.cell(entry.cell_id)


def clean_env(root, **extra):
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", faults.FAULT_AT, faults.OOM_ABOVE)
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("SLURM_")}
    return {**env, "PATH": f"{root / 'bin'}:{env['PATH']}", "OMP_NUM_THREADS": "1", **extra}


def torchrun(root, grid, **extra):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    cmd += [f"--master_port={port}", GEOPEFT, "run-cell", str(grid), "0"]
    done = subprocess.run(cmd, env=clean_env(root, **extra), capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def srun(root, grid, **extra):
    """Two tasks as srun starts them: SLURM_PROCID/SLURM_LOCALID per task, no torch variables, no port."""
    procs = [
        subprocess.Popen(
            [GEOPEFT, "run-cell", str(grid), "0"],
            env=clean_env(root, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **SLURM, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    return [p.returncode for p in procs], "".join(outs)


@pytest.fixture(scope="module")
def ddp(root):
    grid, spec, paths = sweep(root, "ddp", "ddp")
    rc, out = torchrun(root, grid)
    assert rc == 0, out[-4000:]
    return spec, paths


def test_ddp_under_torchrun_and_one_rank_evaluation_of_its_checkpoint(root, ddp):
    spec, paths = ddp
    result = read_json(paths.result)
    train = result["train"]
    assert train["world_size"] == 2 and train["epochs_run"] == 2 and train["device"] == "cpu"
    assert train["samples_per_s"] > 0 and train["time_per_epoch_s"] > 0 and train["peak_memory_mb"] > 0
    assert_one_rank_evaluation(root, spec, paths, result)


def assert_one_rank_evaluation(root, spec, paths, result):
    """Evaluating ``best.pt`` in one process gives the metrics the ranks computed together, exactly."""
    info = get_dataset(spec.dataset)
    checkpoint.seed_everything(spec.seed)  # the frozen LoRA base weights, as the cell drew them
    model = build_segmentor(spec.model, spec.decoder, num_classes=len(info.classes), img_size=32, where="test")
    apply_tuning(model, spec.tuning, where="test")
    load_trainable_state_dict(model, checkpoint.load(paths.best_ckpt)["model"])
    prep = BatchPreprocess(InputNorm.from_dict(result["provenance"]["normalisation"], "result"), pad_to=info.pad_to)
    for region in info.regions:
        ds = open_split(root / "cache", spec.dataset, region, bands=resolve_bands(spec.model), train=False)
        loader = eval_loader(ds, 2, 0, 1, 0)
        one = evaluate(model, loader, torch.device("cpu"), prep=prep, num_classes=2, precision="fp32")
        two = result["regions"][region]
        assert (one.miou, list(one.iou_per_class), one.accuracy, one.n, one.classes_present) == (
            two["miou"], two["iou_per_class"], two["accuracy"], two["n"], two["classes_present"],
        )  # fmt: skip
        assert one.n == len(ds) and one.loss == pytest.approx(two["loss"], rel=1e-6)  # float32 sums in another order


def test_ddp_under_srun_preempted_requeued_then_resumed_to_the_same_metrics(root, ddp):
    grid, _, paths = sweep(root, "ddp_srun", "ddp")
    rcs, out = srun(root, grid, **{faults.FAULT_AT: "USR2@2:1"}, **ARRAY)
    assert rcs == [2, 2] and "stopped by SIGUSR2" in out, out[-4000:]  # the CLI's exit code of an expected failure
    assert read_json(paths.failed)["reason"] == "preempted"
    assert (root / "scontrol.log").read_text().splitlines()[-1] == "requeue 4240_2"  # the array task
    rcs, out = srun(root, grid)
    assert rcs == [0, 0], out[-4000:]
    result, reference = read_json(paths.result), read_json(ddp[1].result)
    assert result["regions"] == reference["regions"]
    assert result["train"]["resumed_from_epoch"] == 1


def test_deepspeed_zero2_checkpoints_resume_across_strategy_and_world_size(root, ddp):
    reference = read_json(ddp[1].result)["regions"]
    # ZeRO-2 under torchrun, resuming a DDP checkpoint written mid-epoch (the srun test's, redone here).
    grid, _, paths = sweep(root, "zero2", "deepspeed_zero2")
    ddp_grid, _, ddp_paths = sweep(root, "ddp_mid", "ddp")
    rcs, out = srun(root, ddp_grid, **{faults.FAULT_AT: "USR2@2:1"})
    assert rcs == [2, 2] and checkpoint.load(ddp_paths.last_ckpt)["step"] == 2, out[-4000:]
    shutil.copytree(ddp_paths.ckpt_dir, paths.ckpt_dir)
    rc, out = torchrun(root, grid)
    assert rc == 0, out[-4000:]
    regions = read_json(paths.result)["regions"]
    for region, metrics in regions.items():
        assert metrics["miou"] == pytest.approx(reference[region]["miou"], abs=1e-6), json.dumps(regions)
    # ZeRO-2 under srun, preempted in epoch 1; its partitioned optimiser state is gathered into a checkpoint
    # that one process resumes under DDP.
    grid, _, paths = sweep(root, "zero2_srun", "deepspeed_zero2")
    rcs, out = srun(root, grid, **{faults.FAULT_AT: "USR2@1:1"})
    assert rcs == [2, 2] and "stopped by SIGUSR2" in out, out[-4000:]  # the CLI's exit code of an expected failure
    state = checkpoint.load(paths.last_ckpt)
    assert (state["epoch"], state["step"]) == (0, 2)
    moments = state["optimizer"]["state"]
    assert moments and all(m["exp_avg"].abs().sum() > 0 for m in moments.values())
    one_spec = ddp[0]
    one_paths = SweepPaths(root / "one").cell(one_spec.cell_id)
    shutil.copytree(paths.ckpt_dir, one_paths.ckpt_dir)
    run_cell(one_spec, RunEnv(str(root / "cache"), threads=1), one_paths, log=lambda _: None)
    for region, metrics in read_json(one_paths.result)["regions"].items():
        assert metrics["miou"] == pytest.approx(reference[region]["miou"], abs=0.02)


def test_deepspeed_zero3_evaluates_exactly_and_its_checkpoint_resumes_under_ddp(root, ddp):
    reference = read_json(ddp[1].result)["regions"]
    grid, spec, paths = sweep(root, "zero3", "deepspeed_zero3")
    rc, out = torchrun(root, grid)
    assert rc == 0, out[-4000:]
    result = read_json(paths.result)
    assert result["provenance"]["distributed"]["strategy"] == "deepspeed_zero3"
    for region, metrics in result["regions"].items():
        assert metrics["miou"] == pytest.approx(reference[region]["miou"], abs=1e-6), json.dumps(result["regions"])
    assert_one_rank_evaluation(root, spec, paths, result)  # the gathered weights, saved whole
    # Preempted in epoch 2 under srun: the partitioned parameters and moments are gathered into a checkpoint
    # that one process resumes under DDP.
    grid, _, paths = sweep(root, "zero3_srun", "deepspeed_zero3")
    rcs, out = srun(root, grid, **{faults.FAULT_AT: "USR2@2:1"})
    assert rcs == [2, 2] and "stopped by SIGUSR2" in out, out[-4000:]
    state = checkpoint.load(paths.last_ckpt)
    assert (state["epoch"], state["step"]) == (1, 2)
    full = checkpoint.load(ddp[1].last_ckpt)["model"]  # a DDP run's checkpoint: every tensor whole
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in full.items()}
    moments = state["optimizer"]["state"]
    assert moments and all(m["exp_avg"].abs().sum() > 0 for m in moments.values())
    one_paths = SweepPaths(root / "one3").cell(ddp[0].cell_id)
    shutil.copytree(paths.ckpt_dir, one_paths.ckpt_dir)
    run_cell(ddp[0], RunEnv(str(root / "cache"), threads=1), one_paths, log=lambda _: None)
    assert read_json(one_paths.result)["train"]["resumed_from_epoch"] == 1
    for region, metrics in read_json(one_paths.result)["regions"].items():
        assert metrics["miou"] == pytest.approx(reference[region]["miou"], abs=0.02)


def test_deepspeed_zero3_with_activation_checkpointing_trains_to_the_ddp_metrics(root, ddp):
    """Recomputed blocks under ZeRO-3: the partitioned weights are gathered again for the recomputation."""
    grid, spec, paths = sweep(root, "zero3_ckpt", "deepspeed_zero3", ", activation_checkpointing: true")
    assert spec.train.activation_checkpointing
    rc, out = torchrun(root, grid)
    assert rc == 0 and "activation checkpointing of 4 transformer blocks" in out, out[-4000:]
    reference = read_json(ddp[1].result)["regions"]
    for region, metrics in read_json(paths.result)["regions"].items():
        assert metrics["miou"] == pytest.approx(reference[region]["miou"], abs=1e-6)
