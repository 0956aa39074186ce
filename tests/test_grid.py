import textwrap

import pytest

from geopeft.errors import ConfigError
from hpc.plan.grid import load_grid, sweep_root
from hpc.scheduler.profiles import load_profile
from hpc.sweep import sweep

GOOD = """
name: t
output: {out}
cache: {cache}
env: {{threads: 1}}
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 4}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: full}}, {{method: lora, options: {{r: 4}}}}]
  seed: [0, 1, 2]
overrides:
  - where: {{tuning.method: full}}
    set: {{train.lr: 2.0e-4}}
exclude:
  - {{tuning.method: lora, seed: 2}}
"""


def write(tmp_path, text, **fmt):
    fmt = {"out": str(tmp_path / "runs"), "cache": str(tmp_path / "cache"), **fmt}
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent(text.format(**fmt)))
    return path


def test_expansion_defaults_overrides_exclude(tmp_path):
    grid = load_grid(write(tmp_path, GOOD))
    slugs = [c.slug for c in grid.cells]
    assert slugs == [
        "prithvi_tiny/full/linear/sen1floods11/s0",
        "prithvi_tiny/full/linear/sen1floods11/s1",
        "prithvi_tiny/full/linear/sen1floods11/s2",
        "prithvi_tiny/lora/linear/sen1floods11/s0",
        "prithvi_tiny/lora/linear/sen1floods11/s1",
    ]
    lrs = {c.tuning.method: c.train.lr for c in grid.cells}
    assert lrs == {"full": 2e-4, "lora": 1e-3}
    assert grid.cells[3].tuning.opts == {"r": 4}
    assert grid.env.threads == 1 and grid.env.cache_root == str(tmp_path / "cache")
    assert sweep_root(grid.path) == tmp_path / "runs"


def test_demo_grid_is_valid():
    grid = load_grid("sweeps/demo.yaml")
    assert len(grid.cells) == 4
    assert {c.tuning.method for c in grid.cells} == {"full", "lora"}


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("name: prithvi_tiny", "name: prithvi_huge", r"unknown backbone 'prithvi_huge'; allowed: .*prithvi_tiny"),
        ("method: lora,", "method: lorax,", r"unknown tuning method 'lorax'; allowed: .*lora"),
        ("dataset: [sen1floods11]", "dataset: [sen2floods]", r"unknown dataset 'sen2floods'; allowed: .*sen1floods11"),
        ("options: {r: 4}", "options: {rank: 4}", r"rank"),
        ("env: {threads: 1}", "env: {thread: 1}", r"env: unknown key 'thread'; allowed: num_workers, threads"),
        ("name: t", "name: t\nouptut: x", r"unknown key 'ouptut'"),
        ("train: {lr: 1.0e-3, batch_size: 4}", "train: {lr: 1.0e-3, batchsize: 4}", r"batchsize"),
        ("set: {train.lr: 2.0e-4}", "set: {trian.lr: 2.0e-4}", r"unknown key 'trian.lr'"),
        ("seed: [0, 1, 2]", "seed: []", r"axes.seed must be a non-empty list"),
        (
            "dataset: [sen1floods11]",
            "dataset: [burn_scars]\n  model: [{name: resnet_tiny, bands: [BLUE, COASTAL_AEROSOL]}]",
            r"model.bands of resnet_tiny on dataset burn_scars: band\(s\) 'COASTAL_AEROSOL' not available; "
            r"available bands: BLUE, GREEN, RED",
        ),
    ],
)
def test_bad_grid_names_file_key_and_allowed(tmp_path, old, new, match):
    path = write(tmp_path, GOOD)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=match) as info:
        load_grid(path)
    assert str(path) in str(info.value)


def test_bad_grid_submits_nothing(tmp_path):
    path = write(tmp_path, GOOD)
    path.write_text(path.read_text().replace("name: prithvi_tiny", "name: nope"))
    with pytest.raises(ConfigError):
        sweep(path, load_profile("local"))
    assert not (tmp_path / "runs").exists()


def test_duplicate_cells_are_refused(tmp_path):
    path = write(tmp_path, GOOD)
    path.write_text(path.read_text().replace("seed: [0, 1, 2]", "seed: [0, 0]"))
    with pytest.raises(ConfigError, match="repeats the cell"):
        load_grid(path)


def test_unknown_cluster_profile():
    with pytest.raises(ConfigError, match=r"unknown cluster profile 'nope'; allowed: .*local"):
        load_profile("nope")


def test_gpu_smoke_grid_is_valid():
    grid = load_grid("sweeps/gpu-smoke.yaml")
    settings = {
        (c.tuning.method, c.train.precision, c.train.activation_checkpointing, c.train.strategy) for c in grid.cells
    }
    assert len(grid.cells) == len(settings) == 8
    assert ("lora", "bf16", True, "ddp") in settings and ("full", "bf16", False, "deepspeed_zero3") in settings
    assert {c.model.name for c in grid.cells} == {"prithvi_eo_v2_300"} and grid.env.device == "cuda"


def test_a_zero_std_band_under_the_studys_normalisation_is_refused_at_plan_time(tmp_path):
    crop = GOOD.replace("[sen1floods11]", "[m_sa_crop_type]").replace(
        "model: {{name: prithvi_tiny}}", "model: {{name: prithvi_tiny, bands: [BLUE, RED, CLOUD_PROBABILITY]}}"
    )
    with pytest.raises(ConfigError, match=r"grid\.yaml: axes.*CLOUD_PROBABILITY of m_sa_crop_type have std 0"):
        load_grid(write(tmp_path, crop))
    # its own train split's statistics are checked when the cell starts, not at plan time
    own = crop.replace(
        "train: {{lr: 1.0e-3, batch_size: 4}}", "train: {{lr: 1.0e-3, batch_size: 4, normalisation: train_split}}"
    )
    assert {c.train.normalisation for c in load_grid(write(tmp_path, own)).cells} == {"train_split"}
    assert load_grid(write(tmp_path, GOOD)).cells[0].train.normalisation == "study"
