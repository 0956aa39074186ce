"""Cells spanning two SLURM nodes (scripts/slurm-test-cluster.sh up --nodes 2, started when it is down).

gpnode1 and gpnode2 are two slurmd, each in its own network namespace joined to a bridge: the ranks of a cell
(``nodes = 2``, ``tasks_per_node = 1``, hpc/clusters/slurm-test-2n.toml) rendezvous and all-reduce through it, as
on two machines, and share the file system like a cluster's. Tiny cells (prithvi_tiny, 16 px synthetic chips) go
through sbatch/multinode.sbatch and srun: DDP over gloo, DeepSpeed ZeRO-2, a USR2 requeue that resumes to the metrics
of the uninterrupted run, a rank killed on the second node (the cell fails with a class, a rerun completes it),
and the two ranks' evaluation of the best checkpoint against one process's. Which errors of a collective mean a lost
rank (class ``peer``) is also checked without a cluster.
"""

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from geopeft.attempts import read_attempts
from geopeft.cache.build import prepare
from geopeft.cache.reader import open_split
from geopeft.data.normalisation import InputNorm
from geopeft.data.registry import get_dataset
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import CellFailed
from geopeft.io import read_json
from geopeft.models.build import build_segmentor, resolve_bands
from geopeft.paths import CellPaths
from geopeft.spec import CellSpec
from geopeft.train import checkpoint
from geopeft.train.distributed import peer_lost
from geopeft.train.engine import evaluate
from geopeft.train.loaders import eval_loader
from geopeft.train.preprocess import BatchPreprocess
from geopeft.tuning.registry import apply_tuning, load_trainable_state_dict
from hpc.scheduler.profiles import load_profile
from hpc.state.cells import State, states
from hpc.state.manifest import Manifest, read_manifest
from hpc.status import render, wait
from hpc.sweep import rerun, sweep

NODES = ("gpnode1", "gpnode2")
EPOCHS = 30  # about 0.2 s each: a signal sent after the first one still finds the cell training
GRID = """
name: {name}
output: {root}/runs-{name}
cache: {root}/cache
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 2, max_epochs: {epochs}, patience: {epochs}, strategy: {strategy}}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: lora, options: {{r: 2, alpha: 2}}}}]
"""


@pytest.fixture(scope="module")
def data(two_nodes: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache, with SLURM_CONF naming the 2-node cluster while this module's tests run."""
    root = tmp_path_factory.mktemp("two_nodes")
    counts = {"train": 4, "val": 2, "test": 3, "bolivia": 2}  # 3 test chips: the two ranks evaluate 2 and 1
    splits = write_sen1floods11(root / "raw", counts=counts, size=16)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", two_nodes)
        for name in [k for k in os.environ if k.startswith("GEOPEFT_FAULT") or k == "GEOPEFT_OOM_ABOVE"]:
            env.delenv(name)
        yield root


def submit(root: Path, name: str, strategy: str = "ddp") -> tuple[Manifest, str]:
    """Sweep a one-cell grid onto the two nodes; the manifest and the cell's job id (``<array job>_0``)."""
    grid = root / f"{name}.yaml"
    grid.write_text(textwrap.dedent(GRID.format(root=root, name=name, epochs=EPOCHS, strategy=strategy)))
    report = sweep(grid, load_profile("slurm-test-2n"))
    assert report.submitted == (0,) and report.submission.prepare_job == ""
    script = report.submission.scripts[-1].text
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script and "srun" in script
    return read_manifest(report.manifest.root), report.job_ids[0]


def cell(manifest: Manifest) -> tuple[CellSpec, CellPaths]:
    entry = manifest.entry(0)
    return entry.spec, manifest.paths.cell(entry.cell_id)


def fields(*argv: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", *argv], capture_output=True, text=True, timeout=30, check=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def node_state(node: str) -> str:
    return fields("show", "node", node).get("State", "")


def logs(manifest: Manifest) -> list[Path]:
    """The job logs of the sweep (srun's own messages are in them)."""
    return sorted(p for p in manifest.root.rglob("*") if p.suffix in (".out", ".err") and p.is_file())


def explain(manifest: Manifest, job: str = "") -> str:
    """The status table, SLURM's view of the job and the tail of every job log: what a failed assertion shows."""
    parts = [render(manifest, states(manifest))]
    if job:
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False)
        parts.append(f"--- scontrol show job {job}\n{shown.stdout}{shown.stderr}")
    for log in logs(manifest):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(parts)


def until(check: Callable[[], object], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def finished(manifest: Manifest, job: str = "") -> dict[str, Any]:
    current = wait(manifest, poll_s=1.0, timeout_s=240)
    assert current[0].state is State.DONE, explain(manifest, job)
    result: dict[str, Any] = read_json(cell(manifest)[1].result)
    return result


@pytest.fixture(scope="module")
def reference(data: Path) -> Manifest:
    """A 2-node DDP cell run without interruption: what the other runs of the same cell must reproduce."""
    manifest, job = submit(data, "ddp")
    finished(manifest, job)
    return manifest


@pytest.mark.slurm
def test_ddp_cell_runs_one_rank_on_each_node_over_gloo(reference: Manifest) -> None:
    result = read_json(cell(reference)[1].result)
    assert result["train"]["world_size"] == 2 and result["train"]["epochs_run"] == EPOCHS
    assert result["provenance"]["distributed"] == {
        "launcher": "submitit", "world_size": 2, "strategy": "ddp", "micro_batch": 1, "accumulation": 1,
    }  # fmt: skip
    assert result["provenance"]["scheduler"]["slurm_job_nodelist"] == "gpnode[1-2]"
    assert [a["host"] for a in read_attempts(cell(reference)[1]) if a["event"] == "start"] == ["gpnode1"]  # rank 0
    assert result["regions"]["test"]["n"] == 3 and result["regions"]["bolivia"]["n"] == 2


@pytest.mark.slurm
def test_two_node_evaluation_equals_one_rank_evaluation_of_the_same_checkpoint(
    data: Path, reference: Manifest
) -> None:
    """``best.pt`` evaluated here, in one process, gives exactly the metrics the two nodes computed together."""
    spec, paths = cell(reference)
    result = read_json(paths.result)
    info = get_dataset(spec.dataset)
    checkpoint.seed_everything(spec.seed)  # the frozen LoRA base weights, as the cell drew them
    model = build_segmentor(spec.model, spec.decoder, num_classes=len(info.classes), img_size=16, where="test")
    apply_tuning(model, spec.tuning, where="test")
    load_trainable_state_dict(model, checkpoint.load(paths.best_ckpt)["model"])
    prep = BatchPreprocess(InputNorm.from_dict(result["provenance"]["normalisation"], "result"), pad_to=info.pad_to)
    for region in info.regions:
        ds = open_split(data / "cache", spec.dataset, region, bands=resolve_bands(spec.model), train=False)
        loader = eval_loader(ds, 1, 0, 1, 0)  # one rank, one chip at a time
        one = evaluate(model, loader, torch.device("cpu"), prep=prep, num_classes=2, precision="fp32")
        two = result["regions"][region]
        assert (one.miou, list(one.iou_per_class), one.accuracy, one.n, one.classes_present) == (
            two["miou"], two["iou_per_class"], two["accuracy"], two["n"], two["classes_present"],
        )  # fmt: skip
        assert one.n == len(ds) and one.loss == pytest.approx(two["loss"], rel=1e-6)  # float sums in another order


@pytest.mark.slurm
def test_deepspeed_zero2_across_the_two_nodes_trains_to_the_ddp_metrics(data: Path, reference: Manifest) -> None:
    manifest, job = submit(data, "zero2", strategy="deepspeed_zero2")
    result = finished(manifest, job)
    assert result["provenance"]["distributed"]["strategy"] == "deepspeed_zero2"
    assert result["train"]["world_size"] == 2 and result["provenance"]["distributed"]["launcher"] == "submitit"
    assert result["provenance"]["scheduler"]["slurm_job_nodelist"] == "gpnode[1-2]"
    want = read_json(cell(reference)[1].result)["regions"]
    for region, metrics in result["regions"].items():
        assert metrics["miou"] == pytest.approx(want[region]["miou"], abs=1e-6), (region, metrics, want[region])
        assert metrics["loss"] == pytest.approx(want[region]["loss"], abs=1e-5)


@pytest.mark.slurm
def test_usr2_requeues_the_two_node_cell_which_resumes_to_the_uninterrupted_metrics(
    data: Path, reference: Manifest
) -> None:
    manifest, job = submit(data, "usr2")
    _, paths = cell(manifest)
    until(paths.progress.exists, "the first epoch")  # both ranks train: SIGUSR2 is the engine's now
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)  # to the step's task on each node
    until(lambda: any(a.get("reason") == "preempted" for a in read_attempts(paths)), "the preempted attempt")
    until(lambda: fields("show", "job", job).get("JobState") == "PENDING", "the requeued job to be pending")
    assert states(manifest)[0].state is State.PENDING and "requeued" in states(manifest)[0].detail, explain(manifest)
    # Held for its BeginTime (~120 s); start it once both nodes are done with the first run (see test_slurm_faults).
    until(lambda: all("COMPLETING" not in node_state(n) for n in NODES), "both nodes to leave COMPLETING")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+3"], check=True, timeout=30)
    result = finished(manifest, job)

    attempts = read_attempts(paths)
    assert [(a["event"], a.get("status"), a.get("reason", "")) for a in attempts] == [
        ("start", None, ""), ("end", "failed", "preempted"), ("start", None, ""), ("end", "success", ""),
    ]  # fmt: skip
    starts = [a for a in attempts if a["event"] == "start"]
    assert {a["slurm_job_id"] for a in starts} == {starts[0]["slurm_job_id"]}  # requeued, not resubmitted
    assert int(fields("show", "job", job)["Restarts"]) >= 1
    assert result["train"]["resumed_from_epoch"] >= 1 and result["train"]["epochs_run"] == EPOCHS
    assert result["regions"] == read_json(cell(reference)[1].result)["regions"]


def rank_pid(job_id: str, rank: int) -> int | None:
    """The pid of the Python process srun started for ``rank`` of SLURM job ``job_id`` (every node's are seen here).

    srun's task is the outermost process with the job's and the rank's variables (its children inherit them).
    """
    want = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()}
    ranks: dict[int, int] = {}  # pid -> parent pid
    for proc in Path("/proc").iterdir():
        try:
            if (
                want <= set((proc / "environ").read_bytes().split(b"\0"))
                and b"python" in (proc / "cmdline").read_bytes()
            ):
                ranks[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    tops = [pid for pid, parent in ranks.items() if parent not in ranks]
    return tops[0] if len(tops) == 1 else None


@pytest.mark.slurm
def test_a_rank_killed_on_the_second_node_fails_the_cell_with_a_class_and_a_rerun_completes_it(
    data: Path, reference: Manifest
) -> None:
    manifest, job = submit(data, "kill")
    _, paths = cell(manifest)
    until(paths.progress.exists, "the first epoch")
    job_id = fields("show", "job", job)["JobId"]
    pid = rank_pid(job_id, 1)
    assert pid is not None, explain(manifest, job)
    where = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=True)
    assert where.stdout.strip() == "gpnode2"  # rank 1 runs in the second node's network namespace
    os.kill(pid, signal.SIGKILL)
    current = wait(manifest, poll_s=1.0, timeout_s=120)  # rank 0 is not left waiting in a collective
    assert (current[0].state, current[0].reason) == (State.FAILED, "peer"), explain(manifest, job)
    until(paths.failed.exists, "failed.json")  # rank 0 writes it just after the attempt's end line
    assert read_json(paths.failed)["reason"] == "peer"
    detail = states(manifest)[0].detail
    assert "another rank of this cell failed" in detail and "rerun" in detail, explain(manifest, job)
    assert [(a["event"], a.get("reason")) for a in read_attempts(paths)] == [("start", None), ("end", "peer")]
    until(lambda: fields("show", "job", job).get("JobState") == "FAILED", "the job to fail")
    log = "".join(p.read_text(errors="replace") for p in logs(manifest))
    assert "task 0: Exited with exit code 1" in log, explain(manifest, job)  # rank 0 ended by itself, not by srun

    redo = rerun(manifest.root, which="failed")
    assert redo.submitted == (0,)
    result = finished(manifest, redo.job_ids[0])
    starts = [a for a in read_attempts(paths) if a["event"] == "start"]
    assert len(starts) == 2 and result["train"]["resumed_from_epoch"] >= 1
    assert result["regions"] == read_json(cell(reference)[1].result)["regions"]


def test_collective_errors_that_lost_a_rank_are_class_peer_and_others_are_left_alone() -> None:
    """What gloo and the store raise when another rank is gone (the killed-rank test above meets the first)."""
    closed = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.217.46.12]:56481"
    )
    hung = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms for recv operation")
    for exc in (closed, hung, torch.distributed.DistNetworkError("failed to recv, got 0 bytes")):
        lost = peer_lost(exc)
        assert isinstance(lost, CellFailed) and lost.reason == "peer" and "another rank" in str(lost)
    assert "Connection closed by peer [10.217.46.12]" in str(peer_lost(closed))
    assert peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert peer_lost(ValueError("Connection closed by peer")) is None  # not a collective's error
