"""SLURM submissions through submitit: the scripts it writes (golden files), arrays per shape and chunk with a
shared %P, dependencies, and refusals that submit nothing.

submitit calls ``sbatch`` itself: these tests put a stand-in ``sbatch`` first on PATH that keeps each script and
answers like SLURM (``Submitted batch job N``); ``sinfo`` and ``scontrol`` are answered by a recorder. The real
cluster is exercised in tests/test_slurm*.py.
"""

import os
import re
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from geopeft.errors import SubmitError
from hpc.launch.submit import plan_scripts, submit_indices
from hpc.plan.grid import load_grid
from hpc.plan.manifests import plan
from hpc.scheduler.arrays import chunks, compact, throttles
from hpc.scheduler.profiles import load_profile

GOLDEN = Path(__file__).parent / "golden" / "sbatch"
UPDATE = os.environ.get("GEOPEFT_UPDATE_GOLDEN") == "1"

SBATCH = """#!/bin/bash
# Stand-in sbatch: keeps the script and the environment it was called with, answers like SLURM.
here="$(dirname "$0")"
n=$(( $(cat "$here/next" 2>/dev/null || echo 100) + 1 ))
echo "$n" > "$here/next"
cp "${@: -1}" "$here/job-$n.sh"
env | grep -c '^SLURM_JOB' > "$here/env-$n" || true
echo "Submitted batch job $n"
"""


@pytest.fixture
def sbatch(tmp_path, monkeypatch) -> Path:
    """A directory whose ``sbatch`` records every submission (``job-<id>.sh``); first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def submitted(bin_dir: Path) -> list[str]:
    """The scripts the stand-in sbatch received, in order."""
    return [p.read_text() for p in sorted(bin_dir.glob("job-*.sh"), key=lambda p: int(p.stem[4:]))]


def golden(name: str, text: str, root: Path) -> None:
    text = text.replace(str(root), "<root>").replace(sys.executable, "<python>")
    text = re.sub(r"code/[0-9a-f]{12}", "code/<hash>", text)
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing; write it with GEOPEFT_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), (
        f"{name} differs from {path}; if intended: GEOPEFT_UPDATE_GOLDEN=1 pytest {__file__}"
    )


def test_array_helpers():
    assert compact([9, 0, 1, 2, 3, 7, 10]) == "0-3,7,9-10"
    assert [len(c) for c in chunks(range(2500), 1001)] == [1001, 1001, 498]
    assert chunks([5, 1, 3], 2) == [[1, 3], [5]]


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


def test_scripts_as_submitit_writes_them_match_golden_files(tmp_path):
    m = manifest(tmp_path)
    profile = load_profile("example-gpu")
    big = replace(profile, shape=(replace(profile.shape[0], where=(("seed", (3, 4)),)),))  # 2 cells take the shape
    commands = [["prepare", "sen1floods11", "--raw", "/data/raw/s1f11", "--cache", "/data/cache"]]
    scripts = plan_scripts(m, [0, 1, 2, 3, 4], big, "sweep", commands, write_code=False)
    assert [(s.kind, s.indices) for s in scripts] == [("prepare", ()), ("array", (0, 1, 2)), ("array", (3, 4))]
    golden("prepare.sbatch", scripts[0].text, tmp_path)
    golden("array.sbatch", scripts[1].text, tmp_path)
    golden("multinode.sbatch", scripts[2].text, tmp_path)
    assert "#SBATCH --signal=USR2@300" in scripts[1].text and "#SBATCH --requeue" in scripts[1].text
    assert "--kill-on-bad-exit=0 --wait=60" in scripts[2].text  # rank 0 may finish its records when one is lost


def test_prepare_first_then_chunked_arrays_that_wait_for_it(tmp_path, monkeypatch, sbatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # as if submitted from inside a job: not passed on to sbatch
    cluster = Cluster()
    done = submit_indices(
        manifest(tmp_path), [0, 1, 2, 3, 4], profile_file(tmp_path, "max_array_size = 2\n"), "sweep",
        prepare=[["prepare", "sen1floods11"]], runner=cluster,
    )  # fmt: skip
    scripts = submitted(sbatch)
    assert done.prepare_job == "101" and len(scripts) == 4
    assert "--dependency" not in scripts[0] and all(
        (sbatch / f"env-{n}").read_text().strip() == "0" for n in (101, 102)
    )
    for text in scripts[1:]:
        assert "#SBATCH --dependency=afterok:101" in text and "#SBATCH --kill-on-invalid-dep=yes" in text
    assert [s.indices for s in done.scripts[1:]] == [(0, 1), (2, 3), (4,)]
    assert done.job_ids == ("102_0", "102_1", "103_0", "103_1", "104_0")
    assert [s.text for s in done.scripts] == scripts  # what was submitted is what the report shows
    assert sorted(p.read_text() for p in (tmp_path / "runs" / "slurm").glob("*.sbatch")) == sorted(scripts)
    assert [t.count("%1\n") for t in scripts[1:]] == [1, 1, 1]  # 3 arrays share max_parallel = 3
    assert "#SBATCH --array=0-1%1" in scripts[2] and "#SBATCH --array=0-0%1" in scripts[3]


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
def test_refusals_submit_nothing(tmp_path, device, cluster, profile_text, message, sbatch):
    m = manifest(tmp_path, device)
    with pytest.raises(SubmitError, match=message):
        submit_indices(m, [0, 1], profile_file(tmp_path, profile_text), "sweep", runner=cluster)
    assert submitted(sbatch) == [] and not (tmp_path / "runs" / "slurm").exists()


def test_dry_run_lists_sbatch_lines_and_estimates_hours(tmp_path, sbatch):
    cluster = Cluster()
    profile = profile_file(tmp_path, "cpus_per_task = 2\ntime_limit_min = 90\n")
    done = submit_indices(manifest(tmp_path), [1, 3], profile, "rerun", dry_run=True, runner=cluster)
    assert submitted(sbatch) == [] and not (tmp_path / "runs").exists()
    assert done.commands[0].startswith("sbatch ") and "#SBATCH --array=0-1%2" in done.scripts[0].text
    assert done.scripts[0].indices == (1, 3)
    assert done.gpu_hours == 0 and done.cpu_hours == pytest.approx(2 * 2 * 1.5)


def test_local_profiles_show_cells_their_gpus_and_refuse_cuda_without_any(tmp_path):
    from hpc.launch.submit import make_executor

    m = manifest(tmp_path, "cuda")
    with pytest.raises(SubmitError, match=r"env.device is cuda but cluster profile 'local' is CPU-only"):
        submit_indices(m, [0], load_profile("local"), "sweep")
    assert not m.paths.submissions.exists()
    seen = {}
    for name in ("local", "local-gpu"):  # what a cell process sees, through submitit's real local executor
        job = make_executor(m, load_profile(name)).submit(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        seen[name] = job.result()
    assert seen == {"local": "", "local-gpu": "0"}


def test_submission_runs_a_snapshot_of_the_code_that_later_edits_do_not_touch(tmp_path, sbatch):
    import hpc.launch.snapshot as snap

    cluster = Cluster()
    m = manifest(tmp_path)
    dry = submit_indices(m, [0, 1], profile_file(tmp_path, ""), "sweep", dry_run=True, runner=cluster)
    assert not (tmp_path / "runs" / "code").exists()  # a dry run only names it
    done = submit_indices(m, [0, 1], profile_file(tmp_path, ""), "sweep", runner=cluster)
    [code] = list((tmp_path / "runs" / "code").iterdir())
    assert f"export PYTHONPATH={code}" in done.scripts[0].text and str(code) in dry.scripts[0].text
    assert {p.name for p in code.iterdir()} == {"geopeft", "hpc", "analysis"}
    assert (code / "hpc" / "launch" / "snapshot.py").read_text() == Path(snap.__file__).read_text()
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
    from hpc.launch.snapshot import snapshot
    from hpc.launch.submit import make_executor

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


def test_max_parallel_caps_the_whole_sweep_not_each_chunk(tmp_path, sbatch):
    cluster = Cluster()  # 5 cells, MaxArraySize 1 -> 5 arrays; max_parallel 2 -> 2 lanes of %1 arrays
    profile = replace(profile_file(tmp_path, "max_array_size = 1\n"), max_parallel=2)
    submit_indices(
        manifest(tmp_path), [0, 1, 2, 3, 4], profile, "sweep", prepare=[["prepare", "sen1floods11"]], runner=cluster
    )
    _, *arrays = submitted(sbatch)
    assert all("#SBATCH --array=0-0%1" in text for text in arrays)
    deps = [re.search(r"^#SBATCH --dependency=(.*)$", text, re.M) for text in arrays]
    ids = [str(101 + n) for n in range(1, 6)]  # the prepare job is 101
    assert [d.group(1) if d else "" for d in deps[:2]] == ["afterok:101"] * 2
    assert [d.group(1) if d else "" for d in deps[2:]] == [f"afterok:101,afterany:{ids[n]}" for n in range(3)]
    dry = submit_indices(manifest(tmp_path), [0, 1, 2, 3, 4], profile, "sweep", runner=cluster, dry_run=True)
    assert "#SBATCH --dependency='afterany:<array 0>'" in dry.scripts[2].text
