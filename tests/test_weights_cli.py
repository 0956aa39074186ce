"""Weights on the login node: the sweep's pre-check, ``geopeft weights`` (list, fetch, verify) and the grid key."""

from __future__ import annotations

import hashlib
import textwrap

import pytest
from typer.testing import CliRunner
from weights_fixtures import register_tiny_weights

from geopeft.errors import SubmitError
from geopeft.models.weights.integrity import read_sidecar
from hpc import sweep as sweep_module
from hpc.cli import app
from hpc.launch.submit import Submission
from hpc.plan.grid import load_grid
from hpc.prepare import caches as caches_module
from hpc.scheduler.profiles import load_profile

register_tiny_weights()
runner = CliRunner()

GRID = """
name: w
output: {root}/runs
cache: {root}/cache
{weights}
defaults:
  train: {{lr: 1.0e-3}}
  dataset: sen1floods11
axes:
  model:
    - {{name: prithvi_eo_v2_300, weights: prithvi_eo_v2_300}}
    - {{name: clay_v1_base, weights: clay_v1_base}}
    - {{name: prithvi_eo_v2_300}}
  seed: [0, 1]
"""


def write_grid(tmp_path, weights: str = ""):
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(GRID.format(root=tmp_path, weights=weights)))
    return path


def blob(tmp_path, text: bytes = b"pretend checkpoint bytes"):
    path = tmp_path / "mirror" / "file.bin"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text)
    return path, hashlib.sha256(text).hexdigest()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_grid_weights_key_and_default(tmp_path):
    assert load_grid(write_grid(tmp_path)).env.weights_root == str(tmp_path / "weights")
    grid = load_grid(write_grid(tmp_path, weights=f"weights: {tmp_path}/w"))
    assert grid.env.weights_root == str(tmp_path / "w")
    assert len({c.cell_id for c in grid.cells}) == 6  # the weights name is part of the cell id


@pytest.fixture
def no_submit(monkeypatch):
    submitted: list[object] = []
    monkeypatch.setattr(caches_module, "local_builds", lambda *args: [])

    def record(*args: object, **kwargs: object) -> Submission:
        submitted.append(args)
        return Submission(job_ids=("1",))

    monkeypatch.setattr(sweep_module, "submit_indices", record)
    return submitted


def test_sweep_lists_every_missing_file_and_submits_nothing(tmp_path, no_submit):
    grid = write_grid(tmp_path)
    with pytest.raises(SubmitError) as info:
        sweep_module.sweep(grid, load_profile("local"))
    message = str(info.value)
    assert "2 pretrained weights file(s) missing" in message
    assert f"clay_v1_base: {tmp_path}/weights/clay-v1-base.ckpt" in message
    assert f"prithvi_eo_v2_300: {tmp_path}/weights/Prithvi_EO_V2_300M.pt" in message
    assert f"geopeft weights fetch --grid {grid}" in message
    assert no_submit == []
    (tmp_path / "weights").mkdir()
    for name in ("clay-v1-base.ckpt", "Prithvi_EO_V2_300M.pt"):
        (tmp_path / "weights" / name).write_bytes(b"x")
    report = sweep_module.sweep(grid, load_profile("local"))
    assert len(report.submitted) == 6 and len(no_submit) == 1


def test_rerun_checks_the_cells_it_resubmits(tmp_path, no_submit):
    grid = write_grid(tmp_path)
    (tmp_path / "weights").mkdir()
    for name in ("clay-v1-base.ckpt", "Prithvi_EO_V2_300M.pt"):
        (tmp_path / "weights" / name).write_bytes(b"x")
    sweep_module.sweep(grid, load_profile("local"))
    (tmp_path / "weights" / "clay-v1-base.ckpt").unlink()
    with pytest.raises(SubmitError, match=r"1 pretrained weights file\(s\) missing: clay_v1_base") as info:
        sweep_module.rerun(tmp_path / "runs", load_profile("local"), which="missing")
    assert f"geopeft weights fetch clay_v1_base --root {tmp_path}/weights" in str(info.value)
    assert len(no_submit) == 1


def test_list_shows_the_catalogue_and_each_file_state(tmp_path):
    result = invoke("weights")
    assert result.exit_code == 0, result.output
    assert "prithvi_eo_v2_600_tl" in result.output and "Prithvi_EO_V2_600M_TL.pt" in result.output
    assert "rn50_ssl4eo-s12_ms_decur_ep100-fc6b09ff.pth" in result.output
    (tmp_path / "Prithvi_EO_V1_100M.pt").write_bytes(b"v1")
    result = invoke("weights", "--root", str(tmp_path))
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert lines["prithvi_eo_v1_100"].endswith("unverified")
    assert lines["clay_v1_base"].endswith("missing")
    assert invoke("weights", "verify", "prithvi_eo_v1_100", "--root", str(tmp_path)).exit_code == 0
    sha = hashlib.sha256(b"v1").hexdigest()
    result = invoke("weights", "--root", str(tmp_path))
    assert f"sha256 {sha[:12]}" in result.output


def test_fetch_from_a_file_url_is_atomic_hashed_and_recorded(tmp_path):
    source, sha = blob(tmp_path)
    root = tmp_path / "weights"
    result = invoke("weights", "fetch", "clay_v1_base", "--root", str(root), "--url", source.as_uri())
    assert result.exit_code == 0, result.output
    assert f"clay_v1_base: downloaded {root}/clay-v1-base.ckpt (sha256 {sha})" in result.output
    assert (root / "clay-v1-base.ckpt").read_bytes() == source.read_bytes()
    assert read_sidecar(root / "clay-v1-base.ckpt") == sha
    assert sorted(p.name for p in root.iterdir()) == ["clay-v1-base.ckpt", "clay-v1-base.ckpt.sha256"]
    again = invoke("weights", "fetch", "clay_v1_base", "--root", str(root))
    assert again.exit_code == 0 and "clay_v1_base: present" in again.output


def test_fetch_refuses_a_wrong_pin_and_keeps_nothing(tmp_path):
    source, _ = blob(tmp_path)
    root = tmp_path / "weights"
    pin = "ab" * 32
    result = invoke("weights", "fetch", "clay_v1_base", "--root", str(root), "--url", source.as_uri(), "--sha256", pin)
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert f"but {pin} is pinned; nothing was kept" in result.output
    assert not root.exists() or list(root.iterdir()) == []


def test_fetch_detects_a_changed_file_and_force_replaces_it(tmp_path):
    source, sha = blob(tmp_path)
    root = tmp_path / "weights"
    assert invoke("weights", "fetch", "clay_v1_base", "--root", str(root), "--url", source.as_uri()).exit_code == 0
    (root / "clay-v1-base.ckpt").write_bytes(b"truncated")
    result = invoke("weights", "fetch", "clay_v1_base", "--root", str(root))
    assert result.exit_code == 2 and "the file changed" in result.output
    assert f"geopeft weights fetch clay_v1_base --root {root} --force" in result.output
    forced = invoke("weights", "fetch", "clay_v1_base", "--root", str(root), "--url", source.as_uri(), "--force")
    assert forced.exit_code == 0 and f"sha256 {sha}" in forced.output


def test_fetch_for_a_grid_and_its_errors(tmp_path):
    grid = write_grid(tmp_path)
    source, _ = blob(tmp_path)
    result = invoke("weights", "fetch", "--grid", str(grid), "--url", source.as_uri())
    assert result.exit_code == 2 and "--url and --sha256 apply to one name; got 2" in result.output
    result = invoke("weights", "fetch", "prithvi_eo_v2_300", "--grid", str(grid), "--url", source.as_uri())
    assert result.exit_code == 0 and f"{tmp_path}/weights/Prithvi_EO_V2_300M.pt" in result.output
    missing = invoke("weights", "fetch", "test_prithvi_tiny", "--root", str(tmp_path))
    assert missing.exit_code == 2 and "cannot download file:///nonexistent/tiny_prithvi_v2.pt" in missing.output
    assert invoke("weights", "fetch", "clay_v1_base").output.startswith("error: say where the weights lie")
    assert "unknown model.weights 'nope'" in invoke("weights", "fetch", "nope", "--root", str(tmp_path)).output
