"""Nothing reaches the queue that the plan could have refused: every dotted key checked along its whole path,
strict types, method x backbone compatibility, errors that name where in the file a value came from, and a
dry run that writes nothing and lists what blocks a real submission instead of stopping at the first."""

import textwrap

import pytest

from geopeft.errors import ConfigError
from hpc.plan.grid import load_grid
from hpc.scheduler.profiles import load_profile
from hpc.sweep import sweep

GRID = """
name: t
output: {root}/runs
cache: {root}/cache
defaults:
  model: {{name: prithvi_tiny}}
  train: {{lr: 1.0e-3, batch_size: 4}}
axes:
  dataset: [sen1floods11]
  tuning: [{{method: full}}, {{method: lora, options: {{r: 4}}}}]
  seed: [0, 1]
overrides:
  - where: {{tuning.method: full}}
    set: {{train.lr: 2.0e-4}}
exclude:
  - {{tuning.method: lora, seed: 1}}
"""


def grid_with(tmp_path, old: str = "", new: str = ""):
    text = textwrap.dedent(GRID.format(root=tmp_path))
    assert old in text
    path = tmp_path / "grid.yaml"
    path.write_text(text.replace(old, new) if old else text)
    return path


def refused(tmp_path, old: str, new: str) -> str:
    path = grid_with(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("{tuning.method: full}", "{tuning.methd: full}", "overrides[0].where: unknown key 'tuning.methd'"),
        ("set: {train.lr: 2.0e-4}", "set: {train.lrr: 2.0e-4}", "overrides[0].set: unknown key 'train.lrr'"),
        ("set: {train.lr: 2.0e-4}", "set: {train.lr.x: 2.0e-4}", "unknown key 'train.lr.x'; train.lr has no fields"),
        ("where: {tuning.method: full}", "where: {tuning.options.rr: 4}", "no registered method has option 'rr'"),
        ("where: {tuning.method: full}", "where: {dataset.name: x}", "dataset has no fields"),
        ("where: {tuning.method: full}", "where: {tuning: full}", "names a whole section"),
        ("{tuning.method: lora, seed: 1}", "{tuning.metod: lora, seed: 1}", "exclude[0]: unknown key 'tuning.metod'"),
        ("where: {tuning.method: full}", "where: {tuning.method: vpt}", "overrides[0].where {'tuning.method': 'vpt'} "
         "matches no cell of the grid"),
    ],
)  # fmt: skip
def test_every_dotted_key_is_checked_along_its_whole_path(tmp_path, old, new, says):
    assert says in refused(tmp_path, old, new)


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("lr: 1.0e-3,", "lr: true,", "defaults.train.lr: train.lr must be a positive number, got True"),
        ("lr: 1.0e-3,", "lr: '1e-3',", "defaults.train.lr: train.lr must be a positive number, got '1e-3'"),
        ("batch_size: 4", "batch_size: 4.0", "defaults.train.batch_size: train.batch_size must be a positive integer"),
        (
            "batch_size: 4",
            "batch_size: 4, weight_decay: '0.1'",
            "defaults.train.weight_decay: train.weight_decay must",
        ),
        ("batch_size: 4", "batch_size: 4, lr_factor: yes", "defaults.train.lr_factor: train.lr_factor must lie"),
        ("seed: [0, 1]", "seed: [0, true]", "axes.seed[1]: seed must be a non-negative integer, got True"),
        (
            "{name: prithvi_tiny}",
            "{name: prithvi_tiny, bands: BLUE}",
            "defaults.model.bands: model.bands must be a list",
        ),
        ("{name: prithvi_tiny}", "{name: 7}", "defaults.model.name: model.name must be a non-empty string"),
        ("options: {r: 4}", "options: {r: 4.5}", "axes.tuning[1].options.r: lora option r must be a positive integer"),
        ("set: {train.lr: 2.0e-4}", "set: {train.lr: -1}", "overrides[0].set.train.lr: train.lr must be a positive"),
        ("name: prithvi_tiny}", "name: prithvi_tinyy}", "defaults.model.name: unknown backbone 'prithvi_tinyy'"),
    ],
)
def test_types_are_strict_and_errors_name_where_the_value_came_from(tmp_path, old, new, says):
    message = refused(tmp_path, old, new)
    assert says in message, message


@pytest.mark.parametrize(
    ("backbone", "method", "says"),
    [
        ("resnet_tiny", "lora", "lora applies to ViT backbones with a fused qkv Linear"),
        ("resnet_tiny", "vpt", "vpt is implemented for Prithvi and Clay backbones"),
        ("vit_b16", "vpt", "vpt is implemented for Prithvi and Clay backbones"),
        ("clay_tiny", "vit_adapter", "vit_adapter works on Prithvi backbones"),
    ],
)
def test_a_method_that_cannot_tune_the_backbone_is_refused_at_plan_time(tmp_path, backbone, method, says):
    path = grid_with(tmp_path, "model: {name: prithvi_tiny}", f"model: {{name: {backbone}}}")
    path.write_text(path.read_text().replace("{method: lora, options: {r: 4}}", f"{{method: {method}}}"))
    with pytest.raises(ConfigError) as info:
        load_grid(path)
    assert f"{path}: axes.tuning[1].method: " in str(info.value) and says in str(info.value), str(info.value)


def test_the_methods_a_backbone_accepts_still_plan(tmp_path):
    path = grid_with(tmp_path, "model: {name: prithvi_tiny}", "model: {name: resnet_tiny}")
    path.write_text(path.read_text().replace("{method: lora, options: {r: 4}}", "{method: linear_probe}"))
    path.write_text(path.read_text().replace("tuning.method: lora", "tuning.method: linear_probe"))
    assert {c.tuning.method for c in load_grid(path).cells} == {"full", "linear_probe"}


def test_a_dry_run_writes_nothing_and_lists_every_blocker(tmp_path):
    path = grid_with(tmp_path, "name: t\n", "name: t\nenv: {device: cuda}\n")
    path.write_text(path.read_text().replace("{name: prithvi_tiny}", "{name: prithvi_tiny, weights: none}"))
    report = sweep(path, load_profile("local"), dry_run=True)
    assert report.submitted == (0, 1, 2) and report.dry_run
    assert not (tmp_path / "runs").exists(), "a dry run must write nothing: no folder, no lock, no manifest"
    blockers = "\n".join(report.blockers)
    assert "no valid cache for sen1floods11 (train, val, test, bolivia)" in blockers
    assert "env.device is cuda but cluster profile 'local' is CPU-only" in blockers
    with pytest.raises(Exception, match="no valid cache for sen1floods11"):
        sweep(path, load_profile("local"))  # the real submission refuses, and writes nothing either
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('time_limit_min = "30"', "time_limit_min must be an integer, got '30' (str)"),
        ("max_parallel = true", "max_parallel must be an integer, got True (bool)"),
        ("partition = 3", "partition must be a string, got 3"),
        ('setup = "module load cuda"', "setup must be a list of shell lines"),
    ],
)
def test_cluster_profiles_have_strict_types(tmp_path, line, says):
    path = tmp_path / "site.toml"
    path.write_text(f'executor = "slurm"\n{line}\n')
    with pytest.raises(ConfigError, match=rf"{path}: .*{__import__('re').escape(says)}"):
        load_profile(str(path))


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("output: {root}/runs", "output: '{root}/my runs'", "output: '{root}/my runs' has ' ', which SLURM scripts"),
        ("output: {root}/runs", "output: '{root}/r%j'", "has '%'"),
        ("output: {root}/runs", "output: '{root}/résultats'", "has 'é'"),
        ("name: t", "name: 'my sweep'", "name: 'my sweep' cannot name files and SLURM jobs"),
    ],
)
def test_names_and_paths_scripts_cannot_carry_are_refused_at_plan_time(tmp_path, old, new, says):
    message = refused(tmp_path, old.format(root=tmp_path), new.format(root=tmp_path))
    assert says.format(root=tmp_path) in message, message
    assert not (tmp_path / "my runs").exists()


def test_an_unwritable_output_folder_is_one_line_naming_it(tmp_path):
    import subprocess

    from typer.testing import CliRunner

    from geopeft.cache.build import prepare
    from geopeft.data.synthetic import write_sen1floods11
    from hpc.cli import app

    splits = write_sen1floods11(tmp_path / "raw", counts={"train": 2, "val": 1, "test": 1, "bolivia": 1}, size=16)
    prepare("sen1floods11", tmp_path / "raw", tmp_path / "cache", splits_dir=splits, progress=False)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(readonly)], check=True)
    try:
        for output, why in (
            (readonly / "runs", "Read-only file system"),
            (a_file / "runs", "Not a directory"),
        ):
            path = grid_with(tmp_path, f"output: {tmp_path}/runs", f"output: {output}")
            result = CliRunner().invoke(app, ["sweep", str(path)])
            assert result.exit_code == 2, result.output
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], result.output
            assert "Traceback" not in result.output
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
