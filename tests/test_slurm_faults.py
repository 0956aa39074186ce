"""Faults on the real single-node SLURM cluster (scripts/slurm-test-cluster.sh, started when it is down).

A cell that receives SIGUSR2 (``scancel --signal=USR2``, what ``--signal=USR2@N`` sends before the time limit)
checkpoints, requeues its own array task, resumes and finishes; a 2-task srun cell trains with DDP; a job
cancelled while it waits in the queue shows as failed (``lost``, from one squeue call) and ``rerun --failed``
resubmits it. The squeue rules of :mod:`hpc.state.cells` are also checked on files, without a cluster.
"""

import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from geopeft.attempts import read_attempts
from geopeft.cache.build import prepare
from geopeft.data.synthetic import write_sen1floods11
from geopeft.errors import SubmitError
from geopeft.io import append_jsonl, read_json
from geopeft.paths import SweepPaths
from hpc.scheduler.profiles import load_profile
from hpc.scheduler.slurm import queued_jobs
from hpc.state.cells import CellSubmission, State, cell_state, process_alive, states
from hpc.state.manifest import Manifest, read_manifest
from hpc.status import render, wait
from hpc.sweep import rerun, sweep

HOLD = "geopeft_down"  # a partition that queues jobs and never starts them
GRID = """
name: {name}
output: {root}/runs-{name}
cache: {root}/cache
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 2, max_epochs: {epochs}, patience: {epochs}}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: lora, options: {{r: 2, alpha: 2}}}}]
"""
PROFILE = """
executor = "slurm"
partition = "{partition}"
tasks_per_node = {tasks}
cpus_per_task = 1
mem_gb = 3
time_limit_min = 30
max_parallel = 1
setup = ["export HDF5_USE_FILE_LOCKING=FALSE", "export OMP_NUM_THREADS=1"]
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm_faults")
    splits = write_sen1floods11(root / "raw", counts={"train": 4, "val": 2, "test": 2, "bolivia": 2}, size=16)
    prepare("sen1floods11", root / "raw", root / "cache", splits_dir=splits, progress=False)
    return root


def submit(root: Path, name: str, *, epochs: int, tasks: int = 1, partition: str = "debug") -> tuple[Manifest, str]:
    """Sweep a one-cell grid; the manifest and the cell's job id (``<array job>_0``)."""
    grid = root / f"{name}.yaml"
    grid.write_text(textwrap.dedent(GRID.format(root=root, name=name, epochs=epochs)))
    report = sweep(grid, profile(root, tasks, partition))
    assert report.submitted == (0,) and report.job_ids == (f"{report.job_ids[0].split('_')[0]}_0",)
    return read_manifest(report.manifest.root), report.job_ids[0]


def profile(root: Path, tasks: int = 1, partition: str = "debug"):
    path = root / f"{partition}-{tasks}.toml"
    path.write_text(PROFILE.format(partition=partition, tasks=tasks))
    return load_profile(str(path))


def job_field(job_id: str, key: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part).get(key, "")


def node_field(key: str) -> str:
    node = socket.gethostname().split(".")[0]
    out = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True, check=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part).get(key, "")


def explain(manifest: Manifest, current, job: str = "") -> str:
    """The status table, SLURM's view of the job and the tail of every job log: what a failed assertion shows."""
    parts = [render(manifest, current)]
    if job:
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=False)
        parts.append(f"--- scontrol show job {job}\n{shown.stdout}{shown.stderr}")
    for log in sorted(manifest.root.glob("submitit/*/*.out")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(parts)


def until(check, what: str, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.mark.slurm
def test_usr2_checkpoints_requeues_the_array_task_resumes_and_finishes(cluster, data):
    manifest, job = submit(data, "usr2", epochs=80)
    paths = manifest.paths.cell(manifest.entry(0).cell_id)
    until(paths.progress.exists, "the first epoch")  # training: the engine owns SIGUSR2 now
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    until(lambda: any(a.get("reason") == "preempted" for a in read_attempts(paths)), "the preempted attempt", 120)
    until(lambda: states(manifest)[0].state is State.PENDING, "the requeued job in squeue", 60)
    assert "requeued" in states(manifest)[0].detail, render(manifest, states(manifest))
    # A requeued job waits ~120 s (BeginTime), which also lets slurmctld take in the first run's end. Starting it
    # at once races that message: slurmctld can apply the old batch script's exit status to the new run, which then
    # fails without starting. So: wait until the first run has ended everywhere, then start it 5 s later.
    first = read_attempts(paths)[0]
    until(lambda: job_field(job, "JobState") == "PENDING", "the requeued job to be pending", 60)
    until(lambda: not process_alive(first["host"], first["pid"], first.get("pid_start")), "the first run's exit", 60)
    until(lambda: "COMPLETING" not in node_field("State"), "the node to leave COMPLETING", 60)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+5"], check=True, timeout=30)
    current = wait(manifest, poll_s=1.0, timeout_s=240)
    assert current[0].state is State.DONE, explain(manifest, current, job)

    attempts = read_attempts(paths)
    assert [(a["event"], a.get("status"), a.get("reason", "")) for a in attempts] == [
        ("start", None, ""), ("end", "failed", "preempted"), ("start", None, ""), ("end", "success", ""),
    ]  # fmt: skip
    starts = [a for a in attempts if a["event"] == "start"]
    array_job, task = job.split("_")
    for a in starts:  # the same array task ran both attempts: it was requeued, not resubmitted
        assert (a["slurm_array_job_id"], a["slurm_array_task_id"]) == (array_job, task)
    assert starts[0]["slurm_job_id"] == starts[1]["slurm_job_id"]
    assert int(job_field(job, "Restarts")) >= 1
    result = read_json(paths.result)
    assert result["train"]["epochs_run"] == 80 and result["train"]["resumed_from_epoch"] >= 1
    assert len(manifest.paths.submissions.read_text().splitlines()) == 1  # no second submission


@pytest.mark.slurm
def test_two_task_srun_cell_trains_with_ddp_from_slurm_variables(cluster, data):
    manifest, _ = submit(data, "srun2", epochs=2, tasks=2)
    script = next(manifest.root.rglob("*.sbatch")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "srun" in script
    current = wait(manifest, poll_s=1.0, timeout_s=300)
    assert current[0].state is State.DONE, explain(manifest, current)
    result = read_json(manifest.paths.cell(manifest.entry(0).cell_id).result)
    assert result["train"]["world_size"] == 2
    assert result["provenance"]["distributed"]["launcher"] == "submitit"  # TorchDistributedEnvironment from SLURM
    assert result["provenance"]["scheduler"]["slurm_procid"] == "0"


@pytest.fixture
def down_partition(cluster):
    """A partition on the test node that queues jobs but never starts them (State=DOWN); removed afterwards."""
    node = socket.gethostname().split(".")[0]
    create = ["scontrol", "create", f"PartitionName={HOLD}", f"Nodes={node}", "State=DOWN", "MaxTime=INFINITE"]
    subprocess.run(create, capture_output=True, text=True, timeout=30, check=True)
    yield HOLD
    subprocess.run(["scontrol", "delete", f"PartitionName={HOLD}"], capture_output=True, timeout=30, check=False)


@pytest.mark.slurm
def test_job_cancelled_while_queued_is_failed_lost_and_rerun_resubmits_it(data, down_partition):
    manifest, job = submit(data, "queued", epochs=1, partition=down_partition)
    assert job_field(job, "JobState") == "PENDING"
    assert states(manifest)[0].state is State.PENDING
    subprocess.run(["scancel", job], check=True, timeout=30)
    current = states(manifest)
    assert (current[0].state, current[0].reason) == (State.FAILED, "lost"), render(manifest, current)
    assert "left the queue before the cell started" in render(manifest, current)

    redo = rerun(manifest.root, profile(data), which="failed")
    assert redo.submitted == (0,)
    current = wait(manifest, poll_s=1.0, timeout_s=240)
    assert current[0].state is State.DONE, explain(manifest, current)


def test_squeue_answers_decide_lost_and_requeued_cells(tmp_path):
    """Without a cluster: what each squeue answer (listed, not listed, unknown) makes of a cell's files."""
    paths = SweepPaths(tmp_path).cell("abc")
    paths.dir.mkdir(parents=True)
    before = time.time()

    def sub(queued):
        return CellSubmission(before, "slurm", "7_0", "login", None, queued)

    assert cell_state(paths, sub(True)).state is State.PENDING
    assert (cell_state(paths, sub(False)).state, cell_state(paths, sub(False)).reason) == (State.FAILED, "lost")
    assert cell_state(paths, sub(None)).state is State.PENDING  # no squeue: as before, from the files
    # An attempt on another host (its process cannot be checked here): running while its job is queued.
    append_jsonl(paths.attempts, {"event": "start", "attempt": 1, "time": time.time(), "host": "node-elsewhere",
                                  "pid": 1, "pid_start": None})  # fmt: skip
    assert cell_state(paths, sub(True)).state is State.RUNNING
    assert cell_state(paths, sub(None)).state is State.RUNNING
    lost = cell_state(paths, sub(False))
    assert (lost.state, lost.reason) == (State.FAILED, "lost")
    # Preempted: pending while SLURM holds the requeued task, failed (and rerun) once it left the queue.
    append_jsonl(paths.attempts, {"event": "end", "attempt": 1, "time": time.time(), "status": "failed",
                                  "reason": "preempted"})  # fmt: skip
    assert cell_state(paths, sub(True)).state is State.PENDING and "requeued" in cell_state(paths, sub(True)).detail
    assert (cell_state(paths, sub(False)).state, cell_state(paths, sub(False)).reason) == (State.FAILED, "preempted")
    unknown = cell_state(paths, sub(None))  # squeue did not answer: alive, as for every other SLURM job
    assert unknown.state is State.PENDING and "squeue did not answer" in unknown.detail
    local = CellSubmission(before, "local", "1", "login", None)  # a local preempted cell is not requeued by anyone
    assert (cell_state(paths, local).state, cell_state(paths, local).reason) == (State.FAILED, "preempted")


def test_squeue_is_asked_again_when_the_controller_does_not_answer():
    calls: list[list[str]] = []

    def flaky(answers):
        def runner(argv, env):
            calls.append(list(argv))
            answer = answers[len(calls) - 1]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return runner

    timeout = SubmitError("`squeue` failed (exit 1): slurm_load_jobs error: Socket timed out on send/recv operation")
    assert queued_jobs(["7_0", "7_1", "9"], flaky([timeout, "7_1\n9\n"]), pause_s=0) == {"7_1", "9"}
    assert calls[0][-1] == "--jobs=7,9" and len(calls) == 2
    calls.clear()
    assert queued_jobs(["7_0"], flaky([timeout] * 3), pause_s=0) is None and len(calls) == 3
    calls.clear()
    gone = SubmitError("`squeue` failed (exit 1): slurm_load_jobs error: Invalid job id specified")
    assert queued_jobs(["7_0"], flaky([gone]), pause_s=0) == frozenset() and len(calls) == 1
