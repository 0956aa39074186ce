"""sbatch scripts from the templates (golden files), array chunking, and refusals that submit nothing.

The submission tests replace the SLURM client commands by a recorder; the real cluster is exercised in
tests/test_slurm.py.
"""

import os
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from geopeft.errors import SubmitError
from hpc.grid import load_grid
from hpc.manifest import plan
from hpc.profiles import load_profile
from hpc.sbatch import Context, array_scripts, array_spec, chunks, prepare_script, throttles
from hpc.submit import submit_indices

GOLDEN = Path(__file__).parent / "golden" / "sbatch"
UPDATE = os.environ.get("GEOPEFT_UPDATE_GOLDEN") == "1"


def context(kind: str = "sweep") -> Context:
    git = {"sha": "0123456789abcdef0123", "dirty": True}
    return Context(
        "paper", Path("/scratch/me/runs/paper"), kind, git, "2025-01-02 03:04:05", 7, "/opt/venv/bin/python",
        code="/scratch/me/runs/paper/code/0123456789ab",
    )  # fmt: skip


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing; write it with GEOPEFT_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), (
        f"{name} differs from {path}; if intended: GEOPEFT_UPDATE_GOLDEN=1 pytest {__file__}"
    )


def test_rendered_scripts_match_golden_files():
    profile = load_profile("example-gpu")
    small, big = profile.default_resources, profile._apply(profile.shape[0])
    scripts = array_scripts(context(), profile, {small: [0, 1, 2, 3, 7, 1500], big: [4, 5]})
    assert [(s.kind, s.offset, s.indices) for s in scripts] == [
        ("array", 0, (0, 1, 2, 3, 7)),
        ("array", 1001, (1500,)),
        ("multinode", 0, (4, 5)),
    ]
    golden("array.sbatch", scripts[0].text)
    golden("multinode.sbatch", scripts[2].text)
    assert "#SBATCH --array=499%1" in scripts[1].text and "index=$((SLURM_ARRAY_TASK_ID + 1001))" in scripts[1].text
    commands = [["prepare", "sen1floods11", "--raw", "/data/raw/s1f11", "--cache", "/data/cache"]]
    golden("prepare.sbatch", prepare_script(context(), profile, commands, "sen1floods11").text)


def test_array_spec_and_chunks():
    assert array_spec([9, 0, 1, 2, 3, 7, 10], 2) == "0-3,7,9-10%2"
    assert array_spec([5], 64) == "5%1"
    parts = chunks(range(2500), 1001)
    assert [(offset, len(ids)) for offset, ids in parts] == [(0, 1001), (1001, 1001), (2002, 498)]
    assert all(0 <= i - offset < 1001 for offset, ids in parts for i in ids)


GRID = """
name: t
output: {root}/runs
cache: {root}/cache
raw: {{sen1floods11: {root}/raw}}
env: {{device: {device}}}
defaults: {{model: {{name: prithvi_tiny}}, train: {{lr: 1.0e-3}}}}
axes: {{dataset: [sen1floods11], seed: [0, 1, 2, 3, 4]}}
"""


class Cluster:
    """Answers sinfo and scontrol like the test cluster; records every sbatch."""

    def __init__(self, partitions: str = "debug\n", max_array: int = 1001, nodes: str = "") -> None:
        self.partitions, self.max_array, self.sbatch, self.next_id = partitions, max_array, [], 100
        self.nodes = nodes or "n1|2|22057|(null)\n"

    def __call__(self, argv, env):
        assert not any(k.startswith("SLURM_JOB") for k in env), "inherited job variables must be cleaned"
        if argv[0] == "sinfo":
            return self.nodes if "--Node" in argv else self.partitions
        if argv[0] == "scontrol":
            return f"ClusterName = ci\nMaxArraySize            = {self.max_array}\n"
        self.sbatch.append(list(argv))
        self.next_id += 1
        return f"{self.next_id}\n"


def manifest(tmp_path: Path, device: str = "auto"):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(GRID.format(root=tmp_path, device=device)))
    return plan(load_grid(path))


def profile_file(tmp_path: Path, text: str):
    path = tmp_path / "site.toml"
    path.write_text('executor = "slurm"\npartition = "debug"\nmax_parallel = 3\n' + text)
    return load_profile(str(path))


def test_prepare_first_then_chunked_arrays_that_wait_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # as if submitted from inside a job
    cluster = Cluster()
    done = submit_indices(
        manifest(tmp_path), [0, 1, 2, 3, 4], profile_file(tmp_path, "max_array_size = 2\n"), "sweep",
        prepare=[["prepare", "sen1floods11"]], runner=cluster,
    )  # fmt: skip
    assert done.prepare_job == "101" and len(cluster.sbatch) == 4
    assert "--dependency" not in " ".join(cluster.sbatch[0])
    for argv in cluster.sbatch[1:]:
        assert "--dependency=afterok:101" in argv and "--kill-on-invalid-dep=yes" in argv
    assert [s.offset for s in done.scripts[1:]] == [0, 2, 4]
    assert done.job_ids == ("102_0", "102_1", "103_0", "103_1", "104_0")
    assert all(p.exists() for p in (tmp_path / "runs" / "slurm").glob("*.sbatch"))
    assert "#SBATCH --array=0-1%1" in done.scripts[2].text and "+ 2))" in done.scripts[2].text
    assert [s.text.count("%1\n") for s in done.scripts[1:]] == [1, 1, 1]  # 3 arrays share max_parallel = 3


@pytest.mark.parametrize(
    ("device", "cluster", "profile_text", "message"),
    [
        ("auto", Cluster(partitions="gpu\nbooster\n"), "", "partition 'debug' is not on this cluster"),
        ("auto", Cluster(max_array=11), "max_array_size = 1001\n", "cluster's MaxArraySize is 11"),
        ("cuda", Cluster(), "", "env.device is cuda but cluster profile 'site' is CPU-only"),
        (
            "auto",
            Cluster(),
            "mem_gb = 64\n",
            r"asks for 65536 MB of memory per node \(mem_gb.*largest node of debug has 22057",
        ),
        ("auto", Cluster(), "cpus_per_task = 2\ntasks_per_node = 2\n", r"asks for 4 CPUs per node \(cpus_per_task"),
        ("auto", Cluster(), "gpus_per_task = 1\n", r"asks for 1 GPUs per node \(gpus_per_task.*has 0"),
        (
            "auto",
            Cluster(nodes="g1|64|512000|gpu:a100:4(S:0-1)\ng2|64|512000|gpu:a100:4(S:0-1)\n"),
            "gpus_per_task = 1\ntasks_per_node = 4\nnodes = 3\n",
            r"asks for 3 nodes but only 2 node\(s\) of debug can hold its tasks",
        ),
    ],
)
def test_refusals_submit_nothing(tmp_path, device, cluster, profile_text, message):
    m = manifest(tmp_path, device)
    with pytest.raises(SubmitError, match=message):
        submit_indices(m, [0, 1], profile_file(tmp_path, profile_text), "sweep", runner=cluster)
    assert cluster.sbatch == [] and not (tmp_path / "runs" / "slurm").exists()


def test_dry_run_lists_sbatch_lines_and_estimates_hours(tmp_path):
    cluster = Cluster()
    profile = profile_file(tmp_path, "cpus_per_task = 2\ntime_limit_min = 90\n")
    done = submit_indices(manifest(tmp_path), [1, 3], profile, "rerun", dry_run=True, runner=cluster)
    assert cluster.sbatch == [] and not (tmp_path / "runs" / "slurm").exists()
    assert done.commands[0].startswith("sbatch --parsable ") and "#SBATCH --array=1,3%2" in done.scripts[0].text
    assert done.gpu_hours == 0 and done.cpu_hours == pytest.approx(2 * 2 * 1.5)


def test_local_profiles_show_cells_their_gpus_and_refuse_cuda_without_any(tmp_path):
    from hpc.submit import make_executor

    m = manifest(tmp_path, "cuda")
    with pytest.raises(SubmitError, match=r"env.device is cuda but cluster profile 'local' is CPU-only"):
        submit_indices(m, [0], load_profile("local"), "sweep")
    assert not m.paths.submissions.exists()
    seen = {}
    for name in ("local", "local-gpu"):  # what a cell process sees, through submitit's real local executor
        job = make_executor(m, load_profile(name)).submit(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        seen[name] = job.result()
    assert seen == {"local": "", "local-gpu": "0"}


def test_submission_runs_a_snapshot_of_the_code_that_later_edits_do_not_touch(tmp_path):
    import hpc.snapshot as snap

    cluster = Cluster()
    m = manifest(tmp_path)
    dry = submit_indices(m, [0, 1], profile_file(tmp_path, ""), "sweep", dry_run=True, runner=cluster)
    assert not (tmp_path / "runs" / "code").exists()  # a dry run only names it
    done = submit_indices(m, [0, 1], profile_file(tmp_path, ""), "sweep", runner=cluster)
    [code] = list((tmp_path / "runs" / "code").iterdir())
    assert f"export PYTHONPATH={code}" in done.scripts[0].text and str(code) in dry.scripts[0].text
    assert {p.name for p in code.iterdir()} == {"geopeft", "hpc", "analysis", "sbatch"}
    assert (code / "hpc" / "snapshot.py").read_text() == Path(snap.__file__).read_text()
    assert not list(code.rglob("__pycache__"))
    again = submit_indices(m, [0, 1], profile_file(tmp_path, ""), "rerun", runner=cluster)
    assert f"export PYTHONPATH={code}" in again.scripts[0].text  # unchanged code: the same snapshot
    assert len(list((tmp_path / "runs" / "code").iterdir())) == 1
    dirs = snap.package_dirs()
    edited = {**dirs, "geopeft": tmp_path / "edited"}
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "__init__.py").write_text("# an edit after submission\n")
    assert snap.code_hash(edited) != code.name == snap.code_hash(dirs)


def test_local_cells_import_the_snapshot_of_their_submission(tmp_path):
    from hpc.snapshot import snapshot
    from hpc.submit import make_executor

    m = manifest(tmp_path)
    code = snapshot(m.root)
    job = make_executor(m, load_profile("local"), code).submit(lambda: __import__("geopeft").__file__)
    assert job.result() == str(code / "geopeft" / "__init__.py")


@pytest.mark.parametrize(
    ("sizes", "parallel"),
    [([1001, 9], 64), ([3, 3, 3], 4), ([5, 1, 1, 1], 3), ([2, 2], 8), ([1] * 7, 3), ([10], 1), ([600, 5, 1], 2)],
)
def test_throttles_share_the_cap_across_arrays(sizes, parallel):
    caps = throttles(sizes, parallel)
    assert all(1 <= c <= s for c, s in zip(caps, sizes, strict=True))
    if len(sizes) <= parallel:  # all at once, together within the cap, using all of it when there is work
        assert sum(caps) == min(parallel, sum(sizes))
    else:  # more arrays than the cap: one task each, in `parallel` lanes
        assert caps == [1] * len(sizes)


def test_max_parallel_caps_the_whole_sweep_not_each_chunk(tmp_path):
    cluster = Cluster()  # 5 cells, MaxArraySize 1 -> 5 arrays; max_parallel 2 -> 2 lanes of %1 arrays
    done = submit_indices(
        manifest(tmp_path), [0, 1, 2, 3, 4], replace(profile_file(tmp_path, "max_array_size = 1\n"), max_parallel=2),
        "sweep", prepare=[["prepare", "sen1floods11"]], runner=cluster,
    )  # fmt: skip
    _, *arrays = cluster.sbatch
    assert all("%1" in s.text for s in done.scripts[1:])
    deps = [next((a for a in argv if a.startswith("--dependency=")), "") for argv in arrays]
    ids = [str(101 + n) for n in range(1, 6)]  # the prepare job is 101
    assert deps[:2] == ["--dependency=afterok:101"] * 2
    assert deps[2:] == [f"--dependency=afterok:101,afterany:{ids[n]}" for n in range(3)]
    dry = submit_indices(
        manifest(tmp_path), [0, 1, 2, 3, 4], replace(profile_file(tmp_path, "max_array_size = 1\n"), max_parallel=2),
        "sweep", runner=cluster, dry_run=True,
    )  # fmt: skip
    assert "--dependency=afterany:<array 0>" in dry.commands[2]
